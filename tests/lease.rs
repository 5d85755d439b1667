//! Layout leases in the core, without a mount (issue 9): grants through the one fault path,
//! breaking layouts before truncate and punch with a client that answers its recalls and
//! one that never does (revoke, fence, quarantine: the blocks are not reused until the
//! client is gone), unlink while leased, and reclaim passing leased inodes without waiting.
//! Every test ends with `daxfs check` clean.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use daxfs::check;
use daxfs::dax::{ClientId, LeaseId, LeaseState, RecallSink};
use daxfs::fs::{CacheInvalidator, Cred, DaxMode, Fs, FsOptions, SetAttr};
use daxfs::mkfs::{self, MkfsOptions};
use daxfs::pmem::device::Device;

const BS: u64 = 4096;
const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;

fn root() -> Cred {
    Cred {
        uid: 0,
        gid: 0,
        pid: 1,
        groups: vec![],
        cap_linux_immutable: None,
    }
}

fn opts(break_ms: u64) -> FsOptions {
    FsOptions {
        dax: DaxMode::Always,
        lease_break_ms: break_ms,
        ..Default::default()
    }
}

fn fresh(size: u64, o: &FsOptions) -> (Arc<Device>, Arc<Fs>) {
    let dev = Arc::new(Device::memfd(size).unwrap());
    mkfs::mkfs(&dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev.clone(), o).unwrap();
    (dev, fs)
}

fn assert_clean(dev: &Device) {
    let r = check::check(dev).unwrap();
    assert!(
        r.problems.is_empty(),
        "check found problems:\n{}",
        r.problems.join("\n")
    );
}

fn finish(dev: &Arc<Device>, fs: Arc<Fs>) {
    fs.unmount().unwrap();
    drop(fs);
    assert_clean(dev);
}

fn create(fs: &Fs, name: &str) -> u64 {
    fs.mknod(
        fs.root_ino(),
        name.as_bytes(),
        libc::S_IFREG | 0o644,
        0,
        &root(),
    )
    .unwrap()
    .ino
}

fn truncate(fs: &Fs, ino: u64, size: u64) -> daxfs::error::Result<()> {
    let set = SetAttr {
        size: Some(size),
        ..Default::default()
    };
    fs.setattr(ino, &set, &root()).map(|_| ())
}

fn free_blocks(fs: &Fs) -> u64 {
    fs.statfs().bfree
}

fn stat(fs: &Fs, name: &str) -> u64 {
    let text = fs.stats();
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} in stats:\n{text}"));
    line.split_whitespace().last().unwrap().parse().unwrap()
}

/// Device block ranges (first, count) of a grant.
fn dev_blocks(g: &daxfs::dax::Grant) -> Vec<(u64, u64)> {
    g.ranges
        .iter()
        .filter_map(|m| m.dev_off.map(|d| (d / BS, m.len / BS)))
        .collect()
}

fn overlap(a: &[(u64, u64)], b: &[(u64, u64)]) -> bool {
    a.iter()
        .any(|x| b.iter().any(|y| x.0 < y.0 + y.1 && y.0 < x.0 + x.1))
}

/// A client that answers every recall at once, from another thread (a sink must not
/// block: the filesystem calls it holding the file's IOLOCK).
struct Answering {
    tx: Mutex<mpsc::Sender<(ClientId, LeaseId)>>,
    recalls: AtomicU64,
}

impl Answering {
    fn install(fs: &Arc<Fs>) -> Arc<Answering> {
        let (tx, rx) = mpsc::channel::<(ClientId, LeaseId)>();
        let weak: Weak<Fs> = Arc::downgrade(fs);
        std::thread::spawn(move || {
            for (client, lease) in rx {
                if let Some(fs) = weak.upgrade() {
                    fs.layout_return(client, lease).unwrap();
                }
            }
        });
        let s = Arc::new(Answering {
            tx: Mutex::new(tx),
            recalls: AtomicU64::new(0),
        });
        fs.set_recall_sink(Some(s.clone()));
        s
    }
}

