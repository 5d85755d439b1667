//! The client library: map daxfs file data straight from the device, under layout leases.
//!
//! A `Client` is one connection to a mount's daemon (its control socket). A `File` is a file
//! opened through the mount itself, so the kernel checks permissions; its descriptor is the
//! proof of open sent with every grant. `File::map` asks for a lease over a byte range and
//! maps the device ranges it names into one contiguous window: holes of a read lease are
//! anonymous zero pages, a write lease never has holes (the daemon allocated and zeroed
//! them). Loads and stores then go to the device with no system call.
//!
//! Recall (our choice, documented in README): a background thread receives RECALL. A lease
//! is in use only while a `Pin` of its `Mapping` is live (`read_at`/`write_at`/`persist`
//! pin for the length of the copy; `pin()` gives raw pointers for longer). A recalled lease
//! is answered as soon as no pin is live: the window is replaced by PROT_NONE pages first
//! (a stray pointer faults instead of reaching blocks the filesystem may reuse), then
//! RETURN is sent. The next pin re-grants transparently and maps the fresh layout at the
//! same address. A revoked lease makes the next pin fail with `Error::Revoked`.
//!
//! Without direct access (the daemon refused the device, no control socket, or the file
//! is not DAX) the same API works through pread/pwrite on the file (`Mode::Fallback`), and
//! says why.
//!
//! Sizes: stores past EOF inside a write lease change nothing visible until the size is
//! committed (`Mapping::commit_size`, `File::fsync`, `File::close`), and the library
//! persists the data under a size before it commits it.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak, mpsc};
use std::thread::JoinHandle;

use crate::proto::{self, Msg, Persistence, Range};
use crate::sys;

const PAGE: u64 = 4096;
/// Appends hold a write lease of this much past EOF, so most appends are a copy only.
pub const APPEND_CHUNK: u64 = 2 << 20;

#[derive(Debug)]
pub enum Error {
    Io(io::Error),
    /// The daemon refused: errno and its reason.
    Daemon {
        errno: i32,
        text: String,
    },
    /// The lease (or the whole client) was revoked by the filesystem.
    Revoked(String),
    /// The daemon broke the protocol.
    Proto(String),
    /// The connection to the daemon is gone.
    Closed,
    /// Asked for a direct pointer on a file in fallback mode.
    NotDirect(String),
    /// Used in a child of fork(): connect again there.
    Forked,
    Invalid(&'static str),
}

impl Error {
    pub fn errno(&self) -> i32 {
        match self {
            Error::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            Error::Daemon { errno, .. } => *errno,
            Error::Revoked(_) => libc::EKEYREVOKED,
            Error::Proto(_) => libc::EPROTO,
            Error::Closed => libc::ENOTCONN,
            Error::NotDirect(_) => libc::EOPNOTSUPP,
            Error::Forked => libc::ECHILD,
            Error::Invalid(_) => libc::EINVAL,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Daemon { errno, text } => {
                write!(
                    f,
                    "daemon refused: {text} ({})",
                    io::Error::from_raw_os_error(*errno)
                )
            }
            Error::Revoked(t) => write!(f, "lease revoked by the filesystem: {t}"),
            Error::Proto(t) => write!(f, "protocol error from the daemon: {t}"),
            Error::Closed => write!(f, "connection to the daxfs daemon closed"),
            Error::NotDirect(t) => write!(f, "no direct access: {t}"),
            Error::Forked => write!(
                f,
                "this client was connected before fork(); connect again in the child"
            ),
            Error::Invalid(t) => write!(f, "invalid argument: {t}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// How a file's data is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Loads and stores into the mapped device.
    Direct,
    /// pread/pwrite through the mount, and why.
    Fallback { reason: String },
}

// ----------------------------------------------------------------------------------------
// The connection.

struct Device {
    fd: OwnedFd,
    len: u64,
    persistence: Persistence,
}

struct Conn {
    sock: OwnedFd,
    /// Some when the daemon handed us the device.
    dev: Option<Device>,
    refusal: String,
    next_seq: AtomicU32,
    replies: Mutex<HashMap<u32, Msg>>,
    replied: Condvar,
    closed: AtomicBool,
    /// Live mappings by lease id, for RECALL and REVOKED.
    leases: Mutex<HashMap<u64, Weak<MapShared>>>,
    /// `fork_generation()` at connect: a forked child inherits the socket but not the
    /// threads that read it, nor (MADV_DONTFORK) the mapped windows, so it must connect
    /// again; every use from it fails, and nothing it drops returns the parent's leases.
    fork_gen: u64,
}

static FORKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn forked_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// How many forks separate this process from the first user of the library.
fn fork_generation() -> u64 {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a child handler that only increments an atomic.
    ONCE.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(forked_child));
    });
    FORKS.load(Ordering::Relaxed)
}

impl Conn {
    fn forked(&self) -> bool {
        fork_generation() != self.fork_gen
    }
}

impl Conn {
    fn call(&self, m: &Msg, fd: Option<BorrowedFd<'_>>) -> Result<Msg> {
        if self.forked() {
            return Err(Error::Forked);
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed).max(1);
        let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
        sys::send(self.sock.as_fd(), &m.encode(seq), &fds, false).map_err(|e| {
            if e.raw_os_error() == Some(libc::EPIPE) {
                Error::Closed
            } else {
                Error::Io(e)
            }
        })?;
        let mut r = self.replies.lock().unwrap();
        loop {
            if let Some(m) = r.remove(&seq) {
                return match m {
                    Msg::Error { errno, text } if errno == libc::EKEYREVOKED => {
                        Err(Error::Revoked(text))
                    }
                    Msg::Error { errno, text } => Err(Error::Daemon { errno, text }),
                    m => Ok(m),
                };
            }
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            r = self.replied.wait(r).unwrap();
        }
    }

