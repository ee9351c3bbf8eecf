//! The entropy pipeline: the sources, their harvest threads and the sinks each feeds
//! (design.md §1). Built once at start from the configuration; [`Pipeline::stop`] ends it.
//!
//! The sources come from `[chip]` and `[hwrng]` ([`open_sources`] as always) or from the
//! `[[source]]` list: every listed source must open. Chips on one bus (hardware, or emulators
//! sharing an emulated bus) are driven by one bus thread ([`lokey::atecc::BusHarvest`]),
//! started with the harvest threads after privileges are dropped; a chip alone on its bus is
//! read by its harvest thread directly. Each source keeps its own health tests, state,
//! counters and credit; the first chip in list order answers device requests.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use lokey::atecc::{
    Atecc608a, BusHarvest, ChipSource, Clock, EmulatedBus, Emulator, EmulatorConfig,
    EmulatorControl, SharedChip, linux,
};
use lokey::config::{Config, SourceConfig};
use lokey::health::HealthConfig;
use lokey::kernel::{CreditPolicy, KernelPool};
use lokey::source::{HWRNG_PATH, Hwrng, Source, SourceKind};

use crate::feeder::{Feeder, FeederStatus, SharedPolicy, credit_kind};
use crate::harvest::{CreditStatus, Harvester, Sink, SourceStatus, Wakeup};
use crate::sinks::{FortunaSink, QueueSink};
use lokey::fortuna::SharedFortuna;
use lokey::store::Store;

/// Bytes read from a source at a time: one ATECC608A Random response.
pub const BLOCK_BYTES: usize = 32;

/// The running pipeline.
#[derive(Debug)]
pub struct Pipeline {
    harvesters: Vec<(crate::harvest::Handle, Option<JoinHandle<()>>)>,
    /// Each source's credit rule, in the order of `harvesters`.
    credits: Vec<SourceCredit>,
    feeder: Arc<Mutex<FeederStatus>>,
    policy: SharedPolicy,
    wakeup: Wakeup,
    kernel_enabled: bool,
}

/// How one source is credited: its own setting and, when it is never credited, why.
#[derive(Debug, Clone)]
struct SourceCredit {
    /// `<section>.credit_bits_per_byte`, when set.
    own: Option<u8>,
    /// Why it is never credited whatever the setting (the emulator, a device the kernel
    /// credits itself, the kernel feeder off).
    never: Option<String>,
}

impl SourceCredit {
    /// The rule for a source of `kind` under `config` (`hwrng_quality`: the kernel's own
    /// credit for /dev/hwrng).
    fn of(config: &Config, kind: SourceKind, hwrng_quality: u32) -> SourceCredit {
        let (section, own) = match kind {
            SourceKind::Hwrng | SourceKind::Device => ("hwrng", config.hwrng.credit_bits_per_byte),
            SourceKind::Atecc608a | SourceKind::Emulator => {
                ("chip", config.chip.credit_bits_per_byte)
            }
        };
        SourceCredit::rule(config, section, kind, own, hwrng_quality)
    }

    /// The rule for the source `name` of `kind` with its own setting `own`.
    fn rule(
        config: &Config,
        section: &str,
        kind: SourceKind,
        own: Option<u64>,
        hwrng_quality: u32,
    ) -> SourceCredit {
        let never = if !config.kernel.enabled {
            Some("the kernel feeder is off (--no-credit or kernel.enabled = false)".to_string())
        } else {
            match credit_kind(kind, hwrng_quality) {
                lokey::kernel::SourceKind::Emulator => Some(
                    "the emulator's output comes from the operating system's RNG: never credited"
                        .to_string(),
                ),
                lokey::kernel::SourceKind::Kernel => Some(format!(
                    "the kernel credits {HWRNG_PATH} itself (rng_quality {hwrng_quality}): \
                     never credited again"
                )),
                lokey::kernel::SourceKind::Hardware => None,
            }
        };
        let own = own.map(|b| u8::try_from(b).unwrap_or(8).min(8));
        if let Some(why) = &never {
            let configured = own.map_or(config.kernel.bits_per_byte, u64::from);
            if config.kernel.enabled && configured > 0 {
                tracing::info!(
                    "source {section}: not credited although its credit is {configured} bits \
                     per byte: {why}"
                );
            }
        }
        SourceCredit { own, never }
    }

    /// Bits per byte credited now, with the shared policy at `shared` bits per byte.
    fn bits_per_byte(&self, shared: u8) -> u8 {
        match self.never {
            Some(_) => 0,
            None => self.own.unwrap_or(shared),
        }
    }
}

