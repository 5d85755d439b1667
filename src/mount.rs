//! Mounting: `-o` option parsing, the daemon (returns once the mount is live), the mount(8)
//! helper conventions (fsname = SOURCE, remount handed to the kernel), and clean shutdown
//! on umount, SIGTERM and SIGINT.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;

use fuser::{Config, MountOption, SessionACL};

use crate::fs::{AtimeMode, DaxMode, Fs, FsOptions};
use crate::pmem::device::Device;

/// The longest `commit=` interval taken (ext4 takes any; an hour of work lost in a power
/// cut is more than anyone means to ask for).
const COMMIT_SECS_MAX: u64 = 3600;

/// Mount options, parsed from `-o a,b=c,...`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOpts {
    pub read_only: bool,
    pub atime: AtimeMode,
    pub dax: DaxMode,
    /// How long a layout recall waits before it revokes (None: the default).
    pub lease_break_ms: Option<u64>,
    pub fsname: Option<String>,
    pub subtype: Option<String>,
    pub allow_other: Option<bool>,
    pub allow_root: bool,
    pub default_permissions: bool,
    pub suid: Option<bool>,
    pub dev: Option<bool>,
    pub exec: Option<bool>,
    pub sync: bool,
    pub dirsync: bool,
    pub remount: bool,
    /// `mem=SIZE`: the memory budget of the in-core caches (None: the default, see
    /// `default_mem_budget`).
    pub mem: Option<u64>,
    /// Punch freed extents out of a sparse image file.
    pub discard: bool,
    /// `commit=SECONDS`: the interval of the timed log force on an image file (None or
    /// 0: the default, 5 s, as ext4's commit=).
    pub commit_secs: Option<u64>,
    /// fstab(5) nofail: a missing image is not an error.
    pub nofail: bool,
    /// Options mount(8) gave that the kernel handles on remount (ro/rw and the flags).
    pub kernel_remount: Vec<String>,
}

/// Options every FUSE filesystem takes or mount(8) passes along, accepted and ignored.
const IGNORED: &[&str] = &[
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "_netdev",
    "loop",
    "nodiratime",
    "diratime",
    "lazytime",
    "nolazytime",
    "async",
    "iversion",
    "noiversion",
    "owner",
    "group",
    "silent",
    "loud",
    "mand",
    "nomand",
    "nostrictatime",
];

/// The smallest `mem=` accepted: below this the budget is always exceeded by the root
/// directory and the tables alone.
pub const MEM_BUDGET_MIN: u64 = 1 << 20;

/// The default memory budget when `mem=` is not given: 1/64 of the device (room for the
/// in-core inodes of about an eighth of a device full of 4 KiB files, at ~500 bytes each),
/// at least 32 MiB, and at most 1/8 of the machine's memory (but never under 32 MiB).
pub fn default_mem_budget(device_bytes: u64, machine_bytes: u64) -> u64 {
    let floor = 32u64 << 20;
    (device_bytes / 64).clamp(floor, (machine_bytes / 8).max(floor))
}

/// The machine's physical memory in bytes (0 if unknown).
pub fn machine_memory() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages <= 0 || size <= 0 {
        0
    } else {
        pages as u64 * size as u64
    }
}

