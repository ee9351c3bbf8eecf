//! Starting and stopping a real `lokeyd` for a test.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The Go project's eleven Prometheus gauges, kept under the same names.
pub const GO_GAUGES: [&str; 11] = [
    "trng_queue_current",
    "trng_queue_capacity",
    "trng_queue_percentage",
    "trng_consumed",
    "trng_unconsumed",
    "fortuna_queue_current",
    "fortuna_queue_capacity",
    "fortuna_queue_percentage",
    "fortuna_consumed",
    "fortuna_unconsumed",
    "database_size_bytes",
];

/// Every emulator fault that makes the chip unhealthy while it is on: all of them but
/// `crc-corruption` (ridden out by retries), `wrong-revision` (seen only when the chip is
/// probed again, after its bus comes back) and the faults of the key commands, which leave
/// Random alone and degrade the beacon instead (`daemon/tests/beacon.rs`).
pub fn degrading_faults() -> impl Iterator<Item = &'static str> {
    lokey::atecc::emulator::FAULTS.iter().copied().filter(|f| {
        !matches!(
            *f,
            "crc-corruption" | "wrong-revision" | "sign-fails" | "slow-signing" | "counter-at-max"
        )
    })
}

/// `python3 scripts/verify-beacon.py`, the independent verifier written from `docs/beacon.md`
/// and `docs/draws.md` alone, if Python and its `cryptography` package are here (`None`, with
/// a `skipped:` line, if not). CI installs them and must run it.
pub fn python_verifier() -> Option<Command> {
    let usable = Command::new("python3")
        .args(["-c", "import cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !usable {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the independent verifier: install python3 and its cryptography package"
        );
        eprintln!("skipped: the Python verifier needs python3 with the cryptography package");
        return None;
    }
    let mut cmd = Command::new("python3");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/verify-beacon.py"));
    Some(cmd)
}

/// A user that does not exist, which test daemons are told to become (`--user`): started as
/// root, such a daemon stays root (and says so) whether or not this machine has lokey's
/// service user `lokey`, which could not use the tests' private temporary directories (its
/// start would be refused). Tests of the switch itself name a real user in their configuration
/// and use [`lokeyd_as_configured`].
pub const NO_SUCH_USER: &str = "lokey-test-no-such-user";

/// The `lokeyd` binary of this build, hermetic: it becomes no user (see [`NO_SUCH_USER`]).
pub fn lokeyd() -> Command {
    let mut cmd = lokeyd_as_configured();
    cmd.args(["--user", NO_SUCH_USER]);
    cmd
}

/// The `lokeyd` binary of this build, becoming the user its configuration names (by default
/// `lokey`) when started as root.
pub fn lokeyd_as_configured() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lokeyd"));
    // A test must not read the machine's configuration or inherit the developer's variables.
    cmd.env_remove("LOKEY_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET");
    cmd
}

/// The `lokey` CLI of this build (built by `cargo test --workspace` next to `lokeyd`).
pub fn lokey_cmd() -> Command {
    let path = Path::new(env!("CARGO_BIN_EXE_lokeyd")).with_file_name("lokey");
    assert!(
        path.exists(),
        "{} is missing: run the suite with `cargo test --workspace`",
        path.display()
    );
    let mut cmd = Command::new(path);
    cmd.env_remove("LOKEY_SOCKET");
    cmd
}

/// Runs `lokey ARGS` against `daemon`.
pub fn lokey(daemon: &Daemon, args: &[&str]) -> Output {
    lokey_cmd()
        .arg("--socket")
        .arg(daemon.socket())
        .args(args)
        .output()
        .unwrap()
}

/// Retries `check` for up to 5 s.
pub fn eventually(check: impl FnMut() -> bool, what: &str) {
    within(Duration::from_secs(5), check, what);
}