/// The sources to run, opened before privileges are dropped.
pub struct Sources {
    /// Every source, in order (the chip first in the `[chip]` form, list order otherwise).
    pub list: Vec<Planned>,
    /// The first chip, for device requests, when there is one.
    pub chip: Option<ChipHandle>,
    /// Bus threads to start with the harvest threads (after privileges are dropped).
    buses: Vec<BusStart>,
}

/// Starts one bus thread.
type BusStart = Box<dyn FnOnce() -> std::io::Result<JoinHandle<()>> + Send>;

/// One source and its settings.
pub struct Planned {
    /// The source.
    pub source: Box<dyn Source>,
    /// Claimed min-entropy per byte, for the health tests.
    pub min_entropy: f64,
    /// How it is credited.
    credit: SourceCredit,
    /// The kernel's own credit for it (`/dev/hwrng`'s `rng_quality`; 0 otherwise).
    kernel_quality: u32,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.list.iter().map(|s| s.source.name().to_string()))
            .finish()
    }
}

/// The file in the data directory that holds an emulated chip's non-volatile state.
pub const EMULATED_CHIP_FILE: &str = "emulated-chip.json";

/// The chip as the service sees it.
#[derive(Debug, Clone)]
pub struct ChipHandle {
    /// The chip, shared with its harvest thread.
    pub chip: SharedChip,
    /// The emulator's fault switch when emulated.
    pub faults: Option<EmulatorControl>,
    /// Its I2C bus number.
    pub bus: u8,
    /// Its 7-bit address.
    pub address: u8,
}

/// Opens the ATECC608A (or the emulator) as `chip.mode` says: `emulator`; `hardware`; `off`
/// (none); or `auto`, the chip when `/dev/i2c-<bus>` exists, else the emulator — else none
/// when an upstream feeder is configured (a machine seeded from a remote device does not
/// want an emulated chip of its own).
fn open_chip(config: &Config) -> anyhow::Result<Option<ChipHandle>> {
    let bus = u8::try_from(config.chip.i2c_bus).context("chip.i2c_bus")?;
    let address = u8::try_from(config.chip.address).context("chip.address")?;
    let emulate = match config.chip.mode.as_str() {
        "off" => return Ok(None),
        "emulator" => true,
        "hardware" => false,
        _ if linux::bus_present(bus) => false,
        _ if config.upstream.enabled() => {
            tracing::info!(
                "no ATECC608A on /dev/i2c-{bus}: no local chip (upstream feeder only; \
                 chip.mode = \"emulator\" would add the emulator)"
            );
            return Ok(None);
        }
        _ => true,
    };
    if emulate {
        // The emulated chip's serial number, keys and counters live beside the store, not in
        // it: restoring a store from a backup must not rewind the chip's monotonic counter,
        // just as it cannot on a real chip (the beacon relies on that).
        let emulator = Emulator::open(EmulatorConfig {
            address,
            state_file: Some(config.daemon.data_dir.join(EMULATED_CHIP_FILE)),
            ..EmulatorConfig::default()
        })?;
        let control = emulator.control();
        for fault in &config.chip.emulate_faults {
            control.set(fault, true).map_err(anyhow::Error::msg)?;
        }
        let delay = emulator.delay();
        let driver = Atecc608a::with_address(emulator, delay, address);
        tracing::info!(
            "using the ATECC608A emulator (its output comes from the operating system's RNG: \
             served, labelled, never credited to the kernel){}",
            if control.active().is_empty() {
                String::new()
            } else {
                format!("; faults on: {}", control.active().join(", "))
            }
        );
        return Ok(Some(ChipHandle {
            chip: SharedChip::new(Box::new(ChipSource::new(
                "chip",
                SourceKind::Emulator,
                driver,
            ))),
            faults: Some(control),
            bus,
            address,
        }));
    }
    if !config.chip.emulate_faults.is_empty() {
        tracing::warn!("chip.emulate_faults ignored: the chip is not emulated");
    }
    let (i2c, delay) = linux::open(bus, address)?;
    tracing::info!("using the ATECC608A on /dev/i2c-{bus} at address {address:#04x}");
    Ok(Some(ChipHandle {
        chip: SharedChip::new(Box::new(ChipSource::new(
            "chip",
            SourceKind::Atecc608a,
            Atecc608a::with_address(i2c, delay, address),
        ))),
        faults: None,
        bus,
        address,
    }))
}

