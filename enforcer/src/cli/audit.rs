//! `enforcer audit`: check the audit log, read it, follow it, and trace an exec's lineage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::audit::proof::{self, Selector};
use crate::audit::query::{self, Entry, Filter, Step};
use crate::audit::replay;
use crate::audit::tlog::{self, NoteVerifier, NoteVerifiers};
use crate::audit::{self, ProblemKind, Report, verify_dir};
use crate::authz::trust;

/// Arguments of `enforcer audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Directory of the audit log.
    #[arg(long, global = true, env = "ENFORCER_AUDIT_DIR", default_value = audit::DEFAULT_DIR)]
    pub dir: PathBuf,

    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain across all files and every checkpoint signature. Exit 0: the
    /// chain holds; 1: a record was altered, removed, reordered, cut off or forged (the
    /// first one is named); 2 with --strict: intact but not every record is proven.
    Verify(VerifyArgs),
    /// Print records, oldest first.
    Show(ShowArgs),
    /// Print the last records, and with -f keep printing new ones.
    Tail(TailArgs),
    /// Print the ancestry of an exec, with the authorization each step ran under.
    Lineage(LineageArgs),
    /// Write a self-contained proof of one record (an exec, a record by seq, or the
    /// acceptance of an artifact) that `enforcer proof verify` checks offline.
    Prove(ProveArgs),
    /// Prove that the log today extends an older checkpoint: nothing before it was
    /// rewritten, reordered or cut off.
    Consistency(ConsistencyArgs),
    /// Decide the recorded execs and executable mappings again: under other authorizations
    /// (--with, --without), printing what would change; or with --as-recorded under what
    /// was in force at each moment, exiting 1 if any decision differs from the recorded one.
    /// Only content decisions (granted, not granted, expired) are decided again; the others
    /// depend on kernel state the log does not hold and are counted as recorded.
    Replay(ReplayArgs),
    /// Print the log's checkpoint key as a vkey (`origin+id+key`), the line a witness's
    /// `--logs` file and other C2SP tools take.
    Vkey(VkeyArgs),
}

/// Arguments of `audit replay`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("under").required(true).multiple(true).args(["with", "without", "as_recorded"])))]
pub struct ReplayArgs {
    /// A bundle (signed or not) to decide under, as if in force from the log's start; it
    /// replaces the recorded bundles with its issuer and bundle id. Repeat for several.
    #[arg(long, value_name = "CANDIDATE", num_args = 1..)]
    pub with: Vec<PathBuf>,
    /// A recorded authorization to leave out: its artifact id, or a prefix of it.
    #[arg(long, value_name = "ARTIFACT-ID", num_args = 1..)]
    pub without: Vec<String>,
    /// Decide under what was in force at each moment and report every decision that
    /// differs from the recorded one (exit 1 if any).
    #[arg(long, conflicts_with_all = ["with", "without"])]
    pub as_recorded: bool,
    /// Only decisions since this time: RFC 3339 or an age (10m, 2h).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only decisions in this scope: its path or its cgroup id.
    #[arg(long, value_name = "SCOPE")]
    pub scope: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `audit vkey`.
#[derive(Debug, Args)]
pub struct VkeyArgs {
    /// The host's public key (`audit-host.pub`).
    #[arg(long, value_name = "HOST.pub")]
    pub key: PathBuf,
    /// The log's origin, as the agent's `audit_origin` (default: this host's
    /// `<hostname>/enforcer-audit`).
    #[arg(long, value_name = "ORIGIN")]
    pub origin: Option<String>,
}

/// Arguments of `audit prove`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["exec", "seq", "artifact"])))]
pub struct ProveArgs {
    /// The exec decision `BOOT_ID:EXEC_ID` (as `audit show` prints them).
    #[arg(long, value_name = "BOOT_ID:EXEC_ID")]
    pub exec: Option<String>,
    /// The record with this sequence number.
    #[arg(long, value_name = "N")]
    pub seq: Option<u64>,
    /// The agent's acceptance of the artifact whose id (hex, or a prefix of it) this is.
    #[arg(long, value_name = "ID")]
    pub artifact: Option<String>,
    /// Where to write the proof; standard output by default.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Arguments of `audit consistency`.
#[derive(Debug, Args)]
pub struct ConsistencyArgs {
    /// An older signed checkpoint of this log (the `checkpoint` file as it was, or one a
    /// witness holds).
    #[arg(long, value_name = "CHECKPOINT")]
    pub from: PathBuf,
    /// The host's public key (`.pub`): both checkpoints must be signed by it.
    #[arg(long, value_name = "HOST.pub")]
    pub trust: Option<PathBuf>,
}

/// Arguments of `audit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The host's public key (`.pub`): every checkpoint must be signed by it. Without it,
    /// only the chain is checked, which anyone able to edit the files can recompute.
    #[arg(long, value_name = "HOST.pub")]
    pub trust: Option<PathBuf>,

