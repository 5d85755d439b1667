//! The shape of a layout grant: the device ranges of a file range as a client maps them
//! (holes read as zeros), and the bounds of one grant. No filesystem use: fs/layout.rs
//! makes grants, the socket server sends them.

use crate::format::BLOCK_SIZE;
use crate::inode::extent_map::Extent;
use crate::inode::lease::LeaseId;

const BS: u64 = BLOCK_SIZE as u64;

/// The longest range one grant covers; a client asks again for more (the same value as
/// the client protocol's GRANT_LEN_MAX).
pub const GRANT_LEN_MAX: u64 = 64 << 20;
/// The most device ranges one grant hands out (a fragmented range is granted in part;
/// the protocol's RANGES_MAX).
pub const RANGES_MAX: usize = 256;

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
    pub lease: LeaseId,
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
        push(s, e - s, (!p.unwritten).then(|| super::dev_off(p, s)));
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
        // blocks 0-1 at 100, 2-3 at 102 (contiguous: merged), 4 hole, 5 unwritten, 6-9 at 50.
        let e = [
            ext(0, 100, 2, false),
            ext(2, 102, 2, false),
            ext(5, 200, 1, true),
            ext(6, 50, 4, false),
        ];
        let m = cover(&e, 1, 8);
        let map = |file_off, len, dev_off| Mapping {
            file_off,
            len,
            dev_off,
        };
        assert_eq!(
            m,
            vec![
                map(BS, 3 * BS, Some(101 * BS)),
                map(4 * BS, 2 * BS, None),
                map(6 * BS, 3 * BS, Some(50 * BS)),
            ]
        );
        assert_eq!(cover(&[], 3, 2), vec![map(3 * BS, 2 * BS, None)]);
    }
}
