//! From signed artifacts to what the kernel enforces: verifies and accepts bundles,
//! revocations and break-glass artifacts against the trust store and the persisted state,
//! and turns the accepted, live ones into a [`Policy`].
//!
//! Which scopes are governed is the operator's declaration plus the scopes of accepted
//! bundles. A declared scope stays governed when no live bundle covers it — it then
//! denies everything, and [`Authorizations::explanations`] says why — so an expired or
//! revoked authorization can never turn a governed scope into an ungoverned one. A refused
//! artifact grants nothing; the others still apply.
//!
//! A live break-glass puts the governed scopes it names in monitor mode until its
//! `not_after` ([`ScopeSpec::monitor_until`]); the kernel reverts them by itself. It never
//! makes a scope governed: a break-glass naming a scope nobody governs is reported in
//! [`Authorizations::warnings`] and changes nothing there.

pub mod artifact;
mod explain;
pub mod policy;
pub mod state;
pub mod trust;
pub mod verify;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::authz::artifact::ScopePath;
use crate::authz::artifact::{
    ArtifactError, ArtifactId, ArtifactKind, BreakGlass, Bundle, Envelope, Mode, OnRevoke,
    format_time, from_unix_seconds, unix_seconds,
};
use crate::authz::policy::{Policy, ScopeGrant, ScopeSpec};
use crate::authz::state::{AcceptError, Accepted, Acceptor, StateError};
use crate::authz::trust::{TrustError, load_trust_store};
use crate::authz::verify::{VerifiedBreakGlass, VerifiedBundle, Verifier, read_artifact};
use explain::{Cause, Claim, Refusal, explain};

/// Where authorizations come from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Trusted keys, roles and thresholds.
    pub trust: PathBuf,
    /// Artifact files, or directories whose `*.json` files are artifacts: bundles,
    /// revocations and break-glass artifacts alike.
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
    /// The artifact's bytes as accepted: the audit log keeps them for proofs.
    pub envelope: Arc<[u8]>,
}

/// An accepted break-glass artifact inside its window, as the agent reports it.
#[derive(Debug, Clone)]
pub struct AcceptedBreakGlass {
    pub path: PathBuf,
    pub id: ArtifactId,
    pub issuer: String,
    /// Every scope it names, as signed.
    pub scopes: Vec<ScopePath>,
    /// Of `scopes`, those that are governed here and now run in monitor mode until
    /// `not_after`. Empty when none of its scopes is governed, or when it is accepted only
    /// thanks to the clock skew allowance after its `not_after` (then it switches nothing).
    pub governed: Vec<ScopePath>,
    /// Unix seconds.
    pub not_before: u64,
    pub not_after: u64,
    pub reason: String,
    /// The artifact's bytes as accepted: the audit log keeps them for proofs.
    pub envelope: Arc<[u8]>,
}

/// The outcome of loading: the policy, and what was accepted and refused.
#[derive(Debug, Default)]
pub struct Authorizations {
    pub policy: Policy,
    pub accepted: Vec<AcceptedBundle>,
    /// Live break-glass artifacts. Their effect is already in `policy`, as
    /// [`ScopeSpec::monitor_until`] on the governed scopes they name.
    pub break_glass: Vec<AcceptedBreakGlass>,
    /// Each refused artifact with the reason, which names the problem.
    pub refused: Vec<(PathBuf, String)>,
    /// Of `refused`, the files refused because a revocation withdraws them (by bundle id,
    /// artifact, digest or key): a definite withdrawal, unlike an unreadable file.
    pub revoked: BTreeSet<PathBuf>,
    /// How many of `refused` were refused for each kind of reason (`expired`,
    /// `not_yet_valid`, `revoked`, `other`): a bounded label where the reasons are text.
    pub refused_kinds: BTreeMap<&'static str, u64>,
    /// Not refusals, but what an operator should read: a break-glass naming a scope that
    /// is not governed, which it cannot switch to monitor mode.
    pub warnings: Vec<(PathBuf, String)>,
    /// For each governed scope with no live grant (so, in enforce mode, denying every
    /// exec), why: one line per cause, for the agent's log and `enforcer status`. Scopes
    /// with at least one live grant are absent.
    pub explanations: BTreeMap<ScopePath, Vec<String>>,
}

