//! The iptables backend where ipset cannot be used: plain rules in `FWKNOP_INPUT` with
//! fwknopd's `_exp_<deadline>` comment, removed by posternd when due, and reconciled by
//! their deadline at start after a crash.
//!
//! ```text
//!   c1 198.18.1.2 ──── 198.18.1.1 posternd (iptables INPUT policy DROP, no ipset)
//!   c2 198.18.2.2 ──── 198.18.2.1
//! ```
//!
//! 1. ipset missing (posternd started with a PATH without it): detected at setup, plain
//!    rules; the port opens for the knocking source only (IPv4 and IPv6) and closes on time.
//! 2. `IPT_USE_IPSET N`, `kill -9` with a grant open, restart after its deadline: the rule
//!    is removed at start.
//! 3. The same, restart before the deadline: the rule is kept, and removed on time.

use std::time::{Duration, Instant};

use postern_testkit::{wait_for_line, Proc};

use crate::lab::{keys, ready, strs, Lab, C1, C16, SRV, SRV6, SRV_C2};

const ACCESS: &str = "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\nFW_ACCESS_TIMEOUT 4\n";

fn knock(lab: &Lab, extra: &[&str]) {
    let k = keys("enc-1", "hmac-1");
    let mut a = strs(&k);
    a.extend(["-A", "tcp/22", "-a", C1, "-D", SRV]);
    a.extend(extra);
    lab.fwknop(&lab.c1, &a);
}

/// posternd's rules with an `_exp_` comment, as iptables-save prints them.
fn plain_rules(lab: &Lab, tool: &str) -> Vec<String> {
    let out = lab.srv.run(&[tool]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("-A FWKNOP_") && l.contains("_exp_"))
        .map(str::to_owned)
        .collect()
}

/// Start posternd with `PATH` set to `path` (so that `ipset` is not found).
fn start_with_path(lab: &mut Lab, path: &str) {
    let args = lab.args(&["-i", &lab.iface.clone()]);
    let log = lab.path("posternd.log");
    let _ = std::fs::remove_file(&log);
    let f = std::fs::File::create(&log).unwrap();
    let mut c = lab.srv.cmd(&args[0]);
    c.args(&args[1..])
        .env("PATH", path)
        .stdin(std::process::Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f);
    lab.daemon = Some(Proc {
        child: c.spawn().unwrap(),
    });
    wait_for_line(&log, "started (pid", Duration::from_secs(15));
}

