//! The chain: what exactly is hashed, and what exactly a checkpoint signs.
//!
//! **Canonical bytes.** A record's line is `C` with its closing `}` replaced by
//! `,"hash":"<H>"}`, where `C` is the record serialized as compact JSON without the hash
//! member and `H` is the lowercase hex hash of `C`. Put the other way round: to check a
//! line, cut the last member `,"hash":"<H>"` off it and hash what remains, byte for byte.
//! No re-serialization is involved, so there is no second opinion on key order, spacing or
//! escaping: a change to any byte of a line changes its hash or its stated hash.
//!
//! **Which hash.** Formats 1 and 2 hash `C` with SHA3-512 (128 hex characters). From
//! format 3 on, `H` is the record's RFC 6962 leaf hash, SHA-256(0x00 || `C`) (64 hex
//! characters): the hash the Merkle tree needs anyway, so the log keeps one hash for its
//! integrity instead of two, and the writer hashes each record once (SHA3-512 was half
//! of its time). The spelling's length says which; a verifier also holds each record to
//! the format its start record declared ([`HashKind::of_format`]).
//!
//! **Chain.** Every record's `prev` is the previous record's `H` (all zeros for seq 0), so
//! changing, removing or reordering a record breaks the next record's link. The first
//! format-3 record links to the last format-2 record's SHA3-512 hash, so the chain runs
//! unbroken across the change. The chain alone proves nothing against someone who can
//! recompute it; signatures do.
//!
//! **Checkpoint signature.** A checkpoint's `C` ends with `,"signature":"<S>"}`. `S` is the
//! base64 Ed25519 signature of [`CHECKPOINT_DOMAIN`] followed by `C` without that member
//! (so `…,"key_id":"<id>"}`). That covers the checkpoint's seq, `prev` (the head it commits
//! to, which commits to every record before it), time, trigger and next file. The domain
//! prefix keeps a host key's checkpoint signature from meaning anything anywhere else.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha3::{Digest as _, Sha3_512};

use super::record::{Body, Decision, Record};
use super::tlog::{TREE_HASH_LEN, TreeHash, leaf_hash};
use crate::authz::trust::SigningKey;

/// Length of a SHA3-512 hash (formats 1 and 2).
pub const HASH_LEN: usize = 64;

/// What the host key signs before a checkpoint's bytes.
pub const CHECKPOINT_DOMAIN: &[u8] = b"enforcer-audit-checkpoint-v1\n";

const HASH_MEMBER: &str = "hash";
const SIGNATURE_MEMBER: &str = "signature";

/// How records are hashed: SHA3-512 in formats 1 and 2, the tree's leaf hash from 3 on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashKind {
    /// SHA3-512 of the canonical bytes.
    Sha3,
    /// The RFC 6962 leaf hash of the canonical bytes: SHA-256 with the prefix 0x00.
    Leaf,
}

impl HashKind {
    /// The kind a log format hashes its records with (`None`: format 1).
    #[must_use]
    pub fn of_format(format: Option<u32>) -> Self {
        if format.is_some_and(|format| format >= 3) {
            Self::Leaf
        } else {
            Self::Sha3
        }
    }

    /// The hash of canonical bytes.
    #[must_use]
    pub fn hash(self, canonical: &[u8]) -> ChainHash {
        match self {
            Self::Sha3 => ChainHash::Sha3(Sha3_512::digest(canonical).into()),
            Self::Leaf => ChainHash::Leaf(leaf_hash(canonical)),
        }
    }

    /// The `prev` of the first record of a log written in this kind.
    #[must_use]
    pub fn genesis(self) -> ChainHash {
        match self {
            Self::Sha3 => ChainHash::Sha3([0; HASH_LEN]),
            Self::Leaf => ChainHash::Leaf(TreeHash([0; TREE_HASH_LEN])),
        }
    }

    /// The hash's name, for messages.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha3 => "SHA3-512",
            Self::Leaf => "SHA-256 leaf",
        }
    }
}

/// A record's hash; lowercase hex in JSON, whose length tells the kind.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainHash {
    /// Formats 1 and 2: SHA3-512 of the canonical bytes.
    Sha3([u8; HASH_LEN]),
    /// Format 3 on: the record's leaf hash in the log's Merkle tree.
    Leaf(TreeHash),
}

impl ChainHash {
    /// The `prev` of the first record of a format-1 or format-2 log.
    pub const GENESIS: Self = Self::Sha3([0; HASH_LEN]);

