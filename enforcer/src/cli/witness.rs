//! `enforcer witness`: run a transparency-log witness, and print its key for the logs
//! that will ask it. The protocol, checks and state are `crate::witness`'s; this only
//! reads the arguments and keeps the server running until a signal.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::audit::tlog::{CosignatureVerifier, Cosigner};
use crate::authz::trust::SigningKey;
use crate::witness::{self, TrustedLogs, Witness, WitnessState};

/// Arguments of `enforcer witness`.
#[derive(Debug, Args)]
pub struct WitnessArgs {
    #[command(subcommand)]
    pub command: WitnessCommand,
}

#[derive(Debug, Subcommand)]
pub enum WitnessCommand {
    /// Serve C2SP tlog-witness `POST /add-checkpoint` (and `GET /<origin hash>/checkpoint`
    /// for monitors): cosign each trusted log's checkpoints while they extend the last one
    /// cosigned, refuse rollbacks and forks. Runs until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Print the witness's cosignature verifier key (vkey), for logs and readers to trust.
    Vkey(KeyArgs),
}

/// The witness's identity: its key and name.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// The witness's private key (`enforcer key generate --out PATH` writes PATH.key). Use
    /// a key for this witness alone: a cosignature does not commit to the witness's name.
    #[arg(long, value_name = "KEYFILE", env = "ENFORCER_WITNESS_KEY")]
    pub key: PathBuf,

    /// The witness's name, a schema-less URL such as witness.example/w1.
    #[arg(long, value_name = "NAME", env = "ENFORCER_WITNESS_NAME")]
    pub name: String,
}

/// Arguments of `witness serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub identity: KeyArgs,

    /// Address to listen on, e.g. 127.0.0.1:7380 (plain HTTP: put a TLS proxy in front
    /// to serve beyond the host).
    #[arg(long, value_name = "ADDR", env = "ENFORCER_WITNESS_LISTEN")]
    pub listen: SocketAddr,

    /// The logs to cosign for: one verifier key per line, `<origin>+<key id>+<base64(0x01
    /// || key)>` (the log's note key, named by its origin), `#` comments allowed.
    #[arg(long, value_name = "LOGS_FILE", env = "ENFORCER_WITNESS_LOGS")]
    pub logs: PathBuf,

    /// Directory of the witness's state, the latest cosigned checkpoint of each log.
    /// Losing it lets a log roll back past this witness: back it up.
    #[arg(long, value_name = "DIR", env = "ENFORCER_WITNESS_STATE")]
    pub state: PathBuf,
}

/// Runs `enforcer witness`.
pub(super) fn command(args: WitnessArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        WitnessCommand::Serve(args) => serve(args),
        WitnessCommand::Vkey(args) => {
            let key = load_key(&args.key)?;
            println!("{}", verifier(&args.name, &key)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load_key(path: &Path) -> anyhow::Result<SigningKey> {
    SigningKey::load(path).with_context(|| format!("reading the witness key {}", path.display()))
}

fn verifier(name: &str, key: &SigningKey) -> anyhow::Result<CosignatureVerifier> {
    let cosigner = Cosigner::new(name, key).context("--name is not a usable witness name")?;
    Ok(cosigner.verifier().clone())
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let key = load_key(&args.identity.key)?;
    let vkey = verifier(&args.identity.name, &key)?;
    let logs = TrustedLogs::load(&args.logs)?;
    let origins: Vec<String> = logs.origins().map(str::to_owned).collect();
    let state = WitnessState::open(&args.state)?;
    let witness = Arc::new(Witness::new(&args.identity.name, key, logs, state)?);
    let listener = witness::bind(args.listen)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};

        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        tracing::info!(
            vkey = %vkey,
            "witness listening on {}, following {}",
            listener.local_addr().map_or_else(|_| args.listen.to_string(), |a| a.to_string()),
            origins.join(", ")
        );
        tokio::select! {
            served = witness::serve(listener, witness) => {
                served.context("serving the witness")?;
            }
            _ = term.recv() => tracing::info!("SIGTERM: witness stopping"),
            _ = int.recv() => tracing::info!("SIGINT: witness stopping"),
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
