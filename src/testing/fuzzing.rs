//! Fuzzing entry points (issue 3, part 5): one function per on-media parser, each taking
//! arbitrary bytes and driving the parser exactly as the filesystem does on media input.
//! Errors are the expected outcome for most inputs; a panic, a hang or an out-of-bounds
//! access is a bug. Every image a target mounts is then repaired (`daxfs repair`): a
//! repair that succeeds must leave check clean. The cargo-fuzz crate in `fuzz/` calls these (one binary per target),
//! `tests/fuzz_smoke.rs` feeds them seeded mutations on every test run, and
//! `examples/fuzz_seeds.rs` writes the seed corpora (`seeds`) from a real image.
//!
//! Most metadata is protected by a CRC32C that random mutations almost always break, so a
//! parser would never see anything but CRC failures. Each single-block target therefore
//! runs twice: on the bytes as given (CRC, magic and identity checked, as on the media),
//! then *resealed* (identity fields set to what the reader expects and the CRC recomputed),
//! which is what a block written wrongly but sealed correctly looks like.
//!
//! Input formats:
//! - superblock, agf, agi, agfl, btree_node, xattr_block: one 4 KiB block (shorter input is
//!   zero-padded, longer input is cut).
//! - inode: a 512-byte slot, or a whole 4 KiB inode cluster (8 slots).
//! - dir_block: up to 16 directory data blocks (the directory's blocks 0, 1, ...).
//! - dir_hash: the hash index root block, then up to 15 more blocks (index nodes and data
//!   blocks, placed by the block number in their headers).
//! - log_records: the log region from offset 0 (zero-padded to at least 1 MiB).
//! - mount_image: `DXSP` + records of (block number u32 LE, 4096 bytes) written over a
//!   zeroed 16 MiB device (bit 31 of the block number: write as is, otherwise reseal the
//!   block's CRCs and the log records' CRCs); or 16 MiB or more: the whole image; or
//!   anything else: bytes copied over offset 0 of a freshly made (clean, empty) image.
//!
//! The AG header, inode, superblock and log targets also write their (resealed) input
//! into a real populated image (`pristine`) and mount it, walk it, change a little,
//! unmount and run `check`: the headers' values only matter through what the code does
//! with them.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crate::btree::{self, BlockIo, Root, Tree, TreeOps};
use crate::check;
use crate::error::{FsError, Result};
use crate::format::*;
use crate::fs::{Cred, FileKind, Fs, FsOptions, RenameFlags, SetAttr, XattrFlags};
use crate::inode::bmap;
use crate::inode::extent_map::{Extent, ExtentMap};
use crate::inode::{DiskInode, InodeData};
use crate::log::mp::Mp;
use crate::log::trans;
use crate::mkfs::{self, MkfsOptions};
use crate::pmem::device::Device;
use crate::space::ialloc;
use crate::{dir, xattr};

/// A fuzz target: it takes any bytes and must not panic or hang.
pub type Target = fn(&[u8]);

/// Every target: name (the cargo-fuzz binary and corpus directory) and function.
pub const TARGETS: &[(&str, Target)] = &[
    ("superblock", superblock),
    ("agf", agf),
    ("agi", agi),
    ("agfl", agfl),
    ("btree_node", btree_node),
    ("inode", inode),
    ("dir_block", dir_block),
    ("dir_hash", dir_hash),
    ("xattr_block", xattr_block),
    ("log_records", log_records),
    ("mount_image", mount_image),
    ("dax_proto", dax_proto),
];

/// The uuid of every image made here, so that seeds written by one process match the
/// images another process builds.
pub const FUZZ_UUID: [u8; 16] = *b"daxfs-fuzz-uuid!";
/// Size of the images made here: the smallest daxfs.
pub const IMAGE_SIZE: u64 = MIN_BLOCKS * BLOCK_SIZE as u64;
const IMAGE_BLOCKS: u64 = MIN_BLOCKS;
/// Magic of the sparse-image input of `mount_image`.
pub const SPARSE_MAGIC: &[u8; 4] = b"DXSP";
const SPARSE_RAW: u32 = 1 << 31;

const BS: u64 = BLOCK_SIZE as u64;

// ---------------------------------------------------------------------------------------
// Helpers.

fn block_of(data: &[u8]) -> Box<Block> {
    let mut b = new_block();
    let n = data.len().min(BLOCK_SIZE);
    b[..n].copy_from_slice(&data[..n]);
    b
}

fn blocks_of(data: &[u8], max: usize) -> Vec<Box<Block>> {
    data.chunks(BLOCK_SIZE).take(max).map(block_of).collect()
}

fn is_header_magic(m: u32) -> bool {
    matches!(
        m,
        AGF_MAGIC
            | AGI_MAGIC
            | AGFL_MAGIC
            | BNOBT_MAGIC
            | CNTBT_MAGIC
            | INOBT_MAGIC
            | FINOBT_MAGIC
            | UNLINKBT_MAGIC
            | BMBT_MAGIC
            | DIRHASH_MAGIC
            | DIRDATA_MAGIC
            | ATTR_MAGIC
            | ATTRBT_MAGIC
            | ATTRLEAF_MAGIC
            | ATTRRMT_MAGIC
    )
}

/// Recompute a header block's CRC, keeping its LSN.
fn reseal_header(b: &mut [u8]) {
    let lsn = get_u64(b, HDR_LSN);
    seal_block(b, lsn);
}

/// Set a header block's identity (block number, owner, uuid) and reseal it.
fn restamp_header(b: &mut [u8], blkno: u64, owner: Option<u64>) {
    put_u64(b, HDR_BLKNO, blkno);
    if let Some(o) = owner {
        put_u64(b, HDR_OWNER, o);
    }
    b[HDR_UUID..HDR_UUID + 16].copy_from_slice(&FUZZ_UUID);
    reseal_header(b);
}

fn reseal_sb(b: &mut [u8]) {
    let crc = sb_crc(b);
    put_u32(b, SB_CRC, crc);
}

fn reseal_inode(slot: &mut [u8]) {
    let crc = crc_with_hole(&slot[..INODE_SIZE], DI_CRC);
    put_u32(slot, DI_CRC, crc);
}

/// Reseal whatever a block holds: a superblock, a header block or an inode cluster.
fn reseal_any(b: &mut [u8]) {
    let m = get_u32(b, 0);
    if m == SB_MAGIC {
        reseal_sb(b);
    } else if is_header_magic(m) {
        reseal_header(b);
    } else {
        for s in 0..INODES_PER_BLOCK as usize {
            let slot = &mut b[s * INODE_SIZE..(s + 1) * INODE_SIZE];
            if get_u32(slot, DI_MAGIC) == INODE_MAGIC {
                reseal_inode(slot);
            }
        }
    }
}

