//! postern and the real fwknop 2.6.10 client side by side: the same command line, rc
//! file and standard input, each in a fresh `$HOME`, `-T` so nothing is sent. Each row
//! is one behaviour; both programs must agree on the outcome (exit status), on the SPA
//! fields (both packets decoded with `postern decode` and the row's keys), and, for
//! `--save-rc-stanza`, on the rc file written (compared without comment and blank
//! lines, which postern keeps and fwknop drops; byte for byte when there was no file).
//!
//! The rc files, keys and inputs are our own, written from `man fwknop` and from what
//! the installed fwknop does. Needs `fwknop` (skips without it, fails under CI=true).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};

use postern_testkit::TempDir;
use serde_json::Value;

/// What a row compares besides the exit status.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Compare {
    /// Nothing else (refusals; runs without a packet).
    Outcome,
    /// The decoded SPA fields.
    Packet,
    /// The rc file after the run (and the packet, if the row has keys).
    Rc,
    /// The rc file, with generated keys replaced by their length.
    RcKeysMasked,
    /// Standard output, with `$HOME` replaced.
    Stdout,
}

struct Row {
    /// The behaviour.
    name: &'static str,
    /// `~/.fwknoprc` before the run (mode 0600), if any.
    rc: Option<&'static str>,
    /// Arguments; `$HOME` is replaced by the run's home directory, `$LONGPATH` by a
    /// path of 1119 bytes, `$LONGARG` by 1000 characters, `$A<n>` by n characters.
    args: &'static [&'static str],
    /// Standard input.
    stdin: &'static [u8],
    /// What file descriptor 3 reads (a file in `$HOME`).
    fd3: &'static [u8],
    /// `postern decode` key flags for the packets (empty: no packet expected).
    keys: &'static [&'static str],
    compare: Compare,
}

const fn row(name: &'static str, args: &'static [&'static str]) -> Row {
    Row {
        name,
        rc: None,
        args,
        stdin: b"",
        fd3: b"",
        keys: &[],
        compare: Compare::Outcome,
    }
}

impl Row {
    const fn rc(mut self, rc: &'static str) -> Row {
        self.rc = Some(rc);
        self
    }
    const fn stdin(mut self, s: &'static [u8]) -> Row {
        self.stdin = s;
        self
    }
    const fn fd3(mut self, s: &'static [u8]) -> Row {
        self.fd3 = s;
        self
    }
    const fn packet(mut self, keys: &'static [&'static str]) -> Row {
        self.keys = keys;
        self.compare = Compare::Packet;
        self
    }
    const fn saved(mut self) -> Row {
        self.compare = Compare::Rc;
        self
    }
    const fn saved_keys_masked(mut self) -> Row {
        self.compare = Compare::RcKeysMasked;
        self
    }
    const fn stdout(mut self) -> Row {
        self.compare = Compare::Stdout;
        self
    }
}

/// One program's run.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    rc: Option<String>,
    rc_existed: bool,
    packet: Option<String>,
}

fn run(program: &str, r: &Row, tag: &str) -> Run {
    let home = TempDir::new(tag);
    let h = home.0.display().to_string();
    let rc_path = home.join(".fwknoprc");
    if let Some(text) = r.rc {
        std::fs::write(&rc_path, text).unwrap();
        std::fs::set_permissions(&rc_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::write(home.join("fd3"), r.fd3).unwrap();
    let long_path = format!("/tmp/{}run", format!("{}/", "a".repeat(100)).repeat(11));
    let args: Vec<String> = r
        .args
        .iter()
        .map(|a| {
            a.replace("$HOME", &h)
                .replace("$LONGPATH", &long_path)
                .replace("$LONGARG", &"a".repeat(1000))
        })
        .map(|a| match a.strip_prefix("$A").map(str::parse::<usize>) {
            Some(Ok(n)) => "a".repeat(n),
            _ => a,
        })
        .collect();
    // No controlling terminal (fwknop would prompt on it), a time limit (fwknop
    // loops on a closed standard input when it asks about keys), fd 3 from a file.
    let mut cmd = Command::new("setsid");
    cmd.args([
        "--wait",
        "timeout",
        "20",
        "sh",
        "-c",
        "exec \"$@\" 3<\"$HOME/fd3\"",
        "sh",
        program,
    ])
    .args(&args)
    .current_dir(&home.0)
    .env("HOME", &home.0)
    .env("LOGNAME", "tester")
    .env_remove("SPOOF_USER")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(r.stdin);
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).replace(&h, "$HOME");
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&h, "$HOME");
    let packet = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Final SPA Data: "))
        .map(str::to_owned);
    Run {
        code: out.status.code(),
        rc: std::fs::read_to_string(&rc_path)
            .ok()
            .map(|t| t.replace(&h, "$HOME")),
        rc_existed: r.rc.is_some(),
        stdout,
        stderr,
        packet,
    }
}

