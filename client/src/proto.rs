//! The control-channel protocol between a daxfs mount daemon and its direct-access clients.
//!
//! Transport: one SOCK_SEQPACKET Unix socket connection per client (see `socket_path`), so
//! every message is one datagram and message boundaries come from the kernel. A message is
//! a fixed 16-byte little-endian header followed by `len` payload bytes:
//!
//! ```text
//!   0      4        6      8      12     16
//!   magic  version  type   seq    len    payload (len bytes, at most MSG_PAYLOAD_MAX)
//!   u32    u16      u16    u32    u32
//! ```
//!
//! `seq` pairs a reply with its request (the daemon echoes it); unsolicited daemon messages
//! (RECALL, REVOKED) carry seq 0, and clients number requests from 1. File descriptors ride
//! along as SCM_RIGHTS: the client's open file with every GRANT (proof of open), the device
//! with HELLO_REPLY when direct access is allowed.
//!
//! Decisions: every size is bounded here (`MSG_MAX`, `RANGES_MAX`, `TEXT_MAX`,
//! `LIST_ENTRIES_MAX`), the payload length must match the datagram exactly, and trailing
//! bytes, unknown types, bad enums and invalid UTF-8 are errors. `decode` never panics and
//! never allocates more than the datagram it was given implies (fuzzed:
//! fuzz/fuzz_targets/dax_proto.rs).

use std::fmt;

/// "DAXL" read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"DAXL");
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 16;
/// Largest datagram either side sends or accepts; a bigger one closes the connection.
pub const MSG_MAX: usize = 16384;
pub const MSG_PAYLOAD_MAX: usize = MSG_MAX - HEADER_LEN;
/// Device ranges in one grant; a grant over a more fragmented range is shortened.
pub const RANGES_MAX: usize = 256;
/// Bytes of a reason or error text.
pub const TEXT_MAX: usize = 1024;
/// Leases in one LIST_REPLY page.
pub const LIST_ENTRIES_MAX: usize = 200;
/// Longest range one grant covers (bytes); bigger requests are granted in part.
pub const GRANT_LEN_MAX: u64 = 64 << 20;

/// How the device behind the mount is made durable; the client's `persist` follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Persistence {
    /// MAP_SYNC / device-DAX: durable after cache-line write-back (clwb/clflushopt) + sfence.
    Dax = 1,
    /// An image file on a page-cache filesystem: durable after msync.
    PageCache = 2,
    /// memfd: nothing survives the daemon; persist only orders.
    Volatile = 3,
}

impl Persistence {
    fn from_u8(v: u8) -> Result<Self, ProtoError> {
        Ok(match v {
            1 => Persistence::Dax,
            2 => Persistence::PageCache,
            3 => Persistence::Volatile,
            _ => return Err(ProtoError::BadValue("persistence")),
        })
    }
}

/// State of a lease as the daemon reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LeaseState {
    Granted = 1,
    /// The filesystem asked for it back and is waiting.
    Recalled = 2,
    /// Not returned in time: the client is fenced and the blocks are quarantined.
    Revoked = 3,
}

impl LeaseState {
    fn from_u8(v: u8) -> Result<Self, ProtoError> {
        Ok(match v {
            1 => LeaseState::Granted,
            2 => LeaseState::Recalled,
            3 => LeaseState::Revoked,
            _ => return Err(ProtoError::BadValue("lease state")),
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            LeaseState::Granted => "granted",
            LeaseState::Recalled => "recalled",
            LeaseState::Revoked => "revoked",
        }
    }
}

/// One piece of a grant: `len` bytes of the file from `file_off` live at `dev_off` on the
/// device, or are a hole (`dev_off` None) that reads as zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub file_off: u64,
    pub len: u64,
    pub dev_off: Option<u64>,
}

