//! `postern decode` run as a process: the JSON it prints for every real-client vector,
//! its one-line errors, stdin input, and packets made now by the real fwknop client.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn postern() -> Command {
    Command::new(env!("CARGO_BIN_EXE_postern"))
}

fn vectors(name: &str) -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name);
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Flags for a vector's keys, the way access.conf names them.
fn key_flags(k: &Value) -> Vec<String> {
    let mut f = Vec::new();
    let mut add = |flag: &str, v: &Value| {
        if let Some(s) = v.as_str() {
            f.push(flag.to_owned());
            f.push(s.to_owned());
        }
    };
    add("--key-rijndael", &k["encryption_key"]);
    add("--key-base64-rijndael", &k["encryption_key_base64"]);
    add("--key-hmac", &k["hmac_key"]);
    add("--key-base64-hmac", &k["hmac_key_base64"]);
    add("--hmac-digest-type", &k["hmac_digest_type"]);
    add("--encryption-mode", &k["encryption_mode"]);
    f
}

fn stanza_flags(lines: &Value) -> Vec<String> {
    let mut f = Vec::new();
    for l in lines.as_array().unwrap() {
        let (name, value) = l.as_str().unwrap().split_once(' ').unwrap();
        let flag = match name {
            "KEY" => "--key-rijndael",
            "KEY_BASE64" => "--key-base64-rijndael",
            "HMAC_KEY" => "--key-hmac",
            "HMAC_KEY_BASE64" => "--key-base64-hmac",
            "HMAC_DIGEST_TYPE" => "--hmac-digest-type",
            "ENCRYPTION_MODE" => "--encryption-mode",
            _ => continue,
        };
        f.push(flag.to_owned());
        f.push(value.to_owned());
    }
    f
}

fn lower(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// A failed run: non-zero exit, nothing on stdout, exactly one line on stderr.
fn one_line_error(out: &Output) -> String {
    assert!(!out.status.success(), "expected failure");
    assert!(
        out.stdout.is_empty(),
        "stdout must be empty on failure: {:?}",
        out.stdout
    );
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err:?}");
    err.trim_end().to_owned()
}

#[test]
fn prints_the_fields_of_every_real_client_vector() {
    let keys = [
        "random_value",
        "username",
        "timestamp",
        "version",
        "message_type",
        "message",
        "nat_access",
        "server_auth",
        "client_timeout",
        "digest_type",
        "hmac_type",
        "encryption_mode",
    ];
    let mut n = 0;
    for v in vectors("fwknop-2.6.10.jsonl") {
        let id = v["id"].as_str().unwrap();
        if id.starts_with("gpg_") {
            continue;
        }
        let out = postern()
            .arg("decode")
            .args(key_flags(&v["keys"]))
            .arg(v["spa_packet"].as_str().unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            stdout.lines().count(),
            1,
            "{id}: one JSON object on one line"
        );
        let got: Value = serde_json::from_str(&stdout).unwrap();
        let obj = got.as_object().unwrap();
        let mut names: Vec<&str> = obj.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut want_names = keys.to_vec();
        want_names.sort_unstable();
        assert_eq!(names, want_names, "{id}: exactly the documented keys");
        let d = &v["decoded_by_client"];
        assert_eq!(got["random_value"], d["random_value"], "{id}");
        assert_eq!(got["username"], d["username"], "{id}");
        assert_eq!(got["timestamp"], d["timestamp"], "{id}");
        assert_eq!(got["version"], d["version"], "{id}");
        assert_eq!(got["message_type"], d["message_type"], "{id}");
        assert_eq!(got["message"], d["message_string"], "{id}");
        assert_eq!(got["nat_access"], d["nat_access"], "{id}");
        assert_eq!(got["server_auth"], d["server_auth"], "{id}");
        assert_eq!(got["client_timeout"], d["client_timeout"], "{id}");
        assert_eq!(
            got["digest_type"],
            lower(d["digest_type_name"].as_str().unwrap()).as_str(),
            "{id}"
        );
        let hmac = d["hmac_type_name"].as_str().unwrap();
        if hmac == "None" {
            assert_eq!(got["hmac_type"], Value::Null, "{id}");
        } else {
            assert_eq!(got["hmac_type"], lower(hmac).as_str(), "{id}");
        }
        assert_eq!(
            got["encryption_mode"],
            lower(d["encryption_mode_name"].as_str().unwrap()).as_str(),
            "{id}"
        );
        n += 1;
    }
    assert_eq!(n, 50);
}

