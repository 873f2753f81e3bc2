//! The agent's commands: load policy into the kernel, follow decisions, report status,
//! and stop enforcement.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use enforcer_common::{ExecEvent, decision, reason};

use crate::audit::{self, AuditLog, AuditOptions, DecisionLabels};
use crate::authz;
use crate::cgroup;
use crate::digest::FileDigest;
use crate::kernel::{self, Attachment, Enforcement, MapState};
use crate::policy::Policy;
use crate::preflight;

/// Where the kernel objects and cgroups live.
#[derive(Debug, Args)]
pub struct Location {
    /// bpffs directory holding the pinned program link and maps.
    #[arg(long, env = "ENFORCER_PIN_DIR", default_value = kernel::DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,

    /// Mount point of the cgroup v2 hierarchy; scope paths are relative to it.
    #[arg(long, env = "ENFORCER_CGROUP_ROOT", default_value = cgroup::DEFAULT_ROOT)]
    pub cgroup_root: PathBuf,
}

/// Where the state directory lives by default.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/enforcer/state";

/// Where authorizations come from.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Trust store (TOML): the keys that may sign bundles and revocations, and how many
    /// distinct keys must sign each. Only artifacts it accepts grant anything.
    #[arg(
        long,
        env = "ENFORCER_TRUST",
        value_name = "FILE",
        required_unless_present = "unsigned_policy",
        conflicts_with = "unsigned_policy"
    )]
    pub trust: Option<PathBuf>,

    /// Signed bundles and revocations: files, or directories whose *.json files are
    /// artifacts. Repeat the flag for more. A refused artifact grants nothing and is
    /// reported with the reason; the others still apply.
    #[arg(long = "artifacts", env = "ENFORCER_ARTIFACTS", value_name = "PATH")]
    pub artifacts: Vec<PathBuf>,

    /// A governed scope (cgroup path below the cgroup2 root, such as /agents.slice).
    /// Declared scopes stay governed when no live authorization covers them, and then
    /// deny every exec; scopes named by bundles are governed too. Repeat for more.
    #[arg(long = "scope", value_name = "CGROUP")]
    pub scopes: Vec<String>,

    /// Accepted serials and revocations, kept across restarts (rollback protection).
    #[arg(long, env = "ENFORCER_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,

    /// How far artifact validity windows stretch to allow for clock differences.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub clock_skew: std::time::Duration,

    /// DEVELOPMENT AND TESTS ONLY: an unsigned local policy file (TOML) instead of signed
    /// artifacts. Refused in production mode: under systemd (INVOCATION_ID set) or with
    /// ENFORCER_PRODUCTION=1.
    #[arg(long, value_name = "FILE")]
    pub unsigned_policy: Option<PathBuf>,
}

/// Arguments of `load` and `run`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub location: Location,

    #[command(flatten)]
    pub policy: PolicyArgs,

    /// Skip the startup self-test (a trial exec granted and then denied in a throwaway
    /// scope). Only for kernels where the test itself cannot run.
    #[arg(long)]
    pub skip_self_test: bool,
}

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub load: LoadArgs,

    /// Print decisions as JSON lines instead of text.
    #[arg(long)]
    pub json: bool,

    /// Directory of the tamper-evident audit log (hash-chained JSON Lines).
    #[arg(long, env = "ENFORCER_AUDIT_DIR", default_value = audit::DEFAULT_DIR)]
    pub audit_dir: PathBuf,

    /// Host key (Ed25519, from `enforcer key generate`) that signs audit checkpoints.
    /// Defaults to /etc/enforcer/audit-host.key when that file exists; without a key,
    /// checkpoints are unsigned and prove nothing against whoever can edit the log.
    #[arg(long, env = "ENFORCER_HOST_KEY", value_name = "FILE")]
    pub host_key: Option<PathBuf>,
}

/// Arguments of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub location: Location,

    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// Loads (or reuses) the program, applies the policy, and returns the maps' owner and
