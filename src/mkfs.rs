//! mkfs: lay out a fresh filesystem.
//!
//! Per AG: superblock copy, AGF, AGI, AGFL, the roots of the two free-space trees, the
//! blocks pre-loaded on the AGFL, and (AG 0 only) the log; the rest is one free extent.
//! The free-space trees are built with the same B+tree code the filesystem runs, through a
//! `BlockIo` that writes straight to the device; the root directory is then created by an
//! ordinary transaction. Free blocks are not zeroed: nothing ever exposes a block before it
//! was written or zeroed, so mkfs of a large device stays fast.

use std::path::Path;
use std::sync::Arc;

use crate::btree::{self, BlockIo, Root, Tree};
use crate::error::{FsError, Result};
use crate::format::*;
use crate::inode::extent_map::ExtentMap;
use crate::inode::{DiskInode, Inode};
use crate::log::mp::Mp;
use crate::pmem::device::Device;
use crate::space::alloc::{self, AGFL_MIN};

#[derive(Debug, Clone, Default)]
pub struct MkfsOptions {
    pub label: Option<String>,
    /// Overwrite an existing daxfs image.
    pub force: bool,
    /// Number of AGs (default: 4 up to 4 GiB, then one per GiB, as XFS does).
    pub ag_count: Option<u32>,
    /// Leave an image file sparse: its blocks are allocated as the filesystem uses them
    /// (device.rs), instead of all at mkfs.
    pub sparse: bool,
}

/// Default AG size: 1 GiB.
const AG_DEFAULT_BLOCKS: u64 = 1 << 18;
/// Smaller devices get this many AGs, so that work in different directories takes
/// different AG locks (XFS's mkfs makes 4 as well).
const AG_COUNT_SMALL: u64 = 4;
/// The last AG is dropped when smaller than this.
const AG_LAST_MIN_BLOCKS: u64 = 256;

/// Writes metadata straight to the device (mkfs only: nothing is live yet).
struct MkfsIo<'a> {
    dev: &'a Device,
    uuid: [u8; 16],
    next_free: u64,
}

impl BlockIo for MkfsIo<'_> {
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
        let mut b = new_block();
        self.dev.read(blk * BLOCK_SIZE as u64, &mut b[..]);
        verify_header(&b[..], magic, blk, owner, &self.uuid, what)?;
        Ok(b)
    }
    fn write_meta(&mut self, blk: u64, data: &Block) {
        let mut b = Box::new(*data);
        seal_block(&mut b[..], 0);
        self.dev.write(blk * BLOCK_SIZE as u64, &b[..]);
    }
    fn alloc_node(&mut self, _tree: &Tree) -> Result<u64> {
        self.next_free += 1;
        Ok(self.next_free - 1)
    }
    fn free_node(&mut self, tree: &Tree, blk: u64) -> Result<()> {
        unreachable!("mkfs never frees a {} node ({blk})", tree.ops.name)
    }
}

fn random_uuid() -> [u8; 16] {
    let mut u = [0u8; 16];
    // SAFETY: writes at most 16 bytes into `u`.
    let n = unsafe { libc::getrandom(u.as_mut_ptr() as *mut _, 16, 0) };
    if n != 16 {
        let t = crate::inode::now();
        u[..8].copy_from_slice(&t.sec.to_le_bytes());
        u[8..12].copy_from_slice(&t.nsec.to_le_bytes());
        u[12..].copy_from_slice(&std::process::id().to_le_bytes());
    }
    u
}

/// Does `dev` already hold a daxfs superblock?
pub fn holds_daxfs(dev: &Device) -> bool {
    if dev.len() < BLOCK_SIZE as u64 {
        return false;
    }
    let mut b = [0u8; 8];
    dev.read(0, &mut b);
    get_u32(&b, 0) == SB_MAGIC
}

