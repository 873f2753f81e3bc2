//! A proof made on the host verifies offline, and each kind of forgery is refused with its
//! own reason.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use enforcer_common::{EVENT_PATH_LEN, ExecEvent, decision, hook, reason};

use super::{ProofError, ProofFile, Selector, prove, verify_proof};
use crate::audit::artifacts::Archive;
use crate::audit::{AuditLog, AuditOptions, AuthorizationChange, DecisionLabels};
use crate::authz::artifact::{Bundle, Envelope, ScopePath, SignedGrant, unix_seconds};
use crate::authz::trust::{SigningKey, TrustStore};
use crate::authz::verify::testkit;
use crate::host::digest::FileDigest;

const BOOT: &str = "6f1c0a9e-2b7d-4c1e-9a55-0d3f5e7b8c21";
const SCOPE: &str = "/agents.slice";

fn host_key() -> SigningKey {
    SigningKey::from_seed(&[9; 32])
}

fn granted() -> FileDigest {
    FileDigest::of_bytes(b"the tool")
}

/// A bundle valid around the real clock (records carry the time they were written).
fn bundle(not_before: u64, not_after: u64) -> Bundle {
    Bundle {
        not_before,
        not_after,
        issued_at: not_before,
        grants: vec![SignedGrant {
            digest: granted(),
            name: Some("/usr/bin/tool".into()),
            not_after: None,
        }],
        scopes: vec![SCOPE.parse::<ScopePath>().expect("scope")],
        ..testkit::bundle()
    }
}

fn now() -> u64 {
    unix_seconds(std::time::SystemTime::now())
}

/// Bundle and revocation threshold 2: keys 1 to 3 may sign bundles.
fn trust() -> TrustStore {
    testkit::store(2, 1)
}

fn exec(exec_id: u64, digest: &FileDigest, auth: &Envelope, verdict: u32) -> ExecEvent {
    let mut path = [0u8; EVENT_PATH_LEN];
    path[..13].copy_from_slice(b"/usr/bin/tool");
    let mut auth_id = [0u8; 16];
    auth_id.copy_from_slice(&auth.id().0[..16]);
    ExecEvent {
        boot_ns: 5_000 + exec_id,
        cgroup_id: 77,
        scope_id: 76,
        auth_serial: 1,
        exec_id,
        parent_exec_id: 1,
        pid: 900,
        tgid: 900,
        ppid: 1,
        uid: 65534,
        gid: 65534,
        decision: verdict,
        reason: reason::GRANTED,
        hook: hook::BPRM_CHECK_SECURITY,
        digest: digest.0,
        auth_id,
        detail: 0,
        path,
    }
}

/// A log holding: the acceptance of a bundle signed by keys 1 and 2, exec 10 (granted
/// digest, allowed), exec 11 (a digest the bundle does not grant, citing it), and exec
/// 12 citing an expired bundle. Returns the two artifacts.
fn write_log(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let live = testkit::signed_bundle(&bundle(now() - 60, now() + 3600), &[1, 2]);
    let expired = testkit::signed_bundle(&bundle(now() - 7200, now() - 3600), &[1, 2]);
    let opts = AuditOptions {
        boot_id: Some(BOOT.into()),
        origin: Some("test.example/host-a".into()),
        ..AuditOptions::default()
    };
    let mut log = AuditLog::open(dir, Some(host_key()), opts).expect("open");
    for bytes in [&live, &expired] {
        let envelope = Envelope::parse(bytes).expect("envelope");
        log.keep_artifact(&envelope.id(), bytes).expect("keep");
        log.append_authorization(AuthorizationChange {
            change: "accepted".into(),
            artifact: "bundle".into(),
            id: envelope.id().to_string(),
            issuer: "ops".into(),
            bundle_id: Some("agents-base".into()),
            serial: Some(1),
            scopes: vec![SCOPE.into()],
            not_after: None,
            pids: Vec::new(),
            detail: None,
            boot_ns: None,
        })
        .expect("authorization");
    }
    let labels = DecisionLabels {
        scope: Some(SCOPE),
        grant_name: Some("tool"),
    };
    let live_env = Envelope::parse(&live).expect("envelope");
    let expired_env = Envelope::parse(&expired).expect("envelope");
    let other = FileDigest::of_bytes(b"not granted");
    for event in [
        exec(10, &granted(), &live_env, decision::ALLOW),
        exec(11, &other, &live_env, decision::ALLOW),
        exec(12, &granted(), &expired_env, decision::ALLOW),
    ] {
        log.append_decision(&event, &labels).expect("decision");
    }
    log.close().expect("close");
    (live, expired)
}

