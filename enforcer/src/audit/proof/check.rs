//! Checking a proof offline: every part against the others, and against the two things
//! the verifier brings (the host's public key and a trust store), never against anything
//! the proof says about itself.

use std::fmt;
use std::time::SystemTime;

use ed25519_dalek::VerifyingKey;

use super::{MAX_PROOF_BYTES, PROOF_FORMAT, ProofFile};
use crate::audit::chain::Unsealed;
use crate::audit::record::{Body, Record};
use crate::audit::tlog::{
    self, CheckpointError, CosignatureVerifier, NoteVerifier, NoteVerifiers, TreeHash, cosigned_by,
    verify_inclusion,
};
use crate::authz::artifact::{
    ArtifactError, ArtifactKind, Bundle, Envelope, ScopePath, format_time,
};
use crate::authz::trust::{KeyId, TrustStore};
use crate::authz::verify::{RevocationSet, Verifier};
use crate::host::digest::FileDigest;

/// Why a proof is refused: each kind of forgery or mismatch has its own.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("not a proof file: {0}")]
    Malformed(String),
    #[error("proof format {0:?} is not one this enforcer reads ({PROOF_FORMAT})")]
    Format(String),
    #[error(
        "the checkpoint is not signed by the host key for origin {origin:?}: {source}; it is \
         forged, altered, or from another log"
    )]
    Checkpoint {
        origin: String,
        #[source]
        source: CheckpointError,
    },
    #[error("the record was altered: its content does not match the hash it states")]
    RecordAltered,
    #[error("the record is not an audit record: {0}")]
    RecordMalformed(String),
    #[error("the record says seq {stated}, but the proof puts it at leaf {index}")]
    WrongIndex { stated: u64, index: u64 },
    #[error(
        "the inclusion proof does not lead from this record to the checkpoint's root: the \
         record or the proof was changed, or the record is not in this log ({0})"
    )]
    NotIncluded(tlog::VerifyError),
    #[error("the decision cites authorization {0}…, but the proof carries no such artifact")]
    MissingArtifact(String),
    #[error("artifact {id}… is not one the trust store accepts: {source}")]
    ArtifactUntrusted {
        id: String,
        #[source]
        source: Box<ArtifactError>,
    },
    #[error("the decision at {time} is outside artifact {id}…'s window: {source}")]
    OutsideWindow {
        id: String,
        time: String,
        #[source]
        source: Box<ArtifactError>,
    },
    #[error("artifact {id}… does not grant sha256 {digest} in scope {scope}")]
    NotGranted {
        id: String,
        digest: String,
        scope: String,
    },
    #[error("the record's time {0:?} is not an RFC 3339 time")]
    BadTime(String),
    #[error("the checkpoint carries no valid cosignature by witness {0}, which you require")]
    NotWitnessed(String),
    #[error("a cosignature on the checkpoint by a witness you trust does not verify: {0}")]
    BadCosignature(String),
}

impl ProofError {
    /// A short, stable name of the reason, for scripts.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::Format(_) => "unknown-format",
            Self::Checkpoint { .. } => "checkpoint-signature",
            Self::RecordAltered => "record-altered",
            Self::RecordMalformed(_) => "record-malformed",
            Self::WrongIndex { .. } => "wrong-index",
            Self::NotIncluded(_) => "not-included",
            Self::MissingArtifact(_) => "missing-artifact",
            Self::ArtifactUntrusted { .. } => "artifact-untrusted",
            Self::OutsideWindow { .. } => "outside-window",
            Self::NotGranted { .. } => "not-granted",
            Self::BadTime(_) => "bad-time",
            Self::NotWitnessed(_) => "not-witnessed",
            Self::BadCosignature(_) => "bad-cosignature",
        }
    }
}

/// What a verified proof establishes.
#[derive(Clone, Debug)]
pub struct ProvenRecord {
    pub origin: String,
    pub tree_size: u64,
    pub root: TreeHash,
    pub record: Record,
    /// Signatures on the checkpoint by keys other than the host's (witness
    /// cosignatures, checked only for the witnesses the verifier named).
    pub other_signatures: usize,
    /// The required witnesses that cosigned the checkpoint, with the time each states.
    pub witnessed_by: Vec<(String, u64)>,
    /// For an allowed exec, or an authorization record: the artifact, checked.
    pub authorization: Option<ProvenAuthorization>,
}

