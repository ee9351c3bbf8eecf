//! `/metrics` against a real daemon, scraped before and after serving requests, with no
//! `/api/v1/status` call in between (the Go project's gauges moved only after one): the Go
//! seed's gauge names, served bytes by source and format (REST and socket), health-test
//! results, source states, kernel crediting, Fortuna reseeds, queue levels and request
//! latency histograms are all there and move as they should.

mod util;

use std::collections::BTreeMap;
use std::time::Duration;

use lokey::client::Client;
use lokey::proto::DataSource;
use util::Daemon;

/// A scrape: `name{labels}` → value, every sample line.
type Scrape = BTreeMap<String, f64>;

fn scrape(d: &Daemon) -> Scrape {
    let (code, head, body) = d.binary("GET", "/metrics", &[], "");
    assert_eq!(code, 200);
    assert!(head.contains("application/openmetrics-text"), "{head}");
    let text = String::from_utf8(body).unwrap();
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap();
            (key.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// The value of a sample, which must be there.
fn value(s: &Scrape, key: &str) -> f64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("no sample {key} in:\n{}", keys(s)))
}

/// The sum over samples of a family whose labels contain every one of `labels`.
fn sum(s: &Scrape, family: &str, labels: &[&str]) -> f64 {
    s.iter()
        .filter(|(k, _)| {
            k.strip_prefix(family)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
                && labels.iter().all(|l| k.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

fn keys(s: &Scrape) -> String {
    s.keys().cloned().collect::<Vec<_>>().join("\n")
}

fn has_family(s: &Scrape, family: &str) -> bool {
    s.keys()
        .any(|k| k == family || k.starts_with(&format!("{family}{{")))
}

#[test]
fn every_family_is_there_and_moves_without_a_status_call() {
    let d = Daemon::start(&[]);
    util::within(
        Duration::from_secs(60),
        || {
            let s = scrape(&d);
            value(&s, "lokey_fortuna_seeded") == 1.0
                && value(&s, "trng_queue_current") >= 4.0
                && s.get("lokey_source_state{source=\"chip\",state=\"healthy\"}") == Some(&1.0)
        },
        "Fortuna seeded, the chip healthy and 4 trng items queued",
    );
    let before = scrape(&d);

    // The Go seed's eleven gauges, same names, no labels.
    for name in util::GO_GAUGES {
        value(&before, name);
    }
    assert_eq!(value(&before, "trng_queue_capacity"), 100_000.0);
    assert!(value(&before, "database_size_bytes") > 0.0);
    // Every source is in exactly one state.
    for source in ["chip", "hwrng"] {
        assert_eq!(
            sum(
                &before,
                "lokey_source_state",
                &[&format!("source=\"{source}\"")]
            ),
            1.0,
            "{source}"
        );
    }
    assert_eq!(
        value(
            &before,
            "lokey_source_state{source=\"chip\",state=\"healthy\"}"
        ),
        1.0
    );
    for family in [
        "lokey_up",
        "lokey_component_healthy",
        "lokey_health_blocks_total",
        "lokey_health_failures_total",
        "lokey_health_quarantines_total",
        "lokey_source_blocks_read_total",
        "lokey_kernel_crng_initialized",
        "lokey_kernel_credited_bits_total",
        "lokey_kernel_credit_calls_total",
        "lokey_kernel_mixed_bytes_total",
        "lokey_fortuna_reseeds_total",
        "lokey_fortuna_pool0_bytes",
        "lokey_trng_queue_bytes",
        "lokey_trng_served_bytes_total",
        "lokey_http_request_duration_seconds_count",
        "lokey_http_request_duration_seconds_bucket",
    ] {
        assert!(
            has_family(&before, family),
            "{family} missing:\n{}",
            keys(&before)
        );
    }
    // Crediting is off in tests: nothing credited, and the status says the same.
    assert_eq!(value(&before, "lokey_kernel_credited_bits_total"), 0.0);

    // Serve: REST data (fortuna uint32, trng binary), a REST stream, a socket stream.
    let (code, body) = d.request(
        "POST",
        "/api/v1/data",
        &["Content-Type: application/json"],
        r#"{"format":"uint32","limit":10,"source":"fortuna"}"#,
    );
    assert_eq!(code, 200, "{body}");
    let (code, _, bytes) = d.binary(
        "POST",
        "/api/v1/data",
        &["Content-Type: application/json"],
        r#"{"format":"binary","limit":64,"source":"trng"}"#,
    );
    assert_eq!((code, bytes.len()), (200, 64));
    let (code, _, bytes) = d.binary("GET", "/api/v1/random/bytes?n=1000", &[], "");
    assert_eq!((code, bytes.len()), (200, 1000));
    let mut stream = Client::connect(d.socket())
        .unwrap()
        .bytes(DataSource::Fortuna, Some(5000))
        .unwrap();
    let mut buf = Vec::new();
    let mut got = 0;
    while stream.next_chunk(&mut buf).unwrap() {
        got += buf.len();
    }
    assert_eq!(got, 5000);

    let after = scrape(&d);
    let moved = |key: &str| value(&after, key) - before.get(key).copied().unwrap_or(0.0);
    assert_eq!(
        moved("lokey_served_bytes_total{source=\"fortuna\",format=\"uint32\"}"),
        40.0
    );
    assert_eq!(
        moved("lokey_served_bytes_total{source=\"trng\",format=\"binary\"}"),
        64.0
    );
    assert_eq!(
        moved("lokey_served_bytes_total{source=\"fortuna\",format=\"stream\"}"),
        1000.0
    );
    assert_eq!(
        moved("lokey_served_bytes_total{source=\"fortuna\",format=\"socket\"}"),
        5000.0
    );
    // The trng bytes left the queue, and the Go gauges say so at once.
    assert_eq!(moved("lokey_trng_served_bytes_total"), 64.0);
    assert!(moved("trng_consumed") >= 2.0, "{}", moved("trng_consumed"));
    // Request latencies: two data requests and a stream, each in its route's histogram.
    let count = |s: &Scrape, route: &str| {
        sum(
            s,
            "lokey_http_request_duration_seconds_count",
            &[&format!("route=\"{route}\""), "code=\"2xx\""],
        )
    };
    assert_eq!(
        count(&after, "/api/v1/data") - count(&before, "/api/v1/data"),
        2.0
    );
    assert_eq!(
        count(&after, "/api/v1/random/bytes") - count(&before, "/api/v1/random/bytes"),
        1.0
    );
    let inf = sum(
        &after,
        "lokey_http_request_duration_seconds_bucket",
        &["route=\"/api/v1/data\"", "code=\"2xx\"", "le=\"+Inf\""],
    );
    assert_eq!(inf, count(&after, "/api/v1/data"));

    // Harvesting goes on by itself: health-tested blocks and Fortuna reseeds count up.
    let passed = |s: &Scrape| sum(s, "lokey_health_blocks_total", &["verdict=\"passed\""]);
    let reseeds = |s: &Scrape| value(s, "lokey_fortuna_reseeds_total");
    util::within(
        Duration::from_secs(30),
        || {
            let now = scrape(&d);
            passed(&now) > passed(&after) && reseeds(&now) > reseeds(&before)
        },
        "health-tested blocks and Fortuna reseeds count up",
    );
    // The gauges agree with the status document.
    let status = d.status();
    let now = scrape(&d);
    assert_eq!(
        value(&now, "lokey_kernel_credited_bits_total"),
        status["kernel"]["credited_bits"].as_f64().unwrap()
    );
}

/// Request labels come from a fixed set: a scanner trying made-up methods and paths adds no
/// series (each would be kept for the daemon's lifetime), it is counted as `other` and
/// `unmatched`.
#[test]
fn made_up_methods_and_paths_share_one_label() {
    let d = Daemon::start(&[]);
    for i in 0..20 {
        d.raw(&format!("SCAN{i}"), "/api/v1/health", &[], "");
        d.raw("GET", &format!("/scan/{i}"), &[], "");
    }
    let (code, _) = d.get("/api/v1/health");
    assert!(code == 200 || code == 503, "{code}");
    let s = scrape(&d);
    assert!(
        !s.keys().any(|k| k.contains("SCAN") || k.contains("/scan/")),
        "a made-up label became a series:\n{}",
        keys(&s)
    );
    let count = |labels: &[&str]| sum(&s, "lokey_http_request_duration_seconds_count", labels);
    assert_eq!(count(&["method=\"other\""]), 20.0, "{}", keys(&s));
    assert_eq!(count(&["route=\"unmatched\""]), 20.0, "{}", keys(&s));
    assert!(count(&["method=\"GET\"", "route=\"/api/v1/health\""]) >= 1.0);
}
