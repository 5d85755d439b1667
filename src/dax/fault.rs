//! The one fault path (DESIGN.md 6, XFS's iomap_begin/iomap_end): the only way the data
//! paths look up or allocate the blocks of a file range. FUSE read and write,
//! copy_file_range (through them) and layout grants all come here.
//!
//! `fault(mp, inode, range, kind)` is iomap_begin: it takes the invalidate lock (MMAPLOCK)
//! shared, enters the mapping's allocation context (`Inode::mapping_mask`, set once at inode
//! setup; reference/004: never cleared and restored around calls), reads the extent map,
//! and for a write allocates the holes in a transaction. The returned `Iomap` holds the
//! lock (and, for `Write`, the open transaction and the ILOCK) until `end` (iomap_end)
//! commits, or until it is dropped. So no block it returned can be removed or moved while
//! the caller uses it: removers take MMAPLOCK exclusive.
//!
//! Kinds:
//! - `Read`: look up only; holes and unwritten extents read as zeros.
//! - `Write`: allocate holes *unwritten*; the caller fills them (copy, zero the edges),
//!   then `end` marks them written and commits: no block is visible in the file before it
//!   was written (crash-safe: a crash before the commit leaves nothing mapped).
//! - `WriteZeroed`: allocate holes and convert unwritten extents as zeroed, written
//!   blocks, committed before the return (XFS-DAX allocates zeroed blocks in its fault
//!   path): for a direct-access client, which stores without telling the filesystem, so
//!   no client can ever see another file's old bytes.
//!
//! Lock order: the caller holds IOLOCK (shared to read, exclusive to write); fault takes
//! MMAPLOCK shared, then begins the transaction, then the ILOCK (inode/mod.rs).

use crate::error::Result;
use crate::format::*;
use crate::inode::extent_map::Extent;
use crate::inode::{IlockExcl, Inode, InodeData, MmapLockGuard, bmap};
use crate::log::mp::Mp;
use crate::log::trans::Trans;
use crate::mem::{AllocContext, NofsGuard, NoioGuard, nofs_scope, noio_scope};

const BS: u64 = BLOCK_SIZE as u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Read,
    /// Allocate holes unwritten in a transaction reserving `resblks`, left open for `end`.
    Write {
        resblks: u64,
    },
    WriteZeroed,
}

/// The allocation context of a mapping, entered as a scope.
enum CtxScope {
    Full,
    NoFs(#[allow(dead_code)] NofsGuard),
    NoIo(#[allow(dead_code)] NoioGuard),
}

fn enter(ctx: AllocContext) -> CtxScope {
    match ctx {
        AllocContext::Full => CtxScope::Full,
        AllocContext::NoFs => CtxScope::NoFs(nofs_scope()),
        AllocContext::NoIo => CtxScope::NoIo(noio_scope()),
    }
}

/// A mapped file range (iomap): the extents over file blocks [fb, fb+nb) as the extent
/// map has them (holes are the gaps), valid while this lives.
pub struct Iomap<'a> {
    // Field order is drop order: the ILOCK and the transaction end before the
    // invalidate lock and the allocation scope.
    d: Option<IlockExcl<'a>>,
    tx: Option<Trans<'a>>,
    _mm: MmapLockGuard<'a>,
    _ctx: CtxScope,
    pub fb: u64,
    pub nb: u64,
    pub pieces: Vec<Extent>,
}

impl<'a> Iomap<'a> {
    /// True when every block of the range is mapped and written.
    pub fn all_written(&self) -> bool {
        covered(&self.pieces, self.fb, self.nb) == self.nb
            && self.pieces.iter().all(|p| !p.unwritten)
    }

    /// The inode data under the ILOCK this write fault holds (None for reads).
    pub fn data(&mut self) -> Option<&mut InodeData> {
        self.d.as_deref_mut()
    }