/// labels for decisions.
fn load(args: &LoadArgs) -> anyhow::Result<(Enforcement, Labels)> {
    if let Err(problems) = preflight::check(&args.location.cgroup_root) {
        for p in &problems {
            tracing::error!("{p}");
        }
        bail!("enforcement cannot start on this host: {}", join(&problems));
    }
    if let Some(why) = crate::ima::policy_in_force() {
        // bpf_ima_file_hash then returns IMA's cached digest, which IMA does not refresh
        // after truncate(2) or writes through a shared mapping.
        tracing::warn!("{why}: exec digests may come from IMA's cache, which misses some file changes");
    }
    let policy = policy_from(&args.policy)?;
    let mut enforcement = Enforcement::open_or_load(&args.location.pin_dir)?;
    let self_test_scope = if args.skip_self_test {
        None
    } else {
        let id = preflight::self_test(&mut enforcement, &args.location.cgroup_root)?;
        tracing::info!("self-test passed: granted exec allowed, ungranted exec denied");
        Some(id)
    };
    let desired = kernel::resolve(&policy, &args.location.cgroup_root)?;
    let stats = enforcement.apply(&desired)?;
    tracing::info!(
        scopes = stats.scopes,
        grants = stats.grants,
        removed_scopes = stats.removed_scopes,
        removed_grants = stats.removed_grants,
        reused = enforcement.attachment() == Attachment::Reused,
        "policy applied"
    );
    let mut labels = Labels::new(&policy, &desired, &args.location.cgroup_root);
    if let Some(id) = self_test_scope {
        labels.scopes.insert(id, "(startup self-test)".into());
    }
    Ok((enforcement, labels))
}

/// Whether this agent runs as a production service, where unsigned policy is refused.
fn production_mode() -> bool {
    std::env::var_os("INVOCATION_ID").is_some()
        || std::env::var("ENFORCER_PRODUCTION").is_ok_and(|v| v == "1")
}

