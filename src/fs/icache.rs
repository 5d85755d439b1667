//! The inode cache: `iget` loads and caches in-core inodes, lookup references and FUSE
//! `forget`, eviction of unreferenced inodes (by trylock only, never of a leased inode),
//! the inode-cache shrinker the memory budget reclaims through (mem/), and freeing the
//! blocks of an unlinked inode at its last reference (inactivation).

use super::*;

impl Fs {
    /// The in-core inode `ino`, loading it from media if needed. A number that names no
    /// inode (a stale handle) is ESTALE.
    ///
    /// After a shutdown every operation that names an inode fails here with EIO, reads and
    /// lookups included: the in-core state may hold the effects of the operation that
    /// failed (XFS refuses everything after a forced shutdown too).
    pub fn iget(&self, ino: Ino) -> Result<Arc<Inode>> {
        if self.mp.is_shutdown() {
            return Err(FsError::Io("filesystem is shut down".into()));
        }
        if !self.mp.ino_valid(ino) {
            return err(libc::ESTALE);
        }
        let table_growth = {
            let cache = self.icache.lock().unwrap();
            let _held = HeldToken::acquire(Class::Icache, How::Blocking);
            if let Some(i) = cache.get(&ino) {
                // In use again: no longer reclaim's (XFS recycles a reclaimable inode).
                i.reclaimable.store(false, Ordering::Release);
                return Ok(i.clone());
            }
            self.table_growth(&cache)
        };
        // A miss allocates an in-core inode (and the table may double): past the budget,
        // reclaim first, in this thread's context (NOFS inside a transaction), before the
        // cache lock is taken.
        self.mp
            .mem
            .allocating(INODE_BYTES + table_growth, AllocContext::Full);
        let mut cache = self.icache.lock().unwrap();
        let _held = HeldToken::acquire(Class::Icache, How::Blocking);
        if let Some(i) = cache.get(&ino) {
            i.reclaimable.store(false, Ordering::Release);
            return Ok(i.clone());
        }
        let mut slot = [0u8; INODE_SIZE];
        // Through the overlay: the slot as last committed (log/force.rs).
        self.mp
            .read_bytes(self.mp.ino_block(ino), self.mp.ino_offset(ino), &mut slot);
        if DiskInode::slot_is_free(&slot) {
            return err(libc::ESTALE);
        }
        let (di, inline) = DiskInode::decode(&slot, ino, &self.mp.sb.uuid)?;
        let map = bmap::load_map(&mut DevReader { mp: &self.mp }, &self.mp, &di, inline)?;
        let mask = self.mapping_mask_for(&di, &map);
        let inode = Arc::new(self.new_inode(di, map, mask));
        self.cache_insert(&mut cache, inode.clone());
        Ok(inode)
    }

    /// The in-core inode `ino` when the number comes from outside: a file handle the
    /// kernel decodes by looking up "." in a node id it no longer caches. A number that
    /// names no allocated inode, or a deleted one, is ESTALE, whatever its slot holds.
    pub(super) fn iget_untrusted(&self, ino: Ino) -> Result<Arc<Inode>> {
        let cached = self.icache.lock().unwrap().get(&ino).cloned();
        let inode = match cached {
            Some(i) => self.iget(i.ino)?,
            None => {
                if !self.mp.ino_valid(ino) || !self.ino_allocated(ino)? {
                    return err(libc::ESTALE);
                }
                self.iget(ino)?
            }
        };
        // Deleted: freed, or unlinked with nothing but the kernel's lookups (their FORGET
        // may still be on its way). An unlinked file someone still has open stays reachable,
        // as on XFS.
        let d = inode.ilock_shared();
        if d.freed || (d.di.nlink == 0 && inode.opens.load(Ordering::Acquire) == 0) {
            return err(libc::ESTALE);
        }
        drop(d);
        Ok(inode)
    }

    /// Is `ino` allocated in its AG's inobt? Under the AG's lock, so no transaction is
    /// changing the tree while it is read.
    fn ino_allocated(&self, ino: Ino) -> Result<bool> {
        let agno = self.mp.ag_of(self.mp.ino_block(ino));
        let _ag = self.mp.ags[agno as usize]
            .lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut io = DevReader { mp: &self.mp };
        let blk = self.mp.fsblock(agno, AGI_BLOCK);
        let b = io.read_meta(blk, AGI_MAGIC, Some(agno as u64), "AGI")?;
        let agi = Agi::decode(&b[..]);
        ialloc::is_allocated(&mut io, &agi, ino)
    }

