//! The randomness beacon's pulses: their canonical serialization, output, JSON form and
//! offline verification. `docs/beacon.md` specifies every byte; this module is its reference
//! implementation, and `docs/beacon-vectors.json` holds the published test vectors.
//!
//! # Contract
//!
//! - [`Pulse::message`] is the canonical serialization (version [`VERSION`]): a fixed
//!   [`MESSAGE_LEN`]-byte layout, integers big-endian. The chip signs SHA-256 of it (ECDSA
//!   P-256); the pulse's output value is SHA-512 of it. The output never hashes the signature:
//!   ECDSA signatures are randomized, so a signer that hashed its own signature could re-sign
//!   until it liked the output (`reference/verifiable-randomness.md` §7).
//! - A pulse precommits to the next pulse's local random value (`precommitmentValue =
//!   SHA-512(localRandomValue(n+1))`) and carries the previous pulse's output, as NIST's
//!   Beacon 2.0 does; [`verify`] checks a run of pulses offline with only the public key and
//!   reports exactly which check failed.
//! - Nothing here does I/O: the daemon's `beacon` module produces and stores pulses, the CLI
//!   reads files.

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

/// The serialization version this module writes and reads.
pub const VERSION: u16 = 1;
/// The domain-separation prefix of every serialized pulse (ASCII, no terminator).
pub const MAGIC: &[u8; 18] = b"lokey beacon pulse";
/// Length of the canonical serialization of version 1.
pub const MESSAGE_LEN: usize = 18 + 2 + 8 + 8 + 8 + 4 + 9 + 32 + 64 + 64 + 64 + 4 + 4 + 32;

/// The fixed DER prefix of a P-256 SubjectPublicKeyInfo (RFC 5480: id-ecPublicKey,
/// prime256v1, an uncompressed point of 65 bytes follows).
pub const SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Bits of a pulse's status code.
pub mod status {
    /// The first pulse of a chain: its previous output is zero and no precommitment bound it.
    pub const CHAIN_START: u32 = 0x01;
    /// At least one period passed without a pulse since the previous pulse of this chain
    /// (the daemon was stopped cleanly, or late); the chain is intact.
    pub const TIME_GAP: u32 = 0x02;
    /// The signing key is an emulator's software key, not a key inside a chip.
    pub const EMULATED: u32 = 0x04;
    /// With `CHAIN_START`: the previous chain of this store ended without a clean stop (a
    /// crash, `kill -9`, a power cut), so its last precommitment is not honoured.
    pub const UNCLEAN_STOP: u32 = 0x08;
    /// With `CHAIN_START`: the chip's monotonic counter is not the one the store last
    /// recorded (a store restored from a backup, another chip, or a counter that jumped).
    pub const COUNTER_MISMATCH: u32 = 0x10;
    /// With `CHAIN_START`: the key, the chip or the period differs from the previous chain's.
    pub const PARAMETERS_CHANGED: u32 = 0x20;
    /// With `CHAIN_START`: the store had no earlier pulse.
    pub const FIRST: u32 = 0x40;

    /// Names of the bits set in `code`, for people.
    pub fn names(code: u32) -> Vec<&'static str> {
        [
            (CHAIN_START, "chain start"),
            (TIME_GAP, "time gap"),
            (EMULATED, "emulated"),
            (UNCLEAN_STOP, "unclean stop"),
            (COUNTER_MISMATCH, "counter mismatch"),
            (PARAMETERS_CHANGED, "parameters changed"),
            (FIRST, "first"),
        ]
        .into_iter()
        .filter(|(bit, _)| code & bit != 0)
        .map(|(_, name)| name)
        .collect()
    }
}

/// One pulse: the signed fields and the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulse {
    /// Chain index: the value of the chip's monotonic counter when the chain started, so no
    /// two chains of one chip share it.
    pub chain_index: u64,
    /// Pulse index, gapless from 1 within a chain.
    pub pulse_index: u64,
    /// The scheduled time, Unix milliseconds (UTC), a multiple of the period.
    pub time_ms: u64,
    /// The period, milliseconds.
    pub period_ms: u32,
    /// The chip's 9-byte serial number.
    pub serial: [u8; 9],
    /// SHA-256 of the signing key's DER SubjectPublicKeyInfo.
    pub key_id: [u8; 32],
    /// 64 fresh bytes from the chip's health-tested TRNG path, used for nothing else.
    pub local_random: [u8; 64],
    /// SHA-512 of the next pulse's local random value.
    pub precommitment: [u8; 64],
    /// The previous pulse's output value; zero for the first pulse of a chain.
    pub previous_output: [u8; 64],
    /// The chip's monotonic counter 0 in this run of the daemon.
    pub counter: u32,
    /// [`status`] bits.
    pub status: u32,
    /// A commitment to later data (a Merkle root); zero when unused.
    pub commitment: [u8; 32],
    /// ECDSA P-256 signature `r‖s` over SHA-256 of [`Pulse::message`].
    pub signature: [u8; 64],
}

