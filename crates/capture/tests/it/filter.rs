//! The filter compiler's verdicts, side by side with libpcap's and the kernel's.
//!
//! One table of packets (IPv4 and IPv6 UDP to and from various ports and hosts, TCP,
//! SCTP, ICMP, IPv4 options and fragments, IPv6 extension headers), one table of
//! expressions. For every expression:
//! * libpcap: `tcpdump -r` over a raw-IP pcap of the packets (what fwknopd's libpcap
//!   would let through) must pick exactly the packets our program accepts;
//! * the kernel: our program attached to a packet socket in a namespace must let
//!   through exactly those packets when they are sent over a veth pair.
//!
//! Expressions libpcap refuses must be refused by `compile` too. Needs tcpdump (and
//! root, ip, python3 for the kernel part): skips without, fails under CI=true.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use postern_capture::afpacket::PacketSocket;
use postern_capture::filter::compile;
use postern_testkit::{link, Netns, TempDir};

const MARK: &[u8] = b"#pkt";

/// The payload of packet `i`: a marker that finds it again on the wire.
fn tag(i: usize) -> Vec<u8> {
    let mut v = MARK.to_vec();
    v.extend_from_slice(format!("{i:03}").as_bytes());
    v
}

fn tag_of(pkt: &[u8]) -> Option<usize> {
    let n = pkt.len();
    if n < MARK.len() + 3 || &pkt[n - 7..n - 3] != MARK {
        return None;
    }
    std::str::from_utf8(&pkt[n - 3..]).ok()?.parse().ok()
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = sport.to_be_bytes().to_vec();
    v.extend_from_slice(&dport.to_be_bytes());
    v.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(payload);
    v
}

fn tcp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = sport.to_be_bytes().to_vec();
    v.extend_from_slice(&dport.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    v.extend_from_slice(payload);
    v
}

/// IPv4 with `proto`, flags/fragment field `frag`, `opts` option bytes (a multiple of 4).
fn v4(src: &str, dst: &str, proto: u8, frag: u16, opts: &[u8], l4: &[u8]) -> Vec<u8> {
    let ihl = 5 + opts.len() / 4;
    let total = (ihl * 4 + l4.len()) as u16;
    let mut p = vec![0x40 | ihl as u8, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34]);
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src.parse::<std::net::Ipv4Addr>().unwrap().octets());
    p.extend_from_slice(&dst.parse::<std::net::Ipv4Addr>().unwrap().octets());
    p.extend_from_slice(opts);
    p.extend_from_slice(l4);
    p
}

fn v6(src: &str, dst: &str, nh: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[nh, 64]);
    p.extend_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
    p.extend_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
    p.extend_from_slice(payload);
    p
}

const C: &str = "198.18.1.2";
const S: &str = "198.18.1.1";
const C6: &str = "2001:db8:1::2";
const S6: &str = "2001:db8:1::1";

