//! The control socket of a mount: where direct-access clients ask for layouts. It calls
//! fs/ (fs/layout.rs) as the FUSE adapter does, and sits beside it, above fs.
//!
//! Path: `/run/daxfs/MAJOR:MINOR.sock` (daxfs_client::proto::socket_dir/socket_name), the
//! st_dev of the mount. A client finds it from fstat of any file it opened on the mount;
//! the daemon reads it from /proc/self/mountinfo (a stat of its own mount point would be a
//! FUSE request to itself before the session runs). /run/daxfs is made by a root daemon,
//! owned by root and 0755, so no other user can put a socket under that name first (an
//! abstract socket could be bound by anyone); the socket itself is 0666, as every request
//! is checked on its own. A daemon not running as root uses $XDG_RUNTIME_DIR/daxfs.
//!
//! Who asks: SO_PEERCRED at accept (pid, uid, gid) and /proc/PID/status for the groups.
//! Proof of open: every GRANT carries the client's open descriptor (SCM_RIGHTS); it must
//! name a regular file on this mount (st_dev), and its open mode (F_GETFL) must allow the
//! lease (write leases need O_WRONLY or O_RDWR). The device descriptor goes (once, with
//! HELLO_REPLY) only to a client that could open the backing image or device node itself:
//! root, or the owner/group/other permission bits of the image for the peer's uid, gid and
//! groups (memfd: root or the daemon's own uid). Everyone else is told why and falls back.
//!
//! Threads: one listener, one per connection (at most CONNECTIONS_MAX, and
//! CONNECTIONS_PER_UID_MAX for a user other than root; HELLO within HELLO_TIMEOUT), each polling its
//! socket, the client's pidfd (leases of a dead process are returned even if a child
//! inherited the socket) and the server's stop eventfd. A malformed or oversized message,
//! a missing/extra/foreign descriptor, or a message out of order closes that connection
//! and returns its leases; nothing a client sends can panic or stall the daemon (replies
//! have a send timeout, recalls never block).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use daxfs_client::proto::{self, LeaseEntry, Msg};
use daxfs_client::sys;

use crate::dax::lease::{ClientId, LeaseId, LeaseState};
use crate::dax::{LayoutError, RecallSink, lerr};
use crate::fs::Fs;
use crate::pmem::device::Persistence;

pub const CONNECTIONS_MAX: usize = 256;
/// Connections one user other than root may hold, so one user cannot take them all.
pub const CONNECTIONS_PER_UID_MAX: usize = 32;
/// A connection that has not said HELLO by then is closed (it holds a thread).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(3);
/// A client that does not read its replies for this long loses its connection.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// What the server needs from the mount besides `Fs`.
pub struct ServerConfig {
    pub mountpoint: PathBuf,
    /// The SOURCE given to mount (image path, /dev/daxX.Y or memfd:SIZE).
    pub source: String,
    /// Called after a size commit (the kernel's cached attributes of the inode are stale).
    pub size_changed: Box<dyn Fn(u64) + Send + Sync>,
}

struct Peer {
    sock: Arc<OwnedFd>,
    send_lock: Mutex<()>,
}

struct Shared {
    fs: Arc<Fs>,
    dev: u64,
    cfg: ServerConfig,
    stop: OwnedFd,
    peers: Mutex<HashMap<ClientId, Arc<Peer>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    per_uid: Mutex<HashMap<u32, usize>>,
    // SAFETY of use: read-only after start.
    daemon_uid: u32,
}

pub struct Server {
    shared: Arc<Shared>,
    listener: Option<JoinHandle<()>>,
    path: PathBuf,
}

