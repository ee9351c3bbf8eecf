//! Least privilege, for real: these tests start `lokeyd` as root and as an unprivileged
//! user and read what the kernel says about the process. They need root (CI and the
//! development machine run as root); elsewhere they print why they skip.
//!
//! The entropy source is a file of random bytes named as `hwrng.path`: a device node other
//! than `/dev/hwrng` is credited (the kernel does not feed it itself), so the feeder's
//! RNDADDENTROPY path runs without a chip.

mod util;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use util::{Daemon, eventually, lokeyd, lokeyd_as_configured};

const NOBODY: u32 = 65534;
const CAP_SYS_ADMIN: u64 = 1 << 21;

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    crate::skipped!("skipped: needs root (to drop privileges and to grant CAP_SYS_ADMIN)");
    false
}

/// A world-readable directory with a config naming `user` and a random-bytes "device".
fn setup(user: &str) -> tempfile::TempDir {
    setup_with(user, "")
}

/// [`setup`] with `extra` appended to the configuration file.
fn setup_with(user: &str, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The daemon's data directory and socket are created in it by `user`'s daemon.
    let owner = nix::unistd::User::from_name(user).unwrap().unwrap();
    nix::unistd::chown(dir.path(), Some(owner.uid), None).unwrap();
    let mut random = vec![0u8; 1 << 20];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut random)
        .unwrap();
    let device = dir.path().join("rng");
    std::fs::write(&device, &random).unwrap();
    std::fs::set_permissions(&device, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(
        dir.path().join("lokeyd.toml"),
        format!(
            "[daemon]\nuser = \"{user}\"\n[chip]\nmode = \"emulator\"\n\
             [hwrng]\nmode = \"on\"\npath = \"{}\"\n{extra}",
            device.display()
        ),
    )
    .unwrap();
    dir
}

/// (effective uid, CapEff) of a process, from /proc.
fn credentials(pid: u32) -> (u32, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    let uid = field("Uid:")[1].parse().unwrap();
    let cap_eff = u64::from_str_radix(field("CapEff:")[0], 16).unwrap();
    (uid, cap_eff)
}

fn start(dir: &Path, extra: &[&str]) -> Daemon {
    let conf = dir.join("lokeyd.toml");
    let mut args = vec!["--config", conf.to_str().unwrap()];
    args.extend(extra);
    Daemon::spawn(lokeyd_as_configured(), &args, dir, &dir.join("lokey.sock"))
}

