//! What has been accepted, remembered across restarts: the last serial per issuer and
//! scope (which refuses rollback and replay) and every accepted revocation.
//!
//! The state is one JSON file in a state directory, replaced atomically (write a temporary
//! file, fsync it, rename it over the old one, fsync the directory), so a crash leaves
//! either the old state or the new one, never a mix. A state file that cannot be read is
//! an error, never an empty start: forgetting serials would re-open rollback.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::authz::artifact::{ArtifactError, ArtifactId, Revocation, ScopePath};
use crate::authz::verify::{
    RevocationSet, VerifiedBreakGlass, VerifiedBundle, VerifiedRevocation, Verifier,
};

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";

/// The lock file of the state in `dir`: whoever holds it keeps agents from starting.
#[must_use]
pub fn lock_path(dir: &Path) -> PathBuf {
    dir.join(LOCK_FILE)
}
const STATE_VERSION: u32 = 1;

/// Why the persisted state could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state directory {path} is in use by another enforcer process")]
    Locked { path: PathBuf },
    #[error(
        "state file {path} is corrupt ({problem}); refusing to start from empty state, which would re-open rollback: restore it from a backup, or remove it deliberately"
    )]
    Corrupt { path: PathBuf, problem: String },
}

/// Why an artifact was not accepted: refused, or its acceptance could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error(transparent)]
    Refused(#[from] ArtifactError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// The outcome of accepting a verified artifact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Newly accepted and recorded.
    New,
    /// The very same artifact was already accepted (and not superseded): a no-op.
    AlreadyAccepted,
}

/// The last bundle accepted for one issuer and scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SerialRecord {
    pub serial: u64,
    pub artifact: ArtifactId,
}

