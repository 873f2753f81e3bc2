//! What one audit record says.
//!
//! A record is one JSON object on one line. The fields of every record come first, in this
//! order: `seq`, `prev`, `time`, `kind`; then the fields of its kind; then `hash`, which
//! [`super::chain`] appends. Structs fix the field order, so the writer's bytes are the
//! same for the same record (the hash is over bytes, see [`super::chain`]).
//!
//! Decisions are rendered for people, not as raw codes: names for the decision and reason,
//! hex for digests and ids, the scope's path when the agent knows it. Unknown codes are kept
//! as `unknown-<code>`, so nothing the kernel said is lost.

use serde::{Deserialize, Serialize};

use enforcer_common::{ExecEvent, decision, hook, reason};

use super::chain::ChainHash;

/// One record of the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the chain: 0 for the first record ever written, then +1 per record,
    /// across files. A missing number is a removed record.
    pub seq: u64,
    /// Hash of the record before (all zeros for seq 0).
    pub prev: ChainHash,
    /// Wall-clock time the agent wrote the record, RFC 3339 UTC with microseconds.
    pub time: String,
    #[serde(flatten)]
    pub body: Body,
}

/// What a record is about; serialized as `"kind": "<name>"` followed by its fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Body {
    /// The agent opened the log.
    Start(Start),
    /// The kernel decided on an exec in a governed scope.
    Decision(Decision),
    /// The kernel dropped decisions (its ring buffer was full).
    Gap(Gap),
    /// A signed commitment to the chain so far.
    Checkpoint(Checkpoint),
    /// What the agent did with an authorization: accepted, withdrawn, or processes
    /// killed because it was withdrawn. With the `auth_id` of decisions, this is how an
    /// exec is traced to the signed artifact it ran under.
    Authorization(AuthorizationChange),
}

impl Body {
    /// The `kind` value, for messages.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Start(_) => "start",
            Self::Decision(_) => "decision",
            Self::Gap(_) => "gap",
            Self::Checkpoint(_) => "checkpoint",
            Self::Authorization(_) => "authorization",
        }
    }
}

/// Written every time the agent opens the log, so restarts are part of the record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// Boot the agent started in.
    pub boot_id: String,
    /// Version of the agent that writes from here on.
    pub version: String,
    /// Key id of the host key that signs checkpoints from here on (null: unsigned).
    pub host_key: Option<String>,
    /// How the log ended before this start; `unclean` means the agent crashed or the
    /// log's end was cut off while it was down.
    pub previous: PreviousEnd,
    /// Set when the previous file ended with a partial line (a crash in mid-write): the
    /// agent leaves that file as it is and names what it found here.
    pub recovered: Option<Recovered>,
    /// The log format written from here on, this record included: absent in format 1
    /// (the hash chain alone), 2 when checkpoints also commit to the Merkle tree over the
    /// records, 3 ([`FORMAT`]) when each record's hash is its leaf in that tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<u32>,
    /// The log's name in its signed checkpoints (C2SP `tlog-checkpoint` origin), from
    /// format 2 on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// The log format this agent writes: the chain of format 1, plus a Merkle tree over the
/// records whose heads the checkpoints sign as C2SP notes (format 2), with each record's
/// hash its SHA-256 leaf hash instead of a SHA3-512 (format 3, [`super::chain`]).
pub const FORMAT: u32 = 3;

/// How the log ended before a start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PreviousEnd {
    /// There was no log: this is its first record.
    None,
    /// The last record was a shutdown checkpoint.
    Clean,
    /// Anything else.
    Unclean,
}

impl PreviousEnd {
    /// The name used in the JSON.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Clean => "clean",
            Self::Unclean => "unclean",
        }
    }
}

/// A partial last line the agent found and left in place when it resumed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovered {
    /// File that ends with the partial line.
    pub file: String,
    /// Byte offset where the partial line starts.
    pub offset: u64,
    /// Its length in bytes.
    pub bytes: u64,
}