/// The decoded fields that must agree (the random value, salt and time differ).
fn decoded(packet: &str, keys: &[&str]) -> Result<BTreeMap<String, Value>, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_postern"))
        .arg("decode")
        .args(keys)
        .arg(packet)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut m: BTreeMap<String, Value> = serde_json::from_value(v).unwrap();
    m.remove("random_value");
    let ts = m.remove("timestamp").and_then(|t| t.as_i64()).unwrap_or(0);
    // Round to a minute window: both are made within seconds of each other.
    m.insert("timestamp/60".into(), Value::from((ts + 30) / 60));
    Ok(m)
}

/// The rc file without comments and blank lines; generated keys as their length.
fn normalised(rc: &str, mask: bool) -> Vec<String> {
    rc.lines()
        .filter(|l| {
            let t = l.trim_start();
            !t.is_empty() && !t.starts_with('#') && !t.starts_with(';')
        })
        .map(|l| {
            let (var, value) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            if mask && (var == "KEY_BASE64" || var == "HMAC_KEY_BASE64") {
                let len = postern_proto::Key::from_base64(value.trim()).unwrap().len();
                format!("{var} <{len} bytes>")
            } else {
                l.to_owned()
            }
        })
        .collect()
}

fn check(r: &Row) -> Result<(), String> {
    let fw = run("fwknop", r, "fwk");
    let po = run(env!("CARGO_BIN_EXE_postern"), r, "pst");
    let both = || {
        format!(
            "\n  fwknop  exit {:?}\n    stdout: {}\n    stderr: {}\n  postern exit {:?}\n    stdout: {}\n    stderr: {}",
            fw.code,
            fw.stdout.trim_end().replace('\n', "\n            "),
            fw.stderr.trim_end(),
            po.code,
            po.stdout.trim_end().replace('\n', "\n            "),
            po.stderr.trim_end()
        )
    };
    if fw.code == Some(124) {
        return Err(format!("fwknop timed out{}", both()));
    }
    if fw.code != po.code {
        return Err(format!("exit status differs{}", both()));
    }
    if po.code != Some(0) {
        // Refused: one line, from postern, naming what to fix.
        let lines: Vec<&str> = po.stderr.lines().collect();
        if lines.len() != 1 || !lines[0].starts_with("postern: ") || !po.stdout.is_empty() {
            return Err(format!("postern's refusal is not one line{}", both()));
        }
    }
    if !r.keys.is_empty() {
        let (Some(pf), Some(pp)) = (&fw.packet, &po.packet) else {
            return Err(format!("no packet{}", both()));
        };
        let f = decoded(pf, r.keys).map_err(|e| format!("fwknop's packet: {e}{}", both()))?;
        let p = decoded(pp, r.keys).map_err(|e| format!("postern's packet: {e}{}", both()))?;
        if f != p {
            return Err(format!(
                "decoded fields differ\n  fwknop:  {f:?}\n  postern: {p:?}"
            ));
        }
    }
    match r.compare {
        Compare::Rc | Compare::RcKeysMasked => {
            let mask = r.compare == Compare::RcKeysMasked;
            let (f, p) = (
                fw.rc.clone().unwrap_or_default(),
                po.rc.clone().unwrap_or_default(),
            );
            // Without a file before, fwknop starts from its template, whose comments
            // vanish on saving: the result must then match byte for byte.
            let same = if !fw.rc_existed && !mask {
                f == p
            } else {
                normalised(&f, mask) == normalised(&p, mask)
            };
            if !same {
                return Err(format!(
                    "rc files differ\n--- fwknop\n{f}--- postern\n{p}---{}",
                    both()
                ));
            }
        }
        Compare::Stdout => {
            if fw.stdout.trim() != po.stdout.trim() {
                return Err(format!("stdout differs{}", both()));
            }
        }
        Compare::Outcome | Compare::Packet => {}
    }
    Ok(())
}

