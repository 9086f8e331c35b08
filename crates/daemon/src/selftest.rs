//! `posternd selftest`: on an installed system, as root, check that knocking works end
//! to end, without touching anything outside throw-away network namespaces.
//!
//! ```text
//!  postern-st-PID-cli                              postern-st-PID-srv
//!  198.19.254.2 (knocker) ─┐                    ┌─ 198.19.254.1  posternd (this binary,
//!  198.19.254.3 (other)  ──┴─ cli0 ═══ veth ═══ srv0 ┘            the unit's settings)
//!  the postern client                             test service on tcp/22
//! ```
//!
//! posternd runs in the server namespace with a configuration of its own (own keys,
//! `NFT_DEFAULT_DROP Y`, a 3 s grant) under a temporary directory, laid out and started
//! as the installed unit (or, when none is installed, the shipped one) starts it: its
//! `ExecStart` arguments, `UMask`, run and state directories and their modes; the worker
//! user is whatever posternd chooses there (`postern` from the package's sysusers.d
//! entry). The client knocks from the client namespace; sockets of this process enter a
//! namespace only on short-lived threads (`setns`), so the host's network and firewall
//! are never used. Every step is bounded in time. Whatever happens (a failed check, a
//! panic, SIGINT/SIGTERM/SIGHUP), the processes in the namespaces are stopped by pid,
//! the namespaces and the temporary directory removed, and that is checked.
//!
//! It does not reproduce the unit's sandbox (capability bounding set, `ProtectSystem`...):
//! that needs systemd to start the process.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// The server's address, the knocker's, and a second address of the client namespace
/// that must stay closed.
const SRV: Ipv4Addr = Ipv4Addr::new(198, 19, 254, 1);
const KNOCKER: Ipv4Addr = Ipv4Addr::new(198, 19, 254, 2);
const OTHER: Ipv4Addr = Ipv4Addr::new(198, 19, 254, 3);
/// The port the knock opens (the test service listens on it).
const PORT: u16 = 22;
/// The grant's lifetime (FW_ACCESS_TIMEOUT).
const GRANT_SECS: u64 = 3;
/// One connection attempt: a SYN the firewall drops gets no answer.
const CONNECT: Duration = Duration::from_millis(400);
/// The unit that `dist/posternd.service` is, for a posternd that is not installed.
const SHIPPED_UNIT: &str = include_str!("../../../dist/posternd.service");
/// Where an installed unit may be, in systemd's order of precedence.
const UNIT_PATHS: [&str; 3] = [
    "/etc/systemd/system/posternd.service",
    "/lib/systemd/system/posternd.service",
    "/usr/lib/systemd/system/posternd.service",
];

/// Why the self-test stopped before its end. A check that fails is a `FAIL` line, not
/// an error; these end the run.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Not run as root: namespaces and nftables need it.
    NotRoot,
    /// A program the test needs is not installed.
    Missing(String),
    /// A step the later checks depend on failed.
    Setup(String),
    /// SIGINT, SIGTERM or SIGHUP arrived.
    Interrupted,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NotRoot => {
                f.write_str("posternd selftest must run as root (network namespaces, nftables)")
            }
            Error::Missing(what) => write!(f, "{what} is not installed"),
            Error::Setup(why) => f.write_str(why),
            Error::Interrupted => f.write_str("interrupted"),
        }
    }
}

type Result<T> = std::result::Result<T, Error>;

fn setup(what: &str, why: impl std::fmt::Display) -> Error {
    Error::Setup(format!("{what}: {why}"))
}

