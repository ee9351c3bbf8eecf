//! The service: the one place the daemon's verbs are implemented. The REST API and the Unix
//! socket both call it, so a verb exists once and answers the same on both transports.

mod beacon;
mod draws;
mod tls;

pub use beacon::{IdentityReport, PulseQuery};
pub use draws::DrawTicket;
pub use tls::CsrReport;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use lokey::config::Config;
use lokey::fortuna::{SharedFortuna, Worker};
use lokey::store::Store;

use crate::harvest::SourceStatus;
use crate::pipeline::Pipeline;
use serde::Serialize;

/// Shared state behind every request. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

struct Inner {
    config: RwLock<Config>,
    started: Instant,
    started_at: SystemTime,
    parts: Parts,
    /// Idle Fortuna workers, reused across requests (each keyed from the main generator).
    workers: Mutex<Vec<Worker>>,
    /// Latency and served-bytes metrics.
    requests: Arc<crate::metrics::RequestMetrics>,
    /// Bytes served per minute over the last hour, for the status page's chart.
    last_hour: Mutex<LastHour>,
}

/// Bytes served per source and minute over the last [`LastHour::MINUTES`] minutes, kept in
/// memory (the store keeps hourly totals; this is the finer view since the daemon started).
#[derive(Debug)]
pub struct LastHour {
    /// Per source (`trng`, `fortuna`): a ring of (minute since the epoch, bytes).
    rings: [[(u64, u64); LastHour::MINUTES]; 2],
}

impl Default for LastHour {
    fn default() -> LastHour {
        LastHour {
            rings: [[(0, 0); LastHour::MINUTES]; 2],
        }
    }
}

impl LastHour {
    /// Minutes kept.
    pub const MINUTES: usize = 60;
    /// The sources, in the order of the rings.
    pub const SOURCES: [&'static str; 2] = ["trng", "fortuna"];

    fn ring(&mut self, source: &str) -> Option<&mut [(u64, u64); LastHour::MINUTES]> {
        let i = Self::SOURCES.iter().position(|s| *s == source)?;
        Some(&mut self.rings[i])
    }

    /// Counts `bytes` served from `source` in `minute` (minutes since the Unix epoch).
    pub fn record(&mut self, source: &str, bytes: u64, minute: u64) {
        if let Some(ring) = self.ring(source) {
            let slot = &mut ring[(minute % Self::MINUTES as u64) as usize];
            if slot.0 != minute {
                *slot = (minute, 0);
            }
            slot.1 += bytes;
        }
    }

    /// Bytes per minute of `source` for the hour ending with `minute`, oldest first (zero for
    /// minutes with nothing served, or before the daemon started).
    pub fn series(&mut self, source: &str, minute: u64) -> Vec<u64> {
        let Some(ring) = self.ring(source) else {
            return Vec::new();
        };
        (0..Self::MINUTES as u64)
            .rev()
            .map(|back| {
                let m = minute.saturating_sub(back);
                let (at, bytes) = ring[(m % Self::MINUTES as u64) as usize];
                if at == m && back <= minute { bytes } else { 0 }
            })
            .collect()
    }
}

fn minute_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

/// What a service runs over. Every part is optional, so that tests can build a service from a
/// configuration alone.
#[derive(Default)]
pub struct Parts {
    /// The durable store (queue, settings, counters).
    pub store: Option<Store>,
    /// Why the daemon runs without its store (it could not be opened: a read-only or full
    /// disk), naming the data directory.
    pub store_unavailable: Option<String>,
    /// The entropy pipeline.
    pub pipeline: Option<Arc<Mutex<Pipeline>>>,
    /// The emulator's fault switch, when the chip is emulated.
    pub faults: Option<Arc<dyn FaultSwitch>>,
    /// Keys set by the environment or flags, which stored settings do not override.
    pub pinned: Vec<String>,
    /// The log filter, for `daemon.log_level`.
    pub log: Option<crate::logging::LogHandle>,
    /// Fortuna.
    pub fortuna: Option<SharedFortuna>,
    /// The ATECC608A or its emulator.
    pub chip: Option<crate::pipeline::ChipHandle>,
    /// The beacon, when it runs.
    pub beacon: Option<Arc<crate::beacon::Beacon>>,
    /// The draws it decides.
    pub draws: Option<Arc<crate::draws::DrawBook>>,
    /// Why the beacon is enabled but does not run.
    pub beacon_problem: Option<String>,
    /// The REST API's TLS, when `api.tls` is not `off`.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// The upstream feeder, when `[upstream]` configures one.
    pub upstream: Option<Arc<crate::upstream::Upstream>>,
}

/// Why a request failed; each transport maps it to its own status (proto error code, HTTP
/// status) and sends the message as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// A parameter is invalid; the message names it and what is allowed.
    #[error("{0}")]
    InvalidArgument(String),
    /// Not enough data now, or a component is not ready.
    #[error("{0}")]
    Unavailable(String),
    /// The TRNG queue holds fewer bytes than asked for; nothing was taken.
    #[error("{message}")]
    Insufficient {
        /// What happened and what to do.
        message: String,
        /// Bytes available after the skipped ones.
        available: u64,
    },
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// This daemon cannot do it (e.g. faults without the emulator).
    #[error("{0}")]
    Unsupported(String),
    /// What was asked for does not exist (a beacon pulse or chain).
    #[error("{0}")]
    NotFound(String),
    /// Something failed inside; the log has the details.
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// The protocol's error code for this error.
    pub fn code(&self) -> lokey::proto::ErrorCode {
        use lokey::proto::ErrorCode;
        match self {
            ServiceError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            ServiceError::Unavailable(_) | ServiceError::Insufficient { .. } => {
                ErrorCode::Unavailable
            }
            ServiceError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            ServiceError::Unsupported(_) => ErrorCode::Unsupported,
            ServiceError::NotFound(_) => ErrorCode::NotFound,
            ServiceError::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// Who is asking, as far as permission checks go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A socket client with these credentials (read from the kernel, SO_PEERCRED).
    Local {
        /// Its user id.
        uid: u32,
        /// Its process id.
        pid: Option<i32>,
    },
    /// A REST client that passed the admin check (token, or loopback without a token).
    Admin,
    /// A REST client without admin rights.
    Anonymous,
}

impl Caller {
    /// Whether this caller may change the daemon's configuration: root or the daemon's own
    /// user over the socket, an admin over REST.
    pub fn may_configure(&self) -> bool {
        match self {
            Caller::Local { uid, .. } => *uid == 0 || *uid == nix::unistd::geteuid().as_raw(),
            Caller::Admin => true,
            Caller::Anonymous => false,
        }
    }

    fn require_admin(&self, what: &str) -> Result<(), ServiceError> {
        if self.may_configure() {
            Ok(())
        } else {
            Err(ServiceError::PermissionDenied(format!(
                "{what} needs root or lokeyd's own user (or the admin token over REST)"
            )))
        }
    }
}

/// Switches emulator faults at run time (implemented by the emulator's control handle).
pub trait FaultSwitch: Send + Sync {
    /// Turns the named fault on or off.
    ///
    /// # Errors
    ///
    /// An unknown fault name, with the list of known ones.
    fn set(&self, name: &str, active: bool) -> Result<(), String>;
    /// The faults active now.
    fn active(&self) -> Vec<String>;
}

impl FaultSwitch for lokey::atecc::EmulatorControl {
    fn set(&self, name: &str, active: bool) -> Result<(), String> {
        lokey::atecc::EmulatorControl::set(self, name, active)
    }
    fn active(&self) -> Vec<String> {
        lokey::atecc::EmulatorControl::active(self)
    }
}

/// `GET /api/v1/status` and the socket's `status`: the Go project's fields first, then ours.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Status {
    /// The TRNG queue (raw hardware data).
    pub trng: QueueStatus,
    /// The Fortuna source (generated on demand; queue fields kept for compatibility).
    pub fortuna: QueueStatus,
    /// The store on disk.
    pub database: DatabaseStatus,
    /// The daemon process.
    pub daemon: DaemonStatus,
    /// Every entropy source, its health state and counters.
    pub sources: Vec<SourceReport>,
    /// Feeding the kernel's entropy pool.
    pub kernel: KernelReport,
    /// The Fortuna generator.
    pub fortuna_generator: FortunaReport,
    /// Bytes served since the store was created, and in the current hour, per source.
    pub served: ServedReport,
    /// The chip-signed randomness beacon; absent when it is off (`beacon.enabled = false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beacon: Option<crate::beacon::BeaconReport>,
    /// The upstream feeder; absent when none is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<crate::upstream::UpstreamReport>,
}

/// Bytes served per source.
#[derive(Debug, Clone, Serialize, Default, utoipa::ToSchema)]
pub struct ServedReport {
    /// TRNG bytes served in total.
    pub trng_bytes: u64,
    /// Fortuna bytes served in total.
    pub fortuna_bytes: u64,
    /// Hourly usage over the last 24 hours: `{"trng": [{"hour_start", "bytes", "requests"}]}`.
    pub hourly: std::collections::BTreeMap<&'static str, Vec<HourReport>>,
    /// Bytes served per minute over the last 60 minutes, oldest first, per source (in
    /// memory: minutes before the daemon started count 0).
    pub last_hour: std::collections::BTreeMap<&'static str, Vec<u64>>,
}

/// One hour of usage.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HourReport {
    /// Start of the hour (RFC 3339).
    pub hour_start: String,
    /// Bytes served.
    pub bytes: u64,
    /// Requests served.
    pub requests: u64,
}

