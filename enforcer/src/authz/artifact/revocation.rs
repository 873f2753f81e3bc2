//! Revocations: withdraw an artifact by id, or everything a key signed.

use super::*;

/// What a revocation withdraws.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevocationTarget {
    /// Every bundle with this bundle id, from any issuer, at any serial.
    Bundle(String),
    /// Exactly one artifact.
    Artifact(ArtifactId),
    /// A program: no bundle granting it is accepted any more.
    Digest(FileDigest),
    /// A signing key: no artifact carrying its signature is accepted any more.
    Key(KeyId),
}

impl fmt::Display for RevocationTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bundle(id) => write!(f, "bundle id {id:?}"),
            Self::Artifact(id) => write!(f, "artifact {id}"),
            Self::Digest(d) => write!(f, "digest sha256:{d}"),
            Self::Key(k) => write!(f, "key {k}"),
        }
    }
}

/// The content of a revocation. Revocations never expire and only ever add to what is
/// revoked, so replaying an old one is harmless and they need no serial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub issuer: String,
    /// Unix seconds; for the record.
    pub issued_at: u64,
    pub reason: Option<String>,
    pub targets: Vec<RevocationTarget>,
}

#[derive(Serialize, Deserialize)]
struct RevocationWire {
    issuer: String,
    issued_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    revoke: Vec<TargetWire>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TargetWire {
    BundleId(String),
    Artifact(String),
    Digest(String),
    KeyId(String),
}

impl Revocation {
    /// Parses and checks a revocation payload.
    pub fn from_payload(payload: &[u8]) -> Result<Self, ArtifactError> {
        let wire: RevocationWire = from_json(payload, "revocation payload")?;
        let targets = wire
            .revoke
            .into_iter()
            .enumerate()
            .map(|(index, t)| {
                let location = || format!("revocation target {index}");
                Ok(match t {
                    TargetWire::BundleId(id) => RevocationTarget::Bundle(id),
                    TargetWire::Artifact(id) => RevocationTarget::Artifact(id.parse()?),
                    TargetWire::Digest(d) => RevocationTarget::Digest(parse_digest(&d, location)?),
                    TargetWire::KeyId(k) => RevocationTarget::Key(
                        k.parse()
                            .map_err(|e| field_error(location(), format!("{e}")))?,
                    ),
                })
            })
            .collect::<Result<_, ArtifactError>>()?;
        let revocation = Self {
            issuer: wire.issuer,
            issued_at: wire.issued_at,
            reason: wire.reason,
            targets,
        };
        revocation.validate()?;
        Ok(revocation)
    }

    /// The payload bytes to sign; refuses a revocation that [`Revocation::from_payload`]
    /// would.
    pub fn to_payload(&self) -> Result<Vec<u8>, ArtifactError> {
        self.validate()?;
        let wire = RevocationWire {
            issuer: self.issuer.clone(),
            issued_at: self.issued_at,
            reason: self.reason.clone(),
            revoke: self
                .targets
                .iter()
                .map(|t| match t {
                    RevocationTarget::Bundle(id) => TargetWire::BundleId(id.clone()),
                    RevocationTarget::Artifact(id) => TargetWire::Artifact(id.to_string()),
                    RevocationTarget::Digest(d) => TargetWire::Digest(format!("sha256:{d}")),
                    RevocationTarget::Key(k) => TargetWire::KeyId(k.to_string()),
                })
                .collect(),
        };
        serde_json::to_vec(&wire).map_err(|e| malformed("revocation payload", e))
    }

    pub fn validate(&self) -> Result<(), ArtifactError> {
        check_label("issuer", &self.issuer)?;
        check_time(|| "issued_at".into(), self.issued_at)?;
        if let Some(reason) = &self.reason {
            check_text(|| "reason".to_owned(), reason)?;
        }
        if self.targets.is_empty() {
            return Err(field_error(
                "revoke",
                "a revocation must name at least one target",
            ));
        }
        for (index, target) in self.targets.iter().enumerate() {
            if let RevocationTarget::Bundle(id) = target {
                check_label(&format!("bundle_id in revocation target {index}"), id)?;
            }
        }
        Ok(())
    }
}
