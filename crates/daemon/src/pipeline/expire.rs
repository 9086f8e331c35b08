//! Stage 5: expiry. The kernel removes nftables elements on time by itself; this is the
//! daemon's ledger of what it opened (for `posternd status` and for refreshing a grant
//! without ever shortening it) and of pending command-cycle closes.
//!
//! Times here are seconds of a clock that never steps (`CLOCK_BOOTTIME`, see
//! [`crate::daemon::Now`]): a wall-clock step neither closes nor extends anything.

use std::collections::HashMap;
use std::net::IpAddr;

use postern_proto::Protocol;

use super::apply::Identity;

/// One open grant as the daemon remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Stanza name (file:line).
    pub stanza: String,
    /// When it closes (monotonic seconds).
    pub expires: u64,
    /// The gateway that opened it, for a fleet grant applied here.
    pub origin: Option<String>,
    /// Its NAT translation, if any (to re-add it as it was).
    pub nat: Option<postern_fw::Nat>,
}

/// A command-cycle close, with everything it needs resolved when the cycle opened:
/// never looked up again (a reload that moves or removes the stanza changes nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingClose {
    /// The command text (argv, split on whitespace).
    pub command: String,
    /// Who it runs as.
    pub identity: Identity,
    /// The stanza that opened it (file:line at the time), for the log.
    pub stanza: String,
}

/// Open grants and pending closes.
#[derive(Debug, Default)]
pub struct Ledger {
    grants: HashMap<(IpAddr, Protocol, u16), Entry>,
    closes: Vec<(u64, PendingClose)>,
    /// Grants whose time ran out, until [`Ledger::closed`] takes them (for alerts).
    closed: Vec<((IpAddr, Protocol, u16), Entry)>,
}

impl Ledger {
    /// Seconds a grant of `timeout` should really get: never less than what is left of
    /// an existing grant of the same address, protocol and port.
    pub fn effective_timeout(&self, key: (IpAddr, Protocol, u16), timeout: u64, now: u64) -> u64 {
        self.grants
            .get(&key)
            .map_or(timeout, |e| timeout.max(e.expires.saturating_sub(now)))
    }

    /// Remember an opened grant.
    pub fn record(
        &mut self,
        key: (IpAddr, Protocol, u16),
        stanza: &str,
        expires: u64,
        origin: Option<&str>,
        nat: Option<postern_fw::Nat>,
    ) {
        self.grants.insert(
            key,
            Entry {
                stanza: stanza.to_owned(),
                expires,
                origin: origin.map(str::to_owned),
                nat,
            },
        );
    }

    /// Forget closed grants; the open ones, soonest first.
    pub fn active(&mut self, now: u64) -> Vec<((IpAddr, Protocol, u16), Entry)> {
        self.forget_closed(now);
        let mut v: Vec<_> = self.grants.iter().map(|(k, e)| (*k, e.clone())).collect();
        v.sort_by_key(|(k, e)| (e.expires, k.0, k.2));
        v
    }

    /// The grants that closed since the last call (their time ran out), soonest first.
    pub fn closed(&mut self, now: u64) -> Vec<((IpAddr, Protocol, u16), Entry)> {
        self.forget_closed(now);
        let mut v = std::mem::take(&mut self.closed);
        v.sort_by_key(|(k, e)| (e.expires, k.0, k.2));
        v
    }

    fn forget_closed(&mut self, now: u64) {
        let closed = &mut self.closed;
        self.grants.retain(|k, e| {
            let open = e.expires > now;
            if !open {
                closed.push((*k, e.clone()));
            }
            open
        });
    }

    /// Schedule a close command.
    pub fn schedule_close(&mut self, at: u64, close: PendingClose) {
        self.closes.push((at, close));
    }

    /// Take the close commands that are due (all of them with `all`).
    pub fn due_closes(&mut self, now: u64, all: bool) -> Vec<PendingClose> {
        let (due, keep): (Vec<_>, Vec<_>) =
            self.closes.drain(..).partition(|(t, _)| all || *t <= now);
        self.closes = keep;
        due.into_iter().map(|(_, c)| c).collect()
    }

    /// Number of pending closes.
    pub fn pending_closes(&self) -> usize {
        self.closes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_never_shortens() {
        let mut l = Ledger::default();
        let k = ("198.18.1.2".parse().unwrap(), Protocol::Tcp, 22);
        assert_eq!(l.effective_timeout(k, 30, 100), 30);
        l.record(k, "a:1", 400, None, None);
        assert_eq!(l.effective_timeout(k, 30, 100), 300);
        assert_eq!(l.effective_timeout(k, 500, 100), 500);
        assert_eq!(l.active(399).len(), 1);
        assert!(l.active(400).is_empty());
        // Closed once, whoever noticed first.
        assert_eq!(l.closed(400).len(), 1);
        assert!(l.closed(401).is_empty());
    }

    #[test]
    fn closes_run_when_due() {
        let mut l = Ledger::default();
        let close = |c: &str| PendingClose {
            command: c.into(),
            identity: Identity::resolve(None, None).unwrap(),
            stanza: "s".into(),
        };
        l.schedule_close(10, close("a"));
        l.schedule_close(20, close("b"));
        assert!(l.due_closes(5, false).is_empty());
        assert_eq!(l.due_closes(15, false), [close("a")]);
        assert_eq!(l.due_closes(15, true).len(), 1);
    }
}
