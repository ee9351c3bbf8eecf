//! Beyond the Go API: a raw byte stream and random.org's generators, done right.
//!
//! - `GET /api/v1/random/bytes?n=…&source=…&encoding=raw|hex|base64`: `n` bytes (up to
//!   [`MAX_STREAM_BYTES`] from Fortuna), streamed in chunks as fast as the client reads: a
//!   bounded channel between the generating thread and the connection is the only buffer.
//! - `GET /api/v1/random/integers?n&min&max[&unique]`, `/decimal-fractions?n&places`,
//!   `/gaussians?n&mean&stddev`, `/strings?n&length[&charset|&characters]`, `/uuids?n`, and
//!   `POST /api/v1/random/shuffle` / `/sample` with `{"items": […], "k"}`: each answers
//!   `{"source": …, "data": […]}` and is computed by [`lokey::generate`]; `n × length` of
//!   strings and `n × places` of decimal fractions are capped at
//!   [`lokey::generate::MAX_TOTAL_CHARS`] together (Lemire's bounded
//!   integers, Floyd's sampling, Fisher–Yates, exact decimal places, Box–Muller, RFC 9562
//!   UUIDs): no modulo bias.
//!
//! Every endpoint takes `source=fortuna` (the default) or `source=trng`; `trng` bytes are
//! consumed durably and count against the client's token bucket. Parameters are checked
//! before any byte is drawn; a bad one is a 400 naming it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use lokey::fortuna::Worker;
use lokey::generate::{self, ByteSource};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{ApiError, guard};
use crate::service::{Service, ServiceError};
use crate::shutdown::Shutdown;

/// Most bytes one `/random/bytes` request streams (1 TiB: in practice, as long as the client
/// reads).
pub const MAX_STREAM_BYTES: u64 = 1 << 40;
/// Bytes per streamed chunk (a multiple of 3, so that base64 chunks need no padding).
const CHUNK: usize = 48 * 1024;

/// Most bytes a trng stream takes from the queue before its status line: all of any stream
/// the default `api.trng_burst_bytes` allows. A longer one (the operator raised the burst
/// above this) takes the rest as it streams and can still end early if the queue runs dry.
/// Memory stays bounded by the queue itself: all streams together hold no more than it
/// held (`store.trng_queue_size` items of 32 bytes), plus what the sources add meanwhile.
const TRNG_UPFRONT_BYTES: usize = 1 << 20;

/// Which source a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Fortuna,
    Trng,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Fortuna => "fortuna",
            Source::Trng => "trng",
        }
    }
}

/// Random bytes from the service for [`lokey::generate`].
///
/// The generators ask for a few bytes at a time, while every draw from the service has a
/// fixed cost (a durable take from the TRNG queue, a Fortuna request with its rekey), so the
/// bytes a request is expected to need are drawn in batches of up to [`CHUNK`] and handed out
/// from a buffer. Never more than expected is drawn ahead: beyond it (a generator's rare
/// rejected draw), exactly what is missing. Bytes a request leaves unused are discarded,
/// never served to anyone else.
struct ServiceBytes {
    service: Service,
    source: Source,
    worker: Option<Worker>,
    /// Drawn, not yet handed out: `buffer[used..]`.
    buffer: Vec<u8>,
    used: usize,
    /// Bytes handed to the generator.
    drawn: u64,
    /// Bytes the request is expected to draw (exact for streams, an estimate for the
    /// generators).
    expected: u64,
    /// Bytes drawn from the service.
    taken: u64,
}

impl ServiceBytes {
    fn new(service: &Service, source: Source, expected: u64) -> Result<ServiceBytes, ServiceError> {
        let worker = match source {
            Source::Fortuna => Some(service.fortuna_worker()?),
            Source::Trng => None,
        };
        Ok(ServiceBytes {
            service: service.clone(),
            source,
            worker,
            buffer: Vec::new(),
            used: 0,
            drawn: 0,
            expected,
            taken: 0,
        })
    }

