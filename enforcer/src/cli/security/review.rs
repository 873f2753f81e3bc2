//! `sign`, `verify` and `inspect` for every artifact kind: what a reviewer runs before
//! adding a signature, and what anyone can check afterwards.

use super::*;

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

/// The command that handles artifacts of `kind`.
pub(super) fn verb(kind: ArtifactKind) -> &'static str {
    match kind {
        ArtifactKind::Bundle => "bundle",
        ArtifactKind::Revocation => "revoke",
        ArtifactKind::BreakGlass => "break-glass",
    }
}

/// Reads an artifact and checks it is the kind the command is about, so a revocation is
/// never signed by mistake under `bundle sign`.
pub(super) fn read_envelope(path: &Path, expected: ArtifactKind) -> anyhow::Result<Envelope> {
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

pub(super) fn sign(args: &SignArgs, kind: ArtifactKind) -> anyhow::Result<ExitCode> {
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
    replace_atomically(out, &envelope.to_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "signed with key {}: {} signature(s) now, written to {}",
        key.key_id(),
        envelope.signatures.len(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn verify(args: &VerifyArgs, kind: ArtifactKind) -> anyhow::Result<ExitCode> {
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
pub(super) struct Checked<'a> {
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

pub(super) fn join_scopes(scopes: &[ScopePath]) -> String {
    scopes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn signer_names(verifier: &Verifier, signers: &[KeyId]) -> String {
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
pub(super) fn describe_time(t: u64, now: u64) -> String {
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

pub(super) fn inspect(args: &InspectArgs, kind: ArtifactKind) -> anyhow::Result<ExitCode> {
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
pub(super) enum Payload {
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
pub(super) fn summarize(envelope: &Envelope, payload: &Payload) -> String {
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
