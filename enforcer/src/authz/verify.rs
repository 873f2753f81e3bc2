//! The one place that decides whether an artifact is authorized.
//!
//! [`Verifier`] checks, in this order, and stops at the first failure: size and syntax of
//! the envelope, its payload type, every signature (unknown key, revoked key and bad
//! signature each refuse the whole artifact: what carries a signature nobody can vouch for
//! is not trusted in part), the role threshold counted over distinct keys, the payload's
//! schema and syntax, revocations, and the validity window. Signatures are checked before
//! the payload is parsed, so unauthenticated bytes reach only the envelope parser.
//!
//! Serials (rollback and replay) need memory of what was accepted before: that is
//! [`crate::authz::state::Acceptor`]'s job, on top of this.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, SystemTime};

use ed25519_dalek::Signature;

use crate::authz::artifact::{
    ArtifactError, ArtifactId, ArtifactKind, BreakGlass, Bundle, Envelope, Revocation,
    RevocationTarget, unix_seconds,
};
use crate::authz::trust::{KeyId, TrustStore};
use crate::host::digest::FileDigest;

/// Clock skew allowed by default on both ends of a validity window.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// A bundle that passed every check except the serial rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedBundle {
    /// SHA3-512 of the payload: what audit records and `enforcer status` cite.
    pub id: ArtifactId,
    /// Every key whose signature verified, sorted, each once.
    pub signers: Vec<KeyId>,
    pub bundle: Bundle,
}

/// A revocation that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedRevocation {
    pub id: ArtifactId,
    pub signers: Vec<KeyId>,
    pub revocation: Revocation,
    /// The payload bytes, kept so the revocation can be persisted and re-read.
    pub payload: Vec<u8>,
}

/// A break-glass artifact that passed every check: it may switch its scopes to monitor
/// mode until its `not_after`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedBreakGlass {
    pub id: ArtifactId,
    pub signers: Vec<KeyId>,
    pub break_glass: BreakGlass,
}

/// Everything revoked so far, each entry with the revocation that revoked it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevocationSet {
    bundles: HashMap<String, ArtifactId>,
    artifacts: HashMap<ArtifactId, ArtifactId>,
    digests: HashMap<FileDigest, ArtifactId>,
    keys: HashMap<KeyId, ArtifactId>,
}

impl RevocationSet {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a revocation's targets; what was revoked first keeps its first revoker.
    pub fn insert(&mut self, by: ArtifactId, revocation: &Revocation) {
        for target in &revocation.targets {
            match target {
                RevocationTarget::Bundle(id) => self.bundles.entry(id.clone()).or_insert(by),
                RevocationTarget::Artifact(id) => self.artifacts.entry(*id).or_insert(by),
                RevocationTarget::Digest(d) => self.digests.entry(*d).or_insert(by),
                RevocationTarget::Key(k) => self.keys.entry(*k).or_insert(by),
            };
        }
    }

    /// The revocation that revoked `key`, if any.
    #[must_use]
    pub fn key(&self, key: &KeyId) -> Option<&ArtifactId> {
        self.keys.get(key)
    }

    /// The revocation that revoked `digest`, if any.
    #[must_use]
    pub fn digest(&self, digest: &FileDigest) -> Option<&ArtifactId> {
        self.digests.get(digest)
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bundles.is_empty()
            && self.artifacts.is_empty()
            && self.digests.is_empty()
            && self.keys.is_empty()
    }

    /// Refuses a bundle that is revoked by id, by artifact, by any digest it grants, or by
    /// any key that signed it. The agent calls this again on its live bundles when a new
    /// revocation arrives.
    pub fn check(&self, verified: &VerifiedBundle) -> Result<(), ArtifactError> {
        self.check_signers(&verified.signers)?;
        self.check_content(&verified.id, &verified.bundle)
    }

    /// Refuses a break-glass artifact that is revoked by artifact id or by a key that
    /// signed it. Bundle-id and digest revocations do not apply: it has neither.
    pub fn check_break_glass(&self, verified: &VerifiedBreakGlass) -> Result<(), ArtifactError> {
        self.check_signers(&verified.signers)?;
        self.check_artifact(&verified.id)
    }

    fn check_signers(&self, signers: &[KeyId]) -> Result<(), ArtifactError> {
        match signers
            .iter()
            .find_map(|k| self.keys.get(k).map(|by| (k, by)))
        {
            Some((key_id, by)) => Err(ArtifactError::KeyRevoked {
                key_id: *key_id,
                by: *by,
            }),
            None => Ok(()),
        }
    }

    fn check_artifact(&self, id: &ArtifactId) -> Result<(), ArtifactError> {
        match self.artifacts.get(id) {
            Some(by) => Err(ArtifactError::ArtifactRevoked {
                id: Box::new(*id),
                by: *by,
            }),
            None => Ok(()),
        }
    }

