//! DAX files through a real mount (issue 9, "one copy of the data"): with dax=always a
//! file is served without the kernel's page cache (FOPEN_DIRECT_IO), so bytes stored into
//! the device behind the daemon's back (as a direct-access client does) are seen by the
//! next read(); a non-DAX file keeps its cached copy. A kernel mmap of a DAX file works
//! (DIRECT_IO_ALLOW_MMAP) and is what docs/design.md says it is: page-cache backed,
//! coherent with write() through the mount, its stores reaching the file at msync.
//! Needs root and /dev/fuse; skipped (with a message) where they are missing.

mod common;
use common::{can_mount, daxfs};

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A live mount; unmounted when dropped (also when the test fails).
struct Mounted {
    dir: PathBuf,
}

impl Mounted {
    fn new(image: &Path, dir: &Path, opts: &str) -> Mounted {
        fs::create_dir_all(dir).unwrap();
        let out = daxfs(&[
            "mount",
            image.to_str().unwrap(),
            dir.to_str().unwrap(),
            "-o",
            opts,
        ]);
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

fn check_clean(image: &Path) {
    let out = daxfs(&["check", image.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A block no other block of the image can look like.
fn pattern(seed: u8) -> Vec<u8> {
    (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 ^ seed)
        .collect()
}

/// Where `needle` (one block) lies in the image, block aligned.
fn find_block(image: &Path, needle: &[u8]) -> u64 {
    let mut f = fs::File::open(image).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut base = 0u64;
    loop {
        f.seek(SeekFrom::Start(base)).unwrap();
        let n = f.read(&mut buf).unwrap();
        assert!(n > 0, "pattern not found in the image");
        for (i, b) in buf[..n].chunks(4096).enumerate() {
            if b == needle {
                return base + i as u64 * 4096;
            }
        }
        base += n as u64;
    }
}

/// Store `bytes` into the image behind the daemon (a direct client's store: the daemon
/// maps the image MAP_SHARED, so this is the same page it sees).
fn store_behind(image: &Path, at: u64, bytes: &[u8]) {
    let f = fs::OpenOptions::new().write(true).open(image).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

fn read_file(p: &Path, len: usize) -> Vec<u8> {
    let f = fs::File::open(p).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, 0).unwrap();
    b
}

fn setup(opts: &str) -> Option<(tempfile::TempDir, PathBuf, Mounted)> {
    if !can_mount() {
        return None;
    }
    let t = tempfile::Builder::new()
        .prefix("daxfs-daxmount")
        .tempdir_in(if Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        })
        .unwrap();
    let img = t.path().join("img");
    assert!(
        daxfs(&["mkfs", img.to_str().unwrap(), "--size", "64M"])
            .status
            .success()
    );
    let m = Mounted::new(&img, &t.path().join("mnt"), opts);
    Some((t, img, m))
}

#[test]
fn a_dax_file_is_read_without_the_page_cache() {
    let Some((t, img, m)) = setup("dax=always") else {
        return;
    };
    let p = m.dir.join("f");
    let a = pattern(1);
    fs::write(&p, &a).unwrap();
    assert_eq!(read_file(&p, 4096), a); // would populate a page cache
    let at = find_block(&img, &a);
    let b = pattern(2);
    store_behind(&img, at, &b);
    assert_eq!(
        read_file(&p, 4096),
        b,
        "read() did not see the store into the device"
    );
    drop(m);
    check_clean(&img);
    drop(t);
}

#[test]
fn a_non_dax_file_keeps_its_page_cache() {
    // The control for the test above: the same steps on dax=never show the cached copy
    // (so the test above can fail). noatime: under relatime a read whose atime is due
    // drops the cache at open, and a read in the same clock tick as the write leaves atime
    // equal to mtime, so still due (seen once in CI).
    let Some((t, img, m)) = setup("dax=never,noatime") else {
        return;
    };
    let p = m.dir.join("f");
    let a = pattern(3);
    fs::write(&p, &a).unwrap();
    assert_eq!(read_file(&p, 4096), a);
    let at = find_block(&img, &a);
    store_behind(&img, at, &pattern(4));
    assert_eq!(read_file(&p, 4096), a, "expected the page cache's copy");
    drop(m);
    check_clean(&img);
    drop(t);
}

#[test]
fn kernel_mmap_of_a_dax_file() {
    let Some((t, img, m)) = setup("dax=always") else {
        return;
    };
    let p = m.dir.join("f");
    fs::write(&p, pattern(5)).unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    // SAFETY: a fresh shared mapping of an open file; only read and written through raw
    // pointers below, unmapped before the file is closed.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(ptr, libc::MAP_FAILED, "mmap of a DAX file failed");
    let load = |i: usize| -> u8 {
        // SAFETY: i < 4096, inside the mapping.
        unsafe { std::ptr::read_volatile((ptr as *const u8).add(i)) }
    };
    assert_eq!(load(7), pattern(5)[7]);
    // A write() through the mount is seen by the mapping.
    f.write_all_at(b"written", 0).unwrap();
    assert_eq!((0..7).map(load).collect::<Vec<u8>>(), b"written");
    // A store through the mapping reaches the file at msync.
    // SAFETY: inside the mapping.
    unsafe { std::ptr::copy_nonoverlapping(b"mapped".as_ptr(), (ptr as *mut u8).add(100), 6) };
    // SAFETY: ptr/4096 is the mapping made above.
    assert_eq!(unsafe { libc::msync(ptr, 4096, libc::MS_SYNC) }, 0);
    let back = read_file(&p, 4096);
    assert_eq!(&back[100..106], b"mapped");
    // SAFETY: unmapping what was mapped above.
    unsafe { libc::munmap(ptr, 4096) };
    drop(f);
    drop(m);
    check_clean(&img);
    drop(t);
}
