//! Signed artifacts: the envelope, the three payloads it carries (bundle, revocation,
//! break-glass), and their parsers.
//!
//! An artifact is a DSSE-style envelope (`docs/artifacts.md`): a payload type, the payload
//! bytes, and signatures over the pre-authentication encoding ([`pae`]) of both. Signing the
//! exact bytes means no JSON canonicalisation is needed, and binding the payload type into
//! the signed message means a revocation can never be replayed as a bundle.
//!
//! Parsing here trusts nothing and decides nothing: it enforces size limits, syntax and
//! schema, so that every malformed input is refused with a reason before anything else
//! looks at it. Whether an artifact is *authorized* is decided in [`crate::authz::verify`].

mod break_glass;
mod bundle;
mod envelope;
mod revocation;

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use sha3::{Digest as _, Sha3_512};

use crate::authz::trust::{KeyId, Role, SigningKey};
use crate::host::digest::{DigestError, FileDigest};

pub use break_glass::BreakGlass;
pub use bundle::{Bundle, SignedGrant};
pub use envelope::{Envelope, EnvelopeSignature, pae};
pub use revocation::{Revocation, RevocationTarget};

/// Largest envelope accepted, checked before any parsing. A bundle of 100k grants with
/// names is about 13 MiB once base64-encoded, so this leaves room for that and no more.
pub const MAX_ARTIFACT_BYTES: usize = 16 * 1024 * 1024;
/// Most signatures an envelope may carry: each costs a signature check, and no real
/// threshold needs more.
pub const MAX_SIGNATURES: usize = 32;
/// Longest issuer, bundle id or other identifier: they end up in logs and state keys.
const MAX_LABEL_BYTES: usize = 128;
/// Longest free text (grant names, revocation reasons); a path fits.
const MAX_TEXT_BYTES: usize = 4096;
/// Longest cgroup path, and longest component (the kernel's `NAME_MAX`).
const MAX_SCOPE_BYTES: usize = 4096;
const MAX_SCOPE_COMPONENT_BYTES: usize = 255;
/// How much of an untrusted string an error message repeats.
const EXCERPT_CHARS: usize = 80;

/// Payload type of an authorization bundle, version 1. The version lives here, inside the
/// signed message, so a future format cannot be mistaken for this one.
pub const BUNDLE_PAYLOAD_TYPE: &str = "application/vnd.enforcer.bundle.v1+json";
/// Payload type of a revocation, version 1.
pub const REVOCATION_PAYLOAD_TYPE: &str = "application/vnd.enforcer.revocation.v1+json";
/// Payload type of a break-glass artifact, version 1.
pub const BREAK_GLASS_PAYLOAD_TYPE: &str = "application/vnd.enforcer.break-glass.v1+json";