const T: &str = "-T";

macro_rules! base {
    ($($a:expr),* $(,)?) => {
        &["-T", "--no-save-args", "-D", "198.18.0.1", "-A", "tcp/22", $($a),*]
    };
}

const K: &[&str] = &["--key-rijndael", "enc"];
const KH: &[&str] = &["--key-rijndael", "enc", "--key-hmac", "mac"];

const PASTED: &str = "\
[default]
VERBOSE: N

[pasted]
SPA_SERVER: 198.18.0.1
ACCESS: tcp/22
ALLOW_IP: 198.18.0.2
KEY_BASE64: ZW5jLWtleS1mcm9tLWtleWdlbi0zMi1ieXRlcyEhISE=
HMAC_KEY_BASE64: aG1hYy1rZXktZnJvbS1rZXlnZW4tZm9yLXRoZS10ZXN0LW9mLXBhc3RlZC1saW5lcyEhISEhISEhISEhISEhIQ==
USE_HMAC: Y
";
const PASTED_KEYS: &[&str] = &[
    "--key-base64-rijndael",
    "ZW5jLWtleS1mcm9tLWtleWdlbi0zMi1ieXRlcyEhISE=",
    "--key-base64-hmac",
    "aG1hYy1rZXktZnJvbS1rZXlnZW4tZm9yLXRoZS10ZXN0LW9mLXBhc3RlZC1saW5lcyEhISEhISEhISEhISEhIQ==",
];

const EXISTING: &str = "\
# my fwknop client settings
[default]
DIGEST_TYPE sha256

[web]
ACCESS tcp/443
SPA_SERVER_PORT 999
KEY_BASE64: ZW5jLWtleQ==
HMAC_KEY hmac-key
# end of web

[ssh]
ACCESS tcp/22
";

