//! Stage 5: expiry. The kernel removes nftables elements on time by itself; this is the
//! daemon's ledger of what it opened (for `posternd status` and for refreshing a grant
//! without ever shortening it) and of pending command-cycle closes.

use std::collections::HashMap;
use std::net::IpAddr;

use postern_proto::Protocol;

/// One open grant as the daemon remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Stanza name (file:line).
    pub stanza: String,
    /// Unix time it closes.
    pub expires: u64,
}

/// Open grants and pending closes.
#[derive(Debug, Default)]
pub struct Ledger {
    grants: HashMap<(IpAddr, Protocol, u16), Entry>,
    closes: Vec<(u64, String, String)>,
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
    pub fn record(&mut self, key: (IpAddr, Protocol, u16), stanza: &str, expires: u64) {
        self.grants.insert(
            key,
            Entry {
                stanza: stanza.to_owned(),
                expires,
            },
        );
    }

    /// Forget closed grants; the open ones, soonest first.
    pub fn active(&mut self, now: u64) -> Vec<((IpAddr, Protocol, u16), Entry)> {
        self.grants.retain(|_, e| e.expires > now);
        let mut v: Vec<_> = self.grants.iter().map(|(k, e)| (*k, e.clone())).collect();
        v.sort_by_key(|(k, e)| (e.expires, k.0, k.2));
        v
    }

    /// Schedule a close command.
    pub fn schedule_close(&mut self, at: u64, command: String, stanza: String) {
        self.closes.push((at, command, stanza));
    }

    /// Take the close commands that are due (all of them with `all`).
    pub fn due_closes(&mut self, now: u64, all: bool) -> Vec<(String, String)> {
        let (due, keep): (Vec<_>, Vec<_>) = self
            .closes
            .drain(..)
            .partition(|(t, _, _)| all || *t <= now);
        self.closes = keep;
        due.into_iter().map(|(_, c, s)| (c, s)).collect()
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
        l.record(k, "a:1", 400);
        assert_eq!(l.effective_timeout(k, 30, 100), 300);
        assert_eq!(l.effective_timeout(k, 500, 100), 500);
        assert_eq!(l.active(399).len(), 1);
        assert!(l.active(400).is_empty());
    }

    #[test]
    fn closes_run_when_due() {
        let mut l = Ledger::default();
        l.schedule_close(10, "a".into(), "s".into());
        l.schedule_close(20, "b".into(), "s".into());
        assert!(l.due_closes(5, false).is_empty());
        assert_eq!(l.due_closes(15, false), [("a".to_owned(), "s".to_owned())]);
        assert_eq!(l.due_closes(15, true).len(), 1);
    }
}