    /// Exit 2 unless a trusted checkpoint covers every record.
    #[arg(long)]
    pub strict: bool,

    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `audit show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Only decisions that denied, or would have in monitor mode (gaps are always shown).
    #[arg(long)]
    pub denied: bool,

    /// Only decisions in this scope: its path (as in the policy) or its cgroup id.
    #[arg(long, value_name = "SCOPE")]
    pub scope: Option<String>,

    /// Only records since this time: RFC 3339 (2025-01-31T12:00:00Z) or an age (10m, 2h).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,

    /// Also agent starts and checkpoints.
    #[arg(long)]
    pub all: bool,

    /// Print records as stored (JSON Lines).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `audit tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// How many of the last records to print first.
    #[arg(short = 'n', long, default_value_t = 10)]
    pub lines: usize,

    /// Keep printing records as they are written (across file rotations) until Ctrl-C.
    #[arg(short, long)]
    pub follow: bool,

    /// Print records as stored (JSON Lines).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `audit lineage`.
#[derive(Debug, Args)]
pub struct LineageArgs {
    /// Exec id, as in `audit show` (`exec=`).
    pub exec_id: u64,

    /// Boot the exec id belongs to; by default the latest boot in the log that has it.
    #[arg(long, value_name = "BOOT_ID")]
    pub boot_id: Option<String>,

