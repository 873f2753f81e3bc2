//! Witness cosignatures: a checkpoint cosigned by four witnesses of the public witness
//! network, transparency-dev/formats' vectors, and every way a cosignature can be wrong.

use proptest::prelude::*;

use crate::audit::tlog::cosignature::{COSIGNATURE_V1_LEN, MAX_TIMESTAMP};
use crate::audit::tlog::{
    Checkpoint, CosignatureError, CosignatureVerifier, Cosigner, KeyError, NoteKeyId,
    NoteSignature, NoteSigner, NoteVerifier, NoteVerifiers, SignedNote, TreeHash,
    cosignature_timestamp, cosigned_by, leaf_hash, tree_root,
};
use crate::authz::trust::SigningKey;

/// A checkpoint of Google's `arche2025h1` staging CT log as served with its cosignatures:
/// the log's RFC 6962 STH signature (type 0x05, which this crate does not read) and
/// Ed25519 note signature, then four witnesses' `cosignature/v1`. Every signature was
/// checked with an independent Ed25519 implementation (Python's `cryptography`).
const ARCHE_NOTE: &str = "arche2025h1.staging.ct.transparency.dev
1432088532
U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=

— arche2025h1.staging.ct.transparency.dev zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6hoGREPMHbdQ3urbllzalApkptQIgIpwtEroeW2BXaHAI4kJXFbon5Ch9MNL5zRNZ55lvGt0=
— arche2025h1.staging.ct.transparency.dev ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwhUkzbC3NygNI75MdhL1bfTW9g8Ei59RA23oHP7Ry1k3ZFWwQ=
— transparency.dev/DEV:witness-little-garden 2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/KYTzwZ2rhIgcqoXHAwVkjZr4AscylP3v7sEodkRAErumC2q44vdgJY096st5BQ==
— witness1.smartit.nu/witness1 pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+/iEcxZ75W3u5hNI7TOQtmJbqmNWVuE0tgh0XwzdZsDsUAQ==
— remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU/zZ0WBxtqB0DrAWfBw==
— witness.stagemole.eu Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8FtEyOUvVr+AJmIY/2TUFucgKi7lI7cUiOvKFYe/TmN9DAg==
";
const ARCHE_ORIGIN: &str = "arche2025h1.staging.ct.transparency.dev";
const ARCHE_LOG_VKEY: &str =
    "arche2025h1.staging.ct.transparency.dev+ba2f06c0+AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f";
/// The four witnesses' published vkeys (type 0x04).
const WITNESS_VKEYS: [&str; 4] = [
    "transparency.dev/DEV:witness-little-garden+d8042a87+BCtusOxINQNUTN5Oj8HObRkh2yHf/MwYaGX4CPdiVEPM",
    "witness1.smartit.nu/witness1+a48c820f+BPSFWg9G6KPiO7QPryYO5Xq4oYJJ+kAvLKLSimDhoxMO",
    "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
    "witness.stagemole.eu+67f7aea0+BEqSG3yu9YrmcM3BHvQYTxwFj3uSWakQepafafpUqklv",
];
/// When all four cosigned (2026-05-23T21:50:24Z).
const ARCHE_COSIGNED_AT: u64 = 1_779_573_024;

fn witnesses() -> Vec<CosignatureVerifier> {
    WITNESS_VKEYS
        .iter()
        .map(|v| CosignatureVerifier::from_vkey(v).expect("witness vkey"))
        .collect()
}

fn arche() -> SignedNote {
    SignedNote::parse(ARCHE_NOTE.as_bytes()).expect("note")
}

#[test]
fn a_checkpoint_cosigned_by_the_public_witness_network_verifies() {
    // The log's own signature first: the checkpoint is the log's.
    let log =
        NoteVerifiers::new([NoteVerifier::from_vkey(ARCHE_LOG_VKEY).expect("vkey")]).expect("keys");
    let opened = Checkpoint::open(ARCHE_NOTE.as_bytes(), ARCHE_ORIGIN, &log).expect("open");
    assert_eq!(opened.checkpoint.size(), 1_432_088_532);

    let witnesses = witnesses();
    let cosigned = cosigned_by(&opened.note, &witnesses).expect("cosignatures verify");
    let names: Vec<&str> = cosigned.iter().map(|c| c.witness.name()).collect();
    assert_eq!(
        names,
        [
            "transparency.dev/DEV:witness-little-garden",
            "witness1.smartit.nu/witness1",
            "remora.n621.de",
            "witness.stagemole.eu",
        ]
    );
    assert!(cosigned.iter().all(|c| c.timestamp == ARCHE_COSIGNED_AT));
}