/// Accepted serials and revocations.
#[derive(Clone, Debug, Default)]
pub struct PolicyState {
    serials: BTreeMap<(String, ScopePath), SerialRecord>,
    revocations: RevocationSet,
    /// Accepted revocations' payloads by id: persisted, and re-read on load.
    revocation_payloads: BTreeMap<ArtifactId, Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateWire {
    version: u32,
    serials: Vec<SerialWire>,
    /// Base64 payloads of accepted revocations; their ids are recomputed on load.
    revocations: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SerialWire {
    issuer: String,
    scope: String,
    serial: u64,
    artifact: String,
}

impl PolicyState {
    /// Reads the state file at `path`; a missing file is the empty state of a first start.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(StateError::Io {
                    action: "read",
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Self::from_bytes(&bytes).map_err(|problem| StateError::Corrupt {
            path: path.to_owned(),
            problem,
        })
    }

    /// Reads the state recorded in the state directory `dir`, without locking it: for
    /// read-only checks such as `enforcer bundle verify --state`.
    pub fn load_dir(dir: &Path) -> Result<Self, StateError> {
        Self::load(&dir.join(STATE_FILE))
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let wire: StateWire = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if wire.version != STATE_VERSION {
            return Err(format!("unsupported version {}", wire.version));
        }
        let mut state = Self::default();
        for s in wire.serials {
            let scope = s.scope.parse().map_err(|e: ArtifactError| e.to_string())?;
            let artifact = s
                .artifact
                .parse()
                .map_err(|e: ArtifactError| e.to_string())?;
            state.serials.insert(
                (s.issuer, scope),
                SerialRecord {
                    serial: s.serial,
                    artifact,
                },
            );
        }
        for encoded in wire.revocations {
            let payload = BASE64
                .decode(encoded)
                .map_err(|e| format!("revocation payload: {e}"))?;
            // Verified when accepted; the signing keys may since have left the trust
            // store, and a revocation must outlive them.
            let revocation = Revocation::from_payload(&payload).map_err(|e| e.to_string())?;
            let id = ArtifactId::of_payload(&payload);
            state.revocations.insert(id, &revocation);
            state.revocation_payloads.insert(id, payload);
        }
        Ok(state)
    }

    fn to_bytes(&self) -> Vec<u8> {
        let wire = StateWire {
            version: STATE_VERSION,
            serials: self
                .serials
                .iter()
                .map(|((issuer, scope), r)| SerialWire {
                    issuer: issuer.clone(),
                    scope: scope.to_string(),
                    serial: r.serial,
                    artifact: r.artifact.to_string(),
                })
                .collect(),
            revocations: self
                .revocation_payloads
                .values()
                .map(|p| BASE64.encode(p))
                .collect(),
        };
        // Strings and numbers only: serialisation into memory cannot fail.
        serde_json::to_vec_pretty(&wire).unwrap_or_default()
    }

    #[must_use]
    pub fn revocations(&self) -> &RevocationSet {
        &self.revocations
    }

    /// The ids of every accepted revocation.
    pub fn revocation_ids(&self) -> impl Iterator<Item = &ArtifactId> {
        self.revocation_payloads.keys()
    }

    /// The last bundle accepted from `issuer` for `scope`.
    #[must_use]
    pub fn last_serial(&self, issuer: &str, scope: &ScopePath) -> Option<SerialRecord> {
        self.serials
            .get(&(issuer.to_owned(), scope.clone()))
            .copied()
    }

    /// Applies the serial rule to a verified bundle without recording anything: its serial
    /// must be greater than the last accepted for its issuer in each of its scopes, unless
    /// it is the very bundle accepted last in all of them (an idempotent resubmission).
    pub fn check_bundle(&self, verified: &VerifiedBundle) -> Result<Accepted, ArtifactError> {
        let b = &verified.bundle;
        let mut resubmission = true;
        for scope in &b.scopes {
            match self.last_serial(&b.issuer, scope) {
                Some(last) if last.artifact == verified.id => {}
                Some(last) if b.serial <= last.serial => {
                    return Err(ArtifactError::Rollback {
                        issuer: b.issuer.clone(),
                        scope: scope.clone(),
                        serial: b.serial,
                        last: last.serial,
                    });
                }
                _ => resubmission = false,
            }
        }
        Ok(if resubmission {
            Accepted::AlreadyAccepted
        } else {
            Accepted::New
        })
    }

    fn record_bundle(&mut self, verified: &VerifiedBundle) {
        let record = SerialRecord {
            serial: verified.bundle.serial,
            artifact: verified.id,
        };
        for scope in &verified.bundle.scopes {
            self.serials
                .insert((verified.bundle.issuer.clone(), scope.clone()), record);
        }
    }

    fn record_revocation(&mut self, verified: &VerifiedRevocation) -> Accepted {
        if self.revocation_payloads.contains_key(&verified.id) {
            return Accepted::AlreadyAccepted;
        }
        self.revocations.insert(verified.id, &verified.revocation);
        self.revocation_payloads
            .insert(verified.id, verified.payload.clone());
        Accepted::New
    }
}

/// Verifies artifacts and records the accepted ones in a state directory it holds locked,
/// so two agents cannot interleave their updates.
#[derive(Debug)]
pub struct Acceptor {
    verifier: Verifier,
    state_path: PathBuf,
    state: PolicyState,
    _lock: File,
}

impl Acceptor {
    /// Opens (creating it, mode 0700, if needed) the state directory `dir` and loads the
    /// state recorded there.
    pub fn open(dir: &Path, verifier: Verifier) -> Result<Self, StateError> {
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| StateError::Io {
                action,
                path,
                source,
            }
        };
        crate::fsutil::create_private_dir(dir).map_err(io("create directory", dir))?;
        let lock_path = lock_path(dir);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StateError::Locked {
                    path: dir.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", &lock_path)(e)),
        }
        let state_path = dir.join(STATE_FILE);
        let state = PolicyState::load(&state_path)?;
        Ok(Self {
            verifier,
            state_path,
            state,
            _lock: lock,
        })
    }

    #[must_use]
    pub fn state(&self) -> &PolicyState {
        &self.state
    }

    #[must_use]
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Verifies a bundle against the trust store and recorded revocations, applies the
    /// serial rule, and records it. The record is on disk before this returns `New`.
    pub fn accept_bundle(
        &mut self,
        bytes: &[u8],
        now: SystemTime,
    ) -> Result<(Accepted, VerifiedBundle), AcceptError> {
        let verified = self
            .verifier
            .verify_bundle(bytes, now, self.state.revocations())?;
        let outcome = self.state.check_bundle(&verified)?;
        if outcome == Accepted::New {
            let mut next = self.state.clone();
            next.record_bundle(&verified);
            self.commit(next)?;
        }
        Ok((outcome, verified))
    }

