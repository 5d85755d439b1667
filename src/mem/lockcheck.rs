//! The reclaim lock checker: lockdep's reclaim states, for daxfs's own locks.
//!
//! A deadlock through reclaim needs a lock class that is (A) held by some thread when it
//! enters reclaim that may do filesystem work (context Full), and (B) taken inside reclaim
//! by some (other) thread: then the first can wait in reclaim for the lock the second
//! holds or waits for. As lockdep's reclaim states, (B) counts trylocks too: a class is
//! either one reclaim may touch or one held across allocations, not both; that is what made
//! lockdep cry wolf over XFS's ILOCK, and what the two ILOCK classes below settle. The checker records, per class, the first site of A and of B, and
//! reports the pair the moment both exist, naming the three call sites (the lock held
//! above, the reclaim entry, the lock taken below). It also reports at once what a context
//! forbids inside reclaim: a blocking filesystem lock or a transaction in NOFS reclaim,
//! any device access in NOIO reclaim.
//!
//! What lockdep did not know (reference/000): the ILOCK of a *referenced* inode (held by
//! code above reclaim) and the ILOCK of an inode reclaim has isolated (unreferenced,
//! out of the cache: nobody above can reach it) are different classes. Reclaim may take
//! the second blocking in Full context (freeing an unlinked inode), and a thread may hold
//! the first across an allocation (readdir, then build the directory's index): no report.
//! `set_naive_classes(true)` merges them, as lockdep did, so a test can show the
//! difference.
//!
//! Compiled in debug builds, unit tests and with the `testing` feature, off until
//! `set_enabled(true)` (the tests turn it on); in release builds every hook is an empty
//! inline function. Reports are kept (`take_reports`) and logged; the tests assert on them.

use std::panic::Location;

use super::AllocContext;

/// A lock class: locks the checker tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// The ILOCK of an inode code above reclaim may hold (in the cache, maybe referenced).
    IlockReferenced,
    /// The ILOCK of an inode reclaim has isolated (out of the cache, unreferenced).
    IlockReclaimable,
    /// The ILOCK, both kinds merged (naive classes, as lockdep saw it).
    Ilock,
    /// The inode cache's table.
    Icache,
    /// An inode's IOLOCK (i_rwsem) and MMAPLOCK (invalidate lock): held above reclaim
    /// across allocations (writes, the fault path), never taken by reclaim.
    Iolock,
    Mmaplock,
    /// Any other lock, named by its user (tests plant inversions with these).
    Named(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    Blocking,
    Try,
}

/// One report: what was found, with the sites involved.
#[derive(Debug, Clone)]
pub struct Report {
    pub class: Option<Class>,
    pub text: String,
}

#[cfg(any(debug_assertions, test, feature = "testing"))]
mod imp {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

    type Site = &'static Location<'static>;

