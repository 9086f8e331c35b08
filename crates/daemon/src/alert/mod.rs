//! Access alerts: a message when access is opened (a grant), when it closes (expiry, or
//! removal at exit), when a replayed packet is seen, and on faults (a refusing firewall,
//! a replay store that lost its disk, a worker that died), sent by e-mail (the local
//! `sendmail` interface or an SMTP relay), to a signed webhook and to an argv hook.
//!
//! ```text
//!  main loop ─ Alerts::emit ─► rate limit ─► bounded queue (256) ─► sender thread ─┬─► e-mail
//!  (never waits: a full          (replays, faults:       │ full: dropped,          ├─► webhook
//!   queue drops and counts)       1 a minute a kind)     │ counted                 └─► command
//! ```
//!
//! Nothing here is on the decision path: [`Alerts::emit`] takes no lock that the sender
//! holds, does no I/O and never blocks; each delivery is bounded by `ALERT_TIMEOUT`.
//! Failures are logged (one line, at most one a minute per sink) and counted. It runs in
//! the privileged part only (the worker's daemon has alerts off). What it does not do:
//! retry a failed delivery, or keep alerts across a restart.

mod config;
mod sink;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use config::{
    directive, finish, AlertConfig, SmtpAuth, SmtpRelay, SmtpSecurity, DEFAULT_SENDMAIL,
    DEFAULT_TIMEOUT,
};

use crate::log;

/// Alerts waiting for the sender at most; more are dropped and counted.
pub const QUEUE: usize = 256;

/// Replay and fault alerts of one kind: at most one in this window.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// A fault worth an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The firewall refused a change.
    Firewall,
    /// The replay store lost its disk and runs in memory only.
    Persistence,
    /// The unprivileged worker died or broke the protocol.
    Worker,
}

impl Fault {
    /// Its name in messages (`fault` in JSON, `POSTERN_FAULT`).
    pub fn name(self) -> &'static str {
        match self {
            Fault::Firewall => "firewall",
            Fault::Persistence => "persistence",
            Fault::Worker => "worker",
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Access opened.
    Grant,
    /// Access closed.
    Close,
    /// A replayed packet.
    Replay,
    /// Something failed.
    Fault(Fault),
}

impl Kind {
    /// Its name (`event` in JSON, `POSTERN_EVENT`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Grant => "grant",
            Kind::Close => "close",
            Kind::Replay => "replay",
            Kind::Fault(_) => "fault",
        }
    }

    /// The rate-limit bucket, for the kinds that have one.
    fn bucket(self) -> Option<&'static str> {
        match self {
            Kind::Grant | Kind::Close => None,
            Kind::Replay => Some("replay"),
            Kind::Fault(f) => Some(f.name()),
        }
    }
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: Kind,
    /// The source address concerned.
    pub source: Option<IpAddr>,
    /// The stanza (file:line).
    pub stanza: Option<String>,
    /// The ports, `tcp/22`.
    pub ports: Vec<String>,
    /// When the access closes (a grant) or closed (a close), Unix seconds.
    pub deadline: Option<u64>,
    /// A sentence for people.
    pub detail: String,
    /// When it happened (Unix seconds; set by [`Alerts::emit`]).
    pub time: u64,
    /// This gateway's host name (set by [`Alerts::emit`]).
    pub host: String,
    /// Alerts of the same kind left out since the last one sent (rate limit).
    pub suppressed: u64,
}

impl Event {
    fn new(kind: Kind, detail: String) -> Event {
        Event {
            kind,
            source: None,
            stanza: None,
            ports: Vec::new(),
            deadline: None,
            detail,
            time: 0,
            host: String::new(),
            suppressed: 0,
        }
    }

    /// Access opened for `source` on `ports` until `deadline`.
    pub fn grant(
        source: IpAddr,
        stanza: &str,
        ports: Vec<String>,
        deadline: u64,
        detail: String,
    ) -> Event {
        Event {
            source: Some(source),
            stanza: Some(stanza.to_owned()),
            ports,
            deadline: Some(deadline),
            ..Event::new(Kind::Grant, detail)
        }
    }

