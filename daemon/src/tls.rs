//! TLS for the REST API (`api.tls`): rustls with the `ring` provider, TLS 1.3 and 1.2,
//! HTTP/1.1 (ALPN `http/1.1`).
//!
//! # Contract
//!
//! - `files`: the certificate chain and key of `api.tls_cert` and `api.tls_key`, read again on
//!   SIGHUP ([`Tls::reload`]); a file that cannot be read or does not match keeps the previous
//!   pair, with an error in the log.
//! - `chip`: the private key is the P-256 key in the chip's `api.tls_slot` (never the beacon's
//!   slot) and never leaves it: every full handshake's signature is one Nonce pass-through +
//!   Sign external of SHA-256(message) (rustls hands over the message; ECDSA P-256 SHA-256,
//!   RFC 8446 §4.4.3), and the certificate is issued by the same key at start (self-signed,
//!   names from `api.tls_names`), or, when `api.tls_cert` is set, is that file's chain: one an
//!   organisation's CA issued for the chip's key from `lokey device csr` ([`csr`]); a chain for
//!   another key is refused, naming both pins. SIGHUP reads it again; a new key in the slot
//!   (`lokey device keygen --tls`) is served at once ([`Tls::reload`]). With the emulator the
//!   key is the emulator's software key, created when the slot has none, and said to be
//!   emulated.
//! - A returning client resumes (session tickets, and a session cache for TLS 1.2 clients
//!   without tickets) and costs no signature. Both survive a SIGHUP reload.
//! - The chip makes about 8 signatures a second and is shared with harvesting and the beacon:
//!   full handshakes wait for it in arrival order (a ticket queue), one at a time, with a gap
//!   after each so a harvest read waiting for the chip gets it; at most [`MAX_WAITING`] wait,
//!   and one more is refused at once (a TLS alert, a warning in the log) instead of hanging.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use lokey::atecc::SharedChip;
use lokey::beacon::{PublicKey, hex};
use lokey::config::Config;
use lokey::remote::{Pin, provider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, SubjectPublicKeyInfoDer};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert, StoresServerSessions};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{HandshakeKind, ServerConfig, SignatureAlgorithm, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::pipeline::ChipHandle;

/// Full handshakes that may wait for the chip at once; one more is refused. At the datasheet
/// maximum (115 ms a signature plus the gap) the last waits about 2.5 s.
pub const MAX_WAITING: usize = 16;
/// The pause after a handshake's signature before the next one may use the chip: about one
/// Random at the datasheet maximum (23 ms), so harvesting is never starved by handshakes.
const CHIP_GAP: Duration = Duration::from_millis(25);
/// TLS 1.2 sessions kept for resumption without tickets (about 200 bytes each).
const SESSION_CACHE: usize = 4096;

/// The REST API's TLS: the current server configuration and its counters.
pub struct Tls {
    mode: Mode,
    /// The chip (`chip` mode), to issue or check the certificate again.
    chip: Option<ChipHandle>,
    current: RwLock<Current>,
    /// Shared by every configuration, so sessions resume across a reload.
    sessions: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    stats: Arc<Stats>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Files,
    Chip { slot: u8, emulated: bool },
}

struct Current {
    config: Arc<ServerConfig>,
    pin: Pin,
    chain: Vec<CertificateDer<'static>>,
}

/// Handshake counters.
#[derive(Debug, Default)]
pub struct Stats {
    full: AtomicU64,
    resumed: AtomicU64,
    failed: AtomicU64,
    signatures: AtomicU64,
    shed: AtomicU64,
    sign_nanos: AtomicU64,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    /// Set while refusing, so an overload is logged once per episode.
    shedding: AtomicBool,
}

/// What `/api/v1/tls` shows.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TlsReport {
    /// `files` or `chip`.
    pub mode: String,
    /// The pin of the certificate's key: `sha256:` and the SHA-256 of its DER
    /// SubjectPublicKeyInfo.
    pub pin: String,
    /// The chip's slot (`chip` mode).
    pub slot: Option<u8>,
    /// Whether the key is the emulator's software key.
    pub emulated: bool,
    /// The certificate (chain), PEM.
    pub certificate_pem: String,
    /// Full handshakes completed.
    pub full_handshakes: u64,
    /// Resumed handshakes completed.
    pub resumed_handshakes: u64,
    /// Handshakes that failed (a client's error, a timeout or a refusal).
    pub failed_handshakes: u64,
    /// Signatures the chip made for handshakes (`chip` mode).
    pub chip_signatures: u64,
    /// Full handshakes refused because [`MAX_WAITING`] were waiting for the chip.
    pub shed_handshakes: u64,
    /// Mean time of a handshake signature, queueing included, seconds.
    pub sign_seconds_mean: f64,
    /// Certificates installed again (SIGHUP, a new key in the slot).
    pub reloads: u64,
    /// Reloads that failed and kept the previous certificate.
    pub reload_failures: u64,
}