    /// Draws `n` bytes from the service into `out` (`out.len() == n`).
    fn draw(&mut self, out: &mut [u8]) -> Result<(), ServiceError> {
        match &mut self.worker {
            Some(worker) => self.service.fortuna_fill(worker, out)?,
            // A take is all or nothing, and durable before it returns. In the non-consuming
            // mode nothing is deleted, so the request reads on past what it has drawn (from
            // the queue's head every time, a stream would repeat its first chunk and a
            // rejection sampler could draw the same rejected value forever).
            None => {
                let skip = if self.service.config().store.consume {
                    0
                } else {
                    self.taken
                };
                out.copy_from_slice(&self.service.trng_bytes(skip, out.len())?);
            }
        }
        self.taken += out.len() as u64;
        Ok(())
    }
}

impl ServiceBytes {
    /// Draws up to `most` of the expected bytes into the buffer now.
    fn prefetch(&mut self, most: usize) -> Result<(), ServiceError> {
        let ahead = usize::try_from(self.expected.saturating_sub(self.taken))
            .unwrap_or(most)
            .min(most);
        let mut batch = vec![0u8; ahead];
        self.draw(&mut batch)?;
        self.buffer.drain(..self.used);
        self.used = 0;
        self.buffer.extend_from_slice(&batch);
        Ok(())
    }
}

impl Drop for ServiceBytes {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            self.service.return_worker(worker);
        }
    }
}

impl ByteSource for ServiceBytes {
    type Error = ServiceError;

    fn fill(&mut self, out: &mut [u8]) -> Result<(), ServiceError> {
        let ahead = usize::try_from(self.expected.saturating_sub(self.taken))
            .unwrap_or(CHUNK)
            .min(CHUNK);
        let buffered = self.buffer.len() - self.used;
        if buffered == 0 && out.len() >= ahead {
            // A stream's chunk, or a draw beyond the expectation: straight into `out`.
            self.draw(out)?;
        } else {
            if buffered < out.len() {
                let mut batch = vec![0u8; (out.len() - buffered).max(ahead)];
                self.draw(&mut batch)?;
                self.buffer.drain(..self.used);
                self.used = 0;
                self.buffer.extend_from_slice(&batch);
            }
            out.copy_from_slice(&self.buffer[self.used..self.used + out.len()]);
            self.used += out.len();
        }
        self.drawn += out.len() as u64;
        Ok(())
    }
}

/// Query parameters, checked with messages naming the field (also the beacon's).
pub(super) struct Params(HashMap<String, String>);