/// The Fortuna generator in the status document (no secrets).
#[derive(Debug, Clone, Serialize, Default, utoipa::ToSchema)]
pub struct FortunaReport {
    /// Whether it can serve (seeded from the pools or the seed file).
    pub seeded: bool,
    /// Reseeds from the pools so far.
    pub reseed_count: u64,
    /// Bytes waiting in pool 0 (a reseed needs 64).
    pub pool0_bytes: u64,
    /// Seconds since the last reseed from the pools.
    pub last_reseed_secs_ago: Option<u64>,
    /// The generator's cipher (`fortuna.cipher`): `aes256` or `chacha20`.
    pub cipher: &'static str,
    /// The code computing it on this CPU: `VAES-256`, `AES-NI`, `VAES-512`, `ARMv8 AES`,
    /// `software AES`, or `ChaCha20 NEON`/`AVX2`/`SSE2`/`scalar`.
    pub backend: &'static str,
}

/// One source in the status document.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SourceReport {
    /// Configured name.
    pub name: String,
    /// `atecc608a`, `emulator`, `hwrng` or `device`.
    pub kind: &'static str,
    /// `starting_up`, `healthy`, `quarantined` or `retrying`.
    pub state: &'static str,
    /// Whether it delivers usable data now.
    pub healthy: bool,
    /// The last read error, if the last read failed.
    pub last_error: Option<String>,
    /// Blocks read.
    pub blocks_read: u64,
    /// Bytes routed to the kernel, Fortuna or the queue.
    pub bytes_routed: u64,
    /// Read errors.
    pub read_errors: u64,
    /// Health-test counters.
    pub health: HealthReport,
    /// Byte-value counts (256) of a recent sample set aside for display and discarded.
    pub sample_histogram: Vec<u32>,
    /// Bytes in that sample.
    pub sample_bytes: u64,
    /// Healthy bytes given to each destination: `kernel`, `fortuna`, `trng-queue`.
    pub routed_to: std::collections::BTreeMap<String, u64>,
    /// Bits per byte this source is credited to the kernel now (its own
    /// `credit_bits_per_byte`, else `kernel.bits_per_byte`; 0 when never credited).
    pub credit_bits_per_byte: u8,
    /// Why the source is never credited whatever its setting, when it is not (the emulator,
    /// a /dev/hwrng the kernel credits itself, the kernel feeder off).
    pub credit_note: Option<String>,
    /// Bits credited to the kernel for this source (RNDADDENTROPY).
    pub credited_bits: u64,
    /// Health-state changes so far, each logged once.
    pub transitions: Vec<TransitionReport>,
    /// The claimed min-entropy per byte the health tests' cutoffs come from.
    pub min_entropy: f64,
    /// Those cutoffs (SP 800-90B §4.4), discard and quarantine tier.
    pub cutoffs: CutoffReport,
}

/// A source's health-test cutoffs.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CutoffReport {
    /// Repetition Count Test, discard tier.
    pub rct_discard: u32,
    /// Repetition Count Test, quarantine tier.
    pub rct_quarantine: u32,
    /// Adaptive Proportion Test (window 512), discard tier.
    pub apt_discard: u32,
    /// Adaptive Proportion Test, quarantine tier.
    pub apt_quarantine: u32,
}

/// How often a source went from one health state to another.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TransitionReport {
    /// The state before: `starting_up`, `healthy`, `quarantined` or `retrying`.
    pub from: &'static str,
    /// The state after.
    pub to: &'static str,
    /// Times.
    pub count: u64,
}

/// A source's health-test counters.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HealthReport {
    /// Blocks tested.
    pub blocks_tested: u64,
    /// Blocks that passed.
    pub blocks_passed: u64,
    /// Blocks withheld by start-up tests.
    pub blocks_startup: u64,
    /// Blocks dropped at the discard tier.
    pub blocks_discarded: u64,
    /// Blocks dropped while quarantined.
    pub blocks_quarantined: u64,
    /// Times quarantined.
    pub quarantines: u64,
    /// Failures by test and tier (`repetition_count.discard`, …).
    pub failures: std::collections::BTreeMap<String, u64>,
}

