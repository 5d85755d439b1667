//! Real mounts through the `daxfs` binary: mkfs an image in a temporary directory, mount
//! it, use it with std::fs, unmount (always, also when a test fails: `Mounted` unmounts on
//! drop), and `daxfs check` it. Includes SIGKILL of the daemon in the middle of work.
//! Needs root and /dev/fuse; skipped (with a message) where they are missing.

mod common;
use common::{BIN, can_mount, daxfs};

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use daxfs::testing::crashsim::Rng;

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

/// A live mount; unmounted when dropped.
struct Mounted {
    dir: PathBuf,
}

impl Mounted {
    fn new(image: &Path, dir: &Path) -> Mounted {
        Mounted::with(image, dir, &[])
    }
    /// Mount with extra arguments (`-o ...`).
    fn with(image: &Path, dir: &Path, extra: &[&str]) -> Mounted {
        fs::create_dir_all(dir).unwrap();
        let mut args = vec!["mount", image.to_str().unwrap(), dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = daxfs(&args);
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
        common::umount(&self.dir);
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

/// What a file must hold after a crash, as far as the writer knows.
#[derive(Clone)]
enum Expect {
    /// fsync returned: exactly this.
    Exact(Vec<u8>),
    /// An append was in flight: starts with `old` and is a prefix of `new`.
    Growing(Vec<u8>, Vec<u8>),
}

/// The writer of the kill test: creates files and fsyncs them, appends and fsyncs, renames
/// and fsyncs the directory, unlinks; what fsync acknowledged goes into `acked`, and only
/// then. It stops at the first error (the daemon is gone).
fn kill_writer(dir: PathBuf, acked: Arc<Mutex<BTreeMap<String, Expect>>>, seed: u64, round: u64) {
    use std::fs::OpenOptions;
    let mut rng = Rng::new(seed);
    let ack = |name: &str, e: Option<Expect>| {
        let mut a = acked.lock().unwrap();
        match e {
            Some(e) => a.insert(name.to_string(), e),
            None => a.remove(name),
        };
    };
    let sync_dir = || fs::File::open(&dir).and_then(|d| d.sync_all());
    for i in 0.. {
        let name = format!("r{round}-f{i}");
        let len = 1 + rng.below(100_000) as usize;
        let data: Vec<u8> = (0..len).map(|j| (j as u64 * 7 + seed + i) as u8).collect();
        let r = (|| -> std::io::Result<()> {
            let mut f = fs::File::create(dir.join(&name))?;
            f.write_all(&data)?;
            f.sync_all()
        })();
        if r.is_err() {
            return;
        }
        ack(&name, Some(Expect::Exact(data)));
        let names: Vec<(String, Expect)> = acked
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (victim, old) = names[rng.below(names.len() as u64) as usize].clone();
        let Expect::Exact(old) = old else { continue };
        let r = match rng.below(4) {
            0 => {
                // Append and fsync.
                let more: Vec<u8> = (0..1 + rng.below(20_000)).map(|j| j as u8 ^ 0x5a).collect();
                let new = [old.clone(), more.clone()].concat();
                ack(&victim, Some(Expect::Growing(old, new.clone())));
                (|| -> std::io::Result<()> {
                    let mut f = OpenOptions::new().append(true).open(dir.join(&victim))?;
                    f.write_all(&more)?;
                    f.sync_all()
                })()
                .map(|_| ack(&victim, Some(Expect::Exact(new))))
            }
            1 => {
                // Rename and fsync the directory: either name until it returns.
                let to = format!("{victim}-m");
                ack(&victim, None);
                fs::rename(dir.join(&victim), dir.join(&to))
                    .and_then(|_| sync_dir())
                    .map(|_| ack(&to, Some(Expect::Exact(old))))
            }
            2 => {
                // Unlink: may or may not be there until the directory is synced.
                ack(&victim, None);
                fs::remove_file(dir.join(&victim)).and_then(|_| sync_dir())
            }
            _ => Ok(()),
        };
        if r.is_err() {
            return;
        }
    }
}

fn daemon_pid(img: &Path) -> String {
    let pids = Command::new("pgrep")
        .args(["-f", &format!("daxfs mount {}", img.display())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&pids.stdout)
        .lines()
        .next()
        .map(|s| s.trim().to_string())
        .expect("the daemon is running")
}

/// SIGKILL of the daemon at random moments while a writer works with fsyncs: after each
/// kill the image checks clean (log overlay), and after remounting everything fsync
/// acknowledged is there with its contents. DAXFS_KILL_ROUNDS sets the rounds (default 12).
#[test]
fn sigkill_of_the_daemon_loses_nothing_fsynced() {
    if !can_mount() {
        return;
    }
    let rounds: u64 = std::env::var("DAXFS_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let t = tmpdir();
    let img = t.path().join("img");
    let mnt = t.path().join("mnt");
    assert!(
        daxfs(&["mkfs", img.to_str().unwrap(), "--size", "256M"])
            .status
            .success()
    );
    let acked: Arc<Mutex<BTreeMap<String, Expect>>> = Arc::default();
    let mut rng = Rng::new(0x6b69_6c6c);
    let mut checked = 0usize;
    for round in 0..=rounds {
        let mut m = Mounted::new(&img, &mnt);
        let dir = mnt.join("w");
        let _ = fs::create_dir(&dir);
        for (name, e) in acked.lock().unwrap().iter() {
            let got = fs::read(dir.join(name))
                .unwrap_or_else(|e| panic!("round {round}: {name} was fsynced but: {e}"));
            match e {
                Expect::Exact(want) => assert!(
                    got == *want,
                    "round {round}: {name}: {} bytes, fsynced {}",
                    got.len(),
                    want.len()
                ),
                Expect::Growing(old, new) => assert!(
                    got.starts_with(old) && new.starts_with(&got),
                    "round {round}: {name}: neither old nor a prefix of the append"
                ),
            }
            checked += 1;
        }
        if round == rounds {
            m.unmount();
            break;
        }
        let (d, a, seed) = (dir.clone(), acked.clone(), rng.below(1 << 30));
        let writer = std::thread::spawn(move || kill_writer(d, a, seed, round));
        std::thread::sleep(Duration::from_millis(50 + rng.below(400)));
        let pid = daemon_pid(&img);
        assert!(
            Command::new("kill")
                .args(["-KILL", &pid])
                .status()
                .unwrap()
                .success()
        );
        let _ = writer.join();
        m.unmount();
        // The image lock goes with the process; check waits for it (bounded, src/pmem/imagelock.rs).
        check_clean(&img);
    }
    eprintln!(
        "{rounds} SIGKILL rounds, {} files fsynced and alive at the end, {checked} file checks",
        acked.lock().unwrap().len()
    );
    check_clean(&img);
}

/// Runs `script` (bash) in a private mount namespace in which /sbin/mount.fuse.daxfs is
/// this build's binary (an overlay on /usr/sbin, seen by nothing outside), so that
/// `mount -t fuse.daxfs` runs it without touching the machine's /sbin. The script must
/// unmount what it mounts (its mounts are invisible outside); `T` is a scratch directory.
fn with_helper(t: &Path, script: &str, env: &[(&str, &Path)]) -> std::process::Output {
    let sbin = t.join("sbin");
    fs::create_dir_all(&sbin).unwrap();
    let _ = std::os::unix::fs::symlink(BIN, sbin.join("mount.fuse.daxfs"));
    let prologue = r#"set -eu
mount -t overlay overlay -o "lowerdir=$T/sbin:/usr/sbin" /usr/sbin
"#;
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "bash", "-c"])
        .arg(format!("{prologue}{script}"))
        .env("T", t)
        .env("BIN", BIN);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Issue 11 item 1: mounting the moment umount returns works, as for a kernel filesystem,
/// through `daxfs mount` and through `mount -t fuse.daxfs` (20 rounds each, each round
/// sees the files of all earlier ones). The old daemon is still committing its unmount for
/// some milliseconds after umount returns; the new mount must wait for it, not refuse. A
/// live second writer is still refused at once, naming the mount point.
#[test]
fn mount_again_right_after_umount() {
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
    for round in 0..20 {
        let mut m = Mounted::new(&img, &mnt);
        for earlier in 0..round {
            assert_eq!(
                fs::read(mnt.join(format!("d{earlier}"))).unwrap(),
                format!("round {earlier}").as_bytes()
            );
        }
        fs::write(mnt.join(format!("d{round}")), format!("round {round}")).unwrap();
        if round == 0 {
            // A second writer while the mount is live: refused at once, with the place.
            let started = std::time::Instant::now();
            let out = daxfs(&["mkfs", "--force", img.to_str().unwrap(), "-s", "64M"]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "mkfs over a live mount succeeded");
            assert!(
                err.contains(&format!("mounted read-write on {}", mnt.display())),
                "{err}"
            );
            assert!(started.elapsed() < Duration::from_secs(2), "{err}");
        }
        m.unmount();
    }
    check_clean(&img);

    let out = with_helper(
        t.path(),
        r#"
cleanup() {
    umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
    for _ in $(seq 100); do pgrep -f "$IMG " >/dev/null || return 0; sleep 0.1; done
    echo "a daemon is still running"; return 1
}
trap cleanup EXIT
for i in $(seq 20); do
    mount -t fuse.daxfs "$IMG" "$MNT" || { echo "round $i: mount failed"; exit 1; }
    findmnt -n -o FSTYPE "$MNT" | grep -qx fuse.daxfs
    for f in $(seq -f d%g 0 19) $(seq -f h%g 1 $((i - 1))); do
        test -f "$MNT/$f" || { echo "round $i: $f missing"; exit 1; }
    done
    echo "helper $i" >"$MNT/h$i"
    umount "$MNT"
done
echo done
"#,
        &[("IMG", &img), ("MNT", &mnt)],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("done"), "{text}");
    check_clean(&img);
    let left = Command::new("pgrep")
        .args(["-f", &format!("{} ", img.display())])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "daemon left behind");
}

fn fstype(dir: &Path) -> String {
    let out = Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE", "--mountpoint", dir.to_str().unwrap()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Issue 11 item 12: `-o subtype=` (empty) mounts with no subtype, type plain `fuse`, from
/// `daxfs mount` and from `mount -t fuse.daxfs`; `subtype=NAME` still gives fuse.NAME.
#[test]
fn empty_subtype_mounts_as_plain_fuse() {
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
        let _m = Mounted::with(&img, &mnt, &["-o", "subtype="]);
        assert_eq!(fstype(&mnt), "fuse");
        fs::write(mnt.join("f"), b"plain fuse").unwrap();
    }
    {
        let _m = Mounted::with(&img, &mnt, &["-o", "subtype=pmem"]);
        assert_eq!(fstype(&mnt), "fuse.pmem");
        assert_eq!(fs::read(mnt.join("f")).unwrap(), b"plain fuse");
    }
    let out = with_helper(
        t.path(),
        r#"
trap 'umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true' EXIT
mount -t fuse.daxfs -o subtype= "$IMG" "$MNT"
findmnt -n -o FSTYPE --mountpoint "$MNT"
cat "$MNT/f"; echo
"#,
        &[("IMG", &img), ("MNT", &mnt)],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text == "fuse\nplain fuse\n",
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_clean(&img);
}

/// Wait (up to 10 s) until no process has `image` in its command line.
fn no_daemon_left(image: &Path) -> bool {
    for _ in 0..100 {
        let out = Command::new("pgrep")
            .args(["-f", &format!("{} ", image.display())])
            .output()
            .unwrap();
        if out.stdout.is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Issue 11 item 11: the same image mounted on a second mount point shows the same
/// filesystem there (a bind mount of the live mount, as mount(8) does for a mounted
/// device), from `daxfs mount` and from `mount -t fuse.daxfs`; per-mount flags (ro) apply
/// to the new mount only; a second daemon (foreground) is still refused at once, naming
/// the mount point; after both are unmounted no daemon is left and check is clean.
#[test]
fn same_image_on_two_mountpoints() {
    if !can_mount() {
        return;
    }
    let t = tmpdir();
    let img = t.path().join("img");
    let (m1, m2, m3) = (
        t.path().join("m1"),
        t.path().join("m2"),
        t.path().join("m3"),
    );
    assert!(
        daxfs(&["mkfs", img.to_str().unwrap(), "--size", "64M"])
            .status
            .success()
    );
    {
        let mut a = Mounted::new(&img, &m1);
        let mut b = Mounted::new(&img, &m2);
        fs::write(m1.join("one"), b"written at m1").unwrap();
        fs::write(m2.join("two"), b"written at m2").unwrap();
        assert_eq!(fs::read(m2.join("one")).unwrap(), b"written at m1");
        assert_eq!(fs::read(m1.join("two")).unwrap(), b"written at m2");
        {
            let _c = Mounted::with(&img, &m3, &["-o", "ro"]);
            assert_eq!(fs::read(m3.join("one")).unwrap(), b"written at m1");
            let e = fs::write(m3.join("three"), b"x").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EROFS));
            fs::write(m1.join("three"), b"still rw at m1").unwrap();
        }
        // A second daemon: refused at once, naming where the image is mounted.
        fs::create_dir_all(&m3).unwrap();
        let started = std::time::Instant::now();
        let out = Command::new("timeout")
            .args([
                "10",
                BIN,
                "mount",
                "-f",
                img.to_str().unwrap(),
                m3.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a second daemon was started: {err}");
        assert!(err.contains("is mounted read-write on"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3), "{err}");
        // The first mount point goes; the filesystem stays at the second.
        a.unmount();
        assert_eq!(fs::read(m2.join("three")).unwrap(), b"still rw at m1");
        b.unmount();
    }
    assert!(no_daemon_left(&img), "a daemon is left after both unmounts");
    check_clean(&img);

    let out = with_helper(
        t.path(),
        r#"
cleanup() {
    for m in "$M2" "$M1"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT
mount -t fuse.daxfs "$IMG" "$M1"
mount -t fuse.daxfs "$IMG" "$M2"
echo helper >"$M1/h"
cat "$M2/h" "$M2/one"; echo
test "$(pgrep -fc "$IMG ")" = 1 || { echo "more than one daemon"; pgrep -fa "$IMG "; }
umount "$M1"
cat "$M2/two"; echo
umount "$M2"
"#,
        &[("IMG", &img), ("M1", &m1), ("M2", &m2)],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text == "helper\nwritten at m1\nwritten at m2\n",
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        no_daemon_left(&img),
        "a daemon is left after the helper's unmounts"
    );
    check_clean(&img);
}

/// Issue 12 item 6: a mistyped subcommand is an error with a suggestion (not a mount); the
/// mount.fuse3 form `daxfs SOURCE DIR -o OPTS` still mounts; `info`, `check` and
/// `repair` of a mounted image say at once where it is mounted, naming the image once; `info
/// MOUNTPOINT` shows the filesystem mounted there, as xfs_info does.
#[test]
fn cli_subcommands_and_mounted_images() {
    let t = tmpdir();
    let img = t.path().join("img");
    let mnt = t.path().join("mnt");
    let (i, m) = (img.to_str().unwrap(), mnt.to_str().unwrap());
    assert!(daxfs(&["mkfs", i, "--size", "64M"]).status.success());
    let out = daxfs(&["chekc", i]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("'chekc'") && err.contains("'check'"), "{err}");
    assert!(!err.contains("mount point"), "{err}");
    if !can_mount() {
        return;
    }
    fs::create_dir_all(&mnt).unwrap();
    let out = daxfs(&[i, m, "-o", "rw,noatime"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut guard = Mounted { dir: mnt.clone() };
    fs::write(mnt.join("f"), b"x").unwrap();
    // repair refuses a mounted image as check does (the image lock), -n too.
    for cmd in ["info", "check", "repair", "repair -n"] {
        let started = std::time::Instant::now();
        let mut args: Vec<&str> = cmd.split(' ').collect();
        args.push(i);
        let out = daxfs(&args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{cmd}: {text}");
        assert!(
            text.contains(&format!("mounted read-write on {m}")),
            "{cmd}: {text}"
        );
        assert_eq!(
            text.matches(i).count(),
            1,
            "{cmd}: image named more than once: {text}"
        );
        assert_eq!(out.status.success(), cmd == "info", "{cmd}: {text}");
    }
    let out = daxfs(&["info", m]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("source:        {i}")), "{text}");
    assert!(text.contains("blocks:        16384 (64 MiB)"), "{text}");
    assert!(
        text.contains("inodes:        64 allocated in chunks, 2 in use"),
        "{text}"
    );
    guard.unmount();
    check_clean(&img);
}

/// Issue 12 item 7: `remount` refuses, by name, what it cannot change on a live mount
/// (dax=, the atime policy, rw of an image mounted -o ro) instead of returning 0; after
/// `remount,ro` the daemon knows it is read-only (`daxfs stat`), and after `remount,rw`
/// that it is not; `nofail` makes a missing image no error, as in fstab(5), so that
/// `mount -a` does not fail; without nofail it still fails.
#[test]
fn remount_refuses_what_it_cannot_change_and_nofail() {
    if !can_mount() {
        return;
    }
    let t = tmpdir();
    let img = t.path().join("img");
    let mnt = t.path().join("mnt");
    let missing = t.path().join("no-such-image");
    assert!(
        daxfs(&["mkfs", img.to_str().unwrap(), "--size", "64M"])
            .status
            .success()
    );
    fs::create_dir_all(&mnt).unwrap();
    let out = daxfs(&[
        "mount",
        missing.to_str().unwrap(),
        mnt.to_str().unwrap(),
        "-o",
        "nofail",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("nofail"));
    fs::write(
        t.path().join("fstab"),
        format!(
            "{} {} fuse.daxfs nofail 0 0\n",
            missing.display(),
            mnt.display()
        ),
    )
    .unwrap();
    let out = with_helper(
        t.path(),
        r#"
trap 'umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true' EXIT
st() { "$BIN" stat "$MNT" | sed -n 's/^ *read_only //p'; }
mount --fstab "$T/fstab" -a && echo "mount -a: 0"
mount -t fuse.daxfs "$MISSING" "$MNT" 2>/dev/null || echo "without nofail: failed"
mount -t fuse.daxfs -o noatime "$IMG" "$MNT"
echo a >"$MNT/a"
mount -o remount,dax=always "$MNT" 2>"$T/err" || { echo "dax=always: refused"; grep -c 'dax=always cannot be changed' "$T/err"; }
mount -o remount,strictatime "$MNT" 2>"$T/err" || { echo "strictatime: refused"; grep -c 'strictatime cannot be changed' "$T/err"; }
mount -o remount,ro "$MNT"
echo "after ro: $(st)"
echo b 2>/dev/null >"$MNT/b" || echo "write refused"
mount -o remount,rw "$MNT"
echo "after rw: $(st)"
echo c >"$MNT/c" && echo "write ok"
umount "$MNT"
mount -t fuse.daxfs -o ro "$IMG" "$MNT"
mount -o remount,rw "$MNT" 2>"$T/err" || { echo "rw of ro: refused"; grep -c '^daxfs: rw: ' "$T/err"; }
umount "$MNT"
"#,
        &[("IMG", &img), ("MNT", &mnt), ("MISSING", &missing)],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text,
        "mount -a: 0\nwithout nofail: failed\ndax=always: refused\n1\nstrictatime: refused\n1\n\
         after ro: true\nwrite refused\nafter rw: false\nwrite ok\nrw of ro: refused\n1\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(no_daemon_left(&img));
    check_clean(&img);
}

/// Issue 12 item 9: sizes with decimals and IEC units; each message names its subject once
/// and has one "daxfs:" prefix; `-o` has no `--o` long form in --help.
#[test]
fn sizes_messages_and_help() {
    let t = tmpdir();
    let img = t.path().join("img");
    let i = img.to_str().unwrap();
    for (size, blocks) in [
        ("1.5G", "393216 (1536 MiB)"),
        ("8GiB", "2097152 (8192 MiB)"),
        ("16.5 MiB", "4224 (16 MiB)"),
    ] {
        let out = daxfs(&["mkfs", "--force", i, "--size", size]);
        assert!(
            out.status.success(),
            "{size}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let info = String::from_utf8_lossy(&daxfs(&["info", i]).stdout).into_owned();
        assert!(
            info.contains(&format!("blocks:        {blocks}")),
            "{size}: {info}"
        );
    }
    fs::remove_file(&img).unwrap();
    let tiny = t.path().join("tiny");
    fs::write(&tiny, vec![0u8; 5000]).unwrap();
    let ti = tiny.to_str().unwrap();
    let mnt = t.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let m = mnt.to_str().unwrap();
    let mut cases = vec![
        (vec!["check", ti], ti),
        (vec!["info", ti], ti),
        (vec!["mkfs", i, "--size", "1.5X"], "1.5X"),
    ];
    if can_mount() {
        cases.push((vec!["mount", ti, m], ti));
        cases.push((vec!["mount", "memfd:8M", m], "memfd:"));
    }
    for (args, subject) in cases {
        let out = daxfs(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(err.matches("daxfs:").count(), 1, "{args:?}: {err}");
        assert_eq!(err.matches(subject).count(), 1, "{args:?}: {err}");
    }
    let help = String::from_utf8_lossy(&daxfs(&["mount", "--help"]).stdout).into_owned();
    assert!(
        help.contains("-o <OPTIONS>") && !help.contains("--o"),
        "{help}"
    );
}

/// Issue 12 item 3: the background daemon's log is kept: with no syslog, in
/// /var/log/daxfs.log (root; a tmpfs there, in a private mount namespace, for the test),
/// and a shutdown is logged with what happened, where, and what to do; so are the mount
/// and the unmount.
#[test]
fn daemon_log_is_kept() {
    if !can_mount() {
        return;
    }
    if Path::new("/dev/log").exists() {
        eprintln!("skipping: this machine has syslog (/dev/log); the daemon logs there");
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
    fs::create_dir_all(&mnt).unwrap();
    let out = with_helper(
        t.path(),
        r#"
mount -t tmpfs tmpfs /var/log
trap 'umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true' EXIT
unset DAXFS_LOG_FILE RUST_LOG
"$BIN" mount "$IMG" "$MNT"
echo a >"$MNT/a"
setfattr -n trusted.daxfs.errortag.log_write -v 1 "$MNT"
mkdir "$MNT/d" 2>/dev/null && echo "mkdir worked?"
umount "$MNT"
for _ in $(seq 100); do pgrep -f "$IMG " >/dev/null || break; sleep 0.1; done
cat /var/log/daxfs.log
"#,
        &[("IMG", &img), ("MNT", &mnt)],
    );
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{log}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (i, m) = (img.display().to_string(), mnt.display().to_string());
    for want in [
        format!("INFO: {i}: mounted on {m} (rw"),
        format!("ERROR: {i}: filesystem shut down: transaction commit failed"),
        "unmount and run `daxfs check`".to_string(),
        format!("WARN: {i}: unmounted from {m} after a shutdown"),
    ] {
        assert!(log.contains(&want), "{want:?} not in the log:\n{log}");
    }
    assert!(!log.contains("Failed to umount"), "{log}");
    assert!(no_daemon_left(&img));
    check_clean(&img);
}

/// Run `prog args` as the unprivileged user nobody (65534, no groups).
fn as_nobody(prog: &str, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", prog])
        .args(args)
        .output()
        .unwrap()
}

/// Issue 11 item 6: fallocate, punch hole and zero range by another user clear
/// set-user-ID, and set-group-ID when group-executable, through the mount (FUSE sends no
/// kill flag with fallocate; the daemon does it and drops the kernel's cached attributes).
#[test]
fn unprivileged_fallocate_clears_setid_bits_on_the_mount() {
    if !can_mount() || !common::have("/usr/bin/setpriv") {
        return;
    }
    let t = tmpdir();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let img = t.path().join("img");
    let mnt = t.path().join("mnt");
    assert!(
        daxfs(&["mkfs", img.to_str().unwrap(), "--size", "64M"])
            .status
            .success()
    );
    {
        let _m = Mounted::new(&img, &mnt);
        let f = mnt.join("f");
        fs::write(&f, vec![5u8; 16384]).unwrap();
        let p = f.to_str().unwrap();
        for (i, args) in [
            vec!["-o", "0", "-l", "4096"],
            vec!["-p", "-o", "4096", "-l", "4096"],
            vec!["-z", "-o", "8192", "-l", "4096"],
        ]
        .into_iter()
        .enumerate()
        {
            for (before, after) in [(0o6777, 0o0777), (0o6666, 0o2666)] {
                fs::set_permissions(&f, fs::Permissions::from_mode(before)).unwrap();
                assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7777, before);
                let mut a = args.clone();
                a.push(p);
                let out = as_nobody("fallocate", &a);
                assert!(
                    out.status.success(),
                    "fallocate {a:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(
                    fs::metadata(&f).unwrap().mode() & 0o7777,
                    after,
                    "case {i} ({a:?}) from {before:o}"
                );
            }
        }
        // Root (CAP_FSETID) keeps them.
        fs::set_permissions(&f, fs::Permissions::from_mode(0o6777)).unwrap();
        let out = Command::new("fallocate")
            .args(["-o", "0", "-l", "8192", p])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7777, 0o6777);
        // A write by nobody clears them too (the existing write path, for comparison).
        let out = as_nobody("sh", &["-c", &format!("echo x >> {p}")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7777, 0o0777);
    }
    check_clean(&img);
    {
        let _m = Mounted::new(&img, &mnt);
        assert_eq!(fs::metadata(mnt.join("f")).unwrap().mode() & 0o7777, 0o0777);
    }
    check_clean(&img);
}

fn errno_of<T: std::fmt::Debug>(r: std::io::Result<T>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// Issue 12 item 5: after a shutdown (a failing log write, set by an error tag) every
/// operation on the mount fails with EIO, also what the kernel had cached (attributes and
/// names within their timeout, pages of a file kept open), and the failed mkdir is not
/// visible; the control attributes still answer; unmount works and the image mounts again
/// clean with what was synced.
#[test]
fn after_a_shutdown_every_operation_on_the_mount_fails_with_eio() {
    use std::os::unix::fs::FileExt;
    if !can_mount() || !common::have("/usr/bin/setfattr") {
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
        fs::write(mnt.join("kept"), b"synced bytes").unwrap();
        fs::create_dir(mnt.join("dir")).unwrap();
        assert!(
            Command::new("sync")
                .arg("-f")
                .arg(&mnt)
                .status()
                .unwrap()
                .success()
        );
        // Cached by the kernel: the open file's pages, attributes and names.
        let held = fs::File::open(mnt.join("kept")).unwrap();
        let mut buf = [0u8; 12];
        held.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"synced bytes");
        fs::metadata(mnt.join("kept")).unwrap();
        fs::metadata(mnt.join("dir")).unwrap();
        let out = Command::new("setfattr")
            .args(["-n", "trusted.daxfs.errortag.log_write", "-v", "1"])
            .arg(&mnt)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(errno_of(fs::create_dir(mnt.join("new"))), Some(libc::EIO));
        let eio = Some(libc::EIO);
        assert_eq!(
            errno_of(fs::metadata(mnt.join("new"))),
            eio,
            "lookup of the failed mkdir"
        );
        assert_eq!(
            errno_of(fs::metadata(mnt.join("kept"))),
            eio,
            "cached attributes"
        );
        assert_eq!(
            errno_of(fs::metadata(mnt.join("dir"))),
            eio,
            "cached directory"
        );
        assert_eq!(
            errno_of(held.read_exact_at(&mut buf, 0)),
            eio,
            "cached pages"
        );
        assert_eq!(errno_of(fs::read(mnt.join("kept"))), eio, "open and read");
        assert_eq!(
            errno_of(fs::read_dir(&mnt).and_then(|d| d.collect::<Result<Vec<_>, _>>())),
            eio,
            "readdir"
        );
        assert_eq!(errno_of(fs::write(mnt.join("kept"), b"x")), eio, "write");
        let ls = Command::new("ls").arg("-la").arg(&mnt).output().unwrap();
        assert!(!ls.status.success());
        assert!(
            !String::from_utf8_lossy(&ls.stdout).contains("new"),
            "{}",
            String::from_utf8_lossy(&ls.stdout)
        );
        let c = std::ffi::CString::new(mnt.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string and a statvfs to fill.
        let rc = unsafe {
            let mut st: libc::statvfs = std::mem::zeroed();
            libc::statvfs(c.as_ptr(), &mut st)
        };
        assert_eq!(
            (rc, errno_of::<()>(Err(std::io::Error::last_os_error()))),
            (-1, eio),
            "statfs"
        );
        let stat = daxfs(&["stat", mnt.to_str().unwrap()]);
        assert!(
            String::from_utf8_lossy(&stat.stdout).contains("shutdown true"),
            "{}{}",
            String::from_utf8_lossy(&stat.stdout),
            String::from_utf8_lossy(&stat.stderr)
        );
        drop(held);
    }
    check_clean(&img);
    {
        let _m = Mounted::new(&img, &mnt);
        assert_eq!(fs::read(mnt.join("kept")).unwrap(), b"synced bytes");
        assert!(mnt.join("dir").is_dir());
        assert_eq!(errno_of(fs::metadata(mnt.join("new"))), Some(libc::ENOENT));
    }
    check_clean(&img);
}

/// Shut the mount down through `FS_IOC_SHUTDOWN` with flags `flags` from python (xfs_io
/// sends only LOGFLUSH and NOLOGFLUSH), on `path`, as root or as nobody; the errno, 0
/// for success.
fn shutdown_ioctl(path: &Path, flags: u32, nobody: bool) -> i32 {
    let script = format!(
        "import fcntl, os, struct, sys\n\
         try:\n    fd = os.open(sys.argv[1], os.O_RDONLY)\n\
         \x20   fcntl.ioctl(fd, 0x8004587d, struct.pack('I', {flags}))\n\
         except OSError as e:\n    print(e.errno); sys.exit(0)\n\
         print(0)\n"
    );
    let p = path.to_str().unwrap();
    let out = if nobody {
        as_nobody("/usr/bin/python3", &["-c", &script, p])
    } else {
        Command::new("/usr/bin/python3")
            .args(["-c", &script, p])
            .output()
            .unwrap()
    };
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("python: {}", String::from_utf8_lossy(&out.stderr)))
}

/// Issue 11 item 8: the shutdown ioctl through the mount: `xfs_io -x -c shutdown`
/// (NOLOGFLUSH), `shutdown -f` (LOGFLUSH) and flags 0 (DEFAULT); root only (EPERM for
/// nobody), unknown flags EINVAL (and nothing shut down); after it every operation gives
/// EIO, umount works, and the image checks clean and mounts again with what was synced,
/// and with what was written after it where the mode forces the log (`logflush`,
/// `default`); `nologflush` on an image file may lose what no force made durable (a
/// prefix of the operations: the file absent, empty, or whole; log/force.rs).
#[test]
fn shutdown_ioctl_through_the_mount() {
    if !can_mount() || !common::have("/usr/sbin/xfs_io") || !common::have("/usr/bin/python3") {
        return;
    }
    let t = tmpdir();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let img = t.path().join("img");
    let mnt = t.path().join("mnt");
    assert!(
        daxfs(&["mkfs", img.to_str().unwrap(), "--size", "64M"])
            .status
            .success()
    );
    let shut = |mnt: &Path| {
        String::from_utf8_lossy(&daxfs(&["stat", mnt.to_str().unwrap()]).stdout)
            .contains("shutdown true")
    };
    for (round, how) in ["nologflush", "logflush", "default"]
        .into_iter()
        .enumerate()
    {
        let mut m = Mounted::new(&img, &mnt);
        let synced = mnt.join(format!("synced{round}"));
        fs::write(&synced, format!("synced {round}")).unwrap();
        fs::File::open(&synced).unwrap().sync_all().unwrap();
        fs::write(mnt.join(format!("written{round}")), b"written").unwrap();
        if round == 0 {
            fs::set_permissions(&synced, fs::Permissions::from_mode(0o644)).unwrap();
            let out = as_nobody(
                "xfs_io",
                &["-r", "-x", "-c", "shutdown", synced.to_str().unwrap()],
            );
            assert!(!out.status.success(), "xfs_io shutdown as nobody");
            assert_eq!(shutdown_ioctl(&synced, 2, true), libc::EPERM, "nobody");
            assert_eq!(
                shutdown_ioctl(&mnt, 3, false),
                libc::EINVAL,
                "unknown flags"
            );
            assert!(!shut(&mnt), "not shut down by a refused ioctl");
            assert_eq!(fs::read(&synced).unwrap(), b"synced 0");
        }
        match how {
            "default" => assert_eq!(shutdown_ioctl(&synced, 0, false), 0),
            _ => {
                let cmd = if how == "logflush" {
                    "shutdown -f"
                } else {
                    "shutdown"
                };
                let target = if round == 0 { &synced } else { &mnt };
                let out = Command::new("xfs_io")
                    .args(["-x", "-c", cmd])
                    .arg(target)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success() && out.stderr.is_empty(),
                    "xfs_io {cmd}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        assert!(shut(&mnt), "{how}");
        let eio = Some(libc::EIO);
        assert_eq!(errno_of(fs::metadata(&synced)), eio, "{how}: stat");
        assert_eq!(errno_of(fs::read(&synced)), eio, "{how}: read");
        assert_eq!(
            errno_of(fs::read_dir(&mnt).and_then(|mut d| d.next().transpose())),
            eio
        );
        assert_eq!(
            errno_of(fs::write(mnt.join("new"), b"x")),
            eio,
            "{how}: create"
        );
        // Again (open or ioctl): EIO.
        assert_eq!(shutdown_ioctl(&mnt, 2, false), libc::EIO, "{how}: again");
        m.unmount();
        check_clean(&img);
        let _m = Mounted::new(&img, &mnt);
        for r in 0..=round {
            assert_eq!(
                fs::read(mnt.join(format!("synced{r}"))).unwrap(),
                format!("synced {r}").as_bytes(),
                "{how}"
            );
        }
        // nologflush: a prefix of create then write: absent, empty, or all there.
        match fs::read(mnt.join(format!("written{round}"))) {
            Err(e) if how == "nologflush" => assert_eq!(e.raw_os_error(), Some(libc::ENOENT)),
            Ok(b) if how == "nologflush" && b.is_empty() => {}
            r => assert_eq!(r.unwrap(), b"written", "{how}"),
        }
        assert_eq!(errno_of(fs::metadata(mnt.join("new"))), Some(libc::ENOENT));
    }
    check_clean(&img);
}

/// Issue 11 item 4 through the mount: fallocate(1) of what df shows free minus 512 KiB
/// succeeds in one call (it was ENOSPC), as a write of the same size does; check clean.
#[test]
fn fallocate_of_nearly_all_free_space_on_the_mount() {
    if !can_mount() {
        return;
    }
    let t = tmpdir();
    let img = t.path().join("img");
    let mnt = t.path().join("mnt");
    assert!(
        daxfs(&["mkfs", img.to_str().unwrap(), "--size", "256M"])
            .status
            .success()
    );
    {
        let _m = Mounted::new(&img, &mnt);
        let s = nix::sys::statvfs::statvfs(&mnt).unwrap();
        let free = s.blocks_available() * s.fragment_size();
        let len = (free - (512 << 10)).to_string();
        let f = mnt.join("big");
        let out = Command::new("fallocate")
            .args(["-l", &len])
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fallocate -l {len} of {free} free: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(fs::metadata(&f).unwrap().len().to_string(), len);
        fs::remove_file(&f).unwrap();
    }
    check_clean(&img);
}

/// A file handle as `name_to_handle_at` gives it (struct file_handle: bytes, type, then
/// the filesystem's opaque bytes; FUSE's are the node id and the generation).
struct Handle {
    buf: Vec<u8>,
}

impl Handle {
    const MAX: usize = 128;

    fn of(path: &Path) -> std::io::Result<Handle> {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let mut buf = vec![0u8; 8 + Handle::MAX];
        buf[..4].copy_from_slice(&(Handle::MAX as u32).to_ne_bytes());
        let mut mount_id = 0i32;
        // SAFETY: buf holds a struct file_handle with handle_bytes = MAX and MAX bytes
        // after its 8-byte header; c and mount_id live across the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_name_to_handle_at,
                libc::AT_FDCWD,
                c.as_ptr(),
                buf.as_mut_ptr(),
                &mut mount_id as *mut i32,
                0,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = u32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize;
        buf.truncate(8 + n);
        Ok(Handle { buf })
    }

    /// FUSE's handle: node id (high, low 32 bits), then the generation.
    fn node_id(&self) -> u64 {
        let w = |i: usize| u32::from_ne_bytes(self.buf[8 + 4 * i..12 + 4 * i].try_into().unwrap());
        (w(0) as u64) << 32 | w(1) as u64
    }

    fn with_node_id(&self, id: u64) -> Handle {
        let mut buf = self.buf.clone();
        buf[8..12].copy_from_slice(&((id >> 32) as u32).to_ne_bytes());
        buf[12..16].copy_from_slice(&(id as u32).to_ne_bytes());
        Handle { buf }
    }

    /// open_by_handle_at through the mount `mnt`, and read what the file holds.
    fn read(&self, mnt: &Path) -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        use std::os::fd::{AsRawFd, FromRawFd};
        let m = fs::File::open(mnt)?;
        let mut buf = self.buf.clone();
        // SAFETY: buf is a complete struct file_handle as name_to_handle_at filled it.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                m.as_raw_fd(),
                buf.as_mut_ptr(),
                libc::O_RDONLY,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        let mut f = unsafe { fs::File::from_raw_fd(fd as i32) };
        let mut v = Vec::new();
        f.read_to_end(&mut v)?;
        Ok(v)
    }
}

/// The kernel forgets every unused dentry and inode (so a handle must be decoded by
/// asking the daemon).
fn drop_kernel_caches() {
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
}

/// Issue 11 item 7: file handles work after the kernel dropped its caches and after a
/// remount, and give ESTALE only for a deleted file (also when its inode number is used
/// again) or a number that names no inode; the daemon survives forged handles.
#[test]
fn file_handles_outlive_caches_and_remounts() {
    if !can_mount() {
        return;
    }
    let t = tmpdir();
    let img = t.path().join("img");
    let mnt = t.path().join("mnt");
    assert!(
        daxfs(&["mkfs", img.to_str().unwrap(), "--size", "256M"])
            .status
            .success()
    );
    let (file, deep, gone);
    {
        let _m = Mounted::new(&img, &mnt);
        fs::write(mnt.join("file"), b"handle me").unwrap();
        fs::create_dir_all(mnt.join("a/b")).unwrap();
        fs::write(mnt.join("a/b/deep"), b"deep down").unwrap();
        fs::write(mnt.join("gone"), b"soon deleted").unwrap();
        file = Handle::of(&mnt.join("file")).unwrap();
        deep = Handle::of(&mnt.join("a/b/deep")).unwrap();
        gone = Handle::of(&mnt.join("gone")).unwrap();
        assert_eq!(file.read(&mnt).unwrap(), b"handle me");
        drop_kernel_caches();
        assert_eq!(file.read(&mnt).unwrap(), b"handle me", "after drop_caches");
        assert_eq!(deep.read(&mnt).unwrap(), b"deep down", "after drop_caches");

        fs::remove_file(mnt.join("gone")).unwrap();
        drop_kernel_caches();
        assert_eq!(
            errno_of(gone.read(&mnt)),
            Some(libc::ESTALE),
            "deleted file"
        );
        // Its inode number used again by a new file: still the deleted file's handle.
        let mut reused = false;
        for i in 0..64 {
            let p = mnt.join(format!("new{i}"));
            fs::write(&p, b"new").unwrap();
            if Handle::of(&p).unwrap().node_id() == gone.node_id() {
                reused = true;
                break;
            }
        }
        assert!(reused, "the deleted file's inode number was not reused");
        drop_kernel_caches();
        assert_eq!(
            errno_of(gone.read(&mnt)),
            Some(libc::ESTALE),
            "number reused"
        );
        // Forged node ids: beyond the device, a superblock block, a data block, a free slot.
        for id in [
            u64::MAX >> 1,
            8,
            999_999 * 8,
            (file.node_id() / 8 + 1000) * 8,
            file.node_id() + 63,
        ] {
            let e = errno_of(file.with_node_id(id).read(&mnt));
            assert!(
                matches!(e, Some(libc::ESTALE)),
                "forged node id {id}: {e:?}"
            );
        }
        assert_eq!(file.read(&mnt).unwrap(), b"handle me", "daemon alive");
    }
    {
        let _m = Mounted::new(&img, &mnt);
        assert_eq!(file.read(&mnt).unwrap(), b"handle me", "after a remount");
        assert_eq!(deep.read(&mnt).unwrap(), b"deep down", "after a remount");
        assert_eq!(
            errno_of(gone.read(&mnt)),
            Some(libc::ESTALE),
            "after a remount"
        );
    }
    check_clean(&img);
}

/// A value of `daxfs stat MOUNT` (the first number after `key`).
fn mount_stat(mnt: &Path, key: &str) -> u64 {
    let out = daxfs(&["stat", mnt.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(key)).then(|| w.next().unwrap().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no {key} in daxfs stat:\n{text}"))
}

/// Issue 10: a cold walk that the kernel keeps cached (a lookup reference on every file)
/// stays inside a small budget: the background reclaimer asks the kernel to forget idle
/// dentries (FUSE notify inval_entry), the kernel's FORGETs follow and the inodes are
/// evicted. Every file is still there afterwards (looked up again), and check is clean.
#[test]
fn a_walk_the_kernel_keeps_cached_is_brought_inside_the_budget() {
    if !can_mount() {
        return;
    }
    let t = tmpdir();
    let img = t.path().join("img");
    let mnt = t.path().join("mnt");
    assert!(
        daxfs(&["mkfs", img.to_str().unwrap(), "--size", "256M"])
            .status
            .success()
    );
    let (dirs, per) = (10, 600);
    {
        let _m = Mounted::with(&img, &mnt, &["-o", "mem=1M"]);
        for d in 0..dirs {
            fs::create_dir(mnt.join(format!("d{d}"))).unwrap();
            for i in 0..per {
                fs::write(mnt.join(format!("d{d}/f{i}")), b"").unwrap();
            }
        }
        drop_kernel_caches();
        for d in 0..dirs {
            for i in 0..per {
                fs::metadata(mnt.join(format!("d{d}/f{i}"))).unwrap();
            }
        }
        // The reclaimer runs at least once a second; the kernel forgets soon after asked.
        let mut cached = u64::MAX;
        for _ in 0..50 {
            cached = mount_stat(&mnt, "cached_inodes");
            if cached < (dirs * per / 2) as u64 && mount_stat(&mnt, "mem_budget_exceeded_by") == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            cached < (dirs * per / 2) as u64,
            "{cached} inodes cached of {} stat'd",
            dirs * per
        );
        assert_eq!(mount_stat(&mnt, "mem_budget_exceeded_by"), 0);
        assert!(mount_stat(&mnt, "reclaim_kernel_forget_asks") > 0);
        for d in 0..dirs {
            for i in 0..per {
                fs::metadata(mnt.join(format!("d{d}/f{i}"))).unwrap();
            }
        }
        // With something mounted on the filesystem, the kernel is asked nothing (it would
        // detach the mount of a dentry it drops): the tmpfs stays mounted.
        let sub = mnt.join("d0/sub");
        fs::create_dir(&sub).unwrap();
        assert!(
            Command::new("mount")
                .args(["-t", "tmpfs", "tmpfs"])
                .arg(&sub)
                .status()
                .unwrap()
                .success()
        );
        let _sub = Mounted { dir: sub.clone() };
        drop_kernel_caches();
        let asked = mount_stat(&mnt, "reclaim_kernel_forget_asks");
        for d in 0..dirs {
            for i in 0..per {
                fs::metadata(mnt.join(format!("d{d}/f{i}"))).unwrap();
            }
        }
        let more_asked = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            mount_stat(&mnt, "reclaim_kernel_forget_asks") > asked
        });
        assert!(more_asked, "the reclaimer did not try again");
        std::thread::sleep(Duration::from_millis(500));
        let mounted = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            mounted.contains(sub.to_str().unwrap()),
            "the tmpfs on {sub:?} was detached"
        );
    }
    check_clean(&img);
}

/// Standard base64 (as setfattr reads a "0s" value).
fn base64(v: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in v.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Issue 11 item 3 through the mount, with the attr tools: 1,000 attributes on one file
/// (restored in one setfattr run, dumped back by getfattr), a 64 KiB value, E2BIG for one
/// byte more, removal; kept across a remount; check clean.
#[test]
fn many_and_big_xattrs_with_setfattr_and_getfattr() {
    if !can_mount() || !common::have("/usr/bin/setfattr") {
        return;
    }
    let b64 = |v: &[u8]| format!("0s{}", base64(v));
    let t = tmpdir();
    let img = t.path().join("img");
    let mnt = t.path().join("mnt");
    assert!(
        daxfs(&["mkfs", img.to_str().unwrap(), "--size", "64M"])
            .status
            .success()
    );
    let big: Vec<u8> = (0..65536u32).map(|i| (i * 13 + i / 251) as u8).collect();
    let f = mnt.join("f");
    let p = f.to_str().unwrap().to_string();
    // The dump getfattr -d writes and setfattr --restore reads.
    let mut dump = format!("# file: {p}\n");
    for i in 0..1000 {
        dump.push_str(&format!("user.attr{i:04}=\"value-{i}\"\n"));
    }
    dump.push_str(&format!("user.big={}\n\n", b64(&big)));
    let dump_file = t.path().join("dump");
    fs::write(&dump_file, &dump).unwrap();
    let getfattr_all = || {
        let out = Command::new("getfattr")
            .args(["-d", "-m", "^user\\.", "-e", "text", "--absolute-names", &p])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let big_value = || {
        let out = Command::new("getfattr")
            .args(["-n", "user.big", "--only-values", "--absolute-names", &p])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    {
        let _m = Mounted::new(&img, &mnt);
        fs::write(&f, b"data").unwrap();
        let out = Command::new("setfattr")
            .arg(format!("--restore={}", dump_file.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = getfattr_all();
        assert_eq!(
            listed
                .lines()
                .filter(|l| l.starts_with("user.attr"))
                .count(),
            1000
        );
        assert!(listed.contains("user.attr0999=\"value-999\""));
        assert_eq!(big_value(), big);
        let huge = b64(&vec![7u8; 65537]);
        let out = Command::new("setfattr")
            .args(["-n", "user.huge", "-v", &huge, &p])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Argument list too long"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("setfattr")
            .args(["-x", "user.attr0500", &p])
            .output()
            .unwrap();
        assert!(out.status.success());
        let out = Command::new("getfattr")
            .args(["-n", "user.attr0500", &p])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stderr).contains("No such attribute"));
    }
    check_clean(&img);
    {
        let _m = Mounted::new(&img, &mnt);
        let listed = getfattr_all();
        assert_eq!(
            listed
                .lines()
                .filter(|l| l.starts_with("user.attr"))
                .count(),
            999
        );
        assert_eq!(big_value(), big);
        fs::remove_file(&f).unwrap();
    }
    check_clean(&img);
}

/// Run a command, asserting success; its stdout.
fn run_ok(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).unwrap().mode() & 0o7777
}

/// Issue 11 item 9: POSIX ACLs through the mount. setfacl/getfacl; the kernel lets user
/// nobody read as the ACL says; the mode's group bits are the mask and chmod moves the
/// mask; a default ACL is inherited by new files and directories instead of the umask
/// (which applies where there is none); all kept across a remount, check clean.
#[test]
fn posix_acls_with_setfacl_and_getfacl() {
    if !can_mount() || !common::have("/usr/bin/setfacl") || !common::have("/usr/bin/setpriv") {
        return;
    }
    let t = tmpdir();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let img = t.path().join("img");
    let mnt = t.path().join("mnt");
    assert!(
        daxfs(&["mkfs", img.to_str().unwrap(), "--size", "64M"])
            .status
            .success()
    );
    let f = mnt.join("f");
    let p = f.to_str().unwrap().to_string();
    let nobody_reads = |p: &str| as_nobody("cat", &[p]).status.success();
    {
        let _m = Mounted::new(&img, &mnt);
        fs::write(&f, b"secret").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!nobody_reads(&p), "mode 600 keeps nobody out");
        run_ok("setfacl", &["-m", "u:nobody:r", &p]);
        let acl = run_ok("getfacl", &["-c", &p]);
        assert!(acl.contains("user:nobody:r--"), "{acl}");
        assert!(acl.contains("mask::r--"), "{acl}");
        assert_eq!(mode_of(&f), 0o640, "the group bits are the mask");
        assert!(nobody_reads(&p), "the ACL lets nobody read");
        let out = as_nobody("sh", &["-c", &format!("echo x >> {p}")]);
        assert!(!out.status.success(), "but not write");
        // chmod moves the mask: nobody's entry stays, its effect goes and comes back.
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        let acl = run_ok("getfacl", &["-c", &p]);
        assert!(acl.contains("mask::---"), "{acl}");
        assert!(acl.contains("user:nobody:r--"), "{acl}");
        assert!(!nobody_reads(&p));
        fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(nobody_reads(&p));

        // A default ACL on a directory: inherited, and the umask does not apply.
        let d = mnt.join("d");
        fs::create_dir(&d).unwrap();
        let dp = d.to_str().unwrap();
        run_ok("setfacl", &["-d", "-m", "u:nobody:rwx", dp]);
        run_ok("setfacl", &["-m", "u:nobody:rx", dp]);
        run_ok(
            "sh",
            &[
                "-c",
                &format!("umask 077; echo hi > {dp}/new; mkdir {dp}/sub"),
            ],
        );
        let new = d.join("new");
        assert_eq!(
            mode_of(&new),
            0o664,
            "create mode masked by the default ACL"
        );
        let acl = run_ok("getfacl", &["-c", new.to_str().unwrap()]);
        assert!(acl.contains("user:nobody:rwx"), "{acl}");
        assert!(acl.contains("mask::rw-"), "{acl}");
        let out = as_nobody("sh", &["-c", &format!("echo more >> {dp}/new")]);
        assert!(
            out.status.success(),
            "the inherited ACL lets nobody write: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sub = d.join("sub");
        assert_eq!(mode_of(&sub), 0o775);
        let dacl = run_ok("getfacl", &["-c", "-d", sub.to_str().unwrap()]);
        assert!(
            dacl.contains("user:nobody:rwx"),
            "a subdirectory inherits the default: {dacl}"
        );
        // Without a default ACL the umask applies.
        run_ok(
            "sh",
            &[
                "-c",
                &format!(
                    "cd {}; umask 027; mkdir plain; touch plain/x",
                    mnt.display()
                ),
            ],
        );
        assert_eq!(mode_of(&mnt.join("plain")), 0o750);
        assert_eq!(mode_of(&mnt.join("plain/x")), 0o640);
        let acl = run_ok("getfacl", &["-c", mnt.join("plain/x").to_str().unwrap()]);
        assert!(!acl.contains("user:nobody"), "{acl}");
    }
    check_clean(&img);
    {
        let _m = Mounted::new(&img, &mnt);
        let acl = run_ok("getfacl", &["-c", &p]);
        assert!(
            acl.contains("user:nobody:r--"),
            "kept across a remount: {acl}"
        );
        assert!(nobody_reads(&p));
        // Removing the ACL: the mode stays, nobody is out again.
        run_ok("setfacl", &["-b", &p]);
        assert!(!run_ok("getfacl", &["-c", &p]).contains("nobody"));
        assert!(!nobody_reads(&p));
    }
    check_clean(&img);
}
