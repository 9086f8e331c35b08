//! The knocking client as a user meets it: every misuse gets one clear line naming the
//! flag; `-T` output decodes; rc files, `--save-rc-stanza`, keygen, `-B`, `-l`,
//! `--stdin`, `--get-key`, NAT and time-offset options do what fwknop's do.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output, Stdio};

use postern_testkit::TempDir;

fn postern(home: &TempDir) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_postern"));
    c.env("HOME", &home.0)
        .env("LOGNAME", "tester")
        .env_remove("SPOOF_USER")
        .stdin(Stdio::null());
    c
}

fn run(home: &TempDir, args: &[&str]) -> Output {
    postern(home).args(args).output().unwrap()
}

fn ok(home: &TempDir, args: &[&str]) -> String {
    let out = run(home, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Parse the `-T` dump into label → value.
fn fields(dump: &str) -> HashMap<String, String> {
    dump.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .collect()
}

fn one_error_line(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "exit code");
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "exactly one line: {err:?}");
    err.trim_end().to_owned()
}

const BASE: [&str; 9] = [
    "--no-rc-file",
    "--no-save-args",
    "-T",
    "-D",
    "198.18.0.1",
    "-a",
    "198.18.0.2",
    "--key-rijndael",
    "k",
];

#[test]
fn misuse_gets_one_line_naming_the_flag() {
    let home = TempDir::new("cli-err");
    let long_cmd = "x".repeat(150);
    let long_key = "k".repeat(33);
    let rc = home.join("rc");
    std::fs::write(&rc, "[default]\nACCESS tcp/22\n").unwrap();
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let rc = rc.display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["-A", "icmp/1"], "postern: -A/--access: unknown protocol 'icmp' in 'icmp/1' (expected tcp or udp, in lower case)"),
        (vec!["-A", "TCP/22"], "postern: -A/--access: unknown protocol 'TCP' in 'TCP/22' (expected tcp or udp, in lower case)"),
        (vec!["-A", "tcp/65536"], "postern: -A/--access: port '65536' in 'tcp/65536' is out of range (1-65535)"),
        (vec!["-A", "tcp/0"], "postern: -A/--access: port '0' in 'tcp/0' is out of range (1-65535)"),
        (vec!["-A", "tcp22"], "postern: -A/--access: 'tcp22' is not proto/port (e.g. tcp/22)"),
        (vec![], "postern: -A/--access is required: the ports to open, e.g. -A tcp/22"),
        (vec!["-A", "tcp/22", "-a", "1.2.3"], "postern: -a/--allow-ip: '1.2.3' is not an IP address (or 'source'/'resolve' in the rc file)"),
        (vec!["-A", "tcp/22", "--key-hmac", "k"], "postern: the HMAC key (--key-hmac) must differ from the encryption key (--key-rijndael)"),
        (vec!["-A", "tcp/22", "-M", "pcbc"], "postern: -M/--encryption-mode: encryption mode pcbc is not supported (fwknop never implemented it correctly)"),
        (vec!["-A", "tcp/22", "-M", "xts"], "postern: -M/--encryption-mode: unknown encryption mode (expected cbc, ecb, cfb, ofb, ctr or legacy)"),
        (vec!["-A", "tcp/22", "-m", "sha999"], "postern: -m/--digest-type: unknown digest type (expected md5, sha1, sha256, sha384, sha512, sha3_256 or sha3_512)"),
        (vec!["-A", "tcp/22", "-M", "legacy", "--key-hmac", "h"], "postern: -M/--encryption-mode: legacy mode cannot be used with HMAC (remove the HMAC key or choose another mode)"),
        (vec!["-A", "tcp/22", "-Q", "198.18.0.9"], "postern: -Q/--spoof-source needs -P udpraw, tcpraw or icmp"),
        (vec!["-A", "tcp/22", "-P", "sctp"], "postern: -P/--server-proto: unknown protocol 'sctp' (expected udp, tcp, http, udpraw, tcpraw or icmp)"),
        (vec!["-A", "tcp/22", "-H", "proxy:99999"], "postern: -H/--http-proxy: 'proxy:99999' is not HOST or HOST:PORT"),
        (vec!["-A", "tcp/22", "--fd", "x"], "postern: --fd: 'x' is not a file descriptor number"),
        (vec!["-A", "tcp/22", "--key-len", "0"], "postern: --key-len: 0 is out of range (1-32)"),
        (vec!["-A", "tcp/22", "--time-offset-minus", "5seconds"], "postern: --time-offset-minus: '-5seconds' is not a time offset (N, Nm, Nh or Nd; also sec, min, hours, days)"),
        (vec!["-A", "tcp/22", "-p", "0"], "postern: -p/--server-port: '0' is not a port (1-65535)"),
        (vec!["-A", "tcp/22", "-f", "70000"], "postern: -f/--fw-timeout: '70000' is not a timeout in seconds (0-65536)"),
        (vec!["-A", "tcp/22", "-N", "10.0.0.5"], "postern: -N/--nat-access: '10.0.0.5' is not HOST:PORT (bad nat access: expected host,port)"),
        (vec!["-A", "tcp/22", "--nat-port", "2222"], "postern: --nat-port/--nat-rand-port need -N/--nat-access or --nat-local"),
        (vec!["-A", "tcp/22", "-U", "bad:user"], "postern: -U/--spoof-user: username contains a forbidden character"),
        (vec!["-A", "tcp/22", "--time-offset-plus", "5y"], "postern: --time-offset-plus: '5y' is not a time offset (N, Nm, Nh or Nd; also sec, min, hours, days)"),
        (vec!["-C", &long_cmd, "--key-hmac", "h", "--hmac-digest-type", "sha512", "-m", "sha512"], "postern: the SPA packet would be 567 characters; fwknop servers cannot decode Rijndael packets of 400 or more: shorten -A/-C/-N, or use a shorter -m/--digest-type or --hmac-digest-type"),
        (vec!["-A", "tcp/22", "--use-hmac"], "postern: --use-hmac: HMAC is requested but no HMAC key is configured: add --key-hmac KEY, --key-base64-hmac B64 or --get-hmac-key FILE (or --stdin/--fd)"),
        (vec!["-A", "tcp/22", "--hmac-digest-type", "sha1"], "postern: --hmac-digest-type: HMAC is requested but no HMAC key is configured: add --key-hmac KEY, --key-base64-hmac B64 or --get-hmac-key FILE (or --stdin/--fd)"),
        (vec!["-A", "tcp/22", "--save-rc-stanza"], "postern: --save-rc-stanza cannot be used with --no-rc-file"),
        (vec!["-A", "tcp/22", "--bogus"], "postern: unexpected argument '--bogus' found (see postern --help)"),
    ];
    for (extra, want) in cases {
        let mut args: Vec<&str> = BASE.to_vec();
        args.extend(&extra);
        assert_eq!(one_error_line(&run(&home, &args)), want, "{extra:?}");
    }
    // Cases that need other bases.
    let no_allow = [
        "--no-rc-file",
        "--no-save-args",
        "-D",
        "h",
        "-A",
        "tcp/22",
        "--key-rijndael",
        "k",
    ];
    assert_eq!(
        one_error_line(&run(&home, &no_allow)),
        "postern: an allow address is required: add -a/--allow-ip ADDRESS, -s/--source-ip or -R/--resolve-ip-https"
    );
    let no_dest = [
        "--no-rc-file",
        "--no-save-args",
        "-a",
        "1.2.3.4",
        "-A",
        "tcp/22",
        "--key-rijndael",
        "k",
    ];
    assert_eq!(
        one_error_line(&run(&home, &no_dest)),
        "postern: -D/--destination is required: the SPA server to knock on"
    );
    let long = [
        "--no-rc-file",
        "--no-save-args",
        "-T",
        "-a",
        "1.2.3.4",
        "-A",
        "tcp/22",
        "--key-rijndael",
        &long_key,
    ];
    assert_eq!(
        one_error_line(&run(&home, &long)),
        "postern: --key-rijndael: the encryption key is 33 bytes; Rijndael keys must be 1 to 32 bytes"
    );
    let bad_b64 = [
        "--no-rc-file",
        "--no-save-args",
        "-T",
        "-a",
        "1.2.3.4",
        "-A",
        "tcp/22",
        "--key-base64-rijndael",
        "!!!",
    ];
    assert_eq!(
        one_error_line(&run(&home, &bad_b64)),
        "postern: --key-base64-rijndael: key is not valid base64"
    );
    let missing = ["--rc-file", &rc, "-n", "nope", "-T"];
    assert_eq!(
        one_error_line(&run(&home, &missing)),
        format!("postern: -n/--named-config: no stanza [nope] in {rc}")
    );
    // An rc value is named by file, line and variable.
    std::fs::write(
        home.join("rc"),
        "[default]\nACCESS tcp/22\nSPA_SERVER_PORT 99999\n",
    )
    .unwrap();
    let from_rc = [
        "--rc-file",
        &rc,
        "-T",
        "-a",
        "1.2.3.4",
        "--key-rijndael",
        "k",
        "--no-save-args",
    ];
    assert_eq!(
        one_error_line(&run(&home, &from_rc)),
        format!("postern: {rc}:3: SPA_SERVER_PORT: '99999' is not a port (1-65535)")
    );
    // --stdin with --use-hmac needs two lines.
    let mut child = postern(&home)
        .args([
            "--no-rc-file",
            "--no-save-args",
            "-T",
            "-a",
            "1.2.3.4",
            "-A",
            "tcp/22",
            "--stdin",
            "--use-hmac",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"only-one-line\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        one_error_line(&out),
        "postern: --stdin: no HMAC key on line 2 of standard input"
    );
}

