//! `posternd setup` in namespaces, with posternd running in the gateway namespace:
//! an open TCP session survives the default-drop policy and its rollback; an
//! unconfirmed setup rolls back on time to exactly the ruleset before it; a setup
//! confirmed from an address that knocked stays (and one from an address without a
//! grant is refused); the guardian outlives the session that started it; `--dry-run`
//! changes nothing, a second pending setup is refused, and a session conntrack does not
//! know stops setup before the policy changes.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use postern_testkit::{wait_for_line, Proc};

use crate::lab::{posternd_bin, ready, Lab, C1, SRV, SRV_C2};

const ACCESS: &str =
    "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\nOPEN_PORTS tcp/22\nFW_ACCESS_TIMEOUT 30\n";
const SHORT: Duration = Duration::from_millis(500);
const ECHO_PORT: u16 = 7777;

#[derive(Clone, Copy, Debug)]
enum Fw {
    Nftables,
    IptablesNft,
    IptablesLegacy,
}

impl Fw {
    fn conf(self) -> &'static str {
        match self {
            Fw::Nftables => "FIREWALL_TYPE nftables\n",
            Fw::IptablesNft => "FIREWALL_TYPE iptables\nFIREWALL_EXE /usr/sbin/iptables-nft\n",
            Fw::IptablesLegacy => {
                "FIREWALL_TYPE iptables\nFIREWALL_EXE /usr/sbin/iptables-legacy\n"
            }
        }
    }

    /// The gateway's ruleset: `nft list ruleset`, or iptables-save and ip6tables-save
    /// without their timestamps and counters.
    fn snapshot(self, lab: &Lab) -> String {
        let tools: &[&str] = match self {
            Fw::Nftables => return lab.ruleset(),
            Fw::IptablesNft => &["iptables-nft-save", "ip6tables-nft-save"],
            Fw::IptablesLegacy => &["iptables-legacy-save", "ip6tables-legacy-save"],
        };
        let mut s = String::new();
        for t in tools {
            let out = lab.srv.run(&[t]);
            for l in String::from_utf8_lossy(&out.stdout).lines() {
                if l.starts_with('#') {
                    continue;
                }
                match (l.starts_with(':'), l.rfind(" [")) {
                    (true, Some(i)) => s.push_str(&l[..i]),
                    _ => s.push_str(l),
                }
                s.push('\n');
            }
        }
        s
    }

    fn drop_policy(self) -> &'static str {
        match self {
            Fw::Nftables => "policy drop;",
            _ => ":INPUT DROP",
        }
    }
}

/// A TCP echo server in `ns`.
fn echo_server(lab: &Lab, port: u16) -> Proc {
    let script = "import socket,threading,sys\nl=socket.socket()\nl.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\nl.bind(('0.0.0.0',int(sys.argv[1])))\nl.listen(8)\nprint('ready',flush=True)\ndef h(c):\n try:\n  while True:\n   d=c.recv(4096)\n   if not d: break\n   c.sendall(d)\n except Exception: pass\nwhile True:\n c,_=l.accept()\n threading.Thread(target=h,args=(c,),daemon=True).start()\n";
    let log = lab.path("echo.log");
    let p = lab
        .srv
        .spawn(&["python3", "-c", script, &port.to_string()], &log);
    wait_for_line(&log, "ready", Duration::from_secs(10));
    p
}

/// The admin's session: a connection from c1 opened before setup, with a byte echoed
/// every 100 ms (an interactive session has traffic while setup runs in it).
struct Session {
    _proc: Proc,
    log: PathBuf,
    port: u16,
}

impl Session {
    fn open(lab: &Lab) -> Session {
        let script = "import socket,sys,time\ns=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=5)\nprint('port',s.getsockname()[1],flush=True)\nn=0\ntry:\n while True:\n  s.sendall(b'x')\n  d=s.recv(16)\n  if not d: break\n  n+=1\n  print('ok',n,flush=True)\n  time.sleep(0.1)\nexcept Exception as e:\n print('broken',e,flush=True)\nprint('closed',flush=True)\n";
        let log = lab.path("session.log");
        let p = lab.c1.spawn(
            &["python3", "-c", script, SRV, &ECHO_PORT.to_string()],
            &log,
        );
        wait_for_line(&log, "ok 1", Duration::from_secs(10));
        let text = std::fs::read_to_string(&log).unwrap();
        let port = text
            .lines()
            .find_map(|l| l.strip_prefix("port "))
            .and_then(|p| p.trim().parse().ok())
            .unwrap();
        Session {
            _proc: p,
            log,
            port,
        }
    }

