//! The firewalld backend: each grant is a **rich rule with a timeout** in one zone, added
//! through firewalld's D-Bus API (`org.fedoraproject.FirewallD1.zone.addRichRule`), so
//! firewalld itself removes it on time, even if posternd is gone. No `--direct` rules, no
//! iptables syntax: the same calls work on firewalld's nftables and iptables backends.
//!
//! ```text
//!  Grant { 198.18.1.2, tcp, 22, 30 s } ──► addRichRule("drop",
//!      "rule family=\"ipv4\" source address=\"198.18.1.2\" port port=\"22\" protocol=\"tcp\" accept", 30)
//!                                          firewalld: timer 30 s ──► removeRichRule
//! ```
//!
//! **Which rules are posternd's.** Exactly the rules of the one form [`rich_rule`] writes
//! (one source address, one port, `accept`, nothing else, byte for byte) that are not in
//! the zone's permanent configuration: posternd only ever adds runtime rules, so a
//! permanent rule of that form is the admin's and is never removed, refreshed or listed.
//! Flushing at start and the removal at exit take every other rule of that form, including
//! those a previous posternd left (after `kill -9`, until firewalld's timers fire).
//!
//! **Time left.** firewalld does not report a rule's remaining timeout, so the backend
//! remembers the deadline of each rule it added (on the monotonic clock, which is also
//! the clock of firewalld's GLib timers) and reports it; a rule it did not add (a previous
//! run's) reports 0.
//!
//! A refresh (a second knock) removes the rule and adds it again with the new timeout
//! (firewalld refuses a rule already there, and its timer is keyed by the rule), unless
//! the rule posternd added already lasts longer. The calls are blocking, bounded by
//! [`CALL_TIMEOUT`]; the connection is made at the first use, not in [`Firewalld::new`].

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use postern_proto::Protocol;
use zbus::blocking::Connection;
use zbus::zvariant::OwnedValue;

use crate::{Error, Firewall, Grant, Held};

/// firewalld's bus name.
const NAME: &str = "org.fedoraproject.FirewallD1";
/// Its main object.
const PATH: &str = "/org/fedoraproject/FirewallD1";
/// Its configuration object (the permanent settings).
const CONFIG_PATH: &str = "/org/fedoraproject/FirewallD1/config";
/// The runtime zone interface (rich rules).
const ZONE: &str = "org.fedoraproject.FirewallD1.zone";
/// The permanent configuration interfaces.
const CONFIG: &str = "org.fedoraproject.FirewallD1.config";
const CONFIG_ZONE: &str = "org.fedoraproject.FirewallD1.config.zone";
/// The bound on one D-Bus call (firewalld applies a rule in tens of milliseconds).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// firewalld takes the timeout as a signed 32-bit number of seconds.
const MAX_TIMEOUT: u64 = i32::MAX as u64;

/// Settings of the firewalld backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewalldConfig {
    /// `FIREWD_ZONE`: the zone that gets the rules (`None`: firewalld's default zone, asked
    /// at setup).
    pub zone: Option<String>,
}

/// One opening: source, protocol, port.
type Key = (IpAddr, Protocol, u16);

/// The one rich rule posternd adds for an opening.
pub fn rich_rule(source: IpAddr, proto: Protocol, port: u16) -> String {
    let family = if source.is_ipv6() { "ipv6" } else { "ipv4" };
    format!(
        "rule family=\"{family}\" source address=\"{source}\" port port=\"{port}\" protocol=\"{}\" accept",
        proto.name()
    )
}

/// The opening a rich rule of exactly posternd's form stands for; `None` for any other rule
/// (another spelling of an address, a log, a destination, a range...).
pub fn parse_rich_rule(rule: &str) -> Option<(IpAddr, Protocol, u16)> {
    let rest = rule.strip_prefix("rule family=\"")?;
    let (_family, rest) = rest.split_once("\" source address=\"")?;
    let (addr, rest) = rest.split_once("\" port port=\"")?;
    let (port, rest) = rest.split_once("\" protocol=\"")?;
    let proto = match rest.strip_suffix("\" accept")? {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return None,
    };
    let (source, port) = (addr.parse().ok()?, port.parse().ok()?);
    // Byte for byte, family included: what posternd would have written.
    (rich_rule(source, proto, port) == rule).then_some((source, proto, port))
}

