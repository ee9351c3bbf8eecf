//! Suite: beacon. The pulse format against the published test vectors
//! (`docs/beacon-vectors.json`, regenerated with `LOKEY_WRITE_VECTORS=1` — then review the
//! diff: a change means the format changed), offline verification of a chain, and every
//! single-field tampering caught by the check that owns the field.

use std::path::Path;

use lokey::beacon::{self, PublicKey, Pulse, PulseJson, status, verify};
use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha512};

/// The vectors' key: scalar = SHA-256("lokey beacon test vector key").
fn test_key() -> SigningKey {
    let scalar = Sha256::digest(b"lokey beacon test vector key");
    SigningKey::from_slice(&scalar).unwrap()
}

fn public(key: &SigningKey) -> PublicKey {
    let point = key.verifying_key().to_sec1_point(false);
    PublicKey::from_xy(point.as_bytes()[1..].try_into().unwrap()).unwrap()
}

/// Bytes derived from a label, so every field of the vectors is reproducible.
fn filled<const N: usize>(label: &str) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, chunk) in out.chunks_mut(64).enumerate() {
        let h = Sha512::digest(format!("{label} {i}").as_bytes());
        chunk.copy_from_slice(&h[..chunk.len()]);
    }
    out
}

fn sign(key: &SigningKey, pulse: &mut Pulse) {
    let signature: p256::ecdsa::Signature = key.sign_prehash(&pulse.digest()).unwrap();
    pulse.signature = signature.to_bytes().into();
}

/// A chain of three pulses (the third after a time gap) signed by the test key.
fn chain() -> Vec<Pulse> {
    let key = test_key();
    let key_id = public(&key).key_id();
    let locals: Vec<[u8; 64]> = (1..=4).map(|i| filled(&format!("local {i}"))).collect();
    let mut pulses: Vec<Pulse> = Vec::new();
    for (i, time_ms) in [1_796_400_000_000u64, 1_796_400_060_000, 1_796_400_180_000]
        .into_iter()
        .enumerate()
    {
        let mut p = Pulse {
            chain_index: 7,
            pulse_index: i as u64 + 1,
            time_ms,
            period_ms: 60_000,
            serial: [0x01, 0x23, 0x9a, 0x4c, 0x11, 0x22, 0x33, 0x44, 0xee],
            key_id,
            local_random: locals[i],
            precommitment: Sha512::digest(locals[i + 1]).into(),
            previous_output: pulses.last().map_or([0; 64], Pulse::output),
            counter: 7 + (i as u32 / 2),
            status: match i {
                0 => status::CHAIN_START | status::UNCLEAN_STOP,
                2 => status::TIME_GAP,
                _ => 0,
            },
            commitment: if i == 1 {
                filled("merkle root")
            } else {
                [0; 32]
            },
            signature: [0; 64],
        };
        sign(&key, &mut p);
        pulses.push(p);
    }
    pulses
}

fn vectors() -> Value {
    let key = test_key();
    let public = public(&key);
    let pulses: Vec<Value> = chain()
        .iter()
        .map(|p| {
            json!({
                "message": beacon::hex(&p.message()),
                "digest": beacon::hex(&p.digest()),
                "pulse": p.to_json(),
            })
        })
        .collect();
    json!({
        "description": "lokey beacon pulse test vectors, version 1 (docs/beacon.md). The key's \
            private scalar is SHA-256(\"lokey beacon test vector key\"); signatures are one \
            valid signature each (RFC 6979), not the only one. Each 'tampered' entry changes \
            one member of the given pulse; verification of the whole chain with it must fail.",
        "privateScalar": beacon::hex(&key.to_bytes()),
        "publicKey": beacon::hex(&public.xy()),
        "publicKeyPem": public.pem(),
        "spkiDer": beacon::hex(&public.spki_der()),
        "keyId": beacon::hex(&public.key_id()),
        "pulses": pulses,
        "tampered": tampered_cases()
            .into_iter()
            .map(|(index, member, value, check)| json!({
                "pulse": index, "member": member, "value": value, "failsCheck": check
            }))
            .collect::<Vec<_>>(),
    })
}

