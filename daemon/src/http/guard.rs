//! What keeps the REST API safe by default: a bound on requests in flight, a timeout until the
//! answer starts, CORS only for reading endpoints, and per-client token buckets on the scarce
//! `trng` source (design.md §2 invariant 6): a request that the bucket lacks tokens for now is
//! a 429 with `Retry-After`; one larger than the whole bucket (`api.trng_burst_bytes`) is a
//! 400, since no wait would let it pass. Tokens are taken before the bytes are drawn and given
//! back when the request then fails (a 4xx or 5xx), so only answered requests use up a
//! client's budget. Request bodies are capped by axum's
//! `DefaultBodyLimit` in [`super::router`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::service::Service;

/// Per-client token buckets: each client (IP address) may take `rate` units per second, at
/// most `burst` at once.
#[derive(Debug)]
pub struct Buckets {
    clients: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

/// Clients remembered at most; beyond this, full buckets (idle clients) are forgotten.
const MAX_CLIENTS: usize = 10_000;

impl Default for Buckets {
    fn default() -> Self {
        Buckets {
            clients: Mutex::new(HashMap::new()),
        }
    }
}

impl Buckets {
    /// Takes `n` units for `client` at `now`, or says how long until they are there.
    ///
    /// # Errors
    ///
    /// [`Refused::Wait`] with the time to wait (`Retry-After`), or [`Refused::TooLarge`] when
    /// `n` exceeds `burst`, which no wait can fix; nothing is taken then.
    pub fn take(
        &self,
        client: IpAddr,
        n: u64,
        rate: u64,
        burst: u64,
        now: Instant,
    ) -> Result<(), Refused> {
        let burst = burst.max(1);
        if n > burst {
            return Err(Refused::TooLarge { burst });
        }
        let (rate, burst, n) = (rate.max(1) as f64, burst as f64, n as f64);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= MAX_CLIENTS {
            clients.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = clients.entry(client).or_insert((burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= n {
            *tokens -= n;
            Ok(())
        } else {
            let missing = n - *tokens;
            Err(Refused::Wait(Duration::from_secs_f64(
                (missing / rate).max(0.001),
            )))
        }
    }

    /// Gives `n` units back to `client` (a charged request that then failed), up to `burst`.
    pub fn refund(&self, client: IpAddr, n: u64, burst: u64) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((tokens, _)) = clients.get_mut(&client) {
            *tokens = (*tokens + n as f64).min(burst.max(1) as f64);
        }
    }

    /// Gives back the `n` bytes of a `trng` request from `client` that failed after
    /// [`Buckets::charge_trng`]: only served bytes count against a client's budget.
    pub fn refund_trng(&self, service: &Service, client: IpAddr, n: u64) {
        self.refund(client, n, service.config().api.trng_burst_bytes);
    }

    /// Charges a `trng` request of `n` bytes from `client` to its bucket, with the limits of
    /// `api.trng_bytes_per_second` and `api.trng_burst_bytes`.
    ///
    /// # Errors
    ///
    /// The answer to send instead: a 429 with `Retry-After` when the bucket is short now, a
    /// 400 naming `api.trng_burst_bytes` when `n` exceeds it (no wait would help).
    pub fn charge_trng(
        &self,
        service: &Service,
        client: IpAddr,
        n: u64,
    ) -> Result<(), Box<Response>> {
        let api = service.config().api;
        self.take(
            client,
            n,
            api.trng_bytes_per_second,
            api.trng_burst_bytes,
            Instant::now(),
        )
        .map_err(|refused| Box::new(refused.into_response_for(n)))
    }
}

/// Why [`Buckets::take`] refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refused {
    /// The bucket holds too few units now; they are there after this wait.
    Wait(Duration),
    /// More than the bucket ever holds: the request can never pass.
    TooLarge {
        /// The bucket's size.
        burst: u64,
    },
}

impl Refused {
    /// The answer to a `trng` request of `n` bytes: 429 with `Retry-After`, or 400.
    pub fn into_response_for(self, n: u64) -> Response {
        match self {
            Refused::Wait(retry) => too_many(retry),
            Refused::TooLarge { burst } => too_large(n, burst),
        }
    }
}

/// A 429 answer with `Retry-After` in whole seconds (at least 1).
pub fn too_many(retry: Duration) -> Response {
    let secs = retry.as_secs_f64().ceil().max(1.0) as u64;
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, secs.to_string())],
        axum::Json(json!({
            "error": format!("trng rate limit for this client reached; retry in {secs} s")
        })),
    )
        .into_response()
}

/// The 400 answer for a `trng` request of `n` bytes when `n` exceeds `api.trng_burst_bytes`
/// (for handlers that check this before they charge the bucket).
pub fn oversized_trng(service: &Service, n: u64) -> Option<Response> {
    let burst = service.config().api.trng_burst_bytes.max(1);
    (n > burst).then(|| too_large(n, burst))
}

/// A 400 answer for a `trng` request of `n` bytes, more than the per-client bucket holds.
pub fn too_large(n: u64, burst: u64) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({
            "error": format!(
                "this request needs {n} trng bytes, more than one request may take \
                 (api.trng_burst_bytes = {burst}); ask for fewer values, split the request, \
                 or use source fortuna"
            )
        })),
    )
        .into_response()
}

