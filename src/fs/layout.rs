//! Layout leases over the core (DESIGN.md 6, 6a): grant, return, size commit, a client
//! gone, and breaking layouts before blocks are removed or moved.
//!
//! Grant: under the IOLOCK (shared for a read lease, exclusive for a write lease), the
//! one fault path maps the range (`dax::fault`; a write grant allocates zeroed, written
//! blocks, also past EOF) and the lease is recorded while the invalidate lock is still
//! held, so no remover can slip between the lookup and the record.
//!
//! Break (`break_layouts`, before truncate, punch, zero/collapse/insert range): holding the
//! IOLOCK exclusive (so no new grant or write starts), recall every overlapping lease, wait
//! up to `lease_break_ms` for the returns *without* the invalidate lock (reference/003:
//! xfs_break_dax_layouts drops MMAPLOCK while it waits; a client answering its recall may
//! need to commit a size, which takes MMAPLOCK shared), then revoke what was not returned:
//! the client is fenced (its grants and size commits fail with the reason, until it
//! returns the revoked lease or is gone) and the device blocks the lease had are
//! quarantined: their frees are held on the log's pending list (log/holds.rs) and reach the
//! free-space trees only when the client returns the lease or is gone. Only then does the
//! caller take the invalidate lock exclusive and change the extent map, and, once it has
//! let go of the inode's locks, invalidate the kernel's cache of the range.
//!
//! Eviction never breaks a lease: an inode with leases is referenced (inode/lease.rs).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::*;
use crate::dax::grant::{GRANT_LEN_MAX, RANGES_MAX, cover};
use crate::dax::{
    ClientId, ClientInfo, FaultKind, Grant, LayoutError, Lease, LeaseId, LeaseState, RecallSink,
    lerr,
};
use crate::inode::IoLockGuard;

/// The default time a recall waits before it revokes: see `FsOptions::lease_break_ms`.
pub const LEASE_BREAK_MS_DEFAULT: u64 = 1000;
/// The longest `lease_break_ms` accepted: the wait holds the file's IOLOCK.
pub const LEASE_BREAK_MS_MAX: u64 = 60_000;

/// How the core tells the kernel that its cached pages of a file range are stale (FUSE
/// notify inval_inode in fuse.rs); the core itself knows nothing of FUSE.
pub trait CacheInvalidator: Send + Sync {
    fn invalidate(&self, ino: Ino, off: u64, len: u64);
    /// Ask the kernel to drop its dentry `name` in directory `parent` (FUSE notify
    /// inval_entry), so that it forgets the inode once nothing else holds it. Must not
    /// wait for the kernel (the caller is the background reclaimer). A cache that holds
    /// no names has nothing to forget.
    fn forget_entry(&self, _parent: Ino, _name: &[u8]) {}
}

/// The direct-access state of a mount (a field of `Fs`).
pub struct DaxState {
    pub table: crate::dax::LeaseTable,
    clients: Mutex<HashMap<ClientId, ClientInfo>>,
    next_client: AtomicU64,
    sink: RwLock<Option<Arc<dyn RecallSink>>>,
    inval: RwLock<Option<Arc<dyn CacheInvalidator>>>,
    lease_break: Duration,
}

impl DaxState {
    /// The kernel-cache invalidator, once the FUSE session has set one.
    pub(super) fn invalidator(&self) -> Option<Arc<dyn CacheInvalidator>> {
        self.inval.read().unwrap().clone()
    }

    pub(super) fn new(opts: &FsOptions) -> DaxState {
        DaxState {
            table: Default::default(),
            clients: Mutex::new(HashMap::new()),
            next_client: AtomicU64::new(0),
            sink: RwLock::new(None),
            inval: RwLock::new(None),
            lease_break: Duration::from_millis(opts.lease_break_ms.min(LEASE_BREAK_MS_MAX)),
        }
    }

    /// Lines for `daxfs stat`.
    pub(super) fn stats_text(&self, quarantined: u64) -> String {
        let s = &self.table.stats;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "dax_clients {}\ndax_leases {}\ndax_grants {}\ndax_returns {}\ndax_recalls {}\n\
             dax_revokes {}\ndax_break_waits {}\ndax_longest_break_us {}\n\
             dax_quarantined_blocks {quarantined}\n",
            self.clients.lock().unwrap().len(),
            self.table.count(),
            g(&s.grants),
            g(&s.returns),
            g(&s.recalls),
            g(&s.revokes),
            g(&s.break_waits),
            g(&s.longest_break_us),
        )
    }
}