/// One changed member per case: (pulse position, member, new value, the check that fails).
fn tampered_cases() -> Vec<(usize, &'static str, Value, &'static str)> {
    let pulses: Vec<PulseJson> = chain().iter().map(Pulse::to_json).collect();
    let flip = |hex: &str| {
        let mut bytes = beacon::from_hex(hex).unwrap();
        bytes[0] ^= 1;
        Value::String(beacon::hex(&bytes))
    };
    vec![
        (
            1,
            "localRandomValue",
            flip(&pulses[1].local_random_value),
            "output",
        ),
        (1, "outputValue", flip(&pulses[1].output_value), "output"),
        (
            1,
            "signatureValue",
            flip(&pulses[1].signature_value),
            "signature",
        ),
        (
            1,
            "commitmentValue",
            flip(&pulses[1].commitment_value),
            "output",
        ),
        (
            0,
            "precommitmentValue",
            flip(&pulses[0].precommitment_value),
            "output",
        ),
        (2, "timeStamp", json!("2026-12-04T16:03:00.001Z"), "output"),
        (2, "counter", json!(9), "output"),
        (2, "statusCode", json!(0), "output"),
        (0, "keyId", flip(&pulses[0].key_id), "output"),
        (1, "serialNumber", flip(&pulses[1].serial_number), "output"),
    ]
}

fn vector_file() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/beacon-vectors.json")
}

#[test]
fn the_published_vectors_are_what_this_implementation_computes() {
    let computed = vectors();
    let path = vector_file();
    if std::env::var_os("LOKEY_WRITE_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&computed).unwrap() + "\n";
        std::fs::write(&path, text).unwrap();
    }
    let published: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        published, computed,
        "docs/beacon-vectors.json differs from what the code computes"
    );
}

#[test]
fn the_vectors_message_layout_is_the_documents() {
    let p = &chain()[1];
    let m = p.message();
    assert_eq!(m.len(), 321);
    assert_eq!(&m[..18], b"lokey beacon pulse");
    assert_eq!(&m[18..20], &[0, 1]);
    assert_eq!(&m[20..28], &7u64.to_be_bytes());
    assert_eq!(&m[28..36], &2u64.to_be_bytes());
    assert_eq!(&m[36..44], &1_796_400_060_000u64.to_be_bytes());
    assert_eq!(&m[44..48], &60_000u32.to_be_bytes());
    assert_eq!(&m[48..57], &p.serial);
    assert_eq!(&m[57..89], &p.key_id);
    assert_eq!(&m[89..153], &p.local_random);
    assert_eq!(&m[153..217], &p.precommitment);
    assert_eq!(&m[217..281], &p.previous_output);
    assert_eq!(&m[281..285], &p.counter.to_be_bytes());
    assert_eq!(&m[285..289], &p.status.to_be_bytes());
    assert_eq!(&m[289..321], &p.commitment);
    let output: [u8; 64] = Sha512::digest(m).into();
    assert_eq!(p.output(), output);
    assert_eq!(Pulse::from_record(&p.to_record()).unwrap(), *p);
}

fn checked(pulses: &[PulseJson]) -> Vec<(Pulse, Option<[u8; 64]>)> {
    pulses
        .iter()
        .map(|j| (j.to_pulse().unwrap(), Some(j.published_output().unwrap())))
        .collect()
}

#[test]
fn a_valid_chain_verifies_and_says_how_much_was_checked() {
    let pulses: Vec<PulseJson> = chain().iter().map(Pulse::to_json).collect();
    let report = verify(&checked(&pulses), &public(&test_key())).unwrap();
    assert_eq!((report.pulses, report.links, report.chains), (3, 2, 1));
    assert!(!report.emulated);
}

#[test]
fn every_tampered_member_fails_verification_at_its_check() {
    let key = public(&test_key());
    for (index, member, value, check) in tampered_cases() {
        let mut pulses: Vec<Value> = chain()
            .iter()
            .map(|p| serde_json::to_value(p.to_json()).unwrap())
            .collect();
        pulses[index][member] = value;
        let pulses: Vec<PulseJson> = pulses
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect();
        let e = verify(&checked(&pulses), &key).expect_err(member);
        assert_eq!(e.check, check, "{member}: {e}");
    }
}