    fn check_content(&self, id: &ArtifactId, bundle: &Bundle) -> Result<(), ArtifactError> {
        self.check_artifact(id)?;
        if let Some(by) = self.bundles.get(&bundle.bundle_id) {
            return Err(ArtifactError::BundleRevoked {
                bundle_id: bundle.bundle_id.clone(),
                by: *by,
            });
        }
        if self.digests.is_empty() {
            return Ok(());
        }
        for (index, grant) in bundle.grants.iter().enumerate() {
            if let Some(by) = self.digests.get(&grant.digest) {
                return Err(ArtifactError::DigestRevoked {
                    digest: grant.digest,
                    index,
                    by: *by,
                });
            }
        }
        Ok(())
    }
}

/// Decides whether artifacts are authorized by a trust store.
#[derive(Clone, Debug)]
pub struct Verifier {
    trust: TrustStore,
    clock_skew: Duration,
}

impl Verifier {
    /// A verifier with the default clock skew allowance ([`DEFAULT_CLOCK_SKEW`]).
    #[must_use]
    pub fn new(trust: TrustStore) -> Self {
        Self {
            trust,
            clock_skew: DEFAULT_CLOCK_SKEW,
        }
    }

    /// How far the local clock may be from the issuer's: a bundle is accepted from
    /// `not_before - skew` until `not_after + skew`.
    #[must_use]
    pub fn with_clock_skew(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
        self
    }

    #[must_use]
    pub fn trust(&self) -> &TrustStore {
        &self.trust
    }

    #[must_use]
    pub fn clock_skew(&self) -> Duration {
        self.clock_skew
    }

    /// Verifies an authorization bundle's envelope bytes at time `now`.
    pub fn verify_bundle(
        &self,
        bytes: &[u8],
        now: SystemTime,
        revocations: &RevocationSet,
    ) -> Result<VerifiedBundle, ArtifactError> {
        let envelope = Envelope::parse(bytes)?;
        // The id (SHA3-512 of the payload: a third of the time for a bundle of 100 000
        // grants) is hashed on a second thread while the signatures are checked and the
        // payload parsed. Hashing is no parsing: unauthenticated bytes still reach only
        // the envelope parser until the signatures hold.
        let (checked, id) = std::thread::scope(|scope| {
            let id = scope.spawn(|| envelope.id());
            let checked = self
                .check_signatures(&envelope, ArtifactKind::Bundle, revocations)
                .and_then(|signers| Ok((signers, Bundle::from_payload(&envelope.payload)?)));
            (
                checked,
                id.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            )
        });
        let (signers, bundle) = checked?;
        let verified = VerifiedBundle {
            id,
            signers,
            bundle,
        };
        revocations.check_content(&verified.id, &verified.bundle)?;
        self.check_window(verified.bundle.not_before, verified.bundle.not_after, now)?;
        Ok(verified)
    }

    /// Verifies a break-glass artifact's envelope bytes at time `now`: as a bundle is
    /// verified, and its window must also be no longer than the trust store allows. The
    /// length rule comes before the time check because it does not depend on the clock:
    /// a window that is too long is refused at any time, with that reason.
    pub fn verify_break_glass(
        &self,
        bytes: &[u8],
        now: SystemTime,
        revocations: &RevocationSet,
    ) -> Result<VerifiedBreakGlass, ArtifactError> {
        let (envelope, signers) =
            self.authenticate(bytes, ArtifactKind::BreakGlass, revocations)?;
        let break_glass = BreakGlass::from_payload(&envelope.payload)?;
        let id = envelope.id();
        revocations.check_artifact(&id)?;
        let max = self.trust.break_glass_max_duration().as_secs();
        if break_glass.window() > max {
            return Err(ArtifactError::WindowTooLong {
                not_before: break_glass.not_before,
                not_after: break_glass.not_after,
                max,
            });
        }
        self.check_window(break_glass.not_before, break_glass.not_after, now)?;
        Ok(VerifiedBreakGlass {
            id,
            signers,
            break_glass,
        })
    }

    /// Verifies a revocation's envelope bytes. Revocations have no validity window: they
    /// take effect when accepted and never lapse.
    pub fn verify_revocation(
        &self,
        bytes: &[u8],
        revocations: &RevocationSet,
    ) -> Result<VerifiedRevocation, ArtifactError> {
        let (envelope, signers) =
            self.authenticate(bytes, ArtifactKind::Revocation, revocations)?;
        let revocation = Revocation::from_payload(&envelope.payload)?;
        Ok(VerifiedRevocation {
            id: envelope.id(),
            signers,
            revocation,
            payload: envelope.payload,
        })
    }

    /// Parses the envelope and checks its type and signatures; returns the distinct keys
    /// whose signatures verified.
    fn authenticate(
        &self,
        bytes: &[u8],
        expected: ArtifactKind,
        revocations: &RevocationSet,
    ) -> Result<(Envelope, Vec<KeyId>), ArtifactError> {
        let envelope = Envelope::parse(bytes)?;
        let signers = self.check_signatures(&envelope, expected, revocations)?;
        Ok((envelope, signers))
    }

