//! Break-glass: a signed, time-boxed monitor mode for named scopes.

use super::*;

/// The content of a break-glass artifact: for a short, signed window, the named scopes run
/// in monitor mode (what would be denied is recorded, and allowed), then enforce again by
/// themselves. It grants no program: it suspends denial, for the record and for a while.
///
/// No serial: replaying one inside its window has the effect it already has, and outside
/// it grants nothing. How long a window may be is the trust store's decision, checked by
/// the verifier; here only its shape is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakGlass {
    /// Who declared the emergency; same syntax as a bundle's issuer.
    pub issuer: String,
    /// Unix seconds: valid from `not_before` to `not_after` inclusive, `not_before` first.
    pub not_before: u64,
    pub not_after: u64,
    pub scopes: Vec<ScopePath>,
    /// Why: required, because the audit trail must say why enforcement was suspended.
    pub reason: String,
}

#[derive(Serialize, Deserialize)]
pub(super) struct BreakGlassWire {
    issuer: String,
    not_before: u64,
    not_after: u64,
    scopes: Vec<String>,
    reason: String,
}

impl BreakGlass {
    /// Parses and checks a break-glass payload.
    pub fn from_payload(payload: &[u8]) -> Result<Self, ArtifactError> {
        let wire: BreakGlassWire = from_json(payload, "break-glass payload")?;
        let break_glass = Self {
            issuer: wire.issuer,
            not_before: wire.not_before,
            not_after: wire.not_after,
            scopes: wire
                .scopes
                .iter()
                .map(|s| s.parse())
                .collect::<Result<_, _>>()?,
            reason: wire.reason,
        };
        break_glass.validate()?;
        Ok(break_glass)
    }

    /// The wire form, unchecked (tests use it to write payloads `to_payload` refuses).
    pub(super) fn wire(&self) -> BreakGlassWire {
        BreakGlassWire {
            issuer: self.issuer.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
            scopes: self.scopes.iter().map(ToString::to_string).collect(),
            reason: self.reason.clone(),
        }
    }

    /// The payload bytes to sign; refuses a break-glass that [`BreakGlass::from_payload`]
    /// would.
    pub fn to_payload(&self) -> Result<Vec<u8>, ArtifactError> {
        self.validate()?;
        serde_json::to_vec(&self.wire()).map_err(|e| malformed("break-glass payload", e))
    }

    /// The rules that syntax alone does not catch.
    pub fn validate(&self) -> Result<(), ArtifactError> {
        check_label("issuer", &self.issuer)?;
        check_time(|| "not_before".into(), self.not_before)?;
        check_time(|| "not_after".into(), self.not_after)?;
        if self.not_before >= self.not_after {
            return Err(field_error(
                "validity",
                format!(
                    "not_before ({}) must be before not_after ({}): a break-glass window cannot be empty or inverted",
                    format_time(self.not_before),
                    format_time(self.not_after)
                ),
            ));
        }
        check_scopes(&self.scopes, "a break-glass")?;
        if self.reason.trim().is_empty() {
            return Err(field_error(
                "reason",
                "must not be empty: the record must say why enforcement was suspended",
            ));
        }
        check_text(|| "reason".to_owned(), &self.reason)
    }

    /// The length of the validity window in seconds.
    #[must_use]
    pub fn window(&self) -> u64 {
        self.not_after.saturating_sub(self.not_before)
    }
}