    /// Access closed for `source` on `ports` at `deadline`.
    pub fn close(
        source: IpAddr,
        stanza: &str,
        ports: Vec<String>,
        deadline: u64,
        detail: String,
    ) -> Event {
        Event {
            kind: Kind::Close,
            ..Event::grant(source, stanza, ports, deadline, detail)
        }
    }

    /// A replayed packet from `source`.
    pub fn replay(source: IpAddr) -> Event {
        Event {
            source: Some(source),
            ..Event::new(
                Kind::Replay,
                "a packet already seen was sent again and refused (replay)".into(),
            )
        }
    }

    /// A fault, with the log line's text.
    pub fn fault(fault: Fault, source: Option<IpAddr>, detail: String) -> Event {
        Event {
            source,
            ..Event::new(Kind::Fault(fault), detail)
        }
    }

    /// The event as the webhook and the command get it.
    pub fn json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "event": self.kind.name(),
            "host": self.host,
            "time": rfc3339(self.time),
            "source": self.source.map(|s| s.to_string()),
            "stanza": self.stanza,
            "ports": self.ports,
            "deadline": self.deadline.map(rfc3339),
            "detail": self.detail,
            "suppressed": self.suppressed,
        });
        if let Kind::Fault(f) = self.kind {
            v["fault"] = f.name().into();
        }
        v
    }

    /// The e-mail subject.
    pub fn subject(&self) -> String {
        let src = self.source.map_or_else(|| "-".into(), |s| s.to_string());
        let what = match self.kind {
            Kind::Grant => format!("access opened for {src} ({})", self.ports.join(",")),
            Kind::Close => format!("access closed for {src} ({})", self.ports.join(",")),
            Kind::Replay => format!("replayed SPA packet from {src}"),
            Kind::Fault(f) => format!("{} fault", f.name()),
        };
        log::clean(&format!("posternd on {}: {what}", self.host)).into_owned()
    }

    /// The e-mail body: one `name: value` line per field that applies.
    pub fn text(&self) -> String {
        let mut lines = vec![
            ("event", self.describe().to_owned()),
            ("host", self.host.clone()),
            ("time", rfc3339(self.time)),
        ];
        if let Some(s) = self.source {
            lines.push(("source", s.to_string()));
        }
        if let Some(s) = &self.stanza {
            lines.push(("stanza", s.clone()));
        }
        if !self.ports.is_empty() {
            lines.push(("ports", self.ports.join(", ")));
        }
        if let Some(d) = self.deadline {
            lines.push(("deadline", rfc3339(d)));
        }
        lines.push(("detail", self.detail.clone()));
        let mut s = String::new();
        for (k, v) in lines {
            s.push_str(&format!("{:<10}{}\n", format!("{k}:"), log::clean(&v)));
        }
        if self.suppressed > 0 {
            s.push_str(&format!(
                "\n{} more {} alert(s) were left out since the last one (at most one a minute).\n",
                self.suppressed,
                self.kind.name()
            ));
        }
        s
    }

    fn describe(&self) -> &'static str {
        match self.kind {
            Kind::Grant => "grant (access opened)",
            Kind::Close => "close (access closed)",
            Kind::Replay => "replay (a replayed packet was refused)",
            Kind::Fault(Fault::Firewall) => "fault: firewall",
            Kind::Fault(Fault::Persistence) => "fault: replay store persistence lost",
            Kind::Fault(Fault::Worker) => "fault: worker",
        }
    }

    /// The `POSTERN_*` variables of the command's environment (those that apply).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("POSTERN_EVENT", self.kind.name().to_owned()),
            ("POSTERN_HOST", self.host.clone()),
            ("POSTERN_TIME", rfc3339(self.time)),
        ];
        if let Kind::Fault(f) = self.kind {
            v.push(("POSTERN_FAULT", f.name().to_owned()));
        }
        if let Some(s) = self.source {
            v.push(("POSTERN_SOURCE", s.to_string()));
        }
        if let Some(s) = &self.stanza {
            v.push(("POSTERN_STANZA", s.clone()));
        }
        if !self.ports.is_empty() {
            v.push(("POSTERN_PORTS", self.ports.join(",")));
        }
        if let Some(d) = self.deadline {
            v.push(("POSTERN_DEADLINE", rfc3339(d)));
        }
        v.into_iter()
            .map(|(k, s)| (k, log::clean(&s).into_owned()))
            .collect()
    }
}

