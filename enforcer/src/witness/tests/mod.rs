//! The witness end to end: the real server on 127.0.0.1:0 and the real client, logs built
//! from leaf hashes, and the state directory surviving restarts.

mod loopback;
mod protocol;
mod state;

use std::path::Path;
use std::sync::Arc;

use super::{TrustedLogs, Witness, WitnessState};
use crate::audit::tlog::{
    Checkpoint, CosignatureVerifier, NoteSigner, NoteVerifier, SignedNote, TreeHash, leaf_hash,
    tree_root,
};
use crate::authz::trust::SigningKey;

pub(super) const ORIGIN: &str = "enforcer.example/host-a";
pub(super) const WITNESS: &str = "witness.example/w1";

pub(super) fn log_key() -> SigningKey {
    SigningKey::from_seed(&[1; 32])
}

pub(super) fn witness_key() -> SigningKey {
    SigningKey::from_seed(&[2; 32])
}

/// The witness's public key, as a log would configure it.
pub(super) fn witness_verifier() -> CosignatureVerifier {
    CosignatureVerifier::new(WITNESS, witness_key().public_key()).expect("verifier")
}

/// `n` leaves; `tag` makes a different history from the same position on.
pub(super) fn leaves(n: u64, tag: u8) -> Vec<TreeHash> {
    (0..n)
        .map(|i| leaf_hash(&[&i.to_be_bytes()[..], &[tag]].concat()))
        .collect()
}

/// The checkpoint of the first `size` of `leaves` for `origin`, signed by `key`.
pub(super) fn signed_as(
    origin: &str,
    leaves: &[TreeHash],
    size: u64,
    key: &SigningKey,
) -> SignedNote {
    let root = tree_root(leaves, size).expect("root");
    Checkpoint::new(origin, size, root)
        .expect("checkpoint")
        .sign(&NoteSigner::new(origin, key).expect("signer"))
        .expect("sign")
}

pub(super) fn signed(leaves: &[TreeHash], size: u64) -> SignedNote {
    signed_as(ORIGIN, leaves, size, &log_key())
}

/// The log list a witness reads: the test log's vkey.
pub(super) fn write_logs(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("logs");
    let vkey = NoteVerifier::new(ORIGIN, log_key().public_key())
        .expect("vkey")
        .to_vkey();
    std::fs::write(&path, format!("# the test log\n\n{vkey}\n")).expect("write logs");
    path
}

/// A witness over the state in `dir`, trusting the test log.
pub(super) fn witness(dir: &Path) -> Arc<Witness> {
    let logs = TrustedLogs::load(&write_logs(dir)).expect("logs");
    let state = WitnessState::open(&dir.join("state")).expect("state");
    Arc::new(Witness::new(WITNESS, witness_key(), logs, state).expect("witness"))
}