    /// Fire-and-forget (RETURN has no reply).
    fn post(&self, m: &Msg) {
        if self.forked() {
            return;
        }
        let _ = sys::send(self.sock.as_fd(), &m.encode(0), &[], false);
    }
}

/// What the reader thread hands the recall worker.
enum Event {
    Recall(u64),
    Revoked(u64, String),
    /// The daemon is gone: nothing we hold is a lease any more.
    Closed,
}

/// The reader thread: replies to their waiters, RECALL / REVOKED / end of stream to the
/// recall worker.
fn reader(conn: Arc<Conn>, events: mpsc::Sender<Event>) {
    let mut buf = vec![0u8; proto::MSG_MAX + 1];
    loop {
        let got = match sys::recv(conn.sock.as_fd(), &mut buf) {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => break,
        };
        let Ok((seq, m)) = proto::decode(&buf[..got.len]) else {
            break;
        };
        match m {
            Msg::Recall { lease, .. } => {
                let _ = events.send(Event::Recall(lease));
            }
            Msg::Revoked { lease, text } => {
                let _ = events.send(Event::Revoked(lease, text));
            }
            m if seq != 0 => {
                conn.replies.lock().unwrap().insert(seq, m);
                conn.replied.notify_all();
            }
            _ => break, // an unsolicited reply: the daemon is broken
        }
    }
    conn.closed.store(true, Ordering::Release);
    {
        let _g = conn.replies.lock().unwrap();
        conn.replied.notify_all();
    }
    let _ = events.send(Event::Closed);
}

/// The recall worker: may block on a mapping's lock (the reader thread must not, since a
/// pin holder waiting for a grant reply needs the reader). Revoked and orphaned windows
/// are unmapped as soon as no pin is live, so stores stop reaching the device.
fn recall_worker(conn: Weak<Conn>, events: mpsc::Receiver<Event>) {
    while let Ok(ev) = events.recv() {
        let Some(c) = conn.upgrade() else { return };
        let find = |lease: u64| {
            let w = c.leases.lock().unwrap().get(&lease).cloned();
            w.and_then(|w| w.upgrade())
        };
        match ev {
            Event::Recall(lease) => match find(lease) {
                Some(sh) => sh.recall(lease),
                // Already returned (or never ours): say so again, harmlessly.
                None => c.post(&Msg::Return { lease }),
            },
            Event::Revoked(lease, text) => {
                if let Some(sh) = find(lease) {
                    sh.revoke(text);
                    sh.recall(lease);
                }
            }
            Event::Closed => {
                let all: Vec<(u64, Arc<MapShared>)> = c
                    .leases
                    .lock()
                    .unwrap()
                    .iter()
                    .filter_map(|(l, w)| w.upgrade().map(|sh| (*l, sh)))
                    .collect();
                for (lease, sh) in all {
                    sh.revoke("the connection to the daxfs daemon closed".into());
                    sh.recall(lease);
                }
                return;
            }
        }
    }
}

struct ClientInner {
    conn: Arc<Conn>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    thread_ids: Vec<std::thread::ThreadId>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        // SAFETY: shutdown of our own socket; the reader sees end of stream.
        unsafe { libc::shutdown(self.conn.sock.as_raw_fd(), libc::SHUT_RDWR) };
        let me = std::thread::current().id();
        if self.thread_ids.contains(&me) {
            return; // dropped from our own thread: it exits by itself
        }
        for t in self.threads.lock().unwrap().drain(..) {
            let _ = t.join();
        }
    }
}

/// A connection to one daxfs mount's daemon.
#[derive(Clone)]
pub struct Client {
    inner: Option<Arc<ClientInner>>,
    /// Why there is no direct access at all (no socket, or the daemon refused the device).
    refusal: Option<String>,
}

fn socket_candidates(dev: u64) -> Vec<PathBuf> {
    let name = proto::socket_name(dev);
    let mut v = vec![proto::socket_dir(true).join(&name)];
    let user = proto::socket_dir(false).join(&name);
    if !v.contains(&user) {
        v.push(user);
    }
    v
}

/// The socket's directory must be root's or ours, and writable by nobody else: then no
/// other user can have put a socket there that impersonates the daemon.
fn trusted_dir(dir: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    if !m.is_dir() || (m.uid() != 0 && m.uid() != me) || m.mode() & 0o022 != 0 {
        return Err(format!(
            "{}: not a directory owned by root (or you) and closed to others; not trusted",
            dir.display()
        ));
    }
    Ok(())
}