/// The mount's device number, from /proc/self/mountinfo (last mount on `mountpoint`).
pub fn mount_dev(mountpoint: &Path) -> io::Result<u64> {
    let canon = std::fs::canonicalize(mountpoint)?;
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut found = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 5 {
            continue;
        }
        let mp = f[4]
            .replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\134", "\\");
        if Path::new(&mp) == canon
            && let Some((ma, mi)) = f[2].split_once(':')
            && let (Ok(ma), Ok(mi)) = (ma.parse::<u32>(), mi.parse::<u32>())
        {
            found = Some(libc::makedev(ma, mi));
        }
    }
    found.ok_or_else(|| {
        io::Error::other(format!("{}: not in /proc/self/mountinfo", canon.display()))
    })
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd with constant flags; checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Make the socket directory, or check that an existing one is safe to use.
fn socket_dir(root: bool) -> Result<PathBuf, String> {
    let dir = proto::socket_dir(root);
    if !dir.exists() {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mode = if root { 0o755 } else { 0o700 };
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let m = std::fs::symlink_metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if !m.is_dir() || m.uid() != me || m.mode() & 0o022 != 0 {
        return Err(format!(
            "{}: not a directory of uid {me} closed to others; refusing to put the control socket there",
            dir.display()
        ));
    }
    Ok(dir)
}

impl Server {
    /// Create the socket and start serving. Called once the mount is live.
    pub fn start(fs: Arc<Fs>, cfg: ServerConfig) -> Result<Server, String> {
        let dev = mount_dev(&cfg.mountpoint).map_err(|e| e.to_string())?;
        // SAFETY: geteuid cannot fail.
        let uid = unsafe { libc::geteuid() };
        let dir = socket_dir(uid == 0)?;
        let path = dir.join(proto::socket_name(dev));
        // A socket left by a daemon that died: st_dev numbers are reused, one live mount
        // holds a number at a time, so the name is ours now.
        if let Ok(m) = std::fs::symlink_metadata(&path) {
            use std::os::unix::fs::FileTypeExt;
            if !m.file_type().is_socket() {
                return Err(format!("{}: exists and is not a socket", path.display()));
            }
            let _ = std::fs::remove_file(&path);
        }
        // SAFETY: socket(2) with constant arguments.
        let fd =
            unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(format!("socket: {}", io::Error::last_os_error()));
        }
        // SAFETY: a new descriptor.
        let lsock = unsafe { OwnedFd::from_raw_fd(fd) };
        use std::os::unix::ffi::OsStrExt;
        let (addr, alen) = sys::sockaddr(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: a valid sockaddr_un of alen bytes.
        if unsafe {
            libc::bind(
                lsock.as_raw_fd(),
                &addr as *const _ as *const libc::sockaddr,
                alen,
            )
        } != 0
        {
            return Err(format!(
                "{}: bind: {}",
                path.display(),
                io::Error::last_os_error()
            ));
        }
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666));
        // SAFETY: listen on our bound socket.
        if unsafe { libc::listen(lsock.as_raw_fd(), 64) } != 0 {
            let _ = std::fs::remove_file(&path);
            return Err(format!("listen: {}", io::Error::last_os_error()));
        }
        let shared = Arc::new(Shared {
            fs: fs.clone(),
            dev,
            cfg,
            stop: eventfd().map_err(|e| e.to_string())?,
            peers: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
            per_uid: Mutex::new(HashMap::new()),
            daemon_uid: uid,
        });
        fs.set_recall_sink(Some(Arc::new(Sink(Arc::downgrade(&shared)))));
        let s2 = shared.clone();
        let listener = std::thread::Builder::new()
            .name("daxfs-dax-listen".into())
            .spawn(move || listen(s2, lsock))
            .map_err(|e| e.to_string())?;
        log::info!("direct access: control socket {}", path.display());
        Ok(Server {
            shared,
            listener: Some(listener),
            path,
        })
    }

    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// Stop serving: close every connection (returning its leases), remove the socket.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        let Some(l) = self.listener.take() else {
            return;
        };
        self.shared.fs.set_recall_sink(None);
        let one: u64 = 1;
        // SAFETY: an 8-byte write to our eventfd.
        unsafe {
            libc::write(
                self.shared.stop.as_raw_fd(),
                &one as *const u64 as *const _,
                8,
            )
        };
        let _ = l.join();
        let threads: Vec<_> = self.shared.threads.lock().unwrap().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

struct Sink(std::sync::Weak<Shared>);

impl Sink {
    fn send(&self, client: ClientId, m: &Msg) {
        let Some(sh) = self.0.upgrade() else { return };
        let peer = sh.peers.lock().unwrap().get(&client).cloned();
        if let Some(p) = peer {
            // Never block the filesystem on a client: one that does not read is revoked.
            let _g = p.send_lock.lock().unwrap();
            let _ = sys::send(p.sock.as_fd(), &m.encode(0), &[], true);
        }
    }
}

impl RecallSink for Sink {
    fn recall(&self, client: ClientId, lease: LeaseId, ino: u64, off: u64, len: u64) {
        self.send(
            client,
            &Msg::Recall {
                lease,
                ino,
                off,
                len,
            },
        );
    }
    fn revoked(&self, client: ClientId, lease: LeaseId, why: &str) {
        self.send(
            client,
            &Msg::Revoked {
                lease,
                text: why.to_string(),
            },
        );
    }
}