impl Params {
    /// The query's parameters, of which the endpoint takes `known`. One given twice (`n=4&n=5`,
    /// or a list where the schema has one value) or one the endpoint does not know (a
    /// misspelt `Encoding=hex` would silently give the default) is a 400: taking it anyway
    /// would serve what the client did not mean.
    pub(super) fn new(pairs: Vec<(String, String)>, known: &[&str]) -> Result<Params, ApiError> {
        let mut map = HashMap::with_capacity(pairs.len());
        for (name, value) in pairs {
            if !known.contains(&name.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{name}`: this endpoint takes {}",
                    known.join(", ")
                )));
            }
            if map.insert(name.clone(), value).is_some() {
                return Err(ApiError::bad_request(format!(
                    "parameter `{name}` is given more than once"
                )));
            }
        }
        Ok(Params(map))
    }

    pub(super) fn int(
        &self,
        name: &str,
        min: i64,
        max: i64,
        default: Option<i64>,
    ) -> Result<i64, ApiError> {
        let range = format!("an integer from {min} to {max}");
        match self.0.get(name) {
            None => default.ok_or_else(|| {
                ApiError::bad_request(format!("parameter `{name}` is required: {range}"))
            }),
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|v| (min..=max).contains(v))
                .ok_or_else(|| {
                    ApiError::bad_request(format!("parameter `{name}`: {text:?} is not {range}"))
                }),
        }
    }

    fn float(&self, name: &str, default: f64) -> Result<f64, ApiError> {
        match self.0.get(name) {
            None => Ok(default),
            Some(text) => text
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "parameter `{name}`: {text:?} is not a finite number"
                    ))
                }),
        }
    }

    /// A boolean parameter: absent is false; `true`, `false`, `1` or `0` (not an empty value,
    /// which the OpenAPI schema's `boolean` does not allow).
    fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.0.get(name).map(String::as_str) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "parameter `{name}`: {other:?} is not true or false"
            ))),
        }
    }

    fn source(&self) -> Result<Source, ApiError> {
        match self.0.get("source").map(String::as_str) {
            None | Some("fortuna") => Ok(Source::Fortuna),
            Some("trng") => Ok(Source::Trng),
            Some(other) => Err(ApiError::bad_request(format!(
                "parameter `source`: {other:?} is not one of trng, fortuna"
            ))),
        }
    }
}

fn generator_error(e: generate::Error<ServiceError>) -> ApiError {
    match e {
        generate::Error::Invalid(message) => ApiError::bad_request(message),
        generate::Error::Source(e) => e.into(),
    }
}

/// Runs `make` with a byte source on a blocking thread (trng takes sync to disk, Fortuna
/// computes), after charging a trng request of about `trng_bytes` to the client's bucket
/// (the bytes `make` is expected to draw).
async fn generate<T: serde::Serialize + Send + 'static>(
    service: Service,
    peer: SocketAddr,
    buckets: &guard::Buckets,
    source: Source,
    kind: &'static str,
    trng_bytes: u64,
    make: impl FnOnce(&mut ServiceBytes) -> Result<T, generate::Error<ServiceError>> + Send + 'static,
) -> Result<Response, ApiError> {
    if source == Source::Trng
        && let Err(refused) = trng_checks(&service, buckets, peer, trng_bytes)
    {
        return Ok(*refused);
    }
    let metrics = service.request_metrics();
    let task_service = service.clone();
    let data = tokio::task::spawn_blocking(move || {
        let mut bytes = ServiceBytes::new(&task_service, source, trng_bytes)?;
        let data = make(&mut bytes).map_err(generator_error)?;
        metrics.served(source.name(), kind, bytes.drawn);
        Ok::<_, ApiError>(data)
    })
    .await
    .map_err(|e| ApiError::from(ServiceError::Internal(format!("generator task: {e}"))))
    .and_then(|r| r);
    let data = match data {
        Ok(data) => data,
        Err(e) => {
            // A failed request does not use up the client's trng budget.
            if source == Source::Trng {
                buckets.refund_trng(&service, peer.ip(), trng_bytes);
            }
            return Err(e);
        }
    };
    Ok(Json(json!({ "source": source.name(), "data": data })).into_response())
}

/// What a `trng` request of `n` bytes must pass before anything is drawn, all or nothing up
/// front: the queue holds `n` bytes now (404 saying how many it holds), `n` fits the client's
/// bucket at all (400 naming `api.trng_burst_bytes`), and the bucket holds `n` now (429 with
/// `Retry-After`; only then are tokens taken).
fn trng_checks(
    service: &Service,
    buckets: &guard::Buckets,
    peer: SocketAddr,
    n: u64,
) -> Result<(), Box<Response>> {
    service
        .trng_available(n)
        .map_err(|e| Box::new(ApiError::from(e).into_response()))?;
    if let Some(refused) = guard::oversized_trng(service, n) {
        return Err(Box::new(refused));
    }
    buckets.charge_trng(service, peer.ip(), n)
}

/// Bytes [`generate::unique_ints`] draws for `k` distinct values from a range of `span`
/// (0: all 2^64): k draws when the range is dense, else Floyd's k and a shuffle's k − 1.
fn unique_draw_bytes(span: u64, k: u64) -> u64 {
    if span != 0 && span <= 2 * k {
        k * 8
    } else {
        (2 * k).saturating_sub(1) * 8
    }
}

type Buckets = axum::Extension<std::sync::Arc<guard::Buckets>>;
type Q = Query<Vec<(String, String)>>;

/// `GET /api/v1/random/integers?n=10&min=1&max=6[&unique=true][&source=…]`.
#[utoipa::path(get, path = "/api/v1/random/integers", tag = "random",
    params(("n" = Option<u32>, Query, minimum = 1, maximum = 100000, description = "How many (default 1)"),
        ("min" = i64, Query, description = "Smallest value"),
        ("max" = i64, Query, description = "Largest value"),
        ("unique" = Option<bool>, Query, description = "No value twice"), ("source" = Option<super::openapi::SourceName>, Query, description = "fortuna (default) or trng")),
    responses(
        (status = 200, description = "The values and the source used", body = super::openapi::Generated),
        (status = 400, description = "A parameter is missing or invalid, or a trng request needs more bytes than api.trng_burst_bytes", body = super::openapi::ErrorBody),
        (status = 404, description = "The trng queue holds too few bytes", body = super::openapi::ErrorBody),
        (status = 429, description = "Per-client trng rate limit", body = super::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the bucket holds enough"))),
        (status = 503, description = "Fortuna is not seeded yet", body = super::openapi::ErrorBody)))]
pub async fn integers(
    State(service): State<Service>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(buckets): Buckets,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let p = Params::new(q, &["n", "min", "max", "unique", "source"])?;
    let n = p.int("n", 1, generate::MAX_COUNT as i64, Some(1))? as usize;
    let min = p.int("min", i64::MIN, i64::MAX, None)?;
    let max = p.int("max", i64::MIN, i64::MAX, None)?;
    let unique = p.flag("unique")?;
    let source = p.source()?;
    generate(
        service,
        peer,
        &buckets,
        source,
        "integers",
        if unique {
            let span = (max as u64).wrapping_sub(min as u64).wrapping_add(1);
            unique_draw_bytes(span, n as u64)
        } else {
            n as u64 * 8
        },
        move |src| {
            if unique {
                generate::unique_ints(src, min, max, n)
            } else {
                generate::ints(src, min, max, n)
            }
        },
    )
    .await
}

/// `GET /api/v1/random/decimal-fractions?n=5&places=4`: strings with exactly `places` digits.
#[utoipa::path(get, path = "/api/v1/random/decimal-fractions", tag = "random",
    params(("n" = Option<u32>, Query, minimum = 1, maximum = 100000, description = "How many (default 1)"),
        ("places" = Option<u32>, Query, minimum = 1, maximum = 19, description = "Decimal places (default 10); n × places at most 1000000"), ("source" = Option<super::openapi::SourceName>, Query, description = "fortuna (default) or trng")),
    responses(
        (status = 200, description = "The values and the source used", body = super::openapi::Generated),
        (status = 400, description = "A parameter is missing or invalid (n × places over 1000000 digits), or a trng request needs more bytes than api.trng_burst_bytes", body = super::openapi::ErrorBody),
        (status = 404, description = "The trng queue holds too few bytes", body = super::openapi::ErrorBody),
        (status = 429, description = "Per-client trng rate limit", body = super::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the bucket holds enough"))),
        (status = 503, description = "Fortuna is not seeded yet", body = super::openapi::ErrorBody)))]
pub async fn decimal_fractions(
    State(service): State<Service>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(buckets): Buckets,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let p = Params::new(q, &["n", "places", "source"])?;
    let n = p.int("n", 1, generate::MAX_COUNT as i64, Some(1))? as usize;
    let places = p.int(
        "places",
        1,
        i64::from(generate::MAX_DECIMAL_PLACES),
        Some(10),
    )? as u32;
    generate::check_total("n", n, "places", places as usize).map_err(generator_error)?;
    let source = p.source()?;
    generate(
        service,
        peer,
        &buckets,
        source,
        "decimal-fractions",
        n as u64 * 8,
        move |src| generate::decimal_fractions(src, n, places),
    )
    .await
}

/// `GET /api/v1/random/gaussians?n=5&mean=0&stddev=1`.
#[utoipa::path(get, path = "/api/v1/random/gaussians", tag = "random",
    params(("n" = Option<u32>, Query, minimum = 1, maximum = 100000, description = "How many (default 1)"),
        ("mean" = Option<f64>, Query, description = "Mean (default 0)"),
        ("stddev" = Option<f64>, Query, minimum = 0, description = "Standard deviation (default 1)"), ("source" = Option<super::openapi::SourceName>, Query, description = "fortuna (default) or trng")),
    responses(
        (status = 200, description = "The values and the source used", body = super::openapi::Generated),
        (status = 400, description = "A parameter is missing or invalid, or a trng request needs more bytes than api.trng_burst_bytes", body = super::openapi::ErrorBody),
        (status = 404, description = "The trng queue holds too few bytes", body = super::openapi::ErrorBody),
        (status = 429, description = "Per-client trng rate limit", body = super::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the bucket holds enough"))),
        (status = 503, description = "Fortuna is not seeded yet", body = super::openapi::ErrorBody)))]
pub async fn gaussians(
    State(service): State<Service>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(buckets): Buckets,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let p = Params::new(q, &["n", "mean", "stddev", "source"])?;
    let n = p.int("n", 1, generate::MAX_COUNT as i64, Some(1))? as usize;
    let mean = p.float("mean", 0.0)?;
    let stddev = p.float("stddev", 1.0)?;
    let source = p.source()?;
    generate(
        service,
        peer,
        &buckets,
        source,
        "gaussians",
        n.div_ceil(2) as u64 * 16,
        move |src| generate::gaussians(src, n, mean, stddev),
    )
    .await
}

/// `GET /api/v1/random/strings?n=3&length=16[&charset=alnum|…][&characters=abc…]`.
#[utoipa::path(get, path = "/api/v1/random/strings", tag = "random",
    params(("n" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "How many (default 1)"),
        ("length" = Option<u32>, Query, minimum = 1, maximum = 4096, description = "Characters each (default 16); n × length at most 1000000"),
        ("charset" = Option<super::openapi::Charset>, Query, description = "A named character set (default alnum)"),
        ("characters" = Option<String>, Query, min_length = 1, description = "Draw from exactly these characters instead"), ("source" = Option<super::openapi::SourceName>, Query, description = "fortuna (default) or trng")),
    responses(
        (status = 200, description = "The values and the source used", body = super::openapi::Generated),
        (status = 400, description = "A parameter is missing or invalid (n × length over 1000000 characters), or a trng request needs more bytes than api.trng_burst_bytes", body = super::openapi::ErrorBody),
        (status = 404, description = "The trng queue holds too few bytes", body = super::openapi::ErrorBody),
        (status = 429, description = "Per-client trng rate limit", body = super::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the bucket holds enough"))),
        (status = 503, description = "Fortuna is not seeded yet", body = super::openapi::ErrorBody)))]
pub async fn strings(
    State(service): State<Service>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(buckets): Buckets,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let p = Params::new(q, &["n", "length", "charset", "characters", "source"])?;
    let n = p.int("n", 1, 10_000, Some(1))? as usize;
    let length = p.int("length", 1, generate::MAX_STRING_LEN as i64, Some(16))? as usize;
    // A charset name is checked even when `characters` overrides it.
    let name = p.0.get("charset").map_or("alnum", String::as_str);
    let named = generate::charset(name).ok_or_else(|| {
        ApiError::bad_request(format!(
            "parameter `charset`: {name:?} is not one of {}",
            generate::CHARSETS.join(", ")
        ))
    })?;
    let chars = match p.0.get("characters") {
        Some(custom) => generate::dedup_charset(custom),
        None => named,
    };
    generate::check_total("n", n, "length", length).map_err(generator_error)?;
    let source = p.source()?;
    generate(
        service,
        peer,
        &buckets,
        source,
        "strings",
        (n * length) as u64 * 8,
        move |src| generate::strings(src, n, length, &chars),
    )
    .await
}

/// `GET /api/v1/random/uuids?n=3`: version-4 UUIDs.
#[utoipa::path(get, path = "/api/v1/random/uuids", tag = "random",
    params(("n" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "How many (default 1)"), ("source" = Option<super::openapi::SourceName>, Query, description = "fortuna (default) or trng")),
    responses(
        (status = 200, description = "The values and the source used", body = super::openapi::Generated),
        (status = 400, description = "A parameter is missing or invalid, or a trng request needs more bytes than api.trng_burst_bytes", body = super::openapi::ErrorBody),
        (status = 404, description = "The trng queue holds too few bytes", body = super::openapi::ErrorBody),
        (status = 429, description = "Per-client trng rate limit", body = super::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the bucket holds enough"))),
        (status = 503, description = "Fortuna is not seeded yet", body = super::openapi::ErrorBody)))]
pub async fn uuids(
    State(service): State<Service>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(buckets): Buckets,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let p = Params::new(q, &["n", "source"])?;
    let n = p.int("n", 1, 10_000, Some(1))? as usize;
    let source = p.source()?;
    generate(
        service,
        peer,
        &buckets,
        source,
        "uuids",
        n as u64 * 16,
        move |src| {
            (0..n)
                .map(|_| generate::uuid_v4(src))
                .collect::<Result<Vec<_>, _>>()
        },
    )
    .await
}

/// The `items` of a shuffle or sample request.
fn items(body: &Bytes) -> Result<(serde_json::Map<String, Value>, Vec<Value>), ApiError> {
    let map = super::request::object(body).map_err(ApiError::bad_request)?;
    let items = match map.get("items") {
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= generate::MAX_COUNT => {
            items.clone()
        }
        _ => {
            return Err(ApiError::bad_request(format!(
                "field `items` is required: an array of 1 to {} values",
                generate::MAX_COUNT
            )));
        }
    };
    Ok((map, items))
}

fn body_source(map: &serde_json::Map<String, Value>) -> Result<Source, ApiError> {
    match map.get("source") {
        None | Some(Value::Null) => Ok(Source::Fortuna),
        Some(Value::String(s)) if s == "fortuna" => Ok(Source::Fortuna),
        Some(Value::String(s)) if s == "trng" => Ok(Source::Trng),
        Some(other) => Err(ApiError::bad_request(format!(
            "field `source`: {other} is not one of trng, fortuna"
        ))),
    }
}

/// `POST /api/v1/random/shuffle` `{"items": […]}`: the items in a uniformly random order.
#[utoipa::path(post, path = "/api/v1/random/shuffle", tag = "random",
    request_body = super::openapi::ShuffleRequest,
    responses(
        (status = 200, description = "The values and the source used", body = super::openapi::Generated),
        (status = 400, description = "A parameter is missing or invalid, or a trng request needs more bytes than api.trng_burst_bytes", body = super::openapi::ErrorBody),
        (status = 404, description = "The trng queue holds too few bytes", body = super::openapi::ErrorBody),
        (status = 429, description = "Per-client trng rate limit", body = super::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the bucket holds enough"))),
        (status = 503, description = "Fortuna is not seeded yet", body = super::openapi::ErrorBody)))]
pub async fn shuffle(
    State(service): State<Service>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(buckets): Buckets,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (map, mut items) = items(&body)?;
    let source = body_source(&map)?;
    let n = items.len() as u64;
    generate(
        service,
        peer,
        &buckets,
        source,
        "shuffle",
        n.saturating_sub(1) * 8,
        move |src| {
            generate::shuffle(src, &mut items)?;
            Ok(items)
        },
    )
    .await
}

/// `POST /api/v1/random/sample` `{"items": […], "k": 3}`: `k` distinct items, in random order.
#[utoipa::path(post, path = "/api/v1/random/sample", tag = "random",
    request_body = super::openapi::SampleRequest,
    responses(
        (status = 200, description = "The values and the source used", body = super::openapi::Generated),
        (status = 400, description = "A parameter is missing or invalid, or a trng request needs more bytes than api.trng_burst_bytes", body = super::openapi::ErrorBody),
        (status = 404, description = "The trng queue holds too few bytes", body = super::openapi::ErrorBody),
        (status = 429, description = "Per-client trng rate limit", body = super::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the bucket holds enough"))),
        (status = 503, description = "Fortuna is not seeded yet", body = super::openapi::ErrorBody)))]
pub async fn sample(
    State(service): State<Service>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(buckets): Buckets,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (map, items) = items(&body)?;
    let k = super::request::integer(&map, "k", 1, items.len() as i64, None)
        .map_err(ApiError::bad_request)? as usize;
    let source = body_source(&map)?;
    generate(
        service,
        peer,
        &buckets,
        source,
        "sample",
        unique_draw_bytes(items.len() as u64, k as u64),
        move |src| generate::sample(src, &items, k),
    )
    .await
}

/// How `/random/bytes` encodes.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    Raw,
    Hex,
    Base64,
}

/// `GET /api/v1/random/bytes?n=1048576[&source=fortuna][&encoding=raw|hex|base64]`.
#[utoipa::path(get, path = "/api/v1/random/bytes", tag = "random",
    params(("n" = u64, Query, minimum = 1, maximum = 1_099_511_627_776_f64, description = "How many bytes"),
        ("encoding" = Option<super::openapi::Encoding>, Query, description = "raw (default), hex or base64"), ("source" = Option<super::openapi::SourceName>, Query, description = "fortuna (default) or trng")),
    responses(
        (status = 200, description = "The bytes, streamed", content((Vec<u8> = "application/octet-stream"), (String = "text/plain"))),
        (status = 400, description = "A parameter is missing or invalid, or a trng request needs more bytes than api.trng_burst_bytes", body = super::openapi::ErrorBody),
        (status = 404, description = "The trng queue holds too few bytes", body = super::openapi::ErrorBody),
        (status = 429, description = "Per-client trng rate limit", body = super::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the bucket holds enough"))),
        (status = 503, description = "Fortuna is not seeded yet", body = super::openapi::ErrorBody)))]
pub async fn bytes(
    State(service): State<Service>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(buckets): Buckets,
    shutdown: Option<axum::Extension<Shutdown>>,
    Query(q): Q,
) -> Result<Response, ApiError> {
    let p = Params::new(q, &["n", "source", "encoding"])?;
    let n = p.int("n", 1, MAX_STREAM_BYTES as i64, None)? as u64;
    let source = p.source()?;
    let encoding = match p.0.get("encoding").map(String::as_str) {
        None | Some("raw") => Encoding::Raw,
        Some("hex") => Encoding::Hex,
        Some("base64") => Encoding::Base64,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "parameter `encoding`: {other:?} is not one of raw, hex, base64"
            )));
        }
    };
    if source == Source::Trng
        && let Err(refused) = trng_checks(&service, &buckets, peer, n)
    {
        return Ok(*refused);
    }
    // Fail before the 200 when Fortuna cannot serve at all.
    let mut first = ServiceBytes::new(&service, source, n)?;
    if source == Source::Fortuna {
        first.draw(&mut [])?;
    } else {
        // A trng stream takes its bytes before the 200 (all of them, up to
        // TRNG_UPFRONT_BYTES): another client may drain the queue after the check, and a
        // stream failing after its status line reaches the client as a broken 200 instead of
        // the 404.
        first =
            tokio::task::spawn_blocking(move || first.prefetch(TRNG_UPFRONT_BYTES).map(|()| first))
                .await
                .map_err(|e| ServiceError::Internal(format!("trng task: {e}")))??;
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    std::thread::Builder::new()
        .name("random-bytes".into())
        .spawn(move || {
            let shutdown = shutdown.map(|axum::Extension(s)| s);
            let sent = produce(first, n, encoding, &tx, shutdown.as_ref());
            // A trng stream that failed gives back what it did not serve.
            if source == Source::Trng && sent < n {
                buckets.refund_trng(&service, peer.ip(), n - sent);
            }
        })
        .map_err(|e| ServiceError::Internal(format!("cannot start a stream: {e}")))?;
    let (content_type, length) = match encoding {
        Encoding::Raw => ("application/octet-stream", n),
        Encoding::Hex => ("text/plain; charset=utf-8", n * 2),
        Encoding::Base64 => ("text/plain; charset=utf-8", n.div_ceil(3) * 4),
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_LENGTH, length.to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::new(ChannelBody(rx)),
    )
        .into_response())
}

/// Generates `n` bytes chunk by chunk into `tx`; stops when the client goes away (the channel
/// closes), the source fails or the daemon begins to shut down (the stream then ends early
/// with an error, which aborts the connection: a client never mistakes a short answer for a
/// whole one, since it has fewer bytes than its `Content-Length`). Returns the bytes drawn
/// for the client.
fn produce(
    mut src: ServiceBytes,
    n: u64,
    encoding: Encoding,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    shutdown: Option<&Shutdown>,
) -> u64 {
    let mut left = n;
    let mut raw = vec![0u8; CHUNK];
    while left > 0 {
        if shutdown.is_some_and(Shutdown::is_triggered) {
            let _ = tx.blocking_send(Err(std::io::Error::other("lokeyd is shutting down")));
            return n - left;
        }
        let len = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
        if let Err(e) = src.fill(&mut raw[..len]) {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            return n - left;
        }
        let chunk = match encoding {
            Encoding::Raw => Bytes::copy_from_slice(&raw[..len]),
            Encoding::Hex => Bytes::from(lokey::format::hex(&raw[..len])),
            Encoding::Base64 => Bytes::from(lokey::format::base64(&raw[..len])),
        };
        if tx.blocking_send(Ok(chunk)).is_err() {
            // Drawn for the client, who went away: spent all the same.
            return n - left + len as u64;
        }
        src.service
            .request_metrics()
            .served(src.source.name(), "stream", len as u64);
        left -= len as u64;
    }
    n
}

/// A response body fed by a bounded channel: the producer blocks while the client does not
/// read (backpressure), and nothing beyond two chunks is buffered.
struct ChannelBody(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(http_body::Frame::data)))
    }
}
