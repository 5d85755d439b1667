//! Direct access with real processes: a daxfs daemon (the `daxfs` binary, mounted for
//! real), clients in this test process, in re-executed copies of it (as another user, or
//! to be killed), `daxfs layout` holders, a C program over libdaxfs_client.so, and raw
//! hostile connections to the control socket. Every test unmounts (also when it fails:
//! `Mounted` unmounts on drop) and ends with `daxfs check` clean.
//!
//! Reads through the mount use O_DIRECT: until the FUSE side serves DAX files without the
//! page cache (daxcore, issue 9 "one copy of the data"), a buffered read could return pages
//! cached before a client's store. Needs root and /dev/fuse; skipped (with a message)
//! where they are missing.

mod common;
use common::{BIN, can_mount, daxfs};

use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daxfs_client::proto::{self, Msg};
use daxfs_client::{Client, Error, Mode, sys};

const CHILD_ENV: &str = "DAXFS_DAX_TEST_CHILD";

/// A temporary directory others may traverse (an unprivileged client must reach the
/// mount), holding a root-only image and the mount point.
struct Setup {
    // Dropped in this order: unmount before the temporary directory goes.
    mnt: Mounted,
    img: PathBuf,
    _t: tempfile::TempDir,
}

struct Mounted {
    dir: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.unmount();
    }
}

impl Mounted {
    fn unmount(&mut self) {
        if self.dir.as_os_str().is_empty() {
            return;
        }
        common::umount(&self.dir);
        self.dir = PathBuf::new();
    }
}