impl From<&SourceStatus> for SourceReport {
    fn from(s: &SourceStatus) -> SourceReport {
        use lokey::health::{TestKind, Tier};
        let h = &s.health;
        let mut failures = std::collections::BTreeMap::new();
        for kind in TestKind::ALL {
            for tier in [Tier::Discard, Tier::Quarantine] {
                failures.insert(
                    format!("{}.{}", kind.as_str(), tier.as_str()),
                    h.failures_of(kind, tier),
                );
            }
        }
        SourceReport {
            name: s.name.clone(),
            kind: s.kind.as_str(),
            state: s.state.as_str(),
            healthy: s.healthy(),
            last_error: s.last_error.clone(),
            blocks_read: s.blocks_read,
            bytes_routed: s.bytes_routed,
            read_errors: s.read_errors,
            sample_histogram: s.histogram.clone(),
            sample_bytes: s.histogram_bytes,
            routed_to: s
                .routed_to
                .iter()
                .map(|(k, v)| ((*k).to_string(), *v))
                .collect(),
            credit_bits_per_byte: s.credit.bits_per_byte,
            credit_note: s.credit.note.clone(),
            credited_bits: s.credit.credited_bits,
            transitions: s
                .transitions
                .iter()
                .map(|(&(from, to), &count)| TransitionReport { from, to, count })
                .collect(),
            min_entropy: s.cutoffs.min_entropy_bits,
            cutoffs: CutoffReport {
                rct_discard: s.cutoffs.rct_discard,
                rct_quarantine: s.cutoffs.rct_quarantine,
                apt_discard: s.cutoffs.apt_discard,
                apt_quarantine: s.cutoffs.apt_quarantine,
            },
            health: HealthReport {
                blocks_tested: h.blocks_tested,
                blocks_passed: h.blocks_passed,
                blocks_startup: h.blocks_startup,
                blocks_discarded: h.blocks_discarded,
                blocks_quarantined: h.blocks_quarantined,
                quarantines: h.quarantines,
                failures,
            },
        }
    }
}

/// The kernel feeder in the status document.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KernelReport {
    /// Whether lokeyd feeds the kernel at all (`--no-credit` turns it off).
    pub enabled: bool,
    /// Whether the kernel's CRNG is initialised.
    pub crng_initialized: bool,
    /// The kernel's credited entropy estimate in bits (RNDGETENTCNT), when readable.
    pub entropy_avail: Option<u32>,
    /// Bits credited (RNDADDENTROPY).
    pub credited_bits: u64,
    /// Bytes passed with credit.
    pub credited_bytes: u64,
    /// RNDADDENTROPY calls.
    pub credit_calls: u64,
    /// Bytes mixed without credit.
    pub mixed_bytes: u64,
    /// Failed calls.
    pub errors: u64,
    /// Whether the last call failed.
    pub failing: bool,
    /// The last failure (e.g. EPERM: CAP_SYS_ADMIN missing).
    pub last_error: Option<String>,
    /// Seconds since the last successful credit or mix.
    pub last_feed_secs_ago: Option<u64>,
}

/// The Go project's per-queue statistics, in items.
#[derive(Debug, Clone, Serialize, Default, utoipa::ToSchema)]
pub struct QueueStatus {
    /// Blocks harvested into the queue.
    pub polling_count: u64,
    /// Items in the queue now.
    pub queue_current: u64,
    /// Capacity in items.
    pub queue_capacity: u64,
    /// `queue_current / queue_capacity × 100`.
    pub queue_percentage: f64,
    /// Items not stored because the queue was full.
    pub queue_dropped: u64,
    /// Items consumed by clients.
    pub consumed_count: u64,
    /// Same as `queue_current` (kept for compatibility).
    pub unconsumed_count: u64,
    /// Items ever stored.
    pub total_generated: u64,
    /// The TRNG queue only: whether serving deletes the bytes (`store.consume`; false is the
    /// non-consuming test mode, in which the same bytes are served again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consume: Option<bool>,
}

impl From<lokey::store::QueueStats> for QueueStatus {
    fn from(q: lokey::store::QueueStats) -> QueueStatus {
        QueueStatus {
            polling_count: q.stored + q.dropped,
            queue_current: q.items,
            queue_capacity: q.capacity,
            queue_percentage: if q.capacity == 0 {
                0.0
            } else {
                q.items as f64 / q.capacity as f64 * 100.0
            },
            queue_dropped: q.dropped,
            consumed_count: q.consumed_items,
            unconsumed_count: q.items,
            total_generated: q.stored,
            consume: None,
        }
    }
}

/// The store on disk.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DatabaseStatus {
    /// Bytes of all files in the data directory.
    pub size_bytes: u64,
    /// The same, for people (`1.0 MB`).
    pub size_human: String,
    /// The data directory.
    #[schema(value_type = String)]
    pub path: PathBuf,
    /// Whether the store is open and accepts writes (health's `database`).
    pub writable: bool,
    /// Why it is not: the store could not be opened, or a write failed (a full disk).
    pub error: Option<String>,
}

/// The daemon process.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DaemonStatus {
    /// lokeyd's version.
    pub version: &'static str,
    /// Process id.
    pub pid: u32,
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
    /// Seconds since it started.
    pub uptime_secs: u64,
}

/// `GET /api/v1/health`: the Go project's shape.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` or `degraded`.
    pub status: &'static str,
    /// When this answer was made (RFC 3339, UTC).
    pub timestamp: String,
    /// One flag per component.
    pub details: HealthDetails,
    /// The upstream feeder, with its last error while it fails; absent when none is
    /// configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<crate::upstream::UpstreamReport>,
}

/// Component flags of [`Health`].
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HealthDetails {
    /// The API answers (always true when you can read this).
    pub api: bool,
    /// The chip (or its emulator) delivers healthy data (true when the daemon has no local
    /// source: an upstream feeder only).
    pub controller: bool,
    /// Fortuna is seeded and can serve (true when the daemon has no local source to seed it:
    /// an upstream feeder only, whose Fortuna serves nothing).
    pub fortuna: bool,
    /// The store is open and writable.
    pub database: bool,
    /// The kernel feeder works (true when it is turned off).
    pub kernel: bool,
    /// The beacon publishes on time: no pulse is more than one period late (true when it is
    /// off, and for an upstream feeder without a local source, which has no chip to sign).
    pub beacon: bool,
    /// The upstream feeder's last round fed the kernel (true when there is none).
    pub upstream: bool,
}

impl Health {
    /// Whether every component is healthy.
    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }
}

impl Service {
    /// A service for `config` over `parts`.
    pub fn new(config: Config, parts: Parts) -> Service {
        Service {
            inner: Arc::new(Inner {
                config: RwLock::new(config),
                started: Instant::now(),
                started_at: SystemTime::now(),
                parts,
                workers: Mutex::new(Vec::new()),
                requests: Arc::default(),
                last_hour: Mutex::default(),
            }),
        }
    }

