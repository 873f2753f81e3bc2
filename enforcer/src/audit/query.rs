//! Reading the log for people: filters for `audit show`, following for `audit tail -f`,
//! and the ancestry of an exec for `audit lineage`.
//!
//! Nothing here checks the chain (that is `audit verify`): these read what is there,
//! skipping lines that are not records.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::AuditError;
use super::chain::Unsealed;
use super::files::{self, LogFile};
use super::record::{Body, Decision, Record};
use super::verify::for_each_line;

/// Why a query could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(
        "invalid time {input:?}: expected RFC 3339 (2025-01-31T12:00:00Z) or an age (10m, 2h, 3days)"
    )]
    Time { input: String },
    #[error("exec {exec_id} is not in the audit log{}", boot.as_ref().map(|b| format!(" for boot {b}")).unwrap_or_default())]
    ExecNotFound { exec_id: u64, boot: Option<String> },
}

/// One record as read, with where it is.
#[derive(Clone, Debug)]
pub struct Entry {
    pub file: PathBuf,
    pub line: usize,
    pub record: Record,
    /// The line exactly as stored, for `--json`.
    pub raw: String,
}

fn entry(file: &Path, line: usize, bytes: &[u8]) -> Option<Entry> {
    let record = Unsealed::new(bytes).ok()?.record().ok()?;
    let raw = String::from_utf8_lossy(bytes).into_owned();
    Some(Entry {
        file: file.to_owned(),
        line,
        record,
        raw,
    })
}

/// Hands every record of one file to `each`; returns how many lines were not records.
pub fn read_file(path: &Path, mut each: impl FnMut(Entry)) -> Result<u64, AuditError> {
    let mut skipped = 0;
    let never: Result<_, (usize, std::convert::Infallible)> = for_each_line(path, |n, line| {
        match entry(path, n, line) {
            Some(e) => each(e),
            None => skipped += 1,
        }
        Ok(())
    })?;
    if never.is_ok_and(|end| end.partial.is_some()) {
        skipped += 1;
    }
    Ok(skipped)
}

/// Hands every record of the log in `dir`, oldest first, to `each`; returns how many lines
/// were not records.
pub fn read_dir(dir: &Path, mut each: impl FnMut(Entry)) -> Result<u64, AuditError> {
    let mut skipped = 0;
    for file in files::list(dir)? {
        skipped += read_file(&file.path, &mut each)?;
    }
    Ok(skipped)
}

/// The last `count` records of the log, reading only as many files (newest first) as
/// needed.
pub fn last_records(dir: &Path, count: usize) -> Result<Vec<Entry>, AuditError> {
    let mut found: VecDeque<Entry> = VecDeque::new();
    for file in files::list(dir)?.iter().rev() {
        if found.len() >= count {
            break;
        }
        let mut this: VecDeque<Entry> = VecDeque::new();
        read_file(&file.path, |e| {
            this.push_back(e);
            if this.len() > count {
                this.pop_front();
            }
        })?;
        while let Some(e) = this.pop_back() {
            if found.len() >= count {
                break;
            }
            found.push_front(e);
        }
    }
    Ok(found.into())
}

/// A page of the log, newest first: up to `limit` records older than `before` (a
/// sequence number; `None`: from the end) that `keep` selects, and whether older ones
/// remain. Reads files newest first and stops once the page is full, holding at most
/// `limit + 1` records.
pub fn newest_matching(
    dir: &Path,
    before: Option<u64>,
    limit: usize,
    keep: impl Fn(&Record) -> bool,
) -> Result<(Vec<Entry>, bool), AuditError> {
    // One more than asked tells whether another page exists.
    let want = limit.saturating_add(1);
    let mut found: Vec<Entry> = Vec::new();
    for file in files::list(dir)?.iter().rev() {
        if found.len() >= want {
            break;
        }
        let room = want - found.len();
        let mut this: VecDeque<Entry> = VecDeque::new();
        read_file(&file.path, |e| {
            if before.is_none_or(|b| e.record.seq < b) && keep(&e.record) {
                this.push_back(e);
                if this.len() > room {
                    this.pop_front();
                }
            }
        })?;
        found.extend(this.into_iter().rev());
    }
    let more = found.len() > limit;
    found.truncate(limit);
    Ok((found, more))
}

/// What `audit show` selects.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only decisions that denied, or would have in monitor mode.
    pub denied: bool,
    /// Only decisions in this scope (its path, or its cgroup id).
    pub scope: Option<String>,
    /// Only decisions with this outcome (`allow`, `deny`, `would-deny`).
    pub decision: Option<String>,
    /// Only records written at or after this time.
    pub since: Option<SystemTime>,
    /// Also start and checkpoint records (decisions and gaps are always candidates: a gap
    /// may hide any decision, so the filters on decisions do not drop it).
    pub all: bool,
}

