//! Checkpoints: the C2SP example, signing and opening, and every way the text can be wrong.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use proptest::prelude::*;

use super::note::{PETER_VKEY, peter_key};
use crate::audit::tlog::note::MAX_LINE_BYTES;
use crate::audit::tlog::{
    Checkpoint, CheckpointError, NoteError, NoteKeyId, NoteSignature, NoteSigner, NoteVerifier,
    NoteVerifiers, TreeHash, leaf_hash, tree_root,
};
use crate::authz::trust::SigningKey;

const ORIGIN: &str = "enforcer.example/host-a";

fn host() -> SigningKey {
    SigningKey::from_seed(&[42; 32])
}

fn host_keys(key: &SigningKey) -> NoteVerifiers {
    NoteVerifiers::new([NoteVerifier::new(ORIGIN, key.public_key()).expect("verifier")])
        .expect("keys")
}

fn some_root() -> TreeHash {
    let leaves: Vec<TreeHash> = (0..5u8).map(|i| leaf_hash(&[i])).collect();
    tree_root(&leaves[..], 5).expect("root")
}

#[test]
fn the_c2sp_example_checkpoint_parses_and_prints_back() {
    let text =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    let c = Checkpoint::parse(text).expect("parse");
    assert_eq!(c.origin(), "example.com/behind-the-sofa");
    assert_eq!(c.size(), 20_852_163);
    assert_eq!(
        c.root().to_base64(),
        "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    );
    assert!(c.extensions().is_empty());
    assert_eq!(c.to_string(), text);

    // Its signature is by a key whose vkey the spec does not publish: kept, not trusted.
    let note = format!(
        "{text}\n— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    );
    assert_eq!(
        Checkpoint::open(
            note.as_bytes(),
            "example.com/behind-the-sofa",
            &host_keys(&host())
        ),
        Err(CheckpointError::Note(NoteError::NoTrustedSignature {
            signers: "example.com/behind-the-sofa+033de0ae".into()
        }))
    );
}

#[test]
fn a_signed_checkpoint_opens_with_the_host_key_and_keeps_cosignatures() {
    let key = host();
    let signer = NoteSigner::new(ORIGIN, &key).expect("signer");
    let checkpoint = Checkpoint::new(ORIGIN, 5, some_root()).expect("checkpoint");
    let mut note = checkpoint.sign(&signer).expect("sign");
    let cosig = NoteSignature::new("witness.example/w1", NoteKeyId([1, 2, 3, 4]), vec![9; 72])
        .expect("cosignature");
    note.add_signature(cosig.clone()).expect("add");
    let bytes = note.to_string();

    let opened = Checkpoint::open(bytes.as_bytes(), ORIGIN, &host_keys(&key)).expect("open");
    assert_eq!(opened.checkpoint, checkpoint);
    assert_eq!(opened.signed_by.len(), 1);
    assert_eq!(opened.signed_by[0].name(), ORIGIN);
    assert_eq!(opened.note.signatures()[1], cosig);
    assert_eq!(opened.note.to_string(), bytes);

    assert_eq!(
        Checkpoint::open(
            bytes.as_bytes(),
            "enforcer.example/host-b",
            &host_keys(&key)
        ),
        Err(CheckpointError::WrongOrigin {
            expected: "enforcer.example/host-b".into(),
            found: ORIGIN.into()
        })
    );
    // A bigger size under the old signature: the host key's signature no longer holds.
    let forged = bytes.replacen("\n5\n", "\n6\n", 1);
    assert!(matches!(
        Checkpoint::open(forged.as_bytes(), ORIGIN, &host_keys(&key)),
        Err(CheckpointError::Note(NoteError::BadSignature { .. }))
    ));
    // Signed by another key under the host's name: not this host's checkpoint.
    let stranger = SigningKey::from_seed(&[43; 32]);
    let other = checkpoint
        .sign(&NoteSigner::new(ORIGIN, &stranger).expect("signer"))
        .expect("sign")
        .to_string();
    assert!(matches!(
        Checkpoint::open(other.as_bytes(), ORIGIN, &host_keys(&key)),
        Err(CheckpointError::Note(NoteError::NoTrustedSignature { .. }))
    ));
    assert_eq!(
        Checkpoint::open(b"\xffnot utf-8\n", ORIGIN, &host_keys(&key)),
        Err(CheckpointError::Note(NoteError::NotUtf8 { offset: 0 }))
    );
}

#[test]
fn a_checkpoint_signed_with_a_go_key_verifies_under_its_vkey() {
    let key = peter_key();
    let signer = NoteSigner::new("PeterNeumann", &key).expect("signer");
    let checkpoint = Checkpoint::new("PeterNeumann", 8, some_root())
        .and_then(|c| c.with_extension("an extension line"))
        .expect("checkpoint");
    let note = checkpoint.sign(&signer).expect("sign").to_string();
    let keys =
        NoteVerifiers::new([NoteVerifier::from_vkey(PETER_VKEY).expect("vkey")]).expect("keys");
    let opened = Checkpoint::open(note.as_bytes(), "PeterNeumann", &keys).expect("open");
    assert_eq!(opened.checkpoint.extensions(), ["an extension line"]);
}

#[test]
fn malformed_checkpoints_are_refused_with_what_is_wrong() {
    let root = some_root().to_base64();
    let short_root = BASE64.encode([0u8; 31]);
    let long_origin = "o".repeat(MAX_LINE_BYTES + 1);
    let size = |text: &str, problem| CheckpointError::BadSize {
        text: text.into(),
        problem,
    };
    let cases = [
        (
            format!("{ORIGIN}\n5\n{root}"),
            CheckpointError::MissingFinalNewline,
        ),
        (
            format!("{ORIGIN}\n5\n"),
            CheckpointError::TooFewLines { found: 2 },
        ),
        (String::new(), CheckpointError::MissingFinalNewline),
        (
            format!("\n5\n{root}\n"),
            CheckpointError::EmptyLine { line: 1 },
        ),
        (
            format!("{ORIGIN}\nfive\n{root}\n"),
            size("five", "not a decimal number"),
        ),
        (
            format!("{ORIGIN}\n\n{root}\n"),
            size("", "not a decimal number"),
        ),
        (
            format!("{ORIGIN}\n+5\n{root}\n"),
            size("+5", "not a decimal number"),
        ),
        (
            format!("{ORIGIN}\n-1\n{root}\n"),
            size("-1", "not a decimal number"),
        ),
        (
            format!("{ORIGIN}\n 5\n{root}\n"),
            size(" 5", "not a decimal number"),
        ),
        (
            format!("{ORIGIN}\n05\n{root}\n"),
            size("05", "leading zero"),
        ),
        (
            format!("{ORIGIN}\n18446744073709551616\n{root}\n"),
            size("18446744073709551616", "larger than 2^64 - 1"),
        ),
        (
            format!("{ORIGIN}\n5\n{}\n", &root[1..]),
            CheckpointError::BadRootHash {
                text: root[1..].into(),
                problem: "not standard base64",
            },
        ),
        (
            format!("{ORIGIN}\n5\n{short_root}\n"),
            CheckpointError::BadRootHash {
                text: short_root.clone(),
                problem: "not 32 bytes (a SHA-256 hash)",
            },
        ),
        (
            format!("{ORIGIN}\n5\n{root}\n\nafter an empty line\n"),
            CheckpointError::EmptyLine { line: 4 },
        ),
        (
            format!("{ORIGIN}\n5\r\n{root}\n"),
            CheckpointError::ControlCharacter { line: 2, code: 13 },
        ),
        (
            format!("{long_origin}\n5\n{root}\n"),
            CheckpointError::LineTooLong {
                line: 1,
                len: MAX_LINE_BYTES + 1,
                max: MAX_LINE_BYTES,
            },
        ),
    ];
    for (text, want) in cases {
        assert_eq!(Checkpoint::parse(&text), Err(want), "{text:?}");
    }
    assert_eq!(
        Checkpoint::parse(&format!("{ORIGIN}\n0\n{root}\n")).map(|c| c.size()),
        Ok(0)
    );
    assert_eq!(
        Checkpoint::parse(&format!("{ORIGIN}\n18446744073709551615\n{root}\n")).map(|c| c.size()),
        Ok(u64::MAX)
    );
    // What cannot be read back cannot be built either.
    assert_eq!(
        Checkpoint::new("two\nlines", 1, some_root()),
        Err(CheckpointError::ControlCharacter { line: 1, code: 10 })
    );
    assert_eq!(
        Checkpoint::new("", 1, some_root()),
        Err(CheckpointError::EmptyLine { line: 1 })
    );
    assert_eq!(
        Checkpoint::new(ORIGIN, 1, some_root()).and_then(|c| c.with_extension("")),
        Err(CheckpointError::EmptyLine { line: 4 })
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any checkpoint that builds signs, opens, and comes back equal.
    #[test]
    fn checkpoints_round_trip_through_a_signed_note(
        origin in "[a-z0-9./-]{1,40}",
        size in any::<u64>(),
        root in any::<[u8; 32]>(),
        extensions in proptest::collection::vec("[ -~]{1,30}", 0..3),
    ) {
        let mut checkpoint = Checkpoint::new(&origin, size, TreeHash(root)).expect("valid");
        for ext in &extensions {
            checkpoint = checkpoint.with_extension(ext).expect("valid");
        }
        prop_assert_eq!(Checkpoint::parse(&checkpoint.to_string()), Ok(checkpoint.clone()));
        let key = host();
        let signer = NoteSigner::new(&origin, &key).expect("signer");
        let note = checkpoint.sign(&signer).expect("sign").to_string();
        let keys = NoteVerifiers::new([signer.verifier().clone()]).expect("keys");
        let opened = Checkpoint::open(note.as_bytes(), &origin, &keys).expect("open");
        prop_assert_eq!(opened.checkpoint, checkpoint);
    }

    #[test]
    fn parsing_any_text_never_panics(text in "\\PC{0,120}") {
        let _ = Checkpoint::parse(&text);
    }
}
