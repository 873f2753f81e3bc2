//! `enforcer bundle drift`: a bundle's package grants against the disk, for cron and CI.
//! Exit codes follow diff(1): 0 same, 1 different, 2 trouble.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::review::read_envelope;
use super::*;
use crate::debian::{Dpkg, GrantName, needs_grant};

const EXIT_DRIFT: u8 = 1;
const EXIT_ERROR: u8 = 2;

#[derive(Debug, Args)]
pub struct DriftArgs {
    /// The bundle (signed or not) made with `bundle create --from-package`.
    #[arg(value_name = "BUNDLE")]
    bundle: PathBuf,
    /// The system to compare with: its files and its dpkg database.
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// Print the report as JSON (the same whether or not there is drift).
    #[arg(long)]
    json: bool,
}

/// The drift of one bundle; `--json` prints exactly this.
#[derive(Debug, Serialize)]
struct DriftReport {
    bundle: String,
    root: String,
    drift: bool,
    packages: Vec<PackageDrift>,
    /// Grants that do not name a package file (`--file`, `--digest`): not checked.
    unchecked_grants: usize,
}

#[derive(Debug, Serialize)]
struct PackageDrift {
    package: String,
    /// Versions the bundle's grants were made from (several only if mixed by hand).
    granted_versions: Vec<String>,
    /// What dpkg says is installed under the root; `None` if it is not (or no database).
    installed_version: Option<String>,
    /// Granted files whose content on disk is not the granted content.
    changed: Vec<ChangedFile>,
    /// Files the installed package has that need a grant and have none. Not checked for a
    /// package granted only for the libraries others need (`libraries_only`).
    new: Vec<NewFile>,
    libraries_only: bool,
    /// Granted files that are not on disk any more.
    gone: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ChangedFile {
    path: String,
    disk_path: String,
    granted: String,
    disk: String,
}

#[derive(Debug, Serialize)]
struct NewFile {
    path: String,
    disk: String,
}

/// Runs the check and maps its outcome to the documented exit codes.
pub(super) fn drift(args: &DriftArgs) -> ExitCode {
    match report(args) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(err) => {
                        eprintln!("error: cannot print the report: {err}");
                        return ExitCode::from(EXIT_ERROR);
                    }
                }
            } else {
                print_text(&report);
            }
            if report.drift {
                ExitCode::from(EXIT_DRIFT)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn report(args: &DriftArgs) -> anyhow::Result<DriftReport> {
    let envelope = read_envelope(&args.bundle, ArtifactKind::Bundle)?;
    let bundle = Bundle::from_payload(&envelope.payload)
        .with_context(|| format!("cannot read {}", args.bundle.display()))?;
    let mut by_package: BTreeMap<String, Vec<(GrantName, FileDigest)>> = BTreeMap::new();
    let mut unchecked_grants = 0;
    for grant in &bundle.grants {
        match grant.name.as_deref().and_then(GrantName::parse) {
            Some(name) => by_package
                .entry(name.package.clone())
                .or_default()
                .push((name, grant.digest)),
            None => unchecked_grants += 1,
        }
    }
    if by_package.is_empty() {
        bail!(
            "{} has no package grants (names deb:PACKAGE/VERSION/ARCH:PATH): make it with \
             `enforcer bundle create --from-package`",
            args.bundle.display()
        );
    }
    let dpkg = Dpkg::open(&args.root)?;
    let mut packages = Vec::new();
    for (package, grants) in by_package {
        packages.push(package_drift(&dpkg, package, &grants)?);
    }
    let drift = packages
        .iter()
        .any(|p| !(p.changed.is_empty() && p.new.is_empty() && p.gone.is_empty()));
    Ok(DriftReport {
        bundle: args.bundle.display().to_string(),
        root: args.root.display().to_string(),
        drift,
        packages,
        unchecked_grants,
    })
}

fn package_drift(
    dpkg: &Dpkg,
    package: String,
    grants: &[(GrantName, FileDigest)],
) -> anyhow::Result<PackageDrift> {
    let mut changed = Vec::new();
    let mut gone = Vec::new();
    let mut granted_paths = BTreeSet::new();
    for (name, digest) in grants {
        // The same path under merged /usr is the same file: a grant of /bin/x covers a
        // package that now ships /usr/bin/x.
        granted_paths.extend(crate::debian::usr_merge_spellings(&name.path));
        let disk_path = dpkg.disk_path(&package, &name.path);
        match FileDigest::of_file(&disk_path) {
            Ok(d) if d == *digest => {}
            Ok(d) => changed.push(ChangedFile {
                path: name.path.clone(),
                disk_path: disk_path.display().to_string(),
                granted: digest.to_string(),
                disk: d.to_string(),
            }),
            Err(_) => gone.push(name.path.clone()),
        }
    }
    let libraries_only = grants.iter().all(|(n, _)| n.library);
    let mut new = Vec::new();
    let owned = if libraries_only {
        Vec::new()
    } else {
        dpkg.files(&package)?
    };
    for path in owned {
        if granted_paths.contains(&path) {
            continue;
        }
        if let Some(digest) = needs_grant(&dpkg.disk_path(&package, &path), &path) {
            new.push(NewFile {
                path,
                disk: digest.to_string(),
            });
        }
    }
    let granted_versions: BTreeSet<String> =
        grants.iter().map(|(n, _)| n.version.clone()).collect();
    Ok(PackageDrift {
        installed_version: dpkg.installed(&package)?.map(|i| i.version),
        granted_versions: granted_versions.into_iter().collect(),
        package,
        changed,
        new,
        libraries_only,
        gone,
    })
}

fn print_text(report: &DriftReport) {
    for p in &report.packages {
        let installed = p.installed_version.as_deref().unwrap_or("not installed");
        println!(
            "{}: granted {}{}, installed {installed}",
            p.package,
            p.granted_versions.join(", "),
            if p.libraries_only {
                " (libraries only: its other files are not expected)"
            } else {
                ""
            }
        );
        for c in &p.changed {
            println!(
                "  changed: {} (at {}): granted {}, disk {}",
                c.path, c.disk_path, c.granted, c.disk
            );
        }
        for n in &p.new {
            println!(
                "  new: {} ({}): in the package, not granted",
                n.path, n.disk
            );
        }
        for g in &p.gone {
            println!("  gone: {g}: granted, not on disk");
        }
    }
    if report.unchecked_grants > 0 {
        println!(
            "{} grant(s) name no package file and were not checked",
            report.unchecked_grants
        );
    }
    println!(
        "{}",
        if report.drift {
            "drift: the disk no longer matches the bundle"
        } else {
            "no drift"
        }
    );
}
