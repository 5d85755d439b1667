//! Memory: allocation contexts as scopes, the budget, the reclaimer and its lock checker
//! (DESIGN.md section 5, reference/000, 001, 002 and 004).
//!
//! A thread inside a transaction must not let memory reclaim re-enter the filesystem
//! (NOFS): reclaim could wait on a lock or a log force the thread itself holds. The context
//! is a *scope* entered once where the risk starts, not a flag passed down call chains:
//! `let _g = nofs_scope();`. Scopes nest; the guard restores the previous context on drop.
//! Starting a transaction enters NOFS (log/trans.rs). An object may carry a mask of its own
//! (an inode's mapping mask, set once at setup): reclaim for it runs in the stricter of the
//! two (`stricter`), never in a context patched around a call (reference/004).
//!
//! - `budget`: what the caches are charged (`Charge`, owned by the charged object), the
//!   limit and watermarks;
//! - `reclaim`: shrinkers, direct reclaim in the allocating thread, the background thread;
//! - `lockcheck`: lockdep for reclaim (debug builds and tests).
//!
//! What held the memory issue 10 measured (memfd mount, 200 x 1,000 creates, then
//! `drop_caches` so the kernel forgets every inode): not the inode cache. After the forgets
//! the cache held 1 inode and ~1 KB was charged, yet RssAnon stayed at 96 MB; glibc's
//! `malloc_stats` showed the two FUSE worker threads' arenas at 62 MB and 68 MB of system
//! memory with 17 MB each in use (their request buffers): the freed inodes sat in the
//! arenas' free lists below live chunks, which glibc never returns by itself. One
//! `malloc_trim(0)` (through gdb) brought RssAnon to 4 MB. The inode table (a HashMap that
//! never shrinks) was a smaller part (~4 MB at 200k). So the background reclaimer trims the
//! allocator after 4 MiB have been uncharged and shrinks the table when it is mostly empty;
//! with that, the same run ends at 4.3 MB.
//!
//! May call nothing else in the crate: every layer above may allocate, and pmem reports
//! device accesses here (NOIO checking), so this sits right above `error`.

pub mod budget;
pub mod lockcheck;
pub mod reclaim;

pub use budget::{Budget, Cache, Charge};
pub use reclaim::{Mem, ScanControl, ScanResult, Shrinker};

use std::cell::Cell;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AllocContext {
    /// Reclaim may write back and evict with filesystem work.
    Full,
    /// Reclaim must not enter the filesystem (no log force, no FS locks but by trylock).
    NoFs,
    /// Reclaim must not touch the device either.
    NoIo,
}

thread_local! {
    static NOFS_DEPTH: Cell<u32> = const { Cell::new(0) };
    static NOIO_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// The stricter of two contexts (NOIO > NOFS > Full).
pub fn stricter(a: AllocContext, b: AllocContext) -> AllocContext {
    a.max(b)
}

/// The context allocations on this thread run in.
pub fn current_context() -> AllocContext {
    if NOIO_DEPTH.with(|d| d.get()) > 0 {
        AllocContext::NoIo
    } else if NOFS_DEPTH.with(|d| d.get()) > 0 {
        AllocContext::NoFs
    } else {
        AllocContext::Full
    }
}

#[must_use = "the scope ends when the guard is dropped"]
pub struct NofsGuard {
    _not_send: std::marker::PhantomData<*const ()>,
}

pub fn nofs_scope() -> NofsGuard {
    NOFS_DEPTH.with(|d| d.set(d.get() + 1));
    NofsGuard {
        _not_send: std::marker::PhantomData,
    }
}

impl Drop for NofsGuard {
    fn drop(&mut self) {
        NOFS_DEPTH.with(|d| d.set(d.get() - 1));
    }
}

#[must_use = "the scope ends when the guard is dropped"]
pub struct NoioGuard {
    _not_send: std::marker::PhantomData<*const ()>,
}

pub fn noio_scope() -> NoioGuard {
    NOIO_DEPTH.with(|d| d.set(d.get() + 1));
    NoioGuard {
        _not_send: std::marker::PhantomData,
    }
}

impl Drop for NoioGuard {
    fn drop(&mut self) {
        NOIO_DEPTH.with(|d| d.set(d.get() - 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_restore() {
        assert_eq!(current_context(), AllocContext::Full);
        {
            let _a = nofs_scope();
            assert_eq!(current_context(), AllocContext::NoFs);
            {
                let _b = noio_scope();
                assert_eq!(current_context(), AllocContext::NoIo);
                let _c = nofs_scope();
                assert_eq!(current_context(), AllocContext::NoIo);
            }
            assert_eq!(current_context(), AllocContext::NoFs);
        }
        assert_eq!(current_context(), AllocContext::Full);
    }
}