impl Pulse {
    /// The canonical serialization (`docs/beacon.md` §2).
    pub fn message(&self) -> [u8; MESSAGE_LEN] {
        let mut m = [0u8; MESSAGE_LEN];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            m[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(MAGIC);
        put(&VERSION.to_be_bytes());
        put(&self.chain_index.to_be_bytes());
        put(&self.pulse_index.to_be_bytes());
        put(&self.time_ms.to_be_bytes());
        put(&self.period_ms.to_be_bytes());
        put(&self.serial);
        put(&self.key_id);
        put(&self.local_random);
        put(&self.precommitment);
        put(&self.previous_output);
        put(&self.counter.to_be_bytes());
        put(&self.status.to_be_bytes());
        put(&self.commitment);
        m
    }

    /// SHA-256 of the message: what the chip signs.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.message()).into()
    }

    /// The output value: SHA-512 of the message.
    pub fn output(&self) -> [u8; 64] {
        Sha512::digest(self.message()).into()
    }

    /// The stored form: the message followed by the signature.
    pub fn to_record(&self) -> Vec<u8> {
        let mut r = self.message().to_vec();
        r.extend_from_slice(&self.signature);
        r
    }

    /// Parses [`Pulse::to_record`]'s bytes, or a message of version 1 and a signature.
    ///
    /// # Errors
    ///
    /// [`FormatError`] for a wrong length, prefix or version.
    pub fn from_record(record: &[u8]) -> Result<Pulse, FormatError> {
        if record.len() != MESSAGE_LEN + 64 {
            return Err(FormatError(format!(
                "a pulse record is {} bytes, not {}",
                record.len(),
                MESSAGE_LEN + 64
            )));
        }
        if &record[..18] != MAGIC {
            return Err(FormatError("not a lokey beacon pulse".into()));
        }
        let mut at = 18;
        let mut take = |n: usize| {
            let s = &record[at..at + n];
            at += n;
            s
        };
        let version = u16::from_be_bytes(take(2).try_into().expect("2"));
        if version != VERSION {
            return Err(FormatError(format!(
                "pulse serialization version {version} (this lokey reads version {VERSION})"
            )));
        }
        let u64_ = |s: &[u8]| u64::from_be_bytes(s.try_into().expect("8"));
        let u32_ = |s: &[u8]| u32::from_be_bytes(s.try_into().expect("4"));
        Ok(Pulse {
            chain_index: u64_(take(8)),
            pulse_index: u64_(take(8)),
            time_ms: u64_(take(8)),
            period_ms: u32_(take(4)),
            serial: take(9).try_into().expect("9"),
            key_id: take(32).try_into().expect("32"),
            local_random: take(64).try_into().expect("64"),
            precommitment: take(64).try_into().expect("64"),
            previous_output: take(64).try_into().expect("64"),
            counter: u32_(take(4)),
            status: u32_(take(4)),
            commitment: take(32).try_into().expect("32"),
            signature: take(64).try_into().expect("64"),
        })
    }

    /// Whether the signature is a valid ECDSA P-256 signature of [`Pulse::digest`] by `key`.
    pub fn signature_valid(&self, key: &PublicKey) -> bool {
        let Ok(signature) = Signature::from_slice(&self.signature) else {
            return false;
        };
        key.verifying
            .verify_prehash(&self.digest(), &signature)
            .is_ok()
    }

    /// The JSON form, NIST's field names where the meaning is the same.
    pub fn to_json(&self) -> PulseJson {
        PulseJson {
            uri: format!(
                "/api/v1/beacon/chain/{}/pulse/{}",
                self.chain_index, self.pulse_index
            ),
            version: VERSION,
            cipher_suite: CIPHER_SUITE.into(),
            period: self.period_ms,
            chain_index: self.chain_index,
            pulse_index: self.pulse_index,
            time_stamp: rfc3339_ms(self.time_ms),
            serial_number: hex(&self.serial),
            key_id: hex(&self.key_id),
            local_random_value: hex(&self.local_random),
            precommitment_value: hex(&self.precommitment),
            previous_output_value: hex(&self.previous_output),
            counter: self.counter,
            status_code: self.status,
            status: status::names(self.status)
                .into_iter()
                .map(String::from)
                .collect(),
            commitment_value: hex(&self.commitment),
            signature_value: hex(&self.signature),
            output_value: hex(&self.output()),
            emulated: self.status & status::EMULATED != 0,
        }
    }
}

