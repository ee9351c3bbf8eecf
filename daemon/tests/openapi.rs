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
        "/api/v1/admin/faults",
        "/metrics",
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
