//! The REST API (axum). [`router`] builds the application without a server, so tests call it
//! directly; [`serve`] runs it on a listener until shutdown.
//!
//! Errors are `{"error": "…"}` with a 4xx status for the caller's mistakes (the message names
//! the field and the allowed values) and a 5xx status for the daemon's; details of internal
//! errors go to the log, not to the client.
//!
//! Configuration changes need an admin: with `api.admin_token` set, a request carrying
//! `Authorization: Bearer <token>`; without one, a request from a loopback address.

mod beacon;
mod conn;
mod guard;
mod openapi;
mod page;
mod pollen;
mod random;
mod request;

use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::json;
use tokio::net::TcpListener;

use crate::service::{Caller, Service, ServiceError};
use crate::shutdown::Shutdown;

/// The application: every route, with the service as state.
pub fn router(service: Service) -> Router {
    let registry = std::sync::Arc::new(crate::metrics::registry(service.clone()));
    let metrics = get(move || {
        let registry = registry.clone();
        async move {
            (
                [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
                crate::metrics::render(&registry),
            )
        }
    });
    let app = Router::new()
        .route("/", get(page::index).post(pollen::answer))
        .route("/status.css", get(page::css))
        .route("/status.js", get(page::js))
        .route("/favicon.svg", get(page::icon))
        .route("/metrics", metrics.clone())
        .route("/api/v1/metrics", metrics)
        .route("/api/v1/health", get(health))
        .route("/api/v1/status", get(status))
        .route("/api/v1/config/queue", get(get_queue).put(put_queue))
        .route("/api/v1/config/consume", get(get_consume).put(put_consume))
        .route(
            "/api/v1/config/consumption",
            get(get_consume).put(put_consume),
        )
        .route("/api/v1/admin/faults", put(set_fault))
        .route("/api/v1/data", post(data))
        .route("/api/v1/random/bytes", get(random::bytes))
        .route("/api/v1/random/integers", get(random::integers))
        .route(
            "/api/v1/random/decimal-fractions",
            get(random::decimal_fractions),
        )
        .route("/api/v1/random/gaussians", get(random::gaussians))
        .route("/api/v1/random/strings", get(random::strings))
        .route("/api/v1/random/uuids", get(random::uuids))
        .route("/api/v1/identity", get(beacon::identity))
        .route("/api/v1/draws", post(beacon::register))
        .route("/api/v1/draws/{id}", get(beacon::draw))
        .route("/api/v1/tls", get(beacon::tls))
        .route("/api/v1/beacon/pulse/last", get(beacon::last))
        .route("/api/v1/beacon/pulse/time/{ms}", get(beacon::at))
        .route(
            "/api/v1/beacon/pulse/time/previous/{ms}",
            get(beacon::previous),
        )
        .route("/api/v1/beacon/pulse/time/next/{ms}", get(beacon::next))
        .route("/api/v1/beacon/chain/{chain}", get(beacon::chain))
        .route("/api/v1/beacon/chain/{chain}/pulses", get(beacon::run))
        .route(
            "/api/v1/beacon/chain/{chain}/pulse/{pulse}",
            get(beacon::by_index),
        )
        .route("/api/v1/random/shuffle", post(random::shuffle))
        .route("/api/v1/random/sample", post(random::sample))
        .merge(utoipa_swagger_ui::SwaggerUi::new("/swagger").url(
            "/swagger/doc.json",
            <openapi::ApiDoc as utoipa::OpenApi>::openapi(),
        ))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            guard::Guard::new(service.clone()),
            guard::guard,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::Extension(std::sync::Arc::new(
            guard::Buckets::default(),
        )))
        .with_state(service);
    // Outside the routes, so that axum's `Allow` header is on a 405 by the time it is read.
    Router::new()
        .fallback_service(app)
        .layer(axum::middleware::from_fn(json_errors))
}

/// The OpenAPI spec as served at `/swagger/doc.json`.
pub fn openapi_json() -> String {
    openapi::json()
}

