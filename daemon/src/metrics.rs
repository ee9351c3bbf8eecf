//! Prometheus metrics, read from the service at every scrape so they are always current (the
//! Go project's gauges changed only when someone called `/api/v1/status`).
//!
//! The Go project's eleven un-prefixed gauges keep their names (`trng_queue_current`, …,
//! `database_size_bytes`); everything new is prefixed `lokey_`. Counters end in `_total`.

use std::fmt::Write as _;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::service::{QueueStatus, Service};

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of a request: `[("route", "/api/v1/data"), ("method", "POST"), ("code", "2xx")]`.
pub type RequestLabels = [(&'static str, String); 3];
/// Labels of served bytes: `[("source", "trng"), ("format", "uint32")]`.
pub type ServedLabels = [(&'static str, String); 2];

type Histograms = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// Metrics counted as requests happen (the rest are read from the service at scrape time).
#[derive(Debug)]
pub struct RequestMetrics {
    latency: Histograms,
    served: Family<ServedLabels, Counter>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        fn buckets() -> Histogram {
            // 100 µs to ~3 s, doubling.
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        }
        RequestMetrics {
            latency: Family::new_with_constructor(buckets as fn() -> Histogram),
            served: Family::default(),
        }
    }
}

impl RequestMetrics {
    /// Records one answered request.
    pub fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let class = format!("{}xx", status / 100);
        self.latency
            .get_or_create(&[
                ("route", route.to_string()),
                ("method", method.to_string()),
                ("code", class),
            ])
            .observe(seconds);
    }

    /// Counts `bytes` served from `source` in `format` (`binary`, `uint32`, `stream`, …).
    pub fn served(&self, source: &str, format: &str, bytes: u64) {
        self.served
            .get_or_create(&[
                ("source", source.to_string()),
                ("format", format.to_string()),
            ])
            .inc_by(bytes);
    }
}

/// A registry with the service's collector and its request metrics.
pub fn registry(service: Service) -> Registry {
    let mut registry = Registry::default();
    let requests = service.request_metrics();
    registry.register(
        "lokey_http_request_duration_seconds",
        "REST request latency until the answer starts, by route, method and status class",
        requests.latency.clone(),
    );
    registry.register(
        "lokey_served_bytes",
        "Random bytes served, by source and format",
        requests.served.clone(),
    );
    registry.register_collector(Box::new(StatusCollector(service)));
    registry
}

/// The registry's metrics in the OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        // Encoding into a String only fails on a formatting bug; say so in the output.
        let _ = writeln!(out, "# encoding failed: {e}");
    }
    out
}

#[derive(Debug)]
struct StatusCollector(Service);

