//! Suite: draw. Draws against the published vectors (`docs/draws-vectors.json`, regenerated
//! with `LOKEY_WRITE_VECTORS=1` — review the diff: a change means the format changed), receipts
//! verified offline, and every single-member tampering of a receipt caught by the step that
//! owns it.

use std::path::Path;

use lokey::beacon::{self, Pulse, status};
use lokey::draw::{self, Draw, Receipt, Registration};
use serde_json::{Value, json};
use sha2::{Digest, Sha512};

use crate::beacon::{filled, public, sign, test_key};

/// One registration of every kind for commit pulse 2 of chain 9.
fn registrations() -> Vec<Registration> {
    let names: Vec<String> = ["Ada", "Grace", "Edsger", "Barbara", "Donald", "Frances"]
        .into_iter()
        .map(String::from)
        .collect();
    let draws = vec![
        Draw::Integers {
            n: 6,
            min: 1,
            max: 49,
            unique: true,
        },
        Draw::Integers {
            n: 5,
            min: -1_000_000_000_000,
            max: i64::MAX,
            unique: false,
        },
        Draw::Integers {
            n: 8,
            min: 0,
            max: 9,
            unique: true,
        },
        Draw::Sample {
            items: names.clone(),
            k: 3,
        },
        Draw::Shuffle { items: names },
        Draw::DecimalFractions { n: 3, places: 7 },
        Draw::Strings {
            n: 2,
            length: 12,
            characters: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".into(),
        },
        Draw::Uuids { n: 2 },
    ];
    draws
        .into_iter()
        .enumerate()
        .map(|(i, d)| Registration {
            chain_index: 9,
            commit_pulse_index: 2,
            leaf_index: i as u32,
            registered_ms: 1_796_400_001_000 + i as u64 * 137,
            draw: d,
            label: format!("vector draw {i} — ünïcödé"),
            nonce: if i % 2 == 0 {
                beacon::hex(&filled::<16>(&format!("nonce {i}")))
            } else {
                String::new()
            },
        })
        .collect()
}

/// Pulses 1, 2 (the commit pulse) and 3 (the deciding pulse) of chain 9.
fn pulses(root: [u8; 32]) -> Vec<Pulse> {
    let key = test_key();
    let locals: Vec<[u8; 64]> = (1..=4)
        .map(|i| filled(&format!("draw local {i}")))
        .collect();
    let mut out: Vec<Pulse> = Vec::new();
    for i in 0..3usize {
        let mut p = Pulse {
            chain_index: 9,
            pulse_index: i as u64 + 1,
            time_ms: 1_796_400_000_000 + 60_000 * i as u64,
            period_ms: 60_000,
            serial: [0x01, 0x23, 0x9a, 0x4c, 0x11, 0x22, 0x33, 0x44, 0xee],
            key_id: public(&key).key_id(),
            local_random: locals[i],
            precommitment: Sha512::digest(locals[i + 1]).into(),
            previous_output: out.last().map_or([0; 64], Pulse::output),
            counter: 9,
            status: if i == 0 { status::CHAIN_START } else { 0 },
            commitment: if i == 1 { root } else { [0; 32] },
            signature: [0; 64],
        };
        sign(&key, &mut p);
        out.push(p);
    }
    out
}

/// Receipts for every vector registration, built as lokeyd builds them.
fn receipts() -> Vec<Receipt> {
    let regs = registrations();
    let leaves: Vec<[u8; 32]> = regs.iter().map(|r| r.leaf().unwrap()).collect();
    let root = draw::merkle_root(&leaves);
    let pulses = pulses(root);
    regs.into_iter()
        .enumerate()
        .map(|(i, reg)| {
            let seed = draw::seed(&pulses[2].local_random, &root, &leaves[i]);
            Receipt {
                version: draw::VERSION,
                id: reg.id(),
                leaf: beacon::hex(&leaves[i]),
                tree_size: leaves.len() as u64,
                path: draw::inclusion_path(&leaves, i)
                    .iter()
                    .map(|h| beacon::hex(h))
                    .collect(),
                commit_pulse: pulses[1].to_json(),
                deciding_pulse: pulses[2].to_json(),
                key_id: beacon::hex(&pulses[1].key_id),
                seed: beacon::hex(&seed),
                values: draw::values(&reg.draw, &seed).unwrap(),
                registration: reg,
            }
        })
        .collect()
}

