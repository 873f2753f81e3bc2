//! Checking a log: walks every file in order and reports either that the chain holds, or
//! the first record that was altered, removed, reordered or cut off.
//!
//! What the chain proves and what it does not: without `--trust`, an intact chain shows
//! the files are as some writer produced them, and anyone could have been that writer.
//! With the host's public key, every checkpoint must carry a valid signature, and a
//! verified checkpoint proves every record up to it. Records after the last verified
//! checkpoint are reported as not covered: cutting them off at a line boundary leaves a
//! log that is indistinguishable from one the agent had not yet checkpointed, which is why
//! a clean shutdown ends with a checkpoint and a restart says how the log ended before it.

use std::fmt;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;

use super::AuditError;
use super::chain::{self, ChainHash, HashKind, SignatureProblem, Unsealed};
use super::files::{self, LogFile};
use super::record::{Body, Checkpoint, PreviousEnd, Record, Recovered, Trigger};
use super::tlog::{self, CompactRange, NoteVerifier, NoteVerifiers, SignedNote};
use crate::authz::trust::KeyId;

/// Longest line the reader takes whole. Records are a few hundred bytes; a longer line is
/// damage, and reading it whole would let a damaged file exhaust memory.
pub const MAX_LINE: usize = 1 << 20;

/// What is wrong with a record, or with the files around it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// The line's bytes do not match the hash it states: the record was altered.
    Altered { seq: Option<u64> },
    /// The line is not a record at all.
    Malformed { why: String },
    /// The sequence jumps forward and the missing records are nowhere later in the log.
    Removed {
        first_missing: u64,
        next_present: u64,
    },
    /// The record is not in its place: `expected` should be here and `found` is.
    Reordered {
        expected: u64,
        found: u64,
        expected_at: Option<String>,
    },
    /// The record's `prev` is not the hash of the record before it: the record before was
    /// replaced (with a recomputed hash) or a record was slipped in.
    BrokenLink { seq: u64 },
    /// The file ends in the middle of a line.
    CutOff { offset: u64, bytes: u64 },
    /// A file of the numbered sequence is missing.
    MissingFile { name: String },
    /// The files do not fit together the way the writer makes them.
    Misplaced { why: String },
    /// A checkpoint's signature does not hold under the trusted host key.
    Signature { seq: u64, why: String },
    /// A format-2 checkpoint's signed tree head is not the tree of the records before it,
    /// or its note is not a checkpoint of this log.
    TreeHead { seq: u64, why: String },
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Altered { seq: Some(seq) } => {
                write!(
                    f,
                    "record seq {seq} was altered: its content does not match its hash"
                )
            }
            Self::Altered { seq: None } => {
                write!(f, "record was altered: its content does not match its hash")
            }
            Self::Malformed { why } => write!(f, "not a valid audit record: {why}"),
            Self::Removed {
                first_missing,
                next_present,
            } if *next_present == first_missing + 1 => {
                write!(
                    f,
                    "record seq {first_missing} was removed (seq {next_present} is here)"
                )
            }
            Self::Removed {
                first_missing,
                next_present,
            } => write!(
                f,
                "records seq {first_missing} to {} were removed (seq {next_present} is here)",
                next_present - 1
            ),
            Self::Reordered {
                expected,
                found,
                expected_at,
            } => {
                write!(
                    f,
                    "records were reordered: seq {found} is where seq {expected} belongs"
                )?;
                match expected_at {
                    Some(at) => write!(f, " (seq {expected} is at {at})"),
                    None => Ok(()),
                }
            }
            Self::BrokenLink { seq } => write!(
                f,
                "record seq {seq} does not link to the record before it: that record was \
                 replaced or this one was inserted"
            ),
            Self::CutOff { offset, bytes } => write!(
                f,
                "the file was cut off: it ends with a partial line of {bytes} byte(s) at offset \
                 {offset}"
            ),
            Self::MissingFile { name } => write!(f, "log file {name} is missing"),
            Self::Misplaced { why } => f.write_str(why),
            Self::Signature { seq, why } => write!(f, "checkpoint seq {seq}: {why}"),
            Self::TreeHead { seq, why } => {
                write!(f, "checkpoint seq {seq}: its signed tree head {why}")
            }
        }
    }
}

/// The first thing wrong, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    pub kind: ProblemKind,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.kind)
    }
}

/// Checkpoints seen, by what could be said about their signatures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checkpoints {
    /// Signature verified under the trusted key.
    pub verified: u64,
    /// Signed, but no key was given to check it.
    pub unchecked: u64,
    /// Written by an agent without a host key.
    pub unsigned: u64,
}

