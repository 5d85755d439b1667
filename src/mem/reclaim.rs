//! The reclaimer: shrinkers registered by the caches, direct reclaim in the allocating
//! thread, and a background thread that keeps usage under the high watermark.
//!
//! A cache registers a `Shrinker` (count, scan), as the kernel's shrinkers. Reclaim asks
//! each for what it could free and scans it in batches, giving it the `ScanControl` that
//! says what it may do: the context decides (Full may write back dirty state with a
//! transaction; NOFS may not enter the filesystem: clean objects only, locks by trylock;
//! NOIO may not touch the device). Direct reclaim runs in the thread that is about to
//! allocate past the limit, in the stricter of its scope and the object's mask (the
//! mapping mask of the inode it allocates for); it never writes back in NOFS, so dirty
//! state is left to the background reclaimer, which always runs Full.
//!
//! Reclaim never fails an operation: when nothing more can be freed (everything is
//! referenced), the allocation goes ahead over the budget and `budget.over_by()` says by
//! how much (`daxfs stat`). The rules the shrinkers keep (reference/000): they touch only
//! unreferenced objects, never wait on a lock (trylock, skip, count it), never break a
//! layout lease. `lockcheck` checks the lock part.

use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use super::budget::{Budget, Cache};
use super::lockcheck::ReclaimMark;
use super::{AllocContext, current_context};

/// What a shrinker may do in this pass.
#[derive(Debug, Clone, Copy)]
pub struct ScanControl {
    pub ctx: AllocContext,
    /// Objects to look at in this call.
    pub nr_to_scan: u64,
    /// Run by the background reclaimer (not in an allocating thread).
    pub background: bool,
}

/// What a scan did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanResult {
    pub scanned: u64,
    pub freed: u64,
    /// Skipped because a lock was held (reclaim never waits).
    pub skipped_locked: u64,
    /// Skipped because the context forbids what freeing it needs (dirty in NOFS/NOIO).
    pub skipped_context: u64,
    /// Dirty objects written back (Full only).
    pub written_back: u64,
}

pub trait Shrinker: Send + Sync {
    fn name(&self) -> &'static str;
    /// The cache whose charge this shrinker lowers.
    fn cache(&self) -> Cache;
    /// Objects that a scan might free now (an estimate, cheap).
    fn count(&self) -> u64;
    fn scan(&self, sc: &ScanControl) -> ScanResult;
}

/// Counters for `daxfs stat`.
#[derive(Default)]
pub struct ReclaimStats {
    pub direct_runs: AtomicU64,
    pub direct_nofs: AtomicU64,
    pub direct_noio: AtomicU64,
    pub background_runs: AtomicU64,
    pub scanned: AtomicU64,
    pub freed: AtomicU64,
    pub freed_bytes: AtomicU64,
    pub skipped_locked: AtomicU64,
    pub skipped_context: AtomicU64,
    pub written_back: AtomicU64,
    /// Direct reclaim passes that could not bring usage under the limit.
    pub unmet: AtomicU64,
    /// Direct reclaim passes not run because the last one freed nothing and usage has
    /// not grown much since (everything is referenced: scanning again is futile).
    pub backed_off: AtomicU64,
    pub trims: AtomicU64,
}

/// Objects a shrinker is asked to look at per call.
const BATCH: u64 = 256;

