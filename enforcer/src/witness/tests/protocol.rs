//! The request and answer bytes: what one end writes the other reads, and what no end
//! would write is refused without a panic.

use proptest::prelude::*;

use super::{leaves, signed};
use crate::audit::tlog::{NoteError, consistency_proof};
use crate::witness::protocol::{
    AddCheckpoint, MAX_PROOF_LINES, RequestError, parse_cosignatures_body, parse_size_body,
    size_body,
};

#[test]
fn a_request_round_trips() {
    let l = leaves(13, 0);
    let proof = consistency_proof(&l[..], 5, 13).expect("proof");
    let note = signed(&l, 13);
    let body = AddCheckpoint::encode(5, &proof, &note);
    assert!(body.starts_with("old 5\n"), "{body}");
    let parsed = AddCheckpoint::parse(body.as_bytes()).expect("parse");
    assert_eq!(parsed.old_size, 5);
    assert_eq!(parsed.proof, proof);
    assert_eq!(parsed.note, note);
}

#[test]
fn the_spec_example_request_parses() {
    // C2SP tlog-witness's example body; its signatures are the example log's.
    let body = "old 20852014
PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=
jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=
5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=
/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=

example.com/behind-the-sofa
20852163
CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=

— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=
— example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=
";
    let parsed = AddCheckpoint::parse(body.as_bytes()).expect("parse");
    assert_eq!(parsed.old_size, 20_852_014);
    assert_eq!(parsed.proof.len(), 4);
    assert_eq!(parsed.note.signatures().len(), 2);
    assert_eq!(
        AddCheckpoint::encode(parsed.old_size, &parsed.proof, &parsed.note),
        body
    );
}

#[test]
fn malformed_requests_say_what_is_wrong() {
    let l = leaves(4, 0);
    let note = signed(&l, 4).to_string();
    let hash = l[0].to_base64();
    let too_many = format!(
        "old 1\n{}\n{note}",
        format!("{hash}\n").repeat(MAX_PROOF_LINES + 1)
    );
    let cases: Vec<(String, RequestError)> = vec![
        (String::new(), RequestError::NoOldLine),
        (format!("new 0\n\n{note}"), RequestError::NoOldLine),
        (
            format!("old 01\n\n{note}"),
            RequestError::BadOldSize {
                text: "01".into(),
                problem: "leading zero",
            },
        ),
        (
            format!("old -1\n\n{note}"),
            RequestError::BadOldSize {
                text: "-1".into(),
                problem: "not a decimal number",
            },
        ),
        (
            format!("old 1\n{hash}\nAAAA\n\n{note}"),
            RequestError::BadProofLine {
                line: 2,
                problem: "not 32 bytes (a SHA-256 hash)",
            },
        ),
        (too_many, RequestError::TooManyProofLines),
        (format!("old 0\n{hash}\n"), RequestError::NoBlankLine),
        (
            "old 0\n\nenforcer.example/host-a\n4\n".to_owned(),
            RequestError::Note(NoteError::NoSignatures),
        ),
    ];
    for (body, want) in cases {
        assert_eq!(AddCheckpoint::parse(body.as_bytes()), Err(want), "{body:?}");
    }
    // Exactly the most proof lines allowed is fine.
    let most = format!(
        "old 1\n{}\n{note}",
        format!("{hash}\n").repeat(MAX_PROOF_LINES)
    );
    assert_eq!(
        AddCheckpoint::parse(most.as_bytes()).map(|r| r.proof.len()),
        Ok(MAX_PROOF_LINES)
    );
}

#[test]
fn answers_round_trip() {
    assert_eq!(parse_size_body(size_body(1234).as_bytes()), Ok(1234));
    assert_eq!(parse_size_body(b"12"), Err("no final newline"));
    assert_eq!(parse_size_body(b"012\n"), Err("leading zero"));
    assert_eq!(
        parse_cosignatures_body(b""),
        Err(NoteError::MissingFinalNewline)
    );
    assert_eq!(parse_cosignatures_body(b"\n"), Err(NoteError::NoSignatures));
    let line = "— witness.example/w1 ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA==\n";
    let two = format!("{line}{line}");
    let parsed = parse_cosignatures_body(two.as_bytes()).expect("lines");
    assert_eq!(parsed.len(), 2);
    assert_eq!(format!("{}\n", parsed[0]), line);
}

proptest! {
    #[test]
    fn any_bytes_parse_or_are_refused_without_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = AddCheckpoint::parse(&body);
        let _ = parse_cosignatures_body(&body);
        let _ = parse_size_body(&body);
    }

    #[test]
    fn any_request_round_trips(old in 0u64..30, grow in 0u64..30) {
        let new = old + grow;
        let l = leaves(new.max(1), 3);
        let size = new.max(1);
        let old = old.min(size);
        let proof = consistency_proof(&l[..], old, size).expect("proof");
        let note = signed(&l, size);
        let body = AddCheckpoint::encode(old, &proof, &note);
        let parsed = AddCheckpoint::parse(body.as_bytes()).expect("parse");
        prop_assert_eq!(parsed, AddCheckpoint { old_size: old, proof, note });
    }
}
