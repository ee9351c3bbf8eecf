//! HTTPS to a remote `lokeyd`: the server's key pinned (`sha256:HEX`, the SHA-256 of the DER
//! SubjectPublicKeyInfo of the certificate's key — the same value as
//! [`crate::beacon::PublicKey::key_id`], printed by `lokey device pubkey` and shown in
//! `/api/v1/identity`) or a CA file, and a small blocking HTTP/1.1 client over it.
//!
//! # Contract
//!
//! - Only `https://` URLs are accepted; there is no fall-back to plain HTTP, ever.
//! - With a pin, the certificate chain is not checked against any CA: the end-entity
//!   certificate's key must hash to the pin, and the handshake's signature must verify with
//!   that key (so the server proves it holds the private key). A mismatch is
//!   [`RemoteError::PinMismatch`], naming both fingerprints.
//! - With a CA file, the usual WebPKI checks apply (chain, validity, the URL's host name).
//! - The crypto provider is `ring` (it cross-builds for arm64 with a plain C cross compiler).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::beacon::{from_hex, hex};

/// Errors of the remote client.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The URL is not `https://HOST:PORT[/]`.
    #[error("{0}")]
    BadUrl(String),
    /// The pin is not `sha256:` and 64 hex digits.
    #[error("bad pin {0:?}: expected sha256: and 64 hex digits")]
    BadPin(String),
    /// Neither a pin nor a CA file was given.
    #[error(
        "a remote lokeyd needs --pin sha256:HEX (see `lokey device pubkey` on the device) or --cacert FILE"
    )]
    NoTrust,
    /// The CA file cannot be read or holds no certificate.
    #[error("CA file {path}: {why}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The server's key is not the pinned one.
    #[error(
        "{server}: the server's key is {actual}, not the pinned {expected}; refusing to talk to it"
    )]
    PinMismatch {
        /// `host:port`.
        server: String,
        /// The pin given.
        expected: String,
        /// The pin of the key the server presented.
        actual: String,
    },
    /// Connecting, the TLS handshake or the exchange failed.
    #[error("{server}: {why}")]
    Io {
        /// `host:port`.
        server: String,
        /// What failed.
        why: String,
    },
    /// The answer is not HTTP.
    #[error("{server}: not an HTTP answer: {why}")]
    BadAnswer {
        /// `host:port`.
        server: String,
        /// What is wrong.
        why: String,
    },
}

/// A pinned key: the SHA-256 of its DER SubjectPublicKeyInfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin(pub [u8; 32]);

impl Pin {
    /// Parses `sha256:HEX` (64 hex digits; `:` between bytes and upper case accepted).
    ///
    /// # Errors
    ///
    /// [`RemoteError::BadPin`].
    pub fn parse(text: &str) -> Result<Pin, RemoteError> {
        let bad = || RemoteError::BadPin(text.to_string());
        let digits = text
            .trim()
            .strip_prefix("sha256:")
            .ok_or_else(bad)?
            .replace(':', "")
            .to_ascii_lowercase();
        let bytes = from_hex(&digits).ok_or_else(bad)?;
        Ok(Pin(bytes.try_into().map_err(|_| bad())?))
    }

    /// The pin of a DER SubjectPublicKeyInfo.
    pub fn of_spki(spki_der: &[u8]) -> Pin {
        Pin(Sha256::digest(spki_der).into())
    }
}

impl std::fmt::Display for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", hex(&self.0))
    }
}

/// How the server is recognised.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Its key's pin.
    Pin(Pin),
    /// A CA certificate file (PEM) that issued its certificate.
    CaFile(PathBuf),
}

/// A remote daemon: `https://HOST:PORT` and how to trust it.
#[derive(Debug, Clone)]
pub struct Remote {
    host: String,
    port: u16,
    trust: Trust,
    timeout: Duration,
    config: Arc<rustls::ClientConfig>,
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

/// The crypto provider of every TLS connection lokey makes or accepts.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Remote {
    /// `url` is `https://HOST:PORT` (a trailing `/` allowed; the port defaults to 443).
    ///
    /// # Errors
    ///
    /// [`RemoteError::BadUrl`] (`http://` included: never plain HTTP), or the CA file's.
    pub fn new(url: &str, trust: Trust, timeout: Duration) -> Result<Remote, RemoteError> {
        Remote::with_versions(url, trust, timeout, rustls::DEFAULT_VERSIONS)
    }