#[test]
fn as_root_it_becomes_the_user_with_only_cap_sys_admin_and_credits_for_real() {
    if !root() {
        return;
    }
    let dir = setup("nobody");
    let d = start(dir.path(), &[]);
    assert_eq!(credentials(d.pid()), (NOBODY, CAP_SYS_ADMIN), "{}", d.log());
    // RNDADDENTROPY really succeeded: credited bits are counted.
    eventually(
        || d.status()["kernel"]["credited_bits"].as_u64().unwrap_or(0) > 0,
        "credited bits in status",
    );
    let kernel = d.status()["kernel"].clone();
    assert_eq!(kernel["failing"], false, "{kernel}");
    assert!(d.log().contains("running as nobody"), "{}", d.log());
    // … and in the metrics.
    let (_, metrics) = d.get("/metrics");
    let credited: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("lokey_kernel_credited_bits_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(credited > 0, "{metrics}");
}

#[test]
fn without_crediting_it_keeps_no_capability_at_all() {
    if !root() {
        return;
    }
    let dir = setup("nobody");
    let d = start(dir.path(), &["--no-credit"]);
    assert_eq!(credentials(d.pid()), (NOBODY, 0), "{}", d.log());
    let kernel = d.status()["kernel"].clone();
    assert_eq!(kernel["enabled"], false);
    assert_eq!(kernel["credited_bits"], 0);
}

#[test]
fn without_the_capability_the_feeder_reports_eperm_and_health_shows_it() {
    if !root() {
        return;
    }
    let dir = setup("nobody");
    // Started directly as nobody: no capability survives the exec.
    nix::unistd::chown(dir.path(), Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    let mut cmd = lokeyd();
    cmd.uid(NOBODY).gid(NOBODY);
    let conf = dir.path().join("lokeyd.toml");
    let d = Daemon::spawn(
        cmd,
        &["--config", conf.to_str().unwrap()],
        dir.path(),
        &dir.path().join("lokey.sock"),
    );
    assert_eq!(credentials(d.pid()), (NOBODY, 0));
    eventually(|| d.status()["kernel"]["failing"] == true, "feeder failing");
    // The failing feeder backs off (1 s, 2 s, …) instead of taking every healthy block of the
    // credited source into a failing call; the blocks meanwhile go to Fortuna and the queue.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let status = d.status();
    let kernel = status["kernel"].clone();
    assert!(kernel["errors"].as_u64().unwrap() <= 3, "{kernel}");
    assert_eq!(kernel["failing"], true, "the error stays visible: {kernel}");
    // Each failed call took one 64-byte chunk; the source routed far more than that.
    let errors = kernel["errors"].as_u64().unwrap();
    let hwrng = status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "hwrng")
        .unwrap()
        .clone();
    assert!(
        hwrng["bytes_routed"].as_u64().unwrap() > 64 * (errors + 4),
        "the credited source's blocks went nowhere but the feeder: {hwrng}"
    );
    let error = kernel["last_error"].as_str().unwrap();
    assert!(error.contains("CAP_SYS_ADMIN"), "{error}");
    let (code, body) = d.get("/api/v1/health");
    assert_eq!(code, 503, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["details"]["kernel"], false);
    assert!(d.log().contains("CAP_SYS_ADMIN"), "{}", d.log());
}

/// (CapEff, CapPrm, CapAmb) of a process, from /proc.
fn capabilities(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mask = |name: &str| {
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim();
        u64::from_str_radix(hex, 16).unwrap()
    };
    (mask("CapEff:"), mask("CapPrm:"), mask("CapAmb:"))
}

#[test]
fn mix_only_keeps_no_capability_and_refuses_to_turn_crediting_on_at_run_time() {
    if !root() {
        return;
    }
    // kernel.bits_per_byte = 0: every byte is written without credit, so RNDADDENTROPY (and
    // with it CAP_SYS_ADMIN) is never needed, before or after CRNG initialisation.
    let dir = setup_with("nobody", "[kernel]\nbits_per_byte = 0\n");
    let d = start(dir.path(), &[]);
    assert_eq!(credentials(d.pid()), (NOBODY, 0), "{}", d.log());
    eventually(
        || d.status()["kernel"]["mixed_bytes"].as_u64().unwrap_or(0) > 0,
        "mixed",
    );
    let kernel = d.status()["kernel"].clone();
    assert_eq!(kernel["failing"], false, "{kernel}");
    assert_eq!(kernel["credited_bits"], 0, "{kernel}");
    // Crediting cannot come back without the capability: refused, nothing changes.
    let mut c = lokey::client::Client::connect(d.socket()).unwrap();
    let set = |c: &mut lokey::client::Client, bits: u64| {
        c.call(&lokey::proto::Request::ConfigSet {
            key: "kernel.bits_per_byte".into(),
            value: serde_json::json!(bits),
        })
    };
    let err = set(&mut c, 1).unwrap_err().to_string();
    assert!(
        err.contains("CAP_SYS_ADMIN") && err.contains("restart"),
        "{err}"
    );
    let now = c
        .call(&lokey::proto::Request::ConfigGet {
            key: Some("kernel.bits_per_byte".into()),
        })
        .unwrap();
    assert_eq!(now["kernel.bits_per_byte"], 0);
    set(&mut c, 0).expect("0 stays allowed");
}

/// `lokeyd` started as nobody with CAP_SYS_ADMIN as an ambient capability, as systemd's
/// `User=` and `AmbientCapabilities=` start it; `None` (the test skips) without setpriv(1).
fn as_systemd_would(dir: &Path, extra: &[&str]) -> Option<Daemon> {
    let probe = std::process::Command::new("setpriv")
        .arg("--version")
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        crate::skipped!("skipped: needs setpriv(1) to start a process with an ambient capability");
        return None;
    }
    nix::unistd::chown(dir, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=+sys_admin",
        "--ambient-caps=+sys_admin",
        "--",
        env!("CARGO_BIN_EXE_lokeyd"),
    ])
    .env_remove("LOKEY_CONFIG")
    .env_remove("RUST_LOG")
    .env_remove("NOTIFY_SOCKET");
    let conf = dir.join("lokeyd.toml");
    let mut args = vec!["--config", conf.to_str().unwrap()];
    args.extend(extra);
    Some(Daemon::spawn(cmd, &args, dir, &dir.join("lokey.sock")))
}

#[test]
fn under_systemd_an_ambient_cap_sys_admin_is_dropped_when_crediting_is_off() {
    if !root() {
        return;
    }
    let dir = setup("nobody");
    let Some(d) = as_systemd_would(dir.path(), &["--no-credit"]) else {
        return;
    };
    assert_eq!(credentials(d.pid()).0, NOBODY);
    assert_eq!(capabilities(d.pid()), (0, 0, 0), "{}", d.log());
    assert!(
        d.log().contains("dropped capabilities not needed"),
        "{}",
        d.log()
    );
    drop(d);

    // Mix only: the same.
    let dir = setup_with("nobody", "[kernel]\nbits_per_byte = 0\n");
    let Some(d) = as_systemd_would(dir.path(), &[]) else {
        return;
    };
    assert_eq!(capabilities(d.pid()), (0, 0, 0), "{}", d.log());
}

#[test]
fn under_systemd_with_crediting_on_cap_sys_admin_is_kept_and_used() {
    if !root() {
        return;
    }
    let dir = setup("nobody");
    let Some(d) = as_systemd_would(dir.path(), &[]) else {
        return;
    };
    let (eff, prm, _) = capabilities(d.pid());
    assert_eq!((eff, prm), (CAP_SYS_ADMIN, CAP_SYS_ADMIN), "{}", d.log());
    eventually(
        || d.status()["kernel"]["credited_bits"].as_u64().unwrap_or(0) > 0,
        "credited bits in status",
    );
}