/// The suite of every version-1 pulse: signature and output hash.
pub const CIPHER_SUITE: &str = "ECDSA-P256-SHA256, output SHA-512";

/// A pulse as JSON (inside `{"pulse": …}` on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PulseJson {
    /// Where the daemon serves this pulse (relative).
    pub uri: String,
    /// Serialization version.
    pub version: u16,
    /// [`CIPHER_SUITE`].
    pub cipher_suite: String,
    /// Period, milliseconds.
    pub period: u32,
    /// Chain index.
    pub chain_index: u64,
    /// Pulse index.
    pub pulse_index: u64,
    /// Scheduled time, RFC 3339 UTC with milliseconds (`2026-12-04T16:00:00.000Z`).
    pub time_stamp: String,
    /// The chip's serial number, hex.
    pub serial_number: String,
    /// Key id, hex.
    pub key_id: String,
    /// Local random value, hex.
    pub local_random_value: String,
    /// Precommitment, hex.
    pub precommitment_value: String,
    /// Previous output, hex.
    pub previous_output_value: String,
    /// The chip's monotonic counter.
    pub counter: u32,
    /// Status bits.
    pub status_code: u32,
    /// Names of the status bits (not signed; informative).
    #[serde(default)]
    pub status: Vec<String>,
    /// Commitment, hex.
    pub commitment_value: String,
    /// Signature `r‖s`, hex.
    pub signature_value: String,
    /// Output value, hex.
    pub output_value: String,
    /// Whether the key is an emulator's software key (status bit 0x04; not signed apart).
    #[serde(default)]
    pub emulated: bool,
}

impl PulseJson {
    /// The pulse these fields describe. The output value is checked against the fields by
    /// [`verify`], not here.
    ///
    /// # Errors
    ///
    /// [`FormatError`] naming the field that is not what the specification says.
    pub fn to_pulse(&self) -> Result<Pulse, FormatError> {
        if self.version != VERSION {
            return Err(FormatError(format!(
                "pulse serialization version {} (this lokey reads version {VERSION})",
                self.version
            )));
        }
        Ok(Pulse {
            chain_index: self.chain_index,
            pulse_index: self.pulse_index,
            time_ms: parse_rfc3339_ms(&self.time_stamp).ok_or_else(|| {
                FormatError(format!(
                    "timeStamp {:?} is not YYYY-MM-DDTHH:MM:SS.sssZ",
                    self.time_stamp
                ))
            })?,
            period_ms: self.period,
            serial: unhex(&self.serial_number, "serialNumber")?,
            key_id: unhex(&self.key_id, "keyId")?,
            local_random: unhex(&self.local_random_value, "localRandomValue")?,
            precommitment: unhex(&self.precommitment_value, "precommitmentValue")?,
            previous_output: unhex(&self.previous_output_value, "previousOutputValue")?,
            counter: self.counter,
            status: self.status_code,
            commitment: unhex(&self.commitment_value, "commitmentValue")?,
            signature: unhex(&self.signature_value, "signatureValue")?,
        })
    }

    /// The output value as published.
    ///
    /// # Errors
    ///
    /// [`FormatError`] when it is not 64 bytes of hex.
    pub fn published_output(&self) -> Result<[u8; 64], FormatError> {
        unhex(&self.output_value, "outputValue")
    }
}

/// Malformed input: a field that is not what the specification says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub String);

/// A P-256 public key as the chip gives it (`X‖Y`), with its derived forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    xy: [u8; 64],
    verifying: VerifyingKey,
}

impl PublicKey {
    /// The key whose point is `X‖Y`.
    ///
    /// # Errors
    ///
    /// [`FormatError`] when the point is not on the curve.
    pub fn from_xy(xy: &[u8; 64]) -> Result<PublicKey, FormatError> {
        let mut sec1 = [0u8; 65];
        sec1[0] = 0x04;
        sec1[1..].copy_from_slice(xy);
        let verifying = VerifyingKey::from_sec1_bytes(&sec1)
            .map_err(|_| FormatError("the public key is not a point on P-256".into()))?;
        Ok(PublicKey { xy: *xy, verifying })
    }

