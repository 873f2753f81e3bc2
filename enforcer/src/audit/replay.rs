//! Deciding recorded execs again: `enforcer audit replay` (what would change under other
//! authorizations, and whether the log agrees with itself), and what
//! `enforcer bundle create --from-audit` learns from the decisions of a scope.
//!
//! The log holds what the content rule needs: each decision's digest, scope and time, and
//! every change of authorization, whose bundles are kept under `artifacts/`. Replay walks
//! the log once, oldest first, keeping the authorizations in force as the agent recorded
//! them (a start clears them: the agent then records what it finds in force), and decides
//! each recorded exec and executable mapping again with [`enforcer_common::decide`], the
//! function the kernel uses.
//!
//! Only content decisions are decided again ([`decide::redecidable`]: granted, not
//! granted, expired). Every other reason depends on kernel state the log does not hold
//! (the file's filesystem and links, its writers, the task's cgroup) or is a containment
//! refusal that no authorization changes; those decisions are kept as recorded, and the
//! report counts them by reason. `docs/audit.md` lists the remaining differences between
//! replay and the kernel.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use enforcer_common::{GrantEntry, ScopePolicy, decide, decision, mode, reason};
use serde::Serialize;

use super::AuditError;
use super::artifacts::Archive;
use super::query;
use super::record::{
    AuthorizationChange, Body, Decision, Record, SELF_TEST_SCOPE, decision_name, reason_name,
};
use crate::authz;
use crate::authz::artifact::{ArtifactError, ArtifactId, ArtifactKind, Bundle, Envelope, Mode};
use crate::authz::verify::read_artifact;
use crate::host::digest::FileDigest;

/// Why a replay could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("candidate {}: {source}", .path.display())]
    Candidate {
        path: PathBuf,
        // Boxed: an artifact error is large, and every replay result would carry its size.
        #[source]
        source: Box<ArtifactError>,
    },
    #[error(
        "candidate {} is a {kind}, not a bundle: only bundles grant, so only bundles can be \
         candidates (revocations are replayed with --without ARTIFACT-ID)",
        .path.display()
    )]
    NotABundle { path: PathBuf, kind: ArtifactKind },
    #[error(
        "--without {prefix:?}: expected an artifact id (hex, or a prefix of it) as \
         `audit show --all` or `enforcer list` print it"
    )]
    Without { prefix: String },
}

/// A bundle to replay with, as if it had been accepted before the first record: its
/// `not_before` is not applied (a bundle made today would otherwise cover nothing in the
/// past); its deadlines are.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub id: ArtifactId,
    pub bundle: Bundle,
}

impl Candidate {
    /// Reads a bundle envelope, signed or not: replay asks what a bundle would change,
    /// before anyone signs it.
    pub fn load(path: &Path) -> Result<Self, ReplayError> {
        let candidate = |source| ReplayError::Candidate {
            path: path.to_owned(),
            source: Box::new(source),
        };
        let bytes = read_artifact(path).map_err(candidate)?;
        let envelope = Envelope::parse(&bytes).map_err(candidate)?;
        let kind = envelope.kind().map_err(candidate)?;
        if kind != ArtifactKind::Bundle {
            return Err(ReplayError::NotABundle {
                path: path.to_owned(),
                kind,
            });
        }
        let bundle = Bundle::from_payload(&envelope.payload).map_err(candidate)?;
        Ok(Self {
            id: envelope.id(),
            bundle,
        })
    }
}

/// Which authorizations to decide under.
#[derive(Clone, Debug, Default)]
pub struct WhatIf {
    /// Bundles in force throughout. Each replaces the recorded bundles of its issuer and
    /// bundle id, as its higher serial would in the agent.
    pub with: Vec<Candidate>,
    /// Recorded authorizations to leave out: artifact ids or prefixes of them (hex).
    pub without: Vec<String>,
}

