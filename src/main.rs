//! The `daxfs` command: mkfs, mount (daemon, foreground, mount(8) helper), check, info,
//! stat, install-helper.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use daxfs::mount;
use daxfs::pmem::device::{Device, parse_size};

#[derive(Parser)]
#[command(
    name = "daxfs",
    version,
    about = "A persistent-memory filesystem in user space, mounted through FUSE"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

const MOUNT_HELP: &str = "\
Options (-o, comma separated):
  ro | rw                     read-only or read-write (default rw)
  noatime | relatime | strictatime
                              access-time updates (default relatime; kept in memory and
                              written with the next change, fsync, sync or unmount)
  dax=inode|always|never      which files are DAX: those with FS_XFLAG_DAX (default
                              inode; xfs_io -c \"chattr +x\"), all files, or none. DAX
                              files can be mapped by direct-access clients and are served
                              without the kernel page cache; others cannot be mapped
  lease_break_ms=N            how long a layout recall waits for a client before it
                              revokes the lease (default 1000, at most 60000)
  mem=SIZE                    memory budget of the in-core caches (inodes, extent maps,
                              directory indexes), e.g. mem=64M; default 1/64 of the
                              device, at least 32M, at most 1/8 of the machine's memory.
                              Past it the daemon reclaims unreferenced inodes; what the
                              kernel still holds stays, and `daxfs stat` says so
  fsname=NAME                 mount source shown by findmnt/df (default SOURCE)
  subtype=NAME                type shown as fuse.NAME (default daxfs; empty: plain fuse)
  allow_other | allow_root    who may use the mount (root mounts: allow_other)
  default_permissions         permission checks by the kernel (always on)
  suid|nosuid, dev|nodev, exec|noexec, sync, dirsync
                              as for any filesystem (root mounts default to suid,dev)
  discard | nodiscard         punch blocks freed by each commit out of the image file
                              (sparse images; default nodiscard; see also `daxfs trim`)
  remount                     with ro/rw etc.: change a live mount (handed to the kernel);
                              dax=, the atime policy, fsname, subtype are refused by name
  nofail                      a missing image is not an error (exit 0), as in fstab(5)
Generic options mount(8) passes along (defaults, auto, noauto, user, _netdev,
x-*, context=...) are accepted and ignored; anything else is refused by name.";

#[derive(Subcommand)]
enum Cmd {
    /// Create (or resize) IMAGE and format it.
    Mkfs {
        image: PathBuf,
        /// Size: bytes, or with K/M/G/T or KiB/MiB/GiB/TiB, decimals allowed (1.5G, 8GiB;
        /// at least 16M).
        #[arg(long, short)]
        size: String,
        /// Filesystem label (up to 32 bytes).
        #[arg(long, short = 'L')]
        label: Option<String>,
        /// Overwrite an existing daxfs image.
        #[arg(long, short)]
        force: bool,
        /// Number of allocation groups (default: 4, or one per GiB above 4 GiB).
        #[arg(long)]
        agcount: Option<u32>,
        /// Leave the image file sparse: its blocks are allocated as they are used
        /// (default: all at once, and a size that does not fit is refused).
        #[arg(long)]
        sparse: bool,
    },
    /// Mount SOURCE (image file, /dev/daxX.Y, or memfd:SIZE) on MOUNTPOINT.
    #[command(after_help = MOUNT_HELP)]
    Mount {
        source: String,
        mountpoint: String,
        /// Mount options, comma separated (see below).
        #[arg(short = 'o', value_name = "OPTIONS")]
        o: Vec<String>,
        /// Stay in the foreground and log to stderr. (In the background the daemon logs
        /// to syslog, or to /var/log/daxfs.log or ~/.local/state/daxfs.log without one;
        /// DAXFS_LOG_FILE overrides, RUST_LOG sets the level, default info.)
        #[arg(short, long)]
        foreground: bool,
    },
    /// Verify every structure of IMAGE without changing it. Exit 0 clean, 1 damaged,
    /// 2 unreadable.
    Check { image: String },
    /// Repair IMAGE, unmounted (as xfs_repair): rebuild the superblock from its AG copies,
    /// AG headers, free-space and inode B+trees from what inodes own, directories and
    /// their indexes from what survives, link counts; clear what cannot be saved; move
    /// unreachable files to lost+found. A dirty log is replayed first. Exit 0 repaired (or
    /// clean), 1 problems left (with -n: problems found), 2 not repairable as it is.
    Repair {
        image: String,
        /// Report what would be done; change nothing.
        #[arg(short = 'n', long = "no-modify")]
        no_modify: bool,
        /// Discard a log that does not verify (its changes are lost) instead of refusing.
        #[arg(short = 'L', long = "discard-log")]
        discard_log: bool,
    },
    /// Show geometry, usage, features and log state of IMAGE, or of the daxfs mounted on
    /// a MOUNTPOINT (as xfs_info; the usage then comes live from the daemon).
    Info {
        #[arg(value_name = "IMAGE|MOUNTPOINT")]
        image: String,
    },
    /// Show the counts and live counters (commits, checkpoints, fences, cache) of a mount.
    Stat { mountpoint: String },
    /// Give the free space of a mounted sparse image back to the filesystem that holds the
    /// image file (as fstrim; `fstrim MOUNTPOINT` works too). Root only.
    Trim {
        mountpoint: String,
        /// Only free extents of at least this size (like 64K, 1M; default: all).
        #[arg(long, short, default_value = "0")]
        minimum: String,
    },
    /// Install /sbin/mount.fuse.daxfs so that `mount -t fuse.daxfs` works.
    InstallHelper,
    /// Take a layout lease on FILE through the direct-access client library, print what
    /// was granted, and hold it (for scripts and tests).
    Layout {
        file: PathBuf,
        /// Byte range OFF:LEN (default: the first 4096 bytes).
        #[arg(long)]
        range: Option<String>,
        /// A write lease (allocates holes, also past EOF).
        #[arg(long)]
        write: bool,
        /// Hold the lease this many seconds before returning it.
        #[arg(long, default_value_t = 0.0)]
        hold: f64,
    },
    /// List the layout leases of a mount: inode, range, mode, client pid, state.
    Leases { mountpoint: String },
}

/// FITRIM on the mount's root directory, which the daemon answers (fuse.rs).
fn trim(mountpoint: &str, minlen: u64) -> Result<u64, String> {
    use std::os::fd::AsRawFd;
    let dir = std::fs::File::open(mountpoint).map_err(|e| e.to_string())?;
    let mut range = [0u64, u64::MAX, minlen];
    // SAFETY: FITRIM reads and writes a struct fstrim_range (three u64), which `range` is.
    let r = unsafe {
        libc::ioctl(
            dir.as_raw_fd(),
            daxfs::fuse::FITRIM as _,
            range.as_mut_ptr(),
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOTTY) => "not a daxfs mount (it does not answer FITRIM)".to_string(),
            Some(libc::EOPNOTSUPP) => {
                "the mount is not on an image file (memfd and device-DAX cannot trim)".into()
            }
            _ => format!("trim failed: {e}"),
        });
    }
    Ok(range[1])
}

