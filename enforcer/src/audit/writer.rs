//! The agent's appender: [`AuditLog`].
//!
//! **Durability.** Records are encoded, hashed and written into a 256 KiB buffer; nothing
//! is synced per record, so the agent keeps up with bursts of decisions. The buffer is
//! written to the file (`write(2)`, surviving an agent crash but not a power loss) when it
//! fills, on [`AuditLog::flush`], and by any append or [`AuditLog::tick`] once
//! [`AuditOptions::flush_interval`] has passed. The file is synced (`fdatasync`) at every
//! checkpoint: every [`AuditOptions::checkpoint_every`] records, every
//! [`AuditOptions::checkpoint_interval`] (checked on append and on `tick`), before a
//! rotation, and on [`AuditLog::close`]. New files are also made durable in their directory
//! (`fsync` of the directory). A power loss therefore loses at most the records since the
//! last checkpoint, and a crash at most those of the last flush interval; either may leave
//! a partial last line, which the next [`AuditLog::open`] acknowledges in a new file.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use enforcer_common::ExecEvent;

use super::artifacts::Archive;
use super::chain::{self, ChainHash, HashKind};
use super::files::{self, LogFile};
use super::record::{
    AuthorizationChange, Body, Checkpoint, Decision, DecisionLabels, FORMAT, Gap, PreviousEnd,
    Record, Recovered, Start, Trigger,
};
use super::tlog::SignedNote;
use super::tree::LogTree;
use super::verify::{Last, ProblemKind, Walker, for_each_line};
use super::{AuditError, boot_id};
use crate::authz::artifact::ArtifactId;
use crate::authz::trust::SigningKey;

const BUFFER_BYTES: usize = 256 * 1024;

/// How this writer hashes records: as the format it writes says.
fn written_kind() -> HashKind {
    HashKind::of_format(Some(FORMAT))
}
const LOCK_FILE: &str = "lock";

/// The lock file of the audit log in `dir`: whoever holds it keeps agents from starting.
#[must_use]
pub fn lock_path(dir: &Path) -> PathBuf {
    dir.join(LOCK_FILE)
}

/// When to checkpoint, flush and rotate. The defaults suit a busy host: at most a second
/// of records lost to an agent crash, at most a minute (or 10 000 records) to a power loss,
/// files of 64 MiB.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    /// Checkpoint after this many records.
    pub checkpoint_every: u64,
    /// Checkpoint when this much time has passed since the last one and records were
    /// written since.
    pub checkpoint_interval: Duration,
    /// Write buffered records to the file at least this often.
    pub flush_interval: Duration,
    /// Start a new file once the current one reaches this size.
    pub max_file_bytes: u64,
    /// The boot id to record; `None` reads the running kernel's (tests set it).
    pub boot_id: Option<String>,
    /// The log's name in its signed checkpoints; `None` names it after the host
    /// ([`default_origin`]).
    pub origin: Option<String>,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            checkpoint_every: 10_000,
            checkpoint_interval: Duration::from_secs(60),
            flush_interval: Duration::from_secs(1),
            max_file_bytes: 64 << 20,
            boot_id: None,
            origin: None,
        }
    }
}

