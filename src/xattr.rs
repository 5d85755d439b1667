//! Extended attributes: an inode's attribute fork, in one of two forms.
//!
//! - The attribute tree (filesystems with INCOMPAT_ATTR_TREE, every new mkfs), as XFS's
//!   leaf/node attribute fork: entries packed in leaf blocks, found through an index
//!   B+tree (btree.rs) keyed by name hash, values too big for a leaf kept in a chain of
//!   remote value blocks (format/attr.rs draws them). So an inode holds as many
//!   attributes as the device has room for, each value up to 64 KiB (XATTR_SIZE_MAX).
//!   The index holds a name record (hash, leaf) for each distinct hash in each leaf and a
//!   leaf record (leaf, free bytes) for each leaf, which is where a new entry goes: the
//!   first leaf with room, else a new leaf. A leaf is rewritten whole on each change; an
//!   emptied leaf is freed, and so is the whole fork with the last attribute. Every change
//!   is one transaction, so a crash leaves the old or the new attribute set.
//! - The one-block form of older images (without the feature): every attribute packed in
//!   one block, rewritten whole, so at most one block's worth (about 150 small ones).
//!   Such images keep it (their format does not change under them, so an older daxfs
//!   still reads them).
//!
//! The namespaces are user, trusted and security, and in the tree the two POSIX ACL names
//! of system.* (fs/acl.rs gives them their meaning); any other system.* name is
//! EOPNOTSUPP, and so are ACLs in the one-block form (whose readers know three namespaces).
//! Short form in the inode is not done: the inode core's spare bytes (DI_RESERVED..256)
//! are too few for useful attributes and the literal area belongs to the data fork.

use crate::btree::{self, BlockIo, Root, Tree, TreeOps};
use crate::error::{FsError, Result, err};
use crate::format::*;
use crate::inode::InodeData;
use crate::log::trans::Trans;

const NS_USER: u8 = 1;
const NS_TRUSTED: u8 = 2;
const NS_SECURITY: u8 = 3;
/// system.*: only the two POSIX ACL names (fs/acl.rs), and only in the attribute tree.
const NS_SYSTEM: u8 = 4;
const PREFIXES: [(&[u8], u8); 4] = [
    (b"user.", NS_USER),
    (b"trusted.", NS_TRUSTED),
    (b"security.", NS_SECURITY),
    (b"system.", NS_SYSTEM),
];
const SYSTEM_NAMES: [&[u8]; 2] = [b"posix_acl_access", b"posix_acl_default"];
/// Largest value (XATTR_SIZE_MAX).
pub const VALUE_MAX: usize = 65536;
const ENTRY_HDR: usize = 4;

pub static ATTRBT: TreeOps = TreeOps {
    name: "attr index",
    magic: ATTRBT_MAGIC,
    key_len: 16,
    val_len: 2,
    max_recs: None,
};