impl RecallSink for Answering {
    fn recall(&self, client: ClientId, lease: LeaseId, _ino: u64, _off: u64, _len: u64) {
        self.recalls.fetch_add(1, Ordering::Relaxed);
        self.tx.lock().unwrap().send((client, lease)).unwrap();
    }
    fn revoked(&self, _client: ClientId, lease: LeaseId, why: &str) {
        panic!("an answering client was revoked: lease {lease}: {why}");
    }
}

/// A client that never answers; it records what it was told.
#[derive(Default)]
struct Silent {
    recalled: Mutex<Vec<LeaseId>>,
    revoked: Mutex<Vec<(LeaseId, String)>>,
}

impl RecallSink for Silent {
    fn recall(&self, _client: ClientId, lease: LeaseId, _ino: u64, _off: u64, _len: u64) {
        self.recalled.lock().unwrap().push(lease);
    }
    fn revoked(&self, _client: ClientId, lease: LeaseId, why: &str) {
        self.revoked.lock().unwrap().push((lease, why.to_string()));
    }
}

#[derive(Default)]
struct Inval(Mutex<Vec<(u64, u64, u64)>>);
impl CacheInvalidator for Inval {
    fn invalidate(&self, ino: u64, off: u64, len: u64) {
        self.0.lock().unwrap().push((ino, off, len));
    }
}

#[test]
fn write_grant_maps_zeroed_blocks_and_stores_read_back() {
    let (dev, fs) = fresh(64 << 20, &opts(1000));
    // Old bytes on the device: a file full of 0xAA, then deleted.
    let old = create(&fs, "old");
    fs.write(old, 0, &vec![0xAA; 256 << 10], false).unwrap();
    fs.unlink(fs.root_ino(), b"old").unwrap();
    fs.forget(old, 1);
    let ino = create(&fs, "f");
    let c = fs.layout_client_new(1234, 0);
    let g = fs.layout_grant(ino, c, 0, 256 << 10, true).unwrap();
    assert_eq!((g.off, g.len, g.size), (0, 256 << 10, 0));
    assert!(
        g.ranges.iter().all(|m| m.dev_off.is_some()),
        "{:?}",
        g.ranges
    );
    // Every granted byte reads as zero: no other file's old bytes.
    for m in &g.ranges {
        let mut buf = vec![1u8; m.len as usize];
        dev.read(m.dev_off.unwrap(), &mut buf);
        assert!(buf.iter().all(|&b| b == 0), "stale bytes in a write grant");
    }
    // Store through the mapping, commit a size, read through the filesystem.
    let at = g.ranges[0].dev_off.unwrap();
    dev.write(at + 100, b"direct store");
    fs.layout_commit_size(c, g.lease, 112).unwrap();
    assert_eq!(fs.getattr(ino).unwrap().size, 112);
    let back = fs.read(ino, 100, 12, |b| b.to_vec()).unwrap();
    assert_eq!(back, b"direct store");
    // A write through the filesystem is seen by the next load.
    fs.write(ino, 0, b"via fs", false).unwrap();
    let mut buf = [0u8; 6];
    dev.read(at, &mut buf);
    assert_eq!(&buf, b"via fs");
    // A size commit outside the lease is refused.
    assert_eq!(
        fs.layout_commit_size(c, g.lease, 1 << 30)
            .unwrap_err()
            .errno,
        libc::EINVAL
    );
    assert_eq!(stat(&fs, "dax_grants"), 1);
    fs.layout_return(c, g.lease).unwrap();
    assert_eq!(
        fs.layout_return(c, g.lease).unwrap_err().errno,
        libc::ENOENT
    );
    assert!(fs.layout_list().is_empty());
    finish(&dev, fs);
}

