//! `daxfs mkfs` on a target that holds something else (issue 12): like mkfs.xfs it
//! refuses a known filesystem, swap area or partition table, naming it, unless --force;
//! a file of random data or zeros holds nothing known and is formatted. The images are
//! made by the real tools (mkfs.ext4 from e2fsprogs, mkfs.xfs from xfsprogs, mkswap);
//! a test whose tool is missing says so and passes (scripts/deps.sh installs them).

mod common;
use common::daxfs;

use std::path::Path;
use std::process::Command;

fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        // Under scripts/test.sh, which installs it, a missing tool is a failure.
        assert!(
            std::env::var_os("DAXFS_REQUIRE_TOOLS").is_none(),
            "{tool} is not installed (scripts/deps.sh installs it)"
        );
        eprintln!("skipping: {tool} is not installed (scripts/deps.sh installs it)");
    }
    found
}

fn blank(path: &Path, size: u64) {
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
}

/// `tool args... IMAGE` made a foreign image: daxfs mkfs refuses it, naming `what`, and
/// leaves it as it was; with --force it formats it, and check is clean.
fn refused_then_forced(tool: &str, args: &[&str], size: &str, bytes: u64, what: &str) {
    if !have(tool) {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let img = dir.path().join("foreign.img");
    blank(&img, bytes);
    let out = Command::new(tool).args(args).arg(&img).output().unwrap();
    assert!(
        out.status.success(),
        "{tool}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = std::fs::read(&img).unwrap();
    let p = img.to_str().unwrap();
    let out = daxfs(&["mkfs", p, "--size", size, "--sparse"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mkfs over a {what} succeeded");
    assert!(
        err.contains(&format!("appears to contain an existing {what}")) && err.contains("--force"),
        "{err}"
    );
    assert!(
        std::fs::read(&img).unwrap() == before,
        "a refused mkfs changed the image"
    );
    let out = daxfs(&["mkfs", p, "--size", size, "--sparse", "--force"]);
    assert!(
        out.status.success(),
        "mkfs --force: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = daxfs(&["check", p]);
    assert!(
        out.status.success(),
        "check: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn ext4_is_refused_without_force() {
    refused_then_forced(
        "mkfs.ext4",
        &["-q", "-F"],
        "64M",
        64 << 20,
        "ext4 filesystem",
    );
}

#[test]
fn xfs_is_refused_without_force() {
    // mkfs.xfs wants at least 300 MiB.
    refused_then_forced(
        "mkfs.xfs",
        &["-q", "-f"],
        "320M",
        320 << 20,
        "xfs filesystem",
    );
}

#[test]
fn swap_is_refused_without_force() {
    refused_then_forced("mkswap", &[], "64M", 64 << 20, "swap area");
}

#[test]
fn random_data_and_zeros_are_formatted() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let img = dir.path().join("random.img");
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<u8> = (0..(32u64 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(&img, &data).unwrap();
    let out = daxfs(&["mkfs", img.to_str().unwrap(), "--size", "32M"]);
    assert!(
        out.status.success(),
        "mkfs over random data: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let zeros = dir.path().join("zeros.img");
    blank(&zeros, 32 << 20);
    let out = daxfs(&["mkfs", zeros.to_str().unwrap(), "--size", "32M"]);
    assert!(
        out.status.success(),
        "mkfs over zeros: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