#[test]
fn the_real_cosignatures_do_not_verify_a_changed_checkpoint() {
    let witnesses = witnesses();
    for (from, to) in [
        ("1432088532", "1432088533"),
        ("U7WM79jrzy", "U7WM79jrzz"),
        (
            ARCHE_ORIGIN,
            "arche2025h1.staging.ct.transparency.dev.example",
        ),
    ] {
        let note = SignedNote::parse(ARCHE_NOTE.replacen(from, to, 1).as_bytes()).expect("note");
        for witness in &witnesses {
            let err = witness.verify_note(&note).expect_err("changed text");
            assert_eq!(
                err,
                CosignatureError::BadSignature {
                    name: witness.name().to_owned(),
                    id: witness.key_id(),
                },
                "{from} -> {to}"
            );
        }
    }
}

#[test]
fn a_changed_timestamp_breaks_the_cosignature() {
    let note = arche();
    let remora = CosignatureVerifier::from_vkey(WITNESS_VKEYS[2]).expect("vkey");
    let real = note
        .signatures()
        .iter()
        .find(|s| remora.is_signer_of(s))
        .expect("remora cosigned");
    assert_eq!(remora.verify(note.text(), real), Ok(ARCHE_COSIGNED_AT));
    let mut bytes = real.signature().to_vec();
    bytes[7] ^= 1; // the timestamp's last byte: one second later
    let moved = NoteSignature::new(real.name(), real.key_id(), bytes).expect("signature");
    assert_eq!(cosignature_timestamp(&moved), Ok(ARCHE_COSIGNED_AT + 1));
    assert!(matches!(
        remora.verify(note.text(), &moved),
        Err(CosignatureError::BadSignature { .. })
    ));
}

#[test]
fn witness_key_ids_are_derived_with_type_4_as_published() {
    for vkey in WITNESS_VKEYS {
        let witness = CosignatureVerifier::from_vkey(vkey).expect("vkey");
        assert_eq!(witness.to_vkey(), vkey);
        // The same key as a note key (type 0x01) has another ID: a log signature and a
        // cosignature by one key are never confused.
        let as_note_key = NoteKeyId::ed25519(witness.name(), witness.public_key());
        assert_ne!(as_note_key, witness.key_id());
        let again = CosignatureVerifier::new(witness.name(), *witness.public_key()).expect("new");
        assert_eq!(again, witness);
    }
}

#[test]
fn vkeys_that_are_not_witness_keys_are_refused() {
    // transparency-dev/formats note_cosigv1_test.go: Go accepts this type 0x01 key as a
    // cosignature key; here a vkey's type is the key's role, and 0x01 is a log's.
    assert_eq!(
        CosignatureVerifier::from_vkey(
            "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6"
        ),
        Err(KeyError::UnsupportedType {
            found: 0x01,
            expected: 0x04
        })
    );
    // And a witness key is no log key.
    assert_eq!(
        NoteVerifier::from_vkey(WITNESS_VKEYS[2]),
        Err(KeyError::UnsupportedType {
            found: 0x04,
            expected: 0x01
        })
    );
    // The name changed, the id kept: refused rather than trusted under the new name.
    assert!(matches!(
        CosignatureVerifier::from_vkey(
            "remora.example+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
        ),
        Err(KeyError::IdMismatch { .. })
    ));
}

#[test]
fn the_timestamp_is_read_as_go_reads_it() {
    // transparency-dev/formats note_cosigv1_test.go, TestCoSigV1Timestamp.
    let line = "— w ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA==";
    let sig = NoteSignature::parse(line).expect("line");
    assert_eq!(sig.key_id(), NoteKeyId([0x64, 0x68, 0x46, 0xb9]));
    assert_eq!(cosignature_timestamp(&sig), Ok(1_727_964_367));
    // Its "wrong type of signature": a plain Ed25519 note signature, 64 bytes.
    let plain = "— w eQjRQm6eSKzFoiYalgwCPXu2y3ijtg68is9M46JKxuZB+dRfTmeQeDBoXnvxZx2ugnkyV+MUMLXpWs1hPb/W/4xkNQY=";
    let sig = NoteSignature::parse(plain).expect("line");
    assert!(matches!(
        cosignature_timestamp(&sig),
        Err(CosignatureError::WrongLength { len: 64, .. })
    ));
}

const ORIGIN: &str = "enforcer.example/host-a";
const WITNESS: &str = "witness.example/w1";

fn checkpoint(size: u64) -> Checkpoint {
    let leaves: Vec<TreeHash> = (0..size).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    Checkpoint::new(ORIGIN, size, tree_root(&leaves[..], size).expect("root")).expect("checkpoint")
}

fn log_signed(checkpoint: &Checkpoint) -> SignedNote {
    let key = SigningKey::from_seed(&[1; 32]);
    checkpoint
        .sign(&NoteSigner::new(ORIGIN, &key).expect("signer"))
        .expect("sign")
}