/// Expands directories into their `*.json` files, sorted so the order is stable.
fn artifact_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, AuthzError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let list = |source| AuthzError::List {
                path: path.clone(),
                source,
            };
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
    Envelope::parse(bytes)
        .and_then(|e| e.kind())
        .map_err(|e| e.to_string())
}

/// Loads every artifact: revocations first, so they apply to the bundles and break-glass
/// artifacts read with them.
pub fn load(sources: &Sources, now: SystemTime) -> Result<Authorizations, AuthzError> {
    let verifier =
        Verifier::new(load_trust_store(&sources.trust)?).with_clock_skew(sources.clock_skew);
    let mut acceptor = Acceptor::open(&sources.state_dir, verifier)?;
    let mut refusals = Vec::new();
    let mut bundles = Vec::new();
    let mut break_glass = Vec::new();
    for path in artifact_files(&sources.artifacts)? {
        let bytes = match read_artifact(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                refusals.push(Refusal::new(path, None, e.to_string(), Cause::Other));
                continue;
            }
        };
        match kind_of(&bytes) {
            Ok(ArtifactKind::Revocation) => match acceptor.accept_revocation(&bytes) {
                Ok((accepted, _)) => {
                    tracing::info!(file = %path.display(), new = accepted == Accepted::New, "revocation accepted");
                }
                Err(e) => {
                    let cause = Cause::of_accept(&e);
                    refusals.push(Refusal::new(path, Claim::of(&bytes), e.to_string(), cause));
                }
            },
            Ok(ArtifactKind::Bundle) => bundles.push((path, bytes)),
            Ok(ArtifactKind::BreakGlass) => break_glass.push((path, bytes)),
            Err(e) => refusals.push(Refusal::new(path, Claim::of(&bytes), e, Cause::Other)),
        }
    }
    // The bytes of what was accepted, by id, for the audit log's archive.
    let mut envelopes: BTreeMap<ArtifactId, Arc<[u8]>> = BTreeMap::new();
    let mut live = Vec::new();
    for (path, bytes) in bundles {
        match acceptor.accept_bundle(&bytes, now) {
            Ok((accepted, verified)) => {
                envelopes.insert(verified.id, Arc::from(bytes));
                live.push((path, accepted == Accepted::New, verified));
            }
            Err(e) => {
                let cause = Cause::of_accept(&e);
                refusals.push(Refusal::new(path, Claim::of(&bytes), e.to_string(), cause));
            }
        }
    }
    let mut live_break_glass = Vec::new();
    for (path, bytes) in break_glass {
        match acceptor.accept_break_glass(&bytes, now) {
            Ok(verified) => {
                envelopes.insert(verified.id, Arc::from(bytes));
                live_break_glass.push((path, verified));
            }
            Err(e) => refusals.push(Refusal::of_artifact(path, Claim::of(&bytes), &e)),
        }
    }
    // A newer serial from the same issuer for a scope replaces the older bundle there at
    // once, not only from the next load on (when the serial rule refuses the older one):
    // an update that drops a grant must not leave it allowing through its predecessor.
    let mut newest: BTreeMap<(&str, &ScopePath), u64> = BTreeMap::new();
    for (_, _, v) in &live {
        for scope in &v.bundle.scopes {
            let slot = newest.entry((v.bundle.issuer.as_str(), scope)).or_insert(0);
            *slot = (*slot).max(v.bundle.serial);
        }
    }
    let superseded: Vec<(usize, u64)> = live
        .iter()
        .enumerate()
        .filter_map(|(i, (_, _, v))| {
            let b = &v.bundle;
            b.scopes
                .iter()
                .filter_map(|s| newest.get(&(b.issuer.as_str(), s)).copied())
                .find(|newer| *newer > b.serial)
                .map(|newer| (i, newer))
        })
        .collect();
    for (i, newer) in superseded.into_iter().rev() {
        let (path, _, v) = live.remove(i);
        let reason = format!(
            "superseded: serial {newer} from issuer {:?} replaces serial {} in a scope they share",
            v.bundle.issuer, v.bundle.serial
        );
        refusals.push(Refusal::new(
            path,
            Some(Claim::of_bundle(&v.bundle)),
            reason,
            Cause::Other,
        ));
    }
    // A revocation accepted after a bundle or break-glass of the same run still withdraws
    // it: the artifacts are read in file-name order, not revocations first.
    let revocations = acceptor.state().revocations();
    live.retain(|(path, _, verified)| match revocations.check(verified) {
        Ok(()) => true,
        Err(e) => {
            let claim = Some(Claim::of_bundle(&verified.bundle));
            refusals.push(Refusal::of_artifact(path.clone(), claim, &e));
            false
        }
    });
    live_break_glass.retain(
        |(path, verified)| match revocations.check_break_glass(verified) {
            Ok(()) => true,
            Err(e) => {
                let claim = Some(Claim::BreakGlass {
                    scopes: verified.break_glass.scopes.clone(),
                });
                refusals.push(Refusal::of_artifact(path.clone(), claim, &e));
                false
            }
        },
    );
    // Debug only: the agent re-reads often and reports what changed between reads.
    for r in &refusals {
        tracing::debug!(file = %r.path.display(), reason = %r.reason, "artifact refused");
    }

    let verified_bundles: Vec<&VerifiedBundle> = live.iter().map(|(_, _, v)| v).collect();
    let mut policy = policy_of(&verified_bundles, &sources.declared_scopes, now);
    let verified_break_glass: Vec<&VerifiedBreakGlass> =
        live_break_glass.iter().map(|(_, v)| v).collect();
    let switched = apply_break_glass(&mut policy, &verified_break_glass, now);
    let named: Vec<(&Path, &VerifiedBundle)> = live
        .iter()
        .map(|(path, _, v)| (path.as_path(), v))
        .collect();
    let explanations = explain(&policy, &named, &refusals, now);

    let mut refused_kinds = BTreeMap::new();
    for r in &refusals {
        *refused_kinds.entry(r.cause.kind()).or_insert(0) += 1;
    }
    let mut out = Authorizations {
        policy,
        refused_kinds,
        explanations,
        revoked: refusals
            .iter()
            .filter(|r| matches!(r.cause, Cause::Revoked { .. }))
            .map(|r| r.path.clone())
            .collect(),
        refused: refusals.into_iter().map(|r| (r.path, r.reason)).collect(),
        ..Authorizations::default()
    };
    for ((path, v), governed) in live_break_glass.into_iter().zip(switched) {
        let bg = v.break_glass;
        for scope in bg
            .scopes
            .iter()
            .filter(|s| !out.policy.scopes.contains_key(*s))
        {
            out.warnings.push((
                path.clone(),
                format!(
                    "break-glass {} names {scope}, which is not governed here: a break-glass switches governed scopes to monitor mode and never makes a scope governed",
                    v.id
                ),
            ));
        }
        // Info, not warn: the agent reloads often, and records the change itself.
        if !governed.is_empty() {
            tracing::info!(
                file = %path.display(),
                id = %v.id,
                issuer = %bg.issuer,
                scopes = %governed.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                until = %format_time(bg.not_after),
                reason = %bg.reason,
                "break-glass in force: these scopes record what they would deny, and allow it"
            );
        }
        out.break_glass.push(AcceptedBreakGlass {
            path,
            id: v.id,
            issuer: bg.issuer,
            scopes: bg.scopes,
            governed,
            not_before: bg.not_before,
            not_after: bg.not_after,
            reason: bg.reason,
            envelope: envelopes.get(&v.id).cloned().unwrap_or_default(),
        });
    }
    for (path, why) in &out.warnings {
        tracing::warn!(file = %path.display(), "{why}");
    }
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
            envelope: envelopes.get(&v.id).cloned().unwrap_or_default(),
        })
        .collect();
    Ok(out)
}

