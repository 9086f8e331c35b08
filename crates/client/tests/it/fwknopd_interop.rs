//! postern against the real fwknopd 2.6.10, end to end: fwknopd sniffs (pcap) in one
//! namespace behind an iptables default-drop policy, postern knocks from another, and a
//! TCP connect to the requested port then succeeds from that source only.
//!
//! ```text
//!   c1 198.18.1.2 ──── 198.18.1.1 ┐
//!   c2 198.18.2.2 ──── 198.18.2.1 ├ srv: fwknopd (pcap on the c1 link), iptables DROP,
//!  int 198.18.3.2 ──── 198.18.3.1 ┘      TCP services on 10001.., resolver on :8080
//!   (int: NAT target, service on :2222)
//! ```

use std::path::Path;
use std::time::Duration;

use postern_testkit::{
    can_run, iface_with, link, tcp_service, wait_for_line, Netns, Proc, TempDir,
};

const SRV: &str = "198.18.1.1";
const C1: &str = "198.18.1.2";

struct Lab {
    dir: TempDir,
    srv: Netns,
    c1: Netns,
    c2: Netns,
    _int: Netns,
    _procs: Vec<Proc>,
}

/// One stanza: its name, access.conf lines and the postern flags for its keys.
struct Stanza {
    name: &'static str,
    mode: &'static str,
    hmac: Option<&'static str>,
}

const STANZAS: [Stanza; 9] = [
    Stanza {
        name: "cbc",
        mode: "CBC",
        hmac: Some("sha256"),
    },
    Stanza {
        name: "ecb",
        mode: "ECB",
        hmac: Some("md5"),
    },
    Stanza {
        name: "cfb",
        mode: "CFB",
        hmac: Some("sha1"),
    },
    Stanza {
        name: "ofb",
        mode: "OFB",
        hmac: Some("sha384"),
    },
    Stanza {
        name: "ctr",
        mode: "CTR",
        hmac: Some("sha512"),
    },
    Stanza {
        name: "s3a",
        mode: "CBC",
        hmac: Some("sha3_256"),
    },
    Stanza {
        name: "s3b",
        mode: "CBC",
        hmac: Some("sha3_512"),
    },
    Stanza {
        name: "legacy",
        mode: "legacy",
        hmac: None,
    },
    Stanza {
        name: "plain",
        mode: "CBC",
        hmac: None,
    },
];

fn key_flags(name: &str) -> Vec<String> {
    let s = STANZAS.iter().find(|s| s.name == name).unwrap();
    let mut v = vec![
        "--key-rijndael".into(),
        format!("enc-{}", s.name),
        "-M".into(),
        s.mode.to_lowercase(),
    ];
    if let Some(h) = s.hmac {
        v.extend([
            "--key-hmac".into(),
            format!("hmac-{}", s.name),
            "--hmac-digest-type".into(),
            h.into(),
        ]);
    }
    v
}

fn access_conf() -> String {
    let mut out = String::new();
    for s in &STANZAS {
        out.push_str(&format!(
            "SOURCE ANY\nKEY enc-{}\nENCRYPTION_MODE {}\n",
            s.name, s.mode
        ));
        if let Some(h) = s.hmac {
            out.push_str(&format!(
                "HMAC_KEY hmac-{}\nHMAC_DIGEST_TYPE {}\n",
                s.name,
                h.to_uppercase()
            ));
        }
        if s.name == "cbc" {
            out.push_str("ENABLE_CMD_EXEC Y\n");
        }
        out.push('\n');
    }
    out
}

