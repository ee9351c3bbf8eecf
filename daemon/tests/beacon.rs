//! The beacon end to end: a real `lokeyd` on the emulator publishing at a short period
//! (`--beacon-period-ms`), its REST routes and CLI, offline verification by `lokey verify` and
//! by the independent Python verifier, chains across clean restarts, `kill -9`, restored
//! backups and a new key, and the signing faults.
//!
//! `BEACON_KILL_CYCLES` sets the cycles of the `kill -9` test (default 50).

mod util;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use lokey::beacon::{self, PublicKey, Pulse, PulseJson, status};
use nix::sys::signal::Signal;
use rand_like::Rng;
use serde_json::Value;
use util::{Daemon, lokey, within};

/// The period the tests run the beacon at.
const PERIOD_MS: &str = "500";

fn start(dir: &Path, extra: &[&str]) -> Daemon {
    let mut args = vec!["--beacon-period-ms", PERIOD_MS];
    args.extend_from_slice(extra);
    Daemon::start_with_socket(&args, dir, &dir.join("lokey.sock"))
}

fn json(d: &Daemon, path: &str) -> (u16, Value) {
    let (code, body) = d.get(path);
    (
        code,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")),
    )
}

fn last(d: &Daemon) -> Option<PulseJson> {
    let (code, v) = json(d, "/api/v1/beacon/pulse/last");
    (code == 200).then(|| serde_json::from_value(v["pulse"].clone()).unwrap())
}

/// Waits until the newest pulse has an index of at least `n` in some chain.
fn wait_for_pulses(d: &Daemon, n: u64) -> PulseJson {
    let mut seen = None;
    within(
        Duration::from_secs(20),
        || {
            seen = last(d).filter(|p| p.pulse_index >= n);
            seen.is_some()
        },
        "beacon pulses",
    );
    seen.unwrap()
}

fn key(d: &Daemon) -> PublicKey {
    let (code, id) = json(d, "/api/v1/identity");
    assert_eq!(code, 200, "{id}");
    PublicKey::parse(id["publicKey"].as_str().unwrap()).unwrap()
}

/// Every pulse of `chain` from the daemon, as a pulse file.
fn run(d: &Daemon, chain: u64) -> Value {
    let (code, v) = json(
        d,
        &format!("/api/v1/beacon/chain/{chain}/pulses?count=1000"),
    );
    assert_eq!(code, 200, "{v}");
    v
}

fn pulses_of(file: &Value) -> Vec<(Pulse, Option<[u8; 64]>)> {
    beacon::parse_pulse_file(&file.to_string())
        .unwrap()
        .pulses
        .iter()
        .map(|p| (p.to_pulse().unwrap(), Some(p.published_output().unwrap())))
        .collect()
}