/// Check a zone name (`FIREWD_ZONE`): whether firewalld has it is asked at setup.
pub fn check_zone(z: &str) -> Result<(), Error> {
    let ok = !z.is_empty()
        && z.len() <= 64
        && z.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'+');
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!("'{z}' is not a firewalld zone name")))
    }
}

/// How a D-Bus call failed.
#[derive(Debug)]
enum Fail {
    /// firewalld answered with one of its errors, `CODE: message` (`ALREADY_ENABLED`,
    /// `NOT_ENABLED`, `INVALID_ZONE`, ...).
    Said(String),
    /// No answer: no bus, firewalld not on it, the call timed out, the connection broke.
    Silent(String),
    /// The bus or firewalld refused or garbled the call otherwise (access denied, a reply
    /// of the wrong type).
    Other(String),
}

impl Fail {
    fn is(&self, code: &str) -> bool {
        matches!(self, Fail::Said(m) if m.split(':').next() == Some(code))
    }
}

impl From<Fail> for Error {
    fn from(f: Fail) -> Error {
        match f {
            Fail::Said(m) => Error::Refused(format!("firewalld: {m}")),
            Fail::Silent(m) => {
                Error::Unavailable(format!("firewalld does not answer on the system bus: {m}"))
            }
            Fail::Other(m) => Error::Refused(m),
        }
    }
}

fn fail(e: zbus::Error) -> Fail {
    match &e {
        zbus::Error::MethodError(name, detail, _) => {
            let name = name.as_str();
            let detail = detail.clone().unwrap_or_default();
            if name.starts_with(NAME) {
                Fail::Said(detail)
            } else if matches!(
                name,
                "org.freedesktop.DBus.Error.ServiceUnknown"
                    | "org.freedesktop.DBus.Error.NameHasNoOwner"
                    | "org.freedesktop.DBus.Error.NoReply"
                    | "org.freedesktop.DBus.Error.Disconnected"
                    | "org.freedesktop.DBus.Error.TimedOut"
                    | "org.freedesktop.DBus.Error.Timeout"
            ) {
                Fail::Silent(format!("{name}: {detail}"))
            } else {
                Fail::Other(format!("{name}: {detail}"))
            }
        }
        zbus::Error::FDO(f) => match **f {
            zbus::fdo::Error::ServiceUnknown(_)
            | zbus::fdo::Error::NameHasNoOwner(_)
            | zbus::fdo::Error::NoReply(_)
            | zbus::fdo::Error::Disconnected(_)
            | zbus::fdo::Error::TimedOut(_)
            | zbus::fdo::Error::Timeout(_) => Fail::Silent(e.to_string()),
            _ => Fail::Other(e.to_string()),
        },
        zbus::Error::InputOutput(_) | zbus::Error::Address(_) | zbus::Error::Handshake(_) => {
            Fail::Silent(e.to_string())
        }
        _ => Fail::Other(e.to_string()),
    }
}

/// What one `apply` did to one opening, so that a failure later in the call can undo it.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Added: it was not there.
    Added(Key),
    /// Removed and added again with a longer timeout; the deadline it had, if posternd
    /// knew it.
    Refreshed(Key, Option<Instant>),
}

/// The firewalld backend.
#[derive(Debug)]
pub struct Firewalld {
    cfg: FirewalldConfig,
    bus: Option<Connection>,
    /// The zone in use (the configured one, or firewalld's default once asked).
    zone: Option<String>,
    /// Deadlines of the rules this backend added.
    deadlines: HashMap<Key, Instant>,
}

