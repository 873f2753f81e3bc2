//! The agent's commands: load policy into the kernel, follow decisions, report status,
//! and stop enforcement.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;

use crate::cgroup;
use crate::control::{self, Request, Response};
use crate::daemon::{Agent, Overrides, Settings};
use crate::kernel::{self, Enforcement};

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

/// Where authorizations come from. Each flag overrides the configuration file.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// The agent's configuration file (TOML; see docs/service.md). Without it, the
    /// defaults and these flags apply. Flags win over the file, also after a reload.
    #[arg(long, env = "ENFORCER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Trust store (TOML): the keys that may sign bundles and revocations, and how many
    /// distinct keys must sign each. Only artifacts it accepts grant anything.
    #[arg(
        long,
        env = "ENFORCER_TRUST",
        value_name = "FILE",
        conflicts_with = "unsigned_policy"
    )]
    pub trust: Option<PathBuf>,

    /// Watched directory of signed artifacts; pushed artifacts are kept here too.
    #[arg(long, value_name = "DIR", conflicts_with = "unsigned_policy")]
    pub bundle_dir: Option<PathBuf>,

    /// More signed bundles and revocations: files, or directories whose *.json files are
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
    #[arg(long, env = "ENFORCER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// How far artifact validity windows stretch to allow for clock differences.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub clock_skew: Option<std::time::Duration>,

    /// DEVELOPMENT AND TESTS ONLY: an unsigned local policy file (TOML) instead of signed
    /// artifacts. Refused in production mode: under systemd (INVOCATION_ID set) or with
    /// ENFORCER_PRODUCTION=1.
    #[arg(long, value_name = "FILE")]
    pub unsigned_policy: Option<PathBuf>,
}

/// Arguments of `load` and `run`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// bpffs directory holding the pinned program links and maps.
    #[arg(long, env = "ENFORCER_PIN_DIR")]
    pub pin_dir: Option<PathBuf>,

    /// Mount point of the cgroup v2 hierarchy; scope paths are relative to it.
    #[arg(long, env = "ENFORCER_CGROUP_ROOT")]
    pub cgroup_root: Option<PathBuf>,

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

    /// Print no decisions on stdout (they still go to the audit log). The default under
    /// systemd, where stdout is the journal.
    #[arg(long, conflicts_with = "json")]
    pub quiet: bool,

    /// Directory of the tamper-evident audit log (hash-chained JSON Lines).
    #[arg(long, env = "ENFORCER_AUDIT_DIR")]
    pub audit_dir: Option<PathBuf>,

    /// Host key (Ed25519, from `enforcer key generate`) that signs audit checkpoints.
    /// Defaults to /etc/enforcer/audit-host.key when that file exists; without a key,
    /// checkpoints are unsigned and prove nothing against whoever can edit the log.
    #[arg(long, env = "ENFORCER_HOST_KEY", value_name = "FILE")]
    pub host_key: Option<PathBuf>,

    /// Control socket for `enforcer push|revoke|status|list`.
    #[arg(long, env = "ENFORCER_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// Where the running agent listens.
#[derive(Debug, Args)]
pub struct SocketArgs {
    /// The agent's control socket.
    #[arg(long, env = "ENFORCER_SOCKET", default_value = crate::config::DEFAULT_SOCKET)]
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

fn settings(args: &LoadArgs, run: Option<&RunArgs>) -> anyhow::Result<Settings> {
    let p = &args.policy;
    let scopes = p
        .scopes
        .iter()
        .map(|s| s.parse())
        .collect::<Result<Vec<_>, _>>()
        .context("--scope")?;
    let mut config_path = p.config.clone();
    if p.unsigned_policy.is_none() && p.trust.is_none() && config_path.is_none() {
        let default = Path::new(crate::config::DEFAULT_PATH);
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
        } else if r.quiet || crate::systemd::under_systemd() {
            None
        } else {
            Some(false)
        }
    });
    Ok(Settings {
        config_path,
        overrides: Overrides {
            trust: p.trust.clone(),
            bundle_dir: p.bundle_dir.clone(),
            state_dir: p.state_dir.clone(),
            audit_dir: run.and_then(|r| r.audit_dir.clone()),
            host_key: run.and_then(|r| r.host_key.clone()),
            socket: run.and_then(|r| r.socket.clone()),
            pin_dir: args.pin_dir.clone(),
            cgroup_root: args.cgroup_root.clone(),
            clock_skew: p.clock_skew,
            skip_self_test: args.skip_self_test,
            scopes,
            artifacts: p.artifacts.clone(),
        },
        unsigned_policy: p.unsigned_policy.clone(),
        print_decisions,
    })
}

