//! The value table (one row per policy) and its JSON form (one object per
//! policy, one per line).

use std::fmt::Write as _;

use super::{Layout, Outcome};

/// Fills each outcome's overload avoided per migration, relative to the
/// `none` outcome among them (when there is one).
pub fn relative_to_none(outcomes: &mut [Outcome]) {
    let Some(none) = outcomes
        .iter()
        .find(|o| o.policy == "none")
        .map(|o| o.overload_node_minutes)
    else {
        return;
    };
    for o in outcomes.iter_mut() {
        o.avoided_per_migration =
            (o.migrations > 0).then(|| (none - o.overload_node_minutes) / o.migrations as f64);
    }
}

/// The table, headed by the layout it ran on.
pub fn table(layout: &Layout, workloads: usize, steps: usize, outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{workloads} workloads on {} nodes of {} cores (workload i on node i mod {}), {steps} steps of 5 min; overload: CPU >= 90 % of capacity",
        layout.nodes, layout.capacity_cores, layout.nodes
    );
    let _ = writeln!(
        out,
        "| policy | overloaded node-minutes | overload episodes | migrations | GiB moved | frozen s | dump core-s | refused | avoided node-min per migration (vs none) |"
    );
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for o in outcomes {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} | {:.2} | {:.1} | {:.1} | {} | {} |",
            o.policy,
            o.overload_node_minutes,
            o.overload_episodes,
            o.migrations,
            o.gib_moved,
            o.freeze_seconds,
            o.dump_core_seconds,
            o.refused,
            o.avoided_per_migration
                .map_or("-".to_string(), |v| format!("{v:.1}"))
        );
    }
    out
}

/// One JSON object per policy, one per line.
pub fn json(outcomes: &[Outcome]) -> String {
    outcomes
        .iter()
        .map(|o| serde_json::to_string(o).unwrap_or_default() + "\n")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avoided_per_migration_is_relative_to_none() {
        let mut o = vec![
            Outcome {
                policy: "none".into(),
                overload_node_minutes: 100.0,
                ..Outcome::default()
            },
            Outcome {
                policy: "ai".into(),
                overload_node_minutes: 40.0,
                migrations: 3,
                ..Outcome::default()
            },
        ];
        relative_to_none(&mut o);
        assert_eq!(o[0].avoided_per_migration, None);
        assert_eq!(o[1].avoided_per_migration, Some(20.0));
        let j = json(&o);
        assert_eq!(j.lines().count(), 2);
        let v: serde_json::Value = serde_json::from_str(j.lines().nth(1).unwrap()).unwrap();
        assert_eq!(v["policy"], "ai");
        assert_eq!(v["migrations"], 3);
        assert!(v["gib_moved"].is_number());
        assert_eq!(v["overload_node_minutes"], 40.0);
    }
}