/// Recompute the CRC of each record on the chain from offset 0 of a log region (the chain
/// recovery follows), and of the chain from each record's tail offset.
fn reseal_log(log: &mut [u8]) {
    let seal_chain = |log: &mut [u8], mut pos: usize, tails: &mut Vec<usize>| {
        // Each record is at least LR_HDR bytes: bounded by len / LR_HDR steps.
        while pos < log.len() && log.len() - pos >= LR_HDR {
            let len = get_u32(log, pos + 16) as usize;
            if get_u32(log, pos) != LOG_MAGIC || len < LR_HDR || len > log.len() - pos {
                break;
            }
            let rec = &mut log[pos..pos + len];
            let crc = crc_with_hole(rec, 4);
            put_u32(rec, 4, crc);
            tails.push(get_u64(rec, LR_TAIL_OFF) as usize);
            pos += len;
        }
    };
    let mut tails = Vec::new();
    seal_chain(log, 0, &mut tails);
    let mut more = Vec::new();
    let n = log.len();
    for t in tails.into_iter().filter(|&t| t != 0 && t < n).take(4) {
        seal_chain(log, t, &mut more);
    }
}

/// Blocks in memory behind the `BlockIo` the parsers read through, verifying each block as
/// the device readers do (bounds, CRC, magic, block number, uuid, owner).
struct MemIo {
    uuid: [u8; 16],
    blocks: HashMap<u64, Box<Block>>,
}

impl MemIo {
    fn new(uuid: [u8; 16]) -> MemIo {
        MemIo {
            uuid,
            blocks: HashMap::new(),
        }
    }
}

impl BlockIo for MemIo {
    fn uuid(&self) -> [u8; 16] {
        self.uuid
    }
    fn read_meta(
        &mut self,
        blk: u64,
        magic: u32,
        owner: Option<u64>,
        what: &'static str,
    ) -> Result<Box<Block>> {
        let Some(b) = self.blocks.get(&blk) else {
            return Err(FsError::Corrupt(format!(
                "{what}: no block {blk} in the input"
            )));
        };
        verify_header(&b[..], magic, blk, owner, &self.uuid, what)?;
        Ok(b.clone())
    }
    fn write_meta(&mut self, blk: u64, _data: &Block) {
        panic!("fuzz harness: a read-only parser wrote block {blk}");
    }
    fn alloc_node(&mut self, tree: &Tree) -> Result<u64> {
        panic!(
            "fuzz harness: a read-only parser allocated a {} node",
            tree.ops.name
        );
    }
    fn free_node(&mut self, tree: &Tree, blk: u64) -> Result<()> {
        panic!(
            "fuzz harness: a read-only parser freed {} node {blk}",
            tree.ops.name
        );
    }
}

/// A mount context for parsers that need the geometry (extent validation): the pristine
/// image's superblock on a small memfd.
fn geometry_mp() -> &'static Mp {
    static MP: OnceLock<Mp> = OnceLock::new();
    MP.get_or_init(|| {
        let p = pristine();
        let dev = Arc::new(Device::memfd(BS * 64).expect("memfd"));
        Mp::new(dev, p.sb.clone(), true, &crate::space::SPACE)
    })
}

fn dir_inode(ino: u64, dirhash: Root, map: ExtentMap, entries: u64) -> InodeData {
    InodeData {
        di: DiskInode {
            ino,
            mode: libc::S_IFDIR | 0o755,
            nlink: 2,
            parent: ino,
            format: FMT_EXTENTS,
            dirhash,
            dir_entries: entries,
            size: map.mapped_blocks() * BS,
            ..Default::default()
        },
        map,
        dir_free: None,
        times_dirty: false,
        freed: false,
        charge: Default::default(),
    }
}

fn file_inode(ino: u64, attr_blk: u64) -> InodeData {
    InodeData {
        di: DiskInode {
            ino,
            mode: libc::S_IFREG | 0o644,
            nlink: 1,
            format: FMT_EXTENTS,
            attr_blk,
            ..Default::default()
        },
        map: ExtentMap::new(),
        dir_free: None,
        times_dirty: false,
        freed: false,
        charge: Default::default(),
    }
}

// ---------------------------------------------------------------------------------------
// Real images: the fresh one (mkfs only) and the populated one the seeds come from.

/// A sparse image: its non-zero blocks.
#[derive(Clone, Default)]
pub struct SparseImage {
    pub blocks: Vec<(u64, Box<Block>)>,
}

impl SparseImage {
    fn from_bytes(img: &[u8]) -> SparseImage {
        let blocks = img
            .chunks(BLOCK_SIZE)
            .enumerate()
            .filter(|(_, b)| b.iter().any(|&x| x != 0))
            .map(|(i, b)| (i as u64, block_of(b)))
            .collect();
        SparseImage { blocks }
    }
    fn from_device(dev: &Device) -> SparseImage {
        let mut img = vec![0u8; dev.len() as usize];
        dev.read(0, &mut img);
        SparseImage::from_bytes(&img)
    }
    pub fn get(&self, blk: u64) -> Option<&Block> {
        self.blocks
            .binary_search_by_key(&blk, |(b, _)| *b)
            .ok()
            .map(|i| &*self.blocks[i].1)
    }
    /// A memfd device holding this image, with `patch` applied on top.
    pub fn device(&self, patch: &mut dyn FnMut(&Device)) -> Arc<Device> {
        let dev = Device::memfd(IMAGE_SIZE).expect("memfd for a fuzz image");
        for (blk, b) in &self.blocks {
            dev.write(blk * BS, &b[..]);
        }
        patch(&dev);
        Arc::new(dev)
    }
    /// The `mount_image` input that rebuilds this image.
    pub fn to_sparse_input(&self) -> Vec<u8> {
        let mut out = SPARSE_MAGIC.to_vec();
        for (blk, b) in &self.blocks {
            out.extend_from_slice(&(*blk as u32).to_le_bytes());
            out.extend_from_slice(&b[..]);
        }
        out
    }
}

/// The images the targets patch and the seeds come from.
pub struct Pristine {
    /// mkfs, mount, unmount: clean and empty.
    pub fresh: SparseImage,
    /// Populated and cleanly unmounted (log zeroed).
    pub clean: SparseImage,
    /// `clean` mounted again with a few more operations, captured without unmounting: its
    /// log holds records to replay and one open file is on the unlinked list.
    pub dirty: SparseImage,
    pub sb: Superblock,
    /// Inodes of the populated image worth patching: root, file, big directory, big file
    /// (bmbt), symlinks, the file with xattrs, a fifo.
    pub inodes: Vec<u64>,
    /// The big directory (its hash index has interior nodes).
    pub big_dir: u64,
    pub big_file: u64,
    pub xattr_file: u64,
}