pub fn parse_options(s: &str) -> Result<MountOpts, String> {
    let mut o = MountOpts::default();
    for opt in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        let (key, val) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        match (key, val) {
            ("ro", None) => o.read_only = true,
            ("rw", None) => o.read_only = false,
            ("noatime", None) => o.atime = AtimeMode::Noatime,
            ("relatime", None) | ("atime", None) => o.atime = AtimeMode::Relatime,
            ("strictatime", None) => o.atime = AtimeMode::Strictatime,
            ("dax", None) => o.dax = DaxMode::Always,
            ("dax", Some("always")) => o.dax = DaxMode::Always,
            ("dax", Some("never")) => o.dax = DaxMode::Never,
            ("dax", Some("inode")) => o.dax = DaxMode::Inode,
            ("dax", Some(v)) => return Err(format!("dax={v}: expected always, never or inode")),
            ("lease_break_ms", Some(v)) => match v.parse::<u64>() {
                Ok(ms) if ms <= crate::fs::LEASE_BREAK_MS_MAX => o.lease_break_ms = Some(ms),
                _ => {
                    return Err(format!(
                        "lease_break_ms={v}: expected milliseconds, 0 to {}",
                        crate::fs::LEASE_BREAK_MS_MAX
                    ));
                }
            },
            ("fsname", Some(v)) => o.fsname = Some(v.to_string()),
            ("subtype", Some(v)) => o.subtype = Some(v.to_string()),
            ("allow_other", None) => o.allow_other = Some(true),
            ("allow_root", None) => o.allow_root = true,
            ("default_permissions", None) => o.default_permissions = true,
            ("suid", None) => o.suid = Some(true),
            ("nosuid", None) => o.suid = Some(false),
            ("dev", None) => o.dev = Some(true),
            ("nodev", None) => o.dev = Some(false),
            ("exec", None) => o.exec = Some(true),
            ("noexec", None) => o.exec = Some(false),
            ("sync", None) => o.sync = true,
            ("dirsync", None) => o.dirsync = true,
            ("remount", None) => o.remount = true,
            ("mem", Some(v)) => match crate::pmem::device::parse_size(v) {
                Some(n) if n >= MEM_BUDGET_MIN => o.mem = Some(n),
                _ => {
                    return Err(format!(
                        "mem={v}: expected a size of at least {}K (e.g. mem=64M)",
                        MEM_BUDGET_MIN >> 10
                    ));
                }
            },
            ("discard", None) => o.discard = true,
            ("nodiscard", None) => o.discard = false,
            ("commit", Some(v)) => match v.parse::<u64>() {
                Ok(n) if n <= COMMIT_SECS_MAX => o.commit_secs = Some(n),
                _ => {
                    return Err(format!(
                        "commit={v}: expected seconds between log forces, 0 (the default, \
                         5) to {COMMIT_SECS_MAX}"
                    ));
                }
            },
            ("nofail", None) => o.nofail = true,
            (k, _) if k.starts_with("x-") => {}
            (k, Some(_))
                if [
                    "context",
                    "fscontext",
                    "defcontext",
                    "rootcontext",
                    "uid",
                    "gid",
                    "user_id",
                    "group_id",
                    "max_read",
                    "blksize",
                    "rootmode",
                ]
                .contains(&k) => {}
            (k, None) if IGNORED.contains(&k) => {}
            _ => return Err(format!("unknown mount option \"{opt}\"")),
        }
        if matches!(
            key,
            "ro" | "rw"
                | "suid"
                | "nosuid"
                | "dev"
                | "nodev"
                | "exec"
                | "noexec"
                | "sync"
                | "async"
                | "dirsync"
                | "noatime"
                | "relatime"
                | "strictatime"
                | "nodiratime"
        ) {
            o.kernel_remount.push(opt.to_string());
        }
    }
    Ok(o)
}

impl MountOpts {
    pub fn fs_options(&self) -> FsOptions {
        FsOptions {
            read_only: self.read_only,
            atime: self.atime,
            dax: self.dax,
            mem_limit: self.mem,
            discard: self.discard,
            lease_break_ms: self
                .lease_break_ms
                .unwrap_or(crate::fs::LEASE_BREAK_MS_DEFAULT),
            sync_commits: self.sync || self.dirsync,
            force_interval_ms: match self.commit_secs {
                None | Some(0) => crate::log::force::FORCE_INTERVAL_DEFAULT_MS,
                Some(n) => n * 1000,
            },
        }
    }

    /// The fuser configuration: fsname = SOURCE (harnesses find mounts by it), type
    /// fuse.daxfs unless subtype= says otherwise; as root, a multi-user mount whose
    /// permission checks are the kernel's.
    pub fn fuser_config(&self, source: &str, root: bool) -> Config {
        let mut m = vec![
            MountOption::FSName(self.fsname.clone().unwrap_or_else(|| source.to_string())),
            MountOption::DefaultPermissions,
        ];
        // fuser's own mount(2) drops Subtype; the kernel takes it as a data option. An
        // empty `subtype=` means none: the type shows as plain `fuse` (the kernel refuses
        // an empty subtype with EINVAL).
        match self.subtype.as_deref().unwrap_or("daxfs") {
            "" => {}
            t => m.push(MountOption::CUSTOM(format!("subtype={t}"))),
        }
        m.push(if self.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        });
        let local_default = root; // a root mount behaves like a local filesystem
        m.push(if self.suid.unwrap_or(local_default) {
            MountOption::Suid
        } else {
            MountOption::NoSuid
        });
        m.push(if self.dev.unwrap_or(local_default) {
            MountOption::Dev
        } else {
            MountOption::NoDev
        });
        m.push(if self.exec.unwrap_or(true) {
            MountOption::Exec
        } else {
            MountOption::NoExec
        });
        if self.atime == AtimeMode::Noatime {
            m.push(MountOption::NoAtime);
        }
        if self.sync {
            m.push(MountOption::Sync);
        }
        if self.dirsync {
            m.push(MountOption::DirSync);
        }
        let acl = if self.allow_other.unwrap_or(root) {
            SessionACL::All
        } else if self.allow_root {
            SessionACL::RootAndOwner
        } else {
            SessionACL::Owner
        };
        let mut c = Config::default();
        c.mount_options = m;
        c.acl = acl;
        // One FUSE thread per core (at least two); DAXFS_THREADS overrides, for measuring.
        let cores = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(2);
        c.n_threads = Some(
            std::env::var("DAXFS_THREADS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(cores),
        );
        c.clone_fd = true;
        c
    }
}

