//! The bytes of C2SP `tlog-witness` `add-checkpoint`, written and read by the same code on
//! both ends (the client writes what the server reads, and the other way round).
//!
//! Request body:
//!
//! ```text
//! old <size the client believes the witness has>
//! <consistency proof hash, base64>        (0 to 63 lines)
//! <blank line>
//! <the checkpoint note, log signature(s) included>
//! ```
//!
//! Answers: 200 with one cosignature line per witness key, or 409 with the witness's
//! size as `text/x.tlog.size`, or another status with a line of text saying why.

use std::fmt::Write as _;

use crate::audit::tlog::note::MAX_NOTE_BYTES;
use crate::audit::tlog::{
    NoteError, NoteSignature, SignedNote, TreeHash, parse_tree_hash, parse_tree_size,
};

/// Where `add-checkpoint` lives, under the witness's submission prefix.
pub const ADD_CHECKPOINT_PATH: &str = "/add-checkpoint";

/// The content type of a 409 answer: the witness's tree size, decimal, and a newline.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// The most consistency proof lines a client may send (the spec's bound; a proof has at
/// most one hash per level of the tree, and a witness reads no more).
pub const MAX_PROOF_LINES: usize = 63;

/// The most bytes a request body may have: the largest note, its `old` line and a full
/// proof (45 bytes a line), with room to spare. Bodies are read into memory, so this is
/// what one connection can cost.
pub const MAX_REQUEST_BYTES: usize = MAX_NOTE_BYTES + 8 * 1024;

/// The most bytes of an answer a client reads.
pub const MAX_RESPONSE_BYTES: usize = MAX_NOTE_BYTES;

/// Why a request body is not an `add-checkpoint` request (answered with 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the body has {len} bytes, more than the {max} allowed")]
    TooLarge { len: usize, max: usize },
    #[error("the body does not start with an `old <size>` line")]
    NoOldLine,
    #[error("the old size {text:?} is not valid: {problem}")]
    BadOldSize { text: String, problem: &'static str },
    #[error("proof line {line} is not a tree hash: {problem}")]
    BadProofLine { line: usize, problem: &'static str },
    #[error("the proof has more than the {MAX_PROOF_LINES} lines a client may send")]
    TooManyProofLines,
    #[error("no blank line separates the proof from the checkpoint")]
    NoBlankLine,
    #[error("the checkpoint note: {0}")]
    Note(#[from] NoteError),
}

/// An `add-checkpoint` request: "cosign this checkpoint; you have seen `old_size` of this
/// log, and here is the proof that this checkpoint extends it."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    pub old_size: u64,
    pub proof: Vec<TreeHash>,
    pub note: SignedNote,
}

impl AddCheckpoint {
    /// Reads a request body. Syntax only: whose checkpoint it is and whether it extends
    /// what the witness saw is the witness's to check.
    pub fn parse(body: &[u8]) -> Result<Self, RequestError> {
        if body.len() > MAX_REQUEST_BYTES {
            return Err(RequestError::TooLarge {
                len: body.len(),
                max: MAX_REQUEST_BYTES,
            });
        }
        let (first, mut rest) = split_line(body).ok_or(RequestError::NoOldLine)?;
        let old = first.strip_prefix(b"old ").ok_or(RequestError::NoOldLine)?;
        let old = std::str::from_utf8(old).map_err(|_| RequestError::BadOldSize {
            text: String::from_utf8_lossy(old).into_owned(),
            problem: "not ASCII",
        })?;
        let old_size = parse_tree_size(old).map_err(|problem| RequestError::BadOldSize {
            text: old.to_owned(),
            problem,
        })?;
        let mut proof = Vec::new();
        loop {
            let (line, after) = split_line(rest).ok_or(RequestError::NoBlankLine)?;
            rest = after;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_LINES {
                return Err(RequestError::TooManyProofLines);
            }
            let number = proof.len() + 1;
            let hash = std::str::from_utf8(line)
                .map_err(|_| "not ASCII")
                .and_then(parse_tree_hash)
                .map_err(|problem| RequestError::BadProofLine {
                    line: number,
                    problem,
                })?;
            proof.push(hash);
        }
        Ok(Self {
            old_size,
            proof,
            note: SignedNote::parse(rest)?,
        })
    }

    /// The request body.
    #[must_use]
    pub fn encode(old_size: u64, proof: &[TreeHash], note: &SignedNote) -> String {
        let mut body = format!("old {old_size}\n");
        for hash in proof {
            // Writing to a String cannot fail.
            let _ = writeln!(body, "{}", hash.to_base64());
        }
        body.push('\n');
        let _ = write!(body, "{note}");
        body
    }
}

/// The first line of `bytes` without its newline, and what follows; `None` when there is
/// no newline.
fn split_line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.iter().position(|&b| b == b'\n')?;
    Some((&bytes[..end], &bytes[end + 1..]))
}

/// The body of a 409 answer.
#[must_use]
pub fn size_body(size: u64) -> String {
    format!("{size}\n")
}

/// Reads the body of a 409 answer; the error says what is wrong.
pub fn parse_size_body(body: &[u8]) -> Result<u64, &'static str> {
    let text = std::str::from_utf8(body).map_err(|_| "not ASCII")?;
    let size = text.strip_suffix('\n').ok_or("no final newline")?;
    parse_tree_size(size)
}

/// The body of a 200 answer: one signature line each, each ending in a newline.
#[must_use]
pub fn cosignatures_body(cosignatures: &[NoteSignature]) -> String {
    cosignatures.iter().map(|c| format!("{c}\n")).collect()
}

/// Reads the body of a 200 answer: at least one signature line, each ending in a newline.
pub fn parse_cosignatures_body(body: &[u8]) -> Result<Vec<NoteSignature>, NoteError> {
    if body.len() > MAX_RESPONSE_BYTES {
        return Err(NoteError::TooLarge {
            len: body.len(),
            max: MAX_RESPONSE_BYTES,
        });
    }
    let text = std::str::from_utf8(body).map_err(|e| NoteError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let lines = text
        .strip_suffix('\n')
        .ok_or(NoteError::MissingFinalNewline)?;
    if lines.is_empty() {
        return Err(NoteError::NoSignatures);
    }
    lines.split('\n').map(NoteSignature::parse).collect()
}
