//! The real Debian fwknop 2.6.10 client, run now (`--test`, nothing sent) with fresh
//! random keys over every mode, HMAC type, digest type and message type: each packet it
//! makes must decode to the fields it printed, and re-encode byte for byte.

use std::collections::HashMap;
use std::process::Command;

use postern_proto::{decode, encode, DigestType, EncryptionMode, HmacKey, Key, Keys};

use crate::common::have_tool;

/// One knock request: how to ask fwknop for it.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Access,
    MultiPort,
    Command,
    Timeout,
    Nat,
    NatTimeout,
    LocalNat,
    LocalNatTimeout,
}

const SHAPES: [Shape; 8] = [
    Shape::Access,
    Shape::MultiPort,
    Shape::Command,
    Shape::Timeout,
    Shape::Nat,
    Shape::NatTimeout,
    Shape::LocalNat,
    Shape::LocalNatTimeout,
];

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    getrandom::getrandom(&mut v).unwrap();
    v
}

fn random_len(lo: usize, hi: usize) -> usize {
    lo + (random_bytes(1)[0] as usize) % (hi - lo + 1)
}

fn b64(bytes: &[u8]) -> String {
    postern_proto::b64::encode_padded(bytes)
}

/// Parse the first "SPA Field Values:" block of `fwknop --test --verbose`.
fn parse_dump(out: &str) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    let mut inside = false;
    for line in out.lines() {
        if line.starts_with("SPA Field Values:") {
            inside = true;
            continue;
        }
        if !inside || line.starts_with("====") {
            continue;
        }
        if line.trim().is_empty() {
            break;
        }
        if let Some((label, value)) = line.split_once(": ") {
            fields.insert(label.trim().to_owned(), value.trim().to_owned());
        }
    }
    fields
}

fn number(field: &str) -> u64 {
    field.split_whitespace().next().unwrap().parse().unwrap()
}

fn null(field: &str) -> Option<&str> {
    (field != "<NULL>").then_some(field)
}

struct Case {
    mode: EncryptionMode,
    hmac: Option<DigestType>,
    digest: DigestType,
    shape: Shape,
}

fn run_case(dir: &std::path::Path, c: &Case) {
    let enc_len = if c.mode == EncryptionMode::Legacy {
        random_len(1, 16)
    } else {
        random_len(1, 32)
    };
    let enc = random_bytes(enc_len);
    let hmac_key = random_bytes(random_len(1, 128));
    let mut args: Vec<String> = vec![
        "--rc-file".into(),
        dir.join("fwknoprc").display().to_string(),
        "--no-save-args".into(),
        "--test".into(),
        "--verbose".into(),
        "-D".into(),
        "198.18.0.1".into(),
        "-a".into(),
        "198.18.0.2".into(),
        "--key-base64-rijndael".into(),
        b64(&enc),
        "-M".into(),
        c.mode.name().into(),
        "-m".into(),
        c.digest.name().into(),
    ];
    if let Some(h) = c.hmac {
        args.extend([
            "--key-base64-hmac".into(),
            b64(&hmac_key),
            "--hmac-digest-type".into(),
            h.name().into(),
        ]);
    }
    let shape: &[&str] = match c.shape {
        Shape::Access => &["-A", "tcp/22"],
        Shape::MultiPort => &["-A", "tcp/22,udp/53,tcp/8443"],
        Shape::Command => &["-C", "touch /tmp/x"],
        Shape::Timeout => &["-A", "tcp/22", "-f", "45"],
        Shape::Nat => &["-A", "tcp/22", "-N", "198.18.5.5:2222"],
        Shape::NatTimeout => &["-A", "tcp/22", "-N", "198.18.5.5:22", "-f", "60"],
        Shape::LocalNat => &["-A", "tcp/22", "--nat-local", "--nat-port", "55000"],
        Shape::LocalNatTimeout => &["-A", "tcp/2222", "--nat-local", "-f", "30"],
    };
    args.extend(shape.iter().map(|s| s.to_string()));
    let out = Command::new("fwknop")
        .args(&args)
        .env("HOME", dir)
        .env("LOGNAME", "postern-test")
        .output()
        .expect("run fwknop");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let what = format!(
        "{:?} hmac={:?} digest={} {:?}",
        c.mode, c.hmac, c.digest, c.shape
    );
    assert!(
        out.status.success(),
        "fwknop failed for {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = parse_dump(&stdout);
    let packet = f
        .get("Final SPA Data")
        .unwrap_or_else(|| panic!("no packet for {what}: {stdout}"));
    let keys = Keys::new(
        Key::from_bytes(enc),
        c.mode,
        c.hmac.map(|digest| HmacKey {
            key: Key::from_bytes(hmac_key),
            digest,
        }),
    )
    .unwrap();
    let o = decode(packet.as_bytes(), &keys).unwrap_or_else(|e| panic!("{what}: {e}"));
    let m = &o.message;
    assert_eq!(m.random_value.as_str(), f["Random Value"], "{what}");
    assert_eq!(m.username, f["Username"], "{what}");
    assert_eq!(
        m.timestamp,
        f["Timestamp"].parse::<u64>().unwrap(),
        "{what}"
    );
    assert_eq!(
        u64::from(m.message_type.id()),
        number(&f["Message Type"]),
        "{what}"
    );
    assert_eq!(m.message, f["Message String"], "{what}");
    assert_eq!(m.nat_access.as_deref(), null(&f["Nat Access"]), "{what}");
    assert_eq!(
        u64::from(m.client_timeout),
        number(&f["Client Timeout"]),
        "{what}"
    );
    assert_eq!(o.digest_type, c.digest, "{what}");
    assert_eq!(
        u64::from(o.digest_type.id()),
        number(&f["Digest Type"]),
        "{what}"
    );
    assert_eq!(
        u64::from(o.hmac_type.map_or(0, DigestType::id)),
        number(&f["HMAC Type"]),
        "{what}"
    );
    assert_eq!(
        u64::from(c.mode.id()),
        number(&f["Encryption Mode"]),
        "{what}"
    );
    let again = encode(m, &keys, o.digest_type, o.salt).unwrap();
    assert_eq!(&again, packet, "{what}: re-encoding differs");
}

#[test]
fn real_fwknop_client_packets_decode() {
    if !have_tool("fwknop") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("postern-proto-fwknop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hmacs: Vec<Option<DigestType>> = std::iter::once(None)
        .chain(DigestType::ALL.into_iter().map(Some))
        .collect();
    let mut cases = Vec::new();
    let mut i = 0;
    // Every mode with every HMAC type (legacy refuses HMAC), digest and shape rotating.
    for mode in EncryptionMode::ALL {
        for &hmac in &hmacs {
            if mode == EncryptionMode::Legacy && hmac.is_some() {
                continue;
            }
            cases.push(Case {
                mode,
                hmac,
                digest: DigestType::ALL[i % 7],
                shape: SHAPES[i % 8],
            });
            i += 1;
        }
    }
    // Every digest type with every message shape.
    for digest in DigestType::ALL {
        for shape in SHAPES {
            cases.push(Case {
                mode: EncryptionMode::Cbc,
                hmac: Some(DigestType::Sha256),
                digest,
                shape,
            });
        }
    }
    for c in &cases {
        run_case(&dir, c);
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "decoded {} packets made by the real fwknop client",
        cases.len()
    );
}
