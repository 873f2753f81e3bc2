//! The security team's commands: signing keys, authorization bundles, revocations and
//! break-glass artifacts.
//!
//! The workflow they teach: each signer generates a key once; the trust store lists the
//! public keys, their roles and how many must sign; someone creates an unsigned artifact;
//! each signer adds a signature; anyone verifies it against the trust store before it is
//! handed to the agent. Only `create` differs between the kinds of artifact: `sign`,
//! `verify` and `inspect` are one piece of code ([`ArtifactCommand`]) over all of them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

use crate::artifact::{
    ArtifactError, ArtifactId, ArtifactKind, BreakGlass, Bundle, CgroupScope, Envelope, Grant,
    Mode, OnRevoke, Revocation, RevocationTarget, format_time, from_unix_seconds, unix_seconds,
};
use crate::digest::FileDigest;
use crate::state::{Accepted, PolicyState, write_atomic};
use crate::trust::{
    BREAK_GLASS_MAX_DURATION_CEILING, DEFAULT_BREAK_GLASS_MAX_DURATION, KeyId, SigningKey,
    TrustStore, encode_public_key, parse_public_key,
};
use crate::verify::{RevocationSet, Verifier, read_artifact};

#[derive(Debug, Subcommand)]
pub enum SecurityCommand {
    /// Signing keys: generate one per person who signs, and show a key's id.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Authorization bundles: the only thing that lets a program run in a governed scope.
    ///
    /// A bundle grants programs, named by the SHA-256 of their content, in one or more
    /// scopes (cgroup v2 paths), for a validity window. It counts only once enough trusted
    /// keys have signed it. Typical flow:
    ///
    ///   enforcer bundle create ... --out b.json   (unsigned)
    ///   enforcer bundle sign --key alice.key b.json
    ///   enforcer bundle sign --key bob.key b.json
    ///   enforcer bundle verify --trust trust.toml b.json
    #[command(subcommand, verbatim_doc_comment)]
    Bundle(BundleCommand),
    /// Revocations: withdraw a bundle, a program digest or a signing key, for good.
    ///
    /// A revocation is signed like a bundle, by keys with the "revocation" role. Once the
    /// agent accepts it, it never lapses. `enforcer revoke FILE` hands a signed one to the
    /// running agent and returns once the revoked grants allow nothing any more.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Revoke(RevokeArgs),
    /// Break-glass: switch scopes to monitor mode for a short, signed window, so an
    /// emergency never means a lockout.
    ///
    /// In monitor mode a scope records every exec it would deny, and allows it. When the
    /// window ends, the kernel enforces again by itself. Only keys with the "break-glass"
    /// role count, and only if the trust store sets a break_glass threshold; the window
    /// may be no longer than its [break_glass] max_duration (default 4h). Typical flow:
    ///
    ///   enforcer break-glass create --issuer oncall --scope /agents.slice \
    ///       --valid-for 1h --reason 'INC-42: deploy tool blocked' --out bg.json
    ///   enforcer break-glass sign --key carol.key bg.json
    ///   enforcer break-glass verify --trust trust.toml bg.json
    ///
    /// then hand bg.json to the agent with its other artifacts.
    #[command(subcommand, verbatim_doc_comment)]
    BreakGlass(BreakGlassCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate an Ed25519 signing key: PREFIX.key (private, mode 0600) and PREFIX.pub.
    ///
    /// The key id printed is derived from the public key; paste the printed entry into
    /// the trust store and choose its roles there. The private key is never printed.
    Generate {
        /// Path prefix of the files to write, e.g. keys/alice; existing files are never
        /// overwritten.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Print the key id and public key of a .pub or .key file (never the private key).
    Show {
        /// A .pub or .key file.
        path: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Create an unsigned bundle from program paths (hashed here) or digests.
    #[command(after_help = BUNDLE_CREATE_EXAMPLES)]
    Create(BundleCreateArgs),
    #[command(flatten)]
    Artifact(ArtifactCommand),
}

/// `enforcer revoke FILE` (to the running agent), or `enforcer revoke create|sign|...`.
#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    #[command(subcommand)]
    command: Option<RevokeCommand>,

    /// A signed revocation for the running agent (a file named like a subcommand needs a
    /// path: ./create).
    #[arg(value_name = "FILE", required = true)]
    file: Option<PathBuf>,

    #[command(flatten)]
    socket: super::agent::SocketArgs,
}

#[derive(Debug, Subcommand)]
pub enum RevokeCommand {
    /// Create an unsigned revocation of bundle ids, artifacts, digests or keys.
    #[command(after_help = REVOKE_CREATE_EXAMPLES)]
    Create(RevokeCreateArgs),
    #[command(flatten)]
    Artifact(ArtifactCommand),
}

#[derive(Debug, Subcommand)]
pub enum BreakGlassCommand {
    /// Create an unsigned break-glass artifact for one or more scopes.
    #[command(after_help = BREAK_GLASS_CREATE_EXAMPLES)]
    Create(BreakGlassCreateArgs),
    #[command(flatten)]
    Artifact(ArtifactCommand),
}

/// What every kind of artifact offers after `create`; the command it sits under says
/// which kind, and an artifact of another kind is refused.
#[derive(Debug, Subcommand)]
pub enum ArtifactCommand {
    /// Add one signature to the artifact, in place. Each signer runs this with their own
    /// key, so k-of-n signing works across people and machines.
    Sign(SignArgs),
    /// Check the artifact against a trust store: exit 0 if it is authorized now, 1 with
    /// the reason if not.
    Verify(VerifyArgs),
    /// Show what the artifact says (what it grants, withdraws or suspends, where, until
    /// when) and who signed it. Does not check signatures: that is `verify`.
    Inspect(InspectArgs),
}

const BUNDLE_CREATE_EXAMPLES: &str = "\
Examples:
  enforcer bundle create --issuer ops --bundle-id agents-base --serial 1 \\
      --scope /agents.slice --valid-for 8h --with-libraries \\
      --file /usr/bin/git --file /usr/local/bin/agent-report --out agents-base.json
  enforcer bundle create --issuer ops --bundle-id tools --serial 7 --scope /ci.slice \\
      --not-before 2030-01-01T00:00:00Z --not-after 2030-02-01T00:00:00Z \\
      --digest sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad,name=abc,valid-for=2h \\
      --mode monitor --out tools.json
  enforcer bundle create --issuer ops --bundle-id git --serial 1 --scope /agents.slice \\
      --valid-for 8h --with-libraries --file /usr/bin/git --out git.json

The serial must be greater than the last one the agent accepted from this issuer for
each scope: that is how old bundles are kept from coming back.";

const REVOKE_CREATE_EXAMPLES: &str = "\
Examples:
  enforcer revoke create --issuer sec --bundle-id agents-base --reason 'superseded' --out r.json
  enforcer revoke create --issuer sec --key-id 0123456789abcdef0123456789abcdef \\
      --reason 'laptop stolen' --out r.json
  enforcer revoke create --issuer sec --file ./compromised-tool --out r.json";

const BREAK_GLASS_CREATE_EXAMPLES: &str = "\
Examples:
  enforcer break-glass create --issuer oncall --scope /agents.slice --valid-for 1h \\
      --reason 'INC-42: agents cannot run the new deploy tool' --out bg.json
  enforcer break-glass create --issuer oncall --scope /ci.slice --scope /agents.slice \\
      --not-before 2030-01-01T08:00:00Z --not-after 2030-01-01T10:00:00Z \\
      --reason 'migration window' --out bg.json

It grants no program: until it ends, the scopes record what they would deny and allow
it. To end it early, revoke it by the artifact id `inspect` shows.";

/// A validity window, for every kind of artifact that has one.
#[derive(Debug, Args)]
pub struct Window {
    /// Start of validity, RFC 3339 in UTC (2030-01-01T00:00:00Z) or @UNIX_SECONDS.
    /// Default: now.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    not_before: Option<u64>,
    /// End of validity, RFC 3339 in UTC or @UNIX_SECONDS.
    #[arg(long, value_name = "TIME", value_parser = parse_time, required_unless_present = "valid_for")]
    not_after: Option<u64>,
    /// Length of validity from --not-before, e.g. 8h, 30m, 7days.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "not_after")]
    valid_for: Option<Duration>,
}

impl Window {
    /// `(not_before, not_after)`, starting at `default_start` unless --not-before says.
    fn resolve(&self, default_start: u64) -> anyhow::Result<(u64, u64)> {
        let not_before = self.not_before.unwrap_or(default_start);
        let not_after = match (self.not_after, self.valid_for) {
            (Some(t), _) => t,
            (None, Some(d)) => not_before.saturating_add(d.as_secs()),
            (None, None) => bail!("give --not-after or --valid-for"),
        };
        Ok((not_before, not_after))
    }
}

/// When a bundle is made and how long it is valid.
#[derive(Debug, Args)]
pub struct Validity {
    #[command(flatten)]
    window: Window,
    /// Recorded issue time. Default: now. Set it to regenerate identical artifacts.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    issued_at: Option<u64>,
}

#[derive(Debug, Args)]
pub struct BundleCreateArgs {
    /// Who issues the bundle (a team or system): letters, digits and . _ : @ -.
    #[arg(long)]
    issuer: String,
    /// Stable name of this line of bundles; revocations can name it.
    #[arg(long)]
    bundle_id: String,
    /// Must be greater than the serial of the bundle this one replaces.
    #[arg(long)]
    serial: u64,
    /// A governed scope: a cgroup v2 path from the cgroup2 root, e.g. /agents.slice.
    /// Repeat for several.
    #[arg(long = "scope", value_name = "CGROUP", required = true)]
    scopes: Vec<String>,
    #[command(flatten)]
    validity: Validity,
    /// Grant the program at PATH, hashed now. Options after commas: name=NAME (default:
    /// the path), not-after=TIME, valid-for=DURATION (grant ends before the bundle).
    #[arg(long = "file", value_name = "PATH[,OPTION]...")]
    files: Vec<GrantSpec>,
    /// Grant a program by SHA-256 (sha256:HEX or HEX), with the same options as --file.
    #[arg(long = "digest", value_name = "DIGEST[,OPTION]...")]
    digests: Vec<GrantSpec>,
    /// Also grant what each --file needs to run: its dynamic loader and shared libraries.
    ///
    /// In a governed scope every executable mapping is checked, not only exec: a
    /// dynamically linked program runs only if its loader (e.g. ld-linux-x86-64.so.2) and
    /// every library it maps (libc.so.6, ...) are granted too. This adds the closure of
    /// each --file, resolved here the way the dynamic loader resolves it (RPATH,
    /// RUNPATH, $ORIGIN, /etc/ld.so.conf, system directories; LD_LIBRARY_PATH ignored),
    /// one grant per library, named by its path. A library inherits its file's
    /// not-after/valid-for; one needed by several files lasts as long as the longest of
    /// them; an explicit --file/--digest grant of the same content keeps its own options.
    /// Libraries loaded with dlopen (plugins, Python extension modules, NSS modules) are
    /// not found this way: grant them with --file.
    ///
    /// A script's interpreter is NOT added: grant it explicitly with --file, knowing that
    /// granting a shell or Python grants everything it can be told to run.
    #[arg(long, verbatim_doc_comment)]
    with_libraries: bool,
    /// enforce: deny what is not granted. monitor: allow, but record what would be denied.
    #[arg(long, value_enum, default_value_t = Mode::Enforce)]
    mode: Mode,
    /// On revocation, deny new executions only, or also kill processes it allowed.
    #[arg(long, value_enum, default_value_t = OnRevoke::DenyNew)]
    on_revoke: OnRevoke,
    /// Let the scopes run anonymous executable memory, as JIT runtimes (node, JVMs,
    /// LuaJIT) need. Code generated in memory is checked by nothing, so any process in the
    /// scope can then run code no grant covers: give JIT workloads a scope of their own.
    #[arg(long)]
    allow_anonymous_exec: bool,
    /// Let the scopes execute or map executable files with no name left (memfd, deleted
    /// files). Their content must still match a grant, but it can be changed after the
    /// check through any writable descriptor.
    #[arg(long)]
    allow_fileless: bool,
    #[command(flatten)]
    output: Output,
}

#[derive(Debug, Args)]
pub struct RevokeCreateArgs {
    /// Who issues the revocation: letters, digits and . _ : @ -.
    #[arg(long)]
    issuer: String,
    /// Revoke every bundle with this bundle id, whatever its issuer or serial.
    #[arg(long = "bundle-id", value_name = "ID")]
    bundle_ids: Vec<String>,
    /// Revoke exactly one artifact, by the id `inspect` shows (SHA3-512 of its payload).
    #[arg(long = "artifact", value_name = "ID")]
    artifacts: Vec<ArtifactId>,
    /// Revoke a program by SHA-256: no bundle granting it is accepted any more.
    #[arg(long = "digest", value_name = "DIGEST")]
    digests: Vec<FileDigest>,
    /// Revoke the program at PATH (hashed now).
    #[arg(long = "file", value_name = "PATH")]
    files: Vec<PathBuf>,
    /// Revoke a signing key by id (`enforcer key show FILE` prints it): nothing it signed
    /// is accepted any more.
    #[arg(long = "key-id", value_name = "KEY_ID")]
    key_ids: Vec<KeyId>,
    /// Why, for the record.
    #[arg(long)]
    reason: Option<String>,
    /// Recorded issue time, RFC 3339 or @UNIX_SECONDS. Default: now.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    issued_at: Option<u64>,
    #[command(flatten)]
    output: Output,
}

#[derive(Debug, Args)]
pub struct BreakGlassCreateArgs {
    /// Who declares the emergency (a person or on-call rota): letters, digits and
    /// . _ : @ -.
    #[arg(long)]
    issuer: String,
    /// A governed scope to switch to monitor mode, e.g. /agents.slice. Repeat for several.
    /// A scope the agent does not govern stays ungoverned: this never adds one.
    #[arg(long = "scope", value_name = "CGROUP", required = true)]
    scopes: Vec<String>,
    #[command(flatten)]
    window: Window,
    /// Why enforcement is suspended: required, it goes into the record.
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    output: Output,
}

#[derive(Debug, Args)]
pub struct Output {
    /// File to write the unsigned artifact to.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Overwrite --out if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// Your private key file (from `enforcer key generate`); must be mode 0600.
    #[arg(long, value_name = "FILE", env = "ENFORCER_SIGNING_KEY")]
    key: PathBuf,
    /// The artifact to sign; it is rewritten atomically with your signature added.
    artifact: PathBuf,
    /// Write the signed artifact here instead of in place.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Trust store: trusted public keys, their roles and thresholds (see policies/trust.toml).
    #[arg(long, value_name = "FILE", env = "ENFORCER_TRUST")]
    trust: PathBuf,
    /// Revocation artifacts to apply first (each verified too). Repeat for several.
    #[arg(long = "revocation", value_name = "FILE")]
    revocations: Vec<PathBuf>,
    /// The agent's state directory: also apply its accepted revocations and the serial
    /// rule, read-only, to tell whether the agent would accept this bundle.
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// How far clocks may disagree at either end of the validity window.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    clock_skew: Duration,
    /// Verify as of this time (RFC 3339 or @UNIX_SECONDS) instead of now.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    at: Option<u64>,
    /// The artifact to verify.
    artifact: PathBuf,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Print JSON (the payload as signed, plus id and signing key ids) for scripts.
    #[arg(long)]
    json: bool,
    /// The artifact to inspect.
    artifact: PathBuf,
}

/// Runs one of the security team's commands.
pub fn run(cmd: SecurityCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SecurityCommand::Key(KeyCommand::Generate { out }) => key_generate(&out),
        SecurityCommand::Key(KeyCommand::Show { path }) => key_show(&path),
        SecurityCommand::Bundle(BundleCommand::Create(args)) => bundle_create(&args),
        SecurityCommand::Revoke(RevokeArgs {
            command: None,
            file,
            socket,
        }) => {
            let file = file.context("name the signed revocation to hand to the agent")?;
            super::agent::push_command(&super::agent::PushArgs { file, socket }, true)
        }
        SecurityCommand::Revoke(RevokeArgs {
            command: Some(RevokeCommand::Create(args)),
            ..
        }) => revoke_create(&args),
        SecurityCommand::BreakGlass(BreakGlassCommand::Create(args)) => break_glass_create(&args),
        SecurityCommand::Bundle(BundleCommand::Artifact(cmd)) => {
            artifact(cmd, ArtifactKind::Bundle)
        }
        SecurityCommand::Revoke(RevokeArgs {
            command: Some(RevokeCommand::Artifact(cmd)),
            ..
        }) => artifact(cmd, ArtifactKind::Revocation),
        SecurityCommand::BreakGlass(BreakGlassCommand::Artifact(cmd)) => {
            artifact(cmd, ArtifactKind::BreakGlass)
        }
    }
}

/// `sign`, `verify` or `inspect` on an artifact of `kind`.
fn artifact(cmd: ArtifactCommand, kind: ArtifactKind) -> anyhow::Result<ExitCode> {
    match cmd {
        ArtifactCommand::Sign(args) => sign(&args, kind),
        ArtifactCommand::Verify(args) => verify(&args, kind),
        ArtifactCommand::Inspect(args) => inspect(&args, kind),
    }
}

fn key_generate(prefix: &Path) -> anyhow::Result<ExitCode> {
    let name = prefix
        .file_name()
        .and_then(|n| n.to_str())
        .context("--out must end in a file name, e.g. keys/alice")?
        .to_owned();
    let key_path = prefix.with_file_name(format!("{name}.key"));
    let pub_path = prefix.with_file_name(format!("{name}.pub"));
    for path in [&key_path, &pub_path] {
        if path.exists() {
            bail!(
                "{} already exists; refusing to overwrite a key",
                path.display()
            );
        }
    }
    let key = SigningKey::generate();
    key.write_new(&key_path, &name)?;
    let public = encode_public_key(&key.public_key());
    write_new_file(&pub_path, format!("{public}\n").as_bytes())?;
    println!("generated key {name:?}, key id {}", key.key_id());
    println!(
        "  private key: {} (mode 0600: keep it secret)",
        key_path.display()
    );
    println!("  public key:  {}", pub_path.display());
    println!("To trust it, add this to the trust store and choose its roles:");
    println!(
        "[[keys]]\nname = {name:?}\npublic_key = {public:?}\nroles = [\"bundle\"]  # and/or \"revocation\""
    );
    Ok(ExitCode::SUCCESS)
}

fn write_new_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn key_show(path: &Path) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let public = match parse_public_key(&text) {
        Ok(public) => public,
        Err(_) => SigningKey::load(path)?.public_key(),
    };
    println!("key id:     {}", KeyId::of(&public));
    println!("public key: {}", encode_public_key(&public));
    Ok(ExitCode::SUCCESS)
}

