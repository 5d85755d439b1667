//! Layout leases: who holds which byte range of which inode, for reading or writing.
//!
//! First version (issue 9, daxclient): one in-memory table for the mount, indexed by lease
//! id and by inode. Leases are never on media: after a crash or restart nobody holds one.
//! A lease holds an inode reference (an `Fs::open` count, dropped by `Fs::release` when the
//! lease goes), so an inode with leases is never evicted and an unlinked one lives until
//! they are returned. The breaking side (recall, wait, revoke, quarantine) comes with
//! daxcore, who may move the per-inode part onto the in-core inode.
//!
//! Bounds: at most `LEASES_PER_CLIENT_MAX` per client and `LEASES_MAX` in all; a grant
//! past them is refused (ENOSPC-like `Full`), never queued.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

pub type ClientId = u64;
pub type LeaseId = u64;

pub const LEASES_PER_CLIENT_MAX: usize = 1024;
pub const LEASES_MAX: usize = 65536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    Granted,
    /// Asked back; the filesystem is waiting for the return.
    Recalled,
    /// Not returned in time: the client is fenced, its blocks quarantined.
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: LeaseId,
    pub client: ClientId,
    pub ino: u64,
    /// Byte range, block aligned.
    pub off: u64,
    pub len: u64,
    pub write: bool,
    pub state: LeaseState,
    /// The client process, for `daxfs leases`.
    pub pid: u32,
    pub uid: u32,
    /// Blocks kept out of reuse because this (revoked) lease may still store into them.
    pub quarantined_blocks: u64,
}