/// What a target holds, when it is something mkfs must not overwrite without --force
/// (as mkfs.xfs refuses "an existing filesystem"): the name of a filesystem, swap area,
/// encrypted volume or partition table found by its signature, like libblkid, from a
/// table of well-known magic numbers. None: nothing known (zeros, random data, a fresh
/// file), and mkfs proceeds, as mkfs.xfs does.
pub fn foreign_signature(path: &Path) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).ok()?;
    // Everything the table looks at lies in the first 68 KiB.
    let mut head = vec![0u8; 69632];
    let mut n = 0;
    while n < head.len() {
        match f.read_at(&mut head[n..], n as u64) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    head.truncate(n);
    signature_in(&head).map(str::to_string)
}

/// The signature table (offsets and magics as in libblkid's probers).
fn signature_in(h: &[u8]) -> Option<&'static str> {
    let at = |off: usize, magic: &[u8]| h.get(off..off + magic.len()) == Some(magic);
    let le32 = |off: usize| {
        h.get(off..off + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    if at(0, b"LUKS\xba\xbe") {
        return Some("LUKS encrypted volume");
    }
    if at(0, b"XFSB") {
        return Some("xfs filesystem");
    }
    if at(1080, &[0x53, 0xef]) {
        // ext2/3/4 superblock at 1024: which one, by its feature flags.
        let (compat, incompat) = (le32(1024 + 0x5c)?, le32(1024 + 0x60)?);
        const EXT4_INCOMPAT: u32 = 0x40 | 0x80 | 0x200 | 0x8000; // extents, 64bit, flex_bg, inline data
        return Some(if incompat & EXT4_INCOMPAT != 0 {
            "ext4 filesystem"
        } else if compat & 0x4 != 0 {
            "ext3 filesystem"
        } else {
            "ext2 filesystem"
        });
    }
    if at(65600, b"_BHRfS_M") {
        return Some("btrfs filesystem");
    }
    if at(0, b"hsqs") || at(0, b"sqsh") {
        return Some("squashfs filesystem");
    }
    if at(32769, b"CD001") {
        return Some("iso9660 filesystem");
    }
    if le32(1024) == Some(0xf2f5_2010) {
        return Some("f2fs filesystem");
    }
    if at(65536 + 52, b"ReIsEr") {
        return Some("reiserfs filesystem");
    }
    if at(32768, b"JFS1") {
        return Some("jfs filesystem");
    }
    if at(512, b"LABELONE") && at(536, b"LVM2 001") {
        return Some("LVM2 physical volume");
    }
    if le32(4096) == Some(0xa92b_4efc) || le32(0) == Some(0xa92b_4efc) {
        return Some("Linux RAID (md) member");
    }
    for page in [4096usize, 8192, 16384, 65536] {
        if at(page - 10, b"SWAPSPACE2") || at(page - 10, b"SWAP-SPACE") {
            return Some("swap area");
        }
    }
    if at(510, &[0x55, 0xaa]) {
        // A boot sector: FAT, NTFS and exFAT carry one too, so they are asked first.
        if at(3, b"NTFS    ") {
            return Some("ntfs filesystem");
        }
        if at(3, b"EXFAT   ") {
            return Some("exfat filesystem");
        }
        if at(54, b"FAT12   ") || at(54, b"FAT16   ") || at(82, b"FAT32   ") {
            return Some("vfat filesystem");
        }
        if at(512, b"EFI PART") {
            return Some("gpt partition table");
        }
        // An MBR's four entries each start with a boot flag of 0x00 or 0x80 (random data
        // with 0x55AA at 510 rarely has that too).
        if (0..4).all(|i| matches!(h[446 + 16 * i], 0x00 | 0x80)) {
            return Some("dos partition table");
        }
    }
    None
}

/// Format `dev`. Refuses a device too small for the format, and an existing daxfs image
/// unless `opts.force`. Returns a one-paragraph summary of the geometry.
pub fn mkfs(dev: &Arc<Device>, opts: &MkfsOptions) -> Result<String> {
    let mut total = dev.blocks();
    if total < MIN_BLOCKS {
        return Err(FsError::Invalid(format!(
            "{}: {} bytes is too small: daxfs needs at least {} MiB",
            dev.source(),
            dev.len(),
            (MIN_BLOCKS * BLOCK_SIZE as u64) >> 20
        )));
    }
    if holds_daxfs(dev) && !opts.force {
        return Err(FsError::Invalid(format!(
            "{} already holds a daxfs filesystem; use --force to overwrite it",
            dev.source()
        )));
    }
    let mut label = [0u8; 32];
    if let Some(l) = &opts.label {
        if l.len() > 32 {
            return Err(FsError::Invalid(format!(
                "label {l:?} is longer than 32 bytes"
            )));
        }
        label[..l.len()].copy_from_slice(l.as_bytes());
    }
    let log_blocks = (total / 64).clamp(LOG_MIN_BLOCKS, LOG_MAX_BLOCKS);
    // Per AG: 4 header blocks, 2 free-space tree roots, the AGFL's blocks.
    let ag_meta = AG_FIRST_FREE + 2 + AGFL_MIN as u64;
    let ag_blocks = match opts.ag_count {
        Some(n) => {
            // AG 0 holds the log too; every AG needs room to be worth its headers.
            let smallest = (ag_meta + log_blocks + 64).max(AG_LAST_MIN_BLOCKS);
            let b = total.div_ceil(n.max(1) as u64);
            if n == 0 || b < smallest || b > AG_MAX_BLOCKS {
                return Err(FsError::Invalid(format!(
                    "{n} AGs do not fit {}: each AG must have {smallest} to {AG_MAX_BLOCKS} blocks",
                    dev.source()
                )));
            }
            b
        }
        None => total.div_ceil(AG_COUNT_SMALL).min(AG_DEFAULT_BLOCKS),
    };
    let mut ag_count = total.div_ceil(ag_blocks);
    if total - (ag_count - 1) * ag_blocks < AG_LAST_MIN_BLOCKS {
        ag_count -= 1;
        total = ag_count * ag_blocks;
    }
    let log_start = ag_meta;
    let mut sb = Superblock {
        version: VERSION,
        uuid: random_uuid(),
        total_blocks: total,
        ag_blocks,
        ag_count: ag_count as u32,
        log_start,
        log_blocks,
        root_ino: 0,
        compat: 0,
        ro_compat: 0,
        incompat: INCOMPAT_SHORTFORM_DIRS | INCOMPAT_ATTR_TREE | INCOMPAT_INODE_FLAGS,
        lsn_base: 1,
        mkfs_time: crate::inode::now().sec,
        clean: 0,
        label,
    };
    // A sparse image: what is written below must be real first (device.rs).
    let mp0 = Mp::new(dev.clone(), sb.clone(), false, &crate::space::SPACE);
    crate::space::alloc::make_fixed_real(&mp0)?;
    drop(mp0);
    // The superblock goes last: a crash during mkfs leaves no valid daxfs image.
    dev.zero(0, BLOCK_SIZE as u64);
    for agno in 0..ag_count as u32 {
        write_ag(dev, &sb, agno, ag_meta)?;
    }
    let log_off = log_start * BLOCK_SIZE as u64;
    dev.zero(log_off, log_blocks * BLOCK_SIZE as u64);
    dev.persist_all();

    let mp = Mp::new(dev.clone(), sb.clone(), false, &crate::space::SPACE);
    let mut free = 0i64;
    for agno in 0..ag_count as u32 {
        free += (mp.ag_len(agno) - ag_meta - if agno == 0 { log_blocks } else { 0 }) as i64
            + AGFL_MIN as i64;
    }
    mp.free_blocks
        .store(free, std::sync::atomic::Ordering::Release);
    crate::log::trans::recover(&mp)?;
    sb.root_ino = make_root(&mp)?;
    // The root's records forced and their in-place copies written (log/force.rs).
    crate::log::trans::checkpoint(&mp)?;
    sb.lsn_base = crate::log::trans::next_lsn(&mp);
    sb.clean = 1;
    for agno in (0..ag_count as u32).rev() {
        let mut b = new_block();
        sb.encode(agno, &mut b[..]);
        dev.write(mp.fsblock(agno, 0) * BLOCK_SIZE as u64, &b[..]);
    }
    dev.persist_all();
    Ok(format!(
        "{}: {} blocks of {} bytes ({} MiB), {} allocation group(s) of {} blocks, log {} blocks, uuid {}",
        dev.source(),
        total,
        BLOCK_SIZE,
        (total * BLOCK_SIZE as u64) >> 20,
        ag_count,
        ag_blocks,
        log_blocks,
        uuid_string(&sb.uuid)
    ))
}

#[cfg(test)]
mod tests {
    use super::signature_in;

    /// A 68 KiB head of zeros with `magic` at `off`.
    fn with(parts: &[(usize, &[u8])]) -> Vec<u8> {
        let mut h = vec![0u8; 69632];
        for (off, magic) in parts {
            h[*off..off + magic.len()].copy_from_slice(magic);
        }
        h
    }

    #[test]
    fn signatures() {
        let cases: &[(&[(usize, &[u8])], &str)] = &[
            (&[(0, b"LUKS\xba\xbe")], "LUKS encrypted volume"),
            (&[(0, b"XFSB")], "xfs filesystem"),
            (&[(1080, &[0x53, 0xef])], "ext2 filesystem"),
            (
                &[(1080, &[0x53, 0xef]), (1024 + 0x5c, &[4])],
                "ext3 filesystem",
            ),
            (
                &[(1080, &[0x53, 0xef]), (1024 + 0x60, &[0x40])],
                "ext4 filesystem",
            ),
            (&[(65600, b"_BHRfS_M")], "btrfs filesystem"),
            (&[(0, b"hsqs")], "squashfs filesystem"),
            (&[(32769, b"CD001")], "iso9660 filesystem"),
            (&[(4086, b"SWAPSPACE2")], "swap area"),
            (&[(65526, b"SWAP-SPACE")], "swap area"),
            (
                &[(510, &[0x55, 0xaa]), (82, b"FAT32   ")],
                "vfat filesystem",
            ),
            (&[(510, &[0x55, 0xaa]), (3, b"NTFS    ")], "ntfs filesystem"),
            (
                &[(510, &[0x55, 0xaa]), (512, b"EFI PART")],
                "gpt partition table",
            ),
            (
                &[(510, &[0x55, 0xaa]), (446, &[0x80])],
                "dos partition table",
            ),
            (
                &[(512, b"LABELONE"), (536, b"LVM2 001")],
                "LVM2 physical volume",
            ),
        ];
        for (parts, name) in cases {
            assert_eq!(signature_in(&with(parts)), Some(*name), "{parts:?}");
        }
        assert_eq!(signature_in(&with(&[])), None, "zeros");
        assert_eq!(signature_in(&[]), None, "empty");
        assert_eq!(signature_in(&[0u8; 1081]), None, "short");
        // 0x55AA with boot flags that no MBR has: random data, not a partition table.
        let mut junk = with(&[(510, &[0x55, 0xaa])]);
        junk[446] = 0x17;
        assert_eq!(signature_in(&junk), None);
        // Random data (a fixed xorshift stream): nothing known.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let rnd: Vec<u8> = (0..69632)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(signature_in(&rnd), None);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(super::human(64 << 20), "64 MiB");
        assert_eq!(super::human(1 << 40), "1 TiB");
        assert_eq!(super::human(3 << 29), "1.5 GiB");
        assert_eq!(super::human(100), "100 bytes");
    }
}

pub fn uuid_string(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn write_ag(dev: &Device, sb: &Superblock, agno: u32, ag_meta: u64) -> Result<()> {
    let ag_start = agno as u64 * sb.ag_blocks;
    let ag_len = sb.ag_len(agno);
    let first_free = ag_meta + if agno == 0 { sb.log_blocks } else { 0 };
    assert!(
        first_free + 64 <= ag_len,
        "AG {agno} too small for its metadata"
    );
    let mut io = MkfsIo {
        dev,
        uuid: sb.uuid,
        next_free: ag_start + AG_FIRST_FREE,
    };
    let mut broot = Root::default();
    let mut croot = Root::default();
    btree::insert(
        &mut io,
        &alloc::bno_tree(agno),
        &mut broot,
        first_free as u128,
        (ag_len - first_free) as u128,
    )?;
    btree::insert(
        &mut io,
        &alloc::cnt_tree(agno),
        &mut croot,
        alloc::cnt_key(ag_len - first_free, first_free),
        0,
    )?;
    assert_eq!(io.next_free, ag_start + AG_FIRST_FREE + 2);

    let mut b = new_block();
    init_header(
        &mut b[..],
        AGF_MAGIC,
        ag_start + AGF_BLOCK,
        agno as u64,
        &sb.uuid,
    );
    Agf {
        agno,
        length: ag_len,
        bno_root: broot.blk,
        bno_level: broot.level,
        cnt_root: croot.blk,
        cnt_level: croot.level,
        free_blocks: ag_len - first_free,
        btree_blocks: 0,
    }
    .encode(&mut b[..]);
    io.write_meta(ag_start + AGF_BLOCK, &b);

    let mut b = new_block();
    init_header(
        &mut b[..],
        AGI_MAGIC,
        ag_start + AGI_BLOCK,
        agno as u64,
        &sb.uuid,
    );
    Agi {
        agno,
        ..Default::default()
    }
    .encode(&mut b[..]);
    io.write_meta(ag_start + AGI_BLOCK, &b);

    let mut b = new_block();
    init_header(
        &mut b[..],
        AGFL_MAGIC,
        ag_start + AGFL_BLOCK,
        agno as u64,
        &sb.uuid,
    );
    for i in 0..AGFL_MIN as usize {
        put_u32(
            &mut b[..],
            AGFL_ENTRIES + 4 * i,
            (AG_FIRST_FREE + 2) as u32 + i as u32,
        );
    }
    put_u32(&mut b[..], AGFL_COUNT, AGFL_MIN);
    io.write_meta(ag_start + AGFL_BLOCK, &b);

    if agno > 0 {
        let mut b = new_block();
        sb.encode(agno, &mut b[..]);
        dev.write(ag_start * BLOCK_SIZE as u64, &b[..]);
    }
    Ok(())
}

/// Create the root directory (0755, owned by whoever runs mkfs) in a transaction.
fn make_root(mp: &Mp) -> Result<u64> {
    let mut tx = mp.trans(crate::space::ialloc::IALLOC_RESBLKS)?;
    let ino = crate::space::ialloc::ialloc(&mut tx, 0)?;
    let now = crate::inode::now();
    let di = DiskInode {
        ino,
        mode: libc::S_IFDIR | 0o755,
        // SAFETY: getuid/getgid cannot fail.
        uid: unsafe { libc::getuid() },
        gid: unsafe { libc::getgid() },
        nlink: 2,
        atime: now,
        mtime: now,
        ctime: now,
        btime: now,
        parent: ino,
        format: FMT_EXTENTS,
        ..Default::default()
    };
    let inode = Inode::new(di, ExtentMap::new());
    {
        let mut d = inode.ilock_excl();
        crate::inode::bmap::sync_inode(&mut tx, &mut d)?;
    }
    tx.commit()?;
    Ok(ino)
}

/// `daxfs mkfs IMAGE --size SIZE`: create or resize the file, allocate its blocks (unless
/// `opts.sparse`), then format it. Refuses (and changes nothing) when the file already
/// holds a daxfs image and `opts.force` is false, and when the filesystem that holds the
/// file has not the room for it. Returns the summary, after any warnings (one per line).
pub fn mkfs_image(
    path: &Path,
    size: u64,
    opts: &MkfsOptions,
) -> std::result::Result<String, String> {
    let shown = path.display();
    if size < MIN_BLOCKS * BLOCK_SIZE as u64 {
        return Err(format!(
            "{shown}: size {size} is too small: daxfs needs at least {} MiB",
            (MIN_BLOCKS * BLOCK_SIZE as u64) >> 20
        ));
    }
    let existed = path.exists();
    if existed
        && !opts.force
        && let Ok(dev) = Device::open(&path.to_string_lossy(), true)
        && holds_daxfs(&dev)
    {
        return Err(format!(
            "{shown} already holds a daxfs filesystem; use --force to overwrite it"
        ));
    }
    if existed
        && !opts.force
        && let Some(what) = foreign_signature(path)
    {
        return Err(format!(
            "{shown} appears to contain an existing {what}; use --force to overwrite it"
        ));
    }
    let meta = std::fs::metadata(path).ok();
    let mut notes = String::new();
    if meta.as_ref().is_none_or(|m| m.is_file()) {
        let room = room_for(path, meta.as_ref(), size, opts.sparse)?;
        if let Some(w) = room {
            notes.push_str(&w);
            notes.push('\n');
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| format!("{shown}: cannot create: {e}"))?;
        let fail = |msg: String| {
            if !existed {
                let _ = std::fs::remove_file(path);
            }
            msg
        };
        f.set_len(size)
            .map_err(|e| fail(format!("{shown}: cannot set size {size}: {e}")))?;
        if opts.sparse {
            // An old image's blocks are given back: the new filesystem allocates its own.
            let _ = crate::pmem::device::punch_all(&f, size);
        } else {
            match crate::pmem::device::preallocate(&f, size) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => notes.push_str(&format!(
                    "warning: {shown}: the filesystem that holds it cannot preallocate \
                     (fallocate: {e}): the image stays sparse\n"
                )),
                Err(e) => {
                    return Err(fail(format!(
                        "{shown}: cannot allocate {size} bytes for the image: {e}"
                    )));
                }
            }
        }
    }
    let dev = Device::open(&path.to_string_lossy(), false).map_err(|e| e.to_string())?;
    let o = MkfsOptions {
        force: true,
        ..opts.clone()
    };
    let summary = mkfs(&dev, &o).map_err(|e| {
        if !existed {
            let _ = std::fs::remove_file(path);
        }
        e.to_string()
    })?;
    Ok(notes + &summary)
}

/// Can the filesystem that holds (or will hold) image file `path` take `size` bytes of
/// it? Preallocated: refused when its free space (plus what the file has allocated
/// already) is short. Sparse: allowed, with a warning when the size exceeds that space.
fn room_for(
    path: &Path,
    meta: Option<&std::fs::Metadata>,
    size: u64,
    sparse: bool,
) -> std::result::Result<Option<String>, String> {
    use std::os::unix::fs::MetadataExt;
    let shown = path.display();
    let dir = match path.parent() {
        Some(p) if meta.is_none() && !p.as_os_str().is_empty() => p,
        _ if meta.is_none() => Path::new("."),
        _ => path,
    };
    let st = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| format!("{}: cannot look at its filesystem: {e}", dir.display()))?;
    let avail = st.blocks_available() as u64 * st.fragment_size() as u64;
    let have = meta.map_or(0, |m| (m.blocks() * 512).min(size));
    let need = size - have;
    if need <= avail {
        return Ok(None);
    }
    if sparse {
        return Ok(Some(format!(
            "warning: {shown}: a sparse image of {} on a filesystem with {} free: writes \
             fail with ENOSPC once that is used up",
            human(size),
            human(avail + have)
        )));
    }
    Err(format!(
        "{shown}: {} does not fit: the filesystem that holds it has {} free; choose a \
         smaller --size, free space, or use --sparse to allocate the image as it is used",
        human(size),
        human(avail + have)
    ))
}

/// A byte count for people: 64 MiB, 1.5 GiB, 78.2 GiB.
fn human(b: u64) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 || v.fract() < 0.05 {
        format!("{v:.0} {}", units[u])
    } else {
        format!("{v:.1} {}", units[u])
    }
}