fn poll_in(fds: &[BorrowedFd<'_>], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|f| libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: p is a valid array of pollfds.
        let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(p.iter().map(|x| x.revents != 0).collect());
    }
}

fn listen(sh: Arc<Shared>, lsock: OwnedFd) {
    loop {
        let ready = match poll_in(&[lsock.as_fd(), sh.stop.as_fd()], -1) {
            Ok(r) => r,
            Err(e) => {
                log::error!("direct access: poll: {e}; control socket closed");
                return;
            }
        };
        if ready[1] {
            return;
        }
        // SAFETY: accept4 on our listening socket; the result is checked.
        let fd = unsafe {
            libc::accept4(
                lsock.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            continue;
        }
        // SAFETY: a new descriptor.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut threads = sh.threads.lock().unwrap();
        threads.retain(|t| !t.is_finished());
        if threads.len() >= CONNECTIONS_MAX {
            log::warn!("direct access: {CONNECTIONS_MAX} connections already; refusing one");
            continue;
        }
        let Ok(cred) = sys::peer_cred(sock.as_fd()) else {
            continue;
        };
        {
            let mut per = sh.per_uid.lock().unwrap();
            let n = per.entry(cred.uid).or_default();
            if cred.uid != 0 && *n >= CONNECTIONS_PER_UID_MAX {
                log::warn!(
                    "direct access: uid {} holds {CONNECTIONS_PER_UID_MAX} connections; refusing one",
                    cred.uid
                );
                continue;
            }
            *n += 1;
        }
        let s2 = sh.clone();
        match std::thread::Builder::new()
            .name("daxfs-dax-conn".into())
            .spawn(move || {
                connection(&s2, sock, cred);
                let mut per = s2.per_uid.lock().unwrap();
                if let Some(n) = per.get_mut(&cred.uid) {
                    *n -= 1;
                    if *n == 0 {
                        per.remove(&cred.uid);
                    }
                }
            }) {
            Ok(t) => threads.push(t),
            Err(e) => {
                log::warn!("direct access: cannot start a connection thread: {e}");
                if let Some(n) = sh.per_uid.lock().unwrap().get_mut(&cred.uid) {
                    *n -= 1;
                }
            }
        }
    }
}

/// The peer's supplementary groups, from /proc/PID/status.
fn peer_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// May this peer have the device? Ok, or the reason it may not.
fn device_policy(sh: &Shared, cred: &libc::ucred) -> Result<(), String> {
    if cred.uid == 0 {
        return Ok(());
    }
    let src = &sh.cfg.source;
    if src.starts_with("memfd:") {
        if cred.uid == sh.daemon_uid {
            return Ok(());
        }
        return Err(format!(
            "the device is the daemon's memfd; only root and uid {} may map it (uid {} asked)",
            sh.daemon_uid, cred.uid
        ));
    }
    let m = std::fs::metadata(src).map_err(|e| format!("cannot check {src}: {e}"))?;
    let want = if sh.fs.mp().is_read_only() { 0o4 } else { 0o6 };
    let bits = if cred.uid == m.uid() {
        (m.mode() >> 6) & 7
    } else if cred.gid == m.gid() || peer_groups(cred.pid).contains(&m.gid()) {
        (m.mode() >> 3) & 7
    } else {
        m.mode() & 7
    };
    if bits & want == want {
        Ok(())
    } else {
        Err(format!(
            "uid {} could not open the backing device {src} (mode {:o}, owner {}:{}) {}; \
             mapping it would reach every file, so this client uses pread/pwrite",
            cred.uid,
            m.mode() & 0o7777,
            m.uid(),
            m.gid(),
            if want == 0o6 {
                "read-write"
            } else {
                "read-only"
            }
        ))
    }
}

enum Step {
    Reply(Msg),
    NoReply,
    /// Send this (if any), then close the connection.
    Close(Option<Msg>, String),
}

struct Conn<'a> {
    sh: &'a Shared,
    client: ClientId,
    cred: libc::ucred,
    hello: bool,
}

