//! `enforcer bundle apt-hook`: run by apt before it unpacks packages
//! (`DPkg::Pre-Install-Pkgs`), it says which grants of the governed bundles the new
//! packages would break, and writes an unsigned candidate bundle (serial + 1) granting the
//! new content, for the security team to sign. It never blocks apt: it always exits 0 and
//! gives up after `--timeout`.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::sync::mpsc;

use super::create::write_unsigned;
use super::review::read_envelope;
use super::*;
use crate::debian::{DebContent, GrantName, PackageSource, usr_merge_spellings};

#[derive(Debug, Args)]
pub struct AptHookArgs {
    /// Directory of the governed bundles (what the agent loads); files that are not
    /// bundles are skipped.
    #[arg(long, value_name = "DIR", default_value = crate::paths::BUNDLE_DIR, env = "ENFORCER_BUNDLE_DIR")]
    bundle_dir: PathBuf,
    /// Where candidate bundles are written (created if missing).
    #[arg(long, value_name = "DIR", default_value = crate::paths::APT_CANDIDATES, env = "ENFORCER_APT_CANDIDATES")]
    out_dir: PathBuf,
    /// Give up after this long, leaving apt to go on: an upgrade is never held up.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "120s")]
    timeout: Duration,
    /// OpenPGP keyring apt's InRelease files are signed with; repeat for several.
    #[arg(long = "keyring", value_name = "FILE", default_value = crate::debian::DEBIAN_KEYRING)]
    keyrings: Vec<PathBuf>,
    /// apt's lists directory.
    #[arg(long, value_name = "DIR", default_value = crate::debian::APT_LISTS)]
    apt_lists: PathBuf,
}

/// Reads the `.deb` list from stdin and reports; always exit 0.
pub(super) fn apt_hook(args: AptHookArgs) -> ExitCode {
    let mut input = String::new();
    // apt writes the whole list before it waits for us; reading it all keeps apt from
    // seeing a closed pipe whatever happens next.
    if let Err(err) = std::io::stdin().take(16 << 20).read_to_string(&mut input) {
        eprintln!("enforcer apt-hook: cannot read the package list from apt: {err}");
        return ExitCode::SUCCESS;
    }
    let debs = parse_pre_install_pkgs(&input);
    if debs.is_empty() {
        return ExitCode::SUCCESS;
    }
    let timeout = args.timeout;
    let (tx, rx) = mpsc::channel();
    // The work runs on its own thread so the deadline holds even inside a stuck read; on
    // timeout the process exits and takes the thread with it.
    std::thread::spawn(move || {
        let _ = tx.send(check(&args, &debs));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(())) => {}
        Ok(Err(err)) => eprintln!("enforcer apt-hook: {err:#} (apt goes on)"),
        Err(_) => eprintln!(
            "enforcer apt-hook: gave up after {} (apt goes on); check the governed bundles with \
             `enforcer bundle drift` after the upgrade",
            humantime::format_duration(timeout)
        ),
    }
    ExitCode::SUCCESS
}

/// The `.deb` paths of a `Pre-Install-Pkgs` run. Version 1 (apt's default) is one path a
/// line; versions 2 and 3 start with `VERSION n`, then configuration up to a blank line,
/// then one line per package whose last field is the `.deb` (or `**CONFIGURE**`,
/// `**REMOVE**`, which unpack nothing).
fn parse_pre_install_pkgs(input: &str) -> Vec<PathBuf> {
    let body = if input.starts_with("VERSION ") {
        input.split_once("\n\n").map_or("", |(_, rest)| rest)
    } else {
        input
    };
    body.lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|f| f.ends_with(".deb"))
        .map(PathBuf::from)
        .collect()
}