impl Client {
    /// Connect to the daemon of the mount holding `path` (any file or directory on it).
    /// Without a control socket the client works in fallback mode (and says why).
    pub fn connect(path: impl AsRef<Path>) -> Result<Client> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(path.as_ref())?;
        Client::connect_fd(f.as_fd())
    }

    /// As `connect`, from a descriptor of any file on the mount.
    pub fn connect_fd(fd: BorrowedFd<'_>) -> Result<Client> {
        let st = sys::fstat(fd)?;
        let mut why = Vec::new();
        for p in socket_candidates(st.st_dev) {
            if let Err(e) = trusted_dir(p.parent().unwrap_or(Path::new("/"))) {
                why.push(e);
                continue;
            }
            match sys::connect(&p) {
                Ok(sock) => return Client::handshake(sock),
                Err(e) => why.push(format!("{}: {e}", p.display())),
            }
        }
        Ok(Client {
            inner: None,
            refusal: Some(format!("no daxfs control socket ({})", why.join("; "))),
        })
    }

    /// A client over an already connected socket (tests, and callers that find the
    /// daemon themselves).
    #[doc(hidden)]
    pub fn from_socket(sock: OwnedFd) -> Result<Client> {
        Client::handshake(sock)
    }

    fn handshake(sock: OwnedFd) -> Result<Client> {
        sys::send(
            sock.as_fd(),
            &Msg::Hello {
                client_version: proto::VERSION,
            }
            .encode(1),
            &[],
            false,
        )?;
        let mut buf = vec![0u8; proto::MSG_MAX + 1];
        let got = sys::recv(sock.as_fd(), &mut buf)?.ok_or(Error::Closed)?;
        let (_, m) = proto::decode(&buf[..got.len]).map_err(|e| Error::Proto(e.to_string()))?;
        let Msg::HelloReply {
            direct,
            persistence,
            device_len,
            reason,
            ..
        } = m
        else {
            return Err(match m {
                Msg::Error { errno, text } => Error::Daemon { errno, text },
                _ => Error::Proto(format!("expected HELLO_REPLY, got {m:?}")),
            });
        };
        let mut fds = got.fds;
        let dev = match (direct, fds.len()) {
            (true, 1) => Some(Device {
                fd: fds.remove(0),
                len: device_len,
                persistence,
            }),
            (false, 0) => None,
            _ => {
                return Err(Error::Proto(
                    "device descriptor missing or unexpected".into(),
                ));
            }
        };
        let refusal = (dev.is_none()).then(|| reason.clone());
        let conn = Arc::new(Conn {
            sock,
            dev,
            refusal: reason,
            next_seq: AtomicU32::new(2),
            replies: Mutex::new(HashMap::new()),
            replied: Condvar::new(),
            closed: AtomicBool::new(false),
            leases: Mutex::new(HashMap::new()),
            fork_gen: fork_generation(),
        });
        let (tx, rx) = mpsc::channel();
        let c1 = conn.clone();
        let r = std::thread::Builder::new()
            .name("daxfs-client-rx".into())
            .spawn(move || reader(c1, tx))?;
        let c2 = Arc::downgrade(&conn);
        let w = std::thread::Builder::new()
            .name("daxfs-client-recall".into())
            .spawn(move || recall_worker(c2, rx))?;
        let ids = vec![r.thread().id(), w.thread().id()];
        Ok(Client {
            inner: Some(Arc::new(ClientInner {
                conn,
                threads: Mutex::new(vec![r, w]),
                thread_ids: ids,
            })),
            refusal,
        })
    }

    /// Direct when the daemon handed over the device, else why not.
    pub fn mode(&self) -> Mode {
        match &self.refusal {
            None => Mode::Direct,
            Some(r) => Mode::Fallback { reason: r.clone() },
        }
    }

    /// The device's persistence, when direct.
    pub fn persistence(&self) -> Option<Persistence> {
        self.inner
            .as_ref()?
            .conn
            .dev
            .as_ref()
            .map(|d| d.persistence)
    }

    /// Open `path` (on the mount) for reading, or reading and writing.
    pub fn open(&self, path: impl AsRef<Path>, write: bool) -> Result<File> {
        File::open(self, path, write)
    }

    /// Every lease of the mount (root and the daemon's user), else the caller's.
    pub fn list_leases(&self) -> Result<Vec<proto::LeaseEntry>> {
        let inner = self
            .inner
            .as_ref()
            .ok_or_else(|| Error::NotDirect(self.refusal.clone().unwrap_or_default()))?;
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            match inner.conn.call(&Msg::List { after }, None)? {
                Msg::ListReply { entries, more } => {
                    after = entries.last().map_or(after, |e| e.lease);
                    let empty = entries.is_empty();
                    all.extend(entries);
                    if !more || empty {
                        return Ok(all);
                    }
                }
                m => return Err(Error::Proto(format!("expected LIST_REPLY, got {m:?}"))),
            }
        }
    }

    /// The connection, if there is one, and raw access for protocol tests.
    #[doc(hidden)]
    pub fn raw_socket(&self) -> Option<BorrowedFd<'_>> {
        self.inner.as_ref().map(|i| i.conn.sock.as_fd())
    }
}

use std::os::unix::fs::OpenOptionsExt;

// ----------------------------------------------------------------------------------------
// Files.

struct AppendState {
    /// The size as this client sees it (appends included).
    size: u64,
    /// The size the daemon has.
    committed: u64,
    /// The write lease past EOF that appends store into.
    chunk: Option<Mapping>,
    /// Bytes appended into `chunk` and not yet persisted: [lo, hi).
    dirty: Option<(u64, u64)>,
}

/// A file on the mount, opened through the mount (the kernel checked the permissions).
pub struct File {
    client: Option<Arc<ClientInner>>,
    fd: Arc<OwnedFd>,
    write: bool,
    mode: Mode,
    append: Mutex<AppendState>,
}