/// The policy to enforce: verified artifacts, or (development only) an unsigned file.
fn policy_from(args: &PolicyArgs) -> anyhow::Result<Policy> {
    if let Some(file) = &args.unsigned_policy {
        if production_mode() {
            bail!(
                "--unsigned-policy is refused in production mode (running under systemd, or \
                 ENFORCER_PRODUCTION=1): grant execution with signed bundles (--trust, --artifacts)"
            );
        }
        tracing::warn!(file = %file.display(), "using an UNSIGNED local policy file: for development and tests only");
        return Ok(Policy::from_local_file(file)?);
    }
    let trust = args.trust.clone().context("--trust is required")?;
    let declared_scopes = args
        .scopes
        .iter()
        .map(|s| s.parse())
        .collect::<Result<Vec<_>, _>>()
        .context("--scope")?;
    let sources = authz::Sources {
        trust,
        artifacts: args.artifacts.clone(),
        state_dir: args.state_dir.clone(),
        declared_scopes,
        clock_skew: args.clock_skew,
    };
    let loaded = authz::load(&sources, std::time::SystemTime::now())?;
    for b in &loaded.accepted {
        tracing::info!(
            file = %b.path.display(),
            issuer = %b.issuer,
            bundle_id = %b.bundle_id,
            serial = b.serial,
            id = %b.id,
            new = b.new,
            "bundle accepted"
        );
    }
    for (path, why) in &loaded.refused {
        eprintln!("refused: {}: {why}", path.display());
    }
    for (scope, spec) in &loaded.policy.scopes {
        if spec.grants.is_empty() && spec.mode == crate::policy::Mode::Enforce {
            tracing::warn!(%scope, "no live authorization covers this scope: every exec in it is denied");
        }
    }
    Ok(loaded.policy)
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// `enforcer load`: apply and exit; enforcement stays on through the pins.
pub fn load_command(args: &LoadArgs) -> anyhow::Result<ExitCode> {
    let (enforcement, _) = load(args)?;
    println!(
        "enforcement active: program pinned at {}",
        enforcement.pin_dir().display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `enforcer run`: apply, then follow decisions until SIGINT or SIGTERM. Stopping leaves
/// enforcement pinned and on.
pub fn run_command(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let (mut enforcement, labels) = load(&args.load)?;
    // Governed tasks may not signal the agent while it runs.
    let me = std::process::id();
    enforcement.protect(me)?;
    let ring = enforcement.take_events().context("decision ring buffer already taken")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let host_key = match &args.host_key {
        Some(path) => Some(path.clone()),
        None => Some(PathBuf::from(audit::DEFAULT_HOST_KEY)).filter(|p| p.exists()),
    };
    let host_key = host_key
        .map(|p| crate::trust::SigningKey::load(&p).with_context(|| format!("audit host key {}", p.display())))
        .transpose()?;
    if host_key.is_none() {
        tracing::warn!("no audit host key: checkpoints are unsigned (see --host-key)");
    }
    let log = AuditLog::open(&args.audit_dir, host_key, AuditOptions::default())
        .with_context(|| format!("opening the audit log in {}", args.audit_dir.display()))?;
    let followed = runtime.block_on(follow(ring, &enforcement, &labels, args.json, log));
    enforcement.unprotect(me)?;
    followed?;
    tracing::info!("agent stopping; enforcement stays pinned and on");
    Ok(ExitCode::SUCCESS)
}

/// Records every decision in the audit log (and on stdout) until SIGINT or SIGTERM.
async fn follow(
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    enforcement: &Enforcement,
    labels: &Labels,
    json: bool,
    mut log: AuditLog,
) -> anyhow::Result<()> {
    use tokio::io::unix::AsyncFd;
    use tokio::signal::unix::{SignalKind, signal};

    // SAFETY: the ring buffer owns its fd and moves into the AsyncFd, so the fd stays open
    // for as long as it is registered.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow::anyhow!("watching the decision ring buffer: {e}"))?;
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut dropped_seen = enforcement.dropped_events()?;
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
    println!("following decisions (Ctrl-C to stop; enforcement stays on)");
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = ticker.tick() => log.tick()?,
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting for decisions")?;
                let rb = guard.get_inner_mut();
                while let Some(item) = rb.next() {
                    let Some(event) = decode(&item) else {
                        tracing::error!(len = item.len(), "malformed decision record");
                        continue;
                    };
                    log.append_decision(&event, &labels.audit(&event))?;
                    println!("{}", labels.render(&event, json));
                }
                guard.clear_ready();
                // Losses are recorded where they happened in the stream, as a gap.
                let dropped = enforcement.dropped_events()?;
                if dropped > dropped_seen {
                    tracing::error!(lost = dropped - dropped_seen, "decisions lost: ring buffer was full");
                    log.append_gap(dropped - dropped_seen)?;
                    dropped_seen = dropped;
                }
                log.flush()?;
            }
        }
    }
    log.close()?;
    Ok(())
}

fn decode(bytes: &[u8]) -> Option<ExecEvent> {
    (bytes.len() >= size_of::<ExecEvent>())
        // SAFETY: ExecEvent is plain repr(C) data valid for any bit pattern, and the length
        // was checked; read_unaligned copes with any alignment.
        .then(|| unsafe { bytes.as_ptr().cast::<ExecEvent>().read_unaligned() })
}

/// Names for ids and digests, so decisions read as paths and programs.
pub struct Labels {
    scopes: HashMap<u64, String>,
    names: HashMap<(u64, [u8; 32]), String>,
}

impl Labels {
    fn new(policy: &Policy, desired: &MapState, cgroup_root: &Path) -> Self {
        let mut scopes = HashMap::new();
        let mut names = HashMap::new();
        for (path, spec) in &policy.scopes {
            let Ok(id) = cgroup::id_of(&cgroup::dir_of(cgroup_root, path), path.as_str()) else { continue };
            if desired.scopes.contains_key(&id) {
                scopes.insert(id, path.to_string());
            }
            for g in &spec.grants {
                if let Some(name) = &g.name {
                    names.insert((id, g.digest.0), name.clone());
                }
            }
        }
        Self { scopes, names }
    }

