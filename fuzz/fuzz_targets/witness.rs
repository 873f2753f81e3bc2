//! Feeds arbitrary bytes to the witness protocol's parsers, both ends: the add-checkpoint
//! request a witness reads from anyone who reaches its port, and the answers (cosignature
//! lines, a 409's size) a log reads from a witness, and witness vkeys. Any panic is a
//! bug: untrusted input must only ever be refused. What parses must write back to bytes
//! that parse to the same value.
#![no_main]

use enforcer::audit::tlog::{CosignatureVerifier, cosignature_timestamp};
use enforcer::witness::AddCheckpoint;
use enforcer::witness::protocol::{
    cosignatures_body, parse_cosignatures_body, parse_size_body, size_body,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = AddCheckpoint::parse(data) {
        let body = AddCheckpoint::encode(request.old_size, &request.proof, &request.note);
        let again = AddCheckpoint::parse(body.as_bytes()).expect("a parsed request re-parses");
        assert_eq!(again, request);
    }
    if let Ok(lines) = parse_cosignatures_body(data) {
        let again = parse_cosignatures_body(cosignatures_body(&lines).as_bytes())
            .expect("parsed cosignature lines re-parse");
        assert_eq!(again, lines);
        for line in &lines {
            let _ = cosignature_timestamp(line);
        }
    }
    if let Ok(size) = parse_size_body(data) {
        assert_eq!(size_body(size).as_bytes(), data, "one spelling per size");
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(key) = CosignatureVerifier::from_vkey(text)
    {
        let again = CosignatureVerifier::from_vkey(&key.to_vkey()).expect("a vkey re-parses");
        assert_eq!(again, key);
    }
});