    /// `SSH_CONNECTION` as sshd would set it for this session.
    fn ssh_connection(&self) -> String {
        format!("{C1} {} {SRV} {ECHO_PORT}", self.port)
    }

    fn count(&self) -> u64 {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(
            !text.contains("broken") && !text.contains("closed"),
            "the session died: {text}"
        );
        text.lines()
            .filter_map(|l| l.strip_prefix("ok "))
            .filter_map(|n| n.trim().parse().ok())
            .max()
            .unwrap_or(0)
    }

    /// Bytes still flow both ways.
    fn assert_flowing(&self, when: &str) {
        let a = self.count();
        std::thread::sleep(Duration::from_millis(800));
        let b = self.count();
        assert!(
            b >= a + 3,
            "{when}: the session stalled ({a} -> {b} echoes)"
        );
    }
}

/// Kills the guardian (by the pid it wrote) if a test left one behind.
struct GuardianReaper(PathBuf);

impl Drop for GuardianReaper {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0.join("guardian.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

fn setup_cmd(lab: &Lab, extra: &[&str], ssh: Option<&str>) -> Command {
    let mut c = lab.srv.cmd(posternd_bin());
    c.arg("setup")
        .arg("-c")
        .arg(lab.path("fwknopd.conf"))
        .arg("-r")
        .arg(lab.path("run"))
        .args(extra);
    match ssh {
        Some(s) => c.env("SSH_CONNECTION", s),
        None => c.env_remove("SSH_CONNECTION"),
    };
    c
}

fn setup(lab: &Lab, extra: &[&str], ssh: Option<&str>) -> Output {
    setup_cmd(lab, extra, ssh).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn guardian_pid(out: &str) -> i32 {
    out.split("guardian started (pid ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no guardian pid in: {out}"))
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Wait until the snapshot equals `before`; the time it took from `t0`.
fn wait_restored(fw: Fw, lab: &Lab, before: &str, t0: Instant, limit: Duration) -> Duration {
    while t0.elapsed() < limit {
        if fw.snapshot(lab) == before {
            return t0.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{fw:?}: not rolled back within {limit:?}\nbefore:\n{before}\nnow:\n{}\nguardian log:\n{}",
        fw.snapshot(lab),
        std::fs::read_to_string(lab.path("run/setup/guardian.log")).unwrap_or_default()
    );
}

fn lab_with(fw: Fw) -> (Lab, Proc) {
    let mut lab = Lab::new(&[22]);
    lab.configure(fw.conf(), ACCESS);
    lab.start(&[]);
    let echo = echo_server(&lab, ECHO_PORT);
    (lab, echo)
}

/// Unconfirmed: the policy holds (new connections refused, the open session flows),
/// then everything is restored exactly, on time.
fn rolls_back_unconfirmed(fw: Fw) {
    let (lab, _echo) = lab_with(fw);
    let _reaper = GuardianReaper(lab.path("run/setup"));
    let session = Session::open(&lab);
    let before = fw.snapshot(&lab);
    assert!(
        lab.c2.can_connect(SRV_C2, 22, SHORT),
        "{fw:?}: closed before setup"
    );

    let dry = setup(&lab, &["--dry-run"], None);
    assert!(dry.status.success(), "{fw:?}: {}", text(&dry));
    let dry_text = text(&dry);
    assert!(
        dry_text.contains("step 2: the default-drop policy")
            && (dry_text.contains("policy drop;") || dry_text.contains("-P INPUT DROP")),
        "{fw:?}: {dry_text}\nruleset:\n{before}"
    );
    assert_eq!(
        fw.snapshot(&lab),
        before,
        "{fw:?}: --dry-run changed the ruleset"
    );
    assert!(!lab.path("run/setup/state.json").exists());

    let out = setup(
        &lab,
        &["--confirm-within", "8"],
        Some(&session.ssh_connection()),
    );
    // The 8 s count from the moment the policy is in place, just before setup returns.
    let t0 = Instant::now();
    let out_text = text(&out);
    println!("{fw:?} setup:\n{out_text}");
    assert!(out.status.success(), "{fw:?}: {out_text}");
    for needle in [
        "saved the current",
        "guardian started",
        "step 1/2",
        "is known to conntrack",
        "step 2/2",
        "posternd setup --confirm",
    ] {
        assert!(
            out_text.contains(needle),
            "{fw:?}: no '{needle}' in {out_text}"
        );
    }
    let guardian = guardian_pid(&out_text);
    assert!(
        fw.snapshot(&lab).contains(fw.drop_policy()),
        "{fw:?}: {}",
        fw.snapshot(&lab)
    );

    // A second setup while this one is pending is refused.
    let again = setup(&lab, &["--confirm-within", "8"], None);
    assert!(!again.status.success(), "{fw:?}: {}", text(&again));
    assert!(text(&again).contains("already pending"), "{}", text(&again));

    // The policy holds: a new connection is refused, the open session flows.
    assert!(
        !lab.c2.can_connect(SRV_C2, 22, SHORT),
        "{fw:?}: a new connection got in under the drop policy"
    );
    session.assert_flowing(&format!("{fw:?}, under the policy"));

    let took = wait_restored(fw, &lab, &before, t0, Duration::from_secs(10));
    assert!(
        took >= Duration::from_secs(7),
        "{fw:?}: rolled back after {took:?}, before its 8 s deadline"
    );
    assert!(
        lab.c2.wait_open(SRV_C2, 22, Duration::from_secs(3)),
        "{fw:?}: still closed after the rollback"
    );
    session.assert_flowing(&format!("{fw:?}, after the rollback"));
    let start = Instant::now();
    while alive(guardian) && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(guardian), "{fw:?}: the guardian is still there");
    assert!(!lab.path("run/setup/state.json").exists());
    let log = std::fs::read_to_string(lab.path("run/setup/guardian.log")).unwrap();
    assert!(
        log.contains("rolled back (not confirmed within 8 s)") && log.contains("exactly as saved"),
        "{fw:?}: {log}"
    );
}

#[test]
fn setup_rolls_back_unconfirmed_nftables() {
    if ready("setup_rolls_back_unconfirmed_nftables") {
        rolls_back_unconfirmed(Fw::Nftables);
    }
}

#[test]
fn setup_rolls_back_unconfirmed_iptables_nft() {
    if ready("setup_rolls_back_unconfirmed_iptables_nft")
        && postern_testkit::have_tool("iptables-nft")
        && postern_testkit::have_tool("ipset")
    {
        rolls_back_unconfirmed(Fw::IptablesNft);
    }
}

#[test]
fn setup_rolls_back_unconfirmed_iptables_legacy() {
    if ready("setup_rolls_back_unconfirmed_iptables_legacy")
        && postern_testkit::have_tool("iptables-legacy")
        && postern_testkit::have_tool("ipset")
    {
        rolls_back_unconfirmed(Fw::IptablesLegacy);
    }
}

/// Confirmed from a connection that came in through a knock: the policy stays after
/// the deadline. A confirmation from an address without a grant is refused.
fn stays_confirmed(fw: Fw) {
    let (lab, _echo) = lab_with(fw);
    let _reaper = GuardianReaper(lab.path("run/setup"));
    let before = fw.snapshot(&lab);
    let out = setup(&lab, &["--confirm-within", "12"], None);
    let t0 = Instant::now();
    assert!(out.status.success(), "{fw:?}: {}", text(&out));
    assert!(text(&out).contains("not over SSH"), "{}", text(&out));

    // No grant yet: refused.
    let early = setup(&lab, &["--confirm", "--from", C1], None);
    assert!(!early.status.success(), "{fw:?}: {}", text(&early));
    assert!(text(&early).contains("holds no grant"), "{}", text(&early));

    // Knock, and come in on a new connection through the grant.
    assert!(
        !lab.c1.can_connect(SRV, 22, SHORT),
        "{fw:?}: open before a knock"
    );
    lab.postern(&["-A", "tcp/22", "-a", C1, "-D", SRV]);
    assert!(
        lab.c1.wait_open(SRV, 22, Duration::from_secs(5)),
        "{fw:?}: the knock did not open tcp/22\n{}",
        lab.log()
    );
    let other = setup(&lab, &["--confirm", "--from", "198.18.2.2"], None);
    assert!(!other.status.success(), "{fw:?}: {}", text(&other));
    assert!(text(&other).contains("holds no grant"), "{}", text(&other));
    // Over SSH, the address comes from SSH_CONNECTION.
    let ok = setup(&lab, &["--confirm"], Some(&format!("{C1} 40000 {SRV} 22")));
    assert!(ok.status.success(), "{fw:?}: {}", text(&ok));
    assert!(
        text(&ok).contains("confirmed: the default-drop policy stays"),
        "{}",
        text(&ok)
    );
    println!("{fw:?} confirm:\n{}\nrefused:\n{}", text(&ok), text(&other));

    while t0.elapsed() < Duration::from_secs(14) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let now = fw.snapshot(&lab);
    assert_ne!(now, before, "{fw:?}: rolled back although confirmed");
    assert!(now.contains(fw.drop_policy()), "{fw:?}: {now}");
    assert!(
        !lab.c2.can_connect(SRV_C2, 22, SHORT),
        "{fw:?}: open to a host that never knocked"
    );
    let log = std::fs::read_to_string(lab.path("run/setup/guardian.log")).unwrap();
    assert!(log.contains("confirmed with"), "{fw:?}: {log}");
    assert!(!lab.path("run/setup/state.json").exists());
    let nothing = setup(&lab, &["--rollback"], None);
    assert!(!nothing.status.success());
    assert!(
        text(&nothing).contains("nothing to roll back"),
        "{}",
        text(&nothing)
    );
    let again = setup(&lab, &[], None);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("already in place"),
        "{}",
        text(&again)
    );
}

#[test]
fn setup_confirmed_stays_nftables() {
    if ready("setup_confirmed_stays_nftables") {
        stays_confirmed(Fw::Nftables);
    }
}

#[test]
fn setup_confirmed_stays_iptables_nft() {
    if ready("setup_confirmed_stays_iptables_nft")
        && postern_testkit::have_tool("iptables-nft")
        && postern_testkit::have_tool("ipset")
    {
        stays_confirmed(Fw::IptablesNft);
    }
}

/// The session that ran setup dies (its whole process group is killed): the guardian
/// lives on and rolls back on time. Then `--rollback` at once, and a session conntrack
/// does not know stops setup before the policy changes.
#[test]
fn setup_guardian_outlives_its_session() {
    if !ready("setup_guardian_outlives_its_session") {
        return;
    }
    let fw = Fw::Nftables;
    let (lab, _echo) = lab_with(fw);
    let _reaper = GuardianReaper(lab.path("run/setup"));
    let before = fw.snapshot(&lab);

    // The admin's shell: setup, then the shell stays (as a login shell would).
    let log = lab.path("session-setup.log");
    let script = format!(
        "{} setup -c {} -r {} --confirm-within 8 > {} 2>&1; sleep 60",
        posternd_bin(),
        lab.path("fwknopd.conf").display(),
        lab.path("run").display(),
        log.display()
    );
    let t0 = Instant::now();
    let mut shell = Command::new("ip");
    shell
        .args(["netns", "exec", &lab.srv.name, "sh", "-c", &script])
        .env_remove("SSH_CONNECTION");
    std::os::unix::process::CommandExt::process_group(&mut shell, 0);
    let mut shell = shell.spawn().unwrap();
    wait_for_line(&log, "guardian started", Duration::from_secs(10));
    let pgid = nix::unistd::Pid::from_raw(i32::try_from(shell.id()).unwrap());
    nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL).unwrap();
    shell.wait().unwrap();
    let guardian = guardian_pid(&std::fs::read_to_string(&log).unwrap());
    assert!(alive(guardian), "the guardian died with the session");
    let took = wait_restored(fw, &lab, &before, t0, Duration::from_secs(10));
    assert!(took >= Duration::from_secs(7), "rolled back after {took:?}");
    let start = Instant::now();
    while alive(guardian) && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !alive(guardian),
        "the guardian is still there after its rollback"
    );
    assert!(!lab.path("run/setup/state.json").exists());

