//! The REST part of the seed corpus (`tests/corpus/rest/`, one request a file: `METHOD PATH`
//! on the first line, the body after it) through the real router, with a Fortuna seeded from a
//! seed file and no store. Each file has its expected status here; every error is JSON naming
//! the problem. `daemon/tests/hostile.rs` explores around these with property tests.

mod util;

use std::path::Path;

use lokey::config::{Config, HostEnv};
use lokey::fortuna::{Fortuna, SharedFortuna};
use lokeyd::service::{Parts, Service};

fn app() -> axum::Router {
    let mut config = Config::defaults(&HostEnv::default());
    config.daemon.data_dir = std::env::temp_dir().join("lokey-corpus-none");
    let mut fortuna = Fortuna::new();
    fortuna.update_seed_file(&[0x5A; 64]).unwrap();
    let parts = Parts {
        fortuna: Some(SharedFortuna::new(fortuna)),
        ..Parts::default()
    };
    lokeyd::http::router(Service::new(config, parts))
}

fn call(method: &str, path: &str, body: &str) -> (u16, Vec<u8>) {
    let method = axum::http::Method::from_bytes(method.as_bytes()).unwrap();
    let (status, _, body) = util::oneshot(app(), method, path, body.as_bytes().to_vec());
    (status, body)
}

fn expected(name: &str) -> u16 {
    match name {
        "data-fortuna-int32.http"
        | "data-binary.http"
        | "shuffle.http"
        | "integers-extremes.http"
        | "bytes-hex.http" => 200,
        // Changes from a loopback client without an admin token configured are allowed; with
        // no store, a stored setting cannot be written.
        "queue-put.http" => 503,
        "unknown-route.http" => 404,
        "wrong-method.http" => 405,
        "data-limit-zero.http"
        | "data-limit-huge.http"
        | "data-negative-offset.http"
        | "data-format-unknown.http"
        | "data-not-json.http"
        | "data-array.http"
        | "queue-put-string.http"
        | "consume-put-empty.http"
        | "sample-k-too-big.http"
        | "integers-reversed.http"
        | "bytes-zero.http"
        | "strings-empty-charset.http"
        | "fractions-too-many-places.http"
        | "gaussians-nan.http"
        | "uuids-too-many.http"
        | "percent-garbage.http" => 400,
        // The emulator's fault switch exists only in an emulated daemon.
        "fault-unknown.http" => 409,
        other => panic!("{other}: a corpus file without an expectation"),
    }
}

#[test]
fn rest_requests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/rest");
    let mut seen = 0;
    let mut wrong = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let (line, body) = text.split_once('\n').unwrap_or((&text, ""));
        let (method, target) = line.split_once(' ').unwrap();
        let (status, answer) = call(method, target, body);
        let answer = String::from_utf8_lossy(&answer).into_owned();
        if status != expected(&name) {
            wrong.push(format!(
                "{name}: {status} (expected {}): {answer}",
                expected(&name)
            ));
        }
        if status >= 400 {
            let v: serde_json::Value = serde_json::from_str(&answer)
                .unwrap_or_else(|e| panic!("{name}: error body is not JSON ({e}): {answer}"));
            assert!(
                v["error"].as_str().is_some_and(|m| !m.is_empty()),
                "{name}: {v}"
            );
        }
        if name == "data-fortuna-int32.http" {
            // The Go README's own example, unknown `chunk_size` and all: 10 int32 values.
            let values: Vec<i64> = serde_json::from_str(&answer).unwrap();
            assert_eq!(values.len(), 10, "{answer}");
            assert!(values.iter().all(|v| i32::try_from(*v).is_ok()), "{answer}");
        }
        seen += 1;
    }
    assert!(
        wrong.is_empty(),
        "unexpected answers:\n{}",
        wrong.join("\n")
    );
    assert!(seen >= 20, "the corpus is missing ({seen} files)");
}
