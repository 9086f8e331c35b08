//! The running daemon: configuration, firewall, replay store and ledger, and the
//! handling of one datagram through the pipeline. No sockets here: `main.rs` feeds
//! datagrams in and asks for status.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use postern_capture::Datagram;
use postern_fw::Firewall;

use crate::config::Config;
use crate::log;
use crate::pipeline::apply::{self, CommandResult};
use crate::pipeline::authorize::{authorize, Clock, Decision, Reason, Verdict};
use crate::pipeline::decode::decode;
use crate::pipeline::expire::Ledger;
use crate::replay::{Meta, ReplayStore};

/// Counters for `posternd status`.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Datagrams examined.
    pub examined: u64,
    /// Refusals by reason label.
    pub refused: BTreeMap<&'static str, u64>,
    /// Grants opened (per port).
    pub grants: u64,
    /// Commands run.
    pub commands: u64,
    /// Firewall errors.
    pub firewall_errors: u64,
    /// Datagrams lost before examination (full queue, socket drops).
    pub dropped: u64,
}

/// What `handle` did, for callers and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Refused.
    Refused(String),
    /// Opened these grants (display form).
    Granted(Vec<String>),
    /// Started a command.
    Command(String),
    /// Ran a command cycle's open commands.
    Cycle(usize),
    /// Decided, but `--test` changes nothing.
    WouldAct(String),
}

