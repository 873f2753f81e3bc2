//! Startup checks: whether enforcement can work on this host, and if not, why and what to
//! do about it. Each check names the missing piece instead of letting a load fail with a
//! bare errno.

use std::path::Path;

/// Active LSMs, in order.
pub const LSM_LIST: &str = "/sys/kernel/security/lsm";
/// IMA's securityfs directory: present when IMA is built in and initialised.
pub const IMA_DIR: &str = "/sys/kernel/security/ima";
const BPF_FS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// A reason enforcement cannot start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PreflightError {
    #[error(
        "cannot read {LSM_LIST}: securityfs is not mounted. Mount it: \
         `mount -t securityfs securityfs /sys/kernel/security`"
    )]
    NoSecurityfs,
    #[error(
        "BPF LSM is not active (active LSMs: {active}). Add `lsm={active},bpf` to the kernel \
         command line (e.g. GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub) and reboot"
    )]
    BpfLsmInactive { active: String },
    #[error(
        "kernel BTF is missing ({}): enforcer needs a kernel built with CONFIG_DEBUG_INFO_BTF",
        crate::kernel::btf::VMLINUX_BTF
    )]
    NoBtf,
    #[error(
        "IMA is not available ({IMA_DIR} is missing): file digests come from IMA, so enforcer \
         needs a kernel with CONFIG_IMA"
    )]
    NoIma,
    #[error("bpffs is not mounted at {BPF_FS}: mount it with `mount -t bpf bpf {BPF_FS}`")]
    NoBpfFs,
    #[error("{0} is not a cgroup v2 mount: enforcer governs cgroup v2 scopes only")]
    NoCgroup2(String),
}

/// Checks what must hold before the program is loaded.
pub fn check(cgroup_root: &Path) -> Result<(), Vec<PreflightError>> {
    let mut problems = Vec::new();
    match std::fs::read_to_string(LSM_LIST) {
        Ok(list) => {
            if let Err(e) = check_lsm_list(&list) {
                problems.push(e);
            }
        }
        Err(_) => problems.push(PreflightError::NoSecurityfs),
    }
    if !Path::new(crate::kernel::btf::VMLINUX_BTF).exists() {
        problems.push(PreflightError::NoBtf);
    }
    if Path::new(LSM_LIST).exists() && !Path::new(IMA_DIR).exists() {
        problems.push(PreflightError::NoIma);
    }
    if fs_magic(Path::new(BPF_FS)) != Some(BPF_FS_MAGIC) {
        problems.push(PreflightError::NoBpfFs);
    }
    if fs_magic(cgroup_root) != Some(CGROUP2_SUPER_MAGIC) {
        problems.push(PreflightError::NoCgroup2(cgroup_root.display().to_string()));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The active LSM list must name `bpf`.
pub fn check_lsm_list(list: &str) -> Result<(), PreflightError> {
    let active = list.trim().trim_end_matches('\0');
    if active.split(',').any(|l| l == "bpf") {
        Ok(())
    } else {
        Err(PreflightError::BpfLsmInactive {
            active: active.to_owned(),
        })
    }
}

fn fs_magic(path: &Path) -> Option<i64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs writes into a zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c_path.as_ptr(), &mut st) } == 0).then_some(st.f_type as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsm_list_must_contain_bpf() {
        assert_eq!(
            check_lsm_list("lockdown,capability,landlock,yama,apparmor,bpf"),
            Ok(())
        );
        assert_eq!(check_lsm_list("capability,bpf,landlock\n"), Ok(()));
        let err = check_lsm_list("lockdown,capability,apparmor").expect_err("no bpf");
        assert!(
            err.to_string()
                .contains("lsm=lockdown,capability,apparmor,bpf"),
            "{err}"
        );
        assert!(
            check_lsm_list("capability,bpfx").is_err(),
            "substring is not a match"
        );
    }
}

/// What the kernel said it refused in scope `scope_id`, for the self-test's error message.
fn refusals(enforcement: &mut crate::kernel::Enforcement, scope_id: u64) -> String {
    use enforcer_common::{decision, hook, reason};
    let said: Vec<String> = enforcement
        .drain_decisions()
        .iter()
        .filter(|e| e.scope_id == scope_id && e.decision == decision::DENY)
        .map(|e| {
            let hook = hook::NAMES
                .get(e.hook as usize)
                .copied()
                .unwrap_or("unknown hook");
            format!(
                "{} at {hook} (detail {:#x})",
                reason::name(e.reason),
                e.detail
            )
        })
        .collect();
    if said.is_empty() {
        String::new()
    } else {
        format!("; the kernel refused: {}", said.join(", "))
    }
}

