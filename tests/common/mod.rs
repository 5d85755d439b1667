//! Helpers shared by the test binaries that run the `daxfs` binary and mount for real
//! (each includes this module with `mod common;`).
#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;
use std::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_daxfs");

/// Real mounts need root and /dev/fuse; a test without them says so and passes as skipped.
pub fn can_mount() -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !Path::new("/dev/fuse").exists() {
        eprintln!("skipping: real mounts need root and /dev/fuse");
        return false;
    }
    true
}

/// Run the daxfs binary and collect its output.
pub fn daxfs(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// Unmount `dir`; if that fails (busy, or already gone), detach it lazily so a failing
/// test never leaves a mount behind.
pub fn umount(dir: &Path) {
    let ok = Command::new("umount")
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let _ = Command::new("umount").arg("-l").arg(dir).status();
    }
}

/// Is the program at `path` there? A test that needs it skips with a message when it is
/// not, except under scripts/test.sh (DAXFS_REQUIRE_TOOLS=1), which installs every tool the
/// tests use: there a missing one fails the test instead of passing it unseen.
pub fn have(path: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    assert!(
        std::env::var_os("DAXFS_REQUIRE_TOOLS").is_none(),
        "{path} is missing (scripts/deps.sh installs it)"
    );
    eprintln!("skipping: {path} is missing");
    false
}
