//! Who may authorize: trusted Ed25519 public keys, the roles each holds, and how many
//! distinct keys must agree (k of n) before an artifact counts.
//!
//! A key's id is derived from its public key ([`KeyId::of`]), never chosen by whoever
//! signs: an envelope's key id is only a hint for finding the key, and a signature counts
//! only if it verifies under the trusted key that id belongs to.
//!
//! The trust store is a TOML file (`policies/trust.toml` is an example):
//!
//! ```toml
//! version = 1
//! [thresholds]
//! bundle = 2      # distinct keys with the "bundle" role that must sign a bundle
//! revocation = 1  # distinct keys with the "revocation" role that must sign a revocation
//! break_glass = 1 # optional: without it, no break-glass artifact is accepted
//! [break_glass]
//! max_duration = "4h"  # optional: the longest window a break-glass may have
//! [[keys]]
//! name = "alice"
//! public_key = "ed25519:<base64 of the 32-byte key>"
//! roles = ["bundle"]
//! ```
//!
//! Thresholds have no default on purpose: how many people must agree is a decision the
//! trust store's author has to write down. For break-glass that decision includes "never":
//! a trust store that sets no break-glass threshold accepts no break-glass artifact.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

const TRUST_STORE_VERSION: i64 = 1;
const PUBLIC_KEY_PREFIX: &str = "ed25519:";
const PRIVATE_KEY_PREFIX: &str = "ed25519-private:";

/// Longest break-glass window when the trust store does not say: long enough to get
/// through an incident, short enough that a forgotten one does not leave a scope
/// unenforced overnight.
pub const DEFAULT_BREAK_GLASS_MAX_DURATION: Duration = Duration::from_secs(4 * 3600);
/// The most a trust store may raise that to. Past a week, "switch enforcement off" is no
/// longer an emergency measure but a policy, which bundles in monitor mode express.
pub const BREAK_GLASS_MAX_DURATION_CEILING: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a trust store or key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("trust store {path}: {source}")]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<TrustError>,
    },
    #[error("invalid TOML: {0}")]
    Syntax(#[from] toml::de::Error),
    #[error("unsupported trust store version {found}: this enforcer reads version 1")]
    Version { found: String },
    #[error("key {name:?}: {problem}")]
    Key { name: String, problem: String },
    #[error("keys {first:?} and {second:?} are the same public key (key id {key_id})")]
    DuplicateKey {
        key_id: KeyId,
        first: String,
        second: String,
    },
    #[error("{role} threshold {threshold}: {problem}")]
    Threshold {
        role: Role,
        threshold: usize,
        problem: String,
    },
    #[error("key file {path}: {problem}")]
    KeyFile { path: PathBuf, problem: String },
    #[error("[break_glass] max_duration {value:?}: {problem}")]
    BreakGlassDuration { value: String, problem: String },
}

/// A key's identity: the first 16 bytes of the SHA-256 of its raw 32-byte public key,
/// written as 32 lowercase hexadecimal characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 16]);

impl KeyId {
    #[must_use]
    pub fn of(public_key: &VerifyingKey) -> Self {
        let mut id = [0u8; 16];
        id.copy_from_slice(&Sha256::digest(public_key.as_bytes())[..16]);
        Self(id)
    }
}

/// A key id that is not 32 lowercase hexadecimal characters.
#[derive(Debug, thiserror::Error)]
#[error("invalid key id {input:?}: expected 32 lowercase hexadecimal characters")]
pub struct KeyIdSyntax {
    input: String,
}

impl FromStr for KeyId {
    type Err = KeyIdSyntax;

    /// Only the canonical lowercase form: one key id has exactly one spelling, so a changed
    /// byte in an envelope's key id can never still name the same key.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let syntax = || KeyIdSyntax {
            input: crate::authz::artifact::excerpt(input),
        };
        if input.len() != 32
            || !input
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(syntax());
        }
        let mut id = [0u8; 16];
        hex::decode_to_slice(input, &mut id).map_err(|_| syntax())?;
        Ok(Self(id))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// What a key's signature may count towards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May sign authorization bundles.
    Bundle,
    /// May sign revocations.
    Revocation,
    /// May sign break-glass artifacts, which switch scopes to monitor mode for a while.
    #[serde(rename = "break-glass")]
    BreakGlass,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bundle => "bundle",
            Self::Revocation => "revocation",
            Self::BreakGlass => "break-glass",
        })
    }
}

