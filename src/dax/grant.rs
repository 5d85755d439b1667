//! The shape of a layout grant: which device ranges back a leased file range. Built by
//! fs/layout.rs (`Fs::layout_grant`) from the extent map; pure, so it is tested here.
//!
//! A read grant reports holes and unwritten extents as holes (the client maps zero pages
//! there); a write grant has none (everything was allocated as zeroed, written blocks
//! first). Device-contiguous pieces are merged, so a grant names as few ranges as the
//! layout allows (at most daxfs_client::proto::RANGES_MAX; the lease is shortened to fit).

use crate::dax::iomap;
use crate::format::BLOCK_SIZE;
use crate::inode::extent_map::Extent;

const BS: u64 = BLOCK_SIZE as u64;

/// One piece of a grant: `len` bytes of the file from `file_off` are at `dev_off` on the
/// device, or a hole (None) that reads as zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub file_off: u64,
    pub len: u64,
    pub dev_off: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub lease: crate::dax::LeaseId,
    pub ino: u64,
    /// In-core i_size at the grant.
    pub size: u64,
    /// What the lease covers (block aligned; may be shorter than asked: GRANT_LEN_MAX,
    /// RANGES_MAX).
    pub off: u64,
    pub len: u64,
    pub ranges: Vec<Mapping>,
}

/// The mappings of file blocks [fb, fb+nb) given its extents there: holes and unwritten
/// extents as holes, device-contiguous pieces merged. Covers the whole range, in order.
pub fn cover(pieces: &[Extent], fb: u64, nb: u64) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    let mut push = |file_blk: u64, n: u64, dev_off: Option<u64>| {
        if n == 0 {
            return;
        }
        if let Some(l) = out.last_mut()
            && match (l.dev_off, dev_off) {
                (None, None) => true,
                (Some(a), Some(b)) => a + l.len == b,
                _ => false,
            }
        {
            l.len += n * BS;
            return;
        }
        out.push(Mapping {
            file_off: file_blk * BS,
            len: n * BS,
            dev_off,
        });
    };
    let mut pos = fb;
    for p in pieces {
        let (s, e) = (p.fileoff.max(fb), p.end().min(fb + nb));
        if s >= e {
            continue;
        }
        push(pos, s - pos, None);
        push(s, e - s, (!p.unwritten).then(|| iomap::dev_off(p, s)));
        pos = e;
    }
    push(pos, fb + nb - pos, None);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(fileoff: u64, startblock: u64, len: u64, unwritten: bool) -> Extent {
        Extent {
            fileoff,
            startblock,
            len,
            unwritten,
        }
    }

    #[test]
    fn cover_holes_unwritten_and_merges() {
        // blocks 0-1 at 100, 2-3 at 102 (contiguous: merged), 4 hole, 5 unwritten, 6-7 at 50.
        let e = [
            ext(0, 100, 2, false),
            ext(2, 102, 2, false),
            ext(5, 200, 1, true),
            ext(6, 50, 4, false),
        ];
        let m = cover(&e, 1, 8);
        assert_eq!(
            m,
            vec![
                Mapping {
                    file_off: BS,
                    len: 3 * BS,
                    dev_off: Some(101 * BS)
                },
                Mapping {
                    file_off: 4 * BS,
                    len: 2 * BS,
                    dev_off: None
                },
                Mapping {
                    file_off: 6 * BS,
                    len: 3 * BS,
                    dev_off: Some(50 * BS)
                },
            ]
        );
        assert_eq!(
            cover(&[], 3, 2),
            vec![Mapping {
                file_off: 3 * BS,
                len: 2 * BS,
                dev_off: None
            }]
        );
    }
}