    /// Latency and served-bytes metrics.
    pub fn request_metrics(&self) -> Arc<crate::metrics::RequestMetrics> {
        self.inner.requests.clone()
    }

    /// The store, when the service has one.
    pub fn store(&self) -> Option<&Store> {
        self.inner.parts.store.as_ref()
    }

    /// The store is open and healthy, or (a service built without one, in tests) the data
    /// directory exists.
    fn database_ok(&self) -> bool {
        self.store()
            .map_or_else(|| self.config().daemon.data_dir.is_dir(), Store::healthy)
    }

    /// Why the store cannot be used now, naming the data directory; `None` when it can.
    pub fn store_problem(&self) -> Option<String> {
        match self.store() {
            Some(store) if !store.healthy() => Some(format!(
                "the store in {} can no longer be written (a write failed: is the disk full?); \
                 restart lokeyd once it has room",
                store.path().display()
            )),
            Some(_) => None,
            None => self.inner.parts.store_unavailable.clone(),
        }
    }

    fn with_pipeline_ref<T>(&self, f: impl FnOnce(&Pipeline) -> T) -> Option<T> {
        let pipeline = self.inner.parts.pipeline.as_ref()?;
        Some(f(&pipeline.lock().unwrap_or_else(|e| e.into_inner())))
    }

    /// Each source's status.
    pub fn sources(&self) -> Vec<SourceReport> {
        self.with_pipeline_ref(|p| p.sources())
            .unwrap_or_default()
            .iter()
            .map(SourceReport::from)
            .collect()
    }

    /// The kernel feeder's status.
    pub fn kernel(&self) -> KernelReport {
        let (enabled, feeder) = self
            .with_pipeline_ref(|p| (p.kernel_enabled(), p.feeder()))
            .unwrap_or_default();
        let total = feeder.total();
        KernelReport {
            enabled,
            crng_initialized: lokey::kernel::crng_initialized().unwrap_or(feeder.crng_ready),
            entropy_avail: lokey::kernel::KernelPool::open()
                .ok()
                .and_then(|p| p.entropy_count().ok()),
            credited_bits: total.credited_bits,
            credited_bytes: total.credited_bytes,
            credit_calls: total.credit_calls,
            mixed_bytes: total.mixed_bytes,
            errors: total.errors,
            failing: feeder.failing(),
            last_error: total.last_error,
            last_feed_secs_ago: total.last_success.map(|t| t.elapsed().as_secs()),
        }
    }

    /// Configuration values: one key, or every key that can change at run time.
    ///
    /// # Errors
    ///
    /// [`ServiceError::InvalidArgument`] for an unknown key.
    pub fn config_get(&self, key: Option<&str>) -> Result<serde_json::Value, ServiceError> {
        let config = self.config();
        let keys: Vec<&str> = match key {
            Some(key) => vec![key],
            None => lokey::config::LIVE_KEYS.to_vec(),
        };
        let mut out = serde_json::Map::new();
        for key in keys {
            if key == "api.admin_token" {
                return Err(ServiceError::PermissionDenied(
                    "api.admin_token is never shown".into(),
                ));
            }
            let value = config.get(key).ok_or_else(|| {
                ServiceError::InvalidArgument(format!(
                    "unknown key {key:?}: keys are listed in lokeyd.toml(5)"
                ))
            })?;
            out.insert(key.to_string(), value);
        }
        Ok(serde_json::Value::Object(out))
    }

    /// Changes run-time settings, all or none (`PUT /api/v1/config/queue` sets two at once).
    /// Only [`lokey::config::LIVE_KEYS`] can change while the daemon runs.
    ///
    /// # Errors
    ///
    /// [`ServiceError::PermissionDenied`] for a caller who may not configure,
    /// [`ServiceError::InvalidArgument`] for an unknown key, a key that needs a restart, or a
    /// value out of range (nothing changes then).
    pub fn config_set(
        &self,
        caller: Caller,
        changes: &[(&str, serde_json::Value)],
    ) -> Result<serde_json::Value, ServiceError> {
        caller.require_admin("changing the configuration")?;
        let mut guard = self.inner.config.write().unwrap_or_else(|e| e.into_inner());
        let mut next = guard.clone();
        for (key, value) in changes {
            if !lokey::config::LIVE_KEYS.contains(key) {
                let hint = if lokey::config::field(key).is_some() {
                    "it can only be changed in the configuration file, followed by a restart"
                } else {
                    "no such key; keys are listed in lokeyd.toml(5)"
                };
                return Err(ServiceError::InvalidArgument(format!("{key}: {hint}")));
            }
            next.set(
                key,
                value,
                lokey::config::Origin::Flag(format!("{caller:?}")),
            )
            .map_err(|e| ServiceError::InvalidArgument(runtime_message(&e)))?;
        }
        if crediting_needs_restart(&guard, &next) {
            return Err(ServiceError::InvalidArgument(format!(
                "kernel.bits_per_byte: {}",
                CREDIT_NEEDS_RESTART
            )));
        }
        let mut out = serde_json::Map::new();
        for (key, _) in changes {
            let value = next.get(key).unwrap_or(serde_json::Value::Null);
            out.insert((*key).to_string(), value);
        }
        // Stored before it takes effect: a setting that was answered as changed survives a
        // restart. (A key pinned by the environment or a flag still wins at the next start.)
        // Without a store (read-only or full data directory) nothing changes: a change that
        // silently vanished at the next restart would be worse than a refusal.
        let Some(store) = self.store() else {
            return Err(ServiceError::Unavailable(
                "the store is not open (see status: database), so the setting cannot be stored;                  nothing was changed"
                    .into(),
            ));
        };
        for (key, value) in &out {
            store.set_setting(key, &value.to_string()).map_err(|e| {
                tracing::error!("cannot store setting {key}: {e}");
                ServiceError::Unavailable(format!(
                    "the setting could not be stored ({e}); nothing was changed"
                ))
            })?;
        }
        for (key, value) in &out {
            tracing::warn!(?caller, "configuration: {key} set to {value}");
            if self.inner.parts.pinned.iter().any(|p| p == key) {
                tracing::warn!(
                    "{key} is also set by the environment or a flag, which wins at the next start"
                );
            }
        }
        self.apply(&next);
        *guard = next;
        Ok(serde_json::Value::Object(out))
    }

