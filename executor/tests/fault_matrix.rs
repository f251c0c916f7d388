//! A short seeded slice of the fault matrix (`scripts/faults` runs it at
//! length): migrations of a live counter between real executors, each with
//! a fault injected, and none may lose the workload, run it twice or leave
//! anything stuck.

mod common;

use common::matrix;

/// How many faults the slice injects, and from which seed: the same faults
/// every run, a different mix than the default of `scripts/faults`.
const COUNT: usize = 4;
const SEED: u64 = 20261129;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_slice_of_faults_loses_nothing_doubles_nothing_and_leaves_nothing_stuck() {
    let tally = matrix::run(COUNT, SEED).await;
    assert_eq!(tally.outcomes.len(), COUNT, "{}", tally.summary());
    assert_eq!(
        tally.summary(),
        format!("faults: {COUNT} injected, 0 lost, 0 duplicated, 0 stuck"),
        "{:#?}",
        tally.outcomes
    );
}
