//! `enforcer bundle create --from-package`: grants for what Debian packages ship, with
//! digests from the archive authenticated through apt's signed chain, and a report of
//! every file on disk that differs. `docs/packages.md` is the long form.

use std::collections::BTreeMap;

use super::*;
use crate::debian::{self, DebContent, DiskCheck, DiskGrant, DiskState, Dpkg, PackageSource};

/// Exit code of `bundle create --from-package` when it wrote the bundle but a file on disk
/// differs from its package (1 stays "nothing written, see the error").
pub(super) const EXIT_DISK_DRIFT: u8 = 3;

#[derive(Debug, Args)]
pub(super) struct PackageArgs {
    /// Grant every program, script and shared object that the installed (or named)
    /// version of a Debian package ships: PACKAGE or PACKAGE=VERSION. Repeat for several.
    /// Digests come from the package archive, authenticated through apt's signed chain
    /// (InRelease, Packages, .deb); each grant is named deb:PACKAGE/VERSION/ARCH:PATH so
    /// `enforcer bundle drift` can compare it with the disk later.
    #[arg(long = "from-package", value_name = "PACKAGE[=VERSION]")]
    pub(super) packages: Vec<String>,
    /// Like --from-package, for a .deb file at hand (what an apt hook is given). It must
    /// still be the exact file a verified package index lists.
    #[arg(long = "from-deb", value_name = "FILE")]
    pub(super) debs: Vec<PathBuf>,
    /// The system whose disk is compared with the packages (and whose dpkg database says
    /// what is installed, diverted and which alternatives exist).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub(super) root: PathBuf,
    /// Exit 0 even if files on disk differ from their packages. They are reported either
    /// way, and the bundle grants the archive's content, never the disk's.
    #[arg(long)]
    pub(super) allow_drift: bool,
    /// Take digests from the disk, keeping only files whose MD5 matches dpkg's record.
    /// WEAKER than the default: whoever could change a file could change dpkg's MD5 list,
    /// and MD5 collisions are cheap. For hosts with no apt lists or mirror.
    #[arg(long, conflicts_with_all = ["debs", "allow_drift"])]
    pub(super) trust_disk: bool,
    /// OpenPGP keyring InRelease files must be signed with (as apt's Signed-By). Repeat
    /// for several. Default: Debian's archive keyring.
    #[arg(long = "keyring", value_name = "FILE", default_value = debian::DEBIAN_KEYRING)]
    pub(super) keyrings: Vec<PathBuf>,
    /// apt's lists directory (InRelease and Packages files from `apt-get update`).
    #[arg(long, value_name = "DIR", default_value = debian::APT_LISTS)]
    pub(super) apt_lists: PathBuf,
}

impl PackageArgs {
    pub(super) fn is_empty(&self) -> bool {
        self.packages.is_empty() && self.debs.is_empty()
    }
}

/// What `--from-package` adds to a bundle, and whether the disk drifted.
pub(super) struct PackageGrants {
    pub(super) grants: Vec<SignedGrant>,
    pub(super) drift: bool,
}

/// Grants for every package named, and (with `with_libraries`) for the libraries their
/// programs load, each from the package that ships it.
pub(super) fn package_grants(
    args: &PackageArgs,
    with_libraries: bool,
) -> anyhow::Result<PackageGrants> {
    let dpkg = Dpkg::open(&args.root)?;
    if args.trust_disk {
        if with_libraries {
            bail!(
                "--with-libraries takes library digests from their packages' archives, which \
                 --trust-disk does not use: grant the libraries' packages by name instead"
            );
        }
        return disk_grants(args, &dpkg);
    }
    let source = PackageSource::new(
        &args.apt_lists,
        &args.keyrings,
        unix_seconds(SystemTime::now()),
    )
    .context("cannot authenticate apt's package lists")?;
    for skipped in source.skipped() {
        eprintln!("note: skipped a source whose InRelease did not verify: {skipped}");
    }
    let work = tempfile::tempdir().context("cannot create a download directory")?;
    let mut debs = args.debs.clone();
    for spec in &args.packages {
        let (package, version) = match spec.split_once('=') {
            Some((p, v)) => (p.to_owned(), v.to_owned()),
            None => (spec.clone(), source.default_version(spec, &dpkg)?),
        };
        debs.push(
            source
                .fetch(&package, &version, work.path())
                .with_context(|| format!("cannot get {package} {version}"))?,
        );
    }
    let contents = source.read_debs(&debs)?;
    let mut checks: Vec<DiskCheck> = Vec::new();
    for content in &contents {
        checks.extend(report_package(content, &dpkg, &args.root));
    }
    if with_libraries {
        let libraries = library_checks(&source, &checks, work.path())?;
        checks.extend(libraries);
    }
    let drift = checks
        .iter()
        .any(|c| matches!(c.state, DiskState::Differs(_)));
    if drift {
        eprintln!(
            "warning: files on disk differ from their packages; the bundle grants the archive's \
             content, so the disk's will not run in a governed scope{}",
            if args.allow_drift {
                " (--allow-drift: exit 0)"
            } else {
                ""
            }
        );
    }
    let grants = checks
        .iter()
        .map(|c| SignedGrant {
            digest: c.digest,
            name: Some(c.name.to_string()),
            not_after: None,
        })
        .collect();
    Ok(PackageGrants {
        grants,
        drift: drift && !args.allow_drift,
    })
}

