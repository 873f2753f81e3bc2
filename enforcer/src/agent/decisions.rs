//! Decisions as the agent reports them: decoded from the ring buffer, named (scope paths,
//! grant names) and rendered for stdout.

use std::collections::HashMap;
use std::path::Path;

use enforcer_common::{ExecEvent, decision, reason};

use crate::audit::DecisionLabels;
use crate::authz::policy::Policy;
use crate::host::cgroup;
use crate::host::digest::FileDigest;
use crate::kernel::MapState;

pub fn decode(bytes: &[u8]) -> Option<ExecEvent> {
    (bytes.len() >= size_of::<ExecEvent>())
        // SAFETY: ExecEvent is plain repr(C) data valid for any bit pattern, and the length
        // was checked; read_unaligned copes with any alignment.
        .then(|| unsafe { bytes.as_ptr().cast::<ExecEvent>().read_unaligned() })
}

/// Names for ids and digests, so decisions read as paths and programs.
#[derive(Default)]
pub struct Labels {
    scopes: HashMap<u64, String>,
    names: HashMap<(u64, [u8; 32]), String>,
}

impl Labels {
    pub fn new(policy: &Policy, desired: &MapState, cgroup_root: &Path) -> Self {
        let mut scopes = HashMap::new();
        let mut names = HashMap::new();
        for (path, spec) in &policy.scopes {
            let Ok(id) = cgroup::id_of(&cgroup::dir_of(cgroup_root, path), path.as_str()) else {
                continue;
            };
            if desired.scopes.contains_key(&id) {
                scopes.insert(id, path.to_string());
            }
            for g in &spec.grants {
                if let Some(name) = &g.name {
                    names.insert((id, g.digest.0), name.clone());
                }
            }
        }
        Self { scopes, names }
    }

    /// Names a scope the policy does not (the startup self-test's).
    pub fn name_scope(&mut self, id: u64, name: &str) {
        self.scopes.insert(id, name.to_owned());
    }

    pub fn audit(&self, e: &ExecEvent) -> DecisionLabels<'_> {
        DecisionLabels {
            scope: self.scopes.get(&e.scope_id).map(String::as_str),
            grant_name: self.names.get(&(e.scope_id, e.digest)).map(String::as_str),
        }
    }

    pub fn render(&self, e: &ExecEvent, json: bool) -> String {
        let what = enforcer_common::hook::NAMES
            .get(e.hook as usize)
            .copied()
            .unwrap_or("unknown");
        let verdict = match e.decision {
            decision::ALLOW => "allow",
            decision::DENY => "deny",
            decision::WOULD_DENY => "would-deny",
            _ => "unknown",
        };
        let path = cstr(&e.path);
        let digest = FileDigest(e.digest);
        let scope = self
            .scopes
            .get(&e.scope_id)
            .cloned()
            .unwrap_or_else(|| e.scope_id.to_string());
        if json {
            serde_json::json!({
                "decision": verdict,
                "reason": reason::name(e.reason),
                "hook": what,
                "path": path,
                "sha256": digest.to_string(),
                "name": self.names.get(&(e.scope_id, e.digest)),
                "exec_id": e.exec_id,
                "parent_exec_id": e.parent_exec_id,
                "pid": e.pid,
                "tgid": e.tgid,
                "ppid": e.ppid,
                "uid": e.uid,
                "gid": e.gid,
                "scope": scope,
                "cgroup_id": e.cgroup_id,
                "auth_serial": e.auth_serial,
                "auth_id": hex::encode(e.auth_id),
                "boot_ns": e.boot_ns,
            })
            .to_string()
        } else {
            let path = if e.hook == enforcer_common::hook::BPRM_CHECK_SECURITY {
                path
            } else {
                format!("{what}: {path}")
            };
            format!(
                "{verdict:<10} {path}  [{reason}] pid={pid} uid={uid} scope={scope} sha256={short}",
                reason = reason::name(e.reason),
                pid = e.tgid,
                uid = e.uid,
                short = &digest.to_string()[..16],
            )
        }
    }
}

fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}
