//! End-to-end tests: the real `lokeyd` and `lokey` binaries, on a temporary data directory,
//! socket and a loopback port chosen by the kernel. Run with `cargo test --workspace` so that
//! both binaries are built.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use util::{Daemon, eventually, lokey, lokeyd, within};

#[test]
fn serves_health_and_status_over_rest() {
    let d = Daemon::start(&[]);
    let (code, body) = d.get("/api/v1/health");
    // No entropy source runs at this stage, so the daemon honestly reports degraded.
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["details"]["api"], true);
    assert_eq!(health["details"]["database"], true);
    let expect = if health["status"] == "ok" { 200 } else { 503 };
    assert_eq!(code, expect, "{body}");
    assert!(health["timestamp"].as_str().unwrap().ends_with('Z'));

    let (code, body) = d.get("/api/v1/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    for key in [
        "polling_count",
        "queue_current",
        "queue_capacity",
        "queue_percentage",
        "queue_dropped",
        "consumed_count",
        "unconsumed_count",
        "total_generated",
    ] {
        assert!(
            status["trng"].get(key).is_some(),
            "trng.{key} missing: {body}"
        );
    }
    assert_eq!(
        status["trng"]["consume"], true,
        "the consumption mode: {body}"
    );
    assert_eq!(
        status["database"]["path"].as_str().unwrap(),
        d.data_dir().to_str().unwrap()
    );

    let (code, body) = d.get("/no/such/thing");
    assert_eq!(code, 404);
    assert!(body.contains("\"error\""), "{body}");
}

