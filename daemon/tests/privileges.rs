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

use util::{Daemon, eventually, lokeyd};

const NOBODY: u32 = 65534;
const CAP_SYS_ADMIN: u64 = 1 << 21;

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (to drop privileges and to grant CAP_SYS_ADMIN)");
    false
}

/// A world-readable directory with a config naming `user` and a random-bytes "device".
fn setup(user: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
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
             [hwrng]\nmode = \"on\"\npath = \"{}\"\n",
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
    Daemon::spawn(lokeyd(), &args, dir, &dir.join("lokey.sock"))
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
    let kernel = d.status()["kernel"].clone();
    let error = kernel["last_error"].as_str().unwrap();
    assert!(error.contains("CAP_SYS_ADMIN"), "{error}");
    let (code, body) = d.get("/api/v1/health");
    assert_eq!(code, 503, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["details"]["kernel"], false);
    assert!(d.log().contains("CAP_SYS_ADMIN"), "{}", d.log());
}
