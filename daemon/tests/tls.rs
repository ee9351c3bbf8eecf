//! The REST API over TLS (`api.tls`): `files` with SIGHUP reload, `chip` on the emulator (the
//! chip signs every full handshake and issues the certificate; a resumed handshake costs no
//! signature), pins and CA files on the client side (`lokey::remote`), a wrong pin refused
//! naming both fingerprints, overload shed with an error, and the warning about plain HTTP on
//! a non-loopback address. All traffic is to 127.0.0.1.

mod util;

use std::path::Path;
use std::time::{Duration, Instant};

use lokey::remote::{Pin, Remote, RemoteError, Trust};
use nix::sys::signal::Signal;
use serde_json::Value;
use util::{Daemon, TestKey, files_daemon, within, write_pair};

const TIMEOUT: Duration = Duration::from_secs(20);

fn chip_daemon(dir: &Path, extra: &str) -> Daemon {
    let conf = dir.join("lokeyd.toml");
    std::fs::write(
        &conf,
        format!("[api]\ntls = \"chip\"\ntls_names = [\"127.0.0.1\", \"localhost\"]\n{extra}"),
    )
    .unwrap();
    Daemon::start_with_socket(
        &["--config", conf.to_str().unwrap()],
        dir,
        &dir.join("lokey.sock"),
    )
}