impl WhatIf {
    /// Checks the `without` prefixes: hex, so that a typo is not silently a no-op.
    pub fn check(&self) -> Result<(), ReplayError> {
        for prefix in &self.without {
            let hex = prefix.strip_prefix("sha3-512:").unwrap_or(prefix);
            if hex.is_empty() || hex.len() > 128 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ReplayError::Without {
                    prefix: prefix.clone(),
                });
            }
        }
        Ok(())
    }

    fn removes(&self, id: &str) -> bool {
        self.without.iter().any(|p| {
            let hex = p.strip_prefix("sha3-512:").unwrap_or(p);
            id.starts_with(&hex.to_ascii_lowercase())
        })
    }

    fn replaces(&self, issuer: &str, bundle_id: &str) -> bool {
        self.with
            .iter()
            .any(|c| c.bundle.issuer == issuer && c.bundle.bundle_id == bundle_id)
    }
}

/// Which recorded decisions a replay reports on (the authorizations are always followed
/// from the start of the log).
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Only decisions in this scope: its path or its cgroup id.
    pub scope: Option<String>,
    /// Only decisions written at or after this time.
    pub since: Option<SystemTime>,
}

impl Selection {
    fn filter(&self) -> query::Filter {
        query::Filter {
            scope: self.scope.clone(),
            since: self.since,
            ..query::Filter::default()
        }
    }
}

/// A decision and its reason, by name as the log has them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Verdict {
    pub decision: String,
    pub reason: String,
}

/// Decisions about one program that a replay decides otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProgramChange {
    /// The path the kernel reported.
    pub program: String,
    /// Its contents' digests (hex) among these decisions.
    pub sha256: BTreeSet<String>,
    /// What the log recorded.
    pub recorded: String,
    /// What replay decides, and why.
    pub replayed: Verdict,
    pub count: u64,
    /// A few of the decisions: `BOOT_ID:EXEC_ID` for execs, `seq N` for mappings (which
    /// have no exec id of their own).
    pub examples: Vec<String>,
}

/// A recorded decision that replay, under what was in force then, decides otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub seq: u64,
    pub time: String,
    pub program: String,
    pub sha256: String,
    pub hook: String,
    /// `BOOT_ID:EXEC_ID`, or `seq N` for a mapping.
    pub decision_ref: String,
    pub recorded: Verdict,
    pub replayed: Verdict,
}

/// What a replay found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Decisions the selection chose.
    pub decisions: u64,
    /// Of those, decided again from the log.
    pub redecided: u64,
    /// The others, kept as recorded, counted by why: the reason (not a content decision),
    /// `scope-unknown` (the record names no scope path), or `authorization-not-archived`
    /// (an authorization of the scope is not under `artifacts/`).
    pub as_recorded: BTreeMap<String, u64>,
    /// Decided more strictly than recorded (allow, then would-deny, then deny), by
    /// program and change.
    pub newly_denied: Vec<ProgramChange>,
    /// Decided less strictly than recorded, by program and change.
    pub newly_allowed: Vec<ProgramChange>,
    /// Replays as recorded only: decisions that differ from the log's.
    pub mismatches: Vec<Mismatch>,
    /// Lines of the log that were not records.
    pub skipped_lines: u64,
}

/// At most this many example decisions per program.
const EXAMPLES: usize = 3;

/// Why a decision is kept as recorded when its scope is not known by path.
const SCOPE_UNKNOWN: &str = "scope-unknown";
/// ... or when an authorization in force in its scope was not archived.
const NOT_ARCHIVED: &str = "authorization-not-archived";
/// ... or when its scope was governed by an unsigned local policy file, which the log
/// does not hold (development only).
const UNSIGNED: &str = "unsigned-policy";
/// ... or when it is the agent's startup self-test, in a throwaway scope of its own.
const SELF_TEST: &str = "self-test";
/// ... or when the kernel made it before the agent that logged it started, under what an
/// agent that logged elsewhere had loaded.
const BEFORE_START: &str = "before-the-agent-started";
/// How many authorization states replay keeps to place late decisions: a decision is
/// drained from the ring buffer within seconds, and states change far less often.
const HISTORY: usize = 64;

/// The authorizations in force at one point of the log.
#[derive(Clone, Default)]
struct InForce {
    /// Bundles by artifact id (hex).
    bundles: BTreeMap<String, Arc<(ArtifactId, Bundle)>>,
    /// Break-glass windows by artifact id: their scopes and deadline (ns since the epoch).
    glass: BTreeMap<String, (Vec<String>, u64)>,
    /// Authorizations whose bundle is not archived, by id: as the record names them.
    unknown: BTreeMap<String, AuthorizationChange>,
    /// Scopes the operator's configuration holds in monitor mode.
    forced_monitor: BTreeSet<String>,
    /// Scopes of an unsigned local policy file.
    unsigned: BTreeSet<String>,
}

