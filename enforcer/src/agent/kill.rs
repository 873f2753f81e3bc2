//! `on_revoke = "kill"`: terminating the processes that were started under an
//! authorization that is no longer live.
//!
//! The kernel records, for every process whose exec it allowed, the authorization whose
//! grant allowed it (the IMAGES map, keyed by tgid and guarded by the process's start
//! time). A process that forked without exec runs the image of the process that forked
//! it, so it is found through its parent chain. Every process in the governed scopes is
//! looked at; those running an image of a withdrawn authorization get SIGKILL through a
//! pidfd, which cannot hit a different process that reused the pid.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;
use std::time::SystemTime;

use enforcer_common::{AUTH_ID_LEN, Image};

use super::Agent;
use crate::audit::AuthorizationChange;
use crate::authz::Authorizations;
use crate::authz::artifact::{ArtifactKind, Bundle, Envelope, OnRevoke, unix_seconds};
use crate::host::cgroup;

/// A process that was killed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Killed {
    pub pid: u32,
    pub auth_id: [u8; AUTH_ID_LEN],
}

/// How far up the parent chain a forked process is followed.
const MAX_ANCESTRY: usize = 64;

/// What /proc says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    ppid: u32,
    /// `starttime`: clock ticks after boot (CLOCK_BOOTTIME based).
    start_ticks: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses `/proc/PID/stat`. The command name may hold spaces and parentheses, so the
/// fields are counted from its last `)`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (field 3), ppid (4), ..., starttime (22).
    Some(ProcStat {
        ppid: fields.get(1)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// Clock facts needed to compare the kernel's start times with /proc's.
#[derive(Debug, Clone, Copy)]
struct Clocks {
    ns_per_tick: u64,
    /// CLOCK_BOOTTIME - CLOCK_MONOTONIC now: the time spent suspended so far.
    suspended_ns: u64,
}

impl Clocks {
    fn now() -> std::io::Result<Self> {
        let boot = crate::clock::boot_ns()?;
        let mono = crate::clock::monotonic_ns()?;
        Ok(Self {
            ns_per_tick: crate::clock::ns_per_tick(),
            suspended_ns: boot.saturating_sub(mono),
        })
    }

    /// Whether a process /proc reports as started at `start_ticks` (boot time) is the one
    /// the kernel recorded as started at `start_ns` (monotonic). The two clocks differ by
    /// the time suspended before the process started, which is at most what it is now.
    fn same_start(self, start_ticks: u64, start_ns: u64) -> bool {
        let boot_ns = start_ticks.saturating_mul(self.ns_per_tick);
        boot_ns + self.ns_per_tick >= start_ns
            && boot_ns
                <= start_ns
                    .saturating_add(self.suspended_ns)
                    .saturating_add(self.ns_per_tick)
    }
}

/// The image process `pid` runs: its own record, or for a process that forked without
/// exec, the nearest ancestor's.
fn image_of(pid: u32, images: &HashMap<u32, Image>, clocks: Clocks) -> Option<(u32, Image)> {
    let mut current = pid;
    for _ in 0..MAX_ANCESTRY {
        let stat = proc_stat(current)?;
        if let Some(image) = images.get(&current)
            && clocks.same_start(stat.start_ticks, image.leader_start_ns)
        {
            return Some((current, *image));
        }
        if stat.ppid <= 1 {
            return None;
        }
        current = stat.ppid;
    }
    None
}

/// Every process in `dir` and the cgroups below it.
fn processes_below(dir: &Path, out: &mut Vec<u32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            processes_below(&entry.path(), out);
        }
    }
}

/// Kills every process in the `scopes` cgroup trees running an image allowed by one of
/// `withdrawn`. Returns the processes killed; a process that vanished first is not one.
///
/// Every target is chosen before any is signalled: a child found through its parent
/// would be re-parented once the parent died, and then missed. Passes repeat until one
/// finds nothing, for children forked while the previous pass ran.
pub(super) fn sweep(
    scopes: &[PathBuf],
    images: &HashMap<u32, Image>,
    withdrawn: &HashSet<[u8; AUTH_ID_LEN]>,
) -> Vec<Killed> {
    /// Enough for a fork race; a process that forks faster than this is not stopped by
    /// signals anyway (its scope still denies every new exec).
    const PASSES: usize = 5;
    let mut killed = Vec::new();
    if withdrawn.is_empty() {
        return killed;
    }
    let clocks = match Clocks::now() {
        Ok(clocks) => clocks,
        Err(e) => {
            // Start times cannot be compared: a pid reused meanwhile could be hit. The
            // kernel already denies the withdrawn grants; killing waits for the next pass.
            tracing::error!("cannot read the clocks to match processes: {e}");
            return killed;
        }
    };
    for _ in 0..PASSES {
        let mut pids = Vec::new();
        for dir in scopes {
            processes_below(dir, &mut pids);
        }
        pids.sort_unstable();
        pids.dedup();
        let targets: Vec<(u32, u64, Image)> = pids
            .into_iter()
            .filter_map(|pid| {
                let start = proc_stat(pid)?.start_ticks;
                let (_, image) = image_of(pid, images, clocks)?;
                withdrawn
                    .contains(&image.auth_id)
                    .then_some((pid, start, image))
            })
            .collect();
        let mut any = false;
        for (pid, start, image) in targets {
            match kill(pid, start) {
                Ok(true) => {
                    any = true;
                    tracing::warn!(pid, auth_id = %hex::encode(image.auth_id), "killed: its authorization was withdrawn (on_revoke = kill)");
                    killed.push(Killed {
                        pid,
                        auth_id: image.auth_id,
                    });
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(pid, error = %e, "cannot kill a process whose authorization was withdrawn")
                }
            }
        }
        if !any {
            break;
        }
    }
    killed
}

