//! C2SP `tlog-checkpoint`: the tree head as note text.
//!
//! ```text
//! <origin>
//! <tree size, decimal>
//! <root hash, base64>
//! [extension lines]
//! ```
//!
//! Signed as a [`SignedNote`] by the log's key, whose name should be the origin. The
//! reader names the origin it expects: a checkpoint of another log, even one signed by a
//! key the reader trusts, says nothing about this one.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::merkle::TreeHash;
use super::note::{MAX_LINE_BYTES, NoteError, SignedNote};
use super::note_key::{NoteSigner, NoteVerifier, NoteVerifiers};

/// Why a checkpoint was refused. Line numbers count from 1 over the note text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error("checkpoint note: {0}")]
    Note(#[from] NoteError),
    #[error("the checkpoint text does not end with a newline")]
    MissingFinalNewline,
    #[error(
        "the checkpoint has {found} line(s); it needs at least origin, tree size and root hash"
    )]
    TooFewLines { found: usize },
    #[error("line {line} is empty; the origin and extension lines must not be")]
    EmptyLine { line: usize },
    #[error("line {line} has {len} bytes, more than the {max} allowed")]
    LineTooLong { line: usize, len: usize, max: usize },
    #[error("line {line} holds control character {code:#04x}")]
    ControlCharacter { line: usize, code: u32 },
    #[error("tree size {text:?} is not valid: {problem}")]
    BadSize { text: String, problem: &'static str },
    #[error("root hash {text:?} is not valid: {problem}")]
    BadRootHash { text: String, problem: &'static str },
    #[error("the checkpoint is for origin {found:?}, not {expected:?}: it belongs to another log")]
    WrongOrigin { expected: String, found: String },
}

/// A tree head: which log, how many leaves, their root, and optional extension lines.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: TreeHash,
    extensions: Vec<String>,
}

/// A checkpoint whose note verified under a trusted key, with the note it came in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    pub checkpoint: Checkpoint,
    /// The note as received, with every signature (witness cosignatures included).
    pub note: SignedNote,
    /// The trusted keys whose signatures verified.
    pub signed_by: Vec<NoteVerifier>,
}

/// Checks a line that the text carries verbatim (origin, extension): non-empty, short
/// enough, no control character. The note rules again, so that any checkpoint that
/// builds can be signed and read back.
fn check_free_line(text: &str, line: usize) -> Result<(), CheckpointError> {
    if text.is_empty() {
        return Err(CheckpointError::EmptyLine { line });
    }
    check_line(text, line)
}

fn check_line(text: &str, line: usize) -> Result<(), CheckpointError> {
    if text.len() > MAX_LINE_BYTES {
        return Err(CheckpointError::LineTooLong {
            line,
            len: text.len(),
            max: MAX_LINE_BYTES,
        });
    }
    if let Some(c) = text.chars().find(|&c| c < ' ') {
        return Err(CheckpointError::ControlCharacter {
            line,
            code: u32::from(c),
        });
    }
    Ok(())
}

/// A tree size as the C2SP tlog specs write one (checkpoints, the witness protocol's
/// `old` line and its 409 body): ASCII decimal, no sign, no leading zero, so that each
/// number has one spelling. The error says what is wrong with `text`.
pub fn parse_tree_size(text: &str) -> Result<u64, &'static str> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a decimal number");
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err("leading zero");
    }
    text.parse().map_err(|_| "larger than 2^64 - 1")
}

fn parse_size(text: &str) -> Result<u64, CheckpointError> {
    parse_tree_size(text).map_err(|problem| CheckpointError::BadSize {
        text: text.to_owned(),
        problem,
    })
}

/// A tree hash in standard base64, as checkpoints and proofs in the witness protocol
/// write one. The error says what is wrong with `text`.
pub fn parse_tree_hash(text: &str) -> Result<TreeHash, &'static str> {
    let raw = BASE64.decode(text).map_err(|_| "not standard base64")?;
    TreeHash::from_slice(&raw).ok_or("not 32 bytes (a SHA-256 hash)")
}

fn parse_root(text: &str) -> Result<TreeHash, CheckpointError> {
    parse_tree_hash(text).map_err(|problem| CheckpointError::BadRootHash {
        text: text.to_owned(),
        problem,
    })
}

impl Checkpoint {
    /// A checkpoint of the tree of `size` leaves with root `root`, for log `origin`.
    pub fn new(origin: &str, size: u64, root: TreeHash) -> Result<Self, CheckpointError> {
        check_free_line(origin, 1)?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions: Vec::new(),
        })
    }

    /// Adds an extension line. The spec discourages them (monitors cannot audit them);
    /// this exists so that a checkpoint read with extensions is kept whole.
    pub fn with_extension(mut self, line: &str) -> Result<Self, CheckpointError> {
        check_free_line(line, 4 + self.extensions.len())?;
        self.extensions.push(line.to_owned());
        Ok(self)
    }

    /// Parses checkpoint text (a note's text, with its final newline).
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::MissingFinalNewline)?;
        let lines: Vec<&str> = body.split('\n').collect();
        let [origin, size, root, extensions @ ..] = lines.as_slice() else {
            return Err(CheckpointError::TooFewLines { found: lines.len() });
        };
        check_free_line(origin, 1)?;
        check_line(size, 2)?;
        check_line(root, 3)?;
        let mut checkpoint = Self::new(origin, parse_size(size)?, parse_root(root)?)?;
        for ext in extensions {
            checkpoint = checkpoint.with_extension(ext)?;
        }
        Ok(checkpoint)
    }

    #[must_use]
    pub fn origin(&self) -> &str {
        &self.origin
    }

    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    #[must_use]
    pub fn root(&self) -> &TreeHash {
        &self.root
    }

    #[must_use]
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// Signs the checkpoint text with the log's key.
    pub fn sign(&self, signer: &NoteSigner<'_>) -> Result<SignedNote, CheckpointError> {
        Ok(SignedNote::sign(self.to_string(), signer)?)
    }

    /// Reads a signed checkpoint: the note must verify under a trusted key, and its text
    /// must be a checkpoint of `origin`.
    pub fn open(
        note: &[u8],
        origin: &str,
        keys: &NoteVerifiers,
    ) -> Result<VerifiedCheckpoint, CheckpointError> {
        let note = SignedNote::parse(note)?;
        let verified = note.verify(keys)?;
        let signed_by = verified.trusted.into_iter().cloned().collect();
        let checkpoint = Self::parse(note.text())?;
        if checkpoint.origin != origin {
            return Err(CheckpointError::WrongOrigin {
                expected: origin.to_owned(),
                found: checkpoint.origin,
            });
        }
        Ok(VerifiedCheckpoint {
            checkpoint,
            note,
            signed_by,
        })
    }
}

impl fmt::Display for Checkpoint {
    /// The checkpoint text, each line ended by a newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.origin)?;
        writeln!(f, "{}", self.size)?;
        writeln!(f, "{}", self.root.to_base64())?;
        for ext in &self.extensions {
            writeln!(f, "{ext}")?;
        }
        Ok(())
    }
}