pub fn attr_tree(ino: u64) -> Tree {
    Tree {
        ops: &ATTRBT,
        owner: ino,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    pub ns: u8,
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

fn entry_len(name: usize, value: usize) -> usize {
    (ENTRY_HDR + name + value + 7) & !7
}

/// Split "user.foo" into (NS_USER, "foo").
pub fn split_name(full: &[u8]) -> Result<(u8, &[u8])> {
    for (p, ns) in PREFIXES {
        if let Some(rest) = full.strip_prefix(p) {
            if rest.is_empty() {
                return err(libc::EINVAL);
            }
            if rest.len() > NAME_LEN_MAX {
                return err(libc::ERANGE);
            }
            if ns == NS_SYSTEM && !SYSTEM_NAMES.contains(&rest) {
                return err(libc::EOPNOTSUPP);
            }
            return Ok((ns, rest));
        }
    }
    err(libc::EOPNOTSUPP)
}

fn full_name(ns: u8, name: &[u8]) -> Vec<u8> {
    let p = PREFIXES
        .iter()
        .find(|(_, n)| *n == ns)
        .map(|(p, _)| *p)
        .unwrap_or(b"");
    [p, name].concat()
}

fn is_tree(d: &InodeData) -> bool {
    d.di.attr_fmt == AFMT_TREE
}

// ---------------------------------------------------------------------------------------
// The operations, for either form.

/// Every attribute of the inode.
pub fn load<I: BlockIo>(io: &mut I, d: &InodeData) -> Result<Vec<Xattr>> {
    if !is_tree(d) {
        return block_load(io, d);
    }
    let ino = d.di.ino;
    let mut out = Vec::new();
    for leaf in leaves(io, ino, &fork_root(d))? {
        for e in read_leaf(io, ino, leaf)? {
            let value = entry_value(io, ino, &e)?;
            out.push(Xattr {
                ns: e.ns,
                name: e.name,
                value,
            });
        }
    }
    Ok(out)
}

pub fn get<I: BlockIo>(io: &mut I, d: &InodeData, name: &[u8]) -> Result<Vec<u8>> {
    let (ns, n) = split_name(name)?;
    if !is_tree(d) {
        return block_load(io, d)?
            .into_iter()
            .find(|x| x.ns == ns && x.name == n)
            .map(|x| x.value)
            .ok_or(FsError::Errno(libc::ENODATA));
    }
    match find(io, d.di.ino, &fork_root(d), ns, n)? {
        Some(f) => entry_value(io, d.di.ino, &f.entries[f.idx]),
        None => err(libc::ENODATA),
    }
}

/// Names, each NUL-terminated, as listxattr(2) returns them.
pub fn list<I: BlockIo>(io: &mut I, d: &InodeData) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut add = |ns: u8, name: &[u8]| {
        out.extend_from_slice(&full_name(ns, name));
        out.push(0);
    };
    if !is_tree(d) {
        for x in block_load(io, d)? {
            add(x.ns, &x.name);
        }
    } else {
        for leaf in leaves(io, d.di.ino, &fork_root(d))? {
            for e in read_leaf(io, d.di.ino, leaf)? {
                add(e.ns, &e.name);
            }
        }
    }
    Ok(out)
}

/// Blocks a set of a `value_len`-byte value may allocate (its transaction reserves them):
/// the remote value blocks, a leaf, and index nodes for a split at every level.
pub fn set_resblks(value_len: usize) -> u64 {
    remote_blocks(value_len) + 1 + BTREE_LEVELS_MAX as u64
}

/// Set (create or replace per flags). The caller syncs the inode.
pub fn set(
    tx: &mut Trans,
    d: &mut InodeData,
    name: &[u8],
    value: &[u8],
    create: bool,
    replace: bool,
) -> Result<()> {
    let (ns, n) = split_name(name)?;
    if value.len() > VALUE_MAX {
        return err(libc::E2BIG);
    }
    // The one-block form stays where it is: filesystems without the feature (a tree
    // filesystem never makes one).
    let tree_fs = tx.mp.sb.incompat & INCOMPAT_ATTR_TREE != 0;
    if !tree_fs || (!is_tree(d) && d.di.attr_blk != 0) {
        if ns == NS_SYSTEM {
            return err(libc::EOPNOTSUPP);
        }
        return block_set(tx, d, ns, n, value, create, replace);
    }
    let ino = d.di.ino;
    let mut f = ForkIo::new(tx, d);
    let root = f.root;
    let found = find(&mut f, ino, &root, ns, n)?;
    match found {
        Some(_) if create => return err(libc::EEXIST),
        None if replace => return err(libc::ENODATA),
        // A local value replaced by one of the same length: rewrite the leaf in place
        // (no block changes hands: chmod's ACL update works on a full device).
        Some(mut old)
            if old.entries[old.idx].remote == 0
                && old.entries[old.idx].vlen == value.len()
                && remote_blocks(value.len()) == 0 =>
        {
            old.entries[old.idx].local = value.to_vec();
            write_leaf(&mut f, ino, old.leaf, &old.entries);
            return f.store(d);
        }
        Some(old) => remove_entry(&mut f, ino, old)?,
        None => {}
    }
    let e = new_entry(&mut f, ino, ns, n, value)?;
    insert_entry(&mut f, ino, e)?;
    f.store(d)
}

pub fn remove(tx: &mut Trans, d: &mut InodeData, name: &[u8]) -> Result<()> {
    let (ns, n) = split_name(name)?;
    if !is_tree(d) {
        let mut attrs = block_load(tx, d)?;
        let before = attrs.len();
        attrs.retain(|x| !(x.ns == ns && x.name == n));
        if attrs.len() == before {
            return err(libc::ENODATA);
        }
        return block_store(tx, d, &attrs);
    }
    let ino = d.di.ino;
    let mut f = ForkIo::new(tx, d);
    let root = f.root;
    let Some(old) = find(&mut f, ino, &root, ns, n)? else {
        return err(libc::ENODATA);
    };
    remove_entry(&mut f, ino, old)?;
    f.store(d)
}

/// Drop the whole attribute fork (inode being freed). Every block is verified before it
/// is freed, as every other path reads it before changing it: a pointer in a damaged
/// inode must not free a block outside the device or one that is not this inode's.
pub fn remove_all(tx: &mut Trans, d: &mut InodeData) -> Result<()> {
    if !is_tree(d) {
        if d.di.attr_blk != 0 {
            tx.read_meta(d.di.attr_blk, ATTR_MAGIC, Some(d.di.ino), "xattr")?;
        }
        return block_store(tx, d, &[]);
    }
    let ino = d.di.ino;
    let mut f = ForkIo::new(tx, d);
    let mut root = f.root;
    for leaf in leaves(&mut f, ino, &root)? {
        for e in read_leaf(&mut f, ino, leaf)? {
            free_remote(&mut f, ino, &e)?;
        }
        f.free_block(leaf);
    }
    btree::destroy(&mut f, &attr_tree(ino), &mut root)?;
    f.root = root;
    f.store(d)
}

/// Blocks one transaction frees at most when an attribute fork goes with its inode (as
/// big data removals, so that no log record outgrows the log).
pub const REMOVE_BLOCKS_MAX: u64 = 256;

/// Free the attribute fork of an inode being freed, at most about REMOVE_BLOCKS_MAX
/// blocks per call: entry by entry (a leaf's entries can hold thousands of remote value
/// blocks), each taken out as removexattr does, so the fork stays whole between calls.
/// Ok(true) when it is all gone (`remove_all` did the rest); Ok(false): commit and call
/// again.
pub fn remove_bounded(tx: &mut Trans, d: &mut InodeData) -> Result<bool> {
    if !is_tree(d) || d.di.attr_blocks <= REMOVE_BLOCKS_MAX {
        remove_all(tx, d)?;
        return Ok(true);
    }
    let ino = d.di.ino;
    let mut f = ForkIo::new(tx, d);
    let start = f.blocks;
    let root = f.root;
    'leaves: for leaf in leaves(&mut f, ino, &root)? {
        loop {
            let entries = read_leaf(&mut f, ino, leaf)?;
            let last = entries.len() == 1;
            let idx = entries.len() - 1;
            remove_entry(&mut f, ino, Found { leaf, entries, idx })?;
            if start - f.blocks >= REMOVE_BLOCKS_MAX {
                break 'leaves;
            }
            if last {
                break;
            }
        }
    }
    f.store(d)?;
    Ok(d.di.attr_blk == 0)
}