/// Opens the sources the configuration asks for (call as root, before dropping privileges).
///
/// # Errors
///
/// A chip bus that cannot be opened (`chip.mode` hardware, or auto with the bus present), or a
/// source that is required (`hwrng.mode = "on"`) but cannot be opened.
pub fn open_sources(config: &Config) -> anyhow::Result<Sources> {
    if !config.sources.is_empty() {
        return open_list(config);
    }
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    let chip = open_chip(config)?;
    if let Some(chip) = &chip {
        sources.push(Box::new(chip.chip.clone()));
    }
    let path = &config.hwrng.path;
    let default_device = path == std::path::Path::new(HWRNG_PATH);
    match config.hwrng.mode.as_str() {
        "off" => {}
        mode => {
            let present = if default_device {
                Hwrng::available()
            } else {
                path.exists()
            };
            let opened = if present {
                Hwrng::new("hwrng", path)
                    .open_now()
                    .map_err(|e| e.to_string())
            } else {
                Err(format!("{} is not present", path.display()))
            };
            match opened {
                Ok(hwrng) => sources.push(Box::new(hwrng)),
                Err(e) if mode == "on" => anyhow::bail!("hwrng.mode is \"on\" but {e}"),
                Err(e) => tracing::info!("not using the hardware RNG device: {e}"),
            }
        }
    }
    if sources.is_empty() && !config.upstream.enabled() {
        anyhow::bail!(
            "no entropy source: chip.mode is \"off\" and no hardware RNG device is used; \
             configure a source, or an upstream feeder ([upstream] url and pin)"
        );
    }
    let quality = kernel_quality(&config.hwrng.path);
    let list = sources
        .into_iter()
        .map(|source| {
            let kind = source.kind();
            let min_entropy = match kind {
                SourceKind::Hwrng | SourceKind::Device => config.hwrng.min_entropy,
                SourceKind::Atecc608a | SourceKind::Emulator => config.chip.min_entropy,
            };
            Planned {
                source,
                min_entropy,
                credit: SourceCredit::of(config, kind, quality),
                kernel_quality: quality,
            }
        })
        .collect();
    Ok(Sources {
        list,
        chip,
        buses: Vec::new(),
    })
}

/// Opens the `[[source]]` list: every source must open (see the module documentation).
fn open_list(config: &Config) -> anyhow::Result<Sources> {
    let mut opened: Vec<(usize, Box<dyn Source>)> = Vec::new();
    let mut chips: Vec<(usize, ChipHandle)> = Vec::new();
    let mut buses: Vec<BusStart> = Vec::new();
    // Chips grouped by bus, in list order: (emulated, bus) → list indexes.
    let mut groups: Vec<((bool, u8), Vec<usize>)> = Vec::new();
    for (i, s) in config.sources.iter().enumerate() {
        match s.kind.as_str() {
            "atecc608a" | "emulator" => {
                let key = (s.kind == "emulator", u8::try_from(s.bus()).context("bus")?);
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, members)) => members.push(i),
                    None => groups.push((key, vec![i])),
                }
            }
            "hwrng" => {
                let path = s.path.clone().unwrap_or_else(|| HWRNG_PATH.into());
                let hwrng = Hwrng::new(&s.name, &path)
                    .open_now()
                    .map_err(|e| anyhow::anyhow!("source {}: {}", s.name, e.message))?;
                opened.push((i, Box::new(hwrng)));
            }
            _ => {
                let path = s.path.clone().context("a device source needs a path")?;
                let device = Hwrng::device(&s.name, &path)
                    .open_now()
                    .map_err(|e| anyhow::anyhow!("source {}: {}", s.name, e.message))?;
                opened.push((i, Box::new(device)));
            }
        }
    }
    for ((emulated, bus), members) in groups {
        let listed: Vec<&SourceConfig> = members.iter().map(|&i| &config.sources[i]).collect();
        let handles = if emulated {
            open_emulated_bus(bus, &listed, &mut buses, &config.daemon.data_dir)?
        } else {
            open_hardware_bus(bus, &listed, &mut buses)?
        };
        for (&i, handle) in members.iter().zip(handles) {
            opened.push((i, Box::new(handle.chip.clone())));
            chips.push((i, handle));
        }
    }
    opened.sort_by_key(|(i, _)| *i);
    chips.sort_by_key(|(i, _)| *i);
    let list = opened
        .into_iter()
        .map(|(i, source)| {
            let s = &config.sources[i];
            let kind = source.kind();
            let quality = match (kind, &s.path) {
                (SourceKind::Hwrng, Some(path)) => kernel_quality(path),
                (SourceKind::Hwrng, None) => kernel_quality(std::path::Path::new(HWRNG_PATH)),
                _ => 0,
            };
            Planned {
                source,
                min_entropy: s.min_entropy,
                credit: SourceCredit::rule(config, &s.name, kind, s.credit_bits_per_byte, quality),
                kernel_quality: quality,
            }
        })
        .collect();
    for (_, chip) in &chips {
        tracing::info!(
            "source {}: ATECC608A {} on bus {} at {:#04x}",
            chip.chip.name(),
            if chip.faults.is_some() {
                "emulator (served, labelled, never credited)"
            } else {
                "chip"
            },
            chip.bus,
            chip.address
        );
    }
    Ok(Sources {
        list,
        chip: chips.into_iter().next().map(|(_, c)| c),
        buses,
    })
}

