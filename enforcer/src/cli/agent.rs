//! The agent's commands: load policy into the kernel, follow decisions, report status,
//! and stop enforcement.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;

use crate::agent::{Agent, Invocation, Settings};
use crate::host::cgroup;
use crate::kernel::{self, Enforcement};
use crate::paths;
use crate::service::control::protocol::{Listing, PushReport, StatusReport};
use crate::service::control::{self, Reply, Request};

/// Where the kernel objects and cgroups live.
#[derive(Debug, Args)]
pub struct Location {
    /// bpffs directory holding the pinned program link and maps.
    #[arg(long, env = "ENFORCER_PIN_DIR", default_value = paths::PIN_DIR)]
    pub pin_dir: PathBuf,

    /// Mount point of the cgroup v2 hierarchy; scope paths are relative to it.
    #[arg(long, env = "ENFORCER_CGROUP_ROOT", default_value = paths::CGROUP_ROOT)]
    pub cgroup_root: PathBuf,
}

/// Arguments of `load` and `run`: the agent's settings as flags (each overrides the
/// configuration file, also after a reload), and what only the command line says.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The agent's configuration file (TOML; see docs/service.md). Without it, the
    /// defaults and the flags apply. Flags win over the file, also after a reload.
    #[arg(long, env = "ENFORCER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub settings: Settings,

    /// More signed bundles and revocations: files, or directories whose *.json files are
    /// artifacts. Repeat the flag for more. A refused artifact grants nothing and is
    /// reported with the reason; the others still apply.
    #[arg(long = "artifacts", env = "ENFORCER_ARTIFACTS", value_name = "PATH")]
    pub artifacts: Vec<PathBuf>,

    /// DEVELOPMENT AND TESTS ONLY: an unsigned local policy file (TOML) instead of signed
    /// artifacts. Refused in production mode: under systemd (INVOCATION_ID set) or with
    /// ENFORCER_PRODUCTION=1.
    #[arg(long, value_name = "FILE")]
    pub unsigned_policy: Option<PathBuf>,
}

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub load: LoadArgs,

    /// Print decisions as JSON lines instead of text.
    #[arg(long)]
    pub json: bool,

    /// Print no decisions on stdout (they still go to the audit log). The default under
    /// systemd, where stdout is the journal.
    #[arg(long, conflicts_with = "json")]
    pub quiet: bool,
}

/// Where the running agent listens.
#[derive(Debug, Args)]
pub struct SocketArgs {
    /// The agent's control socket.
    #[arg(long, env = "ENFORCER_SOCKET", default_value = paths::SOCKET)]
    pub socket: PathBuf,
}

/// Arguments of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub location: Location,

    #[command(flatten)]
    pub socket: SocketArgs,

    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `push` and `revoke`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The signed artifact file.
    pub file: PathBuf,

    #[command(flatten)]
    pub socket: SocketArgs,
}

/// Arguments of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub socket: SocketArgs,

    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

fn invocation(args: &LoadArgs, run: Option<&RunArgs>) -> anyhow::Result<Invocation> {
    let mut config_path = args.config.clone();
    if args.unsigned_policy.is_none() && args.settings.trust.is_none() && config_path.is_none() {
        let default = Path::new(paths::CONFIG);
        if !default.exists() {
            bail!(
                "say where authorizations come from: --config FILE (default {} does not exist), \
                 or --trust FILE with --bundle-dir/--artifacts",
                default.display()
            );
        }
        config_path = Some(default.to_path_buf());
    }
    let print_decisions = run.and_then(|r| {
        if r.json {
            Some(true)
        } else if r.quiet || crate::service::systemd::under_systemd() {
            None
        } else {
            Some(false)
        }
    });
    Ok(Invocation {
        config_path,
        flags: args.settings.clone(),
        artifacts: args.artifacts.clone(),
        unsigned_policy: args.unsigned_policy.clone(),
        print_decisions,
    })
}

