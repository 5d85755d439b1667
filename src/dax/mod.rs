//! Direct access: layout leases and the control socket through which the daxfs client
//! library (crate daxfs-client, client/) maps file data straight from the device.
//!
//! Why: Linux 6.18 gives a FUSE server no way to let the kernel map its device into an
//! application (DESIGN.md 6a), so a client maps the device itself, under leases this
//! filesystem grants and can recall (SplitFS/MadFS style).
//!
//! Files:
//! - `lease.rs`: the lease table (in memory only: after a crash nobody holds a lease).
//! - `grant.rs`: `Fs::layout_*`, the grant/return/commit side against the core.
//! - `server.rs`: the per-mount Unix socket, its security checks and connection threads.
//!
//! The interface between the socket server (daxclient) and the filesystem side (daxcore):
//! ```text
//! Fs::layout_client_new(pid, uid) -> ClientId            // a connection was accepted
//! Fs::layout_grant(ino, client, off, len, write) -> Result<Grant, LayoutError>
//!     Grant { lease, ino, size /* in-core i_size */, off, len /* what the lease covers */,
//!             ranges: Vec<Mapping { file_off, len, dev_off: Option<u64> /* None = hole */ }> }
//!     // a write grant allocates (zeroed, written) every hole/unwritten block, also past EOF
//! Fs::layout_return(client, lease)
//! Fs::layout_commit_size(client, lease, new_size) -> ino  // grows only, inside the write lease
//! Fs::layout_client_gone(client)                          // pidfd fired or socket closed
//! Fs::layout_list() / layout_list_page(after, n)          // `daxfs leases`
//! Fs::layout_recall(ino, off, len) -> Vec<LeaseId>        // marks Recalled, calls the sink
//! Fs::set_recall_sink(Arc<dyn RecallSink>)                // registered by the socket server
//! trait RecallSink { fn recall(&self, client, lease, ino, off, len);
//!                    fn revoked(&self, client, lease, why: &str); }
//! ```
//! The server sends RECALL to the client from `RecallSink::recall` without blocking (a
//! client whose socket is full just does not hear it, and is revoked after the wait); the
//! client answers with RETURN, which arrives as `layout_return`. A revoked client's next
//! request fails with EKEYREVOKED (`layout_commit_size` checks the lease state; daxcore
//! adds the fence on grants).

pub mod grant;
pub mod lease;
pub mod server;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub use grant::{Grant, Mapping};
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
    pub(crate) clients: Mutex<HashMap<ClientId, ClientInfo>>,
    pub(crate) next_client: AtomicU64,
    pub(crate) sink: RwLock<Option<Arc<dyn RecallSink>>>,
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

impl crate::fs::Fs {
    pub fn set_recall_sink(&self, sink: Option<Arc<dyn RecallSink>>) {
        *self.dax.sink.write().unwrap() = sink;
    }
}