impl File {
    pub fn open(client: &Client, path: impl AsRef<Path>, write: bool) -> Result<File> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_CLOEXEC)
            .open(path.as_ref())?;
        let fd: OwnedFd = f.into();
        let size = sys::fstat(fd.as_fd())?.st_size as u64;
        let mut file = File {
            client: client.inner.clone(),
            fd: Arc::new(fd),
            write,
            mode: client.mode(),
            append: Mutex::new(AppendState {
                size,
                committed: size,
                chunk: None,
                dirty: None,
            }),
        };
        if file.mode == Mode::Direct {
            // Probe: is this file DAX, and may we map it? One small read lease.
            match file.grant(0, PAGE, false) {
                Ok(g) => {
                    let st = file.append.get_mut().unwrap();
                    st.size = g.size;
                    st.committed = g.size;
                    file.conn().unwrap().post(&Msg::Return { lease: g.lease });
                }
                Err(Error::Daemon { text, .. }) => file.mode = Mode::Fallback { reason: text },
                Err(e) => return Err(e),
            }
        }
        Ok(file)
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    fn conn(&self) -> Option<&Arc<Conn>> {
        self.client.as_ref().map(|c| &c.conn)
    }

    /// The file size as this client sees it (appends not yet committed included).
    pub fn size(&self) -> u64 {
        self.append.lock().unwrap().size
    }

    fn grant(&self, off: u64, len: u64, write: bool) -> Result<Grant> {
        let conn = self.conn().ok_or(Error::Closed)?;
        match conn.call(&Msg::Grant { off, len, write }, Some(self.fd.as_fd()))? {
            Msg::GrantReply {
                lease,
                size,
                off: goff,
                len: glen,
                ranges,
                ..
            } => Ok(Grant {
                lease,
                size,
                off: goff,
                len: glen,
                ranges,
            }),
            m => Err(Error::Proto(format!("expected GRANT_REPLY, got {m:?}"))),
        }
    }

    /// Map [off, off+len) for reading, or for writing (holes and space past EOF are
    /// allocated and zeroed by the daemon). At most `proto::GRANT_LEN_MAX` bytes.
    pub fn map(&self, off: u64, len: u64, write: bool) -> Result<Mapping> {
        if len == 0 || len > proto::GRANT_LEN_MAX {
            return Err(Error::Invalid("mapping length must be 1..=64 MiB"));
        }
        if write && !self.write {
            return Err(Error::Invalid("write mapping of a file opened read-only"));
        }
        let end = off
            .checked_add(len)
            .ok_or(Error::Invalid("range overflows"))?;
        let sh = MapShared {
            fd: self.fd.clone(),
            client: self.client.clone(),
            off,
            len,
            aoff: off & !(PAGE - 1),
            span: end.div_ceil(PAGE) * PAGE - (off & !(PAGE - 1)),
            write,
            base: std::ptr::null_mut(),
            st: Mutex::new(MapState::default()),
            revoked: Mutex::new(None),
        };
        let sh = if let (Mode::Direct, Some(conn)) = (&self.mode, self.conn()) {
            let dev = conn.dev.as_ref().ok_or(Error::Closed)?;
            let _ = dev;
            let base = reserve(sh.span)?;
            let sh = Arc::new(MapShared { base, ..sh });
            sh.st.lock().unwrap().direct = true;
            {
                let mut st = sh.st.lock().unwrap();
                sh.regrant(&mut st, self)?;
            }
            sh
        } else {
            Arc::new(sh)
        };
        Ok(Mapping {
            sh,
            grant_fd: self.fd.clone(),
        })
    }

    /// Append `data` at this client's EOF; returns the offset it went to. Direct: a copy
    /// into a write lease past EOF (a daemon round trip only every APPEND_CHUNK bytes). The
    /// new size is committed at `fsync`/`close`, after the data is persisted.
    pub fn append(&self, data: &[u8]) -> Result<u64> {
        if !self.write {
            return Err(Error::Invalid("append to a file opened read-only"));
        }
        let mut st = self.append.lock().unwrap();
        if self.mode != Mode::Direct || st.chunk.is_none() {
            // Others (or this client's mappings) may have grown the file since: append
            // at the real EOF. With a chunk held, only this client moves its EOF.
            let real = sys::fstat(self.fd.as_fd())?.st_size as u64;
            if real > st.size {
                st.size = real;
                st.committed = st.committed.max(real);
            }
        }
        let at = st.size;
        if self.mode != Mode::Direct {
            write_all_at(self.fd.as_fd(), data, at)?;
            st.size += data.len() as u64;
            st.committed = st.size;
            return Ok(at);
        }
        let mut done = 0usize;
        while done < data.len() {
            let pos = st.size;
            let covered = st
                .chunk
                .as_ref()
                .is_some_and(|c| pos >= c.sh.off && pos < c.sh.off + c.sh.len);
            if !covered {
                self.flush_appends(&mut st)?;
                let start = pos & !(PAGE - 1);
                st.chunk = None;
                st.chunk = Some(self.map(start, APPEND_CHUNK, true)?);
            }
            let c = st.chunk.as_ref().unwrap();
            let room = (c.sh.off + c.sh.len - pos) as usize;
            let n = room.min(data.len() - done);
            c.write_at(pos, &data[done..done + n])?;
            st.dirty = Some(match st.dirty {
                Some((lo, hi)) => (lo.min(pos), hi.max(pos + n as u64)),
                None => (pos, pos + n as u64),
            });
            st.size += n as u64;
            done += n;
        }
        Ok(at)
    }

    /// Persist what was appended, then commit the size to the daemon.
    fn flush_appends(&self, st: &mut AppendState) -> Result<()> {
        let Some(c) = &st.chunk else { return Ok(()) };
        if let Some((lo, hi)) = st.dirty.take() {
            c.persist(lo, hi - lo)?;
        }
        if st.size > st.committed {
            c.commit_size(st.size)?;
            st.committed = st.size;
        }
        Ok(())
    }

    /// Make everything written through this file durable: appended data persisted, the
    /// size committed, then fsync through the mount (the daemon's log).
    pub fn fsync(&self) -> Result<()> {
        let mut st = self.append.lock().unwrap();
        self.flush_appends(&mut st)?;
        drop(st);
        // SAFETY: fsync of our own descriptor.
        if unsafe { libc::fsync(self.fd.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(())
    }

    /// Commit appends and close; errors are reported (dropping a File commits too, but
    /// cannot report).
    pub fn close(self) -> Result<()> {
        let mut st = self.append.lock().unwrap();
        let r = self.flush_appends(&mut st);
        st.chunk = None;
        r
    }

    /// The descriptor opened through the mount.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for File {
    fn drop(&mut self) {
        if let Ok(mut st) = self.append.lock() {
            let _ = self.flush_appends(&mut st);
            st.chunk = None;
        }
    }
}

struct Grant {
    lease: u64,
    size: u64,
    off: u64,
    len: u64,
    ranges: Vec<Range>,
}

fn write_all_at(fd: BorrowedFd<'_>, mut data: &[u8], mut off: u64) -> Result<()> {
    while !data.is_empty() {
        // SAFETY: pwrite from a valid buffer.
        let n = unsafe {
            libc::pwrite(
                fd.as_raw_fd(),
                data.as_ptr() as *const _,
                data.len(),
                off as i64,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        data = &data[n as usize..];
        off += n as u64;
    }
    Ok(())
}

fn read_full_at(fd: BorrowedFd<'_>, buf: &mut [u8], mut off: u64) -> Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: pread into a valid buffer.
        let n = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf[done..].as_mut_ptr() as *mut _,
                buf.len() - done,
                off as i64,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if n == 0 {
            break;
        }
        done += n as usize;
        off += n as u64;
    }
    Ok(done)
}

// ----------------------------------------------------------------------------------------
// Mappings.

/// A PROT_NONE window of `span` bytes (nothing reachable until a grant fills it).
fn reserve(span: u64) -> Result<*mut u8> {
    // SAFETY: a fresh anonymous mapping; the result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span as usize,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error().into());
    }
    Ok(p as *mut u8)
}

#[derive(Default)]
struct MapState {
    direct: bool,
    /// The leases currently backing the window, as (lease, file offset, length); empty:
    /// returned, re-grant on the next pin.
    leases: Vec<(u64, u64, u64)>,
    pins: usize,
    /// A RECALL arrived while pinned: return when the last pin goes.
    recall_pending: bool,
}

struct MapShared {
    fd: Arc<OwnedFd>,
    client: Option<Arc<ClientInner>>,
    /// The range asked for, and the page-aligned window holding it.
    off: u64,
    len: u64,
    aoff: u64,
    span: u64,
    write: bool,
    base: *mut u8,
    st: Mutex<MapState>,
    revoked: Mutex<Option<String>>,
}

// SAFETY: `base` is a window this struct owns (mmap'd in `map`, unmapped in drop); every
// change to what it maps happens under `st`.
unsafe impl Send for MapShared {}
// SAFETY: as above; shared access is through pins, which the state lock counts.
unsafe impl Sync for MapShared {}

impl MapShared {
    fn conn(&self) -> Option<&Arc<Conn>> {
        self.client.as_ref().map(|c| &c.conn)
    }

    /// Take leases over the whole window and map what they name. Called with `st` locked
    /// and no lease held.
    fn regrant(self: &Arc<Self>, st: &mut MapState, file: &dyn Granter) -> Result<()> {
        debug_assert!(st.leases.is_empty());
        if let Some(t) = self.revoked.lock().unwrap().clone() {
            return Err(Error::Revoked(t));
        }
        let conn = self.conn().ok_or(Error::Closed)?;
        let dev = conn.dev.as_ref().ok_or(Error::Closed)?;
        let end = self.aoff + self.span;
        let mut pos = self.aoff;
        let r = (|| {
            while pos < end {
                let g = file.grant(pos, end - pos, self.write)?;
                conn.leases
                    .lock()
                    .unwrap()
                    .insert(g.lease, Arc::downgrade(self));
                st.leases.push((g.lease, g.off, g.len));
                if g.off > pos || g.len == 0 || g.off.checked_add(g.len).is_none() {
                    return Err(Error::Proto("grant does not cover the range asked".into()));
                }
                let gend = (g.off + g.len).min(end);
                self.install(dev, &g.ranges, pos, gend)?;
                pos = gend;
            }
            Ok(())
        })();
        if r.is_err() {
            self.give_back(st);
        }
        r
    }

    /// Map the device ranges of a grant into the window over file bytes [from, to).
    fn install(&self, dev: &Device, ranges: &[Range], from: u64, to: u64) -> Result<()> {
        let mut covered = from;
        for r in ranges {
            let rend = r
                .file_off
                .checked_add(r.len)
                .ok_or(Error::Proto("range overflows".into()))?;
            if r.file_off != covered || r.file_off % PAGE != 0 || r.len % PAGE != 0 || rend > to {
                return Err(Error::Proto(format!(
                    "grant ranges not contiguous and page-aligned at {}",
                    r.file_off
                )));
            }
            let addr = self.base.wrapping_add((r.file_off - self.aoff) as usize);
            let p = match r.dev_off {
                Some(d) => {
                    if d % PAGE != 0 || d.checked_add(r.len).is_none_or(|e| e > dev.len) {
                        return Err(Error::Proto(format!(
                            "device range {d}+{} outside the device",
                            r.len
                        )));
                    }
                    map_device(addr, r.len, dev, d, self.write)?
                }
                None if self.write => {
                    return Err(Error::Proto("hole in a write grant".into()));
                }
                // SAFETY: MAP_FIXED over part of our own window.
                None => unsafe {
                    libc::mmap(
                        addr as *mut _,
                        r.len as usize,
                        libc::PROT_READ,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                        -1,
                        0,
                    )
                },
            };
            if p == libc::MAP_FAILED {
                return Err(io::Error::last_os_error().into());
            }
            covered = rend;
        }
        if covered != to {
            return Err(Error::Proto(format!(
                "grant covers up to {covered}, not {to}"
            )));
        }
        // A child of fork() gets none of it: its stores would outlive the parent's lease.
        let at = self.base.wrapping_add((from - self.aoff) as usize);
        // SAFETY: advice on pages of our own window.
        if unsafe { libc::madvise(at as *mut _, (to - from) as usize, libc::MADV_DONTFORK) } != 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(())
    }

    /// Unmap the window (PROT_NONE) and return every lease. `st` locked.
    fn give_back(&self, st: &mut MapState) {
        if !self.base.is_null() {
            // SAFETY: replaces our own window with inaccessible pages before the blocks
            // go back to the filesystem.
            unsafe {
                libc::mmap(
                    self.base as *mut _,
                    self.span as usize,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
                    -1,
                    0,
                );
            }
        }
        if let Some(conn) = self.conn() {
            let mut l = conn.leases.lock().unwrap();
            for (lease, _, _) in st.leases.drain(..) {
                l.remove(&lease);
                conn.post(&Msg::Return { lease });
            }
        }
        st.leases.clear();
        st.recall_pending = false;
    }

    fn recall(&self, lease: u64) {
        let mut st = self.st.lock().unwrap();
        if !st.leases.iter().any(|l| l.0 == lease) {
            return;
        }
        if st.pins == 0 {
            self.give_back(&mut st);
        } else {
            st.recall_pending = true;
        }
    }

    fn revoke(&self, text: String) {
        *self.revoked.lock().unwrap() = Some(text);
    }
}

/// Something that can ask for a grant (a File, or a Mapping outliving its File).
trait Granter {
    fn grant(&self, off: u64, len: u64, write: bool) -> Result<Grant>;
}

impl Granter for File {
    fn grant(&self, off: u64, len: u64, write: bool) -> Result<Grant> {
        File::grant(self, off, len, write)
    }
}

struct FdGranter<'a> {
    conn: &'a Conn,
    fd: &'a OwnedFd,
}

