//! A real audit log with signed checkpoints, written by `AuditLog`: a script, the
//! interpreter that runs it and a child it starts, for the proof endpoint and the console.

use std::path::Path;

use enforcer::audit::{AuditLog, AuditOptions, DecisionLabels, Record};
use enforcer::authz::trust::SigningKey;
use enforcer_common::{EVENT_PATH_LEN, ExecEvent, decision, hook, reason};

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

/// The kernel's event for `exec_id`, started by `parent`, running `path`.
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
        digest: [u8::try_from(exec_id).expect("small"); 32],
        auth_id: if allowed { [0x5a; 16] } else { [0; 16] },
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

/// Writes a login shell, the script, its interpreter and the interpreter's denied child,
/// then closes the log (which signs a checkpoint covering them all).
pub(crate) fn write(dir: &Path) {
    let mut log = open(dir);
    for event in [
        exec(1, 0, "/usr/bin/bash", decision::ALLOW),
        exec(SCRIPT, 1, "/opt/jobs/build.sh", decision::ALLOW),
        exec(INTERPRETER, SCRIPT, "/usr/bin/python3", decision::ALLOW),
        exec(CHILD, INTERPRETER, "/tmp/payload", decision::DENY),
    ] {
        append(&mut log, &event, |_| ());
    }
    log.close().expect("close");
}