/// The packets, each with its tag as the last bytes.
fn packets() -> Vec<(&'static str, Vec<u8>)> {
    type Make = fn(&[u8]) -> Vec<u8>;
    let makers: Vec<(&'static str, Make)> = vec![
        ("v4 udp c:40000 -> s:62201", |t| {
            v4(C, S, 17, 0x4000, &[], &udp(40000, 62201, t))
        }),
        ("v4 udp c:62201 -> s:5000", |t| {
            v4(C, S, 17, 0, &[], &udp(62201, 5000, t))
        }),
        ("v4 udp c:5000 -> s:40000", |t| {
            v4(C, S, 17, 0, &[], &udp(5000, 40000, t))
        }),
        ("v4 udp c:5000 -> s:10000", |t| {
            v4(C, S, 17, 0, &[], &udp(5000, 10000, t))
        }),
        ("v4 udp c:5000 -> s:9999", |t| {
            v4(C, S, 17, 0, &[], &udp(5000, 9999, t))
        }),
        ("v4 udp c:5000 -> s:65535", |t| {
            v4(C, S, 17, 0, &[], &udp(5000, 65535, t))
        }),
        ("v4 udp c:1024 -> s:53", |t| {
            v4(C, S, 17, 0, &[], &udp(1024, 53, t))
        }),
        ("v4 udp c:53 -> s:20", |t| {
            v4(C, S, 17, 0, &[], &udp(53, 20, t))
        }),
        ("v4 udp 198.18.2.7:4 -> s:62201", |t| {
            v4("198.18.2.7", S, 17, 0, &[], &udp(4, 62201, t))
        }),
        ("v4 udp 198.20.0.1 -> s:62201", |t| {
            v4("198.20.0.1", S, 17, 0, &[], &udp(4, 62201, t))
        }),
        ("v4 udp 198.18.1.3 -> s:40000", |t| {
            v4("198.18.1.3", S, 17, 0, &[], &udp(9, 40000, t))
        }),
        ("v4 udp s -> 10.1.2.3:62201", |t| {
            v4(S, "10.1.2.3", 17, 0, &[], &udp(9, 62201, t))
        }),
        ("v4 udp options c -> s:62201", |t| {
            v4(C, S, 17, 0, &[1, 1, 1, 0], &udp(7, 62201, t))
        }),
        ("v4 udp first fragment (MF) -> s:62201", |t| {
            v4(C, S, 17, 0x2000, &[], &udp(7, 62201, t))
        }),
        ("v4 udp later fragment, port-like bytes", |t| {
            let mut b = udp(62201, 62201, t);
            b.truncate(8);
            b.extend_from_slice(t);
            v4(C, S, 17, 0x0003, &[], &b)
        }),
        ("v4 tcp c:40000 -> s:62201", |t| {
            v4(C, S, 6, 0x4000, &[], &tcp(40000, 62201, t))
        }),
        ("v4 tcp c:5000 -> s:22", |t| {
            v4(C, S, 6, 0, &[], &tcp(5000, 22, t))
        }),
        ("v4 sctp c:5000 -> s:62201", |t| {
            v4(C, S, 132, 0, &[], &udp(5000, 62201, t))
        }),
        ("v4 icmp echo c -> s", |t| {
            let mut b = vec![8, 0, 0, 0, 0, 1, 0, 1];
            b.extend_from_slice(t);
            v4(C, S, 1, 0, &[], &b)
        }),
        ("v6 udp c:40000 -> s:62201", |t| {
            v6(C6, S6, 17, &udp(40000, 62201, t))
        }),
        ("v6 udp c:62201 -> s:5000", |t| {
            v6(C6, S6, 17, &udp(62201, 5000, t))
        }),
        ("v6 udp c:5000 -> s:40000", |t| {
            v6(C6, S6, 17, &udp(5000, 40000, t))
        }),
        ("v6 udp c:5000 -> s:9999", |t| {
            v6(C6, S6, 17, &udp(5000, 9999, t))
        }),
        ("v6 udp 2001:db8:8000::9 -> s:62201", |t| {
            v6("2001:db8:8000::9", S6, 17, &udp(5, 62201, t))
        }),
        ("v6 udp 2001:db9::9 -> s:62201", |t| {
            v6("2001:db9::9", S6, 17, &udp(5, 62201, t))
        }),
        ("v6 udp ::ffff:198.18.1.2 -> s:62201", |t| {
            v6("::ffff:198.18.1.2", S6, 17, &udp(5, 62201, t))
        }),
        ("v6 tcp c:5000 -> s:62201", |t| {
            v6(C6, S6, 6, &tcp(5000, 62201, t))
        }),
        ("v6 fragment header + udp -> s:62201", |t| {
            let mut b = vec![17, 0, 0, 1, 0, 0, 0, 9];
            b.extend_from_slice(&udp(5, 62201, t));
            v6(C6, S6, 44, &b)
        }),
        ("v6 fragment header + tcp -> s:62201", |t| {
            let mut b = vec![6, 0, 0, 1, 0, 0, 0, 9];
            b.extend_from_slice(&tcp(5, 62201, t));
            v6(C6, S6, 44, &b)
        }),
        ("v6 icmp6 echo c -> s", |t| {
            let mut b = vec![128, 0, 0, 0, 0, 1, 0, 1];
            b.extend_from_slice(t);
            v6(C6, S6, 58, &b)
        }),
        ("v6 fragment header + icmp6", |t| {
            let mut b = vec![58, 0, 0, 1, 0, 0, 0, 9, 128, 0, 0, 0, 0, 1, 0, 1];
            b.extend_from_slice(t);
            v6(C6, S6, 44, &b)
        }),
        ("v4 tcp c:80 -> s:5000", |t| {
            v4(C, S, 6, 0, &[], &tcp(80, 5000, t))
        }),
        ("v4 tcp later fragment, port-like bytes", |t| {
            let mut b = tcp(80, 80, t);
            b.truncate(8);
            b.extend_from_slice(t);
            v4(C, S, 6, 0x0003, &[], &b)
        }),
        ("v6 hop-by-hop + udp -> s:62201", |t| {
            let mut b = vec![17, 0, 1, 4, 0, 0, 0, 0];
            b.extend_from_slice(&udp(5, 62201, t));
            v6(C6, S6, 0, &b)
        }),
    ];
    makers
        .into_iter()
        .enumerate()
        .map(|(i, (n, f))| (n, f(&tag(i))))
        .collect()
}

