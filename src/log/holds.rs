//! Held frees: device block ranges whose frees must not reach the free-space trees yet.
//!
//! Why: a direct-access client whose layout lease was revoked may still store into the
//! blocks it had mapped (DESIGN.md 6a). Those blocks may leave their file (truncate, punch,
//! inactivation), but they must not be handed to another file until the client gave them
//! back or is gone. The mechanism reuses the log's pending frees (XFS's EFI without its
//! EFD): a free that overlaps a hold is logged as pending by its transaction and is *not*
//! finished after the commit; it stays on the pending list, carried by every record, until
//! `release` finishes it. A crash finishes it at recovery (right: no client holds a lease
//! after a restart), and `check` counts it as owned by the log, as any pending free.
//!
//! The log knows nothing of leases: a hold is an owner number (the lease id) and ranges.
//!
//! Bounds: at most `HOLD_RANGES_MAX` ranges are held at once (`hold` refuses more, before
//! anything changes), so the pending list every record carries stays far below what a
//! record can list (`trans::PENDING_MAX`).
//!
//! Lock: `Mp::holds` is a leaf, taken briefly by `finish_frees` (under AG locks) and after
//! a commit; nothing is taken while it is held.

use std::collections::HashMap;

use crate::error::{Result, err};
use crate::log::mp::Mp;

/// Ranges held at once, mount-wide.
pub const HOLD_RANGES_MAX: usize = 1024;

#[derive(Default)]
pub struct Holds {
    /// (first block, blocks, owner).
    ranges: Vec<(u64, u64, u64)>,
    /// Per owner: frees of held blocks that are on the log's pending list, waiting for it.
    held: HashMap<u64, Vec<(u64, u64)>>,
}

impl Holds {
    /// Split the free [blk, blk+len) at hold boundaries: each piece with the owner of a
    /// hold covering it, or None.
    pub(crate) fn split(&self, blk: u64, len: u64) -> Vec<(u64, u64, Option<u64>)> {
        if self.ranges.is_empty() {
            return vec![(blk, len, None)];
        }
        let end = blk + len;
        let mut cuts = vec![blk, end];
        for &(s, n, _) in &self.ranges {
            for c in [s, s + n] {
                if c > blk && c < end {
                    cuts.push(c);
                }
            }
        }
        cuts.sort_unstable();
        cuts.dedup();
        let mut out: Vec<(u64, u64, Option<u64>)> = Vec::new();
        for w in cuts.windows(2) {
            let (a, b) = (w[0], w[1]);
            let owner = self
                .ranges
                .iter()
                .find(|&&(s, n, _)| s <= a && b <= s + n)
                .map(|&(_, _, o)| o);
            match out.last_mut() {
                Some(l) if l.2 == owner && l.0 + l.1 == a => l.1 += b - a,
                _ => out.push((a, b - a, owner)),
            }
        }
        out
    }

    /// Blocks held now (whether still in a file or already freed and waiting).
    pub fn blocks(&self) -> u64 {
        self.ranges.iter().map(|r| r.1).sum()
    }

    /// Frees waiting for `owner`, in blocks.
    pub fn waiting_blocks(&self, owner: u64) -> u64 {
        self.held
            .get(&owner)
            .map_or(0, |v| v.iter().map(|p| p.1).sum())
    }
}

impl Mp {
    /// Hold every free of `ranges` (block, count) until `release_frees(owner)`.
    pub fn hold_frees(&self, owner: u64, ranges: &[(u64, u64)]) -> Result<()> {
        let mut h = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        if h.ranges.len() + ranges.len() > HOLD_RANGES_MAX {
            log::warn!(
                "{} block ranges are already quarantined for revoked direct-access clients \
                 (at most {HOLD_RANGES_MAX}): their processes must exit or return their \
                 leases first",
                h.ranges.len()
            );
            return err(libc::EBUSY);
        }
        for &(blk, n) in ranges {
            assert!(
                n > 0 && blk + n <= self.sb.total_blocks,
                "hold {blk}+{n} outside the device"
            );
            h.ranges.push((blk, n, owner));
        }
        Ok(())
    }

    /// End `owner`'s hold: finish the frees that waited for it (unless another hold still
    /// covers them, which then takes them over).
    pub fn release_frees(&self, owner: u64) -> Result<()> {
        let finish = {
            let mut h = self.holds.lock().unwrap_or_else(|p| p.into_inner());
            h.ranges.retain(|r| r.2 != owner);
            let waiting = h.held.remove(&owner).unwrap_or_default();
            let mut finish = Vec::new();
            for (blk, n) in waiting {
                // A piece is on the pending list as one entry: another hold covering any
                // part of it keeps all of it (it is finished, whole, by the last owner).
                let other = h.split(blk, n).iter().find_map(|p| p.2);
                match other {
                    Some(o) => h.held.entry(o).or_default().push((blk, n)),
                    None => finish.push((blk, n)),
                }
            }
            finish
        };
        if finish.is_empty() || self.is_read_only() {
            return Ok(());
        }
        self.finish_pending(finish)
    }

    /// End every hold (unmount: no client can reach the device once the daemon is gone).
    pub fn release_all_frees(&self) -> Result<()> {
        let owners: Vec<u64> = {
            let h = self.holds.lock().unwrap_or_else(|p| p.into_inner());
            let mut o: Vec<u64> = h.ranges.iter().map(|r| r.2).collect();
            o.extend(h.held.keys());
            o.sort_unstable();
            o.dedup();
            o
        };
        for o in owners {
            self.release_frees(o)?;
        }
        Ok(())
    }

    /// Blocks held for revoked clients (`daxfs stat`'s quarantined blocks).
    pub fn held_blocks(&self) -> u64 {
        self.holds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .blocks()
    }

    /// Frees waiting for `owner`, in blocks.
    pub fn held_waiting_blocks(&self, owner: u64) -> u64 {
        self.holds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .waiting_blocks(owner)
    }

    /// After a commit: the held frees it logged as pending wait for their owner, or are
    /// finished now when the owner let go in the meantime (returned by the caller).
    pub(crate) fn park_held(&self, held: Vec<(u64, u64, u64)>) -> Vec<(u64, u64)> {
        let mut h = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        let mut now = Vec::new();
        for (blk, n, owner) in held {
            let live = h.ranges.iter().any(|r| r.2 == owner);
            if live {
                h.held.entry(owner).or_default().push((blk, n));
            } else {
                now.push((blk, n));
            }
        }
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_at_hold_edges() {
        let mut h = Holds::default();
        assert_eq!(h.split(10, 5), vec![(10, 5, None)]);
        h.ranges.push((12, 2, 7));
        h.ranges.push((20, 10, 8));
        assert_eq!(
            h.split(10, 15),
            vec![
                (10, 2, None),
                (12, 2, Some(7)),
                (14, 6, None),
                (20, 5, Some(8))
            ]
        );
        assert_eq!(h.split(21, 3), vec![(21, 3, Some(8))]);
        assert_eq!(h.split(0, 5), vec![(0, 5, None)]);
        assert_eq!(h.blocks(), 12);
    }
}