impl InForce {
    /// Follows one authorization record.
    fn apply(
        &mut self,
        change: &AuthorizationChange,
        loaded: &mut HashMap<String, Option<Arc<(ArtifactId, Bundle)>>>,
        archive: &Archive,
    ) {
        match (change.change.as_str(), change.artifact.as_str()) {
            ("in-force" | "accepted", "bundle") => {
                let bundle = loaded
                    .entry(change.id.clone())
                    .or_insert_with(|| archived_bundle(archive, &change.id))
                    .clone();
                match bundle {
                    Some(b) => {
                        self.bundles.insert(change.id.clone(), b);
                    }
                    None => {
                        self.unknown.insert(change.id.clone(), change.clone());
                    }
                }
            }
            ("in-force" | "accepted", "unsigned-policy") => {
                self.unsigned = change.scopes.iter().cloned().collect();
            }
            ("operator-mode", _) => {
                self.forced_monitor = change.scopes.iter().cloned().collect();
            }
            ("withdrawn", _) => {
                self.bundles.remove(&change.id);
                self.unknown.remove(&change.id);
                self.glass.remove(&change.id);
            }
            ("break-glass", _) => {
                let until = change
                    .not_after
                    .as_deref()
                    .and_then(|t| humantime::parse_rfc3339(t).ok())
                    .map_or(0, epoch_ns);
                self.glass
                    .insert(change.id.clone(), (change.scopes.clone(), until));
            }
            // `killed` changes nothing the kernel decides on.
            _ => {}
        }
    }

    /// What the kernel's maps would hold under these authorizations changed by
    /// `what_if`: each scope's mode and grants, by the agent's rules
    /// ([`authz::policy_of_bundles`], then the longest-lived grant per digest as
    /// `kernel::resolve` keeps it). Every grant is kept whatever its deadline, which
    /// [`decide::content`] compares at each decision.
    fn resolve(&self, what_if: &WhatIf) -> Resolved {
        let recorded = self
            .bundles
            .iter()
            .filter(|(id, b)| {
                !what_if.removes(id) && !what_if.replaces(&b.1.issuer, &b.1.bundle_id)
            })
            .map(|(_, b)| (&b.0, &b.1));
        let candidates = what_if.with.iter().map(|c| (&c.id, &c.bundle));
        // At the epoch every grant is live: none is dropped before its deadline is compared.
        let policy = authz::policy_of_bundles(recorded.chain(candidates), &[], UNIX_EPOCH);
        let mut scopes = HashMap::new();
        for (scope, spec) in policy.scopes {
            let mut grants: HashMap<FileDigest, GrantEntry> = HashMap::new();
            // The agent never loads a grant of empty content (`kernel::resolve` says why).
            for g in spec
                .grants
                .iter()
                .filter(|g| g.digest.0 != crate::kernel::EMPTY_CONTENT)
            {
                let entry = GrantEntry {
                    not_after_boot_ns: g.not_after.map_or(u64::MAX, epoch_ns),
                    auth_serial: g.auth_serial,
                    auth_id: g.auth_id,
                };
                // Two authorizations may grant one digest: the agent keeps the longest.
                grants
                    .entry(g.digest)
                    .and_modify(|best| {
                        if entry.not_after_boot_ns > best.not_after_boot_ns {
                            *best = entry;
                        }
                    })
                    .or_insert(entry);
            }
            let mode = match spec.mode {
                Mode::Enforce => mode::ENFORCE,
                Mode::Monitor => mode::MONITOR,
            };
            scopes.insert(scope.as_str().to_owned(), (mode, grants));
        }
        // The operator's monitor mode wins over the bundles', as in the agent.
        for scope in &self.forced_monitor {
            scopes.entry(scope.clone()).or_default().0 = mode::MONITOR;
        }
        Resolved { scopes }
    }