/// SIGKILL through a pidfd for the process `pid` that started at `start_ticks`: the
/// descriptor names one process, and it is checked to be the one that was looked at, so
/// a pid reused meanwhile is never hit. `Ok(false)` when that process is already gone.
fn kill(pid: u32, start_ticks: u64) -> std::io::Result<bool> {
    // SAFETY: plain syscall; the result is checked before use.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ESRCH) {
            Ok(false)
        } else {
            Err(e)
        };
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(i32::try_from(raw).map_err(std::io::Error::other)?) };
    // The pidfd now pins one process; it must be the one that was looked at.
    if proc_stat(pid).map(|s| s.start_ticks) != Some(start_ticks) {
        return Ok(false);
    }
    // SAFETY: valid pidfd, no siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<u8>(),
            0,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ESRCH) {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(true)
}

/// An authorization the agent has seen, remembered so that processes started under it
/// can be found once it is withdrawn.
#[derive(Debug, Clone)]
pub(super) struct KnownAuth {
    issuer: String,
    on_revoke: OnRevoke,
    /// The file it came from: a definite withdrawal is this file revoked or gone.
    path: PathBuf,
    /// Unix seconds: past it, the authorization has expired.
    not_after: u64,
    bundle_id: String,
}

impl KnownAuth {
    /// Whether it is withdrawn for good: expired, revoked, or its file removed. A bundle
    /// superseded by a newer serial, or a file that could not be read this time, is not:
    /// killing on those would end processes that are still authorized.
    fn definitely_withdrawn(&self, authz: &Authorizations, now: u64) -> bool {
        self.not_after <= now || authz.revoked.contains(&self.path) || !self.path.exists()
    }
}

/// A bundle file's id prefix, bundle id, issuer and `on_revoke`, without verifying it.
fn read_bundle_unverified(path: &Path) -> Option<([u8; AUTH_ID_LEN], KnownAuth)> {
    let bytes = crate::authz::verify::read_artifact(path).ok()?;
    let envelope = Envelope::parse(&bytes).ok()?;
    if envelope.kind().ok()? != ArtifactKind::Bundle {
        return None;
    }
    let bundle = Bundle::from_payload(&envelope.payload).ok()?;
    Some((
        envelope.id().auth_prefix(),
        KnownAuth {
            bundle_id: bundle.bundle_id,
            issuer: bundle.issuer,
            on_revoke: bundle.on_revoke,
            path: path.to_path_buf(),
            not_after: bundle.not_after,
        },
    ))
}