#[test]
fn pulses_are_served_like_nists_and_verify_offline() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), &[]);
    let newest = wait_for_pulses(&d, 4);
    let key = key(&d);
    let chain = newest.chain_index;
    // The first pulse of the first chain of a new store.
    let (code, first) = json(&d, &format!("/api/v1/beacon/chain/{chain}/pulse/1"));
    assert_eq!(code, 200);
    let first: PulseJson = serde_json::from_value(first["pulse"].clone()).unwrap();
    assert_eq!(
        first.status_code,
        status::CHAIN_START | status::FIRST | status::EMULATED
    );
    assert_eq!(first.previous_output_value, "0".repeat(128));
    assert!(first.emulated);
    // By time: exactly, the closest, previous and next.
    let (_, second) = json(&d, &format!("/api/v1/beacon/chain/{chain}/pulse/2"));
    let t2 = beacon::parse_rfc3339_ms(second["pulse"]["timeStamp"].as_str().unwrap()).unwrap();
    let index_at = |path: String| json(&d, &path).1["pulse"]["pulseIndex"].as_u64();
    assert_eq!(index_at(format!("/api/v1/beacon/pulse/time/{t2}")), Some(2));
    assert_eq!(
        index_at(format!("/api/v1/beacon/pulse/time/{}", t2 + 10)),
        Some(2)
    );
    assert_eq!(
        index_at(format!("/api/v1/beacon/pulse/time/previous/{t2}")),
        Some(1)
    );
    assert_eq!(
        index_at(format!("/api/v1/beacon/pulse/time/next/{t2}")),
        Some(3)
    );
    assert_eq!(json(&d, "/api/v1/beacon/pulse/time/previous/0").0, 404);
    assert_eq!(json(&d, "/api/v1/beacon/chain/999999/pulse/1").0, 404);
    assert_eq!(json(&d, "/api/v1/beacon/chain/1x/pulse/1").0, 400);
    // The chain's parameters name the key.
    let (code, info) = json(&d, &format!("/api/v1/beacon/chain/{chain}"));
    assert_eq!(code, 200);
    assert_eq!(info["chain"]["keyId"], beacon::hex(&key.key_id()));
    assert_eq!(info["chain"]["period"], 500);
    assert_eq!(info["chain"]["genesis"], first.time_stamp);
    // The whole run verifies, and the daemon's identity agrees with the CLI's.
    let file = run(&d, chain);
    let report = beacon::verify(&pulses_of(&file), &key).unwrap();
    assert!(report.pulses >= 4 && report.links == report.pulses - 1);
    let out = lokey(&d, &["device", "pubkey", "--json"]);
    let id: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(id["keyId"], beacon::hex(&key.key_id()));
    assert_eq!(id["pin"], format!("sha256:{}", beacon::hex(&key.key_id())));
    // Health, status and metrics know the beacon.
    let (_, health) = json(&d, "/api/v1/health");
    assert_eq!(health["details"]["beacon"], true, "{health}");
    let status = d.status();
    assert!(status["beacon"]["pulses"].as_u64().unwrap() >= 4);
    assert!(status["beacon"]["signatures"].as_u64().unwrap() >= 4);
    let (_, metrics) = d.get("/metrics");
    assert!(metrics.contains("lokey_beacon_pulses_total "), "{metrics}");
    assert!(metrics.contains("lokey_component_healthy{component=\"beacon\"} 1"));
}

