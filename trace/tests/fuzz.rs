//! The trace loader under seeded hostile input (good Bitbrains rows, the
//! same with a field replaced by `1e40`, `-4`, `NaN`, text or nothing, and
//! random lines; see `loadshift_testkit::fuzz`): it never panics, every
//! line is either a row or counted as malformed, and every row it keeps
//! becomes a sample the contract accepts, so the agent never publishes what
//! every reader would refuse.
//!
//! `LOADSHIFT_FUZZ_CASES=1000000 cargo test --release -p loadshift-trace --test fuzz`
//! runs the long version (BENCHMARKS.md).

use loadshift_events::{Envelope, Event, NodeName};
use loadshift_testkit::fuzz::{self, proptest};
use proptest::prelude::*;

#[test]
fn every_line_is_a_row_the_contract_accepts_or_counted_as_malformed() {
    let node = NodeName::new("node2").unwrap();
    let file = proptest::collection::vec(fuzz::trace_line(), 1..8);
    fuzz::runner()
        .run(&file, |lines| {
            let text = lines.join("\n");
            let parsed = loadshift_trace::parse(&text, "fuzz.csv");
            let counted: usize = text
                .lines()
                .enumerate()
                .filter(|(i, l)| {
                    let header = *i == 0 && l.trim_start().starts_with("Timestamp");
                    !l.trim().is_empty() && !header
                })
                .count();
            prop_assert_eq!(
                parsed.rows.len() + parsed.duplicates + parsed.malformed,
                counted
            );
            for (i, row) in parsed.rows.iter().enumerate() {
                let env = Envelope::new(
                    node.clone(),
                    Event::TelemetrySample(row.to_sample(0, i as u64)),
                );
                let bytes = env
                    .encode()
                    .map_err(|e| TestCaseError::fail(format!("{row:?}: {e}")))?;
                prop_assert!(Envelope::from_message(&env.subject(), &bytes).is_ok());
            }
            Ok(())
        })
        .unwrap();
}