    static ENABLED: AtomicBool = AtomicBool::new(false);
    static NAIVE: AtomicBool = AtomicBool::new(false);
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);

    #[derive(Default)]
    struct ClassState {
        /// (A) held when Full reclaim was entered: (lock site, reclaim entry site).
        held_above: Option<(Site, Site)>,
        /// (B) taken inside reclaim: (lock site, reclaim entry site).
        taken_below: Option<(Site, Site)>,
        reported: bool,
    }

    static STATE: Mutex<Option<HashMap<Class, ClassState>>> = Mutex::new(None);
    static REPORTS: Mutex<Vec<Report>> = Mutex::new(Vec::new());

    struct Held {
        id: u64,
        class: Class,
        site: Site,
    }

    thread_local! {
        static HELD: RefCell<Vec<Held>> = const { RefCell::new(Vec::new()) };
        static IN_RECLAIM: Cell<Option<(AllocContext, Site)>> = const { Cell::new(None) };
    }

    pub fn set_enabled(on: bool) {
        ENABLED.store(on, Relaxed);
    }
    pub fn enabled() -> bool {
        ENABLED.load(Relaxed)
    }
    pub fn set_naive_classes(on: bool) {
        NAIVE.store(on, Relaxed);
    }
    pub fn ilock_class(reclaimable: bool) -> Class {
        if NAIVE.load(Relaxed) {
            Class::Ilock
        } else if reclaimable {
            Class::IlockReclaimable
        } else {
            Class::IlockReferenced
        }
    }

    fn report(class: Option<Class>, text: String) {
        log::error!("reclaim lock checker: {text}");
        REPORTS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Report { class, text });
    }

    pub fn take_reports() -> Vec<Report> {
        std::mem::take(&mut *REPORTS.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Forget every recorded state (between tests).
    pub fn reset() {
        *STATE.lock().unwrap_or_else(|p| p.into_inner()) = None;
        take_reports();
    }

    fn with_class<R>(class: Class, f: impl FnOnce(&mut ClassState) -> R) -> R {
        let mut g = STATE.lock().unwrap_or_else(|p| p.into_inner());
        f(g.get_or_insert_with(HashMap::new).entry(class).or_default())
    }

    fn check_pair(class: Class, st: &mut ClassState) -> Option<String> {
        if st.reported {
            return None;
        }
        let ((held, entry_a), (taken, entry_b)) = (st.held_above?, st.taken_below?);
        st.reported = true;
        Some(format!(
            "possible deadlock through reclaim on {class:?}: held at {held} when reclaim was \
             entered at {entry_a}, and taken inside reclaim (entered at {entry_b}) at {taken}"
        ))
    }

    pub fn acquired(class: Class, how: How, site: Site) -> u64 {
        if !enabled() {
            return 0;
        }
        let id = NEXT_ID.fetch_add(1, Relaxed);
        if let Some((ctx, entry)) = IN_RECLAIM.with(|r| r.get()) {
            if ctx != AllocContext::Full && how == How::Blocking {
                report(
                    Some(class),
                    format!(
                        "{class:?} taken blocking at {site} inside {ctx:?} reclaim (entered at \
                         {entry}): a {ctx:?} context allows filesystem locks by trylock only"
                    ),
                );
            }
            let msg = with_class(class, |st| {
                st.taken_below.get_or_insert((site, entry));
                check_pair(class, st)
            });
            if let Some(m) = msg {
                report(Some(class), m);
            }
        }
        HELD.with(|h| h.borrow_mut().push(Held { id, class, site }));
        id
    }

    pub fn released(id: u64) {
        if id == 0 {
            return;
        }
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if let Some(p) = h.iter().rposition(|x| x.id == id) {
                h.remove(p);
            }
        });
    }

    pub fn reclaim_entered(ctx: AllocContext, entry: Site) -> Option<(AllocContext, Site)> {
        if !enabled() {
            return None;
        }
        let prev = IN_RECLAIM.with(|r| r.replace(Some((ctx, entry))));
        if ctx == AllocContext::Full {
            let held: Vec<(Class, Site)> =
                HELD.with(|h| h.borrow().iter().map(|x| (x.class, x.site)).collect());
            for (class, site) in held {
                let msg = with_class(class, |st| {
                    st.held_above.get_or_insert((site, entry));
                    check_pair(class, st)
                });
                if let Some(m) = msg {
                    report(Some(class), m);
                }
            }
        }
        prev
    }

    pub fn reclaim_left(prev: Option<(AllocContext, Site)>) {
        if enabled() {
            IN_RECLAIM.with(|r| r.set(prev));
        }
    }

    /// The filesystem is entered (`what`: a transaction, a log force).
    pub fn fs_entered(what: &str, site: Site) {
        if !enabled() {
            return;
        }
        if let Some((ctx, entry)) = IN_RECLAIM.with(|r| r.get()) {
            if ctx != AllocContext::Full {
                report(
                    None,
                    format!("{what} begun at {site} inside {ctx:?} reclaim (entered at {entry})"),
                );
            }
        }
    }

    /// The device is read or written.
    pub fn device_touched(site: Site) {
        if !enabled() {
            return;
        }
        if let Some((AllocContext::NoIo, entry)) = IN_RECLAIM.with(|r| r.get()) {
            report(
                None,
                format!("device accessed at {site} inside NoIo reclaim (entered at {entry})"),
            );
        }
    }
}

