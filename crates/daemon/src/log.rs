//! Logging: one line per event, to standard error in the foreground (journald adds the
//! timestamp under systemd) or to syslog (`/dev/log`, facility daemon) in the
//! background. Callers never pass keys, HMACs or plaintext.
//!
//! Every line is escaped here, whatever its parts: a control character from a
//! username, a command string, a file name or any other attacker-influenced text is
//! written as `\u{..}`, so one event is always one line and no forged line can be
//! smuggled into the log.

use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;

static SYSLOG: OnceLock<Option<UnixDatagram>> = OnceLock::new();

/// The syslog tag and facility (`SYSLOG_IDENTITY`, `SYSLOG_FACILITY`).
static NAMING: std::sync::RwLock<Option<(String, u8)>> = std::sync::RwLock::new(None);

/// The `daemon` facility (the default).
pub const DAEMON: u8 = 3;

const FACILITIES: &[(&str, u8)] = &[
    ("USER", 1),
    ("DAEMON", 3),
    ("AUTH", 4),
    ("AUTHPRIV", 10),
    ("LOCAL0", 16),
    ("LOCAL1", 17),
    ("LOCAL2", 18),
    ("LOCAL3", 19),
    ("LOCAL4", 20),
    ("LOCAL5", 21),
    ("LOCAL6", 22),
    ("LOCAL7", 23),
];

/// A facility by name (`LOG_DAEMON` or `daemon`), as fwknopd's `SYSLOG_FACILITY` takes it.
pub fn facility(name: &str) -> Option<u8> {
    let n = name.to_ascii_uppercase();
    let n = n.strip_prefix("LOG_").unwrap_or(&n);
    FACILITIES.iter().find(|(f, _)| *f == n).map(|(_, v)| *v)
}

/// The name of a facility number (`LOG_DAEMON`).
pub fn facility_name(code: u8) -> String {
    let name = FACILITIES
        .iter()
        .find(|(_, v)| *v == code)
        .map_or("DAEMON", |(f, _)| f);
    format!("LOG_{name}")
}

/// Log as `identity` to `facility` from now on (at start and at each reload).
pub fn name(identity: &str, facility: u8) {
    if let Ok(mut n) = NAMING.write() {
        *n = Some((identity.to_owned(), facility));
    }
}

fn naming() -> (String, u8) {
    NAMING
        .read()
        .ok()
        .and_then(|n| n.clone())
        .unwrap_or_else(|| ("posternd".into(), DAEMON))
}

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

/// `text` with every control character escaped (`\n` becomes `\u{a}`, ...).
pub fn clean(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Log one line.
pub fn log(level: Level, msg: &str) {
    let msg = &*clean(msg);
    let (severity, tag) = match level {
        Level::Error => (3, "error: "),
        Level::Warning => (4, "warning: "),
        Level::Info => (6, ""),
    };
    let (ident, facility) = naming();
    if let Some(Some(sock)) = SYSLOG.get() {
        let prio = u32::from(facility) * 8 + severity;
        let line = format!("<{prio}>{ident}[{}]: {tag}{msg}", std::process::id());
        if sock.send(line.as_bytes()).is_ok() {
            return;
        }
    }
    // Under systemd, standard error goes to the journal: a `<N>` prefix gives each line
    // its priority (journald's SyslogLevelPrefix), so errors are not "info".
    if *JOURNAL.get_or_init(|| std::env::var_os("JOURNAL_STREAM").is_some()) {
        eprintln!("<{severity}>{ident}: {tag}{msg}");
    } else {
        eprintln!("{ident}: {tag}{msg}");
    }
}

static JOURNAL: OnceLock<bool> = OnceLock::new();

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

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_never_reach_a_line() {
        let forged = "x\nposternd: 198.18.1.9 (stanza a:1): granted\r\u{1b}[2J\u{0}";
        let c = super::clean(forged);
        assert!(!c.chars().any(char::is_control), "{c}");
        assert!(c.contains("\\u{a}posternd"));
        assert_eq!(super::clean("plain é"), "plain é");
    }
}
