//! Why a governed scope denies everything, in words: the artifacts that were refused and
//! what they claimed, and live bundles whose grants have all ended.

use super::*;

/// What a refused artifact says about itself, read without trusting it, so that a deny-all
/// scope can be explained by the artifact that was meant for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Claim {
    Bundle {
        bundle_id: String,
        serial: u64,
        scopes: Vec<ScopePath>,
    },
    BreakGlass {
        scopes: Vec<ScopePath>,
    },
    /// A revocation names no scope: it explains nothing about one.
    Revocation,
}

impl Claim {
    /// None when the envelope or its payload does not parse.
    pub(super) fn of(bytes: &[u8]) -> Option<Self> {
        let envelope = Envelope::parse(bytes).ok()?;
        Some(match envelope.kind().ok()? {
            ArtifactKind::Bundle => Self::of_bundle(&Bundle::from_payload(&envelope.payload).ok()?),
            ArtifactKind::BreakGlass => Self::BreakGlass {
                scopes: BreakGlass::from_payload(&envelope.payload).ok()?.scopes,
            },
            ArtifactKind::Revocation => Self::Revocation,
        })
    }

    pub(super) fn of_bundle(b: &Bundle) -> Self {
        Self::Bundle {
            bundle_id: b.bundle_id.clone(),
            serial: b.serial,
            scopes: b.scopes.clone(),
        }
    }

    pub(super) fn names(&self, scope: &ScopePath) -> bool {
        match self {
            Self::Bundle { scopes, .. } | Self::BreakGlass { scopes } => scopes.contains(scope),
            Self::Revocation => false,
        }
    }
}

/// The causes of refusal that an explanation spells out; the rest are quoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    Expired { not_after: u64 },
    NotYetValid { not_before: u64 },
    Revoked { by: ArtifactId },
    Other,
}

impl Cause {
    pub(super) fn of(error: &ArtifactError) -> Self {
        match error {
            ArtifactError::Expired { not_after, .. } => Self::Expired {
                not_after: *not_after,
            },
            ArtifactError::NotYetValid { not_before, .. } => Self::NotYetValid {
                not_before: *not_before,
            },
            ArtifactError::KeyRevoked { by, .. }
            | ArtifactError::BundleRevoked { by, .. }
            | ArtifactError::ArtifactRevoked { by, .. }
            | ArtifactError::DigestRevoked { by, .. } => Self::Revoked { by: *by },
            _ => Self::Other,
        }
    }

    /// A bounded name for metrics: `expired`, `not_yet_valid`, `revoked` or `other`.
    pub(super) fn kind(self) -> &'static str {
        match self {
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::Revoked { .. } => "revoked",
            Self::Other => "other",
        }
    }

    pub(super) fn of_accept(error: &AcceptError) -> Self {
        match error {
            AcceptError::Refused(e) => Self::of(e),
            AcceptError::State(_) => Self::Other,
        }
    }
}

/// A refused artifact, with what is needed to explain the scopes it was meant for.
#[derive(Debug, Clone)]
pub(super) struct Refusal {
    pub(super) path: PathBuf,
    pub(super) reason: String,
    pub(super) claim: Option<Claim>,
    pub(super) cause: Cause,
}

impl Refusal {
    pub(super) fn new(path: PathBuf, claim: Option<Claim>, reason: String, cause: Cause) -> Self {
        Self {
            path,
            reason,
            claim,
            cause,
        }
    }

    /// A refusal for the artifact error `error`, with the cause it names.
    pub(super) fn of_artifact(path: PathBuf, claim: Option<Claim>, error: &ArtifactError) -> Self {
        Self::new(path, claim, error.to_string(), Cause::of(error))
    }

    /// One line on why this refusal left the scopes it names without what it was meant to
    /// bring them.
    pub(super) fn explain(&self) -> String {
        let file = self.path.display();
        match (&self.claim, self.cause) {
            (
                Some(Claim::Bundle {
                    bundle_id, serial, ..
                }),
                Cause::Expired { not_after },
            ) => {
                format!(
                    "bundle {bundle_id:?} serial {serial} expired at {}",
                    format_time(not_after)
                )
            }
            (
                Some(Claim::Bundle {
                    bundle_id, serial, ..
                }),
                Cause::NotYetValid { not_before },
            ) => {
                format!(
                    "bundle {bundle_id:?} serial {serial} is not valid before {}",
                    format_time(not_before)
                )
            }
            (
                Some(Claim::Bundle {
                    bundle_id, serial, ..
                }),
                Cause::Revoked { by },
            ) => {
                format!("bundle {bundle_id:?} serial {serial} revoked by {by}")
            }
            (Some(Claim::BreakGlass { .. }), Cause::Expired { not_after }) => {
                format!("break-glass {file} expired at {}", format_time(not_after))
            }
            (Some(Claim::BreakGlass { .. }), Cause::Revoked { by }) => {
                format!("break-glass {file} revoked by {by}")
            }
            (None, _) => format!(
                "{file}: refused before the scopes it names could be read (it may be meant for this one): {}",
                self.reason
            ),
            _ => format!("{file}: refused: {}", self.reason),
        }
    }
}

/// For each governed scope with no live grant, why: the live bundles naming it whose
/// grants have all lapsed, and the refused artifacts meant for it. Refused artifacts whose
/// scopes cannot be read are listed for every such scope, since any of them may be the one
/// that was meant for it.
pub(super) fn explain(
    policy: &Policy,
    live: &[(&Path, &VerifiedBundle)],
    refusals: &[Refusal],
    now: SystemTime,
) -> BTreeMap<ScopePath, Vec<String>> {
    let now = unix_seconds(now);
    let mut out = BTreeMap::new();
    for (scope, spec) in &policy.scopes {
        if !spec.grants.is_empty() {
            continue;
        }
        let mut why = Vec::new();
        for (_, verified) in live.iter().filter(|(_, v)| v.bundle.scopes.contains(scope)) {
            let b = &verified.bundle;
            let last = b
                .grants
                .iter()
                .map(|g| g.not_after.map_or(b.not_after, |t| t.min(b.not_after)))
                .max();
            why.push(match last {
                None => format!(
                    "bundle {:?} serial {} is live but grants nothing",
                    b.bundle_id, b.serial
                ),
                Some(t) if t < now => format!(
                    "bundle {:?} serial {} is live but all its grants have expired, the last at {}",
                    b.bundle_id,
                    b.serial,
                    format_time(t)
                ),
                // Only the skew allowance after the bundle's end keeps it accepted.
                Some(t) => format!(
                    "bundle {:?} serial {} has no grant in force (they end at {})",
                    b.bundle_id,
                    b.serial,
                    format_time(t)
                ),
            });
        }
        for refusal in refusals {
            match &refusal.claim {
                Some(claim) if claim.names(scope) => why.push(refusal.explain()),
                None => why.push(refusal.explain()),
                Some(_) => {}
            }
        }
        if why.is_empty() {
            why.push("no accepted bundle names this scope".to_owned());
        }
        out.insert(scope.clone(), why);
    }
    out
}