impl Filter {
    #[must_use]
    pub fn matches(&self, record: &Record) -> bool {
        if let Some(since) = self.since {
            let Ok(time) = humantime::parse_rfc3339(&record.time) else {
                return false;
            };
            if time < since {
                return false;
            }
        }
        match &record.body {
            Body::Decision(d) => {
                (!self.denied || d.is_denial())
                    && self
                        .decision
                        .as_ref()
                        .is_none_or(|want| d.decision == *want)
                    && self.scope.as_ref().is_none_or(|s| {
                        d.scope.as_deref() == Some(s.as_str()) || d.scope_id.to_string() == *s
                    })
            }
            Body::Gap(_) => true,
            Body::Authorization(a) => {
                !self.denied
                    && self.decision.is_none()
                    && self
                        .scope
                        .as_ref()
                        .is_none_or(|s| a.scopes.iter().any(|x| x == s))
            }
            Body::Start(_) | Body::Checkpoint(_) => self.all,
        }
    }
}

/// Parses `--since`: an RFC 3339 time, or an age counted back from `now` (`10m`).
pub fn parse_since(input: &str, now: SystemTime) -> Result<SystemTime, QueryError> {
    let bad = || QueryError::Time {
        input: input.to_owned(),
    };
    if let Ok(time) = humantime::parse_rfc3339_weak(input) {
        return Ok(time);
    }
    let age: Duration = humantime::parse_duration(input).map_err(|_| bad())?;
    now.checked_sub(age).ok_or_else(bad)
}

/// One line for a person.
#[must_use]
pub fn render(record: &Record) -> String {
    let time = &record.time;
    match &record.body {
        Body::Decision(d) => {
            let scope = d.scope.clone().unwrap_or_else(|| d.scope_id.to_string());
            let short = d.sha256.get(..16).unwrap_or(&d.sha256);
            // Only execs get an exec id; other operations name the exec they happened in.
            let exec = if d.exec_id == 0 {
                format!("in-exec={}", d.parent_exec_id)
            } else {
                format!("exec={} parent={}", d.exec_id, d.parent_exec_id)
            };
            let mut line = format!(
                "{time} {:<10} {}  [{}] {exec} pid={} uid={} scope={scope} sha256={short}",
                d.decision, d.path, d.reason, d.tgid, d.uid
            );
            if d.hook != "bprm_check_security" {
                line.push_str(&format!(" hook={}", d.hook));
            }
            line.push_str(&authorization(d));
            line
        }
        Body::Gap(gap) => format!(
            "{time} GAP        {} decision(s) lost: the kernel's ring buffer was full",
            gap.lost
        ),
        Body::Start(s) => format!(
            "{time} START      agent {} on boot {} (log before: {})",
            s.version,
            s.boot_id,
            s.previous.name()
        ),
        Body::Authorization(a) => {
            let what = match (&a.bundle_id, a.serial) {
                (Some(id), Some(serial)) => format!("{} {id} serial {serial}", a.artifact),
                _ => a.artifact.clone(),
            };
            let mut line = format!(
                "{time} AUTHZ      {} {what} from {} id={} scopes={}",
                a.change,
                a.issuer,
                a.id.get(..12).unwrap_or(&a.id),
                a.scopes.join(",")
            );
            if let Some(t) = &a.not_after {
                line.push_str(&format!(" until={t}"));
            }
            if !a.pids.is_empty() {
                let pids: Vec<String> = a.pids.iter().map(ToString::to_string).collect();
                line.push_str(&format!(" pids={}", pids.join(",")));
            }
            if let Some(d) = &a.detail {
                line.push_str(&format!(" ({d})"));
            }
            line
        }
        Body::Checkpoint(c) => format!(
            "{time} CHECKPOINT seq {} ({}, {})",
            record.seq,
            c.trigger.name(),
            c.key_id
                .as_ref()
                .map_or_else(|| "unsigned".to_owned(), |k| format!("signed by {k}"))
        ),
    }
}

/// ` auth=<serial>/<id prefix> grant=<name>`, or nothing when no authorization matched.
fn authorization(d: &Decision) -> String {
    let mut out = String::new();
    if let Some(id) = &d.auth_id {
        out.push_str(&format!(
            " auth={}/{}",
            d.auth_serial,
            id.get(..12).unwrap_or(id)
        ));
    } else if d.auth_serial != 0 {
        out.push_str(&format!(" auth={}", d.auth_serial));
    }
    if let Some(grant) = &d.grant {
        out.push_str(&format!(" grant={grant}"));
    }
    out
}