    /// `n` bytes of the TRNG queue after skipping `skip`: taken (deleted, durably, before this
    /// returns) in the consuming mode, read in the other. Wakes the harvesters, whose queue
    /// now has room.
    ///
    /// # Errors
    ///
    /// [`ServiceError::Insufficient`] when fewer bytes are queued (nothing is taken),
    /// [`ServiceError::Internal`] when the store fails.
    pub fn trng_bytes(&self, skip: u64, n: usize) -> Result<Vec<u8>, ServiceError> {
        if let Some(problem) = self.store_problem() {
            return Err(trng_unavailable(&problem));
        }
        let Some(store) = self.store() else {
            return Err(ServiceError::Unavailable("the store is not open".into()));
        };
        let queue = store.trng();
        let result = if self.config().store.consume {
            queue.take(skip, n)
        } else {
            queue.peek(skip, n)
        };
        match result {
            Ok(bytes) => {
                self.record_served("trng", n as u64);
                store.record_usage("trng", n as u64, SystemTime::now());
                store.count("served.trng", n as u64);
                if let Some(pipeline) = &self.inner.parts.pipeline {
                    pipeline
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .wakeup()
                        .notify();
                }
                Ok(bytes)
            }
            Err(lokey::store::StoreError::Insufficient {
                available,
                requested,
            }) => Err(ServiceError::Insufficient {
                message: format!(
                    "not enough TRNG data: {requested} bytes requested, {available} available \
                     (the hardware delivers about 1 kB/s; ask for less, retry later, or use \
                     source fortuna)"
                ),
                available,
            }),
            Err(e) => Err(ServiceError::Internal(format!("TRNG queue: {e}"))),
        }
    }

    /// Checks that the TRNG queue holds `n` bytes now (a later take may still find fewer
    /// when other clients drain it meanwhile).
    ///
    /// # Errors
    ///
    /// [`ServiceError::Insufficient`].
    pub fn trng_available(&self, n: u64) -> Result<(), ServiceError> {
        if let Some(problem) = self.store_problem() {
            return Err(trng_unavailable(&problem));
        }
        let available = self.store().map_or(0, |s| s.trng().stats().bytes);
        if available >= n {
            return Ok(());
        }
        Err(ServiceError::Insufficient {
            message: format!(
                "not enough TRNG data: {n} bytes requested, {available} available (the \
                 hardware delivers about 1 kB/s; ask for less, retry later, or use source \
                 fortuna)"
            ),
            available,
        })
    }

    /// A Fortuna worker for one stream or request (see [`lokey::fortuna::Worker`]); give
    /// it back with [`Service::return_worker`] to save the next caller a key draw.
    ///
    /// # Errors
    ///
    /// [`ServiceError::Unavailable`] without Fortuna.
    pub fn fortuna_worker(&self) -> Result<Worker, ServiceError> {
        let Some(fortuna) = &self.inner.parts.fortuna else {
            return Err(ServiceError::Unavailable("Fortuna is not running".into()));
        };
        let idle = self
            .inner
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        Ok(idle.unwrap_or_else(|| fortuna.worker()))
    }

    /// Keeps `worker` for the next request.
    pub fn return_worker(&self, worker: Worker) {
        let mut idle = self.inner.workers.lock().unwrap_or_else(|e| e.into_inner());
        // One per core is plenty; the rest are dropped (and their keys zeroized).
        if idle.len() < 64 {
            idle.push(worker);
        }
    }

    /// Fills `out` from `worker`, recording the usage.
    ///
    /// # Errors
    ///
    /// [`ServiceError::Unavailable`] while Fortuna is not seeded.
    pub fn fortuna_fill(&self, worker: &mut Worker, out: &mut [u8]) -> Result<(), ServiceError> {
        worker.fill(out).map_err(|e| match e {
            lokey::fortuna::FortunaError::Unseeded => ServiceError::Unavailable(
                "Fortuna is not seeded yet: it waits for its first reseed from a health-tested \
                 hardware source (seconds after start) or a seed file; retry shortly or use \
                 source trng"
                    .into(),
            ),
            other => ServiceError::Internal(format!("Fortuna: {other}")),
        })?;
        self.record_served("fortuna", out.len() as u64);
        if let Some(store) = self.store() {
            store.record_usage("fortuna", out.len() as u64, SystemTime::now());
            store.count("served.fortuna", out.len() as u64);
        }
        Ok(())
    }

    /// `n` bytes from Fortuna (`skip` is ignored: generated bytes are never stored, so there
    /// is nothing to skip).
    ///
    /// # Errors
    ///
    /// [`ServiceError::Unavailable`] while Fortuna is not seeded.
    pub fn fortuna_bytes(&self, skip: u64, n: usize) -> Result<Vec<u8>, ServiceError> {
        let _ = skip;
        let mut worker = self.fortuna_worker()?;
        let mut out = vec![0u8; n];
        let filled = self.fortuna_fill(&mut worker, &mut out);
        self.return_worker(worker);
        filled.map(|()| out)
    }

    /// What the chip is: `{"emulated", "kind", "revision", "serial", "config_locked",
    /// "data_locked", "bus", "address"}`. Blocks for one chip exchange or two.
    ///
    /// # Errors
    ///
    /// [`ServiceError::Unsupported`] without a chip, [`ServiceError::Unavailable`] when it
    /// does not answer.
    pub fn device_info(&self) -> Result<serde_json::Value, ServiceError> {
        let chip = self.chip()?;
        let info = chip
            .chip
            .with(|c| c.device_info())
            .map_err(|e| ServiceError::Unavailable(format!("the chip did not answer: {e}")))?;
        Ok(serde_json::json!({
            "emulated": chip.faults.is_some(),
            "kind": if chip.faults.is_some() { "emulator" } else { "atecc608a" },
            "revision": info.revision,
            "serial": info.serial,
            "config_locked": info.config_locked,
            "data_locked": info.data_locked,
            "bus": chip.bus,
            "address": format!("{:#04x}", chip.address),
            "faults": chip.faults.as_ref().map(|f| f.active()),
        }))
    }

    /// Locks the chip's config zone, irreversibly: `confirm` must be its serial number in hex
    /// (as [`Service::device_info`] shows it).
    ///
    /// # Errors
    ///
    /// [`ServiceError::PermissionDenied`] for a caller who may not configure,
    /// [`ServiceError::InvalidArgument`] for a malformed or wrong serial number or a chip
    /// already locked, [`ServiceError::Unavailable`] when the chip does not answer.
    pub fn device_lock(&self, caller: Caller, confirm: &str) -> Result<(), ServiceError> {
        caller.require_admin("locking the chip")?;
        let chip = self.chip()?;
        let confirmation = confirmation(confirm)?;
        tracing::warn!(
            ?caller,
            "locking the chip's configuration zone (irreversible)"
        );
        chip.chip
            .with(|c| c.lock_config(&confirmation))
            .map_err(|e| match e {
                lokey::atecc::AteccError::WrongChip { .. }
                | lokey::atecc::AteccError::AlreadyLocked => {
                    ServiceError::InvalidArgument(e.to_string())
                }
                other => ServiceError::Unavailable(format!(
                    "the chip refused or did not answer: {other}"
                )),
            })?;
        tracing::warn!("the chip's configuration zone is now locked");
        self.kick();
        Ok(())
    }

