//! Deferred durability on image files (src/log/force.rs): a commit on a page-cache mapping
//! is durable at the next log force, not when it returns; forces come at fsync, sync,
//! sync mounts, a timer and unmount; recovery of a log whose later records reached the
//! disk while an earlier one did not gives a prefix. Every test that writes a filesystem
//! ends with `daxfs check` clean.

use std::sync::Arc;
use std::time::{Duration, Instant};

use daxfs::check;
use daxfs::format::{BLOCK_SIZE, get_u32, get_u64};
use daxfs::fs::{Cred, Fs, FsOptions};
use daxfs::mkfs::{self, MkfsOptions};
use daxfs::pmem::device::{Device, Persistence};

const SIZE: u64 = 64 << 20;

fn cred() -> Cred {
    Cred::default()
}

fn opts(interval_ms: u64) -> FsOptions {
    FsOptions {
        force_interval_ms: interval_ms,
        ..Default::default()
    }
}

/// A named counter of `daxfs stat`.
fn stat(fs: &Fs, name: &str) -> u64 {
    let s = fs.stats();
    let line = s
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} in stats:\n{s}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn fences(dev: &Device) -> u64 {
    dev.stats.fences.load(std::sync::atomic::Ordering::Relaxed)
}

/// An image file on the disk (page cache), made by mkfs.
fn image(dir: &tempfile::TempDir) -> Arc<Device> {
    let path = dir.path().join("img");
    std::fs::File::create(&path).unwrap().set_len(SIZE).unwrap();
    let dev = Device::open(path.to_str().unwrap(), false).unwrap();
    assert_eq!(dev.persistence(), Persistence::PageCache);
    mkfs::mkfs(&dev, &MkfsOptions::default()).unwrap();
    dev
}

fn finish(dev: &Device, fs: Arc<Fs>) {
    fs.unmount().unwrap();
    drop(fs);
    let r = check::check(dev).unwrap();
    assert!(r.problems.is_empty(), "check:\n{}", r.problems.join("\n"));
}

#[test]
fn creates_on_an_image_file_wait_for_no_msync_until_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let dev = image(&dir);
    let fs = Fs::mount(dev.clone(), &opts(0)).unwrap();
    let before = fences(&dev);
    let r = fs.root_ino();
    let mut inos = Vec::new();
    for i in 0..50 {
        inos.push(
            fs.mknod(
                r,
                format!("f{i}").as_bytes(),
                libc::S_IFREG | 0o644,
                0,
                &cred(),
            )
            .unwrap()
            .ino,
        );
    }
    fs.unlink(r, b"f7").unwrap();
    // Without deferral every commit is an msync: at least 51 here.
    assert!(
        fences(&dev) - before < 5,
        "{} fences for 51 commits",
        fences(&dev) - before
    );
    assert!(stat(&fs, "unforced_records") >= 51);
    fs.fsync(inos[0], false).unwrap();
    assert_eq!(stat(&fs, "unforced_records"), 0);
    assert!(stat(&fs, "log_forces") >= 1);
    // What was committed reads back (through the overlay before the force, in place
    // after it).
    assert!(fs.lookup(r, b"f49").is_ok());
    assert_eq!(fs.lookup(r, b"f7").unwrap_err().errno(), libc::ENOENT);
    finish(&dev, fs);
    // And after a remount.
    let fs = Fs::mount(dev.clone(), &opts(0)).unwrap();
    assert!(fs.lookup(fs.root_ino(), b"f49").is_ok());
    finish(&dev, fs);
}

#[test]
fn the_timer_forces_within_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let dev = image(&dir);
    let fs = Fs::mount(dev.clone(), &opts(100)).unwrap();
    fs.mknod(fs.root_ino(), b"a", libc::S_IFREG | 0o644, 0, &cred())
        .unwrap();
    let t = Instant::now();
    while stat(&fs, "unforced_records") > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no timed force in 5 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(stat(&fs, "log_forces") >= 1);
    finish(&dev, fs);
}

