//! Host benchmarks (`cargo xtask bench --host`, or `cargo bench -p enforcer --bench host`):
//! the agent's work that does not need the BPF LSM, at the sizes the performance targets
//! name.
//!
//! - a signed bundle of 100 000 digests: verified, turned into map entries, loaded into
//!   grant maps and switched to from another such bundle;
//! - the audit log: decisions per second with chain hashing and signed checkpoints, and
//!   every record accounted for when the log is verified.
//!
//! The maps are real BPF maps of the program's types, created on this host (plain maps
//! need no LSM) and pinned in a private bpffs mount, then driven through
//! `Enforcement::open_pinned` and `Enforcement::apply`: the agent's own code path.
//!
//! Each measurement runs several times; the table gives the median and the range. Output
//! lines `HOST-RESULT {json}` are what `cargo xtask bench` collects. Needs root (bpffs
//! mount, map creation).

use std::ffi::CString;
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::time::{Instant, SystemTime};

use enforcer::artifact::{
    ArtifactKind, Bundle, CgroupScope, Envelope, Grant, Mode, OnRevoke, unix_seconds,
};
use enforcer::audit::{AuditLog, AuditOptions, DecisionLabels, verify_dir};
use enforcer::digest::FileDigest;
use enforcer::kernel::{Enforcement, MapState};
use enforcer::trust::{Role, SigningKey, Thresholds, TrustStore, TrustedKey};
use enforcer::verify::{RevocationSet, Verifier};
use enforcer_common::{
    EVENT_PATH_LEN, EVENTS_BYTES, ExecEvent, MAX_GRANTS, MAX_SCOPES, decision, hook, names, reason,
};

const GRANTS: usize = 100_000;
const AUDIT_EVENTS: u64 = 200_000;
const RUNS: usize = 7;

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let started = Instant::now();
    let mut results = Vec::new();
    bundle_benches(&mut results);
    audit_bench(&mut results);
    println!();
    println!(
        "{:<48} {:>12} {:>21}  target",
        "measurement", "median", "range"
    );
    for r in &results {
        println!(
            "{:<48} {:>9.1} {:<3}{:>21}  {}",
            r.name,
            r.value,
            r.unit,
            r.range
                .map(|(lo, hi)| format!("{lo:.1} .. {hi:.1}"))
                .unwrap_or_default(),
            r.target
        );
    }
    println!(
        "host benchmarks took {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

/// One line of the results table.
struct Measured {
    name: &'static str,
    value: f64,
    unit: &'static str,
    range: Option<(f64, f64)>,
    target: &'static str,
}

impl Measured {
    fn report(self, into: &mut Vec<Measured>) {
        let json = serde_json::json!({
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "low": self.range.map(|r| r.0),
            "high": self.range.map(|r| r.1),
            "target": self.target,
        });
        println!("HOST-RESULT {json}");
        into.push(self);
    }
}

/// Runs `f` `RUNS` times (after one untimed warm-up) and returns milliseconds: median,
/// lowest, highest.
fn time_ms(mut f: impl FnMut()) -> (f64, f64, f64) {
    f();
    let mut ms: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[0], ms[ms.len() - 1])
}

fn ms(name: &'static str, (median, lo, hi): (f64, f64, f64), target: &'static str) -> Measured {
    Measured {
        name,
        value: median,
        unit: "ms",
        range: Some((lo, hi)),
        target,
    }
}

// ---- bundles and maps ---------------------------------------------------------------

/// A signed bundle of `GRANTS` distinct digests (seeded, so two seeds share none).
fn signed_bundle(key: &SigningKey, seed: u64, now: u64) -> Vec<u8> {
    let grants = (0..GRANTS as u64)
        .map(|i| Grant {
            digest: FileDigest::of_bytes(&[seed.to_le_bytes(), i.to_le_bytes()].concat()),
            name: None,
            not_after: None,
        })
        .collect();
    let bundle = Bundle {
        issuer: "bench".into(),
        bundle_id: "bench-100k".into(),
        serial: seed,
        issued_at: now - 10,
        not_before: now - 10,
        not_after: now + 3600,
        scopes: vec!["/bench.slice".parse::<CgroupScope>().expect("scope")],
        grants,
        mode: Mode::Enforce,
        on_revoke: OnRevoke::DenyNew,
        allow_anonymous_exec: false,
        allow_fileless: false,
    };
    let mut envelope = Envelope::new(ArtifactKind::Bundle, bundle.to_payload().expect("payload"));
    envelope.add_signature(key);
    envelope.to_bytes()
}