/// Expressions in the supported subset (libpcap must accept each).
const EXPRS: &[&str] = &[
    "udp port 62201",
    "udp dst port 62201",
    "udp src port 62201",
    "port 62201",
    "dst port 62201",
    "src port 5000",
    "udp portrange 10000-65535",
    "udp dst portrange 10000-65535",
    "udp src portrange 1-1024",
    "dst portrange 20-53",
    "udp dst port 65535",
    "udp portrange 40000-40000",
    "udp",
    "not udp",
    "ip",
    "ip6",
    "host 198.18.1.2",
    "src host 198.18.1.2",
    "dst host 198.18.1.1",
    "host 2001:db8:1::2",
    "dst host 2001:db8:1::1",
    "host ::ffff:198.18.1.2",
    "src net 198.18.0.0/15",
    "dst net 198.18.1.0/24",
    "net 198.18",
    "net 10",
    "src net 2001:db8::/32",
    "src net 2001:db8:8000::/33",
    "net 0.0.0.0/0",
    "net ::/0",
    "net 2001:db8:1::2",
    "dst net 2001:db8:1::1/128",
    "src 198.18.1.2 or dst 2001:db8:1::1",
    "udp port 62201 or 40000",
    "host 198.18.1.2 or 198.18.1.3",
    "udp portrange 1-1024 or 40000-50000",
    "udp dst port 62201 and src host 198.18.1.2",
    "udp dst port 62201 && ! src net 198.18.2.0/24",
    "(udp dst port 62201 or udp dst port 40000) and ip6",
    "udp dst port 62201 or udp dst port 40000 and ip6",
    "ip6 or ip and not udp",
    "not (udp and dst port 53)",
    "!udp port 62201",
    "udp port 62201 and not 40000",
    "not port 62201 or 5000",
    "udp dst portrange 10000-65535 and not src host 198.18.1.3",
    "udp port 62201 or (40000)",
    "udp && (dst host 198.18.1.1 || dst host 2001:db8:1::1) && dst port 62201",
    "((udp))",
    "tcp",
    "not tcp",
    "icmp",
    "icmp6",
    "tcp port 62201",
    "tcp dst port 62201",
    "tcp src port 80",
    "tcp portrange 1-1024",
    "tcp dst portrange 20-80",
    "udp port 62201 or tcp port 62201",
    "udp port 62201 or tcp port 62201 or icmp",
    "tcp dst port 80 and src net 198.18.0.0/15",
    "udp or tcp",
    "tcp or icmp6",
    "tcp port 80 or 22",
    "icmp and host 198.18.1.2",
];

/// Expressions libpcap refuses: compile must refuse them too.
const LIBPCAP_REFUSES: &[&str] = &[
    "udp port",
    "udp port 70000",
    "udp host 198.18.1.2",
    "net 198.18.0.1/15",
    "(udp port 1) or 2",
    "udp or 5",
    "UDP port 62201",
    "src 10.0.0.0/8",
    "port 1 or 198.18.1.2",
    "udp port 1 and",
    "(udp port 1",
    "udp port 1)",
    "and udp",
    "tcp host 198.18.1.2",
    "icmp port 5",
    "tcp port",
];

/// Which packets (indexes) `tcpdump -r pcap EXPR` prints.
fn libpcap_picks(pcap: &std::path::Path, expr: &str) -> BTreeSet<usize> {
    let out = Command::new("tcpdump")
        .args(["-nn", "-q", "-tt", "-r"])
        .arg(pcap)
        .arg(expr)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tcpdump refused '{expr}': {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split('.').next()?.parse::<usize>().ok())
        .collect()
}