// --- started as root in directories the service user cannot use ------------------------------

/// The owner's uid of `path`.
fn owner(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().uid()
}

/// A root-owned directory `dir/name` with `mode`.
fn root_dir(dir: &Path, name: &str, mode: u32) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::create_dir(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// `lokeyd` as root with `dir`'s configuration (user nobody), the data directory `data` and the
/// socket `socket`, run until it exits: (exit code, stderr).
fn run_to_exit(dir: &Path, data: &Path, socket: &Path) -> (Option<i32>, String) {
    let out = lokeyd_as_configured()
        .arg("--config")
        .arg(dir.join("lokeyd.toml"))
        .args(["--no-credit", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .arg("--socket")
        .arg(socket)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn as_root_what_it_creates_is_its_users_and_its_socket_goes_at_exit() {
    if !root() {
        return;
    }
    let dir = setup("nobody");
    // Below a directory nobody cannot write: every directory lokeyd makes must become nobody's.
    let base = root_dir(dir.path(), "base", 0o755);
    let state = base.join("state").join("lokey");
    let socket = base.join("run").join("lokey").join("lokey.sock");
    let conf = dir.path().join("lokeyd.toml");
    let mut d = Daemon::spawn(
        lokeyd_as_configured(),
        &["--config", conf.to_str().unwrap(), "--no-credit"],
        &state,
        &socket,
    );
    assert_eq!(credentials(d.pid()), (NOBODY, 0), "{}", d.log());
    for made in [
        base.join("state"),
        state.clone(),
        state.join("data"),
        base.join("run"),
        socket.parent().unwrap().to_path_buf(),
        socket.clone(),
    ] {
        assert_eq!(owner(&made), NOBODY, "{} is not nobody's", made.display());
    }
    assert_eq!(owner(&base), 0, "a directory it found stays root's");
    // The store is in use: nothing degraded.
    let (_, body) = d.get("/api/v1/health");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["details"]["database"], true, "{body}\n{}", d.log());
    assert!(!d.log().contains("serving Fortuna only"), "{}", d.log());
    assert_eq!(d.stop(), Some(0), "{}", d.log());
    assert!(!socket.exists(), "the socket was left behind:\n{}", d.log());
}

#[test]
fn as_root_it_refuses_a_socket_directory_its_user_cannot_write() {
    if !root() {
        return;
    }
    let dir = setup("nobody");
    let run = root_dir(dir.path(), "run", 0o755);
    let socket = run.join("lokey.sock");
    let data = dir.path().join("data");
    let (code, log) = run_to_exit(dir.path(), &data, &socket);
    assert_eq!(code, Some(1), "{log}");
    let named = format!(
        "user nobody cannot create and remove files in {}",
        run.display()
    );
    assert!(log.contains(&named), "{log}");
    assert!(
        log.contains(&format!("chown nobody {}", run.display())),
        "{log}"
    );
    assert!(log.contains("--socket"), "{log}");
    assert!(!socket.exists(), "a refused start left its socket behind");

    // Given to the user, the same start works.
    nix::unistd::chown(&run, Some(NOBODY.into()), None).unwrap();
    let conf = dir.path().join("lokeyd.toml");
    let mut d = Daemon::spawn(
        lokeyd_as_configured(),
        &["--config", conf.to_str().unwrap(), "--no-credit"],
        dir.path(),
        &socket,
    );
    assert_eq!(d.stop(), Some(0), "{}", d.log());
    assert!(!socket.exists(), "the socket was left behind:\n{}", d.log());
}

#[test]
fn as_root_it_refuses_a_data_directory_its_user_cannot_reach() {
    if !root() {
        return;
    }
    let dir = setup("nobody");
    let socket = dir.path().join("lokey.sock");
    // A private parent: the data directory, made and given to nobody, is out of its reach.
    let private = root_dir(dir.path(), "private", 0o700);
    let (code, log) = run_to_exit(dir.path(), &private.join("data"), &socket);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(&format!(
            "user nobody cannot pass through {}",
            private.display()
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("chmod o+x {}", private.display())),
        "{log}"
    );
    assert!(log.contains("--data-dir"), "{log}");
    assert!(!socket.exists(), "a refused start left its socket behind");

    // An existing data directory nobody may not write, below a directory it may pass: the
    // data directory itself is lokeyd's and given to nobody, so the start works.
    let open = root_dir(dir.path(), "open", 0o755);
    let data = root_dir(&open, "data", 0o700);
    let conf = dir.path().join("lokeyd.toml");
    let mut d = Daemon::spawn(
        lokeyd_as_configured(),
        &["--config", conf.to_str().unwrap(), "--no-credit"],
        &open,
        &socket,
    );
    assert_eq!(owner(&data), NOBODY);
    assert_eq!(d.stop(), Some(0), "{}", d.log());
}
