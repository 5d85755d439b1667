//! The corrupted-image suite (issue 3, part 5): in a real image, damage one metadata
//! structure of each kind (superblock, AGF, AGI, AGFL, the free-space, inode and unlinked
//! B+trees, inode clusters, extent B+tree blocks, directory data and hash blocks, attribute
//! index, leaf and remote value blocks) in each of several ways (a flipped bit in the
//! header, in the body, a zeroed cache line, the whole block zeroed). Then:
//! - `check` names the damage: a problem that gives the damaged block's number;
//! - mounting refuses, or an operation that reaches the structure fails with EUCLEAN (or
//!   EIO), never a panic; the damage is reported, not silently used;
//! - `daxfs repair` of the damaged image leaves check clean, and then everything the
//!   filesystem can do works without an error of corruption and leaves check clean
//!   (tests/repair.rs compares file contents too).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use daxfs::check;
use daxfs::format::*;
use daxfs::fs::{Cred, FileKind, Fs, FsOptions, XattrFlags};
use daxfs::mkfs::{self, MkfsOptions};
use daxfs::pmem::device::Device;
use daxfs::repair::{self, RepairOptions};

const SIZE: u64 = 16 << 20;
const EUCLEAN: i32 = 117;

/// A real image with every kind of metadata block, unmounted clean.
fn build_image() -> Vec<u8> {
    let dev = Arc::new(Device::memfd(SIZE).unwrap());
    mkfs::mkfs(&dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone(), &FsOptions::default()).unwrap();
    let c = Cred::default();
    let r = fs.root_ino();
    // A directory big enough for a hash tree and several data blocks.
    let d = fs.mkdir(r, b"big", 0o755, &c).unwrap().ino;
    for i in 0..600 {
        let name = format!("entry-with-a-longish-name-{i:05}");
        fs.mknod(d, name.as_bytes(), libc::S_IFREG | 0o644, 0, &c)
            .unwrap();
    }
    // A file with an extent B+tree: many discontiguous extents.
    let f = fs
        .mknod(r, b"frag", libc::S_IFREG | 0o644, 0, &c)
        .unwrap()
        .ino;
    for j in 0..400u64 {
        fs.write(f, j * 8192, &[j as u8 | 1; 4096], false).unwrap();
    }
    // An attribute tree: index, a leaf, and (user.attr3) a remote value.
    let x = fs
        .mknod(r, b"xattrs", libc::S_IFREG | 0o644, 0, &c)
        .unwrap()
        .ino;
    for k in 0..20 {
        let len = if k == 3 { 5000 } else { 100 };
        fs.setxattr(
            x,
            format!("user.attr{k}").as_bytes(),
            &vec![b'v'; len],
            XattrFlags::default(),
        )
        .unwrap();
    }
    // Free space in pieces (free-space trees with more than a root's worth).
    for i in (0..600).step_by(3) {
        let name = format!("entry-with-a-longish-name-{i:05}");
        fs.unlink(d, name.as_bytes()).unwrap();
    }
    fs.unmount().unwrap();
    drop(fs);
    let mut img = vec![0u8; SIZE as usize];
    dev.read(0, &mut img);
    img
}