    /// How it was computed.
    #[must_use]
    pub fn kind(&self) -> HashKind {
        match self {
            Self::Sha3(_) => HashKind::Sha3,
            Self::Leaf(_) => HashKind::Leaf,
        }
    }

    /// All zeros: the `prev` of seq 0, in either kind.
    #[must_use]
    pub fn is_genesis(&self) -> bool {
        self.bytes().iter().all(|&b| b == 0)
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Self::Sha3(bytes) => bytes,
            Self::Leaf(hash) => &hash.0,
        }
    }

    /// The leaf of the record in the log's Merkle tree, given its stored `line` (without
    /// the newline), when `self` is the hash *computed* from that line's canonical bytes
    /// (never the one it states). A format-3 record's leaf is its hash; an older
    /// record's leaf is the hash of its whole line, SHA3-512 member included.
    #[must_use]
    pub fn leaf_of(&self, line: &[u8]) -> TreeHash {
        match self {
            Self::Leaf(hash) => *hash,
            Self::Sha3(_) => leaf_hash(line),
        }
    }

    /// Parses exactly 128 (SHA3-512) or 64 (leaf) lowercase hex characters: one hash,
    /// one spelling.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        if !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        match text.len() {
            len if len == 2 * HASH_LEN => {
                let mut out = [0; HASH_LEN];
                hex::decode_to_slice(text, &mut out).ok()?;
                Some(Self::Sha3(out))
            }
            len if len == 2 * TREE_HASH_LEN => {
                let mut out = [0; TREE_HASH_LEN];
                hex::decode_to_slice(text, &mut out).ok()?;
                Some(Self::Leaf(TreeHash(out)))
            }
            _ => None,
        }
    }

    /// Lowercase hex, on the stack: the writer spells two hashes per record, and
    /// `hex::encode` (a `char` at a time into a new `String`) cost a tenth of its time.
    fn to_hex(self) -> Hex {
        let bytes = self.bytes();
        let mut out = Hex {
            text: [0; 2 * HASH_LEN],
            len: 2 * bytes.len(),
        };
        hex::encode_to_slice(bytes, &mut out.text[..out.len])
            .expect("the output is twice the input");
        out
    }
}

/// A hash spelled in hex.
struct Hex {
    text: [u8; 2 * HASH_LEN],
    len: usize,
}

impl Hex {
    fn as_bytes(&self) -> &[u8] {
        &self.text[..self.len]
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("hex is ASCII")
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.to_hex().as_str())
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({self})")
    }
}

impl Serialize for ChainHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.to_hex().as_str())
    }
}

impl<'de> Deserialize<'de> for ChainHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text)
            .ok_or_else(|| serde::de::Error::custom("expected 128 or 64 lowercase hex characters"))
    }
}

/// Writes `record`'s line (with its `hash` member, of `kind`, and the newline) into
/// `line`, replacing what was there, and returns the hash.
pub fn seal(
    record: &Record,
    kind: HashKind,
    line: &mut Vec<u8>,
) -> Result<ChainHash, serde_json::Error> {
    line.clear();
    match &record.body {
        Body::Decision(decision) => write_decision(record, decision, line),
        _ => serde_json::to_writer(&mut *line, record)?,
    }
    let hash = kind.hash(line);
    // `to_writer` of a struct always ends with the object's closing brace.
    line.pop();
    line.extend_from_slice(b",\"hash\":\"");
    line.extend_from_slice(hash.to_hex().as_bytes());
    line.extend_from_slice(b"\"}\n");
    Ok(hash)
}

