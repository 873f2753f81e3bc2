//! Bundles: signed grants of program digests in governed scopes, with a validity window,
//! a serial, a mode and what happens on revocation.

use super::*;

/// Permission to execute one program, named by the SHA-256 of its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedGrant {
    pub digest: FileDigest,
    /// A hint for humans (usually the path it was hashed from); never used to decide.
    pub name: Option<String>,
    /// When this grant ends, if before the bundle's own `not_after` (unix seconds).
    pub not_after: Option<u64>,
}

impl SignedGrant {
    /// Whether the grant is in force at `now` (unix seconds) within a bundle valid until
    /// `bundle_not_after`: a grant never outlives its bundle.
    #[must_use]
    pub fn is_live(&self, now: u64, bundle_not_after: u64) -> bool {
        now <= self
            .not_after
            .map_or(bundle_not_after, |t| t.min(bundle_not_after))
    }
}

/// The content of an authorization bundle, checked for syntax but not yet for authority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle {
    /// Who issued it (a team or system). With each scope it keys the serial counter.
    pub issuer: String,
    /// A stable name for this line of bundles; revocation by bundle id names it.
    pub bundle_id: String,
    /// Must grow with each new bundle of an issuer for a scope: that refuses rollback.
    pub serial: u64,
    /// Unix seconds.
    pub issued_at: u64,
    pub not_before: u64,
    pub not_after: u64,
    pub scopes: Vec<ScopePath>,
    pub grants: Vec<SignedGrant>,
    pub mode: Mode,
    pub on_revoke: OnRevoke,
    /// Opt-in for JIT runtimes: in the bundle's scopes, anonymous memory may be made
    /// executable (mmap or mprotect with PROT_EXEC and no file). Then code that no grant
    /// covers can run inside a granted program, so it is off unless a bundle says so.
    pub allow_anonymous_exec: bool,
    /// Opt-in: in the bundle's scopes, files with no name left (memfd, deleted files) may
    /// be executed or mapped executable. Their content must still match a grant, but it
    /// can change after the check, so this is off unless a bundle says so.
    pub allow_fileless: bool,
}

/// Wire form of a bundle. The opt-ins were added to v1 before its release: they are
/// optional, default to false and are left out when false, so a bundle without them
/// serialises exactly as before. An enforcer that predates them refuses a bundle that
/// sets them (unknown field) rather than ignoring what the signers allowed.
#[derive(Serialize, Deserialize)]
struct BundleWire<'a> {
    issuer: String,
    bundle_id: String,
    serial: u64,
    issued_at: u64,
    not_before: u64,
    not_after: u64,
    scopes: Vec<String>,
    mode: Mode,
    on_revoke: OnRevoke,
    #[serde(default, skip_serializing_if = "is_false")]
    allow_anonymous_exec: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    allow_fileless: bool,
    #[serde(borrow)]
    grants: Vec<GrantWire<'a>>,
}

// serde's skip_serializing_if takes a function of a reference.
fn is_false(value: &bool) -> bool {
    !*value
}

// Strings borrow from the payload where JSON allows (no escapes): a bundle of 100 000
// grants then parses without 100 000 allocations for its digests.
#[derive(Serialize, Deserialize)]
struct GrantWire<'a> {
    #[serde(borrow)]
    digest: Cow<'a, str>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    name: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_after: Option<u64>,
}

impl Bundle {
    /// Parses and checks a bundle payload (the bytes inside the envelope).
    pub fn from_payload(payload: &[u8]) -> Result<Self, ArtifactError> {
        let wire: BundleWire = from_json(payload, "bundle payload")?;
        let scopes = wire
            .scopes
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?;
        let grants = wire
            .grants
            .into_iter()
            .enumerate()
            .map(|(index, g)| {
                Ok(SignedGrant {
                    digest: parse_digest(&g.digest, || format!("grant {index}"))?,
                    name: g.name.map(Cow::into_owned),
                    not_after: g.not_after,
                })
            })
            .collect::<Result<_, ArtifactError>>()?;
        let bundle = Self {
            issuer: wire.issuer,
            bundle_id: wire.bundle_id,
            serial: wire.serial,
            issued_at: wire.issued_at,
            not_before: wire.not_before,
            not_after: wire.not_after,
            scopes,
            grants,
            mode: wire.mode,
            on_revoke: wire.on_revoke,
            allow_anonymous_exec: wire.allow_anonymous_exec,
            allow_fileless: wire.allow_fileless,
        };
        bundle.validate()?;
        Ok(bundle)
    }

    /// The payload bytes to sign; refuses a bundle that [`Bundle::from_payload`] would.
    pub fn to_payload(&self) -> Result<Vec<u8>, ArtifactError> {
        self.validate()?;
        let wire = BundleWire {
            issuer: self.issuer.clone(),
            bundle_id: self.bundle_id.clone(),
            serial: self.serial,
            issued_at: self.issued_at,
            not_before: self.not_before,
            not_after: self.not_after,
            scopes: self.scopes.iter().map(ToString::to_string).collect(),
            mode: self.mode,
            on_revoke: self.on_revoke,
            allow_anonymous_exec: self.allow_anonymous_exec,
            allow_fileless: self.allow_fileless,
            grants: self
                .grants
                .iter()
                .map(|g| GrantWire {
                    digest: Cow::Owned(format!("sha256:{}", g.digest)),
                    name: g.name.as_deref().map(Cow::Borrowed),
                    not_after: g.not_after,
                })
                .collect(),
        };
        serde_json::to_vec(&wire).map_err(|e| malformed("bundle payload", e))
    }

    /// The rules that syntax alone does not catch.
    pub fn validate(&self) -> Result<(), ArtifactError> {
        check_label("issuer", &self.issuer)?;
        check_label("bundle_id", &self.bundle_id)?;
        check_time(|| "issued_at".into(), self.issued_at)?;
        check_time(|| "not_before".into(), self.not_before)?;
        check_time(|| "not_after".into(), self.not_after)?;
        for (index, grant) in self.grants.iter().enumerate() {
            if let Some(t) = grant.not_after {
                check_time(|| format!("grant {index} not_after"), t)?;
            }
        }
        if self.not_before > self.not_after {
            return Err(field_error(
                "validity",
                format!(
                    "not_before ({}) is after not_after ({})",
                    format_time(self.not_before),
                    format_time(self.not_after)
                ),
            ));
        }
        check_scopes(&self.scopes, "a bundle")?;
        for (index, grant) in self.grants.iter().enumerate() {
            if let Some(name) = &grant.name {
                check_text(|| format!("grant {index} name"), name)?;
            }
        }
        Ok(())
    }

    /// The grants in force at `now`.
    pub fn live_grants(&self, now: SystemTime) -> impl Iterator<Item = &SignedGrant> {
        let now = unix_seconds(now);
        self.grants
            .iter()
            .filter(move |g| g.is_live(now, self.not_after))
    }
}