fn cred() -> Cred {
    Cred {
        uid: 0,
        gid: 0,
        pid: 1,
        groups: vec![],
        cap_linux_immutable: None,
    }
}

/// Rewrite every uuid in a clean image (superblocks, header blocks, inodes) to
/// `FUZZ_UUID` and zero the log, so images of different processes agree.
fn restamp_image(img: &mut [u8], sb: &Superblock) {
    let old = sb.uuid;
    for (i, b) in img.chunks_mut(BLOCK_SIZE).enumerate() {
        let m = get_u32(b, 0);
        if (i as u64).is_multiple_of(sb.ag_blocks) && m == SB_MAGIC {
            b[16..32].copy_from_slice(&FUZZ_UUID);
            reseal_sb(b);
        } else if is_header_magic(m) && b[HDR_UUID..HDR_UUID + 16] == old {
            b[HDR_UUID..HDR_UUID + 16].copy_from_slice(&FUZZ_UUID);
            reseal_header(b);
        } else {
            for s in 0..INODES_PER_BLOCK as usize {
                let slot = &mut b[s * INODE_SIZE..(s + 1) * INODE_SIZE];
                if get_u32(slot, DI_MAGIC) == INODE_MAGIC && slot[DI_UUID..DI_UUID + 16] == old {
                    slot[DI_UUID..DI_UUID + 16].copy_from_slice(&FUZZ_UUID);
                    reseal_inode(slot);
                }
            }
        }
    }
    let log = (sb.log_start * BS) as usize..((sb.log_start + sb.log_blocks) * BS) as usize;
    img[log].fill(0);
}

/// Unmount `fs` and take its image, restamped, with its superblock.
fn unmount_and_capture(fs: Arc<Fs>, dev: &Device) -> (SparseImage, Superblock) {
    fs.unmount().expect("unmount");
    drop(fs);
    let mut img = device_bytes(dev);
    let sb = read_sb(&img);
    restamp_image(&mut img, &sb);
    (SparseImage::from_bytes(&img), sb)
}

fn device_bytes(dev: &Device) -> Vec<u8> {
    let mut img = vec![0u8; dev.len() as usize];
    dev.read(0, &mut img);
    img
}

fn read_sb(img: &[u8]) -> Superblock {
    Superblock::decode(&img[..BLOCK_SIZE], (img.len() / BLOCK_SIZE) as u64).expect("superblock")
}

fn build_pristine() -> Pristine {
    let opts = FsOptions::default();
    let c = cred();
    // The fresh image.
    let dev = Arc::new(Device::memfd(IMAGE_SIZE).expect("memfd"));
    mkfs::mkfs(&dev, &MkfsOptions::default()).expect("mkfs");
    let fs = Fs::mount(dev.clone(), &opts).expect("mount fresh");
    let (fresh, _) = unmount_and_capture(fs, &dev);

    // Populate it.
    let dev = fresh.device(&mut |_| {});
    let fs = Fs::mount(dev.clone(), &opts).expect("mount for populating");
    let root = fs.root_ino();
    let reg = libc::S_IFREG | 0o644;
    let file = fs.mknod(root, b"file", reg, 0, &c).unwrap().ino;
    fs.write(file, 0, b"hello, fuzzer\n", false).unwrap();
    let sub = fs.mkdir(root, b"sub", 0o755, &c).unwrap().ino;
    let deep = fs.mkdir(sub, b"deep", 0o700, &c).unwrap().ino;
    fs.mknod(deep, b"leaf", reg, 0, &c).unwrap();
    // A directory whose hash index needs interior nodes (more than 252 names per leaf):
    // hard links to one file, so that it costs no inodes.
    let big_dir = fs.mkdir(root, b"bigdir", 0o755, &c).unwrap().ino;
    let target = fs.mknod(big_dir, b"target", reg, 0, &c).unwrap().ino;
    for i in 0..600 {
        fs.link(target, big_dir, format!("link-{i:04}").as_bytes())
            .unwrap();
    }
    for i in (0..600).step_by(7) {
        fs.unlink(big_dir, format!("link-{i:04}").as_bytes())
            .unwrap();
    }
    // A file with an extent B+tree of two levels: single unwritten blocks with holes
    // between them (no two extents merge), plus a few written blocks.
    let big_file = fs.mknod(root, b"bigfile", reg, 0, &c).unwrap().ino;
    for i in 0..400u64 {
        fs.fallocate(big_file, i * 2 * BS, BS, 0).unwrap();
    }
    for i in 0..4u64 {
        fs.write(big_file, (1000 + i * 3) * BS, &[b'x'; 100], false)
            .unwrap();
    }
    // Extended attributes: several names, one large value.
    let xattr_file = fs.mknod(root, b"xattrs", reg, 0, &c).unwrap().ino;
    for (n, v) in [
        (&b"user.a"[..], &b"1"[..]),
        (b"user.longer-name", b"some value"),
        (b"trusted.t", b""),
        (b"security.s", &[7u8; 300]),
    ] {
        fs.setxattr(xattr_file, n, v, XattrFlags::default())
            .unwrap();
    }
    fs.setxattr(sub, b"user.dir", b"on a directory", XattrFlags::default())
        .unwrap();
    let short = fs.symlink(root, b"short", b"file", &c).unwrap().ino;
    let long = fs.symlink(root, b"long", &[b'y'; 600], &c).unwrap().ino;
    let fifo = fs
        .mknod(root, b"fifo", libc::S_IFIFO | 0o600, 0, &c)
        .unwrap()
        .ino;
    let (clean, sb_now) = unmount_and_capture(fs, &dev);

    // A few operations more, captured before unmount: records in the log to replay, and an
    // open unlinked file for the next mount to free.
    let dev = clean.device(&mut |_| {});
    let fs = Fs::mount(dev.clone(), &opts).expect("mount clean");
    let root = fs.root_ino();
    let new = fs.mknod(root, b"new", reg, 0, &c).unwrap().ino;
    fs.write(new, 0, &[b'n'; 5000], false).unwrap();
    fs.setxattr(new, b"user.new", b"v", XattrFlags::default())
        .unwrap();
    fs.rename(root, b"file", sub, b"moved", RenameFlags::default())
        .unwrap();
    fs.unlink(big_dir, b"link-0001").unwrap();
    let orphan = fs.mknod(root, b"orphan", reg, 0, &c).unwrap().ino;
    fs.write(orphan, 0, &[b'o'; 10], false).unwrap();
    let _fh = fs.open(orphan, libc::O_RDWR).unwrap();
    fs.unlink(root, b"orphan").unwrap();
    fs.setattr(
        big_file,
        &SetAttr {
            size: Some(600 * BS),
            ..Default::default()
        },
        &c,
    )
    .unwrap();
    let dirty = SparseImage::from_device(&dev);
    drop(fs);

    Pristine {
        fresh,
        clean,
        dirty,
        sb: sb_now_with_uuid(sb_now),
        inodes: vec![
            root, file, sub, big_dir, big_file, xattr_file, short, long, fifo,
        ],
        big_dir,
        big_file,
        xattr_file,
    }
}