impl Tls {
    /// The TLS of `config.api.tls`: `None` for `off`.
    ///
    /// # Errors
    ///
    /// Files that cannot be read or do not match; `chip` without a chip, or a chip that has
    /// no key in the slot or cannot sign.
    pub fn start(config: &Config, chip: Option<&ChipHandle>) -> anyhow::Result<Option<Arc<Tls>>> {
        let sessions: Arc<dyn StoresServerSessions> =
            rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
        let ticketer = rustls::crypto::ring::Ticketer::new().context("TLS session tickets")?;
        let stats = Arc::new(Stats::default());
        let mut handle = None;
        let (mode, key) = match config.api.tls.as_str() {
            "off" => return Ok(None),
            "files" => (Mode::Files, load_files(config)?),
            "chip" => {
                let chip = chip.context(
                    "api.tls = \"chip\" needs the ATECC608A (or its emulator) and this lokeyd \
                     has none (chip.mode = \"off\"?)",
                )?;
                let slot = u8::try_from(config.api.tls_slot).context("api.tls_slot")?;
                let emulated = chip.faults.is_some();
                let key = chip_key(config, chip, slot, emulated, &stats)?;
                handle = Some(chip.clone());
                (Mode::Chip { slot, emulated }, key)
            }
            other => anyhow::bail!("api.tls = {other:?}: expected off, files or chip"),
        };
        let current = build(&sessions, &ticketer, key)?;
        let tls = Tls {
            mode,
            chip: handle,
            current: RwLock::new(current),
            sessions,
            ticketer,
            stats,
        };
        let current = tls.read();
        match mode {
            Mode::Files => tracing::info!(
                "TLS from {} and {}; key pin {}",
                config.api.tls_cert,
                config.api.tls_key,
                current.pin
            ),
            Mode::Chip { slot, emulated } => tracing::info!(
                "TLS with the {} key in slot {slot}, {}; key pin {}",
                if emulated {
                    "EMULATED chip's software"
                } else {
                    "chip's"
                },
                if config.api.tls_cert.is_empty() {
                    format!(
                        "a certificate it issued for {}",
                        config.api.tls_names.join(", ")
                    )
                } else {
                    format!("the certificate chain of {}", config.api.tls_cert)
                },
                current.pin
            ),
        }
        drop(current);
        Ok(Some(Arc::new(tls)))
    }

    /// Makes `key` the one served.
    fn install(&self, key: Arc<CertifiedKey>) -> anyhow::Result<()> {
        let next = build(&self.sessions, &self.ticketer, key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.read().config.clone())
    }

    /// The pin of the served certificate's key.
    pub fn pin(&self) -> Pin {
        self.read().pin
    }

    /// SIGHUP, or a new key in the chip's slot: installs the certificate and key again —
    /// `files` read anew; `chip` with its slot's key now, and a certificate issued anew or
    /// `api.tls_cert` read again. A mode change needs a restart. A failure keeps what was
    /// served so far and says so in the log.
    ///
    /// # Errors
    ///
    /// What kept the old certificate, as logged.
    pub fn reload(&self, config: &Config) -> anyhow::Result<()> {
        let before = self.pin();
        let key = match (self.mode, &self.chip) {
            (Mode::Files, _) => load_files(config),
            (Mode::Chip { slot, emulated }, Some(chip)) => {
                chip_key(config, chip, slot, emulated, &self.stats)
            }
            (Mode::Chip { .. }, None) => Err(anyhow::anyhow!("no chip")),
        };
        match key.and_then(|key| self.install(key)) {
            Ok(()) => {
                self.stats.reloads.fetch_add(1, Ordering::Relaxed);
                let pin = self.pin();
                let unchanged = if pin == before { " (unchanged)" } else { "" };
                match self.mode {
                    Mode::Files => tracing::info!(
                        "TLS certificate and key read again from {} and {}; key pin {pin}{unchanged}",
                        config.api.tls_cert,
                        config.api.tls_key,
                    ),
                    Mode::Chip { slot, .. } => tracing::info!(
                        "TLS certificate for the chip's key in slot {slot} installed again; key \
                         pin {pin}{unchanged}"
                    ),
                }
                Ok(())
            }
            Err(e) => {
                self.stats.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!("TLS certificate not reloaded, still serving the old one: {e:#}");
                Err(e)
            }
        }
    }

