//! Extended attributes: the attribute fork is one metadata block per inode holding every
//! attribute packed (namespace, name, value), rewritten whole on each change. So an
//! inode's attributes total at most one block (as ext4 without ea_inode); more is ENOSPC.
//! The namespaces are user, trusted and security; system.* (POSIX ACLs) is EOPNOTSUPP.

use crate::btree::BlockIo;
use crate::error::{FsError, Result, err};
use crate::format::*;
use crate::inode::InodeData;
use crate::log::trans::Trans;

const NS_USER: u8 = 1;
const NS_TRUSTED: u8 = 2;
const NS_SECURITY: u8 = 3;
const PREFIXES: [(&[u8], u8); 3] = [
    (b"user.", NS_USER),
    (b"trusted.", NS_TRUSTED),
    (b"security.", NS_SECURITY),
];
pub const VALUE_MAX: usize = 65536;
const ENTRY_HDR: usize = 4;

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
            if rest.len() > 255 {
                return err(libc::ERANGE);
            }
            return Ok((ns, rest));
        }
    }
    err(libc::EOPNOTSUPP)
}

fn full_name(x: &Xattr) -> Vec<u8> {
    let p = PREFIXES
        .iter()
        .find(|(_, ns)| *ns == x.ns)
        .map(|(p, _)| *p)
        .unwrap_or(b"");
    [p, &x.name[..]].concat()
}

/// Every attribute of the inode.
pub fn load<I: BlockIo>(io: &mut I, d: &InodeData) -> Result<Vec<Xattr>> {
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

/// Write the attribute set back: a new block image, a fresh block, or none.
fn store(tx: &mut Trans, d: &mut InodeData, attrs: &[Xattr]) -> Result<()> {
    if attrs.is_empty() {
        if d.di.attr_blk != 0 {
            tx.forget_block(d.di.attr_blk);
            tx.defer_free(d.di.attr_blk, 1);
            d.di.attr_blk = 0;
        }
        return Ok(());
    }
    let total: usize = AT_ENTRIES
        + attrs
            .iter()
            .map(|x| entry_len(x.name.len(), x.value.len()))
            .sum::<usize>();
    if total > BLOCK_SIZE {
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

pub fn get<I: BlockIo>(io: &mut I, d: &InodeData, name: &[u8]) -> Result<Vec<u8>> {
    let (ns, n) = split_name(name)?;
    load(io, d)?
        .into_iter()
        .find(|x| x.ns == ns && x.name == n)
        .map(|x| x.value)
        .ok_or(FsError::Errno(libc::ENODATA))
}

pub fn list<I: BlockIo>(io: &mut I, d: &InodeData) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for x in load(io, d)? {
        out.extend_from_slice(&full_name(&x));
        out.push(0);
    }
    Ok(out)
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
    let mut attrs = load(tx, d)?;
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
    store(tx, d, &attrs)
}

pub fn remove(tx: &mut Trans, d: &mut InodeData, name: &[u8]) -> Result<()> {
    let (ns, n) = split_name(name)?;
    let mut attrs = load(tx, d)?;
    let before = attrs.len();
    attrs.retain(|x| !(x.ns == ns && x.name == n));
    if attrs.len() == before {
        return err(libc::ENODATA);
    }
    store(tx, d, &attrs)
}

/// Drop the whole attribute fork (inode being freed). The block is verified first, as
/// every other path reads it before changing it: a pointer in a damaged inode must not
/// free a block outside the device or one that is not this inode's.
pub fn remove_all(tx: &mut Trans, d: &mut InodeData) -> Result<()> {
    if d.di.attr_blk != 0 {
        tx.read_meta(d.di.attr_blk, ATTR_MAGIC, Some(d.di.ino), "xattr")?;
    }
    store(tx, d, &[])
}

/// Would these attributes fit (so set can check before changing anything)?
pub fn fits(attrs: &[Xattr]) -> bool {
    AT_ENTRIES
        + attrs
            .iter()
            .map(|x| entry_len(x.name.len(), x.value.len()))
            .sum::<usize>()
        <= BLOCK_SIZE
}
