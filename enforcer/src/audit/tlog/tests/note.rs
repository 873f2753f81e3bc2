//! Signed notes and verifier keys: Go's `sumdb/note` test vectors, the C2SP example, and
//! every way a note or vkey can be malformed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use proptest::prelude::*;

use crate::audit::tlog::note::{
    MAX_LINE_BYTES, MAX_NOTE_BYTES, MAX_SIGNATURES, SignatureLineProblem,
};
use crate::audit::tlog::{
    KeyError, NoteError, NoteKeyId, NoteSignature, NoteSigner, NoteVerifier, NoteVerifiers,
    SignedNote,
};
use crate::authz::trust::SigningKey;

// From golang.org/x/mod/sumdb/note's note_test.go.
pub(super) const PETER_VKEY: &str =
    "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
const PETER_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

/// Peter's private key: Go's `PRIVATE+KEY+<name>+<id>+base64(0x01 || seed)`.
pub(super) fn peter_key() -> SigningKey {
    // The base64 part may hold '+' itself: it is everything after the fourth '+'.
    let material = PETER_SKEY.splitn(5, '+').nth(4).expect("has parts");
    let raw = BASE64.decode(material).expect("base64");
    assert_eq!(raw[0], 0x01, "Ed25519");
    SigningKey::from_seed(raw[1..].try_into().expect("32-byte seed"))
}

fn keys(vkeys: &[&str]) -> NoteVerifiers {
    NoteVerifiers::new(
        vkeys
            .iter()
            .map(|v| NoteVerifier::from_vkey(v).expect("vkey")),
    )
    .expect("no duplicates")
}

fn parse(text: &str) -> Result<SignedNote, NoteError> {
    SignedNote::parse(text.as_bytes())
}

#[test]
fn verifier_keys_round_trip_and_ids_are_computed_as_go_does() {
    for vkey in [
        PETER_VKEY,
        ENOCH_VKEY,
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
    ] {
        let v = NoteVerifier::from_vkey(vkey).expect("vkey");
        assert_eq!(v.to_vkey(), vkey);
        assert_eq!(v.to_string().parse::<NoteVerifier>(), Ok(v));
    }
    let peter = NoteVerifier::from_vkey(PETER_VKEY).expect("vkey");
    assert_eq!(peter.name(), "PeterNeumann");
    assert_eq!(peter.key_id(), NoteKeyId([0xc7, 0x4f, 0x20, 0xa3]));
    let signer_key = peter_key();
    let signer = NoteSigner::new("PeterNeumann", &signer_key).expect("signer");
    assert_eq!(signer.verifier(), &peter);
}

#[test]
fn signing_reproduces_go_sumdb_notes_byte_for_byte() {
    let key = peter_key();
    let signer = NoteSigner::new("PeterNeumann", &key).expect("signer");
    let note = SignedNote::sign(TEXT, &signer).expect("sign");
    assert_eq!(note.to_string(), format!("{TEXT}\n{PETER_SIG}"));
    // Signing again replaces the signature rather than adding a second one.
    let mut again = note.clone();
    again.add_own_signature(&signer).expect("sign");
    assert_eq!(again, note);
}

#[test]
fn the_c2sp_example_note_verifies() {
    let note = "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
    let keys = keys(&["example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"]);
    let parsed = parse(note).expect("parse");
    let verified = parsed.verify(&keys).expect("verify");
    assert_eq!(verified.text, "This is an example message.\n");
    assert_eq!(parsed.to_string(), note);
}

#[test]
fn unknown_signatures_are_kept_but_not_trusted() {
    let note = parse(&format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}")).expect("parse");
    let peter_only = keys(&[PETER_VKEY]);
    let v = note.verify(&peter_only).expect("verify");
    assert_eq!(v.text, TEXT);
    assert_eq!(v.trusted.len(), 1);
    assert_eq!(v.trusted[0].name(), "PeterNeumann");
    assert_eq!(v.untrusted.len(), 1);
    assert_eq!(v.untrusted[0].name(), "EnochRoot");
    assert_eq!(v.untrusted[0].key_id(), NoteKeyId([0xaf, 0x0c, 0xfe, 0x78]));

    let both = keys(&[PETER_VKEY, ENOCH_VKEY]);
    let v = note.verify(&both).expect("verify");
    assert_eq!(v.trusted.len(), 2);
    assert!(v.untrusted.is_empty());

    let err = note
        .verify(&NoteVerifiers::default())
        .expect_err("no trusted key");
    assert_eq!(
        err,
        NoteError::NoTrustedSignature {
            signers: "PeterNeumann+c74f20a3, EnochRoot+af0cfe78".into()
        }
    );
}