/// The daemon state.
pub struct Daemon {
    /// Current configuration.
    pub config: Config,
    fw: Box<dyn Firewall>,
    replay: ReplayStore,
    ledger: Ledger,
    /// Counters.
    pub counters: Counters,
    /// Log every refusal, junk included (`-v`, `VERBOSE`).
    pub verbose: bool,
    test_mode: bool,
    junk: BTreeMap<&'static str, u64>,
    last_junk_log: Instant,
    started: u64,
    /// See [`Clock::not_before`].
    pub not_before: Option<u64>,
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Daemon {
    /// Assemble (touches nothing).
    pub fn new(
        config: Config,
        fw: Box<dyn Firewall>,
        replay: ReplayStore,
        test_mode: bool,
    ) -> Daemon {
        Daemon {
            config,
            fw,
            replay,
            ledger: Ledger::default(),
            counters: Counters::default(),
            verbose: false,
            test_mode,
            junk: BTreeMap::new(),
            last_junk_log: Instant::now(),
            started: now_unix(),
            not_before: None,
        }
    }

    /// Install the firewall base.
    pub fn setup_firewall(&mut self) -> Result<(), postern_fw::Error> {
        if self.test_mode {
            return Ok(());
        }
        self.fw.setup(self.config.server.flush_at_init)
    }

    /// The firewall's description.
    pub fn firewall(&self) -> String {
        if self.test_mode {
            "none (--test: no firewall changes)".into()
        } else {
            self.fw.describe()
        }
    }

    fn clock(&self, now: u64) -> Clock {
        let window = self.config.server.max_packet_age;
        Clock {
            now,
            aging: self.config.server.aging(),
            max_age: window,
            not_before: self.not_before.filter(|t| now <= t.saturating_add(window)),
        }
    }

    fn refuse(&mut self, label: &'static str) {
        *self.counters.refused.entry(label).or_insert(0) += 1;
    }

    fn count_junk(&mut self, label: &'static str) {
        self.refuse(label);
        *self.junk.entry(label).or_insert(0) += 1;
    }

    /// Run one datagram through the pipeline at time `now`.
    pub fn handle(&mut self, d: &Datagram, now: u64) -> Outcome {
        self.counters.examined += 1;
        let src = apply::unmap(d.src.ip());
        let dst = apply::unmap(d.dst.ip());
        let packet = match decode(&d.payload) {
            Ok(p) => p,
            Err(e) => {
                let r = Reason::Junk(e);
                self.count_junk(r.label());
                if self.verbose {
                    log::info(&format!("{src}: refused: {r}"));
                }
                return Outcome::Refused(r.to_string());
            }
        };
        let key = packet.replay_key();
        if self.replay.contains(&key) {
            self.count_junk("replay");
            if self.verbose {
                log::info(&format!("{src}: refused: {}", Reason::Replay));
            }
            return Outcome::Refused(Reason::Replay.to_string());
        }
        let decision = authorize(&packet, src, dst, &self.config.stanzas, self.clock(now));
        if decision.burn && self.replay.is_full() && !matches!(decision.verdict, Verdict::Drop(_)) {
            self.refuse("replay_store_full");
            let msg = format!(
                "{src}: the replay store is full ({} entries, MAX_REPLAY_ENTRIES); nothing opened until entries expire",
                self.replay.len()
            );
            log::warn(&msg);
            return Outcome::Refused(msg);
        }
        if decision.burn {
            let meta = Meta {
                proto: 17,
                src: SocketAddr::new(src, d.src.port()),
                dst: SocketAddr::new(dst, d.dst.port()),
            };
            if let Err(e) = self.replay.record(key, meta, now) {
                self.refuse("replay_store");
                let msg = format!("{src}: cannot record the replay digest ({e}); nothing opened");
                log::error(&msg);
                return Outcome::Refused(msg);
            }
        }
        self.act(decision, src, now)
    }

    /// User, group and timeout for the commands of stanza `i`.
    fn exec_identity(&self, i: Option<usize>) -> (Option<String>, Option<String>, Duration) {
        let s = i.and_then(|i| self.config.stanzas.get(i));
        (
            s.and_then(|s| s.cmd_exec_user.clone()),
            s.and_then(|s| s.cmd_exec_group.clone()),
            Duration::from_secs(self.config.server.cmd_exec_timeout),
        )
    }

    fn stanza_name(&self, i: Option<usize>) -> String {
        i.and_then(|i| self.config.stanzas.get(i))
            .map_or_else(|| "-".into(), |s| s.name())
    }

    fn act(&mut self, decision: Decision, src: IpAddr, now: u64) -> Outcome {
        let stanza = self.stanza_name(decision.stanza);
        let who = match &decision.username {
            Some(u) => format!("{src} (stanza {stanza}, user '{}')", u.escape_default()),
            None => format!("{src} (stanza {stanza})"),
        };
        match decision.verdict {
            Verdict::Drop(reason) => {
                let label = reason.label();
                if decision.burn {
                    self.refuse(label);
                    log::info(&format!("{who}: refused: {reason}"));
                } else {
                    // Never decrypted under any stanza: junk, counted and summarised.
                    self.count_junk(label);
                    if self.verbose {
                        log::info(&format!("{who}: refused: {reason}"));
                    }
                }
                Outcome::Refused(reason.to_string())
            }
            Verdict::Grant(g) => {
                let mut grants = apply::grants(&g);
                for gr in &mut grants {
                    let t = self.ledger.effective_timeout(
                        (gr.source, gr.proto, gr.port),
                        gr.timeout.as_secs(),
                        now,
                    );
                    gr.timeout = Duration::from_secs(t);
                }
                let shown: Vec<String> = grants
                    .iter()
                    .map(|x| format!("{}/{}", x.proto.name(), x.port))
                    .collect();
                let desc = format!("{} for {} ({}s)", g.allow, shown.join(","), g.timeout);
                if self.test_mode {
                    log::info(&format!("{who}: would open {desc} (--test)"));
                    return Outcome::WouldAct(desc);
                }
                let applied = self.fw.apply(&grants).or_else(|first| {
                    // The base may be gone (table deleted under us): reinstall it, once.
                    match self.fw.setup(false) {
                        Ok(()) => {
                            log::warn(&format!(
                                "firewall change refused ({first}); base reinstalled"
                            ));
                            self.fw.apply(&grants)
                        }
                        Err(_) => Err(first),
                    }
                });
                match applied {
                    Ok(()) => {
                        for gr in &grants {
                            self.ledger.record(
                                (gr.source, gr.proto, gr.port),
                                &stanza,
                                now + gr.timeout.as_secs(),
                            );
                        }
                        self.counters.grants += grants.len() as u64;
                        log::info(&format!("{who}: granted {desc}"));
                        Outcome::Granted(grants.iter().map(ToString::to_string).collect())
                    }
                    Err(e) => {
                        self.counters.firewall_errors += 1;
                        let msg = format!("{who}: NOT opened {desc}: {e}");
                        log::error(&msg);
                        Outcome::Refused(msg)
                    }
                }
            }
            Verdict::Command(c) => {
                if self.test_mode {
                    log::info(&format!(
                        "{who}: would run a command for {} (--test)",
                        c.allow
                    ));
                    return Outcome::WouldAct(c.command);
                }
                let (user, group, timeout) = self.exec_identity(decision.stanza);
                self.counters.commands += 1;
                log::info(&format!(
                    "{who}: running command for {} as {}",
                    c.allow,
                    user.as_deref().unwrap_or("root")
                ));
                spawn_command(c.command.clone(), user, group, timeout, who);
                Outcome::Command(c.command)
            }
            Verdict::Cycle(cy) => {
                if self.test_mode {
                    log::info(&format!(
                        "{who}: would run {} open command(s) (--test)",
                        cy.open.len()
                    ));
                    return Outcome::WouldAct(cy.open.join("; "));
                }
                let (user, group, timeout) = self.exec_identity(decision.stanza);
                for cmd in &cy.open {
                    spawn_command(
                        cmd.clone(),
                        user.clone(),
                        group.clone(),
                        timeout,
                        format!("{who} cycle open"),
                    );
                }
                for cmd in cy.close {
                    self.ledger
                        .schedule_close(now + cy.timer, cmd, stanza.clone());
                }
                self.counters.commands += cy.open.len() as u64;
                log::info(&format!(
                    "{who}: command cycle opened ({} command(s), close in {}s)",
                    cy.open.len(),
                    cy.timer
                ));
                Outcome::Cycle(cy.open.len())
            }
        }
    }

    /// Periodic work: forget old replay entries, run due cycle closes, summarise junk.
    pub fn tick(&mut self, now: u64) {
        if let Err(e) = self.replay.prune(now) {
            log::error(&format!("cannot compact the replay store: {e}"));
        }
        self.run_closes(now, false);
        if !self.junk.is_empty() && self.last_junk_log.elapsed() >= Duration::from_secs(60) {
            let parts: Vec<String> = self.junk.iter().map(|(k, v)| format!("{k} {v}")).collect();
            log::info(&format!(
                "refused without decryption in the last minute: {}",
                parts.join(", ")
            ));
            self.junk.clear();
            self.last_junk_log = Instant::now();
        }
    }

    fn run_closes(&mut self, now: u64, all: bool) {
        for (cmd, stanza) in self.ledger.due_closes(now, all) {
            let i = self.config.stanzas.iter().position(|s| s.name() == stanza);
            let (user, group, timeout) = self.exec_identity(i);
            let r = apply::run_command(&cmd, user.as_deref(), group.as_deref(), timeout);
            log::info(&format!("stanza {stanza}: cycle close command: {r:?}"));
        }
    }

    /// Replace the configuration, keeping grants and the replay store.
    pub fn reload(&mut self, config: Config) {
        self.config = config;
    }

    /// Stop: run pending cycle closes, then remove grants as FLUSH_IPT_AT_EXIT says.
    /// With a default-drop table the base stays, so the host stays closed.
    pub fn shutdown(&mut self) {
        self.run_closes(0, true);
        if self.test_mode || !self.config.server.flush_at_exit {
            return;
        }
        let keep_base = self.config.server.nft_default_drop;
        if let Err(e) = self.fw.teardown(keep_base) {
            log::error(&format!("cannot clean up the firewall at exit: {e}"));
        }
    }

    /// Status as JSON.
    pub fn status_json(&mut self, now: u64, extra: &serde_json::Value) -> serde_json::Value {
        let active: Vec<serde_json::Value> = self
            .ledger
            .active(now)
            .into_iter()
            .map(|((ip, proto, port), e)| {
                serde_json::json!({
                    "source": ip.to_string(),
                    "proto": proto.name(),
                    "port": port,
                    "stanza": e.stanza,
                    "seconds_left": e.expires.saturating_sub(now),
                })
            })
            .collect();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "started": self.started,
            "firewall": self.firewall(),
            "examined": self.counters.examined,
            "refused": self.counters.refused,
            "grants": self.counters.grants,
            "commands": self.counters.commands,
            "firewall_errors": self.counters.firewall_errors,
            "dropped": self.counters.dropped,
            "replay_entries": self.replay.len(),
            "core_dumps": if nix::sys::prctl::get_dumpable().unwrap_or(true) { "enabled" } else { "disabled" },
            "intake": extra["intake"],
            "active": active,
        })
    }
}