    /// Parses a key given as 128 hex digits (`X‖Y`), 130 (`04‖X‖Y`), a PEM
    /// SubjectPublicKeyInfo, or the hex of its 91-byte DER.
    ///
    /// # Errors
    ///
    /// [`FormatError`] saying which forms are accepted.
    pub fn parse(text: &str) -> Result<PublicKey, FormatError> {
        let text = text.trim();
        let der = if text.starts_with("-----BEGIN PUBLIC KEY-----") {
            let body: String = text
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<Vec<_>>()
                .concat();
            crate::format::from_base64(&body)
                .ok_or_else(|| FormatError("the PEM public key is not valid base64".into()))?
        } else {
            from_hex(text).ok_or_else(|| {
                FormatError(
                    "a public key is 128 hex digits (X‖Y), 130 (04‖X‖Y), or a PEM \
                     SubjectPublicKeyInfo"
                        .into(),
                )
            })?
        };
        let xy: &[u8] = match der.len() {
            64 => &der,
            65 if der[0] == 0x04 => &der[1..],
            91 if der[..26] == SPKI_PREFIX && der[26] == 0x04 => &der[27..],
            _ => {
                return Err(FormatError(
                    "not a P-256 public key (X‖Y, 04‖X‖Y or a SubjectPublicKeyInfo)".into(),
                ));
            }
        };
        PublicKey::from_xy(xy.try_into().expect("64 bytes"))
    }

    /// `X‖Y`.
    pub fn xy(&self) -> [u8; 64] {
        self.xy
    }

    /// The DER SubjectPublicKeyInfo (91 bytes).
    pub fn spki_der(&self) -> Vec<u8> {
        let mut der = SPKI_PREFIX.to_vec();
        der.push(0x04);
        der.extend_from_slice(&self.xy);
        der
    }

    /// The PEM SubjectPublicKeyInfo.
    pub fn pem(&self) -> String {
        let b64 = crate::format::base64(&self.spki_der());
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }

    /// The key id: SHA-256 of the DER SubjectPublicKeyInfo (also the TLS pin `sha256:…`).
    pub fn key_id(&self) -> [u8; 32] {
        Sha256::digest(self.spki_der()).into()
    }
}

/// What [`verify`] found wrong: the pulse and the check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pulse {chain}/{pulse}: {check} failed: {detail}")]
pub struct VerifyError {
    /// Chain index of the failing pulse.
    pub chain: u64,
    /// Pulse index of the failing pulse.
    pub pulse: u64,
    /// The check: `output`, `key id`, `signature`, `pulse index`, `chain start`, `previous
    /// output`, `precommitment`, `time`, `period`, `chip`.
    pub check: &'static str,
    /// What was found.
    pub detail: String,
}

/// What a successful [`verify`] checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// Pulses whose output and signature were checked.
    pub pulses: usize,
    /// Links checked between consecutive pulses of one chain (index, previous output,
    /// precommitment, time).
    pub links: usize,
    /// Chains seen.
    pub chains: usize,
    /// Whether any pulse says its key is emulated.
    pub emulated: bool,
}

