//! C2SP `tlog-cosignature`, the Ed25519 `cosignature/v1` type: a witness's statement that,
//! at a given time, a checkpoint is the largest tree head of its log that the witness has
//! seen and checked to be consistent with every earlier one.
//!
//! A cosignature is an ordinary note signature line on the checkpoint,
//!
//! ```text
//! — <witness name> base64(key ID || u64 big-endian timestamp || Ed25519 signature)
//! ```
//!
//! with two differences from a log's signature, both there so that a cosignature can never
//! be taken for a log signature or the other way round:
//!
//! - the key ID is derived with signature type `0x04`, not `0x01`
//!   (`SHA-256(name || 0x0A || 0x04 || public key)[:4]`), and the vkey carries that type;
//! - the signed message is not the checkpoint text alone but
//!   `cosignature/v1\ntime <timestamp>\n` followed by it, so the time is signed too.
//!
//! The Ed25519 message does not commit to the witness's name: a key must serve one witness
//! name only (the spec's rule, repeated in `docs/audit.md`). The ML-DSA-44 type the spec
//! recommends for new deployments needs a post-quantum signature crate the tree does not
//! carry; this is the type every deployed witness speaks today.

use std::fmt;

use ed25519_dalek::{Signature, VerifyingKey};

use super::checkpoint::Checkpoint;
use super::note::{NoteError, NoteSignature, SignedNote};
use super::note_key::{KeyError, NoteKeyId, check_key_name, ed25519_vkey, parse_ed25519_vkey};
use crate::authz::trust::SigningKey;

/// The signature type byte `tlog-cosignature` assigns to Ed25519 `cosignature/v1`.
pub const COSIGNATURE_V1_TYPE: u8 = 0x04;

/// Bytes of a `cosignature/v1` after the key ID: an 8-byte timestamp and an Ed25519
/// signature.
pub const COSIGNATURE_V1_LEN: usize = 8 + 64;

/// The largest timestamp the spec allows, 2^63 - 1 (so that it fits a signed 64-bit time).
pub const MAX_TIMESTAMP: u64 = (1 << 63) - 1;

/// The header line that separates cosigned messages from every other Ed25519 message.
const HEADER: &str = "cosignature/v1\n";

/// Why a cosignature could not be made or was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CosignatureError {
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("{0}")]
    Note(#[from] NoteError),
    #[error(
        "cosignature timestamp {0} is not allowed: a witness states when it cosigned, in \
         seconds since the Epoch, from 1 to 2^63 - 1"
    )]
    BadTimestamp(u64),
    #[error(
        "the signature by {name}+{id} has {len} bytes after its key id; a cosignature/v1 \
         has {COSIGNATURE_V1_LEN} (an 8-byte timestamp and a 64-byte Ed25519 signature)"
    )]
    WrongLength {
        name: String,
        id: NoteKeyId,
        len: usize,
    },
    #[error(
        "the signature is by {found_name}+{found_id}, not by witness {name}+{id}; check \
         that the witness's vkey is the one configured"
    )]
    OtherKey {
        name: String,
        id: NoteKeyId,
        found_name: String,
        found_id: NoteKeyId,
    },
    #[error(
        "the cosignature by witness {name}+{id} does not verify: the checkpoint was \
         altered after cosigning, or another key signed under that name and id"
    )]
    BadSignature { name: String, id: NoteKeyId },
}

/// The message a `cosignature/v1` signs: header, time line, then the checkpoint text.
fn signed_message(timestamp: u64, text: &str) -> Vec<u8> {
    format!("{HEADER}time {timestamp}\n{text}").into_bytes()
}

/// The timestamp a `cosignature/v1` states, without verifying anything: for a reader that
/// wants to know how fresh a cosignature is before (or without) trusting it.
pub fn cosignature_timestamp(signature: &NoteSignature) -> Result<u64, CosignatureError> {
    let bytes = signature.signature();
    let (time, _) = bytes
        .split_first_chunk::<8>()
        .filter(|_| bytes.len() == COSIGNATURE_V1_LEN)
        .ok_or_else(|| CosignatureError::WrongLength {
            name: signature.name().to_owned(),
            id: signature.key_id(),
            len: bytes.len(),
        })?;
    let timestamp = u64::from_be_bytes(*time);
    if timestamp > MAX_TIMESTAMP {
        return Err(CosignatureError::BadTimestamp(timestamp));
    }
    Ok(timestamp)
}

/// A witness's public key: checks its `cosignature/v1` signatures.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CosignatureVerifier {
    name: String,
    id: NoteKeyId,
    key: VerifyingKey,
}

/// A verified cosignature: which witness, and the time it states.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Cosigned<'a> {
    pub witness: &'a CosignatureVerifier,
    /// Seconds since the Epoch at which the witness cosigned.
    pub timestamp: u64,
}

