//! The firewalld backend against a real firewalld (Debian 12: 1.3, nftables backend), run
//! in the server's namespace on a D-Bus system bus of its own, with the real fwknop client.
//!
//! ```text
//!   c1 198.18.1.2 ──┐ srv namespace: dbus-daemon (own config, socket in the lab dir)
//!   c2 198.18.2.2 ──┘                firewalld --nofork --nopid (default zone drop)
//!                                    posternd FIREWALL_TYPE firewalld ──D-Bus──► addRichRule
//! ```
//!
//! Nothing runs on the host's own bus and nothing of firewalld touches the root namespace:
//! its ruleset is compared before and after. firewalld gets a private tmpfs on /run (it
//! keeps its temporary files in /run/firewalld), logs to its console only, and takes its
//! settings from a directory in the lab.

use std::process::Output;
use std::time::{Duration, Instant};

use postern_testkit::{wait_for_line, Proc};

use crate::lab::{keys, strs, Lab, C1, C16, SRV, SRV6, SRV_C2};

const SHORT: Duration = Duration::from_millis(400);
const C2: &str = "198.18.2.2";

/// The system bus's policy as Debian ships it (deny by default), with firewalld's own
/// policy file included as the real system bus does.
const BUS_CONF: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=SOCKET</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include ignore_missing="yes">/usr/share/dbus-1/system.d/FirewallD.conf</include>
  <include ignore_missing="yes">/etc/dbus-1/system.d/FirewallD.conf</include>
</busconfig>
"#;

/// firewalld's own settings: Debian's, with the `drop` zone as the default.
const FIREWALLD_CONF: &str = "DefaultZone=drop\nCleanupOnExit=yes\nCleanupModulesOnExit=no\nLockdown=no\nIPv6_rpfilter=yes\nIndividualCalls=no\nLogDenied=off\nFirewallBackend=nftables\nFlushAllOnReload=yes\nRFC3964_IPv4=yes\n";

/// A system bus of the lab's own in the server namespace, and firewalld on it.
pub(crate) struct Bus {
    /// `DBUS_SYSTEM_BUS_ADDRESS=unix:path=...`, for `env`.
    pub(crate) env: String,
    _dbus: Proc,
    firewalld: Option<Proc>,
}

impl Bus {
    /// Start dbus-daemon (no firewalld yet).
    pub(crate) fn new(lab: &Lab) -> Bus {
        let dir = lab.path("dbus");
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("system_bus_socket");
        let conf = dir.join("system.conf");
        std::fs::write(
            &conf,
            BUS_CONF.replace("SOCKET", &socket.display().to_string()),
        )
        .unwrap();
        let log = lab.path("dbus.log");
        let dbus = lab.srv.spawn(
            &[
                "dbus-daemon",
                &format!("--config-file={}", conf.display()),
                "--nofork",
                "--print-address",
            ],
            &log,
        );
        wait_for_line(&log, "unix:path=", Duration::from_secs(15));
        Bus {
            env: format!("DBUS_SYSTEM_BUS_ADDRESS=unix:path={}", socket.display()),
            _dbus: dbus,
            firewalld: None,
        }
    }

