//! Access alerts end to end: the real fwknop client knocks at posternd in namespaces, and
//! the alerts reach real servers on another host (namespace c2, 198.18.2.2): Debian's
//! aiosmtpd as the SMTP relay (plain, STARTTLS with AUTH, SMTPS, with a CA made by
//! openssl), a python3 http.server as the webhook, a sendmail-like program and an argv
//! hook that record what they get. A stuck hook and a flood of grants show that alerts
//! never hold up a decision.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac as _};
use postern_testkit::{have_tool, wait_for_line, Proc};

use crate::lab::{keys, ready, strs, Lab, C1, SRV};

/// The relay and the webhook's host (namespace c2).
const RELAY: &str = "198.18.2.2";
/// Debian's interpreter, which has python3-aiosmtpd (not a pyenv one earlier on PATH).
const PYTHON: &str = "/usr/bin/python3";

/// An SMTP server on aiosmtpd that writes each message, with the envelope, whether TLS
/// was on and who authenticated, to a file in a directory.
const SMTP_SERVER: &str = r#"
import os, ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
host, port, out, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
cert, key, user, pw = (sys.argv[5:] + [None] * 4)[:4]
count = [0]
class Keep:
    async def handle_DATA(self, server, session, envelope):
        count[0] += 1
        p = os.path.join(out, "%04d.eml" % count[0])
        who = session.auth_data.login.decode() if session.authenticated else "-"
        head = "X-Test-Mail-From: %s\r\nX-Test-Rcpt-To: %s\r\nX-Test-Tls: %s\r\nX-Test-Auth: %s\r\n" % (
            envelope.mail_from, ",".join(envelope.rcpt_tos),
            server.transport.get_extra_info("ssl_object") is not None, who)
        with open(p + ".part", "wb") as f:
            f.write(head.encode() + envelope.original_content)
        os.rename(p + ".part", p)
        return "250 OK"