/// Prints what one package contributes and how the disk compares; returns the checks.
fn report_package(content: &DebContent, dpkg: &Dpkg, root: &Path) -> Vec<DiskCheck> {
    let c = &content.control;
    let checks = debian::check_disk(content, dpkg);
    println!(
        "{} {} {}: {} file(s) to grant, digests from the archive (trust: archive, verified \
         through InRelease, Packages and the .deb's SHA-256)",
        c.package,
        c.version,
        c.architecture,
        checks.len()
    );
    let alternatives = dpkg.alternatives();
    let mut missing = 0;
    for check in &checks {
        let path = &check.name.path;
        match &check.state {
            DiskState::Same => {}
            DiskState::Missing => missing += 1,
            DiskState::Differs(disk) => {
                let why = if check.conffile {
                    " (a conffile: dpkg keeps local edits)"
                } else {
                    ""
                };
                println!(
                    "  drift: {} differs from the package{why}: disk {disk}, archive {}",
                    check.disk_path.display(),
                    check.digest
                );
            }
        }
        if let Some(to) = &check.diverted_to {
            println!("  note: {path} is diverted to {to}: that is where it was compared");
        }
        for name in alternatives.get(path).into_iter().flatten() {
            println!("  note: {path} is also run as the alternative {name}");
        }
    }
    if missing > 0 {
        println!(
            "  note: {missing} file(s) not on disk under {} (package not installed there, or \
             another version)",
            root.display()
        );
    }
    checks
}

/// `--with-libraries` for packages: the loader and libraries each granted ELF file needs,
/// resolved on this host the way the loader does, each attributed to the package dpkg
/// says ships it and granted with the digest from that package's archive.
fn library_checks(
    source: &PackageSource,
    checks: &[DiskCheck],
    work: &Path,
) -> anyhow::Result<Vec<DiskCheck>> {
    let host = Dpkg::open(Path::new("/"))?;
    let (elves, unresolved): (Vec<&DiskCheck>, Vec<&DiskCheck>) = checks
        .iter()
        .filter(|c| c.kind != debian::FileKind::Script)
        .partition(|c| c.state == DiskState::Same);
    // Libraries are found by reading DT_NEEDED from the disk, so only from files that are
    // what the archive says; the others would resolve what someone else's file needs.
    for check in unresolved {
        println!(
            "  note: the libraries of {} are not resolved: it is not on disk as packaged",
            check.name.path
        );
    }
    let elves: Vec<PathBuf> = elves.iter().map(|c| c.disk_path.clone()).collect();
    let ours: Vec<PathBuf> = elves
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    let closure = crate::host::elf::with_dependencies(&elves)
        .context("cannot resolve the libraries of the packages' programs (--with-libraries)")?;
    // Libraries by owning package, so each package is fetched and read once.
    let mut by_package: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for library in closure.iter().filter(|p| !ours.contains(p)) {
        let path = library.display().to_string();
        let owners = host.owners(&path)?;
        let Some(owner) = owners.first() else {
            bail!(
                "{path} is needed but no installed package ships it: grant it with --file, or \
                 install it from a package"
            );
        };
        by_package.entry(owner.clone()).or_default().push(path);
    }
    let mut out = Vec::new();
    for (package, paths) in by_package {
        let version = source.default_version(&package, &host)?;
        let deb = source
            .fetch(&package, &version, work)
            .with_context(|| format!("cannot get {package} {version} for its libraries"))?;
        let contents = source.read_debs(&[deb])?;
        let Some(content) = contents.first() else {
            continue;
        };
        let all = debian::check_disk(content, &host);
        for path in &paths {
            let spellings = debian::usr_merge_spellings(path);
            let check = all
                .iter()
                .find(|c| spellings.contains(&c.name.path))
                .with_context(|| {
                    format!("{package} {version} does not ship {path} as a file dpkg-deb lists")
                })?;
            if let DiskState::Differs(disk) = &check.state {
                println!(
                    "  drift: library {} differs from {package}: disk {disk}, archive {}",
                    check.disk_path.display(),
                    check.digest
                );
            }
            let mut check = check.clone();
            check.name.library = true;
            out.push(check);
        }
        println!(
            "{package} {version}: {} librar(y/ies) needed, digests from the archive",
            paths.len()
        );
    }
    Ok(out)
}

/// `--trust-disk`: digests from the disk, checked against dpkg's MD5s.
fn disk_grants(args: &PackageArgs, dpkg: &Dpkg) -> anyhow::Result<PackageGrants> {
    let mut grants = Vec::new();
    let mut refused = false;
    for spec in &args.packages {
        if spec.contains('=') {
            bail!("--trust-disk grants what is installed: name {spec} without a version");
        }
        let found = debian::grants_from_disk(spec, dpkg)
            .with_context(|| format!("cannot grant {spec} from disk: is it installed?"))?;
        let granted = found
            .iter()
            .filter(|g| matches!(g, DiskGrant::Granted { .. }))
            .count();
        println!(
            "{spec}: {granted} file(s) to grant, digests from the DISK (trust: disk, checked \
             against dpkg's MD5s only: weaker than the archive, see docs/packages.md)"
        );
        for grant in found {
            match grant {
                DiskGrant::Granted { name, digest } => grants.push(SignedGrant {
                    digest,
                    name: Some(name.to_string()),
                    not_after: None,
                }),
                DiskGrant::Refused { name, reason } => {
                    refused = true;
                    println!("  refused: {}: {reason}; not granted", name.path);
                }
            }
        }
    }
    Ok(PackageGrants {
        grants,
        drift: refused,
    })
}
