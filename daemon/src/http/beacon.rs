//! The beacon and the chip's identity over REST, shaped like NIST's Beacon 2.0 where the
//! meaning is the same (`reference/verifiable-randomness.md` §1; the pulse format is
//! `docs/beacon.md`):
//!
//! - `GET /api/v1/beacon/pulse/last`, `/api/v1/beacon/chain/{c}/pulse/{p}`,
//!   `/api/v1/beacon/pulse/time/{ms}` (that time or the closest pulse),
//!   `/api/v1/beacon/pulse/time/previous/{ms}`, `/api/v1/beacon/pulse/time/next/{ms}`: each
//!   `{"pulse": …}`, 404 when there is none.
//! - `GET /api/v1/beacon/chain/{c}`: the chain's parameters (genesis, period, key, version).
//! - `GET /api/v1/beacon/chain/{c}/pulses?from=&count=`: a run of pulses as a pulse file
//!   (`{"pulses": […], "publicKey": …}`) that `lokey verify` takes.
//! - `GET /api/v1/identity`: serial number, slot, public key (hex and PEM), key id, pin.
//! - `POST /api/v1/draws` registers a draw (`docs/draws.md`), on disk before the answer;
//!   `GET /api/v1/draws/{id}`: pending, decided (values and receipt) or undecidable.
//!
//! Pulses are read from the store, where they were synced before anyone could see them.

use axum::Json;
use axum::extract::{Path, Query, State};
use serde_json::{Value, json};

use super::ApiError;
use super::openapi::{
    ChainBody, DrawRequest, DrawStatusBody, ErrorBody, PulseResponses, PulsesBody,
};
use super::random::Params;
use crate::service::{PulseQuery, Service, ServiceError};

/// Most pulses one `/pulses` request returns.
pub const MAX_RUN: usize = 1000;

fn pulse(service: &Service, query: PulseQuery) -> Result<Json<Value>, ApiError> {
    let pulse = service.pulse(query)?;
    Ok(Json(json!({ "pulse": pulse.to_json() })))
}

/// `GET /api/v1/beacon/pulse/last`.
#[utoipa::path(
    get,
    path = "/api/v1/beacon/pulse/last",
    tag = "beacon",
    responses(PulseResponses)
)]
pub async fn last(State(service): State<Service>) -> Result<Json<Value>, ApiError> {
    pulse(&service, PulseQuery::Last)
}

/// `GET /api/v1/beacon/chain/{chain}/pulse/{pulse}`.
#[utoipa::path(get, path = "/api/v1/beacon/chain/{chain}/pulse/{pulse}", tag = "beacon",
    params(("chain" = u64, Path, description = "Chain index"),
           ("pulse" = u64, Path, description = "Pulse index, from 1")),
    responses(PulseResponses))]
pub async fn by_index(
    State(service): State<Service>,
    Path((chain, index)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let chain = number(&chain, "chain")?;
    let index = number(&index, "pulse")?;
    pulse(
        &service,
        PulseQuery::Index {
            chain,
            pulse: index,
        },
    )
}

/// `GET /api/v1/beacon/pulse/time/{ms}`.
#[utoipa::path(get, path = "/api/v1/beacon/pulse/time/{ms}", tag = "beacon",
    params(("ms" = u64, Path, description = "Unix time in milliseconds")),
    responses(PulseResponses))]
pub async fn at(
    State(service): State<Service>,
    Path(ms): Path<String>,
) -> Result<Json<Value>, ApiError> {
    pulse(&service, PulseQuery::At(number(&ms, "ms")?))
}

/// `GET /api/v1/beacon/pulse/time/previous/{ms}`.
#[utoipa::path(get, path = "/api/v1/beacon/pulse/time/previous/{ms}", tag = "beacon",
    params(("ms" = u64, Path, description = "Unix time in milliseconds")),
    responses(PulseResponses))]
pub async fn previous(
    State(service): State<Service>,
    Path(ms): Path<String>,
) -> Result<Json<Value>, ApiError> {
    pulse(&service, PulseQuery::Before(number(&ms, "ms")?))
}

/// `GET /api/v1/beacon/pulse/time/next/{ms}`.
#[utoipa::path(get, path = "/api/v1/beacon/pulse/time/next/{ms}", tag = "beacon",
    params(("ms" = u64, Path, description = "Unix time in milliseconds")),
    responses(PulseResponses))]
pub async fn next(
    State(service): State<Service>,
    Path(ms): Path<String>,
) -> Result<Json<Value>, ApiError> {
    pulse(&service, PulseQuery::After(number(&ms, "ms")?))
}

/// `GET /api/v1/beacon/chain/{chain}`.
#[utoipa::path(get, path = "/api/v1/beacon/chain/{chain}", tag = "beacon",
    params(("chain" = u64, Path, description = "Chain index")),
    responses((status = 200, description = "The chain's parameters", body = ChainBody),
              (status = 400, description = "The chain index is not a whole number", body = ErrorBody),
              (status = 404, description = "No such chain", body = ErrorBody),
              (status = 409, description = "The beacon is off", body = ErrorBody)))]
pub async fn chain(
    State(service): State<Service>,
    Path(chain): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let info = service.chain(number(&chain, "chain")?)?;
    Ok(Json(json!({ "chain": info })))
}

