//! How much each workload uses of its node, sampled by the executor (the one
//! that knows which processes or containers make up each workload) and
//! published as `telemetry.<node>.workloads`. The brain weighs a move by it:
//! CPU share relieved against the cost of copying its memory (resident
//! memory, and how fast it dirties more: see [`Reading::dirty_rate`]).

use std::collections::HashMap;
use std::time::Instant;

use loadshift_events::model::{WorkloadUsage, WorkloadUse};
use loadshift_events::{Envelope, Event, WorkloadName};

use crate::clock::Clock;
use crate::fence::Fence;
use crate::image_store::ImageStore;
use crate::liveness::Peers;
use crate::runtime::Runtime;
use crate::saga::{Executor, FatalError};

/// The previous reading of each workload, to turn cumulative CPU time into a rate.
#[derive(Default)]
pub struct UsageSampler {
    last: HashMap<WorkloadName, Reading>,
}

/// One reading of a workload's counters.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    cpu_seconds: f64,
    private_dirty_bytes: Option<u64>,
}

impl Reading {
    /// CPU in percent of one core since `before`; 0 on a first reading or
    /// when the counter went back (a restored workload's counters restart).
    fn cpu_pct(&self, before: Option<&Reading>) -> f32 {
        match before {
            Some(b) if self.at > b.at && self.cpu_seconds >= b.cpu_seconds => {
                let secs = self.at.duration_since(b.at).as_secs_f64();
                ((self.cpu_seconds - b.cpu_seconds) / secs * 100.0) as f32
            }
            _ => 0.0,
        }
    }

    /// Bytes of private memory dirtied per second since `before`: the
    /// growth of `Private_Dirty` (what the image gains while the workload
    /// waits for its freeze). Memory freed counts as no growth, not as a
    /// negative rate. `None` without two readings that both have it.
    /// Soft-dirty bits, which would also see pages written again, are not
    /// built into these kernels; write faults (`minflt`) count reads of
    /// new pages too.
    fn dirty_rate(&self, before: Option<&Reading>) -> Option<f64> {
        let b = before.filter(|b| self.at > b.at)?;
        let (now, then) = (self.private_dirty_bytes?, b.private_dirty_bytes?);
        let secs = self.at.duration_since(b.at).as_secs_f64();
        Some(now.saturating_sub(then) as f64 / secs)
    }
}

impl UsageSampler {
    /// Reads every workload that runs here (not those being migrated) and
    /// returns the event to publish.
    ///
    /// # Errors
    /// When the journal fails.
    pub async fn sample<R: Runtime, S: ImageStore, P: Peers, C: Clock, F: Fence>(
        &mut self,
        exec: &Executor<R, S, P, C, F>,
    ) -> Result<Option<Envelope>, FatalError> {
        let mut out = Vec::new();
        let mut seen = HashMap::new();
        for w in exec.journal.workloads().map_err(FatalError::from)? {
            if w.migrating.is_some() {
                continue;
            }
            let Some(u) = exec.runtime.usage(&w.handle).await else {
                continue;
            };
            let now = Reading {
                at: Instant::now(),
                cpu_seconds: u.cpu_seconds,
                private_dirty_bytes: u.private_dirty_bytes,
            };
            let before = self.last.get(&w.name);
            let mut used = WorkloadUse::new(w.name.clone(), now.cpu_pct(before), u.rss_bytes);
            used.dirty_bytes_per_sec = now.dirty_rate(before);
            seen.insert(w.name, now);
            out.push(used);
        }
        self.last = seen;
        // Sent even when nothing runs: the report also tells the brain that
        // this node has an executor, ready to take a workload.
        Ok(Some(Envelope::new(
            exec.node.clone(),
            Event::WorkloadUsage(WorkloadUsage {
                at: chrono::Utc::now(),
                workloads: out,
            }),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn reading(at: Instant, cpu_seconds: f64, dirty: Option<u64>) -> Reading {
        Reading {
            at,
            cpu_seconds,
            private_dirty_bytes: dirty,
        }
    }

    #[test]
    fn two_readings_give_the_cpu_share_and_the_dirty_rate() {
        let t0 = Instant::now();
        let before = reading(t0, 10.0, Some(100 << 20));
        let now = reading(t0 + Duration::from_secs(2), 11.0, Some(120 << 20));
        assert!((now.cpu_pct(Some(&before)) - 50.0).abs() < 1e-4);
        assert_eq!(now.dirty_rate(Some(&before)), Some(f64::from(10 << 20)));
    }

    #[test]
    fn a_first_reading_freed_memory_or_a_missing_figure_give_no_rate() {
        let t0 = Instant::now();
        let before = reading(t0, 10.0, Some(100 << 20));
        let later = t0 + Duration::from_secs(1);
        assert_eq!(reading(later, 1.0, None).cpu_pct(Some(&before)), 0.0);
        assert_eq!(reading(later, 11.0, Some(1)).cpu_pct(None), 0.0);
        assert_eq!(reading(later, 11.0, Some(1)).dirty_rate(None), None);
        assert_eq!(reading(later, 11.0, None).dirty_rate(Some(&before)), None);
        let freed = reading(later, 11.0, Some(50 << 20));
        assert_eq!(freed.dirty_rate(Some(&before)), Some(0.0));
    }
}