fn sb_now_with_uuid(mut sb: Superblock) -> Superblock {
    sb.uuid = FUZZ_UUID;
    sb
}

/// The images, built once per process (a few hundred milliseconds).
pub fn pristine() -> &'static Pristine {
    static P: OnceLock<Pristine> = OnceLock::new();
    P.get_or_init(build_pristine)
}

// ---------------------------------------------------------------------------------------
// Mount, walk, change, unmount, check.

/// Read everything reachable, within a budget; errors are fine.
fn walk(fs: &Fs, ino: u64, depth: usize, budget: &mut usize) {
    if depth > 6 || *budget == 0 {
        return;
    }
    let mut names = Vec::new();
    let _ = fs.readdir(ino, 0, &mut |e| {
        names.push(e.name.clone());
        names.len() >= 24
    });
    if names.len() > 3 {
        // Resume from a cookie in the middle, as a second getdents call does.
        let _ = fs.readdir(ino, 5, &mut |_| false);
    }
    for name in names {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        if name == b"." || name == b".." {
            continue;
        }
        let Ok(a) = fs.lookup(ino, &name) else {
            continue;
        };
        let _ = fs.getattr(a.ino);
        let _ = fs.listxattr(a.ino);
        let _ = fs.getxattr(a.ino, b"user.a");
        match a.kind {
            FileKind::Dir => walk(fs, a.ino, depth + 1, budget),
            FileKind::Symlink => {
                let _ = fs.readlink(a.ino);
            }
            FileKind::File => {
                let _ = fs.read(a.ino, 0, 1 << 16, |b| b.len());
                let _ = fs.read(a.ino, 1000 * BS, 8192, |b| b.len());
                let _ = fs.lseek(a.ino, 0, libc::SEEK_HOLE);
                let _ = fs.lseek(a.ino, 0, libc::SEEK_DATA);
            }
            _ => {}
        }
    }
}

/// What a mount of a damaged image may meet: a read-only mount, a read-write mount (log
/// recovery, freeing unlinked inodes), a walk, a few changes, unmount, then check.
fn exercise(dev: &Arc<Device>) {
    let ro = FsOptions {
        read_only: true,
        ..Default::default()
    };
    if let Ok(fs) = Fs::mount(dev.clone(), &ro) {
        let mut budget = 40;
        walk(&fs, fs.root_ino(), 0, &mut budget);
        let _ = fs.unmount();
    }
    if let Ok(fs) = Fs::mount(dev.clone(), &FsOptions::default()) {
        let mut budget = 120;
        let root = fs.root_ino();
        walk(&fs, root, 0, &mut budget);
        let _ = fs.statfs();
        let c = cred();
        if let Ok(a) = fs.mknod(root, b"fuzz-new", libc::S_IFREG | 0o644, 0, &c) {
            let _ = fs.write(a.ino, 0, &[1u8; 9000], false);
            let _ = fs.setxattr(a.ino, b"user.f", b"z", XattrFlags::default());
            let _ = fs.fallocate(a.ino, 20 * BS, 3 * BS, 0);
            let _ = fs.rename(
                root,
                b"fuzz-new",
                root,
                b"fuzz-renamed",
                RenameFlags::default(),
            );
        }
        let _ = fs.mkdir(root, b"fuzz-dir", 0o755, &c);
        for name in [&b"bigfile"[..], b"xattrs", b"sub"] {
            if let Ok(a) = fs.lookup(root, name) {
                match a.kind {
                    FileKind::File => {
                        let _ = fs.write(a.ino, 3 * BS, &[2u8; 100], false);
                        let _ = fs.setattr(
                            a.ino,
                            &SetAttr {
                                size: Some(100 * BS),
                                ..Default::default()
                            },
                            &c,
                        );
                        let _ = fs.removexattr(a.ino, b"user.a");
                    }
                    FileKind::Dir => {
                        let _ = fs.mknod(a.ino, b"fuzz-child", libc::S_IFREG | 0o600, 0, &c);
                    }
                    _ => {}
                }
            }
        }
        if let Ok(a) = fs.lookup(root, b"bigdir") {
            let _ = fs.unlink(a.ino, b"link-0002");
            let _ = fs.link(a.ino, root, b"fuzz-link");
        }
        let _ = fs.unlink(root, b"short");
        let _ = fs.unmount();
    }
    let _ = check::check(dev);
    // Repair of whatever is left: never a panic, and what it repairs checks clean.
    if let Ok(rep) = crate::repair::repair(dev, &Default::default()) {
        let c = check::check(dev).expect("repair leaves a superblock that reads");
        assert!(
            c.is_clean(),
            "check after repair: {:?}; repair did {:?}",
            c.problems,
            rep.actions
        );
    }
}

/// Write `block` (resealed with the identity a reader expects at `blk`) into the clean
/// populated image, then mount and exercise it.
fn patch_and_exercise(blk: u64, block: &Block, owner: Option<u64>) {
    let mut b = Box::new(*block);
    restamp_header(&mut b[..], blk, owner);
    let dev = pristine().clean.device(&mut |d| d.write(blk * BS, &b[..]));
    exercise(&dev);
}

// ---------------------------------------------------------------------------------------
// The targets.