fn vectors() -> Value {
    let regs = registrations();
    json!({
        "description": "lokey draw test vectors, version 1 (docs/draws.md). The beacon key is \
            docs/beacon-vectors.json's. 'encodings' are the registrations' canonical bytes; each \
            receipt verifies; each 'tampered' entry changes one member (a JSON pointer into the \
            receipt) and must fail at the named step.",
        "publicKey": beacon::hex(&public(&test_key()).xy()),
        "encodings": regs.iter().map(|r| beacon::hex(&r.encode().unwrap())).collect::<Vec<_>>(),
        "receipts": receipts(),
        "tampered": tampered_cases()
            .into_iter()
            .map(|(pointer, value, step)| json!({"receipt": 0, "pointer": pointer, "value": value, "failsStep": step}))
            .collect::<Vec<_>>(),
    })
}

/// One changed member of receipt 0 per case: (JSON pointer, new value, the failing step).
fn tampered_cases() -> Vec<(&'static str, Value, &'static str)> {
    let r = serde_json::to_value(&receipts()[0]).unwrap();
    let flip = |pointer: &str| {
        let hex = r.pointer(pointer).unwrap().as_str().unwrap();
        let mut bytes = beacon::from_hex(hex).unwrap();
        bytes[0] ^= 1;
        Value::String(beacon::hex(&bytes))
    };
    vec![
        (
            "/values/0",
            json!(r["values"][0].as_i64().unwrap() % 49 + 1),
            "values",
        ),
        (
            "/registration/label",
            json!("another label"),
            "registration",
        ),
        ("/registration/max", json!(50), "registration"),
        ("/registration/nonce", json!(""), "registration"),
        ("/registration/registeredMs", json!(1), "registration"),
        ("/leaf", flip("/leaf"), "registration"),
        ("/path/0", flip("/path/0"), "merkle path"),
        ("/treeSize", json!(9), "merkle path"),
        (
            "/commitPulse/commitmentValue",
            flip("/commitPulse/commitmentValue"),
            "merkle path",
        ),
        (
            "/commitPulse/signatureValue",
            flip("/commitPulse/signatureValue"),
            "pulses",
        ),
        (
            "/decidingPulse/signatureValue",
            flip("/decidingPulse/signatureValue"),
            "pulses",
        ),
        (
            "/decidingPulse/localRandomValue",
            flip("/decidingPulse/localRandomValue"),
            "pulses",
        ),
        (
            "/decidingPulse/timeStamp",
            json!("2026-12-04T16:01:00.001Z"),
            "pulses",
        ),
        ("/keyId", flip("/keyId"), "pulses"),
        ("/seed", flip("/seed"), "seed"),
    ]
}

#[test]
fn the_published_draw_vectors_are_what_this_implementation_computes() {
    let computed = vectors();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/draws-vectors.json");
    if std::env::var_os("LOKEY_WRITE_VECTORS").is_some() {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&computed).unwrap() + "\n",
        )
        .unwrap();
    }
    let published: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        published, computed,
        "docs/draws-vectors.json differs from the code"
    );
}

#[test]
fn every_vector_receipt_verifies_and_the_values_follow_the_rules() {
    let key = public(&test_key());
    for r in receipts() {
        let values = draw::verify_receipt(&r, &key).unwrap_or_else(|e| panic!("{}: {e}", r.id));
        assert_eq!(values, r.values);
        match &r.registration.draw {
            Draw::Integers {
                min,
                max,
                unique,
                n,
            } => {
                let v: Vec<i64> = values.iter().map(|v| v.as_i64().unwrap()).collect();
                assert_eq!(v.len(), *n as usize);
                assert!(v.iter().all(|x| x >= min && x <= max));
                if *unique {
                    let set: std::collections::HashSet<_> = v.iter().collect();
                    assert_eq!(set.len(), v.len());
                }
            }
            Draw::Shuffle { items } => {
                let mut got: Vec<String> =
                    values.iter().map(|v| v.as_str().unwrap().into()).collect();
                got.sort();
                let mut want = items.clone();
                want.sort();
                assert_eq!(got, want, "a permutation");
            }
            _ => {}
        }
    }
}