    /// An in-core inode charged to this mount's budget, with its mapping mask.
    pub(super) fn new_inode(&self, di: DiskInode, map: ExtentMap, mask: AllocContext) -> Inode {
        Inode::setup(di, map, Some(self.mp.mem.budget.clone()), mask)
    }

    /// Insert into the cache (its lock held): the table's charge follows its capacity, and
    /// the inode is an eviction candidate until someone references it.
    pub(super) fn cache_insert(&self, cache: &mut HashMap<Ino, Arc<Inode>>, inode: Arc<Inode>) {
        let ino = inode.ino;
        self.lru_add(&inode);
        cache.insert(ino, inode);
        self.recharge_table(cache);
    }

    pub(super) fn recharge_table(&self, cache: &HashMap<Ino, Arc<Inode>>) {
        self.table_charge
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .recharge(cache);
    }

    /// What one more insert adds to the table's charge.
    pub(super) fn table_growth(&self, cache: &HashMap<Ino, Arc<Inode>>) -> u64 {
        self.table_charge
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .growth(cache)
    }

    pub(super) fn lru_add(&self, inode: &Inode) {
        if !inode.on_lru.swap(true, Ordering::AcqRel) {
            self.lru
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back(inode.ino);
        }
    }

    /// The mapping mask of an inode being set up (reference/004: once, at setup). A regular
    /// file whose first block holds a daxfs superblock is the image of another daxfs: the
    /// daemon serving it runs its own reclaim, and an allocation made while faulting that
    /// file must not recurse into reclaim that touches this device (NoIo). Detected by the
    /// magic, so it takes effect from the next setup after mkfs (a remount or eviction).
    pub(super) fn mapping_mask_for(&self, di: &DiskInode, map: &ExtentMap) -> AllocContext {
        if di.kind() != FileKind::File || di.size < BS {
            return AllocContext::Full;
        }
        match map.find(0) {
            Some(e) if !e.unwritten && e.fileoff == 0 && e.startblock < self.mp.sb.total_blocks => {
                let mut m = [0u8; 4];
                self.mp.dev.read(e.startblock * BS, &mut m);
                if u32::from_le_bytes(m) == SB_MAGIC {
                    AllocContext::NoIo
                } else {
                    AllocContext::Full
                }
            }
            _ => AllocContext::Full,
        }
    }

    /// Evict from the list of candidates: at most `sc.nr_to_scan` of them, unreferenced
    /// ones only, every lock by trylock (a busy one is skipped and counted). Clean inodes
    /// go in any context; dirty timestamps are written back only in Full context (never in
    /// NOFS: that would be a transaction inside reclaim). Unlinked inodes are left to their
    /// last put (`maybe_evict`), which frees them.
    pub(super) fn shrink_icache(&self, sc: &ScanControl) -> ScanResult {
        let mut r = ScanResult::default();
        let mut victims: Vec<Arc<Inode>> = Vec::new();
        let mut dirty: Vec<Arc<Inode>> = Vec::new();
        let full = sc.ctx == AllocContext::Full && self.mp.check_writable().is_ok();
        {
            let Ok(mut cache) = self.icache.try_lock() else {
                r.skipped_locked += 1;
                return r;
            };
            let _held = HeldToken::acquire(Class::Icache, How::Try);
            let Ok(mut lru) = self.lru.try_lock() else {
                r.skipped_locked += 1;
                return r;
            };
            let mut requeue = Vec::new();
            while r.scanned < sc.nr_to_scan {
                let Some(ino) = lru.pop_front() else { break };
                r.scanned += 1;
                let Some(inode) = cache.get(&ino) else {
                    continue;
                };
                inode.on_lru.store(false, Ordering::Release);
                // In use (a lookup, an open, a lease, or a thread holding it): not ours; it
                // comes back at its last put.
                if ino == self.root_ino() || inode.referenced() || Arc::strong_count(inode) > 1 {
                    continue;
                }
                inode.reclaimable.store(true, Ordering::Release);
                let state = inode
                    .try_ilock_excl()
                    .map(|d| (d.times_dirty && !d.freed, d.di.nlink == 0 && !d.freed));
                match state {
                    Some((false, false)) => {
                        victims.extend(cache.remove(&ino));
                        r.freed += 1;
                        continue;
                    }
                    None => r.skipped_locked += 1,
                    Some((true, false)) if full => {
                        dirty.push(inode.clone());
                        continue;
                    }
                    Some(_) => r.skipped_context += 1,
                }
                inode.reclaimable.store(false, Ordering::Release);
                requeue.push(inode.clone());
            }
            drop(lru);
            for i in &requeue {
                self.lru_add(i);
            }
            self.recharge_table(&cache);
        }
        drop(victims); // each returns its charge
        for inode in dirty {
            match self.reclaim_writeback(&inode) {
                Ok(true) => r.written_back += 1,
                Ok(false) => r.skipped_locked += 1,
                Err(e) => log::warn!("inode {}: timestamp writeback in reclaim: {e}", inode.ino),
            }
            let evicted = match self.icache.try_lock() {
                Ok(mut cache) => {
                    let _held = HeldToken::acquire(Class::Icache, How::Try);
                    // Ours and the cache's, still unused, still clean: evict.
                    let clean = inode.try_ilock_excl().is_some_and(|d| !d.times_dirty);
                    if clean
                        && inode.reclaimable.load(Ordering::Acquire)
                        && Arc::strong_count(&inode) == 2
                        && !inode.referenced()
                    {
                        cache.remove(&inode.ino);
                        self.recharge_table(&cache);
                        true
                    } else {
                        false
                    }
                }
                Err(_) => false,
            };
            if evicted {
                r.freed += 1;
            } else {
                inode.reclaimable.store(false, Ordering::Release);
                self.lru_add(&inode);
            }
        }
        r
    }