/// The policy the accepted bundles describe, over the declared scopes and theirs.
///
/// A scope is in monitor mode only when every bundle for it says so: doubt means enforce.
/// Break-glass artifacts are applied afterwards, by [`apply_break_glass`].
pub fn policy_of(bundles: &[&VerifiedBundle], declared: &[ScopePath], now: SystemTime) -> Policy {
    policy_of_bundles(bundles.iter().map(|v| (&v.id, &v.bundle)), declared, now)
}

/// [`policy_of`] over bundles by identity and content, verified or not: `audit replay`
/// asks what bundles nobody signed yet would change, under the agent's own rules.
pub fn policy_of_bundles<'a>(
    bundles: impl IntoIterator<Item = (&'a ArtifactId, &'a Bundle)>,
    declared: &[ScopePath],
    now: SystemTime,
) -> Policy {
    let mut scopes: BTreeMap<ScopePath, (ScopeSpec, bool)> = declared
        .iter()
        .map(|s| (s.clone(), (ScopeSpec::default(), false)))
        .collect();
    for (id, b) in bundles {
        let auth_id = id.auth_prefix();
        for scope in &b.scopes {
            let (spec, seen_monitor_only) = scopes.entry(scope.clone()).or_insert_with(|| {
                (
                    ScopeSpec {
                        mode: Mode::Monitor,
                        ..ScopeSpec::default()
                    },
                    true,
                )
            });
            if b.mode == Mode::Enforce || !*seen_monitor_only {
                spec.mode = Mode::Enforce;
                *seen_monitor_only = false;
            }
            // JIT opt-ins hold while a live bundle for the scope carries them.
            spec.allow_anonymous_exec |= b.allow_anonymous_exec;
            spec.allow_fileless |= b.allow_fileless;
            spec.grants.extend(b.live_grants(now).map(|g| ScopeGrant {
                digest: g.digest,
                name: g.name.clone(),
                // A grant never outlives its bundle.
                not_after: Some(
                    SystemTime::UNIX_EPOCH
                        + Duration::from_secs(
                            g.not_after.map_or(b.not_after, |t| t.min(b.not_after)),
                        ),
                ),
                auth_id,
                auth_serial: b.serial,
            }));
        }
    }
    Policy {
        scopes: scopes.into_iter().map(|(k, (spec, _))| (k, spec)).collect(),
        ..Policy::default()
    }
}