/// Everything the filesystem can do to reach each structure: walk and read everything,
/// allocate (files, data, inodes), free (unlink, truncate), xattrs. Returns the errnos seen.
fn exercise(fs: &Fs) -> Vec<i32> {
    let mut errs = Vec::new();
    let mut note = |r: Result<(), i32>| {
        if let Err(e) = r {
            errs.push(e);
        }
    };
    let c = Cred::default();
    let mut stack = vec![fs.root_ino()];
    while let Some(dir) = stack.pop() {
        let mut names = Vec::new();
        note(
            fs.readdir(dir, 0, &mut |e| {
                names.push(e.name.clone());
                false
            })
            .map_err(|e| e.errno()),
        );
        for n in names
            .iter()
            .filter(|n| n.as_slice() != b"." && n.as_slice() != b"..")
        {
            match fs.lookup(dir, n) {
                Ok(a) => {
                    note(
                        fs.read(a.ino, 0, 4 << 20, |_| ())
                            .map(|_| ())
                            .map_err(|e| e.errno()),
                    );
                    note(fs.listxattr(a.ino).map(|_| ()).map_err(|e| e.errno()));
                    note(
                        fs.getxattr(a.ino, b"user.attr3")
                            .map(|_| ())
                            .map_err(|e| e.errno()),
                    );
                    if a.kind == FileKind::Dir {
                        stack.push(a.ino);
                    }
                }
                Err(e) => note(Err(e.errno())),
            }
        }
    }
    let r = fs.root_ino();
    for i in 0..80 {
        let made = fs.mknod(
            r,
            format!("new{i}").as_bytes(),
            libc::S_IFREG | 0o644,
            0,
            &c,
        );
        match made {
            Ok(a) => note(
                fs.write(a.ino, 0, &vec![7u8; 3 * 4096 * (i % 5 + 1)], false)
                    .map(|_| ())
                    .map_err(|e| e.errno()),
            ),
            Err(e) => note(Err(e.errno())),
        }
    }
    for i in (0..80).step_by(2) {
        note(
            fs.unlink(r, format!("new{i}").as_bytes())
                .map_err(|e| e.errno()),
        );
    }
    if let Ok(big) = fs.lookup(r, b"big") {
        for i in (1..600).step_by(7) {
            let name = format!("entry-with-a-longish-name-{i:05}");
            note(fs.unlink(big.ino, name.as_bytes()).map_err(|e| e.errno()));
        }
    }
    note(fs.unlink(r, b"frag").map_err(|e| e.errno()));
    if let Ok(x) = fs.lookup(r, b"xattrs") {
        note(
            fs.setxattr(x.ino, b"user.more", b"m", XattrFlags::default())
                .map_err(|e| e.errno()),
        );
        note(fs.removexattr(x.ino, b"user.attr1").map_err(|e| e.errno()));
    }
    note(fs.sync().map_err(|e| e.errno()));
    note(fs.unmount().map_err(|e| e.errno()));
    errs
}

/// The first block of each kind, found by its magic number.
fn find_blocks(img: &[u8], rep: &check::CheckReport) -> Vec<(&'static str, u64)> {
    // Each kind, its magic, and how check names the owner of a live block of it.
    let kinds: [(&str, u32, &str); 16] = [
        ("superblock", SB_MAGIC, "AG 0 headers"),
        ("AGF", AGF_MAGIC, "AG 0 headers"),
        ("AGI", AGI_MAGIC, "AG 0 headers"),
        ("AGFL", AGFL_MAGIC, "AG 0 headers"),
        ("free-space by-block B+tree", BNOBT_MAGIC, "free-space tree"),
        ("free-space by-size B+tree", CNTBT_MAGIC, "free-space tree"),
        ("inode B+tree", INOBT_MAGIC, "inode tree"),
        ("free-inode B+tree", FINOBT_MAGIC, "inode tree"),
        ("unlinked-inode B+tree", UNLINKBT_MAGIC, "inode tree"),
        ("inode cluster", INODE_MAGIC, "inode chunk"),
        ("extent B+tree", BMBT_MAGIC, "extent tree"),
        ("directory hash tree", DIRHASH_MAGIC, "directory index"),
        ("directory data", DIRDATA_MAGIC, "data of inode"),
        (
            "attribute index",
            ATTRBT_MAGIC,
            "attribute index node of inode",
        ),
        ("attribute leaf", ATTRLEAF_MAGIC, "attribute leaf of inode"),
        (
            "attribute remote value",
            ATTRRMT_MAGIC,
            "attribute remote value of inode",
        ),
    ];
    let blocks = img.len() / BLOCK_SIZE;
    let mut out = Vec::new();
    for (name, magic, owner) in kinds {
        // The root inode cluster holds the root directory, which every path needs; take
        // the last cluster, which holds the files made last.
        let mut found: Vec<u64> = (0..blocks as u64)
            .filter(|&b| get_u32(&img[b as usize * BLOCK_SIZE..], HDR_MAGIC) == magic)
            // Live ones only: a freed block (free space, on the AGFL) keeps its header, and
            // the log holds copies of blocks.
            .filter(|&b| rep.owner_of(b).is_some_and(|o| o.starts_with(owner)))
            .collect();
        if magic == INODE_MAGIC {
            found.reverse();
        }
        match found.first() {
            Some(&b) => out.push((name, b)),
            // A clean image has an empty unlinked-inode tree (unmount frees unlinked inodes),
            // and in a dirty one log replay rewrites the blocks of the last transactions;
            // tests/damage.rs and the fuzz targets reach it.
            None if magic == UNLINKBT_MAGIC => {}
            None => panic!("the image has no live {name} block"),
        }
    }
    out
}