/// Run the self-test; prints one line per check and a verdict. 0 when every check
/// passed, 1 when one failed or could not be made, 130 when interrupted.
pub fn run(client: Option<&Path>) -> ExitCode {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            println!("FAIL cannot install a signal handler: {e}");
            return ExitCode::from(1);
        }
    }
    let mut report = Report::default();
    let mut lab = Lab::new(stop);
    let outcome = lab.prepare(client).and_then(|()| lab.checks(&mut report));
    if let Err(e) = &outcome {
        match e {
            Error::Interrupted => println!("interrupted: cleaning up"),
            e => report.fail(&e.to_string()),
        }
    }
    if report.failed > 0 || outcome.is_err() {
        lab.show_log();
    }
    let made = !lab.created.is_empty() || lab.dir_made;
    let left = lab.cleanup();
    if !made {
        // Nothing was made: nothing to check.
    } else if left.is_empty() {
        report.ok(&format!(
            "nothing left behind: namespaces {} and {}, their processes and {} removed",
            lab.srv,
            lab.cli,
            lab.dir.display()
        ));
    } else {
        report.fail(&format!("left behind: {}", left.join("; ")));
    }
    if let Err(Error::Interrupted) = outcome {
        println!("selftest interrupted: cleaned up, no verdict");
        return ExitCode::from(130);
    }
    if report.failed == 0 {
        println!("selftest passed: all {} checks ok", report.passed);
        ExitCode::SUCCESS
    } else {
        println!(
            "selftest FAILED: {} of {} checks failed",
            report.failed,
            report.failed + report.passed
        );
        ExitCode::from(1)
    }
}

/// The lines printed so far.
#[derive(Default)]
struct Report {
    passed: usize,
    failed: usize,
}

impl Report {
    fn ok(&mut self, what: &str) {
        self.passed += 1;
        println!("ok   {what}");
    }

    fn fail(&mut self, what: &str) {
        self.failed += 1;
        println!("FAIL {what}");
    }

    fn check(&mut self, passed: bool, what: &str) {
        if passed {
            self.ok(what);
        } else {
            self.fail(what);
        }
    }
}

/// The settings of the unit posternd runs under.
#[derive(Debug, Clone)]
struct Unit {
    /// Where it was read (or "the shipped unit").
    origin: String,
    /// ExecStart's program.
    program: String,
    /// ExecStart's arguments.
    args: Vec<String>,
    /// UMask, octal.
    umask: Option<u32>,
    /// RuntimeDirectoryMode and StateDirectoryMode, octal.
    run_mode: u32,
    state_mode: u32,
}

impl Unit {
    fn installed() -> Unit {
        for p in UNIT_PATHS {
            if let Ok(text) = std::fs::read_to_string(p) {
                return Unit::parse(&text, p);
            }
        }
        Unit::parse(SHIPPED_UNIT, "the shipped unit (none installed)")
    }

    fn parse(text: &str, origin: &str) -> Unit {
        let mut u = Unit {
            origin: origin.to_owned(),
            program: "/usr/sbin/posternd".into(),
            args: vec!["-f".into()],
            umask: None,
            run_mode: 0o755,
            state_mode: 0o755,
        };
        let octal = |v: &str| u32::from_str_radix(v.trim(), 8).ok();
        let mut section = String::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line.to_owned();
                continue;
            }
            if section != "[Service]" {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key.trim() {
                "ExecStart" => {
                    let mut w = value
                        .trim()
                        .trim_start_matches(['-', '@', '+', '!', ':'])
                        .split_whitespace()
                        .map(str::to_owned);
                    if let Some(p) = w.next() {
                        u.program = p;
                        u.args = w.collect();
                    }
                }
                "UMask" => u.umask = octal(value),
                "RuntimeDirectoryMode" => u.run_mode = octal(value).unwrap_or(u.run_mode),
                "StateDirectoryMode" => u.state_mode = octal(value).unwrap_or(u.state_mode),
                _ => {}
            }
        }
        u
    }

    /// ExecStart's arguments, without the ones the self-test sets itself.
    fn args(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut skip = false;
        for a in &self.args {
            if skip {
                skip = false;
                continue;
            }
            match a.as_str() {
                "-c" | "--config-file" | "-a" | "--access-file" | "-r" | "--run-dir" | "-i"
                | "--interface" | "-d" | "--digest-file" | "-p" | "--pid-file" => skip = true,
                _ => out.push(a.clone()),
            }
        }
        if !out.iter().any(|a| a == "-f" || a == "--foreground") {
            out.push("-f".into());
        }
        out
    }
}

/// The namespaces, the processes and the files of one run.
struct Lab {
    stop: Arc<AtomicBool>,
    srv: String,
    cli: String,
    dir: PathBuf,
    created: Vec<String>,
    dir_made: bool,
    service: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
    daemon: Option<Child>,
    exe: PathBuf,
    client: PathBuf,
    ip: PathBuf,
    unit: Unit,
    keys: (String, String),
    cleaned: bool,
}

