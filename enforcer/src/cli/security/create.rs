//! `enforcer bundle create`, `revoke create`, `break-glass create`: write unsigned
//! artifacts for the security team to review and sign.

use super::*;

pub(super) const BUNDLE_CREATE_EXAMPLES: &str = "\
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
  enforcer bundle create --issuer ops --bundle-id dns --serial 3 --scope /agents.slice \\
      --valid-for 30days --from-package bind9-host --with-libraries --out dns.json
  (digests from the archive through apt's signed chain; see docs/packages.md, and
  `enforcer bundle drift dns.json` later)

The serial must be greater than the last one the agent accepted from this issuer for
each scope: that is how old bundles are kept from coming back.";

pub(super) const REVOKE_CREATE_EXAMPLES: &str = "\
Examples:
  enforcer revoke create --issuer sec --bundle-id agents-base --reason 'superseded' --out r.json
  enforcer revoke create --issuer sec --key-id 0123456789abcdef0123456789abcdef \\
      --reason 'laptop stolen' --out r.json
  enforcer revoke create --issuer sec --file ./compromised-tool --out r.json";

pub(super) const BREAK_GLASS_CREATE_EXAMPLES: &str = "\
Examples:
  enforcer break-glass create --issuer oncall --scope /agents.slice --valid-for 1h \\
      --reason 'INC-42: agents cannot run the new deploy tool' --out bg.json
  enforcer break-glass create --issuer oncall --scope /ci.slice --scope /agents.slice \\
      --not-before 2030-01-01T08:00:00Z --not-after 2030-01-01T10:00:00Z \\
      --reason 'migration window' --out bg.json

It grants no program: until it ends, the scopes record what they would deny and allow
it. To end it early, revoke it by the artifact id `inspect` shows.";

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
    files: Vec<GrantArg>,
    /// Grant a program by SHA-256 (sha256:HEX or HEX), with the same options as --file.
    #[arg(long = "digest", value_name = "DIGEST[,OPTION]...")]
    digests: Vec<GrantArg>,
    #[command(flatten)]
    packages: super::package::PackageArgs,
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
    /// With --from-package, the libraries the packages' programs need are resolved the
    /// same way on this host, each attributed to the package dpkg says ships it and
    /// granted with the digest from that package's archive.
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
    /// Grant what the audit log recorded in the --scope(s): every program that ran, was
    /// denied, or would have been in monitor mode, and that is still on disk with the
    /// content recorded. Prints a review list by program; what is left out is named there.
    #[arg(long)]
    from_audit: bool,
    /// Directory of the audit log, for --from-audit.
    #[arg(long, env = "ENFORCER_AUDIT_DIR", default_value = crate::audit::DEFAULT_DIR)]
    audit_dir: PathBuf,
    /// With --from-audit: only decisions since this time, RFC 3339 or an age (10m, 2h).
    #[arg(long, value_name = "TIME", requires = "from_audit")]
    since: Option<String>,
    #[command(flatten)]
    output: Output,
}

