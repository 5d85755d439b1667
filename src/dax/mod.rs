//! The DAX layer: how file ranges become device blocks a program may use directly.
//!
//! Owns the fault path today (`iomap`: map a file block, allocate a range's holes), used
//! by every write path of fs/ and by directory growth, and the layout lease table
//! (`lease`: who holds which range of which inode; in memory only) with the shape of a
//! grant (`grant`). The grant/return/commit operations over the core are `impl Fs` in
//! fs/layout.rs; the control socket that direct-access clients talk to (protocol:
//! crate daxfs-client, client/src/proto.rs) calls fs/ and so sits beside fuse.rs, above
//! fs, in src/daxserver.rs. Breaking layouts (recall, wait, revoke, quarantine) is next.
//!
//! May call: `error`, `format`, `pmem`, `log`, `space`, `inode`. Never dir, xattr or fs.
//!
//! The interface between the socket server (daxclient) and the filesystem side (daxcore):
//! ```text
//! Fs::layout_client_new(pid, uid) -> ClientId            // a connection was accepted
//! Fs::layout_grant(ino, client, off, len, write) -> Result<Grant, LayoutError>
//!     Grant { lease, ino, size /* in-core i_size */, off, len /* what the lease covers */,
//!             ranges: Vec<Mapping { file_off, len, dev_off: Option<u64> /* None = hole */ }> }
//!     // a write grant allocates (zeroed, written) every hole/unwritten block, also past EOF
//! Fs::layout_return(client, lease)                        // also restores zeros past EOF
//! Fs::layout_commit_size(client, lease, new_size) -> ino  // grows only, inside the write lease
//! Fs::layout_client_gone(client)                          // pidfd fired or socket closed
//! Fs::layout_list() / layout_list_page(after, n)          // `daxfs leases`
//! Fs::layout_recall(ino, off, len) -> Vec<LeaseId>        // marks Recalled, calls the sink
//! Fs::set_recall_sink(Option<Arc<dyn RecallSink>>)        // registered by the socket server
//! trait RecallSink { fn recall(&self, client, lease, ino, off, len);
//!                    fn revoked(&self, client, lease, why: &str); }
//! ```
//! The server sends RECALL from `RecallSink::recall` without blocking (a client whose
//! socket is full just does not hear it, and is revoked after the wait); the client answers
//! with RETURN, which arrives as `layout_return`. `RecallSink::revoked` sends REVOKED: the
//! client unmaps and returns the lease as soon as it holds no pin. A revoked lease's size
//! commit fails with EKEYREVOKED (the fence on further grants is daxcore's).

pub mod grant;
pub mod iomap;
pub mod lease;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub use grant::{Grant, Mapping};
pub use iomap::{alloc_holes, blocks_fitting, dev_off, write_resblks};
pub use lease::{ClientId, Lease as LeaseInfo, LeaseId, LeaseState, LeaseTable};

use crate::error::FsError;

/// Registered by the socket server: how the filesystem reaches a client.
pub trait RecallSink: Send + Sync {
    fn recall(&self, client: ClientId, lease: LeaseId, ino: u64, off: u64, len: u64);
    /// The lease was revoked; tell the client why (its next use fails).
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

impl From<FsError> for LayoutError {
    fn from(e: FsError) -> Self {
        LayoutError {
            errno: e.errno(),
            text: e.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ClientInfo {
    pub pid: u32,
    pub uid: u32,
}

/// The direct-access state of a mount (a field of `Fs`).
#[derive(Default)]
pub struct DaxState {
    pub table: LeaseTable,
    pub clients: Mutex<HashMap<ClientId, ClientInfo>>,
    pub next_client: AtomicU64,
    pub sink: RwLock<Option<Arc<dyn RecallSink>>>,
}

impl DaxState {
    /// Lines for `daxfs stat`.
    pub fn stats_text(&self) -> String {
        let s = &self.table.stats;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "dax_clients {}\ndax_leases {}\ndax_grants {}\ndax_returns {}\ndax_recalls {}\n\
             dax_revokes {}\ndax_break_waits {}\ndax_longest_break_us {}\n",
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
