//! The per-thread lock-order checker's state. The order itself is written once, in
//! `inode/mod.rs`; the counter is here, below both users: the inode locks count the ILOCKs
//! a thread holds, and beginning a transaction (this layer) must see none.

use std::cell::Cell;

thread_local! {
    static ILOCKS_HELD: Cell<u32> = const { Cell::new(0) };
}

/// Panics when a lock that must come before ILOCK is taken after one. A thread-local
/// counter: cheap enough to keep on in release builds, where the tests run.
#[track_caller]
pub fn assert_no_ilock(what: &str) {
    let n = ILOCKS_HELD.with(|c| c.get());
    assert!(
        n == 0,
        "lock order violation: {what} taken while holding {n} ILOCK(s) (order: IOLOCK -> MMAPLOCK -> transaction -> ILOCK)"
    );
}

/// An ILOCK was taken on this thread (the inode lock guards call this).
pub(crate) fn ilock_taken() {
    ILOCKS_HELD.with(|c| c.set(c.get() + 1));
}

/// An ILOCK was let go on this thread.
pub(crate) fn ilock_released() {
    ILOCKS_HELD.with(|c| c.set(c.get() - 1));
}
