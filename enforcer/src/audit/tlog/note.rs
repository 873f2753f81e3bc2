//! C2SP `signed-note`: a text and the signatures on it.
//!
//! ```text
//! <text, ending in a newline>
//! <blank line>
//! — <key name> <base64(4-byte key ID || signature)>
//! ```
//!
//! The text is everything up to the *last* blank line (it may hold blank lines of its own).
//! A reader trusts a note only for the keys it knows: a signature whose name and ID match a
//! known key must verify (otherwise the whole note is refused), at least one must, and every
//! other signature is kept untrusted, because it may be a witness's cosignature that
//! someone else can check.
//!
//! Limits, so that reading an untrusted note costs bounded memory and time: at most
//! [`MAX_NOTE_BYTES`] in all, [`MAX_LINE_BYTES`] per line and [`MAX_SIGNATURES`]
//! signatures (Go's `sumdb/note` accepts 100; the spec asks for at least 16).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::note_key::{
    KeyError, NoteKeyId, NoteSigner, NoteVerifier, NoteVerifiers, check_key_name,
};

/// The most bytes a note may have.
pub const MAX_NOTE_BYTES: usize = 1 << 20;
/// The most bytes a line may have, newline excluded. A signature line of the largest
/// signature type (ML-DSA-44, about 3.3 KB in base64) fits.
pub const MAX_LINE_BYTES: usize = 8 << 10;
/// The most signatures a note may carry.
pub const MAX_SIGNATURES: usize = 100;

/// What starts a signature line: an em dash (U+2014) and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Why a note was refused. Line numbers count from 1 over the whole note.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoteError {
    #[error("the note has {len} bytes, more than the {max} allowed")]
    TooLarge { len: usize, max: usize },
    #[error("the note is not UTF-8 (first invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("line {line} holds control character {code:#04x}; notes allow none but newline")]
    ControlCharacter { line: usize, code: u32 },
    #[error("line {line} has {len} bytes, more than the {max} allowed")]
    LineTooLong { line: usize, len: usize, max: usize },
    #[error("the note does not end with a newline (it was cut off, or is not a note)")]
    MissingFinalNewline,
    #[error("the note text is empty")]
    EmptyText,
    #[error("the note has no signatures: no blank line followed by signature lines")]
    NoSignatures,
    #[error("line {line} is not a signature line: {problem}")]
    SignatureLine {
        line: usize,
        problem: SignatureLineProblem,
    },
    #[error("the note has {count} signatures, more than the {max} allowed")]
    TooManySignatures { count: usize, max: usize },
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("a signature must have at least one byte after its key id")]
    EmptySignature,
    #[error("the signature's line would have {len} bytes, more than the {max} a reader allows")]
    SignatureTooLong { len: usize, max: usize },
    #[error(
        "the signature by trusted key {name}+{id} does not verify: the note was altered \
         after signing, or signed by another key under the same name and id"
    )]
    BadSignature { name: String, id: NoteKeyId },
    #[error(
        "no signature is by a trusted key (signed by: {signers}); check that the verifier \
         key given is this log's"
    )]
    NoTrustedSignature { signers: String },
}

/// What is wrong with one signature line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureLineProblem {
    #[error("it does not start with an em dash (U+2014) and a space")]
    NoDash,
    #[error("it has no space between the key name and the signature")]
    NoSignature,
    #[error("{0}")]
    BadName(KeyError),
    #[error("the signature is not standard base64")]
    BadBase64,
    #[error("the signature has {0} bytes; it needs a 4-byte key id and at least one more")]
    TooShort(usize),
}

/// One signature: who (key name and ID) and the signature bytes after the key ID.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NoteSignature {
    name: String,
    id: NoteKeyId,
    signature: Vec<u8>,
}

impl NoteSignature {
    /// A signature from its parts, e.g. a witness's cosignature received over the network.
    pub fn new(name: &str, id: NoteKeyId, signature: Vec<u8>) -> Result<Self, NoteError> {
        check_key_name(name)?;
        if signature.is_empty() {
            return Err(NoteError::EmptySignature);
        }
        let sig = Self {
            name: name.to_owned(),
            id,
            signature,
        };
        // Refused here rather than written into a note that could not be read back.
        let len = sig.to_string().len();
        if len > MAX_LINE_BYTES {
            return Err(NoteError::SignatureTooLong {
                len,
                max: MAX_LINE_BYTES,
            });
        }
        Ok(sig)
    }

