//! The log's side of witnessing, as the agent runs it: every new checkpoint goes to each
//! configured witness with a consistency proof from what that witness last cosigned, and
//! the cosignatures that come back (checked against the witness's key) are kept with the
//! checkpoint, so that proofs carry them.
//!
//! Cosigned checkpoints are written to `checkpoint.cosigned` beside the log, not over
//! `checkpoint`: the writer publishes `checkpoint` at every checkpoint, and two writers of
//! one file would race. `audit prove` takes the cosigned one when it covers the record.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::client::{WitnessError, add_checkpoint};
use crate::audit::tlog::{
    self, CosignatureVerifier, SignedNote, TileStore, TreeHash, consistency_proof,
};

/// The newest checkpoint with witness cosignatures, beside the log.
pub const COSIGNED_FILE: &str = "checkpoint.cosigned";

const FILE_MODE: u32 = 0o640;

/// One witness the agent sends its checkpoints to: `[[witness]]` in the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessSettings {
    /// The witness's submission prefix, e.g. `http://127.0.0.1:7380`.
    pub url: String,
    /// The witness's cosignature key, as `enforcer witness vkey` prints it.
    pub key: String,
}

impl std::str::FromStr for WitnessSettings {
    type Err = String;

    /// `URL=VKEY`, for `--witness`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (url, key) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not URL=VKEY"))?;
        let settings = Self {
            url: url.to_owned(),
            key: key.to_owned(),
        };
        settings.check()?;
        Ok(settings)
    }
}

impl WitnessSettings {
    /// Checks the key; the URL is checked on first use, by the client.
    pub fn check(&self) -> Result<(), String> {
        CosignatureVerifier::from_vkey(&self.key)
            .map(drop)
            .map_err(|e| format!("witness {}: key {:?}: {e}", self.url, self.key))
    }
}

/// What one push to one witness came to.
#[derive(Debug)]
pub struct Outcome {
    pub url: String,
    /// Cosignatures that verified under the witness's key, or why there were none.
    pub result: Result<usize, PushError>,
}

