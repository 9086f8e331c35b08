//! Intake modes and firewall layouts: AF_PACKET and UDP socket, IPv4 and IPv6, and
//! posternd working inside an admin's existing drop-policy table (layout b), which it
//! leaves exactly as it found it.

use std::process::Command;
use std::time::Duration;

use crate::lab::{ready, Lab, C1, C16, SRV, SRV6};

const ACCESS: &str = "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\n";

fn ipv4_and_ipv6(lab: &Lab, port4: u16, port6: u16) {
    let p4 = format!("tcp/{port4}");
    lab.postern(&["-A", &p4, "-a", C1, "-D", SRV]);
    assert!(
        lab.c1.wait_open(SRV, port4, Duration::from_secs(5)),
        "IPv4 knock\n{}",
        lab.log()
    );
    assert!(
        !lab.c1.can_connect(SRV6, port4, Duration::from_millis(500)),
        "IPv4 grant opened IPv6"
    );
    let p6 = format!("tcp/{port6}");
    lab.postern(&["-A", &p6, "-a", C16, "-D", SRV6]);
    assert!(
        lab.c1.wait_open(SRV6, port6, Duration::from_secs(5)),
        "IPv6 knock\n{}",
        lab.log()
    );
    assert!(
        !lab.c1.can_connect(SRV, port6, Duration::from_millis(500)),
        "IPv6 grant opened IPv4"
    );
    let st = lab.status();
    let sources: Vec<&str> = st["active"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["source"].as_str().unwrap())
        .collect();
    assert!(sources.contains(&C1) && sources.contains(&C16), "{st}");
}

#[test]
fn af_packet_and_udp_intake_over_ipv4_and_ipv6() {
    if !ready("af_packet_and_udp_intake_over_ipv4_and_ipv6") {
        return;
    }
    let mut lab = Lab::new(&[22, 23, 24, 25]);
    lab.configure("NFT_DEFAULT_DROP Y\n", ACCESS);
    lab.start(&[]);
    ipv4_and_ipv6(&lab, 22, 23);
    lab.stop();
    // The default-drop base stays after exit (the host stays closed); grants are gone.
    assert!(
        lab.ruleset().contains("policy drop"),
        "default-drop removed at exit"
    );
    assert!(!lab.c1.can_connect(SRV, 22, Duration::from_millis(500)));

    // UDP-socket intake: posternd's own policy lets the SPA port through.
    lab.configure("NFT_DEFAULT_DROP Y\nENABLE_UDP_SERVER Y\n", ACCESS);
    lab.start(&[]);
    assert!(
        lab.ruleset().contains("udp dport 62201 accept"),
        "{}",
        lab.ruleset()
    );
    ipv4_and_ipv6(&lab, 24, 25);
    lab.stop();
}

const ADMIN: &str = "table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t\tiif \"lo\" accept\n\t\tct state established,related accept\n\t\tmeta l4proto ipv6-icmp accept\n\t}\n}\n";

#[test]
fn existing_table_layout_is_left_as_found() {
    if !ready("existing_table_layout_is_left_as_found") {
        return;
    }
    let mut lab = Lab::new(&[22]);
    lab.nft_load(ADMIN);
    let before = lab.ruleset();
    assert!(
        !lab.c1.can_connect(SRV, 22, Duration::from_millis(500)),
        "admin's drop policy"
    );
    lab.configure("NFT_TABLE inet filter\nNFT_CHAIN input\n", ACCESS);
    lab.start(&[]);
    let during = lab.ruleset();
    assert!(
        during.contains("postern_allow4") && during.contains("comment \"postern\""),
        "{during}"
    );
    assert!(
        !during.contains("table inet postern"),
        "layout b must not create its own table"
    );
    lab.postern(&["-A", "tcp/22", "-a", C1, "-D", SRV]);
    assert!(
        lab.c1.wait_open(SRV, 22, Duration::from_secs(5)),
        "knock through the admin's chain\n{}",
        lab.log()
    );
    lab.stop();
    assert_eq!(
        lab.ruleset(),
        before,
        "posternd left something behind in the admin's table"
    );
    // A crash leaves our rule behind; the next start replaces it instead of adding another.
    lab.start(&[]);
    lab.kill9();
    lab.start(&[]);
    assert_eq!(
        lab.ruleset().matches("comment \"postern\"").count(),
        2,
        "one rule per family, not duplicated"
    );
    lab.stop();
    assert_eq!(lab.ruleset(), before);
}

/// Datagrams the kernel drops before posternd reads them are counted, for both intakes:
/// the worker is stopped (SIGSTOP) while more junk arrives than its receive buffer holds,
/// then resumed; `status` must report the loss, and a knock afterwards still works.
#[test]
fn drops_before_examination_are_counted_in_both_intakes() {
    if !ready("drops_before_examination_are_counted_in_both_intakes") {
        return;
    }
    let mut lab = Lab::new(&[22, 23]);
    let flood = "import socket,sys,os,base64\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\np=base64.b64encode(os.urandom(160)).rstrip(b'=')\nfor i in range(int(sys.argv[2])):\n  try: s.sendto(p,(sys.argv[1],62201))\n  except OSError: pass\n";
    for (conf, port) in [
        ("NFT_DEFAULT_DROP Y\n", 22),
        ("NFT_DEFAULT_DROP Y\nENABLE_UDP_SERVER Y\n", 23),
    ] {
        lab.configure(conf, ACCESS);
        lab.start(&[]);
        let st = lab.status();
        let worker = st["parts"][1]["pid"]
            .as_u64()
            .expect("a worker")
            .to_string();
        postern_testkit::sh(Command::new("kill").args(["-STOP", &worker]));
        let mut c = lab.c1.cmd("python3");
        c.args(["-c", flood, SRV, "40000"]);
        let sent = c.status();
        postern_testkit::sh(Command::new("kill").args(["-CONT", &worker]));
        assert!(sent.unwrap().success());
        // The UDP socket reports its drop count with the next datagram queued after them.
        std::thread::sleep(Duration::from_secs(1));
        let mut c = lab.c1.cmd("python3");
        c.args(["-c", flood, SRV, "10"]);
        assert!(c.status().unwrap().success());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut st = lab.status();
        while st["dropped"].as_u64().unwrap_or(0) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            st = lab.status();
        }
        let (dropped, examined) = (
            st["dropped"].as_u64().unwrap_or(0),
            st["examined"].as_u64().unwrap_or(0),
        );
        assert!(dropped > 0, "{conf}: no drop counted: {st}");
        assert!(
            dropped + examined <= 40_010,
            "{conf}: more counted than sent: {st}"
        );
        lab.postern(&["-A", &format!("tcp/{port}"), "-a", C1, "-D", SRV]);
        assert!(
            lab.c1.wait_open(SRV, port, Duration::from_secs(5)),
            "{conf}: a knock after the flood did not open\n{}",
            lab.log()
        );
        lab.stop();
    }
}