/// One lease, for `daxfs leases`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseEntry {
    pub lease: u64,
    pub ino: u64,
    pub off: u64,
    pub len: u64,
    pub write: bool,
    pub state: LeaseState,
    pub pid: u32,
    pub uid: u32,
    pub quarantined_blocks: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    // Client to daemon.
    /// First message of a connection; the reply says whether the device fd came with it.
    Hello {
        client_version: u16,
    },
    /// Map [off, off+len) of the file passed as SCM_RIGHTS with this message.
    Grant {
        off: u64,
        len: u64,
        write: bool,
    },
    /// Give a lease back (also the answer to RECALL). No reply.
    Return {
        lease: u64,
    },
    /// Grow the file to `size` (the client persisted the data under it first).
    CommitSize {
        lease: u64,
        size: u64,
    },
    /// List leases after lease id `after` (root and the daemon's user see all, others their own).
    List {
        after: u64,
    },

    // Daemon to client.
    HelloReply {
        direct: bool,
        persistence: Persistence,
        block_size: u32,
        device_len: u64,
        /// Why direct access was refused (empty when `direct`).
        reason: String,
    },
    GrantReply {
        lease: u64,
        ino: u64,
        /// In-core file size at the grant.
        size: u64,
        /// What the lease covers: block-aligned, possibly shorter than asked.
        off: u64,
        len: u64,
        ranges: Vec<Range>,
    },
    Ok,
    ListReply {
        entries: Vec<LeaseEntry>,
        more: bool,
    },
    Error {
        errno: i32,
        text: String,
    },
    /// The filesystem needs this lease back: stop using the range and RETURN it.
    Recall {
        lease: u64,
        ino: u64,
        off: u64,
        len: u64,
    },
    /// The lease was not returned in time (or the daemon fenced the client).
    Revoked {
        lease: u64,
        text: String,
    },
}

mod ty {
    pub const HELLO: u16 = 1;
    pub const GRANT: u16 = 2;
    pub const RETURN: u16 = 3;
    pub const COMMIT_SIZE: u16 = 4;
    pub const LIST: u16 = 5;
    pub const HELLO_REPLY: u16 = 0x81;
    pub const GRANT_REPLY: u16 = 0x82;
    pub const OK: u16 = 0x83;
    pub const LIST_REPLY: u16 = 0x84;
    pub const ERROR: u16 = 0x8e;
    pub const RECALL: u16 = 0x90;
    pub const REVOKED: u16 = 0x91;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    Short { need: usize, have: usize },
    TooLong(usize),
    BadMagic(u32),
    BadVersion(u16),
    UnknownType(u16),
    LengthMismatch { header: u32, actual: usize },
    TrailingBytes(usize),
    BadValue(&'static str),
    TooMany(&'static str, u64),
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::Short { need, have } => {
                write!(f, "message truncated: need {need} bytes, have {have}")
            }
            ProtoError::TooLong(n) => write!(f, "message of {n} bytes exceeds {MSG_MAX}"),
            ProtoError::BadMagic(m) => write!(f, "bad magic {m:#010x}"),
            ProtoError::BadVersion(v) => {
                write!(f, "protocol version {v}, this side speaks {VERSION}")
            }
            ProtoError::UnknownType(t) => write!(f, "unknown message type {t:#x}"),
            ProtoError::LengthMismatch { header, actual } => write!(
                f,
                "header says {header} payload bytes, datagram has {actual}"
            ),
            ProtoError::TrailingBytes(n) => write!(f, "{n} bytes after the message"),
            ProtoError::BadValue(what) => write!(f, "invalid {what}"),
            ProtoError::TooMany(what, n) => write!(f, "{n} {what}: over the limit"),
        }
    }
}

impl std::error::Error for ProtoError {}

/// Bounds-checked little-endian reader over a payload.
struct Rd<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self.at.checked_add(n).ok_or(ProtoError::TooLong(n))?;
        let s = self.b.get(self.at..end).ok_or(ProtoError::Short {
            need: end,
            have: self.b.len(),
        })?;
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.take(1)?[0])
    }
    fn bool(&mut self) -> Result<bool, ProtoError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(ProtoError::BadValue("boolean")),
        }
    }
    fn u16(&mut self) -> Result<u16, ProtoError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, ProtoError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, ProtoError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn text(&mut self) -> Result<String, ProtoError> {
        let n = self.u16()? as usize;
        if n > TEXT_MAX {
            return Err(ProtoError::TooMany("text bytes", n as u64));
        }
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| ProtoError::BadValue("UTF-8 text"))
    }
    /// A count of items of `item_len` bytes each, checked against `max` and against what
    /// is left, so no allocation exceeds the datagram.
    fn count(
        &mut self,
        what: &'static str,
        max: usize,
        item_len: usize,
    ) -> Result<usize, ProtoError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(ProtoError::TooMany(what, n as u64));
        }
        let left = self.b.len() - self.at;
        if n.saturating_mul(item_len) > left {
            return Err(ProtoError::Short {
                need: self.at + n * item_len,
                have: self.b.len(),
            });
        }
        Ok(n)
    }
}

struct Wr(Vec<u8>);

impl Wr {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// Texts longer than TEXT_MAX are cut at a character boundary.
    fn text(&mut self, s: &str) {
        let mut n = s.len().min(TEXT_MAX);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.u16(n as u16);
        self.0.extend_from_slice(&s.as_bytes()[..n]);
    }
}