fn check(args: &AptHookArgs, debs: &[PathBuf]) -> anyhow::Result<()> {
    let bundles = governed_bundles(&args.bundle_dir)?;
    let governed: std::collections::BTreeSet<String> = bundles
        .iter()
        .flat_map(|(_, b)| b.grants.iter())
        .filter_map(|g| g.name.as_deref().and_then(GrantName::parse))
        .map(|n| n.package)
        .collect();
    // Only the .debs of governed packages are read: the others change no grant.
    let relevant: Vec<PathBuf> = debs
        .iter()
        .filter(|d| deb_package(d).is_some_and(|p| governed.contains(&p)))
        .cloned()
        .collect();
    if relevant.is_empty() {
        return Ok(());
    }
    let source = PackageSource::new(
        &args.apt_lists,
        &args.keyrings,
        unix_seconds(SystemTime::now()),
    )?;
    let contents = source.read_debs(&relevant)?;
    for (path, bundle) in bundles {
        let regrant = regrant(&bundle.grants, &contents);
        if !regrant.touched {
            continue;
        }
        for line in &regrant.breaks {
            println!("enforcer apt-hook: {}: would break: {line}", path.display());
        }
        let now = unix_seconds(SystemTime::now());
        let candidate = Bundle {
            serial: bundle.serial.saturating_add(1),
            issued_at: now,
            not_before: now,
            // The same length of validity as the bundle it replaces.
            not_after: now.saturating_add(bundle.not_after.saturating_sub(bundle.not_before)),
            grants: regrant.grants,
            ..bundle.clone()
        };
        crate::fsutil::create_private_dir(&args.out_dir)
            .with_context(|| format!("cannot create {}", args.out_dir.display()))?;
        let stem = path
            .file_stem()
            .map_or_else(|| "bundle".to_owned(), |s| s.to_string_lossy().into_owned());
        let out = args
            .out_dir
            .join(format!("{stem}.serial-{}.json", candidate.serial));
        write_unsigned(
            ArtifactKind::Bundle,
            candidate.to_payload()?,
            &Output { out, force: true },
        )?;
    }
    Ok(())
}

/// The package a `.deb` says it is, without authenticating it (only to pick which to
/// read): apt names them PACKAGE_VERSION_ARCH.deb.
fn deb_package(deb: &Path) -> Option<String> {
    let name = deb.file_name()?.to_str()?;
    name.split('_').next().map(str::to_owned)
}

/// Every bundle in `dir`, with its path.
fn governed_bundles(dir: &Path) -> anyhow::Result<Vec<(PathBuf, Bundle)>> {
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    paths.sort();
    for path in paths.into_iter().filter(|p| p.is_file()) {
        // Revocations and other artifacts share the directory: not bundles, skipped.
        let Ok(envelope) = read_envelope(&path, ArtifactKind::Bundle) else {
            continue;
        };
        out.push((path, Bundle::from_payload(&envelope.payload)?));
    }
    Ok(out)
}

/// A bundle's grants redone for the packages about to be unpacked.
#[derive(Debug, Default)]
struct Regrant {
    grants: Vec<SignedGrant>,
    /// What would stop running, one line each.
    breaks: Vec<String>,
    /// Whether any grant names a package in `contents`.
    touched: bool,
}

