//! Gateway fleets on a real redis-server (with a password), every end in its own
//! namespace on one switched segment:
//!
//! ```text
//!   client 198.18.40.100, other 198.18.40.101 ─┐
//!   gw a .1, b .2, c .3 (d .4, e .5 later) ────┼── bridge (namespace "sw")
//!   redis .50 ─────────────────────────────────┘
//! ```
//!
//! One replay window (a packet accepted at one gateway is a replay at the others, and
//! the same packet at two gateways at once is granted once), fleet-wide grants (opened
//! everywhere for the knocking source only, closed on time everywhere, caught up by a
//! gateway started late), forged stream messages (nothing opens), and Redis lost: the
//! configured failure mode holds and nothing crashes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use postern_testkit::{sh, tcp_service, wait_for_line, Netns, Proc, TempDir};

use crate::lab::{keys, posternd_bin, ready, strs};

const REDIS: &str = "198.18.40.50";
const CLIENT: &str = "198.18.40.100";
const OTHER: &str = "198.18.40.101";
const PASSWORD: &str = "fleet-test-password";
const FLEET_KEY: &str = "ZmxlZXQta2V5LWZvci10aGUtdGVzdHMtb25seS0wMTIzNDU2Nzg5";

/// Interface numbers, unique within this test process.
static IFACES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

struct Segment {
    sw: Netns,
    n: u32,
}

impl Segment {
    fn new() -> Segment {
        let sw = Netns::new("sw");
        sw.run(&["ip", "link", "add", "br0", "type", "bridge"]);
        sw.run(&["ip", "link", "set", "br0", "up"]);
        Segment { sw, n: 0 }
    }

    /// A namespace on the segment with `addr`.
    fn host(&mut self, tag: &str, addr: &str) -> Netns {
        let ns = Netns::new(tag);
        self.n += 1;
        let n = IFACES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (a, b) = (
            format!("fa{}x{n}", std::process::id() % 100_000),
            format!("fb{}x{n}", std::process::id() % 100_000),
        );
        sh(Command::new("ip").args(["link", "add", &a, "type", "veth", "peer", "name", &b]));
        sh(Command::new("ip").args(["link", "set", &a, "netns", &ns.name]));
        sh(Command::new("ip").args(["link", "set", &b, "netns", &self.sw.name]));
        self.sw
            .run(&["ip", "link", "set", &b, "master", "br0", "up"]);
        ns.run(&["ip", "addr", "add", &format!("{addr}/24"), "dev", &a]);
        ns.run(&["ip", "link", "set", &a, "up"]);
        ns
    }
}

struct Gateway {
    name: &'static str,
    addr: String,
    ns: Netns,
    dir: PathBuf,
    proc: Option<Proc>,
    _svc: Proc,
}

impl Gateway {
    fn new(seg: &mut Segment, root: &Path, name: &'static str, addr: &str, extra: &str) -> Gateway {
        let ns = seg.host(name, addr);
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let private = |p: &Path, text: &str| {
            std::fs::write(p, text).unwrap();
            std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
        };
        private(&dir.join("password"), &format!("{PASSWORD}\n"));
        private(
            &dir.join("fwknopd.conf"),
            &format!(
                "ENABLE_UDP_SERVER Y\nNFT_DEFAULT_DROP Y\nDIGEST_FILE {d}/digest.cache\n\
                 FLEET_REDIS_URL redis://{REDIS}:6379/0\nFLEET_REDIS_PASSWORD_FILE {d}/password\n\
                 FLEET_KEY_BASE64 {FLEET_KEY}\nFLEET_GATEWAY_NAME {name}\nFLEET_REDIS_TIMEOUT_MS 100\n{extra}",
                d = dir.display()
            ),
        );
        // Stanza 1: the replay window only; stanza 2: fleet-wide grants.
        private(
            &dir.join("access.conf"),
            "SOURCE 198.18.40.0/24\nKEY enc-1\nHMAC_KEY hmac-1\nOPEN_PORTS tcp/22\nFW_ACCESS_TIMEOUT 5\n\n\
             SOURCE 198.18.40.0/24\nKEY enc-2\nHMAC_KEY hmac-2\nOPEN_PORTS tcp/23\nFW_ACCESS_TIMEOUT 4\nFLEET_GRANTS Y\n",
        );
        let svc = tcp_service(&ns, "0.0.0.0", &[22, 23, 24], &dir.join("svc.log"));
        Gateway {
            name,
            addr: addr.to_owned(),
            ns,
            dir,
            proc: None,
            _svc: svc,
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            posternd_bin().into(),
            "-f".into(),
            "-c".into(),
            self.dir.join("fwknopd.conf").display().to_string(),
            "-a".into(),
            self.dir.join("access.conf").display().to_string(),
            "-r".into(),
            self.dir.join("run").display().to_string(),
        ]
    }

