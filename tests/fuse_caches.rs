//! The FUSE side through real mounts: what the kernel's caches spare the daemon, counted
//! by the daemon itself (`daxfs stat`: fuse_lookups, fuse_getattrs, ...), and that the
//! lookup references they carry are given back. Needs root and /dev/fuse; skipped (with a
//! message) where they are missing.

mod common;
use common::{can_mount, daxfs};

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn tmpdir() -> tempfile::TempDir {
    let base = if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    tempfile::Builder::new()
        .prefix("daxfs-fusecache-test")
        .tempdir_in(base)
        .unwrap()
}

/// A live mount; unmounted when dropped (also when a test fails).
struct Mounted {
    dir: PathBuf,
}

impl Mounted {
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
}

impl Drop for Mounted {
    fn drop(&mut self) {
        common::umount(&self.dir);
    }
}

fn mkfs(img: &Path) {
    let out = daxfs(&["mkfs", img.to_str().unwrap(), "--size", "128M"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

fn stats(mnt: &Path) -> String {
    String::from_utf8_lossy(&daxfs(&["stat", mnt.to_str().unwrap()]).stdout).into_owned()
}

fn stat_of(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(key)).then(|| w.next().unwrap().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no {key} in daxfs stat:\n{text}"))
}

fn drop_kernel_caches() {
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
}

const FILES: usize = 200;

/// READDIRPLUS: a listing of a cold directory hands the kernel every entry with its
/// attributes, so a stat of each listed name (`ls -l`, `find`, `rm -rf`) reaches the daemon
/// neither as a LOOKUP nor as a GETATTR. Without readdirplus each stat is one LOOKUP.
#[test]
fn a_listing_fills_the_kernels_dentry_and_attribute_caches() {
    if !can_mount() {
        return;
    }
    let t = tmpdir();
    let img = t.path().join("img");
    let mnt = t.path().join("mnt");
    mkfs(&img);
    {
        let _m = Mounted::with(&img, &mnt, &[]);
        let d = mnt.join("d");
        fs::create_dir(&d).unwrap();
        for i in 0..FILES {
            fs::write(d.join(format!("f{i}")), b"x").unwrap();
        }
        // The kernel keeps what the listing gave it for the attribute timeout (1 s): a round
        // that a loaded machine stretched past half of it is not evidence either way, and is
        // run again.
        let mut rounds = 0;
        let (lookups, getattrs, entries) = loop {
            rounds += 1;
            drop_kernel_caches();
            let s0 = stats(&mnt);
            let t0 = Instant::now();
            let mut names: Vec<_> = fs::read_dir(&d)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            for n in &names {
                let m = fs::symlink_metadata(d.join(n)).unwrap();
                assert_eq!(m.len(), 1);
            }
            let took = t0.elapsed();
            let s1 = stats(&mnt);
            names.sort();
            assert_eq!(names.len(), FILES);
            let delta = |k| stat_of(&s1, k) - stat_of(&s0, k);
            if took < Duration::from_millis(500) || rounds == 10 {
                break (
                    delta("fuse_lookups"),
                    delta("fuse_getattrs"),
                    delta("fuse_readdirplus_entries"),
                );
            }
        };
        // The directory itself is looked up again after the caches were dropped, and the
        // root's attributes may be asked for by `daxfs stat`: a few, not one per file.
        assert!(
            lookups <= 4 && getattrs <= 4,
            "{lookups} LOOKUPs and {getattrs} GETATTRs for {FILES} stats after a listing"
        );
        assert!(
            entries >= FILES as u64,
            "{entries} entries listed with attributes"
        );
    }
    check_clean(&img);
}

/// The lookup references a listing hands the kernel are the ones it gives back: files
/// listed with readdirplus, then deleted, are freed once the kernel forgets them (a
/// reference the daemon counted and the kernel did not would keep each deleted file's
/// inode and blocks allocated until unmount).
#[test]
fn files_listed_then_deleted_are_freed_while_mounted() {
    if !can_mount() {
        return;
    }
    let t = tmpdir();
    let img = t.path().join("img");
    let mnt = t.path().join("mnt");
    mkfs(&img);
    {
        let _m = Mounted::with(&img, &mnt, &[]);
        let d = mnt.join("d");
        fs::create_dir(&d).unwrap();
        let s0 = stats(&mnt);
        let (free0, inodes0) = (
            stat_of(&s0, "free_blocks"),
            stat_of(&s0, "inodes_allocated"),
        );
        for i in 0..FILES {
            fs::write(d.join(format!("f{i}")), vec![7u8; 8192]).unwrap();
        }
        // Several listings, cold and warm, each handing out references.
        for round in 0..3 {
            if round != 1 {
                drop_kernel_caches();
            }
            let n = fs::read_dir(&d).unwrap().count();
            assert_eq!(n, FILES);
        }
        let s1 = stats(&mnt);
        assert!(
            stat_of(&s1, "fuse_readdirplus_entries") >= FILES as u64,
            "{s1}"
        );
        for i in 0..FILES {
            fs::remove_file(d.join(format!("f{i}"))).unwrap();
        }
        drop_kernel_caches();
        // The kernel forgets a deleted file's inode as soon as nothing uses it; allow it
        // (and a loaded machine) plenty of time.
        let mut s = String::new();
        for _ in 0..100 {
            s = stats(&mnt);
            if stat_of(&s, "inodes_allocated") == inodes0 && stat_of(&s, "free_blocks") == free0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(stat_of(&s, "inodes_allocated"), inodes0, "{s}");
        assert_eq!(stat_of(&s, "free_blocks"), free0, "{s}");
    }
    check_clean(&img);
}

/// `mount` through the helper in a private mount namespace, with mount.fuse.daxfs being
/// this build's daxfs (as tests/mount.rs does).
fn with_helper(t: &Path, script: &str, env: &[(&str, &Path)]) -> std::process::Output {
    let sbin = t.join("sbin");
    fs::create_dir_all(&sbin).unwrap();
    let _ = std::os::unix::fs::symlink(common::BIN, sbin.join("mount.fuse.daxfs"));
    let prologue = r#"set -eu
mount -t overlay overlay -o "lowerdir=$T/sbin:/usr/sbin" /usr/sbin
"#;
    let mut c = std::process::Command::new("unshare");
    c.args(["-m", "--propagation", "private", "bash", "-c"])
        .arg(format!("{prologue}{script}"))
        .env("T", t)
        .env("BIN", common::BIN);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// `mount -o remount,sync` reaches the daemon (the kernel sends a FUSE daemon nothing on
/// remount; the daemon follows the superblock's flags in the mount table): afterwards every
/// commit is forced before its operation returns; `remount,async` switches it off again,
/// also on a mount made with -o sync.
#[test]
fn remount_sync_and_async_reach_the_daemon() {
    if !can_mount() {
        return;
    }
    let t = tmpdir();
    let img = t.path().join("img");
    let mnt = t.path().join("mnt");
    mkfs(&img);
    fs::create_dir_all(&mnt).unwrap();
    let out = with_helper(
        t.path(),
        r#"
trap 'umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true' EXIT
st() { "$BIN" stat "$MNT" | sed -n "s/^ *$1 //p"; }
mount -t fuse.daxfs "$IMG" "$MNT"
echo "start: $(st sync_commits)"
mount -o remount,sync "$MNT"
echo "sync: $(st sync_commits)"
f0=$(st log_forces)
for i in $(seq 20); do echo x >"$MNT/s$i"; done
f1=$(st log_forces)
echo "forced each: $(( f1 - f0 >= 20 )) unforced: $(st unforced_records)"
mount -o remount,async "$MNT"
echo "async: $(st sync_commits)"
umount "$MNT"
mount -t fuse.daxfs -o sync "$IMG" "$MNT"
echo "mounted sync: $(st sync_commits)"
mount -o remount,async "$MNT"
echo "then async: $(st sync_commits)"
umount "$MNT"
"#,
        &[("IMG", &img), ("MNT", &mnt)],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "start: false\nsync: true\nforced each: 1 unforced: 0\nasync: false\n\
         mounted sync: true\nthen async: false\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_clean(&img);
}