/// Would these attributes fit one block (the one-block form)?
pub fn fits(attrs: &[Xattr]) -> bool {
    block_bytes(attrs) <= BLOCK_SIZE
}

// ---------------------------------------------------------------------------------------
// The attribute tree.

/// The transaction, counting the blocks the fork gains and loses (index nodes through
/// `alloc_node`/`free_node`, leaves and remote blocks through `alloc_block`/`free_block`).
struct ForkIo<'a, 'b> {
    tx: &'a mut Trans<'b>,
    root: Root,
    blocks: u64,
    near: u64,
}

impl<'a, 'b> ForkIo<'a, 'b> {
    fn new(tx: &'a mut Trans<'b>, d: &InodeData) -> Self {
        let near = tx.mp.ino_block(d.di.ino);
        ForkIo {
            tx,
            root: fork_root(d),
            blocks: d.di.attr_blocks,
            near,
        }
    }

    fn alloc_block(&mut self) -> Result<u64> {
        let blk = crate::space::alloc::alloc_exact_len(self.tx, self.near, 1)?;
        self.near = blk + 1;
        self.blocks += 1;
        Ok(blk)
    }

    fn free_block(&mut self, blk: u64) {
        self.tx.forget_block(blk);
        self.tx.defer_free(blk, 1);
        self.blocks = self.blocks.saturating_sub(1);
    }

