//! The deployment's own files: the systemd units verify, the Vagrantfile
//! parses, and the set-up script is idempotent (a second run changes nothing).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    // The units start binaries from /usr/local/bin, where deploy/provision
    // installs them; point them at this build's binaries instead.
    let bin_dir = loadshift_testkit::binary("loadshift-brain")
        .parent()
        .expect("binary dir")
        .to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for entry in std::fs::read_dir(repo().join("deploy/systemd")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("service") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace("/usr/local/bin/", &format!("{}/", bin_dir.display()));
        let out = tmp.path().join(path.file_name().unwrap());
        std::fs::write(&out, text).unwrap();
        units.push(out);
    }
    assert_eq!(units.len(), 5, "nats, brain, webui, agent, executor");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // Unknown keys are only warnings to systemd; they are mistakes to us.
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned:\n{stderr}"
    );
}

#[test]
fn the_vagrantfile_parses() {
    let out = Command::new("ruby")
        .arg("-c")
        .arg(repo().join("Vagrantfile"))
        .output()
        .expect("ruby (scripts/setup installs it)");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Syntax OK"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_second_run_of_the_setup_changes_nothing() {
    // scripts/test ran the set-up once already; this is the second run.
    let out = Command::new("bash")
        .arg(repo().join("scripts/setup"))
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "setup failed:\n{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() > 5, "setup said too little:\n{stdout}");
    for line in &lines {
        let (_, rest) = line.split_once(": ").unwrap_or(("", line));
        assert!(
            rest.starts_with("ok") || rest == "done",
            "a second run changed something: {line:?}\n{stdout}"
        );
    }
}