/// A grant on the command line: `SUBJECT[,name=NAME][,not-after=TIME][,valid-for=DUR]`.
#[derive(Clone, Debug)]
pub struct GrantSpec {
    subject: String,
    name: Option<String>,
    not_after: Option<u64>,
    valid_for: Option<Duration>,
}

impl FromStr for GrantSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(',');
        let subject = parts.next().unwrap_or_default().to_owned();
        if subject.is_empty() {
            return Err("empty grant".into());
        }
        let mut spec = Self {
            subject,
            name: None,
            not_after: None,
            valid_for: None,
        };
        for option in parts {
            match option.split_once('=') {
                Some(("name", v)) => spec.name = Some(v.to_owned()),
                Some(("not-after", v)) => spec.not_after = Some(parse_time(v)?),
                Some(("valid-for", v)) => {
                    spec.valid_for = Some(
                        humantime::parse_duration(v).map_err(|e| format!("valid-for={v}: {e}"))?,
                    );
                }
                _ => {
                    return Err(format!(
                        "unknown grant option {option:?}: expected name=NAME, not-after=TIME or valid-for=DURATION"
                    ));
                }
            }
        }
        if spec.not_after.is_some() && spec.valid_for.is_some() {
            return Err("give not-after or valid-for, not both".into());
        }
        Ok(spec)
    }
}