    /// Write an unreferenced inode's deferred timestamps from reclaim (Full context): a
    /// transaction, then the ILOCK by trylock. Ok(false): it was locked; skipped.
    pub(super) fn reclaim_writeback(&self, inode: &Inode) -> Result<bool> {
        let mut tx = self.mp.trans(0)?;
        let Some(mut d) = inode.try_ilock_excl() else {
            return Ok(false);
        };
        if d.times_dirty && !d.freed {
            bmap::sync_inode(&mut tx, &mut d)?;
        }
        let r = tx.commit();
        drop(d);
        r.map(|()| true)
    }

    /// The background reclaimer's upkeep of the cache: a table far larger than its
    /// contents is shrunk (a HashMap never shrinks by itself).
    pub(super) fn icache_upkeep(&self) {
        self.ask_kernel_to_forget();
        if let Ok(mut cache) = self.icache.try_lock() {
            if cache.capacity() > 4 * cache.len() + 1024 {
                cache.shrink_to_fit();
                self.table_charge
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .shrunk(&cache);
            }
        }
        if let Ok(mut lru) = self.lru.try_lock() {
            if lru.capacity() > 4 * lru.len() + 1024 {
                lru.shrink_to_fit();
            }
        }
    }

    /// The mount's memory manager (budget, reclaimer, counters).
    pub fn mem(&self) -> &Arc<crate::mem::Mem> {
        &self.mp.mem
    }

    /// Inodes in the cache now.
    pub fn cached_inodes(&self) -> usize {
        self.icache.lock().unwrap().len()
    }

    /// Evict `ino` if nothing references it; free it first if it has no links. Only
    /// unreferenced inodes are touched, and only by trylock (reclaim rules, DESIGN.md 5).
    pub(super) fn maybe_evict(&self, ino: Ino) {
        let inode = {
            let cache = self.icache.lock().unwrap();
            let Some(inode) = cache.get(&ino) else { return };
            // The cache's own reference plus ours below: anyone else is using it.
            if inode.referenced() || Arc::strong_count(inode) > 1 || ino == self.root_ino() {
                if !inode.referenced() && ino != self.root_ino() {
                    self.lru_add(inode); // a thread still holds it: a candidate later
                }
                return;
            }
            inode.clone()
        };
        let (nlink, times_dirty, freed) = match inode.try_ilock_excl() {
            Some(d) => (d.di.nlink, d.times_dirty, d.freed),
            None => return self.lru_add(&inode),
        };
        if nlink == 0 && !freed && !self.mp.is_read_only() && !self.mp.is_shutdown() {
            if let Err(e) = self.inactivate(&inode) {
                log::error!("inode {ino}: could not free unlinked inode: {e}");
                return;
            }
        } else if times_dirty {
            // Written by sync/unmount, or by the background reclaimer, which evicts it then.
            return self.lru_add(&inode);
        }
        let mut cache = self.icache.lock().unwrap();
        if Arc::strong_count(&inode) == 2 && !inode.referenced() {
            cache.remove(&ino);
            self.recharge_table(&cache);
        } else {
            self.lru_add(&inode);
        }
    }

