//! A short seeded slice of the fault matrix (`scripts/faults` runs it at
//! length): migrations of a live counter between real executors, each with
//! a fault injected, and none may lose the workload, run it twice or leave
//! anything stuck. Once with a process (criu), once with a container (the
//! real Docker daemon, as scripts/setup-docker prepares it). A real brain
//! runs through both (its binary: `cargo build --workspace --bins`, as
//! scripts/test does), and one slice makes it the victim.

mod common;

use common::matrix::{self, Fault, Workloads};

/// How many faults each slice injects, and from which seed: the same faults
/// every run, a different mix than the default of `scripts/faults`.
const COUNT: usize = 4;
const SEED: u64 = 20261129;

fn assert_clean(tally: &matrix::Tally, count: usize) {
    assert_eq!(tally.outcomes.len(), count, "{}", tally.summary());
    assert_eq!(
        tally.summary(),
        format!("faults: {count} injected, 0 lost, 0 duplicated, 0 stuck"),
        "{:#?}",
        tally.outcomes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_slice_of_faults_loses_nothing_doubles_nothing_and_leaves_nothing_stuck() {
    assert_clean(&matrix::run(COUNT, SEED).await, COUNT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_under_a_seeded_slice_of_faults_loses_nothing_and_doubles_nothing() {
    let tally = matrix::run_kinds(COUNT, SEED, &Fault::ALL, Workloads::Containers).await;
    assert_clean(&tally, COUNT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brain_killed_on_its_way_to_a_decision_loses_none_and_asks_none_twice() {
    // One row of each of the brain's kinds, the seed choosing the moment
    // of the random kill.
    let tally = matrix::run_each(&Fault::BRAIN, SEED, Workloads::Processes).await;
    assert_clean(&tally, Fault::BRAIN.len());
}