/// `postern decode` of a -T packet must give back what -T printed.
fn decode(home: &TempDir, packet: &str, keys: &[&str]) -> serde_json::Value {
    let mut args = vec!["decode"];
    args.extend(keys);
    args.push(packet);
    serde_json::from_str(&ok(home, &args)).unwrap()
}

#[test]
fn test_mode_prints_every_field_and_a_packet_that_decodes() {
    let home = TempDir::new("cli-t");
    let out = ok(
        &home,
        &[
            "--no-rc-file",
            "--no-save-args",
            "-T",
            "-A",
            "tcp/22,udp/53",
            "-a",
            "198.18.0.2",
            "-D",
            "198.18.0.1",
            "--key-rijndael",
            "enc",
            "--key-hmac",
            "mac",
            "--hmac-digest-type",
            "sha384",
            "-m",
            "sha1",
            "-M",
            "ofb",
            "-f",
            "45",
            "-U",
            "alice",
        ],
    );
    let f = fields(&out);
    for label in [
        "Random Value",
        "Username",
        "Timestamp",
        "FKO Version",
        "Message Type",
        "Message String",
        "Nat Access",
        "Server Auth",
        "Client Timeout",
        "Digest Type",
        "HMAC Type",
        "Encryption Type",
        "Encryption Mode",
        "Encoded Data",
        "SPA Data Digest",
        "HMAC",
        "Final SPA Data",
    ] {
        assert!(f.contains_key(label), "missing {label} in {out}");
    }
    assert_eq!(f["Message Type"], "3 (Client timeout access msg)");
    assert_eq!(f["Digest Type"], "2 (SHA1)");
    assert_eq!(f["HMAC Type"], "4 (SHA384)");
    assert_eq!(f["Encryption Mode"], "5 (OFB)");
    assert!(out.contains("not sent"));
    let d = decode(
        &home,
        &f["Final SPA Data"],
        &[
            "--key-rijndael",
            "enc",
            "--key-hmac",
            "mac",
            "--hmac-digest-type",
            "sha384",
            "-M",
            "ofb",
        ],
    );
    assert_eq!(d["message"], "198.18.0.2,tcp/22,udp/53");
    assert_eq!(d["username"], "alice");
    assert_eq!(d["client_timeout"], 45);
    assert_eq!(d["random_value"], f["Random Value"].as_str());
    // Default username comes from LOGNAME, like fwknop.
    let out = ok(
        &home,
        &BASE
            .iter()
            .copied()
            .chain(["-A", "tcp/22"])
            .collect::<Vec<_>>(),
    );
    assert_eq!(fields(&out)["Username"], "tester");
}