impl CosignatureVerifier {
    /// The verifier of witness `name` with Ed25519 key `key`.
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, KeyError> {
        check_key_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            id: NoteKeyId::derive(name, COSIGNATURE_V1_TYPE, key.as_bytes()),
            key,
        })
    }

    /// Parses a witness vkey, `<name>+<hex key id>+<base64(0x04 || 32-byte key)>`.
    ///
    /// A type `0x01` vkey is refused, though Go's library accepts it as the same key: a
    /// vkey says what role its key plays, and a log's key is not a witness's.
    pub fn from_vkey(text: &str) -> Result<Self, KeyError> {
        let (name, id, key) = parse_ed25519_vkey(text, COSIGNATURE_V1_TYPE)?;
        Ok(Self {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// The vkey text of this witness key (what [`CosignatureVerifier::from_vkey`] reads).
    #[must_use]
    pub fn to_vkey(&self) -> String {
        ed25519_vkey(&self.name, self.id, COSIGNATURE_V1_TYPE, &self.key)
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    #[must_use]
    pub fn key_id(&self) -> NoteKeyId {
        self.id
    }

    #[must_use]
    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Whether `signature` names this key (name and key ID both).
    #[must_use]
    pub fn is_signer_of(&self, signature: &NoteSignature) -> bool {
        signature.key_id() == self.id && signature.name() == self.name
    }

    /// Checks that `signature` is this witness's cosignature of the checkpoint text
    /// `text` (with its final newline), and returns the time it states.
    pub fn verify(&self, text: &str, signature: &NoteSignature) -> Result<u64, CosignatureError> {
        if !self.is_signer_of(signature) {
            return Err(CosignatureError::OtherKey {
                name: self.name.clone(),
                id: self.id,
                found_name: signature.name().to_owned(),
                found_id: signature.key_id(),
            });
        }
        let timestamp = cosignature_timestamp(signature)?;
        let bad = || CosignatureError::BadSignature {
            name: self.name.clone(),
            id: self.id,
        };
        let signature = Signature::from_slice(&signature.signature()[8..]).map_err(|_| bad())?;
        // Strict, as for log signatures: an honest signer never makes what it refuses.
        self.key
            .verify_strict(&signed_message(timestamp, text), &signature)
            .map_err(|_| bad())?;
        Ok(timestamp)
    }

    /// This witness's cosignature in `note`, verified: `None` when it has none. As the
    /// signed-note rules ask, a signature that names this key but does not verify is an
    /// error, not an absence.
    pub fn verify_note(&self, note: &SignedNote) -> Result<Option<u64>, CosignatureError> {
        let mut found = None;
        for signature in note.signatures().iter().filter(|s| self.is_signer_of(s)) {
            let timestamp = self.verify(note.text(), signature)?;
            // A note may carry two cosignatures of one witness (two requests): the
            // newest statement is the one that says the most.
            found = found.max(Some(timestamp));
        }
        Ok(found)
    }
}

impl fmt::Display for CosignatureVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_vkey())
    }
}

/// The witnesses among `witnesses` that cosigned `note`, each once, with the time each
/// states: what a reader counts against its quorum. Any signature by one of them that
/// does not verify refuses the note.
pub fn cosigned_by<'a>(
    note: &SignedNote,
    witnesses: &'a [CosignatureVerifier],
) -> Result<Vec<Cosigned<'a>>, CosignatureError> {
    let mut cosigned: Vec<Cosigned<'a>> = Vec::new();
    for witness in witnesses {
        if cosigned.iter().any(|c| c.witness == witness) {
            continue;
        }
        if let Some(timestamp) = witness.verify_note(note)? {
            cosigned.push(Cosigned { witness, timestamp });
        }
    }
    Ok(cosigned)
}

/// A witness's private key, cosigning under the witness's name. It borrows the key, which
/// keeps ownership (and wiping) of the secret.
#[derive(Debug)]
pub struct Cosigner<'k> {
    verifier: CosignatureVerifier,
    key: &'k SigningKey,
}

impl<'k> Cosigner<'k> {
    /// A cosigner for witness `name` with `key`. The key must serve no other witness name
    /// and sign nothing else (the message does not commit to the name).
    pub fn new(name: &str, key: &'k SigningKey) -> Result<Self, KeyError> {
        Ok(Self {
            verifier: CosignatureVerifier::new(name, key.public_key())?,
            key,
        })
    }

    /// The public half, to publish as the witness's vkey.
    #[must_use]
    pub fn verifier(&self) -> &CosignatureVerifier {
        &self.verifier
    }

    /// Cosigns `checkpoint` as of `timestamp` (seconds since the Epoch; the witness
    /// protocol forbids zero).
    pub fn cosign(
        &self,
        checkpoint: &Checkpoint,
        timestamp: u64,
    ) -> Result<NoteSignature, CosignatureError> {
        if timestamp == 0 || timestamp > MAX_TIMESTAMP {
            return Err(CosignatureError::BadTimestamp(timestamp));
        }
        let text = checkpoint.to_string();
        let mut bytes = Vec::with_capacity(COSIGNATURE_V1_LEN);
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(&self.key.sign(&signed_message(timestamp, &text)));
        Ok(NoteSignature::new(
            &self.verifier.name,
            self.verifier.id,
            bytes,
        )?)
    }
}