    /// Print the records of the lineage as stored in the log's JSON form.
    #[arg(long)]
    pub json: bool,
}

/// Runs one `audit` subcommand.
pub(super) fn command(args: &AuditArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.dir;
    match &args.command {
        AuditCommand::Verify(a) => verify_command(dir, a),
        AuditCommand::Show(a) => show_command(dir, a),
        AuditCommand::Tail(a) => tail_command(dir, a),
        AuditCommand::Lineage(a) => lineage_command(dir, a),
        AuditCommand::Prove(a) => prove_command(dir, a),
        AuditCommand::Consistency(a) => consistency_command(dir, a),
        AuditCommand::Replay(a) => replay_command(dir, a),
        AuditCommand::Vkey(a) => {
            let key = trust::load_public_key(&a.key)?;
            let origin = match &a.origin {
                Some(origin) => origin.clone(),
                None => audit::writer::default_origin()?,
            };
            println!("{}", NoteVerifier::new(&origin, key)?.to_vkey());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn replay_command(dir: &Path, args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    if !dir.is_dir() {
        anyhow::bail!(
            "no audit log at {}: the directory does not exist",
            dir.display()
        );
    }
    let what_if = replay::WhatIf {
        with: args
            .with
            .iter()
            .map(|p| replay::Candidate::load(p))
            .collect::<Result<_, _>>()?,
        without: args.without.clone(),
    };
    let selection = replay::Selection {
        scope: args.scope.clone(),
        since: args
            .since
            .as_deref()
            .map(|s| query::parse_since(s, SystemTime::now()))
            .transpose()?,
    };
    let report = replay::replay(dir, &what_if, args.as_recorded, &selection)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_replay(&report, args.as_recorded);
    }
    warn_skipped(report.skipped_lines);
    Ok(if args.as_recorded && !report.mismatches.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_replay(report: &replay::Report, as_recorded: bool) {
    println!(
        "{} decision(s) selected, {} decided again",
        report.decisions, report.redecided
    );
    for (why, count) in &report.as_recorded {
        println!(
            "  {count} kept as recorded ({why}): not a content decision the log can decide again"
        );
    }
    if as_recorded {
        println!(
            "{} mismatch(es) with the recorded decisions",
            report.mismatches.len()
        );
        for m in &report.mismatches {
            println!(
                "mismatch seq {} {} {} {} ({}): recorded {} ({}), replayed {} ({})",
                m.seq,
                m.time,
                m.decision_ref,
                m.program,
                m.hook,
                m.recorded.decision,
                m.recorded.reason,
                m.replayed.decision,
                m.replayed.reason
            );
        }
        return;
    }
    for (title, changes) in [
        ("newly denied", &report.newly_denied),
        ("newly allowed", &report.newly_allowed),
    ] {
        let total: u64 = changes.iter().map(|c| c.count).sum();
        println!(
            "{title}: {total} decision(s) in {} program(s)",
            changes.len()
        );
        for c in changes {
            println!(
                "  {}: {} decision(s) {} -> {} ({}), e.g. {}",
                c.program,
                c.count,
                c.recorded,
                c.replayed.decision,
                c.replayed.reason,
                c.examples.join(", ")
            );
        }
    }
}

fn verify_command(dir: &Path, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let key = args
        .trust
        .as_deref()
        .map(trust::load_public_key)
        .transpose()?;
    if !dir.is_dir() {
        anyhow::bail!(
            "no audit log at {}: the directory does not exist",
            dir.display()
        );
    }
    let report = verify_dir(dir, key.as_ref())?;
    let warnings = warnings(&report, key.is_some());
    if args.json {
        println!("{}", report_json(&report, &warnings));
    } else {
        print_report(&report, key.as_ref().map(trust::KeyId::of), &warnings);
    }
    Ok(if !report.is_intact() {
        ExitCode::from(1)
    } else if args.strict && (key.is_none() || report.uncovered() > 0) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// What an intact log still does not prove.
fn warnings(report: &Report, trusted: bool) -> Vec<String> {
    let mut out = Vec::new();
    if !trusted && report.records > 0 {
        out.push(
            "checkpoint signatures were not checked (pass --trust HOST.pub): anyone able to \
             edit the files could have rewritten the whole chain"
                .to_owned(),
        );
    }
    let uncovered = report.uncovered();
    if trusted && uncovered > 0 {
        let after = report
            .covered_through
            .map_or_else(|| "the start".to_owned(), |s| format!("seq {s}"));
        out.push(format!(
            "{uncovered} record(s) after {after} are not yet covered by a signed checkpoint: \
             records cut off from the end would not show"
        ));
    }
    if report.is_intact() && report.records > 0 && !report.ends_with_shutdown {
        out.push(
            "the log does not end with a shutdown checkpoint: the agent is running, crashed, \
             or the end was cut off"
                .to_owned(),
        );
    }
    for seq in &report.unclean_restarts {
        out.push(format!(
            "the agent restarted at seq {seq} after an unclean end (crash, or records cut \
             off while it was down)"
        ));
    }
    for r in &report.recovered {
        out.push(format!(
            "{} ends with a partial line ({} bytes at offset {}) left by a crash, acknowledged \
             when the agent restarted",
            r.file, r.bytes, r.offset
        ));
    }
    out
}

fn print_report(report: &Report, key: Option<trust::KeyId>, warnings: &[String]) {
    match &report.problem {
        None => {
            let head = report.head.map_or_else(
                || "empty".to_owned(),
                |(seq, hash)| format!("seq 0..={seq}, head {}", &hash.to_string()[..16]),
            );
            println!(
                "OK: {} record(s) in {} file(s), {head}",
                report.records, report.files
            );
        }
        Some(problem) => {
            println!("TAMPERED: {problem}");
            if matches!(problem.kind, ProblemKind::CutOff { .. }) {
                println!("  (if the agent is writing this file right now, run verify again)");
            }
            println!("  {} record(s) before it check out", report.records);
        }
    }
    println!(
        "  {} decision(s), {} authorization change(s), {} gap record(s) ({} decision(s) lost)",
        report.decisions, report.authorizations, report.gaps, report.lost
    );
    let c = report.checkpoints;
    match key {
        Some(id) => println!("  {} checkpoint(s) verified with host key {id}", c.verified),
        None => {
            println!(
                "  {} signed checkpoint(s) not checked, {} unsigned",
                c.unchecked, c.unsigned
            )
        }
    }
    match (report.format2_from, &report.origin) {
        (Some(from), Some(origin)) => println!(
            "  format 2 from seq {from}: {} tree head(s) match the records ({}), origin {origin}",
            report.tree_heads,
            if key.is_some() {
                "each signed by the host key"
            } else {
                "their signatures not checked without --trust"
            }
        ),
        _ => println!("  format 1 (hash chain only, no Merkle tree)"),
    }
    if let Some(from) = report.format3_from {
        println!("  format 3 from seq {from}: each record's hash is its leaf in the tree");
    }
    for w in warnings {
        println!("  warning: {w}");
    }
}

fn report_json(report: &Report, warnings: &[String]) -> serde_json::Value {
    let c = report.checkpoints;
    serde_json::json!({
        "intact": report.is_intact(),
        "problem": report.problem.as_ref().map(|p| serde_json::json!({
            "file": p.file,
            "line": p.line,
            "message": p.kind.to_string(),
        })),
        "files": report.files,
        "records": report.records,
        "decisions": report.decisions,
        "authorizations": report.authorizations,
        "gaps": report.gaps,
        "lost": report.lost,
        "checkpoints": { "verified": c.verified, "unchecked": c.unchecked, "unsigned": c.unsigned },
        "head_seq": report.head.map(|(seq, _)| seq),
        "head_hash": report.head.map(|(_, hash)| hash.to_string()),
        "covered_through": report.covered_through,
        "uncovered": report.uncovered(),
        "ends_with_shutdown": report.ends_with_shutdown,
        "format2_from": report.format2_from,
        "format3_from": report.format3_from,
        "origin": report.origin,
        "tree_heads": report.tree_heads,
        "warnings": warnings,
    })
}

fn show_command(dir: &Path, args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let since = args
        .since
        .as_deref()
        .map(|s| query::parse_since(s, SystemTime::now()))
        .transpose()?;
    let filter = Filter {
        denied: args.denied,
        decision: None,
        scope: args.scope.clone(),
        since,
        all: args.all,
    };
    let mut out = std::io::stdout().lock();
    let mut write_error = None;
    let skipped = query::read_dir(dir, |e| {
        if write_error.is_none() && filter.matches(&e.record) {
            write_error = print_entry(&mut out, &e, args.json).err();
        }
    })?;
    if let Some(e) = write_error {
        return broken_pipe_is_fine(e);
    }
    warn_skipped(skipped);
    Ok(ExitCode::SUCCESS)
}

fn tail_command(dir: &Path, args: &TailArgs) -> anyhow::Result<ExitCode> {
    // Position the follower before reading the last records, so nothing written in
    // between is missed (at worst a record shows twice).
    let mut follower = args
        .follow
        .then(|| query::Follower::at_end(dir))
        .transpose()?;
    let mut out = std::io::stdout().lock();
    for e in query::last_records(dir, args.lines)? {
        if let Err(e) = print_entry(&mut out, &e, args.json) {
            return broken_pipe_is_fine(e);
        }
    }
    let Some(follower) = follower.as_mut() else {
        return Ok(ExitCode::SUCCESS);
    };
    loop {
        let mut write_error = None;
        follower.poll(|e| {
            if write_error.is_none() {
                write_error = print_entry(&mut out, &e, args.json).err();
            }
        })?;
        if let Some(e) = write_error {
            return broken_pipe_is_fine(e);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn print_entry(out: &mut impl std::io::Write, e: &Entry, json: bool) -> std::io::Result<()> {
    if json {
        writeln!(out, "{}", e.raw)?;
    } else {
        writeln!(out, "{}", query::render(&e.record))?;
    }
    out.flush()
}

/// `enforcer audit show | head` is normal use, not an error.
fn broken_pipe_is_fine(e: std::io::Error) -> anyhow::Result<ExitCode> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(e).context("writing to standard output")
    }
}

fn warn_skipped(skipped: u64) {
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "lines that are not audit records were skipped; run `enforcer audit verify`"
        );
    }
}

fn lineage_command(dir: &Path, args: &LineageArgs) -> anyhow::Result<ExitCode> {
    let lineage = query::lineage(dir, args.exec_id, args.boot_id.as_deref())?;
    if args.json {
        for step in &lineage.steps {
            let value = match step {
                Step::Logged {
                    seq,
                    time,
                    decision,
                } => serde_json::json!({
                    "seq": seq, "time": time, "decision": decision,
                }),
                Step::Missing { exec_id } => {
                    serde_json::json!({ "exec_id": exec_id, "missing": true })
                }
            };
            println!("{value}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "exec {} on boot {}, then its ancestors:",
        args.exec_id, lineage.boot_id
    );
    for step in &lineage.steps {
        match step {
            Step::Logged {
                time, decision: d, ..
            } => {
                let scope = d
                    .scope
                    .clone()
                    .unwrap_or_else(|| format!("cgroup {}", d.scope_id));
                println!(
                    "  exec {}  {} {}  [{}]  {time}",
                    d.exec_id, d.decision, d.path, d.reason
                );
                println!(
                    "      pid {} (parent pid {}) uid {} gid {} in {scope}",
                    d.tgid, d.ppid, d.uid, d.gid
                );
                let under = match (&d.auth_id, d.auth_serial) {
                    (Some(id), serial) => format!("authorization serial {serial}, id {id}"),
                    (None, 0) => "no authorization".to_owned(),
                    (None, serial) => format!("authorization serial {serial}"),
                };
                let grant = d
                    .grant
                    .as_ref()
                    .map(|g| format!(", grant {g:?}"))
                    .unwrap_or_default();
                println!("      ran under {under}{grant}; sha256 {}", d.sha256);
            }
            Step::Missing { exec_id } => println!(
                "  exec {exec_id}  not in the log: it ran before the log begins, or its \
                 decision was lost (see gap records)"
            ),
        }
    }
    if let Some(Step::Logged { decision, .. }) = lineage.steps.last()
        && decision.parent_exec_id == 0
    {
        println!("  (no earlier exec: started before enforcement, or outside governed scopes)");
    }
    if !lineage.other_boots.is_empty() {
        println!(
            "exec id {} also occurs on boot(s) {}; choose with --boot-id",
            args.exec_id,
            lineage.other_boots.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn prove_command(dir: &Path, args: &ProveArgs) -> anyhow::Result<ExitCode> {
    let selector = match (&args.exec, args.seq, &args.artifact) {
        (Some(exec), _, _) => {
            let (boot_id, exec_id) = exec
                .rsplit_once(':')
                .and_then(|(boot, id)| Some((boot.to_owned(), id.parse().ok()?)))
                .with_context(|| format!("--exec {exec:?} is not BOOT_ID:EXEC_ID"))?;
            Selector::Exec { boot_id, exec_id }
        }
        (None, Some(seq), _) => Selector::Seq(seq),
        (None, None, Some(id)) => Selector::Artifact(
            id.strip_prefix("sha3-512:")
                .unwrap_or(id)
                .to_ascii_lowercase(),
        ),
        (None, None, None) => anyhow::bail!("say which record: --exec, --seq or --artifact"),
    };
    let proof = proof::prove(dir, &selector)?;
    let mut text = serde_json::to_string_pretty(&proof)?;
    text.push('\n');
    match &args.out {
        Some(path) => {
            crate::fsutil::replace_atomically(path, text.as_bytes(), 0o644)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "proof of {selector} (leaf {} of {}) written to {}",
                proof.index,
                proof.origin,
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn consistency_command(dir: &Path, args: &ConsistencyArgs) -> anyhow::Result<ExitCode> {
    let old =
        std::fs::read(&args.from).with_context(|| format!("reading {}", args.from.display()))?;
    // Signatures first: an unsigned or forged old checkpoint proves nothing either way.
    if let Some(path) = &args.trust {
        let key = trust::load_public_key(path)?;
        let current = std::fs::read(dir.join(audit::tree::CHECKPOINT_FILE))
            .with_context(|| format!("reading the log's checkpoint in {}", dir.display()))?;
        for (what, note) in [("old", &old), ("newest", &current)] {
            let origin = tlog::SignedNote::parse(note)
                .map_err(anyhow::Error::from)
                .and_then(|n| Ok(tlog::Checkpoint::parse(n.text())?.origin().to_owned()))
                .with_context(|| format!("the {what} checkpoint is not a checkpoint note"))?;
            let keys = NoteVerifiers::new([NoteVerifier::new(&origin, key)?])?;
            tlog::Checkpoint::open(note, &origin, &keys).with_context(|| {
                format!("the {what} checkpoint is not signed by {}", path.display())
            })?;
        }
    }
    let extension = match proof::prove_consistency(dir, &old) {
        Ok(extension) => extension,
        Err(
            e @ (proof::ConsistencyError::Inconsistent(_) | proof::ConsistencyError::Shrunk { .. }),
        ) => {
            println!("INCONSISTENT: {e}");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    println!(
        "CONSISTENT: the log {} at size {} extends the checkpoint of size {}",
        extension.new.origin(),
        extension.new.size(),
        extension.old.size()
    );
    println!(
        "  old root {}, new root {}",
        extension.old.root().to_base64(),
        extension.new.root().to_base64()
    );
    println!("  consistency proof ({} hashes):", extension.proof.len());
    for hash in &extension.proof {
        println!("    {}", hash.to_base64());
    }
    if args.trust.is_none() {
        println!("  warning: without --trust the checkpoints' signatures were not checked");
    }
    Ok(ExitCode::SUCCESS)
}
