//! The DAX layer: how file ranges become device blocks a program may use directly.
//!
//! - `fault.rs`: the one fault path (iomap_begin/end): every data path's lookup and
//!   allocation of file blocks, under the invalidate lock and the mapping's allocation
//!   context.
//! - `iomap.rs`: its building blocks (a file block's device offset, a range's holes
//!   allocated), also used by fallocate, long symlinks and directory growth.
//! - `grant.rs`: the shape of a grant (device ranges of a file range, bounds).
//! - `lease.rs`: the mount's layout-lease table over the per-inode lease sets
//!   (inode/lease.rs): live, recalled and revoked leases, fences, break waits.
//!
//! The lease operations (grant, return, size commit, break: recall, wait, revoke,
//! quarantine) need the filesystem and live in fs/layout.rs (`Fs::layout_*`, the interface
//! the socket server uses, with `RecallSink` below); the client protocol
//! (client/src/proto.rs) and the socket server (src/daxserver.rs) sit above fs.
//!
//! May call: `error`, `format`, `pmem`, `mem`, `log`, `space`, `inode`. Never dir, xattr
//! or fs.

pub mod fault;
pub mod grant;
pub mod iomap;
pub mod lease;

pub use fault::{FaultKind, Iomap, fault};
pub use grant::{Grant, Mapping};
pub use iomap::{alloc_holes, blocks_fitting, dev_off, write_resblks};
pub use lease::{ClientId, Lease, LeaseId, LeaseState, LeaseTable};
/// The name the socket server knows a listed lease by.
pub type LeaseInfo = Lease;

/// A connected client's process, for `daxfs leases`.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo {
    pub pid: u32,
    pub uid: u32,
}

/// How the filesystem reaches direct-access clients (registered by the socket server).
/// Calls must not block: the filesystem calls them while it holds an inode's IOLOCK.
pub trait RecallSink: Send + Sync {
    /// Ask `client` to give lease `lease` back (it covers bytes [off, off+len) of `ino`).
    fn recall(&self, client: ClientId, lease: LeaseId, ino: u64, off: u64, len: u64);
    /// The lease was revoked; tell the client why (its next request fails as well).
    fn revoked(&self, client: ClientId, lease: LeaseId, why: &str);
}

/// An error for a client: errno and a reason it can show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutError {
    pub errno: i32,
    pub text: String,
}

pub fn lerr(errno: i32, text: impl Into<String>) -> LayoutError {
    LayoutError {
        errno,
        text: text.into(),
    }
}

impl From<crate::error::FsError> for LayoutError {
    fn from(e: crate::error::FsError) -> Self {
        LayoutError {
            errno: e.errno(),
            text: e.to_string(),
        }
    }
}

impl std::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({})",
            self.text,
            std::io::Error::from_raw_os_error(self.errno)
        )
    }
}
