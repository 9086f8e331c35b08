//! Every non-GnuPG packet the real fwknop 2.6.10 client made decodes to exactly the
//! fields it printed, re-encodes byte for byte, and has fwknopd's replay digest.

use postern_proto::{decode, encode, DigestType, Error, Packet};
use serde_json::Value;

use crate::common::{jsonl, keys_from_stanza, keys_from_vector, unhex};

fn check_fields(id: &str, o: &postern_proto::Opened, want: &Value) {
    let m = &o.message;
    assert_eq!(m.random_value.as_str(), want["random_value"], "{id} random");
    assert_eq!(m.username, want["username"].as_str().unwrap(), "{id} user");
    assert_eq!(m.timestamp, want["timestamp"].as_u64().unwrap(), "{id} ts");
    assert_eq!(m.version, want["version"].as_str().unwrap(), "{id} version");
    assert_eq!(
        u64::from(m.message_type.id()),
        want["message_type"].as_u64().unwrap(),
        "{id} type"
    );
    assert_eq!(
        m.message,
        want["message_string"].as_str().unwrap(),
        "{id} message"
    );
    assert_eq!(
        m.nat_access.as_deref(),
        want["nat_access"].as_str(),
        "{id} nat"
    );
    assert_eq!(
        m.server_auth.as_deref(),
        want["server_auth"].as_str(),
        "{id} auth"
    );
    assert_eq!(
        u64::from(m.client_timeout),
        want["client_timeout"].as_u64().unwrap(),
        "{id} timeout"
    );
    assert_eq!(
        u64::from(o.digest_type.id()),
        want["digest_type"].as_u64().unwrap(),
        "{id} digest"
    );
    assert_eq!(
        u64::from(o.hmac_type.map_or(0, DigestType::id)),
        want["hmac_type"].as_u64().unwrap(),
        "{id} hmac"
    );
    assert_eq!(
        u64::from(o.encryption_mode.id()),
        want["encryption_mode"].as_u64().unwrap(),
        "{id} mode"
    );
}

#[test]
fn real_client_vectors_decode_and_reencode() {
    let mut n = 0;
    for v in jsonl("fwknop-2.6.10.jsonl") {
        let id = v["id"].as_str().unwrap();
        let packet = v["spa_packet"].as_str().unwrap();
        if id.starts_with("gpg_") {
            let keys = keys_from_stanza(&[
                Value::from("KEY unused-key"),
                Value::from("HMAC_KEY gpg-hmac-key-1"),
            ]);
            assert_eq!(
                decode(packet.as_bytes(), &keys).unwrap_err(),
                Error::GnupgUnsupported,
                "{id}"
            );
            continue;
        }
        let keys = keys_from_vector(&v["keys"]);
        let opened = decode(packet.as_bytes(), &keys).unwrap_or_else(|e| panic!("{id}: {e}"));
        check_fields(id, &opened, &v["decoded_by_client"]);
        let salt: [u8; 8] = unhex(v["derived"]["salt_hex"].as_str().unwrap())
            .try_into()
            .unwrap();
        assert_eq!(opened.salt, salt, "{id} salt");
        let again = encode(&opened.message, &keys, opened.digest_type, salt).unwrap();
        assert_eq!(again, packet, "{id}: re-encoded packet differs");
        let p = Packet::new_checked(packet.as_bytes()).unwrap();
        assert_eq!(
            p.replay_key().to_string(),
            v["derived"]["replay_cache_digest"].as_str().unwrap(),
            "{id}"
        );
        // The packet must also be accepted by the stanza fwknopd used.
        let stanza_keys = keys_from_stanza(v["server_stanza"].as_array().unwrap());
        assert!(
            decode(packet.as_bytes(), &stanza_keys).is_ok(),
            "{id} via stanza"
        );
        n += 1;
    }
    assert_eq!(n, 50, "every non-GnuPG vector was checked");
}

#[test]
fn reference_encoder_vectors_decode() {
    for v in jsonl("reference-encoder.jsonl") {
        let id = v["id"].as_str().unwrap();
        let keys = keys_from_stanza(v["server_stanza"].as_array().unwrap());
        let o = decode(v["spa_packet"].as_bytes_or_panic(), &keys)
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        let encoded = o.message.encode().unwrap();
        assert_eq!(encoded, v["encoded_data"].as_str().unwrap(), "{id}");
        assert_eq!(
            o.digest_type,
            v["digest_type"].as_str().unwrap().parse().unwrap(),
            "{id}"
        );
    }
}

trait AsBytes {
    fn as_bytes_or_panic(&self) -> &[u8];
}
impl AsBytes for Value {
    fn as_bytes_or_panic(&self) -> &[u8] {
        self.as_str().expect("string").as_bytes()
    }
}