#[test]
fn a_failing_signature_by_a_trusted_key_refuses_the_note() {
    // Go's test: four base64 characters inserted into the signature.
    let bad_sig = format!("{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
    let note = parse(&format!("{TEXT}\n{bad_sig}")).expect("parse");
    assert_eq!(
        note.verify(&keys(&[PETER_VKEY])).expect_err("bad"),
        NoteError::BadSignature {
            name: "PeterNeumann".into(),
            id: NoteKeyId([0xc7, 0x4f, 0x20, 0xa3])
        }
    );
    // The text changed by one letter: same refusal.
    let altered = format!("{TEXT}\n{PETER_SIG}").replace("cryptography", "cryptographY");
    assert!(matches!(
        parse(&altered).expect("parse").verify(&keys(&[PETER_VKEY])),
        Err(NoteError::BadSignature { .. })
    ));
    // Whoever does not trust Peter's key keeps the bad signature as an unknown one.
    let enoch_only = keys(&[ENOCH_VKEY]);
    let v = note.verify(&enoch_only);
    assert!(matches!(v, Err(NoteError::NoTrustedSignature { .. })));
}

#[test]
fn repeated_signatures_count_once() {
    let enoch_abcd = format!("{}ABCD{}", &ENOCH_SIG[..60], &ENOCH_SIG[60..]);
    let text = format!("{TEXT}\n{PETER_SIG}{PETER_SIG}{ENOCH_SIG}{ENOCH_SIG}{enoch_abcd}");
    let note = parse(&text).expect("parse");
    assert_eq!(
        note.signatures().len(),
        5,
        "parsing keeps the note as it is"
    );
    assert_eq!(note.to_string(), text);
    let peter_only = keys(&[PETER_VKEY]);
    let v = note.verify(&peter_only).expect("verify");
    assert_eq!(v.trusted.len(), 1);
    assert_eq!(v.untrusted.len(), 2);
}

#[test]
fn malformed_notes_are_refused_with_what_is_wrong() {
    let name_with_space = "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    let cases: Vec<(Vec<u8>, NoteError)> = vec![
        // Go's badMsgs, each with the error that names its fault.
        (TEXT.into(), NoteError::NoSignatures),
        (format!("{TEXT}\n").into(), NoteError::NoSignatures),
        (
            format!("{TEXT}\n{}", PETER_SIG.trim_end()).into(),
            NoteError::MissingFinalNewline,
        ),
        (
            format!("\x01{TEXT}\n{PETER_SIG}").into(),
            NoteError::ControlCharacter { line: 1, code: 1 },
        ),
        (
            [
                b"\xff".as_slice(),
                format!("{TEXT}\n{PETER_SIG}").as_bytes(),
            ]
            .concat(),
            NoteError::NotUtf8 { offset: 0 },
        ),
        (
            format!("{TEXT}\n{name_with_space}").into(),
            NoteError::SignatureLine {
                line: 4,
                problem: SignatureLineProblem::BadName(KeyError::BadName {
                    name: "Bad Name".into(),
                    problem: "it contains a space",
                }),
            },
        ),
        (
            format!("{TEXT}\n{PETER_SIG}Unexpected line.\n").into(),
            NoteError::SignatureLine {
                line: 5,
                problem: SignatureLineProblem::NoDash,
            },
        ),
        // And the rest of the grammar.
        (
            format!("{TEXT}\n— PeterNeumann\n").into(),
            NoteError::SignatureLine {
                line: 4,
                problem: SignatureLineProblem::NoSignature,
            },
        ),
        (
            format!("{TEXT}\n— PeterNeumann not*base64\n").into(),
            NoteError::SignatureLine {
                line: 4,
                problem: SignatureLineProblem::BadBase64,
            },
        ),
        (
            format!("{TEXT}\n— PeterNeumann AAAAAA==\n").into(),
            NoteError::SignatureLine {
                line: 4,
                problem: SignatureLineProblem::TooShort(4),
            },
        ),
        (
            format!("{TEXT}\n— Peter+Neumann AAAAAAA=\n").into(),
            NoteError::SignatureLine {
                line: 4,
                problem: SignatureLineProblem::BadName(KeyError::BadName {
                    name: "Peter+Neumann".into(),
                    problem: "it contains '+'",
                }),
            },
        ),
        (
            format!("{TEXT}\r\n{PETER_SIG}").into(),
            NoteError::ControlCharacter { line: 3, code: 13 },
        ),
        (
            format!("{}\n\n{PETER_SIG}", "x".repeat(MAX_LINE_BYTES + 1)).into(),
            NoteError::LineTooLong {
                line: 1,
                len: MAX_LINE_BYTES + 1,
                max: MAX_LINE_BYTES,
            },
        ),
        (
            format!("{TEXT}\n{}", PETER_SIG.repeat(MAX_SIGNATURES + 1)).into(),
            NoteError::TooManySignatures {
                count: MAX_SIGNATURES + 1,
                max: MAX_SIGNATURES,
            },
        ),
        (
            vec![b'a'; MAX_NOTE_BYTES + 1],
            NoteError::TooLarge {
                len: MAX_NOTE_BYTES + 1,
                max: MAX_NOTE_BYTES,
            },
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(
            SignedNote::parse(&bytes),
            Err(want),
            "{:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
    // The most signatures allowed still parse.
    let many = format!("{TEXT}\n{}", PETER_SIG.repeat(MAX_SIGNATURES));
    assert_eq!(
        parse(&many).expect("parse").signatures().len(),
        MAX_SIGNATURES
    );
}

#[test]
fn the_text_runs_to_the_last_blank_line() {
    let key = peter_key();
    let signer = NoteSigner::new("PeterNeumann", &key).expect("signer");
    let text = "first\n\nsecond, after a blank line\n";
    let note = SignedNote::sign(text, &signer).expect("sign");
    let back = parse(&note.to_string()).expect("parse");
    assert_eq!(back.text(), text);
    back.verify(&keys(&[PETER_VKEY])).expect("verify");

    for (bad, want) in [
        ("", NoteError::EmptyText),
        ("no newline", NoteError::MissingFinalNewline),
        (
            "tab\there\n",
            NoteError::ControlCharacter { line: 1, code: 9 },
        ),
    ] {
        assert_eq!(SignedNote::sign(bad, &signer), Err(want), "{bad:?}");
    }
}

#[test]
fn cosignatures_are_added_once_and_within_the_limit() {
    let key = peter_key();
    let signer = NoteSigner::new("PeterNeumann", &key).expect("signer");
    let mut note = SignedNote::sign(TEXT, &signer).expect("sign");
    let enoch = parse(&format!("{TEXT}\n{ENOCH_SIG}"))
        .expect("parse")
        .signatures()[0]
        .clone();
    note.add_signature(enoch.clone()).expect("add");
    note.add_signature(enoch.clone()).expect("add again");
    assert_eq!(note.to_string(), format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}"));
    // Re-signing keeps the cosignature and puts the own signature first.
    note.add_own_signature(&signer).expect("sign");
    assert_eq!(note.to_string(), format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}"));

    for i in 2..MAX_SIGNATURES {
        let name = format!("witness{i}");
        let sig = NoteSignature::new(&name, NoteKeyId([0; 4]), vec![1; 64]).expect("sig");
        note.add_signature(sig).expect("within the limit");
    }
    let before = note.clone();
    let one_more = NoteSignature::new("late", NoteKeyId([0; 4]), vec![1; 64]).expect("sig");
    assert_eq!(
        note.add_signature(one_more),
        Err(NoteError::TooManySignatures {
            count: MAX_SIGNATURES + 1,
            max: MAX_SIGNATURES
        })
    );
    assert_eq!(
        note, before,
        "a refused signature leaves the note as it was"
    );
    assert_eq!(parse(&note.to_string()).expect("parse"), note);

    assert_eq!(
        NoteSignature::new("w", NoteKeyId([0; 4]), Vec::new()),
        Err(NoteError::EmptySignature)
    );
    assert!(matches!(
        NoteSignature::new("w", NoteKeyId([0; 4]), vec![0; MAX_LINE_BYTES]),
        Err(NoteError::SignatureTooLong { .. })
    ));
    assert!(matches!(
        NoteSignature::new("w x", NoteKeyId([0; 4]), vec![0; 4]),
        Err(NoteError::Key(KeyError::BadName { .. }))
    ));
}

#[test]
fn malformed_verifier_keys_are_refused_with_what_is_wrong() {
    let wrong_length = format!("PeterNeumann+c74f20a3+{}", BASE64.encode([1u8; 34]));
    let cases = [
        (
            "PeterNeumann",
            KeyError::VkeyParts {
                text: "PeterNeumann".into(),
                parts: 1,
            },
        ),
        (
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T!",
            KeyError::BadBase64,
        ),
        // Go's: an unknown algorithm and a key of the wrong length, key ids adjusted.
        (
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            KeyError::UnsupportedType {
                found: 0x65,
                expected: 0x01,
            },
        ),
        // (Go refuses it for its length; strict base64 already for its last character.)
        (
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
            KeyError::BadBase64,
        ),
        (wrong_length.as_str(), KeyError::BadLength(34)),
        (
            "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            KeyError::BadKeyId {
                text: "C74F20A3".into(),
            },
        ),
        (
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            KeyError::IdMismatch {
                name: "PeterNeumann".into(),
                stated: NoteKeyId([0xc7, 0x4f, 0x20, 0xa4]),
                computed: NoteKeyId([0xc7, 0x4f, 0x20, 0xa3]),
            },
        ),
        (
            "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            KeyError::BadName {
                name: String::new(),
                problem: "it is empty",
            },
        ),
    ];
    for (text, want) in cases {
        assert_eq!(NoteVerifier::from_vkey(text), Err(want), "{text}");
    }
    // Go's manglings: every proper substring and every byte changed; none may pass.
    let b = PETER_VKEY.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if (i, j) != (0, b.len()) {
                let s = String::from_utf8_lossy(&b[i..j]);
                assert!(NoteVerifier::from_vkey(&s).is_err(), "{s}");
            }
        }
    }
    for i in 0..b.len() {
        let mut m = b.to_vec();
        m[i] = m[i].wrapping_add(1);
        let s = String::from_utf8_lossy(&m);
        assert!(NoteVerifier::from_vkey(&s).is_err(), "{s}");
    }
}