/// One decision, every field of the kernel's [`ExecEvent`] in readable form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// `allow`, `deny`, `would-deny` (monitor mode), or `unknown-<code>`.
    pub decision: String,
    /// [`reason::name`], or `unknown-<code>`.
    pub reason: String,
    /// The LSM hook that decided ([`hook::NAMES`]: `bprm_check_security` for an exec,
    /// `mmap_file` for a mapping...), or `unknown-<code>`.
    pub hook: String,
    /// Path as passed to execve (truncated by the kernel to 119 bytes; bytes that are not
    /// UTF-8 are replaced by U+FFFD).
    pub path: String,
    /// SHA-256 of the file, hex (zeros when the kernel had no digest).
    pub sha256: String,
    /// Name of the grant that matched, when the policy gave it one.
    pub grant: Option<String>,
    /// Path of the governed scope, when the agent knows it.
    pub scope: Option<String>,
    /// cgroup id of the governed scope.
    pub scope_id: u64,
    /// cgroup id the task ran in (the scope or a descendant).
    pub cgroup_id: u64,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Boot of the decision: exec ids are unique only within one boot.
    pub boot_id: String,
    /// Per-boot id of this exec.
    pub exec_id: u64,
    /// Exec id of the image that started this one (0: unknown).
    pub parent_exec_id: u64,
    /// CLOCK_BOOTTIME of the decision, in nanoseconds.
    pub boot_ns: u64,
    /// Identity prefix of the authorization the exec ran under, hex (null: none).
    pub auth_id: Option<String>,
    /// Serial of that authorization (0: none).
    pub auth_serial: u64,
    /// What a containment refusal was about: the capability number, the lockdown reason,
    /// the kernel_read_file id, the filesystem magic (0, and absent: nothing).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub detail: u64,
}

// serde's skip_serializing_if takes a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// Labels only the agent knows: the kernel reports ids, the policy names them.
#[derive(Clone, Copy, Debug, Default)]
pub struct DecisionLabels<'a> {
    /// Path of the governed scope (`event.scope_id`).
    pub scope: Option<&'a str>,
    /// Name of the grant that covers `event.digest` in that scope.
    pub grant_name: Option<&'a str>,
}

impl Decision {
    /// Renders a kernel event.
    #[must_use]
    pub fn from_event(event: &ExecEvent, labels: &DecisionLabels<'_>, boot_id: &str) -> Self {
        let auth_id = (event.auth_id != [0; enforcer_common::AUTH_ID_LEN])
            .then(|| hex_string(&event.auth_id));
        Self {
            decision: decision_name(event.decision),
            reason: reason_name(event.reason),
            hook: hook_name(event.hook),
            path: c_string(&event.path),
            sha256: hex_string(&event.digest),
            grant: labels.grant_name.map(str::to_owned),
            scope: labels.scope.map(str::to_owned),
            scope_id: event.scope_id,
            cgroup_id: event.cgroup_id,
            pid: event.pid,
            tgid: event.tgid,
            ppid: event.ppid,
            uid: event.uid,
            gid: event.gid,
            boot_id: boot_id.to_owned(),
            exec_id: event.exec_id,
            parent_exec_id: event.parent_exec_id,
            boot_ns: event.boot_ns,
            auth_id,
            auth_serial: event.auth_serial,
            detail: event.detail,
        }
    }

    /// Whether the kernel refused the exec, or would have in monitor mode.
    #[must_use]
    pub fn is_denial(&self) -> bool {
        self.decision == DENY || self.decision == WOULD_DENY
    }
}

const DENY: &str = "deny";
const WOULD_DENY: &str = "would-deny";

/// Name of a decision code.
#[must_use]
pub fn decision_name(code: u32) -> String {
    match code {
        decision::ALLOW => "allow".to_owned(),
        decision::DENY => DENY.to_owned(),
        decision::WOULD_DENY => WOULD_DENY.to_owned(),
        other => format!("unknown-{other}"),
    }
}

/// Name of a reason code ([`reason::name`]), or `unknown-<code>`.
#[must_use]
pub fn reason_name(code: u32) -> String {
    match reason::name(code) {
        "unknown" => format!("unknown-{code}"),
        name => name.to_owned(),
    }
}

/// Name of the hook that decided ([`hook::NAMES`]), or `unknown-<code>`.
#[must_use]
pub fn hook_name(code: u32) -> String {
    usize::try_from(code)
        .ok()
        .and_then(|i| hook::NAMES.get(i))
        .map_or_else(|| format!("unknown-{code}"), |name| (*name).to_owned())
}

/// Lowercase hex of `bytes`. `hex::encode` builds its `String` a `char` at a time, which
/// made it a visible share of the audit writer's time.
fn hex_string(bytes: &[u8]) -> String {
    let mut out = vec![0; 2 * bytes.len()];
    hex::encode_to_slice(bytes, &mut out).expect("the output is twice the input");
    String::from_utf8(out).expect("hex is ASCII")
}

/// The bytes before the first NUL.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The `scope` of the decisions of the agent's startup self-test, which runs in a
/// throwaway cgroup of its own that no policy names.
pub const SELF_TEST_SCOPE: &str = "(startup self-test)";