    fn audit(&self, e: &ExecEvent) -> DecisionLabels<'_> {
        DecisionLabels {
            scope: self.scopes.get(&e.scope_id).map(String::as_str),
            grant_name: self.names.get(&(e.scope_id, e.digest)).map(String::as_str),
        }
    }

    fn render(&self, e: &ExecEvent, json: bool) -> String {
        let what = enforcer_common::hook::NAMES.get(e.hook as usize).copied().unwrap_or("unknown");
        let verdict = match e.decision {
            decision::ALLOW => "allow",
            decision::DENY => "deny",
            decision::WOULD_DENY => "would-deny",
            _ => "unknown",
        };
        let path = cstr(&e.path);
        let digest = FileDigest(e.digest);
        let scope = self.scopes.get(&e.scope_id).cloned().unwrap_or_else(|| e.scope_id.to_string());
        if json {
            serde_json::json!({
                "decision": verdict,
                "reason": reason::name(e.reason),
                "hook": what,
                "path": path,
                "sha256": digest.to_string(),
                "name": self.names.get(&(e.scope_id, e.digest)),
                "exec_id": e.exec_id,
                "parent_exec_id": e.parent_exec_id,
                "pid": e.pid,
                "tgid": e.tgid,
                "ppid": e.ppid,
                "uid": e.uid,
                "gid": e.gid,
                "scope": scope,
                "cgroup_id": e.cgroup_id,
                "auth_serial": e.auth_serial,
                "auth_id": hex::encode(e.auth_id),
                "boot_ns": e.boot_ns,
            })
            .to_string()
        } else {
            let path = if e.hook == enforcer_common::hook::BPRM_CHECK_SECURITY {
                path
            } else {
                format!("{what}: {path}")
            };
            format!(
                "{verdict:<10} {path}  [{reason}] pid={pid} uid={uid} scope={scope} sha256={short}",
                reason = reason::name(e.reason),
                pid = e.tgid,
                uid = e.uid,
                short = &digest.to_string()[..16],
            )
        }
    }
}

fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// `enforcer status`.
pub fn status_command(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let pin_dir = &args.location.pin_dir;
    if !kernel::is_pinned(pin_dir) {
        if args.json {
            println!("{}", serde_json::json!({ "enforcing": false, "pin_dir": pin_dir }));
        } else {
            println!("not enforcing: no program pinned at {}", pin_dir.display());
        }
        return Ok(ExitCode::from(3));
    }
    let enforcement = Enforcement::open_pinned(pin_dir)?;
    let state = enforcement.read()?;
    let dropped = enforcement.dropped_events()?;
    let mut scopes: Vec<_> = state
        .scopes
        .iter()
        .map(|(id, p)| {
            let path = cgroup::find_path(&args.location.cgroup_root, *id, 10_000)
                .and_then(|p| p.strip_prefix(&args.location.cgroup_root).ok().map(|r| format!("/{}", r.display())))
                .unwrap_or_else(|| format!("(cgroup id {id}, path not found)"));
            let grants = state.grants.keys().filter(|k| k.scope_id == *id).count();
            let mode = if p.mode == enforcer_common::mode::MONITOR { "monitor" } else { "enforce" };
            (path, *id, mode, grants)
        })
        .collect();
    scopes.sort();
    if args.json {
        let list: Vec<_> = scopes
            .iter()
            .map(|(path, id, mode, grants)| {
                serde_json::json!({ "path": path, "cgroup_id": id, "mode": mode, "grants": grants })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "enforcing": true, "pin_dir": pin_dir, "scopes": list, "dropped_events": dropped })
        );
    } else {
        println!("enforcing: program pinned at {}", pin_dir.display());
        for (path, id, mode, grants) in &scopes {
            println!("  scope {path} (cgroup {id}): {mode}, {grants} grant(s)");
            if *grants == 0 && *mode == "enforce" {
                println!("    no grants: every exec in this scope is denied");
            }
        }
        if dropped > 0 {
            println!("  {dropped} decision(s) lost because the ring buffer was full");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `enforcer unload`: the operator's way out. Removes the pins; the kernel detaches the
/// program once nothing else holds it.
pub fn unload_command(location: &Location) -> anyhow::Result<ExitCode> {
    if kernel::unload(&location.pin_dir)? {
        println!("enforcement stopped: pins removed from {}", location.pin_dir.display());
    } else {
        println!("nothing to stop: no pins in {}", location.pin_dir.display());
    }
    Ok(ExitCode::SUCCESS)
}