#[test]
fn nat_time_offset_and_ipv6_options() {
    let home = TempDir::new("cli-nat");
    let base = [
        "--no-rc-file",
        "--no-save-args",
        "-T",
        "--key-rijndael",
        "k",
        "-a",
        "10.1.2.3",
    ];
    let t = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend(extra);
        fields(&ok(&home, &a))
    };
    // The spec's example: --nat-local --nat-port 55000.
    let f = t(&[
        "-A",
        "tcp/22",
        "--nat-local",
        "--nat-port",
        "55000",
        "-D",
        "127.0.0.1",
    ]);
    assert_eq!(f["Message String"], "10.1.2.3,tcp/55000");
    assert_eq!(f["Nat Access"], "127.0.0.1,22");
    assert_eq!(f["Message Type"], "5 (Local NAT access msg)");
    let f = t(&[
        "-A",
        "tcp/22",
        "-N",
        "192.168.10.20:2222",
        "-f",
        "30",
        "-D",
        "h",
    ]);
    assert_eq!(f["Nat Access"], "192.168.10.20,2222");
    assert_eq!(f["Message Type"], "4 (Client timeout NAT access msg)");
    let f = t(&["-A", "tcp/22", "--fw-timeout", "0", "-D", "h"]);
    assert_eq!(f["Message Type"], "1 (Access msg)");
    let f = t(&["-C", "uptime", "-f", "30", "-D", "h"]);
    assert_eq!(f["Message Type"], "0 (Command msg)");
    assert_eq!(f["Client Timeout"], "0");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ts = |f: &HashMap<String, String>| f["Timestamp"].parse::<i64>().unwrap();
    assert!(
        (ts(&t(&[
            "-A",
            "tcp/22",
            "--time-offset-minus",
            "1h",
            "-D",
            "h"
        ])) - (now - 3600))
            .abs()
            < 60
    );
    assert!(
        (ts(&t(&["-A", "tcp/22", "--time-offset-plus", "2m", "-D", "h"])) - (now + 120)).abs() < 60
    );
    // IPv6 allow addresses are carried (postern's daemon only).
    let mut a = base.to_vec();
    a.splice(6.., ["2001:db8::7", "-A", "udp/53", "-D", "2001:db8::1"]);
    assert_eq!(
        fields(&ok(&home, &a))["Message String"],
        "2001:db8::7,udp/53"
    );
}