#[test]
fn verdicts_match_libpcap() {
    if !postern_testkit::have_tool("tcpdump") {
        return;
    }
    let pkts = packets();
    let dir = TempDir::new("filter");
    let pcap = dir.join("packets.pcap");
    let records: Vec<(u32, Vec<u8>)> = pkts
        .iter()
        .enumerate()
        .map(|(i, (_, p))| (i as u32, p.clone()))
        .collect();
    std::fs::write(&pcap, postern_capture::pcapfile::write_raw(&records)).unwrap();
    let mut failures = Vec::new();
    let mut compared = 0;
    for expr in EXPRS {
        let f = compile(expr).unwrap_or_else(|e| panic!("'{expr}': {e}"));
        let ours: BTreeSet<usize> = (0..pkts.len()).filter(|&i| f.matches(&pkts[i].1)).collect();
        let theirs = libpcap_picks(&pcap, expr);
        compared += pkts.len();
        if ours != theirs {
            let name =
                |s: &BTreeSet<usize>| -> Vec<&str> { s.iter().map(|&i| pkts[i].0).collect() };
            failures.push(format!(
                "'{expr}':\n  only ours:    {:?}\n  only libpcap: {:?}",
                name(&ours.difference(&theirs).copied().collect()),
                name(&theirs.difference(&ours).copied().collect())
            ));
        }
    }
    for expr in LIBPCAP_REFUSES {
        let lp = Command::new("tcpdump")
            .args(["-y", "RAW", "-d", expr])
            .output()
            .unwrap();
        assert!(
            !lp.status.success(),
            "libpcap takes '{expr}'; move it to EXPRS"
        );
        if let Ok(f) = compile(expr) {
            failures.push(format!("'{expr}': libpcap refuses it, we compiled {f:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} expressions differ from libpcap:\n{}",
        failures.len(),
        EXPRS.len() + LIBPCAP_REFUSES.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} expressions x {} packets ({compared} verdicts) as libpcap; {} refusals as libpcap",
        EXPRS.len(),
        pkts.len(),
        LIBPCAP_REFUSES.len()
    );
}

/// Open `filter`'s packet socket inside `ns` (a thread enters the namespace, so the
/// socket is created there; the test process stays where it is).
fn socket_in(ns: &Netns, iface: &str, expr: &str) -> PacketSocket {
    let (ns_path, iface, expr) = (
        format!("/var/run/netns/{}", ns.name),
        iface.to_owned(),
        expr.to_owned(),
    );
    std::thread::spawn(move || {
        let f = std::fs::File::open(&ns_path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let s = PacketSocket::open_filtered(&iface, &compile(&expr).unwrap()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s
    })
    .join()
    .unwrap()
}

#[test]
fn the_kernel_runs_the_program_as_compiled() {
    if !postern_testkit::can_run("filter in the kernel", &["ip", "python3"]) {
        return;
    }
    let rx = Netns::new("fr");
    let tx = Netns::new("ft");
    link(&rx, "198.18.200.1", &tx, "198.18.200.2");
    let rx_if = postern_testkit::iface_with(&rx, "198.18.200.1");
    let tx_if = postern_testkit::iface_with(&tx, "198.18.200.2");
    let pkts = packets();
    let sockets: Vec<(&str, PacketSocket)> = EXPRS
        .iter()
        .map(|e| (*e, socket_in(&rx, &rx_if, e)))
        .collect();
    // Send every packet as it is, to the broadcast address, from the other end.
    let script = "import socket,sys\nfor h in sys.argv[2:]:\n b=bytes.fromhex(h)\n proto=0x86dd if b[0]>>4==6 else 0x0800\n s=socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(proto))\n s.sendto(b, (sys.argv[1], proto, 0, 0, b'\\xff'*6))\n";
    let hex: Vec<String> = pkts
        .iter()
        .map(|(_, p)| p.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    let mut c = tx.cmd("python3");
    c.args(["-c", script, &tx_if]).args(&hex);
    postern_testkit::sh(&mut c);
    // Delivery over the veth is asynchronous: give it a moment, then drain each socket.
    std::thread::sleep(Duration::from_millis(300));
    let mut failures = Vec::new();
    let mut buf = vec![0u8; 65536];
    for (expr, s) in &sockets {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut got = BTreeSet::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            match s.recv_packet(&mut buf) {
                Ok(n) => {
                    if let Some(i) = tag_of(&buf[..n]) {
                        got.insert(i);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{expr}: {e}"),
            }
        }
        let f = compile(expr).unwrap();
        let want: BTreeSet<usize> = (0..pkts.len()).filter(|&i| f.matches(&pkts[i].1)).collect();
        if got != want {
            let name =
                |s: &BTreeSet<usize>| -> Vec<&str> { s.iter().map(|&i| pkts[i].0).collect() };
            failures.push(format!(
                "'{expr}':\n  kernel only: {:?}\n  missing:     {:?}",
                name(&got.difference(&want).copied().collect()),
                name(&want.difference(&got).copied().collect())
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} expressions behave differently in the kernel:\n{}",
        failures.len(),
        EXPRS.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} expressions x {} packets: the kernel passed exactly what the program accepts in user space",
        EXPRS.len(),
        pkts.len()
    );
}
