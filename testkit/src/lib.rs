//! What loadshift's integration tests stand on: real servers started by the
//! test itself, on a free port, with a store of their own, stopped when the test
//! ends. Tests never touch a server they did not start. [`fixtures`] builds
//! the event sequences tests fold and publish, from the contract alone;
//! [`fuzz`] generates the seeded hostile input every decoder's fuzz test is
//! fed. [`Killed`] stops a child process when its test ends. [`Relay`] sits
//! between one client and a real server, so a test can cut that client off.

pub mod binaries;
pub mod browser;
pub mod client;
pub mod fixtures;
pub mod fuzz;
pub mod http;
pub mod nats;
pub mod process;
pub mod relay;

pub use binaries::binary;
pub use nats::{NatsCluster, NatsServer};
pub use process::Killed;
pub use relay::Relay;