impl GrantSpec {
    fn to_grant(&self, digest: FileDigest, name: Option<String>, not_before: u64) -> Grant {
        Grant {
            digest,
            name: self.name.clone().or(name),
            not_after: self.not_after(not_before),
        }
    }

    /// When the grant ends, if before its bundle does.
    fn not_after(&self, not_before: u64) -> Option<u64> {
        self.not_after.or_else(|| {
            self.valid_for
                .map(|d| not_before.saturating_add(d.as_secs()))
        })
    }
}

/// RFC 3339 in UTC (`2030-01-01T00:00:00Z`) or `@<unix seconds>`.
fn parse_time(s: &str) -> Result<u64, String> {
    if let Some(secs) = s.strip_prefix('@') {
        return secs.parse().map_err(|e| format!("{s:?}: {e}"));
    }
    humantime::parse_rfc3339_weak(s)
        .map(unix_seconds)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time such as 2030-01-01T00:00:00Z: {e}"))
}

fn now_or(t: Option<u64>) -> u64 {
    t.unwrap_or_else(|| unix_seconds(SystemTime::now()))
}

fn bundle_create(args: &BundleCreateArgs) -> anyhow::Result<ExitCode> {
    let issued_at = now_or(args.validity.issued_at);
    let (not_before, not_after) = args.validity.window.resolve(issued_at)?;
    let mut grants = Vec::new();
    for spec in &args.files {
        let digest = FileDigest::of_file(Path::new(&spec.subject))?;
        grants.push(spec.to_grant(digest, Some(spec.subject.clone()), not_before));
    }
    for spec in &args.digests {
        grants.push(spec.to_grant(spec.subject.parse()?, None, not_before));
    }
    if args.with_libraries {
        let libraries = library_grants(&args.files, &grants, not_before)?;
        println!(
            "added {} grant(s) for the dynamic loader and shared libraries of {} file(s)",
            libraries.len(),
            args.files.len()
        );
        grants.extend(libraries);
    }
    let bundle = Bundle {
        issuer: args.issuer.clone(),
        bundle_id: args.bundle_id.clone(),
        serial: args.serial,
        issued_at,
        not_before,
        not_after,
        scopes: args
            .scopes
            .iter()
            .map(|s| s.parse::<CgroupScope>())
            .collect::<Result<_, _>>()?,
        grants,
        mode: args.mode,
        on_revoke: args.on_revoke,
        allow_anonymous_exec: args.allow_anonymous_exec,
        allow_fileless: args.allow_fileless,
    };
    write_unsigned(ArtifactKind::Bundle, bundle.to_payload()?, &args.output)
}