/// An open audit log, appending to its newest file. One writer per directory: a lock file
/// keeps a second agent out.
pub struct AuditLog {
    dir: PathBuf,
    opts: AuditOptions,
    key: Option<SigningKey>,
    key_id: Option<String>,
    boot_id: String,
    /// `None` after a failed write: the file may end in a partial line, and only a reopen
    /// (which acknowledges it in a new file) may continue the chain.
    out: Option<BufWriter<File>>,
    file: LogFile,
    file_bytes: u64,
    next_seq: u64,
    head: ChainHash,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    last_flush: Instant,
    line: Vec<u8>,
    tree: LogTree,
    /// The newest signed checkpoint note, for whoever ships checkpoints off the host.
    last_note: Option<SignedNote>,
    _lock: File,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("file", &self.file.path)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

/// Where the chain resumes.
struct Resume {
    last: Option<Last>,
    previous: PreviousEnd,
    recovered: Option<Recovered>,
    /// File number to write to; appended to when it exists.
    target: u64,
}

impl AuditLog {
    /// Opens (or creates) the log in `dir` and resumes its chain.
    ///
    /// The newest file is checked record by record before anything is appended: a damaged
    /// tail is refused ([`AuditError::BrokenTail`]) rather than built upon, except for a
    /// partial last line, which a crash can leave; then the chain continues in a new file
    /// whose start record names the partial line, and the old file is left as it is.
    /// Every open writes a start record and a checkpoint. `host_key` signs checkpoints;
    /// without it they are unsigned and the log proves nothing against its editor.
    pub fn open(
        dir: &Path,
        host_key: Option<SigningKey>,
        opts: AuditOptions,
    ) -> Result<Self, AuditError> {
        crate::fsutil::create_dir(dir, 0o750).map_err(AuditError::io(dir))?;
        let lock = lock(dir)?;
        let boot_id = match &opts.boot_id {
            Some(id) => id.clone(),
            None => boot_id()?,
        };
        let listed = files::list(dir)?;
        let resume = resume(&listed)?;
        let file = LogFile {
            number: resume.target,
            path: dir.join(files::name(resume.target)),
        };
        let exists = listed
            .last()
            .is_some_and(|newest| newest.number == resume.target);
        let (handle, file_bytes) = open_file(dir, &file.path, exists)?;
        let (next_seq, head) = resume
            .last
            .as_ref()
            .map_or((0, written_kind().genesis()), |l| (l.seq + 1, l.hash));
        let origin = match &opts.origin {
            Some(origin) => origin.clone(),
            None => default_origin()?,
        };
        let tree = LogTree::open(dir, origin.clone(), &listed, next_seq, host_key.as_ref())?;
        let key_id = host_key.as_ref().map(|k| k.key_id().to_string());
        let now = Instant::now();
        let mut log = Self {
            dir: dir.to_owned(),
            opts,
            key: host_key,
            key_id: key_id.clone(),
            boot_id: boot_id.clone(),
            out: Some(BufWriter::with_capacity(BUFFER_BYTES, handle)),
            file,
            file_bytes,
            next_seq,
            head,
            since_checkpoint: 0,
            last_checkpoint: now,
            last_flush: now,
            line: Vec::with_capacity(1024),
            tree,
            last_note: None,
            _lock: lock,
        };
        if log.key.is_none() {
            tracing::warn!(
                dir = %dir.display(),
                "audit checkpoints are unsigned: without a host key the log cannot prove it \
                 was not rewritten"
            );
        }
        log.write_record(Body::Start(Start {
            boot_id,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            host_key: key_id,
            previous: resume.previous,
            recovered: resume.recovered,
            format: Some(FORMAT),
            origin: Some(origin),
        }))?;
        log.write_checkpoint(Trigger::Start, None)?;
        Ok(log)
    }

    /// Appends a decision; returns its sequence number.
    pub fn append_decision(
        &mut self,
        event: &ExecEvent,
        labels: &DecisionLabels<'_>,
    ) -> Result<u64, AuditError> {
        self.append_decision_and(event, labels, |_| ())
    }

    /// [`Self::append_decision`], then hands the record as written to `written` (the HTTP
    /// window's live feed), so readers see the seq and time the log holds.
    pub fn append_decision_and(
        &mut self,
        event: &ExecEvent,
        labels: &DecisionLabels<'_>,
        written: impl FnOnce(&Record),
    ) -> Result<u64, AuditError> {
        let decision = Decision::from_event(event, labels, &self.boot_id);
        self.append_then(Body::Decision(decision), written)
    }

    /// Records that the kernel dropped `lost` decisions (its per-CPU drop counters grew
    /// by that much since the last call).
    pub fn append_gap(&mut self, lost: u64) -> Result<u64, AuditError> {
        self.append(Body::Gap(Gap { lost }))
    }

    /// Records a change in what is authorized.
    pub fn append_authorization(&mut self, change: AuthorizationChange) -> Result<u64, AuditError> {
        self.append(Body::Authorization(change))
    }

