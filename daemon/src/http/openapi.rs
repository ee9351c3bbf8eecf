//! The OpenAPI 3.1 description of the REST API, generated from the handlers' annotations
//! (utoipa) and served with Swagger UI from the binary: the UI at `/swagger/index.html`, the
//! spec at `/swagger/doc.json`. Nothing is loaded from the network, at build or run time.
//!
//! The request types here only describe bodies: the handlers parse JSON themselves, so that
//! every error names the field (see [`super::request`]).

use serde::Serialize;
use utoipa::{IntoResponses, OpenApi, ToSchema};

/// `POST /api/v1/data`.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code, reason = "describes a request body")]
pub struct DataRequest {
    /// Value format.
    #[schema(example = "uint32")]
    pub format: FormatName,
    /// How many values (bytes for `binary`), 1–100000.
    #[schema(minimum = 1, maximum = 100000, example = 10)]
    pub limit: u32,
    /// Values to skip first (they stay in the TRNG queue).
    #[schema(minimum = 0, maximum = 1152921504606846975_u64)]
    pub offset: Option<u64>,
    /// `trng` (raw hardware data, consumed) or `fortuna`.
    pub source: SourceName,
}

/// The Go API's value formats.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code, reason = "describes a request body")]
pub enum FormatName {
    /// Signed 8-bit.
    Int8,
    /// Signed 16-bit.
    Int16,
    /// Signed 32-bit.
    Int32,
    /// Signed 64-bit.
    Int64,
    /// Unsigned 8-bit.
    Uint8,
    /// Unsigned 16-bit.
    Uint16,
    /// Unsigned 32-bit.
    Uint32,
    /// Unsigned 64-bit.
    Uint64,
    /// Raw bytes.
    Binary,
}

/// A data source.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code, reason = "describes a request body")]
pub enum SourceName {
    /// Raw hardware random data from the durable queue.
    Trng,
    /// Fortuna.
    Fortuna,
}

/// The emulator's faults.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
#[allow(dead_code, reason = "describes a request body")]
pub enum FaultName {
    /// An unlocked config zone.
    Unlocked,
    /// The same block every time.
    StuckOutput,
    /// 32 equal bytes.
    ConstantByte,
    /// Corrupted responses.
    CrcCorruption,
    /// Bursts of NACKs.
    NackBurst,
    /// Every transfer fails.
    BusGone,
    /// Three times the datasheet maximum.
    SlowExecution,
    /// Asleep while executing.
    WatchdogSleep,
    /// Reports an ATECC508A.
    WrongRevision,
    /// Sign answers status 0x0F.
    SignFails,
    /// Sign takes 1.3 times the datasheet maximum.
    SlowSigning,
    /// The monotonic counters are at their maximum.
    CounterAtMax,
}

/// A beacon pulse (`docs/beacon.md` §7; byte strings are lowercase hex).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "describes a response body")]
pub struct PulseDoc {
    /// Where this daemon serves the pulse.
    pub uri: String,
    /// Serialization version (1).
    pub version: u16,
    /// `ECDSA-P256-SHA256, output SHA-512`.
    pub cipher_suite: String,
    /// Milliseconds between pulses.
    pub period: u32,
    /// Chain index: the chip's monotonic counter when the chain began.
    pub chain_index: u64,
    /// Pulse index, gapless from 1 within a chain.
    pub pulse_index: u64,
    /// Scheduled time, `YYYY-MM-DDTHH:MM:SS.sssZ`.
    pub time_stamp: String,
    /// The chip's serial number (9 bytes).
    pub serial_number: String,
    /// SHA-256 of the key's DER SubjectPublicKeyInfo.
    pub key_id: String,
    /// 64 fresh bytes from the chip.
    pub local_random_value: String,
    /// SHA-512 of the next pulse's local random value.
    pub precommitment_value: String,
    /// The previous pulse's output (zero in a chain's first pulse).
    pub previous_output_value: String,
    /// The chip's monotonic counter in this run.
    pub counter: u32,
    /// Status bits: 0x01 chain start, 0x02 time gap, 0x04 emulated key, 0x08 unclean stop,
    /// 0x10 counter mismatch, 0x20 parameters changed, 0x40 first.
    pub status_code: u32,
    /// Names of the status bits (not signed).
    pub status: Vec<String>,
    /// A commitment (Merkle root); zero when unused.
    pub commitment_value: String,
    /// ECDSA P-256 signature `r‖s` over SHA-256 of the serialized pulse.
    pub signature_value: String,
    /// SHA-512 of the serialized pulse: the value to use.
    pub output_value: String,
    /// Whether the key is an emulator's software key (status bit 0x04).
    pub emulated: bool,
}