    /// Changes the chip's I2C address to `address` (config byte 16; only before the config
    /// zone is locked, and permanent once it is): `confirm` must be its serial number in hex.
    /// The chip answers at its old address until it next sleeps; the configuration must then
    /// name the new one.
    ///
    /// # Errors
    ///
    /// As [`Service::device_lock`]; an address outside 0x08–0x77 or a locked config zone is
    /// [`ServiceError::InvalidArgument`].
    pub fn device_set_address(
        &self,
        caller: Caller,
        address: u8,
        confirm: &str,
    ) -> Result<(), ServiceError> {
        caller.require_admin("changing the chip's I2C address")?;
        if !(0x08..=0x77).contains(&address) {
            return Err(ServiceError::InvalidArgument(format!(
                "{address:#04x} is not a usable 7-bit I2C address (0x08 to 0x77)"
            )));
        }
        let chip = self.chip()?;
        let confirmation = confirmation(confirm)?;
        tracing::warn!(
            ?caller,
            "changing the chip's I2C address from {:#04x} to {address:#04x} (config byte 16; \
             permanent once the config zone is locked)",
            chip.address
        );
        chip.chip
            .with(|c| c.set_address(address, &confirmation))
            .map_err(|e| match e {
                lokey::atecc::AteccError::WrongChip { .. }
                | lokey::atecc::AteccError::AddressLocked => {
                    ServiceError::InvalidArgument(e.to_string())
                }
                other => ServiceError::Unavailable(format!(
                    "the chip refused or did not answer: {other}"
                )),
            })?;
        tracing::warn!(
            "the chip's I2C address is now {address:#04x} (from its next sleep or power-up); \
             set it in the configuration and restart lokeyd"
        );
        Ok(())
    }
}

/// The confirmation a caller gave for an irreversible chip change (a lock, a new address):
/// the chip's serial number ([`confirmed_serial`]).
fn confirmation(confirm: &str) -> Result<lokey::atecc::LockConfirmation, ServiceError> {
    confirmed_serial(confirm).map(lokey::atecc::LockConfirmation::for_serial_irreversibly)
}

impl Service {
    /// Retries every source at once.
    fn kick(&self) {
        self.with_pipeline_ref(Pipeline::kick);
    }

    /// The REST API's TLS, when it is on.
    pub fn tls(&self) -> Option<Arc<crate::tls::Tls>> {
        self.inner.parts.tls.clone()
    }

    fn chip(&self) -> Result<&crate::pipeline::ChipHandle, ServiceError> {
        self.inner.parts.chip.as_ref().ok_or_else(|| {
            ServiceError::Unsupported("this lokeyd has no ATECC608A configured".into())
        })
    }

    /// Turns an emulator fault on or off; returns the faults active afterwards.
    ///
    /// # Errors
    ///
    /// [`ServiceError::PermissionDenied`] for a caller who may not configure,
    /// [`ServiceError::Unsupported`] when the chip is not emulated,
    /// [`ServiceError::InvalidArgument`] for an unknown fault.
    pub fn set_fault(
        &self,
        caller: Caller,
        name: &str,
        active: bool,
    ) -> Result<Vec<String>, ServiceError> {
        caller.require_admin("switching emulator faults")?;
        let Some(faults) = &self.inner.parts.faults else {
            return Err(ServiceError::Unsupported(
                "faults can only be switched when lokeyd runs the emulator (--emulate)".into(),
            ));
        };
        faults
            .set(name, active)
            .map_err(ServiceError::InvalidArgument)?;
        self.kick();
        tracing::warn!(
            ?caller,
            "emulator fault {name} turned {}",
            if active { "on" } else { "off" }
        );
        Ok(faults.active())
    }