#[test]
fn two_keys_under_one_name_and_id_are_ambiguous() {
    let peter = NoteVerifier::from_vkey(PETER_VKEY).expect("vkey");
    let other = SigningKey::from_seed(&[7; 32]).public_key();
    let impostor = NoteVerifier::with_id("PeterNeumann", peter.key_id(), other);
    let mut set = NoteVerifiers::new([peter.clone(), peter.clone()]).expect("same key twice");
    assert_eq!(
        set.add(impostor),
        Err(KeyError::Ambiguous {
            name: "PeterNeumann".into(),
            id: peter.key_id()
        })
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any bytes at all: an answer, never a panic; and what parses prints back the same.
    #[test]
    fn parsing_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(note) = SignedNote::parse(&bytes) {
            let printed = note.to_string();
            prop_assert_eq!(printed.as_bytes(), &bytes[..]);
        }
    }

    /// Near-misses of a real note: one byte changed anywhere is refused or, if it still
    /// parses and verifies, it changed nothing the signature covers.
    #[test]
    fn a_changed_byte_never_verifies_as_a_different_text(pos in 0usize..250, byte in any::<u8>()) {
        let good = format!("{TEXT}\n{PETER_SIG}").into_bytes();
        let mut bad = good.clone();
        let pos = pos % bad.len();
        prop_assume!(bad[pos] != byte);
        bad[pos] = byte;
        let keys = keys(&[PETER_VKEY]);
        if let Ok(note) = SignedNote::parse(&bad)
            && let Ok(v) = note.verify(&keys)
        {
            prop_assert_eq!(v.text, TEXT);
        }
    }

    #[test]
    fn any_vkey_text_never_panics(text in "\\PC{0,80}") {
        let _ = NoteVerifier::from_vkey(&text);
    }
}
