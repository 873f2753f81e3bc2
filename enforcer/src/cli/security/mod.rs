//! The security team's commands: signing keys, authorization bundles, revocations and
//! break-glass artifacts.
//!
//! The workflow they teach: each signer generates a key once; the trust store lists the
//! public keys, their roles and how many must sign; someone creates an unsigned artifact;
//! each signer adds a signature; anyone verifies it against the trust store before it is
//! handed to the agent. Only `create` differs between the kinds of artifact: `sign`,
//! `verify` and `inspect` are one piece of code ([`ArtifactCommand`]) over all of them.

mod apt_hook;
mod create;
mod drift;
mod key;
mod package;
mod review;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

use crate::authz::artifact::{
    ArtifactError, ArtifactId, ArtifactKind, BreakGlass, Bundle, Envelope, Mode, OnRevoke,
    Revocation, RevocationTarget, ScopePath, SignedGrant, format_time, from_unix_seconds,
    unix_seconds,
};
use crate::authz::state::{Accepted, PolicyState};
use crate::authz::trust::{
    BREAK_GLASS_MAX_DURATION_CEILING, DEFAULT_BREAK_GLASS_MAX_DURATION, KeyId, SigningKey,
    TrustStore, encode_public_key, parse_public_key,
};
use crate::authz::verify::{RevocationSet, Verifier, read_artifact};
use crate::fsutil::replace_atomically;
use crate::host::digest::FileDigest;
use create::{
    BREAK_GLASS_CREATE_EXAMPLES, BUNDLE_CREATE_EXAMPLES, BreakGlassCreateArgs, BundleCreateArgs,
    REVOKE_CREATE_EXAMPLES, RevokeCreateArgs, break_glass_create, bundle_create, revoke_create,
};
use key::{KeyCommand, key_generate, key_show};
use review::{InspectArgs, SignArgs, VerifyArgs, inspect, sign, verb, verify};

#[derive(Debug, Subcommand)]
pub enum SecurityCommand {
    /// Signing keys: generate one per person who signs, and show a key's id.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Authorization bundles: the only thing that lets a program run in a governed scope.
    ///
    /// A bundle grants programs, named by the SHA-256 of their content, in one or more
    /// scopes (cgroup v2 paths), for a validity window. It counts only once enough trusted
    /// keys have signed it. Typical flow:
    ///
    ///   enforcer bundle create ... --out b.json   (unsigned)
    ///   enforcer bundle sign --key alice.key b.json
    ///   enforcer bundle sign --key bob.key b.json
    ///   enforcer bundle verify --trust trust.toml b.json
    #[command(subcommand, verbatim_doc_comment)]
    Bundle(BundleCommand),
    /// Revocations: withdraw a bundle, a program digest or a signing key, for good.
    ///
    /// A revocation is signed like a bundle, by keys with the "revocation" role. Once the
    /// agent accepts it, it never lapses. `enforcer revoke FILE` hands a signed one to the
    /// running agent and returns once the revoked grants allow nothing any more.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Revoke(RevokeArgs),
    /// Break-glass: switch scopes to monitor mode for a short, signed window, so an
    /// emergency never means a lockout.
    ///
    /// In monitor mode a scope records every exec it would deny, and allows it. When the
    /// window ends, the kernel enforces again by itself. Only keys with the "break-glass"
    /// role count, and only if the trust store sets a break_glass threshold; the window
    /// may be no longer than its [break_glass] max_duration (default 4h). Typical flow:
    ///
    ///   enforcer break-glass create --issuer oncall --scope /agents.slice \
    ///       --valid-for 1h --reason 'INC-42: deploy tool blocked' --out bg.json
    ///   enforcer break-glass sign --key carol.key bg.json
    ///   enforcer break-glass verify --trust trust.toml bg.json
    ///
    /// then hand bg.json to the agent with its other artifacts.
    #[command(subcommand, verbatim_doc_comment)]
    BreakGlass(BreakGlassCommand),
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Create an unsigned bundle from program paths (hashed here), digests, Debian
    /// packages (digests from the archive, authenticated through apt's signed chain), or
    /// what the audit log recorded in the scopes (--from-audit).
    #[command(after_help = BUNDLE_CREATE_EXAMPLES)]
    Create(Box<BundleCreateArgs>),
    /// Compare a bundle's package grants with the disk: what changed, what is new in the
    /// same packages and what is gone.
    ///
    /// Exit 0: no drift. 1: drift (details printed, or as JSON with --json). 2: the
    /// check itself failed (unreadable bundle, dpkg missing, bad arguments). Meant for
    /// cron and CI: `enforcer bundle drift b.json || alert`.
    #[command(verbatim_doc_comment)]
    Drift(drift::DriftArgs),
    /// For apt's DPkg::Pre-Install-Pkgs: report which grants of the governed bundles the
    /// packages about to be unpacked would break, and write an unsigned candidate bundle
    /// (serial + 1) granting their new content. Reads .deb paths on stdin; never blocks
    /// apt: always exits 0, gives up after --timeout. See docs/packages.md.
    AptHook(apt_hook::AptHookArgs),
    #[command(flatten)]
    Artifact(ArtifactCommand),
}

/// `enforcer revoke FILE` (to the running agent), or `enforcer revoke create|sign|...`.
#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    #[command(subcommand)]
    command: Option<RevokeCommand>,

    /// A signed revocation for the running agent (a file named like a subcommand needs a
    /// path: ./create).
    #[arg(value_name = "FILE", required = true)]
    file: Option<PathBuf>,

    #[command(flatten)]
    socket: super::agent::SocketArgs,
}