#[test]
fn keygen_prints_fwknop_lines() {
    let home = TempDir::new("cli-kg");
    for args in [
        vec!["--key-gen"],
        vec!["keygen"],
        vec!["-k", "--hmac-digest-type", "sha3_256"],
    ] {
        let out = ok(&home, &args);
        let mut lines = out.lines();
        let k = lines
            .next()
            .unwrap()
            .strip_prefix("KEY_BASE64: ")
            .expect("KEY_BASE64 line");
        let h = lines
            .next()
            .unwrap()
            .strip_prefix("HMAC_KEY_BASE64: ")
            .expect("HMAC_KEY_BASE64 line");
        assert_eq!(postern_len(k), 32, "{args:?}");
        assert_eq!(postern_len(h), 64, "{args:?}");
    }
    let out = ok(
        &home,
        &["--key-gen", "--key-len", "16", "--hmac-key-len", "100"],
    );
    let v: Vec<&str> = out.lines().map(|l| l.split_once(": ").unwrap().1).collect();
    assert_eq!((postern_len(v[0]), postern_len(v[1])), (16, 100));
    let file = home.join("keys");
    ok(&home, &["--key-gen-file", file.to_str().unwrap()]);
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .starts_with("KEY_BASE64: "));
    assert_eq!(
        one_error_line(&run(&home, &["--key-gen", "--key-len", "33"])),
        "postern: --key-len: 33 is out of range (1-32)"
    );
}