thread_local! {
    /// This thread is inside reclaim (the kernel's PF_MEMALLOC): allocations made by a
    /// shrinker do not recurse into reclaim.
    static IN_RECLAIM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

struct InReclaim;
impl InReclaim {
    fn enter() -> Option<InReclaim> {
        if IN_RECLAIM.with(|r| r.replace(true)) {
            None
        } else {
            Some(InReclaim)
        }
    }
}
impl Drop for InReclaim {
    fn drop(&mut self) {
        IN_RECLAIM.with(|r| r.set(false));
    }
}

/// Is this thread inside reclaim now?
pub fn in_reclaim() -> bool {
    IN_RECLAIM.with(|r| r.get())
}

#[derive(Default)]
struct Background {
    /// Asked to look now (usage passed the high watermark).
    kick: bool,
    stop: bool,
    /// A pass is running (stop waits for it to end).
    busy: bool,
}

/// The per-mount memory manager: the budget, the shrinkers, the counters.
pub struct Mem {
    pub budget: Arc<Budget>,
    shrinkers: Mutex<Vec<Weak<dyn Shrinker>>>,
    pub stats: ReclaimStats,
    bg: Mutex<Background>,
    bg_cv: Condvar,
    bg_started: AtomicBool,
    /// Per context (Full, NOFS, NOIO): usage when the last pass in it freed nothing (0: it
    /// freed something). A futile NOFS pass says nothing of what Full could do.
    futile_at: [AtomicU64; 3],
    /// The shrinkers' candidate count after that futile pass.
    futile_count: [AtomicU64; 3],
}

impl Default for Mem {
    fn default() -> Self {
        Mem::new(super::budget::UNLIMITED)
    }
}

impl Mem {
    pub fn new(limit: u64) -> Mem {
        Mem {
            budget: Arc::new(Budget::new(limit)),
            shrinkers: Mutex::new(Vec::new()),
            stats: ReclaimStats::default(),
            bg: Mutex::new(Background::default()),
            bg_cv: Condvar::new(),
            bg_started: AtomicBool::new(false),
            futile_at: Default::default(),
            futile_count: Default::default(),
        }
    }

    /// Register a shrinker. The reclaimer holds it weakly: dropping the cache unregisters.
    pub fn register(&self, s: Weak<dyn Shrinker>) {
        self.shrinkers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(s);
    }

    fn shrinkers(&self) -> Vec<Arc<dyn Shrinker>> {
        let mut v = self.shrinkers.lock().unwrap_or_else(|p| p.into_inner());
        v.retain(|w| w.strong_count() > 0);
        v.iter().filter_map(|w| w.upgrade()).collect()
    }

    /// About to allocate `bytes` for an object whose mask is `mask` (the mapping mask of
    /// the inode it belongs to; `AllocContext::Full` when it has none). Past the limit this
    /// runs direct reclaim here, in the stricter of the thread's context and the mask, and
    /// wakes the background reclaimer past the high watermark. Never fails.
    #[track_caller]
    pub fn allocating(&self, bytes: u64, mask: AllocContext) {
        let b = &self.budget;
        if !b.is_limited() {
            return;
        }
        let used = b.used().saturating_add(bytes);
        if used <= b.high() {
            return;
        }
        let ctx = current_context().max(mask);
        if self.backing_off(ctx, used) {
            if used > b.limit() {
                self.stats.backed_off.fetch_add(1, Relaxed);
            }
            return;
        }
        self.kick_background();
        if used <= b.limit() || in_reclaim() {
            return;
        }
        self.stats.direct_runs.fetch_add(1, Relaxed);
        match ctx {
            AllocContext::NoFs => self.stats.direct_nofs.fetch_add(1, Relaxed),
            AllocContext::NoIo => self.stats.direct_noio.fetch_add(1, Relaxed),
            AllocContext::Full => 0,
        };
        // Free down to the high watermark, so the next allocations do not all reclaim.
        let goal = used - b.high();
        self.reclaim(goal, ctx, false, Location::caller());
        if b.would_exceed(bytes) {
            self.stats.unmet.fetch_add(1, Relaxed);
        }
    }

    /// After a pass that freed nothing, reclaim is not tried again until usage has grown
    /// by 1/64 of the limit (between 4 and 64 KiB) or the shrinkers have 8 more candidates
    /// than that pass left: when the kernel holds every inode, each allocation would
    /// otherwise scan in vain and wake the background reclaimer (measured: half the speed
    /// of a cold walk).
    fn backing_off(&self, ctx: AllocContext, used: u64) -> bool {
        let f = self.futile_at[ctx as usize].load(Relaxed);
        if f == 0 || used >= f.saturating_add((self.budget.limit() / 64).clamp(4 << 10, 64 << 10)) {
            return false;
        }
        self.candidates() < self.futile_count[ctx as usize].load(Relaxed) + 8
    }

    fn candidates(&self) -> u64 {
        self.shrinkers().iter().map(|s| s.count()).sum()
    }

    /// Free about `goal` bytes through the shrinkers in context `ctx`. Returns bytes freed.
    pub fn reclaim(
        &self,
        goal: u64,
        ctx: AllocContext,
        background: bool,
        entry: &'static Location<'static>,
    ) -> u64 {
        let Some(_r) = InReclaim::enter() else {
            return 0;
        };
        let _mark = ReclaimMark::enter(ctx, entry);
        let start = self.budget.used();
        let freed_bytes = || start.saturating_sub(self.budget.used());
        let shrinkers = self.shrinkers();
        // Rounds over all shrinkers, each a batch; stop when the goal is met or a round
        // frees nothing (everything left is referenced, locked or dirty in this context).
        for _round in 0..64 {
            let mut progress = false;
            for s in &shrinkers {
                let count = s.count();
                if count == 0 {
                    continue;
                }
                let sc = ScanControl {
                    ctx,
                    nr_to_scan: count.min(BATCH),
                    background,
                };
                let r = s.scan(&sc);
                let st = &self.stats;
                st.scanned.fetch_add(r.scanned, Relaxed);
                st.freed.fetch_add(r.freed, Relaxed);
                st.skipped_locked.fetch_add(r.skipped_locked, Relaxed);
                st.skipped_context.fetch_add(r.skipped_context, Relaxed);
                st.written_back.fetch_add(r.written_back, Relaxed);
                progress |= r.freed > 0 || r.written_back > 0;
                if freed_bytes() >= goal {
                    break;
                }
            }
            if freed_bytes() >= goal || !progress {
                break;
            }
        }
        let f = freed_bytes();
        self.stats.freed_bytes.fetch_add(f, Relaxed);
        if f == 0 {
            self.futile_count[ctx as usize].store(self.candidates(), Relaxed);
            self.futile_at[ctx as usize].store(self.budget.used().max(1), Relaxed);
        } else {
            // Something could be freed: every context may try again.
            for a in &self.futile_at {
                a.store(0, Relaxed);
            }
        }
        f
    }

    fn kick_background(&self) {
        if !self.bg_started.load(Relaxed)
            || self.backing_off(AllocContext::Full, self.budget.used())
        {
            return;
        }
        let mut g = self.bg.lock().unwrap_or_else(|p| p.into_inner());
        if !g.kick {
            g.kick = true;
            self.bg_cv.notify_one();
        }
    }

    /// One background pass: Full context, down to the low watermark; then, when much was
    /// given back (by reclaim or by the kernel's forgets), ask the allocator to return it
    /// to the system (see `trim`).
    pub fn background_pass(&self) {
        let b = &self.budget;
        if b.is_limited() && b.used() > b.high() && !self.backing_off(AllocContext::Full, b.used())
        {
            self.stats.background_runs.fetch_add(1, Relaxed);
            let goal = b.used() - b.low();
            self.reclaim(goal, AllocContext::Full, true, Location::caller());
        }
        if b.uncharged_since_trim() >= TRIM_AFTER {
            self.trim();
        }
    }

    /// Give freed heap memory back to the system. glibc keeps freed chunks in its arenas
    /// and only returns the top of each heap by itself; after a mass eviction the freed
    /// inodes sit below live ones, so without this the daemon's RSS never goes down
    /// (measured: 96 MB RssAnon kept after 200k creates and a full forget, 4 MB after
    /// malloc_trim; see mem/mod.rs).
    pub fn trim(&self) {
        self.budget.take_uncharged();
        self.stats.trims.fetch_add(1, Relaxed);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only walks and releases the allocator's free lists; it takes
        // the arena locks itself and has no preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    /// Start the background reclaimer; `each_pass` runs after every wake-up (the caches'
    /// own upkeep, e.g. shrinking the inode table). It stops at `stop_background` or when
    /// `each_pass` returns false (its owner is gone).
    pub fn start_background(self: &Arc<Self>, each_pass: Box<dyn Fn() -> bool + Send>) {
        if self.bg_started.swap(true, Relaxed) {
            return;
        }
        let me = Arc::downgrade(self);
        let r = std::thread::Builder::new()
            .name("daxfs-reclaim".into())
            .spawn(move || {
                loop {
                    let Some(m) = me.upgrade() else { return };
                    {
                        let g = m.bg.lock().unwrap_or_else(|p| p.into_inner());
                        let (mut g, _) = m
                            .bg_cv
                            .wait_timeout_while(g, Duration::from_secs(1), |g| !g.kick && !g.stop)
                            .unwrap_or_else(|p| p.into_inner());
                        if g.stop {
                            return;
                        }
                        g.kick = false;
                        g.busy = true;
                    }
                    let go_on = each_pass();
                    if go_on {
                        m.background_pass();
                    }
                    let mut g = m.bg.lock().unwrap_or_else(|p| p.into_inner());
                    g.busy = false;
                    m.bg_cv.notify_all();
                    if !go_on || g.stop {
                        return;
                    }
                }
            });
        if let Err(e) = r {
            log::warn!("could not start the background reclaimer: {e}");
            self.bg_started.store(false, Relaxed);
        }
    }

    /// Stop the background reclaimer and wait for a running pass to end (unmount: nothing
    /// may write after the last checkpoint).
    pub fn stop_background(&self) {
        let mut g = self.bg.lock().unwrap_or_else(|p| p.into_inner());
        g.stop = true;
        self.bg_cv.notify_all();
        while g.busy {
            g = self.bg_cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Freed bytes after which the background reclaimer trims the allocator.
const TRIM_AFTER: u64 = 4 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::budget::Charge;
    use crate::mem::{nofs_scope, noio_scope};

    /// A cache of `n` objects of `size` bytes; `dirty` of them need Full to be freed,
    /// `locked` are skipped as locked.
    struct Toy {
        objs: Mutex<Vec<(Charge, bool)>>,
        locked: AtomicU64,
        seen: Mutex<Vec<AllocContext>>,
    }

    impl Toy {
        fn new(mem: &Mem, n: usize, size: u64, dirty_every: usize) -> Arc<Toy> {
            let objs = (0..n)
                .map(|i| {
                    let mut c = Charge::new(mem.budget.clone());
                    c.set(Cache::Inodes, size);
                    (c, dirty_every != 0 && i % dirty_every == 0)
                })
                .collect();
            Arc::new(Toy {
                objs: Mutex::new(objs),
                locked: AtomicU64::new(0),
                seen: Mutex::new(Vec::new()),
            })
        }
    }

    impl Shrinker for Toy {
        fn name(&self) -> &'static str {
            "toy"
        }
        fn cache(&self) -> Cache {
            Cache::Inodes
        }
        fn count(&self) -> u64 {
            self.objs.lock().unwrap().len() as u64
        }
        fn scan(&self, sc: &ScanControl) -> ScanResult {
            self.seen.lock().unwrap().push(sc.ctx);
            let mut r = ScanResult::default();
            let mut objs = self.objs.lock().unwrap();
            let mut i = 0;
            while i < objs.len() && r.scanned < sc.nr_to_scan {
                r.scanned += 1;
                if self.locked.load(Relaxed) > 0 {
                    self.locked.fetch_sub(1, Relaxed);
                    r.skipped_locked += 1;
                    i += 1;
                    continue;
                }
                if objs[i].1 {
                    if sc.ctx != AllocContext::Full {
                        r.skipped_context += 1;
                        i += 1;
                        continue;
                    }
                    objs[i].1 = false;
                    r.written_back += 1;
                }
                objs.swap_remove(i);
                r.freed += 1;
            }
            r
        }
    }

    #[test]
    fn direct_reclaim_frees_to_high_watermark() {
        let mem = Mem::new(100_000);
        let toy = Toy::new(&mem, 1000, 100, 0);
        mem.register(Arc::downgrade(&toy) as Weak<dyn Shrinker>);
        assert_eq!(mem.budget.used(), 100_000);
        mem.allocating(1000, AllocContext::Full);
        // Down to high (87_500) less the 1000 about to be allocated.
        assert!(
            mem.budget.used() <= mem.budget.high() - 1000,
            "{}",
            mem.budget.used()
        );
        assert!(mem.budget.used() > 50_000, "freed far more than asked");
        assert_eq!(mem.stats.direct_runs.load(Relaxed), 1);
        assert_eq!(
            *toy.seen.lock().unwrap().first().unwrap(),
            AllocContext::Full
        );
        // Within the budget: nothing happens.
        let before = mem.stats.direct_runs.load(Relaxed);
        mem.allocating(10, AllocContext::Full);
        assert_eq!(mem.stats.direct_runs.load(Relaxed), before);
        drop(toy);
        assert_eq!(mem.budget.used(), 0);
    }

    #[test]
    fn context_is_the_stricter_of_scope_and_mask() {
        let mem = Mem::new(10_000);
        let toy = Toy::new(&mem, 200, 100, 1); // every object dirty
        mem.register(Arc::downgrade(&toy) as Weak<dyn Shrinker>);
        {
            let _g = nofs_scope();
            mem.allocating(100, AllocContext::Full);
        }
        mem.allocating(100, AllocContext::NoIo);
        {
            let _g = nofs_scope();
            mem.allocating(100, AllocContext::NoIo);
        }
        let seen = toy.seen.lock().unwrap().clone();
        assert!(seen.contains(&AllocContext::NoFs) && seen.contains(&AllocContext::NoIo));
        assert!(!seen.contains(&AllocContext::Full), "{seen:?}");
        // Dirty objects cannot be freed in NOFS/NOIO: nothing freed, the budget stays over.
        assert_eq!(toy.count(), 200);
        assert!(mem.stats.skipped_context.load(Relaxed) > 0);
        // The third (NoIo again, usage unchanged) backs off: the second was futile.
        assert_eq!(mem.stats.unmet.load(Relaxed), 2);
        assert_eq!(mem.stats.backed_off.load(Relaxed), 1);
        assert_eq!(mem.stats.direct_nofs.load(Relaxed), 1);
        assert_eq!(mem.stats.direct_noio.load(Relaxed), 1);
        // Full (background) writes them back and frees.
        mem.allocating(100, AllocContext::Full);
        assert!(toy.count() < 200);
        assert!(mem.stats.written_back.load(Relaxed) > 0);
        let _g = noio_scope();
        assert_eq!(current_context(), AllocContext::NoIo);
    }

    #[test]
    fn locked_objects_are_skipped_and_counted() {
        let mem = Mem::new(1000);
        let toy = Toy::new(&mem, 20, 100, 0);
        toy.locked.store(5, Relaxed);
        mem.register(Arc::downgrade(&toy) as Weak<dyn Shrinker>);
        mem.allocating(1, AllocContext::Full);
        assert_eq!(mem.stats.skipped_locked.load(Relaxed), 5);
        assert!(mem.budget.used() < 1000);
    }

    #[test]
    fn background_reclaimer_keeps_under_high() {
        let mem = Arc::new(Mem::new(10_000));
        let toy = Toy::new(&mem, 150, 100, 2);
        mem.register(Arc::downgrade(&toy) as Weak<dyn Shrinker>);
        mem.start_background(Box::new(|| true));
        mem.kick_background();
        for _ in 0..500 {
            if mem.budget.used() <= mem.budget.low() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            mem.budget.used() <= mem.budget.low(),
            "{}",
            mem.budget.used()
        );
        assert!(mem.stats.background_runs.load(Relaxed) >= 1);
        mem.stop_background();
    }
}