/// Largest request body accepted (requests are small JSON documents).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// An error answer: `{"error": message}` with `status`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// A 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        let status = match &e {
            ServiceError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            ServiceError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            ServiceError::Unsupported(_) => StatusCode::CONFLICT,
            ServiceError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            // The Go project's status for "no data" (its Swagger text: "Not enough data
            // available").
            ServiceError::Insufficient { .. } => StatusCode::NOT_FOUND,
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match e {
            ServiceError::Internal(detail) => {
                tracing::error!("internal error: {detail}");
                "internal error; the daemon's log has the details".to_string()
            }
            other => other.to_string(),
        };
        ApiError { status, message }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// Who a REST request comes from: an admin (token, or loopback without a token) or not.
fn caller(service: &Service, headers: &HeaderMap, peer: SocketAddr) -> Caller {
    let token = service.config().api.admin_token;
    let admin = if token.is_empty() {
        peer.ip().is_loopback()
    } else {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
    };
    if admin {
        Caller::Admin
    } else {
        Caller::Anonymous
    }
}

/// Compares without an early exit, so the time taken does not reveal the matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses a non-admin caller with 401 (token configured) or 403 (loopback only).
fn require_admin(service: &Service, caller: Caller) -> Result<(), ApiError> {
    if caller.may_configure() {
        return Ok(());
    }
    Err(if service.config().api.admin_token.is_empty() {
        ApiError {
            status: StatusCode::FORBIDDEN,
            message: "configuration changes are accepted only from loopback clients when no \
                      admin token is configured (set api.admin_token)"
                .into(),
        }
    } else {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "configuration changes need the header `Authorization: Bearer <admin token>`"
                .into(),
        }
    })
}

/// `GET /api/v1/config/queue`: `{"trng_queue_size": …, "fortuna_queue_size": …}`.
#[utoipa::path(get, path = "/api/v1/config/queue", tag = "config",
    responses((status = 200, description = "The queue capacities", body = openapi::QueueConfig)))]
async fn get_queue(State(service): State<Service>) -> Response {
    let c = service.config().store;
    Json(json!({
        "trng_queue_size": c.trng_queue_size,
        "fortuna_queue_size": c.fortuna_queue_size,
    }))
    .into_response()
}

/// `PUT /api/v1/config/queue`: both sizes, 10–1000000 items, persisted; echoes them.
#[utoipa::path(put, path = "/api/v1/config/queue", tag = "config",
    request_body = openapi::QueueConfig,
    responses(
        (status = 200, description = "Stored and applied; echoes the body", body = openapi::QueueConfig),
        (status = 400, description = "A field is missing or out of range", body = openapi::ErrorBody),
        (status = 401, description = "The admin token is missing or wrong", body = openapi::ErrorBody),
        (status = 403, description = "Not a loopback client and no token configured", body = openapi::ErrorBody)))]
async fn put_queue(
    State(service): State<Service>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = caller(&service, &headers, peer);
    require_admin(&service, caller)?;
    let map = request::object(&body).map_err(ApiError::bad_request)?;
    let size = |field| request::integer(&map, field, 10, 1_000_000, None);
    let trng = size("trng_queue_size").map_err(ApiError::bad_request)?;
    let fortuna = size("fortuna_queue_size").map_err(ApiError::bad_request)?;
    service.config_set(
        caller,
        &[
            ("store.trng_queue_size", json!(trng)),
            ("store.fortuna_queue_size", json!(fortuna)),
        ],
    )?;
    Ok(Json(json!({ "trng_queue_size": trng, "fortuna_queue_size": fortuna })).into_response())
}

/// `GET /api/v1/config/consume` (also `/consumption`): `{"consume": bool}`.
#[utoipa::path(get, path = "/api/v1/config/consume", tag = "config",
    responses((status = 200, description = "Whether TRNG bytes are deleted when served", body = openapi::ConsumeConfig)))]