impl Granter for FdGranter<'_> {
    fn grant(&self, off: u64, len: u64, write: bool) -> Result<Grant> {
        match self
            .conn
            .call(&Msg::Grant { off, len, write }, Some(self.fd.as_fd()))?
        {
            Msg::GrantReply {
                lease,
                size,
                off,
                len,
                ranges,
                ..
            } => Ok(Grant {
                lease,
                size,
                off,
                len,
                ranges,
            }),
            m => Err(Error::Proto(format!("expected GRANT_REPLY, got {m:?}"))),
        }
    }
}

fn map_device(
    addr: *mut u8,
    len: u64,
    dev: &Device,
    dev_off: u64,
    write: bool,
) -> Result<*mut libc::c_void> {
    let prot = if write {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    let sync = dev.persistence == Persistence::Dax && write;
    // Write mappings are stored into soon (appends, overwrites): fault them in at once,
    // in the kernel's batch, instead of one page fault per 4 KiB store.
    let populate = if write { libc::MAP_POPULATE } else { 0 };
    let flags = libc::MAP_FIXED
        | populate
        | if sync {
            libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC
        } else {
            libc::MAP_SHARED
        };
    // SAFETY: MAP_FIXED over part of our own window; the device range was bounds-checked.
    let p = unsafe {
        libc::mmap(
            addr as *mut _,
            len as usize,
            prot,
            flags,
            dev.fd.as_raw_fd(),
            dev_off as i64,
        )
    };
    Ok(p)
}

/// A mapped byte range of a file under one or more leases. Dropping it returns them.
pub struct Mapping {
    sh: Arc<MapShared>,
    grant_fd: Arc<OwnedFd>,
}

/// While a Pin lives, the mapping's lease cannot be returned: pointers from `as_ptr` are
/// valid for `len` bytes. Keep pins short; a recall waits for them (then revokes).
pub struct Pin<'a> {
    m: &'a Mapping,
}

