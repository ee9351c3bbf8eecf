//! The files that install and run lokeyd: systemd/lokeyd.service (checked by
//! `systemd-analyze verify` against this build's lokeyd), systemd/lokey.sysusers,
//! udev/60-lokey.rules and the Debian package's metadata, and that they agree with each other
//! and with the daemon.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every value of `key=` in the unit, in order.
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
        .collect()
}

fn value<'a>(unit: &'a str, key: &str) -> &'a str {
    let v = values(unit, key);
    assert_eq!(v.len(), 1, "{key}= should appear exactly once: {v:?}");
    v[0]
}

fn systemd_analyze() -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join("systemd-analyze"))
        .find(|p| p.is_file())
}

#[test]
fn systemd_analyze_verify_passes() {
    let Some(analyze) = systemd_analyze() else {
        crate::skipped!(
            "skipped: systemd-analyze is not installed (apt-get install systemd); this test \
             runs systemd-analyze verify on systemd/lokeyd.service"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The unit as packaged, but starting this build's lokeyd (verify checks that it exists
    // and is executable).
    let unit = read("systemd/lokeyd.service");
    assert!(unit.contains("\nExecStart=/usr/bin/lokeyd\n"));
    let lokeyd = env!("CARGO_BIN_EXE_lokeyd");
    let unit = unit.replace(
        "\nExecStart=/usr/bin/lokeyd\n",
        &format!("\nExecStart={lokeyd}\n"),
    );
    let path = dir.path().join("lokeyd.service");
    std::fs::write(&path, unit).unwrap();
    // Documentation=man:… is verified too: the repository's man pages, laid out for man(1).
    for (page, section) in [("lokeyd.8", "8"), ("lokeyd.toml.5", "5"), ("lokey.1", "1")] {
        let sub = dir.path().join(format!("man/man{section}"));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::copy(repo().join("man").join(page), sub.join(page)).unwrap();
    }
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .env("MANPATH", dir.path().join("man"))
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines about this unit (others are about the host's own units, e.g. in a container).
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("lokeyd.service") || l.contains(&*path.to_string_lossy()))
        // systemd older than the host's system-call tables names calls it does not know.
        .filter(|l| !l.contains("Failed to parse system call"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify failed ({}):\n{stderr}",
        out.status
    );
}

#[test]
fn the_unit_is_hardened_as_documented() {
    let unit = read("systemd/lokeyd.service");
    // Started by systemd's notification protocol, watched, restarted.
    assert_eq!(value(&unit, "Type"), "notify");
    assert_eq!(value(&unit, "NotifyAccess"), "main");
    assert!(value(&unit, "WatchdogSec").ends_with('s'));
    assert_eq!(value(&unit, "Restart"), "on-failure");
    // Early boot, like rngd: before sysinit.target, so without the default dependencies.
    assert_eq!(value(&unit, "DefaultDependencies"), "no");
    assert!(
        values(&unit, "Before")
            .iter()
            .any(|v| v.contains("sysinit.target"))
    );
    assert_eq!(value(&unit, "WantedBy"), "sysinit.target");
    let after = values(&unit, "After").join(" ");
    for dep in ["local-fs.target", "systemd-sysusers.service"] {
        assert!(after.contains(dep), "After= lacks {dep}");
    }
    // Its own user, CAP_SYS_ADMIN only.
    assert_eq!(value(&unit, "User"), "lokey");
    assert_eq!(value(&unit, "AmbientCapabilities"), "CAP_SYS_ADMIN");
    assert_eq!(value(&unit, "CapabilityBoundingSet"), "CAP_SYS_ADMIN");
    assert_eq!(value(&unit, "NoNewPrivileges"), "yes");
    assert_eq!(value(&unit, "ProtectSystem"), "strict");
    assert_eq!(value(&unit, "StateDirectory"), "lokey");
    assert_eq!(value(&unit, "RuntimeDirectory"), "lokey");
    // Devices: the I2C buses, the kernel's RNG devices and the hardware RNG, nothing more.
    assert_eq!(value(&unit, "DevicePolicy"), "closed");
    assert_eq!(
        values(&unit, "DeviceAllow"),
        [
            "char-i2c rw",
            "/dev/random rw",
            "/dev/urandom rw",
            "/dev/hwrng r"
        ]
    );
    assert_eq!(value(&unit, "ExecStart"), "/usr/bin/lokeyd");
}

#[test]
fn unit_sysusers_udev_and_daemon_agree() {
    let unit = read("systemd/lokeyd.service");
    let sysusers = read("systemd/lokey.sysusers");
    let rules = read("udev/60-lokey.rules");
    let entries: Vec<Vec<&str>> = sysusers
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    // The unit's user is created, with its StateDirectory as home, and is in group i2c.
    let user = value(&unit, "User");
    assert!(
        entries
            .iter()
            .any(|e| e[0] == "u" && e[1] == user && sysusers.contains("/var/lib/lokey")),
        "{sysusers}"
    );
    assert!(
        entries.iter().any(|e| e[..] == ["m", user, "i2c"][..]),
        "{sysusers}"
    );
    // udev gives the I2C nodes to group i2c and /dev/hwrng to the daemon's group, and pulls
    // in the unit by its file name.
    let rule_lines: Vec<&str> = rules
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert!(
        rule_lines
            .iter()
            .any(|l| l.contains("SUBSYSTEM==\"i2c-dev\"")
                && l.contains("GROUP=\"i2c\"")
                && l.contains("MODE=\"0660\"")),
        "{rules}"
    );
    assert!(
        rule_lines
            .iter()
            .any(|l| l.contains("KERNEL==\"hwrng\"") && l.contains(&format!("GROUP=\"{user}\""))),
        "{rules}"
    );
    assert!(
        rule_lines
            .iter()
            .any(|l| l.contains("ENV{SYSTEMD_WANTS}+=\"lokeyd.service\"")
                && l.contains("TAG+=\"systemd\"")),
        "{rules}"
    );
    // The daemon's defaults match the unit: the user it would switch to, and the paths it
    // uses under systemd (StateDirectory, RuntimeDirectory).
    let out = util::lokeyd_as_configured()
        .args(["--config", "/dev/null", "--print-config"])
        .env("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let config: toml::Value = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(config["daemon"]["user"].as_str(), Some(user));
    assert_eq!(
        config["daemon"]["data_dir"].as_str(),
        Some("/var/lib/lokey")
    );
    assert_eq!(
        config["daemon"]["socket"].as_str(),
        Some("/run/lokey/lokey.sock")
    );
}

#[test]
fn the_packaged_configuration_is_the_daemons_example_and_loads() {
    // scripts/build-deb installs `lokeyd --print-example-config` as /etc/lokey/lokeyd.toml.
    let out = util::lokeyd_as_configured()
        .arg("--print-example-config")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lokeyd.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let loaded = util::lokeyd_as_configured()
        .arg("--config")
        .arg(&path)
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{loaded:?}");
    let defaults = util::lokeyd_as_configured()
        .args(["--config", "/dev/null", "--print-config"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&loaded.stdout),
        String::from_utf8_lossy(&defaults.stdout),
        "the example configuration should set nothing but the defaults"
    );
    let script = read("scripts/build-deb");
    assert!(script.contains("--print-example-config"));
}

#[test]
fn the_deb_metadata_names_files_that_exist() {
    let manifest: toml::Value = toml::from_str(&read("daemon/Cargo.toml")).unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    assert_eq!(deb["name"].as_str(), Some("lokey"));
    let assets = deb["assets"].as_array().unwrap();
    let mut dests = Vec::new();
    for asset in assets {
        let asset = asset.as_array().unwrap();
        let (src, dest) = (asset[0].as_str().unwrap(), asset[1].as_str().unwrap());
        dests.push(dest.to_string());
        // Built (target/release/) and generated (packaging/generated/) files exist only
        // during scripts/build-deb; everything else is in the repository.
        if !src.starts_with("target/") && !src.contains("packaging/generated/") {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(src);
            assert!(path.exists(), "deb asset {src} is missing");
        }
    }
    assert!(dests.iter().any(|d| d == "etc/lokey/lokeyd.toml"));
    let units = &deb["systemd-units"];
    assert_eq!(units["unit-name"].as_str(), Some("lokeyd"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(units["unit-scripts"].as_str().unwrap());
    assert!(dir.join("lokeyd.service").is_file());
    // cargo-deb installs <deb name>.sysusers as /usr/lib/sysusers.d/<deb name>.conf.
    assert!(dir.join("lokey.sysusers").is_file());
    let expected = read("packaging/deb-files.txt");
    for path in [
        "/usr/lib/systemd/system/lokeyd.service",
        "/usr/lib/sysusers.d/lokey.conf",
        "/usr/lib/udev/rules.d/60-lokey.rules",
        "/etc/lokey/lokeyd.toml",
    ] {
        assert!(
            expected.lines().any(|l| l == path),
            "deb-files.txt lacks {path}"
        );
    }
}