/// Every way an artifact can be refused. Each variant names what failed, so an operator
/// reading a log line or the CLI's verdict knows what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("cannot read artifact {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("artifact is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("malformed {what}: {problem}")]
    Malformed { what: &'static str, problem: String },
    #[error(
        "unknown field `{path}` in the {what}: refusing what this version of enforcer does not understand"
    )]
    UnknownField { what: &'static str, path: String },
    #[error(
        "unknown artifact type or schema version {found:?}: this enforcer reads {BUNDLE_PAYLOAD_TYPE}, {REVOCATION_PAYLOAD_TYPE} and {BREAK_GLASS_PAYLOAD_TYPE}"
    )]
    UnknownSchema { found: String },
    #[error("expected a {expected} artifact but this is a {found}")]
    WrongKind {
        expected: ArtifactKind,
        found: ArtifactKind,
    },
    #[error("signature by unknown key {key_id}: no key with that id is in the trust store")]
    UnknownKey { key_id: KeyId },
    #[error(
        "bad signature by key {key_id}: it does not verify, so the artifact was changed after signing or the signature is damaged"
    )]
    BadSignature { key_id: KeyId },
    #[error("signature by revoked key {key_id} (revoked by {by})")]
    KeyRevoked { key_id: KeyId, by: ArtifactId },
    #[error(
        "not enough signatures: {valid} valid from distinct keys with the {role} role, {required} required, so more trusted keys must sign it"
    )]
    Threshold {
        role: Role,
        valid: usize,
        required: usize,
    },
    #[error(
        "no {role} artifact is accepted: the trust store sets no {role} threshold ([thresholds] {} = N), so none was meant to be",
        .role.threshold_key()
    )]
    NoThreshold { role: Role },
    #[error(
        "window too long: valid for {} (from {} to {}), but a break-glass may be valid for at most {} (the trust store's [break_glass] max_duration)",
        humantime::format_duration(Duration::from_secs(.not_after.saturating_sub(*.not_before))),
        format_time(*.not_before), format_time(*.not_after),
        humantime::format_duration(Duration::from_secs(*.max))
    )]
    WindowTooLong {
        not_before: u64,
        not_after: u64,
        max: u64,
    },
    #[error(
        "not yet valid: valid from {}, it is now {} (clock skew allowance {skew}s)",
        format_time(*.not_before), format_time(*.now)
    )]
    NotYetValid {
        not_before: u64,
        now: u64,
        skew: u64,
    },
    #[error(
        "expired: valid until {}, it is now {} (clock skew allowance {skew}s)",
        format_time(*.not_after), format_time(*.now)
    )]
    Expired { not_after: u64, now: u64, skew: u64 },
    #[error(
        "rollback or replay: serial {serial} for issuer {issuer:?} and scope {scope} is not greater than the last accepted serial {last}"
    )]
    Rollback {
        issuer: String,
        scope: ScopePath,
        serial: u64,
        last: u64,
    },
    #[error("revoked bundle: bundle id {bundle_id:?} is revoked (by {by})")]
    BundleRevoked { bundle_id: String, by: ArtifactId },
    #[error("revoked artifact: {id} is revoked (by {by})")]
    // Boxed: two 64-byte ids inline would double the size of every Result carrying this.
    ArtifactRevoked { id: Box<ArtifactId>, by: ArtifactId },
    #[error("revoked digest: grant {index} names sha256:{digest}, which is revoked (by {by})")]
    DigestRevoked {
        digest: FileDigest,
        index: usize,
        by: ArtifactId,
    },
    #[error("invalid scope {scope:?}: {problem}")]
    Scope {
        scope: String,
        problem: &'static str,
    },
    #[error("invalid digest in {location}: {source}")]
    Digest {
        location: String,
        #[source]
        source: DigestError,
    },
    #[error("invalid {field}: {problem}")]
    Field { field: String, problem: String },
}

fn malformed(what: &'static str, problem: impl fmt::Display) -> ArtifactError {
    ArtifactError::Malformed {
        what,
        problem: problem.to_string(),
    }
}

fn field_error(field: impl Into<String>, problem: impl Into<String>) -> ArtifactError {
    ArtifactError::Field {
        field: field.into(),
        problem: problem.into(),
    }
}

/// The last second of year 9999: later times cannot be written as dates (RFC 3339), and
/// no authorization needs them.
pub const LATEST_TIME: u64 = 253_402_300_799;

/// Refuses a time past [`LATEST_TIME`].
fn check_time(field: impl Fn() -> String, secs: u64) -> Result<(), ArtifactError> {
    if secs > LATEST_TIME {
        return Err(field_error(
            field(),
            format!("{secs} is after 9999-12-31T23:59:59Z"),
        ));
    }
    Ok(())
}

/// The start of an untrusted string, so a hostile 16 MiB value cannot flood a log line.
pub(crate) fn excerpt(s: &str) -> String {
    match s.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

/// Which payload an envelope carries; it decides which role must sign it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArtifactKind {
    Bundle,
    Revocation,
    BreakGlass,
}