    /// Counts a finished handshake (`None`: failed).
    pub fn record(&self, kind: Option<HandshakeKind>) {
        let counter = match kind {
            Some(HandshakeKind::Resumed) => &self.stats.resumed,
            Some(_) => &self.stats.full,
            None => &self.stats.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counters and identity for `/api/v1/tls`.
    pub fn report(&self) -> TlsReport {
        let s = &self.stats;
        let signatures = s.signatures.load(Ordering::Relaxed);
        let (mode, slot, emulated) = match self.mode {
            Mode::Files => ("files", None, false),
            Mode::Chip { slot, emulated } => ("chip", Some(slot), emulated),
        };
        let current = self.read();
        TlsReport {
            mode: mode.into(),
            pin: current.pin.to_string(),
            slot,
            emulated,
            certificate_pem: current
                .chain
                .iter()
                .map(|c| pem("CERTIFICATE", c.as_ref()))
                .collect(),
            full_handshakes: s.full.load(Ordering::Relaxed),
            resumed_handshakes: s.resumed.load(Ordering::Relaxed),
            failed_handshakes: s.failed.load(Ordering::Relaxed),
            chip_signatures: signatures,
            shed_handshakes: s.shed.load(Ordering::Relaxed),
            sign_seconds_mean: if signatures == 0 {
                0.0
            } else {
                s.sign_nanos.load(Ordering::Relaxed) as f64 / signatures as f64 / 1e9
            },
            reloads: s.reloads.load(Ordering::Relaxed),
            reload_failures: s.reload_failures.load(Ordering::Relaxed),
        }
    }
}

/// The server configuration for `key`, with the shared session cache and ticketer.
fn build(
    sessions: &Arc<dyn StoresServerSessions>,
    ticketer: &Arc<dyn rustls::server::ProducesTickets>,
    key: Arc<CertifiedKey>,
) -> anyhow::Result<Current> {
    key.keys_match()
        .context("the certificate is not for the private key")?;
    let end_entity = key.end_entity_cert().context("no certificate")?;
    let spki = ParsedCertificate::try_from(end_entity)
        .context("cannot parse the certificate")?
        .subject_public_key_info();
    let pin = Pin::of_spki(spki.as_ref());
    let chain = key.cert.clone();
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(key)));
    config.session_storage = sessions.clone();
    config.ticketer = ticketer.clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Current {
        config: Arc::new(config),
        pin,
        chain,
    })
}

/// PEM armour (RFC 7468) of `der`.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or(""));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Always the one key (a REST API has one name set).
#[derive(Debug)]
struct Resolver(Arc<CertifiedKey>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The certificate chain in the PEM file `api.tls_cert`, the server's first.
fn chain_file(cert: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(Path::new(cert))
        .with_context(|| format!("api.tls_cert {cert}"))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("api.tls_cert {cert}"))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "api.tls_cert {cert}: no certificate in it"
    );
    Ok(chain)
}

