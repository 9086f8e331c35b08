//! The shipped unit `dist/posternd.service` under a real systemd: `systemd-nspawn --boot`
//! over the host's own /usr (volatile /etc and /var), joined to the server's network
//! namespace. The unit starts (`Type=notify`), its sandbox holds both processes, the real
//! fwknop client opens a port through it, and reload and stop behave.
//!
//! ```text
//!   client ns 198.18.9.2 ──veth── 198.18.9.1 server ns: tcp/22 listener (from the host)
//!                                   └ systemd-nspawn --boot: systemd as PID 1
//!                                       └ posternd.service: posternd (root) ─ worker (nobody)
//! ```
//!
//! Only the ExecStart path differs from the shipped unit: the container sees the host's
//! /usr read-only, so the test binary is bound at /opt/postern/posternd.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use postern_testkit::{iface_with, link, tcp_service, Netns, TempDir};

use crate::lab::posternd_bin;

const SRV: &str = "198.18.9.1";
const CLIENT: &str = "198.18.9.2";
const SHIPPED_EXEC: &str = "ExecStart=/usr/sbin/posternd -f";
const TEST_EXEC: &str = "ExecStart=/opt/postern/posternd -f";
/// The worst `systemd-analyze security` exposure accepted for the unit (0 to 10).
const MAX_EXPOSURE: f64 = 4.0;
const SHORT: Duration = Duration::from_millis(300);

/// Root, the tools, and a systemd to boot; fails under CI=true when something is missing.
fn ready(name: &str) -> bool {
    let tools = [
        "ip",
        "nft",
        "fwknop",
        "python3",
        "systemd-nspawn",
        "nsenter",
        "timeout",
        "kill",
    ];
    if !postern_testkit::can_run(name, &tools) {
        return false;
    }
    let init = Path::new("/usr/lib/systemd/systemd").is_file();
    if !init {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{name}: needs /usr/lib/systemd/systemd, and CI=true requires it to run"
        );
        eprintln!("SKIP {name}: needs /usr/lib/systemd/systemd");
    }
    init
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Wait (polling) until `child` exits or `deadline` passes.
fn wait_exit(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if start.elapsed() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// The children of every thread of host process `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Whether host process `pid` is PID 1 of a PID namespace below ours.
fn is_container_init(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let f: Vec<String> = s
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))?
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            Some(f.len() >= 2 && f.last().map(String::as_str) == Some("1"))
        })
        .unwrap_or(false)
}

/// A field of a /proc/PID/status text.
fn status_field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map_or("", str::trim)
}

/// Our own sub-cgroup in each hierarchy nspawn uses (`name=systemd` and cgroup2 when
/// hybrid, else the unified one), so its `payload/` and `supervisor/` land under it.
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let path_of = |key: &str| {
        own.lines()
            .find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, k, p) = (f.next()?, f.next()?, f.next()?);
                (k == key).then(|| p.trim_start_matches('/').to_owned())
            })
            .unwrap_or_default()
    };
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.join(path_of("")).join(name)];
    }
    [("systemd", "name=systemd"), ("unified", "")]
        .iter()
        .filter(|(dir, _)| root.join(dir).join("cgroup.procs").exists())
        .map(|(dir, key)| root.join(dir).join(path_of(key)).join(name))
        .collect()
}

/// Remove a cgroup directory tree, deepest first (cgroups are removed with rmdir).
fn remove_cgroup(dir: &Path) {
    let mut dirs = vec![dir.to_owned()];
    let mut i = 0;
    while i < dirs.len() {
        if let Ok(rd) = std::fs::read_dir(&dirs[i]) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    dirs.push(e.path());
                }
            }
        }
        i += 1;
    }
    for d in dirs.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}

/// A booted container: `timeout -k` ─ systemd-nspawn ─ systemd (the leader). Powered off
/// and cleaned up on drop, every process by PID.
struct Container {
    name: String,
    /// The `timeout` process (nspawn is its child).
    timeout: Child,
    /// Host PID of the container's PID 1.
    leader: Option<u32>,
    nspawn: Option<u32>,
    cgroups: Vec<PathBuf>,
    console: PathBuf,
    exit: Option<ExitStatus>,
}