    // --rollback: at once, exactly.
    let out = setup(&lab, &["--confirm-within", "60"], None);
    assert!(out.status.success(), "{}", text(&out));
    assert_ne!(fw.snapshot(&lab), before);
    let t1 = Instant::now();
    let rb = setup(&lab, &["--rollback"], None);
    assert!(rb.status.success(), "{}", text(&rb));
    assert!(
        text(&rb).contains("rolled back (asked to)"),
        "{}",
        text(&rb)
    );
    assert_eq!(
        fw.snapshot(&lab),
        before,
        "--rollback did not restore exactly"
    );
    assert!(t1.elapsed() < Duration::from_secs(3));

    // SIGTERM to the guardian: it rolls back before it goes.
    let out = setup(&lab, &["--confirm-within", "60"], None);
    assert!(out.status.success(), "{}", text(&out));
    let guardian = guardian_pid(&text(&out));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(guardian),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_restored(fw, &lab, &before, Instant::now(), Duration::from_secs(3));

    // A guardian killed with SIGKILL leaves its state: a new setup is refused, and
    // --rollback restores from the saved copy.
    let out = setup(&lab, &["--confirm-within", "60"], None);
    assert!(out.status.success(), "{}", text(&out));
    let guardian = guardian_pid(&text(&out));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(guardian),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let start = Instant::now();
    while alive(guardian) && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let refused = setup(&lab, &[], None);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("left unfinished"),
        "{}",
        text(&refused)
    );
    let rb = setup(&lab, &["--rollback"], None);
    assert!(rb.status.success(), "{}", text(&rb));
    assert!(text(&rb).contains("the guardian was gone"), "{}", text(&rb));
    assert_eq!(fw.snapshot(&lab), before);

    // A session conntrack has never seen (nothing listens there): setup stops before
    // the policy, and restores what step 1 changed.
    let ghost = format!("{C1} 1 {SRV} {ECHO_PORT}");
    let refused = setup(&lab, &["--confirm-within", "60"], Some(&ghost));
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("conntrack has not seen your session"),
        "{}",
        text(&refused)
    );
    assert_eq!(fw.snapshot(&lab), before);
    assert!(!lab.path("run/setup/state.json").exists());
}

