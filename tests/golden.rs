//! Format compatibility: the golden image of format version 1 (images/) mounts, reads back
//! exactly what was written into it, accepts changes, and checks clean.

use std::io::Read;
use std::sync::Arc;

use daxfs::check;
use daxfs::fs::{FileKind, Fs, FsOptions, Timespec};
use daxfs::pmem::device::Device;

fn path(fs: &Fs, p: &str) -> daxfs::fs::Attr {
    let mut a = fs.getattr(fs.root_ino()).unwrap();
    for c in p.split('/') {
        a = fs
            .lookup(a.ino, c.as_bytes())
            .unwrap_or_else(|e| panic!("{p}: {e}"));
    }
    a
}

#[test]
fn version_1_golden_image_still_mounts() {
    let gz = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/images/daxfs-v1-golden.img.gz"
    ))
    .unwrap();
    let mut img = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut img)
        .unwrap();
    let dev = Arc::new(Device::memfd(img.len() as u64).unwrap());
    dev.write(0, &img);
    let rep = check::check(&dev).unwrap();
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);

    let fs = Fs::mount(dev.clone(), &FsOptions::default()).unwrap();
    let f = path(&fs, "dir/file");
    assert_eq!(
        fs.read(f.ino, 0, 100, |b| b.to_vec()).unwrap(),
        b"golden file\n"
    );
    assert_eq!(f.perm, 0o640);
    assert_eq!(f.nlink, 2);
    assert_eq!(
        f.mtime,
        Timespec {
            sec: 1577934245,
            nsec: 123456789
        }
    );
    assert_eq!(fs.getxattr(f.ino, b"user.golden").unwrap(), b"yes");
    for i in 1..=40 {
        let e = path(&fs, &format!("dir/sub/e{i}"));
        assert_eq!(
            fs.read(e.ino, 0, 100, |b| b.to_vec()).unwrap(),
            format!("entry {i}\n").as_bytes()
        );
    }
    let big = path(&fs, "big");
    assert_eq!(big.size, 200_000);
    assert!(
        fs.read(big.ino, 150_000, 50_000, |b| b.iter().all(|&c| c == b'g'))
            .unwrap()
    );
    let frag = path(&fs, "frag");
    assert_eq!(frag.size, 30 * 4096 + 4);
    assert_eq!(
        fs.read(frag.ino, 30 * 4096, 4, |b| b.to_vec()).unwrap(),
        b"frag"
    );
    assert_eq!(
        fs.read(frag.ino, 4096, 4, |b| b.to_vec()).unwrap(),
        vec![0u8; 4]
    );
    assert_eq!(
        fs.readlink(path(&fs, "short-link").ino).unwrap(),
        b"dir/file"
    );
    assert_eq!(
        fs.readlink(path(&fs, "long-link").ino).unwrap(),
        vec![b'l'; 300]
    );
    assert_eq!(path(&fs, "fifo").kind, FileKind::Fifo);
    // And it takes changes. Its attributes stay in the one-block form (no attribute-tree
    // feature): the block's limits hold, ACLs are not kept.
    let none = daxfs::fs::XattrFlags::default();
    let blocks = fs.getattr(f.ino).unwrap().blocks;
    fs.setxattr(f.ino, b"user.more", &[1u8; 1000], none)
        .unwrap();
    assert_eq!(
        fs.setxattr(f.ino, b"user.big", &[1u8; 5000], none)
            .unwrap_err()
            .errno(),
        libc::ENOSPC
    );
    assert_eq!(
        fs.setxattr(f.ino, b"system.posix_acl_access", &[2, 0, 0, 0], none)
            .unwrap_err()
            .errno(),
        libc::EOPNOTSUPP
    );
    assert_eq!(
        fs.getattr(f.ino).unwrap().blocks,
        blocks,
        "still the one attribute block"
    );
    fs.unlink(fs.root_ino(), b"big").unwrap();
    fs.mkdir(fs.root_ino(), b"new", 0o755, &Default::default())
        .unwrap();
    fs.unmount().unwrap();
    drop(fs);
    let rep = check::check(&dev).unwrap();
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    let fs = Fs::mount(dev.clone(), &FsOptions::default()).unwrap();
    let f = path(&fs, "dir/file");
    assert_eq!(fs.getxattr(f.ino, b"user.golden").unwrap(), b"yes");
    assert_eq!(fs.getxattr(f.ino, b"user.more").unwrap(), vec![1u8; 1000]);
    fs.unmount().unwrap();
}
