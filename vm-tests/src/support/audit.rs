//! Reading the audit log back, as a user would: `enforcer audit show --all --json`.

use std::path::Path;

use super::Env;
use super::run::run_tool;

/// The first value under `key` anywhere in `v` (records nest the decision).
pub(crate) fn find_key<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    match v {
        serde_json::Value::Object(map) => map
            .get(key)
            .or_else(|| map.values().find_map(|x| find_key(x, key))),
        serde_json::Value::Array(items) => items.iter().find_map(|x| find_key(x, key)),
        _ => None,
    }
}

/// Every audit record in `dir`, as `enforcer audit show --all --json` prints them.
#[track_caller]
pub(crate) fn audit_records(env: &Env, dir: &Path) -> Vec<serde_json::Value> {
    let (code, out) = run_tool(
        env.enforcer()
            .arg("audit")
            .arg("--dir")
            .arg(dir)
            .args(["show", "--all", "--json"]),
    );
    assert!(code == 0, "audit show exited {code}: {out}");
    out.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
