//! From signed artifacts to what the kernel enforces: verifies and accepts bundles and
//! revocations against the trust store and the persisted state, and turns the accepted,
//! live bundles into a [`Policy`].
//!
//! Which scopes are governed is the operator's declaration plus the scopes of accepted
//! bundles. A declared scope stays governed when no live bundle covers it — it then
//! denies everything — so an expired or revoked authorization can never turn a governed
//! scope into an ungoverned one. A refused artifact grants nothing; the others still apply.

use std::collections::BTreeMap;
use std::path::PathBuf;
#[cfg(test)]
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::artifact::{ArtifactId, ArtifactKind, Envelope, Mode as BundleMode, OnRevoke};
use crate::policy::{GrantSpec, Mode, Policy, ScopePath, ScopeSpec};
use crate::state::{Accepted, Acceptor, StateError};
use crate::trust::{TrustError, load_trust_store};
use crate::verify::{VerifiedBundle, Verifier, read_artifact};
use enforcer_common::AUTH_ID_LEN;

/// Where authorizations come from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Trusted keys, roles and thresholds.
    pub trust: PathBuf,
    /// Artifact files, or directories whose `*.json` files are artifacts.
    pub artifacts: Vec<PathBuf>,
    /// Accepted serials and revocations, persisted across restarts.
    pub state_dir: PathBuf,
    /// Scopes the operator governs whatever the bundles say.
    pub declared_scopes: Vec<ScopePath>,
    pub clock_skew: Duration,
}

/// Why authorizations could not be loaded at all (a single bad artifact is not this).
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    #[error("trust store: {0}")]
    Trust(#[from] TrustError),
    #[error("state directory: {0}")]
    State(#[from] StateError),
    #[error("cannot list artifacts in {path}: {source}")]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An accepted bundle, as the agent reports it.
#[derive(Debug, Clone)]
pub struct AcceptedBundle {
    pub path: PathBuf,
    pub id: ArtifactId,
    pub issuer: String,
    pub bundle_id: String,
    pub serial: u64,
    pub not_after: u64,
    pub on_revoke: OnRevoke,
    pub scopes: Vec<ScopePath>,
    /// First accepted now, rather than already known from an earlier run.
    pub new: bool,
}

/// The outcome of loading: the policy, and what was accepted and refused.
#[derive(Debug, Default)]
pub struct Authorizations {
    pub policy: Policy,
    pub accepted: Vec<AcceptedBundle>,
    /// Each refused artifact with the reason, which names the problem.
    pub refused: Vec<(PathBuf, String)>,
}

/// Expands directories into their `*.json` files, sorted so the order is stable.
fn artifact_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, AuthzError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let list = |source| AuthzError::List { path: path.clone(), source };
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(list)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "json") && p.is_file())
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn kind_of(bytes: &[u8]) -> Result<ArtifactKind, String> {
    Envelope::parse(bytes).and_then(|e| e.kind()).map_err(|e| e.to_string())
}

/// Loads every artifact: revocations first, so they apply to the bundles read with them.
pub fn load(sources: &Sources, now: SystemTime) -> Result<Authorizations, AuthzError> {
    let verifier = Verifier::new(load_trust_store(&sources.trust)?).with_clock_skew(sources.clock_skew);
    let mut acceptor = Acceptor::open(&sources.state_dir, verifier)?;
    let mut out = Authorizations::default();
    let mut bundles = Vec::new();
    for path in artifact_files(&sources.artifacts)? {
        let bytes = match read_artifact(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                out.refused.push((path, e.to_string()));
                continue;
            }
        };
        match kind_of(&bytes) {
            Ok(ArtifactKind::Revocation) => match acceptor.accept_revocation(&bytes) {
                Ok((accepted, _)) => {
                    tracing::info!(file = %path.display(), new = accepted == Accepted::New, "revocation accepted");
                }
                Err(e) => out.refused.push((path, e.to_string())),
            },
            Ok(ArtifactKind::Bundle) => bundles.push((path, bytes)),
            Err(e) => out.refused.push((path, e)),
        }
    }
    let mut live = Vec::new();
    for (path, bytes) in bundles {
        match acceptor.accept_bundle(&bytes, now) {
            Ok((accepted, verified)) => live.push((path, accepted == Accepted::New, verified)),
            Err(e) => out.refused.push((path, e.to_string())),
        }
    }
    // A revocation accepted after a bundle of the same run still withdraws it.
    let revocations = acceptor.state().revocations();
    live.retain(|(path, _, verified)| match revocations.check(verified) {
        Ok(()) => true,
        Err(e) => {
            out.refused.push((path.clone(), e.to_string()));
            false
        }
    });
    for (path, why) in &out.refused {
        tracing::warn!(file = %path.display(), reason = %why, "artifact refused");
    }
    out.policy = policy_of(&live.iter().map(|(_, _, v)| v).collect::<Vec<_>>(), &sources.declared_scopes, now);
    out.accepted = live
        .into_iter()
        .map(|(path, new, v)| AcceptedBundle {
            path,
            id: v.id,
            issuer: v.bundle.issuer.clone(),
            bundle_id: v.bundle.bundle_id.clone(),
            serial: v.bundle.serial,
            not_after: v.bundle.not_after,
            on_revoke: v.bundle.on_revoke,
            scopes: v.bundle.scopes.clone(),
            new,
        })
        .collect();
    Ok(out)
}