async fn get_consume(State(service): State<Service>) -> Response {
    Json(json!({ "consume": service.config().store.consume })).into_response()
}

/// `PUT /api/v1/config/consume` `{"consume": bool}`: persisted; echoes it. Unlike the Go
/// project, a body without `consume` is refused rather than read as `false`: turning
/// delete-on-read off must be explicit.
#[utoipa::path(put, path = "/api/v1/config/consume", tag = "config",
    request_body = openapi::ConsumeConfig,
    responses(
        (status = 200, description = "Stored and applied; echoes the body", body = openapi::ConsumeConfig),
        (status = 400, description = "`consume` is missing or not a boolean", body = openapi::ErrorBody),
        (status = 401, description = "The admin token is missing or wrong", body = openapi::ErrorBody),
        (status = 403, description = "Not a loopback client and no token configured", body = openapi::ErrorBody)))]
async fn put_consume(
    State(service): State<Service>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = caller(&service, &headers, peer);
    require_admin(&service, caller)?;
    let map = request::object(&body).map_err(ApiError::bad_request)?;
    let consume = request::boolean(&map, "consume").map_err(ApiError::bad_request)?;
    service.config_set(caller, &[("store.consume", json!(consume))])?;
    Ok(Json(json!({ "consume": consume })).into_response())
}

/// `GET /api/v1/config/consumption`: the same as `GET /api/v1/config/consume` (the Go
/// project's documented name).
// Served by `get_consume`; this function only carries the description.
#[utoipa::path(get, path = "/api/v1/config/consumption", tag = "config",
    responses((status = 200, description = "Whether TRNG bytes are deleted when served (same as /api/v1/config/consume)", body = openapi::ConsumeConfig)))]
#[allow(dead_code, reason = "documents an alias route")]
fn get_consumption_doc() {}

/// `PUT /api/v1/config/consumption`: the same as `PUT /api/v1/config/consume` (the Go
/// project's documented name).
// Served by `put_consume`; this function only carries the description.
#[utoipa::path(put, path = "/api/v1/config/consumption", tag = "config",
    request_body = openapi::ConsumeConfig,
    responses(
        (status = 200, description = "Stored and applied; echoes the body (same as /api/v1/config/consume)", body = openapi::ConsumeConfig),
        (status = 400, description = "`consume` is missing or not a boolean", body = openapi::ErrorBody),
        (status = 401, description = "The admin token is missing or wrong", body = openapi::ErrorBody),
        (status = 403, description = "Not a loopback client and no token configured", body = openapi::ErrorBody)))]
#[allow(dead_code, reason = "documents an alias route")]
fn put_consumption_doc() {}

/// `PUT /api/v1/admin/faults` `{"name": "stuck-output", "active": true}`: switches an emulator
/// fault (emulated daemons only).
#[utoipa::path(put, path = "/api/v1/admin/faults", tag = "config",
    request_body = openapi::FaultRequest,
    responses(
        (status = 200, description = "The faults active now", body = openapi::ActiveFaults),
        (status = 400, description = "Unknown fault", body = openapi::ErrorBody),
        (status = 401, description = "The admin token is missing or wrong", body = openapi::ErrorBody),
        (status = 403, description = "Not a loopback client and no token configured", body = openapi::ErrorBody),
        (status = 409, description = "The chip is not emulated", body = openapi::ErrorBody)))]
async fn set_fault(
    State(service): State<Service>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = caller(&service, &headers, peer);
    require_admin(&service, caller)?;
    let map = request::object(&body).map_err(ApiError::bad_request)?;
    let name = match map.get("name") {
        Some(serde_json::Value::String(s)) => s.clone(),
        _ => {
            return Err(ApiError::bad_request(
                "field `name` is required: a fault name",
            ));
        }
    };
    let active = request::boolean(&map, "active").map_err(ApiError::bad_request)?;
    let active = service.set_fault(caller, &name, active)?;
    Ok(Json(json!({ "active": active })).into_response())
}