fn proof_of(dir: &Path, exec_id: u64) -> ProofFile {
    prove(
        dir,
        &Selector::Exec {
            boot_id: BOOT.into(),
            exec_id,
        },
    )
    .expect("prove")
}

fn check(proof: &ProofFile, trust: &TrustStore) -> Result<super::ProvenRecord, ProofError> {
    let bytes = serde_json::to_vec(proof).expect("encode");
    verify_proof(&bytes, &host_key().public_key(), trust, &[])
}

#[test]
fn a_proof_of_an_allowed_exec_verifies_offline_and_says_what_it_proves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (live, _) = write_log(dir.path());
    let proof = proof_of(dir.path(), 10);
    assert_eq!(proof.artifacts.len(), 1);
    let proven = check(&proof, &trust()).expect("verifies");
    let text = proven.to_string();
    let id = Envelope::parse(&live).expect("envelope").id().to_string();
    for expected in [
        "PROVEN: record seq",
        "test.example/host-a",
        "decision: allow",
        &granted().to_string(),
        "bundle agents-base serial 1 of issuer ops",
        &id,
        "signed by k1, k2",
        "as \"/usr/bin/tool\"",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    // By seq and by artifact too; the acceptance record proves the artifact as accepted.
    let by_seq = prove(dir.path(), &Selector::Seq(proof.index)).expect("by seq");
    assert_eq!(by_seq, proof);
    let accepted = prove(dir.path(), &Selector::Artifact(id[..20].to_owned())).expect("by id");
    let proven = check(&accepted, &trust()).expect("acceptance verifies");
    assert!(
        proven
            .to_string()
            .contains("authorization record: accepted")
    );
}

#[test]
fn each_kind_of_forgery_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path());
    let good = proof_of(dir.path(), 10);

    // Wrong record: altered in place, then with its hash recomputed.
    let mut p = good.clone();
    p.record = p.record.replace("\"uid\":65534", "\"uid\":0");
    assert!(matches!(
        check(&p, &trust()),
        Err(ProofError::RecordAltered)
    ));
    let mut p = good.clone();
    p.record = crate::audit::testkit::reseal(&p.record.replace("\"uid\":65534", "\"uid\":0"));
    assert!(matches!(
        check(&p, &trust()),
        Err(ProofError::NotIncluded(_))
    ));

    // Another record of the log, with this record's proof.
    let mut p = good.clone();
    p.record = proof_of(dir.path(), 11).record;
    assert!(matches!(
        check(&p, &trust()),
        Err(ProofError::WrongIndex { .. })
    ));

    // Wrong path: one hash of the inclusion proof changed.
    let mut p = good.clone();
    let mut hash = BASE64.decode(&p.inclusion[0]).expect("b64");
    hash[0] ^= 1;
    p.inclusion[0] = BASE64.encode(hash);
    assert!(matches!(
        check(&p, &trust()),
        Err(ProofError::NotIncluded(_))
    ));

    // Wrong checkpoint signature: another root, or another key.
    let mut p = good.clone();
    let root_line = p.checkpoint.lines().nth(2).expect("root").to_owned();
    let mut root = BASE64.decode(&root_line).expect("b64");
    root[0] ^= 1;
    p.checkpoint = p.checkpoint.replace(&root_line, &BASE64.encode(root));
    assert!(matches!(
        check(&p, &trust()),
        Err(ProofError::Checkpoint { .. })
    ));
    let bytes = serde_json::to_vec(&good).expect("encode");
    let other = SigningKey::from_seed(&[10; 32]).public_key();
    assert!(matches!(
        verify_proof(&bytes, &other, &trust(), &[]),
        Err(ProofError::Checkpoint { .. })
    ));

    // An artifact the verifier's trust store does not accept: threshold 3 of 3.
    assert!(matches!(
        check(&good, &testkit::store(3, 1)),
        Err(ProofError::ArtifactUntrusted { .. })
    ));
    // An artifact re-signed by a key of the wrong role still fails.
    let mut p = good.clone();
    let mut envelope = Envelope::parse(p.artifacts[0].as_bytes()).expect("envelope");
    envelope.signatures.clear();
    envelope.add_signature(&testkit::key(5));
    envelope.add_signature(&testkit::key(6));
    p.artifacts[0] = String::from_utf8(envelope.to_bytes()).expect("utf8");
    assert!(matches!(
        check(&p, &trust()),
        Err(ProofError::ArtifactUntrusted { .. })
    ));
    // No artifact at all.
    let mut p = good.clone();
    p.artifacts.clear();
    assert!(matches!(
        check(&p, &trust()),
        Err(ProofError::MissingArtifact(_))
    ));

    // An artifact that does not grant the decision's digest.
    let ungranted = proof_of(dir.path(), 11);
    assert!(matches!(
        check(&ungranted, &trust()),
        Err(ProofError::NotGranted { .. })
    ));

    // A decision outside the artifact's window.
    let late = proof_of(dir.path(), 12);
    assert!(matches!(
        check(&late, &trust()),
        Err(ProofError::OutsideWindow { .. })
    ));

    // Not a proof at all, or of another format.
    assert!(matches!(
        verify_proof(b"{}", &host_key().public_key(), &trust(), &[]),
        Err(ProofError::Malformed(_))
    ));
    let mut p = good;
    p.format = "enforcer-audit-proof/v9".into();
    assert!(matches!(check(&p, &trust()), Err(ProofError::Format(_))));
}