    /// A copy of the current configuration.
    pub fn config(&self) -> Config {
        // A poisoned lock means a writer panicked mid-update of a plain struct; its value
        // is still a whole Config, so keep serving it.
        self.inner
            .config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts settings that live outside the configuration into effect: the queue capacity, the
    /// log level, the kernel feeders' policy and the Fortuna seed-file interval. (The other
    /// [`lokey::config::LIVE_KEYS`] are read from the configuration at every use.)
    fn apply(&self, config: &Config) {
        if let Some(store) = self.store() {
            store.trng().set_capacity(config.store.trng_queue_size);
        }
        if let Some(log) = &self.inner.parts.log {
            log.set_level(&config.daemon.log_level);
        }
        match crate::pipeline::credit_policy(config) {
            Ok(policy) => {
                self.with_pipeline_ref(|p| p.set_credit_policy(policy));
            }
            Err(e) => tracing::error!("kernel feeder policy not changed: {e:#}"),
        }
        if let Some(fortuna) = &self.inner.parts.fortuna {
            let interval = std::time::Duration::from_secs(config.fortuna.seed_interval_secs);
            fortuna.with(|f| f.set_seed_file_interval(interval));
        }
    }

    /// Replaces the live configuration (SIGHUP) with `new` from the file and environment,
    /// keeping the settings stored at run time over the file. Returns the keys whose change
    /// needs a restart.
    pub fn reload(&self, new: lokey::config::Loaded) -> Vec<&'static str> {
        let mut new = new;
        if let Some(store) = self.store() {
            match store.settings() {
                Ok(stored) => {
                    for note in
                        new.apply_stored(stored.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    {
                        tracing::info!("{note}");
                    }
                }
                Err(e) => tracing::error!("cannot read stored settings: {e}"),
            }
        }
        let new = new.config;
        let mut guard = self.inner.config.write().unwrap_or_else(|e| e.into_inner());
        let old = guard.clone();
        let mut restart = Vec::new();
        if old.daemon.data_dir != new.daemon.data_dir {
            restart.push("daemon.data_dir");
        }
        if old.daemon.socket != new.daemon.socket {
            restart.push("daemon.socket");
        }
        if old.daemon.user != new.daemon.user {
            restart.push("daemon.user");
        }
        if old.api.listen != new.api.listen {
            restart.push("api.listen");
        }
        // The REST server's connection and request slots are counted out at start.
        if old.api.max_connections != new.api.max_connections {
            restart.push("api.max_connections");
        }
        if old.api.max_concurrent_requests != new.api.max_concurrent_requests {
            restart.push("api.max_concurrent_requests");
        }
        if old.chip != new.chip {
            restart.push("chip");
        }
        // The sources and feeders are built at start.
        if old.hwrng != new.hwrng {
            restart.push("hwrng");
        }
        if old.sources != new.sources {
            restart.push("[[source]]");
        }
        if old.kernel.enabled != new.kernel.enabled {
            restart.push("kernel.enabled");
        }
        // The upstream feeder's thread, client and credit are set up at start.
        if old.upstream != new.upstream {
            restart.push("upstream");
        }
        // Keep what needs a restart as it is running, take everything else.
        let mut applied = new;
        if crediting_needs_restart(&old, &applied) {
            restart.push("kernel.bits_per_byte");
            applied.kernel.bits_per_byte = old.kernel.bits_per_byte;
        }
        applied.daemon.data_dir = old.daemon.data_dir;
        applied.daemon.socket = old.daemon.socket;
        applied.daemon.user = old.daemon.user;
        applied.api.listen = old.api.listen;
        applied.api.max_connections = old.api.max_connections;
        applied.api.max_concurrent_requests = old.api.max_concurrent_requests;
        applied.chip = old.chip;
        applied.hwrng = old.hwrng;
        applied.sources = old.sources;
        applied.kernel.enabled = old.kernel.enabled;
        applied.upstream = old.upstream;
        self.apply(&applied);
        *guard = applied;
        restart
    }

    /// The daemon's status.
    pub fn status(&self) -> Status {
        let config = self.config();
        let mut trng = match self.store() {
            Some(store) => QueueStatus::from(store.trng().stats()),
            None => QueueStatus {
                queue_capacity: config.store.trng_queue_size,
                ..QueueStatus::default()
            },
        };
        trng.consume = Some(config.store.consume);
        // Fortuna output is generated on demand, never stored (design.md §2 invariant 5):
        // only the capacity is reported, for the Go API's shape.
        let fortuna = QueueStatus {
            queue_capacity: config.store.fortuna_queue_size,
            ..QueueStatus::default()
        };
        let size = self
            .store()
            .map_or_else(|| dir_size(&config.daemon.data_dir), Store::disk_bytes);
        let problem = self.store_problem();
        Status {
            trng,
            fortuna,
            database: DatabaseStatus {
                size_bytes: size,
                size_human: human_bytes(size),
                path: config.daemon.data_dir.clone(),
                writable: problem.is_none() && self.database_ok(),
                error: problem,
            },
            daemon: DaemonStatus {
                version: env!("CARGO_PKG_VERSION"),
                pid: std::process::id(),
                started_at: rfc3339(self.inner.started_at),
                uptime_secs: self.inner.started.elapsed().as_secs(),
            },
            sources: self.sources(),
            kernel: self.kernel(),
            fortuna_generator: self.fortuna(),
            served: self.served(),
            beacon: self.beacon_report(),
            upstream: self.upstream_report(),
        }
    }

    /// The upstream feeder's state, when there is one.
    pub fn upstream_report(&self) -> Option<crate::upstream::UpstreamReport> {
        self.inner.parts.upstream.as_ref().map(|u| u.report())
    }

    fn record_served(&self, source: &str, bytes: u64) {
        self.inner
            .last_hour
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(source, bytes, minute_now());
    }

    /// Bytes served per source.
    pub fn served(&self) -> ServedReport {
        let minute = minute_now();
        let last_hour = {
            let mut recent = self
                .inner
                .last_hour
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            LastHour::SOURCES
                .into_iter()
                .map(|source| (source, recent.series(source, minute)))
                .collect()
        };
        let Some(store) = self.store() else {
            return ServedReport {
                last_hour,
                ..ServedReport::default()
            };
        };
        let since = SystemTime::now() - std::time::Duration::from_secs(24 * 3600);
        let mut hourly = std::collections::BTreeMap::new();
        for source in ["trng", "fortuna"] {
            let hours = store.usage(source, since).unwrap_or_default();
            hourly.insert(
                source,
                hours
                    .iter()
                    .map(|h| HourReport {
                        hour_start: rfc3339(h.hour_start),
                        bytes: h.bytes,
                        requests: h.requests,
                    })
                    .collect(),
            );
        }
        ServedReport {
            trng_bytes: store.counter("served.trng").unwrap_or(0),
            fortuna_bytes: store.counter("served.fortuna").unwrap_or(0),
            hourly,
            last_hour,
        }
    }

    /// Fortuna's state.
    pub fn fortuna(&self) -> FortunaReport {
        let Some(fortuna) = &self.inner.parts.fortuna else {
            return FortunaReport::default();
        };
        let stats = fortuna.stats();
        FortunaReport {
            seeded: stats.seeded,
            reseed_count: stats.reseed_count,
            pool0_bytes: stats.pool0_bytes,
            last_reseed_secs_ago: stats.last_reseed.map(|t| t.elapsed().as_secs()),
            cipher: stats.cipher.name(),
            backend: stats.backend.describe(),
        }
    }

    /// The daemon's health.
    pub fn health(&self) -> Health {
        let sources = self.sources();
        let kernel = self.kernel();
        let upstream = self.upstream_report();
        // An upstream feeder without a local source has no chip and nothing to seed Fortuna.
        let feeder_only = sources.is_empty() && upstream.is_some();
        let details = HealthDetails {
            api: true,
            // The chip (or its emulator) when there is one, else any hardware source; and no
            // hwrng device that has failed (quarantined, retrying or a failed read; one that
            // has not yet delivered its start-up samples does not count against it).
            controller: {
                let chips: Vec<_> = sources.iter().filter(|s| s.kind != "hwrng").collect();
                let chip_ok = if chips.is_empty() {
                    sources.iter().any(|s| s.healthy)
                } else {
                    chips.iter().all(|s| s.healthy)
                };
                let hwrng_failed = sources.iter().any(|s| {
                    s.kind == "hwrng"
                        && (matches!(s.state, "quarantined" | "retrying") || s.last_error.is_some())
                });
                feeder_only || (chip_ok && !hwrng_failed)
            },
            fortuna: feeder_only || self.fortuna().seeded,
            database: self.store_problem().is_none() && self.database_ok(),
            kernel: !kernel.enabled || !kernel.failing,
            // A feeder without a chip has no beacon, whatever beacon.enabled says.
            beacon: feeder_only
                || self.beacon_report().is_none_or(|b| {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    !b.late_at(now)
                }),
            upstream: upstream.as_ref().is_none_or(|u| u.ok()),
        };
        let ok = details.api
            && details.controller
            && details.fortuna
            && details.database
            && details.kernel
            && details.beacon
            && details.upstream;
        Health {
            status: if ok { "ok" } else { "degraded" },
            timestamp: rfc3339(SystemTime::now()),
            details,
            upstream,
        }
    }
}

/// A TRNG request while the store cannot be used (503): what is wrong and what still works.
/// The serial number an operator typed to confirm an irreversible chip operation: 9 bytes in
/// hex, spaces and colons allowed.
fn confirmed_serial(confirm: &str) -> Result<[u8; 9], ServiceError> {
    let digits: String = confirm
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    let serial: Vec<u8> = (0..digits.len())
        .step_by(2)
        .map(|i| {
            digits
                .get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
        })
        .collect::<Option<_>>()
        .unwrap_or_default();
    <[u8; 9]>::try_from(serial).map_err(|_| {
        ServiceError::InvalidArgument(format!(
            "{confirm:?} is not a serial number: give the chip's 9-byte serial number in hex, \
             as `lokey device info` shows it"
        ))
    })
}

fn trng_unavailable(problem: &str) -> ServiceError {
    ServiceError::Unavailable(format!(
        "TRNG data is unavailable: {problem}; source fortuna still serves"
    ))
}

/// Why turning crediting on at run time is refused.
pub const CREDIT_NEEDS_RESTART: &str = "crediting needs CAP_SYS_ADMIN, which lokeyd does not \
     hold (it drops it at start when kernel.bits_per_byte is 0); set the value in the \
     configuration file and restart lokeyd";

/// Whether going from `old` to `new` turns crediting on (bits per byte from 0 to more, the
/// feeder on) while the process lacks CAP_SYS_ADMIN: every RNDADDENTROPY would fail, and only a
/// restart (which keeps the capability when the file asks for crediting) can give it back.
fn crediting_needs_restart(old: &Config, new: &Config) -> bool {
    new.kernel.enabled
        && old.kernel.bits_per_byte == 0
        && new.kernel.bits_per_byte > 0
        && !lokey::privilege::holds_sys_admin()
}

/// A configuration error as a client should read it: without the "flag …:" origin prefix.
fn runtime_message(e: &lokey::config::Error) -> String {
    match e {
        lokey::config::Error::Invalid {
            key, value, kind, ..
        } => format!("{key}: {value} is not allowed: expected {kind}"),
        other => other.to_string(),
    }
}

/// Total size of the regular files under `dir` (not following links).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some(if meta.is_dir() {
                dir_size(&e.path())
            } else if meta.is_file() {
                meta.len()
            } else {
                0
            })
        })
        .sum()
}