    /// Parses one signature line (`— <name> <base64>`) without its newline, e.g. one of
    /// the cosignature lines a witness answers with.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        check_lines(text, 1)?;
        Self::parse_line(text, 1)
    }

    /// Parses one signature line without its newline; `line` is its number for errors.
    fn parse_line(text: &str, line: usize) -> Result<Self, NoteError> {
        let problem = |problem| NoteError::SignatureLine { line, problem };
        let rest = text
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or(problem(SignatureLineProblem::NoDash))?;
        // Base64 has no space, so the last space ends the name: a name with a space in it
        // is then reported as such, not as bad base64.
        let (name, encoded) = rest
            .rsplit_once(' ')
            .ok_or(problem(SignatureLineProblem::NoSignature))?;
        check_key_name(name).map_err(|e| problem(SignatureLineProblem::BadName(e)))?;
        let raw = BASE64
            .decode(encoded)
            .map_err(|_| problem(SignatureLineProblem::BadBase64))?;
        if raw.len() < 5 {
            return Err(problem(SignatureLineProblem::TooShort(raw.len())));
        }
        let (id, signature) = raw.split_at(4);
        Ok(Self {
            name: name.to_owned(),
            id: NoteKeyId([id[0], id[1], id[2], id[3]]),
            signature: signature.to_vec(),
        })
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    #[must_use]
    pub fn key_id(&self) -> NoteKeyId {
        self.id
    }

    /// The signature bytes, without the key ID.
    #[must_use]
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
}

impl fmt::Display for NoteSignature {
    /// The signature line, without its newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = Vec::with_capacity(4 + self.signature.len());
        raw.extend_from_slice(&self.id.0);
        raw.extend_from_slice(&self.signature);
        write!(f, "{SIGNATURE_PREFIX}{} {}", self.name, BASE64.encode(raw))
    }
}

/// A note text with at least one signature. Built by signing or by parsing, so it always
/// prints as a note that parses back to itself.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SignedNote {
    text: String,
    signatures: Vec<NoteSignature>,
}

/// What verifying a note established.
#[derive(Debug)]
pub struct VerifiedNote<'a> {
    /// The note text, which the trusted keys signed.
    pub text: &'a str,
    /// The trusted keys whose signatures verified, each once.
    pub trusted: Vec<&'a NoteVerifier>,
    /// Signatures by keys the reader does not know (each distinct one once): kept, not
    /// trusted.
    pub untrusted: Vec<&'a NoteSignature>,
}

/// Checks the rules every line of a note obeys: no control character but newline, and
/// not too long. `first_line` numbers `text`'s first line for errors.
fn check_lines(text: &str, first_line: usize) -> Result<(), NoteError> {
    for (n, line) in text.split('\n').enumerate() {
        let line_no = first_line + n;
        if line.len() > MAX_LINE_BYTES {
            return Err(NoteError::LineTooLong {
                line: line_no,
                len: line.len(),
                max: MAX_LINE_BYTES,
            });
        }
        if let Some(c) = line.chars().find(|&c| c < ' ') {
            return Err(NoteError::ControlCharacter {
                line: line_no,
                code: u32::from(c),
            });
        }
    }
    Ok(())
}

/// Checks a note text: non-empty, only allowed characters, ends in a newline.
fn check_text(text: &str) -> Result<(), NoteError> {
    if text.is_empty() {
        return Err(NoteError::EmptyText);
    }
    check_lines(text, 1)?;
    if !text.ends_with('\n') {
        return Err(NoteError::MissingFinalNewline);
    }
    Ok(())
}

impl SignedNote {
    /// Signs `text` (which must end in a newline) with `signer`.
    pub fn sign(text: impl Into<String>, signer: &NoteSigner<'_>) -> Result<Self, NoteError> {
        let text = text.into();
        check_text(&text)?;
        let mut note = Self {
            text,
            signatures: Vec::new(),
        };
        note.add_own_signature(signer)?;
        Ok(note)
    }

