//! The memory budget, the reclaimer, its contexts and its lock checker (src/mem/, the inode
//! cache's shrinker in src/fs/icache.rs; DESIGN.md section 5). Every test that writes a
//! filesystem ends with `daxfs check` clean.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use daxfs::check;
use daxfs::fs::{Cred, Fs, FsOptions, Ino};
use daxfs::log::trans;
use daxfs::mem::lockcheck::{self, Class, TrackedMutex};
use daxfs::mem::{
    AllocContext, Cache, Charge, Mem, ScanControl, ScanResult, Shrinker, nofs_scope, noio_scope,
};
use daxfs::mkfs::{self, MkfsOptions};
use daxfs::pmem::device::Device;

fn root() -> Cred {
    Cred::default()
}

fn fresh(limit: Option<u64>) -> (Arc<Device>, Arc<Fs>) {
    let dev = Arc::new(Device::memfd(64 << 20).unwrap());
    mkfs::mkfs(&dev, &MkfsOptions::default()).unwrap();
    let opts = FsOptions {
        mem_limit: limit,
        ..Default::default()
    };
    let fs = Fs::mount(dev.clone(), &opts).unwrap();
    (dev, fs)
}

fn finish(dev: &Device, fs: Arc<Fs>) {
    fs.unmount().unwrap();
    drop(fs);
    let r = check::check(dev).unwrap();
    assert!(r.problems.is_empty(), "check:\n{}", r.problems.join("\n"));
}

/// Charged bytes apart from the hash table (whose charge follows its capacity).
fn charged_objects(fs: &Fs) -> u64 {
    let b = &fs.mem().budget;
    b.charged(Cache::Inodes) + b.charged(Cache::ExtentMaps) + b.charged(Cache::DirIndexes)
}

/// `n` empty files in a new directory `dir`; returns the directory and the files' numbers
/// (all lookup references the creates took are given back: the files are evicted).
fn files(fs: &Fs, dir: &str, n: usize) -> (Ino, Vec<Ino>) {
    let d = fs
        .mkdir(fs.root_ino(), dir.as_bytes(), 0o755, &root())
        .unwrap()
        .ino;
    let mut v = Vec::new();
    for i in 0..n {
        let a = fs
            .mknod(d, format!("f{i}").as_bytes(), 0o644, 0, &root())
            .unwrap();
        fs.forget(a.ino, 1);
        v.push(a.ino);
    }
    (d, v)
}

