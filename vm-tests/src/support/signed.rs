//! Signed artifacts made with the real CLI and the example trust store's TEST-ONLY keys,
//! and agents that enforce them.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use super::agent::Agent;
use super::run::enforcer_ok;
use super::{Env, WORK};

/// The example policies shipped in the VM: trust.toml and the TEST-ONLY keys.
pub(crate) const POLICIES: &str = "/usr/share/enforcer/policies";
/// The scope the service scenarios govern; only signed artifacts grant anything in it.
pub(crate) const LIVE: &str = "vmtest-live";
pub(crate) const SOCKET: &str = "/run/enforcer/control.sock";

/// Copies the example trust store's TEST-ONLY private keys into `dir` as `<who>.key`:
/// alice and bob sign bundles (2 of 2), carol revocations and break-glass. Private keys
/// must not be readable by others to be used, hence mode 0600.
pub(crate) fn copy_test_keys(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    for who in ["alice", "bob", "carol"] {
        let from = Path::new(POLICIES).join(format!("keys/TEST-ONLY-{who}.key"));
        let key = dir.join(format!("{who}.key"));
        std::fs::copy(&from, &key)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), key.display()));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("chmod 600 {}: {e}", key.display()));
    }
}

/// A fresh work area with keys, a bundle directory and a state directory.
pub(crate) struct Kit {
    pub(crate) work: PathBuf,
    keys: PathBuf,
    pub(crate) trust: PathBuf,
    pub(crate) bundle_dir: PathBuf,
    pub(crate) state: PathBuf,
}

impl Kit {
    pub(crate) fn new(name: &str) -> Self {
        let work = Path::new(WORK).join("service").join(name);
        let _ = std::fs::remove_dir_all(&work);
        let keys = work.join("keys");
        copy_test_keys(&keys);
        Self {
            trust: Path::new(POLICIES).join("trust.toml"),
            bundle_dir: work.join("bundles"),
            state: work.join("state"),
            keys,
            work,
        }
    }

    fn key(&self, who: &str) -> String {
        self.keys.join(format!("{who}.key")).display().to_string()
    }

    pub(crate) fn out(&self, name: &str) -> String {
        self.work.join(name).display().to_string()
    }

    /// A bundle for LIVE granting `programs` and their libraries, signed by alice and bob.
    #[track_caller]
    pub(crate) fn bundle(
        &self,
        env: &Env,
        id: &str,
        programs: &[PathBuf],
        extra: &[&str],
    ) -> String {
        let out = self.out(&format!("{id}.bundle.json"));
        let closure = enforcer::host::elf::with_dependencies(programs)
            .unwrap_or_else(|e| panic!("libraries of {programs:?}: {e}"));
        let files: Vec<String> = closure.iter().map(|p| p.display().to_string()).collect();
        let scope = format!("/{LIVE}");
        // Serials count per issuer and scope, and a higher one supersedes: each line of
        // bundles here gets its own issuer so that they can hold together.
        let issuer = format!("vm-{id}");
        let mut args = vec![
            "bundle",
            "create",
            "--issuer",
            &issuer,
            "--bundle-id",
            id,
            "--serial",
            "1",
        ];
        args.extend(["--scope", scope.as_str(), "--out", out.as_str()]);
        if !extra.contains(&"--valid-for") {
            args.extend(["--valid-for", "1h"]);
        }
        args.extend(extra);
        for f in &files {
            args.extend(["--file", f.as_str()]);
        }
        enforcer_ok(env, &args);
        self.sign(env, &out);
        out
    }

    /// Signs the bundle at `out` by alice and bob, as the trust store asks.
    #[track_caller]
    pub(crate) fn sign(&self, env: &Env, out: &str) {
        enforcer_ok(env, &["bundle", "sign", "--key", &self.key("alice"), out]);
        enforcer_ok(env, &["bundle", "sign", "--key", &self.key("bob"), out]);
    }

    /// A revocation of bundle id `id`, signed by carol.
    #[track_caller]
    pub(crate) fn revocation(&self, env: &Env, id: &str) -> String {
        let out = self.out(&format!("{id}.revocation.json"));
        signed_revocation(env, &out, id, &self.key("carol"));
        out
    }

    /// A break-glass artifact for LIVE, valid for `valid_for`, signed by carol.
    #[track_caller]
    pub(crate) fn break_glass(&self, env: &Env, valid_for: &str) -> String {
        let out = self.out("break-glass.json");
        let scope = format!("/{LIVE}");
        enforcer_ok(
            env,
            &[
                "break-glass",
                "create",
                "--issuer",
                "oncall",
                "--scope",
                &scope,
                "--valid-for",
                valid_for,
                "--reason",
                "vm test: incident 42",
                "--out",
                &out,
            ],
        );
        enforcer_ok(
            env,
            &["break-glass", "sign", "--key", &self.key("carol"), &out],
        );
        out
    }

    /// `enforcer run` on signed artifacts, governing LIVE.
    #[track_caller]
    pub(crate) fn agent(&self, env: &Env) -> Agent {
        self.agent_with(env, &[])
    }

    /// [`Kit::agent`] with more arguments for `enforcer run`.
    #[track_caller]
    pub(crate) fn agent_with(&self, env: &Env, extra: &[&str]) -> Agent {
        let scope = format!("/{LIVE}");
        Agent::spawn(
            env.enforcer()
                .args(["run", "--json", "--trust"])
                .arg(&self.trust)
                .arg("--bundle-dir")
                .arg(&self.bundle_dir)
                .arg("--state-dir")
                .arg(&self.state)
                .arg("--audit-dir")
                .arg(self.audit_dir())
                .args(["--scope", &scope, "--socket", SOCKET])
                .args(extra),
        )
    }

    /// Where [`Kit::agent`] keeps its audit log.
    pub(crate) fn audit_dir(&self) -> PathBuf {
        self.work.join("audit")
    }
}

/// Writes to `out` a revocation of bundle id `id` from the issuer `security`, signed with
/// `key`.
#[track_caller]
pub(crate) fn signed_revocation(env: &Env, out: &str, id: &str, key: &str) {
    enforcer_ok(
        env,
        &[
            "revoke",
            "create",
            "--issuer",
            "security",
            "--bundle-id",
            id,
            "--out",
            out,
        ],
    );
    enforcer_ok(env, &["revoke", "sign", "--key", key, out]);
}
