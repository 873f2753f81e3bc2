//! The keys of C2SP `signed-note`: key names, key IDs, verifier keys (`vkey`) and signers.
//!
//! A note signature names its key by a name and a 4-byte key ID. For Ed25519 the ID is the
//! first four bytes of `SHA-256(name || 0x0A || 0x01 || public key)`, so name and key are
//! bound together: a signature is checked only by the key whose name *and* ID it carries.
//! The `vkey` text `<name>+<hex id>+<base64(0x01 || key)>` is how Go's `sumdb/note`,
//! witnesses and other tools exchange such a key.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest as _, Sha256};

use crate::authz::trust::SigningKey;

/// The signature type byte that signed-note assigns to Ed25519.
pub const ED25519_TYPE: u8 = 0x01;

/// The 4-byte key ID a note signature starts with; written as 8 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NoteKeyId(pub [u8; 4]);

impl NoteKeyId {
    /// The key ID of an Ed25519 key under `name`.
    #[must_use]
    pub fn ed25519(name: &str, key: &VerifyingKey) -> Self {
        Self::derive(name, ED25519_TYPE, key.as_bytes())
    }

    /// The key ID signed-note derives for key material `key` of signature type `kind`
    /// under `name`: `SHA-256(name || 0x0A || kind || key)[:4]`. The type byte keeps one
    /// public key used in two roles (a log's note key, a witness's cosignature key) from
    /// having one ID in both.
    #[must_use]
    pub fn derive(name: &str, kind: u8, key: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(name.as_bytes());
        h.update([b'\n', kind]);
        h.update(key);
        let digest = h.finalize();
        Self([digest[0], digest[1], digest[2], digest[3]])
    }
}

impl fmt::Display for NoteKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NoteKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteKeyId({self})")
    }
}

/// Why a key name or verifier key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("key name {name:?} is not allowed: {problem}")]
    BadName { name: String, problem: &'static str },
    #[error(
        "verifier key {text:?} is not <name>+<8 hex digits key id>+<base64 key>: it has \
         {parts} part(s) separated by '+'"
    )]
    VkeyParts { text: String, parts: usize },
    #[error("verifier key id {text:?} is not 8 lowercase hex digits")]
    BadKeyId { text: String },
    #[error("verifier key material is not standard base64")]
    BadBase64,
    #[error(
        "verifier key has signature type {found:#04x}; only type {expected:#04x} is accepted \
         here (0x01: an Ed25519 note key, as logs sign checkpoints with; 0x04: an Ed25519 \
         cosignature/v1 key, as witnesses cosign with)"
    )]
    UnsupportedType { found: u8, expected: u8 },
    #[error("an Ed25519 verifier key holds 1 type byte and 32 key bytes, not {0} bytes")]
    BadLength(usize),
    #[error("verifier key material is not a valid Ed25519 public key")]
    BadPoint,
    #[error(
        "verifier key {name}+{stated} states key id {stated}, but its key gives {computed}: \
         the name or the key was changed"
    )]
    IdMismatch {
        name: String,
        stated: NoteKeyId,
        computed: NoteKeyId,
    },
    #[error(
        "two different keys are both named {name} with key id {id}: a signature by either \
         would be ambiguous; remove one"
    )]
    Ambiguous { name: String, id: NoteKeyId },
}

/// Checks a key name: non-empty, no Unicode space, no `+` (the vkey separator), and no
/// control character (the note format forbids them).
pub fn check_key_name(name: &str) -> Result<(), KeyError> {
    let bad = |problem| {
        Err(KeyError::BadName {
            name: name.to_owned(),
            problem,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.contains('+') {
        return bad("it contains '+'");
    }
    if name.chars().any(char::is_whitespace) {
        return bad("it contains a space");
    }
    if name.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    Ok(())
}

/// A public key that can check note signatures: an Ed25519 key under a name.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NoteVerifier {
    name: String,
    id: NoteKeyId,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// The verifier for `key` under `name`.
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, KeyError> {
        check_key_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            id: NoteKeyId::ed25519(name, &key),
            key,
        })
    }

    /// Parses a verifier key, `<name>+<hex key id>+<base64(0x01 || 32-byte key)>`.
    ///
    /// The stated key ID must be the one the name and key give, so a vkey whose name was
    /// edited is refused rather than silently trusted under the new name.
    pub fn from_vkey(text: &str) -> Result<Self, KeyError> {
        let (name, id, key) = parse_ed25519_vkey(text, ED25519_TYPE)?;
        Ok(Self {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// A verifier with any key ID, to build the (name, ID) collision that real keys
    /// make only by a 2^32 search.
    #[cfg(test)]
    pub(super) fn with_id(name: &str, id: NoteKeyId, key: VerifyingKey) -> Self {
        Self {
            name: name.to_owned(),
            id,
            key,
        }
    }

    /// The vkey text of this key (what [`NoteVerifier::from_vkey`] reads).
    #[must_use]
    pub fn to_vkey(&self) -> String {
        ed25519_vkey(&self.name, self.id, ED25519_TYPE, &self.key)
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

    /// Whether `signature` (without the key ID) is this key's signature of `text`.
    /// Strict verification: the same rule the v1 checkpoints use, refusing weak keys
    /// and non-canonical signatures that an honest signer never produces.
    pub(super) fn verifies(&self, text: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = Signature::from_slice(signature) else {
            return false;
        };
        self.key.verify_strict(text, &signature).is_ok()
    }
}

impl fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_vkey())
    }
}

impl FromStr for NoteVerifier {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        Self::from_vkey(text)
    }
}