    /// Write the fork's root and count back to the inode (the caller syncs it).
    fn store(self, d: &mut InodeData) -> Result<()> {
        let ino = d.di.ino;
        if self.root.blk == 0 {
            crate::ensure_sane!(
                self.blocks == 0,
                "attribute fork of inode {ino}: empty, but {} blocks counted",
                self.blocks
            );
            d.di.attr_blk = 0;
            d.di.attr_level = 0;
            d.di.attr_fmt = AFMT_BLOCK;
            d.di.attr_blocks = 0;
        } else {
            d.di.attr_blk = self.root.blk;
            d.di.attr_level = self.root.level;
            d.di.attr_fmt = AFMT_TREE;
            d.di.attr_blocks = self.blocks;
        }
        Ok(())
    }
}

impl BlockIo for ForkIo<'_, '_> {
    fn uuid(&self) -> [u8; 16] {
        self.tx.uuid()
    }
    fn read_meta(
        &mut self,
        blk: u64,
        magic: u32,
        owner: Option<u64>,
        what: &'static str,
    ) -> Result<Box<Block>> {
        self.tx.read_meta(blk, magic, owner, what)
    }
    fn write_meta(&mut self, blk: u64, data: &Block) {
        self.tx.write_meta(blk, data)
    }
    fn alloc_node(&mut self, tree: &Tree) -> Result<u64> {
        let blk = self.tx.alloc_node(tree)?;
        self.blocks += 1;
        Ok(blk)
    }
    fn free_node(&mut self, tree: &Tree, blk: u64) -> Result<()> {
        self.tx.free_node(tree, blk)?;
        self.blocks = self.blocks.saturating_sub(1);
        Ok(())
    }
}

fn fork_root(d: &InodeData) -> Root {
    Root {
        blk: d.di.attr_blk,
        level: d.di.attr_level,
    }
}

/// The on-media hash of an attribute name: its namespace byte, then the name.
pub fn attr_hash(ns: u8, name: &[u8]) -> u64 {
    let mut b = Vec::with_capacity(name.len() + 1);
    b.push(ns);
    b.extend_from_slice(name);
    crate::dir::name_hash(&b) & ATTR_HASH_MASK
}

fn name_key(hash: u64, leaf: u64) -> u128 {
    ((hash as u128) << 64) | leaf as u128
}

fn leaf_key(leaf: u64) -> u128 {
    ATTR_LEAF_KEY | leaf as u128
}

/// One entry of a leaf: the name, and the value (local) or where it starts (remote).
#[derive(Debug, Clone)]
pub struct Entry {
    pub ns: u8,
    pub name: Vec<u8>,
    pub vlen: usize,
    /// First remote value block; 0 for a local value.
    pub remote: u64,
    pub local: Vec<u8>,
}

impl Entry {
    fn size(&self) -> usize {
        let body = if self.remote != 0 { 8 } else { self.vlen };
        (AL_ENTRY_HDR + body + self.name.len() + 7) & !7
    }
    fn hash(&self) -> u64 {
        attr_hash(self.ns, &self.name)
    }
}

/// Remote value blocks a value takes (0 when it stays in the leaf).
fn remote_blocks(vlen: usize) -> u64 {
    if AL_ENTRY_HDR + NAME_LEN_MAX + vlen <= AL_LOCAL_MAX {
        0
    } else {
        vlen.div_ceil(AR_ROOM).max(1) as u64
    }
}

