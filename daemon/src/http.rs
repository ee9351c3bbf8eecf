//! The REST API (axum). [`router`] builds the application without a server, so tests call it
//! directly; [`serve`] runs it on a listener until shutdown.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;

use crate::service::Service;
use crate::shutdown::Shutdown;

/// The application: every route, with the service as state.
pub fn router(service: Service) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/status", get(status))
        .fallback(not_found)
        .with_state(service)
}

/// Serves `router` on `listener` until shutdown begins, then lets in-flight requests finish.
///
/// # Errors
///
/// I/O errors of the listener.
pub async fn serve(
    listener: TcpListener,
    service: Service,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let wait = shutdown.clone();
    axum::serve(listener, router(service))
        .with_graceful_shutdown(async move { wait.wait().await })
        .await
}

/// `GET /api/v1/health`: 200 when ok, 503 when degraded (the Go project always said 200).
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
async fn status(State(service): State<Service>) -> Response {
    Json(service.status()).into_response()
}

async fn not_found(uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": format!("no such endpoint: {}", uri.path()) })),
    )
        .into_response()
}
