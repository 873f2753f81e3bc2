//! The agent's side end to end: a real audit log sends its checkpoints to the real
//! witness over loopback; the cosignatures come back into proofs; a forked log (a record
//! rewritten and the tree re-signed with the host key) is refused.

use std::path::Path;

use super::{ORIGIN, Server, log_key, witness_verifier};
use crate::audit::proof::{Selector, prove, verify_proof};
use crate::audit::tlog::{SignedNote, cosigned_by};
use crate::audit::{AuditLog, AuditOptions};
use crate::authz::verify::testkit;
use crate::witness::{COSIGNED_FILE, PushError, Pusher, WitnessError, WitnessSettings};

fn opts() -> AuditOptions {
    AuditOptions {
        boot_id: Some("6f1c0a9e-2b7d-4c1e-9a55-0d3f5e7b8c21".into()),
        origin: Some(ORIGIN.into()),
        ..AuditOptions::default()
    }
}

/// Appends `gaps` records and checkpoints; returns the checkpoint's note.
fn grow(log: &mut AuditLog, gaps: u64) -> SignedNote {
    for _ in 0..gaps {
        log.append_gap(1).expect("append");
    }
    log.checkpoint().expect("checkpoint");
    log.last_note().expect("signed").clone()
}

fn new_pusher(log_dir: &Path, server: &Server) -> Pusher {
    let settings = WitnessSettings {
        url: server.url.clone(),
        key: witness_verifier().to_vkey(),
    };
    Pusher::new(log_dir, &[settings]).expect("pusher")
}

fn cosigned(log_dir: &Path) -> SignedNote {
    SignedNote::parse(&std::fs::read(log_dir.join(COSIGNED_FILE)).expect("cosigned file"))
        .expect("note")
}

#[tokio::test]
async fn checkpoints_are_cosigned_proofs_carry_it_and_a_forked_log_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let log_dir = dir.path().join("log");
    let mut log = AuditLog::open(&log_dir, Some(log_key()), opts()).expect("open");
    let mut pusher = new_pusher(&log_dir, &server);

    // First checkpoint, then growth: both cosigned, the second with a consistency proof.
    for gaps in [3, 40] {
        let note = grow(&mut log, gaps);
        let outcomes = pusher.push(&note).await;
        assert!(
            matches!(outcomes[..], [super::super::Outcome { result: Ok(1), .. }]),
            "{outcomes:?}"
        );
        let kept = cosigned(&log_dir);
        assert_eq!(kept.text(), note.text());
        let verifiers = [witness_verifier()];
        assert_eq!(cosigned_by(&kept, &verifiers).expect("verifies").len(), 1);
    }
    let witnessed = server
        .witness
        .latest(ORIGIN)
        .expect("the witness keeps the log");
    let before_fork = cosigned(&log_dir);

    // A proof made now carries the cosignature, and a verifier can require it.
    let proof = prove(&log_dir, &Selector::Seq(2)).expect("prove");
    let bytes = serde_json::to_vec(&proof).expect("encode");
    let proven = verify_proof(
        &bytes,
        &log_key().public_key(),
        &testkit::store(1, 1),
        &[witness_verifier()],
    )
    .expect("verifies with the witness required");
    assert_eq!(proven.witnessed_by.len(), 1, "{proven}");
    log.close().expect("close");

    // Fork: a holder of the host key rewrites the first record and re-signs the
    // checkpoints; the agent then signs the forged tree afresh.
    let file = log_dir.join(crate::audit::files::name(1));
    crate::audit::testkit::forge_history(&file, &log_key());
    std::fs::remove_dir_all(log_dir.join("tile")).expect("tiles");
    let mut forked = AuditLog::open(&log_dir, Some(log_key()), opts()).expect("reopen");
    let note = grow(&mut forked, 2);
    // A fresh agent does not know what the witness saw: it learns it from the 409, then
    // its proof from there fails against the witness's root.
    let outcomes = new_pusher(&log_dir, &server).push(&note).await;
    assert!(
        matches!(
            outcomes[..],
            [super::super::Outcome {
                result: Err(PushError::Witness(WitnessError::InconsistentProof { .. })),
                ..
            }]
        ),
        "{outcomes:?}"
    );
    assert_eq!(cosigned(&log_dir), before_fork, "nothing new was cosigned");
    assert_eq!(server.witness.latest(ORIGIN), Some(witnessed));

    // A log rolled back behind what the witness saw is told so.
    let mut fresh = new_pusher(&log_dir, &server);
    let small = dir.path().join("small");
    let mut short_log = AuditLog::open(&small, Some(log_key()), opts()).expect("open");
    let short = grow(&mut short_log, 0);
    let outcomes = fresh.push(&short).await;
    assert!(
        matches!(
            outcomes[..],
            [super::super::Outcome {
                result: Err(PushError::AheadOfUs { .. }),
                ..
            }]
        ),
        "{outcomes:?}"
    );
    server.stop().await;
}
