//! A client of a test server, connected the way every service connects.

use async_nats::jetstream;
use loadshift_events::connection::{self, NatsOptions};
use loadshift_events::stream::{self, StreamSettings};

/// A JetStream context on `url`, connected through the contract's
/// `connection::connect` (so it reconnects as a service does) under
/// `client_name`, with both streams declared as a service declares them.
///
/// Every crate's tests that publish into a real server start here; a
/// failure to connect or declare fails the test where it happens.
pub async fn declared(url: &str, client_name: &str) -> jetstream::Context {
    let client = connection::connect(
        &NatsOptions {
            url: url.into(),
            credentials: None,
            ca: None,
            client_name: client_name.into(),
        },
        false,
    )
    .await
    .expect("connect to the test server");
    let js = jetstream::new(client);
    stream::declare(&js, &StreamSettings::default())
        .await
        .expect("declare the streams");
    js
}