fn chip_address(s: &SourceConfig) -> anyhow::Result<u8> {
    u8::try_from(s.address()).with_context(|| format!("source {}: address", s.name))
}

/// Emulated chips on emulated bus `bus`: one alone is read directly, several share one
/// emulated bus and one bus thread.
///
/// Each keeps its serial number, keys and counters in `emulated-chip-<name>.json` in
/// `data_dir` (the single `[chip]` emulator in `emulated-chip.json`).
fn open_emulated_bus(
    bus: u8,
    listed: &[&SourceConfig],
    buses: &mut Vec<BusStart>,
    data_dir: &Path,
) -> anyhow::Result<Vec<ChipHandle>> {
    let config_of = |s: &SourceConfig| -> anyhow::Result<EmulatorConfig> {
        Ok(EmulatorConfig {
            address: chip_address(s)?,
            state_file: Some(data_dir.join(format!("emulated-chip-{}.json", s.name))),
            ..EmulatorConfig::default()
        })
    };
    let set_faults = |s: &SourceConfig, control: &EmulatorControl| -> anyhow::Result<()> {
        for fault in &s.emulate_faults {
            control.set(fault, true).map_err(anyhow::Error::msg)?;
        }
        Ok(())
    };
    if let [s] = listed {
        let emulator = Emulator::open(config_of(s)?)?;
        let control = emulator.control();
        set_faults(s, &control)?;
        let delay = emulator.delay();
        let address = chip_address(s)?;
        let driver = Atecc608a::with_address(emulator, delay, address);
        return Ok(vec![ChipHandle {
            chip: SharedChip::new(Box::new(ChipSource::new(
                &s.name,
                SourceKind::Emulator,
                driver,
            ))),
            faults: Some(control),
            bus,
            address,
        }]);
    }
    let mut emulated = EmulatedBus::new(Clock::real());
    let mut controls = Vec::new();
    for s in listed {
        let control = emulated
            .add(config_of(s)?)
            .with_context(|| format!("source {} on emulated bus {bus}", s.name))?;
        set_faults(s, &control)?;
        controls.push(control);
    }
    let mut harvest = BusHarvest::emulated(format!("emulated-{bus}"), emulated);
    let mut handles = Vec::new();
    for (s, control) in listed.iter().zip(controls) {
        let address = chip_address(s)?;
        let chip = harvest.add(&s.name, SourceKind::Emulator, address);
        handles.push(ChipHandle {
            chip: SharedChip::new(Box::new(chip)),
            faults: Some(control),
            bus,
            address,
        });
    }
    buses.push(Box::new(move || harvest.spawn()));
    Ok(handles)
}

/// ATECC608As on `/dev/i2c-<bus>`: one alone is read directly, several by one bus thread.
fn open_hardware_bus(
    bus: u8,
    listed: &[&SourceConfig],
    buses: &mut Vec<BusStart>,
) -> anyhow::Result<Vec<ChipHandle>> {
    let first = chip_address(listed[0])?;
    let (i2c, delay) = linux::open(bus, first)
        .with_context(|| format!("source {}: opening /dev/i2c-{bus}", listed[0].name))?;
    if let [s] = listed {
        return Ok(vec![ChipHandle {
            chip: SharedChip::new(Box::new(ChipSource::new(
                &s.name,
                SourceKind::Atecc608a,
                Atecc608a::with_address(i2c, delay, first),
            ))),
            faults: None,
            bus,
            address: first,
        }]);
    }
    let origin = std::time::Instant::now();
    let mut harvest = BusHarvest::new(format!("i2c-{bus}"), i2c, delay, move || origin.elapsed());
    let mut handles = Vec::new();
    for s in listed {
        let address = chip_address(s)?;
        let chip = harvest.add(&s.name, SourceKind::Atecc608a, address);
        handles.push(ChipHandle {
            chip: SharedChip::new(Box::new(chip)),
            faults: None,
            bus,
            address,
        });
    }
    buses.push(Box::new(move || harvest.spawn()));
    Ok(handles)
}