#[test]
fn read_grant_reports_holes_and_dax_modes_decide() {
    let (dev, fs) = fresh(32 << 20, &opts(1000));
    let ino = create(&fs, "f");
    fs.write(ino, 2 * BS, &[7u8; 4096], false).unwrap();
    let c = fs.layout_client_new(1, 0);
    let g = fs.layout_grant(ino, c, 0, 4 * BS, false).unwrap();
    let holes: Vec<bool> = g.ranges.iter().map(|m| m.dev_off.is_none()).collect();
    assert_eq!(holes, vec![true, false, true]);
    fs.layout_client_gone(c);
    finish(&dev, fs);

    // dax=never: no file can be mapped; dax=inode: only files with FS_XFLAG_DAX.
    let (dev, fs) = fresh(
        32 << 20,
        &FsOptions {
            dax: DaxMode::Never,
            ..Default::default()
        },
    );
    let ino = create(&fs, "f");
    let c = fs.layout_client_new(1, 0);
    let e = fs.layout_grant(ino, c, 0, BS, false).unwrap_err();
    assert_eq!(e.errno, libc::EOPNOTSUPP);
    assert!(e.text.contains("not a DAX file"), "{}", e.text);
    finish(&dev, fs);
    let (dev, fs) = fresh(32 << 20, &FsOptions::default());
    let ino = create(&fs, "f");
    let c = fs.layout_client_new(1, 0);
    assert_eq!(
        fs.layout_grant(ino, c, 0, BS, false).unwrap_err().errno,
        libc::EOPNOTSUPP
    );
    fs.set_dax_flag(ino, true).unwrap();
    let g = fs.layout_grant(ino, c, 0, BS, true).unwrap();
    // Clearing the flag breaks the layouts (no sink: nobody answers, so it is revoked).
    fs.set_dax_flag(ino, false).unwrap();
    assert_eq!(fs.layout_list()[0].state, LeaseState::Revoked);
    fs.layout_return(c, g.lease).unwrap();
    finish(&dev, fs);
}

#[test]
fn truncate_recalls_and_a_cooperative_client_returns_in_time() {
    let (dev, fs) = fresh(64 << 20, &opts(5000));
    let sink = Answering::install(&fs);
    let inval = Arc::new(Inval::default());
    fs.set_cache_invalidator(Some(inval.clone()));
    let ino = create(&fs, "f");
    fs.write(ino, 0, &vec![3u8; 1 << 20], false).unwrap();
    let c = fs.layout_client_new(1, 0);
    let g = fs.layout_grant(ino, c, 0, 1 << 20, false).unwrap();
    let t = Instant::now();
    truncate(&fs, ino, 4096).unwrap();
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "a cooperative break took {took:?}"
    );
    assert_eq!(sink.recalls.load(Ordering::Relaxed), 1);
    assert!(fs.layout_list().is_empty(), "the lease was returned");
    assert_eq!(stat(&fs, "dax_recalls"), 1);
    assert_eq!(stat(&fs, "dax_revokes"), 0);
    assert_eq!(stat(&fs, "dax_break_waits"), 1);
    assert!(stat(&fs, "dax_longest_break_us") < 2_000_000);
    assert_eq!(fs.getattr(ino).unwrap().size, 4096);
    assert_eq!(
        inval.0.lock().unwrap().as_slice(),
        &[(ino, 4096, u64::MAX - 4096)]
    );
    // A truncate that touches no lease does not recall or invalidate.
    let g2 = fs.layout_grant(ino, c, 0, 4096, false).unwrap();
    truncate(&fs, ino, 8192).unwrap();
    assert_eq!(sink.recalls.load(Ordering::Relaxed), 1);
    assert_eq!(inval.0.lock().unwrap().len(), 1);
    fs.layout_return(c, g2.lease).unwrap();
    let _ = g;
    finish(&dev, fs);
}