impl Role {
    /// The role's key under `[thresholds]` in the trust store file.
    #[must_use]
    pub fn threshold_key(self) -> &'static str {
        match self {
            Self::Bundle => "bundle",
            Self::Revocation => "revocation",
            Self::BreakGlass => "break_glass",
        }
    }
}

/// How many distinct keys holding the bundle and revocation roles must sign. The
/// break-glass threshold is optional and set with [`TrustStore::with_break_glass`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub bundle: usize,
    pub revocation: usize,
}

/// `[thresholds]` as written in the file: [`Thresholds`] plus the optional break-glass
/// threshold, kept out of [`Thresholds`] so that leaving it out can mean "never".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdsFile {
    bundle: usize,
    revocation: usize,
    #[serde(default)]
    break_glass: Option<usize>,
}

/// `[break_glass]`: settings for break-glass artifacts other than who signs them.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakGlassFile {
    /// A duration such as "4h" or "90m"; default [`DEFAULT_BREAK_GLASS_MAX_DURATION`].
    #[serde(default)]
    max_duration: Option<String>,
}

/// One trusted public key.
#[derive(Clone, Debug)]
pub struct TrustedKey {
    /// For humans: error messages and `inspect` name keys by it.
    pub name: String,
    pub key_id: KeyId,
    pub public_key: VerifyingKey,
    pub roles: Vec<Role>,
}

impl TrustedKey {
    /// A trusted key from its public key; the id is derived, never supplied.
    #[must_use]
    pub fn new(name: impl Into<String>, public_key: VerifyingKey, roles: Vec<Role>) -> Self {
        Self {
            name: name.into(),
            key_id: KeyId::of(&public_key),
            public_key,
            roles,
        }
    }

    #[must_use]
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// The keys an enforcer trusts and the thresholds per role.
#[derive(Clone, Debug)]
pub struct TrustStore {
    keys: BTreeMap<KeyId, TrustedKey>,
    thresholds: Thresholds,
    /// None: no break-glass artifact is accepted, whoever signs it.
    break_glass_threshold: Option<usize>,
    break_glass_max_duration: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustFile {
    #[allow(
        dead_code,
        reason = "checked before typed parsing, kept so it is not an unknown field"
    )]
    version: i64,
    thresholds: ThresholdsFile,
    #[serde(default)]
    break_glass: BreakGlassFile,
    #[serde(default)]
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    public_key: String,
    roles: Vec<Role>,
    /// Optional cross-check for humans copying keys around; must match the derived id.
    #[serde(default)]
    key_id: Option<String>,
}

impl TrustStore {
    /// Builds a trust store, refusing duplicate keys and thresholds that are zero (which
    /// would accept unsigned artifacts) or that the keys present can never meet. It
    /// accepts no break-glass artifact until [`TrustStore::with_break_glass`] says who may
    /// sign one.
    pub fn new(
        keys: impl IntoIterator<Item = TrustedKey>,
        thresholds: Thresholds,
    ) -> Result<Self, TrustError> {
        let mut by_id: BTreeMap<KeyId, TrustedKey> = BTreeMap::new();
        for key in keys {
            if key.public_key.is_weak() {
                return Err(TrustError::Key {
                    name: key.name,
                    problem: "is a weak (small-order) Ed25519 key".into(),
                });
            }
            if let Some(first) = by_id.get(&key.key_id) {
                return Err(TrustError::DuplicateKey {
                    key_id: key.key_id,
                    first: first.name.clone(),
                    second: key.name,
                });
            }
            by_id.insert(key.key_id, key);
        }
        let store = Self {
            keys: by_id,
            thresholds,
            break_glass_threshold: None,
            break_glass_max_duration: DEFAULT_BREAK_GLASS_MAX_DURATION,
        };
        store.check_threshold(Role::Bundle, thresholds.bundle)?;
        store.check_threshold(Role::Revocation, thresholds.revocation)?;
        Ok(store)
    }

    /// Accepts break-glass artifacts signed by `threshold` distinct keys holding the
    /// break-glass role; the same rules as for the other thresholds apply.
    pub fn with_break_glass(mut self, threshold: usize) -> Result<Self, TrustError> {
        self.check_threshold(Role::BreakGlass, threshold)?;
        self.break_glass_threshold = Some(threshold);
        Ok(self)
    }