    /// A shrinker's scan of the inode cache as reclaim from an allocating thread inside a
    /// transaction runs it (NOFS): `shrink_icache` over up to `nr` candidates. Reclaim never
    /// waits and never breaks a layout lease: an inode with leases is referenced and
    /// skipped, and every lock is only tried (tests/lease.rs runs it while a break waits).
    pub fn reclaim_inodes(&self, nr: usize) -> Reclaimed {
        let r = self.shrink_icache(&ScanControl {
            ctx: AllocContext::NoFs,
            nr_to_scan: nr as u64,
            background: false,
        });
        Reclaimed {
            scanned: r.scanned as usize,
            evicted: r.freed as usize,
            skipped: (r.scanned - r.freed) as usize,
        }
    }

    /// Free an unlinked, unreferenced inode: its blocks (in bounded transactions), its
    /// attributes, then the inode itself.
    pub(super) fn inactivate(&self, inode: &Inode) -> Result<()> {
        loop {
            let mut tx = self.mp.trans_remove(4 * BTREE_LEVELS_MAX as u64)?;
            let mut d = inode.ilock_excl();
            if d.freed {
                return Ok(());
            }
            if !d.map.is_empty() {
                let end = bmap::bounded_remove_end(&d.map, 0, u64::MAX);
                bmap::free_range(&mut tx, &mut d, 0, end);
                bmap::sync_inode(&mut tx, &mut d)?;
                tx.commit()?;
                drop(d);
                continue;
            }
            if !xattr::remove_bounded(&mut tx, &mut d)? {
                bmap::sync_inode(&mut tx, &mut d)?;
                tx.commit()?;
                drop(d);
                continue;
            }
            if d.di.format == FMT_BTREE {
                bmap::sync_inode(&mut tx, &mut d)?;
            }
            ialloc::unlinked_remove(&mut tx, inode.ino)?;
            ialloc::ifree(&mut tx, inode.ino)?;
            d.freed = true;
            let r = tx.commit();
            drop(d);
            return r;
        }
    }

    /// Drop `nlookup` lookup references (FUSE forget).
    pub fn forget(&self, ino: Ino, nlookup: u64) {
        let Some(inode) = self.icache.lock().unwrap().get(&ino).cloned() else {
            return;
        };
        let _ = inode
            .nlookup
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(nlookup))
            });
        drop(inode);
        self.maybe_evict(ino);
    }

    /// A lookup reference the kernel now holds, and the (parent, name) of the dentry it
    /// holds it by (None: a lookup by number, "." or "..").
    pub(super) fn take_lookup_ref(&self, inode: &Inode, dentry: Option<(Ino, &[u8])>) {
        inode.nlookup.fetch_add(1, Ordering::AcqRel);
        if let Some((parent, name)) = dentry {
            *inode.dentry.lock().unwrap_or_else(|p| p.into_inner()) = Some((parent, name.into()));
        }
    }

    /// A rename moved the dentry of `ino` (if the kernel holds one we know of).
    pub(super) fn dentry_moved(&self, ino: Ino, parent: Ino, name: &[u8]) {
        let Some(inode) = self.icache.lock().unwrap().get(&ino).cloned() else {
            return;
        };
        let mut d = inode.dentry.lock().unwrap_or_else(|p| p.into_inner());
        if d.is_some() {
            *d = Some((parent, name.into()));
        }
    }

    /// The budget is not met and what reclaim may evict falls short: ask the kernel to
    /// forget the dentries of idle referenced files (no open, no lease), so
    /// that their lookup references go (FORGET) and the next passes can evict them. Runs
    /// in the background reclaimer only, holding no lock while it asks: the kernel takes
    /// the parent directory's lock to drop a dentry, and a request handler may be waiting
    /// with that lock held for a reply that needs ours. An asked inode's dentry is taken, so
    /// it is not asked again until the kernel gets it by name again.
    pub(super) fn ask_kernel_to_forget(&self) {
        let b = &self.mp.mem.budget;
        if !b.is_limited() || b.used() <= b.high() {
            return;
        }
        let Some(inval) = self.dax.invalidator() else {
            return;
        };
        let candidates = self.lru.try_lock().map_or(0, |l| l.len() as u64);
        let goal = (b.used() - b.low()) / INODE_BYTES;
        let want = goal.saturating_sub(candidates).min(FORGET_ASKS_PER_PASS) as usize;
        if want == 0 {
            return;
        }
        let picked: Vec<(Ino, Box<[u8]>)> = {
            let Ok(cache) = self.icache.try_lock() else {
                return;
            };
            let idle = |i: &&Arc<Inode>| {
                i.ino != self.root_ino()
                    && i.nlookup.load(Ordering::Acquire) > 0
                    && i.opens.load(Ordering::Acquire) == 0
                    && !i.has_leases()
            };
            // Never a directory: the kernel detaches whatever is mounted in the subtree
            // of a dentry it drops, and a mount can appear between the forgetter's look at
            // the mount table and its request (fuse.rs). Files are the bulk of any walk.
            cache
                .values()
                .filter(idle)
                .filter(|i| !i.is_dir)
                .filter_map(|i| i.dentry.try_lock().ok()?.take())
                .take(want)
                .collect()
        };
        self.forget_asks
            .fetch_add(picked.len() as u64, Ordering::Relaxed);
        for (parent, name) in picked {
            inval.forget_entry(parent, &name);
        }
    }
}

