//! Layout grants over the core, for direct-access clients (the lease table is
//! dax/lease.rs, the socket daxserver.rs): map (and for writes, allocate) a byte range of
//! a file and record the lease, all under the inode's IOLOCK, so nothing that removes
//! blocks (which must break layouts under IOLOCK exclusive first) can run between the
//! lookup and the record.
//!
//! A write grant allocates every hole and converts every unwritten extent of its range,
//! also past EOF, as written blocks that were zeroed and flushed before the transaction
//! that maps them commits (as XFS-DAX allocates zeroed blocks in its fault path): a client
//! never sees another file's old bytes. The size does not change at a grant; the client
//! commits it (`layout_commit_size`) after persisting the data under it. Returning a write
//! lease restores "bytes past EOF read as zero" over what it could store into.
//!
//! First version by daxclient; daxcore moves the lookup onto the one fault path.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use daxfs_client::proto::{GRANT_LEN_MAX, RANGES_MAX};

use super::{DaxMode, FileKind, Fs};
use crate::dax::grant::cover;
use crate::dax::lease::{ClientId, LeaseError, LeaseId, LeaseState};
use crate::dax::{self, ClientInfo, Grant, LayoutError, LeaseInfo, RecallSink, lerr};
use crate::format::{BLOCK_SIZE, BTREE_LEVELS_MAX, DIFLAG_DAX, FILE_SIZE_MAX};
use crate::inode::{self, bmap};

const BS: u64 = BLOCK_SIZE as u64;

impl Fs {
    /// Is `ino`'s data open to direct access under this mount's dax= mode?
    fn layout_is_dax(&self, flags: u64) -> bool {
        match self.dax_mode() {
            DaxMode::Always => true,
            DaxMode::Never => false,
            DaxMode::Inode => flags & DIFLAG_DAX != 0,
        }
    }

    /// Register a connected client (its process, for `daxfs leases`).
    pub fn layout_client_new(&self, pid: u32, uid: u32) -> ClientId {
        let id = self.dax.next_client.fetch_add(1, Ordering::Relaxed) + 1;
        self.dax
            .clients
            .lock()
            .unwrap()
            .insert(id, ClientInfo { pid, uid });
        id
    }

    /// Grant `client` a lease over [off, off+len) of `ino`, for reading or writing.
    pub fn layout_grant(
        &self,
        ino: u64,
        client: ClientId,
        off: u64,
        len: u64,
        write: bool,
    ) -> Result<Grant, LayoutError> {
        let Some(info) = self.dax.clients.lock().unwrap().get(&client).copied() else {
            return Err(lerr(libc::ENOTCONN, "unknown client"));
        };
        if len == 0 {
            return Err(lerr(libc::EINVAL, "empty range"));
        }
        let aoff = off / BS * BS;
        if aoff >= FILE_SIZE_MAX / BS * BS {
            return Err(lerr(libc::EFBIG, "offset beyond the largest file size"));
        }
        let end = off
            .saturating_add(len)
            .min(FILE_SIZE_MAX / BS * BS)
            .div_ceil(BS)
            .saturating_mul(BS)
            .min(aoff + GRANT_LEN_MAX);
        if write {
            self.mp().check_writable()?;
        }
        let inode = self.iget(ino)?;
        {
            let d = inode.ilock_shared();
            if d.freed {
                return Err(lerr(libc::ESTALE, "the file was freed"));
            }
            if d.di.kind() != FileKind::File {
                return Err(lerr(libc::EINVAL, "not a regular file"));
            }
            if !self.layout_is_dax(d.di.flags) {
                return Err(lerr(
                    libc::EOPNOTSUPP,
                    "not a DAX file (mount with -o dax=always, or set FS_XFLAG_DAX: \
                     xfs_io -c 'chattr +x' FILE)",
                ));
            }
        }
        // The lease's inode reference: an open count, as an open file holds.
        self.open(ino, libc::O_RDONLY)?;
        let r = self.layout_grant_locked(&inode, client, info, aoff, end, write);
        if r.is_err() {
            self.release(ino, 0);
        }
        r
    }

    fn layout_grant_locked(
        &self,
        inode: &Arc<inode::Inode>,
        client: ClientId,
        info: ClientInfo,
        aoff: u64,
        end: u64,
        write: bool,
    ) -> Result<Grant, LayoutError> {
        let _io = if write {
            inode.iolock_excl()
        } else {
            inode.iolock_shared()
        };
        let _mm = inode.mmaplock_shared();
        let (fb, nb) = (aoff / BS, (end - aoff) / BS);
        if write {
            self.layout_allocate(inode, fb, nb)?;
        }
        let d = inode.ilock_shared();
        let mut ranges = cover(&d.map.range(fb, nb), fb, nb);
        ranges.truncate(RANGES_MAX);
        let last = ranges.last().expect("cover() of a non-empty range");
        let granted = last.file_off + last.len - aoff;
        debug_assert!(!write || ranges.iter().all(|r| r.dev_off.is_some()));
        let size = d.di.size;
        let lease = self
            .dax
            .table
            .insert(client, info, inode.ino, aoff, granted, write)
            .map_err(|e| match e {
                LeaseError::Full => lerr(
                    libc::ENOSPC,
                    "too many leases (per client or per mount); return some first",
                ),
                LeaseError::NotFound => lerr(libc::ENOENT, "no such lease"),
            })?;
        drop(d);
        Ok(Grant {
            lease,
            ino: inode.ino,
            size,
            off: aoff,
            len: granted,
            ranges,
        })
    }