/// A decision record as compact JSON: the bytes `serde_json::to_writer(record)` writes,
/// without its cost. Decisions are nearly every record, and serde's way (the body
/// flattened into a map, a member at a time, every string escaped a byte at a time,
/// hashes spelled into `String`s first) took about a tenth of the writer's time. The
/// bytes must not change, since the chain hashes them: a property test holds this to
/// serde's output, and every other kind of record still goes through serde.
fn write_decision(record: &Record, d: &Decision, out: &mut Vec<u8>) {
    let Record {
        seq,
        prev,
        time,
        body: _,
    } = record;
    // Destructured so that a field added to `Decision` fails to compile here rather
    // than go missing from the log.
    let Decision {
        decision,
        reason,
        hook,
        path,
        sha256,
        grant,
        scope,
        scope_id,
        cgroup_id,
        pid,
        tgid,
        ppid,
        uid,
        gid,
        boot_id,
        exec_id,
        parent_exec_id,
        boot_ns,
        auth_id,
        auth_serial,
        detail,
    } = d;
    out.extend_from_slice(b"{\"seq\":");
    json_number(out, *seq);
    out.extend_from_slice(b",\"prev\":\"");
    out.extend_from_slice(prev.to_hex().as_bytes());
    out.extend_from_slice(b"\",\"time\":");
    json_str(out, time);
    out.extend_from_slice(b",\"kind\":\"decision\"");
    for (name, value) in [
        ("decision", decision),
        ("reason", reason),
        ("hook", hook),
        ("path", path),
        ("sha256", sha256),
    ] {
        json_member(out, name);
        json_str(out, value);
    }
    for (name, value) in [("grant", grant), ("scope", scope)] {
        json_member(out, name);
        json_opt_str(out, value.as_deref());
    }
    for (name, value) in [("scope_id", *scope_id), ("cgroup_id", *cgroup_id)] {
        json_member(out, name);
        json_number(out, value);
    }
    for (name, value) in [
        ("pid", pid),
        ("tgid", tgid),
        ("ppid", ppid),
        ("uid", uid),
        ("gid", gid),
    ] {
        json_member(out, name);
        json_number(out, u64::from(*value));
    }
    json_member(out, "boot_id");
    json_str(out, boot_id);
    for (name, value) in [
        ("exec_id", *exec_id),
        ("parent_exec_id", *parent_exec_id),
        ("boot_ns", *boot_ns),
    ] {
        json_member(out, name);
        json_number(out, value);
    }
    json_member(out, "auth_id");
    json_opt_str(out, auth_id.as_deref());
    json_member(out, "auth_serial");
    json_number(out, *auth_serial);
    // `skip_serializing_if = "is_zero"` on the struct.
    if *detail != 0 {
        json_member(out, "detail");
        json_number(out, *detail);
    }
    out.push(b'}');
}

