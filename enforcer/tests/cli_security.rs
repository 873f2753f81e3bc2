//! The security team's command line, run as a person would: the built binary, through
//! key generation, bundle creation, k-of-n signing, verification and revocation.

// The package's dependencies are the library's; this target uses only a few of them.
#![allow(unused_crate_dependencies)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

mod common;

use common::Run;

/// Runs `enforcer` with `args` in `dir`, recording every output so tests can check that
/// no private key was ever printed.
struct Cli {
    dir: tempfile::TempDir,
    transcript: String,
}

impl Cli {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            transcript: String::new(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `enforcer` with the whitespace-separated arguments of `line` (tests use no
    /// arguments with spaces).
    fn run(&mut self, line: &str) -> Run {
        let run = common::enforcer(self.dir.path(), line.split_whitespace());
        self.transcript.push_str(&run.stdout);
        self.transcript.push_str(&run.stderr);
        run
    }

    /// Runs and expects success.
    fn ok(&mut self, line: &str) -> Run {
        let run = self.run(line);
        assert_eq!(
            run.code, 0,
            "enforcer {line} failed:\n{}{}",
            run.stdout, run.stderr
        );
        run
    }

    /// Runs and expects exit code 1 with `needle` in stderr.
    fn refused(&mut self, line: &str, needle: &str) -> Run {
        let run = self.run(line);
        assert_eq!(
            run.code, 1,
            "enforcer {line} should fail:\n{}{}",
            run.stdout, run.stderr
        );
        assert!(
            run.stderr.contains(needle),
            "enforcer {line}: want {needle:?} in:\n{}",
            run.stderr
        );
        run
    }

    /// `bundle inspect --json` of `artifact`, parsed.
    fn inspect_json(&mut self, artifact: &str) -> serde_json::Value {
        let run = self.ok(&format!("bundle inspect --json {artifact}"));
        serde_json::from_str(&run.stdout).expect("inspect --json prints JSON")
    }

    /// Generates keys and a trust store: alice and bob sign bundles (2 of 2 needed), carol
    /// signs revocations.
    fn with_keys(&mut self, bundle_threshold: usize) {
        std::fs::create_dir(self.path("keys")).expect("mkdir");
        let mut trust =
            format!("version = 1\n[thresholds]\nbundle = {bundle_threshold}\nrevocation = 1\n");
        for (name, role) in [
            ("alice", "bundle"),
            ("bob", "bundle"),
            ("carol", "revocation"),
        ] {
            let run = self.ok(&format!("key generate --out keys/{name}"));
            assert!(run.stdout.contains("key id"), "{}", run.stdout);
            let public =
                std::fs::read_to_string(self.path(&format!("keys/{name}.pub"))).expect("pub");
            trust.push_str(&format!(
                "[[keys]]\nname = \"{name}\"\npublic_key = \"{}\"\nroles = [\"{role}\"]\n",
                public.trim()
            ));
        }
        std::fs::write(self.path("trust.toml"), trust).expect("trust store");
    }

    /// Creates an unsigned bundle granting a program made for the test.
    fn create_bundle(&mut self, serial: &str) {
        std::fs::write(self.path("tool"), b"#!/bin/sh\necho tool\n").expect("tool");
        self.ok(&format!(
            "bundle create --issuer ops --bundle-id agents-base --serial {serial} \
             --scope /agents.slice --valid-for 8h --file tool \
             --digest sha256:{ABC},name=abc,valid-for=1h --out bundle.json --force"
        ));
    }

    /// The base64 secrets of every generated private key.
    fn secrets(&self) -> Vec<String> {
        ["alice", "bob", "carol"]
            .iter()
            .map(|name| {
                let text =
                    std::fs::read_to_string(self.path(&format!("keys/{name}.key"))).expect("key");
                let line = text
                    .lines()
                    .find(|l| l.starts_with("ed25519-private:"))
                    .expect("key line");
                line["ed25519-private:".len()..].to_owned()
            })
            .collect()
    }
}

/// SHA-256 of "abc", a digest for grants that need no file.
const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn two_of_two_signing_flow() {
    let mut cli = Cli::new();
    cli.with_keys(2);
    for name in ["alice", "bob", "carol"] {
        assert_eq!(
            mode(&cli.path(&format!("keys/{name}.key"))),
            0o600,
            "{name}.key"
        );
    }
    cli.create_bundle("1");
    let verify = "bundle verify --trust trust.toml bundle.json";
    cli.refused(verify, "not enough signatures: 0 valid");

    cli.ok("bundle sign --key keys/alice.key bundle.json");
    cli.refused(
        verify,
        "not enough signatures: 1 valid from distinct keys with the bundle role, 2 required",
    );

    // Signing twice with one key adds nothing and still counts once.
    let again = cli.ok("bundle sign --key keys/alice.key bundle.json");
    assert!(again.stdout.contains("already signed"), "{}", again.stdout);
    cli.refused(verify, "1 valid");

    // A key without the bundle role does not count.
    cli.ok("bundle sign --key keys/carol.key bundle.json");
    cli.refused(verify, "1 valid");

    cli.ok("bundle sign --key keys/bob.key bundle.json");
    let ok = cli.ok(verify);
    assert!(
        ok.stdout.starts_with("OK: bundle \"agents-base\" serial 1"),
        "{}",
        ok.stdout
    );
    assert!(
        ok.stdout.contains("alice (") && ok.stdout.contains("bob ("),
        "{}",
        ok.stdout
    );

    let inspect = cli.ok("bundle inspect bundle.json");
    assert!(
        inspect.stdout.contains("scopes       /agents.slice"),
        "{}",
        inspect.stdout
    );
    assert!(
        inspect.stdout.contains("  tool"),
        "grant named after its path: {}",
        inspect.stdout
    );
    assert!(
        inspect.stdout.contains("abc  (until "),
        "{}",
        inspect.stdout
    );
    let json = cli.inspect_json("bundle.json");
    assert_eq!(json["payload"]["serial"], 1);
    assert_eq!(json["signatures"].as_array().expect("signatures").len(), 3);
    let id = json["id"].as_str().expect("id");
    assert!(
        ok.stdout.contains(id),
        "verify and inspect cite the same artifact id"
    );

    // Tampering with the signed file is refused.
    let mut bytes = std::fs::read(cli.path("bundle.json")).expect("read");
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    std::fs::write(cli.path("tampered.json"), bytes).expect("write");
    let tampered = cli.run("bundle verify --trust trust.toml tampered.json");
    assert_eq!(tampered.code, 1, "{}", tampered.stderr);
    assert!(
        tampered
            .stderr
            .starts_with("refused: bundle tampered.json: "),
        "{}",
        tampered.stderr
    );

    // Out of its window, a signed bundle is refused too.
    cli.refused(
        "bundle verify --trust trust.toml --at 2099-01-01T00:00:00Z bundle.json",
        "expired: valid until",
    );

    for secret in cli.secrets() {
        assert!(
            !cli.transcript.contains(&secret),
            "a private key was printed"
        );
    }
}

#[test]
fn revocations_withdraw_bundles() {
    let mut cli = Cli::new();
    cli.with_keys(1);
    cli.create_bundle("1");
    cli.ok("bundle sign --key keys/alice.key bundle.json");
    cli.ok("bundle verify --trust trust.toml bundle.json");

    cli.ok("revoke create --issuer sec --bundle-id agents-base --reason test --out r.json");
    // A key with only the bundle role can sign, but its signature does not count.
    cli.ok("revoke sign --key keys/alice.key r.json");
    cli.refused(
        "revoke verify --trust trust.toml r.json",
        "with the revocation role",
    );
    cli.ok("revoke sign --key keys/carol.key r.json");
    cli.ok("revoke verify --trust trust.toml r.json");
    let inspect = cli.ok("revoke inspect r.json");
    assert!(
        inspect
            .stdout
            .contains("revokes      bundle id \"agents-base\""),
        "{}",
        inspect.stdout
    );

    cli.refused(
        "bundle verify --trust trust.toml --revocation r.json bundle.json",
        "revoked bundle: bundle id \"agents-base\"",
    );

    // Revoking alice's key withdraws everything she signed.
    let alice = cli.ok("key show keys/alice.pub");
    let key_id = alice
        .stdout
        .lines()
        .next()
        .expect("line")
        .trim_start_matches("key id:")
        .trim()
        .to_owned();
    cli.ok(&format!(
        "revoke create --issuer sec --key-id {key_id} --out rk.json"
    ));
    cli.ok("revoke sign --key keys/carol.key rk.json");
    cli.refused(
        "bundle verify --trust trust.toml --revocation rk.json bundle.json",
        &format!("signature by revoked key {key_id}"),
    );

    // The wrong command for the kind of artifact is refused before anything is signed.
    let wrong = cli.run("bundle sign --key keys/alice.key r.json");
    assert_eq!(wrong.code, 1);
    assert!(
        wrong
            .stderr
            .contains("is a revocation, not a bundle: use `enforcer revoke`"),
        "{}",
        wrong.stderr
    );
}

#[test]
fn keys_are_never_overwritten_and_loose_permissions_are_refused() {
    let mut cli = Cli::new();
    cli.with_keys(1);
    let again = cli.run("key generate --out keys/alice");
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);

    cli.create_bundle("1");
    std::fs::set_permissions(
        cli.path("keys/alice.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    cli.refused("bundle sign --key keys/alice.key bundle.json", "chmod 600");
}

#[test]
fn state_directory_tells_whether_the_agent_would_accept() {
    let mut cli = Cli::new();
    cli.with_keys(1);
    cli.create_bundle("3");
    cli.ok("bundle sign --key keys/alice.key bundle.json");
    let run = cli.ok("bundle verify --trust trust.toml --state no-state-yet bundle.json");
    assert!(
        run.stdout.contains("would accept it as new"),
        "{}",
        run.stdout
    );
}

/// `--with-libraries` grants what a dynamically linked program maps, named so a signer
/// sees what they sign; scripts get a note, not their interpreter.
#[test]
fn with_libraries_grants_the_loader_and_libc() {
    let mut cli = Cli::new();
    std::fs::write(cli.path("tool"), b"#!/bin/sh\necho tool\n").expect("tool");
    let program = env!("CARGO_BIN_EXE_enforcer");
    let create = "bundle create --issuer ops --bundle-id libs --serial 1 --scope /agents.slice \
                  --valid-for 8h --out b.json --force";
    let run = cli.ok(&format!(
        "{create} --with-libraries --file {program},valid-for=1h"
    ));
    assert!(
        run.stdout
            .contains("for the dynamic loader and shared libraries of 1 file"),
        "{}",
        run.stdout
    );

    let json = cli.inspect_json("b.json");
    let grants = json["payload"]["grants"].as_array().expect("grants");
    let names: Vec<&str> = grants
        .iter()
        .map(|g| g["name"].as_str().expect("named"))
        .collect();
    assert_eq!(names[0], program, "the file first, under its own name");
    let file_name = |n: &&str| {
        Path::new(n)
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned()
    };
    for prefix in ["ld-linux", "libc.so"] {
        assert!(
            names.iter().any(|n| file_name(n).starts_with(prefix)),
            "{prefix}: {names:?}"
        );
    }
    let file_not_after = &grants[0]["not_after"];
    assert!(file_not_after.is_u64(), "{grants:?}");
    assert!(
        grants.iter().all(|g| &g["not_after"] == file_not_after),
        "libraries share the expiry"
    );

    let inspect = cli.ok("bundle inspect b.json");
    assert!(inspect.stdout.contains("libc.so"), "{}", inspect.stdout);
    assert!(
        inspect.stdout.contains("opt-ins      none"),
        "{}",
        inspect.stdout
    );

    // Without the flag, only the file itself.
    cli.ok(&format!("{create} --file {program}"));
    assert_eq!(
        cli.inspect_json("b.json")["payload"]["grants"]
            .as_array()
            .expect("grants")
            .len(),
        1
    );

    // A script brings no interpreter, and the person is told so.
    let run = cli.ok(&format!("{create} --with-libraries --file tool"));
    assert!(
        run.stderr
            .contains("tool is a script: its interpreter /bin/sh is not added"),
        "{}",
        run.stderr
    );
    assert_eq!(
        cli.inspect_json("b.json")["payload"]["grants"]
            .as_array()
            .expect("grants")
            .len(),
        1
    );
}

/// The JIT opt-ins are signed like everything else in the bundle, and shown to signers.
/// A copy of `elf` (a 64-bit ELF file) whose first executable loadable segment is
/// `extra` bytes longer in memory than in the file.
fn with_executable_zero_fill(elf: &Path, out: &Path, extra: u64) {
    let mut bytes = std::fs::read(elf).expect("read the program");
    let field = |b: &[u8], at: usize, n: usize| -> u64 {
        b[at..at + n]
            .iter()
            .rev()
            .fold(0, |v, byte| (v << 8) | u64::from(*byte))
    };
    let phoff = usize::try_from(field(&bytes, 32, 8)).expect("offset");
    let (size, count) = (
        usize::try_from(field(&bytes, 54, 2)).expect("size"),
        usize::try_from(field(&bytes, 56, 2)).expect("count"),
    );
    let header = (0..count)
        .map(|i| phoff + i * size)
        .find(|&h| field(&bytes, h, 4) == 1 && field(&bytes, h + 4, 4) & 1 != 0)
        .expect("an executable PT_LOAD segment");
    let memsz = field(&bytes, header + 40, 8) + extra;
    bytes[header + 40..header + 48].copy_from_slice(&memsz.to_le_bytes());
    std::fs::write(out, bytes).expect("write the copy");
}

#[test]
fn an_elf_file_whose_executable_segment_is_zero_filled_is_not_granted() {
    let mut cli = Cli::new();
    let program = env!("CARGO_BIN_EXE_enforcer");
    let create = "bundle create --issuer ops --bundle-id zf --serial 1 --scope /agents.slice \
                  --valid-for 8h --out b.json --force";
    // The program as built is granted.
    cli.ok(&format!("{create} --file {program}"));
    let odd = cli.path("odd");
    with_executable_zero_fill(Path::new(program), &odd, 0x10000);
    let run = cli.refused(
        &format!("{create} --file {}", odd.display()),
        "cannot be granted: its executable segment at",
    );
    assert!(
        run.stderr
            .contains("writable and executable memory that no rule can check"),
        "{}",
        run.stderr
    );
}

#[test]
fn opt_ins_are_signed_and_shown() {
    let mut cli = Cli::new();
    cli.with_keys(1);
    cli.ok(&format!(
        "bundle create --issuer ops --bundle-id jit --serial 1 --scope /jit.slice --valid-for 1h \
         --digest sha256:{ABC} --allow-anonymous-exec --allow-fileless --out b.json"
    ));
    cli.ok("bundle sign --key keys/alice.key b.json");
    cli.ok("bundle verify --trust trust.toml b.json");
    let inspect = cli.ok("bundle inspect b.json");
    assert!(
        inspect
            .stdout
            .contains("opt-ins      anonymous-exec, fileless"),
        "{}",
        inspect.stdout
    );
    let json = cli.inspect_json("b.json");
    assert_eq!(json["payload"]["allow_anonymous_exec"], true);
    assert_eq!(json["payload"]["allow_fileless"], true);
}

#[test]
fn bad_arguments_are_explained() {
    let mut cli = Cli::new();
    let create = "bundle create --issuer ops --bundle-id b --serial 1 --valid-for 1h --out b.json";
    let run = cli.run(&format!("{create} --scope /a/../b"));
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("invalid scope \"/a/../b\""),
        "{}",
        run.stderr
    );
    let run = cli.run(&format!(
        "{create} --scope /a --digest sha256:12,colour=red"
    ));
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("unknown grant option \"colour=red\""),
        "{}",
        run.stderr
    );
}

/// The examples in policies/ must keep verifying against the example trust store.
#[test]
fn policy_examples_verify() {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut cli = Cli::new();
    // The break-glass example's window is fixed and short by design: verified inside it.
    for (command, example, at) in [
        ("bundle", "demo-bundle.json", ""),
        ("revoke", "demo-revocation.json", ""),
        (
            "break-glass",
            "demo-break-glass.json",
            "--at 2027-01-15T08:00:00Z",
        ),
    ] {
        let line = format!(
            "{command} verify --trust {} {at} {}",
            policies.join("trust.toml").display(),
            policies.join("examples").join(example).display()
        );
        cli.ok(&line);
    }
}
