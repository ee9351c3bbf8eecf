//! `[[source]]`: the entropy sources as a list, each a table with a unique `name`, a `kind`
//! and that kind's settings.
//!
//! # Contract
//!
//! - Kinds: `atecc608a` (`bus`, `address`), `emulator` (`bus`, `address`,
//!   `emulate_faults`: emulators with the same `bus` share one emulated bus), `hwrng` (`path`,
//!   default `/dev/hwrng`) and `device` (`path`, required: any character device or FIFO,
//!   such as a USB TRNG at `/dev/ttyACM0`). Every kind takes `min_entropy` and
//!   `credit_bits_per_byte`.
//! - Each key is checked against [`SOURCE_FIELDS`] (type and range, as [`super::FIELDS`]
//!   checks the sections); a key another kind takes is refused with the kinds that take it;
//!   names are unique and made of `a-z 0-9 _ -`; two chips on one bus need two addresses.
//! - The list and the `[chip]`/`[hwrng]` sections are two forms of one setting: giving both
//!   (in the file, or a `chip.*`/`hwrng.*` environment variable or flag with a list) is an
//!   error. Without a list the sections mean what they always meant.
//! - A listed source is wanted: the daemon refuses to start when it cannot be opened (no
//!   `auto` fallback from hardware to the emulator).

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Value;

use super::{Error, Field, Kind, Origin, check_value, edit_distance};

/// The kinds a `[[source]]` may be.
pub const SOURCE_KINDS: &[&str] = &["atecc608a", "emulator", "hwrng", "device"];

/// One `[[source]]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Unique name: in status, metrics, the status page and `lokey status`.
    pub name: String,
    /// One of [`SOURCE_KINDS`].
    pub kind: String,
    /// I2C bus (`atecc608a`: `/dev/i2c-<bus>`; `emulator`: the emulated bus it shares).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<u64>,
    /// 7-bit I2C address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<u64>,
    /// Device node (`hwrng`, `device`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Emulator faults active at start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emulate_faults: Vec<String>,
    /// Claimed min-entropy per byte, for the health tests' cutoffs.
    #[serde(default = "full_entropy")]
    pub min_entropy: f64,
    /// Bits credited to the kernel per byte; unset: `kernel.bits_per_byte`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_bits_per_byte: Option<u64>,
}

fn full_entropy() -> f64 {
    8.0
}

impl SourceConfig {
    /// The I2C bus (default 1).
    pub fn bus(&self) -> u64 {
        self.bus.unwrap_or(1)
    }

    /// The 7-bit address (default 0x60).
    pub fn address(&self) -> u64 {
        self.address.unwrap_or(0x60)
    }
}

/// Every key of a `[[source]]` table, with the kinds that take it (empty: every kind).
pub const SOURCE_FIELDS: &[(Field, &[&str])] = &[
    (
        Field {
            path: "source.name",
            kind: Kind::Str,
            env: &[],
            doc: "Required. The source's unique name (a-z, 0-9, _ and -), shown in status, \
                  metrics, the status page and lokey status.",
        },
        &[],
    ),
    (
        Field {
            path: "source.kind",
            kind: Kind::Choice(SOURCE_KINDS),
            env: &[],
            doc: "Required. atecc608a: a chip on /dev/i2c-<bus>; emulator: an emulated chip \
                  (never credited); hwrng: the kernel's hardware RNG device; device: any \
                  character device or FIFO (a terminal is put into raw mode).",
        },
        &[],
    ),
    (
        Field {
            path: "source.bus",
            kind: Kind::Int { min: 0, max: 255 },
            env: &[],
            doc: "I2C bus number (default 1). Chips on one bus are driven by one thread that \
                  keeps each busy; emulators with the same bus share one emulated bus.",
        },
        &["atecc608a", "emulator"],
    ),
    (
        Field {
            path: "source.address",
            kind: Kind::Int {
                min: 0x08,
                max: 0x77,
            },
            env: &[],
            doc: "7-bit I2C address (default 0x60); unique on its bus.",
        },
        &["atecc608a", "emulator"],
    ),
    (
        Field {
            path: "source.path",
            kind: Kind::Path,
            env: &[],
            doc: "Device node: hwrng defaults to /dev/hwrng; device requires it.",
        },
        &["hwrng", "device"],
    ),
    (
        Field {
            path: "source.emulate_faults",
            kind: Kind::ChoiceList(crate::atecc::FAULTS),
            env: &[],
            doc: "Emulator faults active at start (names in lokeyd(8)).",
        },
        &["emulator"],
    ),
    (
        Field {
            path: "source.min_entropy",
            kind: Kind::Real { above: 0, max: 8 },
            env: &[],
            doc: "Claimed min-entropy in bits per byte (default 8), for the health tests' \
                  cutoffs, as chip.min_entropy.",
        },
        &[],
    ),
    (
        Field {
            path: "source.credit_bits_per_byte",
            kind: Kind::Int { min: 0, max: 8 },
            env: &[],
            doc: "Bits credited to the kernel per byte of its output; unset: \
                  kernel.bits_per_byte. The emulator is never credited.",
        },
        &[],
    ),
];

