//! A test lab: posternd in a server namespace behind its own nftables policy, clients in
//! their own namespaces, the real fwknop client to knock with.
//!
//! ```text
//!   c1 198.18.1.2 / 2001:db8:1::2 ──── 198.18.1.1 / 2001:db8:1::1 ┐ srv: posternd, TCP
//!   c2 198.18.2.2 ─────────────────── 198.18.2.1                  ┘      services
//! ```

use std::path::PathBuf;
use std::time::Duration;

use postern_testkit::{iface_with, link, tcp_service, wait_for_line, Netns, Proc, TempDir};

pub const SRV: &str = "198.18.1.1";
pub const C1: &str = "198.18.1.2";
pub const SRV6: &str = "2001:db8:1::1";
pub const C16: &str = "2001:db8:1::2";
pub const SRV_C2: &str = "198.18.2.1";

pub struct Lab {
    pub dir: TempDir,
    pub srv: Netns,
    pub c1: Netns,
    pub c2: Netns,
    pub iface: String,
    _svc: Proc,
    pub daemon: Option<Proc>,
    /// `NAME=value` settings posternd is started with (through `env`), e.g. the lab's
    /// own D-Bus system bus for the firewalld backend.
    pub env: Vec<String>,
}

pub fn posternd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_posternd")
}

/// The `postern` client, built next to posternd by `cargo test --workspace`.
pub fn postern_bin() -> String {
    let p = std::path::Path::new(posternd_bin()).with_file_name("postern");
    assert!(
        p.exists(),
        "{} is missing: run the tests with `cargo test --workspace`",
        p.display()
    );
    p.display().to_string()
}

impl Lab {
    /// Namespaces, links, addresses and TCP services on `ports` (no daemon yet).
    pub fn new(ports: &[u16]) -> Lab {
        let dir = TempDir::new("posternd");
        let srv = Netns::new("s");
        let c1 = Netns::new("c");
        let c2 = Netns::new("d");
        link(&srv, SRV, &c1, C1);
        link(&srv, SRV_C2, &c2, "198.18.2.2");
        let iface = iface_with(&srv, SRV);
        srv.add_addr6(&format!("{SRV6}/64"), &iface);
        c1.add_addr6(&format!("{C16}/64"), &iface_with(&c1, C1));
        let svc = tcp_service(&srv, "::", ports, &dir.join("svc.log"));
        Lab {
            dir,
            srv,
            c1,
            c2,
            iface,
            _svc: svc,
            daemon: None,
            env: Vec::new(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Write fwknopd.conf and access.conf (0600).
    pub fn configure(&self, server: &str, access: &str) {
        for (name, text) in [("fwknopd.conf", server), ("access.conf", access)] {
            let p = self.path(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
        }
    }

    /// posternd's command line for this lab.
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        if !self.env.is_empty() {
            v.push("env".into());
            v.extend(self.env.iter().cloned());
        }
        v.extend([
            posternd_bin().into(),
            "-f".into(),
            "-c".into(),
            self.path("fwknopd.conf").display().to_string(),
            "-r".into(),
            self.path("run").display().to_string(),
        ]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    /// Start posternd on the c1 link and wait until it is ready.
    pub fn start(&mut self, extra: &[&str]) {
        let mut a = vec!["-i", self.iface.as_str()];
        a.extend(extra);
        let args = self.args(&a);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = self.path("posternd.log");
        let _ = std::fs::remove_file(&log);
        self.daemon = Some(self.srv.spawn(&argv, &log));
        wait_for_line(&log, "started (pid", Duration::from_secs(15));
    }

    /// Run posternd to completion (for config errors, --check-config...).
    pub fn run_posternd(&self, extra: &[&str]) -> std::process::Output {
        let args = self.args(extra);
        self.srv.cmd(&args[0]).args(&args[1..]).output().unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("posternd.log")).unwrap_or_default()
    }

    /// `posternd status --json`.
    pub fn status(&self) -> serde_json::Value {
        let out = self
            .srv
            .cmd(posternd_bin())
            .args(["status", "--json", "-r"])
            .arg(self.path("run"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Knock with postern from c1 with the lab's keys (`enc-1` / `hmac-1`, no rc file).
    pub fn postern(&self, args: &[&str]) {
        let out = self
            .c1
            .cmd(&postern_bin())
            .args([
                "--no-rc-file",
                "--no-save-args",
                "--key-rijndael",
                "enc-1",
                "--key-hmac",
                "hmac-1",
            ])
            .args(args)
            .env("HOME", &self.dir.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "postern {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Knock with the real fwknop client from `ns`; returns the packet it sent.
    pub fn fwknop(&self, ns: &Netns, args: &[&str]) -> String {
        let out = ns
            .cmd("fwknop")
            .arg("--rc-file")
            .arg(self.path("fwknoprc"))
            .args(["--no-save-args", "-v"])
            .args(args)
            .env("HOME", &self.dir.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fwknop {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.trim().strip_prefix("Final SPA Data: ").map(str::to_owned))
            .expect("packet in fwknop -v output")
    }

    /// Send raw payloads as UDP datagrams from `ns` to `dst`:62201.
    pub fn send_raw(&self, ns: &Netns, dst: &str, payloads: &[&str]) {
        let script = "import socket,sys\nfam=socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET\ns=socket.socket(fam, socket.SOCK_DGRAM)\nfor p in sys.argv[2:]:\n s.sendto(p.encode('latin-1'), (sys.argv[1], 62201))\n";
        let mut c = ns.cmd("python3");
        c.args(["-c", script, dst]).args(payloads);
        postern_testkit::sh(&mut c);
    }

    /// Elements of the nftables grant sets in the server namespace.
    pub fn elements(&self) -> String {
        let out = self
            .srv
            .cmd("nft")
            .args(["list", "table", "inet", "postern"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("elements =") || l.contains(" expires "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Load an nft script in the server namespace (the admin's own rules).
    pub fn nft_load(&self, script: &str) {
        let mut c = self.srv.cmd("nft");
        c.args(["-f", "-"]).stdin(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "nft rejected: {script}");
    }

    pub fn ruleset(&self) -> String {
        String::from_utf8(
            self.srv
                .cmd("nft")
                .args(["list", "ruleset"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
    }

    /// SIGKILL the daemon (by PID).
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.daemon.take() {
            p.child.kill().unwrap();
            p.child.wait().unwrap();
        }
    }

    /// Stop the daemon cleanly with `posternd -K`.
    pub fn stop(&mut self) {
        let out = self
            .srv
            .cmd(posternd_bin())
            .arg("-K")
            .arg("-r")
            .arg(self.path("run"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "-K: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(mut p) = self.daemon.take() {
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if p.child.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("posternd did not stop after -K");
        }
    }
}

/// A real fwknop client's key flags.
pub fn keys(enc: &str, hmac: &str) -> Vec<String> {
    vec![
        "--key-rijndael".into(),
        enc.into(),
        "--key-hmac".into(),
        hmac.into(),
    ]
}

pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Whether the test may run (root, tools); fails under CI=true when it cannot.
pub fn ready(name: &str) -> bool {
    postern_testkit::can_run(name, &["ip", "nft", "fwknop", "python3"])
}