#[test]
fn iptables_plain_rules_when_ipset_is_unavailable() {
    if !(ready("iptables_plain_rules_when_ipset_is_unavailable")
        && postern_testkit::can_run(
            "iptables_plain_rules_when_ipset_is_unavailable",
            &["iptables", "ip6tables", "iptables-save"],
        ))
    {
        return;
    }
    let mut lab = Lab::new(&[22]);
    for tool in ["iptables", "ip6tables"] {
        let mut rules = vec![
            "-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT",
            "-A INPUT -i lo -j ACCEPT",
            "-P INPUT DROP",
        ];
        if tool == "ip6tables" {
            rules.insert(0, "-A INPUT -p ipv6-icmp -j ACCEPT");
        }
        for rule in rules {
            let mut argv = vec![tool, "-w"];
            argv.extend(rule.split(' '));
            lab.srv.run(&argv);
        }
    }
    let iptables = String::from_utf8_lossy(&lab.srv.run(&["which", "iptables"]).stdout)
        .trim()
        .to_owned();
    assert!(
        iptables.starts_with("/usr/sbin/") || iptables.starts_with("/sbin/"),
        "{iptables}"
    );

    // 1. No ipset on PATH: plain rules, chosen at setup and said so.
    lab.configure(
        &format!("FIREWALL_TYPE iptables\nFIREWALL_EXE {iptables}\nFLUSH_IPT_AT_INIT N\n"),
        ACCESS,
    );
    start_with_path(&mut lab, "/usr/bin:/bin");
    assert!(
        lab.log().contains("plain rules, expiry by posternd")
            && lab.log().contains("ipset is unavailable"),
        "{}",
        lab.log()
    );
    let status = lab.status();
    assert!(
        status["firewall"]
            .as_str()
            .unwrap_or_default()
            .contains("plain rules, expiry by posternd"),
        "{status}"
    );
    assert!(!lab.c1.can_connect(SRV, 22, Duration::from_millis(300)));
    knock(&lab, &[]);
    let t0 = Instant::now();
    assert!(
        lab.c1.wait_open(SRV, 22, Duration::from_secs(5)),
        "{}",
        lab.log()
    );
    assert!(
        !lab.c2.can_connect(SRV_C2, 22, Duration::from_millis(400)),
        "open for another source"
    );
    let rules = plain_rules(&lab, "iptables-save");
    assert!(
        rules.len() == 1
            && rules[0].starts_with(&format!(
                "-A FWKNOP_INPUT -s {C1}/32 -p tcp -m tcp --dport 22 -m comment --comment _exp_"
            ))
            && rules[0].ends_with("-j ACCEPT"),
        "{rules:?}"
    );
    assert_eq!(lab.status()["kernel"][0]["source"], C1, "{}", lab.status());
    // IPv6 in the same layout, through ip6tables (posternd's own client sends the address).
    lab.postern(&["-A", "tcp/22", "-a", C16, "-D", SRV6]);
    assert!(
        lab.c1.wait_open(SRV6, 22, Duration::from_secs(5)),
        "IPv6\n{}",
        lab.log()
    );
    assert!(
        plain_rules(&lab, "ip6tables-save")
            .iter()
            .any(|r| r.starts_with(&format!("-A FWKNOP_INPUT -s {C16}/128 -p tcp"))),
        "{:?}",
        plain_rules(&lab, "ip6tables-save")
    );
    assert!(
        lab.c1.wait_closed(SRV, 22, Duration::from_secs(8)),
        "not closed by posternd"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(3500),
        "closed after {:?}",
        t0.elapsed()
    );
    assert!(lab.c1.wait_closed(SRV6, 22, Duration::from_secs(4)));
    let start = Instant::now();
    while !plain_rules(&lab, "iptables-save").is_empty() && start.elapsed() < Duration::from_secs(3)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(plain_rules(&lab, "iptables-save").is_empty());
    assert!(plain_rules(&lab, "ip6tables-save").is_empty());
    assert!(
        lab.log().contains("past their deadline removed"),
        "{}",
        lab.log()
    );
    lab.stop();

    // 2. IPT_USE_IPSET N; kill -9 with a grant open; restart after its deadline.
    lab.configure(
        "FIREWALL_TYPE iptables\nIPT_USE_IPSET N\nFLUSH_IPT_AT_INIT N\n",
        ACCESS,
    );
    lab.start(&[]);
    assert!(
        lab.log()
            .contains("plain rules, expiry by posternd (IPT_USE_IPSET N)"),
        "{}",
        lab.log()
    );
    knock(&lab, &["--time-offset-plus", "1"]);
    assert!(lab.c1.wait_open(SRV, 22, Duration::from_secs(5)));
    lab.kill9();
    std::thread::sleep(Duration::from_millis(5500));
    // Nobody removed it: a plain rule needs posternd (say so, and close it at start).
    assert_eq!(plain_rules(&lab, "iptables-save").len(), 1);
    lab.start(&[]);
    assert!(
        plain_rules(&lab, "iptables-save").is_empty(),
        "an expired rule survived the start"
    );
    assert!(!lab.c1.can_connect(SRV, 22, Duration::from_millis(400)));

    // 3. kill -9 with a grant open; restart before its deadline: kept, then closed on time.
    knock(&lab, &["--time-offset-plus", "2"]);
    let t0 = Instant::now();
    assert!(lab.c1.wait_open(SRV, 22, Duration::from_secs(5)));
    let before = plain_rules(&lab, "iptables-save");
    assert_eq!(before.len(), 1, "{before:?}");
    lab.kill9();
    lab.start(&[]);
    assert_eq!(
        plain_rules(&lab, "iptables-save"),
        before,
        "the rule was not kept with its deadline"
    );
    assert!(lab.c1.can_connect(SRV, 22, Duration::from_millis(400)));
    let active = lab.status();
    assert!(
        active["active"][0]["seconds_left"].as_u64().unwrap_or(0) <= 4,
        "{active}"
    );
    assert!(
        lab.c1.wait_closed(SRV, 22, Duration::from_secs(8)),
        "kept rule not closed"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(3000) && t0.elapsed() <= Duration::from_secs(7),
        "closed after {:?}",
        t0.elapsed()
    );
    assert!(plain_rules(&lab, "iptables-save").is_empty());
    lab.stop();
    // At exit the chains go; the admin's policy stays.
    let rules = String::from_utf8_lossy(&lab.srv.run(&["iptables-save"]).stdout).into_owned();
    assert!(
        !rules.contains("FWKNOP_") && rules.contains(":INPUT DROP"),
        "{rules}"
    );
}
