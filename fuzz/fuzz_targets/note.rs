//! Feeds arbitrary bytes to the transparency log's text parsers: signed notes, checkpoints
//! (bare and signed) and `vkey` key texts. Checkpoints and cosignatures arrive from other
//! hosts and witnesses, so any panic is a bug: untrusted input must only ever be refused.
//! What parses must print back to text that parses to the same value.
#![no_main]

use std::str::FromStr as _;
use std::sync::LazyLock;

use enforcer::audit::tlog::{Checkpoint, NoteVerifier, NoteVerifiers, SignedNote};
use libfuzzer_sys::fuzz_target;

/// The key of C2SP's signed-note example ("PeterNeumann"), which signed the seed
/// `peter-checkpoint.note`, so mutations of that seed reach past the signature check into
/// the checkpoint parser and the origin check.
const ORIGIN: &str = "PeterNeumann";
static KEYS: LazyLock<NoteVerifiers> = LazyLock::new(|| {
    let key = NoteVerifier::from_str(
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    )
    .expect("the C2SP example vkey parses");
    NoteVerifiers::new([key]).expect("one key")
});

fuzz_target!(|data: &[u8]| {
    if let Ok(note) = SignedNote::parse(data) {
        let again =
            SignedNote::parse(note.to_string().as_bytes()).expect("a parsed note re-parses");
        assert_eq!(again, note);
        let _ = note.verify(&KEYS);
        check_checkpoint(note.text());
    }
    if let Ok(opened) = Checkpoint::open(data, ORIGIN, &KEYS) {
        assert_eq!(opened.checkpoint.origin(), ORIGIN);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        check_checkpoint(text);
        if let Ok(key) = NoteVerifier::from_str(text) {
            let again = NoteVerifier::from_str(&key.to_string()).expect("a parsed vkey re-parses");
            assert_eq!(again, key);
        }
    }
});

fn check_checkpoint(text: &str) {
    if let Ok(checkpoint) = Checkpoint::parse(text) {
        let again =
            Checkpoint::parse(&checkpoint.to_string()).expect("a parsed checkpoint re-parses");
        assert_eq!(again, checkpoint);
    }
}
