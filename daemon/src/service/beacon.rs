//! The service's verbs for the chip's identity and the beacon: `identity`, `keygen` and the
//! pulse look-ups that REST (`/api/v1/identity`, `/api/v1/beacon/…`) and the socket share.

use lokey::beacon::{ChainInfo, PublicKey, Pulse, hex};

use super::{Caller, Service, ServiceError, confirmed_serial};
use crate::beacon::{BeaconReport, identity, keygen};

/// Which pulse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PulseQuery {
    /// The newest.
    Last,
    /// By chain and pulse index.
    Index {
        /// Chain index.
        chain: u64,
        /// Pulse index.
        pulse: u64,
    },
    /// The pulse at this Unix time in milliseconds, or the closest one.
    At(u64),
    /// The newest strictly before.
    Before(u64),
    /// The oldest strictly after.
    After(u64),
}

/// The signing key, as `GET /api/v1/identity` and `lokey device pubkey` show it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityReport {
    /// The chip's serial number, hex.
    pub serial_number: String,
    /// The key slot.
    pub slot: u8,
    /// `X‖Y`, hex.
    pub public_key: String,
    /// PEM SubjectPublicKeyInfo.
    pub public_key_pem: String,
    /// SHA-256 of the DER SubjectPublicKeyInfo, hex.
    pub key_id: String,
    /// The same as a pin: `sha256:<keyId>`.
    pub pin: String,
    /// Whether the key is an emulator's software key.
    pub emulated: bool,
}

impl IdentityReport {
    pub(super) fn new(
        serial: [u8; 9],
        slot: u8,
        key: &PublicKey,
        emulated: bool,
    ) -> IdentityReport {
        let key_id = hex(&key.key_id());
        IdentityReport {
            serial_number: hex(&serial),
            slot,
            public_key: hex(&key.xy()),
            public_key_pem: key.pem(),
            pin: format!("sha256:{key_id}"),
            key_id,
            emulated,
        }
    }
}

impl Service {
    fn beacon_slot(&self) -> u8 {
        u8::try_from(self.config().beacon.slot).unwrap_or(0)
    }

    /// The chip's serial number and the public key of the beacon's slot. Blocks for a few chip
    /// exchanges.
    ///
    /// # Errors
    ///
    /// [`ServiceError::Unsupported`] without a chip; [`ServiceError::Unavailable`] when the
    /// chip does not answer or the slot holds no key.
    pub fn identity(&self) -> Result<IdentityReport, ServiceError> {
        let chip = self.chip()?;
        let slot = self.beacon_slot();
        let id = identity(&chip.chip, slot, chip.faults.is_some()).map_err(|e| {
            ServiceError::Unavailable(format!(
                "no public key in slot {slot} ({e}); create one with `lokey device keygen`"
            ))
        })?;
        Ok(IdentityReport::new(id.serial, slot, &id.key, id.emulated))
    }

    /// Creates a new key in the beacon's slot, destroying the old one: `confirm` must be the
    /// chip's serial number. The beacon starts a new chain with it.
    ///
    /// # Errors
    ///
    /// [`ServiceError::PermissionDenied`] for a caller who may not configure;
    /// [`ServiceError::InvalidArgument`] for a wrong serial number;
    /// [`ServiceError::Unavailable`] when the chip refuses or does not answer.
    pub fn keygen(&self, caller: Caller, confirm: &str) -> Result<IdentityReport, ServiceError> {
        let report = self.new_key(caller, confirm, self.beacon_slot())?;
        if let Some(beacon) = &self.inner.parts.beacon {
            beacon.key_changed();
        }
        Ok(report)
    }

    /// Creates a new key in `slot` (the old one is destroyed) once the caller may and
    /// `confirm` is the chip's serial number: what `keygen` and `tls_keygen` share.
    pub(super) fn new_key(
        &self,
        caller: Caller,
        confirm: &str,
        slot: u8,
    ) -> Result<IdentityReport, ServiceError> {
        caller.require_admin("creating a key in the chip")?;
        let chip = self.chip()?;
        let serial = confirmed_serial(confirm)?;
        tracing::warn!(
            ?caller,
            "creating a new key in slot {slot}; the old key is destroyed"
        );
        let key = keygen(&chip.chip, serial, slot).map_err(|e| {
            if e.contains("serial") {
                ServiceError::InvalidArgument(e)
            } else {
                ServiceError::Unavailable(format!("the chip refused or did not answer: {e}"))
            }
        })?;
        tracing::warn!("new key in slot {slot}: key id {}", hex(&key.key_id()));
        Ok(IdentityReport::new(
            serial,
            slot,
            &key,
            chip.faults.is_some(),
        ))
    }