/// Verifies pulses offline with `key`: for each, the published output (when given) equals
/// SHA-512 of its message, its key id is `key`'s, and its signature is valid; for each pair
/// of consecutive pulses of one chain, the pulse index goes up by one, the previous output is
/// the earlier pulse's output, the earlier precommitment is SHA-512 of the later local random
/// value, the time goes up by at least one period, the period and the chip's serial number are
/// the same and its counter does not go down. Indexes start at 1; exactly pulse 1 says
/// `CHAIN_START`, with a zero previous output. Each chain's pulses are given in increasing
/// index, chains one after another; a new chain index starts a new run.
///
/// # Errors
///
/// The first [`VerifyError`].
pub fn verify(
    pulses: &[(Pulse, Option<[u8; 64]>)],
    key: &PublicKey,
) -> Result<Verified, VerifyError> {
    let mut report = Verified::default();
    let key_id = key.key_id();
    let mut previous: Option<&Pulse> = None;
    for (pulse, published) in pulses {
        let fail = |check, detail: String| VerifyError {
            chain: pulse.chain_index,
            pulse: pulse.pulse_index,
            check,
            detail,
        };
        let output = pulse.output();
        if let Some(published) = published
            && *published != output
        {
            return Err(fail(
                "output",
                format!(
                    "outputValue is not SHA-512 of the pulse's fields (computed {})",
                    hex(&output)
                ),
            ));
        }
        if pulse.key_id != key_id {
            return Err(fail(
                "key id",
                format!(
                    "the pulse names key {}, the key given is {}",
                    hex(&pulse.key_id),
                    hex(&key_id)
                ),
            ));
        }
        if !pulse.signature_valid(key) {
            return Err(fail(
                "signature",
                "not a valid ECDSA P-256 signature of SHA-256 of the pulse by this key".into(),
            ));
        }
        if pulse.pulse_index == 0 || pulse.period_ms == 0 {
            return Err(fail(
                "pulse index",
                "pulse indexes start at 1 and periods are above 0".into(),
            ));
        }
        if (pulse.pulse_index == 1) != (pulse.status & status::CHAIN_START != 0)
            || (pulse.pulse_index == 1 && pulse.previous_output != [0; 64])
        {
            return Err(fail(
                "chain start",
                "status bit 0x01 is set exactly on pulse 1, whose previous output is zero".into(),
            ));
        }
        if let Some(p) = previous.filter(|p| p.chain_index == pulse.chain_index) {
            link(p, pulse).map_err(|(check, detail)| fail(check, detail))?;
            report.links += 1;
        } else {
            report.chains += 1;
        }
        report.emulated |= pulse.status & status::EMULATED != 0;
        report.pulses += 1;
        previous = Some(pulse);
    }
    Ok(report)
}

/// The checks between consecutive pulses `a` and `b` of one chain.
fn link(a: &Pulse, b: &Pulse) -> Result<(), (&'static str, String)> {
    if b.pulse_index != a.pulse_index + 1 {
        return Err((
            "pulse index",
            format!(
                "follows pulse {} (indexes are gapless within a chain)",
                a.pulse_index
            ),
        ));
    }
    if b.previous_output != a.output() {
        return Err((
            "previous output",
            format!("is not the output of pulse {}", a.pulse_index),
        ));
    }
    let committed: [u8; 64] = Sha512::digest(b.local_random).into();
    if committed != a.precommitment {
        return Err((
            "precommitment",
            format!(
                "SHA-512 of its local random value is not the precommitment of pulse {}",
                a.pulse_index
            ),
        ));
    }
    if b.period_ms != a.period_ms {
        return Err(("period", "differs within a chain".into()));
    }
    if b.serial != a.serial || b.counter < a.counter {
        return Err((
            "chip",
            "the serial number changes, or the counter goes down, within a chain".into(),
        ));
    }
    if b.time_ms < a.time_ms + u64::from(a.period_ms) {
        return Err((
            "time",
            format!(
                "less than one period after pulse {} ({} ms, {} ms)",
                a.pulse_index, a.time_ms, b.time_ms
            ),
        ));
    }
    Ok(())
}

pub use crate::format::{from_hex, hex};

fn unhex<const N: usize>(text: &str, field: &str) -> Result<[u8; N], FormatError> {
    from_hex(text)
        .and_then(|v| <[u8; N]>::try_from(v).ok())
        .ok_or_else(|| FormatError(format!("{field} is not {N} bytes of hex")))
}

/// RFC 3339 UTC with milliseconds: `2026-12-04T16:00:00.000Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms % 1000
    )
}

/// Parses exactly the form [`rfc3339_ms`] writes.
pub fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let days = days_from_civil(y as i64, mo as u32, d as u32);
    let days = u64::try_from(days).ok()?;
    let total = ((days * 24 + h) * 60 + mi) * 60 + s;
    // Round-trip so that 2026-02-31 is refused rather than read as March 3.
    let ms_total = total * 1000 + ms;
    (rfc3339_ms(ms_total) == text).then_some(ms_total)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_321_bytes() {
        assert_eq!(MESSAGE_LEN, 321);
    }

    #[test]
    fn time_stamps_round_trip_and_refuse_impossible_dates() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_796_400_000_123), "2026-12-04T16:00:00.123Z");
        for ms in [0, 951_782_400_000, 1_796_400_000_123, 4_102_444_799_999] {
            assert_eq!(parse_rfc3339_ms(&rfc3339_ms(ms)), Some(ms));
        }
        assert_eq!(parse_rfc3339_ms("2026-02-31T00:00:00.000Z"), None);
        assert_eq!(parse_rfc3339_ms("2026-12-04T16:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("2026-12-04T16:00:00.000+00:00"), None);
    }
}

