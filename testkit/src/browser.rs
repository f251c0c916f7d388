//! Headless Chromium (Debian's, installed by `scripts/setup`), the way this
//! machine lets it run: no sandbox as root, every background connection off
//! (the closed network refuses them, many at a time), a fresh profile each
//! time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
];

fn run(args: &[&str], url: &str) -> Vec<u8> {
    let profile = tempfile::tempdir().expect("chromium profile dir");
    let out = Command::new("chromium")
        .args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run chromium ({e}); run scripts/setup to install it"));
    out.stdout
}

/// The page at `url` as a person's browser renders it (the DOM after scripts).
pub fn dom(url: &str) -> String {
    String::from_utf8_lossy(&run(&["--dump-dom"], url)).into_owned()
}

/// Saves a 1280×900 screenshot of `url` to `path`.
///
/// # Panics
/// When Chromium wrote no file.
pub fn screenshot(url: &str, path: &Path) {
    let _ = std::fs::remove_file(path);
    run(
        &[
            &format!("--screenshot={}", path.display()),
            "--window-size=1280,900",
        ],
        url,
    );
    assert!(path.exists(), "screenshot {} not written", path.display());
}

/// The workspace's `target/` folder, where tests leave screenshots for people.
pub fn target_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    std::fs::create_dir_all(&d).expect("target dir");
    d
}