/// Shared state of the guard middleware.
#[derive(Debug, Clone)]
pub struct Guard {
    service: Service,
    slots: Arc<Semaphore>,
}

impl Guard {
    /// A guard for `service` with its configured limits.
    pub fn new(service: Service) -> Guard {
        let slots = service.config().api.max_concurrent_requests;
        Guard {
            service,
            slots: Arc::new(Semaphore::new(usize::try_from(slots).unwrap_or(256))),
        }
    }
}

/// The middleware: CORS, a slot among `api.max_concurrent_requests`, and the timeout.
pub async fn guard(
    State(guard): State<Guard>,
    ConnectInfo(_peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let config = guard.service.config().api;
    let origin = request.headers().get(header::ORIGIN).cloned();
    let allowed = origin.as_ref().and_then(|o| {
        let o = o.to_str().ok()?;
        let any = config.cors_origins.iter().any(|c| c == "*");
        (any || config.cors_origins.iter().any(|c| c == o)).then(|| {
            if any {
                HeaderValue::from_static("*")
            } else {
                HeaderValue::from_str(o).unwrap_or(HeaderValue::from_static("null"))
            }
        })
    });
    // A browser's preflight: allowed origins may GET and POST, never PUT.
    if request.method() == Method::OPTIONS {
        let mut response = StatusCode::NO_CONTENT.into_response();
        if let Some(origin) = allowed {
            let h = response.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Content-Type, Accept"),
            );
        }
        return response;
    }
    let cors_ok = request.method() != Method::PUT;

    let limit = Duration::from_secs(config.request_timeout_secs);
    // Unmatched paths share one label, so that scanners cannot grow the metrics without bound.
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = method_label(request.method());
    let started = Instant::now();
    // The wait for a slot counts against the timeout too: it is time until the answer starts.
    // The semaphore is never closed, so acquiring cannot fail.
    let slots = guard.slots.clone();
    let answer = async move {
        let Ok(_slot) = slots.acquire_owned().await else {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        };
        next.run(request).await
    };
    let mut response = match tokio::time::timeout(limit, answer).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "error": format!(
                    "the request took longer than {} s (api.request_timeout_secs)",
                    limit.as_secs()
                )
            })),
        )
            .into_response(),
    };
    guard.service.request_metrics().observe(
        &route,
        method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    if let (Some(origin), true) = (allowed, cors_ok) {
        response
            .headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    response
}

/// The `method` label of a request: one of the nine standard methods (RFC 9110 §9, PATCH
/// from RFC 5789), or `other`. HTTP allows any token as a method, and each distinct label is
/// a new series, so anything else shares one label as unmatched routes do.
fn method_label(method: &Method) -> &'static str {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    STANDARD
        .into_iter()
        .find(|m| *m == method.as_str())
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_the_burst_then_the_rate() {
        let b = Buckets::default();
        let ip: IpAddr = [127, 0, 0, 1].into();
        let other: IpAddr = [127, 0, 0, 2].into();
        let t0 = Instant::now();
        assert_eq!(b.take(ip, 600, 100, 1000, t0), Ok(()));
        assert_eq!(b.take(ip, 400, 100, 1000, t0), Ok(()));
        // Empty: 50 units take half a second at 100 per second.
        let Err(Refused::Wait(wait)) = b.take(ip, 50, 100, 1000, t0) else {
            panic!("an empty bucket asks to wait");
        };
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        // Another client has its own bucket.
        assert_eq!(b.take(other, 1000, 100, 1000, t0), Ok(()));
        // Half a second later there are 50.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(b.take(ip, 50, 100, 1000, t1), Ok(()));
        assert!(b.take(ip, 1, 100, 1000, t1).is_err());
        // Refill stops at the burst.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!(b.take(ip, 1000, 100, 1000, t2), Ok(()));
        assert!(b.take(ip, 1, 100, 1000, t2).is_err());
    }

    #[test]
    fn a_request_larger_than_the_burst_is_refused_for_good_and_takes_nothing() {
        let b = Buckets::default();
        let ip: IpAddr = [127, 0, 0, 1].into();
        let t0 = Instant::now();
        assert_eq!(
            b.take(ip, 1001, 100, 1000, t0),
            Err(Refused::TooLarge { burst: 1000 })
        );
        // However long the client waits.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(
            b.take(ip, 1001, 100, 1000, later),
            Err(Refused::TooLarge { burst: 1000 })
        );
        // The bucket is still full.
        assert_eq!(b.take(ip, 1000, 100, 1000, later), Ok(()));
        let r = Refused::TooLarge { burst: 1000 }.into_response_for(1001);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn a_refund_gives_tokens_back_up_to_the_burst() {
        let b = Buckets::default();
        let ip: IpAddr = [127, 0, 0, 1].into();
        let t0 = Instant::now();
        assert_eq!(b.take(ip, 800, 1, 1000, t0), Ok(()));
        b.refund(ip, 800, 1000);
        assert_eq!(b.take(ip, 1000, 1, 1000, t0), Ok(()));
        b.refund(ip, 5000, 1000);
        assert_eq!(b.take(ip, 1000, 1, 1000, t0), Ok(()));
        assert!(b.take(ip, 1, 1, 1000, t0).is_err());
    }

    #[test]
    fn too_many_says_when_to_retry() {
        let r = too_many(Duration::from_millis(1200));
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }
}
