//! NAT access, three namespaces, the real fwknop client:
//!
//! ```text
//!   c1 198.18.1.2 ── 198.18.1.1 posternd gateway 198.18.2.1 ── c2 198.18.2.2 (internal)
//!                    default-drop input and forward; ip_forward on
//! ```
//!
//! `fwknop -A tcp/2222 -N 198.18.2.2,55000`: the client's connections to the gateway's
//! port 2222 go to 198.18.2.2:55000, only after the knock, only from that client, and not
//! after expiry (the DNAT map element and the forward element expire in the kernel).
//! `--nat-local --nat-port`: a port of the gateway reached through another one. A NAT
//! request the server does not enable is refused.
//!
//! The translations suite (per backend): the internal host runs a service that answers
//! each connection with the peer address it sees, so SNAT (`SNAT_TRANSLATE_IP`, a
//! stanza's `FORCE_SNAT`), MASQUERADE (no `SNAT_TRANSLATE_IP`, `FORCE_MASQUERADE`),
//! `DISABLE_DNAT` (routed, not translated), `FORWARD_ALL` (every port) and
//! `--nat-rand-port` are checked by what arrives there, and each closes on time.

use std::time::{Duration, Instant};

use postern_testkit::{tcp_service, wait_for_line, Netns, Proc};

use crate::lab::{keys, ready, strs, Lab, C1, SRV, SRV_C2};

const INTERNAL: &str = "198.18.2.2";
const SHORT: Duration = Duration::from_millis(400);

fn knock(lab: &Lab, extra: &[&str]) {
    let k = keys("enc-1", "hmac-1");
    let mut a = strs(&k);
    a.extend(["-a", C1, "-D", SRV]);
    a.extend(extra);
    lab.fwknop(&lab.c1, &a);
}

#[test]
fn nat_access_on_nftables() {
    if ready("nat_access_on_nftables") {
        nat_suite(false);
    }
}

#[test]
fn nat_access_on_iptables_with_ipset() {
    if ready("nat_access_on_iptables_with_ipset")
        && postern_testkit::can_run("nat_access_on_iptables_with_ipset", &["ipset", "iptables"])
    {
        nat_suite(true);
    }
}