    /// Decides a recorded content decision again, with the kernel's function; or why it
    /// cannot (an authorization of the scope that the log does not hold).
    fn decide(
        &self,
        resolved: &Resolved,
        what_if: &WhatIf,
        scope: &str,
        digest: &FileDigest,
        now_ns: u64,
    ) -> Result<(u32, u32), &'static str> {
        if self.unsigned.contains(scope) {
            return Err(UNSIGNED);
        }
        // An authorization replay cannot read decides nothing here, unless it is left out
        // or replaced by a candidate of its line.
        if self.unknown.iter().any(|(id, change)| {
            !what_if.removes(id)
                && !what_if.replaces(&change.issuer, change.bundle_id.as_deref().unwrap_or(""))
                && change.scopes.iter().any(|s| s == scope)
        }) {
            return Err(NOT_ARCHIVED);
        }
        // A scope no bundle names is governed by the operator's declaration alone: it
        // enforces, and grants nothing.
        let (mode, grant) = resolved
            .scopes
            .get(scope)
            .map_or((mode::ENFORCE, None), |(mode, grants)| {
                (*mode, grants.get(digest).copied())
            });
        let policy = ScopePolicy {
            mode,
            flags: 0,
            monitor_until_boot_ns: self
                .glass
                .iter()
                .filter(|(id, (scopes, _))| {
                    !what_if.removes(id) && scopes.iter().any(|s| s == scope)
                })
                .map(|(_, (_, until))| *until)
                .max()
                .unwrap_or(0),
        };
        let content = decide::content(grant, || now_ns);
        let outcome = decide::outcome(content.allowed, content.reason, &policy, || now_ns);
        Ok((outcome, content.reason))
    }
}

/// Each scope's mode and grants, as [`InForce::resolve`] makes them.
struct Resolved {
    scopes: HashMap<String, (u32, HashMap<FileDigest, GrantEntry>)>,
}

/// The authorizations as they changed since the last start, newest last, each with the
/// boot time the kernel switched to it (when the record says).
///
/// The first state is what the kernel enforced when the agent started: what the previous
/// agent of this log and boot left loaded, if that agent recorded what it loaded, and
/// unknown otherwise. Every agent writes its `operator-mode` record after what it finds
/// in force at start, so that record says its startup records are complete.
struct History {
    states: Vec<State>,
    /// The boot of the last start.
    boot_id: Option<String>,
    /// No authorization record since the last start: the next one starts from nothing.
    fresh: bool,
    /// The agent since the last start recorded what it found in force.
    complete: bool,
}

struct State {
    /// CLOCK_BOOTTIME of the switch; `None`: in force from its place in the log.
    switched: Option<u64>,
    /// `None`: not known from this log.
    in_force: Option<InForce>,
    /// What the maps held, resolved on first use.
    resolved: Option<Resolved>,
}

impl State {
    fn new(switched: Option<u64>, in_force: Option<InForce>) -> Self {
        Self {
            switched,
            in_force,
            resolved: None,
        }
    }
}

impl History {
    fn new() -> Self {
        Self {
            // Before any start record: a log cut at its head, as an empty policy.
            states: vec![State::new(None, Some(InForce::default()))],
            boot_id: None,
            fresh: true,
            complete: false,
        }
    }

    /// A start: the agent records again what it finds in force.
    fn start(&mut self, start: &super::record::Start) {
        let before = (self.complete && self.boot_id.as_deref() == Some(start.boot_id.as_str()))
            .then(|| self.current());
        *self = Self {
            states: vec![State::new(None, before)],
            boot_id: Some(start.boot_id.clone()),
            ..Self::new()
        };
    }

    /// Follows one authorization record.
    fn apply(
        &mut self,
        change: &AuthorizationChange,
        loaded: &mut HashMap<String, Option<Arc<(ArtifactId, Bundle)>>>,
        archive: &Archive,
    ) {
        let mut in_force = if std::mem::take(&mut self.fresh) {
            InForce::default()
        } else {
            self.current().clone()
        };
        in_force.apply(change, loaded, archive);
        self.complete |= change.change == "operator-mode";
        if self.states.len() == HISTORY {
            self.states.remove(0);
        }
        self.states.push(State::new(change.boot_ns, Some(in_force)));
    }

    /// The newest state (an unknown one counts as nothing in force).
    fn current(&self) -> InForce {
        self.states
            .last()
            .and_then(|s| s.in_force.clone())
            .unwrap_or_default()
    }