/// The superblock: `Superblock::decode` against several device sizes, the geometry
/// invariants the rest of the code relies on, an encode/decode round trip, then a mount of
/// the populated image with this superblock (CRC resealed, uuid kept as the image's).
pub fn superblock(data: &[u8]) {
    let raw = block_of(data);
    let mut sealed = raw.clone();
    reseal_sb(&mut sealed[..]);
    for b in [&raw, &sealed] {
        let total_field = get_u64(&b[..], 32);
        for dev_blocks in [IMAGE_BLOCKS, 1 << 18, total_field, u64::MAX / BS] {
            let Ok(sb) = Superblock::decode(&b[..], dev_blocks) else {
                continue;
            };
            // What mount, recovery and check assume of a superblock that decoded.
            assert!(sb.total_blocks <= dev_blocks && sb.total_blocks >= MIN_BLOCKS);
            assert!(sb.ag_count >= 1);
            let log_end = sb.log_start.checked_add(sb.log_blocks);
            assert!(
                log_end.is_some_and(|e| e <= sb.total_blocks && e <= sb.ag_blocks),
                "log {}+{} outside AG 0 of {} blocks",
                sb.log_start,
                sb.log_blocks,
                sb.ag_blocks
            );
            for agno in [0, sb.ag_count / 2, sb.ag_count - 1] {
                let len = sb.ag_len(agno);
                assert!(len > 0 && len <= sb.ag_blocks);
            }
            let mut again = new_block();
            sb.encode(get_u32(&b[..], 124), &mut again[..]);
            let back = Superblock::decode(&again[..], dev_blocks)
                .expect("a superblock that decoded encodes to one that decodes");
            assert_eq!(back, sb, "superblock encode/decode round trip");
        }
    }
    // Mount the populated image with this superblock.
    let mut b = sealed;
    b[16..32].copy_from_slice(&FUZZ_UUID);
    reseal_sb(&mut b[..]);
    if Superblock::decode(&b[..], IMAGE_BLOCKS).is_ok() {
        let dev = pristine().clean.device(&mut |d| {
            // The state word is written by a separate atomic store: keep the input's.
            d.write(0, &b[..]);
        });
        exercise(&dev);
    }
}

fn ag_header(data: &[u8], magic: u32, blk: u64) {
    let raw = block_of(data);
    // The read check alone, as the device reader does it.
    let _ = verify_header(&raw[..], magic, blk, Some(0), &FUZZ_UUID, "AG header");
    let _ = Agf::decode(&raw[..]);
    let _ = Agi::decode(&raw[..]);
    patch_and_exercise(blk, &raw, Some(0));
}

/// The AGF of AG 0, written into the populated image: mount (counters), allocation and
/// freeing (free-space trees from its roots), unmount, check.
pub fn agf(data: &[u8]) {
    ag_header(data, AGF_MAGIC, AGF_BLOCK);
}

/// The AGI of AG 0, written into the populated image: inode counts, the inode, free-inode
/// and unlinked trees from its roots (mount frees what the unlinked tree names).
pub fn agi(data: &[u8]) {
    ag_header(data, AGI_MAGIC, AGI_BLOCK);
}

/// The AGFL of AG 0, written into the populated image: its count and entries are used when
/// the free-space trees split or shrink.
pub fn agfl(data: &[u8]) {
    ag_header(data, AGFL_MAGIC, AGFL_BLOCK);
}

static TREES: [&TreeOps; 8] = [
    &crate::space::alloc::BNOBT,
    &crate::space::alloc::CNTBT,
    &ialloc::INOBT,
    &ialloc::FINOBT,
    &ialloc::UNLINKBT,
    &bmap::BMBT,
    &dir::DIRHASH,
    &xattr::ATTRBT,
];

fn tree_by_magic(magic: u32, fallback: u8) -> &'static TreeOps {
    TREES
        .iter()
        .find(|t| t.magic == magic)
        .copied()
        .unwrap_or(TREES[fallback as usize % TREES.len()])
}

/// A B+tree node as the root of its tree: the node checks of every read (level, record
/// count, key order, child pointers), lookups, iteration both ways, the tree check, and
/// what each tree's owner does with the records (extent maps, unlinked lists).
pub fn btree_node(data: &[u8]) {
    let raw = block_of(data);
    let ops = tree_by_magic(get_u32(&raw[..], HDR_MAGIC), raw[BT_RECS]);
    let blkno = get_u64(&raw[..], HDR_BLKNO);
    let owner = get_u64(&raw[..], HDR_OWNER);
    let mut sealed = raw.clone();
    restamp_header(&mut sealed[..], blkno, None);
    for b in [raw, sealed] {
        let mut io = MemIo::new(FUZZ_UUID);
        io.blocks.insert(blkno, b.clone());
        let tree = Tree { ops, owner };
        let level = get_u16(&b[..], BT_LEVEL);
        let root = Root {
            blk: blkno,
            level: level.min(u8::MAX as u16) as u8,
        };
        let mut keys = Vec::new();
        let _ = btree::check(&mut io, &tree, &root, &mut |_| {}, &mut |k, _| {
            if keys.len() < 8 {
                keys.push(k)
            }
        });
        let _ = btree::count(&mut io, &tree, &root);
        let probe = get_uint(&b[..], BT_RECS, 16);
        for k in keys.iter().copied().chain([0, probe, u128::MAX]) {
            let _ = btree::get(&mut io, &tree, &root, k);
            let _ = btree::lookup_ge(&mut io, &tree, &root, k);
            let _ = btree::lookup_le(&mut io, &tree, &root, k);
            let _ = btree::walk(&mut io, &tree, &root, k, &mut |_, _| Ok(true));
        }
        if ops.magic == BMBT_MAGIC {
            let di = DiskInode {
                ino: owner,
                mode: libc::S_IFREG | 0o644,
                format: FMT_BTREE,
                bmbt: root,
                ..Default::default()
            };
            if let Ok(map) = bmap::load_map(&mut io, geometry_mp(), &di, Vec::new()) {
                check_map(&map);
            }
        }
        if ops.magic == UNLINKBT_MAGIC {
            let agi = Agi {
                agno: owner as u32,
                unlinked_root: root.blk,
                unlinked_level: root.level,
                ..Default::default()
            };
            let _ = ialloc::unlinked_list(&mut io, &agi);
        }
        if ops.magic == DIRHASH_MAGIC {
            let d = dir_inode(owner, root, ExtentMap::new(), 0);
            let _ = dir::lookup(&mut io, &d, b"link-0003");
            let mut problems = Vec::new();
            let _ = dir::check(&mut io, &d, &mut problems);
        }
    }
}

/// What an extent map loaded from the media promises the rest of the code.
fn check_map(map: &ExtentMap) {
    let mp = geometry_mp();
    let mut prev_end = 0;
    for e in map.iter() {
        assert!(bmap::extent_valid(mp, e), "invalid extent accepted: {e:?}");
        assert!(e.fileoff >= prev_end, "overlapping extents accepted");
        prev_end = e.end();
    }
    let _ = map.next_hole(0);
    let _ = map.next_data(0);
    let _ = map.range(0, u64::MAX / 2);
}

