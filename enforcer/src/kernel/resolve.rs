//! From a [`Policy`] to what the maps must hold: cgroup ids for scope paths, the kernel's
//! scope flags, and wall-clock deadlines turned into CLOCK_BOOTTIME instants.

use std::path::Path;
use std::time::{Duration, SystemTime};

use enforcer_common::{GrantEntry, InodeKey, ScopePolicy, inode_rule, mode, scope_flags};

use super::KernelError;
use super::maps::{MapState, ScopedDigest};
use crate::authz::artifact::Mode;
use crate::authz::policy::Policy;
use crate::host::cgroup;

/// Turns a policy into map entries: resolves scopes to cgroup ids (creating missing
/// cgroups) and grant expiries to CLOCK_BOOTTIME deadlines.
pub fn resolve(policy: &Policy, cgroup_root: &Path) -> Result<MapState, KernelError> {
    let now_real = SystemTime::now();
    let now_boot = crate::clock::boot_ns().map_err(KernelError::Clock)?;
    let mut state = MapState::default();
    let mut rule = |scope_id: u64, path: &Path, bit: u32| match inode_of(path) {
        Some((dev, ino)) => {
            *state
                .inodes
                .entry(InodeKey::new(scope_id, dev, ino))
                .or_default() |= bit
        }
        // A path that does not exist names nothing to allow or protect.
        None => tracing::debug!(path = %path.display(), "no such file; no inode rule"),
    };
    for path in &policy.sockets {
        rule(0, path, inode_rule::SOCKET);
    }
    for path in &policy.secrets {
        rule(0, path, inode_rule::SECRET);
    }
    let mut scope_ids = Vec::with_capacity(policy.scopes.len());
    for path in policy.scopes.keys() {
        scope_ids.push(cgroup::ensure_scope(cgroup_root, path)?);
    }
    for (scope, id) in policy.scopes.values().zip(&scope_ids) {
        for root in &scope.writable {
            rule(*id, root, inode_rule::WRITABLE_ROOT);
        }
        for device in &scope.devices {
            rule(*id, device, inode_rule::DEVICE);
        }
    }
    for (scope, id) in policy.scopes.values().zip(scope_ids) {
        let kernel_mode = match scope.mode {
            Mode::Enforce => mode::ENFORCE,
            Mode::Monitor => mode::MONITOR,
        };
        let mut flags = 0;
        if scope.allow_anonymous_exec {
            flags |= scope_flags::ALLOW_ANON_EXEC;
        }
        if scope.allow_fileless {
            flags |= scope_flags::ALLOW_FILELESS;
        }
        // Break-glass: the kernel ends it by itself at the deadline. One already past
        // (0) is no break-glass at all.
        let monitor_until_boot_ns = scope
            .monitor_until
            .map_or(0, |t| whole_second_deadline(t, now_real, now_boot));
        state.scopes.insert(
            id,
            ScopePolicy {
                mode: kernel_mode,
                flags,
                monitor_until_boot_ns,
            },
        );
        for grant in &scope.grants {
            if grant.digest.0 == EMPTY_CONTENT {
                // No program is empty, and the empty digest is what the kernel reports for
                // a file whose size says 0: devices, sockets, pseudo files whose pages
                // come from elsewhere. Granting it would grant all of those.
                tracing::debug!(auth_id = ?grant.auth_id, "grant of empty content not loaded");
                continue;
            }
            let key = ScopedDigest {
                scope_id: id,
                digest: grant.digest.0,
            };
            let value = GrantEntry {
                not_after_boot_ns: grant
                    .not_after
                    .map_or(u64::MAX, |t| whole_second_deadline(t, now_real, now_boot)),
                auth_serial: grant.auth_serial,
                auth_id: grant.auth_id,
            };
            // Two authorizations may grant one digest: keep the one that lives longest.
            state
                .grants
                .entry(key)
                .and_modify(|g| {
                    if value.not_after_boot_ns > g.not_after_boot_ns {
                        *g = value;
                    }
                })
                .or_insert(value);
        }
    }
    Ok(state)
}

/// SHA-256 of no bytes.
pub(crate) const EMPTY_CONTENT: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Converts a wall-clock deadline to CLOCK_BOOTTIME. A deadline already past maps to 0,
/// which the kernel treats as expired; a far one saturates below `u64::MAX` only when it
/// is truly unbounded.
#[must_use]
pub fn boot_deadline(not_after: SystemTime, now_real: SystemTime, now_boot_ns: u64) -> u64 {
    match not_after.duration_since(now_real) {
        Ok(left) => now_boot_ns.saturating_add(duration_ns(left)),
        Err(_) => 0,
    }
}

