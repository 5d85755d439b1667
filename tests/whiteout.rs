//! RENAME_WHITEOUT in the core: the source name becomes a whiteout (a 0/0 character
//! device owned by the caller) in the same transaction as the move; with EXCHANGE it is
//! EINVAL; with NOREPLACE over an existing name EEXIST and nothing changes. Each test ends
//! with `daxfs check` clean after a remount.

use std::sync::Arc;

use daxfs::check;
use daxfs::fs::{Cred, FileKind, Fs, FsOptions, RenameFlags};
use daxfs::mkfs::{self, MkfsOptions};
use daxfs::pmem::device::Device;

fn fresh() -> (Arc<Device>, Arc<Fs>) {
    let dev = Arc::new(Device::memfd(64 << 20).unwrap());
    mkfs::mkfs(&dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone(), &FsOptions::default()).unwrap();
    (dev, fs)
}

fn assert_clean(dev: &Device) {
    let r = check::check(dev).unwrap();
    assert!(r.problems.is_empty(), "{}", r.problems.join("\n"));
}

fn remount(dev: &Arc<Device>, fs: Arc<Fs>) -> Arc<Fs> {
    fs.unmount().unwrap();
    drop(fs);
    assert_clean(dev);
    Fs::mount(dev.clone(), &FsOptions::default()).unwrap()
}

const WHITEOUT: RenameFlags = RenameFlags {
    noreplace: false,
    exchange: false,
    whiteout: true,
};

fn user() -> Cred {
    Cred {
        uid: 1000,
        gid: 1001,
        ..Default::default()
    }
}

#[test]
fn whiteout_replaces_the_source_name() {
    let (dev, fs) = fresh();
    let r = fs.root_ino();
    let d = fs
        .mkdir(r, b"d", libc::S_IFDIR | 0o755, &Cred::default())
        .unwrap()
        .ino;
    let f = fs
        .mknod(r, b"f", libc::S_IFREG | 0o644, 0, &Cred::default())
        .unwrap()
        .ino;
    fs.write(f, 0, b"data", false).unwrap();
    let sub = fs
        .mkdir(r, b"sub", libc::S_IFDIR | 0o755, &Cred::default())
        .unwrap()
        .ino;
    // A file into another directory, a directory across, a file within one directory.
    fs.rename_as(r, b"f", d, b"f", WHITEOUT, &user()).unwrap();
    fs.rename_as(r, b"sub", d, b"sub", WHITEOUT, &user())
        .unwrap();
    fs.rename_as(d, b"f", d, b"g", WHITEOUT, &user()).unwrap();
    let fs = remount(&dev, fs);
    for (dir, name) in [(r, "f"), (r, "sub"), (d, "f")] {
        let w = fs.lookup(dir, name.as_bytes()).unwrap();
        assert_eq!(w.kind, FileKind::CharDev, "{name}");
        assert_eq!((w.rdev, w.perm, w.nlink), (0, 0, 1), "{name}");
        assert_eq!((w.uid, w.gid), (1000, 1001), "{name}");
    }
    assert_eq!(fs.lookup(d, b"g").unwrap().ino, f);
    assert_eq!(fs.lookup(d, b"sub").unwrap().ino, sub);
    assert_eq!(fs.read(f, 0, 10, |b| b.to_vec()).unwrap(), b"data");
    // Root's nlink: it lost the moved directory; d gained it.
    assert_eq!(fs.getattr(r).unwrap().nlink, 3);
    assert_eq!(fs.getattr(d).unwrap().nlink, 3);
    // A whiteout is an ordinary entry: it can be removed.
    fs.unlink(r, b"f").unwrap();
    fs.unmount().unwrap();
    drop(fs);
    assert_clean(&dev);
}

#[test]
fn whiteout_over_an_existing_target_and_its_refusals() {
    let (dev, fs) = fresh();
    let r = fs.root_ino();
    let c = Cred::default();
    let a = fs.mknod(r, b"a", libc::S_IFREG | 0o644, 0, &c).unwrap().ino;
    let b = fs.mknod(r, b"b", libc::S_IFREG | 0o644, 0, &c).unwrap().ino;
    let exchange = RenameFlags {
        exchange: true,
        ..WHITEOUT
    };
    let e = fs.rename_as(r, b"a", r, b"b", exchange, &c).unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL);
    let noreplace = RenameFlags {
        noreplace: true,
        ..WHITEOUT
    };
    let e = fs.rename_as(r, b"a", r, b"b", noreplace, &c).unwrap_err();
    assert_eq!(e.errno(), libc::EEXIST);
    assert_eq!(fs.lookup(r, b"a").unwrap().ino, a);
    // Over an existing name: it replaces the target, the source becomes a whiteout.
    fs.rename_as(r, b"a", r, b"b", WHITEOUT, &c).unwrap();
    assert_eq!(fs.lookup(r, b"b").unwrap().ino, a);
    assert_eq!(fs.lookup(r, b"a").unwrap().kind, FileKind::CharDev);
    assert_eq!(fs.getattr(b).map(|x| x.nlink).unwrap_or(0), 0);
    let fs = remount(&dev, fs);
    assert_eq!(fs.lookup(r, b"a").unwrap().kind, FileKind::CharDev);
    fs.unmount().unwrap();
    drop(fs);
    assert_clean(&dev);
}
