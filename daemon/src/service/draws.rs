//! The service's verbs for draws: register one, and look one up (pending, decided with its
//! values and receipt, or undecidable), for REST (`/api/v1/draws`) and the socket alike.

use lokey::beacon::hex;
use lokey::draw::{self, Draw, Receipt};
use serde_json::{Map, Value, json};

use super::{PulseQuery, Service, ServiceError};
use crate::draws::RegisterError;

/// What a registration is answered with.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrawTicket {
    /// The draw's id, `chain-commitpulse-leafindex`.
    pub id: String,
    /// Its leaf hash, hex: publish it before the deciding pulse.
    pub leaf: String,
    /// The beacon chain.
    pub chain_index: u64,
    /// The pulse whose commitment value will hold the draw's Merkle root.
    pub commit_pulse_index: u64,
    /// The pulse whose local random value decides the draw.
    pub pulse_index: u64,
    /// `pending`.
    pub status: &'static str,
}

/// Parses a registration body: the kind, the generator's own parameters, `label` (required)
/// and `nonce` (optional hex). `strings` takes `charset` (a name) or `characters`.
///
/// # Errors
///
/// [`ServiceError::InvalidArgument`] naming the field.
pub fn parse_request(body: &Value) -> Result<(Draw, String, String), ServiceError> {
    let bad = |m: String| ServiceError::InvalidArgument(m);
    let Some(map) = body.as_object() else {
        return Err(bad("the body must be a JSON object".into()));
    };
    let mut map: Map<String, Value> = map.clone();
    let label = match map.remove("label") {
        Some(Value::String(l)) if l.len() <= draw::MAX_LABEL => l,
        Some(Value::String(_)) => {
            return Err(bad(format!(
                "label is longer than {} bytes",
                draw::MAX_LABEL
            )));
        }
        Some(_) => return Err(bad("label must be a string".into())),
        None => return Err(bad("label is required: say what the draw is for".into())),
    };
    let nonce = match map.remove("nonce") {
        None => String::new(),
        Some(Value::String(n))
            if n.len() <= 2 * draw::MAX_NONCE && lokey::beacon::from_hex(&n).is_some() =>
        {
            n.to_ascii_lowercase()
        }
        Some(_) => {
            return Err(bad(format!(
                "nonce must be hex, at most {} bytes",
                draw::MAX_NONCE
            )));
        }
    };
    if map.get("kind") == Some(&Value::String("strings".into())) {
        match (map.remove("charset"), map.get("characters")) {
            (Some(_), Some(_)) => return Err(bad("give charset or characters, not both".into())),
            (Some(Value::String(name)), None) => {
                let set = lokey::generate::charset(&name).ok_or_else(|| {
                    bad(format!(
                        "charset {name:?} is not one of {}",
                        lokey::generate::CHARSETS.join(", ")
                    ))
                })?;
                map.insert(
                    "characters".into(),
                    Value::String(set.into_iter().collect()),
                );
            }
            (Some(_), None) => return Err(bad("charset must be a string".into())),
            (None, Some(_)) => {}
            (None, None) => {
                map.insert(
                    "characters".into(),
                    Value::String(
                        lokey::generate::charset("alnum")
                            .unwrap_or_default()
                            .into_iter()
                            .collect(),
                    ),
                );
            }
        }
    }
    let draw: Draw = serde_json::from_value(Value::Object(map)).map_err(|e| {
        bad(format!(
            "{e} (kinds: integers, sample, shuffle, decimal-fractions, strings, uuids)"
        ))
    })?;
    draw.check().map_err(bad)?;
    Ok((draw, label, nonce))
}

impl Service {
    fn draw_book(&self) -> Result<&crate::draws::DrawBook, ServiceError> {
        self.inner.parts.draws.as_deref().ok_or_else(|| {
            ServiceError::Unsupported(
                "draws need the beacon, which is off or cannot run here".into(),
            )
        })
    }

