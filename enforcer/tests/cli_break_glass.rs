//! `enforcer break-glass`, run as an on-call person would: the built binary, through
//! create, sign, verify and inspect, and the refusals a person can run into on the way.

// The package's dependencies are the library's; this target uses only a few of them.
#![allow(unused_crate_dependencies)]

mod common;

use std::path::PathBuf;

use common::Run;

/// SHA-256 of "abc", for a bundle that needs no file.
const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

/// A scratch directory with keys and a trust store: alice signs bundles, carol signs
/// revocations and break-glass artifacts (one of each needed), windows of at most 2h.
struct Desk {
    dir: tempfile::TempDir,
}

impl Desk {
    fn new() -> Self {
        let desk = Self {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        std::fs::create_dir(desk.path("keys")).expect("mkdir keys");
        let mut keys = String::new();
        for (name, roles) in [
            ("alice", r#"["bundle"]"#),
            ("carol", r#"["revocation", "break-glass"]"#),
        ] {
            desk.ok(&["key", "generate", "--out", &format!("keys/{name}")]);
            let public =
                std::fs::read_to_string(desk.path(&format!("keys/{name}.pub"))).expect("pub");
            keys.push_str(&format!(
                "[[keys]]\nname = \"{name}\"\npublic_key = \"{}\"\nroles = {roles}\n",
                public.trim()
            ));
        }
        desk.trust_store(
            "trust.toml",
            "break_glass = 1\n[break_glass]\nmax_duration = \"2h\"\n",
            &keys,
        );
        desk.trust_store("no-break-glass.toml", "", &keys);
        desk
    }

    fn trust_store(&self, name: &str, extra: &str, keys: &str) {
        let text = format!("version = 1\n[thresholds]\nbundle = 1\nrevocation = 1\n{extra}{keys}");
        std::fs::write(self.path(name), text).expect("trust store");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Run {
        common::enforcer(self.dir.path(), args)
    }

    fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(
            run.code, 0,
            "enforcer {args:?} failed:\n{}{}",
            run.stdout, run.stderr
        );
        run
    }

    /// Expects a non-zero exit with `needle` in stderr: 1 for refusals, 2 for clap's
    /// argument errors.
    fn refused(&self, args: &[&str], needle: &str) -> Run {
        let run = self.run(args);
        assert_ne!(
            run.code, 0,
            "enforcer {args:?} should fail:\n{}{}",
            run.stdout, run.stderr
        );
        assert!(
            run.stderr.contains(needle),
            "enforcer {args:?}: want {needle:?} in:\n{}",
            run.stderr
        );
        run
    }

    /// An unsigned break-glass for /agents.slice from 2030-01-01T08:00Z, lasting `length`.
    fn create(&self, out: &str, length: &str) -> Run {
        self.ok(&[
            "break-glass",
            "create",
            "--issuer",
            "oncall",
            "--scope",
            "/agents.slice",
            "--not-before",
            "2030-01-01T08:00:00Z",
            "--valid-for",
            length,
            "--reason",
            "INC-42: agents cannot run the deploy tool",
            "--out",
            out,
            "--force",
        ])
    }

    fn key_id(&self, name: &str) -> String {
        let run = self.ok(&["key", "show", &format!("keys/{name}.pub")]);
        let line = run.stdout.lines().next().expect("key id line");
        line.trim_start_matches("key id:").trim().to_owned()
    }
}

/// Inside the 2030-01-01T08:00Z window [`Desk::create`] makes.
const DURING: &str = "2030-01-01T08:30:00Z";

#[test]
fn create_sign_verify_inspect_round_trip() {
    let desk = Desk::new();
    let created = desk.create("bg.json", "1h");
    assert!(
        created.stdout.starts_with("wrote unsigned break-glass "),
        "{}",
        created.stdout
    );
    assert!(
        created.stdout.contains("next: enforcer break-glass sign"),
        "{}",
        created.stdout
    );

    let verify = [
        "break-glass",
        "verify",
        "--trust",
        "trust.toml",
        "--at",
        DURING,
        "bg.json",
    ];
    desk.refused(
        &verify,
        "not enough signatures: 0 valid from distinct keys with the break-glass role, 1 required",
    );
    // A key without the role can sign, but its signature does not count.
    desk.ok(&["break-glass", "sign", "--key", "keys/alice.key", "bg.json"]);
    desk.refused(
        &verify,
        "0 valid from distinct keys with the break-glass role",
    );
    let signed = desk.ok(&["break-glass", "sign", "--key", "keys/carol.key", "bg.json"]);
    assert!(
        signed
            .stdout
            .contains("reason       INC-42: agents cannot run the deploy tool"),
        "{}",
        signed.stdout
    );
    let ok = desk.ok(&verify);
    assert!(
        ok.stdout
            .starts_with("OK: break-glass from \"oncall\" (artifact "),
        "{}",
        ok.stdout
    );
    assert!(ok.stdout.contains("carol ("), "{}", ok.stdout);
    assert!(
        ok.stdout.contains("monitor mode in /agents.slice"),
        "{}",
        ok.stdout
    );
    assert!(
        ok.stdout.contains("valid until 2030-01-01T09:00:00Z"),
        "{}",
        ok.stdout
    );

    let inspect = desk.ok(&["break-glass", "inspect", "bg.json"]);
    for needle in [
        "break-glass from \"oncall\"",
        "valid from   2030-01-01T08:00:00Z",
        "lasts        1h",
        "monitor in   /agents.slice",
        "signatures   2",
    ] {
        assert!(
            inspect.stdout.contains(needle),
            "{needle}: {}",
            inspect.stdout
        );
    }
    let json = desk.ok(&["break-glass", "inspect", "--json", "bg.json"]);
    let json: serde_json::Value =
        serde_json::from_str(&json.stdout).expect("inspect --json prints JSON");
    assert_eq!(json["kind"], "break-glass");
    assert_eq!(
        json["payload_type"],
        "application/vnd.enforcer.break-glass.v1+json"
    );
    assert_eq!(
        json["payload"]["not_after"],
        json["payload"]["not_before"].as_u64().expect("u64") + 3600
    );
    assert_eq!(
        json["payload"]["scopes"],
        serde_json::json!(["/agents.slice"])
    );
    assert_eq!(
        json["payload"]["reason"],
        "INC-42: agents cannot run the deploy tool"
    );
    assert_eq!(json["signatures"].as_array().expect("signatures").len(), 2);
    let id = json["id"].as_str().expect("id");
    assert!(
        ok.stdout.contains(id),
        "verify and inspect cite the same artifact id"
    );

    // Outside its window it grants nothing.
    desk.refused(
        &[
            "break-glass",
            "verify",
            "--trust",
            "trust.toml",
            "--at",
            "2030-01-01T09:05:00Z",
            "bg.json",
        ],
        "expired: valid until 2030-01-01T09:00:00Z",
    );
    desk.refused(
        &[
            "break-glass",
            "verify",
            "--trust",
            "trust.toml",
            "--at",
            "2030-01-01T07:00:00Z",
            "bg.json",
        ],
        "not yet valid: valid from 2030-01-01T08:00:00Z",
    );
}

#[test]
fn the_trust_store_decides_whether_and_for_how_long() {
    let desk = Desk::new();
    desk.create("bg.json", "1h");
    desk.ok(&["break-glass", "sign", "--key", "keys/carol.key", "bg.json"]);
    desk.refused(
        &["break-glass", "verify", "--trust", "no-break-glass.toml", "--at", DURING, "bg.json"],
        "refused: break-glass bg.json: no break-glass artifact is accepted: the trust store sets no break-glass threshold",
    );

    // Three hours: the default maximum (4h) would allow it, this trust store (2h) does not.
    let created = desk.create("long.json", "3h");
    assert!(!created.stderr.contains("note:"), "{}", created.stderr);
    desk.ok(&[
        "break-glass",
        "sign",
        "--key",
        "keys/carol.key",
        "long.json",
    ]);
    desk.refused(
        &["break-glass", "verify", "--trust", "trust.toml", "--at", DURING, "long.json"],
        "window too long: valid for 3h (from 2030-01-01T08:00:00Z to 2030-01-01T11:00:00Z), but a break-glass may be valid for at most 2h",
    );
}

#[test]
fn a_break_glass_is_revoked_like_any_artifact() {
    let desk = Desk::new();
    desk.create("bg.json", "1h");
    desk.ok(&["break-glass", "sign", "--key", "keys/carol.key", "bg.json"]);
    let json = desk.ok(&["break-glass", "inspect", "--json", "bg.json"]);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    let id = json["id"].as_str().expect("id").to_owned();

    desk.ok(&[
        "revoke",
        "create",
        "--issuer",
        "sec",
        "--artifact",
        &id,
        "--reason",
        "over",
        "--out",
        "r.json",
    ]);
    desk.ok(&["revoke", "sign", "--key", "keys/carol.key", "r.json"]);
    desk.refused(
        &[
            "break-glass",
            "verify",
            "--trust",
            "trust.toml",
            "--at",
            DURING,
            "--revocation",
            "r.json",
            "bg.json",
        ],
        &format!("revoked artifact: {id} is revoked"),
    );

    let carol = desk.key_id("carol");
    desk.ok(&[
        "revoke", "create", "--issuer", "sec", "--key-id", &carol, "--out", "rk.json",
    ]);
    desk.ok(&["revoke", "sign", "--key", "keys/carol.key", "rk.json"]);
    desk.refused(
        &[
            "break-glass",
            "verify",
            "--trust",
            "trust.toml",
            "--at",
            DURING,
            "--revocation",
            "rk.json",
            "bg.json",
        ],
        &format!("signature by revoked key {carol}"),
    );
}

/// `break-glass create --issuer oncall --out bg.json` and `extra`, split on whitespace.
fn create_args(extra: &str) -> Vec<&str> {
    let mut args = vec![
        "break-glass",
        "create",
        "--issuer",
        "oncall",
        "--out",
        "bg.json",
    ];
    args.extend(extra.split_whitespace());
    args
}

#[test]
fn bad_break_glass_requests_are_explained() {
    let desk = Desk::new();
    // Arguments after `break-glass create --issuer oncall --out bg.json --force`, split on
    // whitespace (no value here has a space), each with what the refusal must say.
    let cases = [
        ("--scope /agents.slice --valid-for 1h", "--reason <REASON>"),
        ("--valid-for 1h --reason INC-42", "--scope <CGROUP>"),
        (
            "--scope /a --scope /a --valid-for 1h --reason INC-42",
            "invalid scopes: /a is listed twice",
        ),
        (
            "--scope / --valid-for 1h --reason INC-42",
            "the root cgroup cannot be a scope",
        ),
        (
            "--scope /a --reason INC-42 --not-before 2030-01-02T00:00:00Z --not-after 2030-01-01T00:00:00Z",
            "a break-glass window cannot be empty or inverted",
        ),
        (
            "--scope /a --reason INC-42 --valid-for 8days",
            "would be refused by every trust store: the longest any may allow is 7days",
        ),
    ];
    for (extra, needle) in cases {
        desk.refused(&create_args(extra), needle);
    }
    let mut blank = create_args("--scope /a --valid-for 1h");
    blank.extend(["--reason", " "]);
    desk.refused(&blank, "invalid reason: must not be empty");
    assert!(
        !desk.path("bg.json").exists(),
        "nothing written for a refused request"
    );

    // Longer than the default maximum: written, with a note saying who will refuse it.
    let long = desk.ok(&create_args("--scope /a --reason INC-42 --valid-for 6h"));
    assert!(
        long.stderr
            .contains("note: valid for 6h: refused by trust stores that keep the default"),
        "{}",
        long.stderr
    );

    // The wrong command for the kind of artifact is refused before anything is signed.
    desk.refused(
        &["bundle", "sign", "--key", "keys/alice.key", "bg.json"],
        "is a break-glass, not a bundle: use `enforcer break-glass`",
    );
    let bundle = format!(
        "bundle create --issuer ops --bundle-id b --serial 1 --scope /a --valid-for 1h \
         --digest {ABC} --out b.json"
    );
    desk.ok(&bundle.split_whitespace().collect::<Vec<_>>());
    desk.refused(
        &["break-glass", "inspect", "b.json"],
        "is a bundle, not a break-glass: use `enforcer bundle`",
    );
}