impl Lab {
    fn new(stop: Arc<AtomicBool>) -> Lab {
        let pid = std::process::id();
        Lab {
            stop,
            srv: format!("postern-st-{pid}-srv"),
            cli: format!("postern-st-{pid}-cli"),
            dir: std::env::temp_dir().join(format!("postern-selftest-{pid}")),
            created: Vec::new(),
            dir_made: false,
            service: None,
            daemon: None,
            exe: PathBuf::new(),
            client: PathBuf::new(),
            ip: PathBuf::new(),
            unit: Unit::installed(),
            keys: (String::new(), String::new()),
            cleaned: false,
        }
    }

    fn interrupted(&self) -> Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        Ok(())
    }

    /// Sleep, unless a signal arrives.
    fn pause(&self, d: Duration) -> Result<()> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.interrupted()?;
            std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
        }
        self.interrupted()
    }

    /// Find the programs, make the files, namespaces and the test service.
    fn prepare(&mut self, client: Option<&Path>) -> Result<()> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::NotRoot);
        }
        self.ip = tool("ip").ok_or_else(|| Error::Missing("ip (iproute2)".into()))?;
        tool("nft").ok_or_else(|| Error::Missing("nft (nftables)".into()))?;
        self.exe = std::env::current_exe().map_err(|e| setup("finding posternd itself", e))?;
        self.client = match client {
            Some(c) => c.to_owned(),
            None => {
                let beside = self.exe.with_file_name("postern");
                if beside.is_file() {
                    beside
                } else {
                    tool("postern").ok_or_else(|| {
                        Error::Missing(
                            "the postern client (next to posternd, on PATH or /usr/bin/postern)"
                                .into(),
                        )
                    })?
                }
            }
        };
        println!(
            "selftest: posternd {} with {}, as {} runs it; namespaces {} and {}, files in {}",
            self.exe.display(),
            self.client.display(),
            self.unit.origin,
            self.srv,
            self.cli,
            self.dir.display()
        );
        self.files()?;
        self.network()?;
        Ok(())
    }

    /// The temporary directory: fwknopd.conf, access.conf (own keys), run and state
    /// directories with the unit's modes.
    fn files(&mut self) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        if let Some(mask) = self.unit.umask {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| setup(&format!("creating {}", self.dir.display()), e))?;
        self.dir_made = true;
        for (name, mode) in [("run", self.unit.run_mode), ("state", self.unit.state_mode)] {
            let d = self.dir.join(name);
            std::fs::create_dir(&d)
                .and_then(|()| std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)))
                .map_err(|e| setup(&format!("creating {}", d.display()), e))?;
        }
        let key = |n: usize| -> Result<String> {
            let mut b = vec![0u8; n];
            getrandom::getrandom(&mut b).map_err(|e| setup("random keys", e))?;
            Ok(base64::engine::general_purpose::STANDARD.encode(b))
        };
        self.keys = (key(32)?, key(64)?);
        let d = self.dir.display();
        let server = format!(
            "# posternd selftest: removed when the test ends\n\
             PCAP_INTF            srv0\n\
             FIREWALL_TYPE        nftables\n\
             NFT_DEFAULT_DROP     Y\n\
             FWKNOP_RUN_DIR       {d}/run\n\
             DIGEST_FILE          {d}/state/digest.cache\n\
             ACCESS_FILE          {d}/access.conf\n"
        );
        let access = format!(
            "SOURCE               ANY\n\
             OPEN_PORTS           tcp/{PORT}\n\
             REQUIRE_SOURCE_ADDRESS Y\n\
             KEY_BASE64           {}\n\
             HMAC_KEY_BASE64      {}\n\
             HMAC_DIGEST_TYPE     SHA256\n\
             FW_ACCESS_TIMEOUT    {GRANT_SECS}\n",
            self.keys.0, self.keys.1
        );
        for (name, text) in [("fwknopd.conf", server), ("access.conf", access)] {
            let p = self.dir.join(name);
            std::fs::write(&p, text)
                .and_then(|()| std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)))
                .map_err(|e| setup(&format!("writing {}", p.display()), e))?;
        }
        Ok(())
    }

    /// `ip ARGS`, bounded, as argv.
    fn ip(&self, args: &[&str]) -> Result<()> {
        let out = run_bounded(
            Command::new(&self.ip).args(args),
            Duration::from_secs(10),
            &self.stop,
        )?;
        if !out.0 {
            return Err(setup(&format!("ip {}", args.join(" ")), out.1.trim()));
        }
        Ok(())
    }

    /// The two namespaces, the veth pair created inside them (never in the host's
    /// namespace), the addresses, and the test service.
    fn network(&mut self) -> Result<()> {
        for ns in [self.srv.clone(), self.cli.clone()] {
            self.interrupted()?;
            // Recorded first: a signal during `ip netns add` must not leak the namespace.
            self.created.push(ns.clone());
            self.ip(&["netns", "add", &ns])?;
            self.ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        let (srv, cli) = (self.srv.clone(), self.cli.clone());
        self.ip(&[
            "link", "add", "srv0", "netns", &srv, "type", "veth", "peer", "name", "cli0", "netns",
            &cli,
        ])?;
        self.ip(&[
            "-n",
            &srv,
            "addr",
            "add",
            &format!("{SRV}/24"),
            "dev",
            "srv0",
        ])?;
        self.ip(&[
            "-n",
            &cli,
            "addr",
            "add",
            &format!("{KNOCKER}/24"),
            "dev",
            "cli0",
        ])?;
        self.ip(&[
            "-n",
            &cli,
            "addr",
            "add",
            &format!("{OTHER}/24"),
            "dev",
            "cli0",
        ])?;
        self.ip(&["-n", &srv, "link", "set", "srv0", "up"])?;
        self.ip(&["-n", &cli, "link", "set", "cli0", "up"])?;
        let listener = in_netns(&self.srv, || {
            std::net::TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT))
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|e| e.to_string())
        })
        .and_then(|r| r)
        .map_err(|e| setup(&format!("test service on tcp/{PORT}"), e))?;
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let handle = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => drop(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        self.service = Some((done, handle));
        Ok(())
    }

    /// Whether a TCP connection from `src` in the client namespace to the server's
    /// port completes.
    fn connects(&self, src: Ipv4Addr) -> Result<bool> {
        self.interrupted()?;
        in_netns(&self.cli, move || {
            let s = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )
            .ok()?;
            s.bind(&SocketAddr::from(SocketAddrV4::new(src, 0)).into())
                .ok()?;
            s.connect_timeout(
                &SocketAddr::from(SocketAddrV4::new(SRV, PORT)).into(),
                CONNECT,
            )
            .ok()
        })
        .map(|r| r.is_some())
        .map_err(|e| setup("connecting from the client namespace", e))
    }

    /// Poll until `connects(src) == want` or `within` has passed; the time it took.
    fn wait_for(&self, src: Ipv4Addr, want: bool, within: Duration) -> Result<Option<Duration>> {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.connects(src)? == want {
                return Ok(Some(start.elapsed()));
            }
            self.pause(Duration::from_millis(50))?;
        }
        Ok(None)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("posternd.log")).unwrap_or_default()
    }

    /// The last lines of posternd's log, on stderr, to say why a check failed.
    fn show_log(&self) {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        if lines.is_empty() {
            return;
        }
        eprintln!("posternd's log (last lines):");
        for l in &lines[lines.len().saturating_sub(20)..] {
            eprintln!("    {l}");
        }
    }

    /// `status-json` from the control socket.
    fn status(&self) -> Result<serde_json::Value> {
        let sock = self.dir.join("run/posternd.sock");
        let text = crate::control::request(&sock, "status-json")
            .map_err(|e| setup("asking posternd for its status", e))?;
        serde_json::from_str(&text).map_err(|e| setup("reading posternd's status", e))
    }

    /// Start posternd in the server namespace as the unit does, and wait for it.
    fn start(&mut self, report: &mut Report) -> Result<()> {
        let log = std::fs::File::create(self.dir.join("posternd.log"))
            .map_err(|e| setup("creating posternd's log", e))?;
        let err = log.try_clone().map_err(|e| setup("posternd's log", e))?;
        let args = self.unit.args();
        let child = Command::new(&self.ip)
            .args(["netns", "exec", &self.srv])
            .arg(&self.exe)
            .args(&args)
            .arg("-c")
            .arg(self.dir.join("fwknopd.conf"))
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| setup("starting posternd", e))?;
        self.daemon = Some(child);
        let start = Instant::now();
        loop {
            self.interrupted()?;
            if self.log().contains("started (pid") {
                break;
            }
            if let Some(Ok(Some(st))) = self.daemon.as_mut().map(Child::try_wait) {
                return Err(Error::Setup(format!(
                    "posternd exited at start ({st}); its log is below"
                )));
            }
            if start.elapsed() > Duration::from_secs(20) {
                return Err(Error::Setup(
                    "posternd did not start within 20 s; its log is below".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = self.status()?;
        let same = std::fs::canonicalize(&self.unit.program)
            .is_ok_and(|p| std::fs::canonicalize(&self.exe).is_ok_and(|e| e == p));
        report.ok(&format!(
            "posternd started with the settings of {} (arguments '{}', UMask {}, run and state directories {:04o}/{:04o}{}), firewall: {}",
            self.unit.origin,
            args.join(" "),
            self.unit
                .umask
                .map_or_else(|| "unset".to_owned(), |m| format!("{m:04o}")),
            self.unit.run_mode,
            self.unit.state_mode,
            if same {
                String::new()
            } else {
                format!("; the unit starts {}, this is {}", self.unit.program, self.exe.display())
            },
            status["firewall"].as_str().unwrap_or("?")
        ));
        let parts = status["parts"].as_array().cloned().unwrap_or_default();
        let worker = parts
            .iter()
            .find(|p| p["part"].as_str().is_some_and(|s| s.starts_with("worker")));
        let packaged = Path::new("/usr/lib/sysusers.d/postern.conf").exists();
        match worker {
            Some(w) => {
                let user = w["user"].as_str().unwrap_or("?");
                let expected = if packaged {
                    user == "postern"
                } else {
                    user != "root" && user != "0"
                };
                report.check(
                    expected,
                    &format!(
                        "privilege separation: worker pid {} runs as '{user}'{} (landlock {}, seccomp {})",
                        w["pid"],
                        if packaged && user != "postern" {
                            ", not as the package's 'postern' user"
                        } else {
                            ""
                        },
                        w["landlock"].as_str().unwrap_or("?"),
                        w["seccomp"].as_str().unwrap_or("?")
                    ),
                );
            }
            None => report.fail("privilege separation: posternd started no worker"),
        }
        Ok(())
    }

    /// Every check, in order; an `Err` ends the run (the rest cannot be made).
    fn checks(&mut self, report: &mut Report) -> Result<()> {
        report.ok(&format!(
            "test network: {SRV} in {}, {KNOCKER} and {OTHER} in {}",
            self.srv, self.cli
        ));
        let before = self.wait_for(KNOCKER, true, Duration::from_secs(3))?;
        report.check(
            before.is_some(),
            &format!("tcp/{PORT} answers before posternd starts (the test service works)"),
        );
        if before.is_none() {
            return Err(Error::Setup("the test service does not answer".into()));
        }
        self.start(report)?;
        let closed = !self.connects(KNOCKER)? && !self.connects(OTHER)?;
        report.check(
            closed,
            &format!("tcp/{PORT} closed before the knock, from {KNOCKER} and from {OTHER}"),
        );
        let packet = self.dir.join("packet");
        let knock = self.knock(&packet)?;
        report.check(
            knock.is_ok(),
            &match &knock {
                Ok(()) => format!("knock sent with {}", self.client.display()),
                Err(why) => format!("knock with {}: {why}", self.client.display()),
            },
        );
        if knock.is_err() {
            return Ok(());
        }
        let knocked = Instant::now();
        let open = self.wait_for(KNOCKER, true, Duration::from_secs(GRANT_SECS))?;
        let held = self
            .status()
            .map(|s| s["kernel"].clone())
            .unwrap_or_default();
        let holds = |ip: Ipv4Addr| {
            held.as_array().is_some_and(|a| {
                a.iter()
                    .any(|h| h["source"] == ip.to_string() && h["port"] == PORT)
            })
        };
        report.check(
            open.is_some() && holds(KNOCKER),
            &match open {
                Some(t) => format!(
                    "tcp/{PORT} open for the knocker {KNOCKER} ({} ms after the knock; the kernel {} {KNOCKER} tcp/{PORT})",
                    t.as_millis(),
                    if holds(KNOCKER) { "holds" } else { "does NOT hold" }
                ),
                None => format!("tcp/{PORT} did not open for the knocker {KNOCKER} within {GRANT_SECS} s"),
            },
        );
        let other_open = self.connects(OTHER)?;
        report.check(
            !other_open && !holds(OTHER),
            &format!(
                "tcp/{PORT} {} for the second address {OTHER}",
                if other_open { "OPEN" } else { "still closed" }
            ),
        );
        if open.is_some() {
            let closed = self.wait_for(KNOCKER, false, Duration::from_secs(GRANT_SECS + 5))?;
            report.check(
                closed.is_some(),
                &match closed {
                    Some(_) => format!(
                        "tcp/{PORT} closed again when the grant expired ({GRANT_SECS} s grant; closed {:.1} s after the knock)",
                        knocked.elapsed().as_secs_f64()
                    ),
                    None => format!(
                        "tcp/{PORT} still open {} s after a {GRANT_SECS} s grant",
                        GRANT_SECS + 5
                    ),
                },
            );
        }
        self.replay(&packet, report)?;
        self.stop_daemon(report)
    }

    /// Knock from the client namespace with the client; the packet is saved to `packet`.
    fn knock(&self, packet: &Path) -> Result<std::result::Result<(), String>> {
        let srv = SRV.to_string();
        let allow = KNOCKER.to_string();
        let access = format!("tcp/{PORT}");
        let mut cmd = Command::new(&self.ip);
        cmd.args(["netns", "exec", &self.cli])
            .arg(&self.client)
            .args([
                "--no-rc-file",
                "--no-save-args",
                "-A",
                &access,
                "-a",
                &allow,
                "-D",
                &srv,
            ])
            .args(["--key-base64-rijndael", &self.keys.0])
            .args(["--key-base64-hmac", &self.keys.1])
            .args(["--hmac-digest-type", "sha256", "-B"])
            .arg(packet)
            .env("HOME", &self.dir);
        let (ok, text) = run_bounded(&mut cmd, Duration::from_secs(15), &self.stop)?;
        if !ok {
            return Ok(Err(text
                .trim()
                .lines()
                .last()
                .unwrap_or("failed")
                .to_owned()));
        }
        if !packet.is_file() {
            return Ok(Err("it saved no packet (-B)".into()));
        }
        Ok(Ok(()))
    }

    /// Send the knock's packet again, from the knocker: posternd must refuse it as a
    /// replay and open nothing.
    fn replay(&self, packet: &Path, report: &mut Report) -> Result<()> {
        let before = self.status()?["refused"]["replay"].as_u64().unwrap_or(0);
        let bytes = std::fs::read_to_string(packet)
            .map_err(|e| setup("reading the saved packet", e))?
            .trim()
            .as_bytes()
            .to_vec();
        let port = postern_proto::wire::DEFAULT_PORT;
        let sent = in_netns(&self.cli, move || {
            std::net::UdpSocket::bind(SocketAddrV4::new(KNOCKER, 0))
                .and_then(|s| s.send_to(&bytes, SocketAddrV4::new(SRV, port)))
                .map_err(|e| e.to_string())
        })
        .and_then(|r| r)
        .map_err(|e| setup("sending the packet again", e))?;
        let _ = sent;
        let start = Instant::now();
        let mut now = before;
        while start.elapsed() < Duration::from_secs(3) && now <= before {
            self.pause(Duration::from_millis(100))?;
            now = self.status()?["refused"]["replay"].as_u64().unwrap_or(0);
        }
        let opened = self.connects(KNOCKER)?;
        report.check(
            now > before && !opened,
            &format!(
                "the same packet sent again is refused as a replay (refused/replay {before} -> {now}; tcp/{PORT} {})",
                if opened { "OPENED" } else { "stays closed" }
            ),
        );
        Ok(())
    }

    /// SIGTERM, as `systemctl stop` sends it: posternd must stop cleanly.
    fn stop_daemon(&mut self, report: &mut Report) -> Result<()> {
        let Some(mut child) = self.daemon.take() else {
            return Ok(());
        };
        let _ = nix::sys::signal::kill(pid_of(&child), nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if start.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => break None,
            }
        };
        match status {
            Some(st) => report.check(st.success(), &format!("posternd stopped on SIGTERM ({st})")),
            None => {
                self.daemon = Some(child);
                report.fail("posternd did not stop within 10 s of SIGTERM");
            }
        }
        Ok(())
    }

    /// Stop everything and remove everything this run made; what could not be removed.
    fn cleanup(&mut self) -> Vec<String> {
        self.cleaned = true;
        let mut left = Vec::new();
        if let Some((done, handle)) = self.service.take() {
            done.store(true, Ordering::Relaxed);
            let _ = handle.join();
        }
        if let Some(mut child) = self.daemon.take() {
            let _ = nix::sys::signal::kill(pid_of(&child), nix::sys::signal::Signal::SIGTERM);
            if !reap(&mut child, Duration::from_secs(5)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for ns in std::mem::take(&mut self.created) {
            // Whatever still runs in our namespace was started by this run (posternd's
            // worker, a client that hung): stopped by pid.
            for round in 0..50 {
                let pids = netns_pids(&self.ip, &ns);
                if pids.is_empty() {
                    break;
                }
                let sig = if round < 25 {
                    nix::sys::signal::Signal::SIGTERM
                } else {
                    nix::sys::signal::Signal::SIGKILL
                };
                for p in &pids {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), sig);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let pids = netns_pids(&self.ip, &ns);
            if !pids.is_empty() {
                left.push(format!("processes {pids:?} in {ns}"));
            }
            let _ = Command::new(&self.ip)
                .args(["netns", "del", &ns])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if Path::new("/run/netns").join(&ns).exists() {
                left.push(format!("namespace {ns}"));
            }
        }
        if self.dir_made {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                left.push(format!("{}: {e}", self.dir.display()));
            }
            self.dir_made = false;
        }
        left
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.cleaned {
            let _ = self.cleanup();
        }
    }
}

fn pid_of(child: &Child) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX))
}