/// One exec in a lineage. Serialized for the HTTP API as `{"step": "logged", ...}` or
/// `{"step": "missing", "exec_id": N}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "lowercase")]
pub enum Step {
    /// The decision on this exec, as logged.
    Logged {
        seq: u64,
        time: String,
        decision: Box<Decision>,
    },
    /// The parent named by the previous step is not in the log: it ran before the log
    /// begins, or its decision was lost (see gap records).
    Missing { exec_id: u64 },
}

/// The ancestry of an exec, the exec first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    pub boot_id: String,
    pub steps: Vec<Step>,
    /// Other boots in which the same exec id occurs.
    pub other_boots: Vec<String>,
}

/// An exec's ancestry and the execs started under it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Family {
    #[serde(flatten)]
    pub lineage: Lineage,
    /// Execs whose chain of parents leads to the exec, generation by generation; every
    /// one is logged (an exec that is not in the log names no parent).
    pub descendants: Vec<Step>,
    /// More descendants exist than the limit asked for.
    pub descendants_truncated: bool,
}

/// Follows `exec_id` to its ancestors through `parent_exec_id`, within one boot (the one
/// given, else the latest boot in which the exec id occurs).
pub fn lineage(dir: &Path, exec_id: u64, boot_id: Option<&str>) -> Result<Lineage, QueryError> {
    let parents = Parents::read(dir, exec_id, boot_id)?;
    let chain = parents.ancestry(exec_id);
    let mut logged = logged_steps(dir, &parents.boot, &chain.iter().copied().collect())?;
    Ok(parents.into_lineage(&chain, &mut logged))
}

/// [`lineage`] within `boot_id`, and the first `max_descendants` execs started under the
/// exec (its children, theirs...). Reads the log twice, like [`lineage`].
pub fn family(
    dir: &Path,
    exec_id: u64,
    boot_id: &str,
    max_descendants: usize,
) -> Result<Family, QueryError> {
    let parents = Parents::read(dir, exec_id, Some(boot_id))?;
    let chain = parents.ancestry(exec_id);
    let (below, descendants_truncated) = parents.descendants(exec_id, max_descendants);
    let wanted = chain.iter().chain(&below).copied().collect();
    let mut logged = logged_steps(dir, &parents.boot, &wanted)?;
    let descendants = below.iter().filter_map(|id| logged.remove(id)).collect();
    Ok(Family {
        lineage: parents.into_lineage(&chain, &mut logged),
        descendants,
        descendants_truncated,
    })
}

/// The parent of every exec of one boot: only ids are held in memory, not records.
struct Parents {
    boot: String,
    /// Exec id to parent exec id, within `boot`.
    of: HashMap<u64, u64>,
    other_boots: Vec<String>,
}

impl Parents {
    /// Reads the log once. The boot is the one given, else the latest boot in which
    /// `exec_id` occurs.
    fn read(dir: &Path, exec_id: u64, boot_id: Option<&str>) -> Result<Self, QueryError> {
        let mut by_boot: HashMap<String, HashMap<u64, u64>> = HashMap::new();
        let mut boots_with_exec: Vec<String> = Vec::new();
        read_dir(dir, |e| {
            if let Body::Decision(d) = e.record.body {
                // Decisions on other operations (mmap, ptrace...) carry exec id 0 and the
                // image they happened in as parent: they are not steps of an ancestry.
                if d.exec_id == 0 || boot_id.is_some_and(|b| b != d.boot_id) {
                    return;
                }
                if d.exec_id == exec_id && !boots_with_exec.contains(&d.boot_id) {
                    boots_with_exec.push(d.boot_id.clone());
                }
                by_boot
                    .entry(d.boot_id)
                    .or_default()
                    .entry(d.exec_id)
                    .or_insert(d.parent_exec_id);
            }
        })?;
        let boot = boots_with_exec
            .pop()
            .ok_or_else(|| QueryError::ExecNotFound {
                exec_id,
                boot: boot_id.map(str::to_owned),
            })?;
        Ok(Self {
            of: by_boot.remove(&boot).unwrap_or_default(),
            boot,
            other_boots: boots_with_exec,
        })
    }

    /// `exec_id` and its ancestors, up to the first that is unknown or repeats.
    fn ancestry(&self, exec_id: u64) -> Vec<u64> {
        let mut chain = vec![exec_id];
        let mut seen: HashSet<u64> = HashSet::from([exec_id]);
        let mut current = exec_id;
        while let Some(&parent) = self.of.get(&current) {
            if parent == 0 || !seen.insert(parent) {
                break;
            }
            chain.push(parent);
            current = parent;
        }
        chain
    }