#[test]
fn a_silent_client_is_revoked_fenced_and_its_blocks_quarantined_until_gone() {
    let (dev, fs) = fresh(64 << 20, &opts(150));
    let sink = Arc::new(Silent::default());
    fs.set_recall_sink(Some(sink.clone()));
    let ino = create(&fs, "f");
    fs.write(ino, 0, &vec![5u8; 1 << 20], false).unwrap();
    let silent = fs.layout_client_new(66, 1000);
    let g = fs.layout_grant(ino, silent, 0, 1 << 20, true).unwrap();
    let held = dev_blocks(&g);
    let nheld: u64 = held.iter().map(|r| r.1).sum();
    assert_eq!(nheld, 256);
    let free_before = free_blocks(&fs);
    let t = Instant::now();
    truncate(&fs, ino, 0).unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(150),
        "revoked before lease_break_ms: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "the break is bounded: {took:?}"
    );
    assert_eq!(sink.recalled.lock().unwrap().as_slice(), &[g.lease]);
    let revoked = sink.revoked.lock().unwrap().clone();
    assert_eq!(revoked.len(), 1);
    assert!(revoked[0].1.contains("revoked"), "{}", revoked[0].1);
    // Listed as revoked, with its quarantined blocks; counted in the stats.
    let l = fs.layout_list();
    assert_eq!(
        (l[0].state, l[0].quarantined_blocks),
        (LeaseState::Revoked, 256)
    );
    assert_eq!(stat(&fs, "dax_revokes"), 1);
    assert_eq!(stat(&fs, "dax_quarantined_blocks"), 256);
    // The blocks left the file but are not free.
    assert_eq!(fs.getattr(ino).unwrap().blocks, 0);
    assert_eq!(free_blocks(&fs), free_before);
    // The client is fenced, with a reason it can show.
    let e = fs.layout_grant(ino, silent, 0, 4096, false).unwrap_err();
    assert_eq!(e.errno, libc::EKEYREVOKED);
    assert!(e.text.contains(&format!("lease {}", g.lease)), "{}", e.text);
    assert_eq!(
        fs.layout_commit_size(silent, g.lease, 4096)
            .unwrap_err()
            .errno,
        libc::EKEYREVOKED
    );
    // Another file's new blocks never come from the quarantine.
    let other = create(&fs, "other");
    let c2 = fs.layout_client_new(2, 0);
    let g2 = fs.layout_grant(other, c2, 0, 8 << 20, true).unwrap();
    assert!(
        !overlap(&dev_blocks(&g2), &held),
        "quarantined blocks were reused"
    );
    fs.write(ino, 0, &vec![9u8; 1 << 20], false).unwrap();
    let g3 = fs.layout_grant(ino, c2, 0, 1 << 20, false).unwrap();
    assert!(
        !overlap(&dev_blocks(&g3), &held),
        "quarantined blocks were reused"
    );
    fs.layout_return(c2, g3.lease).unwrap();
    fs.layout_return(c2, g2.lease).unwrap();
    // Checked while the quarantine holds: its blocks are owned by the log (pending).
    assert_clean(&dev);
    // The client's process is gone: the blocks are free again.
    let free_mid = free_blocks(&fs);
    fs.layout_client_gone(silent);
    assert_eq!(free_blocks(&fs), free_mid + 256);
    assert_eq!(stat(&fs, "dax_quarantined_blocks"), 0);
    assert!(fs.layout_list().is_empty());
    finish(&dev, fs);
}

#[test]
fn returning_a_revoked_lease_lifts_quarantine_and_fence() {
    let (dev, fs) = fresh(32 << 20, &opts(50));
    fs.set_recall_sink(Some(Arc::new(Silent::default())));
    let ino = create(&fs, "f");
    fs.write(ino, 0, &vec![5u8; 64 << 10], false).unwrap();
    let c = fs.layout_client_new(66, 0);
    let g = fs.layout_grant(ino, c, 0, 64 << 10, false).unwrap();
    let free0 = free_blocks(&fs);
    fs.fallocate(ino, 0, 64 << 10, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)
        .unwrap();
    assert_eq!(free_blocks(&fs), free0, "punched blocks are quarantined");
    assert!(fs.layout_grant(ino, c, 0, 4096, false).is_err());
    fs.layout_return(c, g.lease).unwrap();
    assert_eq!(free_blocks(&fs), free0 + 16);
    let g = fs.layout_grant(ino, c, 0, 4096, false).unwrap();
    fs.layout_return(c, g.lease).unwrap();
    finish(&dev, fs);
}