#[derive(Debug, Args)]
pub(crate) struct RevokeCreateArgs {
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

/// A grant on the command line: `SUBJECT[,name=NAME][,not-after=TIME][,valid-for=DUR]`.
#[derive(Clone, Debug)]
pub(super) struct GrantArg {
    subject: String,
    name: Option<String>,
    not_after: Option<u64>,
    valid_for: Option<Duration>,
}

impl FromStr for GrantArg {
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

impl GrantArg {
    fn to_grant(&self, digest: FileDigest, name: Option<String>, not_before: u64) -> SignedGrant {
        SignedGrant {
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

pub(super) fn bundle_create(args: &BundleCreateArgs) -> anyhow::Result<ExitCode> {
    let issued_at = now_or(args.validity.issued_at);
    let (not_before, not_after) = args.validity.window.resolve(issued_at)?;
    let mut grants = Vec::new();
    for spec in &args.files {
        let digest = crate::host::elf::grantable_digest(Path::new(&spec.subject))?;
        grants.push(spec.to_grant(digest, Some(spec.subject.clone()), not_before));
    }
    for spec in &args.digests {
        grants.push(spec.to_grant(spec.subject.parse()?, None, not_before));
    }
    let mut disk_drift = false;
    if !args.packages.is_empty() {
        let found = super::package::package_grants(&args.packages, args.with_libraries)?;
        disk_drift = found.drift;
        grants.extend(found.grants);
    }
    if args.from_audit {
        let explicit: Vec<FileDigest> = grants.iter().map(|g| g.digest).collect();
        grants.extend(
            audit_grants(args)?
                .into_iter()
                .filter(|g| !explicit.contains(&g.digest)),
        );
    }
    if args.with_libraries && !args.files.is_empty() {
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
            .map(|s| s.parse::<ScopePath>())
            .collect::<Result<_, _>>()?,
        grants,
        mode: args.mode,
        on_revoke: args.on_revoke,
        allow_anonymous_exec: args.allow_anonymous_exec,
        allow_fileless: args.allow_fileless,
    };
    let written = write_unsigned(ArtifactKind::Bundle, bundle.to_payload()?, &args.output)?;
    if disk_drift {
        eprintln!(
            "exit {}: the bundle was written, but the disk differs from the packages (see \
             above); --allow-drift accepts that",
            super::package::EXIT_DISK_DRIFT
        );
        return Ok(ExitCode::from(super::package::EXIT_DISK_DRIFT));
    }
    Ok(written)
}

/// Grants for what the audit log recorded in each of the bundle's scopes, with the review
/// list printed: one line per program and content, what was decided how often and when,
/// and whether it is granted or left out because the file changed or is gone (a grant of
/// content that no longer exists would only widen the bundle).
fn audit_grants(args: &BundleCreateArgs) -> anyhow::Result<Vec<SignedGrant>> {
    use crate::audit::replay::{OnDisk, Seen, learn};

    let since = args
        .since
        .as_deref()
        .map(|s| crate::audit::query::parse_since(s, SystemTime::now()))
        .transpose()?;
    let mut grants: Vec<SignedGrant> = Vec::new();
    for scope in &args.scopes {
        let (seen, skipped) = learn(&args.audit_dir, scope, since).with_context(|| {
            format!("cannot read the audit log in {}", args.audit_dir.display())
        })?;
        if skipped > 0 {
            tracing::warn!(skipped, "lines that are not audit records were skipped");
        }
        println!(
            "review: {} program(s) recorded in {scope} (audit log {})",
            seen.len(),
            args.audit_dir.display()
        );
        // One resolver: it reads ld.so.conf and its includes when made.
        let loader = crate::host::elf::Resolver::default();
        let checked: Vec<(&Seen, OnDisk)> = seen.iter().map(|s| (s, s.on_disk(&loader))).collect();
        for (s, on_disk) in &checked {
            if let OnDisk::Same(path) = on_disk
                && !grants.iter().any(|g| g.digest == s.digest)
            {
                crate::host::elf::grantable(Path::new(path))?;
                grants.push(SignedGrant {
                    digest: s.digest,
                    name: Some(path.clone()),
                    not_after: None,
                });
            }
        }
        let mut left_out = 0;
        for (s, on_disk) in &checked {
            // Content found under one of its names covers the others: busybox run as
            // /bin/sh, mapped as `busybox`, run again as /proc/self/exe.
            let covered = || grants.iter().find(|g| g.digest == s.digest);
            let verdict = match on_disk {
                OnDisk::Same(path) if *path == s.path => "granted".to_owned(),
                OnDisk::Same(path) => format!("granted as {path}"),
                _ if covered().is_some() => format!(
                    "granted: the same content as {}",
                    covered()
                        .and_then(|g| g.name.as_deref())
                        .unwrap_or("a digest given explicitly")
                ),
                OnDisk::Changed(now) => {
                    left_out += 1;
                    format!("LEFT OUT: content on disk changed (now sha256:{now})")
                }
                OnDisk::Missing(why) => {
                    left_out += 1;
                    format!("LEFT OUT: no longer on disk ({why})")
                }
            };
            println!(
                "  {} sha256:{} allowed {} would-deny {} denied {} first {} last {}: {verdict}",
                s.path, s.digest, s.allowed, s.would_deny, s.denied, s.first, s.last
            );
        }
        if left_out > 0 {
            println!("  {left_out} program(s) left out: not on disk as recorded");
        }
    }
    Ok(grants)
}

/// Grants for the dynamic loader and shared libraries of each file in `files`, named by
/// their paths. A library takes its file's expiry; one several files need gets the latest
/// (none if any file's grant has none). Content already in `explicit` is not granted
/// again: the explicit grant and its options stand.
pub(super) fn library_grants(
    files: &[GrantArg],
    explicit: &[SignedGrant],
    not_before: u64,
) -> anyhow::Result<Vec<SignedGrant>> {
    let mut grants: Vec<SignedGrant> = Vec::new();
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
        let closure =
            crate::host::elf::with_dependencies(&[path.to_path_buf()]).with_context(|| {
                format!(
                    "cannot find the libraries of {} (--with-libraries)",
                    spec.subject
                )
            })?;
        // The closure starts with the file itself, granted already.
        for library in closure.iter().skip(1) {
            let digest = crate::host::elf::grantable_digest(library)?;
            if explicit.iter().any(|g| g.digest == digest) {
                continue;
            }
            match grants.iter_mut().find(|g| g.digest == digest) {
                Some(existing) => {
                    existing.not_after = existing.not_after.zip(not_after).map(|(a, b)| a.max(b));
                }
                None => grants.push(SignedGrant {
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
pub(super) fn script_interpreter(path: &Path) -> Option<String> {
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

pub(super) fn revoke_create(args: &RevokeCreateArgs) -> anyhow::Result<ExitCode> {
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

pub(super) fn break_glass_create(args: &BreakGlassCreateArgs) -> anyhow::Result<ExitCode> {
    let (not_before, not_after) = args.window.resolve(now_or(None))?;
    let break_glass = BreakGlass {
        issuer: args.issuer.clone(),
        not_before,
        not_after,
        scopes: args
            .scopes
            .iter()
            .map(|s| s.parse::<ScopePath>())
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

pub(super) fn write_unsigned(
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
    replace_atomically(&output.out, &envelope.to_bytes(), 0o644)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// This test binary: dynamically linked against glibc on every supported host.
    fn me() -> String {
        std::env::current_exe().expect("exe").display().to_string()
    }

    fn spec(options: &str) -> GrantArg {
        format!("{}{options}", me()).parse().expect("grant spec")
    }

    fn named<'a>(grants: &'a [SignedGrant], prefix: &str) -> &'a SignedGrant {
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
        let explicit = SignedGrant {
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