fn bundle_benches(results: &mut Vec<Measured>) {
    let key = SigningKey::from_seed(&[42; 32]);
    let trust = TrustStore::new(
        [TrustedKey::new(
            "bench",
            key.public_key(),
            vec![Role::Bundle, Role::Revocation],
        )],
        Thresholds {
            bundle: 1,
            revocation: 1,
        },
    )
    .expect("trust store");
    let verifier = Verifier::new(trust);
    let now = SystemTime::now();
    let bundle_a = signed_bundle(&key, 1, unix_seconds(now));
    let bundle_b = signed_bundle(&key, 2, unix_seconds(now));
    println!(
        "bundle of {GRANTS} digests: {} bytes signed",
        bundle_a.len()
    );
    let none = RevocationSet::new();

    let verify = || {
        verifier
            .verify_bundle(&bundle_a, now, &none)
            .expect("verify")
    };
    ms(
        "verify a signed bundle of 100k digests",
        time_ms(|| drop(verify())),
        "",
    )
    .report(results);

    // Map entries as the agent computes them: the cgroup id is the scope directory's inode
    // number, so a plain directory (with a cgroup.procs file) stands in for the cgroup.
    let fake_cgroups = tempfile::tempdir().expect("tempdir");
    let scope_dir = fake_cgroups.path().join("bench.slice");
    std::fs::create_dir(&scope_dir).expect("mkdir");
    std::fs::write(scope_dir.join("cgroup.procs"), "").expect("cgroup.procs");
    let to_state = |bytes: &[u8]| -> MapState {
        let verified = verifier.verify_bundle(bytes, now, &none).expect("verify");
        let policy = enforcer::authz::policy_of(&[&verified], &[], now);
        enforcer::kernel::resolve(&policy, fake_cgroups.path()).expect("resolve")
    };
    ms(
        "verify + policy + map entries (100k)",
        time_ms(|| drop(to_state(&bundle_a))),
        "",
    )
    .report(results);
    let state_a = to_state(&bundle_a);
    let state_b = to_state(&bundle_b);
    assert_eq!(state_a.grants.len(), GRANTS);

    let Some(maps) = PinnedMaps::create() else {
        println!("map benchmarks skipped: cannot mount bpffs or create maps (run as root)");
        return;
    };
    let mut enforcement = Enforcement::open_pinned(maps.dir()).expect("open pinned maps");
    let empty = MapState::default();
    // Each closure times only its second apply: the first sets the starting point.
    let fills = repeat_recorded(|| {
        enforcement.apply(&empty).expect("clear");
        let t = Instant::now();
        enforcement.apply(&state_a).expect("fill");
        t.elapsed().as_secs_f64() * 1e3
    });
    ms("apply 100k grants into empty maps", fills, "").report(results);
    let switches = repeat_recorded(|| {
        enforcement.apply(&state_a).expect("to a");
        let t = Instant::now();
        enforcement.apply(&state_b).expect("to b");
        t.elapsed().as_secs_f64() * 1e3
    });
    ms("switch 100k grants to another 100k (apply)", switches, "").report(results);
    let unchanged = time_ms(|| {
        enforcement.apply(&state_b).expect("same");
    });
    ms("apply unchanged 100k (diff only)", unchanged, "").report(results);
    let end_to_end = repeat_recorded(|| {
        enforcement.apply(&state_a).expect("to a");
        let t = Instant::now();
        let state = to_state(&bundle_b);
        enforcement.apply(&state).expect("to b");
        t.elapsed().as_secs_f64() * 1e3
    });
    ms(
        "verify + load + switch 100k grants",
        end_to_end,
        "<= 200 ms",
    )
    .report(results);
    enforcement.apply(&empty).expect("clear");

    // What batched updates would give: BPF_MAP_UPDATE_BATCH into a fresh grant map.
    if let Some(batch) = maps.batch_fill(&state_a) {
        ms("100k grants by BPF_MAP_UPDATE_BATCH (fresh map)", batch, "").report(results);
    }

    // A design that would meet the budget, prototyped with real maps (not what
    // Enforcement::apply does today): grants carry a slot; the new set is batch-written
    // into the idle slot while the old one keeps enforcing, then one array write flips
    // the active slot, atomically for every later lookup; the old slot is emptied after.
    match TwoSlots::create() {
        Ok(slots) => {
            slots.write(&state_a, 0).expect("fill slot 0");
            slots.flip(0).expect("flip to 0");
            let mut active = 0;
            let switch = repeat_recorded(|| {
                let t = Instant::now();
                let state = if active == 0 { to_state(&bundle_b) } else { to_state(&bundle_a) };
                let idle = 1 - active;
                slots.write(&state, idle).expect("fill idle slot");
                slots.flip(idle).expect("flip");
                let elapsed = t.elapsed().as_secs_f64() * 1e3;
                let old = if active == 0 { &state_a } else { &state_b };
                slots.clear(old, active).expect("empty the old slot");
                active = idle;
                elapsed
            });
            ms("verify + batch-load idle slot + flip (prototype)", switch, "<= 200 ms").report(results);
        }
        Err(e) => println!("two-slot prototype skipped: {e}"),
    }
}