fn spawn_command(
    command: String,
    user: Option<String>,
    group: Option<String>,
    timeout: Duration,
    who: String,
) {
    std::thread::spawn(move || {
        let r = apply::run_command(&command, user.as_deref(), group.as_deref(), timeout);
        match r {
            CommandResult::Exited(0) => log::info(&format!("{who}: command finished")),
            other => log::warn(&format!("{who}: command ended badly: {other:?}")),
        }
    });
}

/// Render status JSON as text for people.
pub fn status_text(v: &serde_json::Value) -> String {
    let mut s = format!(
        "posternd {} (pid {})\nintake: {}\nfirewall: {}\n",
        v["version"].as_str().unwrap_or("?"),
        v["pid"],
        v["intake"].as_str().unwrap_or("?"),
        v["firewall"].as_str().unwrap_or("?")
    );
    let refused: u64 = v["refused"].as_object().map_or(0, |m| {
        m.values().filter_map(serde_json::Value::as_u64).sum()
    });
    s.push_str(&format!(
        "packets examined: {}, refused: {}, ports opened: {}, commands: {}, firewall errors: {}, dropped before examination: {}\n",
        v["examined"], refused, v["grants"], v["commands"], v["firewall_errors"], v["dropped"]
    ));
    if let Some(m) = v["refused"].as_object() {
        if !m.is_empty() {
            let parts: Vec<String> = m.iter().map(|(k, n)| format!("{k} {n}")).collect();
            s.push_str(&format!("refused by reason: {}\n", parts.join(", ")));
        }
    }
    let active = v["active"].as_array().cloned().unwrap_or_default();
    if active.is_empty() {
        s.push_str("active grants: none\n");
    } else {
        s.push_str(&format!("active grants: {}\n", active.len()));
        s.push_str(&format!(
            "  {:<40} {:<12} {:<24} {:>6}\n",
            "SOURCE", "PROTO/PORT", "STANZA", "LEFT"
        ));
        for a in active {
            s.push_str(&format!(
                "  {:<40} {:<12} {:<24} {:>5}s\n",
                a["source"].as_str().unwrap_or(""),
                format!("{}/{}", a["proto"].as_str().unwrap_or(""), a["port"]),
                a["stanza"].as_str().unwrap_or(""),
                a["seconds_left"].as_u64().unwrap_or(0)
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_fw::memory::Memory;
    use postern_proto::{
        encode, DigestType, EncryptionMode, HmacKey, Key, Keys, MessageType, RandomValue,
        SpaMessage,
    };

    const T: u64 = 1_795_000_000;

    fn config(access: &str) -> Config {
        let (server, notes) =
            crate::config::server::parse("", std::path::Path::new("/etc/postern/fwknopd.conf"))
                .unwrap();
        let stanzas = crate::config::access::parse_text(
            access,
            std::path::Path::new("/etc/postern/access.conf"),
            0,
        )
        .unwrap();
        Config {
            server,
            stanzas,
            notes,
        }
    }

    fn packet(n: u8, ts: u64, port: u16) -> Datagram {
        let keys = Keys::new(
            Key::from_passphrase("enc"),
            EncryptionMode::Cbc,
            Some(HmacKey {
                key: Key::from_passphrase("mac"),
                digest: DigestType::Sha256,
            }),
        )
        .unwrap();
        let m = SpaMessage {
            random_value: RandomValue::from_digits(&format!("{:016}", u64::from(n) + 1000))
                .unwrap(),
            username: "u".into(),
            timestamp: ts,
            version: "3.0.0".into(),
            message_type: MessageType::Access,
            message: format!("198.18.1.2,tcp/{port}"),
            nat_access: None,
            server_auth: None,
            client_timeout: 0,
        };
        let w = encode(&m, &keys, DigestType::Sha256, [n; 8]).unwrap();
        Datagram {
            src: "198.18.1.2:5000".parse().unwrap(),
            dst: "198.18.1.1:62201".parse().unwrap(),
            payload: w.into_bytes(),
        }
    }

    fn daemon(cap: usize) -> (Daemon, Memory) {
        let mem = Memory::default();
        let d = Daemon::new(
            config("SOURCE ANY\nKEY enc\nHMAC_KEY mac\n"),
            Box::new(mem.clone()),
            ReplayStore::in_memory(240, cap),
            false,
        );
        (d, mem)
    }

    fn granted(o: &Outcome) -> bool {
        matches!(o, Outcome::Granted(_))
    }

    #[test]
    fn clock_steps_keep_replay_and_age_checks_right() {
        let (mut d, _) = daemon(1000);
        let p = packet(1, T, 22);
        assert!(granted(&d.handle(&p, T)));
        // The clock steps back an hour (NTP): the packet is still a replay.
        assert_eq!(
            d.handle(&p, T - 3600),
            Outcome::Refused(Reason::Replay.to_string())
        );
        d.tick(T - 3600);
        assert_eq!(
            d.handle(&p, T - 3600),
            Outcome::Refused(Reason::Replay.to_string()),
            "prune must not forget it"
        );
        // A fresh packet stamped before the step is judged against the new clock.
        assert!(
            matches!(d.handle(&packet(2, T, 22), T - 3600), Outcome::Refused(r) if r.contains("outside the allowed window"))
        );
        // The clock steps forward: old packets are too old, current ones fine.
        assert!(
            matches!(d.handle(&packet(3, T, 22), T + 500), Outcome::Refused(r) if r.contains("outside the allowed window"))
        );
        assert!(granted(&d.handle(&packet(4, T + 500, 22), T + 500)));
        // Entries live for twice the window after they were recorded, then go.
        d.tick(T + 500 + 241);
        assert!(!d.replay.contains(
            &postern_proto::Packet::new_checked(&packet(4, T + 500, 22).payload)
                .unwrap()
                .replay_key()
        ));
    }

    #[test]
    fn a_full_store_refuses_instead_of_forgetting() {
        let (mut d, mem) = daemon(2);
        assert!(granted(&d.handle(&packet(1, T, 22), T)));
        assert!(granted(&d.handle(&packet(2, T, 23), T)));
        assert!(
            matches!(d.handle(&packet(3, T, 24), T), Outcome::Refused(r) if r.contains("replay store is full"))
        );
        assert_eq!(mem.record.lock().unwrap().grants.len(), 2);
        assert_eq!(d.counters.refused["replay_store_full"], 1);
        // Once entries expire there is room again.
        d.tick(T + 241);
        assert!(granted(&d.handle(&packet(5, T + 241, 25), T + 241)));
    }

    #[test]
    fn after_a_lost_store_only_packets_stamped_after_start_count() {
        let (mut d, _) = daemon(1000);
        d.not_before = Some(T);
        assert!(
            matches!(d.handle(&packet(1, T - 10, 22), T), Outcome::Refused(r) if r.contains("stamped before posternd started"))
        );
        assert!(granted(&d.handle(&packet(2, T, 22), T)));
        // After one window the guard is gone (the age check covers the rest).
        assert!(granted(&d.handle(&packet(3, T + 100, 22), T + 121)));
    }

    #[test]
    fn a_refusing_firewall_opens_nothing_and_the_daemon_goes_on() {
        let (mut d, mem) = daemon(1000);
        *mem.fail_apply.lock().unwrap() = Some("netlink: table deleted".into());
        assert!(
            matches!(d.handle(&packet(1, T, 22), T), Outcome::Refused(r) if r.contains("NOT opened"))
        );
        assert_eq!(d.counters.firewall_errors, 1);
        assert!(
            d.ledger.active(T).is_empty(),
            "a failed grant must not be reported open"
        );
        assert_eq!(
            mem.record.lock().unwrap().setups,
            [false],
            "the base was reinstalled once"
        );
        *mem.fail_apply.lock().unwrap() = None;
        assert!(granted(&d.handle(&packet(2, T, 22), T)));
        assert_eq!(d.ledger.active(T).len(), 1);
    }
}