fn setup(opts: &str) -> Setup {
    let t = tempfile::Builder::new()
        .prefix("daxfs-dax-test")
        .tempdir_in("/dev/shm")
        .unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let img = t.path().join("img");
    let mnt = t.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    assert!(
        daxfs(&["mkfs", img.to_str().unwrap(), "--size", "64M"])
            .status
            .success()
    );
    fs::set_permissions(&img, fs::Permissions::from_mode(0o600)).unwrap();
    let out = daxfs(&[
        "mount",
        img.to_str().unwrap(),
        mnt.to_str().unwrap(),
        "-o",
        opts,
    ]);
    assert!(
        out.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::set_permissions(&mnt, fs::Permissions::from_mode(0o777)).unwrap();
    Setup {
        _t: t,
        img,
        mnt: Mounted { dir: mnt },
    }
}

impl Setup {
    fn path(&self, name: &str) -> PathBuf {
        self.mnt.dir.join(name)
    }
    /// Unmount and check: every test ends here.
    fn finish(mut self) {
        self.mnt.unmount();
        let out = daxfs(&["check", self.img.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "check: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fn leases(&self) -> String {
        let out = daxfs(&["leases", self.mnt.dir.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn wait_no_leases(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.lease_count() != 0 {
            assert!(Instant::now() < deadline, "leases left: {}", self.leases());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    fn lease_count(&self) -> usize {
        self.leases().lines().skip(1).count()
    }
}

/// A 4 KiB-aligned buffer for O_DIRECT.
struct Aligned {
    p: *mut u8,
    len: usize,
}
impl Aligned {
    fn new(len: usize) -> Aligned {
        let l = std::alloc::Layout::from_size_align(len, 4096).unwrap();
        // SAFETY: non-zero size layout.
        Aligned {
            p: unsafe { std::alloc::alloc_zeroed(l) },
            len,
        }
    }
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: our allocation of len bytes.
        unsafe { std::slice::from_raw_parts_mut(self.p, self.len) }
    }
}
impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe {
            std::alloc::dealloc(
                self.p,
                std::alloc::Layout::from_size_align(self.len, 4096).unwrap(),
            )
        };
    }
}

/// Read `len` bytes at `off` through the mount, bypassing the page cache.
fn read_direct(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap();
    let span = (off % 4096) as usize + len;
    let mut b = Aligned::new(span.next_multiple_of(4096));
    let mut got = 0;
    let base = off / 4096 * 4096;
    while got < b.len {
        // SAFETY: pread into our aligned buffer.
        let n = unsafe {
            libc::pread(
                f.as_raw_fd(),
                b.p.add(got) as *mut _,
                b.len - got,
                (base + got as u64) as i64,
            )
        };
        assert!(n >= 0, "O_DIRECT read: {}", std::io::Error::last_os_error());
        if n == 0 {
            break;
        }
        got += n as usize;
    }
    let s = (off % 4096) as usize;
    b.bytes()[s..(s + len).min(got.max(s))].to_vec()
}

fn write_direct(path: &Path, off: u64, data: &[u8]) {
    assert!(off.is_multiple_of(4096) && data.len().is_multiple_of(4096));
    let f = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap();
    let mut b = Aligned::new(data.len());
    b.bytes().copy_from_slice(data);
    // SAFETY: pwrite from our aligned buffer.
    let n = unsafe { libc::pwrite(f.as_raw_fd(), b.p as *const _, data.len(), off as i64) };
    assert_eq!(
        n as usize,
        data.len(),
        "O_DIRECT write: {}",
        std::io::Error::last_os_error()
    );
}

fn pattern(seed: u8, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Run this test binary again as a child doing `role` (see `child_entry`).
fn child(role: &str, args: &[&str]) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, role)
        .env("DAXFS_DAX_TEST_ARGS", args.join("\u{1f}"));
    c
}

/// Entry point of re-executed children; a no-op as a test of its own.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let args: Vec<String> = std::env::var("DAXFS_DAX_TEST_ARGS")
        .unwrap_or_default()
        .split('\u{1f}')
        .map(String::from)
        .collect();
    match role.as_str() {
        // args: file. Unprivileged: expect the fallback, then read/write/append through it.
        "fallback" => {
            let file = Path::new(&args[0]);
            let c = Client::connect(file).unwrap();
            let Mode::Fallback { reason } = c.mode() else {
                panic!("an unprivileged client got the device")
            };
            println!("REASON {reason}");
            let f = c.open(file, true).unwrap();
            assert!(matches!(f.mode(), Mode::Fallback { .. }));
            let m = f.map(0, 8192, true).unwrap();
            assert!(!m.is_direct());
            assert!(matches!(m.pin(), Err(Error::NotDirect(_))));
            let mut b = vec![0u8; 4];
            m.read_at(0, &mut b).unwrap();
            assert_eq!(&b, b"root");
            m.write_at(4096, b"from nobody").unwrap();
            m.persist(4096, 11).unwrap();
            let at = f.append(b"+tail").unwrap();
            assert_eq!(at, 4096 + 11);
            f.fsync().unwrap();
            println!("CHILD OK");
        }
        // args: file. Take write leases, store, then wait to be killed.
        "hold_and_die" => {
            let file = Path::new(&args[0]);
            let c = Client::connect(file).unwrap();
            assert_eq!(c.mode(), Mode::Direct);
            let f = c.open(file, true).unwrap();
            let m1 = f.map(0, 1 << 20, true).unwrap();
            let m2 = f.map(4 << 20, 1 << 20, true).unwrap();
            m1.write_at(0, b"killed before commit").unwrap();
            for i in 0..1000u64 {
                f.append(&i.to_le_bytes()).unwrap();
            }
            println!("HOLDING");
            std::io::stdout().flush().unwrap();
            std::thread::sleep(Duration::from_secs(60));
            drop((m1, m2));
        }
        // args: mount. Open many connections as one unprivileged user.
        "many_conns" => {
            let mnt = Path::new(&args[0]);
            let mut socks = Vec::new();
            let mut answered = 0;
            for _ in 0..40 {
                let st = fs::metadata(mnt).unwrap();
                let path = proto::socket_dir(true).join(proto::socket_name(st.dev()));
                let sock = sys::connect(&path).unwrap();
                let _ = sys::send(
                    sock.as_fd(),
                    &Msg::Hello {
                        client_version: proto::VERSION,
                    }
                    .encode(1),
                    &[],
                    false,
                );
                if let Some(Msg::HelloReply { .. }) = reply(&sock) {
                    answered += 1;
                }
                socks.push(sock);
            }
            println!("ANSWERED {answered}");
        }
        r => panic!("unknown child role {r}"),
    }
}

#[test]
fn store_load_coherence_holes_append_and_size() {
    if !can_mount() {
        return;
    }
    let s = setup("dax=always");
    let file = s.path("data");
    fs::write(&file, pattern(1, 3 * 4096)).unwrap();
    let client = Client::connect(&file).unwrap();
    assert_eq!(client.mode(), Mode::Direct, "root gets the device");
    let f = client.open(&file, true).unwrap();
    assert_eq!(f.mode(), &Mode::Direct);
    assert_eq!(f.size(), 3 * 4096);

    // A store through the mapping is what the next read through the mount returns.
    let m = f.map(0, 3 * 4096, true).unwrap();
    let mut b = vec![0u8; 3 * 4096];
    m.read_at(0, &mut b).unwrap();
    assert_eq!(b, pattern(1, 3 * 4096), "the mapping shows the file's data");
    m.write_at(5000, b"stored through the mapping").unwrap();
    m.persist(5000, 26).unwrap();
    assert_eq!(read_direct(&file, 5000, 26), b"stored through the mapping");
    // And a write through the mount is what the client's next load sees.
    write_direct(&file, 8192, &pattern(9, 4096));
    let mut b = vec![0u8; 4096];
    m.read_at(8192, &mut b).unwrap();
    assert_eq!(b, pattern(9, 4096));
    // Raw pointers under a pin.
    {
        let p = m.pin().unwrap();
        // SAFETY: inside the pinned write mapping.
        unsafe { *p.as_mut_ptr().add(1) = b'X' };
    }
    assert_eq!(read_direct(&file, 0, 2)[1], b'X');
    drop(m);

    // A read mapping over a hole reads zeros; a write mapping there allocates zeroed blocks.
    let sparse = s.path("sparse");
    let fh = fs::File::create(&sparse).unwrap();
    fh.set_len(1 << 20).unwrap();
    drop(fh);
    let sf = client.open(&sparse, true).unwrap();
    let r = sf.map(64 << 10, 64 << 10, false).unwrap();
    let mut z = vec![1u8; 64 << 10];
    r.read_at(64 << 10, &mut z).unwrap();
    assert!(z.iter().all(|&x| x == 0), "holes read as zeros");
    drop(r);
    let w = sf.map(128 << 10, 8192, true).unwrap();
    let mut z = vec![1u8; 8192];
    w.read_at(128 << 10, &mut z).unwrap();
    assert!(
        z.iter().all(|&x| x == 0),
        "newly allocated blocks are zeroed"
    );
    w.write_at(128 << 10, b"in a former hole").unwrap();
    w.persist(128 << 10, 16).unwrap();
    drop(w);
    assert_eq!(read_direct(&sparse, 128 << 10, 16), b"in a former hole");
    assert!(
        fs::metadata(&sparse).unwrap().blocks() >= 16,
        "blocks allocated"
    );

    // Stores past EOF are invisible until the size is committed.
    let grow = s.path("grow");
    fs::write(&grow, b"abc").unwrap();
    let gf = client.open(&grow, true).unwrap();
    let gm = gf.map(0, 16384, true).unwrap();
    gm.write_at(10000, b"past eof").unwrap();
    gm.persist(10000, 8).unwrap();
    assert_eq!(fs::metadata(&grow).unwrap().len(), 3);
    gm.commit_size(10008).unwrap();
    assert_eq!(
        fs::metadata(&grow).unwrap().len(),
        10008,
        "size visible via stat"
    );
    assert!(
        gm.commit_size(16385).is_err(),
        "a size past the lease is refused"
    );
    // Stores past the committed size are discarded with the lease: the file grown
    // through the mount later shows zeros there, not the uncommitted bytes.
    gm.write_at(10008, b"uncommitted in the EOF block").unwrap();
    gm.write_at(14000, b"uncommitted past it").unwrap();
    gm.persist(10008, 6000).unwrap();
    drop(gm);
    s.wait_no_leases(); // RETURN has no reply: let the daemon take it
    assert_eq!(read_direct(&grow, 10000, 8), b"past eof");
    assert_eq!(read_direct(&grow, 3, 5), [0u8; 5], "the gap reads as zeros");
    fs::OpenOptions::new()
        .write(true)
        .open(&grow)
        .unwrap()
        .set_len(20000)
        .unwrap();
    assert_eq!(
        read_direct(&grow, 10008, 28),
        [0u8; 28],
        "EOF block tail zeroed at return"
    );
    assert_eq!(
        read_direct(&grow, 14000, 19),
        [0u8; 19],
        "blocks past EOF read as zeros"
    );

    // Appends: a copy each, the size committed at fsync.
    let log = s.path("log");
    fs::write(&log, b"").unwrap();
    let lf = client.open(&log, true).unwrap();
    let rec = pattern(3, 100);
    let n = 30_000u64; // 3 MB: crosses an append chunk
    for i in 0..n {
        assert_eq!(lf.append(&rec).unwrap(), i * 100);
    }
    assert_eq!(lf.size(), n * 100);
    lf.fsync().unwrap();
    assert_eq!(fs::metadata(&log).unwrap().len(), n * 100);
    let back = read_direct(&log, 0, (n * 100) as usize);
    assert!(
        back.chunks(100).all(|c| c == rec.as_slice()),
        "appended records read back"
    );
    lf.append(b"closed").unwrap();
    lf.close().unwrap();
    assert_eq!(
        fs::metadata(&log).unwrap().len(),
        n * 100 + 6,
        "close commits"
    );

    drop((f, sf, gf));
    // Leases go when their mappings do.
    s.wait_no_leases();
    let stat =
        String::from_utf8_lossy(&daxfs(&["stat", s.mnt.dir.to_str().unwrap()]).stdout).into_owned();
    let grants: u64 = stat
        .lines()
        .find_map(|l| l.trim().strip_prefix("dax_grants "))
        .expect("dax counters in daxfs stat")
        .parse()
        .unwrap();
    assert!(grants >= 8, "{stat}");
    drop(client);
    s.finish();
}

#[test]
fn fork_in_a_client() {
    if !can_mount() {
        return;
    }
    let s = setup("dax=always");
    let file = s.path("forked");
    fs::write(&file, pattern(4, 8192)).unwrap();
    let client = Client::connect(&file).unwrap();
    let f = client.open(&file, true).unwrap();
    let m = f.map(0, 8192, true).unwrap();
    let raw = m.pin().unwrap().as_ptr() as usize;
    // SAFETY: the child only calls into the library (whose pin checks the fork generation
    // before taking any lock) or touches memory, then _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = match m.pin() {
            Err(Error::Forked) => 0,
            _ => 1,
        };
        // SAFETY: leaving the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let mut st = 0;
    // SAFETY: waiting for our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "the child's pin must fail: {st:#x}"
    );
    // SAFETY: as above; the child touches the parent's window and must fault.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: deliberately reading an address the child does not have (DONTFORK).
        let v = unsafe { std::ptr::read_volatile(raw as *const u8) };
        // SAFETY: exit without destructors.
        unsafe { libc::_exit(v as i32 + 10) };
    }
    // SAFETY: waiting for our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
    assert!(
        libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSEGV,
        "a forked child must not reach the device mapping: {st:#x}"
    );
    // The parent's lease and mapping are intact.
    m.write_at(0, b"parent").unwrap();
    m.persist(0, 6).unwrap();
    assert_eq!(read_direct(&file, 0, 6), b"parent");
    assert_eq!(
        s.lease_count(),
        1,
        "the children returned nothing: {}",
        s.leases()
    );
    drop((m, f, client));
    s.wait_no_leases();
    s.finish();
}

