//! Where the background daemon's log goes, so that a user who gets EIO can find out why.
//!
//! A daemon has no terminal. Its log goes to syslog (the journal, on systemd machines,
//! reads the same socket) when `/dev/log` accepts datagrams, else to a file: `$DAXFS_LOG_FILE`
//! if set (it also wins over syslog: an explicit choice), else `/var/log/daxfs.log` for
//! root and `$XDG_STATE_HOME/daxfs.log` (`~/.local/state/daxfs.log`) for others. The file
//! is chosen and opened before the daemon forks, so `daxfs mount` can name it (on a
//! terminal) and fail early; the daemon's stderr goes to the same file, so a panic message
//! lands there too. The level is info unless RUST_LOG names another (error, warn, info,
//! debug, trace, off).
//!
//! Syslog lines are RFC 3164 as glibc's syslog(3) writes them to /dev/log:
//! `<PRI>daxfs[PID]: message`, facility daemon.

use std::fs::File;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where log records go.
pub enum Sink {
    /// Connected to a syslog socket (`/dev/log`).
    Syslog { sock: UnixDatagram, path: PathBuf },
    /// Appended to a file.
    File { file: File, path: PathBuf },
}

impl Sink {
    /// A sink on the syslog socket at `path`, if something listens there.
    pub fn syslog_at(path: &Path) -> Option<Sink> {
        let sock = UnixDatagram::unbound().ok()?;
        sock.connect(path).ok()?;
        Some(Sink::Syslog {
            sock,
            path: path.to_path_buf(),
        })
    }

    /// A sink appending to the file at `path` (created, with its directory, if missing).
    pub fn file_at(path: &Path) -> std::io::Result<Sink> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Sink::File {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The sink for a background daemon (see the module note).
    pub fn for_daemon() -> Result<Sink, String> {
        if let Some(p) = std::env::var_os("DAXFS_LOG_FILE") {
            let p = PathBuf::from(p);
            return Sink::file_at(&p).map_err(|e| format!("log file {}: {e}", p.display()));
        }
        if let Some(s) = Sink::syslog_at(Path::new("/dev/log")) {
            return Ok(s);
        }
        let p = default_log_file();
        Sink::file_at(&p).map_err(|e| {
            format!(
                "no syslog (/dev/log) and the log file {} cannot be opened: {e} \
                 (set DAXFS_LOG_FILE)",
                p.display()
            )
        })
    }

    /// Where the records go, for a user: "syslog (/dev/log)" or the file's path.
    pub fn describe(&self) -> String {
        match self {
            Sink::Syslog { path, .. } => format!("syslog ({})", path.display()),
            Sink::File { path, .. } => path.display().to_string(),
        }
    }

    /// The file, when records go to one (the daemon points its stderr there).
    pub fn file(&self) -> Option<&File> {
        match self {
            Sink::File { file, .. } => Some(file),
            Sink::Syslog { .. } => None,
        }
    }
}

/// /var/log/daxfs.log for root, else under the XDG state directory.
pub fn default_log_file() -> PathBuf {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/log/daxfs.log");
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("daxfs.log")
}

/// The level RUST_LOG asks for, if it is a bare level; info otherwise.
pub fn level_from_env() -> log::LevelFilter {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(log::LevelFilter::Info)
}

/// Set by `DaemonLogger::install`: where records go, and the log file (for stderr).
static DESTINATION: std::sync::OnceLock<(String, Option<File>)> = std::sync::OnceLock::new();

/// Where the installed daemon logger writes ("syslog (/dev/log)" or a path), if any.
pub fn destination() -> Option<&'static str> {
    DESTINATION.get().map(|(d, _)| d.as_str())
}

/// The installed daemon logger's file, if it writes to one.
pub fn log_file() -> Option<&'static File> {
    DESTINATION.get().and_then(|(_, f)| f.as_ref())
}

/// The daemon's logger: one sink, records at or above `level`.
pub struct DaemonLogger {
    sink: Mutex<Sink>,
    level: log::LevelFilter,
}