    /// iomap_end: run `f` on the transaction and the locked inode data (a write fault),
    /// then commit. For a read fault there is nothing to commit and `f` is not called.
    pub fn end(
        mut self,
        f: impl FnOnce(&mut Trans<'a>, &mut InodeData) -> Result<()>,
    ) -> Result<()> {
        let (Some(mut tx), Some(mut d)) = (self.tx.take(), self.d.take()) else {
            return Ok(());
        };
        f(&mut tx, &mut d)?;
        bmap::sync_inode(&mut tx, &mut d)?;
        let r = tx.commit();
        drop(d);
        r
    }
}

/// Blocks of [fb, fb+nb) that `pieces` map.
fn covered(pieces: &[Extent], fb: u64, nb: u64) -> u64 {
    pieces
        .iter()
        .map(|p| p.end().min(fb + nb).saturating_sub(p.fileoff.max(fb)))
        .sum()
}

/// iomap_begin over file blocks [fb, fb+nb) of `inode` (see the module doc). The caller
/// holds the IOLOCK.
pub fn fault<'a>(
    mp: &'a Mp,
    inode: &'a Inode,
    fb: u64,
    nb: u64,
    kind: FaultKind,
) -> Result<Iomap<'a>> {
    let mm = inode.mmaplock_shared();
    let ctx = enter(inode.mapping_mask);
    let pieces = inode.ilock_shared().map.range(fb, nb);
    let mut m = Iomap {
        d: None,
        tx: None,
        _mm: mm,
        _ctx: ctx,
        fb,
        nb,
        pieces,
    };
    match kind {
        FaultKind::Read => {}
        FaultKind::Write { resblks } => {
            allocating(mp, inode);
            let mut tx = mp.trans(resblks)?;
            let mut d = inode.ilock_excl();
            crate::dax::alloc_holes(&mut tx, &mut d, fb, nb, true, &mut |_, _, _, _| {})?;
            m.pieces = d.map.range(fb, nb);
            m.tx = Some(tx);
            m.d = Some(d);
        }
        FaultKind::WriteZeroed => {
            if !m.all_written() {
                allocating(mp, inode);
                alloc_zeroed(mp, inode, fb, nb)?;
                m.pieces = inode.ilock_shared().map.range(fb, nb);
            }
            debug_assert!(m.all_written());
        }
    }
    Ok(m)
}

/// Allocating grows the extent map (a record or two per hole filled): past the memory
/// budget, reclaim first, in the mapping's own mask and this thread's scope, whichever is
/// stricter (mem/), before the transaction begins.
fn allocating(mp: &Mp, inode: &Inode) {
    mp.mem.allocating(
        2 * crate::inode::extent_map::RECORD_BYTES,
        inode.mapping_mask,
    );
}

/// Allocate every hole of [fb, fb+nb) and convert every unwritten extent there, as
/// zeroed, written blocks, in one committed transaction: the zeros are flushed and
/// fenced before the commit that maps them.
fn alloc_zeroed(mp: &Mp, inode: &Inode, fb: u64, nb: u64) -> Result<()> {
    let mut tx = mp.trans(crate::dax::write_resblks(nb) + 2 * BTREE_LEVELS_MAX as u64)?;
    let mut d = inode.ilock_excl();
    for p in d.map.range(fb, nb).iter().filter(|p| p.unwritten) {
        let (s, e) = (p.fileoff.max(fb), p.end().min(fb + nb));
        mp.dev.zero(crate::dax::dev_off(p, s), (e - s) * BS);
        mp.dev.flush(crate::dax::dev_off(p, s), (e - s) * BS);
    }
    crate::dax::alloc_holes(&mut tx, &mut d, fb, nb, false, &mut |mp, blk, _, n| {
        mp.dev.zero(blk * BS, n * BS);
        mp.dev.flush(blk * BS, n * BS);
    })?;
    d.map.mark_written(fb, nb);
    mp.order_before_commit();
    d.di.ctime = crate::inode::now();
    bmap::sync_inode(&mut tx, &mut d)?;
    let r = tx.commit();
    drop(d);
    r
}