#[derive(Debug, Subcommand)]
pub(super) enum RevokeCommand {
    /// Create an unsigned revocation of bundle ids, artifacts, digests or keys.
    #[command(after_help = REVOKE_CREATE_EXAMPLES)]
    Create(RevokeCreateArgs),
    #[command(flatten)]
    Artifact(ArtifactCommand),
}

#[derive(Debug, Subcommand)]
pub enum BreakGlassCommand {
    /// Create an unsigned break-glass artifact for one or more scopes.
    #[command(after_help = BREAK_GLASS_CREATE_EXAMPLES)]
    Create(BreakGlassCreateArgs),
    #[command(flatten)]
    Artifact(ArtifactCommand),
}

/// What every kind of artifact offers after `create`; the command it sits under says
/// which kind, and an artifact of another kind is refused.
#[derive(Debug, Subcommand)]
pub enum ArtifactCommand {
    /// Add one signature to the artifact, in place. Each signer runs this with their own
    /// key, so k-of-n signing works across people and machines.
    Sign(SignArgs),
    /// Check the artifact against a trust store: exit 0 if it is authorized now, 1 with
    /// the reason if not.
    Verify(VerifyArgs),
    /// Show what the artifact says (what it grants, withdraws or suspends, where, until
    /// when) and who signed it. Does not check signatures: that is `verify`.
    Inspect(InspectArgs),
}

/// A validity window, for every kind of artifact that has one.
#[derive(Debug, Args)]
pub(super) struct Window {
    /// Start of validity, RFC 3339 in UTC (2030-01-01T00:00:00Z) or @UNIX_SECONDS.
    /// Default: now.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    not_before: Option<u64>,
    /// End of validity, RFC 3339 in UTC or @UNIX_SECONDS.
    #[arg(long, value_name = "TIME", value_parser = parse_time, required_unless_present = "valid_for")]
    not_after: Option<u64>,
    /// Length of validity from --not-before, e.g. 8h, 30m, 7days.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "not_after")]
    valid_for: Option<Duration>,
}

impl Window {
    /// `(not_before, not_after)`, starting at `default_start` unless --not-before says.
    fn resolve(&self, default_start: u64) -> anyhow::Result<(u64, u64)> {
        let not_before = self.not_before.unwrap_or(default_start);
        let not_after = match (self.not_after, self.valid_for) {
            (Some(t), _) => t,
            (None, Some(d)) => not_before.saturating_add(d.as_secs()),
            (None, None) => bail!("give --not-after or --valid-for"),
        };
        Ok((not_before, not_after))
    }
}

/// When a bundle is made and how long it is valid.
#[derive(Debug, Args)]
pub(super) struct Validity {
    #[command(flatten)]
    window: Window,
    /// Recorded issue time. Default: now. Set it to regenerate identical artifacts.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    issued_at: Option<u64>,
}

#[derive(Debug, Args)]
pub(super) struct Output {
    /// File to write the unsigned artifact to.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Overwrite --out if it exists.
    #[arg(long)]
    force: bool,
}

/// Runs one of the security team's commands.
pub(super) fn run(cmd: SecurityCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SecurityCommand::Key(KeyCommand::Generate { out }) => key_generate(&out),
        SecurityCommand::Key(KeyCommand::Show { path }) => key_show(&path),
        SecurityCommand::Bundle(BundleCommand::Create(args)) => bundle_create(&args),
        SecurityCommand::Bundle(BundleCommand::Drift(args)) => Ok(drift::drift(&args)),
        SecurityCommand::Bundle(BundleCommand::AptHook(args)) => Ok(apt_hook::apt_hook(args)),
        SecurityCommand::Revoke(RevokeArgs {
            command: None,
            file,
            socket,
        }) => {
            let file = file.context("name the signed revocation to hand to the agent")?;
            super::agent::push_command(&super::agent::PushArgs { file, socket }, true)
        }
        SecurityCommand::Revoke(RevokeArgs {
            command: Some(RevokeCommand::Create(args)),
            ..
        }) => revoke_create(&args),
        SecurityCommand::BreakGlass(BreakGlassCommand::Create(args)) => break_glass_create(&args),
        SecurityCommand::Bundle(BundleCommand::Artifact(cmd)) => {
            artifact(cmd, ArtifactKind::Bundle)
        }
        SecurityCommand::Revoke(RevokeArgs {
            command: Some(RevokeCommand::Artifact(cmd)),
            ..
        }) => artifact(cmd, ArtifactKind::Revocation),
        SecurityCommand::BreakGlass(BreakGlassCommand::Artifact(cmd)) => {
            artifact(cmd, ArtifactKind::BreakGlass)
        }
    }
}

/// `sign`, `verify` or `inspect` on an artifact of `kind`.
fn artifact(cmd: ArtifactCommand, kind: ArtifactKind) -> anyhow::Result<ExitCode> {
    match cmd {
        ArtifactCommand::Sign(args) => sign(&args, kind),
        ArtifactCommand::Verify(args) => verify(&args, kind),
        ArtifactCommand::Inspect(args) => inspect(&args, kind),
    }
}

/// RFC 3339 in UTC (`2030-01-01T00:00:00Z`) or `@<unix seconds>`.
fn parse_time(s: &str) -> Result<u64, String> {
    if let Some(secs) = s.strip_prefix('@') {
        return secs.parse().map_err(|e| format!("{s:?}: {e}"));
    }
    humantime::parse_rfc3339_weak(s)
        .map(unix_seconds)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time such as 2030-01-01T00:00:00Z: {e}"))
}

fn now_or(t: Option<u64>) -> u64 {
    t.unwrap_or_else(|| unix_seconds(SystemTime::now()))
}