/// [`boot_deadline`] rounded down to a whole second of CLOCK_BOOTTIME, for map entries.
///
/// The two clocks are read a few microseconds apart and NTP slews their difference, so
/// the exact conversion of one deadline changes between two resolves; a grant whose
/// value changes is rewritten at every apply. Whole seconds make a resolve of the same
/// policy give the same entries (signed deadlines are whole seconds anyway), and
/// rounding down ends a grant up to a second early, never late.
#[must_use]
pub fn whole_second_deadline(not_after: SystemTime, now_real: SystemTime, now_boot_ns: u64) -> u64 {
    const SECOND: u64 = 1_000_000_000;
    match boot_deadline(not_after, now_real, now_boot_ns) {
        u64::MAX => u64::MAX,
        ns => ns - ns % SECOND,
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A file's identity as the kernel programs see it: `super_block::s_dev` (the kernel's
/// `MKDEV`, major << 20 | minor, not the user-space `dev_t`) and the inode number.
/// Symbolic links are followed (`/dev/log` names journald's socket).
fn inode_of(path: &Path) -> Option<(u32, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    Some(((major << 20) | minor, meta.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_content_is_the_digest_of_nothing() {
        assert_eq!(
            EMPTY_CONTENT,
            crate::host::digest::FileDigest::of_bytes(b"").0
        );
    }

    #[test]
    fn deadlines_map_to_boot_time() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            boot_deadline(now + Duration::from_secs(5), now, 7),
            5_000_000_007
        );
        assert_eq!(
            boot_deadline(now - Duration::from_secs(1), now, 7),
            0,
            "past: expired"
        );
        assert_eq!(boot_deadline(now, now, 7), 7, "now: expires at once");
        assert_eq!(
            boot_deadline(
                now + Duration::from_secs(u64::MAX / 1_000_000_000 + 1),
                now,
                7
            ),
            u64::MAX,
            "saturates instead of wrapping"
        );
    }

    #[test]
    fn map_deadlines_are_whole_seconds_and_never_later() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let in_5s = now + Duration::from_secs(5);
        assert_eq!(whole_second_deadline(in_5s, now, 7), 5_000_000_000);
        assert_eq!(
            whole_second_deadline(in_5s, now, 999_999_999),
            5_000_000_000
        );
        assert_eq!(
            whole_second_deadline(in_5s, now, 1_000_000_000),
            6_000_000_000
        );
        assert_eq!(
            whole_second_deadline(now - Duration::from_secs(1), now, 7),
            0
        );
        let far = now + Duration::from_secs(u64::MAX / 1_000_000_000 + 1);
        assert_eq!(
            whole_second_deadline(far, now, 7),
            u64::MAX,
            "never expires stays so"
        );
    }

    #[test]
    fn resolve_hands_break_glass_deadlines_to_the_kernel() {
        use crate::authz::artifact::ScopePath;
        use crate::authz::policy::ScopeSpec;
        // A plain directory with a cgroup.procs file stands in for a cgroup.
        let root = tempfile::tempdir().expect("tempdir");
        let scope = |name: &str| {
            std::fs::create_dir(root.path().join(name)).expect("mkdir");
            std::fs::write(root.path().join(name).join("cgroup.procs"), "").expect("procs");
            format!("/{name}").parse::<ScopePath>().expect("scope")
        };
        let now = SystemTime::now();
        let mut policy = Policy::default();
        let spec = |monitor_until| ScopeSpec {
            monitor_until,
            ..ScopeSpec::default()
        };
        policy
            .scopes
            .insert(scope("open"), spec(Some(now + Duration::from_secs(600))));
        policy
            .scopes
            .insert(scope("over"), spec(Some(now - Duration::from_secs(1))));
        policy.scopes.insert(scope("none"), spec(None));
        let before = crate::clock::boot_ns().expect("clock");
        let state = resolve(&policy, root.path()).expect("resolve");
        let after = crate::clock::boot_ns().expect("clock");
        let until = |name: &str| {
            let id = cgroup::id_of(&root.path().join(name), name).expect("id");
            let policy = state.scopes[&id];
            assert_eq!(
                policy.mode,
                mode::ENFORCE,
                "break-glass is a deadline, not a mode"
            );
            policy.monitor_until_boot_ns
        };
        let open = until("open");
        let second = 1_000_000_000;
        assert!(
            open % second == 0 && open > before + 598 * second && open <= after + 600 * second,
            "{open}"
        );
        assert_eq!(until("over"), 0, "a past deadline is none");
        assert_eq!(until("none"), 0);
    }
}
