//! The witness's state file: written atomically, read back whole, and never silently
//! replaced by an empty start.

use super::{ORIGIN, leaves, signed, witness};
use crate::witness::state::STATE_FILE;
use crate::witness::{AddCheckpoint, StateError, WitnessState};

#[test]
fn a_first_start_writes_an_empty_state_and_a_cosigned_checkpoint_survives_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = witness(dir.path());
    let state_file = dir.path().join("state").join(STATE_FILE);
    assert!(
        state_file.exists(),
        "an empty state is written at first start"
    );
    let l = leaves(6, 0);
    let request = AddCheckpoint {
        old_size: 0,
        proof: vec![],
        note: signed(&l, 6),
    };
    w.add_checkpoint(&request, 1_000).expect("cosigned");
    drop(w);
    let reopened = WitnessState::open(&dir.path().join("state")).expect("reopen");
    let log = reopened.get(ORIGIN).expect("log remembered");
    assert_eq!(log.size(), 6);
    assert_eq!(log.cosigned_at, 1_000);
    // The kept note carries the log's signature and the witness's cosignature.
    assert_eq!(log.note.signatures().len(), 2);
}

#[test]
fn a_corrupt_state_is_an_error_never_an_empty_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = witness(dir.path());
    let l = leaves(3, 0);
    let request = AddCheckpoint {
        old_size: 0,
        proof: vec![],
        note: signed(&l, 3),
    };
    w.add_checkpoint(&request, 1_000).expect("cosigned");
    drop(w);
    let state_dir = dir.path().join("state");
    let file = state_dir.join(STATE_FILE);
    let good = std::fs::read_to_string(&file).expect("read");
    for bad in [
        String::new(),
        good[..good.len() / 2].to_owned(),
        good.replace("\"version\": 1", "\"version\": 2"),
        good.replace("cosigned_at", "cosigned_when"),
        // The note of another origin under this one's name.
        good.replacen(
            "enforcer.example/host-a\\n",
            "enforcer.example/host-b\\n",
            1,
        ),
    ] {
        std::fs::write(&file, &bad).expect("write");
        match WitnessState::open(&state_dir) {
            Err(StateError::Corrupt { path, .. }) => assert_eq!(path, file),
            other => panic!("{bad:?} opened as {other:?}"),
        }
    }
}