fn write_600(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

impl Lab {
    fn new() -> Lab {
        let dir = TempDir::new("fwknopd");
        let srv = Netns::new("s");
        let c1 = Netns::new("c");
        let c2 = Netns::new("d");
        let int = Netns::new("i");
        link(&srv, SRV, &c1, C1);
        link(&srv, "198.18.2.1", &c2, "198.18.2.2");
        link(&srv, "198.18.3.1", &int, "198.18.3.2");
        c1.run(&["ip", "route", "add", "default", "via", SRV]);
        c2.run(&["ip", "route", "add", "default", "via", "198.18.2.1"]);
        int.run(&["ip", "route", "add", "default", "via", "198.18.3.1"]);
        srv.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        // Default drop, as the SPA recipe wants; only the carriers of the TCP and HTTP
        // transports and the test's address resolver are reachable.
        for rule in [
            "-P INPUT DROP",
            "-P FORWARD DROP",
            "-A INPUT -i lo -j ACCEPT",
            "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            "-A INPUT -p tcp --dport 62201 -j ACCEPT",
            "-A INPUT -p tcp --dport 80 -j ACCEPT",
            "-A INPUT -p tcp --dport 8080 -j ACCEPT",
            "-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
        ] {
            let mut argv = vec!["iptables"];
            argv.extend(rule.split(' '));
            srv.run(&argv);
        }
        let mut procs = Vec::new();
        let ports: Vec<u16> = (10001..=10012)
            .chain([10040, 10050, 10060, 10061, 10062, 80])
            .chain(10070..=10081)
            .collect();
        procs.push(tcp_service(&srv, "0.0.0.0", &ports, &dir.join("svc.log")));
        procs.push(tcp_service(
            &int,
            "198.18.3.2",
            &[2222],
            &dir.join("int.log"),
        ));
        // The -R resolver: answers with c1's address.
        std::fs::create_dir_all(dir.join("www")).unwrap();
        std::fs::write(dir.join("www/myip"), format!("{C1}\n")).unwrap();
        let www = dir.join("www").display().to_string();
        procs.push(srv.spawn(
            &[
                "python3",
                "-u",
                "-m",
                "http.server",
                "--bind",
                SRV,
                "--directory",
                &www,
                "8080",
            ],
            &dir.join("www.log"),
        ));
        write_600(
            &dir.join("fwknopd.conf"),
            "PCAP_FILTER udp port 62201 or tcp port 62201 or tcp port 80 or udp portrange 10000-65535 or icmp\n\
             ENABLE_IPT_FORWARDING Y\nENABLE_IPT_LOCAL_NAT Y\nENABLE_SPA_OVER_HTTP Y\nENABLE_TCP_SERVER Y\n",
        );
        write_600(&dir.join("access.conf"), &access_conf());
        let iface = iface_with(&srv, SRV);
        let p = |n: &str| dir.join(n).display().to_string();
        procs.push(srv.spawn(
            &[
                "fwknopd",
                "-f",
                "-c",
                &p("fwknopd.conf"),
                "-a",
                &p("access.conf"),
                "-d",
                &p("digest.cache"),
                "-p",
                &p("fwknopd.pid"),
                "-r",
                &p("run"),
                "-i",
                &iface,
            ],
            &dir.join("fwknopd.log"),
        ));
        wait_for_line(
            &dir.join("fwknopd.log"),
            "main event loop",
            Duration::from_secs(15),
        );
        wait_for_line(
            &dir.join("www.log"),
            "Serving HTTP",
            Duration::from_secs(10),
        );
        Lab {
            dir,
            srv,
            c1,
            c2,
            _int: int,
            _procs: procs,
        }
    }

    /// Run postern in c1 with these arguments; panics with its stderr on failure.
    fn knock(&self, args: &[String]) {
        let out = self
            .c1
            .cmd(env!("CARGO_BIN_EXE_postern"))
            .args(["--no-save-args", "-D", SRV])
            .args(args)
            .env("HOME", &self.dir.0)
            .env("LOGNAME", "tester")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "postern {args:?} failed: {}\nfwknopd log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// Run a client (`postern` or the real `fwknop`) in c1 with these arguments.
    fn client(&self, program: &str, args: &[String]) {
        let out = self
            .c1
            .cmd(program)
            .args(["--no-save-args", "--no-rc-file", "-D", SRV])
            .args(args)
            .env("HOME", &self.dir.0)
            .env("LOGNAME", "tester")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}\nfwknopd log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("fwknopd.log")).unwrap_or_default()
    }

    fn assert_opens(&self, port: u16, what: &str) {
        assert!(
            self.c1.wait_open(SRV, port, Duration::from_secs(6)),
            "{what}: tcp/{port} did not open\nfwknopd log:\n{}\nrules:\n{}",
            self.log(),
            String::from_utf8_lossy(&self.srv.run(&["iptables", "-S"]).stdout)
        );
    }
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn postern_opens_the_real_fwknopd() {
    if !can_run(
        "postern_opens_the_real_fwknopd",
        &["ip", "iptables", "fwknopd", "python3"],
    ) {
        return;
    }
    let lab = Lab::new();
    let short = Duration::from_millis(700);
    // Closed before any knock.
    assert!(
        !lab.c1.can_connect(SRV, 10001, short),
        "tcp/10001 open before the knock"
    );

    // Every mode, every HMAC type, every digest type; several ports in one request.
    let digests = [
        "sha256", "md5", "sha1", "sha384", "sha512", "sha3_256", "sha3_512", "sha256", "sha1",
    ];
    for (i, (stanza, digest)) in STANZAS.iter().zip(digests).enumerate() {
        let port = 10001 + i as u16 + u16::from(i > 0);
        let access = if i == 0 {
            "tcp/10001,tcp/10002".to_owned()
        } else {
            format!("tcp/{port}")
        };
        let mut a = args(&["-A", &access, "-a", C1, "-m", digest]);
        a.extend(key_flags(stanza.name));
        lab.knock(&a);
        lab.assert_opens(port, &format!("stanza {} digest {digest}", stanza.name));
        if i == 0 {
            lab.assert_opens(10002, "second port of the same request");
        }
    }

    // From that source only: c2 still cannot reach what c1 opened.
    assert!(
        !lab.c2.can_connect("198.18.2.1", 10001, short),
        "c2 reached a port opened for c1"
    );

    // --fw-timeout: open, then closed again by fwknopd after 3 s.
    let mut a = args(&["-A", "tcp/10011", "-a", C1, "-f", "3"]);
    a.extend(key_flags("cbc"));
    lab.knock(&a);
    lab.assert_opens(10011, "--fw-timeout 3");
    assert!(
        lab.c1.wait_closed(SRV, 10011, Duration::from_secs(12)),
        "tcp/10011 still open after its 3 s timeout"
    );

    // -s: the server uses the packet's source address.
    let mut a = args(&["-A", "tcp/10040", "-s"]);
    a.extend(key_flags("cbc"));
    lab.knock(&a);
    lab.assert_opens(10040, "-s");

    // -R with a local resolver.
    let mut a = args(&[
        "-A",
        "tcp/10050",
        "-R",
        "--resolve-url",
        &format!("http://{SRV}:8080/myip"),
    ]);
    a.extend(key_flags("ofb"));
    lab.knock(&a);
    lab.assert_opens(10050, "-R");

    // TCP and HTTP transports.
    let mut a = args(&["-A", "tcp/10060", "-a", C1, "-P", "tcp"]);
    a.extend(key_flags("cbc"));
    lab.knock(&a);
    lab.assert_opens(10060, "-P tcp");
    let mut a = args(&["-A", "tcp/10061", "-a", C1, "-P", "http"]);
    a.extend(key_flags("ctr"));
    lab.knock(&a);
    lab.assert_opens(10061, "-P http");

    // A random destination port and a fixed source port.
    let mut a = args(&["-A", "tcp/10062", "-a", C1, "--rand-port", "-S", "40001"]);
    a.extend(key_flags("cfb"));
    lab.knock(&a);
    lab.assert_opens(10062, "--rand-port -S 40001");

    // NAT access: srv:10030 is forwarded to int:2222.
    assert!(
        !lab.c1.can_connect(SRV, 10030, short),
        "NAT port open before the knock"
    );
    let mut a = args(&[
        "-A",
        "tcp/10030",
        "-a",
        C1,
        "-N",
        "198.18.3.2:2222",
        "-f",
        "60",
    ]);
    a.extend(key_flags("cbc"));
    lab.knock(&a);
    lab.assert_opens(10030, "-N 198.18.3.2:2222");

    // A command message, run by fwknopd as root.
    let marker = lab.dir.join("cmd-ran");
    let mut a = args(&[
        "-C",
        &format!("/usr/bin/touch {}", marker.display()),
        "-a",
        C1,
    ]);
    a.extend(key_flags("cbc"));
    lab.knock(&a);
    let start = std::time::Instant::now();
    while !marker.exists() && start.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(marker.exists(), "--server-cmd did not run\n{}", lab.log());

    // A named stanza from an rc file carries keys and options.
    let rc = lab.dir.join("fwknoprc");
    write_600(
        &rc,
        &format!(
            "[default]\nDIGEST_TYPE sha512\n\n[lab]\nSPA_SERVER {SRV}\nACCESS tcp/10012\nALLOW_IP {C1}\nKEY enc-s3b\nHMAC_KEY hmac-s3b\nHMAC_DIGEST_TYPE sha3_512\n"
        ),
    );
    lab.knock(&args(&[
        "--rc-file",
        &rc.display().to_string(),
        "-n",
        "lab",
    ]));
    lab.assert_opens(10012, "rc stanza [lab]");
}

/// A minimal HTTP proxy in c1 (what `-H` talks to): it takes `GET http://HOST/PATH`,
/// connects to HOST:80 and sends `GET /PATH` with the same headers, as a proxy does.
const PROXY: &str = r#"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(8)
print('ready', flush=True)
while True:
    c, _ = s.accept(); c.settimeout(3); data = b''
    while b'\r\n\r\n' not in data:
        d = c.recv(4096)
        if not d: break
        data += d
    line, rest = data.split(b'\r\n', 1)
    method, url, version = line.split(b' ')
    host, path = url[len(b'http://'):].split(b'/', 1)
    print('proxy', method.decode(), url[:40].decode(), flush=True)
    up = socket.create_connection((host.decode(), 80), timeout=3)
    up.sendall(method + b' /' + path + b' ' + version + b'\r\n' + rest)
    up.close(); c.close()
"#;

/// The raw transports (`-P udpraw|tcpraw|icmp`, `-Q`) and `-H`, postern and the real
/// fwknop client side by side against the real fwknopd: each knock opens its own port.
#[test]
fn raw_transports_spoofed_sources_and_http_proxy_like_fwknop() {
    if !can_run(
        "raw_transports_spoofed_sources_and_http_proxy_like_fwknop",
        &["ip", "iptables", "fwknopd", "fwknop", "python3"],
    ) {
        return;
    }
    let lab = Lab::new();
    let _proxy = lab.c1.spawn(
        &["python3", "-u", "-c", PROXY, "3128"],
        &lab.dir.join("proxy.log"),
    );
    wait_for_line(&lab.dir.join("proxy.log"), "ready", Duration::from_secs(10));
    let cases: [(&str, &[&str]); 6] = [
        ("udpraw", &["-P", "udpraw"]),
        ("tcpraw", &["-P", "tcpraw"]),
        ("icmp", &["-P", "icmp"]),
        (
            "udpraw from a spoofed source",
            &["-P", "udpraw", "-Q", "198.18.9.9", "-S", "40002"],
        ),
        (
            "icmp echo request from a spoofed source",
            &["-P", "icmp", "--icmp-type", "8", "-Q", "198.18.9.10"],
        ),
        ("-H through an HTTP proxy", &["-H", "127.0.0.1:3128"]),
    ];
    let short = Duration::from_millis(700);
    let mut port = 10070u16;
    for (what, extra) in cases {
        for program in ["fwknop", env!("CARGO_BIN_EXE_postern")] {
            assert!(
                !lab.c1.can_connect(SRV, port, short),
                "tcp/{port} open before the knock"
            );
            let mut a = args(&["-A", &format!("tcp/{port}"), "-a", C1]);
            a.extend(args(extra));
            a.extend(key_flags("cbc"));
            lab.client(program, &a);
            let who = if program == "fwknop" {
                "fwknop"
            } else {
                "postern"
            };
            lab.assert_opens(port, &format!("{who} {what}"));
            port += 1;
        }
    }
    let proxied = std::fs::read_to_string(lab.dir.join("proxy.log")).unwrap_or_default();
    assert_eq!(
        proxied.matches(&format!("proxy GET http://{SRV}/")).count(),
        2,
        "both clients went through the proxy: {proxied}"
    );
}