#[test]
fn unlinked_while_leased_lives_until_returned() {
    if !can_mount() {
        return;
    }
    let s = setup("dax=always");
    let free = || nix_free_blocks(&s.mnt.dir);
    let before = free();
    let file = s.path("doomed");
    fs::write(&file, b"").unwrap();
    let client = Client::connect(&file).unwrap();
    let f = client.open(&file, true).unwrap();
    let m = f.map(0, 8 << 20, true).unwrap(); // allocates 8 MiB
    assert!(free() + 2000 < before, "the write grant allocated");
    fs::remove_file(&file).unwrap();
    drop(f); // the descriptor closes too: only the lease holds the inode now
    m.write_at(1 << 20, b"still mine").unwrap();
    let mut b = [0u8; 10];
    m.read_at(1 << 20, &mut b).unwrap();
    assert_eq!(&b, b"still mine");
    assert!(
        free() + 2000 < before,
        "blocks stay while the lease is held"
    );
    drop(m);
    let deadline = Instant::now() + Duration::from_secs(5);
    while free() + 16 < before {
        assert!(
            Instant::now() < deadline,
            "blocks of the unlinked file not freed after the return"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(client);
    s.finish();
}

fn nix_free_blocks(p: &Path) -> u64 {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: statvfs into a zeroed struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and output.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bfree
}

#[test]
fn block_removal_recalls_the_clients_lease() {
    // Truncate and punch over leased blocks recall the lease; the client library answers
    // at once when no pin is live, so the operation does not wait for lease_break_ms
    // (1000 ms by default: a revoke would take at least that long).
    if !can_mount() {
        return;
    }
    let s = setup("dax=always");
    let file = s.path("leased");
    fs::write(&file, pattern(6, 64 << 10)).unwrap();
    let client = Client::connect(&file).unwrap();
    let f = client.open(&file, true).unwrap();
    let m = f.map(32 << 10, 8192, true).unwrap();
    let w = fs::OpenOptions::new().write(true).open(&file).unwrap();
    let punch = |off: i64, len: i64| {
        // SAFETY: fallocate on our descriptor.
        let r = unsafe {
            libc::fallocate(
                w.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off,
                len,
            )
        };
        if r == 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap()
        }
    };
    let t = std::time::Instant::now();
    assert_eq!(punch(36 << 10, 4096), 0, "punch over a lease");
    let took = t.elapsed();
    assert!(
        took < std::time::Duration::from_millis(900),
        "punch waited {took:?}"
    );
    assert_eq!(punch(0, 8192), 0, "punch elsewhere works");
    let t = std::time::Instant::now();
    w.set_len(1000).unwrap();
    let took = t.elapsed();
    assert!(
        took < std::time::Duration::from_millis(900),
        "truncate waited {took:?}"
    );
    assert_eq!(fs::metadata(&file).unwrap().len(), 1000);
    drop(m);
    s.wait_no_leases();
    drop((w, f, client));
    s.finish();
}

#[test]
fn not_dax_files_fall_back() {
    if !can_mount() {
        return;
    }
    let s = setup("dax=inode");
    let file = s.path("plain");
    fs::write(&file, b"plain file").unwrap();
    let client = Client::connect(&file).unwrap();
    assert_eq!(client.mode(), Mode::Direct);
    let f = client.open(&file, true).unwrap();
    match f.mode() {
        Mode::Fallback { reason } => assert!(reason.contains("not a DAX file"), "{reason}"),
        Mode::Direct => panic!("a file without FS_XFLAG_DAX was mapped under dax=inode"),
    }
    let m = f.map(0, 4096, true).unwrap();
    m.write_at(0, b"PLAIN").unwrap();
    drop((m, f));
    assert_eq!(fs::read(&file).unwrap(), b"PLAIN file");
    drop(client);
    s.finish();
}

#[test]
fn unprivileged_client_gets_the_fallback_and_still_works() {
    if !can_mount() {
        return;
    }
    let s = setup("dax=always");
    let file = s.path("shared");
    fs::write(&file, b"root").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
    let exe = std::env::current_exe().unwrap();
    // The child re-executes this binary as nobody: it must be reachable.
    let mut reachable = true;
    for a in exe.ancestors().skip(1) {
        if fs::metadata(a).is_ok_and(|m| m.mode() & 0o001 == 0) {
            reachable = false;
        }
    }
    if !reachable {
        eprintln!("skipping: {} is not reachable by nobody", exe.display());
        s.finish();
        return;
    }
    let out = child("fallback", &[file.to_str().unwrap()])
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("CHILD OK"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("could not open the backing device"),
        "the reason is given: {text}"
    );
    let out = child("many_conns", &[s.mnt.dir.to_str().unwrap()])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ANSWERED 32"),
        "one user gets 32 connections: {text}"
    );
    let got = fs::read(&file).unwrap();
    assert_eq!(&got[..4], b"root");
    assert_eq!(&got[4096..4096 + 16], b"from nobody+tail");
    assert_eq!(got.len(), 4096 + 16);
    s.finish();
}

