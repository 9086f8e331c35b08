//! Privilege separation: the process that reads and parses packets from the network
//! runs as an unprivileged user, without capabilities, with `no_new_privs`.
//!
//! ```text
//!  posternd (root: firewall, replay store, commands, control socket)
//!     │  spawns, as root ──► posternd --worker: load config, open capture sockets,
//!     │                      read the replay store, then drop to WORKER_USER
//!     │◄── {"t":"decided", key, source, stanza, verdict}   (only packets that decrypted)
//!     │──► {"t":"result", "recorded": true}                 (after fdatasync + firewall)
//!     │◄── {"t":"stats", counters}                          (every second)
//! ```
//!
//! The worker does decode and authorize. The privileged part trusts none of what it
//! sends: it re-validates each request against the stanza (address, ports, timeout,
//! permissions) with [`crate::daemon::Daemon::validate`], and builds command-cycle
//! commands from the stanza's templates itself.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr as _;

use postern_proto::{PortSpec, ReplayKey};
use serde_json::{json, Value};

use crate::daemon::{Counters, Decided};
use crate::pipeline::authorize::{
    CommandDecision, CycleDecision, Decision, GrantDecision, Reason, Verdict,
};
use crate::replay::Meta;

fn ports_json(p: &[PortSpec]) -> Value {
    Value::from(p.iter().map(ToString::to_string).collect::<Vec<_>>())
}

fn ports_from(v: &Value) -> Result<Vec<PortSpec>, String> {
    v.as_array()
        .ok_or("ports missing")?
        .iter()
        .map(|p| PortSpec::parse(p.as_str().unwrap_or("")).map_err(|e| e.to_string()))
        .collect()
}

/// One request line from the worker.
pub fn encode_decided(x: &Decided) -> String {
    let verdict = match &x.decision.verdict {
        Verdict::Grant(g) => {
            json!({"kind": "grant", "allow": g.allow.to_string(), "ports": ports_json(&g.ports), "timeout": g.timeout})
        }
        Verdict::Command(c) => {
            json!({"kind": "command", "allow": c.allow.to_string(), "command": c.command})
        }
        Verdict::Cycle(c) => json!({
            "kind": "cycle", "allow": c.allow.to_string(), "packet_source": c.packet_source.to_string(),
            "destination": c.destination.to_string(), "ports": ports_json(&c.ports),
            "timestamp": c.timestamp, "client_timeout": c.client_timeout,
        }),
        Verdict::Drop(r) => json!({"kind": "drop", "label": r.label(), "text": r.to_string()}),
    };
    json!({
        "t": "decided",
        "key": x.key.to_string(),
        "proto": x.meta.proto,
        "src": x.meta.src.to_string(),
        "dst": x.meta.dst.to_string(),
        "stanza": x.decision.stanza,
        "user": x.decision.username,
        "verdict": verdict,
    })
    .to_string()
}

fn ip(v: &Value, field: &str) -> Result<IpAddr, String> {
    v[field]
        .as_str()
        .and_then(|s| IpAddr::from_str(s).ok())
        .ok_or_else(|| format!("bad {field}"))
}

fn static_label(label: &str) -> &'static str {
    const KNOWN: [&str; 13] = [
        "no_stanza",
        "stanza_expired",
        "hmac",
        "decrypt",
        "age",
        "before_start",
        "require_source_address",
        "username",
        "nat",
        "command_not_enabled",
        "port_restricted",
        "port_not_open",
        "fields",
    ];
    KNOWN.into_iter().find(|k| *k == label).unwrap_or("other")
}

/// Parse a request line (never trusting it: every field is checked, and the privileged
/// part validates the decision against its own configuration afterwards).
pub fn decode_decided(line: &str) -> Result<Decided, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let key_bytes =
        postern_proto::b64::decode_canonical(v["key"].as_str().unwrap_or("").as_bytes())
            .map_err(|e| e.to_string())?;
    let key = ReplayKey(key_bytes.try_into().map_err(|_| "bad key length")?);
    let sock = |f: &str| {
        v[f].as_str()
            .and_then(|s| SocketAddr::from_str(s).ok())
            .ok_or_else(|| format!("bad {f}"))
    };
    let meta = Meta {
        proto: u8::try_from(v["proto"].as_u64().unwrap_or(17)).unwrap_or(17),
        src: sock("src")?,
        dst: sock("dst")?,
    };
    let stanza = v["stanza"]
        .as_u64()
        .map(|i| usize::try_from(i).unwrap_or(usize::MAX));
    let username = v["user"].as_str().map(str::to_owned);
    let w = &v["verdict"];
    let verdict = match w["kind"].as_str() {
        Some("grant") => Verdict::Grant(GrantDecision {
            allow: ip(w, "allow")?,
            ports: ports_from(&w["ports"])?,
            timeout: w["timeout"].as_u64().ok_or("bad timeout")?,
        }),
        Some("command") => Verdict::Command(CommandDecision {
            allow: ip(w, "allow")?,
            command: w["command"].as_str().ok_or("bad command")?.to_owned(),
        }),
        Some("cycle") => Verdict::Cycle(CycleDecision {
            allow: ip(w, "allow")?,
            packet_source: ip(w, "packet_source")?,
            destination: ip(w, "destination")?,
            ports: ports_from(&w["ports"])?,
            timestamp: w["timestamp"].as_u64().ok_or("bad timestamp")?,
            client_timeout: u32::try_from(w["client_timeout"].as_u64().unwrap_or(0))
                .map_err(|_| "bad client timeout")?,
        }),
        Some("drop") => Verdict::Drop(Reason::Forwarded {
            label: static_label(w["label"].as_str().unwrap_or("")),
            text: w["text"].as_str().unwrap_or("").chars().take(300).collect(),
        }),
        _ => return Err("unknown verdict".into()),
    };
    Ok(Decided {
        key,
        meta,
        decision: Decision {
            verdict,
            stanza,
            burn: true,
            username,
        },
    })
}

