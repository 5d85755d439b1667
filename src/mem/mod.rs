//! Allocation contexts as scopes (DESIGN.md section 5, reference/001 and 002).
//!
//! A thread inside a transaction must not let memory reclaim re-enter the filesystem
//! (NOFS): reclaim could wait on a lock or a log force the thread itself holds. The context
//! is a *scope* entered once where the risk starts, not a flag passed down call chains:
//! `let _g = nofs_scope();`. Scopes nest; the guard restores the previous context on drop.
//! Reclaim (the next step: shrinkers over the inode cache) asks `current_context()`.

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
