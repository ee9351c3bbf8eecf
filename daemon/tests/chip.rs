//! The daemon with its emulated ATECC608A: the chip is a labelled, healthy source; faults
//! switched at start (`--emulate-fault`) and at run time (the admin fault switch) show up in
//! status and health and the daemon recovers; device info and the confirmed lock over the
//! socket.

mod util;

use std::time::{Duration, Instant};

use lokey::client::Client;
use lokey::proto::Request;
use util::Daemon;

const JSON: &str = "Content-Type: application/json";

/// A config with the chip as the only source.
fn chip_only(dir: &std::path::Path, faults: &[&str]) -> std::path::PathBuf {
    let conf = dir.join("lokeyd.toml");
    let list: Vec<String> = faults.iter().map(|f| format!("{f:?}")).collect();
    std::fs::write(
        &conf,
        format!(
            "[hwrng]\nmode = \"off\"\n[chip]\nemulate_faults = [{}]\n",
            list.join(", ")
        ),
    )
    .unwrap();
    conf
}

fn wait_for(d: &Daemon, what: &str, mut check: impl FnMut(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let chip = d.source("chip");
        if check(&chip) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {chip}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn fault(d: &Daemon, name: &str, active: bool) {
    d.set_fault(name, active);
}

#[test]
fn the_emulated_chip_is_a_labelled_healthy_source_that_feeds_the_queue_and_fortuna() {
    let dir = tempfile::tempdir().unwrap();
    let conf = chip_only(dir.path(), &[]);
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    wait_for(&d, "a healthy chip", |c| c["state"] == "healthy");
    let chip = d.source("chip");
    assert_eq!(chip["kind"], "emulator");
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.status()["fortuna_generator"]["seeded"] != true
        || d.status()["trng"]["queue_current"].as_u64().unwrap() == 0
    {
        assert!(Instant::now() < deadline, "{}", d.status());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Emulator output is never credited (here crediting is off altogether, and the kernel
    // section says so).
    assert_eq!(d.status()["kernel"]["credited_bits"], 0);
    let (code, body) = d.get("/api/v1/health");
    assert_eq!(code, 200, "{body}");
}

#[test]
fn a_fault_switched_on_at_run_time_degrades_health_and_the_daemon_recovers_after() {
    let dir = tempfile::tempdir().unwrap();
    let conf = chip_only(dir.path(), &[]);
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    wait_for(&d, "a healthy chip", |c| c["state"] == "healthy");
    fault(&d, "stuck-output", true);
    wait_for(&d, "the stuck chip to be refused", |c| {
        c["healthy"] == false
            && c["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("same 32"))
    });
    let (code, body) = d.get("/api/v1/health");
    assert_eq!(code, 503, "{body}");
    fault(&d, "stuck-output", false);
    wait_for(&d, "recovery", |c| {
        c["state"] == "healthy" && c["healthy"] == true
    });

    // The bus disappears and comes back.
    fault(&d, "bus-gone", true);
    wait_for(&d, "the chip to be gone", |c| {
        c["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("bus error"))
    });
    fault(&d, "bus-gone", false);
    wait_for(&d, "the chip back", |c| c["healthy"] == true);

    // Unknown faults are refused with the list.
    let (code, body) = d.request(
        "PUT",
        "/api/v1/admin/faults",
        &[JSON],
        r#"{"name":"gremlins","active":true}"#,
    );
    assert_eq!(code, 400);
    assert!(body.contains("watchdog-sleep"), "{body}");
}

#[test]
fn an_unprovisioned_chip_is_refused_and_says_how_to_provision_it_then_is_locked_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let conf = chip_only(dir.path(), &["unlocked"]);
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    wait_for(&d, "the refusal", |c| {
        c["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not locked") && e.contains("lokey device lock"))
    });
    assert_eq!(
        d.status()["trng"]["queue_current"],
        0,
        "nothing from an unlocked chip"
    );

    let mut client = Client::connect(d.socket()).unwrap();
    let info = client.call(&Request::DeviceInfo).unwrap();
    assert_eq!(info["emulated"], true);
    assert_eq!(info["revision"], "00 00 60 02");
    assert_eq!(info["config_locked"], false);
    let serial = info["serial"].as_str().unwrap().to_string();
    assert!(serial.starts_with("01 23"), "{serial}");

    // A wrong serial number locks nothing.
    let err = client
        .call(&Request::DeviceLock {
            confirm: "01 23 00 00 00 00 00 00 EE".into(),
        })
        .unwrap_err();
    assert!(err.to_string().contains("names serial"), "{err}");
    let wrong = client.call(&Request::DeviceInfo).unwrap();
    assert_eq!(wrong["config_locked"], false);

    let locked = client
        .call(&Request::DeviceLock {
            confirm: serial.clone(),
        })
        .unwrap();
    assert_eq!(locked["locked"], true);
    let info = client.call(&Request::DeviceInfo).unwrap();
    assert_eq!(info["config_locked"], true);
    wait_for(&d, "the provisioned chip to be healthy", |c| {
        c["healthy"] == true
    });
    // Locking twice is refused.
    let err = client
        .call(&Request::DeviceLock { confirm: serial })
        .unwrap_err();
    assert!(err.to_string().contains("already locked"), "{err}");
}

#[test]
fn emulator_faults_named_at_start_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let out = util::lokeyd()
        .args([
            "--config",
            "/dev/null",
            "--emulate",
            "--emulate-fault",
            "gremlins",
        ])
        .args(["--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--emulate-fault"), "{err}");
    assert!(err.contains("stuck-output"), "{err}");
}

/// Every emulator fault, one after another on one daemon: health goes from ok to degraded
/// within a second (or, for the fault the driver rides out, errors are counted while good data
/// keeps flowing), nothing from the faulty chip is routed while it lasts, nothing is credited,
/// and the daemon recovers by itself once the fault clears.
#[test]
fn every_fault_degrades_within_a_second_stops_the_chips_data_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let conf = chip_only(dir.path(), &[]);
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    let healthy = |d: &Daemon| d.get("/api/v1/health").0 == 200;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !healthy(&d) {
        assert!(Instant::now() < deadline, "never healthy: {}", d.status());
        std::thread::sleep(Duration::from_millis(50));
    }
    for name in util::degrading_faults() {
        fault(&d, name, true);
        let switched = Instant::now();
        while healthy(&d) {
            assert!(
                switched.elapsed() < Duration::from_secs(1),
                "{name}: still healthy after 1 s: {}",
                d.source("chip")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // At most the block in flight is routed after the fault shows.
        let routed = d.source("chip")["bytes_routed"].as_u64().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let later = d.source("chip")["bytes_routed"].as_u64().unwrap();
        assert!(
            later <= routed + 32,
            "{name}: data kept flowing ({routed} → {later})"
        );
        fault(&d, name, false);
        let cleared = Instant::now();
        while !healthy(&d) {
            assert!(
                cleared.elapsed() < Duration::from_secs(30),
                "{name}: no recovery: {}",
                d.source("chip")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let routed = d.source("chip")["bytes_routed"].as_u64().unwrap();
        wait_for(&d, "data flowing again", |c| {
            c["bytes_routed"].as_u64().unwrap() > routed
        });
    }
    // The driver rides out occasional CRC errors: counted, and good data keeps coming.
    let errors = d.source("chip")["read_errors"].as_u64().unwrap();
    let routed = d.source("chip")["bytes_routed"].as_u64().unwrap();
    fault(&d, "crc-corruption", true);
    wait_for(&d, "CRC errors counted", |c| {
        c["read_errors"].as_u64().unwrap() > errors
    });
    wait_for(&d, "data still flowing", |c| {
        c["bytes_routed"].as_u64().unwrap() > routed + 320
    });
    fault(&d, "crc-corruption", false);
    assert_eq!(
        d.status()["kernel"]["credited_bits"],
        0,
        "emulator output credited"
    );
}

#[test]
fn a_chip_of_the_wrong_revision_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let conf = chip_only(dir.path(), &["wrong-revision"]);
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    wait_for(&d, "the refusal", |c| {
        c["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not an ATECC608"))
    });
    assert_eq!(d.source("chip")["bytes_routed"], 0);
    assert_eq!(d.get("/api/v1/health").0, 503);
    fault(&d, "wrong-revision", false);
    wait_for(&d, "the right chip", |c| c["healthy"] == true);
}

/// A fault that persists is logged once per change of state, not once per block: over three
/// seconds of a stuck chip (a read error every attempt) and of a constant byte (health tests
/// failing at every retry), each new log line about the chip is one counted transition or one
/// change of read error, and there are only a few.
#[test]
fn a_persistent_fault_is_logged_once_per_change_not_once_per_block() {
    let dir = tempfile::tempdir().unwrap();
    let conf = chip_only(dir.path(), &[]);
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    wait_for(&d, "a healthy chip", |c| c["state"] == "healthy");
    let transitions = |c: &serde_json::Value| -> u64 {
        c["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["count"].as_u64().unwrap())
            .sum()
    };
    for name in ["stuck-output", "constant-byte"] {
        // Let the log reader catch up with what came before.
        std::thread::sleep(Duration::from_millis(300));
        let lines = d.log().lines().count();
        let before = d.source("chip");
        fault(&d, name, true);
        std::thread::sleep(Duration::from_secs(3));
        // The log is read on another thread, a little behind, and a retry may fall between
        // two reads: every transition counted so far lies between the health lines logged
        // before and a moment after.
        let health_lines = |log: &str| {
            log.lines()
                .filter(|l| l.contains("source=chip") && l.contains("health: "))
                .count() as u64
        };
        let early = health_lines(&d.log());
        let during = d.source("chip");
        std::thread::sleep(Duration::from_millis(300));
        let log = d.log();
        let total = transitions(&during);
        assert!(
            early <= total && total <= health_lines(&log),
            "{name}: {total} transitions counted, {early} logged: {log}"
        );
        // Since the fault began: health lines and changes of read error, and only a few.
        let new: Vec<&str> = log
            .lines()
            .skip(lines)
            .filter(|l| l.contains("source=chip"))
            .collect();
        let counted = transitions(&during) - transitions(&before);
        let reads =
            during["read_errors"].as_u64().unwrap() - before["read_errors"].as_u64().unwrap();
        assert!(
            new.iter().all(|l| l.contains("health: ")
                || l.contains("read failed")
                || l.contains("reading again")),
            "{name}: other lines: {new:#?}"
        );
        assert!(new.len() <= 6, "{name}: log spam: {new:#?}");
        assert!(
            counted + reads >= 1,
            "{name}: the fault did not show: {during}"
        );
        if name == "stuck-output" {
            assert!(reads > new.len() as u64, "{name}: {reads} errors, {new:#?}");
        }
        fault(&d, name, false);
        wait_for(&d, "recovery", |c| {
            c["healthy"] == true && c["state"] == "healthy"
        });
    }
    // The metrics count the same transitions as status, per source and pair of states.
    let chip = d.source("chip");
    let (_, metrics) = d.get("/metrics");
    for t in chip["transitions"].as_array().unwrap() {
        let line = format!(
            "lokey_source_transitions_total{{source=\"chip\",from=\"{}\",to=\"{}\"}} ",
            t["from"].as_str().unwrap(),
            t["to"].as_str().unwrap()
        );
        let value: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("no {line}in {metrics}"))
            .trim()
            .parse()
            .unwrap();
        // Read a moment after status: at least as many.
        assert!(
            value >= t["count"].as_u64().unwrap(),
            "{line}{value} vs {t}"
        );
    }
    assert!(
        metrics.contains(
            "lokey_source_transitions_total{source=\"chip\",from=\"healthy\",to=\"quarantined\"}"
        ),
        "{metrics}"
    );
}

/// `[[source]]`: two emulated chips sharing emulated bus 1 (one bus thread), one alone on
/// bus 2, and a FIFO fed from the operating system's RNG as a `device`: each is its own
/// named, healthy source in status, metrics and `lokey status`, and each delivers blocks.
#[test]
fn every_listed_source_runs_under_its_own_name() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("trng.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let conf = dir.path().join("lokeyd.toml");
    std::fs::write(
        &conf,
        format!(
            "[[source]]\nname = \"left\"\nkind = \"emulator\"\n\
             [[source]]\nname = \"right\"\nkind = \"emulator\"\naddress = 0x61\n\
             [[source]]\nname = \"solo\"\nkind = \"emulator\"\nbus = 2\n\
             [[source]]\nname = \"usb\"\nkind = \"device\"\npath = {:?}\n",
            fifo.to_str().unwrap()
        ),
    )
    .unwrap();
    // The device's writer: blocks until the daemon opens the FIFO, ends when it closes it.
    let writer = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut out = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        let mut rng = std::fs::File::open("/dev/urandom").unwrap();
        let mut buf = [0u8; 4096];
        loop {
            rng.read_exact(&mut buf).unwrap();
            if out.write_all(&buf).is_err() {
                return;
            }
        }
    });
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    let names = ["left", "right", "solo", "usb"];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = d.status();
        let sources = status["sources"].as_array().unwrap();
        let listed: Vec<&str> = sources.iter().filter_map(|s| s["name"].as_str()).collect();
        assert_eq!(listed, names, "{status}");
        let ready = sources
            .iter()
            .all(|s| s["state"] == "healthy" && s["blocks_read"].as_u64().unwrap_or(0) >= 4);
        if ready {
            assert_eq!(sources[0]["kind"], "emulator");
            assert_eq!(sources[3]["kind"], "device");
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, metrics) = d.get("/metrics");
    for name in names {
        assert!(
            metrics.contains(&format!(
                "lokey_source_state{{source=\"{name}\",state=\"healthy\"}} 1"
            )),
            "{name}: {metrics}"
        );
    }
    let out = util::lokey(&d, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for name in names {
        assert!(text.contains(name), "{name}: {text}");
    }
    drop(d);
    writer.join().unwrap();
}

/// `lokey device set-address`: guarded by the serial number like `lock`, possible only while
/// the config zone is unlocked, and refused after the lock with the multiplexer alternative.
#[test]
fn set_address_is_confirmed_by_serial_and_refused_once_the_chip_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let conf = chip_only(dir.path(), &["unlocked"]);
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    let mut client = Client::connect(d.socket()).unwrap();
    let serial = client.call(&Request::DeviceInfo).unwrap()["serial"]
        .as_str()
        .unwrap()
        .to_string();
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    // Out of range: refused before anything is asked of the daemon.
    let out = util::lokey(&d, &["device", "set-address", "0x80", "--serial", &serial]);
    assert!(
        !out.status.success() && text(&out).contains("0x08 to 0x77"),
        "{}",
        text(&out)
    );
    // The wrong chip: nothing changes.
    let out = util::lokey(
        &d,
        &[
            "device",
            "set-address",
            "0x61",
            "--serial",
            "01 23 00 00 00 00 00 00 EE",
        ],
    );
    assert!(
        !out.status.success() && text(&out).contains("nothing was changed"),
        "{}",
        text(&out)
    );
    // Without --serial and no terminal: refused, saying how to confirm.
    let out = util::lokey(&d, &["device", "set-address", "0x61"]);
    assert!(
        !out.status.success() && text(&out).contains("--serial"),
        "{}",
        text(&out)
    );
    let out = util::lokey(&d, &["device", "set-address", "0x61", "--serial", &serial]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("now 0x61"), "{}", text(&out));
    // Locked: the address can no longer change; the message names the alternative.
    client
        .call(&Request::DeviceLock {
            confirm: serial.clone(),
        })
        .unwrap();
    let out = util::lokey(&d, &["device", "set-address", "0x62", "--serial", &serial]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("multiplexer"), "{}", text(&out));
    // And the daemon refuses it too, for a client that skips the CLI's check.
    let err = client
        .call(&Request::DeviceSetAddress {
            address: 0x62,
            confirm: serial,
        })
        .unwrap_err();
    assert!(err.to_string().contains("byte 16"), "{err}");
}