/// The prototype's maps: grants keyed by (scope, slot, digest), and the active slot.
struct TwoSlots {
    grants: OwnedFd,
    active: OwnedFd,
}

/// The prototype's grant key: `GrantKey` with a slot, no padding.
#[repr(C)]
#[derive(Clone, Copy)]
struct SlotKey {
    scope_id: u64,
    slot: u32,
    _pad: u32,
    digest: [u8; 32],
}

const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_DELETE_BATCH: u32 = 27;
const BPF_MAP_TYPE_ARRAY: u32 = 2;

impl TwoSlots {
    fn create() -> std::io::Result<Self> {
        let value = size_of::<enforcer_common::Grant>();
        Ok(Self {
            grants: create_map(BPF_MAP_TYPE_HASH, size_of::<SlotKey>(), value, 2 * MAX_GRANTS, BPF_F_NO_PREALLOC)?,
            active: create_map(BPF_MAP_TYPE_ARRAY, 4, 4, 1, 0)?,
        })
    }

    fn keys(state: &MapState, slot: u32) -> (Vec<SlotKey>, Vec<enforcer_common::Grant>) {
        state
            .grants
            .iter()
            .map(|(k, g)| (SlotKey { scope_id: k.scope_id, slot, _pad: 0, digest: k.digest }, *g))
            .unzip()
    }

    /// `BPF_MAP_UPDATE_BATCH` or `BPF_MAP_DELETE_BATCH` of `keys` (and `values`).
    fn batch(&self, cmd: u32, keys: &[SlotKey], values: Option<&[enforcer_common::Grant]>) -> std::io::Result<()> {
        use std::os::fd::AsRawFd as _;
        let mut attr = [0u8; ATTR_BYTES];
        put_u64(&mut attr, 16, keys.as_ptr() as u64);
        put_u64(&mut attr, 24, values.map_or(0, |v| v.as_ptr() as u64));
        put_u32(&mut attr, 32, u32::try_from(keys.len()).unwrap_or(0));
        put_u32(&mut attr, 36, u32::try_from(self.grants.as_raw_fd()).unwrap_or(0));
        bpf(cmd, &mut attr).map(drop)
    }

    fn write(&self, state: &MapState, slot: u32) -> std::io::Result<()> {
        let (keys, values) = Self::keys(state, slot);
        self.batch(BPF_MAP_UPDATE_BATCH, &keys, Some(&values))
    }

    fn clear(&self, state: &MapState, slot: u32) -> std::io::Result<()> {
        self.batch(BPF_MAP_DELETE_BATCH, &Self::keys(state, slot).0, None)
    }

    fn flip(&self, slot: u32) -> std::io::Result<()> {
        use std::os::fd::AsRawFd as _;
        let (index, value) = (0u32, slot);
        let mut attr = [0u8; ATTR_BYTES];
        put_u32(&mut attr, 0, u32::try_from(self.active.as_raw_fd()).unwrap_or(0));
        put_u64(&mut attr, 8, std::ptr::addr_of!(index) as u64);
        put_u64(&mut attr, 16, std::ptr::addr_of!(value) as u64);
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
    }
}

/// Like [`time_ms`], but the closure measures (and returns) its own milliseconds, so
/// setup inside it is not counted.
fn repeat_recorded(mut f: impl FnMut() -> f64) -> (f64, f64, f64) {
    f();
    let mut ms: Vec<f64> = (0..RUNS).map(|_| f()).collect();
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[0], ms[ms.len() - 1])
}

/// The program's pinned maps, created by hand in a private bpffs mount.
struct PinnedMaps {
    mount: tempfile::TempDir,
}

/// `union bpf_attr` is at most this large for the commands used here.
const ATTR_BYTES: usize = 128;

