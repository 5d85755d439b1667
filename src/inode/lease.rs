//! The layout leases of one in-core inode (DESIGN.md 6): who may map which byte range of
//! this file directly, for reading or writing, and in which state the lease is.
//!
//! Leases are in memory only: after a crash or restart no client holds one. While an inode
//! has live leases it counts as referenced (`Inode::referenced`), so it is never evicted
//! and an unlinked one is not freed (a lease is like an open file). The mount-wide index
//! (by lease id, by client) and the breaking logic are above, in dax/lease.rs and fs/.
//!
//! Lock: the set is behind a leaf mutex of the inode (`Inode::leases`), taken under any
//! inode lock and briefly: nothing else is taken while it is held, and nobody waits for a
//! client while holding it.

use std::collections::BTreeMap;

pub type ClientId = u64;
pub type LeaseId = u64;

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
    /// The client process and user, for `daxfs leases`.
    pub pid: u32,
    pub uid: u32,
    /// Device block ranges (first block, blocks) handed out by the grant: what the client
    /// may load from and store into. Quarantined if the lease is revoked.
    pub dev: Vec<(u64, u64)>,
    /// Blocks kept out of reuse because this (revoked) lease may still store into them.
    pub quarantined_blocks: u64,
}

impl Lease {
    pub fn overlaps(&self, off: u64, len: u64) -> bool {
        self.off < off.saturating_add(len) && off < self.off + self.len
    }

    pub fn dev_blocks(&self) -> u64 {
        self.dev.iter().map(|r| r.1).sum()
    }
}

/// The live (granted or recalled) leases of one inode, by id.
#[derive(Debug, Default)]
pub struct InodeLeases {
    live: BTreeMap<LeaseId, Lease>,
}

impl InodeLeases {
    pub fn insert(&mut self, l: Lease) {
        debug_assert!(
            l.state != LeaseState::Revoked,
            "a revoked lease is not live"
        );
        let prev = self.live.insert(l.id, l);
        assert!(prev.is_none(), "lease ids are unique");
    }

    pub fn remove(&mut self, id: LeaseId) -> Option<Lease> {
        self.live.remove(&id)
    }

    pub fn get(&self, id: LeaseId) -> Option<&Lease> {
        self.live.get(&id)
    }

    /// Live leases overlapping bytes [off, off+len).
    pub fn overlapping(&self, off: u64, len: u64) -> Vec<Lease> {
        self.live
            .values()
            .filter(|l| l.overlaps(off, len))
            .cloned()
            .collect()
    }

    /// Mark `id` recalled; false if it is not live or was already recalled.
    pub fn recall(&mut self, id: LeaseId) -> bool {
        match self.live.get_mut(&id) {
            Some(l) if l.state == LeaseState::Granted => {
                l.state = LeaseState::Recalled;
                true
            }
            _ => false,
        }
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Lease> {
        self.live.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(id: u64, off: u64, len: u64) -> Lease {
        Lease {
            id,
            client: 1,
            ino: 9,
            off,
            len,
            write: false,
            state: LeaseState::Granted,
            pid: 1,
            uid: 0,
            dev: vec![(100 + id, len / 4096)],
            quarantined_blocks: 0,
        }
    }

    #[test]
    fn overlap_recall_remove() {
        let mut s = InodeLeases::default();
        s.insert(lease(1, 0, 8192));
        s.insert(lease(2, 8192, 4096));
        assert_eq!(s.overlapping(4096, 8192).len(), 2);
        assert_eq!(s.overlapping(12288, 4096).len(), 0);
        assert_eq!(s.overlapping(0, 1)[0].id, 1);
        // The range end is exclusive on both sides.
        assert_eq!(s.overlapping(8191, 1)[0].id, 1);
        assert_eq!(s.overlapping(8192, 1)[0].id, 2);
        assert!(s.recall(2));
        assert!(!s.recall(2), "a second recall is not a recall");
        assert_eq!(s.get(2).unwrap().state, LeaseState::Recalled);
        assert_eq!(s.remove(1).unwrap().id, 1);
        assert!(s.remove(1).is_none());
        assert!(!s.recall(1));
        assert_eq!(s.len(), 1);
        assert_eq!(s.overlapping(0, u64::MAX).len(), 1);
    }
}