/// Puts every governed scope that a live break-glass names in monitor mode until that
/// break-glass's `not_after`, the latest one when several name a scope. Returns, for each
/// break-glass in order, the governed scopes it switched.
///
/// Scopes that are not governed are left alone: a break-glass suspends enforcement, and
/// must never create it (a governed scope with no grant would deny everything once the
/// deadline passed). The deadline is the signed `not_after` without the clock skew
/// allowance, like a grant's; one already past switches nothing.
pub fn apply_break_glass(
    policy: &mut Policy,
    break_glass: &[&VerifiedBreakGlass],
    now: SystemTime,
) -> Vec<Vec<ScopePath>> {
    let now = unix_seconds(now);
    break_glass
        .iter()
        .map(|verified| {
            let bg = &verified.break_glass;
            if bg.not_after <= now {
                return Vec::new();
            }
            let until = from_unix_seconds(bg.not_after);
            let mut switched = Vec::new();
            for scope in &bg.scopes {
                if let Some(spec) = policy.scopes.get_mut(scope) {
                    spec.monitor_until = Some(spec.monitor_until.map_or(until, |t| t.max(until)));
                    switched.push(scope.clone());
                }
            }
            switched
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::artifact::{Revocation, RevocationTarget};
    use crate::authz::trust::encode_public_key;
    use crate::authz::verify::testkit::{
        NOW, break_glass, bundle, key, now, signed_break_glass, signed_bundle, signed_revocation,
    };

    /// A trust store file where keys 1 and 2 may sign bundles and revocations, key 6
    /// break-glass artifacts (threshold 1 each).
    fn sources(dir: &Path, declared: &[&str]) -> Sources {
        let trust = dir.join("trust.toml");
        let keys: String = [
            (1u8, r#"["bundle", "revocation"]"#),
            (2, r#"["bundle", "revocation"]"#),
            (6, r#"["break-glass"]"#),
        ]
        .iter()
        .map(|(n, roles)| {
            format!(
                "[[keys]]\nname = \"k{n}\"\npublic_key = \"{}\"\nroles = {roles}\n",
                encode_public_key(&key(*n).public_key())
            )
        })
        .collect();
        std::fs::write(
            &trust,
            format!(
                "version = 1\n[thresholds]\nbundle = 1\nrevocation = 1\nbreak_glass = 1\n{keys}"
            ),
        )
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
        assert_eq!(
            scope.grants[0].auth_id,
            accepted.id.0[..enforcer_common::AUTH_ID_LEN]
        );
        assert_eq!(scope.grants[0].auth_serial, 1);
        // The second grant ends before its bundle; the first ends with it.
        let secs = |g: &ScopeGrant| {
            g.not_after
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
        };
        assert_eq!(secs(&scope.grants[0]), Some(NOW + 3600));
        assert_eq!(secs(&scope.grants[1]), Some(NOW + 60));
        // A restart sees the same artifact again: accepted, not new, not an error.
        let again = load(&s, now()).expect("reload");
        assert!(!again.accepted[0].new && again.refused.is_empty());
    }

    #[test]
    fn a_newer_serial_replaces_the_older_bundle_in_the_same_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sources(dir.path(), &[]);
        put(&s, "a-serial-1.json", &signed_bundle(&bundle(), &[1]));
        let first = load(&s, now()).expect("load");
        assert_eq!(first.accepted.len(), 1);
        // Serial 2 grants less; read in the same load as serial 1, it replaces it at once.
        let mut next = bundle();
        next.serial = 2;
        next.grants.truncate(1);
        put(&s, "b-serial-2.json", &signed_bundle(&next, &[1]));
        let out = load(&s, now()).expect("load");
        let serials: Vec<u64> = out.accepted.iter().map(|b| b.serial).collect();
        assert_eq!(serials, [2]);
        let (path, why) = &out.refused[0];
        assert!(
            path.ends_with("a-serial-1.json") && why.contains("superseded"),
            "{why}"
        );
        assert!(out.revoked.is_empty(), "superseded is not revoked");
        let scope = &out.policy.scopes[&"/agents.slice".parse::<ScopePath>().expect("scope")];
        assert_eq!(scope.grants.len(), 1, "only serial 2's grant allows");
    }

    #[test]
    fn bad_artifacts_are_refused_by_name_and_grant_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sources(dir.path(), &["/agents.slice"]);
        put(
            &s,
            "unsigned-by-trusted.json",
            &signed_bundle(&bundle(), &[3]),
        );
        put(&s, "garbage.json", b"{not json");
        let out = load(&s, now()).expect("load");
        assert_eq!(out.refused.len(), 2, "{:?}", out.refused);
        assert!(
            out.refused
                .iter()
                .all(|(p, why)| p.exists() && !why.is_empty())
        );
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
        assert!(
            out.policy
                .scopes
                .values()
                .all(|spec| spec.grants.is_empty())
        );
        assert_eq!(out.policy.scopes.len(), 1);
    }

    #[test]
    fn opt_ins_come_from_live_bundles_only() {
        let mut jit = bundle();
        jit.allow_anonymous_exec = true;
        let with = crate::authz::verify::VerifiedBundle {
            id: ArtifactId([1; 64]),
            signers: vec![],
            bundle: jit,
        };
        let scope: ScopePath = "/agents.slice".parse().expect("scope");
        let policy = policy_of(&[&with], &[], now());
        assert!(policy.scopes[&scope].allow_anonymous_exec);
        assert!(!policy.scopes[&scope].allow_fileless);
        // Declared, with no bundle: no opt-in.
        assert!(
            !policy_of(&[], std::slice::from_ref(&scope), now()).scopes[&scope]
                .allow_anonymous_exec
        );
    }

    #[test]
    fn monitor_only_when_every_bundle_says_so() {
        let mut monitor = bundle();
        monitor.mode = Mode::Monitor;
        let mut other = bundle();
        other.bundle_id = "other".into();
        other.issuer = "other-team".into();
        let monitored = crate::authz::verify::VerifiedBundle {
            id: ArtifactId([1; 64]),
            signers: vec![],
            bundle: monitor,
        };
        let enforced = crate::authz::verify::VerifiedBundle {
            id: ArtifactId([2; 64]),
            signers: vec![],
            bundle: other,
        };
        let scope: ScopePath = "/agents.slice".parse().expect("scope");
        assert_eq!(
            policy_of(&[&monitored], &[], now()).scopes[&scope].mode,
            Mode::Monitor
        );
        assert_eq!(
            policy_of(&[&monitored, &enforced], &[], now()).scopes[&scope].mode,
            Mode::Enforce
        );
        assert_eq!(
            policy_of(&[&enforced, &monitored], &[], now()).scopes[&scope].mode,
            Mode::Enforce
        );
        assert_eq!(
            policy_of(&[&monitored], std::slice::from_ref(&scope), now()).scopes[&scope].mode,
            Mode::Enforce
        );
    }

    fn scope(s: &str) -> ScopePath {
        s.parse().expect("scope")
    }

    fn secs(t: Option<SystemTime>) -> Option<u64> {
        t.map(unix_seconds)
    }

    #[test]
    fn live_break_glass_sets_the_monitor_deadline_of_governed_scopes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sources(dir.path(), &["/agents.slice", "/ci.slice"]);
        put(&s, "a.json", &signed_bundle(&bundle(), &[1]));
        let mut first = break_glass();
        first.scopes = vec![scope("/agents.slice"), scope("/ci.slice")];
        let mut later = break_glass();
        later.not_after = first.not_after + 600;
        later.reason = "INC-43: still broken".into();
        put(&s, "bg1.json", &signed_break_glass(&first, &[6]));
        put(&s, "bg2.json", &signed_break_glass(&later, &[6]));
        let out = load(&s, now()).expect("load");
        assert!(
            out.refused.is_empty() && out.warnings.is_empty(),
            "{:?} {:?}",
            out.refused,
            out.warnings
        );
        let agents = &out.policy.scopes[&scope("/agents.slice")];
        // The latest deadline wins; the mode itself stays what the bundles say.
        assert_eq!(secs(agents.monitor_until), Some(later.not_after));
        assert_eq!(agents.mode, Mode::Enforce);
        assert_eq!(agents.grants.len(), 2, "a break-glass takes no grant away");
        assert_eq!(
            secs(out.policy.scopes[&scope("/ci.slice")].monitor_until),
            Some(first.not_after)
        );

        assert_eq!(out.break_glass.len(), 2);
        let reported = &out.break_glass[0];
        assert_eq!(reported.path, s.artifacts[0].join("bg1.json"));
        assert_eq!(reported.issuer, "oncall");
        assert_eq!(
            reported.governed,
            vec![scope("/agents.slice"), scope("/ci.slice")]
        );
        assert_eq!(reported.not_after, first.not_after);
        assert_eq!(reported.reason, first.reason);
        assert_eq!(
            reported.id,
            ArtifactId::of_payload(&first.to_payload().expect("p"))
        );
    }

    #[test]
    fn break_glass_never_makes_a_scope_governed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sources(dir.path(), &["/agents.slice"]);
        let mut bg = break_glass();
        bg.scopes = vec![scope("/agents.slice"), scope("/other.slice")];
        put(&s, "bg.json", &signed_break_glass(&bg, &[6]));
        let out = load(&s, now()).expect("load");
        assert_eq!(
            out.policy.scopes.keys().collect::<Vec<_>>(),
            [&scope("/agents.slice")]
        );
        assert_eq!(out.break_glass[0].governed, vec![scope("/agents.slice")]);
        assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
        let (path, why) = &out.warnings[0];
        assert!(path.ends_with("bg.json"));
        assert!(
            why.contains("names /other.slice, which is not governed here"),
            "{why}"
        );
    }

    #[test]
    fn break_glass_outside_its_window_or_revoked_grants_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sources(dir.path(), &["/agents.slice"]);
        let bg = break_glass();
        put(&s, "bg.json", &signed_break_glass(&bg, &[6]));
        let after = from_unix_seconds(bg.not_after + 61);
        let out = load(&s, after).expect("load");
        assert!(out.break_glass.is_empty());
        assert_eq!(
            out.policy.scopes[&scope("/agents.slice")].monitor_until,
            None
        );
        assert!(
            out.refused[0].1.starts_with("expired: valid until"),
            "{:?}",
            out.refused
        );
        assert!(
            out.explanations[&scope("/agents.slice")]
                .iter()
                .any(|l| l.starts_with("break-glass ") && l.contains("expired at ")),
            "{:?}",
            out.explanations
        );

        // Inside the skew allowance after its end it is accepted, but switches nothing.
        let out = load(&s, from_unix_seconds(bg.not_after + 30)).expect("load");
        assert!(out.break_glass[0].governed.is_empty());
        assert_eq!(
            out.policy.scopes[&scope("/agents.slice")].monitor_until,
            None
        );

        let revocation = Revocation {
            issuer: "sec".into(),
            issued_at: NOW,
            reason: None,
            targets: vec![RevocationTarget::Artifact(ArtifactId::of_payload(
                &bg.to_payload().expect("p"),
            ))],
        };
        // Named to sort after the break-glass: it still withdraws it.
        put(
            &s,
            "z-revocation.json",
            &signed_revocation(&revocation, &[1]),
        );
        let out = load(&s, now()).expect("load");
        assert!(out.break_glass.is_empty());
        assert_eq!(
            out.policy.scopes[&scope("/agents.slice")].monitor_until,
            None
        );
        assert!(
            out.refused
                .iter()
                .any(|(p, why)| p.ends_with("bg.json") && why.starts_with("revoked artifact")),
            "{:?}",
            out.refused
        );
    }

    #[test]
    fn break_glass_is_refused_when_the_trust_store_accepts_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sources(dir.path(), &["/agents.slice"]);
        let text = std::fs::read_to_string(&s.trust).expect("trust");
        std::fs::write(&s.trust, text.replace("break_glass = 1\n", "")).expect("trust");
        put(&s, "bg.json", &signed_break_glass(&break_glass(), &[6]));
        let out = load(&s, now()).expect("load");
        assert!(out.break_glass.is_empty());
        assert_eq!(
            out.policy.scopes[&scope("/agents.slice")].monitor_until,
            None
        );
        assert!(
            out.refused[0]
                .1
                .contains("no break-glass artifact is accepted"),
            "{:?}",
            out.refused
        );
        assert!(
            out.explanations[&scope("/agents.slice")][0]
                .contains("bg.json: refused: no break-glass artifact is accepted"),
            "{:?}",
            out.explanations
        );
    }

    #[test]
    fn a_declared_scope_nothing_names_is_explained() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sources(dir.path(), &["/agents.slice", "/empty.slice"]);
        put(&s, "a.json", &signed_bundle(&bundle(), &[1]));
        let out = load(&s, now()).expect("load");
        assert_eq!(
            out.explanations.get(&scope("/empty.slice")),
            Some(&vec!["no accepted bundle names this scope".to_owned()])
        );
        assert!(
            !out.explanations.contains_key(&scope("/agents.slice")),
            "it has live grants"
        );
    }

    #[test]
    fn expired_and_revoked_bundles_are_explained_by_id_and_serial() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sources(dir.path(), &["/agents.slice"]);
        put(&s, "a.json", &signed_bundle(&bundle(), &[1]));
        let out = load(&s, now() + Duration::from_secs(2 * 3600)).expect("load");
        assert_eq!(
            out.explanations[&scope("/agents.slice")],
            vec![format!(
                "bundle \"agents-base\" serial 1 expired at {}",
                format_time(NOW + 3600)
            )]
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let s = sources(dir.path(), &["/agents.slice"]);
        put(&s, "a.json", &signed_bundle(&bundle(), &[1]));
        let revocation = Revocation {
            issuer: "sec".into(),
            issued_at: NOW,
            reason: None,
            targets: vec![RevocationTarget::Bundle("agents-base".into())],
        };
        let revocation_id = ArtifactId::of_payload(&revocation.to_payload().expect("p"));
        put(&s, "r.json", &signed_revocation(&revocation, &[2]));
        let out = load(&s, now()).expect("load");
        assert_eq!(
            out.explanations[&scope("/agents.slice")],
            vec![format!(
                "bundle \"agents-base\" serial 1 revoked by {revocation_id}"
            )]
        );
    }

    #[test]
    fn refused_artifacts_are_explained_where_they_name_the_scope() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sources(dir.path(), &["/agents.slice", "/ci.slice"]);
        // Signed by a key nobody trusts: refused, but it says which scope it was meant for.
        put(&s, "untrusted.json", &signed_bundle(&bundle(), &[3]));
        put(&s, "garbage.json", b"{not json");
        let out = load(&s, now()).expect("load");
        let agents = &out.explanations[&scope("/agents.slice")];
        assert_eq!(agents.len(), 2, "{agents:?}");
        assert!(
            agents
                .iter()
                .any(|l| l.contains("untrusted.json: refused: signature by unknown key")),
            "{agents:?}"
        );
        assert!(
            agents
                .iter()
                .any(|l| l
                    .contains("garbage.json: refused before the scopes it names could be read")),
            "{agents:?}"
        );
        // The untrusted bundle names only /agents.slice; the unreadable file may be for any.
        let ci = &out.explanations[&scope("/ci.slice")];
        assert_eq!(ci.len(), 1, "{ci:?}");
        assert!(ci[0].contains("garbage.json"), "{ci:?}");
    }

    #[test]
    fn a_live_bundle_whose_grants_all_ended_is_explained() {
        let mut b = bundle();
        b.grants
            .iter_mut()
            .for_each(|g| g.not_after = Some(NOW + 60));
        let verified = VerifiedBundle {
            id: ArtifactId([1; 64]),
            signers: vec![],
            bundle: b,
        };
        let later = now() + Duration::from_secs(120);
        let policy = policy_of(&[&verified], &[], later);
        let why = explain(&policy, &[(Path::new("a.json"), &verified)], &[], later);
        assert_eq!(
            why[&scope("/agents.slice")],
            vec![format!(
                "bundle \"agents-base\" serial 1 is live but all its grants have expired, the last at {}",
                format_time(NOW + 60)
            )]
        );
        let mut empty = bundle();
        empty.grants.clear();
        let verified = VerifiedBundle {
            id: ArtifactId([1; 64]),
            signers: vec![],
            bundle: empty,
        };
        let policy = policy_of(&[&verified], &[], now());
        let why = explain(&policy, &[(Path::new("a.json"), &verified)], &[], now());
        assert_eq!(
            why[&scope("/agents.slice")],
            vec!["bundle \"agents-base\" serial 1 is live but grants nothing".to_owned()]
        );
    }
}