    /// Adds `signer`'s signature, replacing any earlier one by the same key. The newest
    /// signer comes first, as Go's `note.Sign` orders them.
    pub fn add_own_signature(&mut self, signer: &NoteSigner<'_>) -> Result<(), NoteError> {
        let key = signer.verifier();
        let signature = NoteSignature {
            name: key.name().to_owned(),
            id: key.key_id(),
            signature: signer.sign(self.text.as_bytes()).to_vec(),
        };
        let before = self.signatures.clone();
        self.signatures
            .retain(|s| s.id != signature.id || s.name != signature.name);
        self.signatures.insert(0, signature);
        if let Err(e) = self.check_limits() {
            self.signatures = before;
            return Err(e);
        }
        Ok(())
    }

    /// Adds a signature made elsewhere (a witness's cosignature), unless the same one is
    /// already there. It is not verified here: readers verify what they trust.
    pub fn add_signature(&mut self, signature: NoteSignature) -> Result<(), NoteError> {
        if self.signatures.contains(&signature) {
            return Ok(());
        }
        self.signatures.push(signature);
        if let Err(e) = self.check_limits() {
            self.signatures.pop();
            return Err(e);
        }
        Ok(())
    }

    /// The limits a reader applies, checked by the writer so that every note it makes can
    /// be read back.
    fn check_limits(&self) -> Result<(), NoteError> {
        if self.signatures.len() > MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures {
                count: self.signatures.len(),
                max: MAX_SIGNATURES,
            });
        }
        let len = self.to_string().len();
        if len > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge {
                len,
                max: MAX_NOTE_BYTES,
            });
        }
        Ok(())
    }

    /// Parses a note's bytes. Checks the syntax only: see [`SignedNote::verify`].
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        if bytes.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge {
                len: bytes.len(),
                max: MAX_NOTE_BYTES,
            });
        }
        let all = std::str::from_utf8(bytes).map_err(|e| NoteError::NotUtf8 {
            offset: e.valid_up_to(),
        })?;
        check_lines(all, 1)?;
        if !all.ends_with('\n') {
            return Err(NoteError::MissingFinalNewline);
        }
        // The text keeps its final newline; the blank line after it separates.
        let split = all.rfind("\n\n").ok_or(NoteError::NoSignatures)?;
        let (text, block) = (&all[..=split], &all[split + 2..]);
        if block.is_empty() {
            return Err(NoteError::NoSignatures);
        }
        let first_line = text.matches('\n').count() + 2;
        let lines: Vec<&str> = block.trim_end_matches('\n').split('\n').collect();
        if lines.len() > MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures {
                count: lines.len(),
                max: MAX_SIGNATURES,
            });
        }
        let signatures = lines
            .iter()
            .enumerate()
            .map(|(n, line)| NoteSignature::parse_line(line, first_line + n))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The signed text, with its final newline.
    #[must_use]
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Every signature, trusted or not, in note order.
    #[must_use]
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Checks the signatures against the keys the reader trusts. The note is refused if a
    /// trusted key's signature fails, or if no trusted key signed it.
    pub fn verify<'a>(&'a self, keys: &'a NoteVerifiers) -> Result<VerifiedNote<'a>, NoteError> {
        let mut trusted: Vec<&NoteVerifier> = Vec::new();
        let mut untrusted: Vec<&NoteSignature> = Vec::new();
        for sig in &self.signatures {
            match keys.find(&sig.name, sig.id) {
                Some(key) => {
                    if !key.verifies(self.text.as_bytes(), &sig.signature) {
                        return Err(NoteError::BadSignature {
                            name: sig.name.clone(),
                            id: sig.id,
                        });
                    }
                    if !trusted.iter().any(|k| std::ptr::eq(*k, key)) {
                        trusted.push(key);
                    }
                }
                None if !untrusted.contains(&sig) => untrusted.push(sig),
                None => {}
            }
        }
        if trusted.is_empty() {
            let signers: Vec<String> = untrusted
                .iter()
                .map(|s| format!("{}+{}", s.name, s.id))
                .collect();
            return Err(NoteError::NoTrustedSignature {
                signers: signers.join(", "),
            });
        }
        Ok(VerifiedNote {
            text: &self.text,
            trusted,
            untrusted,
        })
    }
}

impl fmt::Display for SignedNote {
    /// The note as it is written and sent: text, blank line, one line per signature.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.text)?;
        for sig in &self.signatures {
            writeln!(f, "{sig}")?;
        }
        Ok(())
    }
}