/// How much the kernel credits the hwrng at `path` itself: `/dev/hwrng`'s `rng_quality`;
/// another device node is not fed to the pool by the kernel.
fn kernel_quality(path: &std::path::Path) -> u32 {
    if path == std::path::Path::new(HWRNG_PATH) {
        Hwrng::info().map_or(0, |i| i.kernel_quality)
    } else {
        0
    }
}

/// The kernel feeders' policy from `kernel.bits_per_byte`, `kernel.mix_bytes` and
/// `kernel.mix_interval_secs` (64-byte credit chunks).
///
/// # Errors
///
/// A value out of range (the configuration's validation keeps them in range).
pub fn credit_policy(config: &Config) -> anyhow::Result<CreditPolicy> {
    CreditPolicy::new(
        u8::try_from(config.kernel.bits_per_byte).context("kernel.bits_per_byte")?,
        64,
        usize::try_from(config.kernel.mix_bytes).context("kernel.mix_bytes")?,
        Duration::from_secs(config.kernel.mix_interval_secs),
    )
    .context("kernel feeder policy")
}

impl Pipeline {
    /// Starts one harvest thread per source with its sinks, in priority order: the kernel
    /// feeder (when crediting is on), Fortuna's pools, then the TRNG queue.
    ///
    /// # Errors
    ///
    /// When the kernel pool cannot be opened or a thread cannot start.
    /// The chip's harvest thread serves `beacon`'s requests for local randomness first.
    pub fn start(
        config: &Config,
        sources: Sources,
        store: Option<&Store>,
        fortuna: &SharedFortuna,
        beacon: Option<&crate::beacon::LocalRandom>,
    ) -> anyhow::Result<Pipeline> {
        let feeder = Arc::new(Mutex::new(FeederStatus::default()));
        let wakeup = Wakeup::default();
        let policy = SharedPolicy::new(credit_policy(config)?);
        let mut harvesters = Vec::new();
        let mut credits = Vec::new();
        let signing_chip = sources.chip.as_ref().map(|c| c.chip.name().to_string());
        for start in sources.buses {
            // Detached: it ends, putting its chips to sleep, when its sources are dropped.
            start().context("starting a bus thread")?;
        }
        for (id, planned) in sources.list.into_iter().enumerate() {
            let Planned {
                source,
                min_entropy,
                credit,
                kernel_quality: hwrng_quality,
            } = planned;
            let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
            // The beacon's local random values come from the chip that signs (the first chip),
            // before anything else takes its blocks (two blocks a period).
            if let Some(local) = beacon
                && signing_chip.as_deref() == Some(source.name())
            {
                sinks.push(Box::new(local.sink()));
            }
            if config.kernel.enabled {
                let pool =
                    KernelPool::open().context("opening /dev/random for the kernel feeder")?;
                sinks.push(Box::new(
                    Feeder::new(
                        pool,
                        policy.clone(),
                        credit_kind(source.kind(), hwrng_quality),
                        source.name().to_string(),
                        feeder.clone(),
                    )
                    .with_own_credit(credit.own),
                ));
            }
            credits.push(credit);
            sinks.push(Box::new(FortunaSink::new(fortuna.clone())));
            // Without a store (it could not be opened) there is no TRNG queue to fill.
            if let Some(store) = store {
                sinks.push(Box::new(QueueSink::new(store.clone())));
            }
            let id = u8::try_from(id).unwrap_or(u8::MAX);
            // The health tests' cutoffs follow the source's claimed min-entropy.
            let health = HealthConfig {
                min_entropy_bits: min_entropy,
                ..HealthConfig::default()
            };
            let harvester = Harvester::new(source, id, BLOCK_BYTES, health, sinks, wakeup.clone())?;
            let (handle, thread) = harvester.spawn().context("starting a harvest thread")?;
            harvesters.push((handle, Some(thread)));
        }
        Ok(Pipeline {
            harvesters,
            credits,
            feeder,
            policy,
            wakeup,
            kernel_enabled: config.kernel.enabled,
        })
    }