    /// Sets the longest validity window a break-glass artifact may have: more than zero
    /// and at most [`BREAK_GLASS_MAX_DURATION_CEILING`].
    pub fn with_break_glass_max_duration(mut self, max: Duration) -> Result<Self, TrustError> {
        let problem = if max.is_zero() {
            "must be more than 0; to accept no break-glass artifact, set no break_glass threshold"
        } else if max > BREAK_GLASS_MAX_DURATION_CEILING {
            "is over the ceiling of 7 days: a longer unenforced period is a policy, so grant it with a monitor-mode bundle"
        } else {
            self.break_glass_max_duration = max;
            return Ok(self);
        };
        Err(TrustError::BreakGlassDuration {
            value: humantime::format_duration(max).to_string(),
            problem: problem.to_owned(),
        })
    }

    /// Refuses a threshold of 0 (it would accept unsigned artifacts) and one the keys
    /// holding `role` can never meet.
    fn check_threshold(&self, role: Role, threshold: usize) -> Result<(), TrustError> {
        let holders = self.keys.values().filter(|k| k.has_role(role)).count();
        let problem = if threshold == 0 {
            "must be at least 1: a threshold of 0 would accept unsigned artifacts".to_owned()
        } else if threshold > holders {
            format!("can never be met: only {holders} trusted key(s) hold the {role} role")
        } else {
            return Ok(());
        };
        Err(TrustError::Threshold {
            role,
            threshold,
            problem,
        })
    }

    /// Parses a trust store file's text. The version is checked first so a newer file is
    /// refused for its version, not for the fields it adds.
    pub fn from_toml(text: &str) -> Result<Self, TrustError> {
        let table: toml::Table = toml::from_str(text)?;
        match table.get("version") {
            Some(toml::Value::Integer(TRUST_STORE_VERSION)) => {}
            other => {
                let found = other.map_or_else(|| "(missing)".to_owned(), ToString::to_string);
                return Err(TrustError::Version { found });
            }
        }
        let file: TrustFile = table.try_into()?;
        let keys = file
            .keys
            .into_iter()
            .map(|entry| {
                let key_error = |problem: String| TrustError::Key {
                    name: entry.name.clone(),
                    problem,
                };
                let public_key = parse_public_key(&entry.public_key).map_err(key_error)?;
                let key = TrustedKey::new(entry.name.clone(), public_key, entry.roles.clone());
                if let Some(claimed) = &entry.key_id
                    && *claimed != key.key_id.to_string()
                {
                    return Err(key_error(format!(
                        "key_id {claimed:?} does not match the public key, whose id is {}",
                        key.key_id
                    )));
                }
                Ok(key)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let t = file.thresholds;
        let mut store = Self::new(
            keys,
            Thresholds {
                bundle: t.bundle,
                revocation: t.revocation,
            },
        )?;
        if let Some(threshold) = t.break_glass {
            store = store.with_break_glass(threshold)?;
        }
        if let Some(text) = file.break_glass.max_duration {
            let max =
                humantime::parse_duration(&text).map_err(|e| TrustError::BreakGlassDuration {
                    value: text.clone(),
                    problem: format!("is not a duration such as \"4h\" or \"90m\": {e}"),
                })?;
            store = store
                .with_break_glass_max_duration(max)
                .map_err(|e| match e {
                    // Quote the value as written, not as reformatted.
                    TrustError::BreakGlassDuration { problem, .. } => {
                        TrustError::BreakGlassDuration {
                            value: text.clone(),
                            problem,
                        }
                    }
                    other => other,
                })?;
        }
        Ok(store)
    }

    /// Reads and parses a trust store file.
    pub fn load(path: &Path) -> Result<Self, TrustError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrustError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| TrustError::InFile {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }

    #[must_use]
    pub fn key(&self, id: &KeyId) -> Option<&TrustedKey> {
        self.keys.get(id)
    }

    pub fn keys(&self) -> impl Iterator<Item = &TrustedKey> {
        self.keys.values()
    }

    /// How many distinct keys holding `role` must sign; None when the trust store accepts
    /// no artifact needing that role (break-glass without a threshold).
    #[must_use]
    pub fn threshold(&self, role: Role) -> Option<usize> {
        match role {
            Role::Bundle => Some(self.thresholds.bundle),
            Role::Revocation => Some(self.thresholds.revocation),
            Role::BreakGlass => self.break_glass_threshold,
        }
    }

    /// The longest validity window a break-glass artifact may have.
    #[must_use]
    pub fn break_glass_max_duration(&self) -> Duration {
        self.break_glass_max_duration
    }
}

/// Reads the trust store at `path`.
pub fn load_trust_store(path: &Path) -> Result<TrustStore, TrustError> {
    TrustStore::load(path)
}

/// `ed25519:<base64>`, the form in `.pub` files and trust stores.
#[must_use]
pub fn encode_public_key(key: &VerifyingKey) -> String {
    format!("{PUBLIC_KEY_PREFIX}{}", BASE64.encode(key.as_bytes()))
}

/// Parses `ed25519:<base64 of 32 bytes>` into a valid curve point.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let b64 = text
        .trim()
        .strip_prefix(PUBLIC_KEY_PREFIX)
        .ok_or_else(|| format!("public key must start with {PUBLIC_KEY_PREFIX:?}"))?;
    let bytes = BASE64
        .decode(b64)
        .map_err(|e| format!("public key is not base64: {e}"))?;
    let raw = <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("public key is {} bytes, Ed25519 keys are 32", bytes.len()))?;
    VerifyingKey::from_bytes(&raw).map_err(|_| "public key is not a valid Ed25519 point".to_owned())
}