/// The inode cache's shrinker: a separate object the reclaimer holds weakly, so that the
/// reclaimer never keeps the filesystem alive.
pub(super) struct IcacheShrinker {
    pub(super) fs: Weak<Fs>,
}

impl Shrinker for IcacheShrinker {
    fn name(&self) -> &'static str {
        "icache"
    }
    fn cache(&self) -> Cache {
        Cache::Inodes
    }
    fn count(&self) -> u64 {
        match self.fs.upgrade() {
            Some(fs) => fs.lru.try_lock().map_or(0, |l| l.len() as u64),
            None => 0,
        }
    }
    fn scan(&self, sc: &ScanControl) -> ScanResult {
        match self.fs.upgrade() {
            Some(fs) => fs.shrink_icache(sc),
            None => ScanResult::default(),
        }
    }
}

/// The inode table's charge, which follows the memory the table holds. That is not
/// `HashMap::capacity()`: a removal may leave a tombstone, which lowers `capacity()`
/// (items + inserts left before a rehash) without freeing anything, and the insert that
/// finds it used up rehashes in place, so `capacity()` jumps back up with no new memory.
/// The allocation is the largest capacity seen since the table was last reallocated
/// smaller; it grows only when an insert finds the table full and more than half of its
/// real capacity in use (otherwise the rehash is in place). This follows std's table
/// (hashbrown); an estimate, like every charge, but one that never runs ahead of the
/// budget check that `iget` and create make before inserting.
pub(super) struct TableCharge {
    charge: Charge,
    capacity_max: usize,
}

const TABLE_ENTRY_BYTES: u64 = std::mem::size_of::<(Ino, Arc<Inode>)>() as u64 + 1;

impl TableCharge {
    pub(super) fn new(budget: Arc<crate::mem::Budget>) -> TableCharge {
        TableCharge {
            charge: Charge::new(budget),
            capacity_max: 0,
        }
    }

    pub(super) fn recharge(&mut self, cache: &HashMap<Ino, Arc<Inode>>) {
        self.capacity_max = self.capacity_max.max(cache.capacity());
        self.charge.set(
            Cache::CacheTable,
            self.capacity_max as u64 * TABLE_ENTRY_BYTES,
        );
    }

    /// After `shrink_to_fit`: the table was reallocated at its current capacity.
    pub(super) fn shrunk(&mut self, cache: &HashMap<Ino, Arc<Inode>>) {
        self.capacity_max = 0;
        self.recharge(cache);
    }

    /// What one more insert adds: the table doubles when it is full and more than half
    /// of its real capacity is in use; else nothing (room left, or an in-place rehash).
    pub(super) fn growth(&self, cache: &HashMap<Ino, Arc<Inode>>) -> u64 {
        let cap = self.capacity_max.max(cache.capacity());
        if cache.len() < cache.capacity() || 2 * (cache.len() + 1) <= cap {
            0
        } else {
            cap.max(4) as u64 * TABLE_ENTRY_BYTES
        }
    }
}