/// Foreground: to stderr. Background: syslog or a log file (src/daemonlog.rs), chosen
/// and opened here, before the fork, so that a failure is seen.
fn init_log(foreground: bool) {
    if foreground {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
            .format_timestamp_millis()
            .init();
        return;
    }
    use daxfs::daemonlog::{DaemonLogger, Sink, level_from_env};
    match Sink::for_daemon() {
        Ok(sink) => {
            let _ = DaemonLogger::new(sink, level_from_env()).install();
        }
        Err(e) => eprintln!("daxfs: warning: {e}; the daemon's log is lost"),
    }
}

fn do_mount(source: &str, mountpoint: &str, opts: &[String], foreground: bool) -> ExitCode {
    let parsed = match mount::parse_options(&opts.join(",")) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("daxfs: {e}");
            return ExitCode::from(1);
        }
    };
    if parsed.remount {
        return match mount::remount(mountpoint, &parsed, &opts.join(",")) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("daxfs: {e}");
                ExitCode::from(1)
            }
        };
    }
    // fstab(5) nofail: a device that does not exist is not an error (`mount -a` goes on).
    if parsed.nofail && !source.starts_with("memfd:") && !std::path::Path::new(source).exists() {
        eprintln!("daxfs: {source} does not exist; {mountpoint} not mounted (nofail)");
        return ExitCode::SUCCESS;
    }
    init_log(foreground);
    if foreground {
        let r = mount::serve(source, mountpoint, &parsed, &mut |r| {
            if let Err(e) = r {
                eprintln!("daxfs: {e}");
            }
        });
        return if r.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }
    ExitCode::from(mount::mount_daemon(source, mountpoint, &parsed) as u8)
}