impl Container {
    /// Boot `/` volatile (host /usr read-only, tmpfs /etc and /var) in the network
    /// namespace `netns`, with `binds` (host path, container path) read-only.
    fn boot(name: &str, netns: &Netns, binds: &[(PathBuf, &str)], console: &Path) -> Container {
        let cgroups = cgroup_dirs(&format!("postern-{name}"));
        for d in &cgroups {
            std::fs::create_dir_all(d).unwrap();
        }
        // The wrapper joins the sub-cgroups, then becomes `timeout`.
        let mut c = Command::new("sh");
        c.args([
            "-c",
            r#"while [ "$1" != -- ]; do echo $$ >"$1" || exit 1; shift; done; shift; exec "$@""#,
            "sh",
        ]);
        c.args(cgroups.iter().map(|d| d.join("cgroup.procs")));
        c.args(["--", "timeout", "-k", "10", "120", "systemd-nspawn"]);
        c.args([
            "--quiet",
            "--boot",
            "--register=no",
            "--keep-unit",
            "--settings=no",
            "--console=passive",
            "--machine",
            name,
            "--network-namespace-path",
            &format!("/run/netns/{}", netns.name),
            // Only --private-network implies it; the firewall needs it.
            "--capability=CAP_NET_ADMIN",
            // nspawn's own seccomp allow-list for the container does not know Landlock
            // (systemd 252): without this, the container, not the unit, hides it.
            "--system-call-filter=landlock_create_ruleset landlock_add_rule landlock_restrict_self",
            "-D",
            "/",
            "--volatile=yes",
        ]);
        for (host, inside) in binds {
            c.arg(format!("--bind-ro={}:{inside}", host.display()));
        }
        // An init argument: no first-boot questions on the empty /etc.
        c.arg("systemd.firstboot=off");
        let log = std::fs::File::create(console).unwrap();
        c.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut me = Container {
            name: name.to_owned(),
            timeout: c.spawn().unwrap(),
            leader: None,
            nspawn: None,
            cgroups,
            console: console.to_owned(),
            exit: None,
        };
        let start = Instant::now();
        while me.leader.is_none() && start.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(st)) = me.timeout.try_wait() {
                me.exit = Some(st);
                me.fail(&format!("systemd-nspawn ended during boot: {st}"));
            }
            me.nspawn = children(me.timeout.id()).first().copied();
            if let Some(n) = me.nspawn {
                me.leader = children(n).into_iter().find(|&p| is_container_init(p));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if me.leader.is_none() {
            me.fail("no container PID 1 within 15 s");
        }
        let start = Instant::now();
        while !me
            .run(&["test", "-S", "/run/systemd/private"])
            .status
            .success()
        {
            if start.elapsed() > Duration::from_secs(15) {
                me.fail("systemd's private socket did not appear within 15 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let o = me.run(&["systemctl", "is-system-running", "--wait"]);
        let state = text(&o);
        if !["running", "degraded"].contains(&state.trim()) {
            me.fail(&format!("boot did not finish: {state}"));
        }
        me
    }

    /// Run `argv` in the container (all its namespaces), bounded to 20 s.
    fn run(&self, argv: &[&str]) -> Output {
        let leader = self.leader.map(|p| p.to_string()).unwrap_or_default();
        Command::new("timeout")
            .args(["-k", "5", "20", "nsenter", "--target", &leader, "--all"])
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("SYSTEMD_PAGER", "")
            .env("SYSTEMD_COLORS", "0")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Run `argv` in the container; its output, or a failure with the journal.
    fn ok(&self, argv: &[&str]) -> String {
        let o = self.run(argv);
        if !o.status.success() {
            self.fail(&format!("{argv:?}: {}\n{}", o.status, text(&o)));
        }
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `systemctl show` of posternd.service.
    fn show(&self, props: &[&str]) -> HashMap<String, String> {
        let mut argv = vec!["systemctl", "show", "posternd.service"];
        for p in props {
            argv.extend(["-p", p]);
        }
        self.ok(&argv)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn journal(&self) -> String {
        text(&self.run(&["journalctl", "--no-pager", "-b", "-u", "posternd.service"]))
    }

    /// A container /proc file.
    fn proc_file(&self, pid: &str, file: &str) -> String {
        self.ok(&["cat", &format!("/proc/{pid}/{file}")])
    }

    /// The worker: the one child of posternd's main process (container PIDs).
    fn worker_of(&self, main: &str) -> Option<String> {
        let o = self.run(&["sh", "-c", "cat /proc/$1/task/*/children", "sh", main]);
        let kids: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        (kids.len() == 1).then(|| kids[0].clone())
    }

    /// Panic with `msg`, the unit's journal and the console.
    fn fail(&self, msg: &str) -> ! {
        let journal = if self.leader.is_some() {
            self.journal()
        } else {
            String::new()
        };
        let console = std::fs::read_to_string(&self.console).unwrap_or_default();
        panic!(
            "{msg}\n--- journalctl -u posternd ---\n{journal}\n--- nspawn console ---\n{console}"
        );
    }

    /// Power off and wait for nspawn (bounded); its exit status.
    fn poweroff(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if self.leader.is_some() {
                let _ = self.run(&["systemctl", "--no-block", "poweroff"]);
            }
            self.exit = wait_exit(&mut self.timeout, Duration::from_secs(15));
        }
        if self.exit.is_none() {
            // nspawn halts the container cleanly on SIGTERM, which `timeout` passes on.
            signal(self.timeout.id(), "-TERM");
            self.exit = wait_exit(&mut self.timeout, Duration::from_secs(15));
        }
        if self.exit.is_none() {
            for pid in [self.leader, self.nspawn].into_iter().flatten() {
                signal(pid, "-KILL");
            }
            let _ = self.timeout.kill();
            let _ = self.timeout.wait();
        }
        self.exit
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.poweroff();
        for d in &self.cgroups {
            remove_cgroup(d);
        }
        // The host's /run is no tmpfs, so nspawn leaves these behind.
        let _ =
            std::fs::remove_dir_all(Path::new("/run/systemd/nspawn/propagate").join(&self.name));
        for empty in [
            "/run/systemd/nspawn/propagate",
            "/run/systemd/nspawn",
            "/run/systemd/nspawn-root",
        ] {
            let _ = std::fs::remove_dir(empty);
        }
    }
}

/// Knock for tcp/22 with the real fwknop client from `ns`.
fn knock(ns: &Netns, dir: &TempDir) {
    let out = ns
        .cmd("fwknop")
        .arg("--rc-file")
        .arg(dir.join("fwknoprc"))
        .args(["--no-save-args", "-A", "tcp/22", "-D", SRV])
        .args([
            "--key-rijndael",
            "enc-1",
            "--key-hmac",
            "hmac-1",
            "--use-hmac",
        ])
        .args(["-a", CLIENT])
        .env("HOME", &dir.0)
        .output()
        .unwrap();
    assert!(out.status.success(), "fwknop: {}", text(&out));
}

#[test]
fn shipped_unit_runs_under_a_real_systemd() {
    if !ready("shipped_unit_runs_under_a_real_systemd") {
        return;
    }
    let t0 = Instant::now();
    let dir = TempDir::new("systemd");
    let srv = Netns::new("s");
    let client = Netns::new("c");
    link(&srv, SRV, &client, CLIENT);
    let iface = iface_with(&srv, SRV);
    // Reached through the container: it shares the server namespace.
    let _svc = tcp_service(&srv, "0.0.0.0", &[22], &dir.join("svc.log"));

    // The unit under test: the shipped file with only the ExecStart path changed.
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../dist/posternd.service"
    ))
    .unwrap();
    assert_eq!(
        shipped.matches(SHIPPED_EXEC).count(),
        1,
        "the shipped unit must have one '{SHIPPED_EXEC}'"
    );
    let unit = shipped.replace(SHIPPED_EXEC, TEST_EXEC);
    assert_eq!(unit.replace(TEST_EXEC, SHIPPED_EXEC), shipped);
    std::fs::write(dir.join("posternd.service"), &unit).unwrap();
    std::fs::write(dir.join("00-postern-test.preset"), "disable *\n").unwrap();
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    for (name, body) in [
        (
            "fwknopd.conf",
            format!("NFT_DEFAULT_DROP Y\nPCAP_INTF {iface}\n"),
        ),
        (
            "access.conf",
            "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\nOPEN_PORTS tcp/22\nFW_ACCESS_TIMEOUT 5\n"
                .to_owned(),
        ),
    ] {
        let p = etc.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
    let mut binds: Vec<(PathBuf, &str)> = vec![
        (posternd_bin().into(), "/opt/postern/posternd"),
        (etc, "/etc/postern"),
        (
            dir.join("posternd.service"),
            "/etc/systemd/system/posternd.service",
        ),
        (
            dir.join("00-postern-test.preset"),
            "/etc/systemd/system-preset/00-postern-test.preset",
        ),
        // The install step's system user, created by systemd-sysusers at boot.
        (
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/sysusers.d/postern.conf"),
            "/etc/sysusers.d/postern.conf",
        ),
    ];
    // /etc is an empty tmpfs: nft resolves protocol names (ipv6-icmp) in /etc/protocols.
    for f in ["/etc/protocols", "/etc/services"] {
        if Path::new(f).exists() {
            binds.push((f.into(), f));
        }
    }

    // 1. Boot.
    let name = format!("pstsd{}", std::process::id());
    let t_boot = Instant::now();
    let mut ct = Container::boot(&name, &srv, &binds, &dir.join("console.log"));
    let boot = t_boot.elapsed();

    assert!(
        client.can_connect(SRV, 22, SHORT),
        "tcp/22 not reachable even without posternd"
    );

    // 2. Start: Type=notify, so this returns once posternd has said READY=1.
    // Enabled through its [Install] section, which also keeps the unit loaded (and its
    // exit status readable) once it has stopped.
    ct.ok(&["systemctl", "enable", "posternd.service"]);
    let t_start = Instant::now();
    ct.ok(&["systemctl", "start", "posternd.service"]);
    let start = t_start.elapsed();
    let st = ct.show(&[
        "ActiveState",
        "SubState",
        "Type",
        "NotifyAccess",
        "WatchdogUSec",
        "MainPID",
        "UnitFileState",
    ]);
    if st["ActiveState"] != "active" || st["SubState"] != "running" {
        ct.fail(&format!("posternd.service is not running: {st:?}"));
    }
    assert_eq!(st["Type"], "notify");
    assert_eq!(st["NotifyAccess"], "main");
    assert_eq!(st["WatchdogUSec"], "30s");
    assert_eq!(st["UnitFileState"], "enabled");
    let journal = ct.journal();
    if !journal.contains("started (pid") {
        ct.fail("no 'started' line");
    }
    let main = st["MainPID"].clone();
    let exposure_text = ct.ok(&[
        "systemd-analyze",
        "security",
        "--no-pager",
        "posternd.service",
    ]);
    let overall = exposure_text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for posternd.service:"))
        .map(|(_, r)| r.trim().to_owned())
        .unwrap_or_else(|| ct.fail(&format!("no overall exposure: {exposure_text}")));
    eprintln!("systemd-analyze security: {overall}");
    let exposure: f64 = overall
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        exposure <= MAX_EXPOSURE,
        "exposure {overall}, more than {MAX_EXPOSURE}:\n{exposure_text}"
    );

    // Both processes alive inside the sandbox: the main one as root with the unit's
    // bounding set, the worker as another user, without capabilities.
    let Some(worker) = ct.worker_of(&main) else {
        ct.fail(&format!("posternd (pid {main}) has not exactly one worker"));
    };
    for pid in [&main, &worker] {
        let comm = ct.proc_file(pid, "comm");
        assert_eq!(comm.trim(), "posternd", "pid {pid}");
        let s = ct.proc_file(pid, "status");
        assert_eq!(status_field(&s, "NoNewPrivs"), "1", "pid {pid}: {s}");
        let seccomp: u32 = status_field(&s, "Seccomp").parse().unwrap();
        assert!(seccomp >= 2, "pid {pid}: no seccomp filter: {s}");
        let bnd = u64::from_str_radix(status_field(&s, "CapBnd"), 16).unwrap();
        assert_eq!(bnd & (1 << 21), 0, "pid {pid} has CAP_SYS_ADMIN: {s}");
    }
    let ws = ct.proc_file(&worker, "status");
    let wuid = status_field(&ws, "Uid");
    assert!(
        wuid.split_whitespace().all(|u| u != "0"),
        "worker runs as root: {ws}"
    );
    let postern_uid = ct.ok(&["id", "-u", "postern"]);
    assert_eq!(
        wuid.split_whitespace().next(),
        Some(postern_uid.trim()),
        "the worker does not run as the sysusers.d user 'postern': {ws}"
    );
    assert_eq!(
        status_field(&ws, "CapEff"),
        "0000000000000000",
        "worker: {ws}"
    );
    assert!(
        ct.proc_file(&worker, "cmdline").contains("--worker"),
        "pid {worker} is not the worker"
    );

    // The daemon's own status, asked inside the container as an admin would: the
    // worker's sandbox as the kernel and the worker report it.
    let status = ct.ok(&["/opt/postern/posternd", "status", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&status).unwrap();
    let wpart = &st["parts"][1];
    assert_eq!(wpart["seccomp"], "enforced", "{status}");
    assert_eq!(wpart["kernel_seccomp_mode"], 2, "{status}");
    assert_eq!(wpart["no_new_privs"], true, "{status}");
    if !["enforced", "partially enforced"].contains(&wpart["landlock"].as_str().unwrap_or("")) {
        ct.fail(&format!("the worker runs without Landlock: {status}"));
    }
    assert_eq!(st["replay_store"], "persistent", "{status}");

    // 3. The real client opens tcp/22 for FW_ACCESS_TIMEOUT (5 s).
    assert!(
        !client.can_connect(SRV, 22, SHORT),
        "tcp/22 open before any knock"
    );
    let t_knock = Instant::now();
    knock(&client, &dir);
    if !client.wait_open(SRV, 22, Duration::from_secs(5)) {
        ct.fail("knock did not open tcp/22");
    }
    let opened = t_knock.elapsed();
    if !client.wait_closed(SRV, 22, Duration::from_secs(12)) {
        ct.fail("tcp/22 still open 12 s after FW_ACCESS_TIMEOUT 5");
    }
    let closed = t_knock.elapsed();
    assert!(
        closed >= Duration::from_secs(4),
        "tcp/22 closed after {closed:?}, before FW_ACCESS_TIMEOUT 5"
    );

    // 4. Reload (SIGHUP): still running, same main process, a new worker that works.
    let t_reload = Instant::now();
    ct.ok(&["systemctl", "reload", "posternd.service"]);
    let start_new = Instant::now();
    let new_worker = loop {
        match ct.worker_of(&main) {
            Some(w) if w != worker => break w,
            _ if start_new.elapsed() > Duration::from_secs(5) => {
                ct.fail(&format!("worker {worker} was not replaced on reload"))
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let st = ct.show(&["ActiveState", "SubState", "MainPID"]);
    if st["ActiveState"] != "active" || st["SubState"] != "running" || st["MainPID"] != main {
        ct.fail(&format!("after reload: {st:?}"));
    }
    if !ct.journal().contains("configuration reloaded") {
        ct.fail("no 'configuration reloaded' line");
    }
    let nws = ct.proc_file(&new_worker, "status");
    assert_eq!(status_field(&nws, "NoNewPrivs"), "1", "{nws}");
    // The new worker may still be opening its socket: knock again if the first is lost.
    let reopened = (0..3).any(|_| {
        knock(&client, &dir);
        client.wait_open(SRV, 22, Duration::from_secs(2))
    });
    if !reopened {
        ct.fail("no knock opened tcp/22 after the reload");
    }
    let reload = t_reload.elapsed();

    // 5. Stop: a clean exit that takes the open grant with it.
    let t_stop = Instant::now();
    ct.ok(&["systemctl", "stop", "posternd.service"]);
    let stop = t_stop.elapsed();
    let st = ct.show(&[
        "ActiveState",
        "SubState",
        "Result",
        "ExecMainCode",
        "ExecMainStatus",
    ]);
    let clean = st["ActiveState"] == "inactive"
        && st["Result"] == "success"
        && st["ExecMainCode"] == "1"
        && st["ExecMainStatus"] == "0";
    if !clean {
        ct.fail(&format!("stop was not clean: {st:?}"));
    }
    // NFT_DEFAULT_DROP Y: the base stays (fail closed), the grants go with the daemon,
    // though the last one has seconds left.
    let table = text(&srv.run(&["nft", "list", "table", "inet", "postern"]));
    assert!(
        !table.contains(CLIENT),
        "a grant outlived the daemon: {table}"
    );
    assert!(
        !client.can_connect(SRV, 22, SHORT),
        "tcp/22 reachable after stop"
    );

    // 6. Power off: nspawn ends with status 0.
    let t_off = Instant::now();
    let exit = ct.poweroff();
    let off = t_off.elapsed();
    if !exit.is_some_and(|e| e.success()) {
        ct.fail(&format!("systemd-nspawn did not end cleanly: {exit:?}"));
    }
    drop(ct);
    eprintln!(
        "timings: boot {boot:.2?}, start {start:.2?}, knock→open {opened:.2?}, knock→closed {closed:.2?}, \
         reload+knock {reload:.2?}, stop {stop:.2?}, poweroff {off:.2?}, total {:.2?}",
        t0.elapsed()
    );
}