/// Decode and check a leaf: every entry inside the used bytes, names and namespaces
/// valid, sizes consistent.
pub fn read_leaf<I: BlockIo>(io: &mut I, ino: u64, blk: u64) -> Result<Vec<Entry>> {
    let b = io.read_meta(blk, ATTRLEAF_MAGIC, Some(ino), "attr leaf")?;
    let used = get_u16(&b[..], AL_USED) as usize;
    let count = get_u16(&b[..], AL_COUNT) as usize;
    let bad = |what: String| {
        Err(FsError::corrupt(format!(
            "attr leaf {blk} of inode {ino}: {what}"
        )))
    };
    if !(AL_ENTRIES..=BLOCK_SIZE).contains(&used) || count == 0 {
        return bad(format!("used bytes {used}, {count} entries"));
    }
    let mut out = Vec::with_capacity(count);
    let mut off = AL_ENTRIES;
    for i in 0..count {
        if off + AL_ENTRY_HDR > used {
            return bad(format!("entry {i} past the end"));
        }
        let ns = b[off];
        let nlen = b[off + 1] as usize;
        let flags = b[off + 2];
        let vlen = get_u32(&b[..], off + 4) as usize;
        if !(NS_USER..=NS_SYSTEM).contains(&ns)
            || nlen == 0
            || flags & !AL_REMOTE != 0
            || b[off + 3] != 0
            || vlen > VALUE_MAX
        {
            return bad(format!("entry {i} is malformed"));
        }
        let mut p = off + AL_ENTRY_HDR;
        let mut e = Entry {
            ns,
            name: Vec::new(),
            vlen,
            remote: 0,
            local: Vec::new(),
        };
        if flags & AL_REMOTE != 0 {
            if p + 8 > used {
                return bad(format!("entry {i} past the end"));
            }
            e.remote = get_u64(&b[..], p);
            p += 8;
            if e.remote == 0 || remote_blocks(vlen) == 0 {
                return bad(format!(
                    "entry {i}: remote value of {vlen} bytes at {}",
                    e.remote
                ));
            }
        } else if remote_blocks(vlen) != 0 {
            return bad(format!("entry {i}: local value of {vlen} bytes"));
        }
        let local = if e.remote != 0 { 0 } else { vlen };
        if p + nlen + local > used {
            return bad(format!("entry {i} past the end"));
        }
        e.name = b[p..p + nlen].to_vec();
        e.local = b[p + nlen..p + nlen + local].to_vec();
        off += e.size();
        out.push(e);
    }
    if off != used {
        return bad(format!("entries end at {off}, header says {used}"));
    }
    Ok(out)
}

fn leaf_used(entries: &[Entry]) -> usize {
    AL_ENTRIES + entries.iter().map(Entry::size).sum::<usize>()
}

fn write_leaf<I: BlockIo>(io: &mut I, ino: u64, blk: u64, entries: &[Entry]) {
    let mut b = new_block();
    init_header(&mut b[..], ATTRLEAF_MAGIC, blk, ino, &io.uuid());
    let mut off = AL_ENTRIES;
    for e in entries {
        b[off] = e.ns;
        b[off + 1] = e.name.len() as u8;
        b[off + 2] = if e.remote != 0 { AL_REMOTE } else { 0 };
        put_u32(&mut b[..], off + 4, e.vlen as u32);
        let mut p = off + AL_ENTRY_HDR;
        if e.remote != 0 {
            put_u64(&mut b[..], p, e.remote);
            p += 8;
        }
        b[p..p + e.name.len()].copy_from_slice(&e.name);
        p += e.name.len();
        b[p..p + e.local.len()].copy_from_slice(&e.local);
        off += e.size();
    }
    put_u16(&mut b[..], AL_USED, off as u16);
    put_u16(&mut b[..], AL_COUNT, entries.len() as u16);
    io.write_meta(blk, &b);
}

/// The leaves of the fork, in block order (the index's leaf records).
pub fn leaves<I: BlockIo>(io: &mut I, ino: u64, root: &Root) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    btree::walk(io, &attr_tree(ino), root, ATTR_LEAF_KEY, &mut |k, _| {
        out.push(k as u64);
        Ok(true)
    })?;
    Ok(out)
}

/// Where an entry was found: its leaf, the leaf's entries, and its index among them.
struct Found {
    leaf: u64,
    entries: Vec<Entry>,
    idx: usize,
}

fn find<I: BlockIo>(
    io: &mut I,
    ino: u64,
    root: &Root,
    ns: u8,
    name: &[u8],
) -> Result<Option<Found>> {
    let h = attr_hash(ns, name);
    let mut cands = Vec::new();
    btree::walk(io, &attr_tree(ino), root, name_key(h, 0), &mut |k, _| {
        if (k >> 64) as u64 != h {
            return Ok(false);
        }
        cands.push(k as u64);
        Ok(true)
    })?;
    for leaf in cands {
        let entries = read_leaf(io, ino, leaf)?;
        if let Some(idx) = entries.iter().position(|e| e.ns == ns && e.name == name) {
            return Ok(Some(Found { leaf, entries, idx }));
        }
    }
    Ok(None)
}

