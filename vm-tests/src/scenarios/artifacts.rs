//! Signed artifacts through `enforcer load --trust`: bundles created from binaries and
//! signed by two people grant; a declared scope no bundle covers denies everything; a
//! bundle with too few signatures or a changed byte is refused by name and grants nothing;
//! a revocation withdraws a bundle and leaves its scope governed.

use std::path::{Path, PathBuf};

use vm_tests::PROBE_EXIT;

use crate::support::run::{enforcer_ok, expect_eperm, expect_exit};
use crate::support::signed::{POLICIES, copy_test_keys, signed_revocation};
use crate::support::{Env, WORK};

pub(super) const SCENARIOS: &[super::Scenario] =
    scenarios![signed_bundles_grant_and_refusals_are_named];

fn signed_bundles_grant_and_refusals_are_named(env: &Env) {
    let work = Path::new(WORK).join("signed");
    let policies = Path::new(POLICIES);
    let keys = work.join("keys");
    copy_test_keys(&keys);
    let key = |who: &str| keys.join(format!("{who}.key")).display().to_string();
    let trust = policies.join("trust.toml").display().to_string();
    let state = work.join("state").display().to_string();
    let path = |p: PathBuf| p.display().to_string();
    let (good, bad, revoked) = (
        work.join("good"),
        work.join("bad"),
        work.join("revocations"),
    );
    for d in [&good, &bad, &revoked] {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
    }
    // The security team's workflow: create from the binaries (with their libraries), sign
    // by two people.
    let closure = enforcer::host::elf::with_dependencies(std::slice::from_ref(&env.probe))
        .unwrap_or_else(|e| panic!("libraries of {}: {e}", env.probe.display()));
    let create = |serial: &str, out: &str| {
        let mut args = vec![
            "bundle",
            "create",
            "--issuer",
            "vm",
            "--bundle-id",
            "vmtest",
            "--serial",
            serial,
        ];
        args.extend([
            "--scope",
            "/vmtest-signed",
            "--valid-for",
            "1h",
            "--out",
            out,
        ]);
        let files: Vec<String> = closure.iter().map(|p| p.display().to_string()).collect();
        for f in &files {
            args.extend(["--file", f.as_str()]);
        }
        enforcer_ok(env, &args);
    };
    let bundle = path(good.join("bundle.json"));
    create("1", &bundle);
    enforcer_ok(env, &["bundle", "sign", "--key", &key("alice"), &bundle]);
    enforcer_ok(env, &["bundle", "sign", "--key", &key("bob"), &bundle]);
    let load = |dirs: &[&PathBuf]| {
        let mut args = vec![
            "load".to_string(),
            "--trust".into(),
            trust.clone(),
            "--state-dir".into(),
            state.clone(),
        ];
        args.extend(
            [
                "--scope",
                "/vmtest-signed",
                "--scope",
                "/vmtest-signed-empty",
            ]
            .map(String::from),
        );
        for d in dirs {
            args.extend(["--artifacts".to_string(), path((*d).clone())]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        enforcer_ok(env, &args)
    };
    load(&[&good]);
    expect_exit(Some("vmtest-signed"), &env.probe, PROBE_EXIT);
    expect_eperm(Some("vmtest-signed"), &env.unlisted);
    // Declared, and no bundle covers it: everything is denied.
    expect_eperm(Some("vmtest-signed-empty"), &env.probe);

    // Refusals name the file and the problem, and grant nothing; the good bundle holds.
    let one_signature = path(bad.join("one-signature.json"));
    create("2", &one_signature);
    enforcer_ok(
        env,
        &["bundle", "sign", "--key", &key("alice"), &one_signature],
    );
    let mut tampered = std::fs::read(&bundle).expect("read the good bundle");
    let at = tampered.len() / 2;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    std::fs::write(bad.join("tampered.json"), tampered).expect("write the tampered bundle");
    let out = load(&[&good, &bad]);
    for name in ["one-signature.json", "tampered.json"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("refused:") && l.contains(name)),
            "no refusal named {name}:\n{out}"
        );
    }
    expect_exit(Some("vmtest-signed"), &env.probe, PROBE_EXIT);

    // A revocation signed by carol withdraws the bundle: its scope stays governed.
    let revocation = path(revoked.join("vmtest.json"));
    signed_revocation(env, &revocation, "vmtest", &key("carol"));
    load(&[&good, &revoked]);
    expect_eperm(Some("vmtest-signed"), &env.probe);
}