/// A raw connection to the control socket, past the HELLO.
fn raw(mnt: &Path, hello: bool) -> OwnedFd {
    let st = fs::metadata(mnt).unwrap();
    let path = proto::socket_dir(true).join(proto::socket_name(st.dev()));
    let sock = sys::connect(&path).unwrap();
    if hello {
        sys::send(
            sock.as_fd(),
            &Msg::Hello {
                client_version: proto::VERSION,
            }
            .encode(1),
            &[],
            false,
        )
        .unwrap();
        let mut b = vec![0u8; proto::MSG_MAX + 1];
        let r = sys::recv(sock.as_fd(), &mut b).unwrap().unwrap();
        assert!(matches!(
            proto::decode(&b[..r.len]),
            Ok((1, Msg::HelloReply { .. }))
        ));
    }
    sock
}

/// The next reply, or None once the daemon closed the connection.
fn reply(sock: &OwnedFd) -> Option<Msg> {
    let mut b = vec![0u8; proto::MSG_MAX + 1];
    let mut p = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    assert!(
        unsafe { libc::poll(&mut p, 1, 5000) } == 1,
        "the daemon neither replied nor closed"
    );
    match sys::recv(sock.as_fd(), &mut b) {
        Ok(Some(r)) => Some(proto::decode(&b[..r.len]).unwrap().1),
        _ => None,
    }
}