/// The value of an entry: local, or read along its remote chain.
fn entry_value<I: BlockIo>(io: &mut I, ino: u64, e: &Entry) -> Result<Vec<u8>> {
    if e.remote == 0 {
        return Ok(e.local.clone());
    }
    let mut out = Vec::with_capacity(e.vlen);
    remote_chain(io, ino, e, &mut |b| out.extend_from_slice(b))?;
    Ok(out)
}

/// Follow an entry's remote chain, handing each block's bytes to `data`; returns the
/// chain's blocks. The chain must hold exactly the value's bytes in as many blocks as
/// the value needs: a loop or a short or long chain is corruption.
pub fn remote_chain<I: BlockIo>(
    io: &mut I,
    ino: u64,
    e: &Entry,
    data: &mut dyn FnMut(&[u8]),
) -> Result<Vec<u64>> {
    if e.remote == 0 {
        return Ok(Vec::new());
    }
    let n = remote_blocks(e.vlen);
    let mut blks = Vec::with_capacity(n as usize);
    let (mut blk, mut left) = (e.remote, e.vlen);
    for _ in 0..n {
        let b = io.read_meta(blk, ATTRRMT_MAGIC, Some(ino), "attr remote value")?;
        let len = get_u32(&b[..], AR_LEN) as usize;
        let want = left.min(AR_ROOM);
        crate::ensure_sane!(
            len == want,
            "attr remote value block {blk} of inode {ino}: holds {len} bytes, expected {want}"
        );
        data(&b[AR_DATA..AR_DATA + len]);
        blks.push(blk);
        left -= len;
        blk = get_u64(&b[..], AR_NEXT);
    }
    crate::ensure_sane!(
        blk == 0 && left == 0,
        "attr remote value of inode {ino} at {}: chain does not end with the value",
        e.remote
    );
    Ok(blks)
}

fn free_remote(f: &mut ForkIo, ino: u64, e: &Entry) -> Result<()> {
    if e.remote == 0 {
        return Ok(());
    }
    for blk in remote_chain(f, ino, e, &mut |_| {})? {
        f.free_block(blk);
    }
    Ok(())
}

/// A new entry; a big value is written to fresh remote blocks first.
fn new_entry(f: &mut ForkIo, ino: u64, ns: u8, name: &[u8], value: &[u8]) -> Result<Entry> {
    let mut e = Entry {
        ns,
        name: name.to_vec(),
        vlen: value.len(),
        remote: 0,
        local: Vec::new(),
    };
    let n = remote_blocks(value.len());
    if n == 0 {
        e.local = value.to_vec();
        return Ok(e);
    }
    let blks = (0..n)
        .map(|_| f.alloc_block())
        .collect::<Result<Vec<u64>>>()?;
    let uuid = f.uuid();
    for (i, chunk) in value.chunks(AR_ROOM).enumerate() {
        let mut b = new_block();
        init_header(&mut b[..], ATTRRMT_MAGIC, blks[i], ino, &uuid);
        put_u64(&mut b[..], AR_NEXT, blks.get(i + 1).copied().unwrap_or(0));
        put_u32(&mut b[..], AR_LEN, chunk.len() as u32);
        b[AR_DATA..AR_DATA + chunk.len()].copy_from_slice(chunk);
        f.tx.new_meta(blks[i], &b);
    }
    e.remote = blks[0];
    Ok(e)
}

/// Put an entry into the first leaf with room for it, or a new leaf.
fn insert_entry(f: &mut ForkIo, ino: u64, e: Entry) -> Result<()> {
    let tree = attr_tree(ino);
    let size = e.size();
    let mut room = None;
    let root = f.root;
    btree::walk(f, &tree, &root, ATTR_LEAF_KEY, &mut |k, free| {
        if free as usize >= size {
            room = Some(k as u64);
            return Ok(false);
        }
        Ok(true)
    })?;
    let h = e.hash();
    let (leaf, entries) = match room {
        Some(leaf) => {
            let mut entries = read_leaf(f, ino, leaf)?;
            entries.push(e);
            (leaf, entries)
        }
        None => (f.alloc_block()?, vec![e]),
    };
    let free = (BLOCK_SIZE - leaf_used(&entries)) as u128;
    write_leaf(f, ino, leaf, &entries);
    let mut root = f.root;
    if room.is_some() {
        btree::update(f, &tree, &root, leaf_key(leaf), free)?;
    } else {
        btree::insert(f, &tree, &mut root, leaf_key(leaf), free)?;
    }
    if btree::get(f, &tree, &root, name_key(h, leaf))?.is_none() {
        btree::insert(f, &tree, &mut root, name_key(h, leaf), 0)?;
    }
    f.root = root;
    Ok(())
}

