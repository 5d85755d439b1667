//! The mount's lease table: every layout lease by id and by client, over the per-inode
//! lease sets (inode/lease.rs) that hold the live ones.
//!
//! A live lease (granted or recalled) is in its inode's set and here, with an `Arc` of the
//! inode: the lease is an inode reference, so an inode with leases is never evicted and an
//! unlinked one lives until they are returned or revoked. A *revoked* lease leaves its
//! inode (the reference goes: revoking ends the client's claim on the file) but stays here
//! until the client returns it or is gone: while it does, its client is *fenced* (every
//! grant and size commit fails with the reason) and its device blocks are quarantined
//! (held frees, log/holds.rs, owned by the lease id).
//!
//! Leases are in memory only: after a crash or restart nobody holds one.
//!
//! Bounds: at most `LEASES_PER_CLIENT_MAX` per client and `LEASES_MAX` in all; a grant past
//! them is refused, never queued.
//!
//! Locks: `inner` then an inode's lease set (a leaf); a waiter for returns sleeps on
//! `changed` with `inner`, holding no inode lock but the IOLOCK of the inode it breaks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::inode::Inode;
pub use crate::inode::lease::{ClientId, Lease, LeaseId, LeaseState};

pub const LEASES_PER_CLIENT_MAX: usize = 1024;
pub const LEASES_MAX: usize = 65536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseError {
    /// Over LEASES_PER_CLIENT_MAX or LEASES_MAX.
    Full,
    /// No such lease of this client.
    NotFound,
}

enum Entry {
    Live {
        inode: Arc<Inode>,
    },
    /// Out of its inode; the lease as it was when revoked.
    Revoked(Lease),
}

#[derive(Default)]
struct Inner {
    next: LeaseId,
    by_id: BTreeMap<LeaseId, Entry>,
    by_client: HashMap<ClientId, BTreeSet<LeaseId>>,
}

/// Counters for `daxfs stat`.
#[derive(Default)]
pub struct LeaseStats {
    pub grants: AtomicU64,
    pub returns: AtomicU64,
    pub recalls: AtomicU64,
    pub revokes: AtomicU64,
    /// Breaks that had to wait for at least one client.
    pub break_waits: AtomicU64,
    pub longest_break_us: AtomicU64,
}

#[derive(Default)]
pub struct LeaseTable {
    inner: Mutex<Inner>,
    /// Signalled whenever a lease leaves the table or its inode (return, client gone).
    changed: Condvar,
    pub stats: LeaseStats,
}