#[test]
fn a_sync_mount_forces_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let dev = image(&dir);
    let o = FsOptions {
        sync_commits: true,
        ..opts(0)
    };
    let fs = Fs::mount(dev.clone(), &o).unwrap();
    for i in 0..5 {
        fs.mknod(
            fs.root_ino(),
            format!("s{i}").as_bytes(),
            libc::S_IFREG | 0o644,
            0,
            &cred(),
        )
        .unwrap();
        assert_eq!(stat(&fs, "unforced_records"), 0);
    }
    assert!(stat(&fs, "log_forces") >= 5);
    finish(&dev, fs);
}

/// (offset in the log, LSN) of each record on the chain from offset 0.
fn records(img: &[u8], log_off: usize, log_bytes: usize) -> Vec<(usize, u64)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 64 <= log_bytes {
        let h = &img[log_off + pos..];
        if get_u32(h, 0) != daxfs::format::LOG_MAGIC {
            break;
        }
        out.push((pos, get_u64(h, 8)));
        pos += get_u32(h, 16) as usize;
    }
    out
}

/// The mount's image as a crash left it: `img` on a fresh memfd.
fn crashed(img: &[u8]) -> Arc<Device> {
    let d = Arc::new(Device::memfd(img.len() as u64).unwrap());
    d.load_image(img);
    d
}

fn names(fs: &Fs) -> Vec<String> {
    let r = fs.root_ino();
    let mut out = Vec::new();
    fs.readdir(r, 0, &mut |e| {
        let n = String::from_utf8_lossy(&e.name).to_string();
        if n != "." && n != ".." {
            out.push(n);
        }
        false
    })
    .unwrap();
    out.sort();
    out
}

#[test]
fn an_earlier_record_lost_with_later_ones_on_the_disk_gives_a_prefix() {
    let dev = Arc::new(Device::traced(SIZE, Persistence::PageCache).unwrap());
    mkfs::mkfs(&dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone(), &opts(0)).unwrap();
    let r = fs.root_ino();
    fs.mknod(r, b"a", libc::S_IFREG | 0o644, 0, &cred())
        .unwrap();
    fs.sync().unwrap();
    let forced = daxfs::log::trans::next_lsn(fs.mp());
    for n in ["b", "c", "d"] {
        fs.mknod(r, n.as_bytes(), libc::S_IFREG | 0o644, 0, &cred())
            .unwrap();
    }
    let sb = &fs.mp().sb;
    let (log_off, log_bytes) = (
        (sb.log_start * BLOCK_SIZE as u64) as usize,
        (sb.log_blocks * BLOCK_SIZE as u64) as usize,
    );
    let mut img = vec![0u8; SIZE as usize];
    dev.read(0, &mut img);
    // The daemon killed here: the records it wrote into the mapping are all there, so
    // nothing completed is lost.
    {
        let d = crashed(&img);
        let fs = Fs::mount(d.clone(), &opts(0)).unwrap();
        assert_eq!(names(&fs), ["a", "b", "c", "d"]);
        finish(&d, fs);
    }
    // A power cut where the first unforced record did not reach the disk and the later
    // ones did (pages are written back in any order): the state after `a`, not a mount
    // failure and not b's successors without b.
    let recs = records(&img, log_off, log_bytes);
    let &(pos, _) = recs
        .iter()
        .find(|&&(_, lsn)| lsn == forced)
        .unwrap_or_else(|| panic!("no record {forced} in {recs:?}"));
    assert!(recs.iter().any(|&(_, lsn)| lsn > forced + 1), "{recs:?}");
    img[log_off + pos + 100] ^= 0xff;
    let d = crashed(&img);
    let fs = Fs::mount(d.clone(), &opts(0)).unwrap();
    assert_eq!(names(&fs), ["a"]);
    finish(&d, fs);
}