impl Agent {
    /// Kills the processes started under authorizations that are no longer live and whose
    /// bundle says `on_revoke = "kill"`. A bundle replaced by a newer serial of the same
    /// bundle id is not withdrawn: its programs are still authorized.
    pub(super) fn kill_withdrawn(&mut self) -> anyhow::Result<usize> {
        let Some(authz) = &self.view.authz else {
            return Ok(0);
        };
        // A bundle past its not_after still counts as accepted for the clock-skew margin,
        // but the kernel already denies its grants: its processes go now, not a minute late.
        let now = unix_seconds(SystemTime::now());
        let live: HashSet<[u8; AUTH_ID_LEN]> = authz
            .accepted
            .iter()
            .filter(|b| b.not_after > now)
            .map(|b| b.id.auth_prefix())
            .collect();
        let mut learned = Vec::new();
        for b in &authz.accepted {
            learned.push((
                b.id.auth_prefix(),
                KnownAuth {
                    bundle_id: b.bundle_id.clone(),
                    issuer: b.issuer.clone(),
                    on_revoke: b.on_revoke,
                    path: b.path.clone(),
                    not_after: b.not_after,
                },
            ));
        }
        // Bundles refused now (revoked, expired) may have been live before this agent
        // started. Their payload is read without trusting it: only the id it hashes to
        // is used to find processes, and an id can only come from the real payload.
        for (path, _) in &authz.refused {
            if let Some((id, known)) = read_bundle_unverified(path) {
                learned.push((id, known));
            }
        }
        self.known.extend(learned);
        let withdrawn: HashSet<[u8; AUTH_ID_LEN]> = self
            .known
            .iter()
            .filter(|(id, k)| {
                k.on_revoke == OnRevoke::Kill
                    && !live.contains(*id)
                    && k.definitely_withdrawn(authz, now)
            })
            .map(|(id, _)| *id)
            .collect();
        if withdrawn.is_empty() {
            return Ok(0);
        }
        let images = self.enforcement.images()?;
        // A withdrawn bundle's scopes are still in the policy: scopes bundles named stay
        // governed after them (`bundle_scopes`).
        let scopes: Vec<PathBuf> = self
            .view
            .policy
            .scopes
            .keys()
            .map(|s| cgroup::dir_of(self.config.cgroup_root(), s))
            .collect();
        let killed = sweep(&scopes, &images, &withdrawn);
        self.killed_total += killed.len();
        let mut by_auth: BTreeMap<[u8; AUTH_ID_LEN], Vec<u32>> = BTreeMap::new();
        for k in &killed {
            by_auth.entry(k.auth_id).or_default().push(k.pid);
        }
        for (id, pids) in by_auth {
            let known = self.known.get(&id);
            self.pending.push(
                AuthorizationChange {
                    change: "killed".into(),
                    artifact: "bundle".into(),
                    id: hex::encode(id),
                    issuer: known.map(|k| k.issuer.clone()).unwrap_or_default(),
                    bundle_id: known.map(|k| k.bundle_id.clone()),
                    serial: None,
                    scopes: Vec::new(),
                    not_after: None,
                    pids,
                    detail: Some(
                        "its authorization was withdrawn and it says on_revoke = kill".into(),
                    ),
                    boot_ns: None,
                }
                .into(),
            );
        }
        Ok(killed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_names() {
        let line =
            "123 (a) b (c)) S 45 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 50";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                ppid: 45,
                start_ticks: 98765
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S"), None);
    }

    #[test]
    fn start_times_compare_across_clocks() {
        let c = Clocks {
            ns_per_tick: 10_000_000,
            suspended_ns: 5_000_000_000,
        };
        // Same moment, rounded down to a tick by /proc.
        assert!(c.same_start(100, 1_004_000_000));
        // Started after a 3 s suspend: boot time is ahead by 3 s.
        assert!(c.same_start(400, 1_000_000_000));
        // Another process entirely.
        assert!(!c.same_start(100, 9_000_000_000));
        assert!(!c.same_start(1_000, 1_000_000_000));
    }

    #[test]
    fn own_process_is_found_and_parent_chain_is_followed() {
        let me = std::process::id();
        let stat = proc_stat(me).expect("own stat");
        let clocks = Clocks::now().expect("clocks");
        let start_ns = stat.start_ticks * clocks.ns_per_tick;
        let image = Image {
            exec_id: 7,
            leader_start_ns: start_ns,
            ..Image::default()
        };
        // Recorded for the parent only: this process "forked without exec".
        let images = HashMap::from([(
            stat.ppid,
            Image {
                exec_id: 9,
                ..image
            },
        )]);
        let parent_start = proc_stat(stat.ppid).expect("parent").start_ticks * clocks.ns_per_tick;
        let images: HashMap<u32, Image> = images
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    Image {
                        leader_start_ns: parent_start,
                        ..v
                    },
                )
            })
            .collect();
        assert_eq!(
            image_of(me, &images, clocks).map(|(pid, i)| (pid, i.exec_id)),
            Some((stat.ppid, 9))
        );
        let own = HashMap::from([(me, image)]);
        assert_eq!(image_of(me, &own, clocks).map(|(pid, _)| pid), Some(me));
        // A stale record (another process that had this pid) does not count.
        let stale = HashMap::from([(
            me,
            Image {
                leader_start_ns: start_ns + 50_000_000_000,
                ..image
            },
        )]);
        assert_eq!(image_of(me, &stale, clocks), None);
    }

    #[test]
    fn a_child_is_killed_and_reported_gone_after() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        let start = proc_stat(pid).expect("stat").start_ticks;
        assert!(
            !kill(pid, start + 1).expect("another start time"),
            "not the process looked at"
        );
        assert!(kill(pid, start).expect("kill"));
        let status = child.wait().expect("wait");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        assert!(!kill(pid, start).expect("gone"));
    }
}
