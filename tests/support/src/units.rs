//! The systemd units in `systemd/`, checked as systemd itself reads them:
//! `systemd-analyze verify` (syntax, directives, executables) and
//! `systemd-analyze security --offline=true` (the exposure score).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's `systemd/` directory.
pub fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../systemd")
}

/// Copies `units` to a temp dir with each `(installed path, built binary)` replaced
/// (the units name /usr/bin, the test has the freshly built binaries), then runs
/// `systemd-analyze verify` on them; panics with its output unless it is clean.
/// Returns the temp dir holding the copies.
pub fn verify(units: &[&str], binaries: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for unit in units {
        let mut text = std::fs::read_to_string(units_dir().join(unit)).unwrap();
        for (installed, built) in binaries {
            text = text.replace(installed, built);
        }
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(units.iter().map(|u| dir.path().join(u)))
        .output()
        .expect("run systemd-analyze (Debian's systemd package)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines about units this one refers to but which are not installed here
    // (mariadb.service) are not about our files.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| units.iter().any(|u| l.contains(u)))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
    dir
}

/// The overall exposure score `systemd-analyze security --offline=true` gives a
/// service unit file (0 = locked down, 10 = unprotected).
pub fn exposure(unit: &Path) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit)
        .output()
        .expect("run systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let rest = l.split("Overall exposure level for ").nth(1)?;
            rest.split(": ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}
