//! IMA underneath enforcer's digests.
//!
//! The kernel program gets each file's SHA-256 from IMA (`bpf_ima_file_hash`). With no IMA
//! policy loaded, IMA hashes the file afresh at every call, and the program's own cache
//! ([`crate::kernel::digest_cache`]) decides when that is needed. With a policy that measures or
//! appraises executables, IMA hands out the digest it cached for the inode instead, and
//! IMA refreshes that only when the last writer of a changed file closes it: a file
//! truncated by path, or changed through a shared writable mapping on tmpfs, keeps its old
//! digest (`cargo xtask bench --checks-only` with such a policy shows both). Enforcer's
//! cache notices those changes but cannot make IMA hash again, so a host that loads an
//! IMA policy trusts IMA's change detection for exec decisions.
//!
//! [`policy_in_force`] tells whether that is the case here, for a warning at startup.

use std::path::{Path, PathBuf};

/// Where the answer comes from; [`Locations::default`] is the running system.
#[derive(Debug, Clone)]
pub struct Locations {
    pub ima_dir: PathBuf,
    pub cmdline: PathBuf,
}

impl Default for Locations {
    fn default() -> Self {
        Self {
            ima_dir: crate::host::preflight::IMA_DIR.into(),
            cmdline: "/proc/cmdline".into(),
        }
    }
}

/// Kernel command line options that load a boot-time IMA policy.
const BOOT_POLICY_OPTIONS: &[&str] = &["ima_policy=", "ima_tcb", "ima_appraise_tcb"];

/// Why IMA may hand out cached digests on this host, if it may: an IMA policy is loaded.
#[must_use]
pub fn policy_in_force() -> Option<String> {
    policy_in_force_at(&Locations::default())
}

/// [`policy_in_force`] with the files at `at`.
#[must_use]
pub fn policy_in_force_at(at: &Locations) -> Option<String> {
    if !at.ima_dir.is_dir() {
        return None;
    }
    if let Ok(cmdline) = std::fs::read_to_string(&at.cmdline)
        && let Some(option) = boot_policy(&cmdline)
    {
        return Some(format!(
            "the kernel command line loads an IMA policy ({option})"
        ));
    }
    let policy = at.ima_dir.join("policy");
    if !policy.exists() {
        // Kernels without CONFIG_IMA_WRITE_POLICY remove the file once a policy is loaded.
        return Some(format!(
            "an IMA policy was loaded in this boot ({} is gone)",
            policy.display()
        ));
    }
    // Readable only with CONFIG_IMA_READ_POLICY; otherwise the checks above must do.
    if let Ok(rules) = std::fs::read_to_string(&policy)
        && let Some(rule) = rules.lines().map(str::trim).find(|r| caches_digests(r))
    {
        return Some(format!("the IMA policy has `{rule}`"));
    }
    measurements(&at.ima_dir)
        .filter(|&n| n > 1)
        .map(|n| format!("IMA has recorded {n} measurements in this boot"))
}

/// A rule that makes IMA collect (and so cache) file digests.
fn caches_digests(rule: &str) -> bool {
    ["measure ", "appraise ", "audit ", "hash "]
        .iter()
        .any(|a| rule.starts_with(a))
}

fn boot_policy(cmdline: &str) -> Option<&str> {
    cmdline.split_whitespace().find(|word| {
        BOOT_POLICY_OPTIONS.iter().any(|o| {
            if o.ends_with('=') {
                word.starts_with(o)
            } else {
                word == o
            }
        })
    })
}

/// Entries in IMA's runtime measurement list (1, the boot aggregate, when no policy
/// measures anything).
fn measurements(ima_dir: &Path) -> Option<u64> {
    std::fs::read_to_string(ima_dir.join("runtime_measurements_count"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake securityfs and /proc/cmdline in a temporary directory.
    fn fake(cmdline: &str, policy: Option<&str>, count: &str) -> (tempfile::TempDir, Locations) {
        let dir = tempfile::tempdir().expect("tempdir");
        let at = Locations {
            ima_dir: dir.path().join("ima"),
            cmdline: dir.path().join("cmdline"),
        };
        std::fs::create_dir(&at.ima_dir).expect("mkdir");
        if let Some(policy) = policy {
            std::fs::write(at.ima_dir.join("policy"), policy).expect("policy");
        }
        std::fs::write(at.ima_dir.join("runtime_measurements_count"), count).expect("count");
        std::fs::write(&at.cmdline, cmdline).expect("cmdline");
        (dir, at)
    }

    #[test]
    fn no_policy_means_fresh_hashes() {
        let (_dir, at) = fake("console=ttyS0 quiet ima_hash=sha256\n", Some(""), "1\n");
        assert_eq!(policy_in_force_at(&at), None);
    }

    #[test]
    fn each_sign_of_a_policy_is_named() {
        let cases = [
            ("ro ima_policy=tcb", Some(""), "1", "ima_policy=tcb"),
            ("ima_appraise_tcb", Some(""), "1", "ima_appraise_tcb"),
            ("quiet", None, "1", "is gone"),
            (
                "quiet",
                Some("dont_measure fsmagic=0x9fa0\nmeasure func=BPRM_CHECK\n"),
                "1",
                "measure func=BPRM_CHECK",
            ),
            ("quiet", Some(""), "57\n", "57 measurements"),
        ];
        for (cmdline, policy, count, needle) in cases {
            let (_dir, at) = fake(cmdline, policy, count);
            let why = policy_in_force_at(&at).unwrap_or_default();
            assert!(why.contains(needle), "{cmdline:?} {policy:?}: {why:?}");
        }
        assert_eq!(boot_policy("ima_tcbx ima_policyx ima_hash=sha256"), None);
    }

    #[test]
    fn no_ima_no_policy() {
        let (_dir, mut at) = fake("ima_tcb", None, "9");
        at.ima_dir = at.ima_dir.join("missing");
        assert_eq!(policy_in_force_at(&at), None);
    }
}
