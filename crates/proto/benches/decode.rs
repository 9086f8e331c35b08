//! Micro-benchmarks of the codec's hot paths (`cargo bench -p postern-proto`): what a
//! daemon pays per datagram for junk, for a packet under the wrong key, and for a valid
//! packet. No namespaces: regressions show up here first.

#![allow(missing_docs, clippy::unwrap_used)]

use postern_proto::{
    decode, encode, DigestType, EncryptionMode, HmacKey, Key, Keys, MessageType, Packet,
    RandomValue, SpaMessage,
};

fn main() {
    divan::main();
}

fn keys(enc: &str, mac: &str) -> Keys {
    Keys::new(
        Key::from_passphrase(enc),
        EncryptionMode::Cbc,
        Some(HmacKey {
            key: Key::from_passphrase(mac),
            digest: DigestType::Sha256,
        }),
    )
    .unwrap()
}

fn valid() -> Vec<u8> {
    let m = SpaMessage {
        random_value: RandomValue::from_digits("1234567890123456").unwrap(),
        username: "alice".into(),
        timestamp: 1_700_000_000,
        version: postern_proto::wire::PROTOCOL_VERSION.into(),
        message_type: MessageType::Access,
        message: "198.18.1.2,tcp/22".into(),
        nat_access: None,
        server_auth: None,
        client_timeout: 0,
    };
    encode(&m, &keys("enc-key", "mac-key"), DigestType::Sha256, [7; 8])
        .unwrap()
        .into_bytes()
}

/// Junk that passes every key-independent check (a real packet with characters changed
/// in the middle): what a flood of SPA-looking noise costs.
fn junk() -> Vec<u8> {
    let mut p = valid();
    let mid = p.len() / 2;
    for c in &mut p[mid..mid + 8] {
        *c = if *c == b'A' { b'B' } else { b'A' };
    }
    p
}

#[divan::bench]
fn junk_key_independent_checks(b: divan::Bencher) {
    let p = junk();
    b.bench(|| Packet::new_checked(divan::black_box(&p)).is_ok());
}

#[divan::bench]
fn junk_checks_replay_key_and_hmac(b: divan::Bencher) {
    let (p, k) = (junk(), keys("enc-key", "mac-key"));
    b.bench(|| {
        let pk = Packet::new_checked(divan::black_box(&p)).unwrap();
        let _ = pk.replay_key();
        pk.open(&k).is_err()
    });
}

#[divan::bench]
fn valid_packet_wrong_key(b: divan::Bencher) {
    let (p, k) = (valid(), keys("other-enc", "other-mac"));
    b.bench(|| decode(divan::black_box(&p), &k).is_err());
}

#[divan::bench]
fn valid_packet_full_decode(b: divan::Bencher) {
    let (p, k) = (valid(), keys("enc-key", "mac-key"));
    b.bench(|| decode(divan::black_box(&p), &k).is_ok());
}
