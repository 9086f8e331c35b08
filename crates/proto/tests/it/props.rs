//! Property tests: encode→decode round trip over random messages, keys, modes, HMAC and
//! digest types; decode is total on arbitrary input; respellings never get through.

use core::net::IpAddr;

use postern_proto::{
    decode, encode, DigestType, EncryptionMode, Error, HmacKey, Key, Keys, MessageType, Packet,
    RandomValue, SpaMessage,
};
use proptest::prelude::*;

fn digest_type() -> impl Strategy<Value = DigestType> {
    prop::sample::select(DigestType::ALL.to_vec())
}

fn mode() -> impl Strategy<Value = EncryptionMode> {
    prop::sample::select(EncryptionMode::ALL.to_vec())
}

fn allow_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u16; 8]>().prop_map(IpAddr::from),
    ]
}

fn username() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.@ -]{1,20}".prop_filter("starts or ends with space is fine; non-empty", |s| {
        !s.is_empty()
    })
}

prop_compose! {
    fn message()(
        rv in any::<u64>(),
        user in username(),
        ts in 0u64..4_000_000_000,
        kind in prop::sample::select(MessageType::ALL.to_vec()),
        allow in allow_ip(),
        ports in prop::collection::vec((any::<bool>(), 1u16..), 1..4),
        cmd in "[a-z][a-z /._-]{0,40}",
        nat_host in "[a-z0-9.]{1,20}",
        nat_port in 1u16..,
        timeout in 1u32..=65536,
        auth in prop::option::of("[a-zA-Z0-9]{1,20}"),
    ) -> SpaMessage {
        let message = if kind == MessageType::Command {
            format!("{allow},{cmd}")
        } else {
            let p: Vec<String> = ports.iter().map(|(t, p)| format!("{}/{p}", if *t { "tcp" } else { "udp" })).collect();
            format!("{allow},{}", p.join(","))
        };
        SpaMessage {
            random_value: RandomValue::from_digits(&format!("{:016}", rv % 10_000_000_000_000_000)).unwrap(),
            username: user,
            timestamp: ts,
            version: "3.0.0".into(),
            message_type: kind,
            message,
            nat_access: kind.has_nat().then(|| format!("{nat_host},{nat_port}")),
            server_auth: auth,
            client_timeout: if kind.has_timeout() { timeout } else { 0 },
        }
    }
}

prop_compose! {
    fn keys()(
        m in mode(),
        enc in prop::collection::vec(any::<u8>(), 1..=32),
        hmac in prop::option::of((prop::collection::vec(any::<u8>(), 1..=128), digest_type())),
    ) -> Keys {
        let hmac = if m == EncryptionMode::Legacy { None } else { hmac };
        let hmac = hmac.filter(|(k, _)| *k != enc).map(|(k, d)| HmacKey { key: Key::from_bytes(k), digest: d });
        Keys::new(Key::from_bytes(enc), m, hmac).unwrap()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn encode_decode_round_trip(m in message(), k in keys(), d in digest_type(), salt in any::<[u8; 8]>()) {
        match encode(&m, &k, d, salt) {
            Ok(w) => {
                prop_assert!(w.len() < 400);
                let o = decode(w.as_bytes(), &k).unwrap();
                prop_assert_eq!(&o.message, &m);
                prop_assert_eq!(o.digest_type, d);
                prop_assert_eq!(o.salt, salt);
            }
            Err(Error::PacketTooLongForFwknop { .. }) => {}
            Err(e) => prop_assert!(false, "encode refused a valid message: {}", e),
        }
    }

    #[test]
    fn decode_never_panics_on_bytes(data in prop::collection::vec(any::<u8>(), 0..1600)) {
        postern_proto::fuzz_decode(&data);
    }

    #[test]
    fn decode_never_panics_on_base64(first in prop::sample::select(b"89+/".to_vec()), rest in "[A-Za-z0-9+/]{139,600}") {
        let mut data = vec![first];
        data.extend_from_slice(rest.as_bytes());
        postern_proto::fuzz_decode(&data);
    }

    /// Any accepted respelling has the replay key of the canonical packet; in practice
    /// no respelling is accepted at all.
    #[test]
    fn respellings_share_the_replay_key(m in message(), k in keys(), d in digest_type(), salt in any::<[u8; 8]>(), flip in 1u8..4, pos in any::<prop::sample::Index>()) {
        let Ok(w) = encode(&m, &k, d, salt) else { return Ok(()); };
        let canonical = Packet::new_checked(w.as_bytes()).unwrap().replay_key();
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut variants = vec![format!("{w}="), format!("{w}=="), format!("U2FsdGVkX1{w}")];
        // Change the low bits of each character (those of the last ciphertext
        // character are unused bits when its length is not a multiple of 4).
        let bytes = w.as_bytes();
        for i in [bytes.len() - 1, pos.index(bytes.len())] {
            let idx = alphabet.iter().position(|&c| c == bytes[i]).unwrap();
            let mut v = bytes.to_vec();
            v[i] = alphabet[(idx & !3) | ((idx + usize::from(flip)) & 3)];
            variants.push(String::from_utf8(v).unwrap());
        }
        if let Some(h) = k.hmac_type() {
            let body = &w[..w.len() - h.b64_len()];
            let idx = alphabet.iter().position(|&c| c == body.as_bytes()[body.len() - 1]).unwrap();
            let mut v = w.as_bytes().to_vec();
            v[body.len() - 1] = alphabet[(idx & !3) | ((idx + usize::from(flip)) & 3)];
            variants.push(String::from_utf8(v).unwrap());
        }
        for v in variants {
            if v == w { continue; }
            if decode(v.as_bytes(), &k).is_ok() {
                prop_assert_eq!(Packet::new_checked(v.as_bytes()).unwrap().replay_key(), canonical, "accepted respelling {}", v);
            }
        }
    }
}