const NO_DEV: u64 = u64::MAX;
const RANGE_LEN: usize = 24;
const ENTRY_LEN: usize = 8 * 5 + 1 + 1 + 4 + 4;

impl Msg {
    fn ty(&self) -> u16 {
        match self {
            Msg::Hello { .. } => ty::HELLO,
            Msg::Grant { .. } => ty::GRANT,
            Msg::Return { .. } => ty::RETURN,
            Msg::CommitSize { .. } => ty::COMMIT_SIZE,
            Msg::List { .. } => ty::LIST,
            Msg::HelloReply { .. } => ty::HELLO_REPLY,
            Msg::GrantReply { .. } => ty::GRANT_REPLY,
            Msg::Ok => ty::OK,
            Msg::ListReply { .. } => ty::LIST_REPLY,
            Msg::Error { .. } => ty::ERROR,
            Msg::Recall { .. } => ty::RECALL,
            Msg::Revoked { .. } => ty::REVOKED,
        }
    }

    /// The datagram for this message. Counts over the protocol's limits are a bug of the
    /// sender (callers bound them first) and are cut to the limit here.
    pub fn encode(&self, seq: u32) -> Vec<u8> {
        let mut w = Wr(Vec::with_capacity(64));
        w.u32(MAGIC);
        w.u16(VERSION);
        w.u16(self.ty());
        w.u32(seq);
        w.u32(0); // patched below
        match self {
            Msg::Hello { client_version } => w.u16(*client_version),
            Msg::Grant { off, len, write } => {
                w.u64(*off);
                w.u64(*len);
                w.u8(*write as u8);
            }
            Msg::Return { lease } => w.u64(*lease),
            Msg::CommitSize { lease, size } => {
                w.u64(*lease);
                w.u64(*size);
            }
            Msg::List { after } => w.u64(*after),
            Msg::HelloReply {
                direct,
                persistence,
                block_size,
                device_len,
                reason,
            } => {
                w.u8(*direct as u8);
                w.u8(*persistence as u8);
                w.u32(*block_size);
                w.u64(*device_len);
                w.text(reason);
            }
            Msg::GrantReply {
                lease,
                ino,
                size,
                off,
                len,
                ranges,
            } => {
                debug_assert!(ranges.len() <= RANGES_MAX);
                w.u64(*lease);
                w.u64(*ino);
                w.u64(*size);
                w.u64(*off);
                w.u64(*len);
                let n = ranges.len().min(RANGES_MAX);
                w.u32(n as u32);
                for r in &ranges[..n] {
                    w.u64(r.file_off);
                    w.u64(r.len);
                    w.u64(r.dev_off.unwrap_or(NO_DEV));
                }
            }
            Msg::Ok => {}
            Msg::ListReply { entries, more } => {
                debug_assert!(entries.len() <= LIST_ENTRIES_MAX);
                w.u8(*more as u8);
                let n = entries.len().min(LIST_ENTRIES_MAX);
                w.u32(n as u32);
                for e in &entries[..n] {
                    w.u64(e.lease);
                    w.u64(e.ino);
                    w.u64(e.off);
                    w.u64(e.len);
                    w.u8(e.write as u8);
                    w.u8(e.state as u8);
                    w.u32(e.pid);
                    w.u32(e.uid);
                    w.u64(e.quarantined_blocks);
                }
            }
            Msg::Error { errno, text } => {
                w.u32(*errno as u32);
                w.text(text);
            }
            Msg::Recall {
                lease,
                ino,
                off,
                len,
            } => {
                w.u64(*lease);
                w.u64(*ino);
                w.u64(*off);
                w.u64(*len);
            }
            Msg::Revoked { lease, text } => {
                w.u64(*lease);
                w.text(text);
            }
        }
        let mut v = w.0;
        let plen = (v.len() - HEADER_LEN) as u32;
        v[12..16].copy_from_slice(&plen.to_le_bytes());
        debug_assert!(v.len() <= MSG_MAX);
        v
    }
}