/// Keeps the grants of packages not being unpacked; replaces those of packages that are:
/// a package granted whole gets every file of its new version, a library package the
/// files at the granted paths. Each grant keeps its own expiry.
fn regrant(grants: &[SignedGrant], contents: &[DebContent]) -> Regrant {
    let mut out = Regrant::default();
    let by_package: BTreeMap<&str, &DebContent> = contents
        .iter()
        .map(|c| (c.control.package.as_str(), c))
        .collect();
    let mut whole_done = std::collections::BTreeSet::new();
    for grant in grants {
        let parsed = grant.name.as_deref().and_then(GrantName::parse);
        let Some((name, content)) =
            parsed.and_then(|n| by_package.get(n.package.as_str()).map(|c| (n, *c)))
        else {
            out.grants.push(grant.clone());
            continue;
        };
        out.touched = true;
        let spellings = usr_merge_spellings(&name.path);
        let replacement = content.files.iter().find(|f| spellings.contains(&f.path));
        match replacement {
            Some(file) if file.digest == grant.digest => {}
            Some(file) => out.breaks.push(format!(
                "{} ({} {} -> {}): content changes, sha256 {} -> {}",
                name.path,
                name.package,
                name.version,
                content.control.version,
                grant.digest,
                file.digest
            )),
            None => out.breaks.push(format!(
                "{} ({} {} -> {}): no longer shipped",
                name.path, name.package, name.version, content.control.version
            )),
        }
        if name.library {
            if let Some(file) = replacement {
                let mut new = GrantName::of(content, file);
                new.library = true;
                out.grants.push(SignedGrant {
                    digest: file.digest,
                    name: Some(new.to_string()),
                    not_after: grant.not_after,
                });
            }
        } else if whole_done.insert(name.package.clone()) {
            out.grants.extend(content.files.iter().map(|f| SignedGrant {
                digest: f.digest,
                name: Some(GrantName::of(content, f).to_string()),
                not_after: grant.not_after,
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debian::{ArchiveFile, Control, FileKind};

    fn content(version: &str, files: &[(&str, u8)]) -> DebContent {
        DebContent {
            control: Control {
                package: "tool".into(),
                version: version.into(),
                architecture: "amd64".into(),
            },
            conffiles: Default::default(),
            files: files
                .iter()
                .map(|(p, d)| ArchiveFile {
                    path: (*p).into(),
                    digest: FileDigest([*d; 32]),
                    kind: FileKind::Elf,
                })
                .collect(),
            symlinks: Vec::new(),
        }
    }

    fn grants_of(c: &DebContent) -> Vec<SignedGrant> {
        c.files
            .iter()
            .map(|f| SignedGrant {
                digest: f.digest,
                name: Some(GrantName::of(c, f).to_string()),
                not_after: Some(9),
            })
            .collect()
    }

    #[test]
    fn an_upgrade_names_what_breaks_and_grants_the_new_version() {
        let old = content("1", &[("/usr/bin/a", 1), ("/usr/bin/b", 2)]);
        let new = content("2", &[("/usr/bin/a", 1), ("/usr/bin/c", 3)]);
        let other = SignedGrant {
            digest: FileDigest([7; 32]),
            name: Some("/opt/x".into()),
            not_after: None,
        };
        let mut grants = grants_of(&old);
        grants.push(other.clone());
        let r = regrant(&grants, std::slice::from_ref(&new));
        assert!(r.touched);
        assert_eq!(r.breaks.len(), 1, "{:?}", r.breaks);
        assert!(r.breaks[0].contains("/usr/bin/b (tool 1 -> 2): no longer shipped"));
        let mut expected = grants_of(&new);
        expected.push(other);
        assert_eq!(r.grants, expected);
    }

    #[test]
    fn packages_not_unpacked_leave_the_bundle_alone() {
        let old = content("1", &[("/usr/bin/a", 1)]);
        let mut unrelated = content("5", &[("/usr/bin/z", 9)]);
        unrelated.control.package = "other".into();
        let r = regrant(&grants_of(&old), &[unrelated]);
        assert!(!r.touched);
        assert_eq!(r.grants, grants_of(&old));
    }

    #[test]
    fn the_protocol_gives_deb_paths_in_every_version() {
        assert_eq!(
            parse_pre_install_pkgs("/var/cache/apt/archives/a_1_amd64.deb\n**CONFIGURE**\n"),
            [PathBuf::from("/var/cache/apt/archives/a_1_amd64.deb")]
        );
        let v2 =
            "VERSION 2\nAPT::Architecture=amd64\n\na 1 < 2 /c/a_2_amd64.deb\nb 1 > - **REMOVE**\n";
        assert_eq!(
            parse_pre_install_pkgs(v2),
            [PathBuf::from("/c/a_2_amd64.deb")]
        );
    }
}