def check(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == user.encode() and data.password == pw.encode()
    return AuthResult(success=ok, auth_data=data if ok else None)
kw = {}
ctx = None
if cert:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
if mode == "starttls":
    kw.update(tls_context=ctx, require_starttls=True)
if mode == "smtps":
    kw.update(ssl_context=ctx)
if user:
    # (aiosmtpd counts only STARTTLS as TLS for AUTH; SMTPS is TLS from the start.)
    kw.update(authenticator=check, auth_require_tls=(mode == "starttls"), auth_required=True)
c = Controller(Keep(), hostname=host, port=port, server_hostname="mail.postern.test", **kw)
c.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

/// A webhook listener: each request's method, path, headers and body to a file.
const HTTP_SERVER: &str = r#"
import http.server, json, os, sys
host, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
count = [0]
class Keep(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        count[0] += 1
        p = os.path.join(out, "%04d.json" % count[0])
        rec = {"method": self.command, "path": self.path,
               "headers": {k.lower(): v for k, v in self.headers.items()},
               "body": body.decode("latin-1")}
        with open(p + ".part", "w") as f:
            json.dump(rec, f)
        os.rename(p + ".part", p)
        self.send_response(204)
        self.end_headers()
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer((host, port), Keep)
print("ready", flush=True)
srv.serve_forever()
"#;

fn executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

fn secret(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

/// A program that writes its arguments, its standard input and its POSTERN_* variables
/// to a new file `<dir>/<n>.<ext>`.
fn recorder(lab: &Lab, name: &str, dir: &Path, ext: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = lab.path(name);
    let d = dir.display();
    executable(
        &p,
        &format!(
            "#!/bin/sh\nf={d}/$(date +%s%N).$$\n{{ echo \"ARGV: $*\"; cat; echo '--- env'; env | grep '^POSTERN_' | sort; }} > \"$f.part\"\nmv \"$f.part\" \"$f.{ext}\"\n"
        ),
    );
    p
}

/// Quoted-printable decoding (a body with long lines comes so): soft breaks and `=XX`.
fn unqp(text: &str) -> String {
    let text = text.replace("=\r\n", "").replace("=\n", "");
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(v) if b[i] == b'=' => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The files `<dir>/*.<ext>`, oldest first (messages decoded).
fn records(dir: &Path, ext: &str) -> Vec<String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    names.retain(|p| p.extension().is_some_and(|e| e == ext));
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .map(|t| {
            if ext == "ev" || ext == "json" {
                t
            } else {
                unqp(&t)
            }
        })
        .collect()
}

/// Wait (at most `secs`) for a record that contains every one of `needles`.
fn await_record(lab: &Lab, dir: &Path, ext: &str, needles: &[&str], secs: u64) -> String {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if let Some(r) = records(dir, ext)
            .into_iter()
            .find(|r| needles.iter().all(|n| r.contains(n)))
        {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "no {ext} record with {needles:?} in {secs}s; have: {:#?}\nlog:\n{}",
        records(dir, ext),
        lab.log()
    );
}

/// Unix time of an RFC 3339 UTC stamp, read by GNU date (not by posternd's code).
fn unix(stamp: &str) -> u64 {
    assert!(
        stamp.len() == 20 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
        "not RFC 3339 UTC: {stamp}"
    );
    let out = Command::new("date")
        .args(["-u", "-d", stamp, "+%s"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The value of a `name: value` line of a message body.
fn field<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no '{name}:' line in {text}"))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

fn knock(lab: &Lab, ports: &str, extra: &[&str]) -> String {
    let k = keys("enc-1", "hmac-1");
    let mut a = strs(&k);
    a.extend(["-A", ports, "-a", C1, "-D", SRV]);
    a.extend(extra);
    lab.fwknop(&lab.c1, &a)
}

fn start_smtp(lab: &Lab, port: u16, out: &Path, mode: &str, extra: &[&str]) -> Proc {
    std::fs::create_dir_all(out).unwrap();
    let script = lab.path("smtpd.py");
    std::fs::write(&script, SMTP_SERVER).unwrap();
    let (s, p, o) = (
        script.display().to_string(),
        port.to_string(),
        out.display().to_string(),
    );
    let mut argv = vec![PYTHON, &s, RELAY, &p, &o, mode];
    argv.extend(extra);
    let log = lab.path(&format!("smtpd-{port}.log"));
    let proc = lab.c2.spawn(&argv, &log);
    wait_for_line(&log, "ready", Duration::from_secs(15));
    proc
}

fn start_http(lab: &Lab, port: u16, out: &Path) -> Proc {
    std::fs::create_dir_all(out).unwrap();
    let script = lab.path("hook-server.py");
    std::fs::write(&script, HTTP_SERVER).unwrap();
    let (s, p, o) = (
        script.display().to_string(),
        port.to_string(),
        out.display().to_string(),
    );
    let log = lab.path("hook-server.log");
    let proc = lab.c2.spawn(&[PYTHON, &s, RELAY, &p, &o], &log);
    wait_for_line(&log, "ready", Duration::from_secs(15));
    proc
}

fn can_run(name: &str) -> bool {
    if !ready(name) || !have_tool("openssl") {
        return false;
    }
    let aiosmtpd = Command::new(PYTHON)
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success());
    if !aiosmtpd {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{name}: needs python3-aiosmtpd (scripts/deps.sh), and CI=true requires it"
        );
        eprintln!("SKIP {name}: needs python3-aiosmtpd");
    }
    aiosmtpd
}

#[test]
fn grant_close_and_replay_alerts_reach_a_real_smtp_relay_a_signed_webhook_and_a_hook() {
    let name = "grant_close_and_replay_alerts_reach_a_real_smtp_relay_a_signed_webhook_and_a_hook";
    if !can_run(name) {
        return;
    }
    let mut lab = Lab::new(&[22]);
    let (mail, hooks, events) = (lab.path("mail"), lab.path("webhook"), lab.path("events"));
    let _smtp = start_smtp(&lab, 2525, &mail, "plain", &[]);
    let _http = start_http(&lab, 8080, &hooks);
    let hook = recorder(&lab, "hook.sh", &events, "ev");
    let key = "k3y-for-the-webhook-0123456789";
    secret(&lab.path("hook.key"), &format!("{key}\n"));
    lab.configure(
        &format!(
            "NFT_DEFAULT_DROP Y\n\
             ALERT_EMAIL_ADDRESSES ops@example.org, second@example.org\n\
             ALERT_EMAIL_FROM posternd@gw.example.org\n\
             ALERT_SMTP_URL smtp://{RELAY}:2525\n\
             ALERT_WEBHOOK_URL http://{RELAY}:8080/hooks/postern?x=1\n\
             ALERT_WEBHOOK_KEY_FILE {}\n\
             ALERT_COMMAND {}\n",
            lab.path("hook.key").display(),
            hook.display()
        ),
        "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\nFW_ACCESS_TIMEOUT 3\n",
    );
    lab.start(&[]);
    // Stanzas are named as in the log: the file's name and the line.
    let stanza = "access.conf:1";
    let host = host_name();

    let knocked = now();
    let packet = knock(&lab, "tcp/22", &[]);
    // The grant is in the firewall at once, whatever the alert senders do.
    let start = Instant::now();
    while !lab.elements().contains(C1) && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        lab.elements().contains(C1),
        "not granted promptly:\n{}",
        lab.log()
    );
    assert!(lab.c1.wait_open(SRV, 22, Duration::from_secs(2)));

    // The grant e-mail at the relay: envelope, headers and a body naming everything.
    let m = await_record(&lab, &mail, "eml", &["access opened"], 10);
    assert!(
        m.contains("X-Test-Rcpt-To: ops@example.org,second@example.org"),
        "{m}"
    );
    assert!(
        m.contains("X-Test-Mail-From: posternd@gw.example.org"),
        "{m}"
    );
    for h in ["From: ", "To: ", "Date: ", "Subject: "] {
        assert!(m.lines().any(|l| l.starts_with(h)), "no {h}header: {m}");
    }
    let unfolded = m.replace("\r\n ", " ");
    assert!(
        unfolded.contains(&format!(
            "Subject: posternd on {host}: access opened for {C1} (tcp/22)"
        )),
        "{m}"
    );
    assert!(field(&m, "event").starts_with("grant"), "{m}");
    assert_eq!(field(&m, "source"), C1);
    assert_eq!(field(&m, "stanza"), stanza);
    assert_eq!(field(&m, "ports"), "tcp/22");
    assert_eq!(field(&m, "host"), host);
    let deadline = unix(field(&m, "deadline"));
    assert!(
        (knocked + 2..=knocked + 5).contains(&deadline),
        "deadline {deadline} for a 3 s grant made at {knocked}"
    );

    // The same packet again: refused, and a replay alert (through the worker).
    lab.send_raw(&lab.c1, SRV, &[&packet]);
    let r = await_record(&lab, &hooks, "json", &["\\\"replay\\\""], 10);
    let rec: serde_json::Value = serde_json::from_str(&r).unwrap();
    let body: serde_json::Value = serde_json::from_str(rec["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["event"], "replay");
    assert_eq!(body["source"], C1);

    // After FW_ACCESS_TIMEOUT the close e-mail.
    let c = await_record(&lab, &mail, "eml", &["access closed"], 10);
    assert!(field(&c, "event").starts_with("close"), "{c}");
    assert_eq!(field(&c, "source"), C1);
    assert_eq!(field(&c, "stanza"), stanza);
    assert_eq!(field(&c, "ports"), "tcp/22");
    let closed = unix(field(&c, "deadline"));
    assert!(
        closed.abs_diff(deadline) <= 1,
        "closed at {closed}, deadline {deadline}"
    );
    assert!(lab.c1.wait_closed(SRV, 22, Duration::from_secs(3)));

    // Every webhook request is a JSON POST whose signature verifies under the key file.
    let reqs: Vec<serde_json::Value> = records(&hooks, "json")
        .iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect();
    let kinds: Vec<String> = reqs
        .iter()
        .map(|r| {
            assert_eq!(r["method"], "POST");
            assert_eq!(r["path"], "/hooks/postern?x=1");
            assert_eq!(r["headers"]["content-type"], "application/json");
            let body = r["body"].as_str().unwrap();
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
            mac.update(body.as_bytes());
            let hex: String = mac
                .finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(r["headers"]["x-postern-signature"], format!("sha256={hex}"));
            let b: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(r["headers"]["x-postern-event"], b["event"]);
            b["event"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(kinds, ["grant", "replay", "close"], "{reqs:#?}");
    let grant: serde_json::Value = serde_json::from_str(reqs[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(grant["source"], C1);
    assert_eq!(grant["stanza"], stanza);
    assert_eq!(grant["ports"], serde_json::json!(["tcp/22"]));
    assert_eq!(unix(grant["deadline"].as_str().unwrap()), deadline);
    assert_eq!(grant["host"], host.as_str());

    // The argv hook: the event as JSON on stdin and as POSTERN_* variables, no arguments.
    let ev = await_record(&lab, &events, "ev", &["POSTERN_EVENT=close"], 5);
    assert!(ev.starts_with("ARGV: \n{"), "{ev}");
    let g = await_record(&lab, &events, "ev", &["POSTERN_EVENT=grant"], 5);
    for line in [
        format!("POSTERN_SOURCE={C1}"),
        format!("POSTERN_STANZA={stanza}"),
        "POSTERN_PORTS=tcp/22".into(),
        format!("POSTERN_HOST={host}"),
    ] {
        assert!(g.lines().any(|l| l == line), "no {line}: {g}");
    }
    let d = g
        .lines()
        .find_map(|l| l.strip_prefix("POSTERN_DEADLINE="))
        .unwrap();
    assert_eq!(unix(d), deadline);

    let start = Instant::now();
    let mut st = lab.status();
    while st["alerts"]["sent"] != 9 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
        st = lab.status();
    }
    let a = &st["alerts"];
    assert_eq!(a["failed"], 0, "{st}");
    assert_eq!(a["dropped"], 0, "{st}");
    assert_eq!(a["sent"], 9, "3 alerts to 3 sinks: {st}");
    assert_eq!(a["sinks"].as_array().unwrap().len(), 3, "{st}");
    lab.stop();
}

/// A CA and a certificate for mail.postern.test, made with openssl.
fn make_certs(lab: &Lab) -> (String, String, String) {
    let d = |n: &str| lab.path(n).display().to_string();
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &d("ca.key"),
        "-out",
        &d("ca.pem"),
        "-days",
        "2",
        "-subj",
        "/CN=postern test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &d("mail.key"),
        "-out",
        &d("mail.csr"),
        "-subj",
        "/CN=mail.postern.test",
    ]);
    std::fs::write(
        lab.path("mail.ext"),
        "subjectAltName=DNS:mail.postern.test\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &d("mail.csr"),
        "-CA",
        &d("ca.pem"),
        "-CAkey",
        &d("ca.key"),
        "-CAcreateserial",
        "-out",
        &d("mail.pem"),
        "-days",
        "2",
        "-extfile",
        &d("mail.ext"),
    ]);
    (d("ca.pem"), d("mail.pem"), d("mail.key"))
}

/// Reload with a new fwknopd.conf, and wait for the worker that reads it (packets sent
/// while the worker is replaced may be lost).
fn reload(lab: &Lab, server_conf: &str) {
    let workers = || lab.log().matches("worker started").count();
    let before = workers();
    secret(&lab.path("fwknopd.conf"), server_conf);
    let out = lab.run_posternd(&["-R"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("configuration reloaded"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let start = Instant::now();
    while workers() == before && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(workers() > before, "no new worker:\n{}", lab.log());
}

#[test]
fn sendmail_starttls_with_auth_smtps_faults_and_failures() {
    let name = "sendmail_starttls_with_auth_smtps_faults_and_failures";
    if !can_run(name) {
        return;
    }
    let mut lab = Lab::new(&[22]);
    let (ca, cert, key) = make_certs(&lab);
    let (tls_mail, smtps_mail, sent) = (
        lab.path("tls-mail"),
        lab.path("smtps-mail"),
        lab.path("sendmail"),
    );
    let creds = ["alerts", "pa:ss w0rd"];
    let _starttls = start_smtp(
        &lab,
        2587,
        &tls_mail,
        "starttls",
        &[&cert, &key, creds[0], creds[1]],
    );
    let _smtps = start_smtp(
        &lab,
        2465,
        &smtps_mail,
        "smtps",
        &[&cert, &key, creds[0], creds[1]],
    );
    lab.srv
        .set_hosts(&format!("127.0.0.1 localhost\n{RELAY} mail.postern.test\n"));
    let sendmail = recorder(&lab, "sendmail.sh", &sent, "mail");
    let auth = lab.path("smtp-auth");
    secret(&auth, &format!("{}\n{}\n", creds[0], creds[1]));
    // A firewall that can be made to refuse (as in the faults tests).
    let (flag, nft) = (lab.path("nft-fails"), lab.path("nft-wrapper"));
    executable(
        &nft,
        &format!("#!/bin/sh\nif [ -e {} ]; then echo 'Error: simulated netlink failure' >&2; exit 1; fi\nexec nft \"$@\"\n", flag.display()),
    );
    let base = format!(
        "NFT_EXE {}\nNFT_GRANTS nft\nEMAIL_ADDRESSES root@localhost ops@example.org\n",
        nft.display()
    );
    lab.configure(
        &format!("{base}ALERT_SENDMAIL_CMD {} -t -i\n", sendmail.display()),
        "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\nFW_ACCESS_TIMEOUT 30\n",
    );
    lab.start(&[]);

    // 1. The local sendmail interface: argv as written, the message on stdin.
    knock(&lab, "tcp/22", &[]);
    let m = await_record(&lab, &sent, "mail", &["access opened"], 10);
    assert!(m.starts_with("ARGV: -t -i\n"), "{m}");
    for h in ["From: posternd@", "To: ", "Date: ", "Subject: posternd on "] {
        assert!(m.lines().any(|l| l.starts_with(h)), "no {h}: {m}");
    }
    assert!(
        m.contains("root@localhost") && m.contains("ops@example.org"),
        "{m}"
    );
    assert_eq!(field(&m, "source"), C1);
    assert!(
        !m.contains('\r'),
        "the local interface takes LF lines: {m:?}"
    );

    // 2. A refusing firewall: a fault alert, then rate-limited (one a minute).
    std::fs::write(&flag, "").unwrap();
    knock(&lab, "tcp/22", &[]);
    let f = await_record(&lab, &sent, "mail", &["firewall fault"], 10);
    assert!(
        field(&f, "detail").contains("simulated netlink failure"),
        "{f}"
    );
    knock(&lab, "tcp/22", &[]);
    let start = Instant::now();
    while lab.status()["alerts"]["suppressed"] == 0 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        lab.status()["alerts"]["suppressed"].as_u64() >= Some(1),
        "{}",
        lab.status()
    );
    assert_eq!(
        records(&sent, "mail")
            .iter()
            .filter(|m| m.contains("firewall fault"))
            .count(),
        1
    );
    std::fs::remove_file(&flag).unwrap();

    // 3. A relay that requires STARTTLS and AUTH, its certificate checked against the CA.
    let relay = |url: &str, ca: Option<&str>| {
        let mut s = format!(
            "{base}ALERT_SMTP_URL {url}\nALERT_SMTP_AUTH_FILE {}\n",
            auth.display()
        );
        if let Some(ca) = ca {
            s.push_str(&format!("ALERT_SMTP_CA_FILE {ca}\n"));
        }
        s
    };
    reload(
        &lab,
        &relay("smtp+starttls://mail.postern.test:2587", Some(&ca)),
    );
    knock(&lab, "tcp/22", &[]);
    let m = await_record(&lab, &tls_mail, "eml", &["access opened"], 10);
    assert!(
        m.contains("X-Test-Tls: True") && m.contains("X-Test-Auth: alerts"),
        "{m}"
    );
    assert_eq!(field(&m, "source"), C1);

    // 4. SMTPS (TLS from the first byte).
    reload(&lab, &relay("smtps://mail.postern.test:2465", Some(&ca)));
    knock(&lab, "tcp/22", &[]);
    let m = await_record(&lab, &smtps_mail, "eml", &["access opened"], 10);
    assert!(
        m.contains("X-Test-Tls: True") && m.contains("X-Test-Auth: alerts"),
        "{m}"
    );

    // 5. Without the CA file the system roots do not know this CA: the delivery fails,
    //    is counted and logged as one line without debug text; nothing else is slowed.
    reload(&lab, &relay("smtp+starttls://mail.postern.test:2587", None));
    let before = records(&tls_mail, "eml").len();
    knock(&lab, "tcp/22", &[]);
    let start = Instant::now();
    while lab.status()["alerts"]["failed"] == 0 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = lab.status();
    assert_eq!(st["alerts"]["failed"], 1, "{st}");
    assert_eq!(
        records(&tls_mail, "eml").len(),
        before,
        "sent to an unverified server"
    );
    let log = lab.log();
    let line = log
        .lines()
        .find(|l| l.contains("alert (grant) e-mail to"))
        .unwrap_or_else(|| panic!("no failure line:\n{log}"));
    assert!(
        line.contains("via smtp+starttls://mail.postern.test:2587: "),
        "{line}"
    );
    assert!(line.to_lowercase().contains("certificate"), "{line}");
    for debug in ["Error {", "Some(", "kind:", "Kind::"] {
        assert!(!line.contains(debug), "debug text in: {line}");
    }
    assert!(!log.contains(creds[1]), "the password reached the log");
    lab.stop();
}

#[test]
fn a_stuck_sink_never_slows_decisions_and_a_full_queue_drops_and_counts() {
    let name = "a_stuck_sink_never_slows_decisions_and_a_full_queue_drops_and_counts";
    if !can_run(name) {
        return;
    }
    let mut lab = Lab::new(&[22]);
    let stuck = lab.path("stuck.sh");
    executable(&stuck, "#!/bin/sh\nsleep 60\n");
    lab.configure(
        &format!("ALERT_COMMAND {}\nALERT_TIMEOUT 60\n", stuck.display()),
        "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\nFW_ACCESS_TIMEOUT 60\n",
    );
    lab.start(&[]);
    // 300 distinct packets from the real client (built, not sent), then sent at once.
    let k = keys("enc-1", "hmac-1");
    let n = 300;
    let packets: Vec<String> = (0..n)
        .map(|_| {
            let mut a = strs(&k);
            a.extend(["-A", "tcp/22", "-a", C1, "-D", SRV, "-T"]);
            lab.fwknop(&lab.c1, &a)
        })
        .collect();
    let refs: Vec<&str> = packets.iter().map(String::as_str).collect();
    let sent = Instant::now();
    lab.send_raw(&lab.c1, SRV, &refs);
    let mut st = lab.status();
    while st["grants"].as_u64() < Some(n) && sent.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
        st = lab.status();
    }
    let took = sent.elapsed();
    assert_eq!(st["grants"], n, "{st}");
    assert!(
        took < Duration::from_secs(5),
        "{n} grants took {took:?} with a stuck sink"
    );
    let a = &st["alerts"];
    let (queued, dropped) = (
        a["queued"].as_u64().unwrap(),
        a["dropped"].as_u64().unwrap(),
    );
    assert!(queued <= 256, "{st}");
    assert!(dropped >= n - 257, "{st}");
    assert!(
        (n - 1..=n).contains(&(queued + dropped)),
        "one with the sender at most: {st}"
    );
    assert!(
        lab.log().contains("the alert queue is full (256 waiting)"),
        "{}",
        lab.log()
    );
    // A new opening is still made at once, the queue full and the sink stuck.
    let start = Instant::now();
    knock(&lab, "tcp/2222", &[]);
    let opened = format!("{C1} . tcp . 2222 ");
    while !lab.elements().contains(&opened) && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        lab.elements().contains(&opened),
        "not granted within 2 s:\n{}\n{}",
        lab.elements(),
        lab.log()
    );
    // At exit the stuck command is killed with its group: nothing is left behind.
    lab.stop();
    let left = Command::new("pgrep")
        .args(["-f", &stuck.display().to_string()])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "left running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
