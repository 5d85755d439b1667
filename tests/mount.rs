//! Real mounts through the `daxfs` binary: mkfs an image in a temporary directory, mount
//! it, use it with std::fs, unmount (always, also when a test fails: `Mounted` unmounts on
//! drop), and `daxfs check` it. Includes SIGKILL of the daemon in the middle of work.
//! Needs root and /dev/fuse; skipped (with a message) where they are missing.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_daxfs");

fn can_mount() -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !Path::new("/dev/fuse").exists() {
        eprintln!("skipping: real mounts need root and /dev/fuse");
        return false;
    }
    true
}

fn tmpdir() -> tempfile::TempDir {
    let base = if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    tempfile::Builder::new()
        .prefix("daxfs-mount-test")
        .tempdir_in(base)
        .unwrap()
}

fn daxfs(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// A live mount; unmounted when dropped.
struct Mounted {
    dir: PathBuf,
}

impl Mounted {
    fn new(image: &Path, dir: &Path) -> Mounted {
        fs::create_dir_all(dir).unwrap();
        let out = daxfs(&["mount", image.to_str().unwrap(), dir.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mounted {
            dir: dir.to_path_buf(),
        }
    }
    fn unmount(&mut self) {
        if self.dir.as_os_str().is_empty() {
            return;
        }
        let d = self.dir.to_str().unwrap().to_string();
        let ok = Command::new("umount")
            .arg(&d)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").args(["-l", &d]).status();
        }
        self.dir = PathBuf::new();
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.unmount();
    }
}

fn check_clean(image: &Path) {
    let out = daxfs(&["check", image.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn mount_use_remount_check() {
    if !can_mount() {
        return;
    }
    let t = tmpdir();
    let img = t.path().join("img");
    let mnt = t.path().join("mnt");
    assert!(
        daxfs(&["mkfs", img.to_str().unwrap(), "--size", "64M"])
            .status
            .success()
    );
    {
        let _m = Mounted::new(&img, &mnt);
        fs::create_dir_all(mnt.join("a/b")).unwrap();
        fs::write(mnt.join("a/b/file"), b"persistent bytes").unwrap();
        fs::set_permissions(mnt.join("a/b/file"), fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("b/file", mnt.join("a/link")).unwrap();
        fs::hard_link(mnt.join("a/b/file"), mnt.join("a/hard")).unwrap();
        let stat = daxfs(&["stat", mnt.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&stat.stdout);
        assert!(
            stat.status.success() && text.contains("commits ") && text.contains("shutdown false"),
            "{text}"
        );
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        fs::write(mnt.join("big"), &big).unwrap();
        assert_eq!(fs::read(mnt.join("big")).unwrap(), big);
    }
    check_clean(&img);
    {
        let _m = Mounted::new(&img, &mnt);
        assert_eq!(fs::read(mnt.join("a/link")).unwrap(), b"persistent bytes");
        let md = fs::metadata(mnt.join("a/b/file")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o600);
        assert_eq!(md.nlink(), 2);
        assert_eq!(fs::metadata(mnt.join("big")).unwrap().len(), 3_000_000);
        fs::remove_file(mnt.join("big")).unwrap();
    }
    check_clean(&img);
}

#[test]
fn sigkill_of_the_daemon_loses_nothing_fsynced() {
    if !can_mount() {
        return;
    }
    let t = tmpdir();
    let img = t.path().join("img");
    let mnt = t.path().join("mnt");
    assert!(
        daxfs(&["mkfs", img.to_str().unwrap(), "--size", "64M"])
            .status
            .success()
    );
    for round in 0..5u64 {
        let mut m = Mounted::new(&img, &mnt);
        // Files of earlier rounds were fsynced before the kill: they must all be there.
        for r in 0..round {
            let want = format!("round {r} ").repeat(1000);
            assert_eq!(
                fs::read_to_string(mnt.join(format!("r{r}"))).unwrap(),
                want,
                "round {r} lost"
            );
        }
        let want = format!("round {round} ").repeat(1000);
        let mut f = fs::File::create(mnt.join(format!("r{round}"))).unwrap();
        f.write_all(want.as_bytes()).unwrap();
        f.sync_all().unwrap();
        drop(f);
        // Keep the daemon busy with metadata work, and kill it in the middle.
        let dir = mnt.join(format!("churn{round}"));
        let writer = std::thread::spawn(move || {
            let _ = fs::create_dir(&dir);
            for i in 0..100_000 {
                if fs::write(dir.join(format!("f{i}")), b"x").is_err() {
                    break;
                }
                let _ = fs::remove_file(dir.join(format!("f{}", i / 2)));
            }
        });
        std::thread::sleep(Duration::from_millis(150 + 70 * round));
        let pids = Command::new("pgrep")
            .args(["-f", &format!("daxfs mount {}", img.display())])
            .output()
            .unwrap();
        let pid = String::from_utf8_lossy(&pids.stdout)
            .lines()
            .next()
            .map(|s| s.trim().to_string())
            .unwrap();
        assert!(
            Command::new("kill")
                .args(["-KILL", &pid])
                .status()
                .unwrap()
                .success()
        );
        let _ = writer.join();
        m.unmount();
        // The image lock is released when the process is gone.
        std::thread::sleep(Duration::from_millis(100));
    }
    {
        let _m = Mounted::new(&img, &mnt);
        for r in 0..5u64 {
            assert!(mnt.join(format!("r{r}")).exists());
        }
    }
    check_clean(&img);
}
