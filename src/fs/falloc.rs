//! fallocate (default, KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE, COLLAPSE_RANGE, INSERT_RANGE) and
//! lseek's SEEK_DATA/SEEK_HOLE: the operations that change a file's layout without data.

use super::*;

impl Fs {
    /// fallocate(2): `mode` is the FALLOC_FL_* bits.
    pub fn fallocate(&self, ino: Ino, off: u64, len: u64, mode: i32) -> Result<()> {
        self.mp.check_writable()?;
        if len == 0 {
            return err(libc::EINVAL);
        }
        let Some(end) = off.checked_add(len).filter(|&e| e <= FILE_SIZE_MAX) else {
            return err(libc::EFBIG);
        };
        let inode = self.iget(ino)?;
        if inode.ilock_shared().di.kind() != FileKind::File {
            return err(if inode.ilock_shared().di.is_dir() {
                libc::EISDIR
            } else {
                libc::ENODEV
            });
        }
        let keep = mode & FALLOC_FL_KEEP_SIZE != 0;
        // vfs_fallocate's rules: an append-only file takes only a plain allocation, an
        // immutable one nothing.
        {
            let d = inode.ilock_shared();
            check_mutable(&d)?;
            if mode & !FALLOC_FL_KEEP_SIZE != 0 {
                check_not_append_only(&d)?;
            }
        }
        match mode & !FALLOC_FL_KEEP_SIZE {
            0 => self.falloc_alloc(&inode, off, end, keep),
            FALLOC_FL_PUNCH_HOLE if keep => self.falloc_punch(&inode, off, end),
            FALLOC_FL_ZERO_RANGE => self.falloc_zero(&inode, off, end, keep),
            FALLOC_FL_COLLAPSE_RANGE if !keep => self.falloc_collapse(&inode, off, len),
            FALLOC_FL_INSERT_RANGE if !keep => self.falloc_insert(&inode, off, len),
            FALLOC_FL_UNSHARE_RANGE => Ok(()), // no shared blocks exist (no reflink yet)
            FALLOC_FL_PUNCH_HOLE => err(libc::EOPNOTSUPP),
            _ => err(libc::EOPNOTSUPP),
        }
    }

    /// Allocate unwritten blocks for the holes of [off, end), in bounded transactions.
    pub(super) fn alloc_unwritten(
        &self,
        inode: &Inode,
        off: u64,
        end: u64,
        new_size: Option<u64>,
    ) -> Result<()> {
        let (fb, lb) = (off / BS, end.div_ceil(BS));
        let mut pos = fb;
        while pos < lb {
            // A piece whose worst case fits in what is left (dax::blocks_fitting).
            let chunk =
                dax::blocks_fitting(self.mp.avail_blocks(), (lb - pos).min(ALLOC_CHUNK_BLOCKS));
            if chunk == 0 {
                return err(libc::ENOSPC);
            }
            let mut tx = self.mp.trans(dax::write_resblks(chunk))?;
            let mut d = inode.ilock_excl();
            dax::alloc_holes(&mut tx, &mut d, pos, chunk, true, &mut |_, _, _, _| {})?;
            pos += chunk;
            let now = inode::now();
            if pos >= lb
                && let Some(s) = new_size
            {
                d.di.size = d.di.size.max(s);
            }
            d.di.mtime = now;
            d.di.ctime = now;
            bmap::sync_inode(&mut tx, &mut d)?;
            tx.commit()?;
            drop(d);
        }
        Ok(())
    }

    pub(super) fn falloc_alloc(&self, inode: &Inode, off: u64, end: u64, keep: bool) -> Result<()> {
        let _io = inode.iolock_excl();
        let _mm = inode.mmaplock_shared();
        self.alloc_unwritten(inode, off, end, (!keep).then_some(end))
    }

    /// Zero the bytes of [off, end) that lie in written blocks, at the partial blocks at
    /// either edge of the range (whole blocks are handled by the caller).
    pub(super) fn zero_partial_edges(&self, d: &InodeData, off: u64, end: u64) {
        let mut edges = vec![(off, end.min((off / BS + 1) * BS))];
        if !end.is_multiple_of(BS) && end / BS != off / BS {
            edges.push(((end / BS) * BS, end));
        }
        for (s, e) in edges {
            if s % BS == 0 && e - s == BS {
                continue; // a whole block, not an edge
            }
            if let Some(x) = d.map.find(s / BS)
                && !x.unwritten
            {
                let at = dax::dev_off(&x, s / BS) + s % BS;
                self.mp.dev.zero(at, e - s);
                // Ordered before the commit that follows (as in `zero_tail`).
                self.mp.dev.flush(at, e - s);
            }
        }
    }

    /// Remove whole blocks [fb, lb) in bounded transactions; `last` runs in the final one.
    pub(super) fn remove_blocks(
        &self,
        inode: &Inode,
        fb: u64,
        lb: u64,
        last: &mut dyn FnMut(&mut Trans, &mut InodeData) -> Result<()>,
    ) -> Result<()> {
        loop {
            let mut tx = self.mp.trans_remove(4 * BTREE_LEVELS_MAX as u64)?;
            let mut d = inode.ilock_excl();
            let stop = if fb < lb {
                bmap::bounded_remove_end(&d.map, fb, lb)
            } else {
                lb
            };
            if fb < stop {
                bmap::free_range(&mut tx, &mut d, fb, stop - fb);
            }
            let done = stop >= lb;
            if done {
                last(&mut tx, &mut d)?;
            }
            let now = inode::now();
            d.di.mtime = now;
            d.di.ctime = now;
            bmap::sync_inode(&mut tx, &mut d)?;
            tx.commit()?;
            drop(d);
            if done {
                return Ok(());
            }
        }
    }

