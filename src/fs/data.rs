//! File data: open/release, read, write (holes allocated unwritten, filled, then
//! committed), truncate and its zeroed tail, fsync and the lazily written times,
//! copy_file_range.

use super::*;

impl Fs {
    /// Change the size: zero the tail of the new last block, free blocks past it in
    /// bounded transactions. The size changes in the first one. Layouts over what goes
    /// are broken first (layout.rs).
    pub(super) fn truncate(&self, inode: &Inode, size: u64, touch: bool) -> Result<()> {
        if size > FILE_SIZE_MAX {
            return err(libc::EFBIG);
        }
        let io = inode.iolock_excl();
        // Blocks from the new EOF block on are freed; going down, the part of the EOF
        // block past the new size is zeroed as well.
        let from = if size < inode.ilock_shared().di.size {
            size / BS * BS
        } else {
            size.div_ceil(BS) * BS
        };
        let broke = self.break_layouts(inode, &io, from, u64::MAX - from)?;
        let r = self.truncate_locked(inode, size, touch);
        drop(io);
        if broke {
            self.invalidate_cache(inode.ino, from, u64::MAX - from);
        }
        r
    }

    fn truncate_locked(&self, inode: &Inode, size: u64, touch: bool) -> Result<()> {
        let _mm = inode.mmaplock_excl();
        let mut first = true;
        loop {
            let mut tx = self.mp.trans_remove(4 * BTREE_LEVELS_MAX as u64)?;
            let mut d = inode.ilock_excl();
            let keep = size.div_ceil(BS);
            if first {
                let now = inode::now();
                if size < d.di.size {
                    self.zero_tail(&d, size);
                }
                if size != d.di.size || touch {
                    d.di.mtime = now;
                    d.di.ctime = now;
                }
                d.di.size = size;
                first = false;
            }
            let end = bmap::bounded_remove_end(&d.map, keep, u64::MAX);
            let more = end != u64::MAX;
            bmap::free_range(&mut tx, &mut d, keep, end - keep);
            bmap::sync_inode(&mut tx, &mut d)?;
            tx.commit()?;
            drop(d);
            if !more {
                return Ok(());
            }
        }
    }

    /// Zero bytes [size, end of its block) if that block holds written data, so bytes past
    /// EOF always read as zero when the file grows again.
    pub(super) fn zero_tail(&self, d: &InodeData, size: u64) {
        let within = size % BS;
        if within == 0 {
            return;
        }
        if let Some(e) = d.map.find(size / BS)
            && !e.unwritten
        {
            let at = dax::dev_off(&e, size / BS) + within;
            self.mp.dev.zero(at, BS - within);
            // Ordered before the commit of the new size: were the zeros lost in a crash
            // while a later extension of the file survived, the old bytes would show.
            self.mp.dev.flush(at, BS - within);
        }
    }

    // ------------------------------------------------------------------------------------
    // Open files and data.

    /// Open a file or directory: holds the inode until `release` (unlinked files live on).
    /// O_TRUNC with write access truncates here and always updates mtime and ctime, as
    /// POSIX requires of open (core callers; through FUSE the kernel sends O_TRUNC as a
    /// SETATTR after its ETXTBSY check, see fuse.rs `init`).
    pub fn open(&self, ino: Ino, flags: i32) -> Result<u64> {
        let inode = self.iget(ino)?;
        let (freed, kind) = {
            let d = inode.ilock_shared();
            check_open_allowed(&d, flags)?;
            (d.freed, d.di.kind())
        };
        if freed {
            return err(libc::ESTALE);
        }
        if flags & libc::O_TRUNC != 0
            && kind == FileKind::File
            && flags & libc::O_ACCMODE != libc::O_RDONLY
        {
            self.mp.check_writable()?;
            self.truncate(&inode, 0, true)?;
        }
        inode.opens.fetch_add(1, Ordering::AcqRel);
        Ok(self.next_fh.fetch_add(1, Ordering::Relaxed))
    }

    pub fn release(&self, ino: Ino, _fh: u64) {
        let Some(inode) = self.icache.lock().unwrap().get(&ino).cloned() else {
            return;
        };
        let _ = inode
            .opens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
        drop(inode);
        self.maybe_evict(ino);
    }