    /// Verifies a break-glass artifact against the trust store and the recorded
    /// revocations. Nothing is recorded: it has no serial, because replaying it inside its
    /// window does what it already does and outside its window it is refused as expired.
    pub fn accept_break_glass(
        &self,
        bytes: &[u8],
        now: SystemTime,
    ) -> Result<VerifiedBreakGlass, ArtifactError> {
        self.verifier
            .verify_break_glass(bytes, now, self.state.revocations())
    }

    /// Verifies a revocation and records it. Accepting one that is already recorded is a
    /// no-op.
    pub fn accept_revocation(
        &mut self,
        bytes: &[u8],
    ) -> Result<(Accepted, VerifiedRevocation), AcceptError> {
        let verified = self
            .verifier
            .verify_revocation(bytes, self.state.revocations())?;
        let mut next = self.state.clone();
        let outcome = next.record_revocation(&verified);
        if outcome == Accepted::New {
            self.commit(next)?;
        }
        Ok((outcome, verified))
    }

    /// Persists `next`, and only then makes it the state in memory.
    fn commit(&mut self, next: PolicyState) -> Result<(), StateError> {
        crate::fsutil::replace_atomically(&self.state_path, &next.to_bytes(), 0o600).map_err(
            |source| StateError::Io {
                action: "write",
                path: self.state_path.clone(),
                source,
            },
        )?;
        self.state = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::artifact::RevocationTarget;
    use crate::authz::verify::testkit::{self, NOW, now, signed_bundle, store};

    fn open(dir: &Path) -> Acceptor {
        Acceptor::open(dir, Verifier::new(store(1, 1))).expect("open")
    }

    fn with_serial(serial: u64) -> Vec<u8> {
        let mut b = testkit::bundle();
        b.serial = serial;
        signed_bundle(&b, &[1])
    }

    #[test]
    fn accepts_new_bundles_and_resubmission_is_a_no_op() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut acceptor = open(dir.path());
        let (outcome, v) = acceptor
            .accept_bundle(&with_serial(1), now())
            .expect("accept");
        assert_eq!(outcome, Accepted::New);
        let (outcome, again) = acceptor
            .accept_bundle(&with_serial(1), now())
            .expect("again");
        assert_eq!(outcome, Accepted::AlreadyAccepted);
        assert_eq!(again, v);
        let scope = &v.bundle.scopes[0];
        assert_eq!(
            acceptor.state().last_serial("ops", scope),
            Some(SerialRecord {
                serial: 1,
                artifact: v.id
            })
        );
    }