    /// Run `f` (which changes the layout of bytes [off, end)) with the IOLOCK exclusive,
    /// after the layouts over that range were broken (layout.rs); `f` takes the
    /// invalidate lock. The kernel's cache of the range is invalidated after the locks go.
    fn with_layouts_broken(
        &self,
        inode: &Inode,
        off: u64,
        end: u64,
        f: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let io = inode.iolock_excl();
        let broke = self.break_layouts(inode, &io, off, end - off)?;
        let r = f();
        drop(io);
        if broke {
            self.invalidate_cache(inode.ino, off, end - off);
        }
        r
    }

    pub(super) fn falloc_punch(&self, inode: &Inode, off: u64, end: u64) -> Result<()> {
        self.with_layouts_broken(inode, off, end, || {
            let _mm = inode.mmaplock_excl();
            self.zero_partial_edges(&inode.ilock_shared(), off, end);
            self.remove_blocks(inode, off.div_ceil(BS), end / BS, &mut |_, _| Ok(()))
        })
    }

    pub(super) fn falloc_zero(&self, inode: &Inode, off: u64, end: u64, keep: bool) -> Result<()> {
        self.with_layouts_broken(inode, off, end, || {
            self.falloc_zero_locked(inode, off, end, keep)
        })
    }

    fn falloc_zero_locked(&self, inode: &Inode, off: u64, end: u64, keep: bool) -> Result<()> {
        let _mm = inode.mmaplock_excl();
        self.zero_partial_edges(&inode.ilock_shared(), off, end);
        {
            let (fb, lb) = (off.div_ceil(BS), end / BS);
            if fb < lb {
                let mut tx = self.mp.trans(0)?;
                let mut d = inode.ilock_excl();
                d.map.mark_unwritten(fb, lb - fb);
                bmap::sync_inode(&mut tx, &mut d)?;
                tx.commit()?;
                drop(d);
            }
        }
        self.alloc_unwritten(inode, off, end, (!keep).then_some(end))
    }

    pub(super) fn falloc_collapse(&self, inode: &Inode, off: u64, len: u64) -> Result<()> {
        if !off.is_multiple_of(BS) || !len.is_multiple_of(BS) {
            return err(libc::EINVAL);
        }
        // Everything from `off` on moves: break the layouts over all of it.
        self.with_layouts_broken(inode, off, u64::MAX, || {
            let _mm = inode.mmaplock_excl();
            if off + len >= inode.ilock_shared().di.size {
                return err(libc::EINVAL);
            }
            let (fb, nb) = (off / BS, len / BS);
            self.remove_blocks(inode, fb, fb + nb, &mut |_, d| {
                d.map.shift_down(fb, nb);
                d.di.size -= len;
                Ok(())
            })
        })
    }

    pub(super) fn falloc_insert(&self, inode: &Inode, off: u64, len: u64) -> Result<()> {
        if !off.is_multiple_of(BS) || !len.is_multiple_of(BS) {
            return err(libc::EINVAL);
        }
        self.with_layouts_broken(inode, off, u64::MAX, || {
            self.falloc_insert_locked(inode, off, len)
        })
    }

    fn falloc_insert_locked(&self, inode: &Inode, off: u64, len: u64) -> Result<()> {
        let _mm = inode.mmaplock_excl();
        let mut tx = self.mp.trans(2 * BTREE_LEVELS_MAX as u64)?;
        let mut d = inode.ilock_excl();
        if off >= d.di.size {
            return err(libc::EINVAL);
        }
        if d.di.size + len > FILE_SIZE_MAX {
            return err(libc::EFBIG);
        }
        if d.map.shift_up(off / BS, len / BS).is_err() {
            return err(libc::EFBIG);
        }
        let now = inode::now();
        d.di.size += len;
        d.di.mtime = now;
        d.di.ctime = now;
        bmap::sync_inode(&mut tx, &mut d)?;
        let r = tx.commit();
        drop(d);
        r
    }

    /// SEEK_DATA / SEEK_HOLE (other whence values are the kernel's). Unwritten extents
    /// are holes.
    pub fn lseek(&self, ino: Ino, off: u64, whence: i32) -> Result<u64> {
        let inode = self.iget(ino)?;
        let d = inode.ilock_shared();
        let size = d.di.size;
        if off >= size {
            return err(libc::ENXIO);
        }
        match whence {
            libc::SEEK_DATA => match d.map.next_data(off / BS) {
                Some(b) if b * BS < size => Ok(off.max(b * BS)),
                _ => err(libc::ENXIO),
            },
            libc::SEEK_HOLE => Ok(off.max(d.map.next_hole(off / BS) * BS).min(size)),
            _ => err(libc::EINVAL),
        }
    }
}
