//! Logging: one line per event, to standard error in the foreground (journald adds the
//! timestamp under systemd) or to syslog (`/dev/log`, facility daemon) in the
//! background. Callers never pass keys, HMACs or plaintext.

use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;

static SYSLOG: OnceLock<Option<UnixDatagram>> = OnceLock::new();

/// Severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Something failed.
    Error,
    /// Something is wrong but posternd goes on.
    Warning,
    /// Normal events.
    Info,
}

/// Choose the destination: `foreground` logs to stderr, otherwise syslog.
pub fn init(foreground: bool) {
    let sock = if foreground {
        None
    } else {
        UnixDatagram::unbound()
            .ok()
            .filter(|s| s.connect("/dev/log").is_ok())
    };
    let _ = SYSLOG.set(sock);
}

/// Log one line.
pub fn log(level: Level, msg: &str) {
    let (prio, tag) = match level {
        Level::Error => (3 * 8 + 3, "error: "),
        Level::Warning => (3 * 8 + 4, "warning: "),
        Level::Info => (3 * 8 + 6, ""),
    };
    if let Some(Some(sock)) = SYSLOG.get() {
        let line = format!("<{prio}>posternd[{}]: {tag}{msg}", std::process::id());
        if sock.send(line.as_bytes()).is_ok() {
            return;
        }
    }
    eprintln!("posternd: {tag}{msg}");
}

/// Log at info level.
pub fn info(msg: &str) {
    log(Level::Info, msg);
}

/// Log at warning level.
pub fn warn(msg: &str) {
    log(Level::Warning, msg);
}

/// Log at error level.
pub fn error(msg: &str) {
    log(Level::Error, msg);
}