    /// Checks a parsed envelope's type and signatures; returns the distinct keys whose
    /// signatures verified.
    fn check_signatures(
        &self,
        envelope: &Envelope,
        expected: ArtifactKind,
        revocations: &RevocationSet,
    ) -> Result<Vec<KeyId>, ArtifactError> {
        let found = envelope.kind()?;
        if found != expected {
            return Err(ArtifactError::WrongKind { expected, found });
        }
        let role = expected.role();
        // Before any signature: a trust store that accepts none of this kind is the whole
        // answer, whoever signed.
        let required = self
            .trust
            .threshold(role)
            .ok_or(ArtifactError::NoThreshold { role })?;
        let message = envelope.signed_message();
        let mut signers = BTreeSet::new();
        let mut counted = BTreeSet::new();
        for sig in &envelope.signatures {
            let key_id = sig.key_id;
            let key = self
                .trust
                .key(&key_id)
                .ok_or(ArtifactError::UnknownKey { key_id })?;
            if let Some(by) = revocations.key(&key_id) {
                return Err(ArtifactError::KeyRevoked { key_id, by: *by });
            }
            key.public_key
                .verify_strict(&message, &Signature::from_bytes(&sig.sig))
                .map_err(|_| ArtifactError::BadSignature { key_id })?;
            signers.insert(key_id);
            if key.has_role(role) {
                counted.insert(key_id);
            }
        }
        if counted.len() < required {
            return Err(ArtifactError::Threshold {
                role,
                valid: counted.len(),
                required,
            });
        }
        Ok(signers.into_iter().collect())
    }

    /// Valid from `not_before - skew` to `not_after + skew`, both inclusive.
    fn check_window(
        &self,
        not_before: u64,
        not_after: u64,
        now: SystemTime,
    ) -> Result<(), ArtifactError> {
        let now = unix_seconds(now);
        let skew = self.clock_skew.as_secs();
        if now.saturating_add(skew) < not_before {
            return Err(ArtifactError::NotYetValid {
                not_before,
                now,
                skew,
            });
        }
        if now > not_after.saturating_add(skew) {
            return Err(ArtifactError::Expired {
                not_after,
                now,
                skew,
            });
        }
        Ok(())
    }
}