    /// Registers a draw for the beacon's next pulse; returns once it is on disk.
    ///
    /// # Errors
    ///
    /// [`ServiceError::InvalidArgument`] for a bad body; [`ServiceError::Unsupported`]
    /// without the beacon; [`ServiceError::Unavailable`] before the beacon has a chain or when
    /// the store fails.
    pub fn register_draw(&self, body: &Value) -> Result<DrawTicket, ServiceError> {
        let (draw, label, nonce) = parse_request(body)?;
        let book = self.draw_book()?;
        let r = book.register(draw, label, nonce).map_err(|e| match e {
            RegisterError::NotOpen => ServiceError::Unavailable(e.to_string()),
            RegisterError::Store(_) => ServiceError::Unavailable(e.to_string()),
        })?;
        let reg = &r.registration;
        Ok(DrawTicket {
            id: reg.id(),
            leaf: hex(&r.leaf),
            chain_index: reg.chain_index,
            commit_pulse_index: reg.commit_pulse_index,
            pulse_index: reg.commit_pulse_index + 1,
            status: "pending",
        })
    }

    /// A draw: `{"id", "status": "pending", "pulseIndex"}`, `{"id", "status": "decided",
    /// "values", "receipt"}` or `{"id", "status": "undecidable", "reason"}`.
    ///
    /// # Errors
    ///
    /// [`ServiceError::NotFound`] for an id that names no draw.
    pub fn draw(&self, id: &str) -> Result<Value, ServiceError> {
        let book = self.draw_book()?;
        let numbers: Option<Vec<u64>> = id.split('-').map(|p| p.parse().ok()).collect();
        let Some(&[chain, pulse, index]) = numbers.as_deref() else {
            return Err(ServiceError::InvalidArgument(format!(
                "{id:?} is not a draw id (chain-pulse-index, as the registration answered)"
            )));
        };
        let index =
            u32::try_from(index).map_err(|_| ServiceError::NotFound(format!("no draw {id}")))?;
        let internal = |e: String| ServiceError::Internal(e);
        let (leaf, registration) = book
            .store()
            .draws()
            .get(chain, pulse, index)
            .map_err(|e| internal(e.to_string()))?
            .ok_or_else(|| ServiceError::NotFound(format!("no draw {id}")))?;
        let found = |q| match self.pulse(q) {
            Ok(p) => Ok(Some(p)),
            Err(ServiceError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        };
        let commit = found(PulseQuery::Index { chain, pulse })?;
        let deciding = found(PulseQuery::Index {
            chain,
            pulse: pulse + 1,
        })?;
        let (Some(commit), Some(deciding)) = (commit, deciding) else {
            let report = self.beacon_report().unwrap_or_default();
            let reason = if report.chain_index.is_some_and(|c| c != chain) {
                Some(format!(
                    "chain {chain} ended before pulse {} was published (a new chain began: \
                     see its first pulse's status), so nothing will ever decide this draw",
                    pulse + 1
                ))
            } else if report.pulse_index.is_some_and(|p| p > pulse) {
                Some(format!(
                    "pulse {} or {} of chain {chain} is no longer kept",
                    pulse,
                    pulse + 1
                ))
            } else {
                None
            };
            return Ok(match reason {
                Some(reason) => json!({"id": id, "status": "undecidable", "reason": reason}),
                None => json!({
                    "id": id,
                    "status": "pending",
                    "chainIndex": chain,
                    "pulseIndex": pulse + 1,
                }),
            });
        };
        let leaves = book.decided_leaves(chain, pulse).map_err(internal)?;
        let root = draw::merkle_root(&leaves);
        if root != commit.commitment || leaves.get(index as usize) != Some(&leaf) {
            return Ok(json!({
                "id": id,
                "status": "undecidable",
                "reason": format!(
                    "pulse {chain}/{pulse} does not commit to the registered draws (its batch \
                     was lost in a crash)"
                ),
            }));
        }
        let seed = draw::seed(&deciding.local_random, &root, &leaf);
        let values = draw::values(&registration.draw, &seed).map_err(internal)?;
        let receipt = Receipt {
            version: draw::VERSION,
            id: registration.id(),
            leaf: hex(&leaf),
            tree_size: leaves.len() as u64,
            path: draw::inclusion_path(&leaves, index as usize)
                .iter()
                .map(|h| hex(h))
                .collect(),
            commit_pulse: commit.to_json(),
            deciding_pulse: deciding.to_json(),
            key_id: hex(&commit.key_id),
            seed: hex(&seed),
            values: values.clone(),
            registration,
        };
        Ok(json!({
            "id": id,
            "status": "decided",
            "values": values,
            "receipt": receipt,
        }))
    }
}