const ROWS: &[Row] = &[
    // ── rc lines written `NAME: value` ──────────────────────────────────────────
    row("a --key-gen stanza pasted with colons", &["-n", "pasted", T, "--no-save-args"])
        .rc(PASTED)
        .packet(PASTED_KEYS),
    row("colon lines in [default] apply too", base!["-n", "x"])
        .rc("[default]\nSPA_SERVER_PORT: 5\nALLOW_IP:\t198.18.0.3\nKEY: enc\n[x]\nFW_TIMEOUT: 45\n")
        .packet(K),
    row("a doubled colon is an unknown variable", base!["-a", "198.18.0.2", "--key-rijndael", "enc"])
        .rc("[default]\nSPA_SERVER_PORT:: 5\n"),
    row("a colon without a space leaves no value", base!["-a", "198.18.0.2", "--key-rijndael", "enc"])
        .rc("[default]\nSPA_SERVER_PORT:5\n"),
    row("--save-rc-stanza asks about a pasted `KEY_BASE64:` line", &[
        "--save-rc-stanza", "-n", "web", T, "--no-save-args", "-D", "198.18.0.1", "-a",
        "198.18.0.2", "-A", "tcp/8443", "--key-rijndael", "enc",
    ])
    .rc(EXISTING)
    .stdin(b"n\ny\n")
    .saved(),
    // ── --fd and --stdin ────────────────────────────────────────────────────────
    row("--fd 0: a carriage return is part of the key", base!["-a", "198.18.0.2", "--fd", "0"])
        .stdin(b"enc\r\n")
        .packet(&["--key-rijndael", "enc\r"]),
    row("--fd 0: spaces, # and ; are part of the key", base!["-a", "198.18.0.2", "--fd", "0"])
        .stdin(b"a b#c;d\n")
        .packet(&["--key-rijndael", "a b#c;d"]),
    row("--fd 0: only the first line", base!["-a", "198.18.0.2", "--fd", "0"])
        .stdin(b"enc\nsecond\n")
        .packet(K),
    row("--fd 0: a NUL byte ends the key", base!["-a", "198.18.0.2", "--fd", "0"])
        .stdin(b"enc\0rest\n")
        .packet(K),
    row("--fd 0: no final newline", base!["-a", "198.18.0.2", "--fd", "0"])
        .stdin(b"enc")
        .packet(K),
    row("--fd 3: the key from another descriptor", base!["-a", "198.18.0.2", "--fd", "3"])
        .fd3(b"enc\n")
        .packet(K),
    row("--fd 0: the HMAC key when the encryption key is given", base![
        "-a", "198.18.0.2", "--key-rijndael", "enc", "--use-hmac", "--fd", "0",
    ])
    .stdin(b"mac\r\n")
    .packet(&["--key-rijndael", "enc", "--key-hmac", "mac\r"]),
    row("--fd 3: the HMAC key, cut at 127 bytes", base![
        "-a", "198.18.0.2", "--key-rijndael", "enc", "--hmac-digest-type", "sha512", "--fd", "3",
    ])
    .fd3(b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdefXYZ\n")
    .packet(&[
        "--key-rijndael", "enc", "--hmac-digest-type", "sha512", "--key-hmac",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde",
    ]),
    row("--stdin reads like --fd 0", base!["-a", "198.18.0.2", "--stdin"])
        .stdin(b"enc\r\n")
        .packet(&["--key-rijndael", "enc\r"]),
    row("--fd of a closed descriptor is refused", base!["-a", "198.18.0.2", "--fd", "9"]),
    row("--fd -1 is refused", base!["-a", "198.18.0.2", "--fd=-1"]),
    // ── --save-rc-stanza / --force-stanza: what is written ───────────────────────
    row("--save-rc-stanza with --test, no rc file yet", &[
        "--save-rc-stanza", "-n", "s1", T, "-D", "198.18.0.1", "-a", "198.18.0.2", "-A",
        "tcp/22", "--key-rijndael", "enc", "--no-save-args",
    ])
    .packet(K)
    .saved(),
    row("--save-rc-stanza --key-gen saves the generated keys", &[
        "--save-rc-stanza", "-n", "s1", "--key-gen", "-D", "198.18.0.1", "-A", "tcp/22", "-a",
        "198.18.0.2", "--use-hmac", "-v",
    ])
    .saved_keys_masked(),
    row("--save-rc-stanza --key-gen with lengths and an HMAC type", &[
        "--save-rc-stanza", "-n", "s1", "--key-gen", "--key-len", "16", "--hmac-key-len", "20",
        "--hmac-digest-type", "sha1", "-D", "198.18.0.1",
    ])
    .saved_keys_masked(),
    row("--save-rc-stanza --key-gen keeps a given passphrase too", &[
        "--save-rc-stanza", "-n", "s1", "--key-gen", "--key-rijndael", "enc", "-D", "198.18.0.1",
    ])
    .saved_keys_masked(),
    row("--save-rc-stanza --key-gen -K writes both", &[
        "--save-rc-stanza", "-n", "s1", "--key-gen", "-K", "$HOME/keys", "-D", "198.18.0.1",
    ])
    .saved_keys_masked(),
    row("TIME_OFFSET is saved in seconds", &[
        "--save-rc-stanza", "-n", "s1", T, "-D", "198.18.0.1", "-a", "198.18.0.2", "-A",
        "tcp/22", "--key-rijndael", "enc", "--time-offset-plus", "1M",
    ])
    .packet(K)
    .saved(),
    row("a minus offset is saved negative", &[
        "--save-rc-stanza", "-n", "s1", T, "-D", "198.18.0.1", "-a", "198.18.0.2", "-A",
        "tcp/22", "--key-rijndael", "enc", "--time-offset-minus", "2days",
    ])
    .packet(K)
    .saved(),
    row("VERBOSE counts repeated -v", &[
        "--save-rc-stanza", "-n", "s1", T, "-D", "198.18.0.1", "-a", "198.18.0.2", "-A",
        "tcp/22", "--key-rijndael", "enc", "-vvv",
    ])
    .saved(),
    row("SPA_SERVER_PROTO, ports and names in fwknop's spelling", &[
        "--save-rc-stanza", "-n", "s1", T, "-D", "198.18.0.1", "-a", "198.18.0.2", "-A",
        "tcp/22", "--key-rijndael", "enc", "-P", "TCP", "-p", "080", "-S", "4444", "-f", "030",
        "-m", "sha3_256", "-M", "ctr", "--hmac-digest-type", "sha384", "--key-hmac", "mac",
        "-U", "bob", "-r", "-N", "10.0.0.5:22", "-u", "agent/1",
    ])
    .saved(),
    row("-a then -s: the packet and ALLOW_IP say 0.0.0.0", &[
        "--save-rc-stanza", "-n", "s1", T, "-D", "198.18.0.1", "-A", "tcp/22",
        "--key-rijndael", "enc", "-a", "198.18.0.2", "-s",
    ])
    .packet(K)
    .saved(),
    row("-s then -a: the address wins", &[
        "--save-rc-stanza", "-n", "s1", T, "-D", "198.18.0.1", "-A", "tcp/22",
        "--key-rijndael", "enc", "-s", "-a", "198.18.0.2",
    ])
    .packet(K)
    .saved(),
    row("-a with -R: the address, and RESOLVE_IP_HTTPS N", &[
        "--save-rc-stanza", "-n", "s1", T, "-D", "198.18.0.1", "-A", "tcp/22",
        "--key-rijndael", "enc", "-R", "-a", "198.18.0.2",
    ])
    .packet(K)
    .saved(),
    row("--get-key is saved as a path, not read", &[
        "--save-rc-stanza", "-n", "s1", T, "-D", "198.18.0.1", "-A", "tcp/22", "-a",
        "198.18.0.2", "-G", "$HOME/no-such-key-file", "--get-hmac-key", "$HOME/no-such-file",
    ])
    .saved(),
    row("-s, -C, -B, -b and --server-resolve-ipv4 are not saved", &[
        "--save-rc-stanza", "-n", "s1", T, "-D", "198.18.0.1", "--key-rijndael", "enc", "-s",
        "-C", "uptime", "-B", "$HOME/pkt", "-b", "--server-resolve-ipv4",
    ])
    .packet(K)
    .saved(),
    row("--force-stanza replaces the stanza, other stanzas stay", &[
        "--save-rc-stanza", "--force-stanza", "-n", "web", T, "-D", "198.18.0.1", "-a",
        "198.18.0.2", "-A", "tcp/8443", "--key-rijndael", "enc", "--no-save-args",
    ])
    .rc(EXISTING)
    .packet(K)
    .saved(),
    row("answers y: the old key goes, the new one is written", &[
        "--save-rc-stanza", "-n", "web", T, "-D", "198.18.0.1", "-a", "198.18.0.2", "-A",
        "tcp/8443", "--key-rijndael", "enc",
    ])
    .rc(EXISTING)
    .stdin(b"y\ny\n")
    .saved(),
    row("a new stanza is appended", &[
        "--save-rc-stanza", "-n", "new", T, "-D", "198.18.0.1", "-a", "198.18.0.2", "-A",
        "tcp/1", "--key-rijndael", "enc",
    ])
    .rc(EXISTING)
    .saved(),
    row("without -n the stanza is named after -D", &[
        "--save-rc-stanza", T, "-D", "srv.example", "-a", "198.18.0.2", "-A", "tcp/22",
        "--key-rijndael", "enc",
    ])
    .saved(),
    row("without -n and -D, [default]'s SPA_SERVER names it", &[
        "--save-rc-stanza", T, "-a", "198.18.0.2", "-A", "tcp/22", "--key-rijndael", "enc",
    ])
    .rc("[default]\nSPA_SERVER 198.18.0.1\n")
    .saved(),
    row("-n without -D is fine with --test", &[
        "--save-rc-stanza", "-n", "s1", T, "-a", "198.18.0.2", "-A", "tcp/22", "--key-rijndael",
        "enc",
    ])
    .saved(),
    row("the save run reads [default], not the stanza it saves", &[
        "--save-rc-stanza", "--force-stanza", "-n", "web", T, "-D", "198.18.0.1", "-a",
        "198.18.0.2", "-A", "tcp/22", "--key-rijndael", "enc",
    ])
    .rc("[default]\nSPOOF_USER from-default\n[web]\nSPOOF_USER from-web\n")
    .packet(K)
    .saved(),
    // ── rc values fwknop accepts ────────────────────────────────────────────────
    row("VERBOSE 2", base!["-a", "198.18.0.2", "--key-rijndael", "enc"])
        .rc("[default]\nVERBOSE 2\n")
        .packet(K),
    row("RESOLVE_IP_HTTP N keeps the ALLOW_IP before it", base!["--key-rijndael", "enc"])
        .rc("[default]\nALLOW_IP 198.18.0.2\nRESOLVE_IP_HTTP N\n")
        .packet(K),
    row("RESOLVE_IP_HTTPS N in the named stanza is a no-op too", base!["-n", "x", "--key-rijndael", "enc"])
        .rc("[default]\nALLOW_IP 198.18.0.2\n[x]\nRESOLVE_IP_HTTPS N\n")
        .packet(K),
    row("an rc address beats -R", base!["-R", "--key-rijndael", "enc"])
        .rc("[default]\nALLOW_IP 198.18.0.4\n")
        .packet(K),
    row("KEY_BASE64 with one, two or three `=`", base!["-a", "198.18.0.2"])
        .rc("[default]\nKEY_BASE64 ZW5j===\nHMAC_KEY_BASE64 bWFj=\n")
        .packet(KH),
    row("KEY_BASE64 decoding stops at `=`", base!["-a", "198.18.0.2"])
        .rc("[default]\nKEY_BASE64 ZW5j=QUJD\n")
        .packet(K),
    row("a base64 key that needs no padding", base!["-a", "198.18.0.2", "--key-base64-rijndael", "ZW5jb"])
        .packet(&["--key-rijndael", "enc"]),
    row("HMAC_KEY_FILE is not read without HMAC", base!["-a", "198.18.0.2", "--key-rijndael", "enc"])
        .rc("[default]\nHMAC_KEY_FILE /nonexistent/hmac-keys\n")
        .packet(K),
    row("HMAC_DIGEST_TYPE in the rc file alone does not turn HMAC on", base!["-a", "198.18.0.2", "--key-rijndael", "enc"])
        .rc("[default]\nHMAC_DIGEST_TYPE sha1\n")
        .packet(K),
    row("a long --spoof-user is cut to 29 bytes", base![
        "-a", "198.18.0.2", "--key-rijndael", "enc", "-U", "a-user-name-of-forty-characters-long-xx",
    ])
    .packet(K),
    row("a long SPOOF_USER is cut too", base!["-a", "198.18.0.2", "--key-rijndael", "enc"])
        .rc("[default]\nSPOOF_USER a-user-name-of-forty-characters-long-xx\n")
        .packet(K),
    row("an empty --spoof-user leaves the login name", base!["-a", "198.18.0.2", "--key-rijndael", "enc", "-U", ""])
        .packet(K),
    row("--server-resolve-ipv4 in a save run", &[
        "--save-rc-stanza", "-n", "s1", T, "-D", "localhost", "-a", "198.18.0.2", "-A",
        "tcp/22", "--key-rijndael", "enc", "--server-resolve-ipv4",
    ])
    .packet(K)
    .saved(),
    row("-s in a save run", &[
        "--save-rc-stanza", "-n", "s1", T, "-D", "198.18.0.1", "-A", "tcp/22",
        "--key-rijndael", "enc", "-s",
    ])
    .packet(K)
    .saved(),
    row("-B and -b in a save run", &[
        "--save-rc-stanza", "-n", "s1", T, "-D", "198.18.0.1", "-a", "198.18.0.2", "-A",
        "tcp/22", "--key-rijndael", "enc", "-B", "$HOME/pkt", "-b",
    ])
    .packet(K)
    .saved(),
    row("-b without -B", base!["-a", "198.18.0.2", "--key-rijndael", "enc", "-b"]).packet(K),
    row("the man page's offsets: 60sec", base!["-a", "198.18.0.2", "--key-rijndael", "enc", "--time-offset-plus", "60sec"])
        .packet(K),
    row("the man page's offsets: 60min", base!["-a", "198.18.0.2", "--key-rijndael", "enc", "--time-offset-plus", "60min"])
        .packet(K),
    row("the man page's offsets: 2days", base!["-a", "198.18.0.2", "--key-rijndael", "enc", "--time-offset-minus", "2days"])
        .packet(K),
    row("a passphrase beats a base64 key from a higher level", base!["-a", "198.18.0.2", "--key-base64-rijndael", "QUJDRA=="])
        .rc("[default]\nKEY enc\n")
        .packet(K),
    row("an HMAC passphrase beats an HMAC key file", base![
        "-a", "198.18.0.2", "--key-rijndael", "enc", "--key-hmac", "mac", "--get-hmac-key",
        "/nonexistent",
    ])
    .packet(KH),
    row("--stanza-list", &["--stanza-list"])
        .rc("[default]\n[a]\nBOGUS_IN_AN_UNUSED_STANZA 1\n [b c]\n[d]x\n")
        .stdout(),
    // ── -H and the raw transports, built but not sent (-T) ──────────────────────
    row("-H with --test", base!["-a", "198.18.0.2", "--key-rijndael", "enc", "-H", "198.18.0.5:3128"])
        .packet(K),
    row("-H overrides -P udp", base!["-a", "198.18.0.2", "--key-rijndael", "enc", "-P", "udp", "-H", "http://198.18.0.5/"])
        .packet(K),
    row("-P udpraw -Q with --test", base!["-a", "198.18.0.2", "--key-rijndael", "enc", "-P", "udpraw", "-Q", "198.18.0.9"])
        .packet(K),
    row("-P icmp with a type and code", base!["-a", "198.18.0.2", "--key-rijndael", "enc", "-P", "icmp", "--icmp-type", "8", "--icmp-code", "0"])
        .packet(K),
    row("-Q needs a raw transport", base!["-a", "198.18.0.2", "--key-rijndael", "enc", "-Q", "198.18.0.9"]),
    row("-P tcpraw and -Q are saved, -H is not", &[
        "--save-rc-stanza", "-n", "s1", T, "-D", "198.18.0.1", "-a", "198.18.0.2", "-A",
        "tcp/22", "--key-rijndael", "enc", "-P", "tcpraw", "-Q", "198.18.0.9",
    ])
    .packet(K)
    .saved(),
    row("-H is not saved", &[
        "--save-rc-stanza", "-n", "s1", T, "-D", "198.18.0.1", "-a", "198.18.0.2", "-A",
        "tcp/22", "--key-rijndael", "enc", "-H", "198.18.0.5:3128",
    ])
    .packet(K)
    .saved(),
    // ── input fwknop refuses ────────────────────────────────────────────────────
    row("--key-gen --key-len 33", &["--key-gen", "--key-len", "33"]),
    row("--key-gen --key-len 129", &["--key-gen", "--key-len", "129"]),
    row("--key-gen --hmac-key-len 129", &["--key-gen", "--hmac-key-len", "129"]),
    row("--key-len 129 without --key-gen", base!["-a", "198.18.0.2", "--key-rijndael", "enc", "--key-len", "129"]),
    row("--hmac-key-len 0 without --key-gen", base!["-a", "198.18.0.2", "--key-rijndael", "enc", "--hmac-key-len", "0"]),
    row("an unknown variable in the named stanza", base!["-n", "x", "-a", "198.18.0.2", "--key-rijndael", "enc"])
        .rc("[default]\n[x]\nCLIENT_TIMEOUT 60\n"),
    row("an unknown variable in [default]", base!["-a", "198.18.0.2", "--key-rijndael", "enc"])
        .rc("[default]\nHTTP_PROXY 198.18.0.5:3128\n"),
    row("a variable name in lower case", base!["-a", "198.18.0.2", "--key-rijndael", "enc"])
        .rc("[default]\ndigest_type sha1\n"),
    row("DIGEST_TYPE #", base!["-a", "198.18.0.2", "--key-rijndael", "enc"])
        .rc("[default]\nDIGEST_TYPE #\n"),
    row("ENCRYPTION_MODE ; in the named stanza", base!["-n", "x", "-a", "198.18.0.2", "--key-rijndael", "enc"])
        .rc("[x]\nENCRYPTION_MODE ;\n"),
    row("VERBOSE 5", base!["-a", "198.18.0.2", "--key-rijndael", "enc"])
        .rc("[default]\nVERBOSE 5\n"),
    row("VERBOSE -1", base!["-a", "198.18.0.2", "--key-rijndael", "enc"])
        .rc("[default]\nVERBOSE -1\n"),
    row("an --save-args-file path over 1023 bytes", &[
        T, "-D", "198.18.0.1", "-a", "198.18.0.2", "-A", "tcp/22", "--key-rijndael", "enc", "-E",
        "$LONGPATH",
    ]),
    row("arguments of 1017 bytes in all are saved", &[
        T, "-D", "198.18.0.1", "-a", "198.18.0.2", "-A", "tcp/22", "--key-rijndael", "enc", "-u",
        "$A964",
    ])
    .packet(K),
    row("arguments of 1018 bytes are too long to save", &[
        T, "-D", "198.18.0.1", "-a", "198.18.0.2", "-A", "tcp/22", "--key-rijndael", "enc", "-u",
        "$A965",
    ]),
    row("arguments that long are fine with --no-save-args", &[
        T, "--no-save-args", "-D", "198.18.0.1", "-a", "198.18.0.2", "-A", "tcp/22",
        "--key-rijndael", "enc", "-u", "$LONGARG",
    ])
    .packet(K),
    row("--stanza-list without an rc file", &["--stanza-list"]),
    row("--stanza-list --no-rc-file", &["--stanza-list", "--no-rc-file"]),
    row("--save-rc-stanza without -n or -D", &[
        "--save-rc-stanza", T, "-a", "198.18.0.2", "-A", "tcp/22", "--key-rijndael", "enc",
    ]),
    row("--save-rc-stanza --no-rc-file", &[
        "--save-rc-stanza", "--no-rc-file", "-n", "s1", T, "-D", "198.18.0.1", "-a",
        "198.18.0.2", "-A", "tcp/22", "--key-rijndael", "enc",
    ]),
    row("bad base64 in a key to be saved", &[
        "--save-rc-stanza", "-n", "s1", T, "-D", "198.18.0.1", "-a", "198.18.0.2", "-A",
        "tcp/22", "--key-base64-rijndael", "not*base64",
    ]),
    row("bad base64 in an HMAC key to be saved", &[
        "--save-rc-stanza", "-n", "s1", T, "-D", "198.18.0.1", "-a", "198.18.0.2", "-A",
        "tcp/22", "--key-rijndael", "enc", "--key-base64-hmac", "a b",
    ]),
    row("bad base64 in a saved key", &["-n", "s1", T, "--no-save-args"])
        .rc("[s1]\nSPA_SERVER 198.18.0.1\nACCESS tcp/22\nALLOW_IP 198.18.0.2\nKEY_BASE64 @@@@\n"),
    row("a saved key that decodes to nothing", &["-n", "s1", T, "--no-save-args"])
        .rc("[s1]\nSPA_SERVER 198.18.0.1\nACCESS tcp/22\nALLOW_IP 198.18.0.2\nKEY_BASE64 ====\n"),
    row("a bad saved value in the stanza used", &["-n", "s1", T, "--no-save-args"])
        .rc("[s1]\nSPA_SERVER 198.18.0.1\nACCESS tcp/22\nALLOW_IP 198.18.0.2\nKEY enc\nDIGEST_TYPE sha999\n"),
];

#[test]
fn postern_does_what_fwknop_does() {
    if !postern_testkit::have_tool("fwknop") || !postern_testkit::have_tool("setsid") {
        return;
    }
    assert!(Path::new(env!("CARGO_BIN_EXE_postern")).exists());
    let failures: Vec<String> = ROWS
        .iter()
        .filter_map(|r| check(r).err().map(|e| format!("[{}] {e}", r.name)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} rows differ from fwknop:\n\n{}",
        failures.len(),
        ROWS.len(),
        failures.join("\n\n")
    );
}

/// `fwknop --key-gen` and `postern --key-gen` print `KEY_BASE64: ...` lines; pasted
/// as they are under a stanza header, both programs read them the same way.
#[test]
fn a_pasted_key_gen_stanza_works_in_both() {
    if !postern_testkit::have_tool("fwknop") || !postern_testkit::have_tool("setsid") {
        return;
    }
    let home = TempDir::new("kg");
    for program in ["fwknop", env!("CARGO_BIN_EXE_postern")] {
        let out = Command::new(program)
            .args(["--key-gen", "--no-rc-file"])
            .env("HOME", &home.0)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{program} --key-gen");
        let pasted = String::from_utf8(out.stdout).unwrap();
        let value = |name: &str| -> String {
            pasted
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("{name} in {pasted}"))
                .trim()
                .to_owned()
        };
        let keys: &'static [&'static str] = Box::leak(Box::new([
            "--key-base64-rijndael",
            Box::leak(value("KEY_BASE64: ").into_boxed_str()) as &str,
            "--key-base64-hmac",
            Box::leak(value("HMAC_KEY_BASE64: ").into_boxed_str()) as &str,
        ]));
        let rc = format!(
            "[default]\n\n[srv]\nSPA_SERVER: 198.18.0.1\nACCESS: tcp/22\nALLOW_IP: 198.18.0.2\n{pasted}"
        );
        let r = row(
            "pasted --key-gen output",
            &["-n", "srv", "-T", "--no-save-args"],
        )
        .rc(Box::leak(rc.into_boxed_str()))
        .packet(keys);
        if let Err(e) = check(&r) {
            panic!("keys from {program}: {e}");
        }
    }
}