/// An inode slot (or a cluster of 8): `DiskInode::decode` as `iget` runs it, the extent map
/// from its inline extents (`load_map`), an encode/decode round trip, then the slot written
/// over one of the populated image's inodes and the image mounted and used.
pub fn inode(data: &[u8]) {
    let slots: Vec<[u8; INODE_SIZE]> = if data.len() >= BLOCK_SIZE {
        let b = block_of(data);
        (0..INODES_PER_BLOCK as usize)
            .map(|s| b[s * INODE_SIZE..(s + 1) * INODE_SIZE].try_into().unwrap())
            .collect()
    } else {
        let mut s = [0u8; INODE_SIZE];
        let n = data.len().min(INODE_SIZE);
        s[..n].copy_from_slice(&data[..n]);
        vec![s]
    };
    let mut first_good: Option<[u8; INODE_SIZE]> = None;
    for raw in &slots {
        let ino = get_u64(raw, DI_INO);
        let mut sealed = *raw;
        sealed[DI_UUID..DI_UUID + 16].copy_from_slice(&FUZZ_UUID);
        reseal_inode(&mut sealed);
        for s in [raw, &sealed] {
            if DiskInode::slot_is_free(s) {
                continue;
            }
            let Ok((di, inline)) = DiskInode::decode(s, ino, &FUZZ_UUID) else {
                continue;
            };
            let _ = di.kind();
            let mut io = MemIo::new(FUZZ_UUID);
            let Ok(map) = bmap::load_map(&mut io, geometry_mp(), &di, inline) else {
                continue;
            };
            check_map(&map);
            let _ = di.nblocks(&map);
            if di.is_dir() && di.format == FMT_LOCAL {
                short_form_directory(&di, &map);
            }
            if di.format != FMT_BTREE {
                let mut again = [0u8; INODE_SIZE];
                di.encode(&map, &FUZZ_UUID, &mut again);
                let (back, _) = DiskInode::decode(&again, ino, &FUZZ_UUID)
                    .expect("an inode that decoded encodes to one that decodes");
                assert_eq!(back, di, "inode encode/decode round trip");
            }
            if first_good.is_none() {
                first_good = Some(sealed);
            }
        }
    }
    // Into the image, over one of its inodes (chosen by the slot's own number).
    let Some(mut slot) = first_good else {
        return;
    };
    let p = pristine();
    let target = p.inodes[(get_u64(&slot, DI_INO) % p.inodes.len() as u64) as usize];
    put_u64(&mut slot, DI_INO, target);
    reseal_inode(&mut slot);
    let at = target / INODES_PER_BLOCK * BS + (target % INODES_PER_BLOCK) * INODE_SIZE as u64;
    let dev = p.clean.device(&mut |d| d.write(at, &slot));
    exercise(&dev);
}

/// A short-form directory (entries in the inode): readdir, resumed from a cookie, lookup
/// of each name and of an absent one, check.
fn short_form_directory(di: &DiskInode, map: &ExtentMap) {
    let mut io = MemIo::new(FUZZ_UUID);
    let d = InodeData {
        di: di.clone(),
        map: map.clone(),
        dir_free: None,
        times_dirty: false,
        freed: false,
        charge: Default::default(),
    };
    let mut names = Vec::new();
    let mut cookies = Vec::new();
    let _ = dir::list(&mut io, &d, 0, &mut |dataptr, _ino, _ft, name| {
        names.push(name.to_vec());
        cookies.push(dataptr);
        false
    });
    if let Some(&c) = cookies.get(cookies.len() / 2) {
        let _ = dir::list(&mut io, &d, c + 1, &mut |_, _, _, _| false);
    }
    for name in names.iter().chain([&b"not-there".to_vec()]) {
        let _ = dir::lookup(&mut io, &d, name);
    }
    let _ = dir::check(&mut io, &d, &mut Vec::new());
}

/// A directory made of the given blocks: `dir::list` (readdir, also resuming from a
/// cookie), `dir::lookup` of every name found and of absent names, and `dir::check`.
fn directory(blocks: Vec<Box<Block>>, hash_root: Option<Root>, owner: u64) {
    let mut io = MemIo::new(FUZZ_UUID);
    let mut exts = Vec::new();
    let mut entries = 0u64;
    for b in blocks {
        let blk = get_u64(&b[..], HDR_BLKNO);
        if get_u32(&b[..], HDR_MAGIC) == DIRDATA_MAGIC {
            entries += get_u16(&b[..], DD_NENTRIES) as u64;
            exts.push(Extent {
                fileoff: exts.len() as u64,
                startblock: blk,
                len: 1,
                unwritten: false,
            });
        }
        io.blocks.insert(blk, b);
    }
    let Ok(map) = ExtentMap::from_extents(exts) else {
        return;
    };
    let d = dir_inode(owner, hash_root.unwrap_or_default(), map, entries);
    let mut names = Vec::new();
    let mut cookies = Vec::new();
    let _ = dir::list(&mut io, &d, 0, &mut |dataptr, _ino, _ft, name| {
        names.push(name.to_vec());
        cookies.push(dataptr);
        names.len() >= 4096
    });
    if let Some(&c) = cookies.get(cookies.len() / 2) {
        let _ = dir::list(&mut io, &d, c + 1, &mut |_, _, _, _| false);
    }
    let _ = dir::list(&mut io, &d, (1 << BLOCK_SHIFT) | 8, &mut |_, _, _, _| false);
    for name in names.iter().take(64) {
        let _ = dir::lookup(&mut io, &d, name);
    }
    for name in [&b"not-there"[..], b"link-0003", b"a"] {
        let _ = dir::lookup(&mut io, &d, name);
    }
    let mut problems = Vec::new();
    let _ = dir::check(&mut io, &d, &mut problems);
}

fn dir_blocks(data: &[u8]) -> (Vec<Box<Block>>, u64) {
    let blocks = blocks_of(data, 16);
    let owner = blocks
        .first()
        .map(|b| get_u64(&b[..], HDR_OWNER))
        .unwrap_or(0);
    (blocks, owner)
}

fn resealed(blocks: &[Box<Block>], owner: u64) -> Vec<Box<Block>> {
    blocks
        .iter()
        .map(|b| {
            let mut b = b.clone();
            let blk = get_u64(&b[..], HDR_BLKNO);
            restamp_header(&mut b[..], blk, Some(owner));
            b
        })
        .collect()
}