    /// Allocate every hole of file blocks [fb, fb+nb) and convert every unwritten extent,
    /// as zeroed, written blocks, in one transaction (IOLOCK exclusive held).
    fn layout_allocate(&self, inode: &inode::Inode, fb: u64, nb: u64) -> Result<(), LayoutError> {
        let needs = {
            let d = inode.ilock_shared();
            let pieces = d.map.range(fb, nb);
            pieces
                .iter()
                .map(|p| p.end().min(fb + nb) - p.fileoff.max(fb))
                .sum::<u64>()
                != nb
                || pieces.iter().any(|p| p.unwritten)
        };
        if !needs {
            return Ok(());
        }
        let mp = self.mp();
        let mut tx = mp.trans(dax::write_resblks(nb) + 2 * BTREE_LEVELS_MAX as u64)?;
        let mut d = inode.ilock_excl();
        for p in d.map.range(fb, nb).iter().filter(|p| p.unwritten) {
            let (s, e) = (p.fileoff.max(fb), p.end().min(fb + nb));
            mp.dev.zero(dax::dev_off(p, s), (e - s) * BS);
            mp.dev.flush(dax::dev_off(p, s), (e - s) * BS);
        }
        dax::alloc_holes(&mut tx, &mut d, fb, nb, false, &mut |mp, blk, _, n| {
            mp.dev.zero(blk * BS, n * BS);
            mp.dev.flush(blk * BS, n * BS);
        })?;
        d.map.mark_written(fb, nb);
        mp.dev.fence();
        let now = inode::now();
        d.di.ctime = now;
        bmap::sync_inode(&mut tx, &mut d)?;
        tx.commit()?;
        drop(d);
        Ok(())
    }

    /// `client` gives `lease` back.
    pub fn layout_return(&self, client: ClientId, lease: LeaseId) -> Result<(), LayoutError> {
        let l = self
            .dax
            .table
            .remove(client, lease)
            .map_err(|_| lerr(libc::ENOENT, "no such lease of this client"))?;
        self.layout_drop(&l);
        Ok(())
    }

    /// A lease left the table: restore "bytes past EOF read as zero" over what it could
    /// store into, then drop its inode reference.
    fn layout_drop(&self, l: &LeaseInfo) {
        if l.write
            && let Err(e) = self.layout_trim_eof(l)
        {
            log::warn!(
                "inode {}: cannot discard uncommitted stores past EOF of lease {}: {}",
                l.ino,
                l.id,
                e.text
            );
        }
        self.release(l.ino, 0);
    }

    /// A write lease may have been stored into past EOF without a size commit. The core
    /// relies on bytes past EOF reading as zero (a later extension shows them), so: zero
    /// the rest of the EOF block and mark the blocks wholly past EOF unwritten (kept
    /// allocated, reading as zeros), except where another write lease still covers them.
    /// What a client never committed is gone, as it would be after a crash.
    fn layout_trim_eof(&self, l: &LeaseInfo) -> Result<(), LayoutError> {
        let inode = match self.iget(l.ino) {
            Ok(i) => i,
            Err(_) => return Ok(()), // freed: nothing to expose
        };
        let end = l.off + l.len;
        if inode.ilock_shared().di.size >= end {
            return Ok(());
        }
        let _io = inode.iolock_excl();
        let _mm = inode.mmaplock_excl();
        let (size, freed) = {
            let d = inode.ilock_shared();
            (d.di.size, d.freed)
        };
        if size >= end || freed {
            return Ok(());
        }
        let start = size.max(l.off);
        // [start, end) minus every other write lease over it.
        let mut others: Vec<(u64, u64)> = self
            .dax
            .table
            .overlapping(l.ino, start, end - start)
            .into_iter()
            .filter(|o| o.write)
            .map(|o| (o.off, o.off + o.len))
            .collect();
        others.sort();
        let mut pieces = Vec::new();
        let mut pos = start;
        for (a, b) in others {
            if a > pos {
                pieces.push((pos, a.min(end)));
            }
            pos = pos.max(b);
        }
        if pos < end {
            pieces.push((pos, end));
        }
        if pieces.is_empty() {
            return Ok(());
        }
        let mp = self.mp();
        let mut tx = mp.trans(4 * BTREE_LEVELS_MAX as u64 * pieces.len() as u64)?;
        let mut d = inode.ilock_excl();
        for (a, b) in pieces {
            let mut a = a;
            if a % BS != 0 {
                // Only the EOF block starts mid-block (lease ranges are block aligned).
                let blk_end = (a / BS + 1) * BS;
                if let Some(e) = d.map.find(a / BS)
                    && !e.unwritten
                {
                    let at = dax::dev_off(&e, a / BS) + a % BS;
                    mp.dev.zero(at, blk_end.min(b) - a);
                    mp.dev.flush(at, blk_end.min(b) - a);
                }
                a = blk_end;
            }
            if a < b {
                d.map.mark_unwritten(a / BS, (b - a) / BS);
            }
        }
        mp.dev.fence();
        bmap::sync_inode(&mut tx, &mut d)?;
        tx.commit()?;
        drop(d);
        Ok(())
    }