impl Lease {
    pub fn overlaps(&self, off: u64, len: u64) -> bool {
        self.off < off.saturating_add(len) && off < self.off + self.len
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseError {
    /// Over LEASES_PER_CLIENT_MAX or LEASES_MAX.
    Full,
    /// No such lease of this client.
    NotFound,
}

#[derive(Default)]
struct Inner {
    next: LeaseId,
    by_id: BTreeMap<LeaseId, Lease>,
    by_ino: HashMap<u64, BTreeSet<LeaseId>>,
    per_client: HashMap<ClientId, usize>,
}

/// Counters for `daxfs stat`.
#[derive(Default)]
pub struct LeaseStats {
    pub grants: AtomicU64,
    pub returns: AtomicU64,
    pub recalls: AtomicU64,
    pub revokes: AtomicU64,
    pub break_waits: AtomicU64,
    pub longest_break_us: AtomicU64,
}

#[derive(Default)]
pub struct LeaseTable {
    inner: Mutex<Inner>,
    pub stats: LeaseStats,
}

impl LeaseTable {
    pub fn insert(
        &self,
        client: ClientId,
        who: super::ClientInfo,
        ino: u64,
        off: u64,
        len: u64,
        write: bool,
    ) -> Result<LeaseId, LeaseError> {
        let super::ClientInfo { pid, uid } = who;
        let mut t = self.inner.lock().unwrap();
        let n = t.per_client.get(&client).copied().unwrap_or(0);
        if n >= LEASES_PER_CLIENT_MAX || t.by_id.len() >= LEASES_MAX {
            return Err(LeaseError::Full);
        }
        t.next += 1;
        let id = t.next;
        t.by_id.insert(
            id,
            Lease {
                id,
                client,
                ino,
                off,
                len,
                write,
                state: LeaseState::Granted,
                pid,
                uid,
                quarantined_blocks: 0,
            },
        );
        t.by_ino.entry(ino).or_default().insert(id);
        *t.per_client.entry(client).or_default() += 1;
        self.stats.grants.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    fn unlink(t: &mut Inner, id: LeaseId) -> Option<Lease> {
        let l = t.by_id.remove(&id)?;
        if let Some(s) = t.by_ino.get_mut(&l.ino) {
            s.remove(&id);
            if s.is_empty() {
                t.by_ino.remove(&l.ino);
            }
        }
        if let Some(n) = t.per_client.get_mut(&l.client) {
            *n -= 1;
            if *n == 0 {
                t.per_client.remove(&l.client);
            }
        }
        Some(l)
    }

    /// Remove `client`'s lease `id` (a return).
    pub fn remove(&self, client: ClientId, id: LeaseId) -> Result<Lease, LeaseError> {
        let mut t = self.inner.lock().unwrap();
        match t.by_id.get(&id) {
            Some(l) if l.client == client => {}
            _ => return Err(LeaseError::NotFound),
        }
        self.stats.returns.fetch_add(1, Ordering::Relaxed);
        Ok(Self::unlink(&mut t, id).expect("present"))
    }

    /// Remove every lease of `client` (it is gone).
    pub fn remove_client(&self, client: ClientId) -> Vec<Lease> {
        let mut t = self.inner.lock().unwrap();
        let ids: Vec<LeaseId> = t
            .by_id
            .values()
            .filter(|l| l.client == client)
            .map(|l| l.id)
            .collect();
        ids.into_iter()
            .filter_map(|id| Self::unlink(&mut t, id))
            .collect()
    }

    pub fn get(&self, id: LeaseId) -> Option<Lease> {
        self.inner.lock().unwrap().by_id.get(&id).cloned()
    }

    /// Leases on `ino` overlapping [off, off+len).
    pub fn overlapping(&self, ino: u64, off: u64, len: u64) -> Vec<Lease> {
        let t = self.inner.lock().unwrap();
        t.by_ino.get(&ino).map_or_else(Vec::new, |s| {
            s.iter()
                .filter_map(|id| t.by_id.get(id))
                .filter(|l| l.overlaps(off, len))
                .cloned()
                .collect()
        })
    }

    pub fn set_state(&self, id: LeaseId, state: LeaseState) -> bool {
        match self.inner.lock().unwrap().by_id.get_mut(&id) {
            Some(l) => {
                l.state = state;
                true
            }
            None => false,
        }
    }

    /// Up to `n` leases with ids after `after`, in id order, and whether more follow.
    pub fn list(&self, after: LeaseId, n: usize) -> (Vec<Lease>, bool) {
        let t = self.inner.lock().unwrap();
        let mut it = t
            .by_id
            .range(after.saturating_add(1)..)
            .map(|(_, l)| l.clone());
        let v: Vec<Lease> = it.by_ref().take(n).collect();
        (v, it.next().is_some())
    }

    pub fn count(&self) -> usize {
        self.inner.lock().unwrap().by_id.len()
    }

    pub fn client_count(&self, client: ClientId) -> usize {
        self.inner
            .lock()
            .unwrap()
            .per_client
            .get(&client)
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(pid: u32, uid: u32) -> super::super::ClientInfo {
        super::super::ClientInfo { pid, uid }
    }

    #[test]
    fn insert_remove_and_indexes() {
        let t = LeaseTable::default();
        let a = t.insert(1, who(10, 0), 100, 0, 8192, true).unwrap();
        let b = t.insert(1, who(10, 0), 100, 8192, 4096, false).unwrap();
        let c = t.insert(2, who(11, 0), 200, 0, 4096, false).unwrap();
        assert!(a < b && b < c);
        assert_eq!(t.overlapping(100, 4096, 8192).len(), 2);
        assert_eq!(t.overlapping(100, 12288, 4096).len(), 0);
        assert_eq!(t.overlapping(100, 0, 1)[0].id, a);
        assert_eq!(t.overlapping(300, 0, u64::MAX).len(), 0);
        // Only the owner returns a lease.
        assert_eq!(t.remove(2, a), Err(LeaseError::NotFound));
        assert_eq!(t.remove(1, a).unwrap().id, a);
        assert_eq!(t.remove(1, a), Err(LeaseError::NotFound));
        assert_eq!(t.client_count(1), 1);
        assert!(t.set_state(b, LeaseState::Recalled));
        assert_eq!(t.get(b).unwrap().state, LeaseState::Recalled);
        let gone = t.remove_client(1);
        assert_eq!(gone.len(), 1);
        assert_eq!(t.client_count(1), 0);
        assert_eq!(t.overlapping(100, 0, u64::MAX).len(), 0);
        assert_eq!(t.count(), 1);
        assert_eq!(t.stats.grants.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn per_client_bound() {
        let t = LeaseTable::default();
        for i in 0..LEASES_PER_CLIENT_MAX as u64 {
            t.insert(7, who(1, 0), 1, i * 4096, 4096, false).unwrap();
        }
        assert_eq!(
            t.insert(7, who(1, 0), 1, 0, 4096, false),
            Err(LeaseError::Full)
        );
        // Another client is not affected.
        assert!(t.insert(8, who(1, 0), 1, 0, 4096, false).is_ok());
        assert_eq!(t.remove_client(7).len(), LEASES_PER_CLIENT_MAX);
        assert!(t.insert(7, who(1, 0), 1, 0, 4096, false).is_ok());
    }

    #[test]
    fn list_pages() {
        let t = LeaseTable::default();
        let ids: Vec<_> = (0..5)
            .map(|i| t.insert(1, who(1, 0), i, 0, 4096, false).unwrap())
            .collect();
        let (p, more) = t.list(0, 2);
        assert!(more);
        assert_eq!(p.iter().map(|l| l.id).collect::<Vec<_>>(), ids[..2]);
        let (p, more) = t.list(ids[3], 2);
        assert!(!more);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].id, ids[4]);
    }
}