    /// Read up to `size` bytes at `off`; `reply` gets the bytes: a slice of the device when
    /// one written extent holds them all and no direct-access client may store into it
    /// (zero copy), else a gathered buffer. The blocks come from the fault path.
    pub fn read<R>(
        &self,
        ino: Ino,
        off: u64,
        size: u32,
        reply: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let inode = self.iget(ino)?;
        let _io = inode.iolock_shared();
        // The size is stable under the IOLOCK: every path that changes it holds it
        // exclusive, but a size commit of a client (under the invalidate lock, taken next).
        let (isize, kind) = {
            let d = inode.ilock_shared();
            (d.di.size, d.di.kind())
        };
        match kind {
            FileKind::File => {}
            FileKind::Dir => return err(libc::EISDIR),
            _ => return err(libc::EINVAL),
        }
        if off >= isize || size == 0 {
            self.touch_atime(&inode);
            return Ok(reply(&[]));
        }
        let len = (size as u64).min(isize - off);
        let (fb, lb) = (off / BS, (off + len - 1) / BS);
        let m = dax::fault(&self.mp, &inode, fb, lb - fb + 1, dax::FaultKind::Read)?;
        let pieces = &m.pieces;
        let r = if pieces.len() == 1
            && !pieces[0].unwritten
            && pieces[0].fileoff <= fb
            && pieces[0].end() > lb
            && !inode.has_leases()
        {
            let at = dax::dev_off(&pieces[0], fb) + off % BS;
            // SAFETY: the invalidate lock (shared, held by `m`) keeps these blocks mapped
            // to this file while the slice lives (it is handed to the reply and dropped
            // before `m`); the IOLOCK (shared) keeps writers of this file out, and no
            // direct-access client holds a lease here (it could store into the blocks,
            // which a Rust reference must never see: DESIGN.md 1).
            reply(unsafe { self.mp.dev.slice(at, len as usize) })
        } else {
            let mut buf = vec![0u8; len as usize];
            for p in pieces.iter().filter(|p| !p.unwritten) {
                let start = (p.fileoff * BS).max(off);
                let end = (p.end() * BS).min(off + len);
                if start >= end {
                    continue;
                }
                self.mp.dev.read(
                    dax::dev_off(p, start / BS) + start % BS,
                    &mut buf[(start - off) as usize..(end - off) as usize],
                );
            }
            reply(&buf)
        };
        drop(m);
        self.touch_atime(&inode);
        Ok(r)
    }

    /// atime per the mount's policy, in memory (written lazily, like lazytime).
    /// A file with the noatime flag (chattr +A) keeps its atime under every mount policy.
    pub(super) fn touch_atime(&self, inode: &Inode) {
        let now = inode::now();
        // Decide under the shared lock: parallel readers of one file rarely need more.
        if !self.atime_due(&inode.ilock_shared(), now) {
            return;
        }
        let mut d = inode.ilock_excl();
        if self.atime_due(&d, now) {
            d.di.atime = now;
            d.times_dirty = true;
        }
    }

    /// Would a read at `now` update the atime of `d`, under the mount's policy?
    pub(super) fn atime_due(&self, d: &InodeData, now: Timespec) -> bool {
        if self.mp.is_read_only() || d.di.flags & DIFLAG_NOATIME != 0 {
            return false;
        }
        match self.opts.atime {
            AtimeMode::Strictatime => d.di.atime != now,
            AtimeMode::Relatime => {
                d.di.atime <= d.di.mtime
                    || d.di.atime <= d.di.ctime
                    || d.di.atime.sec + 86400 <= now.sec
            }
            AtimeMode::Noatime => false,
        }
    }

    /// How the kernel may cache the data of `ino` for an open now (FUSE: the open
    /// flags). A read the kernel serves from its page cache never reaches the daemon, so
    /// never updates atime: under strictatime regular files bypass the cache; under
    /// relatime a file whose atime is due (written since it was last read, or a day old)
    /// has its cached pages dropped at this open, so that its first read comes here,
    /// and keeps them otherwise (the common case: a file read again and again). `flags`:
    /// the open's; a write-only open reads nothing, so it keeps the cache (an appender
    /// that opens, writes and closes again and again does not drop it each time).
    pub fn read_cache_policy(&self, ino: Ino, flags: i32) -> ReadCache {
        if self.inode_is_dax(ino) {
            return ReadCache::Bypass;
        }
        let Ok(inode) = self.iget(ino) else {
            return ReadCache::Keep; // the open itself reports the error
        };
        let d = inode.ilock_shared();
        if d.di.kind() != FileKind::File {
            return ReadCache::Keep;
        }
        if self.opts.atime == AtimeMode::Strictatime && d.di.flags & DIFLAG_NOATIME == 0 {
            return ReadCache::Bypass;
        }
        let reads = flags & libc::O_ACCMODE != libc::O_WRONLY;
        if reads && self.atime_due(&d, inode::now()) {
            ReadCache::Drop
        } else {
            ReadCache::Keep
        }
    }