/// The policy the accepted bundles describe, over the declared scopes and theirs.
///
/// A scope is in monitor mode only when every bundle for it says so: doubt means enforce.
pub fn policy_of(bundles: &[&VerifiedBundle], declared: &[ScopePath], now: SystemTime) -> Policy {
    let mut scopes: BTreeMap<ScopePath, (ScopeSpec, bool)> = declared
        .iter()
        .map(|s| (s.clone(), (ScopeSpec::default(), false)))
        .collect();
    for verified in bundles {
        let b = &verified.bundle;
        let mut auth_id = [0u8; AUTH_ID_LEN];
        auth_id.copy_from_slice(&verified.id.0[..AUTH_ID_LEN]);
        for scope in &b.scopes {
            let (spec, seen_monitor_only) = scopes
                .entry(scope.clone())
                .or_insert_with(|| (ScopeSpec { mode: Mode::Monitor, ..ScopeSpec::default() }, true));
            if b.mode == BundleMode::Enforce || !*seen_monitor_only {
                spec.mode = Mode::Enforce;
                *seen_monitor_only = false;
            }
            // JIT opt-ins hold while a live bundle for the scope carries them.
            spec.allow_anonymous_exec |= b.allow_anonymous_exec;
            spec.allow_fileless |= b.allow_fileless;
            spec.grants.extend(b.live_grants(now).map(|g| GrantSpec {
                digest: g.digest,
                name: g.name.clone(),
                // A grant never outlives its bundle.
                not_after: Some(
                    SystemTime::UNIX_EPOCH
                        + Duration::from_secs(g.not_after.map_or(b.not_after, |t| t.min(b.not_after))),
                ),
                auth_id,
                auth_serial: b.serial,
            }));
        }
    }
    Policy { scopes: scopes.into_iter().map(|(k, (spec, _))| (k, spec)).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::encode_public_key;
    use crate::verify::testkit::{NOW, bundle, key, now, signed_bundle};

    /// A trust store file where keys 1 and 2 may sign bundles (threshold 1).
    fn sources(dir: &Path, declared: &[&str]) -> Sources {
        let trust = dir.join("trust.toml");
        let keys: String = [1u8, 2]
            .iter()
            .map(|n| {
                format!(
                    "[[keys]]\nname = \"k{n}\"\npublic_key = \"{}\"\nroles = [\"bundle\", \"revocation\"]\n",
                    encode_public_key(&key(*n).public_key())
                )
            })
            .collect();
        std::fs::write(&trust, format!("version = 1\n[thresholds]\nbundle = 1\nrevocation = 1\n{keys}"))
            .expect("trust");
        let artifacts = dir.join("bundles");
        std::fs::create_dir_all(&artifacts).expect("bundle dir");
        Sources {
            trust,
            artifacts: vec![artifacts],
            state_dir: dir.join("state"),
            declared_scopes: declared.iter().map(|s| s.parse().expect("scope")).collect(),
            clock_skew: Duration::from_secs(60),
        }
    }

    fn put(s: &Sources, name: &str, bytes: &[u8]) {
        std::fs::write(s.artifacts[0].join(name), bytes).expect("write artifact");
    }

    #[test]
    fn accepted_bundle_becomes_grants_with_its_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sources(dir.path(), &[]);
        put(&s, "a.json", &signed_bundle(&bundle(), &[1]));
        let out = load(&s, now()).expect("load");
        assert!(out.refused.is_empty(), "{:?}", out.refused);
        let scope = &out.policy.scopes[&"/agents.slice".parse::<ScopePath>().expect("scope")];
        assert_eq!(scope.mode, Mode::Enforce);
        assert_eq!(scope.grants.len(), 2);
        let accepted = &out.accepted[0];
        assert!(accepted.new);
        assert_eq!(scope.grants[0].auth_id, accepted.id.0[..AUTH_ID_LEN]);
        assert_eq!(scope.grants[0].auth_serial, 1);
        // The second grant ends before its bundle; the first ends with it.
        let secs = |g: &GrantSpec| g.not_after.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map(|d| d.as_secs());
        assert_eq!(secs(&scope.grants[0]), Some(NOW + 3600));
        assert_eq!(secs(&scope.grants[1]), Some(NOW + 60));
        // A restart sees the same artifact again: accepted, not new, not an error.
        let again = load(&s, now()).expect("reload");
        assert!(!again.accepted[0].new && again.refused.is_empty());
    }

    #[test]
    fn bad_artifacts_are_refused_by_name_and_grant_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sources(dir.path(), &["/agents.slice"]);
        put(&s, "unsigned-by-trusted.json", &signed_bundle(&bundle(), &[3]));
        put(&s, "garbage.json", b"{not json");
        let out = load(&s, now()).expect("load");
        assert_eq!(out.refused.len(), 2, "{:?}", out.refused);
        assert!(out.refused.iter().all(|(p, why)| p.exists() && !why.is_empty()));
        // The declared scope stays governed, with nothing granted: it denies everything.
        let scope = &out.policy.scopes[&"/agents.slice".parse::<ScopePath>().expect("scope")];
        assert!(scope.grants.is_empty());
        assert_eq!(scope.mode, Mode::Enforce);
    }

    #[test]
    fn expired_bundle_leaves_a_declared_scope_denying_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sources(dir.path(), &["/agents.slice"]);
        put(&s, "a.json", &signed_bundle(&bundle(), &[1]));
        let later = now() + Duration::from_secs(2 * 3600);
        let out = load(&s, later).expect("load");
        assert_eq!(out.refused.len(), 1);
        assert!(out.policy.scopes.values().all(|spec| spec.grants.is_empty()));
        assert_eq!(out.policy.scopes.len(), 1);
    }

    #[test]
    fn opt_ins_come_from_live_bundles_only() {
        let mut jit = bundle();
        jit.allow_anonymous_exec = true;
        let with = crate::verify::VerifiedBundle { id: ArtifactId([1; 64]), signers: vec![], bundle: jit };
        let scope: ScopePath = "/agents.slice".parse().expect("scope");
        let policy = policy_of(&[&with], &[], now());
        assert!(policy.scopes[&scope].allow_anonymous_exec);
        assert!(!policy.scopes[&scope].allow_fileless);
        // Declared, with no bundle: no opt-in.
        assert!(!policy_of(&[], &[scope.clone()], now()).scopes[&scope].allow_anonymous_exec);
    }

    #[test]
    fn monitor_only_when_every_bundle_says_so() {
        let mut monitor = bundle();
        monitor.mode = BundleMode::Monitor;
        let mut other = bundle();
        other.bundle_id = "other".into();
        other.issuer = "other-team".into();
        let monitored = crate::verify::VerifiedBundle { id: ArtifactId([1; 64]), signers: vec![], bundle: monitor };
        let enforced = crate::verify::VerifiedBundle { id: ArtifactId([2; 64]), signers: vec![], bundle: other };
        let scope: ScopePath = "/agents.slice".parse().expect("scope");
        assert_eq!(policy_of(&[&monitored], &[], now()).scopes[&scope].mode, Mode::Monitor);
        assert_eq!(policy_of(&[&monitored, &enforced], &[], now()).scopes[&scope].mode, Mode::Enforce);
        assert_eq!(policy_of(&[&enforced, &monitored], &[], now()).scopes[&scope].mode, Mode::Enforce);
        assert_eq!(policy_of(&[&monitored], &[scope.clone()], now()).scopes[&scope].mode, Mode::Enforce);
    }
}