/// Why the startup self-test failed.
#[derive(Debug, thiserror::Error)]
pub enum SelfTestError {
    #[error("self-test setup failed: {0}")]
    Setup(String),
    #[error(
        "self-test: a granted exec was refused ({detail}). The kernel program cannot confirm \
         digests on this host; check that IMA hashes with SHA-256 (`ima_hash=sha256`)"
    )]
    GrantedDenied { detail: String },
    #[error(
        "self-test: an exec that no grant covers was allowed ({0}); the LSM hook is not enforcing"
    )]
    UngrantedAllowed(String),
}

/// Proves, on this kernel, that the attached program allows a granted exec and denies an
/// ungranted one: a throwaway scope grants the agent's own binary, which is then executed
/// in it with and without the grant. The maps are restored afterwards. Returns the
/// throwaway scope's cgroup id, so its two decisions can be labelled.
pub fn self_test(
    enforcement: &mut crate::kernel::Enforcement,
    cgroup_root: &Path,
) -> Result<u64, SelfTestError> {
    use crate::host::digest::FileDigest;
    use crate::kernel::ScopedDigest;
    use enforcer_common::{GrantEntry, ScopePolicy};

    let setup =
        |what: &str, e: &dyn std::fmt::Display| SelfTestError::Setup(format!("{what}: {e}"));
    let exe = std::env::current_exe().map_err(|e| setup("locating own binary", &e))?;
    let digest = FileDigest::of_file(&exe).map_err(|e| setup("hashing own binary", &e))?;
    // Executable mappings are checked too: the trial needs the loader and libraries.
    let libraries = crate::host::elf::with_dependencies(std::slice::from_ref(&exe))
        .map_err(|e| setup("finding own libraries", &e))?;
    let mut library_digests = Vec::new();
    for lib in libraries.iter().skip(1) {
        library_digests
            .push(FileDigest::of_file(lib).map_err(|e| setup("hashing own libraries", &e))?);
    }
    let dir = cgroup_root.join(format!("enforcer-selftest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| setup("creating self-test cgroup", &e))?;
    let result = (|| {
        let id =
            crate::host::cgroup::id_of(&dir, "self-test").map_err(|e| setup("cgroup id", &e))?;
        let before = enforcement.read().map_err(|e| setup("reading maps", &e))?;
        let mut granted = before.clone();
        granted.scopes.insert(id, ScopePolicy::default());
        let forever = GrantEntry {
            not_after_boot_ns: u64::MAX,
            ..GrantEntry::default()
        };
        let key = ScopedDigest {
            scope_id: id,
            digest: digest.0,
        };
        granted.grants.insert(key, forever);
        for lib in &library_digests {
            granted.grants.insert(
                ScopedDigest {
                    scope_id: id,
                    digest: lib.0,
                },
                forever,
            );
        }
        let mut ungranted = granted.clone();
        ungranted.grants.remove(&key);

        let trial = |state: &crate::kernel::MapState,
                     enforcement: &mut crate::kernel::Enforcement|
         -> Result<std::io::Result<std::process::ExitStatus>, SelfTestError> {
            enforcement
                .apply(state)
                .map_err(|e| setup("updating maps", &e))?;
            let mut cmd = std::process::Command::new(&exe);
            cmd.arg("--version")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            crate::host::cgroup::spawn_into(&mut cmd, &dir)
                .map_err(|e| setup("preparing exec", &e))?;
            Ok(cmd.status())
        };
        let with_grant = trial(&granted, enforcement);
        let without_grant = trial(&ungranted, enforcement);
        enforcement
            .apply(&before)
            .map_err(|e| setup("restoring maps", &e))?;
        match with_grant? {
            Ok(status) if status.success() => {}
            Ok(status) => {
                return Err(SelfTestError::GrantedDenied {
                    detail: format!("{status}{}", refusals(enforcement, id)),
                });
            }
            Err(e) => {
                return Err(SelfTestError::GrantedDenied {
                    detail: format!("{e}{}", refusals(enforcement, id)),
                });
            }
        }
        match without_grant? {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(id),
            Err(e) => Err(setup("ungranted trial exec", &e)),
            Ok(status) => Err(SelfTestError::UngrantedAllowed(status.to_string())),
        }
    })();
    // The children have exited, so the cgroup is empty and can go.
    let _ = std::fs::remove_dir(&dir);
    result
}