type Labels<'a> = Vec<(&'static str, &'a str)>;

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> std::fmt::Result {
    let g = ConstGauge::new(value);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

fn labelled_gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels<'_>, f64)],
) -> std::fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, ConstGauge::new(0.0).metric_type())?;
    for (labels, value) in rows {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn labelled_counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels<'_>, u64)],
) -> std::fmt::Result {
    let mut family =
        enc.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for (labels, value) in rows {
        ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let c = ConstCounter::new(value);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

/// The upstream feeder's metrics (`[upstream]`), labelled with the device's URL.
fn upstream_metrics(
    enc: &mut DescriptorEncoder,
    up: &crate::upstream::UpstreamReport,
) -> std::fmt::Result {
    let labels = || vec![("url", up.url.as_str())];
    labelled_gauge(
        enc,
        "lokey_upstream_ok",
        "1 when the upstream feeder's last round fed the kernel",
        &[(labels(), f64::from(u8::from(up.ok())))],
    )?;
    for (name, help, value) in [
        (
            "lokey_upstream_fetches",
            "Upstream rounds that fed the kernel",
            up.fetches,
        ),
        (
            "lokey_upstream_failures",
            "Upstream rounds that failed (device down, wrong pin, HTTP or kernel error)",
            up.failures,
        ),
        (
            "lokey_upstream_mixed_bytes",
            "Bytes from the upstream device given to the kernel pool",
            up.bytes_mixed,
        ),
        (
            "lokey_upstream_credited_bytes",
            "Of those, bytes given with RNDADDENTROPY and a credit",
            up.bytes_credited,
        ),
        (
            "lokey_upstream_credited_bits",
            "Bits credited for upstream bytes",
            up.bits_credited,
        ),
    ] {
        labelled_counter(enc, name, help, &[(labels(), value)])?;
    }
    if let Some(ago) = up.last_success_secs_ago {
        labelled_gauge(
            enc,
            "lokey_upstream_last_success_age_seconds",
            "Seconds since the upstream feeder last fed the kernel",
            &[(labels(), ago as f64)],
        )?;
    }
    Ok(())
}

/// The REST API's TLS (`api.tls`): handshakes by kind, the chip's signatures for them,
/// certificate reloads.
fn tls_metrics(enc: &mut DescriptorEncoder, tls: &crate::tls::TlsReport) -> std::fmt::Result {
    labelled_counter(
        enc,
        "lokey_tls_handshakes",
        "TLS handshakes: full (one chip signature in chip mode), resumed (none), failed, and \
         shed (refused because the chip's queue was full)",
        &[
            (vec![("kind", "full")], tls.full_handshakes),
            (vec![("kind", "resumed")], tls.resumed_handshakes),
            (vec![("kind", "failed")], tls.failed_handshakes),
            (vec![("kind", "shed")], tls.shed_handshakes),
        ],
    )?;
    counter(
        enc,
        "lokey_tls_chip_signatures",
        "Signatures the chip made for TLS handshakes",
        tls.chip_signatures,
    )?;
    gauge(
        enc,
        "lokey_tls_signature_seconds_mean",
        "Mean time of a handshake's chip signature, queueing included",
        tls.sign_seconds_mean,
    )?;
    labelled_counter(
        enc,
        "lokey_tls_reloads",
        "Certificates installed again (SIGHUP, a new key), and reloads that failed",
        &[
            (vec![("result", "ok")], tls.reloads),
            (vec![("result", "failed")], tls.reload_failures),
        ],
    )
}

fn queue_gauges(enc: &mut DescriptorEncoder, prefix: &str, q: &QueueStatus) -> std::fmt::Result {
    let rows = [
        (
            "queue_current",
            "Items in the queue",
            q.queue_current as f64,
        ),
        (
            "queue_capacity",
            "Capacity of the queue in items",
            q.queue_capacity as f64,
        ),
        (
            "queue_percentage",
            "Queue fill in percent",
            q.queue_percentage,
        ),
        (
            "consumed",
            "Items consumed by clients",
            q.consumed_count as f64,
        ),
        (
            "unconsumed",
            "Items not yet consumed",
            q.unconsumed_count as f64,
        ),
    ];
    for (name, help, value) in rows {
        gauge(enc, &format!("{prefix}_{name}"), help, value)?;
    }
    Ok(())
}

/// Per source: health-state changes, where its healthy bytes went, and its kernel credit.
fn source_flow(
    enc: &mut DescriptorEncoder,
    sources: &[crate::service::SourceReport],
) -> std::fmt::Result {
    let mut transitions = Vec::new();
    let mut routed = Vec::new();
    for s in sources {
        for t in &s.transitions {
            transitions.push((
                vec![("source", s.name.as_str()), ("from", t.from), ("to", t.to)],
                t.count,
            ));
        }
        for (sink, n) in &s.routed_to {
            routed.push((
                vec![("source", s.name.as_str()), ("sink", sink.as_str())],
                *n,
            ));
        }
    }
    labelled_counter(
        enc,
        "lokey_source_transitions",
        "Health-state changes of the source, by the state before and after",
        &transitions,
    )?;
    labelled_counter(
        enc,
        "lokey_source_routed_bytes",
        "Healthy bytes of the source given to each sink (kernel, fortuna, trng-queue)",
        &routed,
    )?;
    let credited: Vec<_> = sources
        .iter()
        .map(|s| (vec![("source", s.name.as_str())], s.credited_bits))
        .collect();
    labelled_counter(
        enc,
        "lokey_source_credited_bits",
        "Bits credited to the kernel for the source (RNDADDENTROPY)",
        &credited,
    )?;
    let credit: Vec<_> = sources
        .iter()
        .map(|s| {
            (
                vec![("source", s.name.as_str())],
                f64::from(s.credit_bits_per_byte),
            )
        })
        .collect();
    labelled_gauge(
        enc,
        "lokey_source_credit_bits_per_byte",
        "Bits per byte the source is credited now (0: never credited)",
        &credit,
    )
}

impl Collector for StatusCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let status = self.0.status();
        let health = self.0.health();

        // The Go project's gauges, same names.
        queue_gauges(&mut enc, "trng", &status.trng)?;
        queue_gauges(&mut enc, "fortuna", &status.fortuna)?;
        gauge(
            &mut enc,
            "database_size_bytes",
            "Size of the store on disk",
            status.database.size_bytes as f64,
        )?;

        gauge(
            &mut enc,
            "lokey_up",
            "1 when every component is healthy",
            f64::from(u8::from(health.is_ok())),
        )?;
        let components = [
            ("controller", health.details.controller),
            ("fortuna", health.details.fortuna),
            ("database", health.details.database),
            ("kernel", health.details.kernel),
            ("beacon", health.details.beacon),
        ];
        let rows: Vec<_> = components
            .iter()
            .map(|(c, ok)| (vec![("component", *c)], f64::from(u8::from(*ok))))
            .collect();
        labelled_gauge(
            &mut enc,
            "lokey_component_healthy",
            "1 when the component is healthy",
            &rows,
        )?;

        // Sources and their health tests.
        let sources = &status.sources;
        let states = ["starting_up", "healthy", "quarantined", "retrying"];
        let mut state_rows = Vec::new();
        for s in sources {
            for state in states {
                let on = f64::from(u8::from(s.state == state));
                state_rows.push((vec![("source", s.name.as_str()), ("state", state)], on));
            }
        }
        labelled_gauge(
            &mut enc,
            "lokey_source_state",
            "1 for the source's current health state",
            &state_rows,
        )?;
        let per_source = |f: &dyn Fn(&crate::service::SourceReport) -> u64| {
            sources
                .iter()
                .map(|s| (vec![("source", s.name.as_str())], f(s)))
                .collect::<Vec<_>>()
        };
        labelled_counter(
            &mut enc,
            "lokey_source_blocks_read",
            "Blocks read from the source",
            &per_source(&|s| s.blocks_read),
        )?;
        labelled_counter(
            &mut enc,
            "lokey_source_bytes_routed",
            "Healthy bytes given to the kernel, Fortuna or the queue",
            &per_source(&|s| s.bytes_routed),
        )?;
        labelled_counter(
            &mut enc,
            "lokey_source_read_errors",
            "Failed reads",
            &per_source(&|s| s.read_errors),
        )?;
        labelled_counter(
            &mut enc,
            "lokey_health_quarantines",
            "Times the source was quarantined",
            &per_source(&|s| s.health.quarantines),
        )?;
        let mut verdicts = Vec::new();
        for s in sources {
            let h = &s.health;
            for (verdict, n) in [
                ("passed", h.blocks_passed),
                ("startup", h.blocks_startup),
                ("discarded", h.blocks_discarded),
                ("quarantined", h.blocks_quarantined),
            ] {
                verdicts.push((vec![("source", s.name.as_str()), ("verdict", verdict)], n));
            }
        }
        labelled_counter(
            &mut enc,
            "lokey_health_blocks",
            "Blocks by health-test verdict",
            &verdicts,
        )?;
        let mut failures = Vec::new();
        for s in sources {
            for (key, n) in &s.health.failures {
                let (test, tier) = key.split_once('.').unwrap_or((key.as_str(), ""));
                failures.push((
                    vec![("source", s.name.as_str()), ("test", test), ("tier", tier)],
                    *n,
                ));
            }
        }
        labelled_counter(
            &mut enc,
            "lokey_health_failures",
            "Health-test failures by test and tier",
            &failures,
        )?;

        source_flow(&mut enc, sources)?;

        // Kernel feeding.
        let k = &status.kernel;
        gauge(
            &mut enc,
            "lokey_kernel_crng_initialized",
            "1 when the kernel CRNG is initialised",
            f64::from(u8::from(k.crng_initialized)),
        )?;
        if let Some(bits) = k.entropy_avail {
            gauge(
                &mut enc,
                "lokey_kernel_entropy_avail_bits",
                "The kernel's entropy estimate (RNDGETENTCNT)",
                f64::from(bits),
            )?;
        }
        counter(
            &mut enc,
            "lokey_kernel_credited_bits",
            "Bits credited with RNDADDENTROPY",
            k.credited_bits,
        )?;
        counter(
            &mut enc,
            "lokey_kernel_credit_calls",
            "RNDADDENTROPY calls",
            k.credit_calls,
        )?;
        counter(
            &mut enc,
            "lokey_kernel_mixed_bytes",
            "Bytes mixed into the kernel pool",
            k.mixed_bytes,
        )?;
        counter(
            &mut enc,
            "lokey_kernel_errors",
            "Failed kernel feeder calls",
            k.errors,
        )?;
        gauge(
            &mut enc,
            "lokey_kernel_feeder_failing",
            "1 when the last kernel feeder call failed",
            f64::from(u8::from(k.failing)),
        )?;

        if let Some(up) = &status.upstream {
            upstream_metrics(&mut enc, up)?;
        }
        if let Some(tls) = self.0.tls() {
            tls_metrics(&mut enc, &tls.report())?;
        }

        // Fortuna and the TRNG queue beyond the Go gauges.
        let f = &status.fortuna_generator;
        gauge(
            &mut enc,
            "lokey_fortuna_seeded",
            "1 when Fortuna can serve",
            f64::from(u8::from(f.seeded)),
        )?;
        counter(
            &mut enc,
            "lokey_fortuna_reseeds",
            "Fortuna reseeds from its pools",
            f.reseed_count,
        )?;
        gauge(
            &mut enc,
            "lokey_fortuna_pool0_bytes",
            "Bytes waiting in Fortuna's pool 0 (a reseed needs 64)",
            f.pool0_bytes as f64,
        )?;
        if let Some(b) = &status.beacon {
            counter(
                &mut enc,
                "lokey_beacon_pulses",
                "Beacon pulses published since start",
                b.pulses,
            )?;
            counter(
                &mut enc,
                "lokey_beacon_late_pulses",
                "Beacon slots missed or pulses published after their slot ended",
                b.late,
            )?;
            counter(
                &mut enc,
                "lokey_beacon_signatures",
                "Signatures the beacon asked of the chip",
                b.signatures,
            )?;
            gauge(
                &mut enc,
                "lokey_beacon_signing_seconds_sum",
                "Total time the chip took to sign beacon pulses (with _signatures: the mean)",
                b.sign_seconds,
            )?;
            gauge(
                &mut enc,
                "lokey_beacon_signing_seconds_max",
                "Longest time the chip took to sign a beacon pulse",
                b.sign_seconds_max,
            )?;
            gauge(
                &mut enc,
                "lokey_beacon_last_pulse_timestamp_seconds",
                "Time of the newest beacon pulse (0 before the first)",
                b.last_time_ms.unwrap_or(0) as f64 / 1000.0,
            )?;
        }
        counter(
            &mut enc,
            "lokey_trng_dropped_items",
            "TRNG items not stored because the queue was full",
            status.trng.queue_dropped,
        )?;
        if let Some(store) = self.0.store() {
            let q = store.trng().stats();
            gauge(
                &mut enc,
                "lokey_trng_queue_bytes",
                "Bytes in the TRNG queue",
                q.bytes as f64,
            )?;
            counter(
                &mut enc,
                "lokey_trng_served_bytes",
                "TRNG bytes served (consumed)",
                q.consumed_bytes,
            )?;
        }
        Ok(())
    }
}