fn full_err(e: crate::dax::lease::LeaseError) -> LayoutError {
    match e {
        crate::dax::lease::LeaseError::Full => lerr(
            libc::ENOSPC,
            "too many leases (per client or per mount); return some first",
        ),
        crate::dax::lease::LeaseError::NotFound => lerr(libc::ENOENT, "no such lease"),
    }
}

impl Fs {
    /// Is a file with inode flags `flags` a DAX file under this mount's dax= mode? DAX
    /// files can be mapped by clients and are served to FUSE without the page cache.
    pub fn is_dax(&self, flags: u64) -> bool {
        match self.opts.dax {
            DaxMode::Always => true,
            DaxMode::Never => false,
            DaxMode::Inode => flags & DIFLAG_DAX != 0,
        }
    }

    /// Is file `ino` a DAX file now (false for anything that is not a regular file)?
    pub fn inode_is_dax(&self, ino: Ino) -> bool {
        self.iget(ino).is_ok_and(|i| {
            let d = i.ilock_shared();
            d.di.kind() == FileKind::File && self.is_dax(d.di.flags)
        })
    }

    pub fn set_recall_sink(&self, sink: Option<Arc<dyn RecallSink>>) {
        *self.dax.sink.write().unwrap() = sink;
    }

    pub fn set_cache_invalidator(&self, inval: Option<Arc<dyn CacheInvalidator>>) {
        *self.dax.inval.write().unwrap() = inval;
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

    fn client_checked(&self, client: ClientId) -> std::result::Result<ClientInfo, LayoutError> {
        let Some(info) = self.dax.clients.lock().unwrap().get(&client).copied() else {
            return Err(lerr(libc::ENOTCONN, "unknown client"));
        };
        if let Some(why) = self.dax.table.fenced(client) {
            return Err(lerr(libc::EKEYREVOKED, why));
        }
        Ok(info)
    }

    /// Grant `client` a lease over bytes [off, off+len) of `ino`, for reading or writing.
    pub fn layout_grant(
        &self,
        ino: Ino,
        client: ClientId,
        off: u64,
        len: u64,
        write: bool,
    ) -> std::result::Result<Grant, LayoutError> {
        let info = self.client_checked(client)?;
        if len == 0 {
            return Err(lerr(libc::EINVAL, "empty range"));
        }
        let top = FILE_SIZE_MAX / BS * BS;
        let aoff = off / BS * BS;
        if aoff >= top {
            return Err(lerr(libc::EFBIG, "offset beyond the largest file size"));
        }
        let end = off
            .saturating_add(len)
            .min(top)
            .div_ceil(BS)
            .saturating_mul(BS)
            .min(aoff + GRANT_LEN_MAX);
        if write {
            self.mp.check_writable()?;
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
            // A client's stores go anywhere in its range: none into a file that may not
            // change or may only grow.
            if write && d.di.flags & (DIFLAG_IMMUTABLE | DIFLAG_APPEND) != 0 {
                return Err(lerr(
                    libc::EPERM,
                    "the file is immutable or append-only (chattr -i/-a to write it)",
                ));
            }
            if !self.is_dax(d.di.flags) {
                return Err(lerr(
                    libc::EOPNOTSUPP,
                    "not a DAX file (mount with -o dax=always, or set FS_XFLAG_DAX: \
                     xfs_io -c 'chattr +x' FILE)",
                ));
            }
        }
        let _io = if write {
            inode.iolock_excl()
        } else {
            inode.iolock_shared()
        };
        if write {
            // The grant fills holes with zeroed blocks: other clients' read leases there
            // mapped holes.
            self.break_read_layouts(&inode, &_io, aoff, end - aoff, Some(client))?;
        }
        let (fb, nb) = (aoff / BS, (end - aoff) / BS);
        let kind = if write {
            FaultKind::WriteZeroed
        } else {
            FaultKind::Read
        };
        let m = dax::fault(&self.mp, &inode, fb, nb, kind)?;
        let mut ranges = cover(&m.pieces, fb, nb);
        ranges.truncate(RANGES_MAX);
        let last = ranges.last().expect("cover() of a non-empty range");
        let granted = last.file_off + last.len - aoff;
        debug_assert!(!write || ranges.iter().all(|r| r.dev_off.is_some()));
        let dev = ranges
            .iter()
            .filter_map(|r| r.dev_off.map(|d| (d / BS, r.len / BS)))
            .collect();
        let size = inode.ilock_shared().di.size;
        // Recorded while the fault's invalidate lock is held: a remover breaks it.
        let lease = self
            .dax
            .table
            .insert(
                &inode,
                Lease {
                    id: 0,
                    client,
                    ino,
                    off: aoff,
                    len: granted,
                    write,
                    state: LeaseState::Granted,
                    pid: info.pid,
                    uid: info.uid,
                    dev,
                    quarantined_blocks: 0,
                },
            )
            .map_err(full_err)?;
        drop(m);
        Ok(Grant {
            lease,
            ino,
            size,
            off: aoff,
            len: granted,
            ranges,
        })
    }

    /// `client` gives `lease` back (a revoked one too: that lifts its quarantine and,
    /// with the last one, the fence).
    pub fn layout_return(
        &self,
        client: ClientId,
        lease: LeaseId,
    ) -> std::result::Result<(), LayoutError> {
        let (l, inode) = self
            .dax
            .table
            .remove(client, lease)
            .map_err(|_| lerr(libc::ENOENT, "no such lease of this client"))?;
        self.layout_drop(l, inode);
        Ok(())
    }

    /// The client's process is gone or its connection closed: everything it held goes.
    pub fn layout_client_gone(&self, client: ClientId) {
        for (l, inode) in self.dax.table.remove_client(client) {
            self.layout_drop(l, inode);
        }
        self.dax.clients.lock().unwrap().remove(&client);
    }

    /// A lease left the table. Revoked: its quarantine lifts. Live: restore "bytes past
    /// EOF read as zero" over what it could store into, drop its inode reference, and
    /// evict (free, if unlinked) the inode if nothing else holds it.
    fn layout_drop(&self, l: Lease, inode: Option<Arc<Inode>>) {
        let Some(inode) = inode else {
            if let Err(e) = self.mp.release_frees(l.id) {
                log::error!("lease {}: could not free its quarantined blocks: {e}", l.id);
            }
            return;
        };
        if l.write
            && let Err(e) = self.layout_trim_eof(&inode, &l)
        {
            log::warn!(
                "inode {}: cannot discard uncommitted stores past EOF of lease {}: {e}",
                l.ino,
                l.id
            );
        }
        drop(inode);
        self.maybe_evict(l.ino);
    }

    /// A write lease may have been stored into past EOF without a size commit. The core
    /// relies on bytes past EOF reading as zero (a later extension shows them), so: zero
    /// the rest of the EOF block and mark the blocks wholly past EOF unwritten (kept
    /// allocated, reading as zeros), except where another write lease still covers them.
    /// What a client never committed is gone, as it would be after a crash.
    fn layout_trim_eof(&self, inode: &Inode, l: &Lease) -> Result<()> {
        let end = l.off + l.len;
        if inode.ilock_shared().di.size >= end || self.mp.is_read_only() {
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
        let mut others: Vec<(u64, u64)> = inode
            .leases()
            .overlapping(start, end - start)
            .into_iter()
            .filter(|o| o.write)
            .map(|o| (o.off, o.off + o.len))
            .collect();
        others.sort_unstable();
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
        let mut tx = self
            .mp
            .trans(4 * BTREE_LEVELS_MAX as u64 * pieces.len() as u64)?;
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
                    self.mp.dev.zero(at, blk_end.min(b) - a);
                    self.mp.dev.flush(at, blk_end.min(b) - a);
                }
                a = blk_end;
            }
            if a < b {
                d.map.mark_unwritten(a / BS, (b - a) / BS);
            }
        }
        self.mp.order_before_commit();
        bmap::sync_inode(&mut tx, &mut d)?;
        let r = tx.commit();
        drop(d);
        r
    }

    /// Grow the file of write lease `lease` to `new_size` (only grows; only inside the
    /// lease's range). The client persisted the data under it first. Takes the invalidate
    /// lock shared, not the IOLOCK: a client answering a recall commits its size while
    /// the breaker holds the IOLOCK, and no remover can run until this is done.
    pub fn layout_commit_size(
        &self,
        client: ClientId,
        lease: LeaseId,
        new_size: u64,
    ) -> std::result::Result<u64, LayoutError> {
        self.client_checked(client)?;
        let l = match self.dax.table.get(lease) {
            Some(l) if l.client == client => l,
            _ => return Err(lerr(libc::ENOENT, "no such lease of this client")),
        };
        if l.state == LeaseState::Revoked {
            return Err(lerr(
                libc::EKEYREVOKED,
                crate::dax::lease::revoked_reason(&l),
            ));
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
        self.mp.check_writable()?;
        let inode = self.iget(l.ino)?;
        let _mm = inode.mmaplock_shared();
        // Re-checked under the invalidate lock: once revoked, the blocks may go.
        if inode.leases().get(lease).is_none() {
            return Err(lerr(
                libc::EKEYREVOKED,
                format!("lease {lease} was revoked or returned"),
            ));
        }
        if inode.ilock_shared().di.size >= new_size {
            return Ok(l.ino);
        }
        let mut tx = self.mp.trans(0)?;
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
        // A client's size commit is durable when it returns (the client persisted the
        // data under it first): on an image file that is a log force.
        crate::log::force::force(&self.mp)?;
        Ok(l.ino)
    }

    /// Every lease, for `daxfs leases`.
    pub fn layout_list(&self) -> Vec<Lease> {
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
    pub fn layout_list_page(&self, after: LeaseId, n: usize) -> (Vec<Lease>, bool) {
        self.dax.table.list(after, n)
    }

    /// Break the layouts over bytes [off, off+len) of `inode` before its blocks are
    /// removed or moved (see the module doc). The caller holds the IOLOCK exclusive and
    /// not the invalidate lock. Returns whether any lease overlapped (the caller then
    /// invalidates the kernel's cache of the range once it has let go of its locks).
    pub(super) fn break_layouts(
        &self,
        inode: &Inode,
        io: &IoLockGuard,
        off: u64,
        len: u64,
    ) -> Result<bool> {
        self.break_matching(inode, io, off, len, |_| true)
    }

    /// Break the *read* leases over bytes [off, off+len) of `inode` (but those of
    /// `except`) before a write fills holes or unwritten blocks there: such a lease mapped
    /// them as zeros and would go on reading zeros, not what was written (a write lease's
    /// range is all written blocks, so nothing changes under it). As `break_layouts`.
    pub(super) fn break_read_layouts(
        &self,
        inode: &Inode,
        io: &IoLockGuard,
        off: u64,
        len: u64,
        except: Option<ClientId>,
    ) -> Result<bool> {
        self.break_matching(inode, io, off, len, |l| {
            !l.write && Some(l.client) != except
        })
    }

    fn break_matching(
        &self,
        inode: &Inode,
        io: &IoLockGuard,
        off: u64,
        len: u64,
        which: impl Fn(&Lease) -> bool,
    ) -> Result<bool> {
        assert!(io.is_excl(), "breaking layouts needs the IOLOCK exclusive");
        if !inode.has_leases() {
            return Ok(false);
        }
        let mut hit = inode.leases().overlapping(off, len);
        hit.retain(|l| which(l));
        if hit.is_empty() {
            return Ok(false);
        }
        let start = Instant::now();
        let sink = self.dax.sink.read().unwrap().clone();
        for l in &hit {
            if inode.leases().recall(l.id) {
                self.dax.table.stats.recalls.fetch_add(1, Ordering::Relaxed);
                if let Some(s) = &sink {
                    s.recall(l.client, l.id, l.ino, l.off, l.len);
                }
            }
        }
        let ids: Vec<LeaseId> = hit.iter().map(|l| l.id).collect();
        let left = self.dax.table.wait_gone(&ids, start + self.dax.lease_break);
        let mut r = Ok(true);
        for id in left {
            if let Err(e) = self.revoke(id, sink.as_deref()) {
                r = Err(e);
                break;
            }
        }
        self.dax
            .table
            .note_break(true, start.elapsed().as_micros() as u64);
        r
    }

    /// Revoke live lease `id`: quarantine its device blocks, fence its client, tell it.
    fn revoke(&self, id: LeaseId, sink: Option<&dyn RecallSink>) -> Result<()> {
        let Some(l) = self.dax.table.get(id) else {
            return Ok(()); // returned meanwhile
        };
        // Held before the lease leaves the table: no free of these blocks can run in
        // between (the caller holds the IOLOCK; an unreferenced inode is not ours).
        self.mp.hold_frees(id, &l.dev)?;
        let Some((l, inode)) = self.dax.table.revoke(id, l.dev_blocks()) else {
            return self.mp.release_frees(id); // returned after all
        };
        drop(inode);
        let why = crate::dax::lease::revoked_reason(&l);
        log::warn!(
            "client pid {} (uid {}): {why}; {} blocks quarantined until it returns it or exits",
            l.pid,
            l.uid,
            l.quarantined_blocks
        );
        if let Some(s) = sink {
            s.revoked(l.client, l.id, &why);
        }
        Ok(())
    }

    /// Tell the kernel its cached pages of [off, off+len) of `ino` are stale. Called with
    /// no inode lock held: the kernel may wait for a page lock whose holder waits for a
    /// FUSE reply that needs our locks.
    pub(super) fn invalidate_cache(&self, ino: Ino, off: u64, len: u64) {
        if let Some(i) = self.dax.inval.read().unwrap().clone() {
            i.invalidate(ino, off, len);
        }
    }
}