fn closed(sock: &OwnedFd) -> bool {
    loop {
        match reply(sock) {
            None => return true,
            Some(Msg::Error { .. }) => continue, // the reason, sent before closing
            Some(m) => panic!("expected the connection to close, got {m:?}"),
        }
    }
}

#[test]
fn hostile_clients_do_not_hurt_the_daemon_or_others() {
    if !can_mount() {
        return;
    }
    let s = setup("dax=always");
    let file = s.path("f");
    fs::write(&file, pattern(5, 8192)).unwrap();
    // A well-behaved client holding a write mapping through all of it.
    let good = Client::connect(&file).unwrap();
    let gf = good.open(&file, true).unwrap();
    let gm = gf.map(0, 8192, true).unwrap();
    gm.write_at(0, b"good").unwrap();

    let mnt = s.mnt.dir.clone();
    // Garbage, before and after HELLO.
    let c = raw(&mnt, false);
    sys::send(c.as_fd(), b"not a daxfs message at all", &[], false).unwrap();
    assert!(closed(&c), "garbage closes the connection");
    let c = raw(&mnt, true);
    let mut bad = Msg::Return { lease: 1 }.encode(7);
    bad[12] = 200; // length mismatch
    sys::send(c.as_fd(), &bad, &[], false).unwrap();
    assert!(closed(&c));
    // Silence: no HELLO within the daemon's timeout closes the connection.
    let c = raw(&mnt, false);
    let t0 = Instant::now();
    assert!(closed(&c), "a silent connection is closed");
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "closed only after the HELLO timeout"
    );
    // A request before HELLO.
    let c = raw(&mnt, false);
    sys::send(c.as_fd(), &Msg::List { after: 0 }.encode(2), &[], false).unwrap();
    assert!(closed(&c));
    // Oversized datagram.
    let c = raw(&mnt, true);
    let big = vec![0u8; proto::MSG_MAX + 1000];
    // SAFETY: plain send of our buffer.
    unsafe { libc::send(c.as_raw_fd(), big.as_ptr() as *const _, big.len(), 0) };
    assert!(closed(&c), "oversized closes");
    // GRANT without its descriptor, and with a descriptor of another filesystem.
    let c = raw(&mnt, true);
    sys::send(
        c.as_fd(),
        &Msg::Grant {
            off: 0,
            len: 4096,
            write: false,
        }
        .encode(2),
        &[],
        false,
    )
    .unwrap();
    assert!(closed(&c), "a grant without proof of open closes");
    let c = raw(&mnt, true);
    let other = fs::File::open("/proc/self/exe").unwrap();
    sys::send(
        c.as_fd(),
        &Msg::Grant {
            off: 0,
            len: 4096,
            write: false,
        }
        .encode(2),
        &[other.as_fd()],
        false,
    )
    .unwrap();
    assert!(closed(&c), "a descriptor of another filesystem closes");
    // Descriptors with a message that takes none.
    let c = raw(&mnt, true);
    sys::send(
        c.as_fd(),
        &Msg::List { after: 0 }.encode(2),
        &[other.as_fd()],
        false,
    )
    .unwrap();
    assert!(closed(&c));
    // A write lease asked with a read-only descriptor: refused, connection kept.
    let c = raw(&mnt, true);
    let ro = fs::File::open(&file).unwrap();
    sys::send(
        c.as_fd(),
        &Msg::Grant {
            off: 0,
            len: 4096,
            write: true,
        }
        .encode(2),
        &[ro.as_fd()],
        false,
    )
    .unwrap();
    match reply(&c) {
        Some(Msg::Error { errno, text }) => {
            assert!(errno == libc::EBADF && text.contains("read-only"), "{text}")
        }
        m => panic!("{m:?}"),
    }
    // Returning someone else's lease or a made-up one does nothing.
    for lease in 0..50 {
        sys::send(c.as_fd(), &Msg::Return { lease }.encode(3), &[], false).unwrap();
    }
    sys::send(
        c.as_fd(),
        &Msg::CommitSize {
            lease: 1,
            size: 1 << 30,
        }
        .encode(4),
        &[],
        false,
    )
    .unwrap();
    assert!(
        matches!(reply(&c), Some(Msg::Error { .. })),
        "commit under a lease it does not hold"
    );
    // A flood of grants: the per-client bound refuses, the daemon stays up.
    let fl = s.path("flood");
    fs::write(&fl, pattern(2, 4096)).unwrap();
    let rf = fs::File::open(&fl).unwrap();
    let (mut ok, mut full) = (0, 0);
    for i in 0..1100u32 {
        sys::send(
            c.as_fd(),
            &Msg::Grant {
                off: 0,
                len: 4096,
                write: false,
            }
            .encode(10 + i),
            &[rf.as_fd()],
            false,
        )
        .unwrap();
        match reply(&c) {
            Some(Msg::GrantReply { .. }) => ok += 1,
            Some(Msg::Error { errno, .. }) if errno == libc::ENOSPC => full += 1,
            m => panic!("{m:?}"),
        }
    }
    assert_eq!((ok, full), (1024, 1100 - 1024));
    assert!(
        s.lease_count() > 1024,
        "the flood's leases and the good client's"
    );
    drop(c); // closing returns them all
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.lease_count() != 1 {
        assert!(
            Instant::now() < deadline,
            "flood leases not returned: {}",
            s.lease_count()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The good client never noticed.
    gm.write_at(4, b" still works").unwrap();
    gm.persist(0, 16).unwrap();
    assert_eq!(read_direct(&file, 0, 16), b"good still works");
    let other_client = Client::connect(&file).unwrap();
    assert_eq!(other_client.mode(), Mode::Direct);
    drop((gm, gf, good, other_client, ro, rf, other));
    s.finish();
}

#[test]
fn killed_clients_leave_no_leases() {
    if !can_mount() {
        return;
    }
    let s = setup("dax=always");
    let file = s.path("victim");
    fs::write(&file, b"before").unwrap();
    // A library client with write leases and uncommitted appends, SIGKILLed.
    let mut kid = child("hold_and_die", &[file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = std::io::BufReader::new(kid.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !line.contains("HOLDING") {
        line.clear();
        use std::io::BufRead;
        if out.read_line(&mut line).unwrap() == 0 || Instant::now() > deadline {
            let _ = kid.kill();
            panic!("child did not take its leases");
        }
    }
    // And a `daxfs layout` holder.
    let mut holder = Command::new(BIN)
        .args([
            "layout",
            file.to_str().unwrap(),
            "--range",
            "8M:1M",
            "--write",
            "--hold",
            "60",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.lease_count() < 3 {
        assert!(Instant::now() < deadline, "leases: {}", s.leases());
        std::thread::sleep(Duration::from_millis(20));
    }
    let list = s.leases();
    assert!(
        list.contains(&kid.id().to_string()) && list.contains("write"),
        "{list}"
    );
    kid.kill().unwrap();
    holder.kill().unwrap();
    let _ = kid.wait();
    let _ = holder.wait();
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.lease_count() != 0 {
        assert!(
            Instant::now() < deadline,
            "leases of dead processes: {}",
            s.leases()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Nothing was committed: the size is what it was; the data stored under the old size
    // may or may not be there (never persisted), but nothing beyond it shows.
    assert_eq!(fs::metadata(&file).unwrap().len(), 6);
    s.finish();
}

#[test]
fn c_program_over_libdaxfs() {
    if !can_mount() {
        return;
    }
    let cc = ["cc", "gcc", "clang"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(cc) = cc else {
        eprintln!("skipping: no C compiler");
        return;
    };
    // target/<profile>/deps/this-test -> target/<profile>/libdaxfs_client.so
    let exe = std::env::current_exe().unwrap();
    let libdir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    if !libdir.join("libdaxfs_client.so").exists() {
        eprintln!(
            "skipping: {} has no libdaxfs_client.so (build the workspace)",
            libdir.display()
        );
        return;
    }
    let s = setup("dax=always");
    let file = s.path("c-file");
    fs::write(&file, b"").unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("client/examples/c/append.c");
    let bin = s._t.path().join("append");
    let out = Command::new(cc)
        .arg(&src)
        .arg(format!(
            "-I{}",
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("client/include")
                .display()
        ))
        .arg(format!("-L{}", libdir.display()))
        .arg("-ldaxfs_client")
        .arg(format!("-Wl,-rpath,{}", libdir.display()))
        .arg("-Wall")
        .arg("-Werror")
        .arg("-o")
        .arg(&bin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&bin).arg(&file).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("direct 1"), "{text}");
    let mut want: Vec<u8> = (0..1000)
        .flat_map(|i: u32| format!("record {i:04}\n").into_bytes())
        .collect();
    want[..6].copy_from_slice(b"RECORD");
    assert_eq!(fs::metadata(&file).unwrap().len(), want.len() as u64);
    assert_eq!(
        read_direct(&file, 0, want.len()),
        want,
        "appends, then a store through a pin"
    );
    s.finish();
}