/// Starts lokeyd on `dir` with the configuration `conf`, which it must refuse; returns what it
/// said.
fn refused_start(dir: &Path, conf: &Path) -> String {
    let out = util::lokeyd()
        .arg("--config")
        .arg(conf)
        .args(["--emulate", "--no-credit"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--socket")
        .arg(dir.join("s"))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "started: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn remote(d: &Daemon, trust: Trust) -> Remote {
    Remote::new(&format!("https://{}", d.addr()), trust, TIMEOUT).unwrap()
}

fn json(r: &Remote, path: &str) -> Value {
    let answer = r.get(path).unwrap();
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    serde_json::from_slice(&answer.body).unwrap()
}

/// A plain-HTTP request to a TLS port gets no HTTP answer.
fn plain_http_refused(d: &Daemon) {
    let raw = util::raw_request(d.addr(), "GET", "/api/v1/health", &[], "");
    assert!(
        !raw.starts_with(b"HTTP/"),
        "plain HTTP answered: {}",
        String::from_utf8_lossy(&raw)
    );
}

#[test]
fn files_mode_serves_the_pinned_certificate_and_reloads_it_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_pair(dir.path(), &TestKey::new(0x11));
    let d = files_daemon(dir.path());
    let r = remote(&d, Trust::Pin(first));
    let health = r.get("/api/v1/health").unwrap();
    assert!(matches!(health.status, 200 | 503), "{}", health.status);
    assert_eq!(json(&r, "/api/v1/tls")["pin"], first.to_string());
    plain_http_refused(&d);

    // The certificate itself as the CA file.
    let ca = Remote::new(
        &format!("https://{}", d.addr()),
        Trust::CaFile(dir.path().join("server.crt")),
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(json(&ca, "/api/v1/tls")["mode"], "files");

    // A new pair, read on SIGHUP: the new pin works and the old one is refused.
    let second = write_pair(dir.path(), &TestKey::new(0x22));
    assert_ne!(first, second);
    d.signal(Signal::SIGHUP);
    within(
        TIMEOUT,
        || remote(&d, Trust::Pin(second)).get("/api/v1/health").is_ok(),
        "the new certificate after SIGHUP",
    );
    match remote(&d, Trust::Pin(first)).get("/api/v1/health") {
        Err(RemoteError::PinMismatch {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (first.to_string(), second.to_string())),
        other => panic!("old pin after reload: {other:?}"),
    }

    // A broken file on SIGHUP keeps the pair served, with an error in the log.
    std::fs::write(dir.path().join("server.key"), "not a key").unwrap();
    d.signal(Signal::SIGHUP);
    within(
        TIMEOUT,
        || d.log().contains("TLS certificate not reloaded"),
        "the reload error",
    );
    assert!(remote(&d, Trust::Pin(second)).get("/api/v1/health").is_ok());
}

#[test]
fn a_wrong_pin_is_refused_naming_both_fingerprints() {
    let dir = tempfile::tempdir().unwrap();
    let served = write_pair(dir.path(), &TestKey::new(0x33));
    let d = files_daemon(dir.path());
    let wrong = Pin([0x5a; 32]);
    let e = remote(&d, Trust::Pin(wrong))
        .get("/api/v1/random/bytes?n=16")
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&wrong.to_string()) && text.contains(&served.to_string()),
        "{text}"
    );
    // And http:// is never an option for a remote.
    assert!(matches!(
        Remote::new(&format!("http://{}", d.addr()), Trust::Pin(served), TIMEOUT),
        Err(RemoteError::BadUrl(_))
    ));
}

#[test]
fn chip_mode_signs_handshakes_with_the_chip_and_resumption_needs_no_signature() {
    let dir = tempfile::tempdir().unwrap();
    let d = chip_daemon(dir.path(), "");
    // The pin is learnt from the log's announcement, then checked against the chip's key.
    let pin = d.tls_pin();
    let log = d.log();
    assert!(log.contains("EMULATED"), "{log}");
    let r = remote(&d, Trust::Pin(pin));
    let first = json(&r, "/api/v1/tls");
    assert_eq!(first["mode"], "chip");
    assert_eq!(first["slot"], 1);
    assert_eq!(first["emulated"], true);
    // The certificate's key is the chip's slot-1 key, not the beacon's.
    let identity = json(&r, "/api/v1/identity");
    assert_eq!(identity["tls"]["pin"], pin.to_string());
    assert_ne!(
        identity["pin"],
        pin.to_string(),
        "the beacon's key is another"
    );
    let signatures = |v: &Value| v["chip_signatures"].as_u64().unwrap();
    assert!(signatures(&first) >= 1, "{first}");

    // The same client again: resumed, no new signature; a new client: a full handshake.
    let before = json(&r, "/api/v1/tls");
    let again = json(&r, "/api/v1/tls");
    assert_eq!(signatures(&again), signatures(&before), "{before} {again}");
    assert!(
        again["resumed_handshakes"].as_u64() > before["resumed_handshakes"].as_u64(),
        "{before} {again}"
    );
    let fresh = json(&remote(&d, Trust::Pin(pin)), "/api/v1/tls");
    assert_eq!(
        signatures(&fresh),
        signatures(&again) + 1,
        "{again} {fresh}"
    );

    // TLS 1.2 works too, and resumes as well.
    let tls12 = Remote::with_versions(
        &format!("https://{}", d.addr()),
        Trust::Pin(pin),
        TIMEOUT,
        &[&rustls::version::TLS12],
    )
    .unwrap();
    let a = json(&tls12, "/api/v1/tls");
    let b = json(&tls12, "/api/v1/tls");
    assert_eq!(signatures(&b), signatures(&a), "{a} {b}");
    plain_http_refused(&d);
}

#[test]
fn the_chip_key_slot_cannot_be_the_beacons() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("lokeyd.toml");
    std::fs::write(&conf, "[api]\ntls = \"chip\"\ntls_slot = 0\n").unwrap();
    let err = refused_start(dir.path(), &conf);
    assert!(err.contains("beacon's slot"), "{err}");
}

#[test]
fn overload_is_shed_with_an_error_and_harvesting_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = chip_daemon(dir.path(), "");
    let pin = d.tls_pin();
    let r = remote(&d, Trust::Pin(pin));
    let chip_blocks = |r: &Remote| -> u64 {
        json(r, "/api/v1/status")["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "chip")
            .map(|s| s["blocks_read"].as_u64().unwrap())
            .unwrap()
    };
    let blocks_before = chip_blocks(&r);
    // Three times the queue's capacity of fresh clients (a full handshake each) at once.
    let started = Instant::now();
    let addr = d.addr();
    let clients: Vec<_> = (0..3 * lokeyd::tls::MAX_WAITING)
        .map(|_| {
            std::thread::spawn(move || {
                Remote::new(&format!("https://{addr}"), Trust::Pin(pin), TIMEOUT)
                    .unwrap()
                    .get("/api/v1/health")
                    .is_ok()
            })
        })
        .collect();
    let ok = clients
        .into_iter()
        .filter(|_| true)
        .map(|c| c.join().unwrap())
        .filter(|ok| *ok)
        .count();
    let took = started.elapsed();
    let report = json(&r, "/api/v1/tls");
    assert!(report["shed_handshakes"].as_u64().unwrap() > 0, "{report}");
    assert!(ok > 0, "no handshake succeeded: {report}");
    // Nobody hung: the queue is bounded (MAX_WAITING signatures of ~0.14 s each).
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(d.log().contains("full handshakes are waiting for the chip"));
    assert!(
        chip_blocks(&r) > blocks_before,
        "harvesting stopped during the handshakes"
    );
}