#[cfg(not(any(debug_assertions, test, feature = "testing")))]
mod imp {
    use super::*;
    pub fn set_enabled(_: bool) {}
    pub fn enabled() -> bool {
        false
    }
    pub fn set_naive_classes(_: bool) {}
    #[inline]
    pub fn ilock_class(reclaimable: bool) -> Class {
        if reclaimable {
            Class::IlockReclaimable
        } else {
            Class::IlockReferenced
        }
    }
    pub fn take_reports() -> Vec<Report> {
        Vec::new()
    }
    pub fn reset() {}
    #[inline]
    pub fn acquired(_: Class, _: How, _: &'static Location<'static>) -> u64 {
        0
    }
    #[inline]
    pub fn released(_: u64) {}
    #[inline]
    pub fn reclaim_entered(
        _: AllocContext,
        _: &'static Location<'static>,
    ) -> Option<(AllocContext, &'static Location<'static>)> {
        None
    }
    #[inline]
    pub fn reclaim_left(_: Option<(AllocContext, &'static Location<'static>)>) {}
    #[inline]
    pub fn fs_entered(_: &str, _: &'static Location<'static>) {}
    #[inline]
    pub fn device_touched(_: &'static Location<'static>) {}
}

pub use imp::*;

/// A held lock as the checker knows it: tell it when the lock is let go (drop).
#[must_use]
pub struct HeldToken(u64);

impl HeldToken {
    /// From the id `acquired` returned.
    pub fn from_raw(id: u64) -> HeldToken {
        HeldToken(id)
    }
    #[track_caller]
    pub fn acquire(class: Class, how: How) -> HeldToken {
        HeldToken(acquired(class, how, Location::caller()))
    }
}

impl Drop for HeldToken {
    fn drop(&mut self) {
        released(self.0);
    }
}

/// Inside reclaim for as long as it lives (reclaim.rs makes one per reclaim pass).
pub struct ReclaimMark(Option<(AllocContext, &'static Location<'static>)>);

impl ReclaimMark {
    pub fn enter(ctx: AllocContext, entry: &'static Location<'static>) -> ReclaimMark {
        ReclaimMark(reclaim_entered(ctx, entry))
    }
}

impl Drop for ReclaimMark {
    fn drop(&mut self) {
        reclaim_left(self.0.take());
    }
}

/// A mutex the checker knows by class (for locks outside the inode, and for tests).
pub struct TrackedMutex<T> {
    class: Class,
    m: std::sync::Mutex<T>,
}

pub struct TrackedGuard<'a, T> {
    g: std::sync::MutexGuard<'a, T>,
    _t: HeldToken,
}

impl<T> std::ops::Deref for TrackedGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.g
    }
}
impl<T> std::ops::DerefMut for TrackedGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.g
    }
}

impl<T> TrackedMutex<T> {
    pub fn new(class: Class, v: T) -> Self {
        TrackedMutex {
            class,
            m: std::sync::Mutex::new(v),
        }
    }
    #[track_caller]
    pub fn lock(&self) -> TrackedGuard<'_, T> {
        let site = Location::caller();
        let g = self.m.lock().unwrap_or_else(|p| p.into_inner());
        TrackedGuard {
            g,
            _t: HeldToken(acquired(self.class, How::Blocking, site)),
        }
    }
    #[track_caller]
    pub fn try_lock(&self) -> Option<TrackedGuard<'_, T>> {
        let site = Location::caller();
        let g = self.m.try_lock().ok()?;
        Some(TrackedGuard {
            g,
            _t: HeldToken(acquired(self.class, How::Try, site)),
        })
    }
}