/// Decode one datagram into (seq, message). Any deviation from the format is an error.
pub fn decode(b: &[u8]) -> Result<(u32, Msg), ProtoError> {
    if b.len() > MSG_MAX {
        return Err(ProtoError::TooLong(b.len()));
    }
    if b.len() < HEADER_LEN {
        return Err(ProtoError::Short {
            need: HEADER_LEN,
            have: b.len(),
        });
    }
    let mut h = Rd { b, at: 0 };
    let magic = h.u32()?;
    if magic != MAGIC {
        return Err(ProtoError::BadMagic(magic));
    }
    let version = h.u16()?;
    if version != VERSION {
        return Err(ProtoError::BadVersion(version));
    }
    let t = h.u16()?;
    let seq = h.u32()?;
    let plen = h.u32()?;
    if plen as usize != b.len() - HEADER_LEN {
        return Err(ProtoError::LengthMismatch {
            header: plen,
            actual: b.len() - HEADER_LEN,
        });
    }
    let mut r = Rd {
        b: &b[HEADER_LEN..],
        at: 0,
    };
    let m = match t {
        ty::HELLO => Msg::Hello {
            client_version: r.u16()?,
        },
        ty::GRANT => Msg::Grant {
            off: r.u64()?,
            len: r.u64()?,
            write: r.bool()?,
        },
        ty::RETURN => Msg::Return { lease: r.u64()? },
        ty::COMMIT_SIZE => Msg::CommitSize {
            lease: r.u64()?,
            size: r.u64()?,
        },
        ty::LIST => Msg::List { after: r.u64()? },
        ty::HELLO_REPLY => Msg::HelloReply {
            direct: r.bool()?,
            persistence: Persistence::from_u8(r.u8()?)?,
            block_size: r.u32()?,
            device_len: r.u64()?,
            reason: r.text()?,
        },
        ty::GRANT_REPLY => {
            let (lease, ino, size, off, len) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?);
            let n = r.count("ranges", RANGES_MAX, RANGE_LEN)?;
            let mut ranges = Vec::with_capacity(n);
            for _ in 0..n {
                let (file_off, len, dev) = (r.u64()?, r.u64()?, r.u64()?);
                ranges.push(Range {
                    file_off,
                    len,
                    dev_off: (dev != NO_DEV).then_some(dev),
                });
            }
            Msg::GrantReply {
                lease,
                ino,
                size,
                off,
                len,
                ranges,
            }
        }
        ty::OK => Msg::Ok,
        ty::LIST_REPLY => {
            let more = r.bool()?;
            let n = r.count("list entries", LIST_ENTRIES_MAX, ENTRY_LEN)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                entries.push(LeaseEntry {
                    lease: r.u64()?,
                    ino: r.u64()?,
                    off: r.u64()?,
                    len: r.u64()?,
                    write: r.bool()?,
                    state: LeaseState::from_u8(r.u8()?)?,
                    pid: r.u32()?,
                    uid: r.u32()?,
                    quarantined_blocks: r.u64()?,
                });
            }
            Msg::ListReply { entries, more }
        }
        ty::ERROR => Msg::Error {
            errno: r.u32()? as i32,
            text: r.text()?,
        },
        ty::RECALL => Msg::Recall {
            lease: r.u64()?,
            ino: r.u64()?,
            off: r.u64()?,
            len: r.u64()?,
        },
        ty::REVOKED => Msg::Revoked {
            lease: r.u64()?,
            text: r.text()?,
        },
        t => return Err(ProtoError::UnknownType(t)),
    };
    if r.at != r.b.len() {
        return Err(ProtoError::TrailingBytes(r.b.len() - r.at));
    }
    Ok((seq, m))
}

/// Where the daemon of the mount whose st_dev is `dev` listens: a directory only root
/// can write (`/run/daxfs`, made 0755 by a root daemon), one socket per mount named by the
/// mount's device number, which a client learns from fstat of any file it opened there.
/// A daemon not running as root uses `$XDG_RUNTIME_DIR/daxfs` (0700, its own).
pub fn socket_dir(root: bool) -> std::path::PathBuf {
    if root {
        return "/run/daxfs".into();
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => std::path::Path::new(&d).join("daxfs"),
        _ => "/run/daxfs".into(),
    }
}

/// The socket file name for a mount with device number `dev` (st_dev).
pub fn socket_name(dev: u64) -> String {
    format!("{}:{}.sock", libc::major(dev), libc::minor(dev))
}

