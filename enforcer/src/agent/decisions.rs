//! Decisions as the agent reports them: decoded from the ring buffer, named (scope paths,
//! grant names) and rendered for stdout.

use std::collections::HashMap;
use std::path::Path;

use enforcer_common::ExecEvent;

use crate::audit::{Decision, DecisionLabels};
use crate::authz::policy::Policy;
use crate::host::cgroup;
use crate::kernel::MapState;

pub(super) fn decode(bytes: &[u8]) -> Option<ExecEvent> {
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

    /// A decision for stdout: the audit log's record as one JSON line, or a line for a
    /// person.
    pub fn render(&self, e: &ExecEvent, boot_id: &str, json: bool) -> String {
        let d = Decision::from_event(e, &self.audit(e), boot_id);
        if json {
            return serde_json::to_string(&d)
                .unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}"));
        }
        let path = if e.hook == enforcer_common::hook::BPRM_CHECK_SECURITY {
            d.path
        } else {
            format!("{}: {}", d.hook, d.path)
        };
        let scope = d.scope.unwrap_or_else(|| d.scope_id.to_string());
        format!(
            "{:<10} {path}  [{}] pid={} uid={} scope={scope} sha256={}",
            d.decision,
            d.reason,
            d.tgid,
            d.uid,
            d.sha256.get(..16).unwrap_or(&d.sha256),
        )
    }
}