/// A change in what is authorized, as the agent applied it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationChange {
    /// `in-force` (found in force when the agent started), `accepted`, `withdrawn`
    /// (revoked, expired or removed), `killed` (on_revoke), `break-glass` (a scope in
    /// monitor mode until `not_after`), `operator-mode` (the scopes the operator's
    /// configuration holds in monitor mode, all of them, whatever their bundles say).
    pub change: String,
    /// Artifact kind: `bundle`, `revocation`, `break-glass`; `unsigned-policy` (a local
    /// policy file, development only: its id is the SHA-256 of the file); `configuration`
    /// (for `operator-mode`).
    pub artifact: String,
    /// Full artifact identity (SHA3-512 of the payload), hex; decisions cite its prefix.
    pub id: String,
    pub issuer: String,
    /// Bundle id and serial, for bundles.
    pub bundle_id: Option<String>,
    pub serial: Option<u64>,
    pub scopes: Vec<String>,
    /// RFC 3339; when the authorization ends by itself.
    pub not_after: Option<String>,
    /// For `killed`: the processes killed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<u32>,
    /// Free text: why (the revocation's reason, the break-glass reason).
    pub detail: Option<String>,
    /// CLOCK_BOOTTIME, in nanoseconds, right after the kernel's maps switched to this
    /// change, in the boot of the last `start` record. Decisions reach the log through
    /// the ring buffer, so one made just before the switch can be written after this
    /// record: replay orders them by this time. Absent in logs of older agents: there the
    /// record's place in the log is its time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_ns: Option<u64>,
}

/// Decisions the kernel could not deliver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// How many decisions were lost since the previous gap record.
    pub lost: u64,
}

/// A commitment to the chain up to here: the record's `prev` is the head it commits to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Why it was written.
    pub trigger: Trigger,
    /// Set on the last record of a file: the file the chain continues in.
    pub next_file: Option<String>,
    /// Key id of the host key that signed (null: the agent had no host key).
    pub key_id: Option<String>,
    /// Format 2: the C2SP signed checkpoint note (origin, tree size, root) over the
    /// records before this one, signed by the host key. Its size is this record's `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Ed25519 signature, base64; see [`super::chain::sign_checkpoint`] for what it
    /// covers. Absent when unsigned, and always the last field before `hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// Why a checkpoint was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// The agent (re)started: commits to what it found.
    Start,
    /// So many records since the last checkpoint.
    Records,
    /// So much time since the last checkpoint.
    Interval,
    /// The file is full; the chain continues in `next_file`.
    Rotate,
    /// The agent stopped cleanly: nothing follows until the next start.
    Shutdown,
    /// Someone asked for one.
    Requested,
}

impl Trigger {
    /// The name used in the JSON.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Records => "records",
            Self::Interval => "interval",
            Self::Rotate => "rotate",
            Self::Shutdown => "shutdown",
            Self::Requested => "requested",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_codes_keep_their_value() {
        assert_eq!(decision_name(decision::WOULD_DENY), "would-deny");
        assert_eq!(decision_name(9), "unknown-9");
        assert_eq!(reason_name(reason::EXPIRED), "expired");
        assert_eq!(reason_name(77), "unknown-77");
        assert_eq!(hook_name(hook::BPRM_CHECK_SECURITY), "bprm_check_security");
        assert_eq!(hook_name(u32::MAX), format!("unknown-{}", u32::MAX));
    }

    #[test]
    fn names_match_the_json() {
        for trigger in [
            Trigger::Start,
            Trigger::Records,
            Trigger::Interval,
            Trigger::Rotate,
            Trigger::Shutdown,
            Trigger::Requested,
        ] {
            assert_eq!(serde_json::to_value(trigger).expect("json"), trigger.name());
        }
        for end in [PreviousEnd::None, PreviousEnd::Clean, PreviousEnd::Unclean] {
            assert_eq!(serde_json::to_value(end).expect("json"), end.name());
        }
    }

    #[test]
    fn hex_is_spelled_as_hex_encode_spells_it() {
        for bytes in [&[][..], &[0x00, 0x0f, 0xa0, 0xff], &[0xab; 32]] {
            assert_eq!(hex_string(bytes), hex::encode(bytes));
        }
    }

    #[test]
    fn paths_stop_at_nul_and_survive_invalid_utf8() {
        assert_eq!(c_string(b"/bin/sh\0garbage"), "/bin/sh");
        assert_eq!(c_string(b"/x\xff"), "/x\u{fffd}");
        assert_eq!(c_string(b"no-nul"), "no-nul");
    }
}