    /// An immutable file takes no write, an append-only one only appends (`append`: the
    /// file was opened O_APPEND) (EPERM); a file with the sync flag is made durable before
    /// the write returns, as if fsync followed.
    pub fn write(&self, ino: Ino, off: u64, data: &[u8], append: bool) -> Result<u32> {
        self.mp.check_writable()?;
        let inode = self.iget(ino)?;
        let (n, sync) = self.write_locked(&inode, off, data, append)?;
        if sync {
            self.fsync(ino, false)?;
        }
        Ok(n)
    }

    /// `write` under the IOLOCK; also returns whether the file has the sync flag.
    fn write_locked(
        &self,
        inode: &Inode,
        off: u64,
        data: &[u8],
        append: bool,
    ) -> Result<(u32, bool)> {
        let _io = inode.iolock_excl();
        let (size, kind, flags) = {
            let d = inode.ilock_shared();
            (d.di.size, d.di.kind(), d.di.flags)
        };
        if flags & DIFLAG_IMMUTABLE != 0 || (flags & DIFLAG_APPEND != 0 && !append) {
            return err(libc::EPERM);
        }
        let sync = flags & DIFLAG_SYNC != 0;
        match kind {
            FileKind::File => {}
            FileKind::Dir => return err(libc::EISDIR),
            // Only regular files have data a write can reach (the kernel only writes to
            // them; a symlink's inline target must never be written as file data).
            _ => return err(libc::EINVAL),
        }
        let off = if append { size } else { off };
        if off >= FILE_SIZE_MAX {
            return err(libc::EFBIG);
        }
        let data = &data[..data.len().min((FILE_SIZE_MAX - off) as usize)];
        if data.is_empty() {
            return Ok((0, false));
        }
        let end = off + data.len() as u64;
        let now = inode::now();
        let (fb, lb) = (off / BS, (end - 1) / BS);
        let nblocks = lb - fb + 1;
        let m = dax::fault(&self.mp, inode, fb, nblocks, dax::FaultKind::Read)?;
        if m.all_written() {
            // Overwrite of written blocks: the mapping is stable under our IOLOCK and
            // the fault's invalidate lock, so copy without the ILOCK.
            // A write that moves EOF is ordered before the commit of the new size, as XFS
            // updates the on-disk size only at I/O completion: a crash never shows a size
            // whose last bytes read as zeros instead of what was written.
            self.copy_to_blocks(&m.pieces, off, data, end > size);
            if end > size {
                let mut tx = self.mp.trans(0)?;
                let mut d = inode.ilock_excl();
                d.di.size = d.di.size.max(end);
                d.di.mtime = now;
                d.di.ctime = now;
                bmap::sync_inode(&mut tx, &mut d)?;
                tx.commit()?;
                drop(d);
            } else {
                let mut d = inode.ilock_excl();
                d.di.mtime = now;
                d.di.ctime = now;
                d.times_dirty = true;
            }
            drop(m);
            return Ok((data.len() as u32, sync));
        }
        drop(m);
        // Holes or unwritten blocks get data: read leases over them mapped zeros.
        self.break_read_layouts(&inode, &_io, off, data.len() as u64, None)?;
        if nblocks >= SPLIT_WRITE_BLOCKS {
            // A large write allocates in a transaction of its own, then copies and flushes
            // its data holding only the inode's IOLOCK: no AG lock (every allocation in
            // that AG) is held while megabytes are copied and written back.
            // A crash in between leaves unwritten blocks, which read as zeros.
            let resblks = dax::write_resblks(nblocks);
            dax::fault(
                &self.mp,
                inode,
                fb,
                nblocks,
                dax::FaultKind::Write { resblks },
            )?
            .end(|_, _| Ok(()))?;
        }
        let resblks = if nblocks >= SPLIT_WRITE_BLOCKS {
            2 * BTREE_LEVELS_MAX as u64 // converting extents only
        } else {
            dax::write_resblks(nblocks)
        };
        // New blocks arrive unwritten, so every block the write touches is either written
        // (copy) or unwritten (zero what the write leaves, copy, then mark written): no
        // stale bytes can show, and no block is visible before this commit.
        let m = dax::fault(
            &self.mp,
            inode,
            fb,
            nblocks,
            dax::FaultKind::Write { resblks },
        )?;
        for p in m.pieces.iter().filter(|p| p.unwritten) {
            for b in [p.fileoff.max(fb), p.end().min(lb + 1) - 1] {
                let covered = b * BS >= off && (b + 1) * BS <= end;
                if !covered {
                    self.mp.dev.zero(dax::dev_off(p, b), BS);
                    self.mp.dev.flush(dax::dev_off(p, b), BS);
                }
            }
        }
        self.copy_to_blocks(&m.pieces, off, data, true);
        self.mp.order_before_commit();
        m.end(|_, d| {
            d.map.mark_written(fb, lb - fb + 1);
            d.di.size = d.di.size.max(end);
            d.di.mtime = now;
            d.di.ctime = now;
            Ok(())
        })?;
        Ok((data.len() as u32, sync))
    }

