//! One suite of end-to-end checks, run on every firewall backend (nftables' own table,
//! iptables-nft + ipset, iptables-legacy + ipset, a real firewalld on the lab's own
//! bus): open for the knocking source only, a
//! port outside OPEN_PORTS stays closed, expiry on time, replays refused, `kill -9` with
//! a grant open (closed on time by the kernel, the replay remembered after a restart),
//! IPv6, and `posternd status` showing what the kernel holds. Then the classic fwknop
//! setup exactly: an iptables default-drop INPUT policy, Debian's stock configuration
//! files with only the two keys filled in, no FIREWALL_TYPE, the real client.

use std::time::{Duration, Instant};

use crate::lab::{keys, ready, strs, Lab, C1, C16, SRV, SRV6, SRV_C2};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Nftables,
    IptablesNft,
    IptablesLegacy,
    /// A real firewalld (default zone `drop`) on the lab's own system bus.
    Firewalld,
}

impl Backend {
    fn server_conf(self) -> &'static str {
        match self {
            Backend::Nftables => "FIREWALL_TYPE nftables\nNFT_DEFAULT_DROP Y\n",
            Backend::IptablesNft => "FIREWALL_TYPE iptables\nFIREWALL_EXE /usr/sbin/iptables-nft\n",
            Backend::IptablesLegacy => {
                "FIREWALL_TYPE iptables\nFIREWALL_EXE /usr/sbin/iptables-legacy\n"
            }
            Backend::Firewalld => "FIREWALL_TYPE firewalld\nFIREWD_ZONE drop\n",
        }
    }

    /// firewalld, for its backend: its own bus and daemon in the server namespace,
    /// which posternd is started with.
    fn service(self, lab: &mut Lab) -> Option<crate::firewalld::Bus> {
        if !matches!(self, Backend::Firewalld) {
            return None;
        }
        let mut bus = crate::firewalld::Bus::new(lab);
        bus.start_firewalld(lab);
        lab.env = vec![bus.env.clone()];
        Some(bus)
    }

    /// The host's own default-drop policy for the iptables backends (the admin's, as in
    /// every fwknop guide); the nftables backend installs its own.
    fn host_policy(self, lab: &Lab) {
        let (v4, v6) = match self {
            Backend::Nftables | Backend::Firewalld => return,
            Backend::IptablesNft => ("iptables-nft", "ip6tables-nft"),
            Backend::IptablesLegacy => ("iptables-legacy", "ip6tables-legacy"),
        };
        for tool in [v4, v6] {
            for rule in [
                "-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT",
                "-A INPUT -i lo -j ACCEPT",
                "-P INPUT DROP",
            ] {
                let mut argv = vec![tool, "-w"];
                argv.extend(rule.split(' '));
                lab.srv.run(&argv);
            }
        }
        // IPv6 neighbour discovery, which the admin's ip6tables policy must let in.
        let tool6 = v6;
        lab.srv.run(&[
            tool6,
            "-w",
            "-I",
            "INPUT",
            "-p",
            "ipv6-icmp",
            "-j",
            "ACCEPT",
        ]);
    }
}

impl Backend {
    /// Take posternd's base away as an admin or a service restart would.
    fn break_base(self, lab: &Lab, bus: Option<&crate::firewalld::Bus>) {
        match self {
            Backend::Firewalld => {
                // A reload drops every runtime rule, posternd's grants included.
                let bus = bus.unwrap();
                assert!(bus.cmd(lab, &["--reload"]).status.success());
            }
            Backend::Nftables => {
                lab.srv.run(&["nft", "flush", "ruleset"]);
            }
            Backend::IptablesNft | Backend::IptablesLegacy => {
                let tool = if matches!(self, Backend::IptablesNft) {
                    "iptables-nft"
                } else {
                    "iptables-legacy"
                };
                lab.srv
                    .run(&[tool, "-w", "-D", "INPUT", "-j", "FWKNOP_INPUT"]);
            }
        }
    }
}

fn knock(lab: &Lab, port: u16, allow: &str, dst: &str, extra: &[&str]) -> String {
    let k = keys("enc-1", "hmac-1");
    let mut a = strs(&k);
    let p = format!("tcp/{port}");
    a.extend(["-A", p.as_str(), "-a", allow, "-D", dst]);
    a.extend(extra);
    lab.fwknop(&lab.c1, &a)
}

const SHORT: Duration = Duration::from_millis(400);