    /// As [`Remote::new`], offering only `versions` (tests of TLS 1.2).
    ///
    /// # Errors
    ///
    /// As [`Remote::new`].
    pub fn with_versions(
        url: &str,
        trust: Trust,
        timeout: Duration,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<Remote, RemoteError> {
        let rest = url.strip_prefix("https://").ok_or_else(|| {
            RemoteError::BadUrl(format!(
                "{url:?}: a remote lokeyd is reached over https:// only (plain HTTP would let \
                 anyone on the path read and replace the random bytes)"
            ))
        })?;
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') || authority.is_empty() {
            return Err(RemoteError::BadUrl(format!(
                "{url:?}: expected https://HOST:PORT"
            )));
        }
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| RemoteError::BadUrl(format!("{url:?}: expected https://HOST:PORT")))?;
        let config = client_config(&trust, &format!("{host}:{port}"), versions)?;
        Ok(Remote {
            host,
            port,
            trust,
            timeout,
            config,
        })
    }

    /// `host:port` as given.
    pub fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The trust this client was made with.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// `GET path`.
    ///
    /// # Errors
    ///
    /// See [`RemoteError`].
    pub fn get(&self, path: &str) -> Result<Answer, RemoteError> {
        self.request("GET", path, None)
    }

    /// `method path` with an optional body of `content_type`.
    ///
    /// # Errors
    ///
    /// See [`RemoteError`].
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<Answer, RemoteError> {
        let server = self.server();
        let io = |e: &dyn std::fmt::Display| RemoteError::Io {
            server: server.clone(),
            why: e.to_string(),
        };
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| io(&e))?
            .next()
            .ok_or_else(|| io(&"no address"))?;
        let tcp = TcpStream::connect_timeout(&addr, self.timeout).map_err(|e| io(&e))?;
        tcp.set_read_timeout(Some(self.timeout))
            .map_err(|e| io(&e))?;
        tcp.set_write_timeout(Some(self.timeout))
            .map_err(|e| io(&e))?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| io(&e))?;
        let conn = rustls::ClientConnection::new(self.config.clone(), name).map_err(|e| io(&e))?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {server}\r\nconnection: close\r\nuser-agent: lokey\r\n"
        );
        if let Some((content_type, bytes)) = body {
            head.push_str(&format!(
                "content-type: {content_type}\r\ncontent-length: {}\r\n",
                bytes.len()
            ));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if let Some((_, bytes)) = body {
            out.extend_from_slice(bytes);
        }
        let sent = tls.write_all(&out).and_then(|()| tls.flush());
        let mut raw = Vec::new();
        let read = sent.and_then(|()| match tls.read_to_end(&mut raw) {
            // Servers that close without close_notify: the answer is complete when it parses.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(0),
            other => other,
        });
        if let Err(e) = read {
            return Err(self.explain(e));
        }
        parse_answer(&raw).map_err(|why| RemoteError::BadAnswer { server, why })
    }

    /// `n` random bytes of `source` (`fortuna` or `trng`) from `GET /api/v1/random/bytes`:
    /// exactly `n`, or an error with the daemon's message.
    ///
    /// # Errors
    ///
    /// The connection's ([`RemoteError::PinMismatch`] included), or
    /// [`RemoteError::BadAnswer`] with the daemon's error (a short TRNG queue, a rate limit,
    /// Fortuna not seeded yet) or a wrong length.
    pub fn random_bytes(&self, n: u64, source: &str) -> Result<Vec<u8>, RemoteError> {
        let path = format!("/api/v1/random/bytes?n={n}&source={source}&encoding=raw");
        let answer = self.get(&path)?;
        if answer.status != 200 {
            let why = serde_json::from_slice::<serde_json::Value>(&answer.body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| format!("status {}", answer.status));
            return Err(RemoteError::BadAnswer {
                server: self.server(),
                why: format!("{} {why}", answer.status),
            });
        }
        if answer.body.len() as u64 != n {
            return Err(RemoteError::BadAnswer {
                server: self.server(),
                why: format!("asked for {n} bytes, got {}", answer.body.len()),
            });
        }
        Ok(answer.body)
    }

    /// Turns a TLS failure caused by the pin into [`RemoteError::PinMismatch`].
    fn explain(&self, e: std::io::Error) -> RemoteError {
        let server = self.server();
        if let Some(mismatch) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .and_then(|tls| match tls {
                rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
                    other.0.downcast_ref::<Mismatch>().cloned()
                }
                _ => None,
            })
        {
            return RemoteError::PinMismatch {
                server,
                expected: mismatch.expected.to_string(),
                actual: mismatch.actual.to_string(),
            };
        }
        RemoteError::Io {
            server,
            why: e.to_string(),
        }
    }
}

