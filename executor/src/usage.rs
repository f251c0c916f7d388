//! How much each workload uses of its node, sampled by the executor (the one
//! that knows which processes or containers make up each workload) and
//! published as `telemetry.<node>.workloads`. The brain weighs a move by it:
//! CPU share relieved against resident memory to copy.

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
    last: HashMap<WorkloadName, (Instant, f64)>,
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
            let now = Instant::now();
            let cpu_pct = match self.last.get(&w.name) {
                Some((t, cpu)) if now > *t && u.cpu_seconds >= *cpu => {
                    ((u.cpu_seconds - cpu) / now.duration_since(*t).as_secs_f64() * 100.0) as f32
                }
                // First reading (or a restored workload whose counters
                // restarted): no rate yet.
                _ => 0.0,
            };
            seen.insert(w.name.clone(), (now, u.cpu_seconds));
            out.push(WorkloadUse {
                workload: w.name,
                cpu_pct,
                rss_bytes: u.rss_bytes,
            });
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