impl LeaseTable {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a new live lease on `inode` (its id is filled in here).
    pub fn insert(&self, inode: &Arc<Inode>, mut l: Lease) -> Result<LeaseId, LeaseError> {
        let mut t = self.lock();
        let n = t.by_client.get(&l.client).map_or(0, |s| s.len());
        if n >= LEASES_PER_CLIENT_MAX || t.by_id.len() >= LEASES_MAX {
            return Err(LeaseError::Full);
        }
        t.next += 1;
        let id = t.next;
        l.id = id;
        l.ino = inode.ino;
        l.state = LeaseState::Granted;
        t.by_client.entry(l.client).or_default().insert(id);
        t.by_id.insert(
            id,
            Entry::Live {
                inode: inode.clone(),
            },
        );
        inode.leases().insert(l);
        self.stats.grants.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    fn unlink(&self, t: &mut Inner, id: LeaseId) -> Option<(Lease, Option<Arc<Inode>>)> {
        let e = t.by_id.remove(&id)?;
        let (l, inode) = match e {
            Entry::Live { inode, .. } => {
                let l = inode
                    .leases()
                    .remove(id)
                    .expect("a live lease is in its inode");
                (l, Some(inode))
            }
            Entry::Revoked(l) => (l, None),
        };
        if let Some(s) = t.by_client.get_mut(&l.client) {
            s.remove(&id);
            if s.is_empty() {
                t.by_client.remove(&l.client);
            }
        }
        self.changed.notify_all();
        Some((l, inode))
    }

    /// Remove `client`'s lease `id` (a return). Gives the lease and, for a live one, the
    /// inode reference it held (drop it after the caller is done with the inode).
    pub fn remove(
        &self,
        client: ClientId,
        id: LeaseId,
    ) -> Result<(Lease, Option<Arc<Inode>>), LeaseError> {
        let mut t = self.lock();
        if !t.by_client.get(&client).is_some_and(|s| s.contains(&id)) {
            return Err(LeaseError::NotFound);
        }
        self.stats.returns.fetch_add(1, Ordering::Relaxed);
        Ok(self.unlink(&mut t, id).expect("present"))
    }

    /// Remove every lease of `client` (it is gone).
    pub fn remove_client(&self, client: ClientId) -> Vec<(Lease, Option<Arc<Inode>>)> {
        let mut t = self.lock();
        let ids: Vec<LeaseId> = t
            .by_client
            .get(&client)
            .map_or_else(Vec::new, |s| s.iter().copied().collect());
        ids.into_iter()
            .filter_map(|id| self.unlink(&mut t, id))
            .collect()
    }

    /// The lease `id` as it stands (live or revoked).
    pub fn get(&self, id: LeaseId) -> Option<Lease> {
        let t = self.lock();
        match t.by_id.get(&id)? {
            Entry::Live { inode, .. } => inode.leases().get(id).cloned(),
            Entry::Revoked(l) => Some(l.clone()),
        }
    }

    /// Why `client` is fenced, if it is: it holds a revoked lease it has not returned.
    pub fn fenced(&self, client: ClientId) -> Option<String> {
        let t = self.lock();
        let ids = t.by_client.get(&client)?;
        ids.iter().find_map(|id| match t.by_id.get(id) {
            Some(Entry::Revoked(l)) => Some(revoked_reason(l)),
            _ => None,
        })
    }

    /// Wait until none of `ids` is live on an inode any more, or until `deadline`.
    /// Returns those still live. Holds only the table's mutex while it sleeps.
    pub fn wait_gone(&self, ids: &[LeaseId], deadline: Instant) -> Vec<LeaseId> {
        let mut t = self.lock();
        loop {
            let live: Vec<LeaseId> = ids
                .iter()
                .copied()
                .filter(|id| matches!(t.by_id.get(id), Some(Entry::Live { .. })))
                .collect();
            let now = Instant::now();
            if live.is_empty() || now >= deadline {
                return live;
            }
            t = self
                .changed
                .wait_timeout(t, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Revoke live lease `id`: it leaves its inode (whose reference is handed back), and
    /// stays here, revoked, with `quarantined` blocks, until returned or its client goes.
    pub fn revoke(&self, id: LeaseId, quarantined: u64) -> Option<(Lease, Arc<Inode>)> {
        let mut t = self.lock();
        let Some(Entry::Live { inode, .. }) = t.by_id.get(&id) else {
            return None;
        };
        let inode = inode.clone();
        let mut l = inode
            .leases()
            .remove(id)
            .expect("a live lease is in its inode");
        l.state = LeaseState::Revoked;
        l.quarantined_blocks = quarantined;
        t.by_id.insert(id, Entry::Revoked(l.clone()));
        self.stats.revokes.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_all();
        Some((l, inode))
    }

    /// Up to `n` leases with ids after `after`, in id order, and whether more follow.
    pub fn list(&self, after: LeaseId, n: usize) -> (Vec<Lease>, bool) {
        let t = self.lock();
        let mut it = t
            .by_id
            .range(after.saturating_add(1)..)
            .filter_map(|(id, e)| match e {
                Entry::Live { inode, .. } => inode.leases().get(*id).cloned(),
                Entry::Revoked(l) => Some(l.clone()),
            });
        let v: Vec<Lease> = it.by_ref().take(n).collect();
        (v, it.next().is_some())
    }

    pub fn count(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn client_count(&self, client: ClientId) -> usize {
        self.lock().by_client.get(&client).map_or(0, |s| s.len())
    }

    /// The clients that hold any lease.
    pub fn clients(&self) -> Vec<ClientId> {
        self.lock().by_client.keys().copied().collect()
    }

    /// Record a break's duration.
    pub fn note_break(&self, waited: bool, us: u64) {
        if waited {
            self.stats.break_waits.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.longest_break_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Every live entry is in its inode's set, and the client index agrees (tests).
    #[cfg(test)]
    fn consistent(&self) -> bool {
        let t = self.lock();
        t.by_id.iter().all(|(id, e)| {
            let l = match e {
                Entry::Live { inode } => match inode.leases().get(*id) {
                    Some(l) if l.state != LeaseState::Revoked => l.clone(),
                    _ => return false,
                },
                Entry::Revoked(l) if l.state == LeaseState::Revoked => l.clone(),
                Entry::Revoked(_) => return false,
            };
            t.by_client.get(&l.client).is_some_and(|s| s.contains(id))
        })
    }
}

/// What a fenced client is told.
pub fn revoked_reason(l: &Lease) -> String {
    format!(
        "lease {} on inode {} (bytes {}+{}) was revoked: it was recalled and not returned in \
         time; return it (or exit) to lift the fence",
        l.id, l.ino, l.off, l.len
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inode::DiskInode;
    use crate::inode::extent_map::ExtentMap;

    fn inode(ino: u64) -> Arc<Inode> {
        Arc::new(Inode::new(
            DiskInode {
                ino,
                mode: libc::S_IFREG | 0o644,
                ..Default::default()
            },
            ExtentMap::new(),
        ))
    }

    fn lease(client: ClientId, off: u64, len: u64, write: bool) -> Lease {
        Lease {
            id: 0,
            client,
            ino: 0,
            off,
            len,
            write,
            state: LeaseState::Granted,
            pid: 10,
            uid: 0,
            dev: vec![],
            quarantined_blocks: 0,
        }
    }

    #[test]
    fn a_lease_is_an_inode_reference() {
        let t = LeaseTable::default();
        let i = inode(100);
        assert!(!i.referenced());
        let a = t.insert(&i, lease(1, 0, 8192, true)).unwrap();
        assert!(i.referenced() && i.has_leases());
        assert_eq!(Arc::strong_count(&i), 2, "the table holds the inode");
        let (l, held) = t.remove(1, a).unwrap();
        assert_eq!((l.id, l.ino), (a, 100));
        assert!(held.is_some());
        drop(held);
        assert!(!i.referenced());
        assert_eq!(Arc::strong_count(&i), 1);
        assert!(t.consistent());
    }

    #[test]
    fn only_the_owner_returns() {
        let t = LeaseTable::default();
        let (i, j) = (inode(100), inode(200));
        let a = t.insert(&i, lease(1, 0, 8192, true)).unwrap();
        let b = t.insert(&i, lease(1, 8192, 4096, false)).unwrap();
        let c = t.insert(&j, lease(2, 0, 4096, false)).unwrap();
        assert!(a < b && b < c);
        assert_eq!(i.leases().overlapping(4096, 8192).len(), 2);
        assert_eq!(t.remove(2, a).err(), Some(LeaseError::NotFound));
        assert!(t.remove(1, a).is_ok());
        assert_eq!(t.remove(1, a).err(), Some(LeaseError::NotFound));
        assert_eq!(t.client_count(1), 1);
        let gone = t.remove_client(1);
        assert_eq!(gone.len(), 1);
        assert!(!i.has_leases());
        assert!(j.has_leases());
        assert_eq!(t.count(), 1);
        assert_eq!(t.stats.grants.load(Ordering::Relaxed), 3);
        assert!(t.consistent());
    }

    #[test]
    fn revoke_fences_until_returned() {
        let t = LeaseTable::default();
        let i = inode(100);
        let a = t.insert(&i, lease(1, 0, 8192, true)).unwrap();
        let b = t.insert(&i, lease(2, 0, 8192, false)).unwrap();
        assert!(t.fenced(1).is_none());
        let (l, held) = t.revoke(a, 2).unwrap();
        drop(held);
        assert_eq!(l.state, LeaseState::Revoked);
        // The revoked lease left its inode; the other one did not.
        assert_eq!(i.leases().len(), 1);
        assert_eq!(t.get(a).unwrap().state, LeaseState::Revoked);
        assert_eq!(t.get(a).unwrap().quarantined_blocks, 2);
        let why = t.fenced(1).unwrap();
        assert!(
            why.contains("revoked") && why.contains(&a.to_string()),
            "{why}"
        );
        assert!(t.fenced(2).is_none());
        assert!(t.revoke(a, 0).is_none(), "revoked once");
        // Listed, in id order, with its state.
        let (all, more) = t.list(0, 10);
        assert!(!more);
        assert_eq!(
            all.iter().map(|l| (l.id, l.state)).collect::<Vec<_>>(),
            vec![(a, LeaseState::Revoked), (b, LeaseState::Granted)]
        );
        let (l, inode_ref) = t.remove(1, a).unwrap();
        assert!(inode_ref.is_none(), "a revoked lease holds no inode");
        assert_eq!(l.state, LeaseState::Revoked);
        assert!(t.fenced(1).is_none());
        assert!(t.consistent());
    }

    #[test]
    fn wait_gone_wakes_on_return_and_times_out() {
        let t = Arc::new(LeaseTable::default());
        let i = inode(100);
        let a = t.insert(&i, lease(1, 0, 4096, false)).unwrap();
        let b = t.insert(&i, lease(2, 0, 4096, false)).unwrap();
        let t2 = t.clone();
        let h = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            t2.remove(1, a).unwrap();
        });
        let start = Instant::now();
        let left = t.wait_gone(&[a], start + std::time::Duration::from_secs(10));
        assert!(left.is_empty());
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        h.join().unwrap();
        let start = Instant::now();
        let left = t.wait_gone(&[b], start + std::time::Duration::from_millis(50));
        assert_eq!(left, vec![b]);
        assert!(start.elapsed() >= std::time::Duration::from_millis(50));
    }

    #[test]
    fn per_client_bound() {
        let t = LeaseTable::default();
        let i = inode(1);
        for k in 0..LEASES_PER_CLIENT_MAX as u64 {
            t.insert(&i, lease(7, k * 4096, 4096, false)).unwrap();
        }
        assert_eq!(
            t.insert(&i, lease(7, 0, 4096, false)).unwrap_err(),
            LeaseError::Full
        );
        assert!(t.insert(&i, lease(8, 0, 4096, false)).is_ok());
        assert_eq!(t.remove_client(7).len(), LEASES_PER_CLIENT_MAX);
        assert!(t.insert(&i, lease(7, 0, 4096, false)).is_ok());
    }
}