fn suite(backend: Backend) {
    let mut lab = Lab::new(&[22, 23]);
    backend.host_policy(&lab);
    let bus = backend.service(&mut lab);
    lab.configure(
        backend.server_conf(),
        "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\nOPEN_PORTS tcp/22\nFW_ACCESS_TIMEOUT 3\n",
    );
    lab.start(&[]);
    let b = format!("{backend:?}");
    assert!(
        !lab.c1.can_connect(SRV, 22, SHORT),
        "{b}: open before a knock"
    );
    // Open for the knocking source only.
    let p = knock(&lab, 22, C1, SRV, &[]);
    let opened = Instant::now();
    assert!(
        lab.c1.wait_open(SRV, 22, Duration::from_secs(5)),
        "{b}\n{}",
        lab.log()
    );
    assert!(
        !lab.c2.can_connect(SRV_C2, 22, SHORT),
        "{b}: open for another source"
    );
    // Status shows what the kernel holds.
    let st = lab.status();
    let kernel = st["kernel"].as_array().cloned().unwrap_or_default();
    assert!(
        kernel.iter().any(|k| k["source"] == C1 && k["port"] == 22),
        "{b}: {st}"
    );
    // ipset's default cap (65,536 entries) would refuse the 65,537th grant: posternd's
    // sets are made for millions (the benchmark fills 100,000).
    if matches!(backend, Backend::IptablesNft | Backend::IptablesLegacy) {
        let out = lab.srv.run(&["ipset", "-t", "list", "postern-in4"]);
        let header = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(header.contains("maxelem 4194304"), "{b}: {header}");
    }
    // A port outside OPEN_PORTS stays closed.
    knock(&lab, 23, C1, SRV, &[]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!lab.c1.can_connect(SRV, 23, SHORT), "{b}: tcp/23 opened");
    // Expiry on time, in the kernel.
    assert!(
        lab.c1.wait_closed(SRV, 22, Duration::from_secs(6)),
        "{b}: not closed"
    );
    let t = opened.elapsed();
    assert!(t >= Duration::from_millis(2500), "{b}: closed after {t:?}");
    // The replay, and a respelling of it, are refused.
    lab.send_raw(&lab.c1, SRV, &[&p, &format!("{p}=")]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!lab.c1.can_connect(SRV, 22, SHORT), "{b}: replay opened");
    // kill -9 with a grant open: the kernel closes it on time; after a restart the
    // packet is still a replay.
    let p2 = knock(&lab, 22, C1, SRV, &[]);
    let opened = Instant::now();
    assert!(
        lab.c1.wait_open(SRV, 22, Duration::from_secs(5)),
        "{b}\n{}",
        lab.log()
    );
    lab.kill9();
    assert!(
        lab.c1.wait_closed(SRV, 22, Duration::from_secs(6)),
        "{b}: open after kill -9"
    );
    assert!(opened.elapsed() >= Duration::from_millis(2500));
    lab.start(&[]);
    lab.send_raw(&lab.c1, SRV, &[&p2]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !lab.c1.can_connect(SRV, 22, SHORT),
        "{b}: replay after restart opened"
    );
    // IPv6 (the real fwknop client has no IPv6 allow address: postern knocks).
    lab.postern(&[
        "-A",
        "tcp/22",
        "-a",
        C16,
        "-D",
        SRV6,
        "--time-offset-plus",
        "1",
    ]);
    assert!(
        lab.c1.wait_open(SRV6, 22, Duration::from_secs(5)),
        "{b}: IPv6\n{}",
        lab.log()
    );
    assert!(
        !lab.c1.can_connect(SRV, 22, SHORT),
        "{b}: IPv6 grant opened IPv4"
    );
    // The base taken away under a running posternd (a restart of nftables.service, an
    // admin's `iptables -D`): within about a second, without a knock, posternd puts it
    // back and the grant still owed with it; nobody else gets in.
    knock(&lab, 22, C1, SRV, &["-f", "12"]);
    assert!(lab.c1.wait_open(SRV, 22, Duration::from_secs(5)), "{b}");
    backend.break_base(&lab, bus.as_ref());
    let broken = Instant::now();
    let log_has = |lab: &Lab| lab.log().contains("the firewall lost posternd's base");
    while !log_has(&lab) && broken.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = broken.elapsed();
    assert!(log_has(&lab), "{b}: not repaired\n{}", lab.log());
    assert!(
        took < Duration::from_millis(2500),
        "{b}: repaired after {took:?}"
    );
    assert!(
        lab.c1.can_connect(SRV, 22, SHORT),
        "{b}: owed grant not put back"
    );
    assert!(
        !lab.c2.can_connect(SRV_C2, 22, SHORT),
        "{b}: open for another source after the repair"
    );
    assert_eq!(lab.status()["firewall_repairs"], 1, "{b}");
    lab.stop();
}

#[test]
fn suite_on_nftables() {
    if ready("suite_on_nftables") {
        suite(Backend::Nftables);
    }
}