/// `{"pulse": …}`.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code, reason = "describes a response body")]
pub struct PulseBody {
    /// The pulse.
    pub pulse: PulseDoc,
}

/// A run of pulses, as `lokey verify` takes it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "describes a response body")]
pub struct PulsesBody {
    /// The chain's public key `X‖Y`, hex (pin it from a trusted source before relying on it).
    pub public_key: String,
    /// Its key id.
    pub key_id: String,
    /// The pulses, in index order.
    pub pulses: Vec<PulseBody>,
}

/// A chain's parameters.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "describes a response body")]
pub struct ChainDoc {
    /// Chain index.
    pub chain_index: u64,
    /// Time of its first pulse.
    pub genesis: String,
    /// The same, Unix milliseconds.
    pub genesis_ms: u64,
    /// Period, milliseconds.
    pub period: u32,
    /// Serialization version.
    pub version: u16,
    /// Signature and output hash.
    pub cipher_suite: String,
    /// The chip's serial number.
    pub serial_number: String,
    /// The signing key's slot.
    pub slot: u8,
    /// Public key `X‖Y`, hex.
    pub public_key: String,
    /// Public key, PEM SubjectPublicKeyInfo.
    pub public_key_pem: String,
    /// Key id.
    pub key_id: String,
    /// Whether the key is an emulator's.
    pub emulated: bool,
    /// Status code of its first pulse: why the chain began.
    pub start_status: u32,
}

/// `{"chain": …}`.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code, reason = "describes a response body")]
pub struct ChainBody {
    /// The chain.
    pub chain: ChainDoc,
}