/// Directory data blocks (the directory's blocks in order): entry walking and validation
/// through readdir, lookup (without an index: nothing found) and check.
pub fn dir_block(data: &[u8]) {
    let (blocks, owner) = dir_blocks(data);
    if blocks.is_empty() {
        return;
    }
    let sealed = resealed(&blocks, owner);
    directory(blocks, None, owner);
    directory(sealed, None, owner);
}

/// A directory hash index: the first block is the index root, the rest are index nodes and
/// data blocks; lookups go through the index to the entries, check compares both.
pub fn dir_hash(data: &[u8]) {
    let (blocks, owner) = dir_blocks(data);
    let Some(first) = blocks.first() else {
        return;
    };
    let root = Root {
        blk: get_u64(&first[..], HDR_BLKNO),
        level: get_u16(&first[..], BT_LEVEL).min(u8::MAX as u16) as u8,
    };
    let sealed = resealed(&blocks, owner);
    directory(blocks, Some(root), owner);
    directory(sealed, Some(root), owner);
}

/// An attribute-tree leaf or remote value block: decoded as getxattr, listxattr and check
/// decode them (`xattr::read_leaf`, `xattr::remote_chain`).
fn xattr_tree_block(io: &mut MemIo, magic: u32, owner: u64, blkno: u64) {
    if magic == ATTRLEAF_MAGIC {
        let Ok(entries) = xattr::read_leaf(io, owner, blkno) else {
            return;
        };
        for e in &entries {
            assert!(!e.name.is_empty() && e.vlen <= xattr::VALUE_MAX);
            let _ = xattr::remote_chain(io, owner, e, &mut |_| {});
        }
    } else if blkno != 0 {
        // (An entry's remote pointer 0 means a local value: block 0, the superblock, is
        // never a remote value block.)
        let len = get_u32(&io.blocks[&blkno][..], AR_LEN) as usize;
        let e = xattr::Entry {
            ns: 1,
            name: b"v".to_vec(),
            vlen: len.min(xattr::VALUE_MAX),
            remote: blkno,
            local: Vec::new(),
        };
        let mut got = 0;
        if xattr::remote_chain(io, owner, &e, &mut |b| got += b.len()).is_ok() {
            assert_eq!(
                got, e.vlen,
                "a remote chain read gave other than its length"
            );
        }
    }
}

/// An inode's attribute block: `xattr::load` (list, get) as getxattr and check run it,
/// or an attribute-tree leaf or remote value block (`xattr_tree_block`).
pub fn xattr_block(data: &[u8]) {
    let raw = block_of(data);
    let blkno = get_u64(&raw[..], HDR_BLKNO);
    let owner = get_u64(&raw[..], HDR_OWNER);
    let mut sealed = raw.clone();
    restamp_header(&mut sealed[..], blkno, None);
    let magic = get_u32(&raw[..], HDR_MAGIC);
    if magic == ATTRLEAF_MAGIC || magic == ATTRRMT_MAGIC {
        for b in [raw, sealed] {
            let mut io = MemIo::new(FUZZ_UUID);
            io.blocks.insert(blkno, b);
            xattr_tree_block(&mut io, magic, owner, blkno);
        }
        return;
    }
    for b in [raw, sealed] {
        let mut io = MemIo::new(FUZZ_UUID);
        io.blocks.insert(blkno, b);
        let d = file_inode(owner, blkno);
        let Ok(attrs) = xattr::load(&mut io, &d) else {
            continue;
        };
        assert!(
            xattr::fits(&attrs),
            "a loaded attribute set does not fit a block"
        );
        let _ = xattr::list(&mut io, &d);
        for x in attrs.iter().take(16) {
            let prefix: &[u8] = match x.ns {
                1 => b"user.",
                2 => b"trusted.",
                _ => b"security.",
            };
            let full = [prefix, &x.name[..]].concat();
            let v = xattr::get(&mut io, &d, &full);
            assert!(
                v.is_ok() || x.name.len() > 255,
                "listed attribute not found"
            );
        }
        let _ = xattr::get(&mut io, &d, b"user.not-there");
    }
}

/// The log region: the record reader and validator recovery and check use
/// (`trans::records_to_replay`), on the bytes as given and with the records' CRCs
/// recomputed; what it returns must be safe to apply. Then the resealed log written into
/// the populated image and mounted (recovery replays it).
pub fn log_records(data: &[u8]) {
    let log_len =
        (data.len().div_ceil(BLOCK_SIZE) * BLOCK_SIZE).max(LOG_MIN_BLOCKS as usize * BLOCK_SIZE);
    let mut log = vec![0u8; log_len];
    log[..data.len()].copy_from_slice(data);
    let mut sealed = log.clone();
    reseal_log(&mut sealed);
    let first_lsn = if data.len() >= 16 {
        get_u64(data, 8)
    } else {
        0
    };
    for l in [&log, &sealed] {
        let read = |pos: u64, buf: &mut [u8]| {
            let p = pos as usize;
            buf.copy_from_slice(&l[p..p + buf.len()]);
        };
        for (lsn_base, total) in [(0, IMAGE_BLOCKS), (first_lsn & !(1 << 63), 1 << 20)] {
            let Ok(recs) = trans::records_to_replay(&read, log_len as u64, lsn_base, total) else {
                continue;
            };
            let mut prev: Option<u64> = None;
            for r in &recs {
                assert!(
                    r.lsn >= lsn_base,
                    "replaying a record older than the LSN base"
                );
                assert!(prev.is_none_or(|p| r.lsn == p + 1), "records out of order");
                prev = Some(r.lsn);
                for (blk, off, bytes) in &r.regions {
                    assert!(*blk < total && off + bytes.len() <= BLOCK_SIZE);
                }
            }
        }
    }
    // Into the populated image's log, then mount: recovery replays what validates.
    let p = pristine();
    let (start, len) = (p.sb.log_start * BS, (p.sb.log_blocks * BS) as usize);
    let n = sealed.len().min(len);
    let dev = p.clean.device(&mut |d| d.write(start, &sealed[..n]));
    exercise(&dev);
}

