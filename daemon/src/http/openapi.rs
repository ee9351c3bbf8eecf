//! The OpenAPI 3.1 description of the REST API, generated from the handlers' annotations
//! (utoipa) and served with Swagger UI from the binary: the UI at `/swagger/index.html`, the
//! spec at `/swagger/doc.json`. Nothing is loaded from the network, at build or run time.
//!
//! The request types here only describe bodies: the handlers parse JSON themselves, so that
//! every error names the field (see [`super::request`]).

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

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
        ErrorBody
    )),
    tags(
        (name = "data", description = "Random data (the Go API)"),
        (name = "random", description = "Streams and generators"),
        (name = "config", description = "Run-time settings (admin)"),
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