/// What verification found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub files: usize,
    /// Records that passed, up to the problem if there is one.
    pub records: u64,
    pub decisions: u64,
    /// Authorization changes (accepted, withdrawn, killed, break-glass).
    pub authorizations: u64,
    pub gaps: u64,
    /// Decisions lost according to the gap records.
    pub lost: u64,
    pub checkpoints: Checkpoints,
    /// Sequence number and hash of the last good record.
    pub head: Option<(u64, ChainHash)>,
    /// Format-2 checkpoints whose signed tree head is the tree of the records before
    /// them (and, with a trusted key, whose note signature verified).
    pub tree_heads: u64,
    /// The first record written in format 2 (a start naming it), if any.
    pub format2_from: Option<u64>,
    /// The first record written in format 3 (each record's hash its tree leaf), if any.
    pub format3_from: Option<u64>,
    /// The log's origin, from its newest format-2 start.
    pub origin: Option<String>,
    /// Last sequence number covered by a verified checkpoint.
    pub covered_through: Option<u64>,
    /// The last record is a shutdown checkpoint.
    pub ends_with_shutdown: bool,
    /// Starts that followed an unclean end (crash, or the end cut off while the agent was
    /// down), by sequence number.
    pub unclean_restarts: Vec<u64>,
    /// Partial lines left by a crash and acknowledged by the restart that followed.
    pub recovered: Vec<Recovered>,
    /// The first problem; `None` when the chain holds.
    pub problem: Option<Problem>,
}

impl Report {
    /// Nothing was found altered, removed, reordered, cut off or forged.
    #[must_use]
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }

    /// Records after the last verified checkpoint (all of them without one).
    #[must_use]
    pub fn uncovered(&self) -> u64 {
        match (self.head, self.covered_through) {
            (None, _) => 0,
            (Some((last, _)), None) => last + 1,
            (Some((last, _)), Some(covered)) => last - covered,
        }
    }
}

/// Verifies the log in `dir`. With `trust`, every checkpoint must be signed by that key.
pub fn verify_dir(dir: &Path, trust: Option<&VerifyingKey>) -> Result<Report, AuditError> {
    let files = files::list(dir)?;
    let mut walker = Walker::new(Some((0, ChainHash::GENESIS)), trust);
    let mut report = Report {
        files: files.len(),
        ..Report::default()
    };
    let problem = walk_files(&files, &mut walker, &mut report)?;
    walker.fill(&mut report);
    report.problem = problem;
    Ok(report)
}

fn walk_files(
    files: &[LogFile],
    walker: &mut Walker<'_>,
    report: &mut Report,
) -> Result<Option<Problem>, AuditError> {
    // Where the previous file ended: with a rotation checkpoint naming the next file, or
    // with an acknowledged partial line.
    let mut continues_in: Option<String> = None;
    let mut last_position = None;
    for ((index, file), expected_number) in files.iter().enumerate().zip(1..) {
        let at = |line, kind| {
            Some(Problem {
                file: file.path.clone(),
                line,
                kind,
            })
        };
        if file.number != expected_number {
            return Ok(at(
                1,
                ProblemKind::MissingFile {
                    name: files::name(expected_number),
                },
            ));
        }
        if index > 0 {
            match continues_in.take() {
                Some(name) if name == file.name() => {}
                Some(name) => {
                    let why = format!("the previous file says the log continues in {name}");
                    return Ok(at(1, ProblemKind::Misplaced { why }));
                }
                None => {
                    let why = "the previous file does not end with a rotation checkpoint".into();
                    return Ok(at(1, ProblemKind::Misplaced { why }));
                }
            }
        }
        let end = match for_each_line(&file.path, |_, line| walker.feed(line))? {
            Ok(end) => end,
            Err((
                line,
                ProblemKind::Reordered {
                    expected, found, ..
                },
            )) if found > expected => {
                let kind = match find_seq(&files[index..], line, expected)? {
                    Some(place) => ProblemKind::Reordered {
                        expected,
                        found,
                        expected_at: Some(place),
                    },
                    None => ProblemKind::Removed {
                        first_missing: expected,
                        next_present: found,
                    },
                };
                return Ok(at(line, kind));
            }
            Err((line, kind)) => return Ok(at(line, kind)),
        };
        if end.lines > 0 {
            last_position = Some((file.path.clone(), end.lines));
        }
        continues_in = walker.take_next_file();
        if let Some((offset, bytes)) = end.partial {
            let recovered = Recovered {
                file: file.name(),
                offset,
                bytes,
            };
            if files
                .get(index + 1)
                .is_some_and(|next| acknowledges(&next.path, &recovered))
            {
                report.recovered.push(recovered);
                continues_in = files.get(index + 1).map(LogFile::name);
            } else {
                return Ok(at(end.lines + 1, ProblemKind::CutOff { offset, bytes }));
            }
        }
    }
    if let (Some(name), Some((file, line))) = (continues_in, last_position) {
        return Ok(Some(Problem {
            file,
            line,
            kind: ProblemKind::MissingFile { name },
        }));
    }
    Ok(None)
}

