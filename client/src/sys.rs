//! System-call helpers shared by the client and the daemon: SOCK_SEQPACKET datagrams with
//! file descriptors (SCM_RIGHTS), peer credentials, pidfds.
//!
//! Received descriptors become `OwnedFd` at once (and arrive close-on-exec), so a hostile
//! peer that sends fds nobody asked for cannot make either side leak them. A datagram or
//! control block the kernel had to truncate (MSG_TRUNC / MSG_CTRUNC) is an error, never a
//! partial message.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::proto::MSG_MAX;

/// Descriptors one datagram may carry.
pub const FDS_MAX: usize = 4;

pub struct Received {
    pub len: usize,
    pub fds: Vec<OwnedFd>,
}

fn cvt(r: libc::ssize_t) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Send one datagram, with `fds` as SCM_RIGHTS. `nonblock`: fail with WouldBlock rather
/// than wait for the peer to drain its queue (the daemon's sends to a client that does
/// not read).
pub fn send(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
    nonblock: bool,
) -> io::Result<()> {
    assert!(fds.len() <= FDS_MAX && data.len() <= MSG_MAX);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut cbuf = [0u64; 8]; // 64 bytes, aligned for cmsghdr
    // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    if !fds.is_empty() {
        let payload = (fds.len() * std::mem::size_of::<RawFd>()) as u32;
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
        assert!(space <= std::mem::size_of_val(&cbuf));
        mh.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        mh.msg_controllen = space as _;
        // SAFETY: msg_control points at `space` writable, aligned bytes, enough for one
        // cmsghdr carrying fds.len() descriptors.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&mh);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(payload) as _;
            let p = libc::CMSG_DATA(c) as *mut RawFd;
            for (i, fd) in fds.iter().enumerate() {
                p.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    let flags = libc::MSG_NOSIGNAL | if nonblock { libc::MSG_DONTWAIT } else { 0 };
    loop {
        // SAFETY: mh describes valid buffers (above).
        let r = unsafe { libc::sendmsg(sock.as_raw_fd(), &mh, flags) };
        match cvt(r) {
            Ok(n) if n == data.len() => return Ok(()),
            Ok(n) => {
                return Err(io::Error::other(format!(
                    "short send: {n} of {} bytes",
                    data.len()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Receive one datagram into `buf` (at least MSG_MAX + 1 bytes, so an oversized datagram
/// shows as one). Ok(None) at end of stream.
pub fn recv(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<Received>> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 16]; // room for FDS_MAX descriptors and then some
    // SAFETY: plain data; pointers below outlive the call.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    mh.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    let n = loop {
        // SAFETY: mh describes valid, writable buffers.
        let r = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut mh, libc::MSG_CMSG_CLOEXEC) };
        match cvt(r) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    // Take ownership of every descriptor first, so an error below still closes them.
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control with well-formed cmsgs up to msg_controllen;
    // the CMSG_* walk stays inside it, and each SCM_RIGHTS fd is a new descriptor of ours.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&mh);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const RawFd;
                let bytes = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&mh, c);
        }
    }
    if mh.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("descriptors truncated (too many sent)"));
    }
    if mh.msg_flags & libc::MSG_TRUNC != 0 || n > MSG_MAX {
        return Err(io::Error::other(format!("datagram over {MSG_MAX} bytes")));
    }
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some(Received { len: n, fds }))
}

/// A connected SOCK_SEQPACKET socket to `path`, close-on-exec.
pub fn connect(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let (addr, len) = sockaddr(path.as_os_str().as_bytes())?;
    // SAFETY: addr is a valid sockaddr_un of `len` bytes.
    let r = unsafe {
        libc::connect(
            sock.as_raw_fd(),
            &addr as *const _ as *const libc::sockaddr,
            len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

pub fn sockaddr(path: &[u8]) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if path.is_empty() || path.len() >= a.sun_path.len() || path.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path empty, too long or with a NUL byte",
        ));
    }
    for (d, s) in a.sun_path.iter_mut().zip(path) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + path.len() + 1;
    Ok((a, len as libc::socklen_t))
}

/// The peer's credentials at connect time (SO_PEERCRED).
pub fn peer_cred(sock: BorrowedFd<'_>) -> io::Result<libc::ucred> {
    // SAFETY: ucred is plain data.
    let mut c: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: c and len are valid for getsockopt's output.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut c as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(c)
}

/// A pidfd for `pid`: readable once the process has exited.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; the result is checked.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data filled by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and output buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// The open flags of `fd` (F_GETFL).
pub fn open_flags(fd: BorrowedFd<'_>) -> io::Result<i32> {
    // SAFETY: F_GETFL on a valid descriptor.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: fds is a 2-element array.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(r, 0);
        // SAFETY: both are new descriptors.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    #[test]
    fn datagrams_with_fds_and_oversize() {
        use std::os::fd::AsFd;
        let (a, b) = pair();
        let f = std::fs::File::open("/proc/self/exe").unwrap();
        send(a.as_fd(), b"hello", &[f.as_fd()], false).unwrap();
        let mut buf = vec![0u8; MSG_MAX + 1];
        let r = recv(b.as_fd(), &mut buf).unwrap().unwrap();
        assert_eq!(&buf[..r.len], b"hello");
        assert_eq!(r.fds.len(), 1);
        let st = fstat(r.fds[0].as_fd()).unwrap();
        assert_eq!(st.st_ino, fstat(f.as_fd()).unwrap().st_ino);
        // An oversized datagram is an error, not a truncated message.
        let big = vec![1u8; MSG_MAX + 100];
        // SAFETY: plain send of a valid buffer.
        let n = unsafe { libc::send(a.as_raw_fd(), big.as_ptr() as *const _, big.len(), 0) };
        assert_eq!(n as usize, big.len());
        let mut small = vec![0u8; MSG_MAX + 1];
        assert!(recv(b.as_fd(), &mut small).is_err());
        let cred = peer_cred(a.as_fd()).unwrap();
        // SAFETY: getpid cannot fail.
        assert_eq!(cred.pid, unsafe { libc::getpid() });
        drop(a);
        assert!(recv(b.as_fd(), &mut buf).unwrap().is_none());
    }
}