    /// Each source's status, with its credit now and the bits credited for it.
    pub fn sources(&self) -> Vec<SourceStatus> {
        let feeder = self.feeder();
        let shared = self.policy.get().bits_per_byte();
        self.harvesters
            .iter()
            .zip(&self.credits)
            .map(|((h, _), credit)| {
                let mut s = h.status();
                s.credit = CreditStatus {
                    bits_per_byte: credit.bits_per_byte(shared),
                    note: credit.never.clone(),
                    credited_bits: feeder.by_source.get(&s.name).map_or(0, |f| f.credited_bits),
                };
                s
            })
            .collect()
    }

    /// The kernel feeders' status.
    pub fn feeder(&self) -> FeederStatus {
        self.feeder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The kernel feeders' policy in force.
    pub fn credit_policy(&self) -> CreditPolicy {
        self.policy.get()
    }

    /// Puts a new kernel feeder policy into effect (a setting changed at run time): each feeder
    /// takes it at its next step, and idle harvest threads wake to ask again.
    pub fn set_credit_policy(&self, policy: CreditPolicy) {
        if policy != self.policy.get() {
            self.policy.set(policy);
            self.wakeup.notify();
        }
    }

    /// Whether the kernel feeder runs at all.
    pub fn kernel_enabled(&self) -> bool {
        self.kernel_enabled
    }

    /// Wakes harvest threads waiting for demand.
    pub fn wakeup(&self) -> &Wakeup {
        &self.wakeup
    }

    /// Ends every source's retry wait at once (see [`crate::harvest::Handle::kick`]).
    pub fn kick(&self) {
        for (handle, _) in &self.harvesters {
            handle.kick();
        }
    }

    /// Stops every harvest thread and waits for them (each finishes its current read).
    pub fn stop(&mut self) {
        for (handle, _) in &self.harvesters {
            handle.stop();
        }
        for (_, thread) in &mut self.harvesters {
            if let Some(t) = thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        let dir = std::env::temp_dir().join(format!("lokey-pipeline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lokeyd.toml");
        std::fs::write(&path, text).unwrap();
        let loaded = Config::load(&lokey::config::Sources {
            file: Some((path, true)),
            ..Default::default()
        })
        .unwrap();
        loaded.config
    }

    #[test]
    fn each_source_is_credited_at_its_own_rate_except_those_that_never_may_be() {
        let c = config("[kernel]\nbits_per_byte = 3\n[hwrng]\ncredit_bits_per_byte = 5\n");
        // A chip without its own setting follows the shared policy, live.
        let chip = SourceCredit::of(&c, SourceKind::Atecc608a, 0);
        assert_eq!((chip.bits_per_byte(3), chip.bits_per_byte(1)), (3, 1));
        // A device node the kernel does not credit: its own rate, whatever the shared one.
        let hwrng = SourceCredit::of(&c, SourceKind::Hwrng, 0);
        assert_eq!((hwrng.bits_per_byte(3), hwrng.bits_per_byte(0)), (5, 5));
        assert!(hwrng.never.is_none());
        // The emulator and a /dev/hwrng the kernel credits itself: never, and why.
        let emulator = SourceCredit::of(&c, SourceKind::Emulator, 0);
        assert_eq!(emulator.bits_per_byte(3), 0);
        assert!(emulator.never.as_deref().unwrap().contains("emulator"));
        let kernel_credited = SourceCredit::of(&c, SourceKind::Hwrng, 1024);
        assert_eq!(kernel_credited.bits_per_byte(3), 0);
        assert!(
            kernel_credited
                .never
                .as_deref()
                .unwrap()
                .contains("rng_quality 1024")
        );
        // Own credit 0: never credited, by choice (no note).
        let c = config("[chip]\ncredit_bits_per_byte = 0\n");
        let chip = SourceCredit::of(&c, SourceKind::Atecc608a, 0);
        assert_eq!((chip.bits_per_byte(8), chip.never.is_none()), (0, true));
        // The feeder off: nothing is credited.
        let c = config("[kernel]\nenabled = false\n[chip]\ncredit_bits_per_byte = 4\n");
        let chip = SourceCredit::of(&c, SourceKind::Atecc608a, 0);
        assert_eq!(chip.bits_per_byte(1), 0);
        assert!(chip.never.as_deref().unwrap().contains("off"));
    }
}