#[test]
fn a_cosignature_round_trips_through_the_note_text() {
    let key = SigningKey::from_seed(&[7; 32]);
    let cosigner = Cosigner::new(WITNESS, &key).expect("cosigner");
    let cp = checkpoint(5);
    let mut note = log_signed(&cp);
    let sig = cosigner.cosign(&cp, 1_700_000_000).expect("cosign");
    assert_eq!(sig.signature().len(), COSIGNATURE_V1_LEN);
    note.add_signature(sig).expect("add");
    let reread = SignedNote::parse(note.to_string().as_bytes()).expect("reparse");
    let witness = cosigner.verifier();
    assert_eq!(witness.verify_note(&reread), Ok(Some(1_700_000_000)));
    // Published as a vkey, read back, it still verifies.
    let published = CosignatureVerifier::from_vkey(&witness.to_vkey()).expect("vkey");
    assert_eq!(published.verify_note(&reread), Ok(Some(1_700_000_000)));
}

#[test]
fn a_cosignature_covers_extension_lines() {
    let key = SigningKey::from_seed(&[7; 32]);
    let cosigner = Cosigner::new(WITNESS, &key).expect("cosigner");
    let cp = checkpoint(3).with_extension("ext one").expect("ext");
    let sig = cosigner.cosign(&cp, 5).expect("cosign");
    let witness = cosigner.verifier();
    assert_eq!(witness.verify(&cp.to_string(), &sig), Ok(5));
    let changed = checkpoint(3).with_extension("ext two").expect("ext");
    assert!(matches!(
        witness.verify(&changed.to_string(), &sig),
        Err(CosignatureError::BadSignature { .. })
    ));
}

#[test]
fn a_note_without_the_witness_has_no_cosignature_and_a_forged_one_is_refused() {
    let key = SigningKey::from_seed(&[7; 32]);
    let cosigner = Cosigner::new(WITNESS, &key).expect("cosigner");
    let witness = cosigner.verifier().clone();
    let cp = checkpoint(4);
    let mut note = log_signed(&cp);
    assert_eq!(witness.verify_note(&note), Ok(None));
    assert_eq!(
        cosigned_by(&note, std::slice::from_ref(&witness)),
        Ok(vec![])
    );

    // Under the witness's name and id, but made by another key.
    let other = SigningKey::from_seed(&[8; 32]);
    let forged = Cosigner::new(WITNESS, &other)
        .expect("cosigner")
        .cosign(&cp, 9)
        .expect("cosign");
    let forged = NoteSignature::new(WITNESS, witness.key_id(), forged.signature().to_vec())
        .expect("signature");
    note.add_signature(forged).expect("add");
    assert_eq!(
        witness.verify_note(&note),
        Err(CosignatureError::BadSignature {
            name: WITNESS.to_owned(),
            id: witness.key_id(),
        })
    );
}

#[test]
fn a_log_signature_is_not_a_cosignature_even_with_the_same_key() {
    let key = SigningKey::from_seed(&[7; 32]);
    let cp = checkpoint(2);
    // The witness key signing the checkpoint as a note key: another key id, not counted.
    let note = cp
        .sign(&NoteSigner::new(WITNESS, &key).expect("signer"))
        .expect("sign");
    let witness = Cosigner::new(WITNESS, &key)
        .expect("cosigner")
        .verifier()
        .clone();
    assert_eq!(witness.verify_note(&note), Ok(None));
    assert!(matches!(
        witness.verify(note.text(), &note.signatures()[0]),
        Err(CosignatureError::OtherKey { .. })
    ));
}

#[test]
fn timestamps_out_of_range_are_refused() {
    let key = SigningKey::from_seed(&[7; 32]);
    let cosigner = Cosigner::new(WITNESS, &key).expect("cosigner");
    let cp = checkpoint(1);
    for t in [0, MAX_TIMESTAMP + 1, u64::MAX] {
        assert_eq!(
            cosigner.cosign(&cp, t),
            Err(CosignatureError::BadTimestamp(t))
        );
    }
    assert!(cosigner.cosign(&cp, MAX_TIMESTAMP).is_ok());
    // A received one past 2^63 - 1 is refused before any signature check.
    let mut bytes = vec![0xff; 8];
    bytes.extend_from_slice(&[0; 64]);
    let sig = NoteSignature::new(WITNESS, cosigner.verifier().key_id(), bytes).expect("sig");
    assert_eq!(
        cosigner.verifier().verify(&cp.to_string(), &sig),
        Err(CosignatureError::BadTimestamp(u64::MAX))
    );
}

#[test]
fn a_bad_witness_name_is_refused() {
    let key = SigningKey::from_seed(&[7; 32]);
    assert!(matches!(
        Cosigner::new("has space", &key),
        Err(KeyError::BadName { .. })
    ));
}

proptest! {
    #[test]
    fn any_time_and_size_round_trip(t in 1..=MAX_TIMESTAMP, size in 0u64..40, seed: [u8; 32]) {
        let key = SigningKey::from_seed(&seed);
        let cosigner = Cosigner::new(WITNESS, &key).expect("cosigner");
        let cp = checkpoint(size);
        let sig = cosigner.cosign(&cp, t).expect("cosign");
        prop_assert_eq!(cosigner.verifier().verify(&cp.to_string(), &sig), Ok(t));
        prop_assert_eq!(cosignature_timestamp(&sig), Ok(t));
    }
}
