//! Two daemons on this machine: A, a lokey device serving over TLS with the (emulated) chip's
//! key (`api.tls = "chip"`), and B, a chip-less `[upstream]` feeder pinned to A's key that
//! mixes A's bytes into the kernel pool — and, run as root, credits them with RNDADDENTROPY.
//! A is stopped: B degrades (health names the upstream), logs the failure once and retries
//! with backoff; A is started again on the same port with the same key: B recovers. Also a
//! wrong pin (both fingerprints named, nothing mixed), the configuration's refusals, and the
//! one-shot `lokey seed-kernel`. All traffic is to 127.0.0.1.
//!
//! The kernel check is B's own count of successful RNDADDENTROPY calls: the ioctl either
//! succeeds (counted) or fails (B degrades with the kernel's error); the kernel's
//! `entropy_avail` cannot show it, being pinned at 256 once the CRNG is ready (≥ 5.18).

mod util;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lokey::remote::Pin;
use serde_json::Value;
use util::{Daemon, lokey_cmd, lokeyd, within};

/// How long B may take to notice a change (its backoff reaches 8 s and then 16 s).
const NOTICE: Duration = Duration::from_secs(40);

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Device A: TLS with the emulated chip's key, on `listen`, its state in `dir/data` (the
/// emulated chip's key with it, so a restart serves the same key). Returns it and its pin.
fn device(dir: &Path, listen: &str) -> (Daemon, Pin) {
    let conf = dir.join("lokeyd.toml");
    std::fs::write(
        &conf,
        "[api]\ntls = \"chip\"\ntls_names = [\"127.0.0.1\"]\n[beacon]\nenabled = false\n",
    )
    .unwrap();
    let d = Daemon::start_with_socket(
        &["--config", conf.to_str().unwrap(), "--listen", listen],
        dir,
        &dir.join("lokey.sock"),
    );
    let pin = d.tls_pin();
    (d, pin)
}

/// Feeder B: no chip, no hwrng (so no beacon either, though `beacon.enabled` keeps its default);
/// `[upstream]` at `url` pinned to `pin`, every second, crediting `credit` bits per byte.
fn feeder(dir: &Path, url: &str, pin: &str, credit: u8) -> Daemon {
    let conf = dir.join("lokeyd.toml");
    std::fs::write(
        &conf,
        format!(
            "[chip]\nmode = \"off\"\n[hwrng]\nmode = \"off\"\n\
             [upstream]\nurl = \"{url}\"\npin = \"{pin}\"\ninterval_secs = 1\nbytes = 64\n\
             credit_bits_per_byte = {credit}\n"
        ),
    )
    .unwrap();
    Daemon::spawn(
        lokeyd(),
        &["--config", conf.to_str().unwrap()],
        dir,
        &dir.join("lokey.sock"),
    )
}

/// B's health: (HTTP status, document).
fn health(d: &Daemon) -> (u16, Value) {
    let (code, body) = d.get("/api/v1/health");
    (code, serde_json::from_str(&body).unwrap())
}

fn upstream(d: &Daemon) -> Value {
    d.status()["upstream"].clone()
}

