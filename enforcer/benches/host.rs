//! Host benchmarks (`cargo xtask bench --host`, or `cargo bench -p enforcer --bench host`):
//! the agent's work that does not need the BPF LSM, at the sizes the performance targets
//! name.
//!
//! - a signed bundle of 100 000 digests: verified, turned into map entries, loaded into
//!   grant maps and switched to from another such bundle;
//! - the audit log: decisions per second with chain hashing and signed checkpoints, and
//!   every record accounted for when the log is verified.
//!
//! The maps are real BPF maps of the program's layout, created on this host (plain maps
//! need no LSM) by `PolicyMaps::create`, and driven through `PolicyMaps::apply`: the code
//! `Enforcement::apply` runs in the agent.
//!
//! Each measurement runs several times; the table gives the median and the range. Output
//! lines `HOST-RESULT {json}` are what `cargo xtask bench` collects. Needs root (map
//! creation).

// The package's dependencies are the library's; this target uses only a few of them.
#![allow(unused_crate_dependencies)]

use std::time::{Instant, SystemTime};

use enforcer::audit::{AuditLog, AuditOptions, DecisionLabels, verify_dir};
use enforcer::authz::artifact::{
    ArtifactKind, Bundle, Envelope, Mode, OnRevoke, ScopePath, SignedGrant, unix_seconds,
};
use enforcer::authz::trust::{Role, SigningKey, Thresholds, TrustStore, TrustedKey};
use enforcer::authz::verify::{RevocationSet, Verifier};
use enforcer::host::digest::FileDigest;
use enforcer::kernel::{MapState, PolicyMaps};
use enforcer_common::{EVENT_PATH_LEN, ExecEvent, decision, hook, reason};

const GRANTS: usize = 100_000;
const AUDIT_EVENTS: u64 = 200_000;
/// Records in the log that proofs are made from: the size the issue asks about.
const PROOF_RECORDS: u64 = 1_000_000;
const RUNS: usize = 7;

