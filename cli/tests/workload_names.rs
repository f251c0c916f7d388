//! `loadshift workload run` refuses a name the log says runs already, and
//! exits non-zero with the node's reason when the node refuses the start.

mod common;

use common::{finished, started, Harness};
use loadshift_events::workload::{Runtime, StartFailed};
use loadshift_events::{Event, WorkloadName};

#[tokio::test]
async fn a_name_that_runs_already_is_refused_before_anything_is_published() {
    let h = Harness::new().await;
    h.publish("node3", started("web", Runtime::Process, Some(7), None))
        .await;
    let out = h
        .run(&[
            "workload", "run", "--node", "node2", "--name", "web", "--", "sleep", "5",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already runs on node3"), "{err}");
    assert_eq!(h.events().await.len(), 1, "a start request was published");
}

#[tokio::test]
async fn a_refused_start_exits_non_zero_with_the_reason() {
    let h = Harness::new().await;
    let child = h.run_waiting_on_node2("ghost", &["/no/such/program"]).await;
    h.publish(
        "node2",
        Event::WorkloadStartFailed(StartFailed {
            workload: WorkloadName::new("ghost").unwrap(),
            reason: "/no/such/program does not exist or is not executable on this node".into(),
        }),
    )
    .await;
    let out = finished(child).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ghost did not start on node2"), "{err}");
    assert!(err.contains("/no/such/program does not exist"), "{err}");
}
