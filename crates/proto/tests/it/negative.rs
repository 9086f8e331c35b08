//! Every decode-related packet of `negative.jsonl` is refused at the stage the vectors
//! name; replay sequences are caught by the replay key; policy and age vectors decode
//! (they are the daemon's business) but carry what the policy refuses.

use std::collections::HashSet;

use postern_proto::{decode, Error, Packet, Stage};
use serde_json::Value;

use crate::common::{jsonl, keys_from_stanza};

fn expected_stages(stage: &str) -> &'static [Stage] {
    match stage {
        "size check" => &[Stage::Size],
        "base64 check" => &[Stage::Base64],
        "prefix check (anti-replay)" => &[Stage::Prefix],
        "hmac" => &[Stage::Hmac],
        "decrypt" | "decrypt (after HMAC passed)" => &[Stage::Decrypt, Stage::Fields],
        "decrypt/decode (random value, digest)" => &[Stage::Decrypt, Stage::Digest, Stage::Fields],
        "inner digest" => &[Stage::Digest],
        "field parsing" | "field validation" | "field count" => &[Stage::Fields],
        _ => &[],
    }
}

fn try_decode(packet: &str, stanza: &Value) -> Result<postern_proto::Opened, Error> {
    let p = Packet::new_checked(packet.as_bytes())?;
    match stanza.as_array() {
        Some(lines) => p.open(&keys_from_stanza(lines)),
        None => panic!("packet passed the key-independent checks but the vector has no stanza"),
    }
}

#[test]
fn negative_vectors_are_refused_at_their_stage() {
    let mut checked = 0;
    for v in jsonl("negative.jsonl") {
        let id = v["id"].as_str().unwrap();
        let stage = v["expected_rejection_stage"].as_str().unwrap();
        if stage.starts_with("replay cache") {
            let packets: Vec<&str> = v["packets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            let reject = v["reject_index"].as_u64().unwrap() as usize;
            let mut seen = HashSet::new();
            for (i, p) in packets.iter().enumerate() {
                let outcome = try_decode(p, &v["server_stanza"])
                    .map(|_| Packet::new_checked(p.as_bytes()).unwrap().replay_key());
                let accepted = match outcome {
                    Ok(key) => seen.insert(key),
                    Err(_) => false,
                };
                assert_eq!(accepted, i != reject, "{id}: packet {i}");
            }
            checked += 1;
            continue;
        }
        let packet = v["packet"].as_str().unwrap();
        let want = expected_stages(stage);
        if want.is_empty() {
            // Age and policy: the codec decodes them; the daemon refuses them.
            let o = try_decode(packet, &v["server_stanza"]).unwrap_or_else(|e| panic!("{id}: {e}"));
            assert!(o.message.request().is_ok(), "{id}");
            continue;
        }
        let err = try_decode(packet, &v["server_stanza"]).expect_err(id);
        assert!(
            want.contains(&err.stage()),
            "{id}: refused at {:?} ({err}), expected {stage}",
            err.stage()
        );
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} negative vectors checked");
}

#[test]
fn respellings_of_a_no_hmac_packet_are_refused() {
    let v = jsonl("negative.jsonl")
        .into_iter()
        .find(|v| v["id"] == "replay_with_equals_suffix")
        .unwrap();
    let keys = keys_from_stanza(v["server_stanza"].as_array().unwrap());
    let packets = v["packets"].as_array().unwrap();
    let original = packets[0].as_str().unwrap();
    assert!(decode(original.as_bytes(), &keys).is_ok());
    assert_eq!(
        decode(packets[1].as_str().unwrap().as_bytes(), &keys).unwrap_err(),
        Error::NonCanonicalBase64
    );
}
