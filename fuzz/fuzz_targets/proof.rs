//! Feeds arbitrary bytes to `enforcer proof verify`'s checker. Proof files come from hosts
//! the verifier does not trust, so any panic is a bug: a proof must only ever be proven or
//! refused with a reason.
//!
//! The host key and trust store are the ones that made the seeds (`write_log` in
//! `enforcer/src/audit/proof/tests.rs`: host key seed 9, bundle keys seeds 1 to 3,
//! threshold 2): `allowed-exec.json` from a format-2 log (SHA3-512 record hashes),
//! `allowed-exec-format3.json` from a format-3 one (leaf hashes). Mutations of either
//! reach past the checkpoint signature into the record, the inclusion proof and the
//! artifact checks.
#![no_main]

use std::sync::LazyLock;

use enforcer::audit::proof::verify_proof;
use enforcer::authz::trust::{Role, SigningKey, Thresholds, TrustStore, TrustedKey};
use libfuzzer_sys::fuzz_target;

static HOST: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::from_seed(&[9; 32]));

static TRUST: LazyLock<TrustStore> = LazyLock::new(|| {
    // As the test kit's store: keys 1 to 3 sign bundles, key 4 revocations.
    let keys = (1..=4u8).map(|n| {
        let role = if n == 4 { Role::Revocation } else { Role::Bundle };
        TrustedKey::new(
            format!("k{n}"),
            SigningKey::from_seed(&[n; 32]).public_key(),
            vec![role],
        )
    });
    TrustStore::new(keys, Thresholds { bundle: 2, revocation: 1 }).expect("trust store")
});

fuzz_target!(|data: &[u8]| {
    match verify_proof(data, &HOST.public_key(), &TRUST, &[]) {
        // What is proven can always be said.
        Ok(proven) => drop(proven.to_string()),
        Err(e) => drop((e.code(), e.to_string())),
    }
});