impl Pin<'_> {
    /// The first byte of the mapping (file offset `Mapping::offset`).
    pub fn as_ptr(&self) -> *const u8 {
        self.m
            .sh
            .base
            .wrapping_add((self.m.sh.off - self.m.sh.aoff) as usize)
    }
    /// Writable only for a write mapping (a store into a read mapping faults).
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.as_ptr() as *mut u8
    }
    pub fn len(&self) -> usize {
        self.m.sh.len as usize
    }
    pub fn is_empty(&self) -> bool {
        self.m.sh.len == 0
    }
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        let mut st = self.m.sh.st.lock().unwrap();
        st.pins -= 1;
        if st.pins == 0 && st.recall_pending {
            self.m.sh.give_back(&mut st);
        }
    }
}

impl Mapping {
    pub fn offset(&self) -> u64 {
        self.sh.off
    }
    pub fn len(&self) -> u64 {
        self.sh.len
    }
    pub fn is_empty(&self) -> bool {
        self.sh.len == 0
    }
    pub fn is_direct(&self) -> bool {
        self.sh.st.lock().unwrap().direct
    }

    /// Hold the lease for direct access (re-granting first if it was recalled).
    pub fn pin(&self) -> Result<Pin<'_>> {
        if self.sh.conn().is_some_and(|c| c.forked()) {
            return Err(Error::Forked);
        }
        let mut st = self.sh.st.lock().unwrap();
        if !st.direct {
            return Err(Error::NotDirect(
                "this file is reached through pread/pwrite".into(),
            ));
        }
        if let Some(t) = self.sh.revoked.lock().unwrap().clone() {
            return Err(Error::Revoked(t));
        }
        if st.recall_pending && st.pins == 0 {
            self.sh.give_back(&mut st);
        }
        if st.leases.is_empty() {
            let conn = self.sh.conn().ok_or(Error::Closed)?.clone();
            let g = FdGranter {
                conn: &conn,
                fd: &self.grant_fd,
            };
            self.sh.regrant(&mut st, &g)?;
        }
        st.pins += 1;
        Ok(Pin { m: self })
    }

    fn check(&self, off: u64, len: usize) -> Result<u64> {
        let end = off
            .checked_add(len as u64)
            .ok_or(Error::Invalid("range overflows"))?;
        if off < self.sh.off || end > self.sh.off + self.sh.len {
            return Err(Error::Invalid("range outside the mapping"));
        }
        Ok(off - self.sh.off)
    }

    /// Copy file bytes at `off` (a file offset inside the mapping) into `buf`.
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let rel = self.check(off, buf.len())?;
        if !self.is_direct() {
            let n = read_full_at(self.sh.fd.as_fd(), buf, off)?;
            buf[n..].fill(0);
            return Ok(());
        }
        let p = self.pin()?;
        // SAFETY: [rel, rel+len) is inside the pinned window, which maps the device (or
        // zero pages) readable while the pin lives; the device may change under us (other
        // writers), which a byte copy tolerates.
        unsafe {
            std::ptr::copy_nonoverlapping(p.as_ptr().add(rel as usize), buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    /// Store `data` at file offset `off` (inside a write mapping). Not durable until
    /// `persist`; past EOF not visible until the size is committed.
    pub fn write_at(&self, off: u64, data: &[u8]) -> Result<()> {
        let rel = self.check(off, data.len())?;
        if !self.sh.write {
            return Err(Error::Invalid("store into a read mapping"));
        }
        if !self.is_direct() {
            return write_all_at(self.sh.fd.as_fd(), data, off);
        }
        let p = self.pin()?;
        // SAFETY: inside the pinned window, mapped writable (write grant, no holes).
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                p.as_mut_ptr().add(rel as usize),
                data.len(),
            )
        };
        Ok(())
    }

    /// Make stores to [off, off+len) durable: cache-line write-back + fence on a DAX
    /// device, msync on a page-cache image, a fence only on memfd; fdatasync in fallback.
    pub fn persist(&self, off: u64, len: u64) -> Result<()> {
        let rel = self.check(off, len as usize)?;
        if !self.is_direct() {
            // SAFETY: fdatasync of our own descriptor.
            if unsafe { libc::fdatasync(self.sh.fd.as_raw_fd()) } != 0 {
                return Err(io::Error::last_os_error().into());
            }
            return Ok(());
        }
        let p = self.pin()?;
        let conn = self.sh.conn().ok_or(Error::Closed)?;
        let dev = conn.dev.as_ref().ok_or(Error::Closed)?;
        let start = p.as_ptr().wrapping_add(rel as usize);
        match dev.persistence {
            Persistence::Dax => crate::persist::flush_fence(start, len as usize),
            Persistence::PageCache => {
                let a = (start as usize) & !(PAGE as usize - 1);
                let e = start as usize + len as usize;
                // SAFETY: msync of pages inside our pinned window.
                if unsafe { libc::msync(a as *mut _, e - a, libc::MS_SYNC) } != 0 {
                    return Err(io::Error::last_os_error().into());
                }
            }
            Persistence::Volatile => std::sync::atomic::fence(Ordering::SeqCst),
        }
        Ok(())
    }

    /// Grow the file to `size` (inside this write mapping's range). Persist first: the
    /// daemon trusts that the data under the new size is durable.
    pub fn commit_size(&self, size: u64) -> Result<()> {
        if !self.sh.write {
            return Err(Error::Invalid("commit_size needs a write mapping"));
        }
        if !self.is_direct() {
            let st = sys::fstat(self.sh.fd.as_fd())?;
            // SAFETY: ftruncate of our own descriptor, growing only.
            if (st.st_size as u64) < size
                && unsafe { libc::ftruncate(self.sh.fd.as_raw_fd(), size as i64) } != 0
            {
                return Err(io::Error::last_os_error().into());
            }
            return Ok(());
        }
        let _p = self.pin()?;
        let st = self.sh.st.lock().unwrap();
        let conn = self.sh.conn().ok_or(Error::Closed)?;
        // The lease whose range holds the new EOF.
        let lease = st
            .leases
            .iter()
            .find(|(_, o, l)| size > *o && size <= o + l)
            .ok_or(Error::Invalid("size outside the mapping's leases"))?
            .0;
        drop(st);
        match conn.call(&Msg::CommitSize { lease, size }, None)? {
            Msg::Ok => Ok(()),
            m => Err(Error::Proto(format!("expected OK, got {m:?}"))),
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let mut st = self.sh.st.lock().unwrap();
        self.sh.give_back(&mut st);
        if !self.sh.base.is_null() {
            // SAFETY: our own window; no pin can be live (they borrow the Mapping).
            unsafe { libc::munmap(self.sh.base as *mut _, self.sh.span as usize) };
        }
    }
}