impl DaemonLogger {
    pub fn new(sink: Sink, level: log::LevelFilter) -> DaemonLogger {
        DaemonLogger {
            sink: Mutex::new(sink),
            level,
        }
    }

    /// Install as the process's logger (once); panics are logged through it too.
    pub fn install(self) -> Result<(), log::SetLoggerError> {
        let level = self.level;
        let (what, file) = {
            let sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
            (
                sink.describe(),
                sink.file().and_then(|f| f.try_clone().ok()),
            )
        };
        log::set_boxed_logger(Box::new(self))?;
        let _ = DESTINATION.set((what, file));
        log::set_max_level(level);
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            log::error!("the daemon panicked (a bug; please report it): {info}");
            default_hook(info);
        }));
        Ok(())
    }
}

/// Syslog severity of a log level (RFC 5424 numbers), facility daemon (3).
fn priority(level: log::Level) -> u8 {
    let severity = match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    };
    3 * 8 + severity
}

impl log::Log for DaemonLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        // fuser warns on every unmount (its own umount of a mount the kernel has already
        // taken away fails): only its errors, unless debugging.
        if m.target().starts_with("fuser") && self.level < log::LevelFilter::Debug {
            return m.level() <= log::Level::Error;
        }
        m.level() <= self.level
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *sink {
            Sink::Syslog { sock, path } => {
                let line = format!(
                    "<{}>daxfs[{}]: {}: {}",
                    priority(r.level()),
                    std::process::id(),
                    r.level(),
                    r.args()
                );
                if sock.send(line.as_bytes()).is_err() {
                    // The syslog daemon restarted: connect again, once.
                    if let Some(Sink::Syslog { sock: s, .. }) = Sink::syslog_at(path) {
                        let _ = s.send(line.as_bytes());
                        *sock = s;
                    }
                }
            }
            Sink::File { file, .. } => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let _ = writeln!(
                    file,
                    "{} daxfs[{}] {}: {}",
                    utc_timestamp(now.as_secs(), now.subsec_millis()),
                    std::process::id(),
                    r.level(),
                    r.args()
                );
            }
        }
    }

    fn flush(&self) {}
}

/// "2026-12-02T06:04:57.123Z" (UTC, civil-from-days as in Howard Hinnant's algorithm).
fn utc_timestamp(secs: u64, millis: u32) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Log;

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_timestamp(1_796_191_497, 5), "2026-12-02T06:04:57.005Z");
        assert_eq!(utc_timestamp(951_782_400, 0), "2000-02-29T00:00:00.000Z");
    }

    /// Records reach a syslog socket in the /dev/log format, at and above the level.
    #[test]
    fn syslog_datagrams() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.sock");
        let server = UnixDatagram::bind(&p).unwrap();
        let sink = Sink::syslog_at(&p).expect("connects");
        assert_eq!(sink.describe(), format!("syslog ({})", p.display()));
        let l = DaemonLogger::new(sink, log::LevelFilter::Info);
        let rec = |level, msg: &str| {
            l.log(
                &log::Record::builder()
                    .level(level)
                    .args(format_args!("{msg}"))
                    .build(),
            )
        };
        rec(log::Level::Debug, "not this");
        rec(log::Level::Error, "img: filesystem shut down");
        let mut buf = [0u8; 512];
        let n = server.recv(&mut buf).unwrap();
        let got = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert_eq!(
            got,
            format!(
                "<27>daxfs[{}]: ERROR: img: filesystem shut down",
                std::process::id()
            )
        );
        assert!(Sink::syslog_at(&dir.path().join("none")).is_none());
    }

    #[test]
    fn file_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/daxfs.log");
        let l = DaemonLogger::new(Sink::file_at(&p).unwrap(), log::LevelFilter::Info);
        l.log(
            &log::Record::builder()
                .level(log::Level::Warn)
                .args(format_args!("w"))
                .build(),
        );
        let t = std::fs::read_to_string(&p).unwrap();
        assert!(
            t.ends_with(&format!("Z daxfs[{}] WARN: w\n", std::process::id())),
            "{t}"
        );
    }
}