/// Take an entry out of its leaf (freeing its remote value, and the leaf if emptied).
fn remove_entry(f: &mut ForkIo, ino: u64, found: Found) -> Result<()> {
    let tree = attr_tree(ino);
    let Found {
        leaf,
        mut entries,
        idx,
    } = found;
    let e = entries.remove(idx);
    free_remote(f, ino, &e)?;
    let mut root = f.root;
    let h = e.hash();
    if !entries.iter().any(|x| x.hash() == h) {
        btree::delete(f, &tree, &mut root, name_key(h, leaf))?;
    }
    if entries.is_empty() {
        btree::delete(f, &tree, &mut root, leaf_key(leaf))?;
        f.free_block(leaf);
    } else {
        write_leaf(f, ino, leaf, &entries);
        let free = (BLOCK_SIZE - leaf_used(&entries)) as u128;
        btree::update(f, &tree, &root, leaf_key(leaf), free)?;
    }
    f.root = root;
    Ok(())
}

/// What `daxfs check` learns from an attribute tree: its blocks (each handed to `claim`
/// with what it is), and the problems found. Checks that every leaf is listed once with
/// its true free bytes, that name records and entries match one to one, that no name is
/// there twice, that remote chains hold their values, and the inode's block count.
pub fn check_tree<I: BlockIo>(
    io: &mut I,
    d: &InodeData,
    claim: &mut dyn FnMut(u64, &'static str),
) -> Vec<String> {
    let ino = d.di.ino;
    let root = fork_root(d);
    let mut problems = Vec::new();
    let mut nodes = 0u64;
    let mut recs = Vec::new();
    problems.extend(btree::check(
        io,
        &attr_tree(ino),
        &root,
        &mut |b| {
            nodes += 1;
            claim(b, "attribute index node")
        },
        &mut |k, v| recs.push((k, v)),
    ));
    let mut blocks = nodes;
    let mut names = std::collections::BTreeSet::new();
    let mut want_names = std::collections::BTreeSet::new();
    for &(k, v) in &recs {
        if k & ATTR_LEAF_KEY == 0 {
            names.insert(k);
            continue;
        }
        let leaf = k as u64;
        claim(leaf, "attribute leaf");
        blocks += 1;
        let entries = match read_leaf(io, ino, leaf) {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!("inode {ino}: {e}"));
                continue;
            }
        };
        let free = BLOCK_SIZE - leaf_used(&entries);
        if v as usize != free {
            problems.push(format!(
                "inode {ino}: attr leaf {leaf} has {free} bytes free, its index record says {v}"
            ));
        }
        for e in &entries {
            want_names.insert(name_key(e.hash(), leaf));
            match remote_chain(io, ino, e, &mut |_| {}) {
                Ok(chain) => {
                    for b in chain {
                        claim(b, "attribute remote value");
                        blocks += 1;
                    }
                }
                Err(err) => problems.push(format!("inode {ino}: {err}")),
            }
        }
        let mut seen = std::collections::HashSet::new();
        for e in &entries {
            if !seen.insert((e.ns, e.name.clone())) {
                problems.push(format!(
                    "inode {ino}: attribute {:?} is in leaf {leaf} twice",
                    String::from_utf8_lossy(&full_name(e.ns, &e.name))
                ));
            }
        }
    }
    if names != want_names {
        problems.push(format!(
            "inode {ino}: attribute index has {} name records, the leaves need {} (they differ)",
            names.len(),
            want_names.len()
        ));
    }
    if let Ok(all) = load(io, d) {
        let mut seen = std::collections::HashSet::new();
        for x in &all {
            if !seen.insert((x.ns, &x.name)) {
                problems.push(format!(
                    "inode {ino}: attribute {:?} is there twice",
                    String::from_utf8_lossy(&full_name(x.ns, &x.name))
                ));
            }
        }
    }
    if blocks != d.di.attr_blocks {
        problems.push(format!(
            "inode {ino}: attribute fork holds {blocks} blocks, the inode counts {}",
            d.di.attr_blocks
        ));
    }
    problems
}

// ---------------------------------------------------------------------------------------
// The one-block form.