impl Conn<'_> {
    fn handle(&mut self, m: Msg, fds: Vec<OwnedFd>) -> (Step, Vec<BorrowedFd<'static>>) {
        let none = Vec::new();
        if !matches!(m, Msg::Grant { .. }) && !fds.is_empty() {
            return (
                Step::Close(
                    None,
                    "descriptors sent with a message that takes none".into(),
                ),
                none,
            );
        }
        if !self.hello && !matches!(m, Msg::Hello { .. }) {
            return (Step::Close(None, "first message is not HELLO".into()), none);
        }
        let err = |e: LayoutError| Msg::Error {
            errno: e.errno,
            text: e.text,
        };
        match m {
            Msg::Hello { .. } if self.hello => (Step::Close(None, "second HELLO".into()), none),
            Msg::Hello { client_version } => {
                self.hello = true;
                if client_version != proto::VERSION {
                    return (
                        Step::Close(None, format!("client speaks version {client_version}")),
                        none,
                    );
                }
                (Step::Reply(Msg::Ok), none) // replaced by the caller (it needs the device fd)
            }
            Msg::Grant { off, len, write } => {
                let fd = match <[OwnedFd; 1]>::try_from(fds) {
                    Ok([fd]) => fd,
                    Err(v) => {
                        return (
                            Step::Close(
                                Some(Msg::Error {
                                    errno: libc::EBADF,
                                    text: format!(
                                        "GRANT needs exactly one descriptor, got {}",
                                        v.len()
                                    ),
                                }),
                                "bad descriptors with GRANT".into(),
                            ),
                            none,
                        );
                    }
                };
                match self.check_fd(fd.as_fd(), write) {
                    Ok(ino) => match self.sh.fs.layout_grant(ino, self.client, off, len, write) {
                        Ok(g) => (
                            Step::Reply(Msg::GrantReply {
                                lease: g.lease,
                                ino: g.ino,
                                size: g.size,
                                off: g.off,
                                len: g.len,
                                ranges: g
                                    .ranges
                                    .iter()
                                    .map(|r| proto::Range {
                                        file_off: r.file_off,
                                        len: r.len,
                                        dev_off: r.dev_off,
                                    })
                                    .collect(),
                            }),
                            none,
                        ),
                        Err(e) => (Step::Reply(err(e)), none),
                    },
                    Err((close, e)) if close => {
                        let why = e.text.clone();
                        (Step::Close(Some(err(e)), why), none)
                    }
                    Err((_, e)) => (Step::Reply(err(e)), none),
                }
            }
            Msg::Return { lease } => {
                if self.sh.fs.layout_return(self.client, lease).is_err() {
                    log::debug!(
                        "direct access: client {} returned unknown lease {lease}",
                        self.client
                    );
                }
                (Step::NoReply, none)
            }
            Msg::CommitSize { lease, size } => {
                match self.sh.fs.layout_commit_size(self.client, lease, size) {
                    Ok(ino) => {
                        (self.sh.cfg.size_changed)(ino);
                        (Step::Reply(Msg::Ok), none)
                    }
                    Err(e) => (Step::Reply(err(e)), none),
                }
            }
            Msg::List { after } => {
                let all = self.cred.uid == 0 || self.cred.uid == self.sh.daemon_uid;
                let (page, more) = self.sh.fs.layout_list_page(after, proto::LIST_ENTRIES_MAX);
                let entries = page
                    .into_iter()
                    .filter(|l| all || l.uid == self.cred.uid)
                    .map(|l| LeaseEntry {
                        lease: l.id,
                        ino: l.ino,
                        off: l.off,
                        len: l.len,
                        write: l.write,
                        state: match l.state {
                            LeaseState::Granted => proto::LeaseState::Granted,
                            LeaseState::Recalled => proto::LeaseState::Recalled,
                            LeaseState::Revoked => proto::LeaseState::Revoked,
                        },
                        pid: l.pid,
                        uid: l.uid,
                        quarantined_blocks: l.quarantined_blocks,
                    })
                    .collect();
                (Step::Reply(Msg::ListReply { entries, more }), none)
            }
            other => (
                Step::Close(None, format!("daemon-side message {other:?} from a client")),
                none,
            ),
        }
    }

    /// The proof of open: `fd` names a regular file of this mount, opened with the access
    /// the lease needs. Err((close the connection?, why)).
    fn check_fd(&self, fd: BorrowedFd<'_>, write: bool) -> Result<u64, (bool, LayoutError)> {
        let st = sys::fstat(fd).map_err(|e| {
            (
                true,
                lerr(libc::EBADF, format!("fstat of the descriptor: {e}")),
            )
        })?;
        if st.st_dev != self.sh.dev {
            return Err((
                true,
                lerr(libc::EXDEV, "the descriptor is not a file of this mount"),
            ));
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err((
                false,
                lerr(libc::EINVAL, "the descriptor is not a regular file"),
            ));
        }
        let fl = sys::open_flags(fd).map_err(|e| (true, lerr(libc::EBADF, e.to_string())))?;
        if fl & libc::O_PATH != 0 {
            return Err((
                false,
                lerr(libc::EBADF, "an O_PATH descriptor proves no access"),
            ));
        }
        let acc = fl & libc::O_ACCMODE;
        if write && acc == libc::O_RDONLY {
            return Err((
                false,
                lerr(
                    libc::EBADF,
                    "write lease asked with a descriptor opened read-only",
                ),
            ));
        }
        if !write && acc == libc::O_WRONLY {
            return Err((
                false,
                lerr(
                    libc::EBADF,
                    "read lease asked with a descriptor opened write-only",
                ),
            ));
        }
        Ok(st.st_ino)
    }
}