/// The certificate chain and key of `api.tls_cert` and `api.tls_key`.
fn load_files(config: &Config) -> anyhow::Result<Arc<CertifiedKey>> {
    let (cert, key) = (&config.api.tls_cert, &config.api.tls_key);
    anyhow::ensure!(
        !cert.is_empty() && !key.is_empty(),
        "api.tls = \"files\" needs api.tls_cert and api.tls_key"
    );
    let chain = chain_file(cert)?;
    let der = PrivateKeyDer::from_pem_file(Path::new(key))
        .with_context(|| format!("api.tls_key {key}"))?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .with_context(|| format!("api.tls_key {key}"))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// The chip's key in `slot` (created on the emulator when missing) and a certificate it
/// issues itself, or the chain of `api.tls_cert` when that is for the chip's key.
fn chip_key(
    config: &Config,
    chip: &ChipHandle,
    slot: u8,
    emulated: bool,
    stats: &Arc<Stats>,
) -> anyhow::Result<Arc<CertifiedKey>> {
    anyhow::ensure!(
        !config.beacon.enabled || u64::from(slot) != config.beacon.slot,
        "api.tls_slot = {slot} is the beacon's slot (beacon.slot); the TLS key needs a slot of \
         its own"
    );
    let public = match crate::beacon::identity(&chip.chip, slot, emulated) {
        Ok(id) => id.key,
        Err(e) if emulated => {
            let serial = chip
                .chip
                .with(|c| c.serial_number())
                .map_err(|e| anyhow::anyhow!("the chip's serial number: {e}"))?;
            tracing::info!("the emulated chip has no key in slot {slot} ({e}): creating one");
            crate::beacon::keygen(&chip.chip, serial, slot)
                .map_err(|e| anyhow::anyhow!("creating the TLS key in slot {slot}: {e}"))?
        }
        Err(e) => anyhow::bail!(
            "api.tls = \"chip\": no public key in slot {slot} ({e}); start lokeyd with \
             api.tls = \"off\", create the key with `lokey device keygen --tls`, then set \
             api.tls = \"chip\" again"
        ),
    };
    let key = ChipKey {
        chip: chip.chip.clone(),
        slot,
        sec1: sec1(&public),
        public: public.clone(),
        gate: Arc::new(Gate::default()),
        stats: stats.clone(),
    };
    let chain = if config.api.tls_cert.is_empty() {
        vec![self_issued(config, &key)?]
    } else {
        let chain = chain_file(&config.api.tls_cert)?;
        let certified = ParsedCertificate::try_from(&chain[0])
            .with_context(|| format!("api.tls_cert {}", config.api.tls_cert))?
            .subject_public_key_info();
        let (theirs, ours) = (
            Pin::of_spki(certified.as_ref()),
            Pin::of_spki(&key.public.spki_der()),
        );
        anyhow::ensure!(
            theirs == ours,
            "api.tls_cert {} is for the key {theirs}, not the chip's key in slot {slot} \
             ({ours}): have the CA sign `lokey device csr`'s request",
            config.api.tls_cert
        );
        chain
    };
    Ok(Arc::new(CertifiedKey::new(chain, Arc::new(key))))
}

/// A certificate for the chip's key, signed by it: subject `CN=lokey <pin prefix>`, names
/// from `api.tls_names`, serial number from the key and the time.
fn self_issued(config: &Config, key: &ChipKey) -> anyhow::Result<CertificateDer<'static>> {
    let mut params =
        rcgen::CertificateParams::new(config.api.tls_names.clone()).context("api.tls_names")?;
    let id = hex(&key.public.key_id());
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("lokey {}", &id[..16]));
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "lokey");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.serial_number = Some(serial_number(&key.public));
    let cert = params
        .self_signed(key)
        .map_err(|e| anyhow::anyhow!("issuing the TLS certificate with the chip: {e}"))?;
    Ok(cert.der().clone())
}

/// The certificate signing request of the chip's TLS key for an organisation's CA
/// (`lokey device csr`): PEM PKCS #10, signed by the chip, and the key's pin.
///
/// # Errors
///
/// The chip's, or names rcgen refuses.
pub fn csr(
    chip: &SharedChip,
    slot: u8,
    names: &[String],
    common_name: &str,
) -> anyhow::Result<(String, Pin)> {
    let public = crate::beacon::identity(chip, slot, false)
        .map_err(|e| anyhow::anyhow!("no public key in slot {slot}: {e}"))?
        .key;
    let pin = Pin::of_spki(&public.spki_der());
    let key = ChipKey {
        chip: chip.clone(),
        slot,
        sec1: sec1(&public),
        public,
        gate: Arc::new(Gate::default()),
        stats: Arc::new(Stats::default()),
    };
    let mut params = rcgen::CertificateParams::new(names.to_vec()).context("names")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let request = params
        .serialize_request(&key)
        .map_err(|e| anyhow::anyhow!("signing the request with the chip: {e}"))?;
    let pem = request
        .pem()
        .map_err(|e| anyhow::anyhow!("encoding the request: {e}"))?;
    Ok((pem, pin))
}

/// A certificate serial number unique per key and issue time: the first 16 bytes of
/// SHA-256(key id ‖ nanoseconds), positive (RFC 5280 §4.1.2.2: at most 20 octets).
fn serial_number(key: &PublicKey) -> rcgen::SerialNumber {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut hash = Sha256::new();
    hash.update(key.key_id());
    hash.update(nanos.to_be_bytes());
    let mut serial = hash.finalize()[..16].to_vec();
    serial[0] &= 0x7f;
    rcgen::SerialNumber::from(serial)
}

fn sec1(key: &PublicKey) -> Vec<u8> {
    let mut point = vec![0x04];
    point.extend_from_slice(&key.xy());
    point
}

/// The chip's key: rustls' and rcgen's signer.
struct ChipKey {
    chip: SharedChip,
    slot: u8,
    public: PublicKey,
    /// `04‖X‖Y` (SEC1 uncompressed), as rcgen wants it.
    sec1: Vec<u8>,
    gate: Arc<Gate>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for ChipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChipKey(slot {})", self.slot)
    }
}