/// Parses a vkey of an Ed25519 key, `<name>+<hex key id>+<base64(kind || 32-byte key)>`,
/// whose signature type must be `kind`: its name, key ID and key.
///
/// The stated key ID must be the one the name, type and key give, so a vkey whose name
/// was edited is refused rather than silently trusted under the new name.
pub(super) fn parse_ed25519_vkey(
    text: &str,
    kind: u8,
) -> Result<(&str, NoteKeyId, VerifyingKey), KeyError> {
    // The base64 part may itself contain '+', so split at the first two only.
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(id_text), Some(material)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(KeyError::VkeyParts {
            text: text.to_owned(),
            parts: text.split('+').count(),
        });
    };
    check_key_name(name)?;
    let stated = parse_key_id(id_text)?;
    let raw = BASE64.decode(material).map_err(|_| KeyError::BadBase64)?;
    let (&found, key) = raw.split_first().ok_or(KeyError::BadLength(0))?;
    if found != kind {
        return Err(KeyError::UnsupportedType {
            found,
            expected: kind,
        });
    }
    let key: &[u8; 32] = key.try_into().map_err(|_| KeyError::BadLength(raw.len()))?;
    let key = VerifyingKey::from_bytes(key).map_err(|_| KeyError::BadPoint)?;
    let computed = NoteKeyId::derive(name, kind, key.as_bytes());
    if computed != stated {
        return Err(KeyError::IdMismatch {
            name: name.to_owned(),
            stated,
            computed,
        });
    }
    Ok((name, computed, key))
}

/// The vkey text of an Ed25519 key of signature type `kind` (what
/// [`parse_ed25519_vkey`] reads).
pub(super) fn ed25519_vkey(name: &str, id: NoteKeyId, kind: u8, key: &VerifyingKey) -> String {
    let mut material = Vec::with_capacity(33);
    material.push(kind);
    material.extend_from_slice(key.as_bytes());
    format!("{name}+{id}+{}", BASE64.encode(material))
}

fn parse_key_id(text: &str) -> Result<NoteKeyId, KeyError> {
    let bad = || KeyError::BadKeyId {
        text: text.to_owned(),
    };
    if text.len() != 8 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad());
    }
    let bytes = hex::decode(text).map_err(|_| bad())?;
    bytes.try_into().map(NoteKeyId).map_err(|_| bad())
}

/// The keys a reader trusts. A signature counts only if both its key name and key ID
/// match one of them; there is never more than one key per (name, ID).
#[derive(Clone, Debug, Default)]
pub struct NoteVerifiers {
    keys: Vec<NoteVerifier>,
}

impl NoteVerifiers {
    /// A set of trusted keys; the same key twice is kept once, two different keys under
    /// the same name and ID are refused.
    pub fn new(keys: impl IntoIterator<Item = NoteVerifier>) -> Result<Self, KeyError> {
        let mut set = Self::default();
        for key in keys {
            set.add(key)?;
        }
        Ok(set)
    }

    /// Adds a trusted key (see [`NoteVerifiers::new`]).
    pub fn add(&mut self, key: NoteVerifier) -> Result<(), KeyError> {
        match self.find(&key.name, key.id) {
            Some(known) if *known == key => Ok(()),
            Some(_) => Err(KeyError::Ambiguous {
                name: key.name,
                id: key.id,
            }),
            None => {
                self.keys.push(key);
                Ok(())
            }
        }
    }

    /// The trusted key with this name and ID, if any.
    #[must_use]
    pub fn find(&self, name: &str, id: NoteKeyId) -> Option<&NoteVerifier> {
        self.keys.iter().find(|k| k.id == id && k.name == name)
    }
}

/// A private key that signs notes under a name; it borrows the host's signing key, which
/// keeps ownership (and wiping) of the secret.
#[derive(Debug)]
pub struct NoteSigner<'k> {
    verifier: NoteVerifier,
    key: &'k SigningKey,
}

impl<'k> NoteSigner<'k> {
    /// A signer for `key` under `name` (for a checkpoint: the log's origin).
    pub fn new(name: &str, key: &'k SigningKey) -> Result<Self, KeyError> {
        Ok(Self {
            verifier: NoteVerifier::new(name, key.public_key())?,
            key,
        })
    }

    /// The public half, to publish as a vkey.
    #[must_use]
    pub fn verifier(&self) -> &NoteVerifier {
        &self.verifier
    }

    pub(super) fn sign(&self, text: &[u8]) -> [u8; 64] {
        self.key.sign(text)
    }
}
