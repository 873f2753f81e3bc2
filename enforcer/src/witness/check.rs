//! What a witness checks before it cosigns, in the order C2SP `tlog-witness` lists the
//! checks, each refusal with the status code the spec gives it. No HTTP here: the server
//! maps a [`Refusal`] to its status, and tests call [`Witness::add_checkpoint`] directly.

use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

use hyper::StatusCode;
use sha2::{Digest as _, Sha256};

use super::logs::TrustedLogs;
use super::protocol::AddCheckpoint;
use super::state::{LogState, StateError, WitnessState};
use crate::audit::tlog::{
    Checkpoint, CheckpointError, CosignatureError, CosignatureVerifier, Cosigner, KeyError,
    NoteError, NoteSignature, NoteVerifiers, SignedNote, VerifyError, empty_root,
    verify_consistency,
};
use crate::authz::trust::SigningKey;

/// Why a checkpoint was not cosigned.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the note's text is not a checkpoint: {0}")]
    NotCheckpoint(CheckpointError),
    #[error("this witness does not cosign for log {origin:?}")]
    UnknownOrigin { origin: String },
    #[error("the checkpoint is not validly signed by a key this witness trusts for its log: {0}")]
    NotSigned(NoteError),
    #[error("the old size {old} is larger than the checkpoint's size {size}")]
    OldLarger { old: u64, size: u64 },
    #[error(
        "the old size {old} is not the size of the latest checkpoint this witness cosigned \
         for the log ({witness_size}); resend with old {witness_size} and a proof from it"
    )]
    Conflict { old: u64, witness_size: u64 },
    #[error(
        "the checkpoint is not consistent with the one this witness cosigned (size \
         {witness_size}): {source}"
    )]
    Inconsistent {
        witness_size: u64,
        #[source]
        source: VerifyError,
    },
    #[error("cannot record the checkpoint, so it is not cosigned: {0}")]
    State(#[from] StateError),
    #[error("cannot cosign: {0}")]
    Cosign(#[from] CosignatureError),
}

impl Refusal {
    /// The HTTP status the spec gives this refusal.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotCheckpoint(_) | Self::OldLarger { .. } => StatusCode::BAD_REQUEST,
            Self::UnknownOrigin { .. } => StatusCode::NOT_FOUND,
            Self::NotSigned(_) => StatusCode::FORBIDDEN,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Inconsistent { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::State(_) | Self::Cosign(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A witness: its key and name, the logs it cosigns for, and what it has cosigned.
#[derive(Debug)]
pub struct Witness {
    key: SigningKey,
    verifier: CosignatureVerifier,
    logs: TrustedLogs,
    /// One lock over check-and-record: two requests checked against the same old state
    /// and recorded in turn would let the later record roll back the earlier (the race
    /// the spec spells out).
    state: Mutex<WitnessState>,
}

impl Witness {
    /// A witness named `name` cosigning with `key` for `logs`, from its saved `state`.
    pub fn new(
        name: &str,
        key: SigningKey,
        logs: TrustedLogs,
        state: WitnessState,
    ) -> Result<Self, KeyError> {
        let verifier = Cosigner::new(name, &key)?.verifier().clone();
        Ok(Self {
            key,
            verifier,
            logs,
            state: Mutex::new(state),
        })
    }

    /// The witness's public key, as clients configure it.
    #[must_use]
    pub fn verifier(&self) -> &CosignatureVerifier {
        &self.verifier
    }

    /// The latest checkpoint cosigned for `origin`.
    #[must_use]
    pub fn latest(&self, origin: &str) -> Option<LogState> {
        self.lock().get(origin).cloned()
    }

    /// The latest checkpoint cosigned for the log whose origin hashes to `origin_hash`
    /// (SHA-256, lowercase hex): how monitors name a log in a URL.
    #[must_use]
    pub fn latest_by_origin_hash(&self, origin_hash: &str) -> Option<LogState> {
        self.lock()
            .logs()
            .find(|l| hex::encode(Sha256::digest(l.checkpoint.origin())) == origin_hash)
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WitnessState> {
        // A panic while the lock was held left the state as it was before `set` or after
        // it (`set` changes memory only once the file is written): both are sound.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers an `add-checkpoint` request at time `now` (seconds since the Epoch): the
    /// witness's cosignature, recorded durably before it is returned, or why not.
    ///
    /// Blocks on the state file's fsync: call it off the async runtime's threads.
    pub fn add_checkpoint(
        &self,
        request: &AddCheckpoint,
        now: u64,
    ) -> Result<Vec<NoteSignature>, Refusal> {
        let note = &request.note;
        let checkpoint = Checkpoint::parse(note.text()).map_err(Refusal::NotCheckpoint)?;
        let origin = checkpoint.origin();
        let keys = self
            .logs
            .keys(origin)
            .ok_or_else(|| Refusal::UnknownOrigin {
                origin: origin.to_owned(),
            })?;
        note.verify(keys).map_err(Refusal::NotSigned)?;
        if request.old_size > checkpoint.size() {
            return Err(Refusal::OldLarger {
                old: request.old_size,
                size: checkpoint.size(),
            });
        }

        let mut state = self.lock();
        let latest = state.get(origin);
        let (witness_size, witness_root) =
            latest.map_or((0, empty_root()), |l| (l.size(), *l.root()));
        if request.old_size != witness_size {
            return Err(Refusal::Conflict {
                old: request.old_size,
                witness_size,
            });
        }
        // From size 0 the proof must be empty; at equal sizes the roots must be equal;
        // a size-0 checkpoint must have the empty tree's root. verify_consistency
        // checks all three along with the proof itself.
        verify_consistency(
            witness_size,
            checkpoint.size(),
            &witness_root,
            checkpoint.root(),
            &request.proof,
        )
        .map_err(|source| Refusal::Inconsistent {
            witness_size,
            source,
        })?;

        // A cosignature says "as of this time, this is the largest tree I saw": never
        // state an earlier time than the last statement, even if the clock stepped back.
        let cosigned_at = latest.map_or(now, |l| l.cosigned_at.max(now));
        let cosignature = Cosigner::new(self.verifier.name(), &self.key)
            .map_err(CosignatureError::from)?
            .cosign(&checkpoint, cosigned_at)?;
        let evidence = evidence(note, keys, &cosignature).map_err(CosignatureError::from)?;
        state.set(LogState {
            checkpoint,
            note: evidence,
            cosigned_at,
        })?;
        Ok(vec![cosignature])
    }
}

/// The note the witness keeps: the checkpoint text with the log signatures it verified and
/// its own cosignature, and nothing a stranger added (as the spec asks of the checkpoint
/// a witness shows monitors).
fn evidence(
    note: &SignedNote,
    keys: &NoteVerifiers,
    cosignature: &NoteSignature,
) -> Result<SignedNote, NoteError> {
    let mut text = format!("{}\n", note.text());
    let trusted = note
        .signatures()
        .iter()
        .filter(|s| keys.find(s.name(), s.key_id()).is_some());
    for signature in trusted.chain([cosignature]) {
        // Writing to a String cannot fail.
        let _ = writeln!(text, "{signature}");
    }
    SignedNote::parse(text.as_bytes())
}