/// Whether firewalld runs: its name has an owner on the system bus (the bus of
/// `DBUS_SYSTEM_BUS_ADDRESS` if set). No bus, or no answer within the call timeout: no.
pub fn running() -> bool {
    let Ok(bus) = zbus::blocking::connection::Builder::system()
        .map(|b| b.method_timeout(CALL_TIMEOUT))
        .and_then(|b| b.build())
    else {
        return false;
    };
    bus.call_method(
        Some("org.freedesktop.DBus"),
        "/org/freedesktop/DBus",
        Some("org.freedesktop.DBus"),
        "NameHasOwner",
        &(NAME,),
    )
    .ok()
    .and_then(|m| m.body().deserialize::<bool>().ok())
    .unwrap_or(false)
}

impl Firewalld {
    /// Check the settings (touches nothing, connects to nothing).
    pub fn new(cfg: FirewalldConfig) -> Result<Firewalld, Error> {
        if let Some(z) = &cfg.zone {
            check_zone(z)?;
        }
        Ok(Firewalld {
            zone: cfg.zone.clone(),
            cfg,
            bus: None,
            deadlines: HashMap::new(),
        })
    }

    fn call(
        &mut self,
        path: &str,
        iface: &str,
        method: &str,
        body: &(impl zbus::export::serde::Serialize + zbus::zvariant::DynamicType),
    ) -> Result<zbus::Message, Fail> {
        if self.bus.is_none() {
            let c = zbus::blocking::connection::Builder::system()
                .map(|b| b.method_timeout(CALL_TIMEOUT))
                .and_then(|b| b.build())
                .map_err(|e| match fail(e) {
                    Fail::Other(m) | Fail::Said(m) => Fail::Silent(m),
                    s => s,
                })?;
            self.bus = Some(c);
        }
        let Some(bus) = &self.bus else {
            return Err(Fail::Silent("no connection".into()));
        };
        let r = bus
            .call_method(Some(NAME), path, Some(iface), method, body)
            .map_err(fail);
        if let Err(Fail::Silent(_)) = r {
            // Connect again next time (firewalld or the bus may come back).
            self.bus = None;
        }
        r
    }

    fn get<T>(
        &mut self,
        path: &str,
        iface: &str,
        method: &str,
        body: &(impl zbus::export::serde::Serialize + zbus::zvariant::DynamicType),
    ) -> Result<T, Fail>
    where
        T: zbus::export::serde::de::DeserializeOwned + zbus::zvariant::Type,
    {
        let reply = self.call(path, iface, method, body)?;
        reply
            .body()
            .deserialize::<T>()
            .map_err(|e| Fail::Other(format!("firewalld's reply to {method}: {e}")))
    }

    fn property(&mut self, name: &str) -> Result<String, Fail> {
        let v: OwnedValue = self.get(
            PATH,
            "org.freedesktop.DBus.Properties",
            "Get",
            &(NAME, name),
        )?;
        String::try_from(v).map_err(|e| Fail::Other(format!("firewalld's {name}: {e}")))
    }

    /// The zone in use, asking firewalld for its default zone the first time.
    fn zone(&mut self) -> Result<String, Error> {
        if let Some(z) = &self.zone {
            return Ok(z.clone());
        }
        let z: String = self.get(PATH, NAME, "getDefaultZone", &())?;
        self.zone = Some(z.clone());
        Ok(z)
    }

    fn add(&mut self, zone: &str, key: Key, secs: u64) -> Result<(), Fail> {
        let rule = rich_rule(key.0, key.1, key.2);
        let secs = i32::try_from(secs.clamp(1, MAX_TIMEOUT)).unwrap_or(i32::MAX);
        self.call(PATH, ZONE, "addRichRule", &(zone, rule.as_str(), secs))
            .map(|_| ())
    }