fn nat_suite(iptables: bool) {
    // The gateway's own service is on 22 only; 2222 and 55001 answer only through NAT.
    let mut lab = Lab::new(&[22]);
    let backend = if iptables {
        // The admin's default-drop INPUT and FORWARD policies, as in fwknop's guides.
        for rule in [
            "-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT",
            "-A INPUT -i lo -j ACCEPT",
            "-P INPUT DROP",
            "-A FORWARD -m state --state RELATED,ESTABLISHED -j ACCEPT",
            "-P FORWARD DROP",
        ] {
            let mut argv = vec!["iptables", "-w"];
            argv.extend(rule.split(' '));
            lab.srv.run(&argv);
        }
        "FIREWALL_TYPE iptables\n"
    } else {
        "FIREWALL_TYPE nftables\nNFT_DEFAULT_DROP Y\n"
    };
    lab.srv.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    lab.c1
        .run(&["ip", "route", "add", "198.18.2.0/24", "via", SRV]);
    lab.c2
        .run(&["ip", "route", "add", "198.18.1.0/24", "via", SRV_C2]);
    let _internal = tcp_service(&lab.c2, INTERNAL, &[55000], &lab.path("internal.log"));
    lab.configure(
        &format!("{backend}ENABLE_IPT_FORWARDING Y\nENABLE_IPT_LOCAL_NAT Y\n"),
        "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\nOPEN_PORTS tcp/2222, tcp/55001\nFW_ACCESS_TIMEOUT 3\n",
    );
    lab.start(&[]);
    assert!(lab.log().contains(", NAT ("), "{}", lab.log());
    // Closed before the knock: through the gateway and straight to the internal host.
    assert!(!lab.c1.can_connect(SRV, 2222, SHORT));
    assert!(
        !lab.c1.can_connect(INTERNAL, 55000, SHORT),
        "forwarding open before a knock"
    );
    knock(&lab, &["-A", "tcp/2222", "-N", "198.18.2.2,55000"]);
    let t0 = Instant::now();
    assert!(
        lab.c1.wait_open(SRV, 2222, Duration::from_secs(5)),
        "NAT access did not open\n{}",
        lab.log()
    );
    assert!(
        lab.log().contains("NAT to 198.18.2.2:55000"),
        "{}",
        lab.log()
    );
    // The translation is keyed on the source, and expires on time in the kernel.
    if iptables {
        let sets = String::from_utf8_lossy(&lab.srv.run(&["ipset", "save"]).stdout).into_owned();
        assert!(sets.contains(&format!("{C1},tcp:2222 timeout")), "{sets}");
        assert!(
            sets.contains(&format!("{C1},tcp:55000,198.18.2.2 timeout")),
            "{sets}"
        );
    } else {
        let table = String::from_utf8_lossy(
            &lab.srv
                .run(&["nft", "list", "table", "inet", "postern"])
                .stdout,
        )
        .into_owned();
        assert!(
            table.contains(&format!("{C1} . tcp . 2222")) && table.contains("198.18.2.2 . 55000"),
            "{table}"
        );
    }
    assert!(
        lab.c1.wait_closed(SRV, 2222, Duration::from_secs(6)),
        "NAT still open"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(2500),
        "closed after {:?}",
        t0.elapsed()
    );
    assert!(
        !lab.c1.can_connect(INTERNAL, 55000, SHORT),
        "forward still open after expiry"
    );

    // Local NAT: the gateway's port 22 reached on 55001, for this client only.
    knock(
        &lab,
        &["-A", "tcp/22", "--nat-local", "--nat-port", "55001"],
    );
    assert!(
        lab.c1.wait_open(SRV, 55001, Duration::from_secs(5)),
        "local NAT did not open\n{}",
        lab.log()
    );
    assert!(
        lab.log().contains("local NAT to 198.18.1.1:22"),
        "{}",
        lab.log()
    );
    assert!(lab.c1.wait_closed(SRV, 55001, Duration::from_secs(6)));
    lab.stop();
    if iptables {
        // At exit the NAT chains and sets go; the admin's policies stay.
        let rules = String::from_utf8_lossy(&lab.srv.run(&["iptables-save"]).stdout).into_owned();
        assert!(
            !rules.contains("FWKNOP_") && rules.contains(":FORWARD DROP"),
            "{rules}"
        );
        let sets =
            String::from_utf8_lossy(&lab.srv.run(&["ipset", "list", "-n"]).stdout).into_owned();
        assert!(sets.trim().is_empty(), "{sets}");
    }

    // Without ENABLE_IPT_FORWARDING the same request opens nothing.
    lab.configure(
        &format!("{backend}ENABLE_IPT_LOCAL_NAT Y\n"),
        "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\nOPEN_PORTS tcp/2222\n",
    );
    lab.start(&[]);
    knock(
        &lab,
        &[
            "-A",
            "tcp/2222",
            "-N",
            "198.18.2.2,55000",
            "--time-offset-plus",
            "1",
        ],
    );
    std::thread::sleep(Duration::from_millis(700));
    assert!(!lab.c1.can_connect(SRV, 2222, SHORT));
    assert_eq!(lab.status()["refused"]["nat"], 1, "{}", lab.status());
    lab.stop();
    if !iptables {
        // A layout that cannot translate: refused at --check-config, with the reason.
        lab.configure(
            "NFT_TABLE inet filter\nNFT_CHAIN input\nENABLE_IPT_FORWARDING Y\n",
            "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\n",
        );
        let out = lab.run_posternd(&["--check-config"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success() && text.contains("NAT access needs"),
            "{text}"
        );
    }
}

/// The SNAT address of the translations suite (routed back to the gateway by the
/// internal host), and a stanza's FORCE_SNAT address.
const TRANSLATE: &str = "198.18.9.1";
const FORCED: &str = "198.18.9.9";

fn knock_as(lab: &Lab, n: u8, extra: &[&str]) -> String {
    let k = keys(&format!("enc-{n}"), &format!("hmac-{n}"));
    let mut a = strs(&k);
    a.extend(["-a", C1, "-D", SRV, "--no-save-args", "-v"]);
    a.extend(extra);
    let out = lab
        .c1
        .cmd("fwknop")
        .arg("--rc-file")
        .arg(lab.path("fwknoprc"))
        .args(&a)
        .env("HOME", &lab.dir.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fwknop {a:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A service on `ports` that answers each connection with `<peer address> <port it was
/// reached on>` and closes it.
fn whoami_service(ns: &Netns, ports: &[u16], log: &std::path::Path) -> Proc {
    let script = "import socket,sys,selectors\nsel=selectors.DefaultSelector()\nfor p in sys.argv[1:]:\n s=socket.socket()\n s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', int(p))); s.listen(64); sel.register(s, selectors.EVENT_READ)\nprint('ready', flush=True)\nwhile True:\n for k,_ in sel.select():\n  c,a=k.fileobj.accept()\n  try:\n   c.sendall(('%s %d\\n' % (a[0], c.getsockname()[1])).encode())\n  except Exception:\n   pass\n  c.close()\n";
    let mut argv = vec!["python3", "-c", script];
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    argv.extend(ports.iter().map(String::as_str));
    let p = ns.spawn(&argv, log);
    wait_for_line(log, "ready", Duration::from_secs(10));
    p
}

/// Connect from `ns` and read what the whoami service says (`None`: no connection).
fn whoami(ns: &Netns, addr: &str, port: u16) -> Option<String> {
    let script = "import socket,sys\ntry:\n c=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.6)\n c.settimeout(1.0)\n print(c.recv(100).decode().strip())\nexcept Exception:\n sys.exit(1)\n";
    let out = ns
        .cmd("python3")
        .args(["-c", script, addr, &port.to_string()])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Poll [`whoami`] until it answers, for at most `deadline`.
fn whoami_within(ns: &Netns, addr: &str, port: u16, deadline: Duration) -> Option<String> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if let Some(a) = whoami(ns, addr, port) {
            return Some(a);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Poll until nothing answers at `addr:port` (true), for at most `deadline`.
fn closed_within(ns: &Netns, addr: &str, port: u16, deadline: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if whoami(ns, addr, port).is_none() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn nat_translations_on_nftables() {
    if ready("nat_translations_on_nftables") {
        translations_suite(Backend::Nftables);
    }
}

#[test]
fn nat_translations_on_iptables_with_ipset() {
    if ready("nat_translations_on_iptables_with_ipset")
        && postern_testkit::can_run(
            "nat_translations_on_iptables_with_ipset",
            &["ipset", "iptables"],
        )
    {
        translations_suite(Backend::Ipset);
    }
}

#[test]
fn nat_translations_on_iptables_with_plain_rules() {
    if ready("nat_translations_on_iptables_with_plain_rules")
        && postern_testkit::can_run(
            "nat_translations_on_iptables_with_plain_rules",
            &["iptables", "iptables-save"],
        )
    {
        translations_suite(Backend::Plain);
    }
}

/// Which backend the translations suite runs on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Nftables,
    /// iptables with ipset entries.
    Ipset,
    /// iptables with plain `_exp_` rules (`IPT_USE_IPSET N`).
    Plain,
}

const STANZAS: &str = "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\nFW_ACCESS_TIMEOUT 5\n\n\
SOURCE ANY\nKEY enc-2\nHMAC_KEY hmac-2\nFORCE_NAT 198.18.2.2 55001\nFORCE_SNAT 198.18.9.9\nFW_ACCESS_TIMEOUT 5\n\n\
SOURCE ANY\nKEY enc-3\nHMAC_KEY hmac-3\nFORCE_NAT 198.18.2.2 55002\nFORCE_MASQUERADE Y\nFW_ACCESS_TIMEOUT 5\n\n\
SOURCE ANY\nKEY enc-4\nHMAC_KEY hmac-4\nFORCE_NAT 198.18.2.2 55003\nDISABLE_DNAT Y\nFW_ACCESS_TIMEOUT 5\n\n\
SOURCE ANY\nKEY enc-5\nHMAC_KEY hmac-5\nFORCE_NAT 198.18.2.2 55000\nFORWARD_ALL Y\nFW_ACCESS_TIMEOUT 5\n";

fn translations_suite(which: Backend) {
    let iptables = which != Backend::Nftables;
    let mut lab = Lab::new(&[22]);
    if iptables {
        // The admin's default-drop INPUT and FORWARD policies, as in fwknop's guides.
        for rule in [
            "-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT",
            "-A INPUT -i lo -j ACCEPT",
            "-P INPUT DROP",
            "-A FORWARD -m state --state RELATED,ESTABLISHED -j ACCEPT",
            "-P FORWARD DROP",
        ] {
            let mut argv = vec!["iptables", "-w"];
            argv.extend(rule.split(' '));
            lab.srv.run(&argv);
        }
    }
    let backend = match which {
        Backend::Nftables => "FIREWALL_TYPE nftables\nNFT_DEFAULT_DROP Y\n",
        Backend::Ipset => "FIREWALL_TYPE iptables\nENABLE_IPT_OUTPUT Y\n",
        Backend::Plain => "FIREWALL_TYPE iptables\nENABLE_IPT_OUTPUT Y\nIPT_USE_IPSET N\n",
    };
    lab.srv.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    lab.c1
        .run(&["ip", "route", "add", "198.18.2.0/24", "via", SRV]);
    for net in ["198.18.1.0/24", "198.18.9.0/24"] {
        lab.c2.run(&["ip", "route", "add", net, "via", SRV_C2]);
    }
    let ports = [55000, 55001, 55002, 55003, 55005, 55006, 55007];
    let _internal = whoami_service(&lab.c2, &ports, &lab.path("whoami.log"));
    lab.configure(
        &format!(
            "{backend}ENABLE_IPT_FORWARDING Y\nENABLE_IPT_SNAT Y\nSNAT_TRANSLATE_IP {TRANSLATE}\n"
        ),
        STANZAS,
    );
    let check = lab.run_posternd(&["--check-config"]);
    assert!(check.status.success(), "{}", text(&check));
    lab.start(&[]);
    assert!(lab.log().contains(", NAT ("), "{}", lab.log());
    let c1 = &lab.c1;
    assert_eq!(whoami(c1, SRV, 2222), None);
    assert_eq!(
        whoami(c1, INTERNAL, 55003),
        None,
        "forwarding open before a knock"
    );

    // SNAT (SNAT_TRANSLATE_IP), FORCE_SNAT, FORCE_MASQUERADE and DISABLE_DNAT at once.
    knock_as(&lab, 1, &["-A", "tcp/2222", "-N", "198.18.2.2,55000"]);
    let t0 = Instant::now();
    knock_as(&lab, 2, &["-A", "tcp/2223"]);
    knock_as(&lab, 3, &["-A", "tcp/2224"]);
    knock_as(&lab, 4, &["-A", "tcp/2225"]);
    let c1 = &lab.c1;
    let long = Duration::from_secs(5);
    assert_eq!(
        whoami_within(c1, SRV, 2222, long).as_deref(),
        Some(format!("{TRANSLATE} 55000").as_str()),
        "SNAT_TRANSLATE_IP\n{}",
        lab.log()
    );
    // What the kernel holds: keyed on the grant's source and destination, with timeouts.
    if which == Backend::Plain {
        // fwknopd's rules, matching also the grant's source (and destination).
        let nat = text(&lab.srv.run(&["iptables-save", "-t", "nat"]));
        let filter = text(&lab.srv.run(&["iptables-save", "-t", "filter"]));
        let flow = |port: u16| {
            format!("-s {C1}/32 -d 198.18.2.2/32 -p tcp -m tcp --dport {port} -m comment --comment _exp_")
        };
        for (table, chain, needle, target) in [
            (
                &nat,
                "FWKNOP_POSTROUTING",
                flow(55000),
                format!("-j SNAT --to-source {TRANSLATE}\n"),
            ),
            (
                &nat,
                "FWKNOP_POSTROUTING",
                flow(55001),
                format!("-j SNAT --to-source {FORCED}\n"),
            ),
            (
                &nat,
                "FWKNOP_MASQUERADE",
                flow(55002),
                "-j MASQUERADE\n".to_owned(),
            ),
            (
                &nat,
                "FWKNOP_PREROUTING",
                format!("-s {C1}/32 -p tcp -m tcp --dport 2222 -m comment --comment _exp_"),
                "-j DNAT --to-destination 198.18.2.2:55000\n".to_owned(),
            ),
            (
                &filter,
                "FWKNOP_FORWARD",
                flow(55003),
                "-j ACCEPT\n".to_owned(),
            ),
        ] {
            let line = table
                .lines()
                .find(|l| l.starts_with(&format!("-A {chain} {needle}")))
                .unwrap_or_else(|| panic!("{chain} {needle}\n{table}"));
            assert!(format!("{line}\n").ends_with(&target), "{line}");
        }
        assert!(
            !nat.contains("--dport 2225"),
            "DNAT rule with DISABLE_DNAT\n{nat}"
        );
    } else if iptables {
        let nat = text(&lab.srv.run(&["iptables-save", "-t", "nat"]));
        for needle in [
            "-A POSTROUTING -j FWKNOP_POSTROUTING",
            "-A POSTROUTING -j FWKNOP_MASQUERADE",
            &format!("src,dst,dst -m comment --comment postern -j SNAT --to-source {TRANSLATE}"),
            &format!("src,dst,dst -m comment --comment postern -j SNAT --to-source {FORCED}"),
            "-A FWKNOP_MASQUERADE -m set --match-set postern-mq4 src,dst,dst -m comment --comment postern -j MASQUERADE\n",
        ] {
            assert!(nat.contains(needle), "{needle}\n{nat}");
        }
        assert!(!nat.contains("--to-ports"), "{nat}");
        let sets = text(&lab.srv.run(&["ipset", "save"]));
        for needle in [
            format!("{C1},tcp:55000,198.18.2.2 timeout"),
            format!("add postern-mq4 {C1},tcp:55002,198.18.2.2 timeout"),
            format!("add postern-fw4 {C1},tcp:55003,198.18.2.2 timeout"),
        ] {
            assert!(sets.contains(&needle), "{needle}\n{sets}");
        }
        assert!(
            !sets.contains(&format!("{C1},tcp:2225 ")),
            "DNAT entry with DISABLE_DNAT\n{sets}"
        );
    } else {
        let table = text(&lab.srv.run(&["nft", "list", "table", "inet", "postern"]));
        for needle in [
            format!("{C1} . 198.18.2.2 . tcp . 55000 timeout 5s expires"),
            format!(": {TRANSLATE}"),
            format!(": {FORCED}"),
            "masquerade".to_owned(),
        ] {
            assert!(table.contains(&needle), "{needle}\n{table}");
        }
    }
    let c1 = &lab.c1;
    assert_eq!(
        whoami_within(c1, SRV, 2223, long).as_deref(),
        Some(format!("{FORCED} 55001").as_str()),
        "FORCE_SNAT\n{}",
        lab.log()
    );
    assert_eq!(
        whoami_within(c1, SRV, 2224, long).as_deref(),
        Some(format!("{SRV_C2} 55002").as_str()),
        "FORCE_MASQUERADE: the gateway's inner address\n{}",
        lab.log()
    );
    // DISABLE_DNAT: routed through the gateway, not translated.
    assert_eq!(
        whoami_within(c1, INTERNAL, 55003, long).as_deref(),
        Some(format!("{TRANSLATE} 55003").as_str()),
        "DISABLE_DNAT: the forward opening\n{}",
        lab.log()
    );
    assert_eq!(whoami(c1, SRV, 2225), None, "DISABLE_DNAT still translated");
    assert!(
        lab.log().contains(&format!("SNAT to {TRANSLATE}")),
        "{}",
        lab.log()
    );
    assert!(
        lab.log().contains(&format!("SNAT to {FORCED}")),
        "{}",
        lab.log()
    );
    assert!(lab.log().contains("MASQUERADE"), "{}", lab.log());
    assert!(
        lab.log().contains("no DNAT (DISABLE_DNAT)"),
        "{}",
        lab.log()
    );
    let c1 = &lab.c1;
    assert!(
        closed_within(c1, SRV, 2222, Duration::from_secs(9)),
        "SNAT grant still open"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(4500),
        "closed after {:?}",
        t0.elapsed()
    );
    for (addr, port) in [(SRV, 2223), (SRV, 2224), (INTERNAL, 55003)] {
        assert!(
            closed_within(c1, addr, port, Duration::from_secs(3)),
            "{addr}:{port} still open"
        );
    }

    // FORWARD_ALL: every port reaches the internal host through the gateway.
    knock_as(&lab, 5, &["-A", "tcp/2226"]);
    let t0 = Instant::now();
    let c1 = &lab.c1;
    for (addr, port) in [(SRV, 55005), (SRV, 55006), (INTERNAL, 55007)] {
        assert_eq!(
            whoami_within(c1, addr, port, long).as_deref(),
            Some(format!("{TRANSLATE} {port}").as_str()),
            "FORWARD_ALL {addr}:{port}\n{}",
            lab.log()
        );
    }
    assert!(
        closed_within(c1, SRV, 55005, Duration::from_secs(9)),
        "FORWARD_ALL still open"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(4500),
        "closed after {:?}",
        t0.elapsed()
    );
    assert!(closed_within(c1, INTERNAL, 55007, Duration::from_secs(3)));

    // --nat-rand-port: the client picks the port to knock for; the gateway honours it.
    let said = knock_as(
        &lab,
        1,
        &["-A", "tcp/22", "-N", "198.18.2.2,55000", "--nat-rand-port"],
    );
    let port: u16 = said
        .split("Randomly assigned port '")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no random port in: {said}"));
    let c1 = &lab.c1;
    assert_eq!(
        whoami_within(c1, SRV, port, long).as_deref(),
        Some(format!("{TRANSLATE} 55000").as_str()),
        "--nat-rand-port {port}\n{}",
        lab.log()
    );
    assert!(closed_within(c1, SRV, port, Duration::from_secs(9)));

    if iptables {
        // ENABLE_IPT_OUTPUT: with a dropping OUTPUT policy, the gateway's own service is
        // reachable after a knock because its replies are accepted in FWKNOP_OUTPUT.
        lab.srv.run(&["iptables", "-w", "-P", "OUTPUT", "DROP"]);
        knock_as(&lab, 1, &["-A", "tcp/22"]);
        let c1 = &lab.c1;
        assert!(
            c1.wait_open(SRV, 22, Duration::from_secs(5)),
            "{}",
            lab.log()
        );
        let filter = text(&lab.srv.run(&["iptables-save", "-t", "filter"]));
        let reply = if which == Backend::Plain {
            format!(
                "-A FWKNOP_OUTPUT -d {C1}/32 -p tcp -m tcp --sport 22 -m comment --comment _exp_"
            )
        } else {
            "-A FWKNOP_OUTPUT -m set --match-set postern-in4 dst,src".to_owned()
        };
        assert!(
            filter.contains("-A OUTPUT -j FWKNOP_OUTPUT") && filter.contains(&reply),
            "{reply}\n{filter}"
        );
        assert!(c1.wait_closed(SRV, 22, Duration::from_secs(9)));
        lab.srv.run(&["iptables", "-w", "-P", "OUTPUT", "ACCEPT"]);
    }
    lab.stop();

    // MASQUERADE without SNAT_TRANSLATE_IP: the gateway's inner address.
    lab.configure(
        &format!("{backend}ENABLE_IPT_FORWARDING Y\nENABLE_IPT_SNAT Y\n"),
        STANZAS,
    );
    lab.start(&[]);
    knock_as(
        &lab,
        1,
        &[
            "-A",
            "tcp/2222",
            "-N",
            "198.18.2.2,55000",
            "--time-offset-plus",
            "1",
        ],
    );
    let c1 = &lab.c1;
    assert_eq!(
        whoami_within(c1, SRV, 2222, long).as_deref(),
        Some(format!("{SRV_C2} 55000").as_str()),
        "MASQUERADE\n{}",
        lab.log()
    );
    assert!(closed_within(c1, SRV, 2222, Duration::from_secs(9)));
    lab.stop();
    if iptables {
        let rules = text(&lab.srv.run(&["iptables-save"]));
        assert!(!rules.contains("FWKNOP_"), "{rules}");
    }
    if which == Backend::Ipset {
        let sets = text(&lab.srv.run(&["ipset", "list", "-n"]));
        assert!(sets.trim().is_empty(), "{sets}");
    }

    // --check-config: FORCE_SNAT without ENABLE_IPT_SNAT is noted at its line; without
    // FORCE_NAT or FORWARD_ALL it is an error there (as fwknopd refuses it).
    lab.configure(
        &format!("{backend}ENABLE_IPT_FORWARDING Y\nENABLE_IPT_OUTPUT Y\n"),
        "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\nFORCE_NAT 198.18.2.2 55000\nFORCE_SNAT 198.18.9.9\n",
    );
    let out = lab.run_posternd(&["--check-config"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("access.conf:5: FORCE_SNAT has no effect without ENABLE_IPT_SNAT"),
        "{t}"
    );
    assert_eq!(
        t.contains("fwknopd.conf:4: ENABLE_IPT_OUTPUT has no effect on this backend"),
        !iptables,
        "{t}"
    );
    lab.configure(
        &format!("{backend}ENABLE_IPT_FORWARDING Y\nENABLE_IPT_SNAT Y\n"),
        "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\nFORCE_MASQUERADE Y\n",
    );
    let out = lab.run_posternd(&["--check-config"]);
    let t = text(&out);
    assert!(
        !out.status.success() && t.contains("access.conf:4: FORCE_MASQUERADE: FORCE_SNAT and FORCE_MASQUERADE need FORCE_NAT or FORWARD_ALL"),
        "{t}"
    );
}