    /// Up to `max` execs below `exec_id`, breadth first; and whether more exist.
    fn descendants(&self, exec_id: u64, max: usize) -> (Vec<u64>, bool) {
        let mut children: HashMap<u64, Vec<u64>> = HashMap::new();
        for (&child, &parent) in &self.of {
            children.entry(parent).or_default().push(child);
        }
        // Exec ids grow with time within a boot: siblings in the order they started.
        for list in children.values_mut() {
            list.sort_unstable();
        }
        let mut found = Vec::new();
        // A corrupt log could make an exec its own ancestor: visit each id once.
        let mut seen: HashSet<u64> = HashSet::from([exec_id]);
        let mut queue = VecDeque::from([exec_id]);
        while let Some(id) = queue.pop_front() {
            for &child in children.get(&id).into_iter().flatten() {
                if !seen.insert(child) {
                    continue;
                }
                if found.len() == max {
                    return (found, true);
                }
                found.push(child);
                queue.push_back(child);
            }
        }
        (found, false)
    }

    fn into_lineage(self, chain: &[u64], logged: &mut HashMap<u64, Step>) -> Lineage {
        let steps = chain
            .iter()
            .map(|id| logged.remove(id).unwrap_or(Step::Missing { exec_id: *id }))
            .collect();
        Lineage {
            boot_id: self.boot,
            steps,
            other_boots: self.other_boots,
        }
    }
}

/// The first decision logged for each exec in `wanted`, within `boot`.
fn logged_steps(
    dir: &Path,
    boot: &str,
    wanted: &HashSet<u64>,
) -> Result<HashMap<u64, Step>, QueryError> {
    let mut logged: HashMap<u64, Step> = HashMap::new();
    read_dir(dir, |e| {
        if let Body::Decision(d) = e.record.body
            && d.boot_id == boot
            && wanted.contains(&d.exec_id)
            && !logged.contains_key(&d.exec_id)
        {
            logged.insert(
                d.exec_id,
                Step::Logged {
                    seq: e.record.seq,
                    time: e.record.time,
                    decision: Box::new(d),
                },
            );
        }
    })?;
    Ok(logged)
}

/// Follows the log as it grows, across rotations (`audit tail -f`).
#[derive(Debug)]
pub struct Follower {
    dir: PathBuf,
    file: Option<LogFile>,
    offset: u64,
    line: usize,
    pending: Vec<u8>,
}

impl Follower {
    /// Starts at the current end of the log: only records written from now on.
    pub fn at_end(dir: &Path) -> Result<Self, AuditError> {
        let file = files::list(dir)?.pop();
        let (offset, line) = match &file {
            Some(f) => {
                let mut lines = 0;
                let end = for_each_line(&f.path, |_, _| -> Result<(), ()> {
                    lines += 1;
                    Ok(())
                })?;
                let offset = std::fs::metadata(&f.path)
                    .map_err(AuditError::io(&f.path))?
                    .len();
                let partial = end.ok().and_then(|e| e.partial).map_or(0, |(_, len)| len);
                (offset - partial, lines)
            }
            None => (0, 0),
        };
        Ok(Self {
            dir: dir.to_owned(),
            file,
            offset,
            line,
            pending: Vec::new(),
        })
    }

    /// Hands every record completed since the last call to `each`.
    pub fn poll(&mut self, mut each: impl FnMut(Entry)) -> Result<(), AuditError> {
        loop {
            if let Some(file) = &self.file {
                self.read_new(&file.path.clone(), &mut each)?;
            }
            // Move on only when a newer file exists; the current one is finished then
            // (the writer never returns to a file it rotated away from).
            let newer = files::list(&self.dir)?
                .into_iter()
                .find(|f| self.file.as_ref().is_none_or(|cur| f.number > cur.number));
            match newer {
                Some(next) => {
                    self.file = Some(next);
                    self.offset = 0;
                    self.line = 0;
                    self.pending.clear();
                }
                None => return Ok(()),
            }
        }
    }

    fn read_new(&mut self, path: &Path, each: &mut impl FnMut(Entry)) -> Result<(), AuditError> {
        let io = AuditError::io(path);
        let mut file = std::fs::File::open(path).map_err(io)?;
        file.seek(SeekFrom::Start(self.offset))
            .map_err(AuditError::io(path))?;
        let start = self.pending.len();
        let read = file
            .read_to_end(&mut self.pending)
            .map_err(AuditError::io(path))?;
        self.offset += read as u64;
        if !self.pending[start..].contains(&b'\n') {
            return Ok(());
        }
        let mut rest = self.pending.as_slice();
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.line += 1;
            if let Some(e) = entry(path, self.line, &rest[..end]) {
                each(e);
            }
            rest = &rest[end + 1..];
        }
        self.pending = rest.to_vec();
        Ok(())
    }
}