/// Grants for the dynamic loader and shared libraries of each file in `files`, named by
/// their paths. A library takes its file's expiry; one several files need gets the latest
/// (none if any file's grant has none). Content already in `explicit` is not granted
/// again: the explicit grant and its options stand.
fn library_grants(
    files: &[GrantSpec],
    explicit: &[Grant],
    not_before: u64,
) -> anyhow::Result<Vec<Grant>> {
    let mut grants: Vec<Grant> = Vec::new();
    for spec in files {
        let path = Path::new(&spec.subject);
        if let Some(interpreter) = script_interpreter(path) {
            eprintln!(
                "note: {} is a script: its interpreter {interpreter} is not added; grant it \
                 with --file if this scope may run it",
                spec.subject
            );
        }
        let not_after = spec.not_after(not_before);
        let closure = crate::elf::with_dependencies(&[path.to_path_buf()]).with_context(|| {
            format!(
                "cannot find the libraries of {} (--with-libraries)",
                spec.subject
            )
        })?;
        // The closure starts with the file itself, granted already.
        for library in closure.iter().skip(1) {
            let digest = FileDigest::of_file(library)?;
            if explicit.iter().any(|g| g.digest == digest) {
                continue;
            }
            match grants.iter_mut().find(|g| g.digest == digest) {
                Some(existing) => {
                    existing.not_after = existing.not_after.zip(not_after).map(|(a, b)| a.max(b));
                }
                None => grants.push(Grant {
                    digest,
                    name: Some(library.display().to_string()),
                    not_after,
                }),
            }
        }
    }
    Ok(grants)
}