#[test]
fn lokey_verify_accepts_the_run_and_names_what_a_change_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), &[]);
    let newest = wait_for_pulses(&d, 3);
    let file = dir.path().join("run.json");
    let out = lokey(
        &d,
        &[
            "beacon",
            "run",
            &newest.chain_index.to_string(),
            "--count",
            "3",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    std::fs::write(&file, &out.stdout).unwrap();
    let pubkey = beacon::hex(&key(&d).xy());
    let verify = |args: &[&str]| {
        let mut all = vec!["verify"];
        all.extend_from_slice(args);
        util::lokey_cmd().args(&all).output().unwrap()
    };
    let ok = verify(&["--pubkey", &pubkey, file.to_str().unwrap()]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("valid: 3 pulse(s), 2 chain link(s)"));
    // Without --pubkey the file's key is used, with a warning.
    let warned = verify(&[file.to_str().unwrap()]);
    assert_eq!(warned.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&warned.stderr).contains("Pin the key"));
    // One changed hex digit of the middle pulse's local random value: its output fails.
    let text = String::from_utf8(out.stdout).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    let local = v["pulses"][1]["pulse"]["localRandomValue"]
        .as_str()
        .unwrap()
        .to_string();
    let flipped = format!(
        "{}{}",
        if local.starts_with('0') { "1" } else { "0" },
        &local[1..]
    );
    v["pulses"][1]["pulse"]["localRandomValue"] = Value::String(flipped);
    std::fs::write(&file, v.to_string()).unwrap();
    let bad = verify(&["--pubkey", &pubkey, file.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stdout).contains("output failed"),
        "{bad:?}"
    );
    // Not a pulse file, and no key at all: errors (exit 2).
    std::fs::write(&file, "hello").unwrap();
    assert_eq!(
        verify(&["--pubkey", &pubkey, file.to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
    let single = dir.path().join("one.json");
    let out = lokey(&d, &["beacon", "last", "--json"]);
    std::fs::write(&single, &out.stdout).unwrap();
    assert_eq!(verify(&[single.to_str().unwrap()]).status.code(), Some(2));
    assert_eq!(
        verify(&["--pubkey", &pubkey, single.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn lokey_beacon_watch_prints_each_new_pulse_once() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), &[]);
    wait_for_pulses(&d, 1);
    let mut watch = util::lokey_cmd()
        .arg("--socket")
        .arg(d.socket())
        .args(["beacon", "watch", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut indexes = Vec::new();
    for _ in 0..3 {
        let line = lines.next().unwrap().unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        indexes.push(v["pulse"]["pulseIndex"].as_u64().unwrap());
    }
    watch.kill().unwrap();
    let _ = watch.wait();
    assert!(
        indexes.windows(2).all(|w| w[1] == w[0] + 1),
        "each pulse once, in order: {indexes:?}"
    );
}

/// Runs the independent verifier with `args`, if it can run here.
fn python_verifier(args: &[&str]) -> Option<std::process::Output> {
    util::python_verifier().map(|mut cmd| cmd.args(args).output().unwrap())
}

#[test]
fn the_independent_python_verifier_accepts_the_vectors_and_live_pulses() {
    let vectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/beacon-vectors.json");
    let Some(out) = python_verifier(&["--vectors", vectors.to_str().unwrap()]) else {
        return;
    };
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), &[]);
    let newest = wait_for_pulses(&d, 4);
    let file = dir.path().join("run.json");
    std::fs::write(&file, run(&d, newest.chain_index).to_string()).unwrap();
    let pubkey = beacon::hex(&key(&d).xy());
    let out = python_verifier(&["--pubkey", &pubkey, file.to_str().unwrap()]).unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // A changed signature is refused by it too.
    let mut v = run(&d, newest.chain_index);
    let sig = v["pulses"][2]["pulse"]["signatureValue"]
        .as_str()
        .unwrap()
        .to_string();
    let flipped = format!(
        "{}{}",
        &sig[..10],
        if &sig[10..11] == "0" { "1" } else { "0" }
    ) + &sig[11..];
    v["pulses"][2]["pulse"]["signatureValue"] = Value::String(flipped);
    std::fs::write(&file, v.to_string()).unwrap();
    let out = python_verifier(&["--pubkey", &pubkey, file.to_str().unwrap()]).unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn a_clean_restart_continues_the_chain_and_keeps_its_precommitment() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = start(dir.path(), &[]);
    let before = wait_for_pulses(&d, 2);
    assert_eq!(d.stop(), Some(0));
    let d = start(dir.path(), &[]);
    let after = wait_for_pulses(&d, before.pulse_index + 2);
    assert_eq!(after.chain_index, before.chain_index, "the chain continues");
    let file = run(&d, after.chain_index);
    let pulses = pulses_of(&file);
    beacon::verify(&pulses, &key(&d)).unwrap();
    // The restart shows as a time gap, not a chain start.
    let gaps = pulses
        .iter()
        .filter(|(p, _)| p.status & status::TIME_GAP != 0)
        .count();
    assert!(gaps >= 1, "no time gap across the restart");
    assert!(
        pulses
            .iter()
            .all(|(p, _)| (p.status & status::CHAIN_START != 0) == (p.pulse_index == 1))
    );
}

/// Observed pulses by (chain, index): a pulse seen once must never change.
fn record(seen: &mut BTreeMap<(u64, u64), String>, p: &PulseJson) {
    let key = (p.chain_index, p.pulse_index);
    let text = serde_json::to_string(p).unwrap();
    if let Some(old) = seen.insert(key, text.clone()) {
        assert_eq!(
            old, text,
            "pulse {key:?} changed after it was published: a fork"
        );
    }
}

#[test]
fn kill_9_never_reuses_an_index_forks_or_breaks_a_precommitment() {
    let cycles: usize = std::env::var("BEACON_KILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(0x5eed_1234);
    let mut seen = BTreeMap::new();
    let mut chains = Vec::new();
    for cycle in 0..cycles {
        let mut d = start(dir.path(), &[]);
        let life = Duration::from_millis(rng.below(1500));
        let until = std::time::Instant::now() + life;
        while std::time::Instant::now() < until {
            if let Some(p) = last(&d) {
                if chains.last() != Some(&p.chain_index) {
                    chains.push(p.chain_index);
                }
                record(&mut seen, &p);
            }
            std::thread::sleep(Duration::from_millis(40));
        }
        // One cycle in five stops cleanly; the rest are killed wherever they are.
        if cycle % 5 == 4 {
            assert_eq!(d.stop(), Some(0));
        } else {
            d.signal(Signal::SIGKILL);
            d.wait_for_exit(Duration::from_secs(5)).unwrap();
        }
    }
    let d = start(dir.path(), &[]);
    let newest = wait_for_pulses(&d, 2);
    record(&mut seen, &newest);
    let key = key(&d);
    assert!(
        chains.windows(2).all(|w| w[0] < w[1]),
        "chain indexes must only grow: {chains:?}"
    );
    // Every chain ever observed verifies as a whole, and holds every pulse seen unchanged.
    let mut verified = 0;
    let all_chains: std::collections::BTreeSet<u64> = seen.keys().map(|(c, _)| *c).collect();
    for chain in all_chains {
        let file = run(&d, chain);
        let pulses = pulses_of(&file);
        let report = beacon::verify(&pulses, &key).unwrap_or_else(|e| panic!("chain {chain}: {e}"));
        verified += report.pulses;
        for (p, _) in &pulses {
            if let Some(old) = seen.get(&(p.chain_index, p.pulse_index)) {
                let now = serde_json::to_string(&p.to_json()).unwrap();
                assert_eq!(
                    *old, now,
                    "pulse {}/{} changed",
                    p.chain_index, p.pulse_index
                );
            }
        }
        let first = &pulses[0].0;
        assert_eq!(first.pulse_index, 1, "chain {chain} lost its first pulse");
    }
    assert!(
        verified >= seen.len(),
        "{verified} verified, {} seen",
        seen.len()
    );
    eprintln!(
        "beacon kill -9: {cycles} cycles, {} chains, {verified} pulses verified",
        chains.len()
    );
}

/// Copies the store (not the emulated chip's state, which stands for the chip itself).
fn copy_store(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).unwrap();
        if rel == Path::new("emulated-chip.json") {
            continue;
        }
        let target = to.join(rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else {
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(&entry, &target).unwrap();
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if p.is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

#[test]
fn a_store_restored_from_a_backup_starts_a_new_chain_with_a_new_index() {
    let dir = tempfile::tempdir().unwrap();
    let backup = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // An offline backup after a first run.
    let mut d = start(dir.path(), &[]);
    let first = wait_for_pulses(&d, 2);
    assert_eq!(d.stop(), Some(0));
    copy_store(&data, backup.path());
    // Later runs publish more.
    let mut d = start(dir.path(), &[]);
    let later = wait_for_pulses(&d, first.pulse_index + 3);
    assert_eq!(later.chain_index, first.chain_index);
    assert_eq!(d.stop(), Some(0));
    // Restore: the store's pulses stop at the backup, but the chip's counter went on.
    for e in std::fs::read_dir(&data).unwrap() {
        let p = e.unwrap().path();
        if p.file_name() != Some(std::ffi::OsStr::new("emulated-chip.json")) {
            if p.is_dir() {
                std::fs::remove_dir_all(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        }
    }
    copy_store(backup.path(), &data);
    let d = start(dir.path(), &[]);
    let mut newest = None;
    within(
        Duration::from_secs(20),
        || {
            newest = last(&d).filter(|p| p.chain_index != first.chain_index);
            newest.is_some()
        },
        "a new chain after the restore",
    );
    let newest = newest.unwrap();
    assert!(newest.chain_index > later.chain_index, "{newest:?}");
    let (_, start_pulse) = json(
        &d,
        &format!("/api/v1/beacon/chain/{}/pulse/1", newest.chain_index),
    );
    let code = start_pulse["pulse"]["statusCode"].as_u64().unwrap() as u32;
    assert_ne!(code & status::CHAIN_START, 0);
    assert_ne!(code & status::COUNTER_MISMATCH, 0, "status {code:#x}");
}

#[test]
fn a_new_key_starts_a_new_chain_and_the_old_one_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), &[]);
    let old = wait_for_pulses(&d, 2);
    let old_key = key(&d);
    let serial = json(&d, "/api/v1/identity").1["serialNumber"]
        .as_str()
        .unwrap()
        .to_string();
    // Wrong serial: refused, nothing changes.
    let out = lokey(
        &d,
        &["device", "keygen", "--serial", "01 23 00 00 00 00 00 00 ee"],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(key(&d), old_key);
    let out = lokey(&d, &["device", "keygen", "--serial", &serial]);
    assert!(out.status.success(), "{out:?}");
    let new_key = key(&d);
    assert_ne!(new_key, old_key);
    let mut newest = None;
    within(
        Duration::from_secs(20),
        || {
            newest = last(&d).filter(|p| p.chain_index != old.chain_index);
            newest.is_some()
        },
        "a chain with the new key",
    );
    let newest = newest.unwrap();
    assert_eq!(newest.key_id, beacon::hex(&new_key.key_id()));
    let (_, first) = json(
        &d,
        &format!("/api/v1/beacon/chain/{}/pulse/1", newest.chain_index),
    );
    let code = first["pulse"]["statusCode"].as_u64().unwrap() as u32;
    assert_eq!(
        code,
        status::CHAIN_START | status::PARAMETERS_CHANGED | status::EMULATED,
        "{code:#x}"
    );
    beacon::verify(&pulses_of(&run(&d, old.chain_index)), &old_key).unwrap();
    beacon::verify(&pulses_of(&run(&d, newest.chain_index)), &new_key).unwrap();
}

#[test]
fn signing_faults_degrade_the_beacon_not_the_chip_and_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), &[]);
    let before = wait_for_pulses(&d, 2);
    d.set_fault("sign-fails", true);
    within(
        Duration::from_secs(10),
        || {
            d.status()["beacon"]["problem"]
                .as_str()
                .is_some_and(|p| p.contains("could not sign"))
        },
        "the signing failure in status",
    );
    within(
        Duration::from_secs(10),
        || json(&d, "/api/v1/health").1["details"]["beacon"] == false,
        "the beacon degraded by a chip that will not sign",
    );
    let (_, health) = json(&d, "/api/v1/health");
    assert_eq!(
        health["details"]["controller"], true,
        "harvesting goes on: {health}"
    );
    d.set_fault("sign-fails", false);
    let after = wait_for_pulses(&d, before.pulse_index + 3);
    assert_eq!(
        after.chain_index, before.chain_index,
        "same chain, with a time gap"
    );
    within(
        Duration::from_secs(5),
        || json(&d, "/api/v1/health").1["details"]["beacon"] == true,
        "the beacon healthy again",
    );
    beacon::verify(&pulses_of(&run(&d, after.chain_index)), &key(&d)).unwrap();
    // A slow chip still signs; the signing time shows it.
    d.set_fault("slow-signing", true);
    let slow = wait_for_pulses(&d, after.pulse_index + 2);
    assert!(slow.pulse_index > after.pulse_index);
    assert!(d.status()["beacon"]["sign_seconds_max"].as_f64().unwrap() >= 0.14);
}

#[test]
fn a_counter_at_its_maximum_stops_the_beacon_with_a_clear_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), &["--emulate-fault", "counter-at-max"]);
    within(
        Duration::from_secs(10),
        || {
            d.status()["beacon"]["problem"]
                .as_str()
                .is_some_and(|p| p.contains("maximum"))
        },
        "the counter problem in status",
    );
    assert_eq!(json(&d, "/api/v1/beacon/pulse/last").0, 404);
    within(
        Duration::from_secs(5),
        || json(&d, "/api/v1/health").1["details"]["beacon"] == false,
        "the beacon degraded",
    );
}

/// A tiny deterministic generator for the kill schedule (reproducible failures).
mod rand_like {
    pub struct Rng(u64);
    impl Rng {
        pub fn new(seed: u64) -> Rng {
            Rng(seed)
        }
        /// A number in `0..n` (xorshift64*).
        pub fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }
}