fn stat_value(fs: &Fs, key: &str) -> u64 {
    let s = fs.stats();
    let line = s
        .lines()
        .find(|l| l.starts_with(&format!("{key} ")))
        .unwrap_or_else(|| panic!("no {key} in stats:\n{s}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn charges_return_to_their_start() {
    let (dev, fs) = fresh(Some(1 << 30));
    let start = charged_objects(&fs);
    assert!(start > 0, "the root is charged");
    let (d, inos) = files(&fs, "d", 600);
    // Extents: a file with many (every other block written).
    let big = fs.mknod(d, b"big", 0o644, 0, &root()).unwrap().ino;
    for blk in (0..400u64).step_by(2) {
        fs.write(big, blk * 4096, &[7u8; 4096], false).unwrap();
    }
    let b = &fs.mem().budget;
    assert!(
        b.charged(Cache::ExtentMaps) >= 200 * 64,
        "{}",
        fs.mem_stats()
    );
    assert!(b.charged(Cache::DirIndexes) > 0, "{}", fs.mem_stats());
    for &i in &inos {
        fs.getattr(i).unwrap(); // loaded again, unreferenced
    }
    assert!(charged_objects(&fs) > start + 600 * 300);
    // Shrink the big file's map, then remove everything.
    fs.fallocate(big, 0, 400 * 4096, 0x01 | 0x02).unwrap();
    fs.forget(big, 1);
    for i in 0..600 {
        fs.unlink(d, format!("f{i}").as_bytes()).unwrap();
    }
    fs.unlink(d, b"big").unwrap();
    fs.rmdir(fs.root_ino(), b"d").unwrap();
    fs.forget(d, 1);
    // Unreferenced inodes still cached (loaded by getattr) go with a reclaim pass.
    fs.mem().reclaim(
        u64::MAX,
        AllocContext::Full,
        true,
        std::panic::Location::caller(),
    );
    assert_eq!(fs.cached_inodes(), 1, "{}", fs.stats());
    assert_eq!(charged_objects(&fs), start, "{}", fs.mem_stats());
    finish(&dev, fs);
}

#[test]
fn the_shrinker_keeps_a_cold_walk_inside_the_budget() {
    let limit = 160 << 10;
    // No background reclaimer (no limit at mount): the walk itself must stay inside.
    let (dev, fs) = fresh(None);
    fs.mem().budget.set_limit(limit);
    let (_, inos) = files(&fs, "d", 3000);
    let mut max_cached = 0;
    for &i in &inos {
        fs.getattr(i).unwrap();
        assert!(
            fs.mem().budget.used() <= limit,
            "over the budget in a walk of unreferenced inodes:\n{}",
            fs.mem_stats()
        );
        max_cached = max_cached.max(fs.cached_inodes());
    }
    let per_inode = fs.mem().budget.charged(Cache::Inodes) / fs.cached_inodes() as u64;
    assert!(
        max_cached as u64 <= limit / per_inode + 2,
        "{max_cached} cached"
    );
    assert!(stat_value(&fs, "reclaim_direct") > 0);
    assert!(
        stat_value(&fs, "reclaim_freed") >= 2000,
        "{}",
        fs.mem_stats()
    );
    assert_eq!(stat_value(&fs, "mem_budget_exceeded_by"), 0);
    finish(&dev, fs);
}

#[test]
fn referenced_inodes_go_over_the_budget_and_stat_says_so() {
    let limit = 160 << 10;
    let (dev, fs) = fresh(Some(limit));
    let d = fs.mkdir(fs.root_ino(), b"d", 0o755, &root()).unwrap().ino;
    let mut inos = Vec::new();
    for i in 0..2000 {
        // Every create keeps its lookup reference: nothing can be evicted, nothing fails.
        inos.push(
            fs.mknod(d, format!("f{i}").as_bytes(), 0o644, 0, &root())
                .unwrap()
                .ino,
        );
    }
    let over = stat_value(&fs, "mem_budget_exceeded_by");
    assert!(over > 0);
    assert!(fs.stats().contains("2001 referenced"), "{}", fs.mem_stats());
    assert!(stat_value(&fs, "reclaim_unmet") > 0);
    for &i in &inos {
        fs.forget(i, 1);
    }
    assert_eq!(
        stat_value(&fs, "mem_budget_exceeded_by"),
        0,
        "{}",
        fs.mem_stats()
    );
    assert!(stat_value(&fs, "mem_peak") > limit);
    finish(&dev, fs);
}

/// `n` files with deferred timestamps (an overwrite), unreferenced and cached.
fn dirty_files(fs: &Fs, dir: &str, n: usize) -> Vec<Ino> {
    let (_, inos) = files(fs, dir, n);
    for &i in &inos {
        fs.write(i, 0, &[1u8; 4096], false).unwrap(); // allocates: a transaction
        fs.write(i, 0, &[2u8; 4096], false).unwrap(); // overwrite: times in memory only
    }
    inos
}

#[test]
fn nofs_reclaim_never_enters_a_transaction_nor_blocks() {
    let (dev, fs) = fresh(None); // no background reclaimer: only the direct reclaim under test
    let inos = dirty_files(&fs, "d", 50);
    let cached = fs.cached_inodes();
    assert!(cached >= 50);
    lockcheck::set_enabled(true);
    let commits = trans::log_counters(fs.mp()).0;
    fs.mem().budget.set_limit(4096);
    {
        let _g = nofs_scope();
        fs.mem().allocating(1 << 20, AllocContext::Full);
    }
    assert_eq!(
        trans::log_counters(fs.mp()).0,
        commits,
        "NOFS reclaim committed"
    );
    assert_eq!(fs.cached_inodes(), cached, "dirty inodes evicted in NOFS");
    assert!(stat_value(&fs, "reclaim_skipped_context") >= 50);
    assert_eq!(stat_value(&fs, "reclaim_written_back"), 0);
    assert_eq!(stat_value(&fs, "reclaim_direct") - 1, 0);
    // Full context writes them back (transactions) and evicts them.
    fs.mem().allocating(1 << 20, AllocContext::Full);
    assert!(trans::log_counters(fs.mp()).0 > commits);
    assert!(
        stat_value(&fs, "reclaim_written_back") >= 50,
        "{}",
        fs.mem_stats()
    );
    assert!(fs.cached_inodes() < cached - 40);
    let r = lockcheck::take_reports();
    assert!(r.is_empty(), "{r:#?}");
    lockcheck::set_enabled(false);
    fs.mem().budget.set_limit(1 << 30);
    // The timestamps written back are the ones the overwrite set.
    for &i in &inos {
        assert_eq!(fs.read(i, 0, 4096, |b| b[0]).unwrap(), 2);
    }
    finish(&dev, fs);
}

#[test]
fn noio_reclaim_never_touches_the_device() {
    let (dev, fs) = fresh(None); // no background reclaimer: only the direct reclaim under test
    dirty_files(&fs, "dirty", 30);
    let (_, clean) = files(&fs, "clean", 200);
    for &i in &clean {
        fs.getattr(i).unwrap();
    }
    let cached = fs.cached_inodes();
    lockcheck::set_enabled(true);
    let (fences, flushed) = (
        dev.stats.fences.load(Relaxed),
        dev.stats.flushed_bytes.load(Relaxed),
    );
    fs.mem().budget.set_limit(4096);
    {
        let _g = noio_scope();
        fs.mem().allocating(1 << 20, AllocContext::Full);
    }
    let r = lockcheck::take_reports();
    assert!(r.is_empty(), "{r:#?}");
    assert_eq!(dev.stats.fences.load(Relaxed), fences);
    assert_eq!(dev.stats.flushed_bytes.load(Relaxed), flushed);
    // Clean inodes went; the dirty ones stayed.
    assert!(fs.cached_inodes() <= cached - 200 && fs.cached_inodes() >= 30);
    assert_eq!(stat_value(&fs, "reclaim_written_back"), 0);
    lockcheck::set_enabled(false);
    fs.mem().budget.set_limit(1 << 30);
    finish(&dev, fs);
}

/// A shrinker that does what `bad` says inside reclaim.
struct Planted {
    mem: Arc<Mem>,
    charge: Mutex<Option<Charge>>,
    lock: Arc<TrackedMutex<()>>,
    take_lock: AtomicBool,
    dev: Option<Arc<Device>>,
}

impl Shrinker for Planted {
    fn name(&self) -> &'static str {
        "planted"
    }
    fn cache(&self) -> Cache {
        Cache::Inodes
    }
    fn count(&self) -> u64 {
        1
    }
    fn scan(&self, _sc: &ScanControl) -> ScanResult {
        if self.take_lock.load(Relaxed) {
            let _g = self.lock.lock(); // the planted bug: a blocking lock inside reclaim
        }
        if let Some(d) = &self.dev {
            let mut b = [0u8; 8];
            d.read(0, &mut b); // the planted bug in NOIO: a device access
        }
        let _ = &self.mem;
        let freed = self.charge.lock().unwrap().take().is_some() as u64;
        ScanResult {
            scanned: 1,
            freed,
            ..Default::default()
        }
    }
}

fn planted(dev: Option<Arc<Device>>) -> (Arc<Mem>, Arc<Planted>) {
    let mem = Arc::new(Mem::new(1000));
    let mut c = Charge::new(mem.budget.clone());
    c.set(Cache::Inodes, 5000);
    let p = Arc::new(Planted {
        mem: mem.clone(),
        charge: Mutex::new(Some(c)),
        lock: Arc::new(TrackedMutex::new(Class::Named("planted"), ())),
        take_lock: AtomicBool::new(false),
        dev,
    });
    mem.register(Arc::downgrade(&p) as Weak<dyn Shrinker>);
    (mem, p)
}

#[test]
fn a_planted_inversion_is_reported_with_both_sites() {
    lockcheck::set_enabled(true);
    let (mem, p) = planted(None);
    // One thread takes the lock inside reclaim...
    p.take_lock.store(true, Relaxed);
    mem.allocating(1, AllocContext::Full);
    assert!(lockcheck::take_reports().is_empty());
    p.take_lock.store(false, Relaxed);
    // ...another holds it over an allocation that may reclaim: a deadlock waiting to happen.
    let m = p.lock.clone();
    let mem2 = mem.clone();
    let (held_line, entry_line) = std::thread::spawn(move || {
        let _g = m.lock();
        let held = line!() - 1;
        let mut c = Charge::new(mem2.budget.clone());
        c.set(Cache::Inodes, 5000);
        mem2.allocating(1, AllocContext::Full);
        let entry = line!() - 1;
        (held, entry)
    })
    .join()
    .unwrap();
    let r = lockcheck::take_reports();
    assert_eq!(r.len(), 1, "{r:#?}");
    let t = &r[0].text;
    assert_eq!(r[0].class, Some(Class::Named("planted")));
    assert!(t.contains(&format!("tests/mem.rs:{held_line}")), "{t}");
    assert!(t.contains(&format!("tests/mem.rs:{entry_line}")), "{t}");
    assert!(t.contains("tests/mem.rs:"), "{t}");
    // The site inside reclaim: the shrinker's lock call.
    let scan_line = t.rsplit("at ").next().unwrap();
    assert!(scan_line.starts_with("tests/mem.rs:"), "{t}");
    // The same lock taken blocking inside NOFS reclaim is reported at once.
    let (mem, p) = planted(None);
    p.take_lock.store(true, Relaxed);
    {
        let _g = nofs_scope();
        mem.allocating(1, AllocContext::Full);
    }
    let r = lockcheck::take_reports();
    assert!(
        r.iter().any(|r| r.text.contains("inside NoFs reclaim")),
        "{r:#?}"
    );
}

#[test]
fn a_device_access_in_noio_reclaim_is_reported() {
    lockcheck::set_enabled(true);
    let dev = Arc::new(Device::memfd(16 << 20).unwrap());
    let (mem, _p) = planted(Some(dev.clone()));
    {
        let _g = noio_scope();
        mem.allocating(1, AllocContext::Full);
    }
    let r = lockcheck::take_reports();
    assert!(
        r.iter().any(|r| r.text.contains("device accessed")),
        "{r:#?}"
    );
    // The same in NOFS is allowed.
    let (mem, _p) = planted(Some(dev));
    {
        let _g = nofs_scope();
        mem.allocating(1, AllocContext::Full);
    }
    assert!(lockcheck::take_reports().is_empty());
}

/// reference/000: a referenced directory's ILOCK held over an allocation (readdir, then
/// build something), and reclaim trylocking unreferenced inodes' ILOCKs. Lockdep, with one
/// ILOCK class, called it a deadlock; with the two classes it is none.
fn readdir_then_allocate(naive: bool) -> Vec<lockcheck::Report> {
    let (dev, fs) = fresh(None); // no background reclaimer: only the direct reclaim under test
    let (d, inos) = files(&fs, "d", 100);
    for &i in &inos {
        fs.getattr(i).unwrap();
    }
    lockcheck::set_enabled(true);
    lockcheck::set_naive_classes(naive);
    fs.mem().budget.set_limit(4096);
    let dir = fs.iget(d).unwrap();
    {
        let _held = dir.ilock_shared();
        let mut names = 0;
        fs.readdir(d, 0, &mut |_| {
            names += 1;
            false
        })
        .ok();
        fs.mem().allocating(4096, AllocContext::Full);
    }
    drop(dir);
    let freed = stat_value(&fs, "reclaim_freed");
    assert!(freed >= 90, "reclaim evicted {freed}");
    let r = lockcheck::take_reports();
    lockcheck::set_enabled(false);
    lockcheck::set_naive_classes(false);
    fs.mem().budget.set_limit(1 << 30);
    finish(&dev, fs);
    r
}

#[test]
fn readdir_then_allocate_is_no_inversion() {
    let r = readdir_then_allocate(false);
    assert!(r.is_empty(), "{r:#?}");
}

#[test]
fn readdir_then_allocate_with_one_ilock_class_is_the_lockdep_false_positive() {
    let r = readdir_then_allocate(true);
    assert_eq!(r.len(), 1, "{r:#?}");
    assert_eq!(r[0].class, Some(Class::Ilock));
    assert!(r[0].text.contains("tests/mem.rs:"), "{}", r[0].text);
    assert!(r[0].text.contains("src/fs/icache.rs:"), "{}", r[0].text);
}

/// A daxfs image stored in a file on daxfs: the file's mapping gets NoIo at setup, and
/// reclaim for allocations made for it runs in NoIo.
#[test]
fn an_image_file_gets_a_noio_mapping_mask() {
    let (dev, fs) = fresh(None); // no background reclaimer: only the direct reclaim under test
    let inner = Arc::new(Device::memfd(16 << 20).unwrap());
    mkfs::mkfs(&inner, &MkfsOptions::default()).unwrap();
    let mut head = vec![0u8; 64 << 10];
    inner.read(0, &mut head);
    let img = fs
        .mknod(fs.root_ino(), b"img", 0o644, 0, &root())
        .unwrap()
        .ino;
    let plain = fs
        .mknod(fs.root_ino(), b"plain", 0o644, 0, &root())
        .unwrap()
        .ino;
    fs.write(img, 0, &head, false).unwrap();
    fs.write(plain, 0, &vec![0x5a; 64 << 10], false).unwrap();
    // Set up afresh (the mask is fixed at setup): evict both, look them up again.
    fs.forget(img, 1);
    fs.forget(plain, 1);
    assert_eq!(fs.cached_inodes(), 1);
    fs.lookup(fs.root_ino(), b"img").unwrap();
    fs.lookup(fs.root_ino(), b"plain").unwrap();
    assert_eq!(fs.iget(img).unwrap().mapping_mask, AllocContext::NoIo);
    assert_eq!(fs.iget(plain).unwrap().mapping_mask, AllocContext::Full);
    // Past the budget (the root alone passes it), a write that allocates reclaims: in NoIo
    // for the image, in the writer's context (Full) for the plain file.
    fs.mem().budget.set_limit(512);
    let noio = || stat_value_paren(&fs, "noio");
    let direct = || stat_value(&fs, "reclaim_direct");
    assert_eq!(noio(), 0);
    let d0 = direct();
    fs.write(plain, 1 << 20, &[1u8; 4096], false).unwrap();
    assert_eq!((noio(), direct()), (0, d0 + 1), "{}", fs.mem_stats());
    fs.write(img, 1 << 20, &[1u8; 4096], false).unwrap();
    assert_eq!((noio(), direct()), (1, d0 + 2), "{}", fs.mem_stats());
    fs.mem().budget.set_limit(1 << 30);
    fs.forget(img, 1);
    fs.forget(plain, 1);
    finish(&dev, fs);
}

/// "reclaim_direct N (nofs A, noio B)": B for "noio", A for "nofs".
fn stat_value_paren(fs: &Fs, which: &str) -> u64 {
    let s = fs.stats();
    let line = s
        .lines()
        .find(|l| l.starts_with("reclaim_direct "))
        .unwrap();
    let at = line.find(&format!("{which} ")).unwrap() + which.len() + 1;
    line[at..]
        .trim_end_matches(')')
        .split([',', ')'])
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn the_background_reclaimer_writes_back_and_keeps_under_high() {
    let (dev, fs) = fresh(Some(1 << 30));
    let inos = dirty_files(&fs, "d", 100);
    let used = fs.mem().budget.used();
    // High is 7/8 of the limit: usage is over it, under the limit (no direct reclaim).
    fs.mem().budget.set_limit(used + used / 16);
    fs.mem().allocating(1, AllocContext::Full);
    assert_eq!(stat_value(&fs, "reclaim_direct"), 0);
    let t = Instant::now();
    while fs.mem().budget.used() > fs.mem().budget.high() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let b = &fs.mem().budget;
    assert!(b.used() <= b.low(), "{}", fs.mem_stats());
    assert!(stat_value(&fs, "reclaim_background") >= 1);
    assert!(
        stat_value(&fs, "reclaim_written_back") >= 1,
        "{}",
        fs.mem_stats()
    );
    fs.mem().budget.set_limit(1 << 30);
    for &i in &inos {
        assert_eq!(fs.read(i, 0, 1, |b| b[0]).unwrap(), 2);
    }
    finish(&dev, fs);
}

/// Eviction racing lookups, opens, getattrs, overwrites and forgets from several threads,
/// under a budget that keeps reclaim busy, with the background reclaimer running.
#[test]
fn eviction_races_lookups_and_opens() {
    let (dev, fs) = fresh(Some(1 << 30));
    let (d, inos) = files(&fs, "d", 300);
    for &i in &inos[..150] {
        fs.write(i, 0, &[3u8; 4096], false).unwrap();
    }
    lockcheck::set_enabled(true);
    fs.mem().budget.set_limit(48 << 10);
    let errors = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let fs = fs.clone();
            let inos = inos.clone();
            let errors = errors.clone();
            std::thread::spawn(move || {
                let mut x = t * 7919 + 1;
                for _ in 0..12000 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let k = (x >> 33) as usize % inos.len();
                    let ino = inos[k];
                    let name = format!("f{k}");
                    let ok = match (x >> 20) % 5 {
                        0 => fs.lookup(d, name.as_bytes()).map(|a| {
                            fs.forget(ino, 1);
                            a.ino == ino
                        }),
                        1 => fs.getattr(ino).map(|a| a.ino == ino),
                        2 => fs.open(ino, libc::O_RDONLY).map(|fh| {
                            let r = fs.read(ino, 0, 1, |b| b.to_vec());
                            fs.release(ino, fh);
                            r.is_ok()
                        }),
                        3 if k < 150 => fs.write(ino, 0, &[3u8; 16], false).map(|n| n == 16),
                        _ => fs.getattr(ino).map(|a| a.size <= 4096),
                    };
                    if !matches!(ok, Ok(true)) {
                        eprintln!("thread {t}: inode {ino}: {ok:?}");
                        errors.fetch_add(1, Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(errors.load(Relaxed), 0);
    let r = lockcheck::take_reports();
    assert!(r.is_empty(), "{r:#?}");
    lockcheck::set_enabled(false);
    assert!(stat_value(&fs, "reclaim_freed") > 100, "{}", fs.mem_stats());
    fs.mem().budget.set_limit(1 << 30);
    for &i in &inos[..150] {
        assert_eq!(
            fs.read(i, 0, 4096, |b| b.to_vec()).unwrap()[..16],
            [3u8; 16]
        );
    }
    finish(&dev, fs);
}