fn block_bytes(attrs: &[Xattr]) -> usize {
    AT_ENTRIES
        + attrs
            .iter()
            .map(|x| entry_len(x.name.len(), x.value.len()))
            .sum::<usize>()
}

fn block_load<I: BlockIo>(io: &mut I, d: &InodeData) -> Result<Vec<Xattr>> {
    if d.di.attr_blk == 0 {
        return Ok(Vec::new());
    }
    let ino = d.di.ino;
    let b = io.read_meta(d.di.attr_blk, ATTR_MAGIC, Some(ino), "xattr")?;
    let used = get_u16(&b[..], AT_USED) as usize;
    let count = get_u16(&b[..], AT_COUNT) as usize;
    crate::ensure_sane!(
        (AT_ENTRIES..=BLOCK_SIZE).contains(&used),
        "xattr block of inode {ino}: used bytes {used} out of range"
    );
    let mut out = Vec::with_capacity(count);
    let mut off = AT_ENTRIES;
    for i in 0..count {
        crate::ensure_sane!(
            off + ENTRY_HDR <= used,
            "xattr block of inode {ino}: entry {i} past the end"
        );
        let ns = b[off];
        let nlen = b[off + 1] as usize;
        let vlen = get_u16(&b[..], off + 2) as usize;
        let len = entry_len(nlen, vlen);
        crate::ensure_sane!(
            (NS_USER..=NS_SECURITY).contains(&ns) && nlen > 0 && off + len <= used,
            "xattr block of inode {ino}: entry {i} is malformed"
        );
        let name = b[off + ENTRY_HDR..off + ENTRY_HDR + nlen].to_vec();
        let value = b[off + ENTRY_HDR + nlen..off + ENTRY_HDR + nlen + vlen].to_vec();
        out.push(Xattr { ns, name, value });
        off += len;
    }
    crate::ensure_sane!(
        off == used,
        "xattr block of inode {ino}: entries end at {off}, header says {used}"
    );
    Ok(out)
}

fn block_set(
    tx: &mut Trans,
    d: &mut InodeData,
    ns: u8,
    n: &[u8],
    value: &[u8],
    create: bool,
    replace: bool,
) -> Result<()> {
    let mut attrs = block_load(tx, d)?;
    match attrs.iter_mut().find(|x| x.ns == ns && x.name == n) {
        Some(_) if create => return err(libc::EEXIST),
        Some(x) => x.value = value.to_vec(),
        None if replace => return err(libc::ENODATA),
        None => attrs.push(Xattr {
            ns,
            name: n.to_vec(),
            value: value.to_vec(),
        }),
    }
    block_store(tx, d, &attrs)
}

/// Write the attribute set back: a new block image, a fresh block, or none.
fn block_store(tx: &mut Trans, d: &mut InodeData, attrs: &[Xattr]) -> Result<()> {
    if attrs.is_empty() {
        if d.di.attr_blk != 0 {
            tx.forget_block(d.di.attr_blk);
            tx.defer_free(d.di.attr_blk, 1);
            d.di.attr_blk = 0;
        }
        return Ok(());
    }
    if block_bytes(attrs) > BLOCK_SIZE {
        return err(libc::ENOSPC);
    }
    if d.di.attr_blk == 0 {
        d.di.attr_blk = crate::space::alloc::alloc_exact_len(tx, tx.mp.ino_block(d.di.ino), 1)?;
    }
    let blk = d.di.attr_blk;
    let mut b = new_block();
    init_header(&mut b[..], ATTR_MAGIC, blk, d.di.ino, &tx.mp.sb.uuid);
    let mut off = AT_ENTRIES;
    for x in attrs {
        b[off] = x.ns;
        b[off + 1] = x.name.len() as u8;
        put_u16(&mut b[..], off + 2, x.value.len() as u16);
        b[off + ENTRY_HDR..off + ENTRY_HDR + x.name.len()].copy_from_slice(&x.name);
        let v = off + ENTRY_HDR + x.name.len();
        b[v..v + x.value.len()].copy_from_slice(&x.value);
        off += entry_len(x.name.len(), x.value.len());
    }
    put_u16(&mut b[..], AT_USED, off as u16);
    put_u16(&mut b[..], AT_COUNT, attrs.len() as u16);
    tx.write_meta(blk, &b);
    Ok(())
}
