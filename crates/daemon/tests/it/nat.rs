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

use std::time::{Duration, Instant};

use postern_testkit::tcp_service;

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
