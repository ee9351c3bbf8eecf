//! The OpenAPI spec: a snapshot in the repository so that changes show in review, served by the
//! daemon with Swagger UI from the binary (no network).
//!
//! After an intended change: `UPDATE_OPENAPI=1 cargo test -p lokeyd --test openapi`.

mod util;

use util::Daemon;

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

#[test]
fn the_spec_matches_its_snapshot() {
    let spec = lokeyd::http::openapi_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(SNAPSHOT, &spec).unwrap();
    }
    let saved = std::fs::read_to_string(SNAPSHOT).unwrap_or_default();
    assert!(
        saved == spec,
        "daemon/openapi.json is out of date: review the API change, then run \
         UPDATE_OPENAPI=1 cargo test -p lokeyd --test openapi"
    );
    let v: serde_json::Value = serde_json::from_str(&spec).unwrap();
    assert!(
        v["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        v["openapi"]
    );
    let paths = v["paths"].as_object().unwrap();
    for route in [
        "/api/v1/data",
        "/api/v1/health",
        "/api/v1/status",
        "/api/v1/config/queue",
        "/api/v1/config/consume",
        "/api/v1/config/consumption",
        "/api/v1/admin/faults",
        "/metrics",
        "/api/v1/metrics",
        "/api/v1/random/bytes",
        "/api/v1/random/integers",
        "/api/v1/random/decimal-fractions",
        "/api/v1/random/gaussians",
        "/api/v1/random/strings",
        "/api/v1/random/uuids",
        "/api/v1/random/shuffle",
        "/api/v1/random/sample",
    ] {
        assert!(paths.contains_key(route), "{route} is not in the spec");
    }
    // The aliases take what their originals take.
    for method in ["get", "put"] {
        assert_eq!(
            paths["/api/v1/config/consumption"][method]["requestBody"],
            paths["/api/v1/config/consume"][method]["requestBody"],
            "{method}"
        );
    }
}

#[test]
fn the_spec_declares_the_statuses_the_handlers_answer() {
    let v: serde_json::Value = serde_json::from_str(&lokeyd::http::openapi_json()).unwrap();
    let paths = v["paths"].as_object().unwrap();
    // Every route that draws from trng: 400 (also a request larger than the whole bucket),
    // 404 (the queue holds too few bytes: ServiceError::Insufficient), 429 with Retry-After,
    // 503 (Fortuna not seeded).
    for (route, method) in [
        ("/api/v1/data", "post"),
        ("/api/v1/random/bytes", "get"),
        ("/api/v1/random/integers", "get"),
        ("/api/v1/random/decimal-fractions", "get"),
        ("/api/v1/random/gaussians", "get"),
        ("/api/v1/random/strings", "get"),
        ("/api/v1/random/uuids", "get"),
        ("/api/v1/random/shuffle", "post"),
        ("/api/v1/random/sample", "post"),
    ] {
        let responses = &paths[route][method]["responses"];
        for code in ["200", "400", "404", "429", "503"] {
            assert!(responses[code].is_object(), "{method} {route}: no {code}");
        }
        assert!(
            responses["404"]["description"]
                .as_str()
                .unwrap()
                .contains("too few"),
            "{route}"
        );
        assert!(
            !responses["503"]["description"]
                .as_str()
                .unwrap()
                .contains("trng"),
            "{route}: a short trng queue is a 404"
        );
        assert!(
            responses["429"]["headers"]["Retry-After"].is_object(),
            "{route}"
        );
    }
    // Health: 503 when degraded, with the same body as the 200.
    let health = &paths["/api/v1/health"]["get"]["responses"];
    assert_eq!(health["503"]["content"], health["200"]["content"]);
}

#[test]
fn swagger_ui_and_the_spec_are_served_from_the_binary() {
    let d = Daemon::start(&[]);
    let (code, body) = d.get("/swagger/doc.json");
    assert_eq!(code, 200);
    let served: serde_json::Value = serde_json::from_str(&body).unwrap();
    let built: serde_json::Value = serde_json::from_str(&lokeyd::http::openapi_json()).unwrap();
    assert_eq!(served, built);
    let (code, page) = d.get("/swagger/index.html");
    assert_eq!(code, 200, "{page}");
    assert!(page.to_lowercase().contains("swagger"), "{page}");
    // Everything the page loads comes from the daemon itself.
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "{page}"
    );
    let (code, init) = d.get("/swagger/swagger-initializer.js");
    assert_eq!(code, 200);
    assert!(init.contains("/swagger/doc.json"), "{init}");
}