    #[test]
    fn refuses_rollback_and_replay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut acceptor = open(dir.path());
        acceptor.accept_bundle(&with_serial(5), now()).expect("5");
        for (serial, what) in [(4, "rollback"), (5, "replay with the same serial")] {
            let mut b = testkit::bundle();
            b.serial = serial;
            b.grants.pop(); // a different artifact, so not a resubmission
            let err = acceptor
                .accept_bundle(&signed_bundle(&b, &[1]), now())
                .expect_err(what);
            assert!(
                matches!(err, AcceptError::Refused(ArtifactError::Rollback { serial: s, last: 5, .. }) if s == serial),
                "{what}: {err:?}"
            );
            assert!(
                err.to_string().contains(&format!(
                    "rollback or replay: serial {serial} for issuer \"ops\" and scope /agents.slice is not greater than the last accepted serial 5"
                )),
                "{err}"
            );
        }
        // A superseded bundle, resubmitted, is a rollback too.
        acceptor.accept_bundle(&with_serial(6), now()).expect("6");
        let err = acceptor
            .accept_bundle(&with_serial(5), now())
            .expect_err("superseded");
        assert!(
            matches!(
                err,
                AcceptError::Refused(ArtifactError::Rollback { last: 6, .. })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn serials_are_per_issuer_and_scope() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut acceptor = open(dir.path());
        acceptor.accept_bundle(&with_serial(5), now()).expect("5");
        let mut other_issuer = testkit::bundle();
        other_issuer.issuer = "dev".into();
        let mut other_scope = testkit::bundle();
        other_scope.scopes = vec!["/other.slice".parse().expect("scope")];
        for b in [other_issuer, other_scope] {
            let (outcome, _) = acceptor
                .accept_bundle(&signed_bundle(&b, &[1]), now())
                .expect("independent");
            assert_eq!(outcome, Accepted::New);
        }
        // A bundle over two scopes must beat the last serial in each.
        let mut both = testkit::bundle();
        both.serial = 3;
        both.scopes.push("/fresh.slice".parse().expect("scope"));
        let err = acceptor
            .accept_bundle(&signed_bundle(&both, &[1]), now())
            .expect_err("one scope rolls back");
        assert!(err.to_string().contains("scope /agents.slice"), "{err}");
    }

    #[test]
    fn state_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let revocation = crate::authz::artifact::Revocation {
            issuer: "sec".into(),
            issued_at: NOW,
            reason: None,
            targets: vec![RevocationTarget::Bundle("old".into())],
        };
        let revocation = testkit::signed_revocation(&revocation, &[4]);
        {
            let mut acceptor = open(dir.path());
            acceptor.accept_bundle(&with_serial(7), now()).expect("7");
            let (outcome, _) = acceptor.accept_revocation(&revocation).expect("revocation");
            assert_eq!(outcome, Accepted::New);
        }
        let mut acceptor = open(dir.path());
        let err = acceptor
            .accept_bundle(&with_serial(6), now())
            .expect_err("rollback after restart");
        assert!(
            matches!(
                err,
                AcceptError::Refused(ArtifactError::Rollback { last: 7, .. })
            ),
            "{err:?}"
        );
        let (outcome, _) = acceptor
            .accept_bundle(&with_serial(7), now())
            .expect("resubmission");
        assert_eq!(outcome, Accepted::AlreadyAccepted);
        let (outcome, _) = acceptor.accept_revocation(&revocation).expect("again");
        assert_eq!(outcome, Accepted::AlreadyAccepted);
        assert_eq!(acceptor.state().revocation_ids().count(), 1);
        let mut old = testkit::bundle();
        old.bundle_id = "old".into();
        old.serial = 8;
        let err = acceptor
            .accept_bundle(&signed_bundle(&old, &[1]), now())
            .expect_err("revoked after restart");
        assert!(
            matches!(
                err,
                AcceptError::Refused(ArtifactError::BundleRevoked { .. })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn refused_bundles_change_nothing_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut acceptor = open(dir.path());
        acceptor.accept_bundle(&with_serial(2), now()).expect("2");
        let before = std::fs::read(dir.path().join(STATE_FILE)).expect("state");
        let mut forged = with_serial(9);
        let last = forged.len() - 10;
        forged[last] ^= 1;
        acceptor.accept_bundle(&forged, now()).expect_err("forged");
        assert_eq!(
            std::fs::read(dir.path().join(STATE_FILE)).expect("state"),
            before
        );
    }

    #[test]
    fn break_glass_is_refused_once_revoked_and_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = testkit::signed_break_glass(&testkit::break_glass(), &[6]);
        let verifier = || Verifier::new(testkit::store_with_break_glass(1));
        let id = {
            let mut acceptor = Acceptor::open(dir.path(), verifier()).expect("open");
            let first = acceptor
                .accept_break_glass(&bytes, now())
                .expect("accepted");
            // No serial: presenting it again is accepted again and changes nothing on disk.
            assert_eq!(
                acceptor.accept_break_glass(&bytes, now()).expect("again"),
                first
            );
            assert!(!dir.path().join(STATE_FILE).exists(), "nothing recorded");
            let revocation = crate::authz::artifact::Revocation {
                issuer: "sec".into(),
                issued_at: NOW,
                reason: Some("emergency over".into()),
                targets: vec![RevocationTarget::Artifact(first.id)],
            };
            acceptor
                .accept_revocation(&testkit::signed_revocation(&revocation, &[4]))
                .expect("revocation");
            first.id
        };
        let acceptor = Acceptor::open(dir.path(), verifier()).expect("reopen");
        let err = acceptor
            .accept_break_glass(&bytes, now())
            .expect_err("revoked");
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
    fn a_second_acceptor_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = open(dir.path());
        let err = Acceptor::open(dir.path(), Verifier::new(store(1, 1))).expect_err("locked");
        assert!(matches!(err, StateError::Locked { .. }), "{err:?}");
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(STATE_FILE), b"{\"version\":1,").expect("write");
        let err = Acceptor::open(dir.path(), Verifier::new(store(1, 1))).expect_err("corrupt");
        assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("refusing to start from empty state"),
            "{err}"
        );
    }
}
