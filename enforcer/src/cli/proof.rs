//! `enforcer proof verify`: what a third party runs, offline, on a proof file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::audit::proof::{self, MAX_PROOF_BYTES};
use crate::audit::tlog::CosignatureVerifier;
use crate::authz::trust;

#[derive(Debug, Subcommand)]
pub enum ProofCommand {
    /// Check a proof from `enforcer audit prove` with only the host's public key and your
    /// trust store. Exit 0: proven (and what is proven is printed); 1: refused, with the
    /// reason.
    Verify(VerifyArgs),
}

/// Arguments of `proof verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The proof file.
    pub file: PathBuf,
    /// The host's audit public key (`audit-host.pub`), obtained from the host's owner, not
    /// from the proof.
    #[arg(long, value_name = "HOST.pub")]
    pub host_key: PathBuf,
    /// Your trust store: who may sign authorizations.
    #[arg(long, value_name = "trust.toml")]
    pub trust: PathBuf,
    /// Require a cosignature on the checkpoint from this witness (its vkey, as
    /// `enforcer witness vkey` prints it). Repeat for more.
    #[arg(long = "witness", value_name = "VKEY")]
    pub witnesses: Vec<String>,
}

pub(super) fn command(cmd: &ProofCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ProofCommand::Verify(args) => verify(args),
    }
}

fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let host_key = trust::load_public_key(&args.host_key)?;
    let store = trust::load_trust_store(&args.trust)?;
    let size = std::fs::metadata(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?
        .len();
    anyhow::ensure!(
        size <= MAX_PROOF_BYTES as u64,
        "{} is {size} bytes, more than the {MAX_PROOF_BYTES} a proof may have",
        args.file.display()
    );
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let witnesses = args
        .witnesses
        .iter()
        .map(|vkey| {
            CosignatureVerifier::from_vkey(vkey)
                .with_context(|| format!("--witness {vkey:?} is not a witness vkey"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    match proof::verify_proof(&bytes, &host_key, &store, &witnesses) {
        Ok(proven) => {
            print!("{proven}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("REFUSED ({}): {e}", e.code());
            Ok(ExitCode::from(1))
        }
    }
}
