//! The live trace run as a row of the simulator's value table, beside the
//! rule policies simulated on the same VMs, the same layout and the same
//! stretch of the trace: the table and the metrics are
//! [`loadshift_brain::simulate`]'s own, so the live numbers and the
//! simulated ones are counted the same way.

use std::time::Duration;

use loadshift_brain::simulate::{self, policy, report, CostModel};
use loadshift_events::NodeName;

use super::report::StopReport;
use super::trace_plan::{TracePlan, PROFILE_STEPS};

/// A wall-clock span as a duration (zero when negative).
pub fn ran_for(d: chrono::TimeDelta) -> Duration {
    d.to_std().unwrap_or_default()
}

/// How many trace steps the generators played in `ran` (at least one, at
/// most the profile's length: after that they loop).
pub fn steps_played(plan: &TracePlan, ran: Duration) -> usize {
    let step = plan.live_step().as_secs_f64().max(1e-9);
    ((ran.as_secs_f64() / step) as usize).clamp(1, PROFILE_STEPS)
}

/// The table: `none`, `threshold` and `spread` simulated over the steps the
/// live run played, then the live run (`ai (live)`), counted over the
/// workers' samples.
pub fn value_table(
    plan: &TracePlan,
    report: &StopReport,
    workers: &[NodeName],
    ran: Duration,
) -> String {
    let steps = steps_played(plan, ran);
    let window = plan.window(steps);
    let cost = CostModel::default();
    let mut outcomes = vec![
        simulate::run(&window, &plan.layout, &mut policy::Stay, &cost),
        simulate::run(
            &window,
            &plan.layout,
            &mut policy::Threshold::default(),
            &cost,
        ),
        simulate::run(&window, &plan.layout, &mut policy::Spread::default(), &cost),
        report.outcome("ai (live)", workers, plan.speed),
    ];
    report::relative_to_none(&mut outcomes);
    for o in outcomes.iter_mut().take(3) {
        o.policy = format!("{} (simulated)", o.policy);
    }
    format!(
        "value of the live run ({:.0} s at {}x: {steps} trace steps), beside the simulator on the same VMs and layout ({}):\n{}",
        ran.as_secs_f64(),
        plan.speed,
        plan.grid.names.join(", "),
        report::table(&plan.layout, plan.grid.names.len(), window.times.len(), &outcomes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use loadshift_brain::simulate::{Grid, Layout};

    fn plan() -> TracePlan {
        // Two VMs on one 1-core simulated node: 0.6 + 0.5 cores, overloaded
        // at every step.
        let steps = 4;
        TracePlan {
            grid: Grid {
                names: vec!["a".into(), "b".into()],
                step_ms: 300_000,
                times: (0..steps).map(|i| i * 300_000).collect(),
                cores: vec![vec![0.6; steps as usize], vec![0.5; steps as usize]],
                memory: vec![vec![1 << 20; steps as usize]; 2],
            },
            layout: Layout {
                capacity_cores: 1.0,
                memory_bytes: 1 << 30,
                placement: vec![0, 0],
                nodes: 2,
            },
            speed: 300.0,
            node_cpus: 1.0,
            node_memory_bytes: 1 << 30,
            from: 0,
        }
    }

    #[test]
    fn the_simulated_rows_cover_the_steps_played() {
        let p = plan();
        assert_eq!(steps_played(&p, Duration::from_millis(2500)), 2);
        assert_eq!(steps_played(&p, Duration::ZERO), 1);
        let t = value_table(&p, &StopReport::default(), &[], Duration::from_secs(2));
        // none, simulated over 2 steps of 5 min with node 0 overloaded: 10.
        let none = t
            .lines()
            .find(|l| l.starts_with("| none (simulated)"))
            .unwrap();
        assert!(none.starts_with("| none (simulated) | 10 |"), "{t}");
        let live = t.lines().find(|l| l.starts_with("| ai (live)")).unwrap();
        assert!(live.starts_with("| ai (live) | 0 | 0 | 0 |"), "{t}");
        assert!(t.contains("2 steps of 5 min"), "{t}");
        assert!(t.contains("(a, b)"), "{t}");
    }
}
