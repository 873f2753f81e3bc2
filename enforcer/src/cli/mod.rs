//! The command line: the agent's commands and the security team's.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;
mod audit;
mod proof;
mod security;
mod service;
mod witness;

/// Execution enforcer: inside governed cgroups, only programs covered by a live, signed
/// authorization may run. Everything else is denied in the kernel.
#[derive(Debug, Parser)]
#[command(name = "enforcer", version, propagate_version = true)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides this.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Commands,
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Load and attach the kernel program (or reuse the pinned one), apply the policy,
    /// then exit. Enforcement stays on: the program and maps are pinned in bpffs.
    Load(agent::LoadArgs),
    /// Like `load`, then stay in the foreground and print every decision in governed
    /// scopes until SIGINT or SIGTERM (which leave enforcement on).
    Run(agent::RunArgs),
    /// Show whether enforcement is on, the governed scopes, their grants, and why a scope
    /// denies everything. Exit code 3 when nothing is enforcing.
    Status(agent::StatusArgs),
    /// Hand a signed artifact (bundle, revocation, break-glass) to the running agent. It
    /// is verified, kept in the bundle directory and enforced before this returns.
    Push(agent::PushArgs),
    /// The authorizations the running agent enforces, and the artifacts it refused.
    List(agent::ListArgs),
    /// Stop enforcing: remove the pinned program and maps. The operator's way out.
    Unload(agent::Location),
    /// The tamper-evident audit log: verify it, show and follow decisions, trace the
    /// lineage of an exec.
    Audit(audit::AuditArgs),
    /// Proofs made by `enforcer audit prove`: check one offline.
    #[command(subcommand)]
    Proof(proof::ProofCommand),
    /// Install the agent as a systemd service: the unit, drop-ins ordering the governed
    /// slices after it, and a default configuration when there is none.
    InstallUnit(service::InstallUnitArgs),
    /// A transparency-log witness (C2SP tlog-witness): serve it, or print its key.
    Witness(witness::WitnessArgs),
    /// The security team's commands: key, bundle and revoke.
    #[command(flatten)]
    Security(security::SecurityCommand),
}

/// Sets up structured logging; RUST_LOG wins over `-v`.
///
/// Under systemd, where stderr is the journal, records go to journald natively: the
/// readable line plus each field as a journal field, and no timestamp (journald keeps
/// its own). Everywhere else: text on stderr, coloured only at a terminal.
pub fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    use crate::service::systemd;

    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    if systemd::stderr_is_journal() {
        match systemd::JournalLayer::new(std::path::Path::new(systemd::JOURNAL_SOCKET)) {
            Ok(layer) => tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .init(),
            // journald's socket unreachable (another mount namespace, say) but the stream
            // works: lines with a `<N>` priority prefix, which journald understands.
            Err(_) => tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(false)
                .with_writer(std::io::stderr)
                .event_format(systemd::SyslogPrefix(
                    tracing_subscriber::fmt::format()
                        .without_time()
                        .with_ansi(false),
                ))
                .init(),
        }
        return;
    }
    // Colour only for a person at a terminal: log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

/// Runs one command; the exit code is the command's verdict.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Commands::Load(args) => agent::load_command(&args),
        Commands::Run(args) => agent::run_command(&args),
        Commands::Status(args) => agent::status_command(&args),
        Commands::Push(args) => agent::push_command(&args, false),
        Commands::List(args) => agent::list_command(&args),
        Commands::Unload(args) => agent::unload_command(&args),
        Commands::Audit(args) => audit::command(&args),
        Commands::Proof(cmd) => proof::command(&cmd),
        Commands::InstallUnit(args) => service::command(&args),
        Commands::Witness(args) => witness::command(args),
        Commands::Security(cmd) => security::run(cmd),
    }
}
