//! Damaged images never panic: flip bytes at random in the used part of a real image, then
//! mount, walk everything, change something, unmount and check. Each step may fail with an
//! error (EUCLEAN, EIO, a refused mount, problems from check); none may panic or hang.
//! A seeded smoke test; the fuzz targets of issue 3 go further.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use daxfs::check;
use daxfs::fs::{Cred, Fs, FsOptions};
use daxfs::mkfs::{self, MkfsOptions};
use daxfs::pmem::device::Device;
use daxfs::repair::{self, RepairOptions};

const SIZE: u64 = 16 << 20;

fn build_image() -> Vec<u8> {
    let dev = Arc::new(Device::memfd(SIZE).unwrap());
    mkfs::mkfs(&dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone(), &FsOptions::default()).unwrap();
    let c = Cred::default();
    let r = fs.root_ino();
    let d = fs.mkdir(r, b"d", 0o755, &c).unwrap().ino;
    for i in 0..300 {
        let f = fs
            .mknod(
                d,
                format!("file-{i}").as_bytes(),
                libc::S_IFREG | 0o644,
                0,
                &c,
            )
            .unwrap()
            .ino;
        // Fragmented writes: some files get extent trees.
        for j in 0..(i % 13) {
            fs.write(f, j * 8192, &[i as u8; 100], false).unwrap();
        }
        if i % 50 == 0 {
            fs.setxattr(f, b"user.tag", b"value", Default::default())
                .unwrap();
        }
    }
    fs.symlink(r, b"long", &[b'y'; 1000], &c).unwrap();
    fs.unmount().unwrap();
    drop(fs);
    let mut img = vec![0u8; SIZE as usize];
    dev.read(0, &mut img);
    img
}

/// Read everything reachable; errors are fine.
fn walk(fs: &Fs, ino: u64, depth: usize) {
    if depth > 8 {
        return;
    }
    let mut entries = Vec::new();
    let _ = fs.readdir(ino, 0, &mut |e| {
        entries.push((e.ino, e.name.clone()));
        entries.len() > 10_000
    });
    for (child, name) in entries {
        if name == b"." || name == b".." {
            continue;
        }
        if let Ok(a) = fs.lookup(ino, &name) {
            let _ = fs.read(a.ino, 0, 1 << 16, |b| b.len());
            let _ = fs.readlink(a.ino);
            let _ = fs.listxattr(a.ino);
            if a.kind == daxfs::fs::FileKind::Dir {
                walk(fs, child, depth + 1);
            }
        }
    }
}

#[test]
fn random_damage_never_panics() {
    let img = build_image();
    // Damage only where the image has content (metadata and data live in the first part).
    let used = img.iter().rposition(|&b| b != 0).unwrap_or(0) + 1;
    let mut seed: u64 = std::env::var("DAXFS_DAMAGE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x2545_f491_4f6c_dd1d);
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let dev = Arc::new(Device::memfd(SIZE).unwrap());
    let (mut mounted, mut problems_found) = (0, 0);
    let (mut repaired, mut repair_refused) = (0, 0);
    let rounds: u32 = std::env::var("DAXFS_DAMAGE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    for round in 0..rounds {
        let mut bad = img.clone();
        for _ in 0..(1 + rand() % 8) {
            let off = (rand() as usize) % used;
            bad[off] ^= 1 << (rand() % 8);
        }
        dev.write(0, &bad);
        let r = catch_unwind(AssertUnwindSafe(|| {
            if let Ok(fs) = Fs::mount(dev.clone(), &FsOptions::default()) {
                mounted += 1;
                walk(&fs, fs.root_ino(), 0);
                let c = Cred::default();
                if let Ok(a) = fs.mknod(fs.root_ino(), b"new", libc::S_IFREG | 0o644, 0, &c) {
                    let _ = fs.write(a.ino, 0, &[1u8; 50_000], false);
                }
                let _ = fs.unlink(fs.root_ino(), b"long");
                let _ = fs.unmount();
            }
            if let Ok(rep) = check::check(&dev) {
                problems_found += !rep.problems.is_empty() as u32;
            }
        }));
        assert!(r.is_ok(), "round {round}: a damaged image made daxfs panic");
        // Repair of the same damage: never a panic; when it repairs, check is clean.
        dev.write(0, &bad);
        let r = catch_unwind(AssertUnwindSafe(|| {
            repair::repair(&dev, &RepairOptions::default()).map(|rep| rep.actions)
        }));
        match r {
            Err(_) => panic!("round {round}: repair panicked"),
            Ok(Err(_)) => repair_refused += 1,
            Ok(Ok(actions)) => {
                let c = check::check(&dev).unwrap();
                assert!(
                    c.is_clean(),
                    "round {round}: check after repair: {:?}; repair did {actions:?}",
                    c.problems
                );
                repaired += 1;
            }
        }
    }
    eprintln!("repair: {repaired} repaired to a clean check, {repair_refused} refused");
    eprintln!(
        "{rounds} damaged images: {mounted} mounted, {problems_found} with problems named by check"
    );
}