#[test]
fn quarantine_survives_a_crash_as_pending_frees_that_recovery_finishes() {
    let (dev, fs) = fresh(32 << 20, &opts(20));
    fs.set_recall_sink(Some(Arc::new(Silent::default())));
    let ino = create(&fs, "f");
    fs.write(ino, 0, &vec![5u8; 64 << 10], false).unwrap();
    let c = fs.layout_client_new(66, 0);
    fs.layout_grant(ino, c, 0, 64 << 10, true).unwrap();
    truncate(&fs, ino, 0).unwrap();
    assert_eq!(stat(&fs, "dax_quarantined_blocks"), 16);
    // A crash: no unmount. Leases are gone after it; recovery frees the blocks.
    drop(fs);
    let fs = Fs::mount(dev.clone(), &opts(20)).unwrap();
    assert!(fs.layout_list().is_empty());
    assert_eq!(stat(&fs, "dax_quarantined_blocks"), 0);
    finish(&dev, fs);
}

#[test]
fn punch_over_a_lease_with_an_answering_client() {
    let (dev, fs) = fresh(32 << 20, &opts(5000));
    let sink = Answering::install(&fs);
    let ino = create(&fs, "f");
    fs.write(ino, 0, &vec![1u8; 64 << 10], false).unwrap();
    let c = fs.layout_client_new(1, 0);
    // One lease over the punched range, one beside it.
    let inside = fs.layout_grant(ino, c, 16 << 10, 16 << 10, false).unwrap();
    let beside = fs.layout_grant(ino, c, 48 << 10, 16 << 10, false).unwrap();
    fs.fallocate(
        ino,
        16 << 10,
        16 << 10,
        FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
    )
    .unwrap();
    assert_eq!(sink.recalls.load(Ordering::Relaxed), 1);
    let left: Vec<LeaseId> = fs.layout_list().iter().map(|l| l.id).collect();
    assert_eq!(left, vec![beside.lease]);
    let data = fs.read(ino, 0, 64 << 10, |b| b.to_vec()).unwrap();
    assert!(data[..16 << 10].iter().all(|&b| b == 1));
    assert!(data[16 << 10..32 << 10].iter().all(|&b| b == 0));
    assert!(data[32 << 10..].iter().all(|&b| b == 1));
    let _ = inside;
    fs.layout_client_gone(c);
    finish(&dev, fs);
}

#[test]
fn an_unlinked_file_lives_while_leased() {
    let (dev, fs) = fresh(32 << 20, &opts(1000));
    let ino = create(&fs, "f");
    fs.write(ino, 0, &vec![4u8; 64 << 10], false).unwrap();
    let c = fs.layout_client_new(1, 0);
    let g = fs.layout_grant(ino, c, 0, 64 << 10, false).unwrap();
    fs.unlink(fs.root_ino(), b"f").unwrap();
    let free0 = free_blocks(&fs);
    fs.forget(ino, 1); // the kernel's lookup reference
    // Still there, its blocks still its own, while the lease is held.
    assert_eq!(fs.getattr(ino).unwrap().nlink, 0);
    assert_eq!(fs.getattr(ino).unwrap().blocks, 16 * 8);
    assert_eq!(free_blocks(&fs), free0);
    let mut buf = vec![0u8; 4096];
    dev.read(g.ranges[0].dev_off.unwrap(), &mut buf);
    assert!(buf.iter().all(|&b| b == 4));
    // The return is the last reference: the file is freed.
    fs.layout_return(c, g.lease).unwrap();
    assert!(free_blocks(&fs) >= free0 + 16);
    assert_eq!(fs.getattr(ino).unwrap_err().errno(), libc::ESTALE);
    finish(&dev, fs);
}