/// `enforcer load`: apply and exit; enforcement stays on through the pins.
pub(super) fn load_command(args: &LoadArgs) -> anyhow::Result<ExitCode> {
    let agent = Agent::start(invocation(args, None)?)?;
    for (path, why) in agent.refused() {
        eprintln!("refused: {}: {why}", path.display());
    }
    println!(
        "enforcement active: program pinned at {}",
        agent.pin_dir().display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `enforcer run`: apply, then follow decisions and take updates until SIGINT or SIGTERM.
/// Stopping leaves enforcement pinned and on.
pub(super) fn run_command(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let agent = Agent::start(invocation(&args.load, Some(args))?)?;
    agent.serve()?;
    Ok(ExitCode::SUCCESS)
}

/// Sends one request to the agent; exit 1 on a refusal.
fn ask<T: serde::de::DeserializeOwned>(
    socket: &Path,
    request: &Request,
) -> anyhow::Result<(ExitCode, Reply<T>)> {
    let reply = control::request(socket, request)?;
    let code = if reply.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    Ok((code, reply))
}

/// `enforcer push` / `enforcer revoke`: hand a signed artifact to the running agent.
/// Returns once the kernel enforces it, or with the reason it was refused.
pub(super) fn push_command(args: &PushArgs, revoke: bool) -> anyhow::Result<ExitCode> {
    let bytes = crate::authz::verify::read_artifact(&args.file)?;
    let name = args.file.display().to_string();
    let (code, reply) = ask::<PushReport>(
        &args.socket.socket,
        &Request::artifact(revoke, name, &bytes),
    )?;
    if reply.ok {
        println!("{}", reply.message);
    } else {
        eprintln!("{}", reply.message);
    }
    Ok(code)
}

/// `enforcer list`: the authorizations in force and the refused artifacts.
pub(super) fn list_command(args: &ListArgs) -> anyhow::Result<ExitCode> {
    let (code, reply) = ask::<Listing>(&args.socket.socket, &Request::List)?;
    let listing = match reply.data {
        Some(listing) if reply.ok => listing,
        _ => {
            println!("{}", reply.message);
            return Ok(code);
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&listing)?);
        return Ok(code);
    }
    println!("{} bundle(s) in force", listing.bundles.len());
    for b in &listing.bundles {
        println!(
            "  {} serial {} from {}: {} live grant(s) in {}, until {}, on_revoke {}",
            b.bundle_id,
            b.serial,
            b.issuer,
            b.live_grants,
            b.scopes.join(", "),
            b.not_after,
            b.on_revoke,
        );
        println!("    id {}  file {}", b.id, b.file.display());
    }
    for g in &listing.break_glass {
        println!(
            "break-glass from {} for {} until {}: {}",
            g.issuer,
            g.scopes.join(", "),
            g.not_after,
            g.reason,
        );
    }
    if !listing.refused.is_empty() {
        println!("{} artifact(s) refused", listing.refused.len());
        for r in &listing.refused {
            println!("  {}: {}", r.file.display(), r.reason);
        }
    }
    Ok(code)
}

/// `enforcer status`: the running agent's view when it answers (authorizations, why a
/// scope denies everything, break-glass), else what the kernel's maps hold.
pub(super) fn status_command(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let pin_dir = &args.location.pin_dir;
    if !kernel::is_pinned(pin_dir) {
        if args.json {
            let status = MapStatus {
                enforcing: false,
                pin_dir: pin_dir.clone(),
                scopes: None,
                dropped_events: None,
            };
            println!("{}", serde_json::to_string(&status)?);
        } else {
            println!("not enforcing: no program pinned at {}", pin_dir.display());
        }
        return Ok(ExitCode::from(3));
    }
    match control::request::<StatusReport>(&args.socket.socket, &Request::Status) {
        Ok(Reply {
            ok: true,
            data: Some(report),
            ..
        }) => {
            print_agent_status(&report, args.json)?;
            return Ok(ExitCode::SUCCESS);
        }
        Ok(reply) => tracing::warn!("the agent answered: {}", reply.message),
        Err(e) => tracing::debug!("{e}"),
    }
    print_map_status(args)
}

fn print_agent_status(d: &StatusReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(d)?);
        return Ok(());
    }
    let agent = &d.agent;
    println!("enforcing: program pinned at {}", d.pin_dir.display());
    println!(
        "agent: pid {}, up since {}, last applied {}{}",
        agent.pid,
        agent.started,
        agent.last_reconcile.as_deref().unwrap_or("never"),
        agent
            .next_deadline
            .as_ref()
            .map(|t| format!(", next change at {t}"))
            .unwrap_or_default(),
    );
    if let Some(e) = &agent.last_error {
        println!("  last error: {e}");
    }
    for s in &d.scopes {
        println!(
            "  scope {} (cgroup {}): {}, {} grant(s)",
            s.path,
            s.cgroup_id
                .map_or_else(|| "unknown".into(), |id| id.to_string()),
            s.mode,
            s.grants
        );
        if let Some(until) = &s.break_glass_until {
            println!("    break-glass: monitor mode until {until}, then enforce again");
        }
        if s.denies_everything {
            println!("    every exec in this scope is denied:");
            for why in &s.why {
                println!("      - {why}");
            }
        }
    }
    println!(
        "  {} bundle(s) in force, {} artifact(s) refused (see `enforcer list`)",
        d.bundles, d.refused
    );
    if d.dropped_events > 0 {
        println!(
            "  {} decision(s) lost because the ring buffer was full",
            d.dropped_events
        );
    }
    Ok(())
}