/// Reads a `.pub` file.
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, TrustError> {
    let text = std::fs::read_to_string(path).map_err(|source| TrustError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_public_key(&text).map_err(|problem| TrustError::KeyFile {
        path: path.to_owned(),
        problem,
    })
}

/// A private signing key. Its bytes are wiped on drop and never printed: `Debug` shows
/// only the key id.
pub struct SigningKey {
    inner: ed25519_dalek::SigningKey,
    key_id: KeyId,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new key from the operating system's random number generator.
    #[must_use]
    pub fn generate() -> Self {
        Self::from_inner(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng))
    }

    /// A key from its 32-byte seed (tests use fixed seeds).
    #[must_use]
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self::from_inner(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    fn from_inner(inner: ed25519_dalek::SigningKey) -> Self {
        let key_id = KeyId::of(&inner.verifying_key());
        Self { inner, key_id }
    }

    #[must_use]
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    #[must_use]
    pub fn public_key(&self) -> VerifyingKey {
        self.inner.verifying_key()
    }

    #[must_use]
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.inner.sign(message).to_bytes()
    }

    /// Writes the key to a new file with mode 0600; refuses to overwrite anything.
    pub fn write_new(&self, path: &Path, name: &str) -> Result<(), TrustError> {
        let seed = Zeroizing::new(self.inner.to_bytes());
        let encoded = Zeroizing::new(BASE64.encode(*seed));
        let text = Zeroizing::new(format!(
            "# enforcer Ed25519 private key {name:?}, key id {}.\n\
             # Secret: keep it mode 0600, share it with no one, commit it nowhere.\n\
             {PRIVATE_KEY_PREFIX}{}\n",
            self.key_id,
            encoded.as_str()
        ));
        let write_err = |source| TrustError::Write {
            path: path.to_owned(),
            source,
        };
        crate::fsutil::create_new_synced(path, text.as_bytes(), 0o600).map_err(write_err)
    }

    /// Reads a private key file, refusing one that others can read (as ssh does): a key
    /// that may have leaked should not be signing authorizations.
    pub fn load(path: &Path) -> Result<Self, TrustError> {
        let refuse = |problem: String| TrustError::KeyFile {
            path: path.to_owned(),
            problem,
        };
        let read_err = |source| TrustError::Read {
            path: path.to_owned(),
            source,
        };
        let mode = std::fs::metadata(path)
            .map_err(read_err)?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(refuse(format!(
                "private key is accessible by others (mode {:o}); run `chmod 600 {}`",
                mode & 0o777,
                path.display()
            )));
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(read_err)?);
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let (Some(line), None) = (lines.next(), lines.next()) else {
            return Err(refuse(format!(
                "expected exactly one line starting with {PRIVATE_KEY_PREFIX:?}"
            )));
        };
        // Never quote the line: it is the secret.
        let b64 = line.strip_prefix(PRIVATE_KEY_PREFIX).ok_or_else(|| {
            refuse(format!(
                "the key line must start with {PRIVATE_KEY_PREFIX:?}"
            ))
        })?;
        let bytes = Zeroizing::new(
            BASE64
                .decode(b64)
                .map_err(|_| refuse("the private key is not base64".into()))?,
        );
        let seed = Zeroizing::new(
            <[u8; 32]>::try_from(bytes.as_slice())
                .map_err(|_| refuse("the private key is not 32 bytes".into()))?,
        );
        Ok(Self::from_seed(&seed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::verify::testkit;

    fn store_text(thresholds: &str, keys: &[(u8, &str)]) -> String {
        let mut text = format!("version = 1\n[thresholds]\n{thresholds}\n");
        for (seed, roles) in keys {
            let key = testkit::key(*seed);
            text.push_str(&format!(
                "[[keys]]\nname = \"k{seed}\"\npublic_key = \"{}\"\nroles = {roles}\n",
                encode_public_key(&key.public_key())
            ));
        }
        text
    }

    #[test]
    fn parses_a_trust_store_and_derives_key_ids() {
        let text = store_text(
            "bundle = 2\nrevocation = 1",
            &[(1, r#"["bundle"]"#), (2, r#"["bundle", "revocation"]"#)],
        );
        let store = TrustStore::from_toml(&text).expect("parse");
        let k1 = store.key(&testkit::key(1).key_id()).expect("k1");
        assert_eq!(k1.name, "k1");
        assert!(k1.has_role(Role::Bundle) && !k1.has_role(Role::Revocation));
        assert_eq!(store.threshold(Role::Bundle), Some(2));
        assert_eq!(
            store.threshold(Role::BreakGlass),
            None,
            "no break-glass unless configured"
        );
        assert_eq!(
            store.break_glass_max_duration(),
            DEFAULT_BREAK_GLASS_MAX_DURATION
        );
        assert_eq!(store.keys().count(), 2);
    }

    #[test]
    fn key_id_is_derived_from_the_public_key() {
        let key = testkit::key(1);
        let expected = &Sha256::digest(key.public_key().as_bytes())[..16];
        assert_eq!(key.key_id().0, expected);
        assert_eq!(
            key.key_id().to_string().parse::<KeyId>().expect("parse"),
            key.key_id()
        );
        let upper = key.key_id().to_string().to_uppercase();
        assert!(upper.parse::<KeyId>().is_err(), "one spelling per key id");
    }

    #[test]
    fn refuses_a_claimed_key_id_that_does_not_match() {
        let mut text = store_text(
            "bundle = 1\nrevocation = 1",
            &[(1, r#"["bundle", "revocation"]"#)],
        );
        text.push_str(&format!("key_id = \"{}\"\n", testkit::key(2).key_id()));
        let err = TrustStore::from_toml(&text).expect_err("mismatch");
        assert!(
            err.to_string().contains("does not match the public key"),
            "{err}"
        );
    }

    #[test]
    fn refuses_bad_trust_stores_naming_the_problem() {
        let both = r#"["bundle", "revocation"]"#;
        let cases = [
            (
                store_text("bundle = 0\nrevocation = 1", &[(1, both)]),
                "at least 1",
            ),
            (
                store_text("bundle = 2\nrevocation = 1", &[(1, both)]),
                "can never be met",
            ),
            (
                store_text("bundle = 1\nrevocation = 1", &[(1, both), (1, both)]),
                "same public key",
            ),
            (
                store_text("bundle = 1\nrevocation = 1\ncolour = 2", &[(1, both)]),
                "unknown field",
            ),
            (
                store_text("bundle = 1\nrevocation = 1", &[(1, r#"["admin"]"#)]),
                "unknown variant",
            ),
            (
                "version = 2\n".to_owned(),
                "unsupported trust store version 2",
            ),
            ("[thresholds]\n".to_owned(), "version (missing)"),
            ("version = \n".to_owned(), "invalid TOML"),
        ];
        for (text, needle) in cases {
            let err = TrustStore::from_toml(&text).expect_err(needle);
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
        let bad_key = "version = 1\n[thresholds]\nbundle = 1\nrevocation = 1\n[[keys]]\nname = \"x\"\npublic_key = \"ed25519:AAAA\"\nroles = [\"bundle\"]\n";
        let err = TrustStore::from_toml(bad_key).expect_err("short key");
        assert!(
            err.to_string().contains("key \"x\": public key is 3 bytes"),
            "{err}"
        );
    }

    #[test]
    fn break_glass_needs_a_threshold_and_keys_with_the_role() {
        let roles = r#"["bundle", "revocation", "break-glass"]"#;
        let store = TrustStore::from_toml(&store_text(
            "bundle = 1\nrevocation = 1\nbreak_glass = 1\n[break_glass]\nmax_duration = \"90m\"",
            &[(1, roles)],
        ))
        .expect("parse");
        assert_eq!(store.threshold(Role::BreakGlass), Some(1));
        assert_eq!(
            store.break_glass_max_duration(),
            Duration::from_secs(90 * 60)
        );
        assert!(
            store
                .key(&testkit::key(1).key_id())
                .expect("k1")
                .has_role(Role::BreakGlass)
        );

        // The role alone accepts nothing: the threshold is what turns break-glass on.
        let store = TrustStore::from_toml(&store_text("bundle = 1\nrevocation = 1", &[(1, roles)]))
            .expect("parse");
        assert_eq!(store.threshold(Role::BreakGlass), None);
    }

    #[test]
    fn refuses_bad_break_glass_settings_naming_the_problem() {
        let both = r#"["bundle", "revocation"]"#;
        let all = r#"["bundle", "revocation", "break-glass"]"#;
        let with = |extra: &str, roles| {
            store_text(
                &format!("bundle = 1\nrevocation = 1\n{extra}"),
                &[(1, roles)],
            )
        };
        let cases = [
            (
                with("break_glass = 0", all),
                "break-glass threshold 0: must be at least 1",
            ),
            (
                with("break_glass = 1", both),
                "break-glass threshold 1: can never be met: only 0 trusted key(s) hold the break-glass role",
            ),
            (with("break_glass = 2", all), "can never be met: only 1"),
            (
                with("[break_glass]\nmax_duration = \"0s\"", all),
                "must be more than 0",
            ),
            (
                with("[break_glass]\nmax_duration = \"8days\"", all),
                "over the ceiling of 7 days",
            ),
            (
                with("[break_glass]\nmax_duration = \"soon\"", all),
                "max_duration \"soon\": is not a duration",
            ),
            (
                with("[break_glass]\nmax = \"4h\"", all),
                "unknown field `max`",
            ),
        ];
        for (text, needle) in cases {
            let err = TrustStore::from_toml(&text).expect_err(needle);
            assert!(
                matches!(
                    err,
                    TrustError::Threshold { .. }
                        | TrustError::BreakGlassDuration { .. }
                        | TrustError::Syntax(_)
                ),
                "{needle}: {err:?}"
            );
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
        let err = TrustStore::from_toml(&with("break_glass = 1", both)).expect_err("no holder");
        assert!(
            matches!(
                err,
                TrustError::Threshold {
                    role: Role::BreakGlass,
                    threshold: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = TrustStore::from_toml(&with("[break_glass]\nmax_duration = \"8days\"", all))
            .expect_err("ceiling");
        assert!(
            matches!(err, TrustError::BreakGlassDuration { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn private_keys_are_written_0600_refuse_overwrite_and_load_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.key");
        let key = SigningKey::generate();
        key.write_new(&path, "a").expect("write");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(key.write_new(&path, "a").is_err(), "must not overwrite");
        let back = SigningKey::load(&path).expect("load");
        assert_eq!(back.key_id(), key.key_id());
        assert!(!format!("{back:?}").contains(&BASE64.encode(back.inner.to_bytes())));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = SigningKey::load(&path).expect_err("readable by others");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn public_keys_round_trip_and_bad_ones_are_refused() {
        let key = testkit::key(3);
        let text = encode_public_key(&key.public_key());
        assert_eq!(parse_public_key(&text).expect("parse"), key.public_key());
        assert!(
            parse_public_key("ssh-ed25519 AAAA")
                .expect_err("prefix")
                .contains("must start")
        );
    }
}