/// Wait up to `within` for `child` to exit.
fn reap(child: &mut Child, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The pids in a namespace (`ip netns pids`).
fn netns_pids(ip: &Path, ns: &str) -> Vec<i32> {
    Command::new(ip)
        .args(["netns", "pids", ns])
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .filter(|&p| p != i32::try_from(std::process::id()).unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}

/// Run a command to its end, killed (by pid) after `within` or on a signal; whether it
/// succeeded, and its output.
fn run_bounded(cmd: &mut Command, within: Duration, stop: &AtomicBool) -> Result<(bool, String)> {
    use std::io::Read as _;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            setup(
                &format!("running {}", cmd.get_program().to_string_lossy()),
                e,
            )
        })?;
    // Read both pipes on threads, so that a talkative child never blocks on a full pipe.
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut r| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    })
    .collect();
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if start.elapsed() < within && !stop.load(Ordering::Relaxed) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut text = String::new();
    for r in readers {
        text.push_str(&String::from_utf8_lossy(&r.join().unwrap_or_default()));
    }
    match status {
        Some(st) => Ok((st.success(), text)),
        None if stop.load(Ordering::Relaxed) => Err(Error::Interrupted),
        None => Ok((
            false,
            format!("did not finish within {} s", within.as_secs()),
        )),
    }
}

/// Run `f` on a thread that has entered the network namespace `ns`: its sockets
/// belong to that namespace; no other thread of this process changes namespace.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::result::Result<T, String> {
    let path = Path::new("/run/netns").join(ns);
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("entering {}: {e}", path.display()))?;
        Ok(f())
    })
    .join()
    .map_err(|_| "a namespace thread panicked".to_owned())?
}

/// A program on PATH or in the system directories.
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_unit_is_understood() {
        let u = Unit::parse(SHIPPED_UNIT, "shipped");
        assert_eq!(u.program, "/usr/sbin/posternd");
        assert_eq!(u.args(), ["-f"]);
        assert_eq!(u.umask, Some(0o077));
        assert_eq!((u.run_mode, u.state_mode), (0o700, 0o700));
        let u = Unit::parse(
            "[Service]\nExecStart=-/opt/posternd -c /x/y.conf -v\n[Install]\nUMask=0000\n",
            "x",
        );
        assert_eq!(u.program, "/opt/posternd");
        assert_eq!(u.args(), ["-v", "-f"]);
        assert_eq!(u.umask, None);
    }
}
