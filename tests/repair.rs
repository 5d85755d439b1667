//! `daxfs repair` (issue 12 item 4): the corrupted-image suite's damage (each kind of live
//! metadata block, four ways), then repair. Afterwards check is clean, the filesystem
//! mounts, takes changes and checks clean again, and every file whose own inode and
//! data were not damaged reads back what was written (at its path, or in lost+found when
//! the directory block that named it was lost). Repair of a clean image changes no byte;
//! `-n` changes no byte and reports the damage.

use std::collections::BTreeMap;
use std::sync::Arc;

use daxfs::check;
use daxfs::format::*;
use daxfs::fs::{Cred, FileKind, Fs, FsOptions, XattrFlags};
use daxfs::mkfs::{self, MkfsOptions};
use daxfs::pmem::device::Device;
use daxfs::repair::{self, RepairOptions};

mod common;

const SIZE: u64 = 16 << 20;

/// What a file held when the image was made: inode -> content.
type Model = BTreeMap<u64, Vec<u8>>;

fn content(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|k| (k as u64 * 31 + i * 7) as u8).collect()
}

/// A real image with every kind of metadata block and files with known content.
fn build_image() -> (Vec<u8>, Model) {
    let dev = Arc::new(Device::memfd(SIZE).unwrap());
    mkfs::mkfs(&dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone(), &FsOptions::default()).unwrap();
    let c = Cred::default();
    let r = fs.root_ino();
    let mut model = Model::new();
    // A directory big enough for a hash tree and several data blocks; each file small.
    let d = fs.mkdir(r, b"big", 0o755, &c).unwrap().ino;
    for i in 0..600u64 {
        let name = format!("entry-with-a-longish-name-{i:05}");
        let f = fs
            .mknod(d, name.as_bytes(), libc::S_IFREG | 0o644, 0, &c)
            .unwrap()
            .ino;
        if i % 10 == 0 {
            let data = content(i, 100 + i as usize);
            fs.write(f, 0, &data, false).unwrap();
            model.insert(f, data);
        } else {
            model.insert(f, Vec::new());
        }
    }
    // A file with an extent B+tree: many discontiguous extents.
    let f = fs
        .mknod(r, b"frag", libc::S_IFREG | 0o644, 0, &c)
        .unwrap()
        .ino;
    let mut frag = Vec::new();
    for j in 0..400u64 {
        let block = [j as u8 | 1; 4096];
        fs.write(f, j * 8192, &block, false).unwrap();
        frag.resize(j as usize * 8192, 0);
        frag.extend_from_slice(&block);
    }
    model.insert(f, frag);
    // An xattr block.
    let x = fs
        .mknod(r, b"xattrs", libc::S_IFREG | 0o644, 0, &c)
        .unwrap()
        .ino;
    for k in 0..20 {
        fs.setxattr(
            x,
            format!("user.attr{k}").as_bytes(),
            &[b'v'; 100],
            XattrFlags::default(),
        )
        .unwrap();
    }
    let data = content(x, 5000);
    fs.write(x, 0, &data, false).unwrap();
    model.insert(x, data);
    // An attribute tree of several leaves and remote values (attribute-tree images).
    let t = fs
        .mknod(r, b"xattr-tree", libc::S_IFREG | 0o644, 0, &c)
        .unwrap()
        .ino;
    for k in 0..200 {
        let v = content(k, if k % 50 == 0 { 20_000 } else { 60 });
        fs.setxattr(
            t,
            format!("user.tree{k}").as_bytes(),
            &v,
            XattrFlags::default(),
        )
        .unwrap();
    }
    model.insert(t, Vec::new());
    // Files in a subdirectory tree.
    let sub = fs.mkdir(r, b"sub", 0o755, &c).unwrap().ino;
    let deeper = fs.mkdir(sub, b"deeper", 0o755, &c).unwrap().ino;
    for (i, dir) in [(1u64, sub), (2, deeper), (3, deeper)] {
        let f = fs
            .mknod(
                dir,
                format!("f{i}").as_bytes(),
                libc::S_IFREG | 0o644,
                0,
                &c,
            )
            .unwrap()
            .ino;
        let data = content(i, 3 * 4096 + 17);
        fs.write(f, 0, &data, false).unwrap();
        model.insert(f, data);
    }
    // Free space in pieces (free-space trees with more than a root's worth).
    for i in (0..600).step_by(3) {
        let name = format!("entry-with-a-longish-name-{i:05}");
        let ino = fs.lookup(d, name.as_bytes()).unwrap().ino;
        fs.unlink(d, name.as_bytes()).unwrap();
        model.remove(&ino);
    }
    fs.unmount().unwrap();
    drop(fs);
    let mut img = vec![0u8; SIZE as usize];
    dev.read(0, &mut img);
    (img, model)
}

