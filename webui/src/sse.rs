//! Live pages: Server-Sent Events carrying re-rendered HTML fragments.
//!
//! Each page wraps its changing part in `<div id="live" data-src=...>`; five
//! lines of JavaScript in the base template replace that div's content with
//! each `fragment` event. Without JavaScript the page is the same, one
//! reload behind. A client is sent a fragment at most once per
//! `live_interval`, and only when the projection changed; the fragment of a
//! view is rendered once per projection version and shared by every client
//! watching it, so fifty browsers on the cluster page cost one render.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;

use crate::{AppState, Shared};

/// Rendered fragments by view key, with the projection version they show.
#[derive(Default)]
pub struct Cache {
    inner: tokio::sync::Mutex<HashMap<String, (u64, Arc<str>)>>,
}

/// Views remembered at most; past this the cache starts over (filters make
/// keys unbounded).
const CACHE_KEYS: usize = 256;

impl Cache {
    /// The fragment of `key` at `version`, rendering it if no client did yet.
    pub async fn get_or_render(
        &self,
        key: &str,
        version: u64,
        render: impl FnOnce() -> String,
    ) -> Arc<str> {
        let mut map = self.inner.lock().await;
        if let Some((v, html)) = map.get(key) {
            if *v >= version {
                return html.clone();
            }
        }
        let html: Arc<str> = render().into();
        if map.len() >= CACHE_KEYS {
            map.clear();
        }
        map.insert(key.to_string(), (version, html.clone()));
        html
    }
}

/// Counts a connection while it is open.
struct ClientGuard(Shared);

impl ClientGuard {
    fn new(st: Shared) -> Self {
        st.sse_clients.fetch_add(1, Ordering::Relaxed);
        Self(st)
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.sse_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An SSE response pushing `render`'s fragment after each change of the
/// projection; `key` names the view (path and query) for the shared cache.
pub fn stream<F>(
    st: Shared,
    key: String,
    render: F,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    F: Fn(&AppState) -> String + Send + Sync + 'static,
{
    let rx = st.changes.subscribe();
    let guard = ClientGuard::new(st.clone());
    let s = futures::stream::unfold(
        (st, rx, guard, render, key),
        |(st, mut rx, guard, render, key)| async move {
            rx.changed().await.ok()?;
            if !st.settings.live_interval.is_zero() {
                tokio::time::sleep(st.settings.live_interval).await;
            }
            let version = *rx.borrow_and_update();
            let html = st
                .live_cache
                .get_or_render(&key, version, || render(&st))
                .await;
            let event = Event::default().event("fragment").data(&*html);
            Some((Ok(event), (st, rx, guard, render, key)))
        },
    );
    Sse::new(s).keep_alive(KeepAlive::default())
}
