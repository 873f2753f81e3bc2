//! Feeds arbitrary bytes to every parser an artifact goes through (bundle, revocation and
//! break-glass), and to the verifier.
//! Any panic is a bug: untrusted input must only ever be refused. What parses must
//! serialise back to something that parses to the same value.
#![no_main]

use std::sync::LazyLock;

use enforcer::authz::artifact::{BreakGlass, Bundle, Envelope, Revocation, from_unix_seconds};
use enforcer::authz::trust::TrustStore;
use enforcer::authz::verify::{RevocationSet, Verifier};
use libfuzzer_sys::fuzz_target;

/// Trusts the example trust store, so the seeds (the signed examples in policies/) reach
/// past the signature checks into the payload parsers.
static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| {
    let trust = TrustStore::from_toml(include_str!("../../policies/trust.toml"))
        .expect("policies/trust.toml parses");
    Verifier::new(trust)
});

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::parse(data) {
        let again = Envelope::parse(&envelope.to_bytes()).expect("a parsed envelope re-parses");
        assert_eq!(again, envelope);
        check_payloads(&envelope.payload);
    }
    check_payloads(data);
    let now = from_unix_seconds(1_800_000_000);
    let _ = VERIFIER.verify_bundle(data, now, &RevocationSet::new());
    let _ = VERIFIER.verify_revocation(data, &RevocationSet::new());
    // The break-glass seed's window contains `now`, so mutations of it reach every check.
    let _ = VERIFIER.verify_break_glass(data, now, &RevocationSet::new());
});

fn check_payloads(payload: &[u8]) {
    if let Ok(bundle) = Bundle::from_payload(payload) {
        let bytes = bundle.to_payload().expect("a parsed bundle serialises");
        assert_eq!(Bundle::from_payload(&bytes).expect("and re-parses"), bundle);
    }
    if let Ok(revocation) = Revocation::from_payload(payload) {
        let bytes = revocation.to_payload().expect("a parsed revocation serialises");
        assert_eq!(Revocation::from_payload(&bytes).expect("and re-parses"), revocation);
    }
    if let Ok(break_glass) = BreakGlass::from_payload(payload) {
        let bytes = break_glass.to_payload().expect("a parsed break-glass serialises");
        assert_eq!(BreakGlass::from_payload(&bytes).expect("and re-parses"), break_glass);
    }
}
