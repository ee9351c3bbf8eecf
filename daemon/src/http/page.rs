//! The status page at `/`: plain HTML, CSS and JavaScript compiled into the binary (no CDN, no
//! build step, nothing fetched at run time). The script polls `/api/v1/status` and
//! `/api/v1/health`; everything it shows comes from those two documents.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX: &str = include_str!("page/index.html");
const CSS: &str = include_str!("page/status.css");
const JS: &str = include_str!("page/status.js");
const ICON: &str = include_str!("page/favicon.svg");

/// Only the page's own files and API: no inline script, no other origin.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
                      frame-ancestors 'none'";

fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

/// `GET /`.
#[utoipa::path(get, path = "/", tag = "status",
    responses((status = 200, description = "The status page", body = String, content_type = "text/html")))]
pub async fn index() -> impl IntoResponse {
    file("text/html; charset=utf-8", INDEX)
}

/// `GET /status.css`.
pub async fn css() -> impl IntoResponse {
    file("text/css; charset=utf-8", CSS)
}

/// `GET /status.js`.
pub async fn js() -> impl IntoResponse {
    file("text/javascript; charset=utf-8", JS)
}

/// `GET /favicon.svg`.
pub async fn icon() -> impl IntoResponse {
    file("image/svg+xml", ICON)
}