/// What the daemon keeps between pulses and across restarts (private to lokeyd: it holds the
/// precommitted next local random value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainState {
    /// The chip's monotonic counter after the increment that began the current (or last) run.
    pub epoch: u32,
    /// Whether that run stopped cleanly.
    pub clean: bool,
    /// The current chain.
    pub chain_index: u64,
    /// Its period, milliseconds.
    pub period_ms: u32,
    /// Its key id, hex.
    pub key_id: String,
    /// The chip's serial number, hex.
    pub serial: String,
    /// The newest pulse of the chain, when there is one.
    pub last: Option<LastPulse>,
    /// The local random value the newest pulse precommitted to, hex (secret until the next
    /// pulse publishes it).
    pub next_local: Option<String>,
    /// The status bits of the chain's first pulse while it is not yet published (a chain
    /// begun, then stopped cleanly before its first pulse, continues with them).
    #[serde(default)]
    pub start_status: Option<u32>,
}

/// The newest pulse, as far as the next one needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastPulse {
    /// Its index.
    pub pulse_index: u64,
    /// Its time, Unix milliseconds.
    pub time_ms: u64,
    /// Its output, hex.
    pub output: String,
}

/// A chain's fixed parameters, as `GET /api/v1/beacon/chain/{c}` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainInfo {
    /// Chain index.
    pub chain_index: u64,
    /// Time of its first pulse, RFC 3339.
    pub genesis: String,
    /// Time of its first pulse, Unix milliseconds.
    pub genesis_ms: u64,
    /// Period, milliseconds.
    pub period: u32,
    /// Serialization version of its pulses.
    pub version: u16,
    /// [`CIPHER_SUITE`].
    pub cipher_suite: String,
    /// The chip's serial number, hex.
    pub serial_number: String,
    /// The key slot that signs.
    pub slot: u8,
    /// The public key `X‖Y`, hex.
    pub public_key: String,
    /// The public key as a PEM SubjectPublicKeyInfo.
    pub public_key_pem: String,
    /// Key id, hex.
    pub key_id: String,
    /// Whether the key is an emulator's software key.
    pub emulated: bool,
    /// The status code of its first pulse (why it began).
    pub start_status: u32,
}

/// A pulse file (`docs/beacon.md` §7): pulses and, perhaps, the key they claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulseFile {
    /// The `publicKey` member, if the file has one (not to be trusted on its own).
    pub public_key: Option<String>,
    /// The pulses, in file order.
    pub pulses: Vec<PulseJson>,
}

/// Parses every form of pulse file: `{"pulse": P}`, `{"pulses": […], "publicKey": …}`, a JSON
/// array of `P` or `{"pulse": P}`, or lines each holding `{"pulse": P}`.
///
/// # Errors
///
/// [`FormatError`] saying what is not a pulse, with its position.
pub fn parse_pulse_file(text: &str) -> Result<PulseFile, FormatError> {
    use serde_json::Value;
    let one = |v: &Value, at: &str| -> Result<PulseJson, FormatError> {
        let p = v.get("pulse").unwrap_or(v);
        serde_json::from_value(p.clone())
            .map_err(|e| FormatError(format!("{at}: not a version-1 pulse: {e}")))
    };
    let whole: Result<Value, _> = serde_json::from_str(text);
    let (public_key, pulses) = match whole {
        Ok(Value::Array(items)) => (
            None,
            items
                .iter()
                .enumerate()
                .map(|(i, v)| one(v, &format!("item {}", i + 1)))
                .collect::<Result<_, _>>()?,
        ),
        Ok(v @ Value::Object(_)) => match v.get("pulses") {
            Some(Value::Array(items)) => (
                v.get("publicKey").and_then(Value::as_str).map(String::from),
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| one(v, &format!("pulse {}", i + 1)))
                    .collect::<Result<_, _>>()?,
            ),
            Some(_) => return Err(FormatError("\"pulses\" is not an array".into())),
            None => (
                v.get("publicKey").and_then(Value::as_str).map(String::from),
                vec![one(&v, "the file")?],
            ),
        },
        Ok(_) => return Err(FormatError("not a pulse file".into())),
        // JSON lines.
        Err(_) => (
            None,
            text.lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| {
                    let v: Value = serde_json::from_str(l)
                        .map_err(|e| FormatError(format!("line {}: not JSON: {e}", i + 1)))?;
                    one(&v, &format!("line {}", i + 1))
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    if pulses.is_empty() {
        return Err(FormatError("the file holds no pulse".into()));
    }
    Ok(PulseFile { public_key, pulses })
}
