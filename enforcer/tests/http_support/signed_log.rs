//! A real audit log with signed checkpoints, written by `AuditLog`: a script, the
//! interpreter that runs it and a child it starts, for the proof endpoint and the console.
//! The allowed execs run under a real bundle, made and signed by the `enforcer` binary and
//! kept in the log's archive as the agent keeps what it accepts, so their proofs carry it.

use std::path::Path;

use enforcer::audit::{AuditLog, AuditOptions, DecisionLabels, Record};
use enforcer::authz::artifact::Envelope;
use enforcer::authz::trust::{Role, SigningKey, Thresholds, TrustStore, TrustedKey};
use enforcer_common::{AUTH_ID_LEN, EVENT_PATH_LEN, ExecEvent, decision, hook, reason};

pub(crate) const BOOT: &str = "0f0e0d0c-0b0a-4908-8706-050403020100";
pub(crate) const ORIGIN: &str = "enforcer.test/audit";
pub(crate) const SCOPE: &str = "/agents.slice";
/// The script's exec id; the interpreter is the next, its child the one after.
pub(crate) const SCRIPT: u64 = 2;
pub(crate) const INTERPRETER: u64 = 3;
/// The denied child: its decision cites no authorization, so its proof needs no archive.
pub(crate) const CHILD: u64 = 4;

/// The host key that signs the log's checkpoints.
pub(crate) fn host_key() -> SigningKey {
    SigningKey::from_seed(&[7; 32])
}

pub(crate) fn open(dir: &Path) -> AuditLog {
    let opts = AuditOptions {
        boot_id: Some(BOOT.into()),
        origin: Some(ORIGIN.into()),
        ..AuditOptions::default()
    };
    AuditLog::open(dir, Some(host_key()), opts).expect("open the audit log")
}

/// The key that signs the bundle, made from a seed so the trust store can name it.
fn issuer_key() -> SigningKey {
    SigningKey::from_seed(&[3; 32])
}

/// The trust store of a verifier who trusts the bundle's signer.
pub(crate) fn trust() -> TrustStore {
    let key = issuer_key().public_key();
    TrustStore::new(
        [TrustedKey::new(
            "ops",
            key,
            vec![Role::Bundle, Role::Revocation],
        )],
        Thresholds {
            bundle: 1,
            revocation: 1,
        },
    )
    .expect("trust store")
}

/// The digest the fixture gives exec `exec_id`'s file.
fn digest(exec_id: u64) -> [u8; 32] {
    [u8::try_from(exec_id).expect("small"); 32]
}

/// Runs the built binary in `dir`; panics with its output when it fails.
fn enforcer(dir: &Path, args: &[&str]) {
    let run = super::common::enforcer(dir, args);
    assert!(run.code == 0, "enforcer {args:?}: {}", run.stderr);
}

/// A bundle granting the allowed execs' digests in [`SCOPE`] for 8 hours, signed by
/// [`issuer_key`], as the `enforcer` CLI writes it.
fn bundle() -> Vec<u8> {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path();
    issuer_key()
        .write_new(&dir.join("ops.key"), "ops")
        .expect("write the key");
    let grants: Vec<String> = [1, SCRIPT, INTERPRETER]
        .iter()
        .map(|&id| format!("sha256:{},name=build tools", hex::encode(digest(id))))
        .collect();
    let mut create = vec![
        "bundle",
        "create",
        "--issuer",
        "ops",
        "--bundle-id",
        "build-tools",
        "--serial",
        "7",
        "--scope",
        SCOPE,
        "--valid-for",
        "8h",
        "--out",
        "bundle.json",
    ];
    for grant in &grants {
        create.extend(["--digest", grant]);
    }
    enforcer(dir, &create);
    enforcer(dir, &["bundle", "sign", "--key", "ops.key", "bundle.json"]);
    std::fs::read(dir.join("bundle.json")).expect("the bundle")
}

/// The kernel's event for `exec_id`, started by `parent`, running `path`; an allowed one
/// runs under the authorization `auth_id`.
pub(crate) fn exec(exec_id: u64, parent: u64, path: &str, verdict: u32) -> ExecEvent {
    let mut bytes = [0u8; EVENT_PATH_LEN];
    bytes[..path.len()].copy_from_slice(path.as_bytes());
    let allowed = verdict == decision::ALLOW;
    ExecEvent {
        boot_ns: exec_id * 1000,
        cgroup_id: 4242,
        scope_id: 4241,
        auth_serial: u64::from(allowed) * 7,
        exec_id,
        parent_exec_id: parent,
        pid: 300 + u32::try_from(exec_id).expect("small"),
        tgid: 300 + u32::try_from(exec_id).expect("small"),
        ppid: 300 + u32::try_from(parent).expect("small"),
        uid: 1000,
        gid: 1000,
        decision: verdict,
        reason: if allowed {
            reason::GRANTED
        } else {
            reason::NOT_GRANTED
        },
        hook: hook::BPRM_CHECK_SECURITY,
        digest: digest(exec_id),
        auth_id: [0; AUTH_ID_LEN],
        detail: 0,
        path: bytes,
    }
}

/// Appends one decision in [`SCOPE`] and hands the record to `written` (the window's
/// feed, as the agent does).
pub(crate) fn append(log: &mut AuditLog, event: &ExecEvent, written: impl FnOnce(&Record)) {
    let labels = DecisionLabels {
        scope: Some(SCOPE),
        grant_name: (event.decision == decision::ALLOW).then_some("build tools"),
    };
    log.append_decision_and(event, &labels, written)
        .expect("append");
}

/// Writes a login shell, the script, its interpreter (the three under the bundle) and the
/// interpreter's denied child, then closes the log (which signs a checkpoint covering
/// them all).
pub(crate) fn write(dir: &Path) {
    let bundle = bundle();
    let id = Envelope::parse(&bundle).expect("the bundle").id();
    let mut log = open(dir);
    log.keep_artifact(&id, &bundle).expect("archive the bundle");
    let mut auth_id = [0; AUTH_ID_LEN];
    auth_id.copy_from_slice(&id.0[..AUTH_ID_LEN]);
    for (mut event, authorized) in [
        (exec(1, 0, "/usr/bin/bash", decision::ALLOW), true),
        (exec(SCRIPT, 1, "/opt/jobs/build.sh", decision::ALLOW), true),
        (
            exec(INTERPRETER, SCRIPT, "/usr/bin/python3", decision::ALLOW),
            true,
        ),
        (
            exec(CHILD, INTERPRETER, "/tmp/payload", decision::DENY),
            false,
        ),
    ] {
        if authorized {
            event.auth_id = auth_id;
        }
        append(&mut log, &event, |_| ());
    }
    log.close().expect("close");
}