/// `,"<name>":` for a member name that needs no escaping.
fn json_member(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Digits as serde_json writes them (it uses `itoa` too).
fn json_number(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

fn json_opt_str(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => json_str(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string as serde_json spells it. Most strings need no escape (hex, names,
/// ordinary paths) and are copied whole; the rest are left to serde_json itself, so
/// that its escaping stays the only one.
fn json_str(out: &mut Vec<u8>, value: &str) {
    // Without short-circuiting, so that the loop vectorizes.
    let plain = !value.bytes().fold(false, |escape, b| {
        escape | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, value).expect("a string into a Vec cannot fail");
    }
}

/// A line taken apart: the canonical bytes and the hash it states.
#[derive(Debug)]
pub struct Unsealed {
    /// The line without its hash member: what was hashed, and what is parsed.
    pub canonical: Vec<u8>,
    /// The hash the line states.
    pub stated: ChainHash,
}

impl Unsealed {
    /// Takes a line (without its newline) apart. Fails when it does not end with a
    /// well-formed hash member; says nothing yet about whether the hash is right.
    pub fn new(line: &[u8]) -> Result<Self, &'static str> {
        let (canonical, value) = split_last_member(line, HASH_MEMBER)
            .ok_or("the line does not end with a \"hash\" member")?;
        let stated = ChainHash::parse(value)
            .ok_or("its \"hash\" is not 128 or 64 lowercase hex characters")?;
        Ok(Self { canonical, stated })
    }

    /// The hash of the canonical bytes as they are now, of the kind the line states.
    #[must_use]
    pub fn actual(&self) -> ChainHash {
        self.stated.kind().hash(&self.canonical)
    }

    /// The record's leaf in the log's Merkle tree, from its bytes as they are; `line` is
    /// the line this was taken from.
    #[must_use]
    pub fn leaf(&self, line: &[u8]) -> TreeHash {
        // An older record's leaf covers its whole line, so its SHA3-512 need not be
        // computed for it.
        match self.stated.kind() {
            HashKind::Sha3 => leaf_hash(line),
            HashKind::Leaf => leaf_hash(&self.canonical),
        }
    }

    /// Parses the canonical bytes.
    pub fn record(&self) -> Result<Record, serde_json::Error> {
        serde_json::from_slice(&self.canonical)
    }
}

/// Signs a checkpoint whose canonical bytes (`unsigned`, without a signature member) are
/// given, returning the base64 signature to put in it.
#[must_use]
pub fn sign_checkpoint(key: &SigningKey, unsigned: &[u8]) -> String {
    let mut message = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + unsigned.len());
    message.extend_from_slice(CHECKPOINT_DOMAIN);
    message.extend_from_slice(unsigned);
    BASE64.encode(key.sign(&message))
}

/// Why a checkpoint's signature does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureProblem {
    /// There is no signature member.
    Unsigned,
    /// The member is there but is not a base64 Ed25519 signature.
    Malformed,
    /// It does not verify under the key.
    Invalid,
}

/// Checks the signature of a checkpoint given its canonical bytes.
pub fn verify_checkpoint(canonical: &[u8], key: &VerifyingKey) -> Result<(), SignatureProblem> {
    let (unsigned, value) =
        split_last_member(canonical, SIGNATURE_MEMBER).ok_or(SignatureProblem::Unsigned)?;
    let bytes = BASE64
        .decode(value)
        .map_err(|_| SignatureProblem::Malformed)?;
    let raw = <[u8; 64]>::try_from(bytes.as_slice()).map_err(|_| SignatureProblem::Malformed)?;
    let mut message = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + unsigned.len());
    message.extend_from_slice(CHECKPOINT_DOMAIN);
    message.extend_from_slice(&unsigned);
    key.verify_strict(&message, &Signature::from_bytes(&raw))
        .map_err(|_| SignatureProblem::Invalid)
}

/// Splits `{…,"<name>":"<value>"}` into `{…}` and `value`, when that member is the last
/// one and its value is a plain string (no quote, no backslash). Searching from the end
/// for `,"<name>":"` cannot land inside an earlier string value: inside a JSON string
/// every `"` is escaped, so `,"` never occurs there.
fn split_last_member<'a>(object: &'a [u8], name: &str) -> Option<(Vec<u8>, &'a str)> {
    let marker = format!(",\"{name}\":\"");
    let marker = marker.as_bytes();
    let start = object.windows(marker.len()).rposition(|w| w == marker)?;
    let value = object.get(start + marker.len()..)?.strip_suffix(b"\"}")?;
    if value.iter().any(|&b| b == b'"' || b == b'\\') {
        return None;
    }
    let value = std::str::from_utf8(value).ok()?;
    let mut rest = object[..start].to_vec();
    rest.push(b'}');
    Some((rest, value))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::audit::record::Gap;

    fn record() -> Record {
        Record {
            seq: 3,
            prev: ChainHash::Sha3([7; HASH_LEN]),
            time: "2025-01-01T00:00:00.000000Z".into(),
            body: Body::Gap(Gap { lost: 5 }),
        }
    }

    #[test]
    fn a_line_is_its_canonical_bytes_plus_their_hash() {
        for kind in [HashKind::Sha3, HashKind::Leaf] {
            line_of_kind(kind);
        }
    }

    fn line_of_kind(kind: HashKind) {
        let mut line = Vec::new();
        let hash = seal(&record(), kind, &mut line).expect("seal");
        let canonical = serde_json::to_vec(&record()).expect("json");
        let expected = match kind {
            HashKind::Sha3 => ChainHash::Sha3(Sha3_512::digest(&canonical).into()),
            HashKind::Leaf => {
                let mut prefixed = vec![0];
                prefixed.extend_from_slice(&canonical);
                ChainHash::Leaf(TreeHash(sha2::Sha256::digest(&prefixed).into()))
            }
        };
        assert_eq!(hash, expected);
        assert_eq!(hash.kind(), kind);
        // A format-3 record's leaf is its hash; an older one's, the hash of its line.
        let stored = line.strip_suffix(b"\n").expect("newline");
        let leaf = match kind {
            HashKind::Sha3 => leaf_hash(stored),
            HashKind::Leaf => leaf_hash(&canonical),
        };
        assert_eq!(hash.leaf_of(stored), leaf);
        let text = std::str::from_utf8(&line).expect("utf8");
        assert!(text.starts_with("{\"seq\":3,\"prev\":\"0707"), "{text}");
        assert!(
            text.ends_with(&format!(
                ",\"kind\":\"gap\",\"lost\":5,\"hash\":\"{hash}\"}}\n"
            )),
            "{text}"
        );

        let unsealed = Unsealed::new(line.strip_suffix(b"\n").expect("newline")).expect("unseal");
        assert_eq!(unsealed.canonical, canonical);
        assert_eq!(unsealed.stated, hash);
        assert_eq!(unsealed.actual(), hash);
        assert_eq!(unsealed.record().expect("parse"), record());
    }

    #[test]
    fn a_hash_member_inside_a_string_is_not_taken_for_the_real_one() {
        let object = br#"{"path":"a\",\"hash\":\"00\"}","hash":"ab"}"#;
        let (rest, value) = split_last_member(object, "hash").expect("split");
        assert_eq!(value, "ab");
        assert_eq!(rest, br#"{"path":"a\",\"hash\":\"00\"}"}"#);
        assert!(
            split_last_member(br#"{"hash":"ab","x":1}"#, "hash").is_none(),
            "not last"
        );
        assert!(split_last_member(br#"{"a":1}"#, "hash").is_none());
    }

    /// Strings that need every kind of escape, besides arbitrary ones.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[a-f0-9/ \"\\\\\u{0}-\u{1f}\u{7f}\u{e9}\u{2028}\u{1f600}]{0,24}",
        ]
    }

    fn decision() -> impl Strategy<Value = Decision> {
        let names = (text(), text(), text(), text(), text());
        let labels = (
            proptest::option::of(text()),
            proptest::option::of(text()),
            text(),
            proptest::option::of(text()),
        );
        let ids = (
            any::<[u64; 6]>(),
            any::<[u32; 5]>(),
            prop_oneof![Just(0), any::<u64>()],
        );
        (names, labels, ids).prop_map(
            |(
                (decision, reason, hook, path, sha256),
                (grant, scope, boot_id, auth_id),
                (
                    [
                        scope_id,
                        cgroup_id,
                        exec_id,
                        parent_exec_id,
                        boot_ns,
                        auth_serial,
                    ],
                    [pid, tgid, ppid, uid, gid],
                    detail,
                ),
            )| Decision {
                decision,
                reason,
                hook,
                path,
                sha256,
                grant,
                scope,
                scope_id,
                cgroup_id,
                pid,
                tgid,
                ppid,
                uid,
                gid,
                boot_id,
                exec_id,
                parent_exec_id,
                boot_ns,
                auth_id,
                auth_serial,
                detail,
            },
        )
    }

    proptest! {
        /// The chain hashes the bytes, so the hand-written decision must be serde's, byte
        /// for byte, whatever the strings hold.
        #[test]
        fn a_decision_is_sealed_in_the_bytes_serde_writes(
            seq in any::<u64>(),
            prev in any::<[u8; HASH_LEN]>(),
            leaf in any::<bool>(),
            time in text(),
            decision in decision(),
        ) {
            let (prev, kind) = if leaf {
                (ChainHash::Leaf(TreeHash(prev[..TREE_HASH_LEN].try_into().expect("32"))), HashKind::Leaf)
            } else {
                (ChainHash::Sha3(prev), HashKind::Sha3)
            };
            let record = Record { seq, prev, time, body: Body::Decision(decision) };
            let mut line = Vec::new();
            let hash = seal(&record, kind, &mut line).expect("seal");
            let serde = serde_json::to_vec(&record).expect("json");
            let unsealed = Unsealed::new(line.strip_suffix(b"\n").expect("newline")).expect("unseal");
            prop_assert_eq!(String::from_utf8_lossy(&unsealed.canonical), String::from_utf8_lossy(&serde));
            prop_assert_eq!(hash, kind.hash(&serde));
            prop_assert_eq!(unsealed.record().expect("parse"), record);
        }
    }

    #[test]
    fn hashes_have_one_spelling() {
        let bytes: [u8; HASH_LEN] = std::array::from_fn(|i| u8::try_from(i * 4).expect("small"));
        let leaf = TreeHash(bytes[..TREE_HASH_LEN].try_into().expect("32"));
        for (hash, raw) in [
            (ChainHash::Sha3(bytes), &bytes[..]),
            (ChainHash::Leaf(leaf), &leaf.0[..]),
        ] {
            assert_eq!(hash.to_string(), hex::encode(raw));
            assert_eq!(
                serde_json::to_string(&hash).expect("json"),
                format!("\"{}\"", hex::encode(raw))
            );
            assert_eq!(ChainHash::parse(&hash.to_string()), Some(hash));
            assert_eq!(ChainHash::parse(&hash.to_string().to_uppercase()), None);
            assert!(!hash.is_genesis());
        }
        assert_eq!(ChainHash::parse("ab"), None);
        assert_eq!(ChainHash::parse(&"0".repeat(96)), None, "neither length");
        assert!(HashKind::Leaf.genesis().is_genesis() && ChainHash::GENESIS.is_genesis());
        assert_eq!(ChainHash::GENESIS, HashKind::Sha3.genesis());
    }
}