    fn beacon(&self) -> Result<&crate::beacon::Beacon, ServiceError> {
        match (&self.inner.parts.beacon, &self.inner.parts.beacon_problem) {
            (Some(b), _) => Ok(b),
            (None, Some(why)) => Err(ServiceError::Unsupported(why.clone())),
            (None, None) => Err(ServiceError::Unsupported(
                "the beacon is off (beacon.enabled = false)".into(),
            )),
        }
    }

    /// The beacon's state for status, health and metrics; `None` when it is off.
    pub fn beacon_report(&self) -> Option<BeaconReport> {
        match (&self.inner.parts.beacon, &self.inner.parts.beacon_problem) {
            (Some(b), _) => Some(b.report()),
            (None, Some(why)) => Some(BeaconReport {
                problem: Some(why.clone()),
                ..BeaconReport::default()
            }),
            (None, None) => None,
        }
    }

    /// A pulse.
    ///
    /// # Errors
    ///
    /// [`ServiceError::Unsupported`] when the beacon is off; [`ServiceError::Insufficient`]
    /// (not found) when there is no such pulse; [`ServiceError::Internal`] for a store error.
    pub fn pulse(&self, query: PulseQuery) -> Result<Pulse, ServiceError> {
        let beacon = self.beacon()?;
        let pulses = beacon.pulses();
        let newest = beacon.newest();
        let found = match query {
            PulseQuery::Last => match newest {
                Some((chain, pulse)) => pulses.pulse(chain, pulse),
                None => Ok(None),
            },
            PulseQuery::Index { chain, pulse } => pulses.pulse(chain, pulse),
            PulseQuery::At(ms) => pulses.at(ms),
            PulseQuery::Before(ms) => pulses.before(ms),
            PulseQuery::After(ms) => pulses.after(ms),
        }
        .map_err(|e| ServiceError::Internal(e.to_string()))?
        .filter(|p| visible(p, newest));
        found.ok_or_else(|| ServiceError::NotFound(format!("no pulse {}", describe(query))))
    }

    /// Up to `count` pulses of `chain` from index `from` on.
    ///
    /// # Errors
    ///
    /// As [`Service::pulse`].
    pub fn pulses(&self, chain: u64, from: u64, count: usize) -> Result<Vec<Pulse>, ServiceError> {
        let beacon = self.beacon()?;
        let newest = beacon.newest();
        let mut run = beacon
            .pulses()
            .run(chain, from, count)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        run.retain(|p| visible(p, newest));
        Ok(run)
    }

    /// A chain's parameters.
    ///
    /// # Errors
    ///
    /// As [`Service::pulse`].
    pub fn chain(&self, chain: u64) -> Result<ChainInfo, ServiceError> {
        self.beacon()?
            .pulses()
            .chain(chain)
            .map_err(|e| ServiceError::Internal(e.to_string()))?
            .ok_or_else(|| ServiceError::NotFound(format!("no chain {chain}")))
    }
}

/// Whether `p` is on disk: no newer than the newest published pulse (chains only grow).
fn visible(p: &Pulse, newest: Option<(u64, u64)>) -> bool {
    newest.is_some_and(|n| (p.chain_index, p.pulse_index) <= n)
}

fn describe(query: PulseQuery) -> String {
    match query {
        PulseQuery::Last => "yet: the beacon has published nothing".into(),
        PulseQuery::Index { chain, pulse } => format!("{pulse} in chain {chain}"),
        PulseQuery::At(ms) => format!("near {ms} ms"),
        PulseQuery::Before(ms) => format!("before {ms} ms"),
        PulseQuery::After(ms) => format!("after {ms} ms"),
    }
}