/// `GET /api/v1/beacon/chain/{chain}/pulses?from=1&count=100`.
#[utoipa::path(get, path = "/api/v1/beacon/chain/{chain}/pulses", tag = "beacon",
    params(("chain" = u64, Path, description = "Chain index"),
           ("from" = Option<u64>, Query, minimum = 1, maximum = 9223372036854775807_u64, description = "First pulse index (default 1)"),
           ("count" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Most pulses (default 100)")),
    responses((status = 200, description = "A pulse file: the pulses and the chain's public key", body = PulsesBody),
              (status = 400, description = "A bad parameter", body = ErrorBody),
              (status = 404, description = "No such chain", body = ErrorBody),
              (status = 409, description = "The beacon is off", body = ErrorBody)))]
pub async fn run(
    State(service): State<Service>,
    Path(chain): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let chain = number(&chain, "chain")?;
    let params = Params::new(query, &["from", "count"])?;
    let from = params.int("from", 1, i64::MAX, Some(1))? as u64;
    let count = params.int("count", 1, MAX_RUN as i64, Some(100))? as usize;
    let info = service.chain(chain)?;
    let pulses: Vec<Value> = service
        .pulses(chain, from, count)?
        .iter()
        .map(|p| json!({ "pulse": p.to_json() }))
        .collect();
    Ok(Json(json!({
        "publicKey": info.public_key,
        "keyId": info.key_id,
        "pulses": pulses,
    })))
}

/// `GET /api/v1/identity`.
#[utoipa::path(get, path = "/api/v1/identity", tag = "beacon",
    responses((status = 200, description = "The signing key", body = crate::service::IdentityReport),
              (status = 409, description = "No chip", body = ErrorBody),
              (status = 503, description = "The chip does not answer or its slot holds no key", body = ErrorBody)))]
pub async fn identity(State(service): State<Service>) -> Result<Json<Value>, ApiError> {
    // A few chip exchanges: off the async threads.
    let tls = service.tls();
    let report = tokio::task::spawn_blocking(move || service.identity())
        .await
        .map_err(|e| ApiError::from(ServiceError::Internal(format!("identity task: {e}"))))??;
    let mut value = json!(report);
    if let Some(tls) = tls {
        // The key clients pin (`lokey --remote … --pin`), which is not the beacon's.
        value["tls"] = json!(tls.report());
    }
    Ok(Json(value))
}

/// `GET /api/v1/tls`: the TLS key's pin, certificate and handshake counters; 409 when the
/// REST API is plain HTTP.
#[utoipa::path(get, path = "/api/v1/tls", tag = "beacon",
    responses(
        (status = 200, description = "TLS is on", body = crate::tls::TlsReport),
        (status = 409, description = "api.tls is off", body = super::openapi::ErrorBody)))]
pub async fn tls(State(service): State<Service>) -> Result<Json<Value>, ApiError> {
    let tls = service.tls().ok_or_else(|| {
        ApiError::from(ServiceError::Unsupported(
            "the REST API is plain HTTP (api.tls = \"off\")".into(),
        ))
    })?;
    Ok(Json(json!(tls.report())))
}

/// `POST /api/v1/draws`.
#[utoipa::path(post, path = "/api/v1/draws", tag = "beacon",
    request_body(content = DrawRequest, description = "The kind, the generator's parameters, a label and an optional nonce"),
    responses((status = 200, description = "Registered and on disk; decided by pulse `pulseIndex`", body = crate::service::DrawTicket),
              (status = 400, description = "A bad field, named", body = ErrorBody),
              (status = 409, description = "The beacon is off", body = ErrorBody),
              (status = 503, description = "The beacon has no chain yet, or the store failed", body = ErrorBody)))]
pub async fn register(
    State(service): State<Service>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    // A sync to disk: off the async threads.
    let ticket = tokio::task::spawn_blocking(move || service.register_draw(&body))
        .await
        .map_err(|e| ApiError::from(ServiceError::Internal(format!("draw task: {e}"))))??;
    Ok(Json(json!(ticket)))
}

/// `GET /api/v1/draws/{id}`.
#[utoipa::path(get, path = "/api/v1/draws/{id}", tag = "beacon",
    params(("id" = String, Path, pattern = "^[0-9]{1,19}-[0-9]{1,19}-[0-9]{1,10}$", description = "The draw's id, chain-pulse-index")),
    responses((status = 200, description = "Pending, decided (values and receipt) or undecidable (reason)", body = DrawStatusBody),
              (status = 400, description = "Not a draw id", body = ErrorBody),
              (status = 404, description = "No such draw", body = ErrorBody),
              (status = 409, description = "The beacon is off", body = ErrorBody)))]
pub async fn draw(
    State(service): State<Service>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let answer = tokio::task::spawn_blocking(move || service.draw(&id))
        .await
        .map_err(|e| ApiError::from(ServiceError::Internal(format!("draw task: {e}"))))??;
    Ok(Json(answer))
}

/// A path number: a whole number within the spec's `int64` range.
fn number(text: &str, name: &str) -> Result<u64, ApiError> {
    text.parse::<i64>()
        .ok()
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name} must be a whole number from 0 to {}, not {text:?}",
                i64::MAX
            ))
        })
}
