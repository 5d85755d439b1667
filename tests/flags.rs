//! Inode flags in the core (no mount): who may set them, and what immutable, append-only,
//! sync and noatime forbid or change on every path, errno checked. Each test ends with
//! `daxfs check` clean; most remount in between to see that the flags persist.

use std::sync::Arc;

use daxfs::check;
use daxfs::fs::{
    AtimeMode, Cred, DaxMode, Fs, FsOptions, InodeFlags, RenameFlags, SetAttr, SetTime, Timespec,
    XattrFlags,
};
use daxfs::mkfs::{self, MkfsOptions};
use daxfs::pmem::device::Device;

const S_IFREG: u32 = libc::S_IFREG;

fn root() -> Cred {
    Cred::default()
}

fn user(uid: u32) -> Cred {
    Cred {
        uid,
        gid: uid,
        pid: 1,
        ..Default::default()
    }
}

fn fresh_with(o: &FsOptions) -> (Arc<Device>, Arc<Fs>) {
    let dev = Arc::new(Device::memfd(64 << 20).unwrap());
    mkfs::mkfs(&dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone(), o).unwrap();
    (dev, fs)
}

fn fresh() -> (Arc<Device>, Arc<Fs>) {
    fresh_with(&FsOptions::default())
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

fn finish(dev: &Arc<Device>, fs: Arc<Fs>) {
    fs.unmount().unwrap();
    drop(fs);
    assert_clean(dev);
}

fn file(fs: &Fs, parent: u64, name: &str) -> u64 {
    let ino = fs
        .mknod(parent, name.as_bytes(), S_IFREG | 0o644, 0, &root())
        .unwrap()
        .ino;
    fs.write(ino, 0, b"hello", false).unwrap();
    ino
}

fn errno<T: std::fmt::Debug>(r: daxfs::error::Result<T>) -> i32 {
    r.expect_err("expected an error").errno()
}

const IMMUTABLE: InodeFlags = InodeFlags {
    immutable: true,
    append: false,
    sync: false,
    noatime: false,
    nodump: false,
    dax: false,
};
const APPEND: InodeFlags = InodeFlags {
    immutable: false,
    append: true,
    ..IMMUTABLE
};
const NONE: InodeFlags = InodeFlags {
    immutable: false,
    ..IMMUTABLE
};

fn read(fs: &Fs, ino: u64) -> Vec<u8> {
    fs.read(ino, 0, 1 << 20, |b| b.to_vec()).unwrap()
}

#[test]
fn flags_persist_and_show_in_getattr() {
    let (dev, fs) = fresh();
    let r = fs.root_ino();
    let f = file(&fs, r, "f");
    let all = InodeFlags {
        immutable: true,
        append: true,
        sync: true,
        noatime: true,
        nodump: true,
        dax: true,
    };
    fs.set_flags(f, all, &root()).unwrap();
    let fs = remount(&dev, fs);
    assert_eq!(fs.getattr(f).unwrap().flags, all);
    fs.set_flags(f, NONE, &root()).unwrap();
    assert_eq!(fs.getattr(f).unwrap().flags, NONE);
    finish(&dev, fs);
}

#[test]
fn only_the_owner_sets_flags_and_immutable_needs_the_capability() {
    let (dev, fs) = fresh();
    let r = fs.root_ino();
    let f = file(&fs, r, "f");
    fs.setattr(
        f,
        &SetAttr {
            uid: Some(1000),
            ..Default::default()
        },
        &root(),
    )
    .unwrap();
    let nodump = InodeFlags {
        nodump: true,
        ..NONE
    };
    // Not the owner.
    assert_eq!(errno(fs.set_flags(f, nodump, &user(1001))), libc::EPERM);
    // The owner may set nodump, not immutable or append-only without the capability.
    fs.set_flags(f, nodump, &user(1000)).unwrap();
    assert_eq!(errno(fs.set_flags(f, IMMUTABLE, &user(1000))), libc::EPERM);
    assert_eq!(errno(fs.set_flags(f, APPEND, &user(1000))), libc::EPERM);
    let capable = Cred {
        cap_linux_immutable: Some(true),
        ..user(1000)
    };
    fs.set_flags(f, IMMUTABLE, &capable).unwrap();
    // Root without CAP_LINUX_IMMUTABLE (a dropped capability) may not clear it.
    let root_nocap = Cred {
        cap_linux_immutable: Some(false),
        ..root()
    };
    assert_eq!(errno(fs.set_flags(f, NONE, &root_nocap)), libc::EPERM);
    // An immutable inode changes flags only by losing its immutable flag.
    let imm_sync = InodeFlags {
        sync: true,
        ..IMMUTABLE
    };
    assert_eq!(errno(fs.set_flags(f, imm_sync, &root())), libc::EPERM);
    assert_eq!(fs.getattr(f).unwrap().flags, IMMUTABLE);
    fs.set_flags(f, NONE, &root()).unwrap();
    finish(&dev, fs);
}

#[test]
fn immutable_file_takes_no_change_on_any_path() {
    let (dev, fs) = fresh();
    let r = fs.root_ino();
    let f = file(&fs, r, "f");
    fs.setxattr(f, b"user.a", b"1", XattrFlags::default())
        .unwrap();
    fs.set_flags(f, IMMUTABLE, &root()).unwrap();
    let fs = remount(&dev, fs);
    let before = fs.getattr(f).unwrap();
    let eperm = libc::EPERM;
    assert_eq!(errno(fs.write(f, 0, b"x", false)), eperm);
    assert_eq!(errno(fs.write(f, 0, b"x", true)), eperm);
    assert_eq!(errno(fs.open(f, libc::O_WRONLY)), eperm);
    assert_eq!(errno(fs.open(f, libc::O_RDWR | libc::O_APPEND)), eperm);
    assert_eq!(errno(fs.open(f, libc::O_RDONLY | libc::O_TRUNC)), eperm);
    let fh = fs.open(f, libc::O_RDONLY).unwrap();
    fs.release(f, fh);
    for set in [
        SetAttr {
            size: Some(0),
            ..Default::default()
        },
        SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
        SetAttr {
            uid: Some(5),
            ..Default::default()
        },
        SetAttr {
            gid: Some(5),
            ..Default::default()
        },
        SetAttr {
            atime: Some(SetTime::Now),
            mtime: Some(SetTime::Now),
            ..Default::default()
        },
        SetAttr {
            mtime: Some(SetTime::At(Timespec { sec: 1, nsec: 0 })),
            ..Default::default()
        },
    ] {
        assert_eq!(errno(fs.setattr(f, &set, &root())), eperm, "{set:?}");
    }
    for mode in [
        0,
        libc::FALLOC_FL_KEEP_SIZE,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        libc::FALLOC_FL_ZERO_RANGE,
    ] {
        assert_eq!(errno(fs.fallocate(f, 0, 4096, mode)), eperm, "{mode:#x}");
    }
    assert_eq!(
        errno(fs.setxattr(f, b"user.b", b"2", XattrFlags::default())),
        eperm
    );
    assert_eq!(errno(fs.removexattr(f, b"user.a")), eperm);
    assert_eq!(errno(fs.unlink(r, b"f")), eperm);
    assert_eq!(errno(fs.link(f, r, b"g")), eperm);
    assert_eq!(
        errno(fs.rename(r, b"f", r, b"g", RenameFlags::default())),
        eperm
    );
    // Nor is it replaced by a rename over it.
    let other = file(&fs, r, "other");
    assert_eq!(
        errno(fs.rename(r, b"other", r, b"f", RenameFlags::default())),
        eperm
    );
    let src = file(&fs, r, "src");
    assert_eq!(errno(fs.copy_file_range(src, 0, f, 0, 5)), eperm);
    let after = fs.getattr(f).unwrap();
    assert_eq!(read(&fs, f), b"hello");
    assert_eq!((after.size, after.perm, after.uid), (5, 0o644, 0));
    assert_eq!((after.mtime, after.ctime), (before.mtime, before.ctime));
    assert_eq!(fs.getxattr(f, b"user.a").unwrap(), b"1");
    // Once cleared, everything works again.
    fs.set_flags(f, NONE, &root()).unwrap();
    fs.write(f, 5, b"!", false).unwrap();
    fs.unlink(r, b"f").unwrap();
    fs.unlink(r, b"other").unwrap();
    let _ = other;
    finish(&dev, fs);
}

#[test]
fn append_only_file_grows_only() {
    let (dev, fs) = fresh();
    let r = fs.root_ino();
    let f = file(&fs, r, "f");
    fs.set_flags(f, APPEND, &root()).unwrap();
    let eperm = libc::EPERM;
    assert_eq!(errno(fs.write(f, 0, b"X", false)), eperm);
    assert_eq!(fs.write(f, 0, b" world", true).unwrap(), 6);
    assert_eq!(read(&fs, f), b"hello world");
    assert_eq!(errno(fs.open(f, libc::O_WRONLY)), eperm);
    assert_eq!(
        errno(fs.open(f, libc::O_WRONLY | libc::O_APPEND | libc::O_TRUNC)),
        eperm
    );
    let fh = fs.open(f, libc::O_WRONLY | libc::O_APPEND).unwrap();
    fs.release(f, fh);
    let size = |n| SetAttr {
        size: Some(n),
        ..Default::default()
    };
    assert_eq!(errno(fs.setattr(f, &size(0), &root())), eperm);
    assert_eq!(errno(fs.setattr(f, &size(100), &root())), eperm);
    let chmod = SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    assert_eq!(errno(fs.setattr(f, &chmod, &root())), eperm);
    let back_in_time = SetAttr {
        mtime: Some(SetTime::At(Timespec { sec: 1, nsec: 0 })),
        ..Default::default()
    };
    assert_eq!(errno(fs.setattr(f, &back_in_time, &root())), eperm);
    // touch (times set to now) is allowed, as on Linux.
    let touch = SetAttr {
        atime: Some(SetTime::Now),
        mtime: Some(SetTime::Now),
        ..Default::default()
    };
    fs.setattr(f, &touch, &root()).unwrap();
    // A plain allocation may grow it; punching or zeroing may not.
    fs.fallocate(f, 0, 8192, 0).unwrap();
    for mode in [
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        libc::FALLOC_FL_ZERO_RANGE,
        libc::FALLOC_FL_COLLAPSE_RANGE,
        libc::FALLOC_FL_INSERT_RANGE,
    ] {
        assert_eq!(errno(fs.fallocate(f, 0, 4096, mode)), eperm, "{mode:#x}");
    }
    assert_eq!(
        errno(fs.setxattr(f, b"user.b", b"2", XattrFlags::default())),
        eperm
    );
    assert_eq!(errno(fs.unlink(r, b"f")), eperm);
    assert_eq!(errno(fs.link(f, r, b"g")), eperm);
    assert_eq!(
        errno(fs.rename(r, b"f", r, b"g", RenameFlags::default())),
        eperm
    );
    let src = file(&fs, r, "src");
    assert_eq!(errno(fs.copy_file_range(src, 0, f, 0, 5)), eperm);
    let fs = remount(&dev, fs);
    assert_eq!(fs.getattr(f).unwrap().flags, APPEND);
    assert_eq!(fs.getattr(f).unwrap().size, 8192);
    fs.set_flags(f, NONE, &root()).unwrap();
    fs.unlink(r, b"f").unwrap();
    finish(&dev, fs);
}

#[test]
fn append_only_directory_takes_entries_and_keeps_them() {
    let (dev, fs) = fresh();
    let r = fs.root_ino();
    let d = fs
        .mkdir(r, b"d", libc::S_IFDIR | 0o755, &root())
        .unwrap()
        .ino;
    let old = file(&fs, d, "old");
    let outside = file(&fs, r, "outside");
    fs.set_flags(d, APPEND, &root()).unwrap();
    let eperm = libc::EPERM;
    // Creating entries works: files, dirs, links, renames into it.
    let new = file(&fs, d, "new");
    fs.mkdir(d, b"sub", libc::S_IFDIR | 0o755, &root()).unwrap();
    fs.link(outside, d, b"link").unwrap();
    fs.rename(r, b"outside", d, b"moved", RenameFlags::default())
        .unwrap();
    // Removing or replacing them does not.
    assert_eq!(errno(fs.unlink(d, b"old")), eperm);
    assert_eq!(errno(fs.rmdir(d, b"sub")), eperm);
    assert_eq!(
        errno(fs.rename(d, b"old", r, b"out", RenameFlags::default())),
        eperm
    );
    assert_eq!(
        errno(fs.rename(d, b"old", d, b"renamed", RenameFlags::default())),
        eperm
    );
    let x = file(&fs, r, "x");
    assert_eq!(
        errno(fs.rename(r, b"x", d, b"new", RenameFlags::default())),
        eperm
    );
    let exchange = RenameFlags {
        exchange: true,
        ..Default::default()
    };
    assert_eq!(errno(fs.rename(r, b"x", d, b"new", exchange)), eperm);
    // The files in it are not append-only themselves.
    fs.write(old, 0, b"J", false).unwrap();
    let fs = remount(&dev, fs);
    fs.set_flags(d, NONE, &root()).unwrap();
    for n in ["old", "new", "link", "moved"] {
        fs.unlink(d, n.as_bytes()).unwrap();
    }
    fs.rmdir(d, b"sub").unwrap();
    let _ = (new, x);
    finish(&dev, fs);
}

#[test]
fn immutable_directory_takes_no_entry() {
    let (dev, fs) = fresh();
    let r = fs.root_ino();
    let d = fs
        .mkdir(r, b"d", libc::S_IFDIR | 0o755, &root())
        .unwrap()
        .ino;
    let inner = file(&fs, d, "in");
    let outer = file(&fs, r, "out");
    fs.set_flags(d, IMMUTABLE, &root()).unwrap();
    let eperm = libc::EPERM;
    assert_eq!(errno(fs.mknod(d, b"n", S_IFREG | 0o644, 0, &root())), eperm);
    assert_eq!(
        errno(fs.mkdir(d, b"n", libc::S_IFDIR | 0o755, &root())),
        eperm
    );
    assert_eq!(errno(fs.symlink(d, b"n", b"t", &root())), eperm);
    assert_eq!(errno(fs.link(outer, d, b"n")), eperm);
    assert_eq!(
        errno(fs.rename(r, b"out", d, b"n", RenameFlags::default())),
        eperm
    );
    assert_eq!(errno(fs.unlink(d, b"in")), eperm);
    assert_eq!(
        errno(fs.rename(r, b"d", r, b"e", RenameFlags::default())),
        eperm
    );
    assert_eq!(
        errno(fs.setattr(
            d,
            &SetAttr {
                mode: Some(0o700),
                ..Default::default()
            },
            &root()
        )),
        eperm
    );
    // Its files' data are not frozen (only the directory is).
    fs.write(inner, 0, b"J", false).unwrap();
    fs.set_flags(d, NONE, &root()).unwrap();
    fs.unlink(d, b"in").unwrap();
    finish(&dev, fs);
}

#[test]
fn new_inodes_inherit_sync_noatime_nodump_not_immutable() {
    let (dev, fs) = fresh();
    let r = fs.root_ino();
    let d = fs
        .mkdir(r, b"d", libc::S_IFDIR | 0o755, &root())
        .unwrap()
        .ino;
    let inherited = InodeFlags {
        sync: true,
        noatime: true,
        nodump: true,
        ..NONE
    };
    fs.set_flags(
        d,
        InodeFlags {
            append: true,
            ..inherited
        },
        &root(),
    )
    .unwrap();
    let f = file(&fs, d, "f");
    let sub = fs
        .mkdir(d, b"s", libc::S_IFDIR | 0o755, &root())
        .unwrap()
        .ino;
    assert_eq!(fs.getattr(f).unwrap().flags, inherited);
    assert_eq!(fs.getattr(sub).unwrap().flags, inherited);
    fs.set_flags(d, NONE, &root()).unwrap();
    finish(&dev, fs);
}

fn checkpoints(fs: &Fs) -> u64 {
    fs.stats()
        .lines()
        .find_map(|l| l.strip_prefix("checkpoints "))
        .and_then(|v| v.trim().parse().ok())
        .expect("checkpoints in stats")
}

#[test]
fn sync_flag_makes_every_write_durable_before_it_returns() {
    let (dev, fs) = fresh();
    let r = fs.root_ino();
    let plain = file(&fs, r, "plain");
    let synced = file(&fs, r, "synced");
    fs.set_flags(synced, InodeFlags { sync: true, ..NONE }, &root())
        .unwrap();
    let c0 = checkpoints(&fs);
    for i in 0..5 {
        fs.write(plain, i * 10, b"0123456789", false).unwrap();
    }
    let c1 = checkpoints(&fs);
    for i in 0..5 {
        fs.write(synced, i * 10, b"0123456789", false).unwrap();
    }
    let c2 = checkpoints(&fs);
    assert!(c2 - c1 >= 5, "sync writes checkpointed {} times", c2 - c1);
    assert!(c1 - c0 < 5, "plain writes checkpointed {} times", c1 - c0);
    finish(&dev, fs);
}

#[test]
fn noatime_flag_keeps_atime_under_strictatime() {
    let o = FsOptions {
        atime: AtimeMode::Strictatime,
        ..Default::default()
    };
    let (dev, fs) = fresh_with(&o);
    let r = fs.root_ino();
    let f = file(&fs, r, "f");
    let g = file(&fs, r, "g");
    let old = SetAttr {
        atime: Some(SetTime::At(Timespec { sec: 1000, nsec: 0 })),
        ..Default::default()
    };
    fs.setattr(f, &old, &root()).unwrap();
    fs.setattr(g, &old, &root()).unwrap();
    fs.set_flags(
        f,
        InodeFlags {
            noatime: true,
            ..NONE
        },
        &root(),
    )
    .unwrap();
    read(&fs, f);
    read(&fs, g);
    assert_eq!(fs.getattr(f).unwrap().atime.sec, 1000);
    assert!(fs.getattr(g).unwrap().atime.sec > 1000);
    finish(&dev, fs);
}

#[test]
fn no_write_lease_on_an_immutable_or_append_only_file() {
    let o = FsOptions {
        dax: DaxMode::Always,
        ..Default::default()
    };
    let (dev, fs) = fresh_with(&o);
    let r = fs.root_ino();
    let f = file(&fs, r, "f");
    let c = fs.layout_client_new(1, 0);
    for flags in [IMMUTABLE, APPEND] {
        fs.set_flags(f, InodeFlags { dax: true, ..flags }, &root())
            .unwrap();
        let e = fs.layout_grant(f, c, 0, 4096, true).unwrap_err();
        assert_eq!(e.errno, libc::EPERM, "{flags:?}: {}", e.text);
        // Reading is allowed.
        let g = fs.layout_grant(f, c, 0, 4096, false).unwrap();
        fs.layout_return(c, g.lease).unwrap();
    }
    fs.layout_client_gone(c);
    fs.set_flags(f, InodeFlags { dax: true, ..NONE }, &root())
        .unwrap();
    finish(&dev, fs);
}

#[test]
fn flags_on_other_kinds_are_refused() {
    let (dev, fs) = fresh();
    let r = fs.root_ino();
    let l = fs.symlink(r, b"l", b"target", &root()).unwrap().ino;
    assert_eq!(errno(fs.set_flags(l, IMMUTABLE, &root())), libc::ENOTTY);
    finish(&dev, fs);
}

/// The device offset of inode `ino`'s slot (ino = fs block * 8 + slot).
fn inode_off(ino: u64) -> u64 {
    (ino / 8) * daxfs::format::BLOCK_SIZE as u64 + (ino % 8) * daxfs::format::INODE_SIZE as u64
}

/// Rewrite the flags word of inode `ino` on the device, with a valid CRC.
fn poke_flags(dev: &Device, ino: u64, flags: u64) {
    use daxfs::format::*;
    let mut b = vec![0u8; INODE_SIZE];
    dev.read(inode_off(ino), &mut b);
    put_u64(&mut b, DI_FLAGS, flags);
    let crc = crc_with_hole(&b, DI_CRC);
    put_u32(&mut b, DI_CRC, crc);
    dev.write(inode_off(ino), &b);
}

/// Clear `bits` of every superblock's incompat word, with valid CRCs.
fn clear_incompat(dev: &Device, bits: u64) {
    use daxfs::format::*;
    let bs = BLOCK_SIZE as u64;
    let mut b = vec![0u8; BLOCK_SIZE];
    dev.read(0, &mut b);
    let sb = Superblock::decode(&b, dev.len() / bs).unwrap();
    for ag in 0..sb.ag_count as u64 {
        dev.read(ag * sb.ag_blocks * bs, &mut b);
        let v = get_u64(&b, 96) & !bits;
        put_u64(&mut b, 96, v);
        let crc = sb_crc(&b);
        put_u32(&mut b, SB_CRC, crc);
        dev.write(ag * sb.ag_blocks * bs, &b);
    }
}

#[test]
fn check_accepts_the_flags_and_rejects_unknown_bits_and_flags_without_the_feature() {
    use daxfs::format::*;
    let (dev, fs) = fresh();
    let r = fs.root_ino();
    let f = file(&fs, r, "f");
    let all = InodeFlags {
        immutable: true,
        append: true,
        sync: true,
        noatime: true,
        nodump: true,
        dax: true,
    };
    fs.set_flags(f, all, &root()).unwrap();
    fs.unmount().unwrap();
    drop(fs);
    assert_clean(&dev);
    // An unknown flag bit: the inode verifier refuses it.
    poke_flags(&dev, f, DIFLAG_KNOWN | 1 << 6);
    let p = check::check(&dev).unwrap().problems;
    assert!(p.iter().any(|x| x.contains("unknown flags")), "{p:?}");
    // Known flags on an image without the feature bit.
    poke_flags(&dev, f, DIFLAG_IMMUTABLE);
    clear_incompat(&dev, INCOMPAT_INODE_FLAGS);
    let p = check::check(&dev).unwrap().problems;
    assert!(
        p.iter()
            .any(|x| x.contains("without the inode-flags feature")),
        "{p:?}"
    );
    // Such an image (made by an older mkfs) keeps only the DAX flag settable.
    poke_flags(&dev, f, 0);
    assert_clean(&dev);
    let fs = Fs::mount(dev.clone(), &FsOptions::default()).unwrap();
    assert_eq!(errno(fs.set_flags(f, IMMUTABLE, &root())), libc::EOPNOTSUPP);
    fs.set_dax_flag(f, true).unwrap();
    assert!(fs.getattr(f).unwrap().flags.dax);
    finish(&dev, fs);
}

#[test]
fn read_cache_policy_follows_the_atime_policy() {
    use daxfs::fs::ReadCache;
    for (atime, after_write, after_read) in [
        (AtimeMode::Relatime, ReadCache::Drop, ReadCache::Keep),
        (AtimeMode::Strictatime, ReadCache::Bypass, ReadCache::Bypass),
        (AtimeMode::Noatime, ReadCache::Keep, ReadCache::Keep),
    ] {
        let o = FsOptions {
            atime,
            ..Default::default()
        };
        let (dev, fs) = fresh_with(&o);
        let r = fs.root_ino();
        let f = file(&fs, r, "f");
        assert_eq!(
            fs.read_cache_policy(f, libc::O_RDONLY),
            after_write,
            "{atime:?} after a write"
        );
        if after_write == ReadCache::Drop {
            // A write-only open reads nothing: it keeps the cache.
            assert_eq!(fs.read_cache_policy(f, libc::O_WRONLY), ReadCache::Keep);
        }
        read(&fs, f);
        assert_eq!(
            fs.read_cache_policy(f, libc::O_RDONLY),
            after_read,
            "{atime:?} after a read"
        );
        fs.write(f, 0, b"again", false).unwrap();
        assert_eq!(
            fs.read_cache_policy(f, libc::O_RDONLY),
            after_write,
            "{atime:?} after a rewrite"
        );
        // A noatime file keeps the cache under every policy.
        fs.set_flags(
            f,
            InodeFlags {
                noatime: true,
                ..NONE
            },
            &root(),
        )
        .unwrap();
        assert_eq!(
            fs.read_cache_policy(f, libc::O_RDONLY),
            ReadCache::Keep,
            "{atime:?} +A"
        );
        // Directories are never DIRECT_IO.
        assert_eq!(fs.read_cache_policy(r, libc::O_RDONLY), ReadCache::Keep);
        finish(&dev, fs);
    }
    let (dev, fs) = fresh_with(&FsOptions {
        dax: DaxMode::Always,
        ..Default::default()
    });
    let f = file(&fs, fs.root_ino(), "f");
    assert_eq!(fs.read_cache_policy(f, libc::O_RDONLY), ReadCache::Bypass);
    finish(&dev, fs);
}