/// A whole image (see the module doc for the three input forms): mount (log recovery,
/// unlinked inodes), walk, change, unmount, check.
pub fn mount_image(data: &[u8]) {
    let dev = if let Some(rest) = data.strip_prefix(&SPARSE_MAGIC[..]) {
        let dev = Device::memfd(IMAGE_SIZE).expect("memfd");
        let mut patched = Vec::new();
        let mut log_touched = false;
        for rec in rest.chunks(4 + BLOCK_SIZE) {
            if rec.len() < 4 {
                break;
            }
            let tag = u32::from_le_bytes(rec[..4].try_into().unwrap());
            let blk = (tag & !SPARSE_RAW) as u64 % IMAGE_BLOCKS;
            let bytes = &rec[4..];
            dev.write(blk * BS, bytes);
            if tag & SPARSE_RAW == 0 {
                patched.push(blk);
            }
        }
        // Reseal what was written (unless marked raw), and the log records when any of
        // the patched blocks lies in the log the superblock names.
        let mut sb0 = new_block();
        dev.read(0, &mut sb0[..]);
        let (ls, lb) = (get_u64(&sb0[..], 56), get_u64(&sb0[..], 64));
        for &blk in &patched {
            if ls.checked_add(lb).is_some_and(|e| e <= IMAGE_BLOCKS) && (ls..ls + lb).contains(&blk)
            {
                log_touched = true;
                continue;
            }
            let mut b = new_block();
            dev.read(blk * BS, &mut b[..]);
            reseal_any(&mut b[..]);
            dev.write(blk * BS, &b[..]);
        }
        if log_touched {
            let mut log = vec![0u8; (lb * BS) as usize];
            dev.read(ls * BS, &mut log);
            reseal_log(&mut log);
            dev.write(ls * BS, &log);
        }
        Arc::new(dev)
    } else if data.len() as u64 >= IMAGE_SIZE {
        let size = (data.len() as u64).min(4 * IMAGE_SIZE) & !(BS - 1);
        let dev = Device::memfd(size).expect("memfd");
        dev.write(0, &data[..size as usize]);
        Arc::new(dev)
    } else {
        pristine().fresh.device(&mut |d| d.write(0, data))
    };
    exercise(&dev);
}

/// The direct-access control protocol's decoder (daxfs-client `proto::decode`): one
/// datagram as the daemon receives it. Whatever decodes must re-encode to the same bytes
/// (the format has one encoding per message), so nothing is accepted that the daemon
/// would misread.
pub fn dax_proto(data: &[u8]) {
    use daxfs_client::proto;
    if let Ok((seq, m)) = proto::decode(data) {
        let again = m.encode(seq);
        assert_eq!(again, data, "decoded {m:?} re-encodes differently");
    }
}

// ---------------------------------------------------------------------------------------
// Seeds.

/// Seed inputs for every target, cut from the real images in `pristine`: each metadata
/// block kind for its target, the log region, and the whole images for `mount_image`.
pub fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let p = pristine();
    let mut by: HashMap<&'static str, Vec<Vec<u8>>> = HashMap::new();
    let mut add = |t: &'static str, v: Vec<u8>| by.entry(t).or_default().push(v);
    let img = &p.dirty;
    let clean = &p.clean;
    add("superblock", clean.get(0).unwrap().to_vec());
    add("superblock", img.get(0).unwrap().to_vec());
    add("agf", clean.get(AGF_BLOCK).unwrap().to_vec());
    add("agi", clean.get(AGI_BLOCK).unwrap().to_vec());
    add("agi", img.get(AGI_BLOCK).unwrap().to_vec());
    add("agfl", clean.get(AGFL_BLOCK).unwrap().to_vec());
    let mut dir_blocks: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
    let mut hash_blocks: HashMap<u64, Vec<(u16, Vec<u8>)>> = HashMap::new();
    let mut inode_blocks = 0;
    for (blk, b) in &clean.blocks {
        let (blk, m) = (*blk, get_u32(&b[..], 0));
        if blk < AG_FIRST_FREE || (p.sb.log_start..p.sb.log_start + p.sb.log_blocks).contains(&blk)
        {
            continue;
        }
        let owner = get_u64(&b[..], HDR_OWNER);
        match m {
            DIRDATA_MAGIC => {
                dir_blocks.entry(owner).or_default().push(b.to_vec());
                add("dir_block", b.to_vec());
            }
            DIRHASH_MAGIC => {
                hash_blocks
                    .entry(owner)
                    .or_default()
                    .push((get_u16(&b[..], BT_LEVEL), b.to_vec()));
                add("btree_node", b.to_vec());
            }
            ATTR_MAGIC | ATTRLEAF_MAGIC | ATTRRMT_MAGIC => add("xattr_block", b.to_vec()),
            m if TREES.iter().any(|t| t.magic == m) => add("btree_node", b.to_vec()),
            INODE_MAGIC if inode_blocks < 2 => {
                inode_blocks += 1;
                add("inode", b.to_vec());
            }
            _ => {}
        }
    }
    for &ino in &p.inodes {
        let blk = ino / INODES_PER_BLOCK;
        if let Some(b) = clean.get(blk) {
            let off = (ino % INODES_PER_BLOCK) as usize * INODE_SIZE;
            add("inode", b[off..off + INODE_SIZE].to_vec());
        }
    }
    // A whole directory for dir_block (its data blocks in file order is what the seed
    // image gives: they were allocated in order), and index root first for dir_hash.
    if let Some(v) = dir_blocks.get(&p.big_dir) {
        add("dir_block", v.concat());
    }
    for (owner, mut hb) in hash_blocks {
        hb.sort_by_key(|(level, _)| std::cmp::Reverse(*level));
        let mut input: Vec<u8> = hb.into_iter().flat_map(|(_, b)| b).collect();
        if let Some(d) = dir_blocks.get(&owner) {
            for b in d.iter().take(16 - input.len() / BLOCK_SIZE) {
                input.extend_from_slice(b);
            }
        }
        input.truncate(16 * BLOCK_SIZE);
        add("dir_hash", input);
    }
    // The log: the used part of the dirty image's log region.
    let mut log = Vec::new();
    for blk in p.sb.log_start..p.sb.log_start + p.sb.log_blocks {
        match img.get(blk) {
            Some(b) => log.extend_from_slice(&b[..]),
            None => log.extend_from_slice(&[0u8; BLOCK_SIZE]),
        }
    }
    let used = log.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1);
    log.truncate(used.next_multiple_of(8));
    add("log_records", log);
    add("mount_image", p.dirty.to_sparse_input());
    add("mount_image", p.clean.to_sparse_input());
    add("mount_image", p.fresh.to_sparse_input());
    let mut head = Vec::new();
    for blk in 0..8 {
        head.extend_from_slice(p.fresh.get(blk).map_or(&[0u8; BLOCK_SIZE][..], |b| &b[..]));
    }
    add("mount_image", head);
    for (i, m) in daxfs_client::proto::examples().into_iter().enumerate() {
        add("dax_proto", m.encode(i as u32));
    }
    TARGETS
        .iter()
        .map(|(name, _)| (*name, by.remove(name).unwrap_or_default()))
        .collect()
}