/// posternd inside the admin's own table and chain (NFT_TABLE/NFT_CHAIN, layout (b)):
/// setup sets that chain's policy, posternd's grants still open it, and the rollback
/// gives the chain back exactly.
#[test]
fn setup_in_the_admins_own_chain() {
    if !ready("setup_in_the_admins_own_chain") {
        return;
    }
    let mut lab = Lab::new(&[22]);
    let _reaper = GuardianReaper(lab.path("run/setup"));
    lab.nft_load("table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\ttcp dport 9 drop\n\t}\n}\n");
    lab.configure("NFT_TABLE inet filter\nNFT_CHAIN input\n", ACCESS);
    lab.start(&[]);
    let before = lab.ruleset();
    let dry = setup(&lab, &["--dry-run"], None);
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(
        text(&dry).contains("insert rule inet filter input ct state established,related accept comment \"postern-setup\""),
        "{}",
        text(&dry)
    );
    let out = setup(&lab, &["--confirm-within", "30"], None);
    assert!(out.status.success(), "{}", text(&out));
    let now = lab.ruleset();
    assert!(
        now.contains("policy drop;") && now.contains("comment \"postern-setup\""),
        "{now}"
    );
    assert!(!lab.c2.can_connect(SRV_C2, 22, SHORT));
    let rb = setup(&lab, &["--rollback"], None);
    assert!(rb.status.success(), "{}", text(&rb));
    assert!(
        text(&rb).contains("the chain 'inet filter input' restored exactly as saved"),
        "{}",
        text(&rb)
    );
    assert_eq!(lab.ruleset(), before);

    let out = setup(&lab, &["--confirm-within", "30"], None);
    assert!(out.status.success(), "{}", text(&out));
    lab.postern(&["-A", "tcp/22", "-a", C1, "-D", SRV]);
    assert!(
        lab.c1.wait_open(SRV, 22, Duration::from_secs(5)),
        "a grant did not open the admin's drop chain\n{}",
        lab.log()
    );
    let ok = setup(&lab, &["--confirm", "--from", C1], None);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(!lab.c2.can_connect(SRV_C2, 22, SHORT));
}