/// Reads the artifact file at `path`, refusing one over the size limit before reading it.
pub fn read_artifact(path: &Path) -> Result<Vec<u8>, ArtifactError> {
    let read_err = |source| ArtifactError::Read {
        path: path.display().to_string(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read_err)?.len();
    let limit = crate::authz::artifact::MAX_ARTIFACT_BYTES;
    if size > limit as u64 {
        return Err(ArtifactError::TooLarge {
            size: usize::try_from(size).unwrap_or(usize::MAX),
            limit,
        });
    }
    std::fs::read(path).map_err(read_err)
}

/// Reads and verifies the bundle file at `path`.
pub fn verify_bundle_file(
    verifier: &Verifier,
    path: &Path,
    now: SystemTime,
    revocations: &RevocationSet,
) -> Result<VerifiedBundle, ArtifactError> {
    verifier.verify_bundle(&read_artifact(path)?, now, revocations)
}

/// Fixed keys, trust stores and signed artifacts for tests across the crate.
#[cfg(test)]
pub(crate) mod testkit {
    use crate::authz::artifact::{
        ArtifactKind, BreakGlass, Bundle, Envelope, Mode, OnRevoke, Revocation, ScopePath,
        SignedGrant,
    };
    use crate::authz::trust::{Role, SigningKey, Thresholds, TrustStore, TrustedKey};
    use crate::host::digest::FileDigest;

    /// Issued at `NOW - 10`, valid from `NOW - 10` to `NOW + 3600`.
    pub(crate) const NOW: u64 = 1_800_000_000;

    pub(crate) fn now() -> std::time::SystemTime {
        crate::authz::artifact::from_unix_seconds(NOW)
    }

    /// Deterministic test key number `n`.
    pub(crate) fn key(n: u8) -> SigningKey {
        SigningKey::from_seed(&[n; 32])
    }

    /// Keys 1..=3 may sign bundles, key 4 only revocations, key 5 nothing, keys 6 and 7
    /// only break-glass; thresholds as given, and none for break-glass: that is
    /// [`store_with_break_glass`].
    pub(crate) fn store(bundle: usize, revocation: usize) -> TrustStore {
        let roles = |n: u8| match n {
            1..=3 => vec![Role::Bundle],
            4 => vec![Role::Revocation],
            6 | 7 => vec![Role::BreakGlass],
            _ => vec![],
        };
        let keys = (1..=7).map(|n| TrustedKey::new(format!("k{n}"), key(n).public_key(), roles(n)));
        TrustStore::new(keys, Thresholds { bundle, revocation }).expect("test trust store")
    }

    /// [`store`] with bundle and revocation thresholds 1 that also accepts break-glass
    /// artifacts signed by `threshold` of keys 6 and 7, with the default longest window.
    pub(crate) fn store_with_break_glass(threshold: usize) -> TrustStore {
        store(1, 1)
            .with_break_glass(threshold)
            .expect("break-glass threshold")
    }

    /// Valid from `NOW - 10` for an hour, in `/agents.slice`.
    pub(crate) fn break_glass() -> BreakGlass {
        BreakGlass {
            issuer: "oncall".into(),
            not_before: NOW - 10,
            not_after: NOW - 10 + 3600,
            scopes: vec!["/agents.slice".parse::<ScopePath>().expect("scope")],
            reason: "INC-42: agents cannot run the new deploy tool".into(),
        }
    }

    pub(crate) fn bundle() -> Bundle {
        Bundle {
            issuer: "ops".into(),
            bundle_id: "agents-base".into(),
            serial: 1,
            issued_at: NOW - 10,
            not_before: NOW - 10,
            not_after: NOW + 3600,
            scopes: vec!["/agents.slice".parse::<ScopePath>().expect("scope")],
            grants: vec![
                SignedGrant {
                    digest: FileDigest::of_bytes(b"git"),
                    name: Some("/usr/bin/git".into()),
                    not_after: None,
                },
                SignedGrant {
                    digest: FileDigest::of_bytes(b"sh"),
                    name: None,
                    not_after: Some(NOW + 60),
                },
            ],
            mode: Mode::Enforce,
            on_revoke: OnRevoke::DenyNew,
            allow_anonymous_exec: false,
            allow_fileless: false,
        }
    }

    /// An envelope around `payload` of `kind`, signed by the keys numbered in `signers`.
    pub(crate) fn sign(kind: ArtifactKind, payload: Vec<u8>, signers: &[u8]) -> Vec<u8> {
        let mut env = Envelope::new(kind, payload);
        for n in signers {
            env.add_signature(&key(*n));
        }
        env.to_bytes()
    }

    pub(crate) fn signed_bundle(bundle: &Bundle, signers: &[u8]) -> Vec<u8> {
        sign(
            ArtifactKind::Bundle,
            bundle.to_payload().expect("bundle payload"),
            signers,
        )
    }

    pub(crate) fn signed_break_glass(break_glass: &BreakGlass, signers: &[u8]) -> Vec<u8> {
        sign(
            ArtifactKind::BreakGlass,
            break_glass.to_payload().expect("break-glass payload"),
            signers,
        )
    }

    pub(crate) fn signed_revocation(revocation: &Revocation, signers: &[u8]) -> Vec<u8> {
        sign(
            ArtifactKind::Revocation,
            revocation.to_payload().expect("revocation payload"),
            signers,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::{self, NOW, key, now, signed_bundle, store};
    use super::*;
    use crate::authz::artifact::{EnvelopeSignature, RevocationTarget, from_unix_seconds};
    use crate::authz::trust::Role;

    fn verifier(bundle_threshold: usize) -> Verifier {
        Verifier::new(store(bundle_threshold, 1))
    }

    fn refused(v: &Verifier, bytes: &[u8], revocations: &RevocationSet) -> ArtifactError {
        v.verify_bundle(bytes, now(), revocations)
            .expect_err("must be refused")
    }

    fn revocation(targets: Vec<RevocationTarget>) -> (ArtifactId, RevocationSet) {
        let r = Revocation {
            issuer: "sec".into(),
            issued_at: NOW,
            reason: None,
            targets,
        };
        let bytes = testkit::signed_revocation(&r, &[4]);
        let verified = verifier(1)
            .verify_revocation(&bytes, &RevocationSet::new())
            .expect("revocation");
        let mut set = RevocationSet::new();
        set.insert(verified.id, &verified.revocation);
        (verified.id, set)
    }

    #[test]
    fn accepts_a_bundle_signed_by_enough_keys() {
        let bytes = signed_bundle(&testkit::bundle(), &[1, 2]);
        let v = verifier(2)
            .verify_bundle(&bytes, now(), &RevocationSet::new())
            .expect("valid");
        assert_eq!(v.bundle, testkit::bundle());
        let mut expected = vec![key(1).key_id(), key(2).key_id()];
        expected.sort();
        assert_eq!(v.signers, expected);
        assert_eq!(
            v.id,
            ArtifactId::of_payload(&testkit::bundle().to_payload().expect("p"))
        );
    }

    #[test]
    fn refuses_unknown_keys() {
        let stranger = crate::authz::trust::SigningKey::from_seed(&[99; 32]);
        let mut env = Envelope::parse(&signed_bundle(&testkit::bundle(), &[1])).expect("parse");
        env.add_signature(&stranger);
        let err = refused(&verifier(1), &env.to_bytes(), &RevocationSet::new());
        assert!(
            matches!(err, ArtifactError::UnknownKey { key_id } if key_id == stranger.key_id()),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains(&format!("signature by unknown key {}", stranger.key_id())),
            "{err}"
        );
    }

    #[test]
    fn refuses_bad_signatures() {
        let mut env = Envelope::parse(&signed_bundle(&testkit::bundle(), &[1])).expect("parse");
        env.signatures[0].sig[10] ^= 1;
        let err = refused(&verifier(1), &env.to_bytes(), &RevocationSet::new());
        assert!(matches!(err, ArtifactError::BadSignature { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&format!("bad signature by key {}", key(1).key_id())),
            "{err}"
        );

        // A signature moved onto another payload does not verify either.
        let mut other = testkit::bundle();
        other.serial = 2;
        let mut env2 = Envelope::parse(&signed_bundle(&other, &[])).expect("parse");
        env2.signatures = env.signatures.clone();
        env2.signatures[0].sig = Envelope::parse(&signed_bundle(&testkit::bundle(), &[1]))
            .expect("p")
            .signatures[0]
            .sig;
        let err = refused(&verifier(1), &env2.to_bytes(), &RevocationSet::new());
        assert!(matches!(err, ArtifactError::BadSignature { .. }), "{err:?}");
    }

    #[test]
    fn refuses_fewer_signatures_than_the_threshold() {
        let err = refused(
            &verifier(2),
            &signed_bundle(&testkit::bundle(), &[1]),
            &RevocationSet::new(),
        );
        assert!(
            matches!(
                err,
                ArtifactError::Threshold {
                    role: Role::Bundle,
                    valid: 1,
                    required: 2
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("not enough signatures: 1 valid"),
            "{err}"
        );
        let err = refused(
            &verifier(1),
            &signed_bundle(&testkit::bundle(), &[]),
            &RevocationSet::new(),
        );
        assert!(
            matches!(err, ArtifactError::Threshold { valid: 0, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn two_signatures_by_one_key_count_once() {
        let mut env = Envelope::parse(&signed_bundle(&testkit::bundle(), &[1])).expect("parse");
        let again = env.signatures[0].clone();
        env.signatures.push(again);
        let err = refused(&verifier(2), &env.to_bytes(), &RevocationSet::new());
        assert!(
            matches!(
                err,
                ArtifactError::Threshold {
                    valid: 1,
                    required: 2,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn keys_without_the_role_do_not_count() {
        // Key 4 may sign only revocations, key 5 nothing: both verify, neither counts.
        let err = refused(
            &verifier(2),
            &signed_bundle(&testkit::bundle(), &[1, 4, 5]),
            &RevocationSet::new(),
        );
        assert!(
            matches!(err, ArtifactError::Threshold { valid: 1, .. }),
            "{err:?}"
        );
        // And a bundle key cannot sign revocations.
        let r = Revocation {
            issuer: "sec".into(),
            issued_at: NOW,
            reason: None,
            targets: vec![RevocationTarget::Bundle("x".into())],
        };
        let err = verifier(1)
            .verify_revocation(
                &testkit::signed_revocation(&r, &[1, 2]),
                &RevocationSet::new(),
            )
            .expect_err("role");
        assert!(
            matches!(
                err,
                ArtifactError::Threshold {
                    role: Role::Revocation,
                    valid: 0,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn refuses_bundles_outside_their_validity_window() {
        let v = verifier(1).with_clock_skew(Duration::from_secs(30));
        let bytes = signed_bundle(&testkit::bundle(), &[1]);
        let b = testkit::bundle();
        let at = |t| v.verify_bundle(&bytes, from_unix_seconds(t), &RevocationSet::new());
        window_stretches_by_30s_of_skew(at, b.not_before, b.not_after);
    }

    /// `at(t)` verifies an artifact valid from `not_before` to `not_after` at `t`, with 30 s
    /// of allowed clock skew: it passes 30 s outside the window, and not 31.
    fn window_stretches_by_30s_of_skew<T: std::fmt::Debug>(
        at: impl Fn(u64) -> Result<T, ArtifactError>,
        not_before: u64,
        not_after: u64,
    ) {
        at(not_before - 30).expect("skew allows early");
        at(not_after + 30).expect("skew allows late");
        let err = at(not_before - 31).expect_err("early");
        assert!(
            matches!(err, ArtifactError::NotYetValid { skew: 30, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("not yet valid: valid from 2027-"),
            "{err}"
        );
        let err = at(not_after + 31).expect_err("late");
        assert!(
            matches!(err, ArtifactError::Expired { skew: 30, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with("expired: valid until 2027-"),
            "{err}"
        );
    }

    #[test]
    fn refuses_the_wrong_kind_of_artifact() {
        let r = Revocation {
            issuer: "sec".into(),
            issued_at: NOW,
            reason: None,
            targets: vec![RevocationTarget::Bundle("x".into())],
        };
        let err = refused(
            &verifier(1),
            &testkit::signed_revocation(&r, &[4]),
            &RevocationSet::new(),
        );
        assert!(matches!(err, ArtifactError::WrongKind { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("expected a bundle artifact but this is a revocation"),
            "{err}"
        );
    }

    #[test]
    fn refuses_unknown_schema_versions_even_when_signed() {
        let payload = testkit::bundle().to_payload().expect("p");
        let mut env = Envelope::new(ArtifactKind::Bundle, payload);
        env.payload_type = "application/vnd.enforcer.bundle.v2+json".into();
        env.add_signature(&key(1));
        let err = refused(&verifier(1), &env.to_bytes(), &RevocationSet::new());
        assert!(
            matches!(err, ArtifactError::UnknownSchema { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn refuses_signed_payloads_with_unknown_fields_or_bad_syntax() {
        let text = String::from_utf8(testkit::bundle().to_payload().expect("p")).expect("utf8");
        let cases = [
            (
                text.replacen('{', "{\"priority\":1,", 1),
                "unknown field `priority`",
            ),
            (
                text.replace("/agents.slice", "/agents.slice/../etc"),
                "invalid scope",
            ),
            (
                text.replacen("sha256:", "sha256:0", 1),
                "invalid digest in grant 0",
            ),
            (
                text.replacen("\"serial\":1", "\"serial\":-1", 1),
                "malformed bundle payload",
            ),
        ];
        for (payload, needle) in cases {
            let bytes = testkit::sign(ArtifactKind::Bundle, payload.into_bytes(), &[1]);
            let err = refused(&verifier(1), &bytes, &RevocationSet::new());
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn refuses_revoked_bundles_by_id() {
        let (by, set) = revocation(vec![RevocationTarget::Bundle("agents-base".into())]);
        let err = refused(&verifier(1), &signed_bundle(&testkit::bundle(), &[1]), &set);
        assert!(
            matches!(err, ArtifactError::BundleRevoked { by: b, .. } if b == by),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("revoked bundle: bundle id \"agents-base\""),
            "{err}"
        );
    }

    #[test]
    fn refuses_revoked_artifacts() {
        let id = ArtifactId::of_payload(&testkit::bundle().to_payload().expect("p"));
        let (_, set) = revocation(vec![RevocationTarget::Artifact(id)]);
        let err = refused(&verifier(1), &signed_bundle(&testkit::bundle(), &[1]), &set);
        assert!(
            matches!(err, ArtifactError::ArtifactRevoked { .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&format!("revoked artifact: {id}")),
            "{err}"
        );
    }

    #[test]
    fn refuses_bundles_granting_a_revoked_digest() {
        let digest = testkit::bundle().grants[1].digest;
        let (_, set) = revocation(vec![RevocationTarget::Digest(digest)]);
        let err = refused(&verifier(1), &signed_bundle(&testkit::bundle(), &[1]), &set);
        assert!(
            matches!(err, ArtifactError::DigestRevoked { index: 1, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains(&format!("grant 1 names sha256:{digest}, which is revoked")),
            "{err}"
        );
        assert_eq!(
            set.digest(&digest).copied(),
            Some(ArtifactId::of_payload(
                &Revocation {
                    issuer: "sec".into(),
                    issued_at: NOW,
                    reason: None,
                    targets: vec![RevocationTarget::Digest(digest)]
                }
                .to_payload()
                .expect("p")
            ))
        );
    }

    #[test]
    fn refuses_signatures_by_revoked_keys() {
        let (_, set) = revocation(vec![RevocationTarget::Key(key(2).key_id())]);
        let err = refused(
            &verifier(1),
            &signed_bundle(&testkit::bundle(), &[1, 2]),
            &set,
        );
        assert!(
            matches!(err, ArtifactError::KeyRevoked { key_id, .. } if key_id == key(2).key_id()),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains(&format!("signature by revoked key {}", key(2).key_id())),
            "{err}"
        );
        // The agent re-checks live bundles against new revocations the same way.
        let live = verifier(1)
            .verify_bundle(
                &signed_bundle(&testkit::bundle(), &[1, 2]),
                now(),
                &RevocationSet::new(),
            )
            .expect("valid");
        assert!(matches!(
            set.check(&live),
            Err(ArtifactError::KeyRevoked { .. })
        ));
        assert!(RevocationSet::new().check(&live).is_ok());
    }

    #[test]
    fn verifies_bundle_files_and_refuses_missing_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.json");
        std::fs::write(&path, signed_bundle(&testkit::bundle(), &[1])).expect("write");
        verify_bundle_file(&verifier(1), &path, now(), &RevocationSet::new()).expect("valid");
        let err = verify_bundle_file(
            &verifier(1),
            &dir.path().join("nope"),
            now(),
            &RevocationSet::new(),
        )
        .expect_err("missing");
        assert!(
            err.to_string().contains("cannot read artifact") && err.to_string().contains("nope"),
            "{err}"
        );
    }

    #[test]
    fn envelope_signatures_with_garbage_are_refused_not_panicking() {
        let mut env = Envelope::parse(&signed_bundle(&testkit::bundle(), &[1])).expect("parse");
        env.signatures[0] = EnvelopeSignature {
            key_id: key(1).key_id(),
            sig: [0xff; 64],
        };
        let err = refused(&verifier(1), &env.to_bytes(), &RevocationSet::new());
        assert!(matches!(err, ArtifactError::BadSignature { .. }), "{err:?}");
    }

    mod break_glass {
        use super::*;
        use crate::authz::artifact::BreakGlass;
        use crate::authz::verify::testkit::{
            break_glass, signed_break_glass, store_with_break_glass,
        };

        fn verifier(threshold: usize) -> Verifier {
            Verifier::new(store_with_break_glass(threshold))
        }

        fn refused_at(v: &Verifier, bytes: &[u8], at: u64, set: &RevocationSet) -> ArtifactError {
            v.verify_break_glass(bytes, from_unix_seconds(at), set)
                .expect_err("must be refused")
        }

        #[test]
        fn accepts_a_break_glass_signed_by_enough_break_glass_keys() {
            let bytes = signed_break_glass(&break_glass(), &[6, 7]);
            let v = verifier(2)
                .verify_break_glass(&bytes, now(), &RevocationSet::new())
                .expect("valid");
            assert_eq!(v.break_glass, break_glass());
            assert_eq!(
                v.id,
                ArtifactId::of_payload(&break_glass().to_payload().expect("p"))
            );
            assert_eq!(v.signers.len(), 2);
        }

        #[test]
        fn refuses_every_break_glass_when_the_trust_store_sets_no_threshold() {
            let bytes = signed_break_glass(&break_glass(), &[6, 7]);
            let v = Verifier::new(store(1, 1));
            let err = v
                .verify_break_glass(&bytes, now(), &RevocationSet::new())
                .expect_err("off");
            assert!(
                matches!(
                    err,
                    ArtifactError::NoThreshold {
                        role: Role::BreakGlass
                    }
                ),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.starts_with("no break-glass artifact is accepted: the trust store sets no break-glass threshold ([thresholds] break_glass = N)"),
                "{msg}"
            );
        }

        #[test]
        fn only_keys_with_the_break_glass_role_count() {
            // Bundle keys 1 and 2, the revocation key 4: all verify, none counts.
            let bytes = signed_break_glass(&break_glass(), &[1, 2, 4, 6]);
            let err = refused_at(&verifier(2), &bytes, NOW, &RevocationSet::new());
            assert!(
                matches!(
                    err,
                    ArtifactError::Threshold {
                        role: Role::BreakGlass,
                        valid: 1,
                        required: 2
                    }
                ),
                "{err:?}"
            );
            assert!(
                err.to_string()
                    .contains("1 valid from distinct keys with the break-glass role, 2 required"),
                "{err}"
            );
            // And a break-glass key cannot sign bundles.
            let err = Verifier::new(store(1, 1))
                .verify_bundle(
                    &signed_bundle(&testkit::bundle(), &[6, 7]),
                    now(),
                    &RevocationSet::new(),
                )
                .expect_err("role");
            assert!(
                matches!(
                    err,
                    ArtifactError::Threshold {
                        role: Role::Bundle,
                        valid: 0,
                        ..
                    }
                ),
                "{err:?}"
            );
        }

        #[test]
        fn a_break_glass_is_never_taken_for_a_bundle_or_the_reverse() {
            let bg = signed_break_glass(&break_glass(), &[6]);
            let err = verifier(1)
                .verify_bundle(&bg, now(), &RevocationSet::new())
                .expect_err("kind");
            assert!(matches!(err, ArtifactError::WrongKind { .. }), "{err:?}");
            assert!(
                err.to_string()
                    .contains("expected a bundle artifact but this is a break-glass"),
                "{err}"
            );
            let bundle = signed_bundle(&testkit::bundle(), &[1]);
            let err = refused_at(&verifier(1), &bundle, NOW, &RevocationSet::new());
            assert!(
                err.to_string()
                    .contains("expected a break-glass artifact but this is a bundle"),
                "{err}"
            );
            // The same payload bytes signed as a bundle do not verify as a break-glass: the
            // type is inside the signed message.
            let mut env = Envelope::parse(&bundle).expect("parse");
            env.payload_type = crate::authz::artifact::BREAK_GLASS_PAYLOAD_TYPE.into();
            let err = refused_at(&verifier(1), &env.to_bytes(), NOW, &RevocationSet::new());
            assert!(
                matches!(
                    err,
                    ArtifactError::UnknownKey { .. } | ArtifactError::BadSignature { .. }
                ),
                "{err:?}"
            );
        }

        /// The window may be as long as the trust store allows and no longer, whatever the
        /// clock skew: the allowance widens when a window is accepted, never how long it is.
        #[test]
        fn window_length_is_capped_by_the_trust_store() {
            let max = 90 * 60;
            let store = store_with_break_glass(1)
                .with_break_glass_max_duration(Duration::from_secs(max))
                .expect("max");
            let v = Verifier::new(store).with_clock_skew(Duration::from_secs(600));
            let mut bg = break_glass();
            bg.not_after = bg.not_before + max;
            v.verify_break_glass(&signed_break_glass(&bg, &[6]), now(), &RevocationSet::new())
                .expect("exactly the maximum");
            bg.not_after += 1;
            let bytes = signed_break_glass(&bg, &[6]);
            for at in [bg.not_before - 600, NOW, bg.not_after] {
                let err = refused_at(&v, &bytes, at, &RevocationSet::new());
                assert!(
                    matches!(err, ArtifactError::WindowTooLong { max: m, .. } if m == max),
                    "{err:?}"
                );
                assert!(
                    err.to_string()
                        .starts_with("window too long: valid for 1h 30m 1s (from 2027-"),
                    "{err}"
                );
                assert!(err.to_string().contains("at most 1h 30m"), "{err}");
            }
            // The default is four hours.
            let mut long = break_glass();
            long.not_after = long.not_before + 4 * 3600 + 1;
            let err = refused_at(
                &verifier(1),
                &signed_break_glass(&long, &[6]),
                NOW,
                &RevocationSet::new(),
            );
            assert!(err.to_string().contains("at most 4h"), "{err}");
        }

        #[test]
        fn refuses_a_break_glass_outside_its_window_with_the_skew_allowance() {
            let v = verifier(1).with_clock_skew(Duration::from_secs(30));
            let bg = break_glass();
            let bytes = signed_break_glass(&bg, &[6]);
            let at = |t| v.verify_break_glass(&bytes, from_unix_seconds(t), &RevocationSet::new());
            super::window_stretches_by_30s_of_skew(at, bg.not_before, bg.not_after);
        }

        #[test]
        fn refuses_a_revoked_break_glass_by_artifact_or_by_key() {
            let bytes = signed_break_glass(&break_glass(), &[6, 7]);
            let id = ArtifactId::of_payload(&break_glass().to_payload().expect("p"));
            let (by, set) = revocation(vec![RevocationTarget::Artifact(id)]);
            let err = refused_at(&verifier(1), &bytes, NOW, &set);
            assert!(
                matches!(err, ArtifactError::ArtifactRevoked { by: b, .. } if b == by),
                "{err:?}"
            );
            assert!(
                err.to_string()
                    .contains(&format!("revoked artifact: {id} is revoked (by {by})")),
                "{err}"
            );

            let (_, set) = revocation(vec![RevocationTarget::Key(key(7).key_id())]);
            let err = refused_at(&verifier(1), &bytes, NOW, &set);
            assert!(
                matches!(err, ArtifactError::KeyRevoked { key_id, .. } if key_id == key(7).key_id()),
                "{err:?}"
            );
            assert!(
                err.to_string()
                    .contains(&format!("signature by revoked key {}", key(7).key_id())),
                "{err}"
            );

            // The agent re-checks live ones when a revocation arrives after them.
            let live = verifier(1)
                .verify_break_glass(&bytes, now(), &RevocationSet::new())
                .expect("valid");
            assert!(matches!(
                set.check_break_glass(&live),
                Err(ArtifactError::KeyRevoked { .. })
            ));
            assert!(RevocationSet::new().check_break_glass(&live).is_ok());
            // Revocations by bundle id or digest name bundles, not break-glass artifacts.
            let (_, set) = revocation(vec![RevocationTarget::Bundle("oncall".into())]);
            set.check_break_glass(&live)
                .expect("a bundle id does not name it");
        }

        #[test]
        fn refuses_signed_break_glass_payloads_that_break_the_rules() {
            let text = String::from_utf8(break_glass().to_payload().expect("p")).expect("utf8");
            let bg = break_glass();
            let cases = [
                (
                    text.replacen('{', "{\"serial\":1,", 1),
                    "unknown field `serial`",
                ),
                (
                    text.replace(
                        &format!("\"not_after\":{}", bg.not_after),
                        &format!("\"not_after\":{}", bg.not_before),
                    ),
                    "cannot be empty",
                ),
                (
                    text.replace(&bg.reason, ""),
                    "invalid reason: must not be empty",
                ),
            ];
            for (payload, needle) in cases {
                let bytes = testkit::sign(ArtifactKind::BreakGlass, payload.into_bytes(), &[6]);
                let err = refused_at(&verifier(1), &bytes, NOW, &RevocationSet::new());
                assert!(err.to_string().contains(needle), "{needle}: {err}");
            }
            assert!(BreakGlass::from_payload(text.as_bytes()).is_ok());
        }

        mod properties {
            use super::*;
            use proptest::prelude::*;

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(256))]

                /// Any single-byte change to a signed break-glass gets it refused.
                #[test]
                fn any_single_byte_change_is_refused(index in any::<prop::sample::Index>(), value in any::<u8>()) {
                    let bytes = signed_break_glass(&break_glass(), &[6]);
                    prop_assert!(verifier(1).verify_break_glass(&bytes, now(), &RevocationSet::new()).is_ok());
                    let i = index.index(bytes.len());
                    prop_assume!(bytes[i] != value);
                    let mut mutated = bytes.clone();
                    mutated[i] = value;
                    prop_assert!(verifier(1).verify_break_glass(&mutated, now(), &RevocationSet::new()).is_err());
                }
            }
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Changing any single byte of a signed envelope, to any other value, gets it
            /// refused: nothing in the serialised form is outside the signature's reach
            /// or free to vary.
            #[test]
            fn any_single_byte_change_is_refused(index in any::<prop::sample::Index>(), value in any::<u8>()) {
                let bytes = signed_bundle(&testkit::bundle(), &[1, 2]);
                let v = verifier(2);
                prop_assert!(v.verify_bundle(&bytes, now(), &RevocationSet::new()).is_ok());
                let i = index.index(bytes.len());
                prop_assume!(bytes[i] != value);
                let mut mutated = bytes.clone();
                mutated[i] = value;
                prop_assert!(v.verify_bundle(&mutated, now(), &RevocationSet::new()).is_err());
            }

            /// The same for revocations.
            #[test]
            fn any_single_byte_change_to_a_revocation_is_refused(index in any::<prop::sample::Index>(), value in any::<u8>()) {
                let r = Revocation { issuer: "sec".into(), issued_at: NOW, reason: Some("leak".into()), targets: vec![RevocationTarget::Key(key(3).key_id())] };
                let bytes = testkit::signed_revocation(&r, &[4]);
                let i = index.index(bytes.len());
                prop_assume!(bytes[i] != value);
                let mut mutated = bytes.clone();
                mutated[i] = value;
                prop_assert!(verifier(1).verify_revocation(&mutated, &RevocationSet::new()).is_err());
            }

            /// Arbitrary bytes never panic the parser.
            #[test]
            fn arbitrary_bytes_are_refused_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
                prop_assert!(verifier(1).verify_bundle(&bytes, now(), &RevocationSet::new()).is_err());
            }
        }
    }
}