impl ChipKey {
    /// An ECDSA P-256 signature (DER, RFC 3279 §2.2.3) of SHA-256(`message`) by the chip,
    /// after the handshakes queued before it; refused when [`MAX_WAITING`] are queued.
    fn sign_message(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let digest: [u8; 32] = Sha256::digest(message).into();
        let started = Instant::now();
        let rs = {
            let _turn = self.gate.enter().inspect_err(|_| {
                self.stats.shed.fetch_add(1, Ordering::Relaxed);
                if !self.stats.shedding.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "TLS: {MAX_WAITING} full handshakes are waiting for the chip; refusing \
                         more until the queue drains (resumed handshakes need no signature)"
                    );
                }
            })?;
            self.stats.shedding.store(false, Ordering::Relaxed);
            self.chip
                .with(|c| c.sign_digest(self.slot, &digest))
                .map_err(|e| format!("the chip did not sign: {e}"))?
        };
        self.stats.signatures.fetch_add(1, Ordering::Relaxed);
        self.stats.sign_nanos.fetch_add(
            u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let signature =
            p256::ecdsa::Signature::from_slice(&rs).map_err(|e| format!("chip signature: {e}"))?;
        Ok(signature.to_der().as_bytes().to_vec())
    }
}

impl SigningKey for ChipKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| {
                Box::new(ChipSigner(ChipKey {
                    chip: self.chip.clone(),
                    slot: self.slot,
                    public: self.public.clone(),
                    sec1: self.sec1.clone(),
                    gate: self.gate.clone(),
                    stats: self.stats.clone(),
                })) as Box<dyn Signer>
            })
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.public.spki_der()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

/// One handshake's signature.
#[derive(Debug)]
struct ChipSigner(ChipKey);

impl Signer for ChipSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        // The chip takes 100+ ms: off the async worker, whose other connections go on.
        let sign = || self.0.sign_message(message);
        let result = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(sign)
            }
            _ => sign(),
        };
        result.map_err(rustls::Error::General)
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

impl rcgen::PublicKeyData for ChipKey {
    fn der_bytes(&self) -> &[u8] {
        // The SEC1 uncompressed point 04‖X‖Y, as rcgen wraps it into the SPKI.
        &self.sec1
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for ChipKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.sign_message(msg).map_err(|e| {
            tracing::error!("{e}");
            rcgen::Error::RemoteKeyError
        })
    }
}

/// The queue of full handshakes waiting for the chip: tickets served in order, one at a time.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    turn: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    next: u64,
    serving: u64,
    /// When the previous holder left, for [`CHIP_GAP`].
    left: Option<Instant>,
}

/// A turn at the chip; the next ticket is served when it is dropped.
struct Turn<'a>(&'a Gate);

impl Gate {
    /// Waits for this caller's turn; refused when [`MAX_WAITING`] are already queued.
    fn enter(&self) -> Result<Turn<'_>, String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let queued = usize::try_from(state.next - state.serving).unwrap_or(usize::MAX);
        if queued > MAX_WAITING {
            return Err(format!(
                "lokeyd is busy: {MAX_WAITING} TLS handshakes are waiting for the chip; try again"
            ));
        }
        let ticket = state.next;
        state.next += 1;
        while state.serving != ticket {
            state = self.turn.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        // Leave the chip to a harvest read between two handshake signatures.
        if let Some(gap) = state.left.map(|t| CHIP_GAP.saturating_sub(t.elapsed())) {
            drop(state);
            std::thread::sleep(gap);
        }
        Ok(Turn(self))
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        state.serving += 1;
        state.left = Some(Instant::now());
        self.0.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), output);
        }
    }

    #[test]
    fn the_gate_serves_in_order_and_refuses_beyond_its_limit() {
        let gate = Arc::new(Gate::default());
        let first = gate.enter().unwrap();
        // Fill the queue behind the holder with waiting threads.
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for i in 0..MAX_WAITING {
            let (waiter, order) = (gate.clone(), order.clone());
            threads.push(std::thread::spawn(move || {
                let _turn = waiter.enter().unwrap();
                order.lock().unwrap().push(i);
            }));
            // Each takes its ticket before the next starts.
            while gate.state.lock().unwrap().next < (i + 2) as u64 {
                std::thread::yield_now();
            }
        }
        assert!(gate.enter().is_err(), "one more than the limit is refused");
        drop(first);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..MAX_WAITING).collect::<Vec<_>>());
        assert!(gate.enter().is_ok(), "a drained queue admits again");
    }
}