    /// The state a decision made at `boot_ns` was decided under: the newest one the kernel
    /// had switched to by then. A decision drained from the ring buffer after a switch,
    /// but made before it, is decided under what it was made under. `None` when that is
    /// not known from this log (made before the agent that logged it started).
    fn at(&mut self, boot_ns: u64, view: &WhatIf) -> Option<(&InForce, &Resolved)> {
        let index = self
            .states
            .iter()
            .rposition(|s| s.switched.is_none_or(|at| at <= boot_ns))
            .unwrap_or(0);
        let state = &mut self.states[index];
        let in_force = state.in_force.as_ref()?;
        let resolved = state.resolved.get_or_insert_with(|| in_force.resolve(view));
        Some((in_force, resolved))
    }
}

fn archived_bundle(archive: &Archive, id: &str) -> Option<Arc<(ArtifactId, Bundle)>> {
    let (id, bytes) = archive.find(id).ok()?;
    let envelope = Envelope::parse(&bytes).ok()?;
    let bundle = Bundle::from_payload(&envelope.payload).ok()?;
    Some(Arc::new((id, bundle)))
}

fn epoch_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The decision's reason code, from its name in the log.
fn reason_code(name: &str) -> Option<u32> {
    (0..64).find(|&code| reason_name(code) == name)
}

/// The wall-clock time of each boot's CLOCK_BOOTTIME zero, as closely as the log tells:
/// a record is written a little after its decision, so the smallest difference between
/// a record's time and its decision's boot time is the best estimate.
fn boot_offsets(dir: &Path) -> Result<HashMap<String, i128>, AuditError> {
    let mut offsets: HashMap<String, i128> = HashMap::new();
    query::read_dir(dir, |e| {
        if let Body::Decision(d) = &e.record.body
            && let Ok(time) = humantime::parse_rfc3339(&e.record.time)
        {
            let offset = i128::from(epoch_ns(time)) - i128::from(d.boot_ns);
            offsets
                .entry(d.boot_id.clone())
                .and_modify(|o| *o = (*o).min(offset))
                .or_insert(offset);
        }
    })?;
    Ok(offsets)
}

/// How a decision is named in reports.
fn decision_ref(record: &Record, d: &Decision) -> String {
    if d.exec_id == 0 {
        format!("seq {}", record.seq)
    } else {
        format!("{}:{}", d.boot_id, d.exec_id)
    }
}

/// How strict a recorded decision is: allowed, allowed but reported (monitor mode), denied.
fn strictness(name: &str) -> Option<u8> {
    [decision::ALLOW, decision::WOULD_DENY, decision::DENY]
        .iter()
        .position(|&code| decision_name(code) == name)
        .and_then(|rank| u8::try_from(rank).ok())
}