/// Every regular file reachable from the root: inode -> content.
fn read_all(fs: &Fs) -> Model {
    let mut out = Model::new();
    let mut stack = vec![fs.root_ino()];
    while let Some(dir) = stack.pop() {
        let mut names = Vec::new();
        fs.readdir(dir, 0, &mut |e| {
            names.push(e.name.clone());
            false
        })
        .unwrap();
        for n in names
            .iter()
            .filter(|n| n.as_slice() != b"." && n.as_slice() != b"..")
        {
            let a = fs.lookup(dir, n).unwrap();
            match a.kind {
                FileKind::Dir => stack.push(a.ino),
                FileKind::File => {
                    let data = fs.read(a.ino, 0, a.size as u32, |b| b.to_vec()).unwrap();
                    assert!(
                        out.insert(a.ino, data).is_none(),
                        "inode {} named twice",
                        a.ino
                    );
                }
                _ => {}
            }
        }
    }
    out
}

/// The first live block of each kind, found by its magic number and check's owner.
fn find_blocks(img: &[u8], rep: &check::CheckReport) -> Vec<(&'static str, u64)> {
    let kinds: [(&str, u32, &str); 15] = [
        ("superblock", SB_MAGIC, "AG 0 headers"),
        ("AGF", AGF_MAGIC, "AG 0 headers"),
        ("AGI", AGI_MAGIC, "AG 0 headers"),
        ("AGFL", AGFL_MAGIC, "AG 0 headers"),
        ("free-space by-block B+tree", BNOBT_MAGIC, "free-space tree"),
        ("free-space by-size B+tree", CNTBT_MAGIC, "free-space tree"),
        ("inode B+tree", INOBT_MAGIC, "inode tree"),
        ("free-inode B+tree", FINOBT_MAGIC, "inode tree"),
        ("inode cluster", INODE_MAGIC, "inode chunk"),
        ("extent B+tree", BMBT_MAGIC, "extent tree"),
        ("directory hash tree", DIRHASH_MAGIC, "directory index"),
        ("directory data", DIRDATA_MAGIC, "data of inode"),
        (
            "attribute index node",
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
        let mut found: Vec<u64> = (0..blocks as u64)
            .filter(|&b| get_u32(&img[b as usize * BLOCK_SIZE..], HDR_MAGIC) == magic)
            .filter(|&b| rep.owner_of(b).is_some_and(|o| o.starts_with(owner)))
            .collect();
        // The root's cluster holds the root, which repair cannot rebuild: the last one.
        if magic == INODE_MAGIC {
            found.reverse();
        }
        out.push((
            name,
            *found
                .first()
                .unwrap_or_else(|| panic!("no live {name} block")),
        ));
    }
    out
}

type Damage = Box<dyn Fn(&mut [u8])>;

fn damages() -> [(&'static str, Damage); 4] {
    [
        ("header bit", Box::new(|b: &mut [u8]| b[HDR_BLKNO] ^= 0x10)),
        ("body bit", Box::new(|b: &mut [u8]| b[2000] ^= 0x01)),
        (
            "zeroed line",
            Box::new(|b: &mut [u8]| {
                let k = (1..BLOCK_SIZE / 64)
                    .find(|k| b[k * 64..k * 64 + 64].iter().any(|&x| x != 0))
                    .unwrap_or(0);
                b[k * 64..k * 64 + 64].fill(0)
            }),
        ),
        ("zeroed block", Box::new(|b: &mut [u8]| b.fill(0))),
    ]
}

/// The inodes whose own content a damaged block `blk` may take with it.
fn damaged_files(kind: &str, blk: u64, owner: &str) -> Vec<u64> {
    let of = |p: &str| {
        owner
            .strip_prefix(p)
            .and_then(|n| n.trim().parse::<u64>().ok())
    };
    match kind {
        "inode cluster" => (0..INODES_PER_BLOCK)
            .map(|k| blk * INODES_PER_BLOCK + k)
            .collect(),
        "extent B+tree" => of("extent tree of inode").into_iter().collect(),
        _ => Vec::new(),
    }
}

#[test]
fn repair_after_each_damage_leaves_check_clean_and_files_intact() {
    let (img, model) = build_image();
    let dev = Arc::new(Device::memfd(SIZE).unwrap());
    dev.write(0, &img);
    let clean = check::check(&dev).unwrap();
    assert!(clean.is_clean(), "{:?}", clean.problems);
    let mut cases = 0;
    for (kind, blk) in find_blocks(&img, &clean) {
        let owner = clean.owner_of(blk).unwrap().to_string();
        let lost = damaged_files(kind, blk, &owner);
        let at = blk as usize * BLOCK_SIZE;
        for (how, damage) in &damages() {
            cases += 1;
            let what = format!("{kind} (block {blk}), {how}");
            let mut bad = img.clone();
            damage(&mut bad[at..at + BLOCK_SIZE]);
            dev.write(0, &bad);

            // -n: reports, writes nothing.
            let rep = repair::repair(
                &dev,
                &RepairOptions {
                    no_modify: true,
                    ..Default::default()
                },
            )
            .unwrap_or_else(|e| panic!("{what}: repair -n failed: {e}"));
            // Damage check cannot see (a flipped bit in a free inode slot) is nothing to
            // repair either.
            let seen = check::check(&dev).map_or(true, |c| !c.is_clean());
            assert_eq!(rep.changed, seen, "{what}: -n: {:?}", rep.actions);
            assert_eq!(
                rep.actions.is_empty(),
                !seen,
                "{what}: -n: {:?}",
                rep.actions
            );
            let mut after = vec![0u8; SIZE as usize];
            dev.read(0, &mut after);
            assert!(after == bad, "{what}: repair -n changed the image");

            let rep = repair::repair(&dev, &RepairOptions::default())
                .unwrap_or_else(|e| panic!("{what}: repair failed: {e}"));
            let c = check::check(&dev).unwrap_or_else(|e| panic!("{what}: check: {e}"));
            assert!(
                c.is_clean(),
                "{what}: check after repair: {:?}\nrepair did: {:?}",
                c.problems,
                rep.actions
            );
            let fs = Fs::mount(dev.clone(), &FsOptions::default())
                .unwrap_or_else(|e| panic!("{what}: mount after repair: {e}"));
            let got = read_all(&fs);
            for (ino, data) in &model {
                if lost.contains(ino) {
                    continue;
                }
                let g = got.get(ino).unwrap_or_else(|| {
                    panic!(
                        "{what}: undamaged file {ino} is gone; repair did: {:?}",
                        rep.actions
                    )
                });
                assert!(g == data, "{what}: file {ino} reads back different");
            }
            // The repaired filesystem takes changes and stays consistent.
            let c0 = Cred::default();
            let f = fs
                .mknod(
                    fs.root_ino(),
                    b"after-repair",
                    libc::S_IFREG | 0o644,
                    0,
                    &c0,
                )
                .unwrap();
            fs.write(f.ino, 0, &[5u8; 20000], false).unwrap();
            fs.mkdir(fs.root_ino(), b"dir-after-repair", 0o755, &c0)
                .unwrap();
            fs.unmount().unwrap();
            drop(fs);
            let c = check::check(&dev).unwrap();
            assert!(c.is_clean(), "{what}: check after use: {:?}", c.problems);
            // A second repair finds nothing to do.
            let again = repair::repair(&dev, &RepairOptions::default()).unwrap();
            assert!(!again.changed, "{what}: second repair: {:?}", again.actions);
        }
    }
    assert_eq!(cases, 15 * 4);
}

#[test]
fn repair_of_a_clean_image_changes_nothing() {
    let (img, _) = build_image();
    let dev = Arc::new(Device::memfd(SIZE).unwrap());
    dev.write(0, &img);
    for no_modify in [true, false] {
        let rep = repair::repair(
            &dev,
            &RepairOptions {
                no_modify,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(!rep.changed && rep.actions.is_empty(), "{:?}", rep.actions);
        let mut after = vec![0u8; SIZE as usize];
        dev.read(0, &mut after);
        assert!(
            after == img,
            "repair (no_modify {no_modify}) of a clean image changed it"
        );
    }
}

#[test]
fn orphans_go_to_lost_found_and_link_counts_are_fixed() {
    // One bit flipped in the big directory's first data block: its entries are lost,
    // so the files they named have no name; repair moves them to a new lost+found.
    let (img, model) = build_image();
    let dev = Arc::new(Device::memfd(SIZE).unwrap());
    dev.write(0, &img);
    let clean = check::check(&dev).unwrap();
    let big = {
        let fs = Fs::mount(dev.clone(), &FsOptions::default()).unwrap();
        let b = fs.lookup(fs.root_ino(), b"big").unwrap().ino;
        fs.unmount().unwrap();
        b
    };
    dev.write(0, &img);
    let blk = (0..(SIZE / BLOCK_SIZE as u64))
        .find(|&b| clean.owner_of(b) == Some(&format!("data of inode {big}")))
        .unwrap();
    let mut bad = img.clone();
    bad[blk as usize * BLOCK_SIZE + 100] ^= 0x40;
    dev.write(0, &bad);
    let rep = repair::repair(&dev, &RepairOptions::default()).unwrap();
    assert!(
        rep.actions.iter().any(|a| a.contains("lost+found created")),
        "{:?}",
        rep.actions
    );
    let moved = rep
        .actions
        .iter()
        .filter(|a| a.contains("moved to lost+found"))
        .count();
    assert!(moved > 0, "{:?}", rep.actions);
    assert!(check::check(&dev).unwrap().is_clean());
    let fs = Fs::mount(dev.clone(), &FsOptions::default()).unwrap();
    let lf = fs.lookup(fs.root_ino(), b"lost+found").unwrap();
    assert_eq!(lf.kind, FileKind::Dir);
    let mut n = 0;
    fs.readdir(lf.ino, 0, &mut |e| {
        if e.name != b"." && e.name != b".." {
            n += 1;
            // Named by inode number, content intact.
            assert_eq!(String::from_utf8_lossy(&e.name), e.ino.to_string());
        }
        false
    })
    .unwrap();
    assert_eq!(n, moved);
    let got = read_all(&fs);
    for (ino, data) in &model {
        assert_eq!(got.get(ino), Some(data), "file {ino}");
    }
    for ino in got.keys() {
        assert_eq!(fs.getattr(*ino).unwrap().nlink, 1);
    }
    fs.unmount().unwrap();
}

#[test]
fn cli_repair_dry_run_then_repair() {
    let (img, _) = build_image();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("img");
    let dev = Arc::new(Device::memfd(SIZE).unwrap());
    dev.write(0, &img);
    let clean = check::check(&dev).unwrap();
    let agf = (0..(SIZE / BLOCK_SIZE as u64))
        .find(|&b| get_u32(&img[b as usize * BLOCK_SIZE..], HDR_MAGIC) == AGF_MAGIC)
        .unwrap();
    assert!(clean.owner_of(agf).is_some());
    let mut bad = img.clone();
    bad[agf as usize * BLOCK_SIZE + 2000] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    let run = |args: &[&str]| {
        let o = common::daxfs(args);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let p = path.to_str().unwrap();
    let (code, out, err) = run(&["repair", "-n", p]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("AGF 0"), "{out}");
    assert!(std::fs::read(&path).unwrap() == bad, "-n wrote");
    // No progress bar when stderr is not a terminal.
    assert!(!err.contains('\r'), "{err:?}");
    let (code, out, err) = run(&["repair", p]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, _) = run(&["check", p]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out, err) = run(&["repair", "-n", p]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("clean"), "{out}");
}

/// A crash image (taken while mounted): the log holds records. Repair replays them first,
/// as mount would, then leaves the log empty and the filesystem clean, with every file.
#[test]
fn a_dirty_log_is_replayed_first() {
    let dev = Arc::new(Device::memfd(SIZE).unwrap());
    mkfs::mkfs(&dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone(), &FsOptions::default()).unwrap();
    let c = Cred::default();
    let mut model = Model::new();
    let d = fs.mkdir(fs.root_ino(), b"d", 0o755, &c).unwrap().ino;
    for i in 0..40u64 {
        let f = fs
            .mknod(d, format!("f{i}").as_bytes(), libc::S_IFREG | 0o644, 0, &c)
            .unwrap()
            .ino;
        let data = content(i, 3000);
        fs.write(f, 0, &data, false).unwrap();
        model.insert(f, data);
    }
    let mut img = vec![0u8; SIZE as usize];
    dev.read(0, &mut img);
    fs.unmount().unwrap();
    drop(fs);
    let crashed = Arc::new(Device::memfd(SIZE).unwrap());
    crashed.write(0, &img);
    let info = check::info(&crashed).unwrap();
    assert!(info.contains("awaits replay"), "{info}");
    let rep = repair::repair(&crashed, &RepairOptions::default()).unwrap();
    assert!(rep.log_replayed && rep.changed, "{:?}", rep.actions);
    let info = check::info(&crashed).unwrap();
    assert!(
        info.contains("nothing to replay") && info.contains("cleanly unmounted"),
        "{info}"
    );
    let c = check::check(&crashed).unwrap();
    assert!(c.is_clean(), "{:?}", c.problems);
    let fs = Fs::mount(crashed.clone(), &FsOptions::default()).unwrap();
    assert_eq!(read_all(&fs), model);
    fs.unmount().unwrap();
}

/// The root inode damaged: repair makes a new root, and what the old one named (its
/// directories with everything under them, its files) is found in lost+found.
#[test]
fn a_lost_root_is_made_anew_and_its_children_found() {
    let (img, model) = build_image();
    let dev = Arc::new(Device::memfd(SIZE).unwrap());
    dev.write(0, &img);
    let sb = Superblock::decode(&img[..BLOCK_SIZE], SIZE / BLOCK_SIZE as u64).unwrap();
    let at = sb.root_ino as usize * INODE_SIZE;
    let mut bad = img.clone();
    bad[at + DI_MODE] ^= 0x01;
    dev.write(0, &bad);
    assert!(!check::check(&dev).unwrap().is_clean());
    let rep = repair::repair(&dev, &RepairOptions::default()).unwrap();
    assert!(
        rep.actions.iter().any(|a| a.contains("made anew")),
        "{:?}",
        rep.actions
    );
    let c = check::check(&dev).unwrap();
    assert!(
        c.is_clean(),
        "{:?}; repair did {:?}",
        c.problems,
        rep.actions
    );
    let fs = Fs::mount(dev.clone(), &FsOptions::default()).unwrap();
    let mut top = Vec::new();
    fs.readdir(fs.root_ino(), 0, &mut |e| {
        top.push(e.name.clone());
        false
    })
    .unwrap();
    assert_eq!(
        top,
        vec![b".".to_vec(), b"..".to_vec(), b"lost+found".to_vec()]
    );
    assert_eq!(read_all(&fs), model);
    fs.unmount().unwrap();
}

/// Found by the fuzz targets (log_records, after repair joined `exercise`): an inode whose
/// extents name the same blocks twice is cleared, and the blocks it had claimed before the
/// second claim go back to free space (they leaked: check after repair named them).
#[test]
fn an_inode_claiming_its_blocks_twice_is_cleared_without_a_leak() {
    use daxfs::inode::DiskInode;
    use daxfs::inode::extent_map::{Extent, ExtentMap};
    let (img, _) = build_image();
    let dev = Arc::new(Device::memfd(SIZE).unwrap());
    dev.write(0, &img);
    let ino = {
        let fs = Fs::mount(dev.clone(), &FsOptions::default()).unwrap();
        let sub = fs.lookup(fs.root_ino(), b"sub").unwrap().ino;
        let f = fs.lookup(sub, b"f1").unwrap().ino;
        fs.unmount().unwrap();
        f
    };
    let sb = Superblock::decode(&img[..BLOCK_SIZE], SIZE / BLOCK_SIZE as u64).unwrap();
    let at = ino as usize * INODE_SIZE;
    let (mut di, exts) = DiskInode::decode(&img[at..at + INODE_SIZE], ino, &sb.uuid).unwrap();
    assert_eq!(exts.len(), 1, "{exts:?}");
    let e = exts[0];
    let twice = Extent {
        fileoff: e.fileoff + e.len + 10,
        ..e
    };
    let map = ExtentMap::from_extents([e, twice]).unwrap();
    di.size += (e.len + 10) * BLOCK_SIZE as u64 * 2;
    let mut bad = img.clone();
    di.encode(&map, &sb.uuid, &mut bad[at..at + INODE_SIZE]);
    dev.write(0, &bad);
    assert!(!check::check(&dev).unwrap().is_clean());
    let rep = repair::repair(&dev, &RepairOptions::default()).unwrap();
    assert!(
        rep.actions
            .iter()
            .any(|a| a.contains(&format!("inode {ino}: claims blocks"))),
        "{:?}",
        rep.actions
    );
    let c = check::check(&dev).unwrap();
    assert!(c.is_clean(), "{:?}", c.problems);
}

/// Found by the fuzz targets: a superblock that verifies but lost the short-form feature
/// bit while directories are in short form. Repair sets the bit again (in every copy)
/// rather than leaving check's complaint.
#[test]
fn a_lost_short_form_feature_bit_is_set_again() {
    let (img, model) = build_image();
    let mut bad = img.clone();
    let incompat = get_u64(&bad, 96);
    assert_ne!(incompat & INCOMPAT_SHORTFORM_DIRS, 0);
    put_u64(&mut bad, 96, incompat & !INCOMPAT_SHORTFORM_DIRS);
    let crc = sb_crc(&bad[..BLOCK_SIZE]);
    put_u32(&mut bad, SB_CRC, crc);
    let dev = Arc::new(Device::memfd(SIZE).unwrap());
    dev.write(0, &bad);
    let c = check::check(&dev).unwrap();
    assert!(
        c.problems
            .iter()
            .any(|p| p.contains("short form on a filesystem without")),
        "{:?}",
        c.problems
    );
    let rep = repair::repair(&dev, &RepairOptions::default()).unwrap();
    assert!(
        rep.actions.iter().any(|a| a.contains("feature set")),
        "{:?}",
        rep.actions
    );
    let c = check::check(&dev).unwrap();
    assert!(c.is_clean(), "{:?}", c.problems);
    let mut b = vec![0u8; BLOCK_SIZE];
    dev.read(0, &mut b);
    assert_ne!(get_u64(&b, 96) & INCOMPAT_SHORTFORM_DIRS, 0);
    let fs = Fs::mount(dev.clone(), &FsOptions::default()).unwrap();
    assert_eq!(read_all(&fs), model);
    fs.unmount().unwrap();
}

/// A power cut during repair: every crash image (before each fence of repair's writes,
/// sampled per fence) is repaired by running repair again, to a clean check with every
/// file. The image repaired is a crash image (its log needs replay) with AGF 0 damaged.
#[test]
fn a_crash_during_repair_is_repaired_by_running_it_again() {
    use daxfs::pmem::device::Persistence;
    use daxfs::testing::crashsim::{self, Limits, Rng};
    let dev = Arc::new(Device::memfd(SIZE).unwrap());
    mkfs::mkfs(&dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone(), &FsOptions::default()).unwrap();
    let c = Cred::default();
    let mut model = Model::new();
    for i in 0..30u64 {
        let f = fs
            .mknod(
                fs.root_ino(),
                format!("f{i}").as_bytes(),
                libc::S_IFREG | 0o644,
                0,
                &c,
            )
            .unwrap()
            .ino;
        let data = content(i, 5000);
        fs.write(f, 0, &data, false).unwrap();
        model.insert(f, data);
    }
    let mut base = vec![0u8; SIZE as usize];
    dev.read(0, &mut base);
    fs.unmount().unwrap();
    drop(fs);
    base[AGF_BLOCK as usize * BLOCK_SIZE + 2000] ^= 1;
    let traced = Device::traced(SIZE, Persistence::Dax).unwrap();
    traced.write(0, &base);
    traced.persist_all();
    let _ = traced.take_trace();
    let rep = repair::repair(&traced, &RepairOptions::default()).unwrap();
    assert!(rep.log_replayed, "{:?}", rep.actions);
    let trace = traced.take_trace();
    let crashed = Arc::new(Device::memfd(SIZE).unwrap());
    let mut rng = Rng::new(7);
    let limits = Limits {
        exhaustive: 4,
        samples: 3,
    };
    let (mut images, mut failure) = (0, None);
    crashsim::for_each_point(&base, &trace, 0, &mut |p| {
        for ch in p.choices(limits, &mut rng) {
            if failure.is_some() {
                return;
            }
            p.build(&ch, &crashed);
            images += 1;
            let again = repair::repair(&crashed, &RepairOptions::default());
            let ok = again.is_ok()
                && check::check(&crashed).is_ok_and(|c| c.is_clean())
                && Fs::mount(crashed.clone(), &FsOptions::default()).is_ok_and(|fs| {
                    let same = read_all(&fs) == model;
                    fs.unmount().is_ok() && same
                });
            if !ok {
                failure = Some(format!(
                    "crash before trace op {} ({}): repair again: {:?}",
                    p.pos,
                    p.describe(&ch),
                    again.map(|r| r.actions)
                ));
            }
        }
    });
    assert!(failure.is_none(), "{}", failure.unwrap());
    assert!(images >= 5, "{images} crash images");
    eprintln!("{images} crash images during repair, each repaired again");
}