/// The daemon's live counters of the daxfs mount at `mountpoint`, as "key value" lines
/// (read through the root's virtual attribute `trusted.daxfs.stats`).
pub fn live_stats(mountpoint: &str) -> Result<String, String> {
    let name = std::ffi::CString::new(crate::fs::STATS_XATTR).unwrap();
    let path =
        std::ffi::CString::new(mountpoint).map_err(|_| format!("{mountpoint}: not a path"))?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and a buffer of the given length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr() as *mut _,
            buf.len(),
        )
    };
    if n < 0 {
        return Err(format!(
            "{mountpoint}: no live counters ({}): not a daxfs mount?",
            std::io::Error::last_os_error()
        ));
    }
    Ok(String::from_utf8_lossy(&buf[..n as usize]).into_owned())
}

/// The value of `key` in `live_stats` text.
pub fn stat_value<'a>(stats: &'a str, key: &str) -> Option<&'a str> {
    stats.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(' '))
            .map(str::trim)
    })
}

/// What a remount may not change, checked against the live mount: the options mount(8)
/// passes are the mount's current ones merged with the new ones, so an option is refused
/// only when it differs from what the mount has. `entry` is the mount's line in the mount
/// table, `stats` the daemon's counters, `writable` whether its daemon opened the image
/// read-write.
pub fn check_remount(
    opts: &str,
    entry: &crate::pmem::imagelock::MountEntry,
    stats: &str,
    writable: bool,
) -> Result<(), String> {
    let mp = entry.mountpoint.display();
    let live = |what: &str, now: &str| {
        format!(
            "{what} cannot be changed on a live mount (it is {now} on {mp}); unmount and mount again with it"
        )
    };
    let atime = stat_value(stats, "atime").unwrap_or("relatime");
    // The per-mount flag mount(8) sees for each policy (the kernel shows strictatime as
    // relatime on a FUSE mount).
    let kernel_atime = if atime == "noatime" {
        "noatime"
    } else {
        "relatime"
    };
    let super_has = |o: &str| entry.super_opts.split(',').any(|x| x == o);
    for opt in opts.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        let (key, val) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        match (key, val) {
            ("rw", None) if !writable => {
                return Err(format!(
                    "rw: {mp} was mounted with -o ro and its daemon opened the image \
                     read-only; unmount it and mount it read-write"
                ));
            }
            ("noatime" | "relatime" | "strictatime" | "atime", None) => {
                let want = if key == "atime" { "relatime" } else { key };
                if want != atime && want != kernel_atime {
                    return Err(live(opt, atime));
                }
            }
            ("dax", v) => {
                let now = stat_value(stats, "dax").unwrap_or("inode");
                if v.unwrap_or("always") != now {
                    return Err(live(opt, &format!("dax={now}")));
                }
            }
            ("fsname", Some(v)) if v != entry.source => {
                return Err(live(opt, &format!("fsname={}", entry.source)));
            }
            ("subtype", Some(v)) => {
                let now = entry.fstype.strip_prefix("fuse.").unwrap_or("");
                if v != now {
                    return Err(live(opt, &format!("subtype={now}")));
                }
            }
            ("allow_other" | "default_permissions", None) if !super_has(key) => {
                return Err(live(opt, "not set"));
            }
            ("allow_root", None) => return Err(live(opt, "not set")),
            // ro/rw and the per-mount flags are the kernel's to change; FUSE's own
            // options (user_id=, group_id=, ...) come back from the mount table as they are.
            _ => {}
        }
    }
    Ok(())
}

