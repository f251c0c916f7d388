//! The bounded, in-order queue between the sampler and the publisher.
//!
//! It is what lets the agent keep sampling while NATS is away: the sampler
//! only ever touches this buffer, never the network. An event counts against
//! the bound from the moment it is pushed until JetStream acknowledged it; an
//! event the publisher could not get acknowledged comes back to the front
//! ([`Buffer::requeue`]) and is sent again with the same id, which JetStream
//! deduplicates.
//!
//! When the buffer is full, a live sampler drops the oldest waiting event
//! (recent telemetry is worth more than old) and is told how many went; a trace
//! replay at full speed waits for space instead, since nothing forces it on.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use loadshift_events::Envelope;
use tokio::sync::Notify;

/// The shared queue. Wrap it in an `Arc`.
#[derive(Debug)]
pub struct Buffer {
    capacity: usize,
    inner: Mutex<Inner>,
    /// Woken when events arrive or the buffer closes.
    data: Notify,
    /// Woken when events are acknowledged or dropped.
    space: Notify,
    acked: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Envelope>,
    /// Taken by the publisher and not yet acknowledged nor given back.
    in_flight: usize,
    closed: bool,
}

impl Buffer {
    /// A buffer holding at most `capacity` events (at least 2, so that a
    /// publish window of half of it always leaves room to drop from).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(2),
            inner: Mutex::new(Inner::default()),
            data: Notify::new(),
            space: Notify::new(),
            acked: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// The bound.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The largest publish window that keeps drop-oldest possible: with at
    /// most half of the buffer in flight, a full buffer always has a waiting
    /// event to drop.
    pub fn max_window(&self) -> usize {
        (self.capacity / 2).max(1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind; carry on.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `env`, dropping the oldest waiting events if the buffer is
    /// full. Returns how many were dropped, for the caller to report.
    pub fn push_drop_oldest(&self, env: Envelope) -> usize {
        let mut dropped = 0;
        {
            let mut inner = self.lock();
            while inner.queue.len() + inner.in_flight >= self.capacity {
                if inner.queue.pop_front().is_none() {
                    break;
                }
                dropped += 1;
            }
            inner.queue.push_back(env);
        }
        if dropped > 0 {
            self.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
        }
        self.data.notify_one();
        dropped
    }

    /// Appends `env` once there is room: backpressure for a trace replay.
    pub async fn push_wait(&self, env: Envelope) {
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut inner = self.lock();
                if inner.queue.len() + inner.in_flight < self.capacity {
                    inner.queue.push_back(env);
                    drop(inner);
                    self.data.notify_one();
                    return;
                }
            }
            notified.await;
        }
    }

    /// Takes up to `max` events to publish, waiting for at least one. `None`
    /// once the buffer is closed and empty: the publisher is done.
    pub async fn take(&self, max: usize) -> Option<Vec<Envelope>> {
        loop {
            let notified = self.data.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut inner = self.lock();
                if !inner.queue.is_empty() {
                    return Some(Self::take_locked(&mut inner, max));
                }
                if inner.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Takes up to `max` events without waiting (possibly none).
    pub fn try_take(&self, max: usize) -> Vec<Envelope> {
        Self::take_locked(&mut self.lock(), max)
    }

    fn take_locked(inner: &mut Inner, max: usize) -> Vec<Envelope> {
        let n = max.min(inner.queue.len());
        inner.in_flight += n;
        inner.queue.drain(..n).collect()
    }

    /// `n` taken events were acknowledged: they leave the buffer.
    pub fn acked(&self, n: usize) {
        {
            let mut inner = self.lock();
            inner.in_flight = inner.in_flight.saturating_sub(n);
        }
        self.acked.fetch_add(n as u64, Ordering::Relaxed);
        self.space.notify_waiters();
    }

    /// Gives taken events back, oldest first, to be sent again before anything
    /// newer.
    pub fn requeue(&self, events: Vec<Envelope>) {
        {
            let mut inner = self.lock();
            inner.in_flight = inner.in_flight.saturating_sub(events.len());
            for env in events.into_iter().rev() {
                inner.queue.push_front(env);
            }
        }
        self.data.notify_one();
    }

    /// No more events will be pushed; the publisher drains what is left.
    pub fn close(&self) {
        self.lock().closed = true;
        self.data.notify_waiters();
        self.data.notify_one();
    }

    /// Events not yet acknowledged (waiting or in flight).
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.queue.len() + inner.in_flight
    }

    /// Whether every pushed event was acknowledged (or dropped).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events acknowledged so far: the progress measure.
    pub fn acked_total(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Events dropped so far because the buffer was full.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loadshift_events::payload::NodeLeft;
    use loadshift_events::{Event, NodeName};

    fn ev(n: u64) -> Envelope {
        Envelope::new(
            NodeName::new("n1").unwrap(),
            Event::NodeLeft(NodeLeft {
                reason: "test".into(),
                samples: n,
            }),
        )
    }

    fn tag(e: &Envelope) -> u64 {
        match &e.event {
            Event::NodeLeft(l) => l.samples,
            _ => unreachable!(),
        }
    }

    #[tokio::test]
    async fn keeps_order() {
        let b = Buffer::new(10);
        for i in 0..5 {
            assert_eq!(b.push_drop_oldest(ev(i)), 0);
        }
        let got: Vec<u64> = b.take(3).await.unwrap().iter().map(tag).collect();
        assert_eq!(got, [0, 1, 2]);
        let rest: Vec<u64> = b.try_take(10).iter().map(tag).collect();
        assert_eq!(rest, [3, 4]);
    }

    #[tokio::test]
    async fn full_buffer_drops_the_oldest_and_counts() {
        let b = Buffer::new(4);
        for i in 0..4 {
            assert_eq!(b.push_drop_oldest(ev(i)), 0);
        }
        assert_eq!(b.push_drop_oldest(ev(4)), 1);
        assert_eq!(b.push_drop_oldest(ev(5)), 1);
        assert_eq!(b.len(), 4);
        assert_eq!(b.dropped_total(), 2);
        let got: Vec<u64> = b.try_take(10).iter().map(tag).collect();
        assert_eq!(got, [2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn in_flight_counts_against_the_bound_and_is_never_dropped() {
        let b = Buffer::new(4);
        for i in 0..4 {
            b.push_drop_oldest(ev(i));
        }
        let taken = b.try_take(b.max_window());
        assert_eq!(taken.len(), 2);
        // Full: the oldest *waiting* one goes, not the ones on the wire.
        assert_eq!(b.push_drop_oldest(ev(4)), 1);
        assert_eq!(b.len(), 4);
        // Not acknowledged: they come back in front, in order.
        b.requeue(taken);
        let got: Vec<u64> = b.try_take(10).iter().map(tag).collect();
        assert_eq!(got, [0, 1, 3, 4]);
        b.acked(4);
        assert!(b.is_empty());
        assert_eq!(b.acked_total(), 4);
    }

    #[tokio::test]
    async fn push_wait_waits_for_an_ack() {
        let b = std::sync::Arc::new(Buffer::new(2));
        b.push_wait(ev(0)).await;
        b.push_wait(ev(1)).await;
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.push_wait(ev(2)).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let taken = b.try_take(1);
        b.acked(taken.len());
        waiter.await.unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b.dropped_total(), 0);
    }

    #[tokio::test]
    async fn take_ends_when_closed_and_drained() {
        let b = Buffer::new(4);
        b.push_drop_oldest(ev(0));
        b.close();
        assert_eq!(b.take(10).await.map(|v| v.len()), Some(1));
        assert!(b.take(10).await.is_none());
    }
}
