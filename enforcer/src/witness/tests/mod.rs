//! The witness end to end: the real server on 127.0.0.1:0 and the real client, logs built
//! from leaf hashes, and the state directory surviving restarts.

mod loopback;
mod protocol;
mod push;
mod state;

use std::path::Path;
use std::sync::Arc;

use hyper::StatusCode;
use hyper::body::Bytes;
use hyper::header::HeaderMap;

use super::client::{post, target};
use super::{TrustedLogs, Witness, WitnessState, bind, serve};
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

/// The real witness server on 127.0.0.1:0, over the state in a directory.
pub(super) struct Server {
    pub(super) url: String,
    task: tokio::task::JoinHandle<()>,
    pub(super) witness: Arc<Witness>,
}

impl Server {
    pub(super) async fn start(dir: &Path) -> Self {
        let witness = witness(dir);
        let listener = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let served = Arc::clone(&witness);
        let task = tokio::spawn(async move { serve(listener, served).await.expect("serve") });
        Self {
            url: format!("http://{addr}"),
            task,
            witness,
        }
    }

    pub(super) async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    pub(super) async fn post(&self, body: impl Into<Bytes>) -> (StatusCode, HeaderMap, Bytes) {
        post(&self.url, &target(&self.url).expect("url"), body.into())
            .await
            .expect("exchange")
    }
}