/// Whether the first record of `path` is a start that names this partial line.
fn acknowledges(path: &Path, partial: &Recovered) -> bool {
    let mut first = None;
    let _ = for_each_line(path, |_, line| {
        first = Unsealed::new(line).ok().and_then(|u| u.record().ok());
        Err(())
    });
    matches!(first, Some(r) if matches!(&r.body, Body::Start(s) if s.recovered.as_ref() == Some(partial)))
}

/// Where record `seq` is, searching from line `after` of the first file onward.
fn find_seq(files: &[LogFile], after: usize, seq: u64) -> Result<Option<String>, AuditError> {
    for (index, file) in files.iter().enumerate() {
        let skip = if index == 0 { after } else { 0 };
        let found = for_each_line(&file.path, |n, line| {
            if n > skip && seq_prefix(line) == Some(seq) {
                Err(n)
            } else {
                Ok(())
            }
        })?;
        if let Err((line, _)) = found {
            return Ok(Some(format!("{}:{line}", file.path.display())));
        }
    }
    Ok(None)
}

/// The `seq` at the start of a line, read without trusting anything else in it.
pub(crate) fn seq_prefix(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// How a file ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileEnd {
    /// Complete lines.
    pub lines: usize,
    /// Offset and length of bytes after the last newline.
    pub partial: Option<(u64, u64)>,
}

/// Hands every complete line of `path` (1-based number, bytes without the newline) to
/// `each`, stopping at the first error it returns. A line longer than [`MAX_LINE`] is
/// handed over cut to that length. A missing file reads as empty.
pub(crate) fn for_each_line<E>(
    path: &Path,
    mut each: impl FnMut(usize, &[u8]) -> Result<(), E>,
) -> Result<Result<FileEnd, (usize, E)>, AuditError> {
    let io = AuditError::io(path);
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Ok(FileEnd {
                lines: 0,
                partial: None,
            }));
        }
        Err(e) => return Err(io(e)),
    };
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut buf = Vec::with_capacity(4096);
    let (mut lines, mut offset) = (0usize, 0u64);
    loop {
        buf.clear();
        let read = (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf);
        let n = read.map_err(AuditError::io(path))? as u64;
        if n == 0 {
            return Ok(Ok(FileEnd {
                lines,
                partial: None,
            }));
        }
        // Without a newline, either the line is over-long (a newline follows later) or
        // the file ends here.
        let (length, complete) = if buf.last() == Some(&b'\n') {
            buf.pop();
            (n, true)
        } else {
            let (skipped, newline) = skip_line(&mut reader).map_err(AuditError::io(path))?;
            (n + skipped, newline)
        };
        if !complete {
            return Ok(Ok(FileEnd {
                lines,
                partial: Some((offset, length)),
            }));
        }
        lines += 1;
        if let Err(e) = each(lines, &buf) {
            return Ok(Err((lines, e)));
        }
        offset += length;
    }
}

/// Consumes the rest of an over-long line: bytes skipped, and whether a newline ended it.
fn skip_line(reader: &mut impl std::io::BufRead) -> std::io::Result<(u64, bool)> {
    let mut skipped = 0u64;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok((skipped, false));
        }
        if let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            reader.consume(i + 1);
            return Ok((skipped + i as u64 + 1, true));
        }
        let len = chunk.len();
        reader.consume(len);
        skipped += len as u64;
    }
}

/// The last good record, as the writer needs it to resume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Last {
    pub seq: u64,
    pub hash: ChainHash,
    /// It is a shutdown checkpoint.
    pub shutdown: bool,
    /// It is a rotation checkpoint naming this file.
    pub next_file: Option<String>,
}

/// Follows the chain one line at a time.
pub(crate) struct Walker<'k> {
    /// Next sequence number and `prev` expected; `None` takes the first record as it is
    /// (the writer checking only the newest file).
    expect: Option<(u64, ChainHash)>,
    trust: Option<(&'k VerifyingKey, String)>,
    last: Option<Last>,
    counts: Report,
    /// The tree of the records so far; only known when walking from the first record.
    tree: Option<CompactRange>,
    /// How records are hashed in the format in force, once known.
    hash_kind: Option<HashKind>,
}