#[test]
fn each_damaged_structure_is_refused_or_reported() {
    let img = build_image();
    let dev = Arc::new(Device::memfd(SIZE).unwrap());
    dev.write(0, &img);
    let clean = check::check(&dev).unwrap();
    assert!(clean.is_clean(), "{:?}", clean.problems);
    let mut cases = 0;
    let mut refused = 0;
    let mut failed_ops = 0;
    let mut unreached = Vec::new();
    for (kind, blk) in find_blocks(&img, &clean) {
        let at = blk as usize * BLOCK_SIZE;
        let damages: [(&str, Box<dyn Fn(&mut [u8])>); 4] = [
            ("header bit", Box::new(|b: &mut [u8]| b[HDR_BLKNO] ^= 0x10)),
            ("body bit", Box::new(|b: &mut [u8]| b[2000] ^= 0x01)),
            (
                "zeroed line",
                Box::new(|b: &mut [u8]| {
                    // The first line after the header that holds something (else the header).
                    let k = (1..BLOCK_SIZE / 64)
                        .find(|k| b[k * 64..k * 64 + 64].iter().any(|&x| x != 0))
                        .unwrap_or(0);
                    b[k * 64..k * 64 + 64].fill(0)
                }),
            ),
            ("zeroed block", Box::new(|b: &mut [u8]| b.fill(0))),
        ];
        for (how, damage) in &damages {
            cases += 1;
            let what = format!("{kind} (block {blk}), {how}");
            let mut bad = img.clone();
            damage(&mut bad[at..at + BLOCK_SIZE]);
            dev.write(0, &bad);
            // check names it (or, for the superblock, cannot read the image at all).
            match check::check(&dev) {
                Err(e) => assert_eq!(kind, "superblock", "{what}: check failed to run: {e}"),
                Ok(rep) => {
                    // A block by its number; an inode cluster also by its inodes' numbers
                    // (inode number = block * 8 + slot).
                    let names_it = |p: &String| {
                        p.contains(&blk.to_string())
                            || (kind == "inode cluster"
                                && (0..INODES_PER_BLOCK).any(|k| {
                                    p.contains(&format!("inode {}", blk * INODES_PER_BLOCK + k))
                                }))
                    };
                    assert!(
                        rep.problems.iter().any(names_it),
                        "{what}: check does not name block {blk}: {:?}",
                        rep.problems
                    );
                }
            }
            let r = catch_unwind(AssertUnwindSafe(|| {
                match Fs::mount(dev.clone(), &FsOptions::default()) {
                    Err(e) => {
                        assert!(!e.to_string().is_empty());
                        None
                    }
                    Ok(fs) => Some(exercise(&fs)),
                }
            }));
            match r {
                Err(_) => panic!("{what}: daxfs panicked"),
                Ok(None) => refused += 1,
                Ok(Some(errs)) => {
                    if errs.iter().any(|&e| e == EUCLEAN || e == libc::EIO) {
                        failed_ops += 1;
                    } else {
                        unreached.push(what.clone());
                    }
                    let odd: Vec<i32> = errs
                        .iter()
                        .copied()
                        .filter(|e| {
                            ![
                                EUCLEAN,
                                libc::EIO,
                                libc::ENOENT,
                                libc::ENOSPC,
                                libc::EISDIR,
                                libc::ENODATA,
                            ]
                            .contains(e)
                        })
                        .collect();
                    assert!(
                        odd.is_empty(),
                        "{what}: operations failed with errnos {odd:?}"
                    );
                }
            }
            repaired_then_used(&dev, &bad, &what);
        }
    }
    eprintln!(
        "{cases} damaged structures: {refused} refused at mount, {failed_ops} reported by a failing operation"
    );
    assert!(
        unreached.is_empty(),
        "damage used silently (mounted, every operation succeeded): {unreached:?}"
    );
}

/// Repair the damaged image `bad`; then check is clean, every operation of `exercise`
/// works (no EUCLEAN or EIO: what could not be saved is gone, not broken), and check is
/// clean after them.
fn repaired_then_used(dev: &Arc<Device>, bad: &[u8], what: &str) {
    dev.write(0, bad);
    let rep = repair::repair(dev, &RepairOptions::default())
        .unwrap_or_else(|e| panic!("{what}: repair failed: {e}"));
    let c = check::check(dev).unwrap();
    assert!(
        c.is_clean(),
        "{what}: check after repair: {:?}; repair did {:?}",
        c.problems,
        rep.actions
    );
    let fs = Fs::mount(dev.clone(), &FsOptions::default())
        .unwrap_or_else(|e| panic!("{what}: mount after repair: {e}"));
    let errs = exercise(&fs);
    assert!(
        !errs.iter().any(|&e| e == EUCLEAN || e == libc::EIO),
        "{what}: after repair, operations failed with {errs:?}"
    );
    drop(fs);
    let c = check::check(dev).unwrap();
    assert!(c.is_clean(), "{what}: check after use: {:?}", c.problems);
}
