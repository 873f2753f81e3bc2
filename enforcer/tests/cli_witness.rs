//! `enforcer witness`, run as an operator would: the built binary prints its vkey, serves
//! add-checkpoint to the library's client, keeps its state across a restart, and refuses
//! to start on a corrupt state.

// The package's dependencies are the library's; this target uses only a few of them.
#![allow(unused_crate_dependencies)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use enforcer::audit::tlog::{
    Checkpoint, CosignatureVerifier, NoteSigner, NoteVerifier, SignedNote, TreeHash, leaf_hash,
    tree_root,
};
use enforcer::authz::trust::{SigningKey, load_public_key};
use enforcer::witness::{WitnessError, add_checkpoint};

mod common;

const ORIGIN: &str = "enforcer.example/host-a";
const NAME: &str = "witness.example/w1";

fn ok(dir: &Path, line: &str) -> String {
    let run = common::enforcer(dir, line.split_whitespace());
    assert_eq!(
        run.code, 0,
        "enforcer {line}:\n{}{}",
        run.stdout, run.stderr
    );
    run.stdout
}

/// A witness key and a log list trusting a log key, in `dir`.
fn setup(dir: &Path) -> (CosignatureVerifier, SigningKey) {
    ok(dir, "key generate --out w");
    let vkey = ok(dir, &format!("witness vkey --key w.key --name {NAME}"));
    let witness = CosignatureVerifier::from_vkey(vkey.trim()).expect("printed vkey");
    assert_eq!(witness.name(), NAME);
    assert_eq!(
        *witness.public_key(),
        load_public_key(&dir.join("w.pub")).expect("pub")
    );
    let log = SigningKey::from_seed(&[1; 32]);
    let log_vkey = NoteVerifier::new(ORIGIN, log.public_key())
        .expect("vkey")
        .to_vkey();
    std::fs::write(dir.join("logs"), format!("{log_vkey}\n")).expect("logs");
    (witness, log)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Starts `witness serve` and waits until it accepts connections.
fn serve(dir: &Path, port: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_enforcer"))
        .args([
            "witness", "serve", "--key", "w.key", "--name", NAME, "--logs", "logs",
        ])
        .args(["--state", "state", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "witness did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn stop(mut child: Child) {
    child.kill().expect("kill");
    child.wait().expect("wait");
}

fn signed(key: &SigningKey, leaves: &[TreeHash], size: u64) -> SignedNote {
    Checkpoint::new(ORIGIN, size, tree_root(leaves, size).expect("root"))
        .expect("checkpoint")
        .sign(&NoteSigner::new(ORIGIN, key).expect("signer"))
        .expect("sign")
}

#[test]
fn the_witness_cosigns_and_remembers_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (witness, log) = setup(dir.path());
    let leaves: Vec<TreeHash> = (0..6u8).map(|i| leaf_hash(&[i])).collect();
    let note = signed(&log, &leaves, 6);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let child = serve(dir.path(), port);
    let answer = runtime.block_on(add_checkpoint(&url, 0, &[], &note));
    stop(child);
    let mut cosigned = note.clone();
    for line in answer.expect("cosigned") {
        cosigned.add_signature(line).expect("add");
    }
    assert!(
        witness.verify_note(&cosigned).expect("verifies").is_some(),
        "the printed vkey verifies the served cosignature"
    );

    let child = serve(dir.path(), port);
    let again = runtime.block_on(add_checkpoint(&url, 0, &[], &signed(&log, &leaves, 3)));
    stop(child);
    match again {
        Err(WitnessError::Conflict { witness_size: 6 }) => {}
        other => panic!("after a restart, a rollback answered {other:?}"),
    }
}

#[test]
fn the_witness_does_not_start_on_a_corrupt_state_or_without_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    setup(dir.path());
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    std::fs::write(state.join("witness-state.json"), "{").expect("write");
    let serve = format!(
        "witness serve --key w.key --name {NAME} --logs logs --state state --listen 127.0.0.1:0"
    );
    let run = common::enforcer(dir.path(), serve.split_whitespace());
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("is corrupt"), "{}", run.stderr);

    std::fs::remove_file(state.join("witness-state.json")).expect("rm");
    std::fs::write(dir.path().join("logs"), "# nothing yet\n").expect("write");
    let run = common::enforcer(dir.path(), serve.split_whitespace());
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("names no log"), "{}", run.stderr);
}