impl<'k> Walker<'k> {
    pub(crate) fn new(expect: Option<(u64, ChainHash)>, trust: Option<&'k VerifyingKey>) -> Self {
        Self {
            expect,
            trust: trust.map(|key| (key, KeyId::of(key).to_string())),
            last: None,
            counts: Report::default(),
            tree: matches!(expect, Some((0, _))).then(CompactRange::default),
            hash_kind: None,
        }
    }

    pub(crate) fn last(&self) -> Option<&Last> {
        self.last.as_ref()
    }

    /// The file the last record says the chain continues in, if it was a rotation. Called
    /// at the end of each file, so that records in the next one do not count as following
    /// the rotation in the same file.
    fn take_next_file(&mut self) -> Option<String> {
        self.last.as_mut().and_then(|last| last.next_file.take())
    }

    /// Checks one line against the chain so far.
    pub(crate) fn feed(&mut self, line: &[u8]) -> Result<(), ProblemKind> {
        let malformed = |why: String| ProblemKind::Malformed { why };
        if line.is_empty() {
            return Err(malformed("empty line".into()));
        }
        let unsealed = Unsealed::new(line).map_err(|why| malformed(why.into()))?;
        let actual = unsealed.actual();
        if actual != unsealed.stated {
            return Err(ProblemKind::Altered {
                seq: seq_prefix(line),
            });
        }
        let record = unsealed.record().map_err(|e| malformed(format!("{e}")))?;
        let seq = record.seq;
        self.hash_kind(&record, actual.kind())?;
        if let Some((expected, head)) = self.expect {
            if seq != expected {
                // Forward jumps are told apart (removed or reordered) by the caller, which
                // can look ahead.
                return Err(ProblemKind::Reordered {
                    expected,
                    found: seq,
                    expected_at: None,
                });
            }
            // Seq 0 links to zeros of its own format's length.
            if record.prev != head && !(head.is_genesis() && record.prev.is_genesis()) {
                return Err(ProblemKind::BrokenLink { seq });
            }
        }
        if self
            .last
            .as_ref()
            .is_some_and(|last| last.next_file.is_some())
        {
            let why = "a record follows a rotation checkpoint in the same file".into();
            return Err(ProblemKind::Misplaced { why });
        }
        let mut next_file = None;
        match &record.body {
            Body::Decision(_) => self.counts.decisions += 1,
            Body::Authorization(_) => self.counts.authorizations += 1,
            Body::Gap(gap) => {
                self.counts.gaps += 1;
                self.counts.lost = self.counts.lost.saturating_add(gap.lost);
            }
            Body::Start(start) => {
                if start.previous == PreviousEnd::Unclean {
                    self.counts.unclean_restarts.push(seq);
                }
                if start.format.is_some_and(|format| format >= 2) {
                    self.counts.format2_from.get_or_insert(seq);
                    self.counts.origin.clone_from(&start.origin);
                }
                if start.format.is_some_and(|format| format >= 3) {
                    self.counts.format3_from.get_or_insert(seq);
                }
            }
            Body::Checkpoint(checkpoint) => {
                self.checkpoint(seq, checkpoint, &unsealed.canonical)?;
                // A walk that did not start at the first record (the writer resuming from
                // its newest file) knows neither the tree nor, after a rotation, the
                // origin: it checks the chain only.
                if let Some(note) = &checkpoint.note
                    && self.tree.is_some()
                {
                    self.tree_head(seq, note)?;
                }
                next_file.clone_from(&checkpoint.next_file);
            }
        }
        if let Some(tree) = &mut self.tree {
            tree.push(actual.leaf_of(line));
        }
        let shutdown = matches!(
            &record.body,
            Body::Checkpoint(Checkpoint {
                trigger: Trigger::Shutdown,
                ..
            })
        );
        self.counts.records += 1;
        self.expect = Some((seq.wrapping_add(1), unsealed.stated));
        self.last = Some(Last {
            seq,
            hash: unsealed.stated,
            shutdown,
            next_file,
        });
        Ok(())
    }

    /// Holds a record's hash to the format in force: the one its start record (or, for
    /// a start, itself) declares. A walk that began after the last start takes the
    /// first record's kind as the format's.
    fn hash_kind(&mut self, record: &Record, kind: HashKind) -> Result<(), ProblemKind> {
        let expected = match &record.body {
            Body::Start(start) => HashKind::of_format(start.format),
            _ => *self.hash_kind.get_or_insert(kind),
        };
        self.hash_kind = Some(expected);
        if kind == expected {
            return Ok(());
        }
        Err(ProblemKind::Malformed {
            why: format!(
                "record {} states a {} hash where the log's format uses {}",
                record.seq,
                kind.name(),
                expected.name()
            ),
        })
    }