/// `enforcer load`: apply and exit; enforcement stays on through the pins.
pub fn load_command(args: &LoadArgs) -> anyhow::Result<ExitCode> {
    let agent = Agent::start(settings(args, None)?)?;
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
pub fn run_command(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let agent = Agent::start(settings(&args.load, Some(args))?)?;
    agent.serve()?;
    Ok(ExitCode::SUCCESS)
}

/// Sends one request to the agent and prints its message; exit 1 on a refusal.
fn ask(socket: &Path, request: &Request) -> anyhow::Result<(ExitCode, Response)> {
    let response = control::request(socket, request)?;
    let code = if response.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    Ok((code, response))
}

/// `enforcer push` / `enforcer revoke`: hand a signed artifact to the running agent.
/// Returns once the kernel enforces it, or with the reason it was refused.
pub fn push_command(args: &PushArgs, revoke: bool) -> anyhow::Result<ExitCode> {
    let bytes = crate::verify::read_artifact(&args.file)?;
    let name = args.file.display().to_string();
    let (code, response) = ask(
        &args.socket.socket,
        &Request::artifact(revoke, name, &bytes),
    )?;
    if response.ok {
        println!("{}", response.message);
    } else {
        eprintln!("{}", response.message);
    }
    Ok(code)
}

/// `enforcer list`: the authorizations in force and the refused artifacts.
pub fn list_command(args: &ListArgs) -> anyhow::Result<ExitCode> {
    let (code, response) = ask(&args.socket.socket, &Request::List)?;
    if args.json || !response.ok {
        println!(
            "{}",
            if response.ok {
                response.data.to_string()
            } else {
                response.message
            }
        );
        return Ok(code);
    }
    let d = &response.data;
    let empty = Vec::new();
    let bundles = d["bundles"].as_array().unwrap_or(&empty);
    println!("{} bundle(s) in force", bundles.len());
    for b in bundles {
        println!(
            "  {} serial {} from {}: {} live grant(s) in {}, until {}, on_revoke {}",
            text(&b["bundle_id"]),
            b["serial"],
            text(&b["issuer"]),
            b["live_grants"],
            text_list(&b["scopes"]),
            text(&b["not_after"]),
            text(&b["on_revoke"]),
        );
        println!("    id {}  file {}", text(&b["id"]), text(&b["file"]));
    }
    for g in d["break_glass"].as_array().unwrap_or(&empty) {
        println!(
            "break-glass from {} for {} until {}: {}",
            text(&g["issuer"]),
            text_list(&g["scopes"]),
            text(&g["not_after"]),
            text(&g["reason"]),
        );
    }
    let refused = d["refused"].as_array().unwrap_or(&empty);
    if !refused.is_empty() {
        println!("{} artifact(s) refused", refused.len());
        for r in refused {
            println!("  {}: {}", text(&r["file"]), text(&r["reason"]));
        }
    }
    Ok(code)
}

/// A JSON array of strings as `a, b, c`.
fn text_list(v: &serde_json::Value) -> String {
    v.as_array()
        .map(|items| items.iter().map(text).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

fn text(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// `enforcer status`: the running agent's view when it answers (authorizations, why a
/// scope denies everything, break-glass), else what the kernel's maps hold.
pub fn status_command(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let pin_dir = &args.location.pin_dir;
    if !kernel::is_pinned(pin_dir) {
        if args.json {
            println!(
                "{}",
                serde_json::json!({ "enforcing": false, "pin_dir": pin_dir })
            );
        } else {
            println!("not enforcing: no program pinned at {}", pin_dir.display());
        }
        return Ok(ExitCode::from(3));
    }
    match control::request(&args.socket.socket, &Request::Status) {
        Ok(response) if response.ok => {
            print_agent_status(&response.data, args.json);
            return Ok(ExitCode::SUCCESS);
        }
        Ok(response) => tracing::warn!("the agent answered: {}", response.message),
        Err(e) => tracing::debug!("{e}"),
    }
    print_map_status(args)
}

fn print_agent_status(d: &serde_json::Value, json: bool) {
    if json {
        println!("{d}");
        return;
    }
    let agent = &d["agent"];
    println!("enforcing: program pinned at {}", text(&d["pin_dir"]));
    println!(
        "agent: pid {}, up since {}, last applied {}{}",
        agent["pid"],
        text(&agent["started"]),
        text(&agent["last_reconcile"]),
        agent["next_deadline"]
            .as_str()
            .map(|t| format!(", next change at {t}"))
            .unwrap_or_default(),
    );
    if let Some(e) = agent["last_error"].as_str() {
        println!("  last error: {e}");
    }
    let empty = Vec::new();
    for s in d["scopes"].as_array().unwrap_or(&empty) {
        println!(
            "  scope {} (cgroup {}): {}, {} grant(s)",
            text(&s["path"]),
            s["cgroup_id"],
            text(&s["mode"]),
            s["grants"]
        );
        if let Some(until) = s["break_glass_until"].as_str() {
            println!("    break-glass: monitor mode until {until}, then enforce again");
        }
        if s["denies_everything"] == true {
            println!("    every exec in this scope is denied:");
            for why in s["why"].as_array().unwrap_or(&empty) {
                println!("      - {}", text(why));
            }
        }
    }
    println!(
        "  {} bundle(s) in force, {} artifact(s) refused (see `enforcer list`)",
        d["bundles"], d["refused"]
    );
    if d["dropped_events"].as_u64().is_some_and(|n| n > 0) {
        println!(
            "  {} decision(s) lost because the ring buffer was full",
            d["dropped_events"]
        );
    }
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
pub fn unload_command(location: &Location) -> anyhow::Result<ExitCode> {
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