fn connection(sh: &Shared, sock: OwnedFd, cred: libc::ucred) {
    let Ok(pidfd) = sys::pidfd_open(cred.pid) else {
        return;
    };
    let tv = libc::timeval {
        tv_sec: SEND_TIMEOUT.as_secs() as _,
        tv_usec: 0,
    };
    // SAFETY: setsockopt with a valid timeval.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    let sock = Arc::new(sock);
    let client = sh.fs.layout_client_new(cred.pid as u32, cred.uid);
    let peer = Arc::new(Peer {
        sock: sock.clone(),
        send_lock: Mutex::new(()),
    });
    sh.peers.lock().unwrap().insert(client, peer.clone());
    let mut c = Conn {
        sh,
        client,
        cred,
        hello: false,
    };
    let why = serve_client(&mut c, &sock, &peer, &pidfd);
    log::debug!("direct access: client {client} (pid {}): {why}", cred.pid);
    sh.peers.lock().unwrap().remove(&client);
    sh.fs.layout_client_gone(client);
}

fn serve_client(c: &mut Conn<'_>, sock: &OwnedFd, peer: &Peer, pidfd: &OwnedFd) -> String {
    let mut buf = vec![0u8; proto::MSG_MAX + 1];
    let send = |m: &Msg, seq: u32, fds: &[BorrowedFd<'_>]| -> bool {
        let _g = peer.send_lock.lock().unwrap();
        sys::send(sock.as_fd(), &m.encode(seq), fds, false).is_ok()
    };
    let hello_by = std::time::Instant::now() + HELLO_TIMEOUT;
    loop {
        let timeout = if c.hello {
            -1
        } else {
            hello_by
                .saturating_duration_since(std::time::Instant::now())
                .as_millis() as i32
        };
        let ready = match poll_in(&[sock.as_fd(), pidfd.as_fd(), c.sh.stop.as_fd()], timeout) {
            Ok(r) => r,
            Err(e) => return format!("poll: {e}"),
        };
        if !ready.iter().any(|&r| r) {
            return "no HELLO in time".into();
        }
        if ready[2] {
            return "server stopping".into();
        }
        if ready[1] {
            return "process exited".into();
        }
        let got = match sys::recv(sock.as_fd(), &mut buf) {
            Ok(Some(g)) => g,
            Ok(None) => return "connection closed".into(),
            Err(e) => return format!("receive: {e}"),
        };
        let (seq, m) = match proto::decode(&buf[..got.len]) {
            Ok(x) => x,
            Err(e) => return format!("malformed message: {e}"),
        };
        let is_hello = matches!(m, Msg::Hello { .. }) && !c.hello;
        let (step, _) = c.handle(m, got.fds);
        match step {
            Step::Reply(_) if is_hello => {
                let policy = device_policy(c.sh, &c.cred);
                let dev = &c.sh.fs.mp().dev;
                let persistence = match dev.persistence() {
                    Persistence::Dax => proto::Persistence::Dax,
                    Persistence::PageCache => proto::Persistence::PageCache,
                    Persistence::Volatile => proto::Persistence::Volatile,
                };
                let reply = Msg::HelloReply {
                    direct: policy.is_ok(),
                    persistence,
                    block_size: crate::format::BLOCK_SIZE as u32,
                    device_len: dev.len(),
                    reason: policy.clone().err().unwrap_or_default(),
                };
                let fds: Vec<BorrowedFd<'_>> = if policy.is_ok() {
                    vec![dev.file().as_fd()]
                } else {
                    vec![]
                };
                if !send(&reply, seq, &fds) {
                    return "cannot send HELLO_REPLY".into();
                }
            }
            Step::Reply(r) => {
                if !send(&r, seq, &[]) {
                    return "client does not read its replies".into();
                }
            }
            Step::NoReply => {}
            Step::Close(r, why) => {
                if let Some(r) = r {
                    let _ = send(&r, seq, &[]);
                }
                return why;
            }
        }
    }
}