/// Checks the `[[source]]` array of a file; `origins[i]` is where table `i` starts.
///
/// # Errors
///
/// [`Error::UnknownKey`], [`Error::Invalid`] or [`Error::Source`] naming the table.
pub(super) fn parse(value: Value, origins: &[Origin]) -> Result<Vec<SourceConfig>, Error> {
    let origin_of = |i: usize| origins.get(i).cloned().unwrap_or(Origin::Default);
    let Value::Array(tables) = value else {
        return Err(Error::Source {
            origin: origin_of(0),
            message: "`source` must be an array of tables: write each as [[source]]".into(),
        });
    };
    let mut list = Vec::new();
    let mut names = BTreeSet::new();
    let mut addresses = BTreeSet::new();
    for (i, table) in tables.into_iter().enumerate() {
        let origin = origin_of(i);
        let fail = |message: String| Error::Source {
            origin: origin.clone(),
            message,
        };
        let Value::Table(table) = table else {
            return Err(fail("each source must be a table ([[source]])".into()));
        };
        let kind = table.get("kind").and_then(Value::as_str).unwrap_or("");
        let mut checked = toml::Table::new();
        for (key, value) in table.clone() {
            let path = format!("source.{key}");
            let Some((field, kinds)) = SOURCE_FIELDS.iter().find(|(f, _)| f.path == path) else {
                let hint = SOURCE_FIELDS
                    .iter()
                    .map(|(f, _)| (edit_distance(f.path, &path), f.path))
                    .filter(|(d, _)| *d <= 3)
                    .min()
                    .map(|(_, p)| p.to_string());
                return Err(Error::UnknownKey {
                    origin: origin.clone(),
                    key: path,
                    hint,
                });
            };
            let value = check_value(field, value, &origin)?;
            if !kinds.is_empty() && SOURCE_KINDS.contains(&kind) && !kinds.contains(&kind) {
                return Err(fail(format!(
                    "`{key}` does not apply to a source of kind {kind} (only to {})",
                    kinds.join(", ")
                )));
            }
            checked.insert(key, value);
        }
        for required in ["name", "kind"] {
            if !checked.contains_key(required) {
                return Err(fail(format!("a [[source]] needs a `{required}`")));
            }
        }
        let source = SourceConfig::deserialize(Value::Table(checked))
            .map_err(|e| fail(format!("invalid source: {e}")))?;
        let name_ok = !source.name.is_empty()
            && source
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(fail(format!(
                "source name {:?}: use a-z, 0-9, _ and - (it is a metrics label)",
                source.name
            )));
        }
        if !names.insert(source.name.clone()) {
            return Err(fail(format!(
                "two sources are named {:?}: names must be unique",
                source.name
            )));
        }
        if source.kind == "device" && source.path.is_none() {
            return Err(fail(format!(
                "source {:?} of kind device needs a `path`",
                source.name
            )));
        }
        if matches!(source.kind.as_str(), "atecc608a" | "emulator") {
            // A hardware bus and an emulated bus with the same number are different buses.
            let key = (source.kind == "emulator", source.bus(), source.address());
            if !addresses.insert(key) {
                return Err(fail(format!(
                    "source {:?}: another {} on bus {} has address {:#04x}; give each chip on a \
                     bus its own address (lokey device set-address) or put them on different \
                     buses (an I2C multiplexer)",
                    source.name,
                    source.kind,
                    source.bus(),
                    source.address()
                )));
            }
        }
        list.push(source);
    }
    if list.is_empty() {
        return Err(Error::Source {
            origin: origin_of(0),
            message: "an empty source list: give at least one [[source]]".into(),
        });
    }
    Ok(list)
}
