//! postern-testkit: network-namespace test hosts for the integration tests: each end in its own namespace, joined by veth pairs,
//! with addresses from 198.18.0.0/15. Names carry the test process id so parallel runs
//! never collide; namespaces and processes are removed on drop (processes by PID).
//! The root namespace's firewall is never touched.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Whether this test can use namespaces: root and `ip` present. Outside CI a missing
/// prerequisite skips with a printed reason; under CI=true it fails.
pub fn can_run(what: &str, tools: &[&str]) -> bool {
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
                .unwrap_or(false)
        })
        .collect();
    let ci = std::env::var("CI").as_deref() == Ok("true");
    if !root || !missing.is_empty() {
        let why = if !root {
            "needs root".to_owned()
        } else {
            format!("needs {}", missing.join(", "))
        };
        assert!(!ci, "{what}: {why}, and CI=true requires it to run");
        eprintln!("SKIP {what}: {why}");
        return false;
    }
    true
}

/// Whether an external tool is on PATH; outside CI a missing tool skips the test with a
/// printed reason, under CI=true it fails.
pub fn have_tool(name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    if !found {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{name} is required under CI=true"
        );
        eprintln!("SKIP: {name} not installed");
    }
    found
}

/// Run a command, panicking with its output if it fails.
pub fn sh(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace, deleted on drop.
pub struct Netns {
    /// Its name.
    pub name: String,
}

impl Netns {
    /// Create a fresh namespace with loopback up.
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "pst{}{}{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            tag
        );
        sh(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// A command to run inside the namespace.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Run `argv` inside, panicking on failure.
    pub fn run(&self, argv: &[&str]) -> Output {
        let mut c = self.cmd(argv[0]);
        c.args(&argv[1..]);
        sh(&mut c)
    }

    /// Start a long-running process inside (killed on drop of the guard).
    pub fn spawn(&self, argv: &[&str], log: &Path) -> Proc {
        let f = std::fs::File::create(log).unwrap();
        let mut c = self.cmd(argv[0]);
        c.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        Proc {
            child: c.spawn().unwrap(),
        }
    }

    /// Give this namespace its own /etc/hosts (`ip netns exec` bind-mounts
    /// /etc/netns/NAME/hosts over /etc/hosts); removed with the namespace.
    pub fn set_hosts(&self, text: &str) {
        let dir = Path::new("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts"), text).unwrap();
    }

    /// Add an IPv6 address (no duplicate address detection, so it is usable at once).
    pub fn add_addr6(&self, addr_prefix: &str, iface: &str) {
        self.run(&[
            "ip",
            "-6",
            "addr",
            "add",
            addr_prefix,
            "dev",
            iface,
            "nodad",
        ]);
    }

    /// Try a TCP connection from this namespace; true if it completes within `timeout`.
    pub fn can_connect(&self, addr: &str, port: u16, timeout: Duration) -> bool {
        let script = "import socket,sys\ntry:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()\nexcept Exception:\n sys.exit(1)\n";
        self.cmd("python3")
            .args([
                "-c",
                script,
                addr,
                &port.to_string(),
                &timeout.as_secs_f64().to_string(),
            ])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Poll until a TCP connection succeeds (true) or `deadline` passes (false).
    pub fn wait_open(&self, addr: &str, port: u16, deadline: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if self.can_connect(addr, port, Duration::from_millis(300)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Poll until a TCP connection fails (true) or `deadline` passes (false).
    pub fn wait_closed(&self, addr: &str, port: u16, deadline: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if !self.can_connect(addr, port, Duration::from_millis(300)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&self.name));
    }
}

/// A child process, killed (by PID) and reaped on drop.
pub struct Proc {
    /// The child.
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Join two namespaces with a veth pair and give each end an address (a /24).
pub fn link(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let (ea, eb) = (
        format!("va{}x{n}", std::process::id() % 100000),
        format!("vb{}x{n}", std::process::id() % 100000),
    );
    sh(Command::new("ip").args(["link", "add", &ea, "type", "veth", "peer", "name", &eb]));
    sh(Command::new("ip").args(["link", "set", &ea, "netns", &a.name]));
    sh(Command::new("ip").args(["link", "set", &eb, "netns", &b.name]));
    a.run(&["ip", "addr", "add", &format!("{a_addr}/24"), "dev", &ea]);
    b.run(&["ip", "addr", "add", &format!("{b_addr}/24"), "dev", &eb]);
    a.run(&["ip", "link", "set", &ea, "up"]);
    b.run(&["ip", "link", "set", &eb, "up"]);
}

/// The interface of `ns` that carries `addr`.
pub fn iface_with(ns: &Netns, addr: &str) -> String {
    let out = ns.run(&["ip", "-o", "-4", "addr", "show"]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.contains(&format!(" {addr}/")))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no interface with {addr} in {}", ns.name))
        .to_owned()
}

/// A TCP service that accepts and closes connections on each port (python3).
pub fn tcp_service(ns: &Netns, bind: &str, ports: &[u16], log: &Path) -> Proc {
    let script = "import socket,sys,selectors\nsel=selectors.DefaultSelector()\nv6=':' in sys.argv[1]\nfor p in sys.argv[2:]:\n s=socket.socket(socket.AF_INET6 if v6 else socket.AF_INET)\n if v6: s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], int(p))); s.listen(64); sel.register(s, selectors.EVENT_READ)\nprint('ready', flush=True)\nwhile True:\n for k,_ in sel.select():\n  c,_=k.fileobj.accept(); c.close()\n";
    let mut argv = vec!["python3", "-c", script, bind];
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    argv.extend(ports.iter().map(String::as_str));
    let p = ns.spawn(&argv, log);
    wait_for_line(log, "ready", Duration::from_secs(10));
    p
}

/// Wait until `file` contains `needle`.
pub fn wait_for_line(file: &Path, needle: &str, deadline: Duration) {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if std::fs::read_to_string(file)
            .map(|t| t.contains(needle))
            .unwrap_or(false)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "'{needle}' did not appear in {} within {deadline:?}: {}",
        file.display(),
        std::fs::read_to_string(file).unwrap_or_default()
    );
}

/// A scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Create one under the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "postern-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    /// A path inside.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