#[test]
fn every_tampered_member_of_a_receipt_fails_at_its_step() {
    let key = public(&test_key());
    let original = serde_json::to_value(&receipts()[0]).unwrap();
    for (pointer, value, step) in tampered_cases() {
        let mut r = original.clone();
        *r.pointer_mut(pointer).unwrap() = value;
        let receipt: Receipt = serde_json::from_value(r).unwrap();
        let e = draw::verify_receipt(&receipt, &key).expect_err(pointer);
        assert_eq!(e.step, step, "{pointer}: {e}");
    }
    // Another key.
    let other = public(&p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap());
    let receipt: Receipt = serde_json::from_value(original).unwrap();
    assert_eq!(
        draw::verify_receipt(&receipt, &other).unwrap_err().step,
        "pulses"
    );
}

#[test]
fn limits_are_the_generators_and_named() {
    let cases = [
        (
            json!({"kind": "integers", "n": 0, "min": 1, "max": 2}),
            "n must be",
        ),
        (
            json!({"kind": "integers", "n": 7, "min": 1, "max": 6, "unique": true}),
            "unique",
        ),
        (
            json!({"kind": "integers", "n": 1, "min": 5, "max": 4}),
            "min",
        ),
        (
            json!({"kind": "sample", "items": ["a", "b"], "k": 3}),
            "cannot sample",
        ),
        (json!({"kind": "shuffle", "items": []}), "items"),
        (
            json!({"kind": "decimal-fractions", "n": 1, "places": 20}),
            "places",
        ),
        (
            json!({"kind": "strings", "n": 1000, "length": 1001, "characters": "ab"}),
            "1000000",
        ),
        (
            json!({"kind": "strings", "n": 1, "length": 3, "characters": "aab"}),
            "repeat",
        ),
        (json!({"kind": "uuids", "n": 100001}), "100000"),
    ];
    for (body, want) in cases {
        let d: Draw = serde_json::from_value(body.clone()).unwrap();
        let e = d.check().unwrap_err();
        assert!(e.contains(want), "{body}: {e}");
    }
}

#[test]
fn pruning_a_pulse_deletes_the_draws_it_committed_to() {
    let dir = tempfile::tempdir().unwrap();
    let store = lokey::store::Store::open(dir.path(), &Default::default()).unwrap();
    let regs = registrations();
    let leaves: Vec<[u8; 32]> = regs.iter().map(|r| r.leaf().unwrap()).collect();
    for (r, leaf) in regs.iter().zip(&leaves) {
        let ticket = store.draws().insert(r, leaf).unwrap();
        store.draws().durable(ticket).unwrap();
    }
    assert_eq!(store.draws().leaves(9, 2).unwrap(), leaves);
    let (_, got) = store.draws().get(9, 2, 3).unwrap().unwrap();
    assert_eq!(got, regs[3]);
    let pulses = pulses(draw::merkle_root(&leaves));
    let state = beacon::ChainState {
        epoch: 9,
        clean: false,
        chain_index: 9,
        period_ms: 60_000,
        key_id: String::new(),
        serial: String::new(),
        last: None,
        next_local: None,
        start_status: None,
    };
    for p in &pulses {
        store.beacon().publish(p, &state, None).unwrap();
    }
    // Pulse 1 goes: nothing was committed to it. Then pulse 2 goes, with its draws.
    assert_eq!(store.beacon().prune(pulses[1].time_ms).unwrap(), 1);
    assert_eq!(store.draws().leaves(9, 2).unwrap().len(), regs.len());
    assert_eq!(store.beacon().prune(pulses[2].time_ms).unwrap(), 1);
    assert!(store.draws().leaves(9, 2).unwrap().is_empty());
    assert_eq!(store.draws().get(9, 2, 3).unwrap(), None);
}
