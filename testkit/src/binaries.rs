//! Finding the workspace's own binaries from any crate's integration tests.
//!
//! `CARGO_BIN_EXE_*` only names binaries of the crate under test; an end-to-end
//! test of one service drives the others' real binaries too, which `cargo test
//! --workspace` builds into the same target directory as the test itself.

use std::path::PathBuf;

/// The path of workspace binary `name` (e.g. `loadshift-agent`).
///
/// # Panics
/// When it has not been built: run the tests with `cargo test --workspace`
/// (what `scripts/test` does) so every binary is there.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("path of the running test");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --workspace --bins` (scripts/test does)",
        path.display()
    );
    path
}