#[test]
fn cli_status_and_health_over_the_socket() {
    let d = Daemon::start(&[]);
    let out = lokey(&d, &["status"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("trng queue"), "{text}");
    assert!(text.contains("delete-on-read"), "{text}");
    assert!(text.contains(d.data_dir().to_str().unwrap()), "{text}");

    let out = lokey(&d, &["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["trng"]["queue_capacity"], 100_000);

    let out = lokey(&d, &["health", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expect = if json["status"] == "ok" { 0 } else { 1 };
    assert_eq!(out.status.code(), Some(expect), "{out:?}");
}

#[test]
fn cli_without_a_daemon_says_what_to_do_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let out = util::lokey_cmd()
        .args(["--socket", sock.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("none.sock"), "{err}");
    assert!(err.contains("is lokeyd running?"), "{err}");
}

#[test]
fn socket_is_0660_and_data_dir_0700() {
    let d = Daemon::start(&[]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(d.socket()), 0o660);
    assert_eq!(mode(d.data_dir()), 0o700);
}

#[test]
fn sigterm_drains_and_exits_0_and_removes_the_socket() {
    let mut d = Daemon::start(&[]);
    let started = Instant::now();
    let code = d.stop();
    assert_eq!(code, Some(0), "{}", d.log());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!d.socket().exists(), "socket left behind");
    assert!(d.log().contains("SIGTERM received"), "{}", d.log());
}

#[test]
fn sigterm_is_bounded_when_a_source_read_never_returns() {
    // A FIFO with a writer that never writes stands for a /dev/hwrng whose read blocks (a
    // wedged driver): the harvester thread cannot finish its read, and the daemon must not
    // wait for it past its shutdown bound.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("hwrng");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Opening read-write does not block and keeps a writer on the FIFO.
    let _writer = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let config = dir.path().join("lokeyd.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nshutdown_timeout_secs = 1\n[hwrng]\nmode = \"on\"\npath = \"{}\"\n",
            fifo.display()
        ),
    )
    .unwrap();
    let socket = dir.path().join("lokey.sock");
    let mut d =
        Daemon::start_with_socket(&["--config", config.to_str().unwrap()], dir.path(), &socket);
    // The chip keeps filling the TRNG queue while the hwrng read hangs.
    eventually(
        || d.status()["trng"]["queue_current"].as_u64().unwrap_or(0) > 0,
        "TRNG data from the chip",
    );
    let started = Instant::now();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let code = d.wait_for_exit(Duration::from_secs(8));
    assert_eq!(code, Some(Some(0)), "{}", d.log());
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert!(d.log().contains("did not stop within"), "{}", d.log());
}

#[test]
fn a_second_signal_exits_at_once_while_work_is_in_flight() {
    let mut d = Daemon::start(&["--config", "/dev/null"]);
    // An HTTP request that is still being sent keeps the drain waiting.
    let mut slow = TcpStream::connect(d.addr()).unwrap();
    slow.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    d.signal(nix::sys::signal::Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        d.try_wait(),
        None,
        "drain did not wait for the request in flight"
    );
    d.signal(nix::sys::signal::Signal::SIGINT);
    let code = d.wait_for_exit(Duration::from_secs(2));
    assert_eq!(code, Some(Some(1)), "{}", d.log());
    assert!(d.log().contains("second SIGINT"), "{}", d.log());
    let _ = slow.read(&mut [0u8; 16]);
}

#[test]
fn sighup_applies_live_settings_and_names_restart_only_ones() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("lokeyd.toml");
    std::fs::write(&conf, "[store]\ntrng_queue_size = 500\n").unwrap();
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    let capacity = |d: &Daemon| {
        let (_, body) = d.get("/api/v1/status");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["trng"]["queue_capacity"].clone()
    };
    assert_eq!(capacity(&d), 500);
    std::fs::write(
        &conf,
        "[store]\ntrng_queue_size = 700\n[chip]\ni2c_bus = 7\n[hwrng]\nmode = \"off\"\n\
         [api]\nmax_connections = 9\nmax_concurrent_requests = 9\n",
    )
    .unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    util::eventually(|| capacity(&d) == 700, "capacity reloaded");
    // The sources are opened at start, and the REST server's slots counted out.
    for key in [
        "chip",
        "hwrng",
        "api.max_connections",
        "api.max_concurrent_requests",
    ] {
        util::eventually(
            || d.log().contains(&format!("{key} changed: restart lokeyd")),
            "restart warning",
        );
    }

    // A broken file is reported and the running configuration stays.
    std::fs::write(&conf, "[store]\ntrng_queue_size = 1\n").unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    util::eventually(
        || d.log().contains("configuration not reloaded"),
        "refusal logged",
    );
    assert_eq!(capacity(&d), 700);
}

#[test]
fn bad_configuration_exits_2_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("lokeyd.toml");
    std::fs::write(
        &conf,
        "[api]\nlisten = \"127.0.0.1:0\"\n[kernel]\nbits_per_byte = 9\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let out = lokeyd()
        .args([
            "--config",
            conf.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lokeyd.toml:4"), "{err}");
    assert!(err.contains("kernel.bits_per_byte"), "{err}");
    assert!(err.contains("from 0 to 8"), "{err}");
    assert!(
        !data.exists(),
        "data directory created despite a bad configuration"
    );
}

#[test]
fn second_daemon_on_the_same_socket_is_refused() {
    let d = Daemon::start(&[]);
    let out = lokeyd()
        .args([
            "--config",
            "/dev/null",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            d.data_dir()
                .parent()
                .unwrap()
                .join("other")
                .to_str()
                .unwrap(),
            "--socket",
            d.socket().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another lokeyd is already listening"), "{err}");
    // The first one is unharmed.
    assert_eq!(lokey(&d, &["status"]).status.code(), Some(0));
}

#[test]
fn a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("lokey.sock");
    // A socket file nobody listens on, as a crash leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let d = Daemon::start_with_socket(&[], dir.path(), &sock);
    assert_eq!(lokey(&d, &["status"]).status.code(), Some(0));
}

#[test]
fn print_config_shows_the_effective_configuration() {
    let out = lokeyd()
        .env("TRNG_QUEUE_SIZE", "4321")
        .args([
            "--config",
            "/dev/null",
            "--no-credit",
            "--emulate",
            "--print-config",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let config: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(config["store"]["trng_queue_size"].as_integer(), Some(4321));
    assert_eq!(config["kernel"]["enabled"].as_bool(), Some(false));
    assert_eq!(config["chip"]["mode"].as_str(), Some("emulator"));
}

#[test]
fn print_example_config_is_a_valid_configuration_file() {
    let out = lokeyd().arg("--print-example-config").output().unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("example.toml");
    std::fs::write(&conf, &out.stdout).unwrap();
    let out = lokeyd()
        .args(["--config", conf.to_str().unwrap(), "--print-config"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn metrics_carry_the_go_gauges_and_ours_on_both_routes() {
    let d = Daemon::start(&[]);
    for route in ["/metrics", "/api/v1/metrics"] {
        let (code, body) = d.get(route);
        assert_eq!(code, 200);
        for name in util::GO_GAUGES.into_iter().chain([
            "lokey_up",
            "lokey_component_healthy",
            "lokey_kernel_credited_bits_total",
            "lokey_fortuna_seeded",
            "lokey_fortuna_reseeds_total",
            "lokey_trng_queue_bytes",
            "lokey_trng_served_bytes_total",
            "lokey_trng_dropped_items_total",
        ]) {
            assert!(
                body.lines().any(|l| l.starts_with(name)),
                "{route}: {name} missing:\n{body}"
            );
        }
        assert!(body.trim_end().ends_with("# EOF"), "{body}");
    }
    // Always current: the queue level follows the store without a status call.
    let level = |d: &Daemon| -> f64 {
        let (_, body) = d.get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix("lokey_trng_queue_bytes "))
            .unwrap()
            .parse()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while level(&d) < 64.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the queue never filled"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, body) = d.get("/metrics");
    let served_before = body
        .lines()
        .find_map(|l| l.strip_prefix("lokey_trng_served_bytes_total "))
        .unwrap()
        .to_string();
    assert_eq!(served_before, "0");
    let (code, _) = d.request(
        "POST",
        "/api/v1/data",
        &["Content-Type: application/json"],
        r#"{"format":"binary","limit":48,"source":"trng"}"#,
    );
    assert_eq!(code, 200);
    let (_, body) = d.get("/metrics");
    assert!(
        body.lines()
            .any(|l| l == "lokey_trng_served_bytes_total 48"),
        "{body}"
    );
}

#[test]
fn queue_and_consume_configuration_over_rest() {
    let d = Daemon::start(&[]);
    let (code, body) = d.get("/api/v1/config/queue");
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({"trng_queue_size": 100000, "fortuna_queue_size": 100000})
    );
    let (code, body) = d.request(
        "PUT",
        "/api/v1/config/queue",
        &[],
        r#"{"trng_queue_size":5000,"fortuna_queue_size":20000,"extra":1}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("5000") && body.contains("20000"), "{body}");
    assert_eq!(d.status()["trng"]["queue_capacity"], 5000);

    // Out of range: 400 naming the field and the range; nothing changes.
    let (code, body) = d.request(
        "PUT",
        "/api/v1/config/queue",
        &[],
        r#"{"trng_queue_size":5,"fortuna_queue_size":20000}"#,
    );
    assert_eq!(code, 400);
    assert!(
        body.contains("trng_queue_size") && body.contains("10 to 1000000"),
        "{body}"
    );
    assert_eq!(d.status()["trng"]["queue_capacity"], 5000);
    for bad in [
        "",
        "{",
        "[]",
        r#"{"trng_queue_size":"x","fortuna_queue_size":10}"#,
    ] {
        let (code, body) = d.request("PUT", "/api/v1/config/queue", &[], bad);
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(body.starts_with("{\"error\":"), "{body}");
    }

    // Consumption, under both names.
    for route in ["/api/v1/config/consume", "/api/v1/config/consumption"] {
        let (code, body) = d.get(route);
        assert_eq!((code, body.as_str()), (200, r#"{"consume":true}"#));
    }
    let (code, body) = d.request(
        "PUT",
        "/api/v1/config/consumption",
        &[],
        r#"{"consume":false}"#,
    );
    assert_eq!((code, body.as_str()), (200, r#"{"consume":false}"#));
    assert_eq!(d.get("/api/v1/config/consume").1, r#"{"consume":false}"#);
    assert_eq!(
        d.status()["trng"]["consume"],
        false,
        "status shows the mode"
    );
    let out = lokey(&d, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NOT CONSUMING"), "{text}");
    // An empty object does not silently turn delete-on-read off or on.
    let (code, body) = d.request("PUT", "/api/v1/config/consume", &[], "{}");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("consume"), "{body}");
}

#[test]
fn configuration_changes_need_the_admin_token_when_one_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("lokeyd.toml");
    std::fs::write(&conf, "[api]\nadmin_token = \"s3cret\"\n").unwrap();
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    let body = r#"{"consume":false}"#;
    let (code, answer) = d.request("PUT", "/api/v1/config/consume", &[], body);
    assert_eq!(code, 401, "{answer}");
    assert!(answer.contains("Authorization: Bearer"), "{answer}");
    let (code, _) = d.request(
        "PUT",
        "/api/v1/config/consume",
        &["Authorization: Bearer wrong"],
        body,
    );
    assert_eq!(code, 401);
    assert_eq!(
        d.get("/api/v1/config/consume").1,
        r#"{"consume":true}"#,
        "changed without the token"
    );
    let (code, _) = d.request(
        "PUT",
        "/api/v1/config/consume",
        &["Authorization: Bearer s3cret"],
        body,
    );
    assert_eq!(code, 200);
    assert_eq!(d.get("/api/v1/config/consume").1, r#"{"consume":false}"#);
}

#[test]
fn configuration_over_the_socket() {
    use lokey::client::Client;
    use lokey::proto::Request;
    let d = Daemon::start(&[]);
    let mut c = Client::connect(d.socket()).unwrap();
    let all = c.call(&Request::ConfigGet { key: None }).unwrap();
    assert_eq!(all["store.consume"], true);
    assert!(all.get("api.admin_token").is_none());
    let set = c
        .call(&Request::ConfigSet {
            key: "store.trng_queue_size".into(),
            value: serde_json::json!(777),
        })
        .unwrap();
    assert_eq!(set["store.trng_queue_size"], 777);
    let err = c
        .call(&Request::ConfigSet {
            key: "api.listen".into(),
            value: serde_json::json!("0.0.0.0:1"),
        })
        .unwrap_err();
    assert!(err.to_string().contains("restart"), "{err}");
    let err = c
        .call(&Request::ConfigGet {
            key: Some("api.admin_token".into()),
        })
        .unwrap_err();
    assert!(err.to_string().contains("never shown"), "{err}");
}

#[test]
fn oversized_bodies_are_refused_with_413_and_change_nothing() {
    let d = Daemon::start(&[]);
    let huge = format!(
        r#"{{"trng_queue_size":20,"fortuna_queue_size":20,"pad":"{}"}}"#,
        "x".repeat(200_000)
    );
    let (code, _) = d.request("PUT", "/api/v1/config/queue", &[], &huge);
    assert_eq!(code, 413);
    assert_eq!(d.status()["trng"]["queue_capacity"], 100_000);
}

#[test]
fn cors_is_off_by_default_and_never_offered_for_put() {
    let d = Daemon::start(&[]);
    let text = d.raw(
        "GET",
        "/api/v1/health",
        &["Origin: https://example.org"],
        "",
    );
    assert!(
        !text
            .to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("lokeyd.toml");
    std::fs::write(&conf, "[api]\ncors_origins = [\"https://example.org\"]\n").unwrap();
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    let text = d
        .raw(
            "GET",
            "/api/v1/health",
            &["Origin: https://example.org"],
            "",
        )
        .to_ascii_lowercase();
    assert!(
        text.contains("access-control-allow-origin: https://example.org"),
        "{text}"
    );
    let text = d
        .raw(
            "GET",
            "/api/v1/health",
            &["Origin: https://evil.example"],
            "",
        )
        .to_ascii_lowercase();
    assert!(!text.contains("access-control-allow-origin"), "{text}");
    let text = d
        .raw(
            "OPTIONS",
            "/api/v1/config/consume",
            &[
                "Origin: https://example.org",
                "Access-Control-Request-Method: PUT",
            ],
            "",
        )
        .to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 204"), "{text}");
    assert!(
        text.contains("access-control-allow-methods: get, post"),
        "{text}"
    );
    let text = d
        .raw(
            "PUT",
            "/api/v1/config/consume",
            &["Origin: https://example.org"],
            r#"{"consume":true}"#,
        )
        .to_ascii_lowercase();
    assert!(!text.contains("access-control-allow-origin"), "{text}");
}

#[test]
fn settings_changed_at_run_time_survive_a_restart_below_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("lokey.sock");
    let mut d = Daemon::start_with_socket(&[], dir.path(), &socket);
    let (code, body) = d.request(
        "PUT",
        "/api/v1/config/queue",
        &["Content-Type: application/json"],
        r#"{"trng_queue_size":5000,"fortuna_queue_size":20000}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(d.status()["trng"]["queue_capacity"], 5000);
    assert_eq!(d.stop(), Some(0));

    let mut d = Daemon::start_with_socket(&[], dir.path(), &socket);
    let (code, body) = d.get("/api/v1/config/queue");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["trng_queue_size"], 5000, "{body}");
    assert_eq!(v["fortuna_queue_size"], 20000, "{body}");
    assert_eq!(d.status()["trng"]["queue_capacity"], 5000);
    assert_eq!(d.stop(), Some(0));

    // The environment still wins over what was stored.
    let mut cmd = util::lokeyd();
    cmd.env("TRNG_QUEUE_SIZE", "777");
    let d = Daemon::spawn(
        cmd,
        &["--config", "/dev/null", "--emulate", "--no-credit"],
        dir.path(),
        &socket,
    );
    let (_, body) = d.get("/api/v1/config/queue");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["trng_queue_size"], 777, "{body}");
    assert_eq!(v["fortuna_queue_size"], 20000, "{body}");
}

#[test]
fn a_foreign_data_directory_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("thesis.tex"), "mine").unwrap();
    let out = lokeyd()
        .args(["--config", "/dev/null", "--emulate", "--no-credit"])
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(data.to_str().unwrap()), "{err}");
    assert!(err.contains("not a lokey data directory"), "{err}");
    assert_eq!(
        std::fs::read_dir(&data).unwrap().count(),
        1,
        "nothing written"
    );
}

#[test]
fn a_data_directory_in_use_is_refused() {
    let d = Daemon::start(&[]);
    let out = lokeyd()
        .args(["--config", "/dev/null", "--emulate", "--no-credit"])
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(d.data_dir())
        .arg("--socket")
        .arg(d.data_dir().parent().unwrap().join("other.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    assert!(err.contains(d.data_dir().to_str().unwrap()), "{err}");
}

#[test]
fn store_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mut d = Daemon::start(&[]);
    assert_eq!(d.stop(), Some(0));
    let mut checked = 0;
    let mut stack = vec![d.data_dir().to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
            checked += 1;
        }
    }
    assert!(checked > 0, "the store wrote no files");
}

/// Sets `key` to `value` over the socket, as `lokey config set` does.
fn config_set(
    d: &Daemon,
    key: &str,
    value: serde_json::Value,
) -> Result<serde_json::Value, String> {
    let mut c = lokey::client::Client::connect(d.socket()).unwrap();
    c.call(&lokey::proto::Request::ConfigSet {
        key: key.into(),
        value,
    })
    .map_err(|e| e.to_string())
}

#[test]
fn kernel_mix_settings_changed_at_run_time_take_effect_at_once() {
    // The emulator's bytes are only mixed (write(2), no credit, no capability needed), once
    // per kernel.mix_interval_secs after the CRNG is initialised, as on any running machine.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("lokeyd.toml");
    std::fs::write(
        &conf,
        "[kernel]\nmix_interval_secs = 3600\n[hwrng]\nmode = \"off\"\n",
    )
    .unwrap();
    let d = Daemon::spawn(
        lokeyd(),
        &["--config", conf.to_str().unwrap(), "--emulate"],
        dir.path(),
        &dir.path().join("lokey.sock"),
    );
    let mixed = |d: &Daemon| d.status()["kernel"]["mixed_bytes"].as_u64().unwrap();
    within(Duration::from_secs(10), || mixed(&d) == 64, "the first mix");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(mixed(&d), 64, "the next mix is an hour away");

    let set = config_set(&d, "kernel.mix_bytes", serde_json::json!(128)).unwrap();
    assert_eq!(set["kernel.mix_bytes"], 128);
    config_set(&d, "kernel.mix_interval_secs", serde_json::json!(1)).unwrap();
    // Every second now, 128 bytes each.
    within(
        Duration::from_secs(10),
        || mixed(&d) >= 64 + 2 * 128,
        "mixes at the new interval",
    );
    assert_eq!((mixed(&d) - 64) % 128, 0, "mixes of the new size");
    let kernel = d.status()["kernel"].clone();
    assert_eq!(kernel["failing"], false, "{kernel}");
    assert_eq!(
        kernel["credited_bits"], 0,
        "emulator output is never credited"
    );
}

#[test]
fn the_seed_file_interval_changed_at_run_time_takes_effect_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("lokeyd.toml");
    std::fs::write(
        &conf,
        "[daemon]\nlog_level = \"debug\"\n[fortuna]\nseed_interval_secs = 86400\n\
         [hwrng]\nmode = \"off\"\n",
    )
    .unwrap();
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    let written = |d: &Daemon| d.log().matches("Fortuna seed file written").count();
    // No seed file yet: the first is written once Fortuna is seeded, then not for a day.
    within(
        Duration::from_secs(10),
        || written(&d) >= 1,
        "the first seed file",
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(written(&d), 1, "{}", d.log());
    config_set(&d, "fortuna.seed_interval_secs", serde_json::json!(1)).unwrap();
    within(
        Duration::from_secs(8),
        || written(&d) >= 3,
        "seed files at the new interval",
    );
}
