//! Hostile input to the REST API, as property tests through the real router (no network):
//! whatever the body, path or method, the answer is a 2xx, a 4xx or a 503 (not seeded, no
//! store) with a JSON error — never another 5xx, never a panic. axum's own refusals (405 for
//! a wrong method, 413 for a body over the limit) are JSON errors too.

mod util;

use axum::http::Method;
use lokey::config::{Config, HostEnv};
use lokeyd::service::{Parts, Service};
use proptest::prelude::*;

fn app() -> axum::Router {
    let mut config = Config::defaults(&HostEnv::default());
    config.daemon.data_dir = std::env::temp_dir().join("lokey-hostile-none");
    lokeyd::http::router(Service::new(config, Parts::default()))
}

/// Property-test cases: `PROPTEST_CASES` when set (the long run, `scripts/fuzz`), else
/// `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn call(method: Method, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    let (status, _, body) = call_with_headers(method, path, body);
    (status, body)
}

/// A request through the router: (status, headers, body).
fn call_with_headers(
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> (u16, axum::http::HeaderMap, Vec<u8>) {
    util::oneshot(app(), method, path, body)
}

fn acceptable(status: u16, body: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(
        status < 500 || status == 503,
        "status {status}: {}",
        String::from_utf8_lossy(body)
    );
    if status >= 400 {
        let v: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| TestCaseError::fail(format!("error body is not JSON: {e}")))?;
        prop_assert!(v["error"].is_string(), "{v}");
    }
    Ok(())
}

/// JSON-ish bodies: objects with the API's field names and values of every type, or noise.
fn bodies() -> impl Strategy<Value = Vec<u8>> {
    let value = prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "[a-z0-9]{0,8}".prop_map(|s| format!("{s:?}")),
        Just("\"trng\"".to_string()),
        Just("\"fortuna\"".to_string()),
        Just("\"uint64\"".to_string()),
        Just("null".to_string()),
        Just("[1,2,3]".to_string()),
        Just("{}".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
    ];
    let field = prop_oneof![
        Just("format"),
        Just("limit"),
        Just("offset"),
        Just("source"),
        Just("consume"),
        Just("trng_queue_size"),
        Just("fortuna_queue_size"),
        Just("items"),
        Just("k"),
        Just("name"),
        Just("active"),
        Just("x"),
    ];
    prop_oneof![
        proptest::collection::vec((field, value), 0..6).prop_map(|pairs| {
            let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
            format!("{{{}}}", inner.join(",")).into_bytes()
        }),
        proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(300)))]

    #[test]
    fn post_and_put_bodies(body in bodies(), route in 0usize..6) {
        let (method, path) = [
            (Method::POST, "/api/v1/data"),
            (Method::PUT, "/api/v1/config/queue"),
            (Method::PUT, "/api/v1/config/consume"),
            (Method::PUT, "/api/v1/admin/faults"),
            (Method::POST, "/api/v1/random/shuffle"),
            (Method::POST, "/api/v1/random/sample"),
        ][route].clone();
        let (status, answer) = call(method, path, body);
        acceptable(status, &answer)?;
    }

    #[test]
    fn query_strings(query in "[a-z=&%0-9.-]{0,40}", route in 0usize..6) {
        let path = [
            "/api/v1/random/bytes",
            "/api/v1/random/integers",
            "/api/v1/random/decimal-fractions",
            "/api/v1/random/gaussians",
            "/api/v1/random/strings",
            "/api/v1/random/uuids",
        ][route];
        let (status, answer) = call(Method::GET, &format!("{path}?{query}"), Vec::new());
        acceptable(status, &answer)?;
    }

    #[test]
    fn paths_and_methods(path in "/[a-z0-9/._-]{0,30}", method in 0usize..5) {
        let method = [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH][method].clone();
        let (status, answer) = call(method, &path, b"{}".to_vec());
        acceptable(status, &answer)?;
    }
}

/// The error message of a JSON error answer.
fn message(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no `error` string: {v}"))
        .to_string()
}

#[test]
fn a_wrong_method_is_a_405_naming_it_and_the_allowed_ones() {
    for (method, path, allowed) in [
        (Method::DELETE, "/api/v1/status", "GET"),
        (Method::POST, "/api/v1/health", "GET"),
        (Method::GET, "/api/v1/data", "POST"),
        (Method::PATCH, "/api/v1/config/queue", "PUT"),
        (Method::PUT, "/api/v1/random/shuffle", "POST"),
    ] {
        let (status, headers, body) = call_with_headers(method.clone(), path, b"{}".to_vec());
        assert_eq!(status, 405, "{method} {path}");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{headers:?}"
        );
        assert!(headers.contains_key("allow"), "{headers:?}");
        let msg = message(&body);
        assert!(
            msg.contains(method.as_str()) && msg.contains(path) && msg.contains(allowed),
            "{method} {path}: {msg}"
        );
    }
}

#[test]
fn a_body_over_the_limit_is_a_413_naming_the_limit() {
    let limit = lokeyd::http::MAX_BODY_BYTES;
    // A JSON document just over the limit.
    let mut big = br#"{"items":["#.to_vec();
    while big.len() <= limit {
        big.extend_from_slice(b"1,");
    }
    big.extend_from_slice(b"1]}");
    for (method, path) in [
        (Method::POST, "/api/v1/data"),
        (Method::POST, "/api/v1/random/shuffle"),
        (Method::PUT, "/api/v1/config/queue"),
    ] {
        let (status, headers, body) = call_with_headers(method.clone(), path, big.clone());
        assert_eq!(status, 413, "{method} {path}");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{headers:?}"
        );
        let msg = message(&body);
        assert!(msg.contains(&limit.to_string()), "{path}: {msg}");
    }
    // At the limit, the body is read (and refused for what it says, not for its size).
    let mut at = br#"{"items":["#.to_vec();
    while at.len() < limit - 4 {
        at.extend_from_slice(b"1,");
    }
    at.truncate(limit - 3);
    at.extend_from_slice(b"1]}");
    assert!(at.len() <= limit);
    let (status, _, body) = call_with_headers(Method::POST, "/api/v1/random/shuffle", at);
    assert_ne!(status, 413, "{}", String::from_utf8_lossy(&body));
}