fn count(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

#[test]
fn a_feeder_mixes_from_the_device_degrades_when_it_stops_and_recovers() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let (mut a, pin) = device(a_dir.path(), "127.0.0.1:0");
    let url = format!("https://{}", a.addr());
    let credit = if root() {
        8
    } else {
        skipped!(
            "skipped: crediting (RNDADDENTROPY needs CAP_SYS_ADMIN, this test is not root); \
             the feeder mixes without credit instead"
        );
        0
    };
    let b = feeder(b_dir.path(), &url, &pin.to_string(), credit);

    // Rounds succeed: B is healthy without a chip, and A's bytes reach the kernel.
    within(
        NOTICE,
        || health(&b).0 == 200 && count(&upstream(&b), "fetches") >= 2,
        "B healthy with two rounds done",
    );
    let (_, h) = health(&b);
    assert_eq!(h["details"]["upstream"], true, "{h}");
    assert_eq!(h["upstream"]["url"], url.as_str(), "{h}");
    let up = upstream(&b);
    assert_eq!(up["state"], "ok", "{up}");
    assert_eq!(up["pin"], pin.to_string());
    assert!(up["last_success"].is_string(), "{up}");
    // Every byte given to the kernel was fetched in a successful round of 64.
    let fetches = count(&up, "fetches");
    let mixed = count(&up, "bytes_mixed");
    assert_eq!(mixed, 64 * fetches, "{up}");
    if credit > 0 {
        // Each counted RNDADDENTROPY succeeded: as root the ioctl credits 8 bits per byte.
        assert_eq!(count(&up, "bytes_credited"), mixed, "{up}");
        assert_eq!(count(&up, "bits_credited"), 8 * mixed, "{up}");
    } else {
        assert_eq!(count(&up, "bits_credited"), 0, "{up}");
    }
    let (code, metrics) = b.get("/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains(&format!("lokey_upstream_ok{{url=\"{url}\"}} 1")),
        "{metrics}"
    );
    assert!(
        metrics.contains("lokey_upstream_mixed_bytes_total"),
        "{metrics}"
    );
    let shown = util::lokey(&b, &["status"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("upstream") && text.contains(&url), "{text}");
    let shown = util::lokey(&b, &["health"]);
    assert!(shown.status.success());
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("upstream"),
        "{shown:?}"
    );

    // A stops: B degrades, naming the upstream and why, and says so once. (B may have failed
    // before, while A's Fortuna waited for its first reseed: counted from here.)
    let port = a.addr().port();
    let failed_before = count(&upstream(&b), "failures");
    let logged_before = b.log().len();
    let stopped = Instant::now();
    assert_eq!(a.stop(), Some(0));
    within(NOTICE, || health(&b).0 == 503, "B degraded");
    let (_, h) = health(&b);
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["details"]["upstream"], false, "{h}");
    let why = h["upstream"]["last_error"].as_str().unwrap_or_default();
    assert!(why.contains(&format!("127.0.0.1:{port}")), "{h}");
    let mixed_before = count(&upstream(&b), "bytes_mixed");
    // Retries with backoff: four failed rounds take at least 1 + 2 + 4 = 7 s, where every
    // interval_secs = 1 would take 3 s.
    within(
        NOTICE,
        || count(&upstream(&b), "failures") >= failed_before + 4,
        "four failed rounds",
    );
    let elapsed = stopped.elapsed().as_secs_f64();
    assert!(
        elapsed >= 6.5,
        "four failed rounds in {elapsed:.1} s: no backoff"
    );
    let log = b.log()[logged_before..].to_string();
    assert_eq!(
        log.matches("upstream feeder: fetching from the device failed")
            .count(),
        1,
        "the failure is logged once:\n{log}"
    );
    let ui = util::lokey(&b, &["health"]);
    assert_eq!(ui.status.code(), Some(1));
    let text = String::from_utf8_lossy(&ui.stdout);
    assert!(
        text.contains("upstream") && text.contains("FAILING"),
        "{text}"
    );
    assert_eq!(
        count(&upstream(&b), "bytes_mixed"),
        mixed_before,
        "nothing mixed meanwhile"
    );

    // A again, same port, same key (the emulated chip's state is in A's data directory).
    let (a, pin_again) = device(a_dir.path(), &format!("127.0.0.1:{port}"));
    assert_eq!(pin_again, pin, "the device's key survives its restart");
    within(
        NOTICE,
        || health(&b).0 == 200 && count(&upstream(&b), "bytes_mixed") > mixed_before,
        "B recovered",
    );
    let up = upstream(&b);
    assert_eq!(up["state"], "ok");
    assert!(up["last_error"].is_null(), "{up}");
    if credit > 0 {
        assert_eq!(count(&up, "bits_credited"), 8 * count(&up, "bytes_mixed"));
    }
    let log = b.log()[logged_before..].to_string();
    assert_eq!(
        log.matches("upstream feeder working again").count(),
        1,
        "{log}"
    );
    drop(a);
}

#[test]
fn a_wrong_pin_mixes_nothing_and_names_both_keys() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let (a, pin) = device(a_dir.path(), "127.0.0.1:0");
    let wrong = Pin([0x5a; 32]);
    let b = feeder(
        b_dir.path(),
        &format!("https://{}", a.addr()),
        &wrong.to_string(),
        0,
    );
    within(
        NOTICE,
        || count(&upstream(&b), "failures") >= 1,
        "a failed round",
    );
    let (code, h) = health(&b);
    assert_eq!(code, 503, "{h}");
    assert_eq!(h["details"]["upstream"], false);
    let why = h["upstream"]["last_error"].as_str().unwrap_or_default();
    assert!(
        why.contains(&wrong.to_string()) && why.contains(&pin.to_string()),
        "{why}"
    );
    let up = upstream(&b);
    assert_eq!(
        (count(&up, "fetches"), count(&up, "bytes_mixed")),
        (0, 0),
        "{up}"
    );
}