    fn start(&mut self) {
        let args = self.args();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = self.dir.join("posternd.log");
        let _ = std::fs::remove_file(&log);
        self.proc = Some(self.ns.spawn(&argv, &log));
        wait_for_line(&log, "started (pid", Duration::from_secs(15));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("posternd.log")).unwrap_or_default()
    }

    fn status(&self) -> serde_json::Value {
        let out = self
            .ns
            .cmd(posternd_bin())
            .args(["status", "--json", "-r"])
            .arg(self.dir.join("run"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: status: {}",
            self.name,
            self.log()
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn refused(&self, label: &str) -> u64 {
        self.status()["refused"][label].as_u64().unwrap_or(0)
    }

    fn kill9(&mut self) {
        self.proc.take();
    }
}

/// The packet the real fwknop client builds for these keys and port (sent nowhere).
fn packet(client: &Netns, dir: &Path, enc: &str, hmac: &str, port: u16) -> String {
    let k = keys(enc, hmac);
    let mut a = strs(&k);
    let p = format!("tcp/{port}");
    a.extend([
        "-A",
        p.as_str(),
        "-a",
        CLIENT,
        "-D",
        "198.18.40.1",
        "--test",
    ]);
    let out = client
        .cmd("fwknop")
        .arg("--rc-file")
        .arg(dir.join("fwknoprc"))
        .args(["--no-save-args", "-v"])
        .args(&a)
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Final SPA Data: ").map(str::to_owned))
        .expect("packet")
}

/// Send `payload` to each of `to` (port 62201) from the client, back to back.
fn send(client: &Netns, to: &[&str], payload: &str) {
    let script = "import socket,sys\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor a in sys.argv[2:]:\n s.sendto(sys.argv[1].encode(), (a, 62201))\n";
    let mut c = client.cmd("python3");
    c.args(["-c", script, payload]).args(to);
    sh(&mut c);
}

fn redis(ns: &Netns, dir: &Path) -> Proc {
    let log = dir.join("redis.log");
    let p = ns.spawn(
        &[
            "redis-server",
            "--bind",
            REDIS,
            "--port",
            "6379",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir.display().to_string(),
        ],
        &log,
    );
    wait_for_line(&log, "Ready to accept connections", Duration::from_secs(10));
    p
}

fn until(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lab_ready(name: &str) -> bool {
    ready(name) && postern_testkit::can_run(name, &["redis-server", "redis-cli"])
}

#[test]
fn a_fleet_shares_one_replay_window_and_its_grants() {
    if !lab_ready("a_fleet_shares_one_replay_window_and_its_grants") {
        return;
    }
    let dir = TempDir::new("fleet");
    let mut seg = Segment::new();
    let rns = seg.host("r", REDIS);
    let client = seg.host("c", CLIENT);
    let other = seg.host("o", OTHER);
    let _redis = redis(&rns, &dir.0);
    let mut gws: Vec<Gateway> = [
        ("a", "198.18.40.1"),
        ("b", "198.18.40.2"),
        ("c", "198.18.40.3"),
    ]
    .into_iter()
    .map(|(n, a)| Gateway::new(&mut seg, &dir.0, n, a, ""))
    .collect();
    for g in &mut gws {
        g.start();
    }
    let addr = |i: usize| gws[i].addr.clone();
    let short = Duration::from_millis(300);

    // A packet accepted at a is a replay at b and c, exactly and respelled.
    let p1 = packet(&client, &dir.0, "enc-1", "hmac-1", 22);
    send(&client, &[&addr(0)], &p1);
    assert!(
        client.wait_open(&addr(0), 22, Duration::from_secs(5)),
        "{}",
        gws[0].log()
    );
    send(&client, &[&addr(1), &addr(2)], &p1);
    send(&client, &[&addr(1), &addr(2)], &format!("{p1}="));
    std::thread::sleep(Duration::from_millis(500));
    for g in &gws[1..] {
        assert!(
            !client.can_connect(&g.addr, 22, short),
            "{}: replay opened",
            g.name
        );
        assert_eq!(g.refused("fleet_replay"), 1, "{}: {}", g.name, g.status());
    }
    // The same fresh packet at b and c at the same moment: granted once.
    let p2 = packet(&client, &dir.0, "enc-1", "hmac-1", 22);
    send(&client, &[&addr(1), &addr(2)], &p2);
    std::thread::sleep(Duration::from_millis(600));
    let grants: u64 = gws[1..]
        .iter()
        .map(|g| g.status()["grants"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(grants, 1, "granted {grants} times across b and c");

    // Fleet-wide grants: a knock at a opens tcp/23 on b and c for the client only.
    let p3 = packet(&client, &dir.0, "enc-2", "hmac-2", 23);
    let knocked = Instant::now();
    send(&client, &[&addr(0)], &p3);
    for g in &gws {
        assert!(
            client.wait_open(&g.addr, 23, Duration::from_secs(5)),
            "{} did not open\n{}",
            g.name,
            g.log()
        );
        assert!(
            !other.can_connect(&g.addr, 23, short),
            "{}: open for another source",
            g.name
        );
    }
    let st = gws[1].status();
    let from_a = st["active"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["origin"] == "a" && g["port"] == 23);
    assert!(from_a, "{:?} after the knock: {st}", knocked.elapsed());
    // A gateway started after the knock applies it for what is left.
    let mut d = Gateway::new(&mut seg, &dir.0, "d", "198.18.40.4", "");
    d.start();
    assert!(
        client.wait_open(&d.addr, 23, Duration::from_secs(3)),
        "{}",
        d.log()
    );
    let left = d.status()["active"][0]["seconds_left"].as_u64().unwrap();
    assert!(left <= 4, "d got {left}s, more than what was left");
    // kill -9 of a keeps nothing open past the deadline, anywhere.
    gws[0].kill9();
    let deadline = knocked + Duration::from_millis(6500);
    for g in gws[1..].iter().chain([&d]) {
        assert!(
            client.wait_closed(
                &g.addr,
                23,
                deadline.saturating_duration_since(Instant::now())
            ),
            "{} still open {:?} after the knock",
            g.name,
            knocked.elapsed()
        );
    }
    assert!(knocked.elapsed() < Duration::from_secs(8));
    let h = &gws[1].status()["fleet"];
    assert_eq!(h["connected"], true, "{h}");
    assert_eq!(h["stream_following"], true, "{h}");
    assert!(h["stream_messages"].as_u64().unwrap() >= 1, "{h}");
    assert!(h["stream_lag_ms"].as_u64().unwrap() < 5_000, "{h}");
    assert!(h["redis"].as_str().unwrap().contains(REDIS) && !h.to_string().contains(PASSWORD));
}

#[test]
fn a_fleet_degrades_as_configured_and_opens_nothing_forged() {
    if !lab_ready("a_fleet_degrades_as_configured_and_opens_nothing_forged") {
        return;
    }
    let dir = TempDir::new("fleet2");
    let mut seg = Segment::new();
    let rns = seg.host("r", REDIS);
    let client = seg.host("c", CLIENT);
    let mut redis_proc = Some(redis(&rns, &dir.0));
    let mut b = Gateway::new(
        &mut seg,
        &dir.0,
        "b",
        "198.18.40.2",
        "FLEET_ON_REDIS_DOWN closed\n",
    );
    let mut c = Gateway::new(
        &mut seg,
        &dir.0,
        "c",
        "198.18.40.3",
        "FLEET_ON_REDIS_DOWN local\n",
    );
    b.start();
    c.start();
    let short = Duration::from_millis(300);

    // Messages written into the stream by someone without the fleet key, or expired,
    // or for a port the stanza does not allow: nothing opens.
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let msg = |port: u16, deadline: u64, nonce: &str| {
        format!(
            r#"{{"v":1,"origin":"x","source":"{CLIENT}","ports":["tcp/{port}"],"deadline_ms":{deadline},"stanza":"forged","nonce":"{nonce}"}}"#
        )
    };
    let sign = |text: &str, key_b64: &str| {
        let out = Command::new("python3")
            .args([
                "-c",
                "import hmac,hashlib,base64,sys;print(base64.b64encode(hmac.new(base64.b64decode(sys.argv[1]),sys.argv[2].encode(),hashlib.sha256).digest()).decode())",
                key_b64,
                text,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let wrong_key = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmc=";
    let forged = [
        (msg(23, now_ms() + 60_000, "n1"), wrong_key),
        (msg(23, now_ms() - 1_000, "n2"), FLEET_KEY),
        (msg(24, now_ms() + 60_000, "n3"), FLEET_KEY),
    ];
    // Written straight into the stream, as anyone who can reach Redis could.
    let xadd = |text: &str, key: &str| {
        let sig = sign(text, key);
        rns.run(&[
            "redis-cli",
            "-h",
            REDIS,
            "-a",
            PASSWORD,
            "--no-auth-warning",
            "XADD",
            "postern:grants",
            "*",
            "m",
            text,
            "sig",
            &sig,
        ]);
    };
    for (text, key) in &forged {
        xadd(text, key);
    }
    std::thread::sleep(Duration::from_millis(800));
    for g in [&b, &c] {
        for port in [23, 24] {
            assert!(
                !client.can_connect(&g.addr, port, short),
                "{}: forged grant for {port} opened",
                g.name
            );
        }
        assert_eq!(g.refused("fleet_message"), 2, "{}: {}", g.name, g.status());
        assert_eq!(g.status()["grants"], 0);
    }
    // A genuine message (signed with the fleet key, allowed) does open: the check is not
    // just refusing everything.
    xadd(&msg(23, now_ms() + 4_000, "n4"), FLEET_KEY);
    assert!(
        client.wait_open(&b.addr, 23, Duration::from_secs(3)),
        "{}",
        b.log()
    );

    // Redis killed during a flood of valid knocks: closed refuses, local goes on;
    // neither crashes; once Redis is back, knocks work again at the closed gateway.
    redis_proc.take();
    let before = c.status()["grants"].as_u64().unwrap();
    let mut granted_local = 0;
    for _ in 0..10 {
        let p = packet(&client, &dir.0, "enc-1", "hmac-1", 22);
        send(&client, &[&b.addr], &p);
        let p = packet(&client, &dir.0, "enc-1", "hmac-1", 22);
        send(&client, &[&c.addr], &p);
        granted_local += 1;
    }
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        !client.can_connect(&b.addr, 22, short),
        "closed gateway opened with Redis down"
    );
    assert_eq!(b.refused("fleet_down"), 10, "{}", b.status());
    assert!(
        client.can_connect(&c.addr, 22, short),
        "local gateway refused\n{}",
        c.log()
    );
    assert_eq!(
        c.status()["grants"].as_u64().unwrap() - before,
        granted_local
    );
    assert!(c.log().contains("local replay store ALONE"), "{}", c.log());
    assert!(b.log().contains("new grants are refused"), "{}", b.log());
    assert!(b.proc.as_mut().unwrap().child.try_wait().unwrap().is_none());
    assert!(c.proc.as_mut().unwrap().child.try_wait().unwrap().is_none());
    redis_proc = Some(redis(&rns, &dir.0));
    until(
        "the closed gateway never came back",
        Duration::from_secs(40),
        || {
            let p = packet(&client, &dir.0, "enc-1", "hmac-1", 22);
            send(&client, &[&b.addr], &p);
            client.wait_open(&b.addr, 22, Duration::from_millis(700))
        },
    );
    assert_eq!(b.status()["fleet"]["connected"], true);

    // A wrong password at start: a clear error, nothing started, firewall unchanged.
    let mut e = Gateway::new(&mut seg, &dir.0, "e", "198.18.40.5", "");
    std::fs::write(e.dir.join("password"), "not-the-password\n").unwrap();
    let args = e.args();
    let out = e.ns.cmd(&args[0]).args(&args[1..]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("FLEET_REDIS_PASSWORD_FILE") && err.contains("firewall unchanged"),
        "{err}"
    );
    let rules = e.ns.run(&["nft", "list", "ruleset"]);
    assert!(
        String::from_utf8_lossy(&rules.stdout).trim().is_empty(),
        "firewall touched"
    );
    // Unreachable at start: the configured degraded mode, said loudly.
    redis_proc.take();
    std::fs::write(e.dir.join("password"), format!("{PASSWORD}\n")).unwrap();
    e.start();
    assert!(
        e.log()
            .contains("FLEET_ON_REDIS_DOWN closed (new grants refused)"),
        "{}",
        e.log()
    );
}

/// TLS (`rediss://` with `FLEET_REDIS_CA_FILE`) and an ACL user limited to posternd's
/// keys: the claims go through; a gateway that does not trust the server's certificate
/// is not connected and follows FLEET_ON_REDIS_DOWN.
#[test]
fn a_fleet_speaks_tls_to_redis_as_an_acl_user() {
    let name = "a_fleet_speaks_tls_to_redis_as_an_acl_user";
    if !lab_ready(name) || !postern_testkit::can_run(name, &["openssl"]) {
        return;
    }
    let dir = TempDir::new("fleet3");
    let d = dir.0.clone();
    let ssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&d)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=postern test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    ssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=redis",
        "-keyout",
        "redis.key",
        "-out",
        "redis.csr",
    ]);
    std::fs::write(d.join("san.ext"), format!("subjectAltName=IP:{REDIS}\n")).unwrap();
    ssl(&[
        "x509",
        "-req",
        "-in",
        "redis.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "redis.pem",
    ]);
    ssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=other CA",
        "-keyout",
        "other.key",
        "-out",
        "other.pem",
    ]);
    std::fs::write(
        d.join("redis.conf"),
        format!(
            "bind {REDIS}\nport 0\ntls-port 6380\ntls-cert-file {p}/redis.pem\ntls-key-file {p}/redis.key\n\
             tls-ca-cert-file {p}/ca.pem\ntls-auth-clients no\nsave \"\"\nappendonly no\ndir {p}\n\
             user default off\nuser gw on >{PASSWORD} ~postern:* +@all\n",
            p = d.display()
        ),
    )
    .unwrap();
    let mut seg = Segment::new();
    let rns = seg.host("r", REDIS);
    let client = seg.host("c", CLIENT);
    let log = d.join("redis.log");
    let _redis = rns.spawn(
        &["redis-server", &d.join("redis.conf").display().to_string()],
        &log,
    );
    wait_for_line(&log, "Ready to accept connections", Duration::from_secs(10));
    let tls = |ca: &str| {
        format!(
            "FLEET_REDIS_URL rediss://gw@{REDIS}:6380/0\nFLEET_REDIS_CA_FILE {}/{ca}\n",
            d.display()
        )
    };
    let fix = |g: &Gateway| {
        // Replace the plain URL the helper wrote with the TLS one.
        let p = g.dir.join("fwknopd.conf");
        let text = std::fs::read_to_string(&p).unwrap();
        let text: String = text
            .lines()
            .filter(|l| !l.starts_with("FLEET_REDIS_URL redis://"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&p, text).unwrap();
    };
    let mut a = Gateway::new(&mut seg, &d, "a", "198.18.40.1", &tls("ca.pem"));
    let mut b = Gateway::new(&mut seg, &d, "b", "198.18.40.2", &tls("other.pem"));
    fix(&a);
    fix(&b);
    a.start();
    b.start();
    let p = packet(&client, &d, "enc-1", "hmac-1", 22);
    send(&client, &[&a.addr], &p);
    assert!(
        client.wait_open(&a.addr, 22, Duration::from_secs(5)),
        "{}",
        a.log()
    );
    let h = &a.status()["fleet"];
    assert_eq!(h["connected"], true, "{h}");
    assert_eq!(h["claims_won"], 1, "{h}");
    // The claim is in Redis under posternd's prefix, readable by the ACL user.
    let keys = rns.run(&[
        "redis-cli",
        "--tls",
        "--cacert",
        &d.join("ca.pem").display().to_string(),
        "-h",
        REDIS,
        "-p",
        "6380",
        "--user",
        "gw",
        "--pass",
        PASSWORD,
        "--no-auth-warning",
        "--scan",
        "--pattern",
        "postern:replay:*",
    ]);
    assert_eq!(String::from_utf8_lossy(&keys.stdout).lines().count(), 1);
    // The other gateway does not trust the certificate: not connected, and closed.
    let hb = &b.status()["fleet"];
    assert_eq!(hb["connected"], false, "{hb}");
    let p = packet(&client, &d, "enc-1", "hmac-1", 22);
    send(&client, &[&b.addr], &p);
    std::thread::sleep(Duration::from_millis(600));
    assert!(!client.can_connect(&b.addr, 22, Duration::from_millis(300)));
    assert_eq!(b.refused("fleet_down"), 1, "{}", b.status());
}