#[test]
fn reads_the_packet_from_stdin() {
    let v = &vectors("fwknop-2.6.10.jsonl")[0];
    let mut child = postern()
        .arg("decode")
        .args(key_flags(&v["keys"]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let packet = format!("{}\n", v["spa_packet"].as_str().unwrap());
    child
        .stdin
        .take()
        .unwrap()
        .write_all(packet.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["random_value"], v["fields"]["random_value"]);
}

fn negative(id: &str) -> Value {
    vectors("negative.jsonl")
        .into_iter()
        .find(|v| v["id"] == id)
        .unwrap()
}

fn decode_err(flags: &[String], packet: &str) -> String {
    one_line_error(
        &postern()
            .arg("decode")
            .args(flags)
            .arg(packet)
            .output()
            .unwrap(),
    )
}

#[test]
fn one_line_errors_name_the_failed_check() {
    let cases = [
        ("wrong_hmac_key", "postern: hmac mismatch"),
        ("tampered_hmac", "postern: hmac mismatch"),
        ("missing_hmac", "postern: hmac mismatch"),
        (
            "too_short_139",
            "postern: packet too short (139 bytes, minimum 140)",
        ),
        (
            "too_long_1600",
            "postern: packet too long (1600 bytes, maximum 1500)",
        ),
        ("non_base64_char", "postern: invalid base64 character"),
        (
            "salted_prefix_readded",
            "postern: packet carries the encryption prefix (replay attempt)",
        ),
        ("wrong_key_right_hmac", "postern: decryption failed"),
        ("crafted_bad_inner_digest", "postern: digest mismatch"),
        ("crafted_short_random", "postern: bad random value"),
        (
            "crafted_msg_type_7",
            "postern: bad message type: must be 0 to 6",
        ),
        (
            "crafted_port_0",
            "postern: bad access: port must be 1 to 65535",
        ),
        (
            "crafted_bad_ip",
            "postern: bad allow ip: not an IPv4 address",
        ),
        (
            "crafted_bad_proto",
            "postern: bad access: protocol must be tcp or udp",
        ),
        (
            "crafted_too_many_fields",
            "postern: bad field count: wrong number of fields for the message type",
        ),
        (
            "crafted_username_colon_b64_invalid",
            "postern: bad username: not canonical base64",
        ),
    ];
    for (id, want) in cases {
        let v = negative(id);
        let stanza = if v["server_stanza"].is_null() {
            vec!["--key-rijndael".to_owned(), "k".to_owned()]
        } else {
            stanza_flags(&v["server_stanza"])
        };
        assert_eq!(
            decode_err(&stanza, v["packet"].as_str().unwrap()),
            want,
            "{id}"
        );
    }
    // The '=' respelling of a no-HMAC packet.
    let v = negative("replay_with_equals_suffix");
    let flags = stanza_flags(&v["server_stanza"]);
    let respelled = v["packets"][1].as_str().unwrap();
    assert_eq!(
        decode_err(&flags, respelled),
        "postern: non-canonical base64"
    );
    let v = negative("replay_with_last_char_variant");
    let respelled = v["packets"][1].as_str().unwrap();
    assert_eq!(
        decode_err(&flags, respelled),
        "postern: non-canonical base64"
    );
    // GnuPG packets are recognised.
    let gpg = vectors("fwknop-2.6.10.jsonl")
        .into_iter()
        .find(|v| v["id"] == "gpg_nohmac")
        .unwrap();
    assert_eq!(
        decode_err(
            &["--key-rijndael".into(), "k".into()],
            gpg["spa_packet"].as_str().unwrap()
        ),
        "postern: GnuPG mode is not supported yet"
    );
}

#[test]
fn usage_errors_name_the_flag() {
    let p = vectors("fwknop-2.6.10.jsonl")[0]["spa_packet"]
        .as_str()
        .unwrap()
        .to_owned();
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        decode_err(&[], &p),
        "postern: an encryption key is required: add --key-rijndael or --key-base64-rijndael"
    );
    assert_eq!(
        decode_err(&s(&["--key-rijndael", "k", "-M", "pcbc"]), &p),
        "postern: --encryption-mode: encryption mode pcbc is not supported (fwknop never implemented it correctly)"
    );
    assert_eq!(
        decode_err(
            &s(&["--key-rijndael", "k", "--hmac-digest-type", "sha1"]),
            &p
        ),
        "postern: --hmac-digest-type needs an HMAC key: add --key-hmac or --key-base64-hmac"
    );
    assert_eq!(
        decode_err(&s(&["--key-rijndael", "k", "--key-hmac", "h", "--hmac-digest-type", "sha999"]), &p),
        "postern: --hmac-digest-type: unknown digest type (expected md5, sha1, sha256, sha384, sha512, sha3_256 or sha3_512)"
    );
    assert_eq!(
        decode_err(&s(&["--key-rijndael", "same", "--key-hmac", "same"]), &p),
        "postern: hmac key must differ from the encryption key"
    );
    assert_eq!(
        decode_err(&s(&["--key-rijndael", &"k".repeat(33)]), &p),
        "postern: invalid encryption key length 33 (must be 1 to 32 bytes)"
    );
    assert_eq!(
        decode_err(&s(&["--key-base64-rijndael", "!!!"]), &p),
        "postern: --key-base64-rijndael: key is not valid base64"
    );
}

/// A packet made now by the real client, with HMAC, through the CLI.
#[test]
fn decodes_a_fresh_real_fwknop_packet() {
    if !postern_testkit::have_tool("fwknop") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("postern-cli-fwknop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("fwknop")
        .args(["--rc-file"])
        .arg(dir.join("rc"))
        .args([
            "--no-save-args",
            "--test",
            "-A",
            "tcp/22,udp/53",
            "-a",
            "198.18.0.2",
            "-D",
            "198.18.0.1",
            "--key-rijndael",
            "enc-secret",
            "--key-hmac",
            "hmac-secret",
            "--hmac-digest-type",
            "sha512",
            "-M",
            "ctr",
            "-m",
            "sha3_512",
            "-f",
            "90",
            "-U",
            "alice",
        ])
        .env("HOME", &dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let packet = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Final SPA Data: "))
        .or_else(|| stdout.lines().find(|l| l.len() > 140 && !l.contains(' ')))
        .expect("packet in fwknop output")
        .to_owned();
    let out = postern()
        .args([
            "decode",
            "--key-rijndael",
            "enc-secret",
            "--key-hmac",
            "hmac-secret",
        ])
        .args(["--hmac-digest-type", "SHA512", "-M", "CTR", &packet])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["message"], "198.18.0.2,tcp/22,udp/53");
    assert_eq!(got["username"], "alice");
    assert_eq!(got["client_timeout"], 90);
    assert_eq!(got["message_type"], 3);
    assert_eq!(got["digest_type"], "sha3_512");
    assert_eq!(got["hmac_type"], "sha512");
    assert_eq!(got["encryption_mode"], "ctr");
    let _ = std::fs::remove_dir_all(&dir);
}