#[test]
fn records_after_the_newest_checkpoint_and_unknown_ones_are_not_proven() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path());
    let missing = prove(
        dir.path(),
        &Selector::Exec {
            boot_id: BOOT.into(),
            exec_id: 99,
        },
    );
    assert!(
        matches!(missing, Err(super::ProveError::NotFound { .. })),
        "{missing:?}"
    );
    // The shutdown checkpoint is the last record: no checkpoint covers it yet.
    let last = crate::audit::verify_dir(dir.path(), None)
        .expect("verify")
        .head
        .expect("head")
        .0;
    let newest = prove(dir.path(), &Selector::Seq(last));
    assert!(
        matches!(newest, Err(super::ProveError::NotYetCheckpointed { .. })),
        "{newest:?}"
    );
    // An id no artifact has: a short prefix such as "00" matches a real id (they depend
    // on the clock) about once in 128 runs.
    assert!(Archive::new(dir.path()).find(&"0".repeat(128)).is_err());
}

/// The log extends every checkpoint it published; a log rewritten before a checkpoint
/// (tiles rebuilt, notes re-signed with the host key) does not extend it.
#[test]
fn the_log_extends_its_old_checkpoints_and_a_rewritten_one_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path());
    let checkpoint = dir.path().join(crate::audit::tree::CHECKPOINT_FILE);
    let old = std::fs::read(&checkpoint).expect("old checkpoint");
    let opts = || AuditOptions {
        boot_id: Some(BOOT.into()),
        origin: Some("test.example/host-a".into()),
        ..AuditOptions::default()
    };
    let mut log = AuditLog::open(dir.path(), Some(host_key()), opts()).expect("reopen");
    log.append_gap(1).expect("gap");
    log.close().expect("close");
    let extension = super::prove_consistency(dir.path(), &old).expect("consistent");
    assert!(extension.new.size() > extension.old.size());
    assert!(!extension.proof.is_empty());

    // A holder of the host key forges another history: the first record rewritten, the
    // checkpoints re-signed; the agent then signs the forged tree afresh.
    let file = dir.path().join(crate::audit::files::name(1));
    crate::audit::testkit::forge_history(&file, &host_key());
    std::fs::remove_dir_all(dir.path().join("tile")).expect("tiles");
    let log = AuditLog::open(dir.path(), Some(host_key()), opts()).expect("rebuilt");
    log.close().expect("close");
    let refused = super::prove_consistency(dir.path(), &old);
    assert!(
        matches!(refused, Err(super::ConsistencyError::Inconsistent(_))),
        "{refused:?}"
    );
}

mod changes {
    use proptest::prelude::*;

    use super::*;