/// mount(8) helper form: `daxfs SOURCE MOUNTPOINT [-o OPTS] [-n] [-s] [-v] [-f]`, also as
/// /sbin/mount.fuse.daxfs.
fn helper_mode(args: &[String]) -> ExitCode {
    let mut pos = Vec::new();
    let mut opts = Vec::new();
    let mut foreground = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "-o" => {
                i += 1;
                if let Some(o) = args.get(i) {
                    opts.push(o.clone());
                }
            }
            s if s.starts_with("-o") => opts.push(s[2..].to_string()),
            "-f" => foreground = true,
            "-n" | "-s" | "-v" | "-i" => {}
            s if s.starts_with("-t") => {
                if s == "-t" {
                    i += 1;
                }
            }
            s => pos.push(s.to_string()),
        }
        i += 1;
    }
    if pos.len() != 2 {
        eprintln!("usage: daxfs SOURCE MOUNTPOINT [-o OPTIONS]  (or see `daxfs --help`)");
        return ExitCode::from(1);
    }
    do_mount(&pos[0], &pos[1], &opts, foreground)
}

/// A mount source as mount(8) passes it: memfd:SIZE, or a path (with a slash, or a file
/// that exists here).
fn looks_like_source(a: &str) -> bool {
    !a.starts_with('-')
        && (a.starts_with("memfd:") || a.contains('/') || std::path::Path::new(a).exists())
}

use mount::{live_stats, stat_value};

/// `daxfs info MOUNTPOINT` (as `xfs_info`), and `daxfs info IMAGE` of a mounted image: the
/// geometry from the image, the usage from the daemon.
fn info_mounted(mountpoint: &str) -> ExitCode {
    let stats = match live_stats(mountpoint) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("daxfs: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(image) = stat_value(&stats, "source") else {
        eprintln!("daxfs: {mountpoint}: the daemon does not say which image it serves");
        return ExitCode::from(2);
    };
    let num = |k: &str| stat_value(&stats, k).and_then(|v| v.parse::<u64>().ok());
    let ro = stat_value(&stats, "read_only") == Some("true");
    let geometry = if image.starts_with("memfd:") {
        Ok(format!("source:        {image}"))
    } else {
        Device::open_live(image)
            .map_err(|e| e.to_string())
            .and_then(|d| daxfs::check::info(&d).map_err(|e| e.to_string()))
    };
    let text = match geometry {
        Ok(t) => t,
        Err(e) => {
            eprintln!("daxfs: {image}: geometry not readable while mounted: {e}");
            format!("source:        {image}")
        }
    };
    let total = text.lines().find_map(|l| {
        l.strip_prefix("blocks:")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    });
    let mib = |b: u64| (b * daxfs::format::BLOCK_SIZE as u64) >> 20;
    for line in text.lines() {
        let key = line.split(':').next().unwrap_or("");
        match key {
            // The media lags the daemon: these come from the daemon.
            "state" => println!(
                "state:         mounted {} on {mountpoint} (usage below is live)",
                if ro { "read-only" } else { "read-write" }
            ),
            "free blocks" => {
                if let Some(f) = num("free_blocks") {
                    println!("free blocks:   {f} ({} MiB)", mib(f));
                }
            }
            "used blocks" => {
                if let (Some(t), Some(f)) = (total, num("free_blocks")) {
                    let u = t.saturating_sub(f);
                    println!("used blocks:   {u} ({} MiB)", mib(u));
                }
            }
            "inodes" => {
                if let (Some(a), Some(f)) = (num("inodes_allocated"), num("inodes_free")) {
                    println!(
                        "inodes:        {a} allocated in chunks, {} in use",
                        a.saturating_sub(f)
                    );
                }
            }
            "log" => println!(
                "{}",
                line.split("; record")
                    .next()
                    .unwrap_or(line)
                    .trim_end_matches("; nothing to replay")
            ),
            _ => println!("{line}"),
        }
    }
    ExitCode::SUCCESS
}

