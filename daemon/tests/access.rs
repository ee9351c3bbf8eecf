//! Who may change the configuration, for real: REST clients on a non-loopback address (403
//! without a configured admin token, 401 with a wrong one, 200 with the right one), and a
//! socket client of another uid (the CLI run as `nobody`: refused with exit 2, or not even
//! connected when the socket's mode keeps it out). State is checked not to change.

mod util;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Output;

use util::Daemon;

/// A non-loopback IPv4 address of this machine: the one a datagram to a documentation
/// address would leave from (nothing is sent), else the first of `ip -4 -o addr`.
fn non_loopback() -> Option<Ipv4Addr> {
    let routed = UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.123:9").map(|()| s))
        .and_then(|s| s.local_addr())
        .ok()
        .and_then(|a| match a.ip() {
            IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
            _ => None,
        });
    routed.or_else(|| {
        let out = std::process::Command::new("ip")
            .args(["-4", "-o", "addr"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1))
            .filter_map(|cidr| cidr.split('/').next()?.parse::<Ipv4Addr>().ok())
            .find(|ip| !ip.is_loopback())
    })
}

/// (status, body) of a request to `addr`.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, String) {
    let raw = util::raw_request(addr, method, path, headers, body);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (code, body.to_string())
}

fn consume(addr: SocketAddr) -> serde_json::Value {
    let (code, body) = request(addr, "GET", "/api/v1/config/consume", &[], "");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["consume"].clone()
}

const OFF: &str = r#"{"consume": false}"#;
const JSON: &str = "Content-Type: application/json";

#[test]
fn configuration_changes_from_a_non_loopback_address_need_the_admin_token() {
    let Some(ip) = non_loopback() else {
        println!("skipped: this machine has no non-loopback IPv4 address");
        return;
    };
    // No token: only loopback clients may change the configuration.
    let d = Daemon::with_config("", &["--listen", "0.0.0.0:0"]);
    let remote = SocketAddr::from((ip, d.addr().port()));
    let local = SocketAddr::from(([127, 0, 0, 1], d.addr().port()));
    let (code, body) = request(remote, "PUT", "/api/v1/config/consume", &[JSON], OFF);
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("loopback") && body.contains("api.admin_token"),
        "{body}"
    );
    let (code, body) = request(
        remote,
        "PUT",
        "/api/v1/config/queue",
        &[JSON],
        r#"{"trng_queue_size": 10, "fortuna_queue_size": 10}"#,
    );
    assert_eq!(code, 403, "{body}");
    assert_eq!(consume(remote), true, "nothing changed");
    // Reading is open to the remote client; the loopback client may change it.
    let (code, _) = request(remote, "GET", "/api/v1/config/queue", &[], "");
    assert_eq!(code, 200);
    let (code, body) = request(local, "PUT", "/api/v1/config/consume", &[JSON], OFF);
    assert_eq!(code, 200, "{body}");
    assert_eq!(consume(remote), false);
    drop(d);

    // With a token: a change needs it, from anywhere.
    let d = Daemon::with_config(
        "[api]\nadmin_token = \"correct horse\"\n",
        &["--listen", "0.0.0.0:0"],
    );
    let remote = SocketAddr::from((ip, d.addr().port()));
    for headers in [
        vec![JSON],
        vec![JSON, "Authorization: Bearer wrong horse"],
        vec![JSON, "Authorization: Bearer correct hors"],
        vec![JSON, "Authorization: correct horse"],
    ] {
        let (code, body) = request(remote, "PUT", "/api/v1/config/consume", &headers, OFF);
        assert_eq!(code, 401, "{headers:?}: {body}");
        assert!(body.contains("Authorization: Bearer"), "{body}");
    }
    assert_eq!(consume(remote), true, "nothing changed");
    let (code, body) = request(
        remote,
        "PUT",
        "/api/v1/config/consume",
        &[JSON, "Authorization: Bearer correct horse"],
        OFF,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(consume(remote), false);
}

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `lokey --socket SOCKET ARGS` as `nobody`.
fn as_nobody(d: &Daemon, args: &[&str]) -> Output {
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let mut cmd = util::lokey_cmd();
    cmd.arg("--socket")
        .arg(d.socket())
        .args(args)
        .env_remove("HOME")
        .current_dir("/")
        .gid(nobody.gid.as_raw())
        .uid(nobody.uid.as_raw());
    cmd.output().unwrap()
}

#[test]
fn the_cli_as_another_uid_may_read_but_not_change_the_configuration() {
    if !root() {
        println!("skipped: needs root to run the CLI as another uid");
        return;
    }
    // A directory `nobody` can traverse (temporary directories are 0700).
    let d = Daemon::with_config("", &[]);
    let dir = d.socket().parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stored = |d: &Daemon| util::lokey(d, &["config", "get", "store.consume"]);
    let before = stored(&d);
    assert!(before.status.success(), "{before:?}");

    // The socket is 0660, its group one that `nobody` is not in (the child keeps root's
    // supplementary groups, so not root's group either): it cannot even connect.
    nix::unistd::chown(d.socket(), None, Some(nix::unistd::Gid::from_raw(54321))).unwrap();
    let out = as_nobody(&d, &["status"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("permission denied: add yourself to group lokey"),
        "{err}"
    );
    let out = as_nobody(&d, &["config", "set", "store.consume", "false"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("add yourself to group lokey"));

    // Opened to everyone, it lets `nobody` read, and the daemon refuses the change by its
    // peer credentials.
    std::fs::set_permissions(d.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody(&d, &["status"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = as_nobody(&d, &["config", "get", "store.consume"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = as_nobody(&d, &["config", "set", "store.consume", "false"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs root or lokeyd's own user"), "{err}");
    assert_eq!(stored(&d).stdout, before.stdout, "nothing changed");
    // Root may.
    let out = util::lokey(&d, &["config", "set", "store.consume", "false"]);
    assert!(out.status.success(), "{out:?}");
    assert_ne!(stored(&d).stdout, before.stdout);
}