#[test]
fn suite_on_iptables_nft_with_ipset() {
    if ready("suite_on_iptables_nft_with_ipset")
        && postern_testkit::can_run(
            "suite_on_iptables_nft_with_ipset",
            &["ipset", "iptables-nft"],
        )
    {
        suite(Backend::IptablesNft);
    }
}

#[test]
fn suite_on_firewalld() {
    if crate::firewalld::ready("suite_on_firewalld") {
        suite(Backend::Firewalld);
    }
}

#[test]
fn suite_on_iptables_legacy_with_ipset() {
    if ready("suite_on_iptables_legacy_with_ipset")
        && postern_testkit::can_run(
            "suite_on_iptables_legacy_with_ipset",
            &["ipset", "iptables-legacy"],
        )
    {
        suite(Backend::IptablesLegacy);
    }
}

/// The article's host: `iptables -F`, established/related and loopback accepted,
/// `iptables -P INPUT DROP`, the interface named `eth0`, Debian's stock fwknopd.conf and
/// access.conf with only the two `__CHANGEME__` keys filled in from `fwknop --key-gen`.
#[test]
fn the_classic_iptables_setup_works_with_stock_configs() {
    let name = "the_classic_iptables_setup_works_with_stock_configs";
    if !ready(name) || !postern_testkit::can_run(name, &["ipset", "iptables"]) {
        return;
    }
    let (stock_conf, stock_access) = ("/etc/fwknop/fwknopd.conf", "/etc/fwknop/access.conf");
    assert!(
        std::path::Path::new(stock_access).exists(),
        "Debian's fwknop-server is not installed"
    );
    let mut lab = Lab::new(&[22]);
    lab.srv.run(&["ip", "link", "set", &lab.iface, "down"]);
    lab.srv
        .run(&["ip", "link", "set", &lab.iface, "name", "eth0"]);
    lab.srv.run(&["ip", "link", "set", "eth0", "up"]);
    lab.iface = "eth0".into();
    Backend::IptablesNft.host_policy(&lab);
    // fwknop --key-gen, pasted into the stock access.conf.
    let out = std::process::Command::new("fwknop")
        .arg("--key-gen")
        .output()
        .unwrap();
    let gen = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |n: &str| {
        gen.lines()
            .find_map(|l| l.strip_prefix(n))
            .map(|v| v.trim().to_owned())
            .unwrap()
    };
    let (k, h) = (field("KEY_BASE64:"), field("HMAC_KEY_BASE64:"));
    let access = std::fs::read_to_string(stock_access).unwrap();
    let access: String = access
        .lines()
        .map(
            |l| match l.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["KEY_BASE64", "__CHANGEME__"] => format!("KEY_BASE64          {k}\n"),
                ["HMAC_KEY_BASE64", "__CHANGEME__"] => format!("HMAC_KEY_BASE64     {h}\n"),
                _ => format!("{l}\n"),
            },
        )
        .collect();
    assert!(
        !access
            .lines()
            .any(|l| !l.starts_with('#') && l.contains("__CHANGEME__")),
        "stock access.conf changed shape"
    );
    let conf = std::fs::read_to_string(stock_conf).unwrap();
    lab.configure(&conf, &access);
    lab.start(&[]);
    let log = lab.log();
    assert!(log.contains("the iptables layout"), "{log}");
    let st = lab.status();
    assert!(
        st["firewall"].as_str().unwrap().starts_with("iptables"),
        "{st}"
    );
    let t0 = Instant::now();
    lab.fwknop(
        &lab.c1,
        &[
            "-A",
            "tcp/22",
            "-a",
            C1,
            "-D",
            SRV,
            "--key-base64-rijndael",
            &k,
            "--key-base64-hmac",
            &h,
            "--use-hmac",
        ],
    );
    assert!(
        lab.c1.wait_open(SRV, 22, Duration::from_secs(5)),
        "{}",
        lab.log()
    );
    assert!(
        !lab.c2.can_connect(SRV_C2, 22, SHORT),
        "open for another source"
    );
    let left = lab.status()["kernel"][0]["left"].as_u64().unwrap();
    assert!((25..=30).contains(&left), "kernel timeout {left}");
    assert!(
        lab.c1.wait_closed(SRV, 22, Duration::from_secs(36)),
        "not closed after 30 s"
    );
    let t = t0.elapsed();
    assert!(t >= Duration::from_secs(28), "closed after {t:?}");
    lab.stop();
    // fwknop's chain is gone, the admin's policy stays.
    let rules = lab.srv.run(&["iptables", "-w", "-S"]);
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(!rules.contains("FWKNOP_INPUT"), "{rules}");
    assert!(rules.contains("-P INPUT DROP"), "{rules}");
}