/// `HOST:PORT`, `[V6]:PORT` or `HOST` (port 443).
fn split_host_port(authority: &str) -> Option<(String, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => 443,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains(':') => {
            Some((host.to_string(), port.parse().ok()?))
        }
        Some(_) => None,
        None => Some((authority.to_string(), 443)),
    }
}

/// The status and de-chunked body of a complete HTTP/1.1 answer.
fn parse_answer(raw: &[u8]) -> Result<Answer, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    let chunked = lines.any(|l| {
        l.to_ascii_lowercase()
            .replace(' ', "")
            .starts_with("transfer-encoding:chunked")
    });
    let mut body = raw[end + 4..].to_vec();
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(Answer { status, body })
}

/// Decodes a chunked body (RFC 9112 §7.1).
fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk")?;
        let size_text = std::str::from_utf8(&data[..line_end]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// The client configuration for `trust`.
fn client_config(
    trust: &Trust,
    server: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<Arc<rustls::ClientConfig>, RemoteError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| RemoteError::Io {
            server: server.to_string(),
            why: e.to_string(),
        })?;
    let config = match trust {
        Trust::Pin(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier {
                pin: *pin,
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        Trust::CaFile(path) => {
            let roots = ca_roots(path)?;
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

/// The certificates of a PEM file as trust anchors.
fn ca_roots(path: &Path) -> Result<rustls::RootCertStore, RemoteError> {
    let bad = |why: String| RemoteError::CaFile {
        path: path.to_path_buf(),
        why,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    Ok(roots)
}

/// The verifier's refusal, carried inside rustls' error to [`Remote::explain`].
#[derive(Debug, Clone)]
struct Mismatch {
    expected: Pin,
    actual: Pin,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server's key is {}, not the pinned {}",
            self.actual, self.expected
        )
    }
}

impl std::error::Error for Mismatch {}

/// Accepts exactly the certificates whose key has the pin; handshake signatures are checked
/// with that key as usual.
#[derive(Debug)]
struct PinVerifier {
    pin: Pin,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        let actual = Pin::of_spki(parsed.subject_public_key_info().as_ref());
        if actual != self.pin {
            return Err(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(Mismatch {
                    expected: self.pin,
                    actual,
                })))
                .into(),
            );
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_and_print() {
        let text = format!("sha256:{}", "ab".repeat(32));
        let pin = Pin::parse(&text).unwrap();
        assert_eq!(pin.0, [0xab; 32]);
        assert_eq!(pin.to_string(), text);
        assert_eq!(
            Pin::parse(&text.to_uppercase().replace("SHA256", "sha256")).unwrap(),
            pin
        );
        for bad in [
            "ab".repeat(32),
            format!("sha256:{}", "ab".repeat(31)),
            "sha256:zz".into(),
        ] {
            assert!(Pin::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_https_urls() {
        let trust = Trust::Pin(Pin([0; 32]));
        let t = Duration::from_secs(1);
        assert!(matches!(
            Remote::new("http://127.0.0.1:8080", trust.clone(), t),
            Err(RemoteError::BadUrl(_))
        ));
        let r = Remote::new("https://127.0.0.1:8443/", trust.clone(), t).unwrap();
        assert_eq!(r.server(), "127.0.0.1:8443");
        let r = Remote::new("https://[::1]:8443", trust.clone(), t).unwrap();
        assert_eq!(r.server(), "[::1]:8443");
        assert_eq!(Remote::new("https://h", trust, t).unwrap().port, 443);
    }

    #[test]
    fn answers_parse_with_and_without_chunks() {
        let a = parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc").unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, &b"abc"[..]));
        let a = parse_answer(
            b"HTTP/1.1 503 Nope\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((a.status, a.body.as_slice()), (503, &b"abcde"[..]));
        assert!(parse_answer(b"garbage").is_err());
    }
}