/// Changes that keep each pulse's own output and signature valid (re-signed by the key) but
/// break the chain: each is caught by the link check that owns it.
#[test]
fn re_signed_pulses_that_break_the_chain_fail_at_the_link() {
    let key = test_key();
    let public = public(&key);
    #[allow(clippy::type_complexity, reason = "a table of named tamperings")]
    let cases: Vec<(&str, Box<dyn Fn(&mut Vec<Pulse>)>)> = vec![
        ("pulse index", Box::new(|c| c[2].pulse_index = 4)),
        (
            "previous output",
            Box::new(|c| c[1].previous_output[5] ^= 1),
        ),
        ("precommitment", Box::new(|c| c[2].local_random[0] ^= 1)),
        ("time", Box::new(|c| c[1].time_ms = c[0].time_ms + 59_999)),
        ("period", Box::new(|c| c[2].period_ms = 30_000)),
        ("chain start", Box::new(|c| c[0].status = 0)),
    ];
    for (check, change) in cases {
        let mut pulses = chain();
        change(&mut pulses);
        for p in &mut pulses {
            sign(&key, p);
        }
        let with_outputs: Vec<_> = pulses.iter().map(|p| (p.clone(), None)).collect();
        let e = verify(&with_outputs, &public).unwrap_err();
        assert_eq!(e.check, check, "{e}");
    }
}

#[test]
fn another_key_is_refused_by_key_id_and_a_forged_id_by_signature() {
    let pulses = chain();
    let other = public(&SigningKey::from_slice(&[7u8; 32]).unwrap());
    let with_outputs: Vec<_> = pulses.iter().map(|p| (p.clone(), None)).collect();
    assert_eq!(verify(&with_outputs, &other).unwrap_err().check, "key id");
    let mut forged = pulses[0].clone();
    forged.key_id = other.key_id();
    assert_eq!(
        verify(&[(forged, None)], &other).unwrap_err().check,
        "signature"
    );
}

#[test]
fn public_keys_parse_from_every_documented_form() {
    let key = public(&test_key());
    let xy = beacon::hex(&key.xy());
    for text in [
        xy.clone(),
        format!("04{xy}"),
        key.pem(),
        beacon::hex(&key.spki_der()),
    ] {
        assert_eq!(PublicKey::parse(&text).unwrap(), key, "{text}");
    }
    assert!(PublicKey::parse("04").is_err());
    // A point off the curve.
    assert!(PublicKey::parse(&"11".repeat(64)).is_err());
}

#[test]
fn the_store_finds_pulses_by_index_and_time_and_prunes_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = lokey::store::Store::open(dir.path(), &Default::default()).unwrap();
    let pulses = store.beacon();
    assert_eq!(pulses.last().unwrap(), None);
    let chain = chain();
    let state = |p: &Pulse| beacon::ChainState {
        epoch: 7,
        clean: false,
        chain_index: 7,
        period_ms: 60_000,
        key_id: beacon::hex(&p.key_id),
        serial: beacon::hex(&p.serial),
        last: Some(beacon::LastPulse {
            pulse_index: p.pulse_index,
            time_ms: p.time_ms,
            output: beacon::hex(&p.output()),
        }),
        next_local: None,
    };
    for p in &chain {
        pulses.publish(p, &state(p), None).unwrap();
    }
    assert_eq!(pulses.state().unwrap(), Some(state(&chain[2])));
    assert_eq!(pulses.last().unwrap().as_ref(), Some(&chain[2]));
    assert_eq!(pulses.pulse(7, 2).unwrap().as_ref(), Some(&chain[1]));
    assert_eq!(pulses.pulse(7, 4).unwrap(), None);
    let (t0, t1) = (chain[0].time_ms, chain[1].time_ms);
    assert_eq!(pulses.at(t1).unwrap().as_ref(), Some(&chain[1]));
    // Closest: 20 s after pulse 1 is nearer it; 40 s after, nearer pulse 2.
    assert_eq!(pulses.at(t0 + 20_000).unwrap().as_ref(), Some(&chain[0]));
    assert_eq!(pulses.at(t0 + 40_000).unwrap().as_ref(), Some(&chain[1]));
    assert_eq!(pulses.before(t1).unwrap().as_ref(), Some(&chain[0]));
    assert_eq!(pulses.after(t1).unwrap().as_ref(), Some(&chain[2]));
    assert_eq!(pulses.before(t0).unwrap(), None);
    assert_eq!(pulses.run(7, 2, 10).unwrap(), chain[1..].to_vec());
    // Pulses older than pulse 3 go; the rest stay, and survive a reopen.
    assert_eq!(pulses.prune(chain[2].time_ms).unwrap(), 2);
    drop((pulses, store));
    let store = lokey::store::Store::open(dir.path(), &Default::default()).unwrap();
    let pulses = store.beacon();
    assert_eq!(pulses.pulse(7, 1).unwrap(), None);
    assert_eq!(pulses.at(t0).unwrap().as_ref(), Some(&chain[2]));
    assert_eq!(pulses.run(7, 1, 10).unwrap(), chain[2..].to_vec());
}