#[test]
fn plain_http_on_a_non_loopback_address_is_warned_about() {
    let d = Daemon::start(&["--listen", "0.0.0.0:0"]);
    within(
        TIMEOUT,
        || d.log().contains("PLAIN HTTP on a non-loopback address"),
        "the warning",
    );
    let quiet = Daemon::start(&[]);
    assert!(
        !quiet.log().contains("PLAIN HTTP"),
        "warned on loopback: {}",
        quiet.log()
    );
}

/// The pin the daemon announced in its log.
/// `lokey --remote https://ADDR ARGS` with no local socket to fall back on.
fn lokey_remote(d: &Daemon, trust: &[&str], args: &[&str]) -> std::process::Output {
    util::lokey_cmd()
        .env_remove("LOKEY_REMOTE")
        .env_remove("LOKEY_PIN")
        .args(["--socket", "/nonexistent/lokey.sock"])
        .arg("--remote")
        .arg(format!("https://{}", d.addr()))
        .args(trust)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_cli_talks_to_a_remote_daemon_over_pinned_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = chip_daemon(dir.path(), "");
    let pin = d.tls_pin().to_string();
    let ok = |args: &[&str]| {
        let out = lokey_remote(&d, &["--pin", &pin], args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let hex = ok(&["bytes", "100", "--hex"]);
    assert_eq!(hex.trim().len(), 200, "{hex}");
    assert!(hex.trim().bytes().all(|b| b.is_ascii_hexdigit()));
    let ints = ok(&["int", "-n", "5", "--min", "1", "--max", "6"]);
    assert_eq!(ints.lines().count(), 5);
    assert!(
        ints.lines()
            .all(|l| (1..=6).contains(&l.parse::<i64>().unwrap()))
    );
    let uuid = ok(&["uuid"]);
    assert_eq!(uuid.trim().len(), 36);
    assert_eq!(
        ok(&["password", "--length", "20"]).trim().chars().count(),
        20
    );
    let status: Value = serde_json::from_str(&ok(&["status", "--json"])).unwrap();
    assert!(status["sources"].is_array(), "{status}");
    let health = lokey_remote(&d, &["--pin", &pin], &["health"]);
    assert!(
        matches!(health.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    // The local socket prints the TLS pin beside the beacon's.
    let pubkey = util::lokey(&d, &["device", "pubkey"]);
    let text = String::from_utf8_lossy(&pubkey.stdout);
    assert!(text.contains(&format!("TLS pin      {pin}")), "{text}");

    // A wrong pin: an error naming both fingerprints, exit 2, nothing on stdout.
    let wrong = format!("sha256:{}", "00".repeat(32));
    let out = lokey_remote(&d, &["--pin", &wrong], &["bytes", "16", "--hex"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty());
    assert!(err.contains(&wrong) && err.contains(&pin), "{err}");
    // No pin nor CA file: refused before connecting; http:// refused.
    let out = lokey_remote(&d, &[], &["uuid"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pin"));
    let out = util::lokey_cmd()
        .args([
            "--remote",
            &format!("http://{}", d.addr()),
            "--pin",
            &pin,
            "uuid",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("https://"));
    // A command without a remote form is refused, not run on a local daemon.
    let out = lokey_remote(&d, &["--pin", &pin], &["config", "get", "api.tls"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not available with --remote"));
}

/// The pollen exchange from the protocol's facts: a form POST of `challenge=` to `/`, two
/// lines of SHA-512 hex back, the first SHA-512(challenge); `GET /` is still the status page.
#[test]
fn pollen_clients_get_two_sha512_lines_over_tls() {
    use sha2::{Digest, Sha512};
    let dir = tempfile::tempdir().unwrap();
    let d = chip_daemon(dir.path(), "");
    let r = remote(&d, Trust::Pin(d.tls_pin()));
    let challenge = lokey::beacon::hex(&Sha512::digest([7u8; 64]));
    let body = format!("challenge={challenge}");
    let ask = || {
        r.request(
            "POST",
            "/",
            Some(("application/x-www-form-urlencoded", body.as_bytes())),
        )
        .unwrap()
    };
    let (a, b) = (ask(), ask());
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let text = String::from_utf8(a.body).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(
        lines[0],
        lokey::beacon::hex(&Sha512::digest(challenge.as_bytes()))
    );
    assert_eq!(lines[1].len(), 128);
    // Fresh random bytes in each answer.
    let other = String::from_utf8(b.body).unwrap();
    assert_eq!(other.lines().next(), Some(lines[0]));
    assert_ne!(other.lines().nth(1), Some(lines[1]));
    // No challenge: a 400 that says what to send.
    let empty = r
        .request(
            "POST",
            "/",
            Some(("application/x-www-form-urlencoded", b"")),
        )
        .unwrap();
    assert_eq!(empty.status, 400);
    let page = r.get("/").unwrap();
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("<html"));
}

/// The distribution's `pollinate` client against a lokey device over HTTPS, with the
/// device's certificate as its CA file (as `/etc/default/pollinate` would set it).
#[test]
fn the_stock_pollinate_client_seeds_from_lokey() {
    if std::process::Command::new("pollinate")
        .arg("--print-user-agent")
        .output()
        .is_err()
    {
        eprintln!("skipped: the pollinate client is not installed (apt-get install pollinate)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = chip_daemon(dir.path(), "");
    let r = remote(&d, Trust::Pin(d.tls_pin()));
    let cert = dir.path().join("lokey.pem");
    std::fs::write(
        &cert,
        json(&r, "/api/v1/tls")["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    // pollinate against the device, trusting only the certificate in `ca`.
    let pollinate = |ca: &Path| {
        std::process::Command::new("pollinate")
            .args(["--testing", "--binary", "--wait", "10"])
            .args(["--server", &format!("https://{}/", d.addr())])
            .args([
                "--curl-opts",
                &format!("--cacert {} --capath /dev/null", ca.display()),
            ])
            .output()
            .unwrap()
    };
    let out = pollinate(&cert);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // --testing writes the 64-byte seed to stdout instead of /dev/urandom.
    assert_eq!(out.stdout.len(), 64, "{err}");
    // A pollinate that trusts another certificate refuses the device.
    let other = dir.path().join("other.pem");
    std::fs::write(&other, TestKey::new(0x44).certificate().0).unwrap();
    let out = pollinate(&other);
    assert!(
        out.stdout.is_empty(),
        "seeded through an untrusted certificate"
    );
}

/// Runs `openssl ARGS`; `None` (the caller skips) where there is no openssl.
fn openssl(args: &[&str]) -> Option<std::process::Output> {
    match std::process::Command::new("openssl").args(args).output() {
        Ok(out) => Some(out),
        Err(e) => {
            eprintln!("skipped: openssl cannot be run ({e})");
            None
        }
    }
}

/// The pin of a PEM public key (SubjectPublicKeyInfo), as openssl printed it.
fn pin_of_pem(pem: &str) -> Pin {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64_decode(&b64);
    Pin::of_spki(&der)
}

fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn a_csr_for_the_chip_key_becomes_the_served_certificate_once_a_ca_signs_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = chip_daemon(dir.path(), "");
    let pin = d.tls_pin();
    let request = dir.path().join("device.csr");
    let out = util::lokey(
        &d,
        &[
            "device",
            "csr",
            "--name",
            "127.0.0.1",
            "--name",
            "lokey.example",
            "-o",
            request.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&pin.to_string()));
    let path = request.to_str().unwrap();
    // openssl checks the request's signature (made by the chip) against the key in it.
    let Some(verify) = openssl(&["req", "-in", path, "-verify", "-noout"]) else {
        return;
    };
    assert!(verify.status.success(), "{verify:?}");
    let key = openssl(&["req", "-in", path, "-pubkey", "-noout"]).unwrap();
    assert_eq!(pin_of_pem(&String::from_utf8_lossy(&key.stdout)), pin);
    let text = openssl(&["req", "-in", path, "-noout", "-text"]).unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("DNS:lokey.example") && text.contains("IP Address:127.0.0.1"),
        "{text}"
    );
    assert!(
        text.contains("CN = 127.0.0.1") || text.contains("CN=127.0.0.1"),
        "{text}"
    );

    // A test CA signs it; lokeyd restarted with that certificate serves it with the chip's key.
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let ca = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.crt"),
        "-subj",
        "/CN=lokey test CA",
        "-days",
        "1",
    ])
    .unwrap();
    assert!(ca.status.success(), "{ca:?}");
    let signed = openssl(&[
        "x509",
        "-req",
        "-in",
        path,
        "-CA",
        &p("ca.crt"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-out",
        &p("device.crt"),
        "-days",
        "1",
        "-copy_extensions",
        "copyall",
    ])
    .unwrap();
    assert!(signed.status.success(), "{signed:?}");
    let mut d = d;
    d.stop();
    let extra = format!("tls_cert = \"{}\"\n", p("device.crt"));
    let d = chip_daemon(dir.path(), &extra);
    assert_eq!(d.tls_pin(), pin, "not the chip's key");
    let by_ca = remote(&d, Trust::CaFile(dir.path().join("ca.crt")));
    assert_eq!(json(&by_ca, "/api/v1/tls")["pin"], pin.to_string());
    let served = json(&by_ca, "/api/v1/tls")["certificate_pem"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        served.trim(),
        std::fs::read_to_string(p("device.crt")).unwrap().trim()
    );
    drop(d);

    // A certificate for another key (the CA's own) is refused at start, naming both pins.
    let conf = dir.path().join("lokeyd.toml");
    std::fs::write(
        &conf,
        format!("[api]\ntls = \"chip\"\ntls_cert = \"{}\"\n", p("ca.crt")),
    )
    .unwrap();
    let err = refused_start(dir.path(), &conf);
    assert!(
        err.contains("is for the key sha256:") && err.contains(&pin.to_string()),
        "{err}"
    );
}

#[test]
fn a_new_tls_key_is_served_at_once_and_metrics_count_the_handshakes() {
    let dir = tempfile::tempdir().unwrap();
    let d = chip_daemon(dir.path(), "");
    let old = d.tls_pin();
    let r = remote(&d, Trust::Pin(old));
    let report = json(&r, "/api/v1/tls");
    // The metrics say what /api/v1/tls says.
    let metrics = String::from_utf8(r.get("/metrics").unwrap().body).unwrap();
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    };
    assert!(value("lokey_tls_handshakes_total{kind=\"full\"}") >= 1);
    assert_eq!(
        value("lokey_tls_chip_signatures_total"),
        report["chip_signatures"].as_u64().unwrap()
    );
    assert!(
        value("lokey_tls_handshakes_total{kind=\"resumed\"}")
            >= report["resumed_handshakes"].as_u64().unwrap()
    );

    let identity = json(&r, "/api/v1/identity");
    let serial = identity["serialNumber"].as_str().unwrap().to_string();
    let beacon_key = identity["keyId"].clone();
    let out = util::lokey(&d, &["device", "keygen", "--tls", "--serial", &serial]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = util::lokey(&d, &["device", "pubkey", "--json"]);
    let id: Value = serde_json::from_slice(&out.stdout).unwrap();
    let new = Pin::parse(id["tls"]["pin"].as_str().unwrap()).unwrap();
    assert_ne!(new, old, "{id}");
    assert_eq!(id["keyId"], beacon_key, "the beacon's key changed too");
    // Served at once: a new client pinning the old key is refused, the new key's pin works.
    match Remote::new(&format!("https://{}", d.addr()), Trust::Pin(old), TIMEOUT)
        .unwrap()
        .get("/api/v1/tls")
    {
        Err(RemoteError::PinMismatch { .. }) => {}
        other => panic!("the old key still served: {other:?}"),
    }
    let report = json(&remote(&d, Trust::Pin(new)), "/api/v1/tls");
    assert_eq!(report["pin"], new.to_string());
    assert_eq!(report["reloads"], 1, "{report}");
}