/// The Go project's `formatBytes`: `512 B`, `1.0 KB`, `3.4 MB`, … (powers of 1024).
pub fn human_bytes(n: u64) -> String {
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < 6 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}B", ["", "K", "M", "G", "T", "P", "E"][unit])
}

/// RFC 3339 in UTC with whole seconds, e.g. `2025-12-04T10:30:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (the classic era-based conversion:
/// 400-year eras of 146097 days, years starting in March so the leap day comes last).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Switch(std::sync::Mutex<Vec<String>>);

    impl FaultSwitch for Switch {
        fn set(&self, name: &str, active: bool) -> Result<(), String> {
            if name != "stuck-output" {
                return Err(format!("unknown fault {name:?}"));
            }
            let mut v = self.0.lock().unwrap();
            v.retain(|n| n != name);
            if active {
                v.push(name.to_string());
            }
            Ok(())
        }
        fn active(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    fn service(faults: Option<Arc<dyn FaultSwitch>>) -> Service {
        let host = lokey::config::HostEnv::default();
        Service::new(
            Config::defaults(&host),
            Parts {
                faults,
                ..Parts::default()
            },
        )
    }

    #[test]
    fn not_enough_trng_data_is_one_clean_sentence_from_either_check() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &Default::default()).unwrap();
        let service = Service::new(
            Config::defaults(&lokey::config::HostEnv::default()),
            Parts {
                store: Some(store),
                ..Parts::default()
            },
        );
        let taken = service.trng_bytes(0, 32).unwrap_err();
        let checked = service.trng_available(32).unwrap_err();
        for e in [&taken, &checked] {
            let message = e.to_string();
            assert!(!message.contains("  "), "stray spaces: {message:?}");
            assert!(message.contains("0 available (the hardware"), "{message}");
        }
        assert_eq!(taken, checked, "both paths say the same");
        // The status shows the consumption mode of the TRNG queue only.
        let status = service.status();
        assert_eq!(status.trng.consume, Some(true));
        assert_eq!(status.fortuna.consume, None);
    }

    #[test]
    fn only_root_the_daemons_user_or_an_admin_may_configure() {
        let me = nix::unistd::geteuid().as_raw();
        assert!(Caller::Local { uid: 0, pid: None }.may_configure());
        assert!(Caller::Local { uid: me, pid: None }.may_configure());
        let stranger = if me == 4242 { 4243 } else { 4242 };
        assert!(
            !Caller::Local {
                uid: stranger,
                pid: None
            }
            .may_configure()
        );
        assert!(Caller::Admin.may_configure());
        assert!(!Caller::Anonymous.may_configure());
    }

    #[test]
    fn faults_switch_only_with_an_emulator_and_permission() {
        let s = service(None);
        assert!(matches!(
            s.set_fault(Caller::Admin, "stuck-output", true),
            Err(ServiceError::Unsupported(_))
        ));
        let s = service(Some(Arc::new(Switch(Default::default()))));
        assert!(matches!(
            s.set_fault(Caller::Anonymous, "stuck-output", true),
            Err(ServiceError::PermissionDenied(_))
        ));
        assert!(matches!(
            s.set_fault(Caller::Admin, "melt", true),
            Err(ServiceError::InvalidArgument(_))
        ));
        assert_eq!(
            s.set_fault(Caller::Admin, "stuck-output", true),
            Ok(vec!["stuck-output".to_string()])
        );
        assert_eq!(
            s.set_fault(Caller::Admin, "stuck-output", false),
            Ok(vec![])
        );
    }

    #[test]
    fn rfc3339_known_instants() {
        let at = |s| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_764_844_200), "2025-12-04T10:30:00Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn the_last_hour_keeps_sixty_minutes_per_source_and_forgets_older_ones() {
        let mut h = LastHour::default();
        let t = 1_000_000;
        h.record("trng", 32, t - 61); // Out of the window by the time of reading.
        h.record("trng", 64, t - 59);
        h.record("trng", 1, t);
        h.record("trng", 2, t);
        h.record("fortuna", 1000, t - 1);
        h.record("nonsense", 5, t);
        let trng = h.series("trng", t);
        assert_eq!(trng.len(), 60);
        assert_eq!((trng[0], trng[59]), (64, 3));
        assert_eq!(trng.iter().sum::<u64>(), 67);
        let fortuna = h.series("fortuna", t);
        assert_eq!((fortuna[58], fortuna.iter().sum::<u64>()), (1000, 1000));
        // A slot reused a whole hour later starts from zero.
        h.record("trng", 7, t + 60);
        assert_eq!(h.series("trng", t + 60)[59], 7);
        assert!(h.series("nonsense", t).is_empty());
        // Near the epoch no minute before it is invented.
        let mut early = LastHour::default();
        early.record("trng", 9, 0);
        assert_eq!(early.series("trng", 3).iter().sum::<u64>(), 9);
    }

    #[test]
    fn human_bytes_matches_the_go_format() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KB");
        assert_eq!(human_bytes(1_048_576), "1.0 MB");
        assert_eq!(human_bytes(1_572_864), "1.5 MB");
    }
}