/// `status --json` when no agent answers: what the pins and the kernel's maps show.
#[derive(Debug, serde::Serialize)]
struct MapStatus {
    enforcing: bool,
    pin_dir: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    scopes: Option<Vec<MapScope>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dropped_events: Option<u64>,
}

#[derive(Debug, serde::Serialize)]
struct MapScope {
    path: String,
    cgroup_id: u64,
    mode: &'static str,
    grants: usize,
}

/// Status from the pinned maps alone, when no agent answers.
fn print_map_status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let pin_dir = &args.location.pin_dir;
    let enforcement = Enforcement::open_pinned(pin_dir)?;
    let state = enforcement.read()?;
    let dropped = enforcement.dropped_events()?;
    let mut scopes: Vec<_> = state
        .scopes
        .iter()
        .map(|(id, p)| {
            let path = cgroup::find_path(&args.location.cgroup_root, *id, 10_000)
                .and_then(|p| {
                    p.strip_prefix(&args.location.cgroup_root)
                        .ok()
                        .map(|r| format!("/{}", r.display()))
                })
                .unwrap_or_else(|| format!("(cgroup id {id}, path not found)"));
            let grants = state.grants.keys().filter(|k| k.scope_id == *id).count();
            let mode = if p.mode == enforcer_common::mode::MONITOR {
                "monitor"
            } else {
                "enforce"
            };
            (path, *id, mode, grants)
        })
        .collect();
    scopes.sort();
    if args.json {
        let scopes = scopes
            .iter()
            .map(|(path, id, mode, grants)| MapScope {
                path: path.clone(),
                cgroup_id: *id,
                mode,
                grants: *grants,
            })
            .collect();
        let status = MapStatus {
            enforcing: true,
            pin_dir: pin_dir.clone(),
            scopes: Some(scopes),
            dropped_events: Some(dropped),
        };
        println!("{}", serde_json::to_string(&status)?);
    } else {
        println!("enforcing: program pinned at {}", pin_dir.display());
        println!(
            "agent: not reachable at {}; showing the kernel's maps",
            args.socket.socket.display()
        );
        for (path, id, mode, grants) in &scopes {
            println!("  scope {path} (cgroup {id}): {mode}, {grants} grant(s)");
            if *grants == 0 && *mode == "enforce" {
                println!("    every exec in this scope is denied: it has no live grant");
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
pub(super) fn unload_command(location: &Location) -> anyhow::Result<ExitCode> {
    if kernel::unload(&location.pin_dir)? {
        println!(
            "enforcement stopped: pins removed from {}",
            location.pin_dir.display()
        );
    } else {
        println!("nothing to stop: no pins in {}", location.pin_dir.display());
    }
    Ok(ExitCode::SUCCESS)
}