    fn checkpoint(
        &mut self,
        seq: u64,
        cp: &Checkpoint,
        canonical: &[u8],
    ) -> Result<(), ProblemKind> {
        let counts = &mut self.counts.checkpoints;
        let Some((key, key_id)) = &self.trust else {
            if cp.signature.is_some() {
                counts.unchecked += 1;
            } else {
                counts.unsigned += 1;
            }
            return Ok(());
        };
        let problem = |why: String| ProblemKind::Signature { seq, why };
        if cp.key_id.as_deref() != Some(key_id.as_str()) {
            let signer = cp.key_id.as_deref().unwrap_or("no key");
            return Err(problem(format!(
                "signed by {signer}, not by the trusted host key {key_id}"
            )));
        }
        match chain::verify_checkpoint(canonical, key) {
            Ok(()) => {
                counts.verified += 1;
                self.counts.covered_through = Some(seq);
                Ok(())
            }
            Err(SignatureProblem::Unsigned) => Err(problem("it is not signed".into())),
            Err(SignatureProblem::Malformed) => Err(problem(
                "its signature is not a base64 Ed25519 signature".into(),
            )),
            Err(SignatureProblem::Invalid) => Err(problem(
                "its signature does not verify: the checkpoint or the chain before it was \
                 forged"
                    .into(),
            )),
        }
    }

    /// Checks a format-2 checkpoint's note: a checkpoint of the log's origin whose tree
    /// is exactly the records before it, signed by the trusted key when one is given.
    fn tree_head(&mut self, seq: u64, note: &str) -> Result<(), ProblemKind> {
        let problem = |why: String| ProblemKind::TreeHead { seq, why };
        let Some(origin) = self.counts.origin.clone() else {
            return Err(problem(
                "comes before any start record that names the log's origin".into(),
            ));
        };
        let checkpoint = match &self.trust {
            Some((key, _)) => {
                let verifier = NoteVerifier::new(&origin, **key)
                    .map_err(|e| problem(format!("cannot be checked: {e}")))?;
                let keys = NoteVerifiers::new([verifier])
                    .map_err(|e| problem(format!("cannot be checked: {e}")))?;
                tlog::Checkpoint::open(note.as_bytes(), &origin, &keys)
                    .map_err(|e| problem(format!("is refused: {e}")))?
                    .checkpoint
            }
            None => {
                let note = SignedNote::parse(note.as_bytes())
                    .map_err(|e| problem(format!("is not a signed note: {e}")))?;
                let checkpoint = tlog::Checkpoint::parse(note.text())
                    .map_err(|e| problem(format!("is not a checkpoint: {e}")))?;
                if checkpoint.origin() != origin {
                    return Err(problem(format!(
                        "names origin {:?}, not the log's {origin:?}",
                        checkpoint.origin()
                    )));
                }
                checkpoint
            }
        };
        if let Some(tree) = &self.tree
            && (checkpoint.size() != seq || *checkpoint.root() != tree.root())
        {
            return Err(problem(format!(
                "(size {}, root {}) is not the tree of the {seq} record(s) before it \
                 (root {}): a record before it was changed, or the note was taken from \
                 another history",
                checkpoint.size(),
                checkpoint.root(),
                tree.root()
            )));
        }
        self.counts.tree_heads += 1;
        Ok(())
    }

    /// Copies what was counted into a report.
    fn fill(&self, report: &mut Report) {
        let Report {
            records,
            decisions,
            authorizations,
            gaps,
            lost,
            checkpoints,
            covered_through,
            unclean_restarts,
            tree_heads,
            format2_from,
            format3_from,
            origin,
            ..
        } = self.counts.clone();
        report.tree_heads = tree_heads;
        report.format2_from = format2_from;
        report.format3_from = format3_from;
        report.origin = origin;
        report.records = records;
        report.decisions = decisions;
        report.authorizations = authorizations;
        report.gaps = gaps;
        report.lost = lost;
        report.checkpoints = checkpoints;
        report.covered_through = covered_through;
        report.unclean_restarts = unclean_restarts;
        report.head = self.last.as_ref().map(|l| (l.seq, l.hash));
        report.ends_with_shutdown = self.last.as_ref().is_some_and(|l| l.shutdown);
    }
}