/// Replays the decisions `selection` picks in the log in `dir`. With `as_recorded`, under
/// what was in force at each moment, reporting every disagreement with the log;
/// otherwise under that changed by `what_if`, reporting what would change.
pub fn replay(
    dir: &Path,
    what_if: &WhatIf,
    as_recorded: bool,
    selection: &Selection,
) -> Result<Report, ReplayError> {
    what_if.check()?;
    let offsets = boot_offsets(dir)?;
    let archive = Archive::new(dir);
    let filter = selection.filter();
    let mut loaded = HashMap::new();
    let mut history = History::new();
    let mut report = Report::default();
    let mut denied: BTreeMap<(String, String, Verdict), ProgramChange> = BTreeMap::new();
    let mut allowed: BTreeMap<(String, String, Verdict), ProgramChange> = BTreeMap::new();
    let nothing = WhatIf::default();
    let view = if as_recorded { &nothing } else { what_if };
    report.skipped_lines = query::read_dir(dir, |e| {
        let record = &e.record;
        let d = match &record.body {
            Body::Start(start) => {
                history.start(start);
                return;
            }
            Body::Authorization(change) => {
                history.apply(change, &mut loaded, &archive);
                return;
            }
            Body::Decision(d) if filter.matches(record) => d,
            _ => return,
        };
        report.decisions += 1;
        let mut keep = |why: &str| {
            *report.as_recorded.entry(why.to_owned()).or_default() += 1;
        };
        let Some(why) = reason_code(&d.reason).filter(|&r| decide::redecidable(r)) else {
            keep(&d.reason);
            return;
        };
        let Some(scope) = d.scope.as_deref().filter(|s| s.starts_with('/')) else {
            keep(if d.scope.as_deref() == Some(SELF_TEST_SCOPE) {
                SELF_TEST
            } else {
                SCOPE_UNKNOWN
            });
            return;
        };
        let (Ok(digest), Some(offset)) = (d.sha256.parse::<FileDigest>(), offsets.get(&d.boot_id))
        else {
            keep(&d.reason);
            return;
        };
        let now_ns = u64::try_from((i128::from(d.boot_ns) + offset).max(0)).unwrap_or(u64::MAX);
        let Some((in_force, resolved)) = history.at(d.boot_ns, view) else {
            keep(BEFORE_START);
            return;
        };
        let (outcome, new_why) = match in_force.decide(resolved, view, scope, &digest, now_ns) {
            Ok(decided) => decided,
            Err(why) => {
                keep(why);
                return;
            }
        };
        report.redecided += 1;
        let replayed = Verdict {
            decision: decision_name(outcome),
            reason: reason_name(new_why),
        };
        let reference = decision_ref(record, d);
        if as_recorded {
            // Past a grant's own deadline the kernel says `expired` until the agent
            // resolves again, `not-granted` after; the log does not say when that was, so
            // the two are the same refusal here.
            let lapsed = |a: u32| a == reason::EXPIRED || a == reason::NOT_GRANTED;
            let same = replayed.decision == d.decision
                && (new_why == why || (lapsed(new_why) && lapsed(why)));
            if !same {
                report.mismatches.push(Mismatch {
                    seq: record.seq,
                    time: record.time.clone(),
                    program: d.path.clone(),
                    sha256: d.sha256.clone(),
                    hook: d.hook.clone(),
                    decision_ref: reference,
                    recorded: Verdict {
                        decision: d.decision.clone(),
                        reason: d.reason.clone(),
                    },
                    replayed,
                });
            }
            return;
        }
        // `would-deny` sits between the two: leaving monitor mode newly denies what it
        // reported, and a grant newly allows it.
        let changes = match (strictness(&d.decision), strictness(&replayed.decision)) {
            (Some(before), Some(after)) if after > before => &mut denied,
            (Some(before), Some(after)) if after < before => &mut allowed,
            _ => return,
        };
        let change = changes
            .entry((d.path.clone(), d.decision.clone(), replayed.clone()))
            .or_insert_with(|| ProgramChange {
                program: d.path.clone(),
                sha256: BTreeSet::new(),
                recorded: d.decision.clone(),
                replayed,
                count: 0,
                examples: Vec::new(),
            });
        change.count += 1;
        change.sha256.insert(d.sha256.clone());
        if change.examples.len() < EXAMPLES {
            change.examples.push(reference);
        }
    })?;
    report.newly_denied = denied.into_values().collect();
    report.newly_allowed = allowed.into_values().collect();
    Ok(report)
}

/// One program as the decisions of a scope show it, for `bundle create --from-audit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The path the kernel reported.
    pub path: String,
    pub digest: FileDigest,
    pub allowed: u64,
    pub would_deny: u64,
    pub denied: u64,
    /// Record times of the first and last decision.
    pub first: String,
    pub last: String,
}

/// What is at a [`Seen`] program's path now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnDisk {
    /// The content the log recorded, at this path: the recorded one, or for a record that
    /// names only a file name (mappings do), the file of that name in the loader's
    /// directories that has this content.
    Same(String),
    /// Other content.
    Changed(FileDigest),
    /// Nothing readable, or no file of a bare name with this content.
    Missing(String),
}

