//! `push` and `revoke`: a pushed artifact is staged, verified by reconciling with it, and
//! kept in the bundle directory only once the kernel enforces the result.

use std::path::Path;

use anyhow::Context as _;

use super::Agent;
use crate::authz::artifact::ScopePath;
use crate::authz::artifact::{ArtifactKind, Envelope, format_time};
use crate::service::control::protocol::{Data, PushReport};
use crate::service::control::{self, Response};

/// Where a pushed artifact waits in the bundle directory while it is verified; not read
/// as an artifact source (the loader reads only files directly in the directory).
const STAGING: &str = ".staging";

/// Creates the bundle directory (mode 0700) when missing, and clears what a push left
/// staged when its agent died before answering: the client saw an error and pushes again
/// (a resubmission is idempotent).
pub(super) fn prepare_bundle_dir(dir: &Path) -> anyhow::Result<()> {
    crate::fsutil::create_private_dir(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let staging = dir.join(STAGING);
    if staging.is_dir() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(())
}

impl Agent {
    /// Handles a push or revoke: verifies the artifact by reconciling with it staged,
    /// keeps it in the bundle directory when accepted, and answers once the kernel
    /// enforces the result.
    pub(super) fn push(&mut self, revoke: bool, name: &str, artifact: &str) -> Response {
        if self.invocation.unsigned_policy.is_some() {
            return Response::error(
                "this agent runs an unsigned development policy; it takes no artifacts",
            );
        }
        let bytes = match control::decode_artifact(artifact) {
            Ok(b) => b,
            Err(e) => return Response::error(format!("{name}: {e}")),
        };
        let envelope = match Envelope::parse(&bytes) {
            Ok(e) => e,
            Err(e) => return Response::error(format!("{name}: refused: {e}")),
        };
        let kind = match envelope.kind() {
            Ok(k) => k,
            Err(e) => return Response::error(format!("{name}: refused: {e}")),
        };
        if revoke && kind != ArtifactKind::Revocation {
            return Response::error(format!(
                "{name}: refused: it is a {kind}, not a revocation (use `enforcer push`)"
            ));
        }
        let id = envelope.id();
        // Named by content: pushing the same artifact twice keeps one file.
        let short = id.to_string()[..32].to_owned();
        let staging = self.config.bundle_dir().join(STAGING);
        let staged = staging.join(format!("{short}.json"));
        let stage = crate::fsutil::create_private_dir(&staging)
            .and_then(|()| crate::fsutil::replace_atomically(&staged, &bytes, 0o600));
        if let Err(e) = stage {
            return Response::error(format!("{name}: cannot stage the artifact: {e:#}"));
        }
        let result = self.reconcile(Some(&staged));
        let refused = self.view.authz.as_ref().and_then(|a| {
            a.refused
                .iter()
                .find(|(p, _)| p == &staged)
                .map(|(_, why)| why.clone())
        });
        let done = match (result, refused) {
            (Err(e), _) => {
                let _ = std::fs::remove_file(&staged);
                self.last_error = Some(format!("{e:#}"));
                return Response::error(format!("{name}: not applied: {e:#}"));
            }
            (Ok(_), Some(why)) => {
                let _ = std::fs::remove_file(&staged);
                // Enforce again without it, so nothing of a refused artifact lingers.
                if let Err(e) = self.reconcile(None) {
                    self.last_error = Some(format!("{e:#}"));
                }
                return Response::error(format!("{name}: refused: {why}"));
            }
            (Ok(done), None) => done,
        };
        let kept = self
            .config
            .bundle_dir()
            .join(format!("{kind}-{short}.json"));
        if let Err(e) = std::fs::rename(&staged, &kept) {
            return Response::error(format!(
                "{name}: enforced, but cannot keep it in {}: {e}; it will not survive a restart",
                self.config.bundle_dir().display()
            ));
        }
        let mut message = format!(
            "{name}: {kind} accepted and enforced (kept as {})",
            kept.display()
        );
        if let Some(b) = self
            .view
            .authz
            .as_ref()
            .and_then(|a| a.accepted.iter().find(|b| b.id == id))
        {
            let scopes = b
                .scopes
                .iter()
                .map(ScopePath::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            message = format!(
                "{name}: bundle {} serial {} from {} enforced in {scopes} until {}",
                b.bundle_id,
                b.serial,
                b.issuer,
                format_time(b.not_after),
            );
        }
        if !done.withdrawn.is_empty() {
            message.push_str(&format!("; withdrawn: {}", done.withdrawn.join(", ")));
        }
        if done.killed > 0 {
            message.push_str(&format!(
                "; {} process(es) killed (on_revoke = kill)",
                done.killed
            ));
        }
        tracing::info!(file = %kept.display(), %kind, "{message}");
        let report = PushReport {
            id: id.to_string(),
            kind: kind.to_string(),
            withdrawn: done.withdrawn,
            killed: done.killed,
        };
        Response::ok(message, Some(Data::Pushed(report)))
    }
}