    /// Copy `data` (file bytes from `off`) into the blocks of `pieces` and flush them;
    /// `ordered`: the next fence on this thread must make them durable (new blocks, before
    /// the commit that maps them).
    pub(super) fn copy_to_blocks(&self, pieces: &[Extent], off: u64, data: &[u8], ordered: bool) {
        let end = off + data.len() as u64;
        for p in pieces {
            let start = (p.fileoff * BS).max(off);
            let stop = (p.end() * BS).min(end);
            if start >= stop {
                continue;
            }
            let at = dax::dev_off(p, start / BS) + start % BS;
            self.mp
                .dev
                .write(at, &data[(start - off) as usize..(stop - off) as usize]);
            if ordered {
                self.mp.dev.flush(at, stop - start);
            } else {
                self.mp.dev.flush_data(at, stop - start);
            }
        }
    }

    pub fn fsync(&self, ino: Ino, _datasync: bool) -> Result<()> {
        let inode = self.iget(ino)?;
        self.flush_times(&inode)?;
        trans::checkpoint(&self.mp)
    }

    /// Write timestamps changed in memory only.
    pub(super) fn flush_times(&self, inode: &Inode) -> Result<()> {
        if !inode.ilock_shared().times_dirty || self.mp.is_read_only() {
            return Ok(());
        }
        let mut tx = self.mp.trans(0)?;
        let mut d = inode.ilock_excl();
        if d.times_dirty && !d.freed {
            bmap::sync_inode(&mut tx, &mut d)?;
        }
        let r = tx.commit();
        drop(d);
        r
    }

    pub fn copy_file_range(
        &self,
        ino_in: Ino,
        off_in: u64,
        ino_out: Ino,
        off_out: u64,
        len: u64,
    ) -> Result<u64> {
        let mut done = 0u64;
        while done < len {
            let chunk = (len - done).min(1 << 20) as u32;
            let buf = self.read(ino_in, off_in + done, chunk, |b| b.to_vec())?;
            if buf.is_empty() {
                break;
            }
            let n = self.write(ino_out, off_out + done, &buf, false)?;
            done += n as u64;
            if (n as usize) < buf.len() {
                break;
            }
        }
        Ok(done)
    }
}

/// EPERM for an open that an immutable or append-only inode forbids (the VFS's may_open):
/// write access or O_TRUNC to an immutable one; write access without O_APPEND, or O_TRUNC,
/// to an append-only one.
fn check_open_allowed(d: &InodeData, flags: i32) -> Result<()> {
    let writes = flags & libc::O_ACCMODE != libc::O_RDONLY;
    let truncates = flags & libc::O_TRUNC != 0;
    if (writes || truncates) && d.di.flags & DIFLAG_IMMUTABLE != 0 {
        return err(libc::EPERM);
    }
    let appends = flags & libc::O_APPEND != 0;
    if d.di.flags & DIFLAG_APPEND != 0 && ((writes && !appends) || truncates) {
        return err(libc::EPERM);
    }
    Ok(())
}