/// `mount -o remount,...`: the kernel flips the superblock flags (ro/rw, nosuid, ...) of
/// the live mount; no second daemon starts. `mount -i` keeps mount(8) from calling this
/// helper again. What the kernel cannot change for us (dax=, the atime policy, fsname,
/// subtype, rw of an image opened read-only) is refused by name first. Returns once the
/// daemon has seen a ro/rw and a sync/dirsync change (its mount-table watcher,
/// `watch_read_only`): the kernel sends a FUSE daemon nothing on remount.
pub fn remount(mountpoint: &str, opts: &MountOpts, raw: &str) -> Result<(), String> {
    let canonical = std::fs::canonicalize(mountpoint).map_err(|e| format!("{mountpoint}: {e}"))?;
    let entry = crate::pmem::imagelock::fuse_mount_at(&canonical)
        .ok_or_else(|| format!("{mountpoint}: not a daxfs mount"))?;
    let stats = live_stats(mountpoint)?;
    let writable = stat_value(&stats, "source")
        .and_then(|img| crate::pmem::imagelock::mount_of_image(Path::new(img)))
        .is_none_or(|b| {
            !matches!(
                b,
                crate::pmem::imagelock::Busy::Mounted {
                    writable: false,
                    ..
                }
            )
        });
    check_remount(raw, &entry, &stats, writable)?;
    let mut list = vec!["remount".to_string()];
    list.extend(opts.kernel_remount.iter().cloned());
    // mount(8) hands a helper the whole option set, the mount's current options merged
    // with the new ones (the FUSE ones such as user_id= among them), and drops `async`
    // from it: `remount,async` arrives as a set without `sync`. `mount -i` merges the set
    // with the mount table again, which would keep `sync`; so a full set without `sync`
    // says `async` here. A bare `daxfs mount -o remount,ro` (no user_id=) changes only
    // what it names.
    let has = |o: &str| opts.kernel_remount.iter().any(|x| x == o);
    if raw.split(',').any(|o| o.starts_with("user_id=")) && !has("sync") && !has("async") {
        list.push("async".to_string());
    }
    let st = std::process::Command::new("mount")
        .args(["-i", "-o", &list.join(","), mountpoint])
        .status()
        .map_err(|e| format!("cannot run mount(8): {e}"))?;
    if !st.success() {
        return Err(format!("remount of {mountpoint} failed ({st})"));
    }
    let want = opts
        .kernel_remount
        .iter()
        .rev()
        .find_map(|o| match o.as_str() {
            "ro" => Some("true"),
            "rw" => Some("false"),
            _ => None,
        });
    // sync/dirsync as the kernel now has them (a remount sets or clears both): the daemon
    // forces every commit while either is set.
    let want_sync = crate::pmem::imagelock::fuse_mount_at(&canonical)
        .map(|e| {
            e.super_opts
                .split(',')
                .any(|o| o == "sync" || o == "dirsync")
        })
        .map(|b| if b { "true" } else { "false" });
    if want.is_some() || want_sync.is_some() {
        let start = std::time::Instant::now();
        loop {
            let s = live_stats(mountpoint)?;
            if want.is_none_or(|w| stat_value(&s, "read_only") == Some(w))
                && want_sync.is_none_or(|w| stat_value(&s, "sync_commits").is_none_or(|v| v == w))
            {
                break;
            }
            if start.elapsed() > std::time::Duration::from_secs(5) {
                return Err(format!(
                    "{mountpoint}: the kernel remounted it, but its daemon still says \
                     read_only {}, sync_commits {}",
                    stat_value(&s, "read_only").unwrap_or("?"),
                    stat_value(&s, "sync_commits").unwrap_or("?")
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    Ok(())
}

/// The daemon learns ro/rw changes of its mount from the mount table: the kernel does
/// `mount -o remount,ro` without telling a FUSE daemon, yet the daemon must stop writing
/// (atime, the unmount commit) and report its state. /proc/self/mountinfo signals POLLPRI
/// on every change of the mount table; the superblock's ro flag is in the super options of
/// our mount (device number `mdev`). Going read-only commits what is in memory first.
fn watch_read_only(fs: std::sync::Weak<Fs>, mdev: u64, source: String) {
    let name = source.clone();
    let spawned = std::thread::Builder::new()
        .name("daxfs-mounts".into())
        .spawn(move || {
            let Ok(f) = std::fs::File::open("/proc/self/mountinfo") else {
                return;
            };
            loop {
                let mut p = libc::pollfd {
                    fd: f.as_raw_fd(),
                    events: libc::POLLPRI,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let n = unsafe { libc::poll(&mut p, 1, 1000) };
                if n < 0 || fs.strong_count() == 0 {
                    return;
                }
                if n == 0 {
                    continue; // no change to the mount table
                }
                let Some(fs) = fs.upgrade() else { return };
                let Some(m) = crate::pmem::imagelock::mounts()
                    .into_iter()
                    .find(|m| m.dev == mdev)
                else {
                    continue; // unmounted: the session is ending
                };
                let super_has = |f: &str| m.super_opts.split(',').any(|o| o == f);
                // sync/dirsync: the superblock flags a remount changes (the mount's own
                // -o sync/dirsync set them at mount too: MountOpts::fuser_options), which
                // the kernel does not pass to a FUSE daemon either.
                let sync = super_has("sync") || super_has("dirsync");
                if sync != fs.sync_commits() {
                    match fs.set_sync_commits(sync) {
                        Ok(()) => log::info!(
                            "{source}: every commit {} (remount) on {}",
                            if sync { "forced" } else { "no longer forced" },
                            m.mountpoint.display()
                        ),
                        Err(e) => log::error!("{source}: remount sync/async: {e}"),
                    }
                }
                let ro = super_has("ro");
                if ro != fs.is_read_only() {
                    match fs.set_read_only(ro) {
                        Ok(()) => log::info!(
                            "{source}: remounted {} on {}",
                            if ro { "read-only" } else { "read-write" },
                            m.mountpoint.display()
                        ),
                        Err(e) => log::error!(
                            "{source}: remount {}: {e}",
                            if ro { "read-only" } else { "read-write" }
                        ),
                    }
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("{name}: no mount-table watcher ({e}): remount ro/rw goes unseen");
    }
}

/// Open SOURCE, mount the filesystem and the FUSE session, then serve until unmounted.
/// `ready` is called once the mount is live (Ok) or has failed (Err).
pub fn serve(
    source: &str,
    mountpoint: &str,
    opts: &MountOpts,
    ready: &mut dyn FnMut(Result<(), String>),
) -> Result<(), String> {
    let fail = |ready: &mut dyn FnMut(Result<(), String>), m: String| {
        ready(Err(m.clone()));
        Err(m)
    };
    if !Path::new(mountpoint).is_dir() {
        return fail(
            ready,
            format!("{mountpoint}: mount point is not a directory"),
        );
    }
    // Before mounting: once the FUSE mount is there, resolving its path would stat its root,
    // which waits for this daemon.
    let canonical = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.into());
    let memfd = source.starts_with("memfd:");
    // The daemon names its image by an absolute path (`daxfs stat`, `info MOUNTPOINT` and
    // the logs read it); the mount table shows SOURCE as given.
    let image = match std::fs::canonicalize(source) {
        Ok(p) if !memfd && Path::new(source).is_relative() => p.to_string_lossy().into_owned(),
        _ => source.to_string(),
    };
    let dev = match Device::open(&image, opts.read_only && !memfd) {
        Ok(d) => d,
        Err(e) => return fail(ready, e.to_string()),
    };
    // mkfs's messages name the device.
    if memfd && let Err(e) = crate::mkfs::mkfs(&dev, &crate::mkfs::MkfsOptions::default()) {
        return fail(ready, e.to_string());
    }
    let mut fs_opts = opts.fs_options();
    let budget = fs_opts
        .mem_limit
        .unwrap_or_else(|| default_mem_budget(dev.len(), machine_memory()));
    fs_opts.mem_limit = Some(budget);
    let fs = match Fs::mount(dev.clone(), &fs_opts) {
        Ok(fs) => fs,
        Err(e) => return fail(ready, format!("{source}: cannot mount: {e}")),
    };
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let config = opts.fuser_config(source, root);
    let notifier = std::sync::Arc::new(std::sync::OnceLock::new());
    let daxfuse = crate::fuse::DaxFuse::new(fs.clone(), notifier.clone());
    let mount_dev = daxfuse.mount_dev();
    let mut session = match fuser::Session::new(daxfuse, mountpoint, &config) {
        Ok(s) => s,
        Err(e) => {
            let _ = fs.unmount();
            return fail(ready, format!("{mountpoint}: cannot mount: {e}"));
        }
    };
    let _ = notifier.set(session.notifier());
    // Tell other opens of the image that a live mount serves it, and which one (see
    // src/pmem/imagelock.rs): they refuse at once instead of waiting as for an exiting daemon.
    let mdev = crate::pmem::imagelock::fuse_mount_at(&canonical).map_or(0, |m| m.dev);
    if mdev != 0 {
        let _ = mount_dev.set(mdev);
    }
    if !memfd
        && let Err(e) = crate::pmem::imagelock::start_serving(dev.file(), mdev, !dev.read_only())
    {
        log::warn!("{source}: cannot take the serving lock: {e}");
    }
    let unmounter = session.unmount_callable();
    // First: it blocks SIGTERM/SIGINT/SIGHUP in this thread, and threads started after it
    // inherit that mask.
    spawn_signal_thread(unmounter, mountpoint.to_string());
    if mdev != 0 {
        watch_read_only(std::sync::Arc::downgrade(&fs), mdev, image.clone());
    }
    // Before the mount is reported live, so a client that starts right after `daxfs mount`
    // returns finds the socket.
    let dax = start_dax_server(&fs, &image, mountpoint, notifier.clone());
    ready(Ok(()));
    let dax = match dax {
        Ok(s) => Some(s),
        Err(e) => {
            log::warn!("{mountpoint}: no direct access for clients: {e}");
            None
        }
    };
    log::info!(
        "{image}: mounted on {mountpoint} ({}{}, atime {}, dax={}); {}",
        if dev.read_only() { "ro" } else { "rw" },
        if memfd { ", volatile memfd" } else { "" },
        opts.atime.name(),
        opts.dax.name(),
        fs.persistence().describe()
    );
    let r = session.run();
    if let Err(e) = &r {
        log::error!("{mountpoint}: FUSE session ended: {e}");
    }
    // Clients' leases go before the filesystem does.
    drop(dax);
    // The mount is gone: a new mount of the image now waits for our commit below.
    crate::pmem::imagelock::end_serving(dev.file());
    if let Err(e) = fs.unmount() {
        log::error!(
            "{image}: unmount of {mountpoint} could not commit: {e}; what the log holds is \
             replayed at the next mount; run `daxfs check {image}`"
        );
        return Err(format!("{image}: unmount: {e}"));
    }
    if fs.is_shutdown() {
        log::warn!(
            "{image}: unmounted from {mountpoint} after a shutdown: nothing was committed \
             since; the image holds the last committed state (run `daxfs check {image}`)"
        );
    } else if fs.is_read_only() {
        log::info!("{image}: unmounted from {mountpoint} (read-only: nothing to commit)");
    } else {
        log::info!("{image}: unmounted from {mountpoint}, committed and marked clean");
    }
    drop(fs);
    Ok(())
}

/// The direct-access control socket (src/daxserver.rs); without it clients fall back to
/// pread/pwrite, so a failure is logged, not fatal.
fn start_dax_server(
    fs: &std::sync::Arc<Fs>,
    source: &str,
    mountpoint: &str,
    notifier: std::sync::Arc<std::sync::OnceLock<fuser::Notifier>>,
) -> Result<crate::daxserver::Server, String> {
    let cfg = crate::daxserver::ServerConfig {
        mountpoint: mountpoint.into(),
        source: source.to_string(),
        size_changed: Box::new(move |ino| {
            if let Some(n) = notifier.get() {
                let _ = n.inval_inode(fuser::INodeNo(ino), -1, 0);
            }
        }),
    };
    crate::daxserver::Server::start(fs.clone(), cfg)
}

/// SIGTERM/SIGINT unmount the filesystem, which ends the session loop; `serve` then
/// commits and marks the image clean.
fn spawn_signal_thread(mut unmounter: fuser::SessionUnmounter, mountpoint: String) {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    // Block in this thread before spawning; threads inherit the mask.
    let _ = set.thread_block();
    std::thread::Builder::new()
        .name("daxfs-signals".into())
        .spawn(move || {
            if let Ok(sig) = set.wait() {
                log::info!("{sig}: unmounting {mountpoint}");
                if let Err(e) = unmounter.unmount() {
                    log::error!(
                        "{mountpoint}: unmount on {sig} failed: {e}; is it busy? \
                         (`fuser -vm {mountpoint}`), or `umount -l {mountpoint}`"
                    );
                }
            }
        })
        .expect("spawn signal thread");
}

/// SOURCE is already served by a live daemon: show that filesystem at MOUNTPOINT too, as
/// mount(8) does for a device that is already mounted (a bind mount of the existing mount;
/// one daemon, one filesystem, so a second writer never exists). The per-mount flags asked
/// for (ro, nosuid, nodev, noexec, noatime) apply to the new mount; the filesystem's own
/// options (dax=, the atime policy, fsname, subtype) are the first mount's. A read-write
/// mount of a filesystem that is read-only is refused, as the kernel refuses it.
/// None: SOURCE is not mounted (or its mount is not in our mount table).
pub fn bind_existing(
    source: &str,
    mountpoint: &str,
    opts: &MountOpts,
) -> Option<Result<(), String>> {
    use crate::pmem::imagelock::{Busy, mounts};
    use nix::mount::MsFlags;
    if source.starts_with("memfd:") {
        return None;
    }
    let Busy::Mounted {
        mountpoint: Some(existing),
        ..
    } = crate::pmem::imagelock::mount_of_image(Path::new(source))?
    else {
        return None;
    };
    let entry = mounts()
        .into_iter()
        .rev()
        .find(|m| m.mountpoint == existing)?;
    let sb_ro = entry.super_opts.split(',').any(|o| o == "ro");
    if sb_ro && !opts.read_only {
        return Some(Err(format!(
            "{source} is mounted read-only on {}; mount it with -o ro here too, or remount              that mount read-write first",
            existing.display()
        )));
    }
    let mut flags = MsFlags::empty();
    for o in entry.mount_opts.split(',') {
        flags |= match o {
            "ro" => MsFlags::MS_RDONLY,
            "nosuid" => MsFlags::MS_NOSUID,
            "nodev" => MsFlags::MS_NODEV,
            "noexec" => MsFlags::MS_NOEXEC,
            "noatime" => MsFlags::MS_NOATIME,
            "nodiratime" => MsFlags::MS_NODIRATIME,
            "relatime" => MsFlags::MS_RELATIME,
            "strictatime" => MsFlags::MS_STRICTATIME,
            _ => MsFlags::empty(),
        };
    }
    let inherited = flags;
    let mut set = |on: Option<bool>, f: MsFlags| match on {
        Some(true) => flags |= f,
        Some(false) => flags &= !f,
        None => {}
    };
    set(opts.read_only.then_some(true), MsFlags::MS_RDONLY);
    set(opts.suid.map(|s| !s), MsFlags::MS_NOSUID);
    set(opts.dev.map(|d| !d), MsFlags::MS_NODEV);
    set(opts.exec.map(|e| !e), MsFlags::MS_NOEXEC);
    if opts.atime == AtimeMode::Noatime {
        flags = (flags - MsFlags::MS_RELATIME - MsFlags::MS_STRICTATIME) | MsFlags::MS_NOATIME;
    }
    let none: Option<&str> = None;
    if let Err(e) = nix::mount::mount(
        Some(existing.as_path()),
        mountpoint,
        none,
        MsFlags::MS_BIND,
        none,
    ) {
        return Some(Err(format!(
            "{source} is mounted on {}; cannot bind-mount it on {mountpoint}: {e}",
            existing.display()
        )));
    }
    if flags != inherited
        && let Err(e) = nix::mount::mount(
            none,
            mountpoint,
            none,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags,
            none,
        )
    {
        let _ = nix::mount::umount(mountpoint);
        return Some(Err(format!(
            "{mountpoint}: cannot set the mount flags of the bind mount of {}: {e}",
            existing.display()
        )));
    }
    Some(Ok(()))
}

/// Daemon mode: fork; the child serves, the parent waits until the mount is live and exits
/// 0, or prints why it failed and exits 1. An image that a live daemon already serves is
/// bind-mounted from its mount instead (`bind_existing`).
pub fn mount_daemon(source: &str, mountpoint: &str, opts: &MountOpts) -> i32 {
    match bind_existing(source, mountpoint, opts) {
        Some(Ok(())) => return 0,
        Some(Err(e)) => {
            eprintln!("daxfs: {e}");
            return 1;
        }
        None => {}
    }
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid 2-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        eprintln!("daxfs: pipe: {}", std::io::Error::last_os_error());
        return 1;
    }
    // SAFETY: we are single-threaded here (nothing has spawned threads yet).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        eprintln!("daxfs: fork: {}", std::io::Error::last_os_error());
        return 1;
    }
    if pid > 0 {
        // SAFETY: fds[1] is ours to close; fds[0] becomes the File.
        unsafe { libc::close(fds[1]) };
        let mut r = unsafe { std::fs::File::from_raw_fd(fds[0]) };
        let mut msg = String::new();
        let _ = r.read_to_string(&mut msg);
        return match msg.strip_prefix("ok") {
            Some(_) => {
                // Name the daemon's log file to a user at a terminal (scripts compare
                // output; syslog needs no naming).
                // SAFETY: isatty on a standard descriptor.
                if unsafe { libc::isatty(2) } == 1
                    && let Some(f) = crate::daemonlog::destination()
                    && !f.starts_with("syslog")
                {
                    eprintln!("daxfs: {mountpoint}: the daemon logs to {f}");
                }
                0
            }
            None if msg.is_empty() => {
                eprintln!("daxfs: the mount daemon exited before the mount was live");
                1
            }
            None => {
                eprintln!("daxfs: {}", msg.trim_start_matches("err:"));
                1
            }
        };
    }
    // Child.
    // SAFETY: closing our copy of the read end; setsid detaches from the terminal.
    unsafe {
        libc::close(fds[0]);
        libc::setsid();
    }
    let mut w = Some(unsafe { std::fs::File::from_raw_fd(fds[1]) });
    // Until the mount is live the parent reports failures; the child stays quiet.
    let level = log::max_level();
    log::set_max_level(log::LevelFilter::Off);
    let mut ready = |r: Result<(), String>| {
        log::set_max_level(level);
        if let Some(mut f) = w.take() {
            let _ = match &r {
                Ok(()) => f.write_all(b"ok"),
                Err(m) => f.write_all(format!("err:{m}").as_bytes()),
            };
        }
        if r.is_ok() {
            detach_stdio();
        }
    };
    // Failures before the mount is live were reported by the parent.
    if serve(source, mountpoint, opts, &mut ready).is_ok() {
        0
    } else {
        1
    }
}

/// Point stdin/stdout at /dev/null, and stderr at the daemon's log file if it has one
/// (src/daemonlog.rs), so that what reaches stderr (a panic) is kept.
fn detach_stdio() {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null");
    let log = crate::daemonlog::log_file();
    if let Ok(n) = null {
        // SAFETY: dup2 onto the standard descriptors.
        unsafe {
            libc::dup2(n.as_raw_fd(), 0);
            libc::dup2(n.as_raw_fd(), 1);
            match log {
                Some(l) => libc::dup2(l.as_raw_fd(), 2),
                None => libc::dup2(n.as_raw_fd(), 2),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_option_and_default_budget() {
        assert_eq!(parse_options("mem=64M").unwrap().mem, Some(64 << 20));
        assert_eq!(parse_options("noatime").unwrap().mem, None);
        assert!(parse_options("mem=12").is_err());
        assert!(parse_options("mem=lots").is_err());
        assert_eq!(
            parse_options("mem=2G").unwrap().fs_options().mem_limit,
            Some(2 << 30)
        );
        let (mib, gib) = (1u64 << 20, 1u64 << 30);
        assert_eq!(default_mem_budget(gib, 16 * gib), 32 * mib); // floor
        assert_eq!(default_mem_budget(64 * gib, 16 * gib), gib); // device/64
        assert_eq!(default_mem_budget(1024 * gib, 16 * gib), 2 * gib); // RAM/8
        assert_eq!(default_mem_budget(1024 * gib, 128 * mib), 32 * mib); // never under 32M
    }

    #[test]
    fn options() {
        let o = parse_options(
            "ro,noatime,dax=never,fsname=img,subtype=daxfs,allow_other,nosuid,x-foo=bar,defaults",
        )
        .unwrap();
        assert!(o.read_only);
        assert_eq!(o.atime, AtimeMode::Noatime);
        assert_eq!(o.dax, DaxMode::Never);
        assert_eq!(o.fsname.as_deref(), Some("img"));
        assert_eq!(o.suid, Some(false));
        assert!(!o.remount);
        let e = parse_options("rw,bogus").unwrap_err();
        assert_eq!(e, "unknown mount option \"bogus\"");
        assert!(parse_options("dax=sometimes").is_err());
        let f = |o: &str| parse_options(o).unwrap().fs_options();
        assert_eq!(f("commit=30").force_interval_ms, 30_000);
        assert_eq!(f("commit=0").force_interval_ms, 5000);
        assert_eq!(f("").force_interval_ms, 5000);
        assert!(!f("").sync_commits);
        assert!(f("sync").sync_commits && f("dirsync").sync_commits);
        assert!(parse_options("commit=soon").is_err());
        assert!(parse_options("commit=3601").is_err());
        assert_eq!(
            parse_options("lease_break_ms=250")
                .unwrap()
                .fs_options()
                .lease_break_ms,
            250
        );
        assert_eq!(
            parse_options("").unwrap().fs_options().lease_break_ms,
            crate::fs::LEASE_BREAK_MS_DEFAULT
        );
        assert!(parse_options("lease_break_ms=soon").is_err());
        assert!(parse_options("lease_break_ms=60001").is_err());
        let r = parse_options("remount,ro,nosuid").unwrap();
        assert!(r.remount);
        assert_eq!(r.kernel_remount, vec!["ro", "nosuid"]);
    }

    #[test]
    fn fuser_config_for_root_is_multi_user() {
        let o = parse_options("").unwrap();
        let c = o.fuser_config("/tmp/img", true);
        assert_eq!(c.acl, SessionACL::All);
        assert!(c.mount_options.contains(&MountOption::DefaultPermissions));
        assert!(
            c.mount_options
                .contains(&MountOption::FSName("/tmp/img".into()))
        );
        assert!(
            c.mount_options
                .contains(&MountOption::CUSTOM("subtype=daxfs".into()))
        );
        let c = o.fuser_config("/tmp/img", false);
        assert_eq!(c.acl, SessionACL::Owner);
    }

    /// `subtype=` with an empty value: no subtype option reaches the kernel (type `fuse`).
    #[test]
    fn empty_subtype_means_none() {
        let o = parse_options("subtype=").unwrap();
        let c = o.fuser_config("/tmp/img", true);
        assert!(
            !c.mount_options
                .iter()
                .any(|m| matches!(m, MountOption::CUSTOM(s) if s.starts_with("subtype"))),
            "{:?}",
            c.mount_options
        );
        let o = parse_options("subtype=pmem").unwrap();
        let c = o.fuser_config("/tmp/img", true);
        assert!(
            c.mount_options
                .contains(&MountOption::CUSTOM("subtype=pmem".into()))
        );
    }
}
