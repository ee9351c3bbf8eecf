//! The `lokey` binary on its own, without a daemon: its version, its help, and the error when
//! no daemon answers. (Everything with a daemon is in daemon/tests/cli.rs.)
//!
//! This suite also makes `cargo test --workspace` build `target/<profile>/lokey`, which the
//! daemon's end-to-end tests run: cargo builds a package's binaries for its integration tests.

use std::process::Command;

fn lokey() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lokey"));
    cmd.env_remove("LOKEY_SOCKET");
    cmd
}

#[test]
fn version_and_help() {
    let out = lokey().arg("--version").output().unwrap();
    assert!(out.status.success());
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    let out = lokey().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for command in [
        "bytes", "int", "uuid", "status", "health", "device", "config",
    ] {
        assert!(
            help.contains(command),
            "--help does not list {command}:\n{help}"
        );
    }
}

#[test]
fn without_a_daemon_the_error_names_the_socket_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nothing.sock");
    let out = lokey()
        .arg("--socket")
        .arg(&socket)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to lokeyd"), "{err}");
    assert!(err.contains(socket.to_str().unwrap()), "{err}");
    assert!(err.contains("is lokeyd running?"), "{err}");
}