/// `POST /api/v1/draws`: `kind`, the generator's own parameters, `label` and `nonce`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[allow(dead_code, reason = "describes a request body")]
pub enum DrawRequest {
    /// `n` integers from `min` to `max` (min ≤ max; with `unique`, n ≤ the range).
    Integers {
        /// How many.
        #[schema(minimum = 1, maximum = 100000)]
        n: u32,
        /// Smallest.
        min: i64,
        /// Largest.
        max: i64,
        /// No value twice.
        unique: Option<bool>,
        /// What the draw is for.
        #[schema(max_length = 1000)]
        label: String,
        /// The client's nonce, hex.
        #[schema(pattern = "^([0-9a-fA-F]{2}){0,256}$")]
        nonce: Option<String>,
    },
    /// `k` distinct items (k ≤ the number of items), in drawn order.
    Sample {
        /// The list.
        #[schema(min_items = 1, max_items = 100000)]
        items: Vec<String>,
        /// How many.
        #[schema(minimum = 1, maximum = 100000)]
        k: u32,
        /// What the draw is for.
        #[schema(max_length = 1000)]
        label: String,
        /// The client's nonce, hex.
        #[schema(pattern = "^([0-9a-fA-F]{2}){0,256}$")]
        nonce: Option<String>,
    },
    /// Every item in a drawn order.
    Shuffle {
        /// The list.
        #[schema(min_items = 1, max_items = 100000)]
        items: Vec<String>,
        /// What the draw is for.
        #[schema(max_length = 1000)]
        label: String,
        /// The client's nonce, hex.
        #[schema(pattern = "^([0-9a-fA-F]{2}){0,256}$")]
        nonce: Option<String>,
    },
    /// `n` fractions with exactly `places` digits (n × places ≤ 1000000).
    DecimalFractions {
        /// How many.
        #[schema(minimum = 1, maximum = 100000)]
        n: u32,
        /// Digits after the point.
        #[schema(minimum = 1, maximum = 19)]
        places: u32,
        /// What the draw is for.
        #[schema(max_length = 1000)]
        label: String,
        /// The client's nonce, hex.
        #[schema(pattern = "^([0-9a-fA-F]{2}){0,256}$")]
        nonce: Option<String>,
    },
    /// `n` strings of `length` characters (n × length ≤ 1000000) from `charset` or
    /// `characters` (not both; no repeats).
    Strings {
        /// How many.
        #[schema(minimum = 1, maximum = 100000)]
        n: u32,
        /// Characters each.
        #[schema(minimum = 1, maximum = 4096)]
        length: u32,
        /// A named set (default alnum).
        charset: Option<Charset>,
        /// Exactly these characters.
        #[schema(min_length = 1)]
        characters: Option<String>,
        /// What the draw is for.
        #[schema(max_length = 1000)]
        label: String,
        /// The client's nonce, hex.
        #[schema(pattern = "^([0-9a-fA-F]{2}){0,256}$")]
        nonce: Option<String>,
    },
    /// `n` version-4 UUIDs.
    Uuids {
        /// How many.
        #[schema(minimum = 1, maximum = 100000)]
        n: u32,
        /// What the draw is for.
        #[schema(max_length = 1000)]
        label: String,
        /// The client's nonce, hex.
        #[schema(pattern = "^([0-9a-fA-F]{2}){0,256}$")]
        nonce: Option<String>,
    },
}

/// A draw's state.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "describes a response body")]
pub struct DrawStatusBody {
    /// The id.
    pub id: String,
    /// `pending`, `decided` or `undecidable`.
    pub status: String,
    /// Pending: the pulse it waits for.
    pub pulse_index: Option<u64>,
    /// Decided: the values.
    pub values: Option<Vec<serde_json::Value>>,
    /// Decided: everything a verifier needs (`docs/draws.md`).
    #[schema(value_type = Option<Object>)]
    pub receipt: Option<serde_json::Value>,
    /// Undecidable: why.
    pub reason: Option<String>,
}

/// What every single-pulse route answers.
#[derive(IntoResponses)]
#[allow(
    dead_code,
    clippy::large_enum_variant,
    reason = "describes responses; never built"
)]
pub enum PulseResponses {
    /// The pulse.
    #[response(status = 200, description = "The pulse")]
    Pulse(PulseBody),
    /// A bad path parameter.
    #[response(status = 400, description = "A path parameter is not a whole number")]
    BadRequest(ErrorBody),
    /// No such pulse.
    #[response(status = 404, description = "No such pulse")]
    NotFound(ErrorBody),
    /// The beacon is off.
    #[response(status = 409, description = "The beacon is off or cannot run here")]
    Off(ErrorBody),
}