impl ArtifactKind {
    #[must_use]
    pub fn payload_type(self) -> &'static str {
        match self {
            Self::Bundle => BUNDLE_PAYLOAD_TYPE,
            Self::Revocation => REVOCATION_PAYLOAD_TYPE,
            Self::BreakGlass => BREAK_GLASS_PAYLOAD_TYPE,
        }
    }

    /// Maps a payload type to a kind; any other type or version is refused.
    pub fn from_payload_type(found: &str) -> Result<Self, ArtifactError> {
        match found {
            BUNDLE_PAYLOAD_TYPE => Ok(Self::Bundle),
            REVOCATION_PAYLOAD_TYPE => Ok(Self::Revocation),
            BREAK_GLASS_PAYLOAD_TYPE => Ok(Self::BreakGlass),
            _ => Err(ArtifactError::UnknownSchema {
                found: excerpt(found),
            }),
        }
    }

    /// The role a key must hold for its signature to count towards this kind's threshold.
    #[must_use]
    pub fn role(self) -> Role {
        match self {
            Self::Bundle => Role::Bundle,
            Self::Revocation => Role::Revocation,
            Self::BreakGlass => Role::BreakGlass,
        }
    }
}

impl fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bundle => "bundle",
            Self::Revocation => "revocation",
            Self::BreakGlass => "break-glass",
        })
    }
}

/// An artifact's identity: the SHA3-512 of its payload bytes. Audit records and
/// `enforcer status` cite it. Signatures are not part of it, so adding a signature does not
/// change which artifact it is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArtifactId(pub [u8; 64]);

impl ArtifactId {
    #[must_use]
    pub fn of_payload(payload: &[u8]) -> Self {
        let mut id = [0u8; 64];
        id.copy_from_slice(&Sha3_512::digest(payload));
        Self(id)
    }

    /// The first bytes of the identity: what grants carry into the kernel and decisions
    /// and process records report back.
    #[must_use]
    pub fn auth_prefix(&self) -> [u8; enforcer_common::AUTH_ID_LEN] {
        let mut out = [0u8; enforcer_common::AUTH_ID_LEN];
        out.copy_from_slice(&self.0[..enforcer_common::AUTH_ID_LEN]);
        out
    }
}

impl fmt::Display for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha3-512:{self}")
    }
}

impl FromStr for ArtifactId {
    type Err = ArtifactError;

    /// Accepts `sha3-512:<hex>` or bare `<hex>`: 128 hexadecimal characters.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let hex_part = input.strip_prefix("sha3-512:").unwrap_or(input);
        let mut id = [0u8; 64];
        hex::decode_to_slice(hex_part, &mut id).map_err(|_| {
            field_error(
                "artifact id",
                format!(
                    "{:?} is not 128 hexadecimal characters (a SHA3-512)",
                    excerpt(input)
                ),
            )
        })?;
        Ok(Self(id))
    }
}

/// Strict JSON: unknown fields are reported with their path (`grants.3.foo`) rather than
/// silently ignored, and trailing data after the document is refused. serde_ignored gives
/// the path, which `deny_unknown_fields` would not.
fn from_json<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
    what: &'static str,
) -> Result<T, ArtifactError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut unknown = None;
    let parsed = serde_ignored::deserialize(&mut de, |path| {
        unknown.get_or_insert_with(|| excerpt(&path.to_string()));
    });
    // An unknown field explains a later "missing field" better than the reverse.
    if let Some(path) = unknown {
        return Err(ArtifactError::UnknownField { what, path });
    }
    let value = parsed.map_err(|e| malformed(what, e))?;
    de.end().map_err(|e| malformed(what, e))?;
    Ok(value)
}

/// How a scope treats programs no grant covers: what a bundle asks for in its scopes,
/// what the operator's configuration may override for a rollout, and what the kernel is
/// told.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Programs not covered by a grant are denied (the default: doubt means deny).
    #[default]
    Enforce,
    /// Programs not covered by a grant run, and the decision is only recorded: for rolling
    /// out a bundle and seeing what it would deny.
    Monitor,
}

/// What happens to running processes when their bundle is revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum OnRevoke {
    /// New executions are denied; processes already running continue.
    DenyNew,
    /// New executions are denied and processes started under the bundle are killed.
    Kill,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Enforce => "enforce",
            Self::Monitor => "monitor",
        })
    }
}

impl fmt::Display for OnRevoke {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DenyNew => "deny-new",
            Self::Kill => "kill",
        })
    }
}

/// A governed scope: a cgroup v2 path relative to the cgroup2 root, written absolute
/// (`/agents.slice/x`). Checked so it can only ever name a descendant of the root: no `..`,
/// no `.`, no empty components, no control characters, and not the root itself.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopePath(String);