    /// Grow the file of `lease` to `new_size` (only grows; only inside the write lease's
    /// range). The client persisted the data under it first.
    pub fn layout_commit_size(
        &self,
        client: ClientId,
        lease: LeaseId,
        new_size: u64,
    ) -> Result<u64, LayoutError> {
        let l = match self.dax.table.get(lease) {
            Some(l) if l.client == client => l,
            _ => return Err(lerr(libc::ENOENT, "no such lease of this client")),
        };
        if l.state == LeaseState::Revoked {
            return Err(lerr(libc::EKEYREVOKED, "the lease was revoked"));
        }
        if !l.write {
            return Err(lerr(libc::EBADF, "size commit under a read lease"));
        }
        if new_size <= l.off || new_size > l.off + l.len {
            return Err(lerr(
                libc::EINVAL,
                format!(
                    "size {new_size} outside the lease's range {}+{}",
                    l.off, l.len
                ),
            ));
        }
        self.mp().check_writable()?;
        let inode = self.iget(l.ino)?;
        let _io = inode.iolock_excl();
        if inode.ilock_shared().di.size >= new_size {
            return Ok(l.ino);
        }
        let mut tx = self.mp().trans(0)?;
        let mut d = inode.ilock_excl();
        if d.freed {
            return Err(lerr(libc::ESTALE, "the file was freed"));
        }
        d.di.size = d.di.size.max(new_size);
        let now = inode::now();
        d.di.mtime = now;
        d.di.ctime = now;
        bmap::sync_inode(&mut tx, &mut d)?;
        tx.commit()?;
        drop(d);
        Ok(l.ino)
    }

    /// The client's process is gone or its connection closed: return all it held.
    pub fn layout_client_gone(&self, client: ClientId) {
        for l in self.dax.table.remove_client(client) {
            self.layout_drop(&l);
        }
        self.dax.clients.lock().unwrap().remove(&client);
    }

    /// Every lease, for `daxfs leases`.
    pub fn layout_list(&self) -> Vec<LeaseInfo> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let (page, more) = self.dax.table.list(after, 1024);
            after = page.last().map_or(after, |l| l.id);
            all.extend(page);
            if !more {
                return all;
            }
        }
    }

    /// A page of the lease list (the socket's LIST).
    pub fn layout_list_page(&self, after: LeaseId, n: usize) -> (Vec<LeaseInfo>, bool) {
        self.dax.table.list(after, n)
    }

    /// Ask every holder of a lease overlapping [off, off+len) of `ino` to give it back
    /// (marks them Recalled and tells the registered RecallSink). The waiting, revoking and
    /// quarantining around it are daxcore's. Returns the leases recalled.
    pub fn layout_recall(&self, ino: u64, off: u64, len: u64) -> Vec<LeaseId> {
        let sink = self.dax.sink.read().unwrap().clone();
        let mut v = Vec::new();
        for l in self.dax.table.overlapping(ino, off, len) {
            if l.state != LeaseState::Granted {
                continue;
            }
            self.dax.table.set_state(l.id, LeaseState::Recalled);
            self.dax.table.stats.recalls.fetch_add(1, Ordering::Relaxed);
            if let Some(s) = &sink {
                s.recall(l.client, l.id, l.ino, l.off, l.len);
            }
            v.push(l.id);
        }
        v
    }
}

impl Fs {
    /// Interim, until layouts are broken (recall, wait, revoke, quarantine: daxcore): a
    /// path about to remove or move the blocks of [off, off+len) of `inode` fails with
    /// ETXTBSY while a lease covers any of them, as a running program's text cannot be
    /// written. Called holding IOLOCK exclusive, which grants also take, so no lease can
    /// appear between this check and the change.
    pub(super) fn layout_guard(
        &self,
        inode: &inode::Inode,
        off: u64,
        len: u64,
    ) -> crate::error::Result<()> {
        if self.dax.table.overlapping(inode.ino, off, len).is_empty() {
            Ok(())
        } else {
            crate::error::err(libc::ETXTBSY)
        }
    }

    /// The socket server registers how to reach clients (None at shutdown).
    pub fn set_recall_sink(&self, sink: Option<Arc<dyn RecallSink>>) {
        *self.dax.sink.write().unwrap() = sink;
    }
}