    /// Start firewalld on this bus and wait until it says it is running.
    pub(crate) fn start_firewalld(&mut self, lab: &Lab) -> Duration {
        let conf = lab.path("firewalld");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("firewalld.conf"), FIREWALLD_CONF).unwrap();
        let conf = conf.display().to_string();
        let log = lab.path("firewalld.log");
        let started = Instant::now();
        // `ip netns exec` gives the command a mount namespace of its own: the tmpfs on
        // /run stays there. sh and env exec, so the PID is firewalld's.
        self.firewalld = Some(lab.srv.spawn(
            &[
                "sh",
                "-c",
                "mount -t tmpfs -o mode=0755 tmpfs /run && exec \"$@\"",
                "sh",
                "env",
                &self.env,
                "firewalld",
                "--nofork",
                "--nopid",
                "--system-config",
                &conf,
                "--log-target",
                "console",
            ],
            &log,
        ));
        while started.elapsed() < Duration::from_secs(60) {
            let out = self.cmd(lab, &["--state"]);
            if String::from_utf8_lossy(&out.stdout).trim() == "running" {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "firewalld did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// `firewall-cmd ARGS` on this bus.
    pub(crate) fn cmd(&self, lab: &Lab, args: &[&str]) -> Output {
        lab.srv
            .cmd("env")
            .arg(&self.env)
            .arg("firewall-cmd")
            .args(args)
            .output()
            .unwrap()
    }

    /// `firewall-cmd ARGS`, which must succeed.
    fn ok(&self, lab: &Lab, args: &[&str]) -> String {
        let out = self.cmd(lab, args);
        assert!(
            out.status.success(),
            "firewall-cmd {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn rich_rules(&self, lab: &Lab) -> String {
        self.ok(lab, &["--zone=drop", "--list-rich-rules"])
    }

    /// posternd's command line, run through `env` with this bus.
    fn posternd_argv(&self, lab: &Lab, extra: &[&str]) -> Vec<String> {
        let mut v = vec!["env".to_owned(), self.env.clone()];
        v.extend(lab.args(extra));
        v
    }

    /// Start posternd on the c1 link with this bus and wait until it is ready.
    fn start_posternd(&self, lab: &mut Lab) {
        let iface = lab.iface.clone();
        let argv = self.posternd_argv(lab, &["-i", &iface]);
        let log = lab.path("posternd.log");
        let _ = std::fs::remove_file(&log);
        lab.daemon = Some(lab.srv.spawn(&strs(&argv), &log));
        wait_for_line(&log, "started (pid", Duration::from_secs(15));
    }

    /// Run posternd to completion with this bus.
    fn run_posternd(&self, lab: &Lab, extra: &[&str]) -> Output {
        let argv = self.posternd_argv(lab, extra);
        lab.srv.cmd(&argv[0]).args(&argv[1..]).output().unwrap()
    }
}

pub(crate) fn ready(name: &str) -> bool {
    postern_testkit::can_run(
        name,
        &[
            "ip",
            "nft",
            "fwknop",
            "python3",
            "dbus-daemon",
            "firewalld",
            "firewall-cmd",
            "env",
            "sh",
        ],
    )
}

/// The root namespace's ruleset (never touched by these tests).
fn root_ruleset() -> String {
    let out = std::process::Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn knock(lab: &Lab, port: u16) {
    let k = keys("enc-1", "hmac-1");
    let mut a = strs(&k);
    let p = format!("tcp/{port}");
    a.extend(["-A", p.as_str(), "-a", C1, "-D", SRV]);
    lab.fwknop(&lab.c1, &a);
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const ACCESS: &str =
    "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\nOPEN_PORTS tcp/22\nFW_ACCESS_TIMEOUT 3\n";

/// fwknopd's FIREWD_* directives as Debian's fwknopd.conf spells them, accepted.
const SERVER: &str = "FIREWALL_TYPE firewalld\nFLUSH_FIREWD_AT_INIT Y;\nFLUSH_FIREWD_AT_EXIT Y;\nFIREWD_INPUT_ACCESS ACCEPT, filter, INPUT, 1, FWKNOP_INPUT, 1;\nENABLE_FIREWD_COMMENT_CHECK Y;\n";

#[test]
fn firewalld_rich_rules_with_timeouts() {
    if !ready("firewalld_rich_rules_with_timeouts") {
        return;
    }
    let root_before = root_ruleset();
    let mut lab = Lab::new(&[22, 23]);
    let mut bus = Bus::new(&lab);
    let up = bus.start_firewalld(&lab);
    eprintln!("firewalld running after {up:?}");
    // The zone drops: nothing reaches the services yet.
    assert!(!lab.c1.can_connect(SRV, 22, SHORT), "open before a knock");
    assert!(!lab.c2.can_connect(SRV_C2, 23, SHORT));
    // The admin's own permanent rule, of posternd's very form (c2 to tcp/23): never taken
    // as posternd's. And a rule of posternd's form left at runtime by a previous run.
    let admin =
        format!(r#"rule family="ipv4" source address="{C2}" port port="23" protocol="tcp" accept"#);
    bus.ok(
        &lab,
        &[
            "--permanent",
            "--zone=drop",
            &format!("--add-rich-rule={admin}"),
        ],
    );
    bus.ok(&lab, &["--reload"]);
    let stale =
        format!(r#"rule family="ipv4" source address="{C1}" port port="22" protocol="tcp" accept"#);
    bus.ok(&lab, &["--zone=drop", &format!("--add-rich-rule={stale}")]);
    assert!(lab.c2.wait_open(SRV_C2, 23, Duration::from_secs(5)));
    assert!(lab.c1.wait_open(SRV, 22, Duration::from_secs(5)));

    // A zone firewalld does not have: a clear error at start, nothing changed.
    lab.configure(&format!("{SERVER}FIREWD_ZONE nosuch\n"), ACCESS);
    let before = lab.ruleset();
    let out = bus.run_posternd(&lab, &["-i", &lab.iface.clone()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("FIREWD_ZONE 'nosuch' is not a firewalld zone"),
        "{}",
        text(&out)
    );
    assert_eq!(lab.ruleset(), before, "a failed start changed the ruleset");

    // --check-config names the backend and notes the FIREWD_* it does not use.
    lab.configure(SERVER, ACCESS);
    let out = bus.run_posternd(&lab, &["--check-config"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("firewalld (firewalld's default zone) over D-Bus, rich rules with timeouts (FIREWALL_TYPE firewalld)"),
        "{t}"
    );
    assert!(t.contains("FIREWD_INPUT_ACCESS has no effect"), "{t}");
    // Without FIREWALL_TYPE, a running firewalld is found on the bus and chosen (rules
    // beside it would be lost at its next reload).
    lab.configure("", ACCESS);
    let out = bus.run_posternd(&lab, &["--check-config"]);
    let t = text(&out);
    assert!(
        t.contains("(FIREWALL_TYPE not set and firewalld is running: rich rules in its zone)"),
        "{t}"
    );

    // Start: the stale rule is flushed (FLUSH_FIREWD_AT_INIT), the admin's stays.
    bus.start_posternd(&mut lab);
    assert!(
        lab.log()
            .contains("firewalld (zone drop) over D-Bus, rich rules with timeouts"),
        "{}",
        lab.log()
    );
    assert!(!bus.rich_rules(&lab).contains(&stale));
    assert!(bus.rich_rules(&lab).contains(&admin));
    assert!(!lab.c1.can_connect(SRV, 22, SHORT), "stale rule kept");

    // A knock opens tcp/22 for the knocking source only.
    let knocked = Instant::now();
    knock(&lab, 22);
    assert!(
        lab.c1.wait_open(SRV, 22, Duration::from_secs(5)),
        "{}",
        lab.log()
    );
    eprintln!("open {:?} after the knock", knocked.elapsed());
    assert!(
        !lab.c2.can_connect(SRV_C2, 22, SHORT),
        "open for another source"
    );
    assert!(bus.rich_rules(&lab).contains(&stale), "the grant's rule");
    // Status shows what firewalld holds, with the deadline posternd tracks; the admin's
    // rule is not posternd's.
    let st = lab.status();
    let kernel = st["kernel"].as_array().cloned().unwrap_or_default();
    assert_eq!(kernel.len(), 1, "{st}");
    assert_eq!(kernel[0]["source"], C1, "{st}");
    assert_eq!(kernel[0]["port"], 22, "{st}");
    assert!(kernel[0]["left"].as_u64().unwrap() <= 3, "{st}");
    // A port outside OPEN_PORTS stays closed.
    knock(&lab, 23);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!lab.c1.can_connect(SRV, 23, SHORT), "tcp/23 opened");
    // Closed on time, by firewalld's own timer.
    assert!(
        lab.c1.wait_closed(SRV, 22, Duration::from_secs(6)),
        "not closed"
    );
    let t = knocked.elapsed();
    eprintln!("closed {t:?} after the knock (FW_ACCESS_TIMEOUT 3)");
    assert!(t >= Duration::from_millis(2500), "closed after {t:?}");
    assert!(!bus.rich_rules(&lab).contains(&stale));

    // A second knock while open refreshes: removed and added again with a new timer, and
    // the first timer no longer closes it.
    knock(&lab, 22);
    assert!(lab.c1.wait_open(SRV, 22, Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(1500));
    let second = Instant::now();
    knock(&lab, 22);
    std::thread::sleep(Duration::from_millis(2000));
    assert!(
        lab.c1.can_connect(SRV, 22, Duration::from_millis(1000)),
        "the first timer closed a refreshed grant"
    );
    assert!(lab.c1.wait_closed(SRV, 22, Duration::from_secs(6)));
    let t = second.elapsed();
    assert!(
        t >= Duration::from_millis(2500),
        "refresh closed after {t:?}"
    );

    // kill -9 with a grant open: firewalld closes it on time all the same.
    let knocked = Instant::now();
    knock(&lab, 22);
    assert!(
        lab.c1.wait_open(SRV, 22, Duration::from_secs(5)),
        "{}",
        lab.log()
    );
    lab.kill9();
    assert!(
        lab.c1.wait_closed(SRV, 22, Duration::from_secs(6)),
        "open after kill -9"
    );
    let t = knocked.elapsed();
    eprintln!("closed {t:?} after the knock, posternd killed");
    assert!(t >= Duration::from_millis(2500), "closed after {t:?}");

    // Again, with the zone named; IPv6 (postern knocks: fwknop has no IPv6 allow
    // address), a client timeout of 60 s.
    lab.configure(&format!("{SERVER}FIREWD_ZONE drop\n"), ACCESS);
    bus.start_posternd(&mut lab);
    lab.postern(&["-A", "tcp/22", "-a", C16, "-D", SRV6, "-f", "60"]);
    assert!(
        lab.c1.wait_open(SRV6, 22, Duration::from_secs(5)),
        "IPv6\n{}",
        lab.log()
    );
    assert!(
        !lab.c1.can_connect(SRV, 22, SHORT),
        "the IPv6 grant opened IPv4"
    );
    let rule6 = format!(
        r#"rule family="ipv6" source address="{C16}" port port="22" protocol="tcp" accept"#
    );
    assert!(bus.rich_rules(&lab).contains(&rule6));
    let st = lab.status();
    let left = st["kernel"][0]["left"].as_u64().unwrap_or(0);
    assert!((50..=60).contains(&left), "{st}");
    // Stop: FLUSH_FIREWD_AT_EXIT removes posternd's rule now, long before its timeout;
    // the admin's stays.
    lab.stop();
    assert!(!bus.rich_rules(&lab).contains(&rule6));
    assert!(!lab.c1.can_connect(SRV6, 22, SHORT), "open after stop");
    assert!(bus.rich_rules(&lab).contains(&admin));
    assert!(
        lab.c2.can_connect(SRV_C2, 23, SHORT),
        "the admin's rule went"
    );
    assert_eq!(root_ruleset(), root_before, "the root namespace changed");
}

#[test]
fn firewalld_not_running_is_a_clear_start_error() {
    if !ready("firewalld_not_running_is_a_clear_start_error") {
        return;
    }
    let root_before = root_ruleset();
    let lab = Lab::new(&[22]);
    lab.configure(SERVER, ACCESS);
    let iface = lab.iface.clone();
    let before = lab.ruleset();
    // No system bus at all, then a bus without firewalld on it.
    let nobus = format!(
        "DBUS_SYSTEM_BUS_ADDRESS=unix:path={}",
        lab.path("nothing-here").display()
    );
    let mut argv = vec!["env".to_owned(), nobus];
    argv.extend(lab.args(&["-i", &iface]));
    let out = lab.srv.cmd(&argv[0]).args(&argv[1..]).output().unwrap();
    let bus = Bus::new(&lab);
    let out2 = bus.run_posternd(&lab, &["-i", &iface]);
    for o in [&out, &out2] {
        let t = text(o);
        assert!(!o.status.success(), "{t}");
        assert!(
            t.contains("firewalld does not answer on the system bus: ")
                && t.contains("; not started, firewall unchanged"),
            "{t}"
        );
        eprintln!("{}", t.trim());
    }
    assert!(!lab.path("run/posternd.pid").exists());
    assert_eq!(lab.ruleset(), before, "the ruleset changed");
    assert_eq!(root_ruleset(), root_before, "the root namespace changed");
}

#[test]
fn firewalld_gone_and_back_under_a_running_posternd() {
    if !ready("firewalld_gone_and_back_under_a_running_posternd") {
        return;
    }
    let mut lab = Lab::new(&[22]);
    let mut bus = Bus::new(&lab);
    bus.start_firewalld(&lab);
    lab.configure(SERVER, ACCESS);
    bus.start_posternd(&mut lab);
    // firewalld killed: its rules stay in the kernel (the zone still drops), its name
    // leaves the bus; a knock is refused as a firewall error, nothing opens.
    if let Some(mut p) = bus.firewalld.take() {
        p.child.kill().unwrap();
        p.child.wait().unwrap();
    }
    knock(&lab, 22);
    let start = Instant::now();
    while lab.status()["firewall_errors"].as_u64().unwrap_or(0) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no firewall error: {}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !lab.c1.can_connect(SRV, 22, SHORT),
        "open without firewalld"
    );
    assert!(
        lab.log()
            .contains("firewalld does not answer on the system bus"),
        "{}",
        lab.log()
    );
    for l in lab
        .log()
        .lines()
        .filter(|l| l.contains("firewalld does not answer"))
    {
        eprintln!("{l}");
    }
    // firewalld back: the next knock reconnects and opens.
    bus.start_firewalld(&lab);
    knock(&lab, 22);
    assert!(
        lab.c1.wait_open(SRV, 22, Duration::from_secs(5)),
        "{}",
        lab.log()
    );
    assert!(lab.c1.wait_closed(SRV, 22, Duration::from_secs(6)));
    lab.stop();
}