/// Retries `check` every 20 ms for up to `limit`.
pub fn within(limit: Duration, mut check: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running daemon; stopped with SIGKILL when dropped.
pub struct Daemon {
    child: Child,
    _dir: Option<tempfile::TempDir>,
    data: PathBuf,
    socket: PathBuf,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts a daemon on a fresh temporary directory with `extra` flags.
    pub fn start(extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("lokey.sock");
        let mut d = Daemon::start_with_socket(extra, dir.path(), &socket);
        d._dir = Some(dir);
        d
    }

    /// Starts a daemon on a fresh temporary directory whose configuration file holds `toml`,
    /// with `extra` flags.
    pub fn with_config(toml: &str, extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("lokeyd.toml");
        std::fs::write(&conf, toml).unwrap();
        let conf = conf.to_str().unwrap().to_string();
        let mut args = vec!["--config", conf.as_str()];
        args.extend_from_slice(extra);
        let socket = dir.path().join("lokey.sock");
        let mut d = Daemon::start_with_socket(&args, dir.path(), &socket);
        d._dir = Some(dir);
        d
    }

    /// Starts a daemon whose data directory is `dir/data` and socket `socket`, with the
    /// emulator and without kernel crediting.
    pub fn start_with_socket(extra: &[&str], dir: &Path, socket: &Path) -> Daemon {
        let mut args = extra.to_vec();
        if !args.contains(&"--config") {
            args.extend(["--config", "/dev/null"]);
        }
        args.extend(["--emulate", "--no-credit"]);
        Daemon::spawn(lokeyd(), &args, dir, socket)
    }

    /// Starts `cmd` (a `lokeyd` command, e.g. with a uid set) with only `args`, the data
    /// directory `dir/data`, the socket and a kernel-chosen port added.
    pub fn spawn(mut cmd: Command, args: &[&str], dir: &Path, socket: &Path) -> Daemon {
        let data = dir.join("data");
        cmd.args(args)
            .arg("--data-dir")
            .arg(&data)
            .arg("--socket")
            .arg(socket);
        // A test may choose the address (e.g. every interface); else loopback, any port.
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // http:// or, with api.tls, https://
                if let Some(rest) = line.split("serving REST on http").nth(1) {
                    let rest = rest.trim_start_matches('s').trim_start_matches("://");
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!("lokeyd did not start:\n{}", log.lock().unwrap());
            }
        };
        Daemon {
            child,
            _dir: None,
            data,
            socket: socket.to_path_buf(),
            addr,
            log,
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The pin of the TLS key the daemon announced at start (`api.tls`).
    pub fn tls_pin(&self) -> lokey::remote::Pin {
        let log = self.log();
        log.split("key pin ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(|p| lokey::remote::Pin::parse(p).unwrap())
            .unwrap_or_else(|| panic!("no TLS key pin in the log:\n{log}"))
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's status document.
    pub fn status(&self) -> serde_json::Value {
        let (code, body) = self.get("/api/v1/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The status entry of the source called `name` (`chip`, `hwrng`).
    pub fn source(&self, name: &str) -> serde_json::Value {
        let status = self.status();
        status["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no source {name}: {status}"))
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// `Some(exit code)` if the daemon has exited.
    pub fn try_wait(&mut self) -> Option<Option<i32>> {
        self.child.try_wait().unwrap().map(|s: ExitStatus| s.code())
    }

    /// Waits up to `limit` for the daemon to exit.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<Option<i32>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(code) = self.try_wait() {
                return Some(code);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then the exit code (within 10 s).
    pub fn stop(&mut self) -> Option<i32> {
        self.signal(Signal::SIGTERM);
        self.wait_for_exit(Duration::from_secs(10))
            .expect("lokeyd did not exit within 10 s of SIGTERM")
    }

    /// Switches the emulator's fault `name` on or off at run time (the admin request).
    pub fn set_fault(&self, name: &str, active: bool) {
        let (code, body) = self.request(
            "PUT",
            "/api/v1/admin/faults",
            &["Content-Type: application/json"],
            &format!(r#"{{"name":"{name}","active":{active}}}"#),
        );
        assert_eq!(code, 200, "{body}");
    }

    /// A plain HTTP/1.1 GET: (status code, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, &[], "")
    }

    /// A plain HTTP/1.1 request with extra header lines and a body: (status code, body).
    pub fn request(&self, method: &str, path: &str, headers: &[&str], body: &str) -> (u16, String) {
        let text = self.raw(method, path, headers, body);
        let code = text[9..12].parse().unwrap();
        let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
        (code, body.to_string())
    }

    /// The whole response (status line, headers, body) to a plain HTTP/1.1 request.
    pub fn raw(&self, method: &str, path: &str, headers: &[&str], body: &str) -> String {
        String::from_utf8_lossy(&self.raw_bytes(method, path, headers, body)).into_owned()
    }

    /// A request's response as (status, headers, body bytes).
    pub fn binary(
        &self,
        method: &str,
        path: &str,
        headers: &[&str],
        body: &str,
    ) -> (u16, String, Vec<u8>) {
        let raw = self.raw_bytes(method, path, headers, body);
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete response");
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let code = head[9..12].parse().unwrap();
        (code, head, raw[split + 4..].to_vec())
    }

    /// The whole response to a plain HTTP/1.1 request, as bytes.
    pub fn raw_bytes(&self, method: &str, path: &str, headers: &[&str], body: &str) -> Vec<u8> {
        raw_request(self.addr, method, path, headers, body)
    }
}

/// The whole response to a plain HTTP/1.1 request to `addr`, as bytes.
pub fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    // A server may answer (e.g. 413) before reading a large body; a write error then is fine.
    let _ = write!(s, "{head}\r\n{body}");
    let mut bytes = Vec::new();
    let _ = s.read_to_end(&mut bytes);
    bytes
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request through `app` in process (no network), from a loopback peer, with a JSON
/// content type: (status, headers, body).
pub fn oneshot(
    app: axum::Router,
    method: axum::http::Method,
    path: &str,
    body: Vec<u8>,
) -> (u16, axum::http::HeaderMap, Vec<u8>) {
    use tower::ServiceExt;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let res = app.oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, headers, bytes.to_vec())
    })
}

/// Writes a line (`skipped: <why>`) straight to the process's stderr: the test harness
/// captures `eprintln!` of a passing test, so a skip said that way would never be seen.
#[macro_export]
macro_rules! skipped {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// A P-256 key for TLS tests (`api.tls = "files"`, a test CA, a proxy), from a fixed scalar: a
/// test key, not a secret.
pub struct TestKey {
    key: p256::ecdsa::SigningKey,
    sec1: Vec<u8>,
}

impl TestKey {
    pub fn new(seed: u8) -> TestKey {
        let key = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap();
        let sec1 = key.verifying_key().to_sec1_point(false).as_bytes().to_vec();
        TestKey { key, sec1 }
    }

    pub fn pkcs8_pem(&self) -> String {
        use p256::pkcs8::EncodePrivateKey;
        self.key
            .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
            .unwrap()
            .to_string()
    }

    /// The key's pin (`sha256:` of its SubjectPublicKeyInfo).
    pub fn pin(&self) -> lokey::remote::Pin {
        lokey::remote::Pin::of_spki(&rcgen::PublicKeyData::subject_public_key_info(self))
    }

    /// A self-signed certificate for 127.0.0.1 and localhost, and the key's pin.
    pub fn certificate(&self) -> (String, lokey::remote::Pin) {
        let cert = self.server_params().self_signed(self).unwrap();
        (cert.pem(), self.pin())
    }

    /// A certificate for 127.0.0.1 and localhost issued by the test CA `ca`.
    pub fn issued_by(&self, ca: &TestKey) -> String {
        let issuer = rcgen::Issuer::new(TestKey::ca_params(), ca);
        self.server_params().signed_by(self, &issuer).unwrap().pem()
    }

    /// The self-signed certificate of a test CA whose key is this one.
    pub fn ca_certificate(&self) -> String {
        TestKey::ca_params().self_signed(self).unwrap().pem()
    }

    fn server_params(&self) -> rcgen::CertificateParams {
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from(vec![0x01, self.sec1[1]]));
        params
    }

    fn ca_params() -> rcgen::CertificateParams {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.serial_number = Some(rcgen::SerialNumber::from(vec![0x02, 0xca]));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "lokey test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params
    }
}

impl rcgen::PublicKeyData for TestKey {
    fn der_bytes(&self) -> &[u8] {
        &self.sec1
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for TestKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        use p256::ecdsa::signature::Signer;
        let signature: p256::ecdsa::Signature = self.key.sign(msg);
        Ok(signature.to_der().as_bytes().to_vec())
    }
}

/// Writes `cert` and the key of `key` to `dir/server.{crt,key}`.
pub fn write_tls_files(dir: &Path, cert: &str, key: &TestKey) {
    std::fs::write(dir.join("server.crt"), cert).unwrap();
    std::fs::write(dir.join("server.key"), key.pkcs8_pem()).unwrap();
}

/// Writes a self-signed certificate and the key of `key` to `dir/server.{crt,key}`; returns
/// the pin.
pub fn write_pair(dir: &Path, key: &TestKey) -> lokey::remote::Pin {
    let (cert, pin) = key.certificate();
    write_tls_files(dir, &cert, key);
    pin
}

/// A daemon on `dir` serving HTTPS with `api.tls = "files"` and `dir/server.{crt,key}`.
pub fn files_daemon(dir: &Path) -> Daemon {
    let conf = dir.join("lokeyd.toml");
    std::fs::write(
        &conf,
        format!(
            "[api]\ntls = \"files\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            dir.join("server.crt").display(),
            dir.join("server.key").display()
        ),
    )
    .unwrap();
    Daemon::start_with_socket(
        &["--config", conf.to_str().unwrap()],
        dir,
        &dir.join("lokey.sock"),
    )
}