/// The `#!` line's interpreter, when `path` is a script.
fn script_interpreter(path: &Path) -> Option<String> {
    use std::io::Read as _;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    let interpreter = String::from_utf8_lossy(line).trim().to_owned();
    Some(if interpreter.is_empty() {
        "(none named)".to_owned()
    } else {
        interpreter
    })
}

fn revoke_create(args: &RevokeCreateArgs) -> anyhow::Result<ExitCode> {
    let mut targets: Vec<RevocationTarget> = args
        .bundle_ids
        .iter()
        .cloned()
        .map(RevocationTarget::Bundle)
        .collect();
    targets.extend(
        args.artifacts
            .iter()
            .copied()
            .map(RevocationTarget::Artifact),
    );
    targets.extend(args.digests.iter().copied().map(RevocationTarget::Digest));
    for path in &args.files {
        targets.push(RevocationTarget::Digest(FileDigest::of_file(path)?));
    }
    targets.extend(args.key_ids.iter().copied().map(RevocationTarget::Key));
    let revocation = Revocation {
        issuer: args.issuer.clone(),
        issued_at: now_or(args.issued_at),
        reason: args.reason.clone(),
        targets,
    };
    write_unsigned(
        ArtifactKind::Revocation,
        revocation.to_payload()?,
        &args.output,
    )
}