/// Most values one `POST /api/v1/data` returns (the Go API's limit).
pub const MAX_VALUES: i64 = 100_000;

/// Fortuna answers up to this size are generated on the async thread itself (64 KiB is about
/// 20 µs of AES-CTR at 3 GB/s, within what a task may take between awaits).
const INLINE_FORTUNA_BYTES: u64 = 64 * 1024;

/// `POST /api/v1/data` `{"format", "limit", "offset", "source"}`: exactly `limit` values
/// (big-endian; a bare JSON array, or raw bytes for `binary`), read after skipping `offset`
/// values. TRNG bytes are consumed durably before the answer leaves; when too few are queued
/// the answer is a 404 saying how many values are available. A trng request of more bytes
/// than the client's whole token bucket (`api.trng_burst_bytes`) is a 400: no wait would let
/// it pass. Unknown fields are ignored.
#[utoipa::path(post, path = "/api/v1/data", tag = "data",
    request_body = openapi::DataRequest,
    responses(
        (status = 200, description = "Exactly `limit` values: a JSON array of integers, or raw bytes for `binary`",
            content((Vec<i64> = "application/json"), (Vec<u8> = "application/octet-stream"))),
        (status = 400, description = "A field is missing or invalid, or a trng request needs more bytes than api.trng_burst_bytes", body = openapi::ErrorBody),
        (status = 404, description = "The TRNG queue holds too few bytes; says how many values are available", body = openapi::ErrorBody),
        (status = 429, description = "Per-client trng rate limit", body = openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the bucket holds enough"))),
        (status = 503, description = "Fortuna is not seeded yet", body = openapi::ErrorBody)))]
async fn data(
    State(service): State<Service>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(buckets): axum::Extension<std::sync::Arc<guard::Buckets>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    use lokey::format::{FORMAT_NAMES, Format};
    let map = request::object(&body).map_err(ApiError::bad_request)?;
    let names: Vec<&str> = FORMAT_NAMES.split(", ").collect();
    let format: Format = request::choice(&map, "format", &names)
        .map_err(ApiError::bad_request)?
        .parse()
        .map_err(|e: lokey::format::UnknownFormat| ApiError::bad_request(e.to_string()))?;
    let limit =
        request::integer(&map, "limit", 1, MAX_VALUES, None).map_err(ApiError::bad_request)?;
    let offset = request::integer(&map, "offset", 0, i64::MAX / 8, Some(0))
        .map_err(ApiError::bad_request)?;
    let source =
        request::choice(&map, "source", &["trng", "fortuna"]).map_err(ApiError::bad_request)?;
    let width = format.width() as u64;
    let n = limit as u64 * width;
    let skip = offset as u64 * width;
    let bytes = if source == "trng" {
        let short = |available: u64| ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "Not enough data available: {limit} {format} values requested, {} available \
                 from trng; ask for fewer, retry later, or use source fortuna",
                available / width
            ),
        };
        // Too few queued (404), more than the whole bucket (400), the bucket short now (429):
        // checked in this order before a token is taken.
        if let Err(ServiceError::Insufficient { available, .. }) =
            service.trng_available(skip.saturating_add(n))
        {
            return Err(short(available.saturating_sub(skip)));
        }
        if let Err(refused) = buckets.charge_trng(&service, peer.ip(), n) {
            return Ok(*refused);
        }
        let task_service = service.clone();
        let taken = tokio::task::spawn_blocking(move || task_service.trng_bytes(skip, n as usize))
            .await
            .map_err(|e| ServiceError::Internal(format!("trng task: {e}")))
            .and_then(|r| r);
        match taken {
            Ok(bytes) => bytes,
            Err(e) => {
                // A failed request does not use up the client's trng budget.
                buckets.refund_trng(&service, peer.ip(), n);
                return Err(match e {
                    // Other clients drained the queue meanwhile.
                    ServiceError::Insufficient { available, .. } => short(available),
                    other => other.into(),
                });
            }
        }
    } else if n <= INLINE_FORTUNA_BYTES {
        // Tens of microseconds of AES: cheaper here than a hop to a blocking thread (and each
        // extra blocking thread costs memory).
        service.fortuna_bytes(skip, n as usize)?
    } else {
        let service = service.clone();
        tokio::task::spawn_blocking(move || service.fortuna_bytes(skip, n as usize))
            .await
            .map_err(|e| ServiceError::Internal(format!("fortuna task: {e}")))??
    };
    service
        .request_metrics()
        .served(source, format.name(), bytes.len() as u64);
    if format == Format::Binary {
        return Ok((
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=random.bin",
                ),
            ],
            bytes,
        )
            .into_response());
    }
    let mut out = Vec::new();
    format.write_json(&bytes, &mut out);
    Ok((
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        out,
    )
        .into_response())
}