fn main() {
    // `cargo bench` passes `--bench`; other words name the groups to run (`bundle`,
    // `audit`, `proof`), so one can be re-run alone: `cargo bench -p enforcer --bench host
    // -- audit`. No word: all of them.
    let groups: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |group: &str| groups.is_empty() || groups.iter().any(|g| g == group);
    let started = Instant::now();
    let mut results = Vec::new();
    if wanted("bundle") {
        bundle_benches(&mut results);
    }
    if wanted("audit") {
        audit_bench(&mut results);
    }
    if wanted("proof") {
        proof_bench(&mut results);
    }
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
        .map(|i| SignedGrant {
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
        scopes: vec!["/bench.slice".parse::<ScopePath>().expect("scope")],
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

    let mut maps = match PolicyMaps::create() {
        Ok(maps) => maps,
        Err(e) => {
            println!("map benchmarks skipped: {e} (run as root)");
            return;
        }
    };
    let empty = MapState::default();
    // Each closure times only its second apply: the first sets the starting point.
    let fills = repeat_recorded(|| {
        maps.apply(&empty).expect("clear");
        let t = Instant::now();
        maps.apply(&state_a).expect("fill");
        t.elapsed().as_secs_f64() * 1e3
    });
    ms("apply 100k grants into empty maps", fills, "").report(results);
    let switches = repeat_recorded(|| {
        maps.apply(&state_a).expect("to a");
        let t = Instant::now();
        maps.apply(&state_b).expect("to b");
        t.elapsed().as_secs_f64() * 1e3
    });
    ms("apply: switch 100k grants to another 100k", switches, "").report(results);
    let unchanged = time_ms(|| {
        maps.apply(&state_b).expect("same");
    });
    ms("apply unchanged 100k (no switch)", unchanged, "").report(results);
    let mut revoked = state_b.clone();
    let one = *revoked.grants.keys().next().expect("a grant");
    revoked.grants.remove(&one);
    let revoke = repeat_recorded(|| {
        maps.apply(&state_b).expect("to b");
        let t = Instant::now();
        maps.apply(&revoked).expect("revoke one");
        t.elapsed().as_secs_f64() * 1e3
    });
    ms("apply: revoke 1 of 100k grants", revoke, "").report(results);

    // The target: from the signed bytes to the new set deciding. The switch happens at the
    // flip; apply returns once the old slot holds nothing the new set does not allow.
    let mut to_flip = Vec::new();
    let end_to_end = repeat_recorded(|| {
        maps.apply(&state_a).expect("to a");
        let t = Instant::now();
        let state = to_state(&bundle_b);
        let resolved = t.elapsed();
        let stats = maps.apply(&state).expect("to b");
        let flip = resolved + stats.switched_in.expect("a switch");
        to_flip.push(flip.as_secs_f64() * 1e3);
        t.elapsed().as_secs_f64() * 1e3
    });
    to_flip.remove(0);
    to_flip.sort_by(f64::total_cmp);
    let flip = (
        to_flip[to_flip.len() / 2],
        to_flip[0],
        to_flip[to_flip.len() - 1],
    );
    ms(
        "verify + load + switch 100k grants: to the flip",
        flip,
        "<= 200 ms",
    )
    .report(results);
    ms(
        "verify + load + switch 100k grants: apply returns",
        end_to_end,
        "",
    )
    .report(results);
    let reverify = time_ms(|| {
        let state = to_state(&bundle_b);
        assert_eq!(maps.apply(&state).expect("same bundle").switched_in, None);
    });
    ms(
        "verify + resolve + apply the same bundle again",
        reverify,
        "",
    )
    .report(results);
    // The agent's first apply after a restart reads the grant map back once.
    let restarted = repeat_recorded(|| {
        maps.apply(&state_a).expect("to a");
        let mut fresh = maps.reopen().expect("reopen");
        let t = Instant::now();
        fresh.apply(&state_b).expect("to b");
        t.elapsed().as_secs_f64() * 1e3
    });
    ms("first apply after a restart: switch 100k", restarted, "").report(results);
    maps.apply(&empty).expect("clear");
}

/// Like [`time_ms`], but the closure measures (and returns) its own milliseconds, so
/// setup inside it is not counted.
fn repeat_recorded(mut f: impl FnMut() -> f64) -> (f64, f64, f64) {
    f();
    let mut ms: Vec<f64> = (0..RUNS).map(|_| f()).collect();
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[0], ms[ms.len() - 1])
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
        detail: 0,
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
    // Every run's directory is kept until all runs are done. Deleting one (about 900 tile
    // files and 130 MB) just before the next run made that run's tile creation pay for
    // ext4 reusing the freed inodes (a fifth of the writer's profile), a cost an agent
    // appending to its one log does not pay.
    let mut dirs = Vec::new();
    // CPU time per decision: the appending thread's in user mode and in the kernel, and
    // the whole process's (which includes the leaf thread). On this shared machine the
    // rate moves by a quarter and more with what else runs and syncs, and the kernel's
    // share with the inodes other processes freed; user time moves least, so changes to
    // the writer's own code can be judged by it.
    let [mut user, mut kernel, mut process] = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..3 {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = AuditLog::open(dir.path(), Some(SigningKey::from_seed(&seed)), opts.clone())
            .expect("open");
        let before = cpu_seconds();
        let t = Instant::now();
        for exec in 1..=AUDIT_EVENTS {
            log.append_decision(&event(exec), &labels).expect("append");
        }
        log.close().expect("close");
        let elapsed = t.elapsed();
        let after = cpu_seconds();
        for (into, i) in [(&mut user, 0), (&mut kernel, 1), (&mut process, 2)] {
            #[allow(clippy::cast_precision_loss, reason = "a time for a person")]
            into.push((after[i] - before[i]) * 1e6 / AUDIT_EVENTS as f64);
        }
        #[allow(clippy::cast_precision_loss, reason = "a rate for a person")]
        rates.push(AUDIT_EVENTS as f64 / elapsed.as_secs_f64());
        dirs.push(dir);
    }
    for (name, values, unit, target) in [
        (
            "audit: decisions/s (hash chain, Merkle tree and tiles, signed checkpoints)",
            &mut rates,
            "/s",
            ">= 100000/s",
        ),
        (
            "audit: CPU per decision, appending thread, user",
            &mut user,
            "us",
            "",
        ),
        (
            "audit: CPU per decision, appending thread, kernel",
            &mut kernel,
            "us",
            "",
        ),
        (
            "audit: CPU per decision, whole process",
            &mut process,
            "us",
            "",
        ),
    ] {
        values.sort_by(f64::total_cmp);
        Measured {
            name,
            value: values[values.len() / 2],
            unit,
            range: Some((values[0], values[values.len() - 1])),
            target,
        }
        .report(results);
    }
    let dir = dirs.last().expect("ran");
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

/// CPU seconds so far: this thread's in user mode and in the kernel, and the whole
/// process's (both modes).
fn cpu_seconds() -> [f64; 3] {
    let usage = |who| {
        // SAFETY: an all-zero rusage is valid, and `getrusage` only fills it in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `usage` is a valid rusage for the call to fill.
        let rc = unsafe { libc::getrusage(who, &raw mut usage) };
        assert_eq!(rc, 0, "getrusage({who})");
        usage
    };
    #[allow(clippy::cast_precision_loss, reason = "seconds for a person")]
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let thread = usage(libc::RUSAGE_THREAD);
    let process = usage(libc::RUSAGE_SELF);
    [
        seconds(thread.ru_utime),
        seconds(thread.ru_stime),
        seconds(process.ru_utime) + seconds(process.ru_stime),
    ]
}

/// Proofs from a log of a million records: how long `audit prove` takes by seq (the tiles
/// answer in O(log n) reads; finding the record reads at most one log file) and by exec
/// (which scans the log for the exec), and how large a proof is.
fn proof_bench(results: &mut Vec<Measured>) {
    use enforcer::audit::proof::{Selector, prove};
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = AuditOptions {
        boot_id: Some("0f0e0d0c-0b0a-4908-8706-050403020100".into()),
        origin: Some("bench.example/proofs".into()),
        ..AuditOptions::default()
    };
    let labels = DecisionLabels {
        scope: Some("/bench.slice"),
        grant_name: None,
    };
    let mut log =
        AuditLog::open(dir.path(), Some(SigningKey::from_seed(&[7; 32])), opts).expect("open");
    for exec in 1..=PROOF_RECORDS {
        // Denials cite no artifact, so the proof is the record, its path and the note.
        let mut e = event(exec);
        e.decision = decision::DENY;
        e.auth_id = [0; 16];
        log.append_decision(&e, &labels).expect("append");
    }
    log.close().expect("close");
    let middle = PROOF_RECORDS / 2 + 7;
    let mut size = 0;
    let by_seq = time_ms(|| {
        let proof = prove(dir.path(), &Selector::Seq(middle)).expect("prove by seq");
        size = serde_json::to_vec(&proof).expect("encode").len();
    });
    ms(
        "audit: prove one record by seq in a 1M-record log",
        by_seq,
        "",
    )
    .report(results);
    let exec = Selector::Exec {
        boot_id: "0f0e0d0c-0b0a-4908-8706-050403020100".into(),
        exec_id: PROOF_RECORDS / 2,
    };
    let by_exec = time_ms(|| drop(prove(dir.path(), &exec).expect("prove by exec")));
    ms(
        "audit: prove one exec in a 1M-record log (scans for it)",
        by_exec,
        "",
    )
    .report(results);
    #[allow(clippy::cast_precision_loss, reason = "a size for a person")]
    Measured {
        name: "audit: proof size, one decision in a 1M-record log (no artifact)",
        value: size as f64,
        unit: "bytes",
        range: None,
        target: "",
    }
    .report(results);
}