impl Seen {
    /// Hashes the file at the recorded path now. A bare file name is looked up in the
    /// directories the dynamic loader searches; only a file with the recorded content
    /// counts, so a look-up by name can never grant other bytes. `loader` does the
    /// look-up; one serves every file of a run (making one reads ld.so.conf).
    #[must_use]
    pub fn on_disk(&self, loader: &crate::host::elf::Resolver) -> OnDisk {
        if !self.path.contains('/') {
            let candidates = loader.by_name(&self.path);
            return candidates
                .iter()
                .find(|p| FileDigest::of_file(p).is_ok_and(|d| d == self.digest))
                .map_or_else(
                    || {
                        OnDisk::Missing(format!(
                            "a bare file name; none of the {} file(s) of that name in the \
                             loader's directories has this content",
                            candidates.len()
                        ))
                    },
                    |p| OnDisk::Same(p.display().to_string()),
                );
        }
        match FileDigest::of_file(Path::new(&self.path)) {
            Ok(d) if d == self.digest => OnDisk::Same(self.path.clone()),
            Ok(d) => OnDisk::Changed(d),
            Err(e) => OnDisk::Missing(e.to_string()),
        }
    }
}

/// The programs the content decisions in `scope` (its path) name, since `since`, by path
/// and digest: what ran, was denied, or would have been in monitor mode.
pub fn learn(
    dir: &Path,
    scope: &str,
    since: Option<SystemTime>,
) -> Result<(Vec<Seen>, u64), AuditError> {
    let filter = query::Filter {
        scope: Some(scope.to_owned()),
        since,
        ..query::Filter::default()
    };
    let mut seen: BTreeMap<(String, FileDigest), Seen> = BTreeMap::new();
    let skipped = query::read_dir(dir, |e| {
        let Body::Decision(d) = &e.record.body else {
            return;
        };
        // Only decisions a grant can change teach anything: a grant does not make a
        // fileless exec or a containment refusal pass.
        let content = reason_code(&d.reason).is_some_and(decide::redecidable);
        let Ok(digest) = d.sha256.parse::<FileDigest>() else {
            return;
        };
        if !content
            || !filter.matches(&e.record)
            || digest.0 == [0; 32]
            || digest.0 == crate::kernel::EMPTY_CONTENT
        {
            return;
        }
        let entry = seen
            .entry((d.path.clone(), digest))
            .or_insert_with(|| Seen {
                path: d.path.clone(),
                digest,
                allowed: 0,
                would_deny: 0,
                denied: 0,
                first: e.record.time.clone(),
                last: String::new(),
            });
        entry.last.clone_from(&e.record.time);
        match d.decision.as_str() {
            "allow" => entry.allowed += 1,
            "would-deny" => entry.would_deny += 1,
            _ => entry.denied += 1,
        }
    })?;
    Ok((seen.into_values().collect(), skipped))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// What replay shares with the kernel is the decision; what it cannot share is the
    /// clock. The agent converts a grant's wall-clock deadline to CLOCK_BOOTTIME, rounded
    /// down to a whole second, and the kernel compares boot time; replay compares wall
    /// time with the signed deadline. The two decide alike except in the second before a
    /// deadline, where the kernel may already refuse (never the other way), as
    /// docs/audit.md says.
    #[test]
    fn kernel_and_replay_clocks_agree_except_in_the_last_second_before_a_deadline() {
        const SECOND: u64 = 1_000_000_000;
        let now_real = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for now_boot in [0, 7, 999_999_999, 1_234_567_891] {
            let deadline = now_real + Duration::from_secs(10);
            let kernel = GrantEntry {
                not_after_boot_ns: crate::kernel::whole_second_deadline(
                    deadline, now_real, now_boot,
                ),
                ..GrantEntry::ZERO
            };
            let replayed = GrantEntry {
                not_after_boot_ns: epoch_ns(deadline),
                ..GrantEntry::ZERO
            };
            let mut early = 0;
            for offset_ms in (0..12_000).step_by(50) {
                let boot = now_boot + offset_ms * 1_000_000;
                let wall = epoch_ns(now_real) + offset_ms * 1_000_000;
                let k = decide::content(Some(kernel), || boot);
                let r = decide::content(Some(replayed), || wall);
                if k.reason != r.reason {
                    assert!(
                        !k.allowed && r.allowed,
                        "the kernel allows after replay refuses at {offset_ms} ms (boot {now_boot})"
                    );
                    assert!(
                        wall + SECOND > replayed.not_after_boot_ns,
                        "differ {} ms before the deadline",
                        (replayed.not_after_boot_ns - wall) / 1_000_000
                    );
                    early += 1;
                }
            }
            assert!(
                early <= 20,
                "{early} samples of 50 ms differ (boot {now_boot})"
            );
        }
    }
}