fn postern_len(b64: &str) -> usize {
    postern_proto::Key::from_base64(b64).unwrap().len()
}

const DOC_RC: &str = "\
# ~/.fwknoprc as in fwknop's documentation
[default]
DIGEST_TYPE         sha256
SPA_SERVER_PROTO    udp

[myssh]
SPA_SERVER          198.18.0.1
ACCESS              tcp/22
ALLOW_IP            198.18.0.2
KEY_BASE64          wzNP62oPPgEc+kXDPQLHPOayQBuNbYUTPP+QrErNDmg=
HMAC_KEY_BASE64     Yhu4VfZyWpcyh0nV8TJxSYPeNbbO0/AVSBhtSWu/jYMxxSpyzZn/I2B3aCyzKPlVK+WwZyH3bIxG+e5zBWy9ag==
USE_HMAC            Y
FW_TIMEOUT          30
";

#[test]
fn rc_file_stanzas_and_permissions() {
    let home = TempDir::new("cli-rc");
    let rc = home.join(".fwknoprc");
    std::fs::write(&rc, DOC_RC).unwrap();
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Default location: $HOME/.fwknoprc.
    let out = postern(&home)
        .args(["-n", "myssh", "-T", "--no-save-args"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "no warning for a 0600 file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = fields(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(f["Message String"], "198.18.0.2,tcp/22");
    assert_eq!(f["Client Timeout"], "30");
    assert_eq!(f["HMAC Type"], "3 (SHA256)");
    let keys = [
        "--key-base64-rijndael",
        "wzNP62oPPgEc+kXDPQLHPOayQBuNbYUTPP+QrErNDmg=",
        "--key-base64-hmac",
        "Yhu4VfZyWpcyh0nV8TJxSYPeNbbO0/AVSBhtSWu/jYMxxSpyzZn/I2B3aCyzKPlVK+WwZyH3bIxG+e5zBWy9ag==",
    ];
    assert_eq!(
        decode(&home, &f["Final SPA Data"], &keys)["message"],
        "198.18.0.2,tcp/22"
    );
    // Flags override the stanza.
    let f = fields(&ok(
        &home,
        &[
            "-n",
            "myssh",
            "-T",
            "--no-save-args",
            "-A",
            "udp/53",
            "-f",
            "0",
        ],
    ));
    assert_eq!(f["Message String"], "198.18.0.2,udp/53");
    assert_eq!(f["Message Type"], "1 (Access msg)");
    // Group/other access is warned about, with the chmod to run.
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = postern(&home)
        .args(["-n", "myssh", "-T", "--no-save-args"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("mode 0644") && err.contains(&format!("chmod 600 {}", rc.display())),
        "{err}"
    );
    // --stanza-list, in fwknop's words ([default] is not listed).
    assert_eq!(
        ok(&home, &["--stanza-list"]).trim(),
        format!(
            "The following stanzas are configured in {} :\n - myssh",
            rc.display()
        )
    );
}

#[test]
fn save_rc_stanza_round_trip() {
    let home = TempDir::new("cli-save");
    let rc = home.join(".fwknoprc");
    std::fs::write(&rc, DOC_RC).unwrap();
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let save = [
        "--save-rc-stanza",
        "-n",
        "web",
        "-T",
        "--no-save-args",
        "-A",
        "tcp/443",
        "-a",
        "198.18.0.9",
        "-D",
        "198.18.0.1",
        "--key-rijndael",
        "pass phrase; with #",
        "--key-hmac",
        "hmackey",
        "-m",
        "sha512",
    ];
    let first = fields(&ok(&home, &save));
    let text = std::fs::read_to_string(&rc).unwrap();
    assert!(
        text.starts_with(DOC_RC),
        "existing stanzas and comments kept:\n{text}"
    );
    assert!(
        text.contains(&format!(
            "{:<24}    {}",
            "KEY_BASE64", "cGFzcyBwaHJhc2U7IHdpdGggIw=="
        )),
        "{text}"
    );
    assert!(text.contains(&format!("{:<24}    tcp/443", "ACCESS")));
    // Using the saved stanza gives the same request.
    let again = fields(&ok(&home, &["-n", "web", "-T", "--no-save-args"]));
    assert_eq!(again["Message String"], first["Message String"]);
    assert_eq!(again["Digest Type"], "5 (SHA512)");
    let keys = [
        "--key-rijndael",
        "pass phrase; with #",
        "--key-hmac",
        "hmackey",
    ];
    assert_eq!(
        decode(&home, &again["Final SPA Data"], &keys)["message"],
        "198.18.0.9,tcp/443"
    );
    // Keys are not replaced without --force-stanza when no answer comes on stdin.
    let replace = [
        "--save-rc-stanza",
        "-n",
        "web",
        "-T",
        "--no-save-args",
        "--key-rijndael",
        "other",
    ];
    let err = one_error_line(&run(&home, &replace));
    assert_eq!(err, format!("postern: --save-rc-stanza: stanza [web] in {} already has keys; add --force-stanza to replace them", rc.display()));
    let mut forced = replace.to_vec();
    forced.push("--force-stanza");
    // As in fwknop, a save run reads [default] and the flags, not the stanza it saves:
    // this one has no allow address, so it saves and then refuses to knock.
    assert_eq!(
        one_error_line(&run(&home, &forced)),
        "postern: an allow address is required: add -a/--allow-ip ADDRESS, -s/--source-ip or -R/--resolve-ip-https"
    );
    let text = std::fs::read_to_string(&rc).unwrap();
    assert!(
        text.contains(&format!("{:<24}    other", "KEY"))
            && !text.contains("KEY_BASE64                  cGFz"),
        "{text}"
    );
    assert!(
        !text.contains(&format!("{:<24}    tcp/443", "ACCESS")),
        "as in fwknop, the stanza is replaced by what the command line gives: {text}"
    );
    assert!(
        text.ends_with(&format!(
            "[web]\n{:<24}    other\n{:<24}    Y\n",
            "KEY", "NO_SAVE_ARGS"
        )),
        "{text}"
    );
    assert!(text.starts_with(DOC_RC));
    assert_eq!(
        std::fs::metadata(&rc).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn save_packet_last_cmd_stdin_and_key_file() {
    let home = TempDir::new("cli-misc");
    let pkt = home.join("packet");
    let p = pkt.to_str().unwrap();
    let common = [
        "--no-rc-file",
        "-T",
        "-A",
        "tcp/22",
        "-a",
        "198.18.0.2",
        "-D",
        "srv.example",
    ];
    let mut a = common.to_vec();
    a.extend(["--key-rijndael", "k", "-B", p]);
    let f = fields(&ok(&home, &a));
    assert_eq!(
        std::fs::read_to_string(&pkt).unwrap(),
        format!("{}\n", f["Final SPA Data"])
    );
    let mut a2 = a.clone();
    a2.push("-b");
    let f2 = fields(&ok(&home, &a2));
    assert_eq!(
        std::fs::read_to_string(&pkt).unwrap(),
        format!("{}\n{}\n", f["Final SPA Data"], f2["Final SPA Data"])
    );

    // -l repeats the saved arguments (saved to ~/.fwknop.run by the run above).
    let saved = home.join(".fwknop.run");
    assert_eq!(
        std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(ok(&home, &["--show-last"]).contains("-A tcp/22"));
    let f3 = fields(&ok(&home, &["-l"]));
    assert_eq!(f3["Message String"], "198.18.0.2,tcp/22");
    assert_ne!(f3["Random Value"], f["Random Value"]);

    // --stdin: encryption key then HMAC key.
    let mut a = common.to_vec();
    a.extend(["--no-save-args", "--stdin", "--use-hmac"]);
    let mut child = postern(&home)
        .args(&a)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from-stdin\nhmac-from-stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let f = fields(&String::from_utf8(out.stdout).unwrap());
    let d = decode(
        &home,
        &f["Final SPA Data"],
        &[
            "--key-rijndael",
            "from-stdin",
            "--key-hmac",
            "hmac-from-stdin",
        ],
    );
    assert_eq!(d["message"], "198.18.0.2,tcp/22");

    // --get-key: the line for our server.
    let kf = home.join("keys");
    std::fs::write(&kf, "# keys\nother.example: nope\nsrv.example: file-key\n").unwrap();
    let mut a = common.to_vec();
    a.extend(["--no-save-args", "--get-key", kf.to_str().unwrap()]);
    let f = fields(&ok(&home, &a));
    assert_eq!(
        decode(&home, &f["Final SPA Data"], &["--key-rijndael", "file-key"])["message"],
        "198.18.0.2,tcp/22"
    );
}

/// With no key configured, postern asks on the terminal with echo off, as fwknop does.
#[test]
fn prompts_for_the_key_with_echo_off() {
    let home = TempDir::new("cli-tty");
    let script = r#"
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execve(sys.argv[1], sys.argv[1:], dict(os.environ))
buf = b''
while b'Enter encryption key' not in buf:
    d = os.read(fd, 1024)
    if not d:
        break
    buf += d
import termios, time
deadline = time.time() + 3
while time.time() < deadline and termios.tcgetattr(fd)[3] & termios.ECHO:
    time.sleep(0.01)
os.write(fd, b'typed-secret\n')
out = b''
while True:
    try:
        d = os.read(fd, 4096)
    except OSError:
        break
    if not d:
        break
    out += d
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(buf + out)
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let out = Command::new("python3")
        .args(["-c", script, env!("CARGO_BIN_EXE_postern")])
        .args([
            "--no-rc-file",
            "--no-save-args",
            "-T",
            "-A",
            "tcp/22",
            "-a",
            "198.18.0.2",
            "-D",
            "198.18.0.1",
        ])
        .env("HOME", &home.0)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Enter encryption key: "), "{text}");
    assert!(!text.contains("typed-secret"), "the key was echoed: {text}");
    let f = fields(&text);
    assert_eq!(
        decode(
            &home,
            &f["Final SPA Data"],
            &["--key-rijndael", "typed-secret"]
        )["message"],
        "198.18.0.2,tcp/22"
    );
}

/// The committed man pages and completions are generated from the flag definitions and
/// must match what the binaries generate now.
#[test]
fn committed_man_pages_and_completions_are_current() {
    let home = TempDir::new("cli-gen");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let check = |generated: Vec<u8>, file: &str| {
        let committed = std::fs::read(root.join(file)).unwrap();
        assert!(
            generated == committed,
            "{file} is out of date: regenerate it (see README, 'Man pages')"
        );
    };
    check(
        postern(&home)
            .args(["generate", "man"])
            .output()
            .unwrap()
            .stdout,
        "doc/man/postern.1",
    );
    for sh in ["bash", "zsh", "fish"] {
        check(
            postern(&home)
                .args(["generate", sh])
                .output()
                .unwrap()
                .stdout,
            &format!("dist/completions/postern.{sh}"),
        );
    }
    let posternd = std::path::Path::new(env!("CARGO_BIN_EXE_postern")).with_file_name("posternd");
    if posternd.exists() {
        check(
            Command::new(posternd)
                .arg("--generate-man")
                .output()
                .unwrap()
                .stdout,
            "doc/man/posternd.8",
        );
    }
}
