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
    // Under systemd, standard error goes to the journal: a `<N>` prefix gives each line
    // its priority (journald's SyslogLevelPrefix), so errors are not "info".
    if *JOURNAL.get_or_init(|| std::env::var_os("JOURNAL_STREAM").is_some()) {
        eprintln!("<{}>posternd: {tag}{msg}", prio & 7);
    } else {
        eprintln!("posternd: {tag}{msg}");
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