/// The authorization a record cites, as checked against the trust store.
#[derive(Clone, Debug)]
pub struct ProvenAuthorization {
    pub id: String,
    pub kind: ArtifactKind,
    pub issuer: String,
    /// The bundle's id and serial (bundles only).
    pub bundle: Option<(String, u64)>,
    /// Names of the trusted keys whose signatures verified.
    pub signers: Vec<String>,
    pub not_before: u64,
    pub not_after: u64,
    /// For a decision: the grant's name, when it has one.
    pub grant: Option<String>,
}

/// Checks `proof` (the file's bytes) with the host's public key and the verifier's trust
/// store, and requires a cosignature on the checkpoint from each of `witnesses`.
pub fn verify_proof(
    proof: &[u8],
    host_key: &VerifyingKey,
    trust: &TrustStore,
    witnesses: &[CosignatureVerifier],
) -> Result<ProvenRecord, ProofError> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err(ProofError::Malformed(format!(
            "{} bytes, more than the {MAX_PROOF_BYTES} a proof may have",
            proof.len()
        )));
    }
    let file: ProofFile =
        serde_json::from_slice(proof).map_err(|e| ProofError::Malformed(e.to_string()))?;
    if file.format != PROOF_FORMAT {
        return Err(ProofError::Format(file.format));
    }

    // 1. The checkpoint: signed by the host key, under the origin the file names.
    let checkpoint_error = |source| ProofError::Checkpoint {
        origin: file.origin.clone(),
        source,
    };
    let verifier = NoteVerifier::new(&file.origin, *host_key)
        .map_err(|e| ProofError::Malformed(format!("origin {:?}: {e}", file.origin)))?;
    let keys = NoteVerifiers::new([verifier])
        .map_err(|e| ProofError::Malformed(format!("origin {:?}: {e}", file.origin)))?;
    let head = tlog::Checkpoint::open(file.checkpoint.as_bytes(), &file.origin, &keys)
        .map_err(checkpoint_error)?;
    let size = head.checkpoint.size();
    let root = *head.checkpoint.root();
    let cosigned = cosigned_by(&head.note, witnesses)
        .map_err(|e| ProofError::BadCosignature(e.to_string()))?;
    if let Some(missing) = witnesses
        .iter()
        .find(|w| !cosigned.iter().any(|c| c.witness == *w))
    {
        return Err(ProofError::NotWitnessed(missing.name().to_owned()));
    }
    let witnessed_by = cosigned
        .iter()
        .map(|c| (c.witness.name().to_owned(), c.timestamp))
        .collect();

    // 2. The record: intact, and at the leaf the proof names.
    let unsealed = Unsealed::new(file.record.as_bytes())
        .map_err(|why| ProofError::RecordMalformed(why.to_owned()))?;
    let actual = unsealed.actual();
    if actual != unsealed.stated {
        return Err(ProofError::RecordAltered);
    }
    let record = unsealed
        .record()
        .map_err(|e| ProofError::RecordMalformed(e.to_string()))?;
    if record.seq != file.index {
        return Err(ProofError::WrongIndex {
            stated: record.seq,
            index: file.index,
        });
    }

    // 3. The path from the leaf to the signed root.
    let path = file
        .inclusion
        .iter()
        .map(|h| {
            base64_hash(h).ok_or_else(|| {
                ProofError::Malformed(format!("{h:?} in the inclusion proof is not a hash"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // The leaf comes from the record's bytes (its hash, computed, from format 3 on; the
    // whole line before), so the signed root binds exactly the bytes shown.
    verify_inclusion(
        &actual.leaf_of(file.record.as_bytes()),
        file.index,
        size,
        &path,
        &root,
    )
    .map_err(ProofError::NotIncluded)?;

    // 4. What the record cites.
    let authorization = match &record.body {
        Body::Decision(d) => match &d.auth_id {
            None => None,
            Some(prefix) => {
                let (bytes, id) = cited(&file.artifacts, prefix)?;
                let time = record_time(&record)?;
                let (mut proven, bundle) = check_artifact(bytes, &id, time, &record.time, trust)?;
                // Only an allow claims a grant: a refusal may cite the authorization
                // whose grant it found expired.
                if d.decision == "allow" {
                    proven.grant = Some(check_grant(bundle.as_ref(), &id, d, time)?);
                }
                Some(proven)
            }
        },
        // Taking an artifact up happens inside its window; withdrawing it (expired,
        // revoked) may well happen outside, so only its signatures are checked then, at
        // the start of its window.
        Body::Authorization(a) => {
            let (bytes, id) = cited(&file.artifacts, &a.id)?;
            let time = if matches!(a.change.as_str(), "accepted" | "in-force" | "break-glass") {
                record_time(&record)?
            } else {
                window_start(bytes)
            };
            Some(check_artifact(bytes, &id, time, &record.time, trust)?.0)
        }
        _ => None,
    };
    Ok(ProvenRecord {
        origin: file.origin.clone(),
        tree_size: size,
        root,
        other_signatures: head.note.signatures().len() - head.signed_by.len(),
        witnessed_by,
        record,
        authorization,
    })
}

/// The start of an artifact's window (as it says, unchecked: its signatures are checked
/// next), or the epoch for bytes that are not an artifact (refused next).
fn window_start(bytes: &[u8]) -> SystemTime {
    let not_before = Envelope::parse(bytes).ok().and_then(|e| {
        crate::authz::artifact::Bundle::from_payload(&e.payload)
            .map(|b| b.not_before)
            .ok()
            .or_else(|| {
                crate::authz::artifact::BreakGlass::from_payload(&e.payload)
                    .map(|b| b.not_before)
                    .ok()
            })
    });
    crate::authz::artifact::from_unix_seconds(not_before.unwrap_or(0))
}

fn base64_hash(text: &str) -> Option<TreeHash> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    TreeHash::from_slice(&bytes)
}

fn record_time(record: &Record) -> Result<SystemTime, ProofError> {
    humantime::parse_rfc3339(&record.time).map_err(|_| ProofError::BadTime(record.time.clone()))
}

/// The carried artifact whose id starts with `prefix`, and that id.
fn cited<'a>(artifacts: &'a [String], prefix: &str) -> Result<(&'a [u8], String), ProofError> {
    artifacts
        .iter()
        .find_map(|text| {
            let envelope = Envelope::parse(text.as_bytes()).ok()?;
            let id = envelope.id().to_string();
            (!prefix.is_empty() && id.starts_with(prefix)).then_some((text.as_bytes(), id))
        })
        .ok_or_else(|| ProofError::MissingArtifact(short(prefix).to_owned()))
}

fn short(id: &str) -> &str {
    id.get(..16).unwrap_or(id)
}

/// Checks an artifact's signatures against the trust store and its window at `time`.
/// Returns what it establishes, and the verified bundle when it is one.
fn check_artifact(
    bytes: &[u8],
    id: &str,
    time: SystemTime,
    time_text: &str,
    trust: &TrustStore,
) -> Result<(ProvenAuthorization, Option<Bundle>), ProofError> {
    let verifier = Verifier::new(trust.clone());
    let none = RevocationSet::new();
    let kind = Envelope::parse(bytes)
        .and_then(|e| e.kind())
        .map_err(|source| untrusted(id, source))?;
    let refused = |source: ArtifactError| match source {
        ArtifactError::NotYetValid { .. } | ArtifactError::Expired { .. } => {
            ProofError::OutsideWindow {
                id: short(id).to_owned(),
                time: time_text.to_owned(),
                source: Box::new(source),
            }
        }
        source => untrusted(id, source),
    };
    let names = |signers: &[KeyId]| {
        let mut names: Vec<String> = signers
            .iter()
            .map(|k| {
                trust
                    .key(k)
                    .map_or_else(|| k.to_string(), |t| t.name.clone())
            })
            .collect();
        names.sort();
        names
    };
    match kind {
        ArtifactKind::BreakGlass => {
            let v = verifier
                .verify_break_glass(bytes, time, &none)
                .map_err(refused)?;
            let proven = ProvenAuthorization {
                id: id.to_owned(),
                kind,
                issuer: v.break_glass.issuer,
                bundle: None,
                signers: names(&v.signers),
                not_before: v.break_glass.not_before,
                not_after: v.break_glass.not_after,
                grant: None,
            };
            Ok((proven, None))
        }
        _ => {
            let v = verifier
                .verify_bundle(bytes, time, &none)
                .map_err(refused)?;
            let proven = ProvenAuthorization {
                id: id.to_owned(),
                kind,
                issuer: v.bundle.issuer.clone(),
                bundle: Some((v.bundle.bundle_id.clone(), v.bundle.serial)),
                signers: names(&v.signers),
                not_before: v.bundle.not_before,
                not_after: v.bundle.not_after,
                grant: None,
            };
            Ok((proven, Some(v.bundle)))
        }
    }
}

fn untrusted(id: &str, source: ArtifactError) -> ProofError {
    ProofError::ArtifactUntrusted {
        id: short(id).to_owned(),
        source: Box::new(source),
    }
}

/// The name of the grant in the (already verified) bundle that covers the decision's
/// digest in its scope at its time; refuses when none does.
fn check_grant(
    bundle: Option<&Bundle>,
    id: &str,
    d: &crate::audit::Decision,
    time: SystemTime,
) -> Result<String, ProofError> {
    let not_granted = || ProofError::NotGranted {
        id: short(id).to_owned(),
        digest: d.sha256.clone(),
        scope: d.scope.clone().unwrap_or_else(|| "(unknown)".into()),
    };
    // A break-glass grants nothing by digest.
    let bundle = bundle.ok_or_else(not_granted)?;
    let mut digest = [0u8; 32];
    hex::decode_to_slice(&d.sha256, &mut digest).map_err(|_| not_granted())?;
    let digest = FileDigest(digest);
    let scope: Option<ScopePath> = d.scope.as_deref().and_then(|s| s.parse().ok());
    if !scope.is_some_and(|s| bundle.scopes.contains(&s)) {
        return Err(not_granted());
    }
    let now = crate::authz::artifact::unix_seconds(time);
    bundle
        .grants
        .iter()
        .find(|g| g.digest == digest && g.is_live(now, bundle.not_after))
        .map(|g| g.name.clone().unwrap_or_else(|| "(unnamed)".into()))
        .ok_or_else(not_granted)
}

impl fmt::Display for ProvenRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "PROVEN: record seq {} is in the audit log {} at tree size {} (root {})",
            self.record.seq,
            self.origin,
            self.tree_size,
            self.root.to_base64()
        )?;
        writeln!(
            f,
            "  the checkpoint is signed by the host key; {} other signature(s) on it",
            self.other_signatures
        )?;
        for (witness, time) in &self.witnessed_by {
            writeln!(
                f,
                "  cosigned by witness {witness} at {}: it saw this tree extend every \
                 earlier one it cosigned",
                format_time(*time)
            )?;
        }
        match &self.record.body {
            Body::Decision(d) => writeln!(
                f,
                "  decision: {} ({}, hook {}) of {} sha256 {} in scope {}, pid {} uid {}, \
                 exec {}:{}, written at {}",
                d.decision,
                d.reason,
                d.hook,
                d.path,
                d.sha256,
                d.scope.as_deref().unwrap_or("(unknown)"),
                d.pid,
                d.uid,
                d.boot_id,
                d.exec_id,
                self.record.time
            )?,
            Body::Authorization(a) => writeln!(
                f,
                "  authorization record: {} {} {} at {}",
                a.change, a.artifact, a.id, self.record.time
            )?,
            other => writeln!(f, "  a {} record at {}", other.kind(), self.record.time)?,
        }
        if let Some(a) = &self.authorization {
            let what = match &a.bundle {
                Some((bundle_id, serial)) => format!("bundle {bundle_id} serial {serial}"),
                None => format!("{} artifact", a.kind),
            };
            writeln!(
                f,
                "  authorized by {what} of issuer {}, id sha3-512:{}",
                a.issuer, a.id
            )?;
            writeln!(
                f,
                "  signed by {} (trusted keys of your trust store, threshold met)",
                a.signers.join(", ")
            )?;
            writeln!(
                f,
                "  valid from {} to {}; the record's time is inside that window",
                format_time(a.not_before),
                format_time(a.not_after)
            )?;
            if let Some(grant) = &a.grant {
                writeln!(f, "  it grants that sha256 in that scope, as {grant:?}")?;
            }
        }
        Ok(())
    }
}