    /// Keeps the signed artifact an authorization record is about to cite, as it was
    /// accepted, so that proofs can carry it. Call before appending that record.
    pub fn keep_artifact(&self, id: &ArtifactId, bytes: &[u8]) -> Result<(), AuditError> {
        Ok(Archive::new(&self.dir).keep(id, bytes)?)
    }

    /// Writes a checkpoint now (and syncs), whether or not one is due.
    pub fn checkpoint(&mut self) -> Result<u64, AuditError> {
        self.write_checkpoint(Trigger::Requested, None)
    }

    /// Call on a timer (every second suits the defaults) so that time-based checkpoints
    /// and flushes happen while no decisions arrive.
    pub fn tick(&mut self) -> Result<(), AuditError> {
        self.after_append(Instant::now())
    }

    /// Writes buffered records to the file (no sync): `audit tail -f` sees them, and an
    /// agent crash no longer loses them. Cheap; the agent may call it after each batch.
    pub fn flush(&mut self) -> Result<(), AuditError> {
        let out = self.out.as_mut().ok_or(AuditError::Poisoned)?;
        if let Err(e) = out.flush() {
            return Err(self.poison(e));
        }
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Ends the log cleanly: a shutdown checkpoint, synced. The next open records that
    /// the log ended cleanly; a log dropped without `close` reads as a crash. Returns the
    /// shutdown checkpoint's note (with a host key), for the witnesses.
    pub fn close(mut self) -> Result<Option<SignedNote>, AuditError> {
        self.write_checkpoint(Trigger::Shutdown, None)?;
        Ok(self.last_note.take())
    }

    /// Sequence number the next record will get.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Records written since the last checkpoint, and when that checkpoint was written:
    /// how much a crash now would leave uncovered, for readiness.
    #[must_use]
    pub fn since_checkpoint(&self) -> (u64, Instant) {
        (self.since_checkpoint, self.last_checkpoint)
    }

    /// Whether the log still takes records: after a failed write only a reopen may
    /// continue the chain.
    #[must_use]
    pub fn is_writable(&self) -> bool {
        self.out.is_some()
    }

    /// The boot this log's decisions belong to (exec ids are unique within it).
    #[must_use]
    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    /// The newest signed checkpoint note (none before the first checkpoint, or without a
    /// host key).
    #[must_use]
    pub fn last_note(&self) -> Option<&SignedNote> {
        self.last_note.as_ref()
    }

    /// The log's name in its signed checkpoints.
    #[must_use]
    pub fn origin(&self) -> &str {
        self.tree.origin()
    }

    /// The checkpoint key as a vkey (`origin+id+key`), which checks this log's signed
    /// checkpoints and proofs; `None` when checkpoints are unsigned.
    #[must_use]
    pub fn host_vkey(&self) -> Option<String> {
        let key = self.key.as_ref()?;
        // The origin was checked as a key name when the tree opened; a failure here
        // would only mean there is no vkey to show.
        super::tlog::NoteVerifier::new(self.origin(), key.public_key())
            .ok()
            .map(|v| v.to_vkey())
    }

    /// The file being written.
    #[must_use]
    pub fn current_file(&self) -> &Path {
        &self.file.path
    }

    fn append(&mut self, body: Body) -> Result<u64, AuditError> {
        self.append_then(body, |_| ())
    }

    fn append_then(
        &mut self,
        body: Body,
        written: impl FnOnce(&Record),
    ) -> Result<u64, AuditError> {
        if self.file_bytes >= self.opts.max_file_bytes {
            self.rotate()?;
        }
        let record = self.record(body);
        let seq = self.write(&record)?;
        written(&record);
        self.since_checkpoint += 1;
        self.after_append(Instant::now())?;
        Ok(seq)
    }

    /// Checkpoints or flushes when due.
    fn after_append(&mut self, now: Instant) -> Result<(), AuditError> {
        if self.since_checkpoint >= self.opts.checkpoint_every {
            self.write_checkpoint(Trigger::Records, None)?;
        } else if self.since_checkpoint > 0
            && now.duration_since(self.last_checkpoint) >= self.opts.checkpoint_interval
        {
            self.write_checkpoint(Trigger::Interval, None)?;
        } else if now.duration_since(self.last_flush) >= self.opts.flush_interval {
            self.flush()?;
        }
        Ok(())
    }

    /// Ends the current file with a checkpoint naming the next, then continues there.
    fn rotate(&mut self) -> Result<(), AuditError> {
        let next = LogFile {
            number: self.file.number + 1,
            path: PathBuf::new(),
        };
        let next = LogFile {
            path: self.dir.join(next.name()),
            ..next
        };
        self.write_checkpoint(Trigger::Rotate, Some(next.name()))?;
        let (handle, file_bytes) = match open_file(&self.dir, &next.path, false) {
            Ok(opened) => opened,
            Err(e) => {
                // The checkpoint already names the next file; a reopen creates it.
                self.out = None;
                return Err(e);
            }
        };
        self.out = Some(BufWriter::with_capacity(BUFFER_BYTES, handle));
        self.file = next;
        self.file_bytes = file_bytes;
        Ok(())
    }

    fn write_checkpoint(
        &mut self,
        trigger: Trigger,
        next_file: Option<String>,
    ) -> Result<u64, AuditError> {
        // The tree head covers every record before this one; they must be durable before
        // the tiles hold them, and the tiles complete before a note names their size.
        self.sync()?;
        self.tree.commit()?;
        let note = match &self.key {
            Some(key) => Some(self.tree.sign(key)?),
            None => None,
        };
        let checkpoint = Checkpoint {
            trigger,
            next_file,
            key_id: self.key_id.clone(),
            note: note.as_ref().map(ToString::to_string),
            signature: None,
        };
        let mut record = self.record(Body::Checkpoint(checkpoint));
        if let Some(key) = &self.key {
            let signature = chain::sign_checkpoint(key, &serde_json::to_vec(&record)?);
            if let Body::Checkpoint(checkpoint) = &mut record.body {
                checkpoint.signature = Some(signature);
            }
        }
        let seq = self.write(&record)?;
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        self.sync()?;
        if let Some(note) = note {
            self.tree.publish(&note)?;
            self.last_note = Some(note);
        }
        Ok(seq)
    }

    fn record(&self, body: Body) -> Record {
        let time = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
        Record {
            seq: self.next_seq,
            prev: self.head,
            time,
            body,
        }
    }

    fn write_record(&mut self, body: Body) -> Result<u64, AuditError> {
        let record = self.record(body);
        self.write(&record)
    }

    fn write(&mut self, record: &Record) -> Result<u64, AuditError> {
        let hash = chain::seal(record, written_kind(), &mut self.line)?;
        let out = self.out.as_mut().ok_or(AuditError::Poisoned)?;
        if let Err(e) = out.write_all(&self.line) {
            return Err(self.poison(e));
        }
        self.file_bytes += self.line.len() as u64;
        self.tree
            .push(hash.leaf_of(self.line.strip_suffix(b"\n").unwrap_or(&self.line)));
        self.head = hash;
        self.next_seq += 1;
        Ok(record.seq)
    }

    fn sync(&mut self) -> Result<(), AuditError> {
        self.flush()?;
        let out = self.out.as_mut().ok_or(AuditError::Poisoned)?;
        // After a failed fsync the kernel may have dropped the dirty pages: what is on
        // disk is unknown, so only a reopen (which checks it) may continue.
        if let Err(e) = out.get_ref().sync_data() {
            return Err(self.poison(e));
        }
        Ok(())
    }

    /// Stops writing after a failed write, discarding the buffer rather than letting
    /// `BufWriter`'s drop write it after whatever partial data reached the file.
    fn poison(&mut self, source: std::io::Error) -> AuditError {
        if let Some(out) = self.out.take() {
            drop(out.into_parts());
        }
        AuditError::Io {
            path: self.file.path.clone(),
            source,
        }
    }
}

/// Where the kernel publishes the host's name.
const HOSTNAME_PATH: &str = "/proc/sys/kernel/hostname";

/// The origin of a log whose configuration names none: `<hostname>/enforcer-audit`.
/// Witnesses keep one history per origin, so a host that may be renamed should set one.
pub fn default_origin() -> Result<String, AuditError> {
    let path = Path::new(HOSTNAME_PATH);
    let host = std::fs::read_to_string(path).map_err(AuditError::io(path))?;
    let host = host.trim();
    let host = if host.is_empty() { "localhost" } else { host };
    Ok(format!("{host}/enforcer-audit"))
}

/// Takes the directory's lock, so that two agents never interleave one chain.
fn lock(dir: &Path) -> Result<File, AuditError> {
    let path = lock_path(dir);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o640)
        .open(&path)
        .map_err(AuditError::io(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(AuditError::Locked {
            path: dir.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(error)) => Err(AuditError::io(&path)(error)),
    }
}

/// Opens a log file for appending (`exists`) or creates it, making a new file's name
/// durable in the directory. Returns the file and its size.
fn open_file(dir: &Path, path: &Path, exists: bool) -> Result<(File, u64), AuditError> {
    let io = AuditError::io(path);
    let mut options = std::fs::OpenOptions::new();
    options.append(true).mode(0o640);
    if exists {
        let file = options.open(path).map_err(io)?;
        let len = file.metadata().map_err(AuditError::io(path))?.len();
        return Ok((file, len));
    }
    let file = options.create_new(true).open(path).map_err(io)?;
    crate::fsutil::sync_dir(dir).map_err(AuditError::io(dir))?;
    Ok((file, 0))
}

/// Works out where the chain continues from the newest file (or the one before it, when
/// the newest is empty after a rotation).
fn resume(files: &[LogFile]) -> Result<Resume, AuditError> {
    let Some(newest) = files.last() else {
        return Ok(Resume {
            last: None,
            previous: PreviousEnd::None,
            recovered: None,
            target: 1,
        });
    };
    let (last, partial) = scan(newest)?;
    let broken = |file: &LogFile, problem: &str| AuditError::BrokenTail {
        path: file.path.clone(),
        line: 1,
        problem: problem.to_owned(),
    };
    let last = match (last, files.len().checked_sub(2).and_then(|i| files.get(i))) {
        (Some(last), _) => Some(last),
        (None, None) => None,
        (None, Some(before)) => match scan(before)? {
            (Some(last), None) => Some(last),
            (None, _) => return Err(broken(before, "it has no records but a newer file exists")),
            (Some(_), Some(_)) => {
                return Err(broken(
                    before,
                    "it ends with a partial line but a newer file exists",
                ));
            }
        },
    };
    let recovered = partial.map(|(offset, bytes)| Recovered {
        file: newest.name(),
        offset,
        bytes,
    });
    let previous = match &last {
        None if recovered.is_none() => PreviousEnd::None,
        Some(last) if last.shutdown => PreviousEnd::Clean,
        _ => PreviousEnd::Unclean,
    };
    let target = if recovered.is_some() {
        newest.number + 1
    } else if let Some(next) = last.as_ref().and_then(|l| l.next_file.as_deref()) {
        files::number(next).ok_or_else(|| broken(newest, "its rotation names no log file"))?
    } else {
        newest.number
    };
    if target != newest.number && target != newest.number + 1 {
        return Err(broken(
            newest,
            "the log does not continue in this file or the next",
        ));
    }
    Ok(Resume {
        last,
        previous,
        recovered,
        target,
    })
}

/// Checks a file's records and returns its last one and any partial line after it.
#[allow(clippy::type_complexity, reason = "private, read at its one caller")]
fn scan(file: &LogFile) -> Result<(Option<Last>, Option<(u64, u64)>), AuditError> {
    let mut walker = Walker::new(None, None);
    match for_each_line(&file.path, |_, line| walker.feed(line))? {
        Ok(end) => Ok((walker.last().cloned(), end.partial)),
        Err((line, kind)) => {
            let problem = match kind {
                ProblemKind::Reordered {
                    expected, found, ..
                } => {
                    format!(
                        "the sequence jumps from {} to {found}",
                        expected.wrapping_sub(1)
                    )
                }
                other => other.to_string(),
            };
            Err(AuditError::BrokenTail {
                path: file.path.clone(),
                line,
                problem,
            })
        }
    }
}