/// The mount point of a daxfs mount named by `arg` (a directory that is a FUSE mount).
fn as_mountpoint(arg: &str) -> Option<String> {
    let p = std::fs::canonicalize(arg).ok()?;
    if !p.is_dir() {
        return None;
    }
    daxfs::pmem::imagelock::fuse_mount_at(&p).map(|m| m.mountpoint.to_string_lossy().into_owned())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let argv0 = args
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_default();
    let subcommands = [
        "mkfs",
        "mount",
        "check",
        "repair",
        "info",
        "stat",
        "trim",
        "install-helper",
        "layout",
        "leases",
        "help",
        "--help",
        "-h",
        "--version",
        "-V",
    ];
    // The mount.fuse3 convention, `daxfs SOURCE DIR -o ...`: taken for a mount only when
    // the first word names a source (a path or memfd:SIZE) or mount options follow, so
    // that a mistyped subcommand (`daxfs chekc IMG`) is an error with a suggestion, not a
    // mount attempt.
    if argv0.starts_with("mount.")
        || (args.len() >= 3
            && !subcommands.contains(&args[1].as_str())
            && (looks_like_source(&args[1]) || args[2..].iter().any(|a| a.starts_with("-o"))))
    {
        return helper_mode(&args[1..]);
    }
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Mount { .. }) {
        // A report piped into `head` ends quietly, as other tools do, instead of panicking
        // on EPIPE. (Not for the daemon, whose output goes elsewhere.)
        // SAFETY: setting a signal disposition to its default.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.cmd {
        Cmd::Mkfs {
            image,
            size,
            label,
            force,
            agcount,
            sparse,
        } => {
            let Some(bytes) = parse_size(&size) else {
                eprintln!("daxfs: cannot parse size {size:?} (try 64M, 1.5G, 8GiB)");
                return ExitCode::from(1);
            };
            let bar = progress_bar();
            if let Some(b) = &bar {
                b.set_message(format!("formatting {}", image.display()));
                b.enable_steady_tick(std::time::Duration::from_millis(200));
            }
            let made = daxfs::mkfs::mkfs_image(
                &image,
                bytes,
                &daxfs::mkfs::MkfsOptions {
                    label,
                    force,
                    ag_count: agcount,
                    sparse,
                },
            );
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            match made {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("daxfs: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Mount {
            source,
            mountpoint,
            o,
            foreground,
        } => do_mount(&source, &mountpoint, &o, foreground),
        Cmd::Check { image } => {
            if let Some(m) = as_mountpoint(&image) {
                eprintln!(
                    "daxfs: {m} is a mount point; check takes the image, unmounted \
                     (`daxfs info {m}` names it)"
                );
                return ExitCode::from(2);
            }
            let dev = match Device::open(&image, true) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("daxfs: {e}");
                    return ExitCode::from(2);
                }
            };
            let bar = progress_bar();
            let shown = bar.clone();
            let r = daxfs::check::check_with_progress(&dev, &move |what, done, total| {
                show_progress(&shown, what, done, total)
            });
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            match r {
                Ok(r) if r.problems.is_empty() => {
                    println!("{image}: clean; {}", r.summary);
                    ExitCode::SUCCESS
                }
                Ok(r) => {
                    for p in &r.problems {
                        println!("{p}");
                    }
                    println!("{image}: {} problem(s); {}", r.problems.len(), r.summary);
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("daxfs: {image}: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Repair {
            image,
            no_modify,
            discard_log,
        } => do_repair(&image, no_modify, discard_log),
        Cmd::Info { image } => {
            if let Some(m) = as_mountpoint(&image) {
                return info_mounted(&m);
            }
            let dev = match Device::open(&image, true) {
                Ok(d) => d,
                Err(daxfs::pmem::device::DeviceError::Busy {
                    busy:
                        daxfs::pmem::imagelock::Busy::Mounted {
                            mountpoint: Some(m),
                            ..
                        },
                    ..
                }) => return info_mounted(&m.to_string_lossy()),
                Err(e) => {
                    eprintln!("daxfs: {e}");
                    return ExitCode::from(2);
                }
            };
            match daxfs::check::info(&dev) {
                Ok(s) => {
                    println!("{s}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("daxfs: {image}: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Stat { mountpoint } => {
            match nix::sys::statvfs::statvfs(mountpoint.as_str()) {
                Ok(s) => {
                    println!("{mountpoint}:");
                    println!(
                        "  blocks: {} of {} bytes, {} free, {} available",
                        s.blocks(),
                        s.fragment_size(),
                        s.blocks_free(),
                        s.blocks_available()
                    );
                    println!("  inodes: {} total, {} free", s.files(), s.files_free());
                }
                // A shut-down daxfs answers statfs with EIO; its live counters (read
                // below) still say so and why.
                Err(nix::errno::Errno::EIO) => {
                    println!("{mountpoint}:");
                    println!("  blocks: unknown (statfs: EIO, see shutdown below)");
                }
                Err(e) => {
                    eprintln!("daxfs: {mountpoint}: {e}");
                    return ExitCode::from(1);
                }
            }
            match live_stats(&mountpoint) {
                Ok(text) => {
                    for line in text.lines() {
                        println!("  {line}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("daxfs: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Trim {
            mountpoint,
            minimum,
        } => {
            let Some(minlen) = parse_size(&minimum) else {
                eprintln!("daxfs: cannot parse size {minimum:?} (try 64K, 1M)");
                return ExitCode::from(1);
            };
            match trim(&mountpoint, minlen) {
                Ok(bytes) => {
                    println!("{mountpoint}: {} MiB ({bytes} bytes) trimmed", bytes >> 20);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("daxfs: {mountpoint}: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Layout {
            file,
            range,
            write,
            hold,
        } => cmd_layout(&file, range.as_deref(), write, hold),
        Cmd::Leases { mountpoint } => cmd_leases(&mountpoint),
        Cmd::InstallHelper => {
            let exe = match std::env::current_exe() {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("daxfs: cannot find this executable: {e}");
                    return ExitCode::from(1);
                }
            };
            let target = std::path::Path::new("/sbin/mount.fuse.daxfs");
            let _ = std::fs::remove_file(target);
            match std::os::unix::fs::symlink(&exe, target) {
                Ok(()) => {
                    println!("{} -> {}", target.display(), exe.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("daxfs: {}: {e}", target.display());
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn parse_range(r: Option<&str>) -> Option<(u64, u64)> {
    let Some(r) = r else { return Some((0, 4096)) };
    let (o, l) = r.split_once(':')?;
    Some((parse_size(o)?, parse_size(l)?))
}

fn cmd_layout(file: &std::path::Path, range: Option<&str>, write: bool, hold: f64) -> ExitCode {
    use daxfs_client::{Client, Mode};
    let Some((off, len)) = parse_range(range) else {
        eprintln!("daxfs: --range wants OFF:LEN, like 0:2M");
        return ExitCode::from(1);
    };
    let r = (|| -> daxfs_client::Result<()> {
        let client = Client::connect(file)?;
        let f = client.open(file, write)?;
        match f.mode() {
            Mode::Direct => println!(
                "mode direct; persistence {:?}",
                client.persistence().expect("direct has a device")
            ),
            Mode::Fallback { reason } => println!("mode fallback: {reason}"),
        }
        let m = f.map(off, len, write)?;
        if m.is_direct() {
            let _p = m.pin()?;
            println!(
                "lease {} {}:{} mapped; file size {}",
                if write { "write" } else { "read" },
                m.offset(),
                m.len(),
                f.size()
            );
        }
        // SAFETY: getpid cannot fail.
        println!("pid {}; holding {hold} s", unsafe { libc::getpid() });
        use std::io::Write;
        let _ = std::io::stdout().flush();
        std::thread::sleep(std::time::Duration::from_secs_f64(hold.max(0.0)));
        drop(m);
        Ok(())
    })();
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("daxfs: {}: {e}", file.display());
            ExitCode::from(1)
        }
    }
}

fn cmd_leases(mountpoint: &str) -> ExitCode {
    let r = daxfs_client::Client::connect(mountpoint).and_then(|c| c.list_leases());
    match r {
        Ok(list) => {
            println!(
                "{:>8} {:>10} {:>14} {:>12} {:>5} {:>8} {:>8} {:>11}",
                "lease", "inode", "offset", "length", "mode", "pid", "state", "quarantined"
            );
            for l in list {
                println!(
                    "{:>8} {:>10} {:>14} {:>12} {:>5} {:>8} {:>8} {:>11}",
                    l.lease,
                    l.ino,
                    l.off,
                    l.len,
                    if l.write { "write" } else { "read" },
                    l.pid,
                    l.state.name(),
                    l.quarantined_blocks
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("daxfs: {mountpoint}: {e}");
            ExitCode::from(1)
        }
    }
}

/// A progress bar on stderr, only when stderr is a terminal (never in tests or CI logs).
fn progress_bar() -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new(0);
    b.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(b)
}

fn show_progress(bar: &Option<indicatif::ProgressBar>, what: &str, done: u64, total: u64) {
    if let Some(b) = bar {
        b.set_message(what.to_string());
        b.set_length(total);
        b.set_position(done);
    }
}

/// `daxfs repair IMAGE [-n] [-L]` (exit codes as xfs_repair: 0 repaired or clean, 1
/// problems found with -n or left after a repair, 2 cannot be repaired as it is).
fn do_repair(image: &str, no_modify: bool, discard_log: bool) -> ExitCode {
    if let Some(m) = as_mountpoint(image) {
        eprintln!(
            "daxfs: {m} is a mount point; repair takes the image, unmounted \
             (`daxfs info {m}` names it)"
        );
        return ExitCode::from(2);
    }
    // Read-write even with -n: the exclusive image lock refuses a mounted image, as
    // check's does, and nothing is written with -n.
    let dev = match Device::open(image, false) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("daxfs: {e}");
            return ExitCode::from(2);
        }
    };
    let bar = progress_bar();
    let shown = bar.clone();
    let opts = daxfs::repair::RepairOptions {
        no_modify,
        discard_log,
        progress: Some(Box::new(move |what, done, total| {
            show_progress(&shown, what, done, total)
        })),
    };
    let r = daxfs::repair::repair(&dev, &opts);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let rep = match r {
        Ok(r) => r,
        Err(e) => {
            eprintln!("daxfs: {image}: cannot repair: {e}");
            return ExitCode::from(2);
        }
    };
    for a in &rep.actions {
        println!("{a}");
    }
    if !rep.changed {
        println!("{image}: clean; nothing to repair");
        return ExitCode::SUCCESS;
    }
    if no_modify {
        println!("{image}: damaged (see above); nothing changed (-n)");
        return ExitCode::from(1);
    }
    match daxfs::check::check(&dev) {
        Ok(c) if c.is_clean() => {
            println!("{image}: repaired; check is clean; {}", c.summary);
            ExitCode::SUCCESS
        }
        Ok(c) => {
            for p in &c.problems {
                println!("left: {p}");
            }
            println!(
                "{image}: repaired, but {} problem(s) remain",
                c.problems.len()
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("daxfs: {image}: after repair: {e}");
            ExitCode::from(1)
        }
    }
}