/// One message of every type (fuzz seeds, tests).
pub fn examples() -> Vec<Msg> {
    vec![
        Msg::Hello { client_version: 1 },
        Msg::Grant {
            off: 4096,
            len: 1 << 21,
            write: true,
        },
        Msg::Return { lease: 7 },
        Msg::CommitSize {
            lease: 7,
            size: 12345,
        },
        Msg::List { after: 3 },
        Msg::HelloReply {
            direct: false,
            persistence: Persistence::PageCache,
            block_size: 4096,
            device_len: 64 << 20,
            reason: "uid 65534 may not open /img".into(),
        },
        Msg::GrantReply {
            lease: 9,
            ino: 130,
            size: 5000,
            off: 0,
            len: 8192,
            ranges: vec![
                Range {
                    file_off: 0,
                    len: 4096,
                    dev_off: Some(1 << 20),
                },
                Range {
                    file_off: 4096,
                    len: 4096,
                    dev_off: None,
                },
            ],
        },
        Msg::Ok,
        Msg::ListReply {
            entries: vec![LeaseEntry {
                lease: 1,
                ino: 2,
                off: 0,
                len: 4096,
                write: true,
                state: LeaseState::Recalled,
                pid: 42,
                uid: 0,
                quarantined_blocks: 0,
            }],
            more: true,
        },
        Msg::Error {
            errno: libc::EBADF,
            text: "fd names another file".into(),
        },
        Msg::Recall {
            lease: 1,
            ino: 2,
            off: 0,
            len: 4096,
        },
        Msg::Revoked {
            lease: 1,
            text: "not returned within 1000 ms".into(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_message_round_trips_and_every_prefix_fails() {
        for m in examples() {
            let b = m.encode(77);
            assert_eq!(decode(&b), Ok((77, m.clone())));
            for cut in 0..b.len() {
                assert!(decode(&b[..cut]).is_err(), "{m:?} cut at {cut}");
            }
            let mut long = b.clone();
            long.push(0);
            assert!(decode(&long).is_err());
        }
    }

    #[test]
    fn header_checks() {
        let b = Msg::Ok.encode(1);
        let mut x = b.clone();
        x[0] ^= 1;
        assert!(matches!(decode(&x), Err(ProtoError::BadMagic(_))));
        let mut x = b.clone();
        x[4] = 9;
        assert!(matches!(decode(&x), Err(ProtoError::BadVersion(9))));
        let mut x = b.clone();
        x[6] = 0x7f;
        assert!(matches!(decode(&x), Err(ProtoError::UnknownType(0x7f))));
        assert!(matches!(
            decode(&vec![0u8; MSG_MAX + 1]),
            Err(ProtoError::TooLong(_))
        ));
        // A count larger than the datagram can hold is refused before allocating.
        let mut g = Msg::GrantReply {
            lease: 1,
            ino: 1,
            size: 0,
            off: 0,
            len: 0,
            ranges: vec![],
        }
        .encode(1);
        let n = g.len();
        g[n - 4..].copy_from_slice(&(RANGES_MAX as u32).to_le_bytes());
        assert!(matches!(decode(&g), Err(ProtoError::Short { .. })));
        g[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&g), Err(ProtoError::TooMany(..))));
    }

    #[test]
    fn long_text_is_cut_at_a_char_boundary() {
        let m = Msg::Error {
            errno: 1,
            text: "é".repeat(TEXT_MAX),
        };
        let (_, d) = decode(&m.encode(1)).unwrap();
        let Msg::Error { text, .. } = d else { panic!() };
        assert!(text.len() <= TEXT_MAX && text.chars().all(|c| c == 'é'));
    }

    fn range() -> impl Strategy<Value = Range> {
        (any::<u64>(), any::<u64>(), prop::option::of(0..u64::MAX)).prop_map(|(f, l, d)| Range {
            file_off: f,
            len: l,
            dev_off: d,
        })
    }

    fn msg() -> impl Strategy<Value = Msg> {
        prop_oneof![
            any::<u16>().prop_map(|v| Msg::Hello { client_version: v }),
            (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(off, len, write)| Msg::Grant {
                off,
                len,
                write
            }),
            any::<u64>().prop_map(|lease| Msg::Return { lease }),
            (any::<u64>(), any::<u64>()).prop_map(|(lease, size)| Msg::CommitSize { lease, size }),
            (
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                prop::collection::vec(range(), 0..RANGES_MAX)
            )
                .prop_map(|(lease, ino, size, off, len, ranges)| Msg::GrantReply {
                    lease,
                    ino,
                    size,
                    off,
                    len,
                    ranges
                }),
            (any::<i32>(), "\\PC{0,200}").prop_map(|(errno, text)| Msg::Error { errno, text }),
            (any::<u64>(), "\\PC{0,200}").prop_map(|(lease, text)| Msg::Revoked { lease, text }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(m in msg(), seq in any::<u32>()) {
            let b = m.encode(seq);
            prop_assert!(b.len() <= MSG_MAX);
            prop_assert_eq!(decode(&b), Ok((seq, m)));
        }

        #[test]
        fn garbage_never_panics(b in prop::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode(&b);
        }

        #[test]
        fn mutated_valid_messages_never_panic(m in msg(), at in any::<usize>(), v in any::<u8>()) {
            let mut b = m.encode(1);
            let i = at % b.len();
            b[i] = v;
            let _ = decode(&b);
        }
    }
}
