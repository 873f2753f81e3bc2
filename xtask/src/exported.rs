//! Files a VM scenario hands to the host over the console (`ENFORCER-VM-FILE <name> <hex>`,
//! printed by vm-tests' `support::export`), and the checks the host runs on them: what a
//! third party does with what the VM produced, on a machine that never saw the VM.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The console marker of an exported file.
pub(crate) const FILE: &str = "ENFORCER-VM-FILE ";

/// Writes the file of an `ENFORCER-VM-FILE` line (without its marker) under `dir`; returns
/// its name and size.
pub(crate) fn save(rest: &str, dir: &Path) -> Result<(String, usize)> {
    let (name, hex) = rest
        .trim_end()
        .split_once(' ')
        .context("an exported file line without a name and content")?;
    // Plain names only: the VM may not write outside `dir`.
    if name
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        bail!("exported file name {name:?} is not a relative path of plain names");
    }
    let bytes = decode(hex).with_context(|| format!("exported file {name}"))?;
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(&path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok((name.to_owned(), bytes.len()))
}

fn decode(hex: &str) -> Result<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        bail!("odd number of hex digits (a line cut short?)");
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .with_context(|| format!("not hex at offset {i} (a line garbled on the console?)"))
        })
        .collect()
}

/// The host's checks on the files exported to `dir` by this run, as scenario results:
/// a name and, for a failure, why. None ran when the scenario that exports their files
/// was not selected.
pub(crate) fn check(dir: &Path, enforcer: &Path) -> Vec<(String, Result<(), String>)> {
    let mut results = Vec::new();
    let proof = dir.join("proof");
    if proof.join("exec.proof.json").is_file() {
        results.push((
            "a-proof-made-in-the-vm-verifies-on-the-host".to_owned(),
            proof_checks(&proof, enforcer),
        ));
    }
    let metrics = dir.join("metrics");
    if metrics.join("metrics.txt").is_file() {
        results.push((
            "the-vm-agents-metrics-parse-as-openmetrics-and-match-its-audit-log".to_owned(),
            metrics_checks(&metrics),
        ));
    }
    results
}

/// The Prometheus project's own OpenMetrics parser (Debian's python3-prometheus-client,
/// which setup installs), run by Debian's Python: it refuses any text that is not
/// OpenMetrics, and prints the decision counters by `scope|decision|reason|hook`.
const PARSE_METRICS: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
counts = {}
for family in text_string_to_metric_families(open(sys.argv[1], encoding="utf-8").read()):
    for s in family.samples:
        if s.name == "enforcer_decisions_total":
            key = "|".join(s.labels[k] for k in ("scope", "decision", "reason", "hook"))
            counts[key] = counts.get(key, 0) + int(s.value)
print(json.dumps(counts, sort_keys=True))
"#;

/// `/metrics` as the VM's agent served it, parsed by a real OpenMetrics parser: its
/// decision counters are exactly the decisions in that agent's audit log.
fn metrics_checks(dir: &Path) -> Result<(), String> {
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(PARSE_METRICS)
        .arg(dir.join("metrics.txt"))
        .output()
        .map_err(|e| format!("cannot run /usr/bin/python3 (cargo xtask setup installs it): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "the OpenMetrics parser refused the VM's /metrics: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let parsed: std::collections::BTreeMap<String, u64> = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("the parser's output is not counts ({e})"))?;
    let text = std::fs::read_to_string(dir.join("audit-counts.json"))
        .map_err(|e| format!("cannot read the audit log's counts: {e}"))?;
    let logged: std::collections::BTreeMap<String, u64> = serde_json::from_str(&text)
        .map_err(|e| format!("the audit log's counts are not counts ({e})"))?;
    if parsed.is_empty() {
        return Err("the VM's /metrics holds no decision counter".to_owned());
    }
    if parsed != logged {
        return Err(format!(
            "decision counters differ from the audit log:\n  /metrics:  {parsed:?}\n  audit log: {logged:?}"
        ));
    }
    Ok(())
}

/// `enforcer proof verify` on the host: the VM's proof is PROVEN, its copy with one byte
/// changed is refused as record-altered.
fn proof_checks(dir: &Path, enforcer: &Path) -> Result<(), String> {
    let verify = |file: &str| -> Result<(i32, String), String> {
        let out = Command::new(enforcer)
            .arg("proof")
            .arg("verify")
            .arg(dir.join(file))
            .arg("--host-key")
            .arg(dir.join("host.pub"))
            .arg("--trust")
            .arg(dir.join("trust.toml"))
            .output()
            .map_err(|e| format!("cannot run {}: {e}", enforcer.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.code().unwrap_or(-1), text))
    };
    let (code, out) = verify("exec.proof.json")?;
    if code != 0 || !out.contains("PROVEN: record seq") {
        return Err(format!(
            "the VM's proof did not verify (exit {code}): {out}"
        ));
    }
    let (code, out) = verify("forged.proof.json")?;
    if code != 1 || !out.contains("REFUSED (record-altered)") {
        return Err(format!(
            "the changed proof was not refused as record-altered (exit {code}): {out}"
        ));
    }
    Ok(())
}

/// Where a kernel's run keeps the files its scenarios export.
pub(crate) fn dir(vm_dir: &Path) -> PathBuf {
    vm_dir.join("files")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_plain_names_and_refuses_escapes_and_garbled_hex() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (name, size) = save("proof/a.json 7b7d\n", dir.path()).expect("saved");
        assert_eq!((name.as_str(), size), ("proof/a.json", 2));
        assert_eq!(
            std::fs::read(dir.path().join("proof/a.json")).expect("read"),
            b"{}"
        );
        for bad in ["../x 00", "/etc/x 00", "a//b 00", "a 0", "a zz", "a"] {
            assert!(save(bad, dir.path()).is_err(), "{bad:?} was accepted");
        }
    }
}
