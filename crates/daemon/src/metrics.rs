//! Metrics in the Prometheus text format (version 0.0.4), from the same counters as
//! `posternd status`. By default they go to a node_exporter textfile (no listening
//! socket: the host stays dark); optionally also to a listener that must be on a
//! loopback address. Counters are monotonic for the life of the process: a reload or a
//! replaced worker never makes them go back.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Where Debian's prometheus-node-exporter reads textfiles.
pub const NODE_EXPORTER_DIR: &str = "/var/lib/prometheus/node-exporter";

/// The default textfile: in node_exporter's directory, when that directory exists.
pub fn default_textfile() -> Option<PathBuf> {
    let dir = Path::new(NODE_EXPORTER_DIR);
    dir.is_dir().then(|| dir.join("posternd.prom"))
}

fn help(out: &mut String, name: &str, kind: &str, text: &str) {
    let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} {kind}");
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn num(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The metrics, from the counters ([`crate::daemon::Daemon::metrics_json`]).
pub fn render(st: &serde_json::Value) -> String {
    let mut o = String::new();
    let counter = |o: &mut String, name: &str, text: &str, v: u64| {
        help(o, name, "counter", text);
        let _ = writeln!(o, "{name} {v}");
    };
    let gauge = |o: &mut String, name: &str, text: &str, v: u64| {
        help(o, name, "gauge", text);
        let _ = writeln!(o, "{name} {v}");
    };
    help(
        &mut o,
        "posternd_info",
        "gauge",
        "posternd's version and firewall backend",
    );
    let _ = writeln!(
        o,
        "posternd_info{{version=\"{}\",firewall=\"{}\"}} 1",
        label(st["version"].as_str().unwrap_or("")),
        label(st["firewall"].as_str().unwrap_or(""))
    );
    gauge(
        &mut o,
        "posternd_start_time_seconds",
        "when this posternd started (Unix time)",
        num(&st["started"]),
    );
    counter(
        &mut o,
        "posternd_packets_examined_total",
        "datagrams examined",
        num(&st["examined"]),
    );
    counter(
        &mut o,
        "posternd_intake_dropped_total",
        "datagrams lost before examination (full queue, socket drops)",
        num(&st["dropped"]),
    );
    help(
        &mut o,
        "posternd_decisions_total",
        "counter",
        "decisions by verdict and reason",
    );
    let _ = writeln!(
        o,
        "posternd_decisions_total{{verdict=\"granted\",reason=\"\"}} {}",
        num(&st["grants"])
    );
    if let Some(r) = st["refused"].as_object() {
        for (k, v) in r {
            let _ = writeln!(
                o,
                "posternd_decisions_total{{verdict=\"refused\",reason=\"{}\"}} {}",
                label(k),
                num(v)
            );
        }
    }
    gauge(
        &mut o,
        "posternd_grants_open",
        "openings posternd holds now",
        num(&st["grants_open"]),
    );
    counter(
        &mut o,
        "posternd_commands_total",
        "commands run (ENABLE_CMD_EXEC, cycles)",
        num(&st["commands"]),
    );
    counter(
        &mut o,
        "posternd_firewall_errors_total",
        "firewall changes that failed",
        num(&st["firewall_errors"]),
    );
    counter(
        &mut o,
        "posternd_firewall_repairs_total",
        "times posternd's firewall base was found gone and reinstalled",
        num(&st["firewall_repairs"]),
    );
    gauge(
        &mut o,
        "posternd_replay_entries",
        "entries in the replay store",
        num(&st["replay_entries"]),
    );
    gauge(
        &mut o,
        "posternd_replay_store_persistent",
        "1 if the replay store is on disk, 0 if it is in memory only",
        u64::from(st["replay_store"] == "persistent"),
    );
    let a = &st["alerts"];
    if a.is_object() {
        for (k, text) in [
            ("sent", "alerts delivered"),
            ("failed", "alerts that could not be delivered"),
            ("dropped", "alerts dropped because the queue was full"),
            ("suppressed", "alerts suppressed by rate limiting"),
        ] {
            counter(
                &mut o,
                &format!("posternd_alerts_{k}_total"),
                text,
                num(&a[k]),
            );
        }
        gauge(
            &mut o,
            "posternd_alert_queue",
            "alerts waiting to be sent",
            num(&a["queued"]),
        );
    }
    o
}

/// Write `text` to `path` atomically (a temporary file in the same directory, then
/// renamed), readable by all (node_exporter runs as its own user).
pub fn write_textfile(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "posternd.prom".into());
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_data()?;
    drop(f);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The text served by the loopback listener, replaced at each update.
#[derive(Clone, Default)]
pub struct Published(Arc<Mutex<String>>);

impl Published {
    /// Replace what is served.
    pub fn set(&self, text: String) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = text;
    }

    fn get(&self) -> String {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Serve `published` on `addr` (a loopback address: checked at configuration time), one
/// short request at a time, in a thread of its own.
pub fn listen(addr: SocketAddr, published: Published) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut c) = conn else { continue };
                let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = c.set_write_timeout(Some(Duration::from_secs(1)));
                let mut req = [0u8; 1024];
                let n = c.read(&mut req).unwrap_or(0);
                let line = String::from_utf8_lossy(&req[..n]);
                let reply = if line.starts_with("GET /metrics ") || line.starts_with("GET / ") {
                    let body = published.get();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .into()
                };
                let _ = c.write_all(reply.as_bytes());
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_is_what_prometheus_reads() {
        let st = serde_json::json!({
            "version": "0.1.0", "firewall": "nftables \"x\"", "started": 1700000000,
            "examined": 10, "dropped": 1, "grants": 2,
            "refused": {"hmac": 5, "replay": 3},
            "grants_open": 1,
            "commands": 0, "firewall_errors": 0, "firewall_repairs": 1,
            "replay_entries": 4, "replay_store": "persistent",
            "alerts": {"sent": 2, "failed": 0, "dropped": 0, "queued": 0, "suppressed": 0},
        });
        let t = render(&st);
        assert!(
            t.contains("posternd_info{version=\"0.1.0\",firewall=\"nftables \\\"x\\\"\"} 1\n"),
            "{t}"
        );
        assert!(t.contains("posternd_decisions_total{verdict=\"refused\",reason=\"hmac\"} 5\n"));
        assert!(t.contains("posternd_decisions_total{verdict=\"granted\",reason=\"\"} 2\n"));
        assert!(t.contains("posternd_grants_open 1\n"));
        assert!(t.contains("posternd_alerts_sent_total 2\n"));
        // Every sample line belongs to a declared metric.
        let declared: Vec<&str> = t
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(declared.contains(&name), "{name} undeclared");
        }
    }
}
