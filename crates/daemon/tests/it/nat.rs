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
fn nat_access_through_the_gateway_and_to_its_own_ports() {
    if !ready("nat_access_through_the_gateway_and_to_its_own_ports") {
        return;
    }
    // The gateway's own service is on 22 only; 2222 and 55001 answer only through NAT.
    let mut lab = Lab::new(&[22]);
    lab.srv.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    lab.c1
        .run(&["ip", "route", "add", "198.18.2.0/24", "via", SRV]);
    lab.c2
        .run(&["ip", "route", "add", "198.18.1.0/24", "via", SRV_C2]);
    let _internal = tcp_service(&lab.c2, INTERNAL, &[55000], &lab.path("internal.log"));
    lab.configure(
        "FIREWALL_TYPE nftables\nNFT_DEFAULT_DROP Y\nENABLE_IPT_FORWARDING Y\nENABLE_IPT_LOCAL_NAT Y\n",
        "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\nOPEN_PORTS tcp/2222, tcp/55001\nFW_ACCESS_TIMEOUT 3\n",
    );
    lab.start(&[]);
    assert!(
        lab.log().contains("NAT (prerouting DNAT maps"),
        "{}",
        lab.log()
    );
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
    // The DNAT element is keyed on the source: the gateway itself is not translated
    // (it has no service on 2222), and the element expires on time.
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

    // Without ENABLE_IPT_FORWARDING the same request opens nothing.
    lab.configure(
        "FIREWALL_TYPE nftables\nNFT_DEFAULT_DROP Y\nENABLE_IPT_LOCAL_NAT Y\n",
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
    // NAT on a backend that cannot: refused at --check-config, with the reason.
    lab.configure(
        "FIREWALL_TYPE iptables\nENABLE_IPT_FORWARDING Y\n",
        "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\n",
    );
    let out = lab.run_posternd(&["--check-config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && text.contains("NAT access needs the nftables backend"),
        "{text}"
    );
}