    /// One proof, made once: proptest cases only change copies of it.
    fn good() -> &'static ProofFile {
        static GOOD: std::sync::OnceLock<ProofFile> = std::sync::OnceLock::new();
        GOOD.get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            write_log(dir.path());
            proof_of(dir.path(), 10)
        })
    }

    /// `text` with the character at `at` (modulo its length) replaced by `with`, or `None`
    /// when that changes nothing.
    fn replace_char(text: &str, at: usize, with: char) -> Option<String> {
        let chars: Vec<char> = text.chars().collect();
        let at = at % chars.len();
        (chars[at] != with).then(|| {
            let mut out: String = chars[..at].iter().collect();
            out.push(with);
            out.extend(&chars[at + 1..]);
            out
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any one-character change to the record, any hash of the path, or the signed
        /// checkpoint is refused.
        #[test]
        fn any_change_to_a_record_path_or_checkpoint_is_refused(
            field in 0..3usize,
            item in any::<usize>(),
            at in any::<usize>(),
            with in proptest::char::range(' ', '~'),
        ) {
            let mut proof = good().clone();
            let target = match field {
                0 => &mut proof.record,
                1 => {
                    let len = proof.inclusion.len();
                    &mut proof.inclusion[item % len]
                }
                _ => &mut proof.checkpoint,
            };
            let Some(changed) = replace_char(target, at, with) else {
                return Ok(());
            };
            *target = changed;
            let result = check(&proof, &trust());
            prop_assert!(result.is_err(), "a changed proof verified: {:?}", proof);
        }
    }

    #[test]
    fn the_unchanged_proof_verifies() {
        check(good(), &trust()).expect("the proof the property changes verifies");
    }
}

/// Copies the log directory `from` (files and subdirectories) into `to`.
fn copy_log(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_log(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A log the format-2 agent wrote (kept under `tests/fixtures` as that agent left it:
/// this module's `write_log`, SHA3-512 record hashes) verifies, continues into format 3
/// when today's writer opens it, and proves records from both sides of the change, in a
/// log that is consistent with the old agent's last checkpoint.
#[test]
fn a_format2_log_continues_into_format3_and_proves_both_sides() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audit-format2");
    let dir = tempfile::tempdir().expect("tempdir");
    copy_log(&fixture, dir.path());
    let key = host_key().public_key();
    let old = crate::audit::verify_dir(dir.path(), Some(&key)).expect("verify");
    assert!(old.is_intact(), "{old:?}");
    assert_eq!((old.format2_from, old.format3_from), (Some(0), None));
    let old_checkpoint =
        std::fs::read(dir.path().join(crate::audit::tree::CHECKPOINT_FILE)).expect("checkpoint");

    let opts = AuditOptions {
        boot_id: Some(BOOT.into()),
        origin: Some("test.example/host-a".into()),
        ..AuditOptions::default()
    };
    let mut log = AuditLog::open(dir.path(), Some(host_key()), opts).expect("reopen");
    // A denial cites no artifact, so its proof does not depend on when this test runs.
    let envelope = Envelope::parse(&testkit::signed_bundle(&bundle(0, 1), &[1])).expect("env");
    let mut denied = exec(
        13,
        &FileDigest::of_bytes(b"other"),
        &envelope,
        decision::DENY,
    );
    (denied.auth_id, denied.reason, denied.auth_serial) = ([0; 16], reason::NOT_GRANTED, 0);
    let labels = DecisionLabels {
        scope: Some(SCOPE),
        grant_name: None,
    };
    log.append_decision(&denied, &labels).expect("decision");
    log.close().expect("close");

    let new = crate::audit::verify_dir(dir.path(), Some(&key)).expect("verify");
    assert!(new.is_intact(), "{new:?}");
    assert_eq!(new.format3_from, Some(old.records));
    assert_eq!(
        new.tree_heads,
        old.tree_heads + 2,
        "the start and the shutdown"
    );
    let before = check(&proof_of(dir.path(), 10), &trust()).expect("a format-2 record");
    assert!(
        before.tree_size > old.records,
        "proven under the new checkpoint"
    );
    let after = check(&proof_of(dir.path(), 13), &trust()).expect("a format-3 record");
    assert_eq!(
        after.record.seq,
        old.records + 2,
        "after the start and its checkpoint"
    );
    super::prove_consistency(dir.path(), &old_checkpoint).expect("extends the old checkpoint");
}