/// The worker's counters as a line.
pub fn encode_stats(c: &Counters) -> String {
    json!({"t": "stats", "examined": c.examined, "refused": c.refused, "dropped": c.dropped})
        .to_string()
}

/// Parse the worker's counters.
pub fn decode_stats(v: &Value) -> Counters {
    let mut c = Counters {
        examined: v["examined"].as_u64().unwrap_or(0),
        dropped: v["dropped"].as_u64().unwrap_or(0),
        ..Counters::default()
    };
    if let Some(m) = v["refused"].as_object() {
        for (k, n) in m {
            let label = static_label(k);
            let label = if label == "other" {
                crate::daemon::junk_label(k)
            } else {
                label
            };
            *c.refused.entry(label).or_insert(0) += n.as_u64().unwrap_or(0);
        }
    }
    c
}

/// The user the worker runs as: `configured`, else `postern` if it exists, else `nobody`.
pub fn worker_user(configured: Option<&str>) -> String {
    if let Some(u) = configured {
        return u.to_owned();
    }
    if crate::pipeline::apply::user_ids("postern").is_some() {
        "postern".into()
    } else {
        "nobody".into()
    }
}

/// Become `user` for good: supplementary groups, gid and uid changed (which drops every
/// capability), `no_new_privs` set, and a check that root cannot be regained.
pub fn drop_privileges(user: &str) -> Result<(), String> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let (uid, gid) = crate::pipeline::apply::user_ids(user)
        .ok_or_else(|| format!("no user '{user}' in /etc/passwd"))?;
    if uid == 0 {
        return Err(format!("WORKER_USER '{user}' is root"));
    }
    let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
    setgroups(&[g]).map_err(|e| format!("setgroups: {e}"))?;
    setresgid(g, g, g).map_err(|e| format!("setresgid: {e}"))?;
    setresuid(u, u, u).map_err(|e| format!("setresuid: {e}"))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    if setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).is_ok() {
        return Err("root could be regained after dropping privileges".into());
    }
    Ok(())
}

/// Deny this thread (and every thread it starts) all filesystem access with Landlock,
/// where the kernel has it. Returns "enforced", "partially enforced" or "not available".
pub fn deny_filesystem() -> &'static str {
    use landlock::{Access, AccessFs, Ruleset, RulesetAttr, RulesetStatus, ABI};
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI::V5))
        .and_then(|r| r.create())
        .and_then(|r| r.restrict_self());
    match status {
        Ok(s) => match s.ruleset {
            RulesetStatus::FullyEnforced => "enforced",
            RulesetStatus::PartiallyEnforced => "partially enforced",
            RulesetStatus::NotEnforced => "not available",
        },
        Err(_) => "not available",
    }
}

/// The user name a process runs as (from /proc and /etc/passwd).
pub fn user_of(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let uid: Option<u32> = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok());
    let Some(uid) = uid else { return "?".into() };
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2].parse() == Ok(uid)).then(|| f[0].to_owned())
        })
        .unwrap_or_else(|| uid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(verdict: Verdict) -> Decided {
        Decided {
            key: ReplayKey([7; 32]),
            meta: Meta {
                proto: 17,
                src: "198.18.1.2:4000".parse().unwrap(),
                dst: "198.18.1.1:62201".parse().unwrap(),
            },
            decision: Decision {
                verdict,
                stanza: Some(0),
                burn: true,
                username: Some("alice".into()),
            },
        }
    }

    #[test]
    fn requests_round_trip() {
        let g = decided(Verdict::Grant(GrantDecision {
            allow: "198.18.1.2".parse().unwrap(),
            ports: vec![
                PortSpec::parse("tcp/22").unwrap(),
                PortSpec::parse("udp/53").unwrap(),
            ],
            timeout: 30,
        }));
        assert_eq!(decode_decided(&encode_decided(&g)).unwrap(), g);
        let c = decided(Verdict::Cycle(CycleDecision {
            allow: "2001:db8::2".parse().unwrap(),
            packet_source: "2001:db8::2".parse().unwrap(),
            destination: "2001:db8::1".parse().unwrap(),
            ports: vec![PortSpec::parse("tcp/22").unwrap()],
            timestamp: 5,
            client_timeout: 9,
        }));
        assert_eq!(decode_decided(&encode_decided(&c)).unwrap(), c);
        let d = decode_decided(&encode_decided(&decided(Verdict::Drop(Reason::Username)))).unwrap();
        assert!(matches!(
            d.decision.verdict,
            Verdict::Drop(Reason::Forwarded {
                label: "username",
                ..
            })
        ));
    }

    #[test]
    fn hostile_lines_are_refused() {
        for line in [
            "",
            "{}",
            "null",
            r#"{"key":"AAAA"}"#,
            r#"{"key":"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc","src":"1.2.3.4:1","dst":"1.2.3.4:2","verdict":{"kind":"grant","allow":"x","ports":[],"timeout":1}}"#,
        ] {
            assert!(decode_decided(line).is_err(), "{line}");
        }
    }
}