/// Encodings of `/random/bytes`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code, reason = "describes a parameter")]
pub enum Encoding {
    /// Raw bytes.
    Raw,
    /// Lowercase hexadecimal.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// Named character sets.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code, reason = "describes a parameter")]
pub enum Charset {
    /// A–Z, a–z, 0–9.
    Alnum,
    /// A–Z, a–z.
    Alpha,
    /// a–z.
    Lower,
    /// A–Z.
    Upper,
    /// 0–9.
    Digits,
    /// 0–9, a–f.
    Hex,
    /// A–Z, a–z, 0–9, - and _.
    Base64url,
    /// Printable ASCII except space.
    Printable,
}

/// `GET`/`PUT /api/v1/config/queue`.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code, reason = "describes a request body")]
pub struct QueueConfig {
    /// TRNG queue capacity in items.
    #[schema(minimum = 10, maximum = 1000000)]
    pub trng_queue_size: u32,
    /// Reported for compatibility (Fortuna output is not stored).
    #[schema(minimum = 10, maximum = 1000000)]
    pub fortuna_queue_size: u32,
}

/// `GET`/`PUT /api/v1/config/consume`.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code, reason = "describes a request body")]
pub struct ConsumeConfig {
    /// Delete TRNG bytes when served.
    pub consume: bool,
}

/// `PUT /api/v1/admin/faults`.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code, reason = "describes a request body")]
pub struct FaultRequest {
    /// A fault name (see lokeyd(8)).
    pub name: FaultName,
    /// On or off.
    pub active: bool,
}

/// The faults active after a switch.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code, reason = "describes a response body")]
pub struct ActiveFaults {
    /// Active fault names.
    pub active: Vec<String>,
}

/// `POST /api/v1/random/shuffle`.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code, reason = "describes a request body")]
pub struct ShuffleRequest {
    /// The values, of any JSON type.
    #[schema(min_items = 1, max_items = 100000)]
    pub items: Vec<serde_json::Value>,
    /// `fortuna` (default) or `trng`.
    pub source: Option<SourceName>,
}

/// `POST /api/v1/random/sample`.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code, reason = "describes a request body")]
pub struct SampleRequest {
    /// The values, of any JSON type.
    #[schema(min_items = 1, max_items = 100000)]
    pub items: Vec<serde_json::Value>,
    /// How many distinct items: at most as many as `items` (a 400 otherwise).
    #[schema(minimum = 1, maximum = 100000)]
    pub k: u32,
    /// `fortuna` (default) or `trng`.
    pub source: Option<SourceName>,
}

/// What the generators answer.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code, reason = "describes a response body")]
pub struct Generated {
    /// The source used.
    pub source: SourceName,
    /// The values.
    pub data: Vec<serde_json::Value>,
}

/// Every error.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code, reason = "describes a response body")]
pub struct ErrorBody {
    /// What went wrong, naming the field and what is allowed.
    pub error: String,
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "lokey",
        description = "Hardware randomness from an ATECC608A: raw TRNG data, Fortuna, \
                       generators, status and health. Wire-compatible with the Go project Lokey.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        super::data,
        super::health,
        super::status,
        super::get_queue,
        super::put_queue,
        super::get_consume,
        super::put_consume,
        super::get_consumption_doc,
        super::put_consumption_doc,
        super::set_fault,
        super::metrics_doc,
        super::api_metrics_doc,
        super::random::bytes,
        super::random::integers,
        super::random::decimal_fractions,
        super::random::gaussians,
        super::random::strings,
        super::random::uuids,
        super::random::shuffle,
        super::random::sample,
        super::beacon::last,
        super::beacon::by_index,
        super::beacon::at,
        super::beacon::previous,
        super::beacon::next,
        super::beacon::chain,
        super::beacon::run,
        super::beacon::identity,
        super::beacon::register,
        super::beacon::draw,
        super::beacon::tls,
        super::pollen::answer,
        super::page::index,
    ),
    components(schemas(
        DataRequest,
        FormatName,
        SourceName,
        FaultName,
        Encoding,
        Charset,
        QueueConfig,
        ConsumeConfig,
        FaultRequest,
        ShuffleRequest,
        SampleRequest,
        Generated,
        ErrorBody,
        PulseDoc,
        PulseBody,
        PulsesBody,
        ChainDoc,
        ChainBody,
        crate::service::IdentityReport,
        DrawRequest,
        crate::service::DrawTicket,
        DrawStatusBody
    )),
    tags(
        (name = "data", description = "Random data (the Go API)"),
        (name = "random", description = "Streams and generators"),
        (name = "config", description = "Run-time settings (admin)"),
        (name = "beacon", description = "The chip-signed randomness beacon and the chip's key"),
        (name = "status", description = "Status, health, metrics")
    )
)]
pub struct ApiDoc;

/// The spec as pretty JSON.
pub fn json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot render the spec: {e}\"}}"))
}