/// Serves `router` on `listener` until shutdown begins, then lets in-flight requests finish
/// (see [`conn`] for the connection limits and timeouts).
///
/// # Errors
///
/// I/O errors of the listener.
pub async fn serve(
    listener: TcpListener,
    service: Service,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let app = router(service.clone());
    conn::serve(listener, app, &service, shutdown).await
}

/// `GET /api/v1/health`: 200 when ok, 503 when degraded (the Go project always said 200).
#[utoipa::path(get, path = "/api/v1/health", tag = "status",
    responses(
        (status = 200, description = "Every component is healthy", body = crate::service::Health),
        (status = 503, description = "Degraded: `details` says which component fails", body = crate::service::Health)))]
async fn health(State(service): State<Service>) -> Response {
    let health = service.health();
    let code = if health.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(health)).into_response()
}

/// `GET /api/v1/status`.
#[utoipa::path(get, path = "/api/v1/status", tag = "status",
    responses((status = 200, description = "The Go API's sections plus sources, kernel, Fortuna and usage", body = crate::service::Status)))]
async fn status(State(service): State<Service>) -> Response {
    Json(service.status()).into_response()
}

/// `GET /metrics`: the Prometheus text (also at `/api/v1/metrics`).
// Served by the closure in `router`; this function only carries the description.
#[utoipa::path(get, path = "/metrics", tag = "status",
    responses((status = 200, description = "Prometheus (OpenMetrics) text", body = String, content_type = "application/openmetrics-text")))]
#[allow(dead_code, reason = "documents the metrics route")]
fn metrics_doc() {}

/// `GET /api/v1/metrics`: the same as `GET /metrics`.
// Served by the closure in `router`; this function only carries the description.
#[utoipa::path(get, path = "/api/v1/metrics", tag = "status",
    responses((status = 200, description = "Prometheus (OpenMetrics) text, as /metrics", body = String, content_type = "application/openmetrics-text")))]
#[allow(dead_code, reason = "documents the metrics route")]
fn api_metrics_doc() {}

/// Gives every error answer that is not JSON yet (axum's own: 405 without a body, 413 and
/// other extractor rejections in plain text, Swagger UI's 404) the `{"error": "…"}` body of
/// all the others, naming the problem. Status and headers (`Allow`, `Retry-After`) stay.
async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Rejections are short texts; a longer body is not read.
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = parts
                .headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .replace(',', ", ");
            format!("method {method} is not allowed on {path}; allowed: {allowed}")
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("the request body is larger than {MAX_BODY_BYTES} bytes, the most accepted")
        }
        StatusCode::NOT_FOUND => format!("no such endpoint: {path}"),
        _ if !text.is_empty() => text,
        _ => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    let body = serde_json::to_vec(&json!({ "error": message })).unwrap_or_default();
    Response::from_parts(parts, axum::body::Body::from(body))
}

async fn not_found(uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": format!("no such endpoint: {}", uri.path()) })),
    )
        .into_response()
}