fn break_glass_create(args: &BreakGlassCreateArgs) -> anyhow::Result<ExitCode> {
    let (not_before, not_after) = args.window.resolve(now_or(None))?;
    let break_glass = BreakGlass {
        issuer: args.issuer.clone(),
        not_before,
        not_after,
        scopes: args
            .scopes
            .iter()
            .map(|s| s.parse::<CgroupScope>())
            .collect::<Result<_, _>>()?,
        reason: args.reason.clone(),
    };
    // The payload's own rules first (empty window, reason, scopes), then the length.
    let payload = break_glass.to_payload()?;
    let window = Duration::from_secs(break_glass.window());
    let shown = |d: Duration| humantime::format_duration(d).to_string();
    if window > BREAK_GLASS_MAX_DURATION_CEILING {
        bail!(
            "a break-glass valid for {} would be refused by every trust store: the longest any \
             may allow is {}. For a longer unenforced period, issue a bundle in monitor mode",
            shown(window),
            shown(BREAK_GLASS_MAX_DURATION_CEILING)
        );
    }
    if window > DEFAULT_BREAK_GLASS_MAX_DURATION {
        eprintln!(
            "note: valid for {}: refused by trust stores that keep the default [break_glass] \
             max_duration of {}",
            shown(window),
            shown(DEFAULT_BREAK_GLASS_MAX_DURATION)
        );
    }
    write_unsigned(ArtifactKind::BreakGlass, payload, &args.output)
}