impl ScopePath {
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path's components, root first (`["agents.slice", "x"]`).
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').skip(1)
    }
}

impl FromStr for ScopePath {
    type Err = ArtifactError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let refuse = |problem| ArtifactError::Scope {
            scope: excerpt(input),
            problem,
        };
        if input.len() > MAX_SCOPE_BYTES {
            return Err(refuse("longer than 4096 bytes"));
        }
        if !input.starts_with('/') {
            return Err(refuse(
                "must be absolute, relative to the cgroup2 root, e.g. /agents.slice",
            ));
        }
        if input == "/" {
            return Err(refuse(
                "the root cgroup cannot be a scope: it would govern every process, the agent's included",
            ));
        }
        if input.chars().any(char::is_control) {
            return Err(refuse("contains a control character"));
        }
        for component in input.split('/').skip(1) {
            match component {
                "" => return Err(refuse("has an empty component (// or a trailing /)")),
                "." | ".." => return Err(refuse("must not contain . or .. components")),
                c if c.len() > MAX_SCOPE_COMPONENT_BYTES => {
                    return Err(refuse("has a component longer than 255 bytes"));
                }
                _ => {}
            }
        }
        Ok(Self(input.to_owned()))
    }
}

impl fmt::Display for ScopePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// At least one scope, none twice: the same rule for every kind that names scopes.
fn check_scopes(scopes: &[ScopePath], what: &str) -> Result<(), ArtifactError> {
    if scopes.is_empty() {
        return Err(field_error(
            "scopes",
            format!("{what} must name at least one scope"),
        ));
    }
    let mut seen = BTreeSet::new();
    if let Some(dup) = scopes.iter().find(|s| !seen.insert(*s)) {
        return Err(field_error("scopes", format!("{dup} is listed twice")));
    }
    Ok(())
}

/// Parses a digest, keeping a hostile oversized value out of the error message.
fn parse_digest(input: &str, location: impl Fn() -> String) -> Result<FileDigest, ArtifactError> {
    input.parse().map_err(|_| ArtifactError::Digest {
        location: location(),
        source: DigestError::Syntax {
            input: excerpt(input),
        },
    })
}

/// Identifiers: 1 to 128 bytes of ASCII letters, digits and `._:@-`, because they key
/// persisted state and appear in logs and file names.
fn check_label(field: &str, value: &str) -> Result<(), ArtifactError> {
    let problem = if value.is_empty() {
        "must not be empty"
    } else if value.len() > MAX_LABEL_BYTES {
        "is longer than 128 bytes"
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(&b))
    {
        "may contain only ASCII letters, digits and . _ : @ -"
    } else {
        return Ok(());
    };
    Err(field_error(
        field,
        format!("{:?} {problem}", excerpt(value)),
    ))
}

/// Free text: bounded, and without control characters that could forge log lines.
fn check_text(field: impl Fn() -> String, value: &str) -> Result<(), ArtifactError> {
    if value.len() > MAX_TEXT_BYTES {
        return Err(field_error(field(), "is longer than 4096 bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(field_error(
            field(),
            format!("{:?} contains a control character", excerpt(value)),
        ));
    }
    Ok(())
}