fn bpf(cmd: u32, attr: &mut [u8; ATTR_BYTES]) -> std::io::Result<i64> {
    // SAFETY: `attr` is a zero-padded bpf_attr for `cmd`, valid for the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), ATTR_BYTES) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn put_u32(attr: &mut [u8; ATTR_BYTES], at: usize, v: u32) {
    attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut [u8; ATTR_BYTES], at: usize, v: u64) {
    attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

const BPF_MAP_CREATE: u32 = 0;
const BPF_OBJ_PIN: u32 = 6;
const BPF_MAP_UPDATE_BATCH: u32 = 26;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;
const BPF_F_NO_PREALLOC: u32 = 1;

/// `BPF_MAP_CREATE`: map_type, key_size, value_size, max_entries, map_flags.
fn create_map(
    kind: u32,
    key: usize,
    value: usize,
    max: u32,
    flags: u32,
) -> std::io::Result<OwnedFd> {
    let mut attr = [0u8; ATTR_BYTES];
    for (i, v) in [
        kind,
        u32::try_from(key).unwrap_or(0),
        u32::try_from(value).unwrap_or(0),
        max,
        flags,
    ]
    .into_iter()
    .enumerate()
    {
        put_u32(&mut attr, i * 4, v);
    }
    let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).unwrap_or(-1)) })
}

impl PinnedMaps {
    fn create() -> Option<Self> {
        let mount = tempfile::tempdir().ok()?;
        let target = CString::new(mount.path().as_os_str().as_bytes()).ok()?;
        // SAFETY: NUL-terminated strings we own.
        let mounted = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if mounted != 0 {
            println!("mount bpffs: {}", std::io::Error::last_os_error());
            return None;
        }
        let maps = Self { mount };
        let defs = [
            (
                names::SCOPES,
                BPF_MAP_TYPE_HASH,
                8,
                size_of::<enforcer_common::ScopePolicy>(),
                MAX_SCOPES,
                0,
            ),
            (
                names::GRANTS,
                BPF_MAP_TYPE_HASH,
                size_of::<enforcer_common::GrantKey>(),
                size_of::<enforcer_common::Grant>(),
                MAX_GRANTS,
                BPF_F_NO_PREALLOC,
            ),
            (names::EVENTS, BPF_MAP_TYPE_RINGBUF, 0, 0, EVENTS_BYTES, 0),
            (names::DROPPED, BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8, 1, 0),
            (names::PROTECTED, BPF_MAP_TYPE_HASH, 4, 4, 64, 0),
        ];
        for (name, kind, key, value, max, flags) in defs {
            let made = create_map(kind, key, value, max, flags).and_then(|fd| maps.pin(&fd, name));
            if let Err(e) = made {
                println!("create map {name}: {e}");
                return None;
            }
        }
        Some(maps)
    }

    fn dir(&self) -> &Path {
        self.mount.path()
    }

    fn pin(&self, fd: &OwnedFd, name: &str) -> std::io::Result<()> {
        use std::os::fd::AsRawFd as _;
        let path = CString::new(self.dir().join(name).as_os_str().as_bytes())?;
        let mut attr = [0u8; ATTR_BYTES];
        put_u64(&mut attr, 0, path.as_ptr() as u64);
        put_u32(&mut attr, 8, u32::try_from(fd.as_raw_fd()).unwrap_or(0));
        bpf(BPF_OBJ_PIN, &mut attr).map(drop)
    }

    /// Fills a fresh grant map with one `BPF_MAP_UPDATE_BATCH` call per run.
    fn batch_fill(&self, state: &MapState) -> Option<(f64, f64, f64)> {
        use std::os::fd::AsRawFd as _;
        let keys: Vec<_> = state.grants.keys().copied().collect();
        let values: Vec<_> = keys.iter().map(|k| state.grants[k]).collect();
        let run = || -> std::io::Result<f64> {
            let map = create_map(
                BPF_MAP_TYPE_HASH,
                size_of::<enforcer_common::GrantKey>(),
                size_of::<enforcer_common::Grant>(),
                MAX_GRANTS,
                BPF_F_NO_PREALLOC,
            )?;
            let mut count = u32::try_from(keys.len()).unwrap_or(0);
            let t = Instant::now();
            // struct { in_batch, out_batch, keys, values: u64; count, map_fd: u32;
            //          elem_flags, flags: u64 }
            let mut attr = [0u8; ATTR_BYTES];
            put_u64(&mut attr, 16, keys.as_ptr() as u64);
            put_u64(&mut attr, 24, values.as_ptr() as u64);
            put_u32(&mut attr, 32, count);
            put_u32(&mut attr, 36, u32::try_from(map.as_raw_fd()).unwrap_or(0));
            bpf(BPF_MAP_UPDATE_BATCH, &mut attr)?;
            let elapsed = t.elapsed().as_secs_f64() * 1e3;
            count = u32::from_ne_bytes(attr[32..36].try_into().unwrap_or_default());
            if count as usize != keys.len() {
                return Err(std::io::Error::other(format!(
                    "batch wrote {count} of {}",
                    keys.len()
                )));
            }
            Ok(elapsed)
        };
        let mut samples = Vec::new();
        for _ in 0..=RUNS {
            match run() {
                Ok(ms) => samples.push(ms),
                Err(e) => {
                    println!("BPF_MAP_UPDATE_BATCH: {e}");
                    return None;
                }
            }
        }
        samples.remove(0);
        samples.sort_by(f64::total_cmp);
        Some((
            samples[samples.len() / 2],
            samples[0],
            samples[samples.len() - 1],
        ))
    }
}

