//! Draws end to end: registered over REST and the CLI, committed to by a pulse, decided by the
//! next, receipts verified offline (`lokey verify`) and by the independent Python verifier;
//! many draws in one batch; a registration survives a clean restart and is decided by the same
//! chain; after `kill -9` it is undecidable and no later pulse decides it.

mod util;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use util::{Daemon, lokey, within};

fn start(dir: &Path, period_ms: &str) -> Daemon {
    Daemon::start_with_socket(
        &["--beacon-period-ms", period_ms],
        dir,
        &dir.join("lokey.sock"),
    )
}

fn post(d: &Daemon, body: &Value) -> (u16, Value) {
    let (code, text) = d.request(
        "POST",
        "/api/v1/draws",
        &["Content-Type: application/json"],
        &body.to_string(),
    );
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn draw(d: &Daemon, id: &str) -> (u16, Value) {
    let (code, text) = d.get(&format!("/api/v1/draws/{id}"));
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Registers once the beacon has begun its chain.
fn register(d: &Daemon, body: Value) -> Value {
    let mut ticket = Value::Null;
    within(
        Duration::from_secs(20),
        || {
            let (code, t) = post(d, &body);
            ticket = t;
            code == 200
        },
        "a registration accepted",
    );
    ticket
}

fn decided(d: &Daemon, id: &str) -> Value {
    let mut answer = Value::Null;
    within(
        Duration::from_secs(20),
        || {
            answer = draw(d, id).1;
            answer["status"] != "pending"
        },
        "the draw decided",
    );
    answer
}

fn pubkey(d: &Daemon) -> String {
    let (_, text) = d.get("/api/v1/identity");
    let id: Value = serde_json::from_str(&text).unwrap();
    id["publicKey"].as_str().unwrap().to_string()
}

fn lotto() -> Value {
    json!({"kind": "integers", "n": 6, "min": 1, "max": 49, "unique": true, "label": "Lotto 6/49"})
}

#[test]
fn a_draw_is_registered_committed_decided_and_its_receipt_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), "500");
    let ticket = register(&d, lotto());
    let id = ticket["id"].as_str().unwrap();
    assert_eq!(ticket["status"], "pending");
    assert_eq!(
        ticket["pulseIndex"].as_u64().unwrap(),
        ticket["commitPulseIndex"].as_u64().unwrap() + 1
    );
    let answer = decided(&d, id);
    assert_eq!(answer["status"], "decided", "{answer}");
    let values: Vec<i64> = answer["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(values.len(), 6);
    assert!(values.iter().all(|v| (1..=49).contains(v)));
    let receipt = &answer["receipt"];
    assert_eq!(receipt["leaf"], ticket["leaf"]);
    // The commit pulse's commitment is the root the path leads to; verified offline.
    let file = dir.path().join("receipt.json");
    std::fs::write(&file, receipt.to_string()).unwrap();
    let key = pubkey(&d);
    let out = util::lokey_cmd()
        .args(["verify", "--pubkey", &key, file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // The same receipt, one value changed: invalid, naming the step.
    let mut forged = receipt.clone();
    forged["values"][0] = json!(values[0] % 49 + 1);
    std::fs::write(&file, forged.to_string()).unwrap();
    let out = util::lokey_cmd()
        .args(["verify", "--pubkey", &key, file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("values failed"));
    // Bad requests change nothing and name the field; unknown ids are 404.
    let (code, e) = post(
        &d,
        &json!({"kind": "integers", "n": 6, "min": 1, "max": 49}),
    );
    assert_eq!(code, 400);
    assert!(e["error"].as_str().unwrap().contains("label"), "{e}");
    let (code, _) = post(
        &d,
        &json!({"kind": "integers", "n": 60, "min": 1, "max": 49, "unique": true, "label": "x"}),
    );
    assert_eq!(code, 400);
    assert_eq!(draw(&d, "1-999999-0").0, 404);
    assert_eq!(draw(&d, "nonsense").0, 400);
}

/// The independent verifier (`scripts/verify-beacon.py`, written from the documents alone)
/// checks the vectors' receipts and a live one; CI installs what it needs and must run it.
#[test]
fn the_independent_python_verifier_checks_receipts() {
    let Some(_) = util::python_verifier() else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let run = |args: &[&str]| {
        util::python_verifier()
            .unwrap()
            .args(args)
            .output()
            .unwrap()
    };
    let vectors = root.join("docs/draws-vectors.json");
    let out = run(&["--draw-vectors", vectors.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), "500");
    let ticket = register(
        &d,
        json!({"kind": "strings", "n": 3, "length": 10, "charset": "base64url", "label": "codes", "nonce": "00ff"}),
    );
    let answer = decided(&d, ticket["id"].as_str().unwrap());
    let file = dir.path().join("receipt.json");
    std::fs::write(&file, answer["receipt"].to_string()).unwrap();
    let out = run(&["--pubkey", &pubkey(&d), "--receipt", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn many_draws_in_one_period_share_one_signed_root_and_each_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), "3000");
    register(&d, lotto());
    let tickets: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let d = &d;
                s.spawn(move || {
                    (0..50)
                        .map(|i| {
                            post(
                                d,
                                &json!({"kind": "uuids", "n": 1, "label": format!("{t}/{i}")}),
                            )
                            .1
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let ids: std::collections::BTreeSet<&str> =
        tickets.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 200, "every registration has its own id");
    let key = lokey::beacon::PublicKey::parse(&pubkey(&d)).unwrap();
    let mut roots = std::collections::BTreeSet::new();
    for t in tickets.iter().step_by(13) {
        let answer = decided(&d, t["id"].as_str().unwrap());
        let receipt: lokey::draw::Receipt =
            serde_json::from_value(answer["receipt"].clone()).unwrap();
        lokey::draw::verify_receipt(&receipt, &key).unwrap();
        assert!(receipt.tree_size >= 2);
        roots.insert((
            receipt.commit_pulse.pulse_index,
            receipt.commit_pulse.commitment_value.clone(),
        ));
    }
    // One signature per pulse however many draws: a few roots at most for 200 draws.
    assert!(roots.len() <= 3, "{roots:?}");
    let signatures = d.status()["beacon"]["signatures"].as_u64().unwrap();
    let pulses = d.status()["beacon"]["pulses"].as_u64().unwrap();
    assert!(
        signatures <= pulses + 3,
        "{signatures} signatures for {pulses} pulses"
    );
}

#[test]
fn a_registration_survives_a_clean_restart_and_is_decided_by_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = start(dir.path(), "2000");
    let ticket = register(&d, lotto());
    assert_eq!(d.stop(), Some(0));
    let d = start(dir.path(), "2000");
    let answer = decided(&d, ticket["id"].as_str().unwrap());
    assert_eq!(answer["status"], "decided", "{answer}");
    assert_eq!(answer["receipt"]["leaf"], ticket["leaf"]);
    assert_eq!(
        answer["receipt"]["commitPulse"]["chainIndex"],
        ticket["chainIndex"]
    );
}

#[test]
fn after_kill_9_a_pending_draw_is_undecidable_and_stays_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = start(dir.path(), "3000");
    // Register just after a pulse, so that the kill comes before the commit pulse.
    let first = register(&d, lotto());
    let commit = first["commitPulseIndex"].as_u64().unwrap();
    within(
        Duration::from_secs(10),
        || {
            let (_, t) = d.get("/api/v1/beacon/pulse/last");
            serde_json::from_str::<Value>(&t).unwrap()["pulse"]["pulseIndex"].as_u64()
                == Some(commit)
        },
        "the first draw's commit pulse",
    );
    let ticket = register(&d, lotto());
    d.signal(nix::sys::signal::Signal::SIGKILL);
    d.wait_for_exit(Duration::from_secs(5)).unwrap();
    let d = start(dir.path(), "500");
    let id = ticket["id"].as_str().unwrap();
    let answer = decided(&d, id);
    assert_eq!(answer["status"], "undecidable", "{answer}");
    assert!(
        answer["reason"].as_str().unwrap().contains("new chain"),
        "{answer}"
    );
    // Pulses of the new chain come and go; the draw is never decided by them.
    let (_, t) = d.get("/api/v1/beacon/pulse/last");
    let start_index = serde_json::from_str::<Value>(&t).unwrap()["pulse"]["pulseIndex"]
        .as_u64()
        .unwrap_or(0);
    within(
        Duration::from_secs(20),
        || {
            let (_, t) = d.get("/api/v1/beacon/pulse/last");
            serde_json::from_str::<Value>(&t).unwrap()["pulse"]["pulseIndex"]
                .as_u64()
                .is_some_and(|p| p > start_index.max(ticket["pulseIndex"].as_u64().unwrap()))
        },
        "the new chain past the draw's pulse index",
    );
    assert_eq!(draw(&d, id).1["status"], "undecidable");
    // The first draw was committed before the kill: its deciding pulse never came either.
    assert_eq!(
        draw(&d, first["id"].as_str().unwrap()).1["status"],
        "undecidable"
    );
    // The CLI says so with exit 1.
    let out = lokey(&d, &["draw", "get", id]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}