/// `lokeyd --print-config` with `toml`: (exit code, stderr).
fn check_config(toml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("lokeyd.toml");
    std::fs::write(&conf, toml).unwrap();
    let out = lokeyd()
        .args(["--config", conf.to_str().unwrap(), "--print-config"])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_configuration_refuses_credit_without_a_pin_and_plain_http() {
    let pin = Pin([1; 32]).to_string();
    let (code, err) =
        check_config("[upstream]\nurl = \"https://device:8443\"\ncredit_bits_per_byte = 2\n");
    assert_eq!(code, Some(2), "{err}");
    for key in [
        "upstream.pin",
        "upstream.credit_bits_per_byte",
        "lokeyd.toml:2",
    ] {
        assert!(err.contains(key), "{key}: {err}");
    }
    let (code, err) = check_config(&format!(
        "[upstream]\nurl = \"http://device:8080\"\npin = \"{pin}\"\n"
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("upstream.url") && err.contains("https://"),
        "{err}"
    );
    let (code, err) = check_config("[upstream]\npin = \"sha256:00\"\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("upstream.url"), "{err}");
    let (code, err) = check_config(&format!(
        "[upstream]\nurl = \"https://device:8443\"\npin = \"{pin}\"\n[kernel]\nenabled = false\n"
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("kernel.enabled"), "{err}");
    let (code, err) = check_config(&format!(
        "[upstream]\nurl = \"https://device:8443\"\npin = \"{pin}\"\ncredit_bits_per_byte = 1\n"
    ));
    assert_eq!(code, Some(0), "{err}");
}

/// `lokey seed-kernel` against A with `args`.
fn seed(url: &str, pin: &str, args: &[&str]) -> std::process::Output {
    lokey_cmd()
        .args(["seed-kernel", "--remote", url, "--pin", pin])
        .args(args)
        .output()
        .unwrap()
}

/// `cmd` as the unprivileged user nobody (65534), with `setpriv`; `None` if it is missing.
fn as_nobody(program: &Path) -> Option<Command> {
    let usable = Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    usable.then(|| {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(program);
        cmd
    })
}

#[test]
fn seed_kernel_mixes_credits_only_when_asked_and_refuses_a_wrong_pin() {
    let dir = tempfile::tempdir().unwrap();
    let (a, pin) = device(dir.path(), "127.0.0.1:0");
    let url = format!("https://{}", a.addr());
    let pin = pin.to_string();
    // A's Fortuna serves after its first reseed.
    let mut mixed = None;
    within(
        NOTICE,
        || {
            let out = seed(&url, &pin, &["--bytes", "32"]);
            let ok = out.status.success();
            mixed = Some(out);
            ok
        },
        "seed-kernel mixes",
    );
    let text = String::from_utf8_lossy(&mixed.unwrap().stdout).into_owned();
    assert!(text.contains("mixed 32 bytes"), "{text}");
    assert!(text.contains("credited nothing"), "{text}");

    // A wrong pin: refused, both keys named, exit 2.
    let wrong = Pin([0x33; 32]).to_string();
    let out = seed(&url, &wrong, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&wrong) && err.contains(&pin), "{err}");

    // Never plain HTTP; never without a remote.
    let out = seed(&url.replace("https", "http"), &pin, &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = lokey_cmd().arg("seed-kernel").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--remote"));

    let lokey = Path::new(env!("CARGO_BIN_EXE_lokeyd")).with_file_name("lokey");
    let unprivileged = if root() {
        // Root: the credit is given (the ioctl succeeded, or the command fails).
        let out = seed(&url, &pin, &["--credit"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(text.contains("credited 512 bits"), "{text}");
        // And as an ordinary user, refused.
        match as_nobody(&lokey) {
            Some(cmd) => Some(cmd),
            None => {
                skipped!("skipped: seed-kernel --credit as an ordinary user (no setpriv)");
                None
            }
        }
    } else {
        skipped!("skipped: seed-kernel --credit as root (this test is not root)");
        Some(Command::new(&lokey))
    };
    if let Some(mut cmd) = unprivileged {
        let out = cmd
            .env_remove("LOKEY_SOCKET")
            .args(["seed-kernel", "--remote", &url, "--pin", &pin, "--credit"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("CAP_SYS_ADMIN"), "{err}");
    }
}