/// For `daxfs leases` and tests: why the connection has no device.
impl Client {
    pub fn refusal(&self) -> Option<&str> {
        self.refusal.as_deref()
    }
    #[doc(hidden)]
    pub fn daemon_text(&self) -> Option<String> {
        self.inner.as_ref().map(|i| i.conn.refusal.clone())
    }
}

#[cfg(test)]
mod tests {
    //! The library against a fake daemon on a socketpair: recall waits for pins, re-grant
    //! maps the new layout, revoke fails the next use.
    use super::*;
    use std::os::fd::FromRawFd;
    use std::sync::mpsc::{Receiver, Sender, channel};
    use std::time::Duration;

    fn memfd(len: u64) -> OwnedFd {
        // SAFETY: memfd_create with a valid name; checked.
        let fd = unsafe { libc::memfd_create(c"fake-dev".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: a new descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sizing our memfd.
        assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), len as i64) }, 0);
        fd
    }

    enum Ev {
        Grant(u64),
        Return(u64),
    }

    /// Grants lease n at device offset n * 64 KiB; commands from the test go out unsolicited.
    fn fake_daemon(sock: OwnedFd, dev: OwnedFd, ev: Sender<Ev>, cmds: Receiver<Msg>) {
        let mut buf = vec![0u8; proto::MSG_MAX + 1];
        let mut next = 0u64;
        loop {
            loop {
                match cmds.try_recv() {
                    Ok(m) => sys::send(sock.as_fd(), &m.encode(0), &[], false).unwrap(),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return, // closes the socket
                }
            }
            let mut p = libc::pollfd {
                fd: sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut p, 1, 20) } == 0 {
                continue;
            }
            let Ok(Some(got)) = sys::recv(sock.as_fd(), &mut buf) else {
                return;
            };
            let (seq, m) = proto::decode(&buf[..got.len]).unwrap();
            match m {
                Msg::Hello { .. } => {
                    let r = Msg::HelloReply {
                        direct: true,
                        persistence: Persistence::Volatile,
                        block_size: 4096,
                        device_len: 1 << 20,
                        reason: String::new(),
                    };
                    sys::send(sock.as_fd(), &r.encode(seq), &[dev.as_fd()], false).unwrap();
                }
                Msg::Grant { off, len, .. } => {
                    assert_eq!(got.fds.len(), 1, "proof of open with every grant");
                    next += 1;
                    let len = len.min(64 << 10);
                    let r = Msg::GrantReply {
                        lease: next,
                        ino: 5,
                        size: 100,
                        off,
                        len,
                        ranges: vec![Range {
                            file_off: off,
                            len,
                            dev_off: Some(next * (64 << 10)),
                        }],
                    };
                    sys::send(sock.as_fd(), &r.encode(seq), &[], false).unwrap();
                    let _ = ev.send(Ev::Grant(next));
                }
                Msg::Return { lease } => {
                    let _ = ev.send(Ev::Return(lease));
                }
                Msg::CommitSize { .. } => {
                    sys::send(sock.as_fd(), &Msg::Ok.encode(seq), &[], false).unwrap();
                }
                m => panic!("unexpected {m:?}"),
            }
        }
    }

    fn dev_read(dev: &OwnedFd, off: u64, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        assert_eq!(read_full_at(dev.as_fd(), &mut b, off).unwrap(), n);
        b
    }

    #[test]
    fn recall_waits_for_pins_then_regrants_and_revoke_fails() {
        let mut fds = [0; 2];
        // SAFETY: a 2-element array.
        assert_eq!(
            unsafe {
                libc::socketpair(
                    libc::AF_UNIX,
                    libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                    0,
                    fds.as_mut_ptr(),
                )
            },
            0
        );
        // SAFETY: new descriptors.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let dev = memfd(1 << 20);
        let dev2 = dev.try_clone().unwrap();
        let (evtx, ev) = channel();
        let (cmd, cmdrx) = channel();
        let daemon = std::thread::spawn(move || fake_daemon(b, dev2, evtx, cmdrx));
        let client = Client::from_socket(a).unwrap();
        assert_eq!(client.mode(), Mode::Direct);
        let tmp = std::env::temp_dir().join(format!("daxfs-client-test-{}", std::process::id()));
        std::fs::write(&tmp, b"x").unwrap();
        let f = client.open(&tmp, true).unwrap();
        let _ = std::fs::remove_file(&tmp);
        let wait = |want: &dyn Fn(&Ev) -> bool| loop {
            let e = ev
                .recv_timeout(Duration::from_secs(5))
                .expect("daemon event");
            if want(&e) {
                return;
            }
        };
        wait(&|e| matches!(e, Ev::Return(1))); // the open probe
        let m = f.map(0, 8192, true).unwrap();
        wait(&|e| matches!(e, Ev::Grant(2)));
        m.write_at(10, b"stored").unwrap();
        assert_eq!(dev_read(&dev, 2 * (64 << 10) + 10, 6), b"stored");

        // Recall while pinned: no return until the pin goes.
        let pin = m.pin().unwrap();
        cmd.send(Msg::Recall {
            lease: 2,
            ino: 5,
            off: 0,
            len: 8192,
        })
        .unwrap();
        assert!(
            ev.recv_timeout(Duration::from_millis(300)).is_err(),
            "returned while pinned"
        );
        drop(pin);
        wait(&|e| matches!(e, Ev::Return(2)));

        // The next use re-grants (lease 3, another device offset) at the same address.
        let before = m.pin().unwrap().as_ptr();
        wait(&|e| matches!(e, Ev::Grant(3)));
        let mut got = [0u8; 6];
        m.read_at(10, &mut got).unwrap();
        assert_eq!(
            &got, &[0u8; 6],
            "the new layout is mapped, not the old blocks"
        );
        assert_eq!(m.pin().unwrap().as_ptr(), before);

        // A recall with no pin is answered at once.
        cmd.send(Msg::Recall {
            lease: 3,
            ino: 5,
            off: 0,
            len: 8192,
        })
        .unwrap();
        wait(&|e| matches!(e, Ev::Return(3)));
        m.write_at(0, b"again").unwrap();
        wait(&|e| matches!(e, Ev::Grant(4)));
        assert_eq!(dev_read(&dev, 4 * (64 << 10), 5), b"again");

        let other = f.map(1 << 20, 4096, true).unwrap();
        wait(&|e| matches!(e, Ev::Grant(5)));
        // Revoked: the next use fails and says why.
        cmd.send(Msg::Revoked {
            lease: 4,
            text: "not returned within 10 ms".into(),
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        match m.pin() {
            Err(Error::Revoked(t)) => assert!(t.contains("10 ms")),
            r => panic!("expected revoked, got {:?}", r.map(|_| ())),
        }
        // Revoked windows are unmapped and returned as soon as no pin is live.
        wait(&|e| matches!(e, Ev::Return(4)));
        // The daemon goes away: every mapping is dead, not left reaching the device.
        drop(cmd);
        daemon.join().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        match other.pin() {
            Err(Error::Revoked(t)) => assert!(t.contains("connection"), "{t}"),
            r => panic!(
                "expected revoked after the daemon left, got {:?}",
                r.map(|_| ())
            ),
        }
        drop((m, other, f, client));
    }
}