fn write_unsigned(
    kind: ArtifactKind,
    payload: Vec<u8>,
    output: &Output,
) -> anyhow::Result<ExitCode> {
    let envelope = Envelope::new(kind, payload);
    if output.out.exists() && !output.force {
        bail!(
            "{} already exists; pass --force to overwrite it",
            output.out.display()
        );
    }
    write_atomic(&output.out, &envelope.to_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", output.out.display()))?;
    println!(
        "wrote unsigned {kind} {} to {}",
        envelope.id(),
        output.out.display()
    );
    println!(
        "next: enforcer {} sign --key YOUR.key {}",
        verb(kind),
        output.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The command that handles artifacts of `kind`.
fn verb(kind: ArtifactKind) -> &'static str {
    match kind {
        ArtifactKind::Bundle => "bundle",
        ArtifactKind::Revocation => "revoke",
        ArtifactKind::BreakGlass => "break-glass",
    }
}

/// Reads an artifact and checks it is the kind the command is about, so a revocation is
/// never signed by mistake under `bundle sign`.
fn read_envelope(path: &Path, expected: ArtifactKind) -> anyhow::Result<Envelope> {
    let envelope = Envelope::parse(&read_artifact(path)?)
        .with_context(|| format!("cannot use {}", path.display()))?;
    let found = envelope.kind()?;
    if found != expected {
        bail!(
            "{} is a {found}, not a {expected}: use `enforcer {}`",
            path.display(),
            verb(found)
        );
    }
    Ok(envelope)
}

fn sign(args: &SignArgs, kind: ArtifactKind) -> anyhow::Result<ExitCode> {
    let mut envelope = read_envelope(&args.artifact, kind)?;
    // Refuse to sign what the verifier would refuse, and show the signer what they sign.
    let summary = summarize(&envelope, &Payload::parse(&envelope)?);
    let key = SigningKey::load(&args.key)?;
    print!("{summary}");
    if !envelope.add_signature(&key) {
        println!("already signed by key {}; nothing to do", key.key_id());
        return Ok(ExitCode::SUCCESS);
    }
    let out = args.out.as_ref().unwrap_or(&args.artifact);
    write_atomic(out, &envelope.to_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "signed with key {}: {} signature(s) now, written to {}",
        key.key_id(),
        envelope.signatures.len(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn verify(args: &VerifyArgs, kind: ArtifactKind) -> anyhow::Result<ExitCode> {
    let trust = TrustStore::load(&args.trust)?;
    let verifier = Verifier::new(trust).with_clock_skew(args.clock_skew);
    let state = match &args.state {
        Some(dir) => Some(PolicyState::load_dir(dir)?),
        None => None,
    };
    let mut revocations = state
        .as_ref()
        .map(|s| s.revocations().clone())
        .unwrap_or_default();
    for path in &args.revocations {
        let r = verifier
            .verify_revocation(&read_artifact(path)?, &revocations)
            .with_context(|| format!("revocation {} refused", path.display()))?;
        revocations.insert(r.id, &r.revocation);
    }
    let bytes = read_artifact(&args.artifact)?;
    let now = args.at.map_or_else(SystemTime::now, from_unix_seconds);
    let checked = Checked {
        verifier: &verifier,
        now,
        revocations: &revocations,
    };
    let verdict = match kind {
        ArtifactKind::Bundle => checked.bundle(&bytes, state.as_ref()),
        ArtifactKind::Revocation => checked.revocation(&bytes),
        ArtifactKind::BreakGlass => checked.break_glass(&bytes),
    };
    match verdict {
        Ok(report) => {
            print!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => {
            eprintln!("refused: {} {}: {reason}", kind, args.artifact.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// What `verify` checks against, and the report for each kind once it passes.
struct Checked<'a> {
    verifier: &'a Verifier,
    now: SystemTime,
    revocations: &'a RevocationSet,
}

impl Checked<'_> {
    fn bundle(&self, bytes: &[u8], state: Option<&PolicyState>) -> Result<String, ArtifactError> {
        let v = self
            .verifier
            .verify_bundle(bytes, self.now, self.revocations)?;
        let b = &v.bundle;
        let mut report = format!(
            "OK: bundle {:?} serial {} from {:?} (artifact {})\n  signed by {}\n  valid until {}\n",
            b.bundle_id,
            b.serial,
            b.issuer,
            v.id,
            signer_names(self.verifier, &v.signers),
            describe_time(b.not_after, unix_seconds(self.now))
        );
        if let Some(state) = state {
            report.push_str(match state.check_bundle(&v)? {
                Accepted::New => "  the agent's state would accept it as new\n",
                Accepted::AlreadyAccepted => "  the agent's state has already accepted it\n",
            });
        }
        Ok(report)
    }

    fn revocation(&self, bytes: &[u8]) -> Result<String, ArtifactError> {
        let r = self.verifier.verify_revocation(bytes, self.revocations)?;
        Ok(format!(
            "OK: revocation {} from {:?} ({} target(s))\n  signed by {}\n",
            r.id,
            r.revocation.issuer,
            r.revocation.targets.len(),
            signer_names(self.verifier, &r.signers)
        ))
    }

    fn break_glass(&self, bytes: &[u8]) -> Result<String, ArtifactError> {
        let v = self
            .verifier
            .verify_break_glass(bytes, self.now, self.revocations)?;
        let bg = &v.break_glass;
        Ok(format!(
            "OK: break-glass from {:?} (artifact {})\n  signed by {}\n  monitor mode in {}\n  \
             valid from {}\n  valid until {}\n  reason: {}\n",
            bg.issuer,
            v.id,
            signer_names(self.verifier, &v.signers),
            join_scopes(&bg.scopes),
            describe_time(bg.not_before, unix_seconds(self.now)),
            describe_time(bg.not_after, unix_seconds(self.now)),
            bg.reason
        ))
    }
}

fn join_scopes(scopes: &[CgroupScope]) -> String {
    scopes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn signer_names(verifier: &Verifier, signers: &[KeyId]) -> String {
    signers
        .iter()
        .map(|id| match verifier.trust().key(id) {
            Some(k) => format!("{} ({id})", k.name),
            None => id.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `2030-01-01T00:00:00Z (in 7h 59m)` or `(expired 2h ago)`.
fn describe_time(t: u64, now: u64) -> String {
    let rel = |secs: u64| match secs / 86_400 {
        days @ 2.. => format!("{days} days"),
        _ => humantime::format_duration(Duration::from_secs(secs / 60 * 60)).to_string(),
    };
    if t.abs_diff(now) < 60 {
        format!("{} (now)", format_time(t))
    } else if t > now {
        format!("{} (in {})", format_time(t), rel(t - now))
    } else {
        format!("{} ({} ago)", format_time(t), rel(now - t))
    }
}

fn inspect(args: &InspectArgs, kind: ArtifactKind) -> anyhow::Result<ExitCode> {
    let envelope = read_envelope(&args.artifact, kind)?;
    // Parsing first refuses a malformed payload, in both forms.
    let payload = Payload::parse(&envelope)?;
    if args.json {
        // The JSON shown is the payload as signed.
        let signed: serde_json::Value = serde_json::from_slice(&envelope.payload)?;
        let out = serde_json::json!({
            "kind": kind.to_string(),
            "id": envelope.id().to_string(),
            "payload_type": envelope.payload_type,
            "signatures": envelope.signatures.iter().map(|s| s.key_id.to_string()).collect::<Vec<_>>(),
            "payload": signed,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}{}", summarize(&envelope, &payload), payload.details());
    }
    Ok(ExitCode::SUCCESS)
}

/// An artifact's payload, parsed but not verified: the only part of `sign` and `inspect`
/// that depends on the kind.
enum Payload {
    Bundle(Bundle),
    Revocation(Revocation),
    BreakGlass(BreakGlass),
}

impl Payload {
    /// Parses the payload by the envelope's type; fails on a malformed one.
    fn parse(envelope: &Envelope) -> Result<Self, ArtifactError> {
        Ok(match envelope.kind()? {
            ArtifactKind::Bundle => Self::Bundle(Bundle::from_payload(&envelope.payload)?),
            ArtifactKind::Revocation => {
                Self::Revocation(Revocation::from_payload(&envelope.payload)?)
            }
            ArtifactKind::BreakGlass => {
                Self::BreakGlass(BreakGlass::from_payload(&envelope.payload)?)
            }
        })
    }

    /// The first line, naming the artifact, and the lines after the artifact id.
    fn describe(&self, now: u64) -> (String, Vec<(&'static str, String)>) {
        match self {
            Self::Bundle(b) => {
                let opt_ins: Vec<&str> = [
                    (b.allow_anonymous_exec, "anonymous-exec"),
                    (b.allow_fileless, "fileless"),
                ]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
                let opt_ins = if opt_ins.is_empty() {
                    "none".to_owned()
                } else {
                    opt_ins.join(", ")
                };
                (
                    format!(
                        "bundle {:?} serial {} from {:?}",
                        b.bundle_id, b.serial, b.issuer
                    ),
                    vec![
                        ("issued", format_time(b.issued_at)),
                        ("valid from", describe_time(b.not_before, now)),
                        ("valid until", describe_time(b.not_after, now)),
                        ("mode", format!("{} (on revoke: {})", b.mode, b.on_revoke)),
                        ("scopes", join_scopes(&b.scopes)),
                        ("opt-ins", opt_ins),
                        ("grants", b.grants.len().to_string()),
                    ],
                )
            }
            Self::Revocation(r) => {
                let mut lines = vec![
                    ("issued", format_time(r.issued_at)),
                    (
                        "reason",
                        r.reason
                            .clone()
                            .unwrap_or_else(|| "(none given)".to_owned()),
                    ),
                ];
                lines.extend(r.targets.iter().map(|t| ("revokes", t.to_string())));
                (format!("revocation from {:?}", r.issuer), lines)
            }
            Self::BreakGlass(bg) => (
                format!("break-glass from {:?}", bg.issuer),
                vec![
                    ("valid from", describe_time(bg.not_before, now)),
                    ("valid until", describe_time(bg.not_after, now)),
                    (
                        "lasts",
                        humantime::format_duration(Duration::from_secs(bg.window())).to_string(),
                    ),
                    ("monitor in", join_scopes(&bg.scopes)),
                    ("reason", bg.reason.clone()),
                ],
            ),
        }
    }

    /// What `inspect` shows after the summary: the grants of a bundle.
    fn details(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        if let Self::Bundle(bundle) = self {
            for g in &bundle.grants {
                let _ = write!(
                    s,
                    "  sha256:{}  {}",
                    g.digest,
                    g.name.as_deref().unwrap_or("-")
                );
                if let Some(t) = g.not_after {
                    let _ = write!(s, "  (until {})", format_time(t));
                }
                s.push('\n');
            }
        }
        s
    }
}

/// A human summary of an artifact's content and signatures (unchecked).
fn summarize(envelope: &Envelope, payload: &Payload) -> String {
    use std::fmt::Write as _;
    let (title, lines) = payload.describe(unix_seconds(SystemTime::now()));
    let mut s = format!("{title}\n");
    let _ = writeln!(s, "  {:<12} {}", "artifact id", envelope.id());
    for (label, value) in lines {
        let _ = writeln!(s, "  {label:<12} {value}");
    }
    let _ = writeln!(
        s,
        "  signatures   {} (not checked here; `verify` checks them)",
        envelope.signatures.len()
    );
    for sig in &envelope.signatures {
        let _ = writeln!(s, "    key {}", sig.key_id);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test binary: dynamically linked against glibc on every supported host.
    fn me() -> String {
        std::env::current_exe().expect("exe").display().to_string()
    }

    fn spec(options: &str) -> GrantSpec {
        format!("{}{options}", me()).parse().expect("grant spec")
    }

    fn named<'a>(grants: &'a [Grant], prefix: &str) -> &'a Grant {
        grants
            .iter()
            .find(|g| {
                let name = g.name.as_deref().unwrap_or_default();
                Path::new(name)
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .unwrap_or_else(|| panic!("no grant for {prefix}*: {grants:?}"))
    }

    #[test]
    fn libraries_are_named_by_path_and_take_their_files_expiry() {
        let grants = library_grants(&[spec(",valid-for=1h")], &[], 1000).expect("closure");
        for prefix in ["ld-linux", "libc.so"] {
            let g = named(&grants, prefix);
            assert!(
                Path::new(g.name.as_deref().expect("name")).is_absolute(),
                "{g:?}"
            );
            assert_eq!(g.not_after, Some(4600), "{g:?}");
        }
        let own = FileDigest::of_file(Path::new(&me())).expect("digest");
        assert!(
            grants.iter().all(|g| g.digest != own),
            "the file itself is granted by --file"
        );
    }

    #[test]
    fn a_library_several_files_need_lasts_as_long_as_the_longest() {
        let grants =
            library_grants(&[spec(",valid-for=1h"), spec(",valid-for=2h")], &[], 0).expect("x");
        assert_eq!(named(&grants, "libc.so").not_after, Some(7200));
        let digests: std::collections::BTreeSet<_> = grants.iter().map(|g| g.digest).collect();
        assert_eq!(digests.len(), grants.len(), "one grant per library");

        let grants = library_grants(&[spec(",valid-for=1h"), spec("")], &[], 0).expect("x");
        assert_eq!(named(&grants, "libc.so").not_after, None, "no expiry wins");
    }

    #[test]
    fn an_explicit_grant_of_a_library_keeps_its_options() {
        let libc = library_grants(&[spec("")], &[], 0).expect("closure");
        let libc = named(&libc, "libc.so").clone();
        let explicit = Grant {
            digest: libc.digest,
            name: Some("mine".into()),
            not_after: Some(5),
        };
        let grants = library_grants(&[spec("")], &[explicit], 0).expect("closure");
        assert!(grants.iter().all(|g| g.digest != libc.digest), "{grants:?}");
    }

    #[test]
    fn scripts_are_recognised_by_their_interpreter_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("s");
        std::fs::write(&script, "#!/bin/sh -e\necho hi\n").expect("write");
        assert_eq!(script_interpreter(&script).as_deref(), Some("/bin/sh -e"));
        assert_eq!(script_interpreter(Path::new(&me())), None);
    }
}