#[test]
fn a_size_commit_answering_a_recall_is_not_blocked_by_the_breaker() {
    // The client commits its size before it returns the lease, while the truncate that
    // recalled it holds the file's IOLOCK: the commit must get through.
    struct CommitThenReturn(Mutex<mpsc::Sender<(ClientId, LeaseId)>>);
    impl RecallSink for CommitThenReturn {
        fn recall(&self, c: ClientId, l: LeaseId, _: u64, _: u64, _: u64) {
            self.0.lock().unwrap().send((c, l)).unwrap();
        }
        fn revoked(&self, _: ClientId, l: LeaseId, why: &str) {
            panic!("revoked {l}: {why}");
        }
    }
    let (dev, fs) = fresh(32 << 20, &opts(10_000));
    let (tx, rx) = mpsc::channel::<(ClientId, LeaseId)>();
    let weak = Arc::downgrade(&fs);
    let worker = std::thread::spawn(move || {
        let (c, l) = rx.recv().unwrap();
        let fs = weak.upgrade().unwrap();
        fs.layout_commit_size(c, l, 3 * BS).unwrap();
        fs.layout_return(c, l).unwrap();
    });
    fs.set_recall_sink(Some(Arc::new(CommitThenReturn(Mutex::new(tx)))));
    let ino = create(&fs, "f");
    let c = fs.layout_client_new(1, 0);
    let g = fs.layout_grant(ino, c, 0, 4 * BS, true).unwrap();
    dev.write(g.ranges[0].dev_off.unwrap(), &[8u8; 3 * 4096]);
    let t = Instant::now();
    // Punch the last block of the lease: recalls it.
    fs.fallocate(ino, 3 * BS, BS, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    worker.join().unwrap();
    assert_eq!(fs.getattr(ino).unwrap().size, 3 * BS);
    let data = fs.read(ino, 0, 3 * 4096, |b| b.to_vec()).unwrap();
    assert!(data.iter().all(|&b| b == 8));
    finish(&dev, fs);
}

#[test]
fn reclaim_passes_leased_inodes_without_waiting() {
    let (dev, fs) = fresh(64 << 20, &opts(3000));
    let sink = Arc::new(Silent::default());
    fs.set_recall_sink(Some(sink.clone()));
    let c = fs.layout_client_new(9, 0);
    // Leased inodes: one idle, one whose truncate is stuck in a break waiting for a
    // client that never answers (its IOLOCK is held exclusive all along).
    let idle = create(&fs, "idle");
    let stuck = create(&fs, "stuck");
    fs.write(stuck, 0, &[1u8; 8192], false).unwrap();
    fs.layout_grant(idle, c, 0, 4096, true).unwrap();
    fs.layout_grant(stuck, c, 0, 8192, false).unwrap();
    // Unreferenced inodes in the cache: created, forgotten, then loaded by getattr.
    let plain: Vec<u64> = (0..300).map(|i| create(&fs, &format!("p{i}"))).collect();
    for &i in &plain {
        fs.forget(i, 1);
    }
    fs.forget(idle, 1);
    fs.forget(stuck, 1);
    for &i in &plain {
        fs.getattr(i).unwrap();
    }
    let cached0 = stat(&fs, "cached_inodes");
    assert!(cached0 >= 302, "{cached0}");
    let fs2 = fs.clone();
    let breaker = std::thread::spawn(move || truncate(&fs2, stuck, 0));
    while sink.recalled.lock().unwrap().is_empty() {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Pressure: reclaim everything it can, while the break waits.
    let t = Instant::now();
    let r = fs.reclaim_inodes(usize::MAX);
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "reclaim waited: {took:?}"
    );
    assert_eq!(r.evicted, 300, "{r:?}");
    // The leased inodes stayed, and their leases are untouched by reclaim.
    let states: Vec<LeaseState> = fs.layout_list().iter().map(|l| l.state).collect();
    assert_eq!(states, vec![LeaseState::Granted, LeaseState::Recalled]);
    assert_eq!(stat(&fs, "cached_inodes"), cached0 - 300);
    assert!(
        !breaker.is_finished(),
        "the break was still waiting during reclaim"
    );
    breaker.join().unwrap().unwrap();
    fs.layout_client_gone(c);
    finish(&dev, fs);
}

/// A FUSE write (or another client's write grant) that fills a hole under a read lease
/// recalls that lease: the client mapped the hole as zeros and would go on reading zeros.
/// Overwrites of written blocks and write leases are left alone; a client's own write grant
/// does not recall its own read lease; a silent reader is revoked, and the write goes on.
#[test]
fn filling_a_hole_under_a_read_lease_recalls_it() {
    let (dev, fs) = fresh(64 << 20, &opts(5000));
    let sink = Answering::install(&fs);
    let ino = create(&fs, "f");
    fs.write(ino, 0, &[1u8; 4096], false).unwrap(); // block 0 written, 1..4 holes
    let reader = fs.layout_client_new(1, 0);
    let g = fs.layout_grant(ino, reader, 0, 4 * BS, false).unwrap();
    assert!(
        g.ranges.iter().any(|m| m.dev_off.is_none()),
        "{:?}",
        g.ranges
    );
    // An overwrite of the written block changes no mapping: no recall.
    fs.write(ino, 10, b"over", false).unwrap();
    assert_eq!(sink.recalls.load(Ordering::Relaxed), 0);
    // A write into the hole at block 2: recalled, returned, then the write is done.
    fs.write(ino, 2 * BS, b"filled", false).unwrap();
    assert_eq!(sink.recalls.load(Ordering::Relaxed), 1);
    assert!(fs.layout_list().is_empty(), "the read lease was returned");
    assert_eq!(fs.read(ino, 2 * BS, 6, |b| b.to_vec()).unwrap(), b"filled");

    // Another client's write grant over a hole recalls the reader; a client's own write
    // grant does not recall its own read lease, and write leases are not recalled by writes.
    let g = fs.layout_grant(ino, reader, 0, 8 * BS, false).unwrap();
    let writer = fs.layout_client_new(2, 0);
    let w = fs.layout_grant(ino, writer, 4 * BS, BS, true).unwrap();
    assert_eq!(sink.recalls.load(Ordering::Relaxed), 2);
    let own = fs.layout_grant(ino, writer, 0, 8 * BS, false).unwrap();
    let w2 = fs.layout_grant(ino, writer, 6 * BS, BS, true).unwrap();
    assert_eq!(
        sink.recalls.load(Ordering::Relaxed),
        2,
        "own read lease recalled"
    );
    fs.write(ino, 7 * BS, b"hole", false).unwrap();
    assert_eq!(
        sink.recalls.load(Ordering::Relaxed),
        3,
        "the writer's read lease over the hole at block 7"
    );
    let live: Vec<_> = fs.layout_list().iter().map(|l| l.id).collect();
    assert_eq!(live.len(), 2, "both write leases stay");
    assert!(live.contains(&w.lease) && live.contains(&w2.lease));
    let _ = (g, own);
    fs.layout_client_gone(writer);
    fs.layout_client_gone(reader);
    finish(&dev, fs);

    // A silent reader: the write waits lease_break_ms, revokes, and goes on.
    let (dev, fs) = fresh(64 << 20, &opts(100));
    let silent = Arc::new(Silent::default());
    fs.set_recall_sink(Some(silent.clone()));
    let ino = create(&fs, "f");
    let c = fs.layout_client_new(1, 0);
    let g = fs.layout_grant(ino, c, 0, 4 * BS, false).unwrap();
    fs.write(ino, BS, b"late", false).unwrap();
    assert_eq!(silent.recalled.lock().unwrap().as_slice(), &[g.lease]);
    assert_eq!(silent.revoked.lock().unwrap().len(), 1);
    assert_eq!(fs.layout_list()[0].state, LeaseState::Revoked);
    assert_eq!(fs.read(ino, BS, 4, |b| b.to_vec()).unwrap(), b"late");
    fs.layout_client_gone(c);
    finish(&dev, fs);
}
