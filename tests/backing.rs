//! The image file's own filesystem (issue 12): a sparse image on a small tmpfs that fills
//! must give the writer ENOSPC and keep the mount alive and consistent (it used to kill
//! the daemon with SIGBUS: the writer saw ECONNABORTED and the mount ENOTCONN).
//! Needs root (to mount a tmpfs) and /dev/fuse; skipped with a message otherwise. Every
//! mount is undone on drop, also when an assertion fails.

mod common;
use common::{can_mount, daxfs, umount};

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a given size on a fresh directory, with a daxfs mount point inside it;
/// dropping it unmounts the daxfs mount (if any), then the tmpfs, then removes the dir.
struct SmallFs {
    dir: tempfile::TempDir,
    daxfs_mounted: bool,
}

impl SmallFs {
    fn new(size: &str) -> SmallFs {
        let dir = tempfile::Builder::new()
            .prefix("daxfs-backing-test")
            .tempdir_in("/tmp")
            .unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "cannot mount a tmpfs on {}", dir.path().display());
        SmallFs {
            dir,
            daxfs_mounted: false,
        }
    }
    fn image(&self) -> PathBuf {
        self.dir.path().join("img")
    }
    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
    fn mount(&mut self) {
        self.mount_with(&[]);
    }
    fn mount_with(&mut self, opts: &[&str]) {
        fs::create_dir_all(self.mnt()).unwrap();
        let (img, mnt) = (self.image(), self.mnt());
        let mut args = vec!["mount", img.to_str().unwrap(), mnt.to_str().unwrap()];
        args.extend_from_slice(opts);
        let out = daxfs(&args);
        assert!(
            out.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.daxfs_mounted = true;
    }
    fn unmount(&mut self) {
        if self.daxfs_mounted {
            umount(&self.mnt());
            self.daxfs_mounted = false;
        }
    }
    fn check_clean(&self) {
        let out = daxfs(&["check", self.image().to_str().unwrap()]);
        assert!(
            out.status.success(),
            "check: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        self.unmount();
        // The daemon may still hold the image for a moment after its unmount.
        for _ in 0..100 {
            let ok = Command::new("umount")
                .arg(self.dir.path())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        umount(self.dir.path());
    }
}

/// The mount still answers (a dead FUSE daemon gives ENOTCONN here).
fn assert_alive(mnt: &Path) {
    if let Err(e) = fs::read_dir(mnt) {
        panic!("the mount died: {e}");
    }
}

fn expect_enospc(what: &str, e: &std::io::Error, mnt: &Path) {
    assert_eq!(
        e.raw_os_error(),
        Some(libc::ENOSPC),
        "{what}: expected ENOSPC, got {e}"
    );
    assert_alive(mnt);
}

fn set_xattr(path: &Path, value: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            c"user.fill".as_ptr(),
            value.as_ptr() as *const _,
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Write 1 MiB pieces into `path` until the first error; returns it and the bytes written.
fn fill_file(path: &Path) -> (std::io::Error, u64) {
    let mut f = fs::File::create(path).unwrap();
    let buf = vec![0x5au8; 1 << 20];
    let mut done = 0u64;
    loop {
        match f.write_all(&buf).and_then(|_| f.sync_data()) {
            Ok(()) => done += buf.len() as u64,
            Err(e) => return (e, done),
        }
    }
}

#[test]
fn full_backing_filesystem_gives_enospc_not_a_dead_mount() {
    if !can_mount() {
        return;
    }
    let mut t = SmallFs::new("64M");
    let out = daxfs(&[
        "mkfs",
        t.image().to_str().unwrap(),
        "--size",
        "256M",
        "--sparse",
    ]);
    assert!(
        out.status.success(),
        "mkfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.mount();
    let mnt = t.mnt();

    // Inode chunks, directory blocks, B+tree nodes and small data extents: files and
    // directories until the first error, which must be ENOSPC.
    let mut first_err = None;
    'outer: for d in 0..1000 {
        let dir = mnt.join(format!("d{d}"));
        if let Err(e) = fs::create_dir(&dir) {
            first_err = Some(("mkdir", e));
            break;
        }
        for i in 0..200 {
            let p = dir.join(format!(
                "a-rather-long-file-name-to-fill-directory-blocks-{i}"
            ));
            if let Err(e) = fs::write(&p, vec![1u8; 10000]) {
                first_err = Some(("create", e));
                break 'outer;
            }
            if i % 4 == 0
                && let Err(e) = set_xattr(&p, &[2u8; 1500])
            {
                first_err = Some(("setxattr", e));
                break 'outer;
            }
        }
    }
    let (what, e) = first_err.expect("the tmpfs never filled");
    expect_enospc(what, &e, &mnt);
    // Deleting works on the full backing filesystem.
    for ent in fs::read_dir(&mnt).unwrap() {
        fs::remove_dir_all(ent.unwrap().path()).unwrap();
    }
    assert_alive(&mnt);

    // Data extents: a big file, into the blocks just freed (already in the image) and
    // then into holes, until the tmpfs is full.
    let (e, written) = fill_file(&mnt.join("big"));
    expect_enospc("filling a file", &e, &mnt);
    assert!(
        written > 16 << 20 && written < 64 << 20,
        "wrote {written} bytes before ENOSPC"
    );
    fs::remove_file(mnt.join("big")).unwrap();
    assert_alive(&mnt);
    fs::write(mnt.join("again"), vec![7u8; 8 << 20]).unwrap();
    assert_eq!(fs::read(mnt.join("again")).unwrap(), vec![7u8; 8 << 20]);
    t.unmount();
    t.check_clean();
}

fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn mkfs_preallocates_and_refuses_what_does_not_fit() {
    if !can_mount() {
        return;
    }
    let t = SmallFs::new("64M");
    let img = t.image();
    let img = img.to_str().unwrap();
    // Too big for the tmpfs: refused, with the sizes, and no file is left behind.
    let out = daxfs(&["mkfs", img, "--size", "256M"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "mkfs of 256M on a 64M tmpfs succeeded"
    );
    assert!(
        err.contains("256 MiB does not fit") && err.contains("64 MiB free"),
        "{err}"
    );
    assert!(!t.image().exists(), "a refused mkfs left {img}");
    // What fits is allocated in full.
    let out = daxfs(&["mkfs", img, "--size", "32M"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(allocated(&t.image()) >= 32 << 20, "image left sparse");
    // Reformatting in place needs no more room than the file has: 48M fits next to it.
    let out = daxfs(&["mkfs", img, "--size", "48M", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(allocated(&t.image()) >= 48 << 20, "image left sparse");
    // --sparse: allowed, with a warning, and only the metadata is allocated.
    let out = daxfs(&["mkfs", img, "--size", "256M", "--force", "--sparse"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("warning") && said.contains("sparse"),
        "{said}"
    );
    assert!(
        allocated(&t.image()) < 16 << 20,
        "a sparse image was preallocated"
    );
}

/// Write `mib` MiB of data into `path` and make it durable.
fn write_mib(path: &Path, mib: usize) {
    let mut f = fs::File::create(path).unwrap();
    let buf = vec![0xa5u8; 1 << 20];
    for _ in 0..mib {
        f.write_all(&buf).unwrap();
    }
    f.sync_all().unwrap();
}

/// The image's allocated bytes once they have dropped below `below` (a deleted file's
/// blocks are freed when the kernel forgets its inode, shortly after the unlink), or
/// after 10 s.
fn allocated_below(img: &Path, below: u64) -> u64 {
    for _ in 0..100 {
        let a = allocated(img);
        if a < below {
            return a;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    allocated(img)
}

#[test]
fn discard_and_trim_give_freed_blocks_back_to_a_sparse_image() {
    if !can_mount() {
        return;
    }
    let mut t = SmallFs::new("400M");
    let img = t.image();
    let out = daxfs(&["mkfs", img.to_str().unwrap(), "--size", "256M", "--sparse"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mib = 1u64 << 20;

    // -o discard: deleting 100 MiB gives (nearly) all of it back at once.
    t.mount_with(&["-o", "discard"]);
    let base = allocated(&img);
    write_mib(&t.mnt().join("f"), 100);
    let full = allocated(&img);
    assert!(
        full >= base + 100 * mib,
        "100 MiB written: {base} -> {full}"
    );
    fs::remove_file(t.mnt().join("f")).unwrap();
    let after = allocated_below(&img, base + 10 * mib);
    assert!(
        after < base + 10 * mib,
        "-o discard: the image still has {after} bytes allocated ({base} before the write)"
    );
    t.unmount();
    t.check_clean();

    // Without discard the space stays in the image until `daxfs trim`.
    t.mount();
    write_mib(&t.mnt().join("g"), 100);
    let full = allocated(&img);
    let free0 = nix::sys::statvfs::statvfs(&t.mnt()).unwrap().blocks_free();
    fs::remove_file(t.mnt().join("g")).unwrap();
    // Wait until the free has happened (the inode is gone from the directory at once;
    // its blocks go when the kernel forgets it): the free-block count is back.
    for _ in 0..100 {
        let free = nix::sys::statvfs::statvfs(&t.mnt()).unwrap().blocks_free();
        if free >= free0 + 25000 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        allocated(&img) + 10 * mib >= full,
        "without discard, freed blocks were given back"
    );
    let out = daxfs(&["trim", t.mnt().to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "trim: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("trimmed"), "{said}");
    let after = allocated(&img);
    assert!(
        after < base + 10 * mib,
        "after trim the image has {after} bytes allocated ({base} at first)"
    );
    // fstrim(8) reaches the same code: the daemon answers FITRIM.
    if let Ok(out) = Command::new("fstrim").arg(t.mnt()).output() {
        assert!(
            out.status.success(),
            "fstrim: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The filesystem goes on working on the holes trim left.
    write_mib(&t.mnt().join("h"), 20);
    assert_eq!(fs::read(t.mnt().join("h")).unwrap(), vec![0xa5u8; 20 << 20]);
    t.unmount();
    t.check_clean();
}
