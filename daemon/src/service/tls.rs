//! The service's verbs for the TLS key in the chip (`api.tls_slot`): a new key
//! (`lokey device keygen --tls`) and a certificate signing request for an organisation's CA
//! (`lokey device csr`). The key never leaves the chip: the request is signed by it.

use super::{Caller, IdentityReport, Service, ServiceError};

/// A certificate signing request, as `lokey device csr` prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CsrReport {
    /// The request, PEM (PKCS #10).
    pub pem: String,
    /// The key's slot.
    pub slot: u8,
    /// The key's pin, `sha256:` and the SHA-256 of its DER SubjectPublicKeyInfo.
    pub pin: String,
    /// The names asked for (subjectAltName).
    pub names: Vec<String>,
}

impl Service {
    fn tls_slot(&self) -> Result<u8, ServiceError> {
        let config = self.config();
        let slot = u8::try_from(config.api.tls_slot)
            .map_err(|_| ServiceError::InvalidArgument("api.tls_slot is not a slot".into()))?;
        if config.beacon.enabled && u64::from(slot) == config.beacon.slot {
            return Err(ServiceError::InvalidArgument(format!(
                "api.tls_slot = {slot} is the beacon's slot (beacon.slot); the TLS key needs a \
                 slot of its own"
            )));
        }
        Ok(slot)
    }

    /// Creates a new key in the TLS slot, destroying the old one (`confirm`: the chip's serial
    /// number). When lokeyd serves TLS from that slot, the new key and a certificate for it
    /// are served at once (a certificate from `api.tls_cert` no longer matches: the old one
    /// stays served until a CA has signed the new key's request).
    ///
    /// # Errors
    ///
    /// As [`Service::keygen`]; `InvalidArgument` when the TLS slot is the beacon's.
    pub fn tls_keygen(
        &self,
        caller: Caller,
        confirm: &str,
    ) -> Result<IdentityReport, ServiceError> {
        let slot = self.tls_slot()?;
        let report = self.new_key(caller, confirm, slot)?;
        if let Some(tls) = self.tls()
            && self.config().api.tls == "chip"
        {
            // Logged either way; the key exists whether or not a certificate could follow.
            let _ = tls.reload(&self.config());
        }
        Ok(report)
    }

    /// A certificate signing request for the TLS key, signed by the chip: `names` (default
    /// `api.tls_names`) as subjectAltName, `common_name` (default the first name).
    ///
    /// # Errors
    ///
    /// `Unsupported` without a chip; `Unavailable` when the slot holds no key or the chip does
    /// not answer; `InvalidArgument` for names rcgen refuses.
    pub fn tls_csr(
        &self,
        names: Vec<String>,
        common_name: Option<String>,
    ) -> Result<CsrReport, ServiceError> {
        let slot = self.tls_slot()?;
        let chip = self.chip()?;
        let names = if names.is_empty() {
            self.config().api.tls_names.clone()
        } else {
            names
        };
        let common_name = common_name
            .or_else(|| names.first().cloned())
            .unwrap_or_else(|| "lokey".into());
        let (pem, pin) = crate::tls::csr(&chip.chip, slot, &names, &common_name).map_err(|e| {
            if e.to_string().contains("no public key") {
                ServiceError::Unavailable(format!(
                    "{e:#}; create it with `lokey device keygen --tls`"
                ))
            } else if e.to_string().contains("names") {
                ServiceError::InvalidArgument(format!("{e:#}"))
            } else {
                ServiceError::Unavailable(format!("{e:#}"))
            }
        })?;
        Ok(CsrReport {
            pem,
            slot,
            pin: pin.to_string(),
            names,
        })
    }
}