/// Seconds since the Unix epoch; times before it count as 0.
#[must_use]
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[must_use]
pub fn from_unix_seconds(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// RFC 3339 in UTC, the form the CLI accepts back (`2030-01-01T00:00:00Z`).
#[must_use]
pub fn format_time(secs: u64) -> String {
    // humantime cannot format past year 9999; such times are shown as raw seconds.
    if secs > LATEST_TIME {
        return format!("{secs} (unix seconds)");
    }
    humantime::format_rfc3339_seconds(from_unix_seconds(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::verify::testkit;

    #[test]
    fn times_past_year_9999_are_refused() {
        let mut b = testkit::bundle();
        b.not_after = LATEST_TIME + 1;
        let err = b.to_payload().expect_err("far future");
        assert!(
            err.to_string().contains("not_after") && err.to_string().contains("9999"),
            "{err}"
        );
        b.not_after = LATEST_TIME;
        b.to_payload().expect("the last second of 9999 is fine");
    }

    #[test]
    fn pae_matches_the_dsse_specification() {
        // The example from the DSSE protocol description.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ");
    }

    #[test]
    fn envelope_round_trips_and_identity_ignores_signatures() {
        let payload = testkit::bundle().to_payload().expect("payload");
        let mut env = Envelope::new(ArtifactKind::Bundle, payload.clone());
        let unsigned_id = env.id();
        assert!(env.add_signature(&testkit::key(1)));
        assert!(
            !env.add_signature(&testkit::key(1)),
            "second signature by one key is a no-op"
        );
        assert_eq!(env.id(), unsigned_id);
        assert_eq!(env.id(), ArtifactId::of_payload(&payload));
        let parsed = Envelope::parse(&env.to_bytes()).expect("parse");
        assert_eq!(parsed, env);
        assert_eq!(parsed.kind().expect("kind"), ArtifactKind::Bundle);
    }

    #[test]
    fn artifact_id_is_sha3_512_and_parses_back() {
        // SHA3-512("") from FIPS 202 test vectors.
        let id = ArtifactId::of_payload(b"");
        assert!(
            id.to_string()
                .starts_with("a69f73cca23a9ac5c8b567dc185a756e97c982164fe25859e0d1dcc1475c80a6")
        );
        assert_eq!(id.to_string().len(), 128);
        assert_eq!(
            format!("sha3-512:{id}")
                .parse::<ArtifactId>()
                .expect("parse"),
            id
        );
        assert!("abc".parse::<ArtifactId>().is_err());
    }

    #[test]
    fn bundle_payload_round_trips() {
        let bundle = testkit::bundle();
        let back = Bundle::from_payload(&bundle.to_payload().expect("payload")).expect("parse");
        assert_eq!(back, bundle);
    }

    #[test]
    fn opt_ins_round_trip_and_are_left_out_when_off() {
        let plain = testkit::bundle().to_payload().expect("payload");
        let text = String::from_utf8(plain.clone()).expect("utf8");
        assert!(
            !text.contains("allow_"),
            "a bundle without opt-ins serialises as before: {text}"
        );

        let mut b = testkit::bundle();
        b.allow_anonymous_exec = true;
        let payload = b.to_payload().expect("payload");
        let text = String::from_utf8(payload.clone()).expect("utf8");
        assert!(text.contains("\"allow_anonymous_exec\":true"), "{text}");
        assert!(!text.contains("allow_fileless"), "{text}");
        assert_eq!(Bundle::from_payload(&payload).expect("parse"), b);

        b.allow_fileless = true;
        let back = Bundle::from_payload(&b.to_payload().expect("payload")).expect("parse");
        assert!(back.allow_anonymous_exec && back.allow_fileless);
        assert_eq!(back, b);
    }

    #[test]
    fn opt_ins_default_to_off_and_must_be_booleans() {
        let text = String::from_utf8(testkit::bundle().to_payload().expect("p")).expect("utf8");
        let parsed = Bundle::from_payload(text.as_bytes()).expect("no opt-in fields");
        assert!(!parsed.allow_anonymous_exec && !parsed.allow_fileless);

        let explicit = text.replacen('{', "{\"allow_fileless\":false,", 1);
        assert_eq!(
            Bundle::from_payload(explicit.as_bytes()).expect("explicit false"),
            parsed
        );

        let string = text.replacen('{', "{\"allow_fileless\":\"yes\",", 1);
        let err = Bundle::from_payload(string.as_bytes()).expect_err("not a boolean");
        assert!(
            err.to_string().contains("malformed bundle payload"),
            "{err}"
        );

        let twice = text.replacen('{', "{\"allow_fileless\":true,\"allow_fileless\":false,", 1);
        let err = Bundle::from_payload(twice.as_bytes()).expect_err("duplicate");
        assert!(
            err.to_string().contains("duplicate field `allow_fileless`"),
            "{err}"
        );

        // A misspelt opt-in is refused, never read as "off".
        let typo = text.replacen('{', "{\"allow_anon_exec\":true,", 1);
        let err = Bundle::from_payload(typo.as_bytes()).expect_err("unknown");
        assert!(
            err.to_string().contains("unknown field `allow_anon_exec`"),
            "{err}"
        );
    }

    #[test]
    fn revocation_payload_round_trips() {
        let r = Revocation {
            issuer: "sec".into(),
            issued_at: 5,
            reason: Some("leaked".into()),
            targets: vec![
                RevocationTarget::Bundle("b".into()),
                RevocationTarget::Artifact(ArtifactId::of_payload(b"x")),
                RevocationTarget::Digest(FileDigest::of_bytes(b"x")),
                RevocationTarget::Key(testkit::key(1).key_id()),
            ],
        };
        assert_eq!(
            Revocation::from_payload(&r.to_payload().expect("payload")).expect("parse"),
            r
        );
    }

    #[test]
    fn break_glass_payload_round_trips_under_its_own_type() {
        let bg = testkit::break_glass();
        let payload = bg.to_payload().expect("payload");
        assert_eq!(BreakGlass::from_payload(&payload).expect("parse"), bg);
        let text = String::from_utf8(payload).expect("utf8");
        assert!(
            text.starts_with("{\"issuer\":\"oncall\",\"not_before\":"),
            "{text}"
        );
        assert_eq!(
            ArtifactKind::from_payload_type(BREAK_GLASS_PAYLOAD_TYPE).expect("kind"),
            ArtifactKind::BreakGlass
        );
        assert_eq!(ArtifactKind::BreakGlass.role(), Role::BreakGlass);
        assert_eq!(ArtifactKind::BreakGlass.to_string(), "break-glass");
        let err = ArtifactKind::from_payload_type("application/vnd.enforcer.break-glass.v2+json")
            .expect_err("v2");
        assert!(
            matches!(err, ArtifactError::UnknownSchema { .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(BREAK_GLASS_PAYLOAD_TYPE),
            "names what it reads: {err}"
        );
    }

    /// Each rule of the break-glass payload, checked both when creating one (to_payload)
    /// and when reading a signed one (from_payload), with the field it is about named.
    #[test]
    fn refuses_break_glass_that_breaks_the_rules() {
        type Edit = fn(&mut BreakGlass);
        let cases: [(&str, Edit, &str); 9] = [
            (
                "no scope",
                |b| b.scopes.clear(),
                "invalid scopes: a break-glass must name at least one scope",
            ),
            (
                "duplicate",
                |b| b.scopes.push(b.scopes[0].clone()),
                "invalid scopes: /agents.slice is listed twice",
            ),
            (
                "inverted",
                |b| b.not_after = b.not_before - 1,
                "invalid validity: not_before",
            ),
            (
                "empty window",
                |b| b.not_after = b.not_before,
                "cannot be empty or inverted",
            ),
            (
                "empty reason",
                |b| b.reason.clear(),
                "invalid reason: must not be empty",
            ),
            (
                "blank reason",
                |b| b.reason = "  ".into(),
                "invalid reason: must not be empty",
            ),
            (
                "control",
                |b| b.reason = "a\u{1b}[2J".into(),
                "invalid reason: \"a\\u{1b}[2J\" contains a control character",
            ),
            (
                "long reason",
                |b| b.reason = "x".repeat(4097),
                "invalid reason: is longer than 4096 bytes",
            ),
            ("issuer", |b| b.issuer = "on call".into(), "invalid issuer"),
        ];
        for (what, edit, needle) in cases {
            let mut bg = testkit::break_glass();
            edit(&mut bg);
            let err = bg.to_payload().expect_err(what);
            assert!(
                matches!(err, ArtifactError::Field { .. }),
                "{what}: {err:?}"
            );
            assert!(err.to_string().contains(needle), "{what}: {err}");
            // The same rule holds for a payload someone else wrote.
            let bytes = serde_json::to_vec(&bg.wire()).expect("json");
            let err = BreakGlass::from_payload(&bytes).expect_err(what);
            assert!(err.to_string().contains(needle), "{what}: {err}");
        }
    }

    #[test]
    fn refuses_break_glass_payloads_with_missing_or_unknown_fields() {
        let text =
            String::from_utf8(testkit::break_glass().to_payload().expect("p")).expect("utf8");
        let (head, _) = text.split_once(",\"reason\"").expect("reason is last");
        let err = BreakGlass::from_payload(format!("{head}}}").as_bytes()).expect_err("no reason");
        assert!(matches!(err, ArtifactError::Malformed { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("malformed break-glass payload: missing field `reason`"),
            "{err}"
        );
        let extra = text.replacen('{', "{\"mode\":\"monitor\",", 1);
        let err = BreakGlass::from_payload(extra.as_bytes()).expect_err("unknown");
        assert!(matches!(err, ArtifactError::UnknownField { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("unknown field `mode` in the break-glass payload"),
            "{err}"
        );
        let bad_scope = text.replace("/agents.slice", "/");
        let err = BreakGlass::from_payload(bad_scope.as_bytes()).expect_err("root");
        assert!(matches!(err, ArtifactError::Scope { .. }), "{err:?}");
        assert!(err.to_string().contains("invalid scope \"/\""), "{err}");
    }

    #[test]
    fn scopes_accept_descendants_of_the_root() {
        for ok in ["/agents.slice", "/agents.slice/x", "/a b/c-d_e.f"] {
            let s: ScopePath = ok.parse().expect(ok);
            assert_eq!(s.as_str(), ok);
        }
        let s: ScopePath = "/a/b".parse().expect("parse");
        assert_eq!(s.components().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn refuses_scope_syntax_errors_naming_the_scope() {
        let long_component = format!("/{}", "a".repeat(256));
        for (bad, why) in [
            ("agents.slice", "absolute"),
            ("", "absolute"),
            ("/", "root cgroup"),
            ("/a//b", "empty component"),
            ("/a/", "empty component"),
            ("/a/../b", ".."),
            ("/a/./b", ".."),
            ("/a\nb", "control"),
            (long_component.as_str(), "255"),
        ] {
            let err = bad.parse::<ScopePath>().expect_err(bad);
            assert!(
                matches!(err, ArtifactError::Scope { .. }),
                "{bad:?}: {err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains("invalid scope") && msg.contains(why),
                "{bad:?}: {msg}"
            );
        }
    }

    #[test]
    fn refuses_oversized_input_before_parsing() {
        let huge = vec![b' '; MAX_ARTIFACT_BYTES + 1];
        let err = Envelope::parse(&huge).expect_err("too large");
        assert!(matches!(err, ArtifactError::TooLarge { .. }), "{err:?}");
        assert!(err.to_string().contains("over the limit"), "{err}");
    }

    #[test]
    fn refuses_malformed_envelopes_naming_the_problem() {
        let good = testkit::signed_bundle(&testkit::bundle(), &[1]);
        let text = String::from_utf8(good.clone()).expect("utf8");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not json".to_vec(), "malformed envelope"),
            (b"{}".to_vec(), "missing field"),
            ([good.as_slice(), b"x"].concat(), "trailing"),
            (
                text.replacen("\"payload\":\"", "\"payload\":\"!", 1)
                    .into_bytes(),
                "base64",
            ),
            (
                text.replacen("\"keyid\":\"", "\"keyid\":\"zz", 1)
                    .into_bytes(),
                "key id",
            ),
            (
                text.replacen("\"sig\":\"", "\"sig\":\"AAAA", 1)
                    .into_bytes(),
                "64",
            ),
        ];
        for (bytes, needle) in cases {
            let err = Envelope::parse(&bytes).expect_err(needle);
            assert!(
                matches!(err, ArtifactError::Malformed { .. }),
                "{needle}: {err:?}"
            );
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn refuses_too_many_signatures() {
        let mut env = Envelope::new(ArtifactKind::Bundle, b"{}".to_vec());
        let sig = EnvelopeSignature {
            key_id: testkit::key(1).key_id(),
            sig: [0; 64],
        };
        env.signatures = vec![sig; MAX_SIGNATURES + 1];
        let err = Envelope::parse(&env.to_bytes()).expect_err("too many");
        assert!(err.to_string().contains("signatures, at most"), "{err}");
    }

    #[test]
    fn refuses_unknown_fields_naming_their_path() {
        let good = testkit::signed_bundle(&testkit::bundle(), &[1]);
        let text = String::from_utf8(good).expect("utf8");
        let env = text.replacen('{', "{\"extra\":1,", 1);
        let err = Envelope::parse(env.as_bytes()).expect_err("envelope field");
        assert!(matches!(err, ArtifactError::UnknownField { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("unknown field `extra` in the envelope"),
            "{err}"
        );

        let payload = String::from_utf8(testkit::bundle().to_payload().expect("p")).expect("utf8");
        let payload = payload.replacen("\"digest\":", "\"colour\":\"red\",\"digest\":", 1);
        let err = Bundle::from_payload(payload.as_bytes()).expect_err("grant field");
        assert!(
            err.to_string()
                .contains("unknown field `grants.0.colour` in the bundle payload"),
            "{err}"
        );
    }

    #[test]
    fn refuses_unknown_payload_types_and_versions() {
        for found in ["application/vnd.enforcer.bundle.v2+json", "text/plain", ""] {
            let err = ArtifactKind::from_payload_type(found).expect_err(found);
            assert!(
                matches!(err, ArtifactError::UnknownSchema { .. }),
                "{err:?}"
            );
            assert!(
                err.to_string()
                    .contains("unknown artifact type or schema version"),
                "{err}"
            );
        }
    }

    #[test]
    fn refuses_bad_grant_digests_naming_the_grant() {
        let payload = String::from_utf8(testkit::bundle().to_payload().expect("p")).expect("utf8");
        let payload = payload.replacen("\"digest\":\"sha256:", "\"digest\":\"sha256:zz", 1);
        let err = Bundle::from_payload(payload.as_bytes()).expect_err("digest");
        assert!(matches!(err, ArtifactError::Digest { .. }), "{err:?}");
        assert!(
            err.to_string().contains("invalid digest in grant 0"),
            "{err}"
        );
    }

    #[test]
    fn refuses_bundles_that_break_the_rules() {
        let mut b = testkit::bundle();
        b.issuer = "ops team".into();
        assert!(
            b.to_payload()
                .expect_err("label")
                .to_string()
                .contains("invalid issuer")
        );
        let mut b = testkit::bundle();
        b.not_before = b.not_after + 1;
        assert!(
            b.to_payload()
                .expect_err("window")
                .to_string()
                .contains("not_before")
        );
        let mut b = testkit::bundle();
        b.scopes.clear();
        assert!(
            b.to_payload()
                .expect_err("scopes")
                .to_string()
                .contains("at least one scope")
        );
        let mut b = testkit::bundle();
        b.scopes.push(b.scopes[0].clone());
        assert!(
            b.to_payload()
                .expect_err("dup")
                .to_string()
                .contains("listed twice")
        );
        let mut b = testkit::bundle();
        b.grants[0].name = Some("a\u{1b}[31m".into());
        assert!(
            b.to_payload()
                .expect_err("ctl")
                .to_string()
                .contains("control character")
        );
    }

    #[test]
    fn refuses_unknown_modes_naming_the_value() {
        let payload = String::from_utf8(testkit::bundle().to_payload().expect("p")).expect("utf8");
        let payload = payload.replacen("\"enforce\"", "\"audit\"", 1);
        let err = Bundle::from_payload(payload.as_bytes()).expect_err("mode");
        assert!(err.to_string().contains("unknown variant `audit`"), "{err}");
    }

    #[test]
    fn grants_never_outlive_their_bundle() {
        let g = SignedGrant {
            digest: FileDigest::of_bytes(b""),
            name: None,
            not_after: Some(50),
        };
        assert!(g.is_live(50, 100));
        assert!(!g.is_live(51, 100));
        let g = SignedGrant {
            not_after: Some(500),
            ..g
        };
        assert!(!g.is_live(101, 100));
    }

    #[test]
    fn error_messages_cut_hostile_strings() {
        let long = "x".repeat(10_000);
        let err = format!("/{long}").parse::<ScopePath>().expect_err("long");
        assert!(err.to_string().len() < 300, "{err}");
    }
}