    /// Remove a rule; one that is not there any more counts as removed.
    fn remove(&mut self, zone: &str, key: Key) -> Result<(), Fail> {
        let rule = rich_rule(key.0, key.1, key.2);
        match self.call(PATH, ZONE, "removeRichRule", &(zone, rule.as_str())) {
            Err(f) if f.is("NOT_ENABLED") => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// The openings of posternd's form in the zone's permanent configuration (the admin's).
    fn permanent(&mut self, zone: &str) -> Result<HashSet<Key>, Error> {
        let path: zbus::zvariant::OwnedObjectPath =
            self.get(CONFIG_PATH, CONFIG, "getZoneByName", &(zone,))?;
        let rules: Vec<String> = self.get(path.as_str(), CONFIG_ZONE, "getRichRules", &())?;
        Ok(rules.iter().filter_map(|r| parse_rich_rule(r)).collect())
    }

    /// posternd's openings in the zone now: runtime rules of its form, not permanent.
    fn ours(&mut self, zone: &str) -> Result<Vec<Key>, Error> {
        let rules: Vec<String> = self.get(PATH, ZONE, "getRichRules", &(zone,))?;
        let permanent = self.permanent(zone)?;
        Ok(rules
            .iter()
            .filter_map(|r| parse_rich_rule(r))
            .filter(|k| !permanent.contains(k))
            .collect())
    }

    /// Remove every opening of posternd's in the zone.
    fn remove_ours(&mut self) -> Result<(), Error> {
        let zone = self.zone()?;
        let mut first = None;
        for k in self.ours(&zone)? {
            match self.remove(&zone, k) {
                Ok(()) => {
                    self.deadlines.remove(&k);
                }
                Err(e) => {
                    first.get_or_insert(Error::from(e));
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Open or refresh one opening.
    fn open(
        &mut self,
        zone: &str,
        key: Key,
        secs: u64,
        now: Instant,
    ) -> Result<Option<Step>, Error> {
        let until = now + Duration::from_secs(secs);
        match self.add(zone, key, secs) {
            Ok(()) => return Ok(Some(Step::Added(key))),
            Err(f) if f.is("ALREADY_ENABLED") => {}
            Err(f) => return Err(f.into()),
        }
        let known = self.deadlines.get(&key).copied();
        if known.is_some_and(|d| d >= until) {
            return Ok(None); // Never shortened.
        }
        if known.is_none() && self.permanent(zone)?.contains(&key) {
            return Ok(None); // The admin's, open for good.
        }
        self.remove(zone, key)?;
        if let Err(f) = self.add(zone, key, secs) {
            // Put back what was there, as far as it is known.
            let left = known.map_or(secs, |d| d.saturating_duration_since(now).as_secs());
            let _ = self.add(zone, key, left);
            return Err(f.into());
        }
        Ok(Some(Step::Refreshed(key, known)))
    }

    /// Undo what an `apply` did before it failed.
    fn undo(&mut self, zone: &str, steps: &[Step], now: Instant) {
        for s in steps.iter().rev() {
            match *s {
                Step::Added(k) => {
                    let _ = self.remove(zone, k);
                }
                Step::Refreshed(k, Some(before)) => {
                    let left = before.saturating_duration_since(now).as_secs();
                    if self.remove(zone, k).is_ok() && left > 0 && self.add(zone, k, left).is_ok() {
                        self.deadlines.insert(k, before);
                    }
                }
                // It was open with a deadline nobody knows: it stays open, refreshed.
                Step::Refreshed(_, None) => {}
            }
        }
    }
}

impl Firewall for Firewalld {
    fn setup(&mut self, flush: bool) -> Result<(), Error> {
        // A fresh connection: setup is also the repair after a failed change.
        self.bus = None;
        let state = self.property("state")?;
        if state != "RUNNING" {
            return Err(Error::Unavailable(format!(
                "firewalld answers on the system bus but is not running (state {state})"
            )));
        }
        let zone = match &self.cfg.zone {
            Some(z) => z.clone(),
            None => self.get(PATH, NAME, "getDefaultZone", &())?,
        };
        let zones: Vec<String> = self.get(PATH, ZONE, "getZones", &())?;
        if !zones.contains(&zone) {
            return Err(Error::Config(format!(
                "FIREWD_ZONE '{zone}' is not a firewalld zone (zones: {})",
                zones.join(", ")
            )));
        }
        self.zone = Some(zone);
        if flush {
            self.remove_ours()?;
            self.deadlines.clear();
        }
        Ok(())
    }

    fn apply(&mut self, grants: &[Grant]) -> Result<(), Error> {
        if grants.is_empty() {
            return Ok(());
        }
        // One call per opening; one opening listed twice keeps its longest timeout.
        let mut wanted: Vec<(Key, u64)> = Vec::new();
        for g in grants {
            if g.nat.is_some() {
                return Err(Error::Config(
                    "NAT access is not implemented on the firewalld backend (use FIREWALL_TYPE nftables)".into(),
                ));
            }
            let key = (g.source, g.proto, g.port);
            let secs = g.timeout.as_secs().clamp(1, MAX_TIMEOUT);
            match wanted.iter_mut().find(|(k, _)| *k == key) {
                Some((_, s)) => *s = (*s).max(secs),
                None => wanted.push((key, secs)),
            }
        }
        let zone = self.zone()?;
        let now = Instant::now();
        let mut steps = Vec::new();
        for &(key, secs) in &wanted {
            match self.open(&zone, key, secs, now) {
                Ok(Some(s)) => steps.push((s, now + Duration::from_secs(secs))),
                Ok(None) => {}
                Err(e) => {
                    let done: Vec<Step> = steps.iter().map(|(s, _)| *s).collect();
                    self.undo(&zone, &done, now);
                    return Err(e);
                }
            }
        }
        for (s, until) in steps {
            let (Step::Added(k) | Step::Refreshed(k, _)) = s;
            self.deadlines.insert(k, until);
        }
        Ok(())
    }

    fn revoke(&mut self, grants: &[Grant]) -> Result<(), Error> {
        if grants.is_empty() {
            return Ok(());
        }
        let zone = self.zone()?;
        let mut permanent: Option<HashSet<Key>> = None;
        let mut first = None;
        for g in grants {
            let key = (g.source, g.proto, g.port);
            if !self.deadlines.contains_key(&key) {
                // Not added by this process: never close the admin's own rule.
                if permanent.is_none() {
                    permanent = Some(self.permanent(&zone)?);
                }
                if permanent.as_ref().is_some_and(|p| p.contains(&key)) {
                    continue;
                }
            }
            match self.remove(&zone, key) {
                Ok(()) => {
                    self.deadlines.remove(&key);
                }
                Err(e) => {
                    first.get_or_insert(Error::from(e));
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn list(&mut self) -> Result<Vec<Held>, Error> {
        let zone = self.zone()?;
        let ours = self.ours(&zone)?;
        let now = Instant::now();
        // Forget what firewalld has expired.
        self.deadlines.retain(|k, _| ours.contains(k));
        Ok(ours
            .into_iter()
            .map(|(source, proto, port)| Held {
                source,
                proto,
                port,
                left: self
                    .deadlines
                    .get(&(source, proto, port))
                    .map_or(Duration::ZERO, |d| d.saturating_duration_since(now)),
            })
            .collect())
    }

    fn intact(&mut self) -> Result<(), Error> {
        let zone = self.zone()?;
        let ours = self.ours(&zone)?;
        // A rule posternd added and firewalld has not yet expired (a second of margin
        // for firewalld's own timer) but no longer holds: firewalld was reloaded or
        // restarted, which drops every runtime rule.
        let soon = Instant::now() + Duration::from_secs(1);
        let lost = self
            .deadlines
            .iter()
            .filter(|(k, d)| **d > soon && !ours.contains(k))
            .count();
        if lost > 0 {
            return Err(Error::Missing(format!(
                "firewalld no longer holds {lost} of posternd's rich rules in zone {zone} (reloaded or restarted?)"
            )));
        }
        Ok(())
    }

    fn shutdown(&mut self) -> Result<(), Error> {
        let r = self.remove_ours();
        self.deadlines.clear();
        self.bus = None;
        r
    }

    fn describe(&self) -> String {
        let zone = match &self.zone {
            Some(z) => format!("zone {z}"),
            None => "firewalld's default zone".into(),
        };
        format!("firewalld ({zone}) over D-Bus, rich rules with timeouts")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_written_in_one_form_and_only_that_form_is_read() {
        let a: IpAddr = "198.18.1.2".parse().unwrap();
        let r = rich_rule(a, Protocol::Tcp, 22);
        assert_eq!(
            r,
            r#"rule family="ipv4" source address="198.18.1.2" port port="22" protocol="tcp" accept"#
        );
        assert_eq!(parse_rich_rule(&r), Some((a, Protocol::Tcp, 22)));
        let six: IpAddr = "2001:db8:1::2".parse().unwrap();
        let r6 = rich_rule(six, Protocol::Udp, 53);
        assert_eq!(
            r6,
            r#"rule family="ipv6" source address="2001:db8:1::2" port port="53" protocol="udp" accept"#
        );
        assert_eq!(parse_rich_rule(&r6), Some((six, Protocol::Udp, 53)));
        for other in [
            // The admin's: a log, a network, another spelling, a family that does not fit,
            // a range, a destination, a reject, a service.
            r#"rule family="ipv4" source address="198.18.1.2" port port="22" protocol="tcp" log prefix="x" accept"#,
            r#"rule family="ipv4" source address="198.18.1.0/24" port port="22" protocol="tcp" accept"#,
            r#"rule family="ipv6" source address="2001:DB8:1::2" port port="22" protocol="tcp" accept"#,
            r#"rule family="ipv6" source address="198.18.1.2" port port="22" protocol="tcp" accept"#,
            r#"rule family="ipv4" source address="198.18.1.2" port port="22-23" protocol="tcp" accept"#,
            r#"rule family="ipv4" source address="198.18.1.2" destination address="198.18.1.1" port port="22" protocol="tcp" accept"#,
            r#"rule family="ipv4" source address="198.18.1.2" port port="22" protocol="tcp" reject"#,
            r#"rule family="ipv4" source address="198.18.1.2" port port="22" protocol="sctp" accept"#,
            r#"rule family="ipv4" source address="198.18.1.2" service name="ssh" accept"#,
            r#"rule family="ipv4" source address="198.18.1.2" port port="22" protocol="tcp" accept "#,
            "",
        ] {
            assert_eq!(parse_rich_rule(other), None, "{other}");
        }
    }

    #[test]
    fn settings_are_checked_without_touching_anything() {
        assert!(Firewalld::new(FirewalldConfig::default()).is_ok());
        let z = |s: &str| {
            Firewalld::new(FirewalldConfig {
                zone: Some(s.into()),
            })
        };
        assert!(z("drop").is_ok());
        assert!(z("my-zone_2").is_ok());
        for bad in ["", "a b", "a\"b", "zone/x"] {
            assert!(z(bad).is_err(), "{bad}");
        }
        let fw = z("public").unwrap();
        assert_eq!(
            fw.describe(),
            "firewalld (zone public) over D-Bus, rich rules with timeouts"
        );
    }

    #[test]
    fn no_bus_is_an_unavailable_firewall() {
        let e: Error = Fail::Silent("I/O error: No such file or directory".into()).into();
        assert!(matches!(e, Error::Unavailable(_)));
        assert_eq!(
            e.to_string(),
            "firewalld does not answer on the system bus: I/O error: No such file or directory"
        );
        assert!(
            Fail::Said("ALREADY_ENABLED: 'rule ...' already in 'drop'".into())
                .is("ALREADY_ENABLED")
        );
        assert!(!Fail::Said("NOT_ENABLED: x".into()).is("ALREADY_ENABLED"));
    }
}