/// Why a witness did not cosign a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Witness(#[from] WitnessError),
    #[error(
        "the witness has cosigned this log up to size {witness}, beyond this checkpoint's \
         {ours}: the log was rolled back or forked since that witness saw it"
    )]
    AheadOfUs { witness: u64, ours: u64 },
    #[error("the consistency proof from size {from}: {problem}")]
    Proof { from: u64, problem: String },
    #[error("the witness answered, but none of its lines is a valid cosignature by {0}")]
    NoValidCosignature(String),
    #[error("cannot keep the cosigned checkpoint in {}: {source}", .path.display())]
    Save {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

struct Target {
    url: String,
    verifier: CosignatureVerifier,
    /// The size this witness last cosigned for us, as far as we know (0 at start: the
    /// witness tells us otherwise with a 409).
    size: u64,
}

/// Sends checkpoints of the log in `dir` to witnesses.
pub struct Pusher {
    dir: PathBuf,
    targets: Vec<Target>,
    /// What `checkpoint.cosigned` holds: read once, then kept as it is written.
    kept: Option<SignedNote>,
}

impl Pusher {
    /// A pusher for the log in `dir`; fails on a witness key that does not parse.
    pub fn new(dir: &Path, witnesses: &[WitnessSettings]) -> Result<Self, String> {
        let targets = witnesses
            .iter()
            .map(|w| {
                w.check()?;
                Ok(Target {
                    url: w.url.clone(),
                    verifier: CosignatureVerifier::from_vkey(&w.key).map_err(|e| e.to_string())?,
                    size: 0,
                })
            })
            .collect::<Result<_, String>>()?;
        // A missing or unreadable file keeps no witness in: the next save replaces it.
        let kept = std::fs::read(dir.join(COSIGNED_FILE))
            .ok()
            .and_then(|text| SignedNote::parse(&text).ok());
        Ok(Self {
            dir: dir.to_owned(),
            targets,
            kept,
        })
    }

    /// Sends `note` (the log's newest checkpoint) to every witness, then keeps it with the
    /// cosignatures that verified as `checkpoint.cosigned`.
    pub async fn push(&mut self, note: &SignedNote) -> Vec<Outcome> {
        let size = match tlog::Checkpoint::parse(note.text()) {
            Ok(checkpoint) => checkpoint.size(),
            Err(e) => {
                return vec![Outcome {
                    url: String::new(),
                    result: Err(PushError::Proof {
                        from: 0,
                        problem: format!("the log's own note is not a checkpoint: {e}"),
                    }),
                }];
            }
        };
        let mut cosigned = note.clone();
        let mut outcomes = Vec::with_capacity(self.targets.len());
        for i in 0..self.targets.len() {
            let result = self.push_one(i, note, size).await.and_then(|lines| {
                let target = &self.targets[i];
                let valid: Vec<_> = lines
                    .into_iter()
                    .filter(|line| target.verifier.verify(note.text(), line).is_ok())
                    .collect();
                if valid.is_empty() {
                    return Err(PushError::NoValidCosignature(
                        target.verifier.name().to_owned(),
                    ));
                }
                let count = valid.len();
                for line in valid {
                    // A duplicate line is the only possible refusal; it changes nothing.
                    let _ = cosigned.add_signature(line);
                }
                Ok(count)
            });
            outcomes.push(Outcome {
                url: self.targets[i].url.clone(),
                result,
            });
        }
        if cosigned.signatures().len() > note.signatures().len()
            && self.keeps_every_witness(&cosigned)
            && let Err(e) = self.save(&cosigned)
            && let Some(first) = outcomes.iter_mut().find(|o| o.result.is_ok())
        {
            first.result = Err(e);
        }
        outcomes
    }

    /// Pushes every note that `notes` offers until its sender goes (the newest only, when
    /// several arrive during one push), logging what each witness answered.
    pub async fn run(mut self, mut notes: tokio::sync::watch::Receiver<Option<SignedNote>>) {
        while notes.changed().await.is_ok() {
            let Some(note) = notes.borrow_and_update().clone() else {
                continue;
            };
            for outcome in self.push(&note).await {
                match outcome.result {
                    Ok(count) => {
                        tracing::debug!(witness = %outcome.url, count, "checkpoint cosigned")
                    }
                    Err(e) => {
                        tracing::warn!(witness = %outcome.url, "checkpoint not cosigned: {e}")
                    }
                }
            }
        }
    }

    /// One witness: from what we think it saw, then once more from what it says it saw.
    async fn push_one(
        &mut self,
        i: usize,
        note: &SignedNote,
        size: u64,
    ) -> Result<Vec<tlog::NoteSignature>, PushError> {
        let mut old = self.targets[i].size.min(size);
        for attempt in 0..2 {
            let proof = self.proof(old, size)?;
            match add_checkpoint(&self.targets[i].url, old, &proof, note).await {
                Ok(lines) => {
                    self.targets[i].size = size;
                    return Ok(lines);
                }
                Err(WitnessError::Conflict { witness_size }) if attempt == 0 => {
                    if witness_size > size {
                        return Err(PushError::AheadOfUs {
                            witness: witness_size,
                            ours: size,
                        });
                    }
                    old = witness_size;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(PushError::Witness(WitnessError::Conflict {
            witness_size: old,
        }))
    }

    /// The consistency proof from `old` to `new`, from the tiles beside the log.
    fn proof(&self, old: u64, new: u64) -> Result<Vec<TreeHash>, PushError> {
        if old == 0 || old == new {
            return Ok(Vec::new());
        }
        let problem = |problem: String| PushError::Proof { from: old, problem };
        let tiles =
            TileStore::open_read_only(&self.dir, new).map_err(|e| problem(e.to_string()))?;
        consistency_proof(&tiles, old, new).map_err(|e| problem(e.to_string()))
    }

    /// Whether `note` has a cosignature from every witness the kept cosigned checkpoint
    /// has: a witness that missed one round must not drop out of the proofs made
    /// meanwhile (the kept one still covers everything up to its size).
    fn keeps_every_witness(&self, note: &SignedNote) -> bool {
        let Some(kept) = &self.kept else {
            return true;
        };
        self.targets.iter().all(|t| {
            let had = t.verifier.verify_note(kept).ok().flatten().is_some();
            !had || t.verifier.verify_note(note).ok().flatten().is_some()
        })
    }

    fn save(&mut self, note: &SignedNote) -> Result<(), PushError> {
        let path = self.dir.join(COSIGNED_FILE);
        crate::fsutil::replace_atomically(&path, note.to_string().as_bytes(), FILE_MODE)
            .map_err(|source| PushError::Save { path, source })?;
        self.kept = Some(note.clone());
        Ok(())
    }
}
