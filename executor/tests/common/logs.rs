//! `loadshift workload logs` as an operator runs it while a counting
//! workload moves: the same checks for processes and containers, whose
//! output reaches the reader by different roads.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::ChildStdout;

use super::{assert_continuous, counter_values, Cluster};

/// Reads numbers from `lines` into `seen` until it holds `n`.
async fn read_until(lines: &mut Lines<BufReader<ChildStdout>>, seen: &mut Vec<u64>, n: usize) {
    while seen.len() < n {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("a line within 60 s")
            .expect("read")
            .expect("logs -f ended early");
        seen.push(line.trim().parse().expect("a number"));
    }
}

/// The numbers `loadshift ARGS` printed, one a line.
async fn numbers(c: &Cluster, args: &[&str]) -> Vec<u64> {
    let out = c.loadshift(args).await;
    assert!(
        out.status.success(),
        "loadshift {args:?} failed\n{}",
        c.logs()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse().expect("a number"))
        .collect()
}

/// `workload logs NAME` of a counter: every number from 0, once and in
/// order, wherever it ran (and however its moves ended).
pub async fn reads_whole(c: &Cluster, name: &str) -> Vec<u64> {
    let whole = numbers(c, &["workload", "logs", name]).await;
    assert_continuous(&whole);
    whole
}

/// Follows counter `name`'s output with `workload logs -f` while it moves
/// from node2 to node3, and checks what an operator reads: every number
/// from 0 once and in order, past what node3 received with the workload
/// (so lines written on node3 came through too); then the whole output
/// without `-f` and its `--tail`. Returns how many lines arrived on node3
/// with the workload.
pub async fn follow_across_a_move(c: &mut Cluster, name: &str) -> usize {
    let mut follow = c
        .cli()
        .args(["workload", "logs", name, "-f"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start loadshift workload logs -f");
    let mut lines = BufReader::new(follow.stdout.take().expect("piped")).lines();
    let mut seen: Vec<u64> = Vec::new();
    read_until(&mut lines, &mut seen, 5).await;
    c.completed(c.migrate(name, "node2", "node3").await).await;
    // What node3 holds of the workload's past: everything read beyond it
    // was written on node3 and could only come from there.
    let on_target = counter_values(&c.node("node3").workload_dir(name).join("stdout")).len();
    assert!(on_target >= 5, "node3 received {on_target} lines of output");
    read_until(&mut lines, &mut seen, on_target + 10).await;
    follow.kill().await.expect("stop following");
    assert_continuous(&seen);

    let whole = reads_whole(c, name).await;
    assert!(
        whole.len() >= seen.len(),
        "{} < {}",
        whole.len(),
        seen.len()
    );
    let tail = numbers(c, &["workload", "logs", name, "--tail", "3"]).await;
    assert_eq!(tail.len(), 3, "{tail:?}");
    assert!(
        tail[2] + 1 >= whole.len() as u64 && tail[1] == tail[0] + 1 && tail[2] == tail[1] + 1,
        "{tail:?} after {} lines",
        whole.len()
    );
    on_target
}