/// Unix seconds as RFC 3339 UTC (`2026-05-01T12:00:00Z`).
pub fn rfc3339(t: u64) -> String {
    let (days, secs) = (t / 86_400, t % 86_400);
    // Days to a civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Counters shared with the sender thread (monotonic across reloads).
#[derive(Debug, Default)]
pub struct Counters {
    /// Deliveries that succeeded (one per sink and alert).
    pub sent: AtomicU64,
    /// Deliveries that failed.
    pub failed: AtomicU64,
    /// Alerts dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Alerts waiting in the queue now.
    pub queued: AtomicU64,
    /// Replay and fault alerts left out by the rate limit.
    pub suppressed: AtomicU64,
    /// The last failure, for status.
    pub last_error: Mutex<Option<String>>,
}

/// The alert queue as the daemon holds it. [`Alerts::off`] when nothing is configured.
pub struct Alerts {
    queue: Option<SyncSender<Event>>,
    counters: Arc<Counters>,
    sinks: Vec<String>,
    host: String,
    limits: HashMap<&'static str, (Instant, u64)>,
    full_logged: Option<Instant>,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    running: sink::Running,
    config: Option<AlertConfig>,
}

impl Default for Alerts {
    fn default() -> Alerts {
        Alerts::off()
    }
}

impl Alerts {
    /// No alerts (the worker, `--test`, a configuration without `ALERT_*`).
    pub fn off() -> Alerts {
        Alerts {
            queue: None,
            counters: Arc::default(),
            sinks: Vec::new(),
            host: host_name(),
            limits: HashMap::new(),
            full_logged: None,
            thread: None,
            stop: Arc::default(),
            running: sink::Running::default(),
            config: None,
        }
    }

    /// Build the sinks `cfg` asks for and start the sender thread (nothing when none is
    /// configured). An error names the sink that cannot be built.
    pub fn start(cfg: &AlertConfig) -> Result<Alerts, String> {
        let mut a = Alerts::off();
        a.restart(cfg)?;
        Ok(a)
    }

    /// After a reload: if the settings changed, new sinks and a new sender (the old one
    /// finishes what it holds, then ends); the counters go on. On error nothing changes.
    pub fn restart(&mut self, cfg: &AlertConfig) -> Result<(), String> {
        if self.config.as_ref() == Some(cfg) || (self.config.is_none() && !cfg.enabled()) {
            return Ok(());
        }
        let host = host_name();
        let running = sink::Running::default();
        let sinks = sink::build(cfg, &host, &running)?;
        let names: Vec<String> = sinks.iter().map(|s| s.name()).collect();
        let (tx, rx) = mpsc::sync_channel::<Event>(QUEUE);
        let counters = self.counters.clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = if sinks.is_empty() {
            None
        } else {
            Some(
                std::thread::Builder::new()
                    .name("alerts".into())
                    .spawn(move || sender(rx, sinks, &counters, &stopping))
                    .map_err(|e| format!("cannot start the alert sender: {e}"))?,
            )
        };
        self.queue = thread.as_ref().map(|_| tx);
        self.thread = thread;
        self.stop = stop;
        self.running = running;
        self.sinks = names;
        self.host = host;
        self.config = Some(cfg.clone());
        Ok(())
    }

    /// Whether alerts are sent at all.
    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Queue an alert; never blocks. Replays and faults are rate-limited (one a minute a
    /// kind, the next one carries the count of those left out); a full queue drops it.
    pub fn emit(&mut self, mut ev: Event) {
        let Some(tx) = &self.queue else { return };
        if let Some(bucket) = ev.kind.bucket() {
            match self.limits.get_mut(bucket) {
                Some((last, left_out)) if last.elapsed() < RATE_WINDOW => {
                    *left_out += 1;
                    self.counters.suppressed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Some((last, left_out)) => {
                    ev.suppressed = std::mem::take(left_out);
                    *last = Instant::now();
                }
                None => {
                    self.limits.insert(bucket, (Instant::now(), 0));
                }
            }
        }
        ev.time = crate::clock::Now::read().wall;
        ev.host.clone_from(&self.host);
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Full(ev)) => {
                self.counters.queued.fetch_sub(1, Ordering::Relaxed);
                let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if self.full_logged.is_none_or(|t| t.elapsed() >= RATE_WINDOW) {
                    log::warn(&format!(
                        "the alert queue is full ({QUEUE} waiting): the {} alert was dropped ({n} dropped so far; at most one such line a minute)",
                        ev.kind.name()
                    ));
                    self.full_logged = Some(Instant::now());
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.counters.queued.fetch_sub(1, Ordering::Relaxed);
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// For `posternd status`: the sinks and the counters.
    pub fn json(&self) -> serde_json::Value {
        let c = &self.counters;
        serde_json::json!({
            "sinks": self.sinks,
            "sent": c.sent.load(Ordering::Relaxed),
            "failed": c.failed.load(Ordering::Relaxed),
            "dropped": c.dropped.load(Ordering::Relaxed),
            "queued": c.queued.load(Ordering::Relaxed),
            "suppressed": c.suppressed.load(Ordering::Relaxed),
            "last_error": *c.last_error.lock().unwrap_or_else(PoisonError::into_inner),
        })
    }

    /// At exit: no more alerts; give the sender up to `within` to deliver what it holds.
    pub fn finish(&mut self, within: Duration) {
        self.queue = None;
        let Some(t) = self.thread.take() else { return };
        let start = Instant::now();
        while !t.is_finished() && start.elapsed() < within {
            std::thread::sleep(Duration::from_millis(20));
        }
        // What is still queued is given up (the sender ends after its current delivery,
        // and a command still running is killed).
        self.stop.store(true, Ordering::Relaxed);
        if !t.is_finished() {
            self.running.kill();
        }
        let left = self.counters.queued.load(Ordering::Relaxed);
        if !t.is_finished() && left > 0 {
            log::warn(&format!(
                "{left} alert(s) not delivered at exit (the sender did not finish within {}s)",
                within.as_secs()
            ));
        }
    }
}

/// This host's name, as alerts name the gateway.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The sender thread: each alert to every sink, in order, until the queue closes.
fn sender(
    rx: mpsc::Receiver<Event>,
    mut sinks: Vec<Box<dyn sink::Sink>>,
    c: &Counters,
    stop: &std::sync::atomic::AtomicBool,
) {
    let mut logged: Vec<(Option<Instant>, u64)> = vec![(None, 0); sinks.len()];
    for ev in rx {
        c.queued.fetch_sub(1, Ordering::Relaxed);
        for (i, s) in sinks.iter_mut().enumerate() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match s.deliver(&ev) {
                Ok(()) => {
                    c.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    c.failed.fetch_add(1, Ordering::Relaxed);
                    let line = format!("alert ({}) {}: {e}", ev.kind.name(), s.name());
                    *c.last_error.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some(line.clone());
                    let (last, quiet) = &mut logged[i];
                    if last.is_none_or(|t| t.elapsed() >= RATE_WINDOW) {
                        let more = if *quiet > 0 {
                            format!(
                                " ({quiet} more failure(s) of this sink since the last such line)"
                            )
                        } else {
                            String::new()
                        };
                        log::error(&format!("{line}{more}"));
                        *last = Some(Instant::now());
                        *quiet = 0;
                    } else {
                        *quiet += 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn messages_name_what_applies_and_escape_control_characters() {
        let mut ev = Event::grant(
            "198.18.1.2".parse().unwrap(),
            "/etc/postern/access.conf:1\n",
            vec!["tcp/22".into(), "udp/53".into()],
            1_795_000_030,
            "198.18.1.2 for tcp/22,udp/53 (30s)".into(),
        );
        ev.time = 1_795_000_000;
        ev.host = "gw1".into();
        let text = ev.text();
        assert!(text.contains("source:   198.18.1.2\n"), "{text}");
        assert!(text.contains("ports:    tcp/22, udp/53\n"), "{text}");
        assert!(text.contains("deadline: 2026-11-18T11:07:10Z\n"), "{text}");
        assert!(
            text.contains("stanza:   /etc/postern/access.conf:1\\u{a}\n"),
            "{text}"
        );
        assert_eq!(
            ev.subject(),
            "posternd on gw1: access opened for 198.18.1.2 (tcp/22,udp/53)"
        );
        let j = ev.json();
        assert_eq!(j["event"], "grant");
        assert_eq!(j["deadline"], "2026-11-18T11:07:10Z");
        assert_eq!(j["ports"][1], "udp/53");
        let env: HashMap<_, _> = ev.env().into_iter().collect();
        assert_eq!(env["POSTERN_PORTS"], "tcp/22,udp/53");
        assert_eq!(env["POSTERN_STANZA"], "/etc/postern/access.conf:1\\u{a}");
        let f = Event::fault(Fault::Worker, None, "the worker exited".into());
        assert_eq!(f.json()["fault"], "worker");
        assert!(f.json()["source"].is_null());
        assert!(!f.env().iter().any(|(k, _)| *k == "POSTERN_SOURCE"));
    }

    fn script(dir: &std::path::Path, name: &str, body: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        p.display().to_string()
    }

    fn wait(what: &str, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{what}");
    }

    #[test]
    fn a_stuck_sink_never_slows_emit_and_a_full_queue_drops_and_counts() {
        let dir = std::env::temp_dir().join(format!("postern-alert-q-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cmd = script(&dir, "stuck", "sleep 3");
        let mut cfg = AlertConfig::default();
        directive(&mut cfg, "ALERT_COMMAND", &cmd).unwrap().unwrap();
        directive(&mut cfg, "ALERT_TIMEOUT", "2").unwrap().unwrap();
        let mut a = Alerts::start(&cfg).unwrap();
        let start = Instant::now();
        let n = QUEUE as u64 + 50;
        for i in 0..n {
            a.emit(Event::grant(
                "198.18.1.2".parse().unwrap(),
                "s:1",
                vec![format!("tcp/{}", 1000 + i)],
                0,
                String::new(),
            ));
        }
        let took = start.elapsed();
        assert!(took < Duration::from_millis(200), "emit waited: {took:?}");
        let j = a.json();
        let (queued, dropped) = (
            j["queued"].as_u64().unwrap(),
            j["dropped"].as_u64().unwrap(),
        );
        // One may be with the sender already; the rest waits or was dropped.
        assert!(dropped >= n - QUEUE as u64 - 1, "{j}");
        assert!((n - 1..=n).contains(&(queued + dropped)), "{j}");
        // The stuck command is killed at ALERT_TIMEOUT and counted as a failure.
        wait("the timed-out command was not counted", || {
            a.json()["failed"].as_u64() >= Some(1)
        });
        assert!(
            a.json()["last_error"]
                .as_str()
                .unwrap()
                .contains("killed at the timeout"),
            "{}",
            a.json()
        );
        a.finish(Duration::from_millis(100));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn replays_and_faults_are_rate_limited_per_kind_and_the_next_one_counts() {
        let dir = std::env::temp_dir().join(format!("postern-alert-r-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let cmd = script(
            &dir,
            "rec",
            &format!("cat >> {}; echo >> {}", out.display(), out.display()),
        );
        let mut cfg = AlertConfig::default();
        directive(&mut cfg, "ALERT_COMMAND", &cmd).unwrap().unwrap();
        let mut a = Alerts::start(&cfg).unwrap();
        let src: IpAddr = "198.18.1.9".parse().unwrap();
        for _ in 0..5 {
            a.emit(Event::replay(src));
        }
        a.emit(Event::fault(
            Fault::Firewall,
            None,
            "netlink: table deleted".into(),
        ));
        a.emit(Event::fault(Fault::Firewall, None, "again".into()));
        a.emit(Event::fault(Fault::Persistence, None, "disk full".into()));
        assert_eq!(a.json()["suppressed"], 5);
        // The window has passed for the replay bucket: the next one carries the count.
        a.limits.get_mut("replay").unwrap().0 = Instant::now() - RATE_WINDOW;
        a.emit(Event::replay(src));
        wait("four alerts delivered", || {
            a.json()["sent"].as_u64() == Some(4)
        });
        let text = std::fs::read_to_string(&out).unwrap();
        let events: Vec<serde_json::Value> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["replay", "fault", "fault", "replay"]);
        assert_eq!(events[3]["suppressed"], 4);
        assert_eq!(events[2]["fault"], "persistence");
        a.finish(Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