impl Drop for PinnedMaps {
    fn drop(&mut self) {
        if let Ok(target) = CString::new(self.dir().as_os_str().as_bytes()) {
            // SAFETY: a NUL-terminated path we mounted on.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

// ---- audit --------------------------------------------------------------------------

fn event(exec_id: u64) -> ExecEvent {
    let mut path = [0u8; EVENT_PATH_LEN];
    let name = format!("/usr/bin/tool-{}", exec_id % 1000);
    path[..name.len()].copy_from_slice(name.as_bytes());
    let allowed = !exec_id.is_multiple_of(3);
    ExecEvent {
        boot_ns: 1_000_000 + exec_id,
        cgroup_id: 4242,
        scope_id: 4241,
        auth_serial: if allowed { 17 } else { 0 },
        exec_id,
        parent_exec_id: exec_id - 1,
        pid: 300,
        tgid: 300,
        ppid: 100,
        uid: 1000,
        gid: 1000,
        decision: if allowed {
            decision::ALLOW
        } else {
            decision::DENY
        },
        reason: if allowed {
            reason::GRANTED
        } else {
            reason::NOT_GRANTED
        },
        hook: hook::BPRM_CHECK_SECURITY,
        digest: [0xab; 32],
        auth_id: [0xcd; 16],
        path,
    }
}

fn audit_bench(results: &mut Vec<Measured>) {
    let seed = [7; 32];
    let key = SigningKey::from_seed(&seed);
    let opts = AuditOptions {
        boot_id: Some("0f0e0d0c-0b0a-4908-8706-050403020100".into()),
        ..AuditOptions::default()
    };
    let labels = DecisionLabels {
        scope: Some("/bench.slice"),
        grant_name: Some("tool"),
    };
    let mut rates = Vec::new();
    let mut last_dir = None;
    for _ in 0..3 {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = AuditLog::open(dir.path(), Some(SigningKey::from_seed(&seed)), opts.clone())
            .expect("open");
        let t = Instant::now();
        for exec in 1..=AUDIT_EVENTS {
            log.append_decision(&event(exec), &labels).expect("append");
        }
        log.close().expect("close");
        let elapsed = t.elapsed();
        #[allow(clippy::cast_precision_loss, reason = "a rate for a person")]
        rates.push(AUDIT_EVENTS as f64 / elapsed.as_secs_f64());
        last_dir = Some(dir);
    }
    rates.sort_by(f64::total_cmp);
    Measured {
        name: "audit: decisions/s (hash chain, signed checkpoints)",
        value: rates[rates.len() / 2],
        unit: "/s",
        range: Some((rates[0], rates[rates.len() - 1])),
        target: ">= 100000/s",
    }
    .report(results);
    let dir = last_dir.expect("ran");
    let t = Instant::now();
    let report = verify_dir(dir.path(), Some(&key.public_key())).expect("verify");
    let verified_in = t.elapsed();
    assert!(report.is_intact(), "{report:?}");
    #[allow(clippy::cast_precision_loss, reason = "counts for a person")]
    let lost = (AUDIT_EVENTS - report.decisions) as f64 + report.lost as f64;
    Measured {
        name: "audit: decisions missing after verify",
        value: lost,
        unit: "",
        range: None,
        target: "0",
    }
    .report(results);
    Measured {
        name: "audit: verify the 200k-decision log",
        value: verified_in.as_secs_f64() * 1e3,
        unit: "ms",
        range: None,
        target: "",
    }
    .report(results);
}
