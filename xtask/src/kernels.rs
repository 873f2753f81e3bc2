//! Debian kernels for the VM tests, cached in `target/kernels/<name>/` as `vmlinuz`, `config`
//! (when Debian still publishes it) and a `package` marker. Package names are resolved with a
//! private apt state under `target/apt/<suite>/`, so the system's sources are never touched
//! and a cached kernel needs no network.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::apt::{Apt, Suite};
use crate::workspace::Workspace;

pub(crate) struct KernelSpec {
    pub name: &'static str,
    /// The Debian suite (component `main`) that publishes it.
    suite: &'static str,
    image: Image,
}

/// How to find the package that holds `/boot/vmlinuz-*`.
enum Image {
    /// The dependency of a metapackage whose name starts with `prefix`.
    DependencyOf {
        meta: &'static str,
        prefix: &'static str,
    },
    /// The newest `<prefix><x.y.z>+<tag>-amd64` (no flavour such as `-cloud` or `-rt`).
    Newest {
        prefix: &'static str,
        tag: &'static str,
    },
}

pub(crate) const KNOWN: &[KernelSpec] = &[
    KernelSpec {
        name: "6.1",
        suite: "bookworm",
        image: Image::DependencyOf {
            meta: "linux-image-amd64",
            prefix: "linux-image-6.1.",
        },
    },
    KernelSpec {
        name: "6.12",
        suite: "bookworm-backports",
        image: Image::Newest {
            prefix: "linux-image-6.12.",
            tag: "deb12",
        },
    },
    // 6.19's image package is split: linux-binary-* holds vmlinuz, linux-base-* the config.
    KernelSpec {
        name: "6.19",
        suite: "trixie-backports",
        image: Image::Newest {
            prefix: "linux-binary-6.19.",
            tag: "deb13",
        },
    },
];

/// Kernels `vm-test` and `test` boot by default: each was seen booting with BPF LSM active.
pub(crate) const DEFAULT: &[&str] = &["6.1", "6.12", "6.19"];

const MARKER: &str = "package";

/// The marker line that lists the extracted modules; a marker without it predates them.
const MODULES_LINE: &str = "modules: ";
/// The marker's line naming the [`TEST_MODULES`] that were looked for.
const WANTED_LINE: &str = "modules wanted: ";

/// Modules the scenarios load (paths under `lib/modules/<release>/kernel/`, without the
/// extension): overlayfs for the user-namespace mount, a module with no dependencies and
/// no hardware, loaded and unloaded to show that a scope cannot load one, FUSE (built in
/// from 6.12 on) for a filesystem whose content a process serves, configfs with
/// netconsole, whose targets are configfs directories a scope must not write,
/// test_firmware, which asks for a firmware load on a sysfs write, and the driver of the
/// VM's NIC (qemu.rs), through which the host reaches the agent's console.
const TEST_MODULES: [&str; 7] = [
    "fs/overlayfs/overlay",
    "fs/nls/nls_iso8859-2",
    "fs/fuse/fuse",
    "fs/configfs/configfs",
    "drivers/net/netconsole",
    "lib/test_firmware",
    "drivers/net/ethernet/intel/e1000/e1000",
];

/// clap value parser for `--kernel`.
pub(crate) fn parse_name(name: &str) -> Result<&'static KernelSpec, String> {
    KNOWN.iter().find(|k| k.name == name).ok_or_else(|| {
        let known: Vec<_> = KNOWN.iter().map(|k| k.name).collect();
        format!(
            "unknown kernel `{name}`; known kernels: {}",
            known.join(", ")
        )
    })
}

pub(crate) fn defaults() -> Vec<&'static KernelSpec> {
    KNOWN.iter().filter(|k| DEFAULT.contains(&k.name)).collect()
}

/// A kernel ready to boot.
pub(crate) struct Kernel {
    pub vmlinuz: PathBuf,
    pub config: Option<PathBuf>,
    /// The [`TEST_MODULES`] the package has, as shipped (compressed or not).
    pub modules: Vec<PathBuf>,
    /// What the marker records: package, version, where the config came from.
    pub package: String,
}

impl Kernel {
    /// The built-in LSM order (`CONFIG_LSM`), when the config is known.
    pub(crate) fn config_lsm(&self) -> Result<Option<String>> {
        let Some(path) = &self.config else {
            return Ok(None);
        };
        let text =
            fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(parse_config_lsm(&text))
    }
}

fn parse_config_lsm(config: &str) -> Option<String> {
    let value = config.lines().find_map(|l| l.strip_prefix("CONFIG_LSM="))?;
    Some(value.trim().trim_matches('"').to_owned())
}

/// Makes sure every kernel in `specs` is cached, trying all before reporting failures.
pub(crate) fn ensure_all(ws: &Workspace, specs: &[KernelSpec]) -> Result<()> {
    let mut failed = Vec::new();
    for spec in specs {
        if let Err(err) = ensure(ws, spec) {
            eprintln!("setup: kernel {}: {err:#}", spec.name);
            failed.push(spec.name);
        }
    }
    if !failed.is_empty() {
        bail!(
            "could not download kernel(s) {}; see the messages above",
            failed.join(", ")
        );
    }
    Ok(())
}

/// The cached kernel, downloading it first if needed.
pub(crate) fn ensure(ws: &Workspace, spec: &KernelSpec) -> Result<Kernel> {
    let dir = ws.target.join("kernels").join(spec.name);
    if let Some(kernel) = cached(&dir) {
        println!("setup: kernel {} cached ({})", spec.name, kernel.package);
        return Ok(kernel);
    }
    println!(
        "setup: downloading kernel {} from Debian {}",
        spec.name, spec.suite
    );
    download(ws, spec, &dir)?;
    let kernel = cached(&dir).context("the download finished but left no kernel behind")?;
    println!("setup: kernel {} ready ({})", spec.name, kernel.package);
    Ok(kernel)
}

fn cached(dir: &Path) -> Option<Kernel> {
    let vmlinuz = dir.join("vmlinuz");
    // The marker is written last, so its presence means the copy finished.
    let package = fs::read_to_string(dir.join(MARKER)).ok()?;
    let wanted = wanted_line();
    if !package.lines().any(|l| l.starts_with(MODULES_LINE))
        || !package.lines().any(|l| l == wanted)
    {
        // Cached before these modules were wanted: fetch again.
        return None;
    }
    let config = dir.join("config");
    let modules = fs::read_dir(dir.join("modules"))
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    vmlinuz.is_file().then(|| Kernel {
        vmlinuz,
        config: config.is_file().then_some(config),
        modules,
        package: package.lines().collect::<Vec<_>>().join(", "),
    })
}

fn download(ws: &Workspace, spec: &KernelSpec, dir: &Path) -> Result<()> {
    let apt = Apt::new(
        &ws.target.join("apt").join(spec.suite),
        &[Suite::new(spec.suite)],
    )?;
    apt.update()?;
    let image = resolve(&apt, &spec.image)?;

    let work = ws
        .target
        .join("kernels")
        .join(format!(".{}.tmp", spec.name));
    recreate_dir(&work)?;
    let tree = work.join("tree");
    let version = apt.fetch(&image, &work, &tree)?;
    let vmlinuz = find_vmlinuz(&tree.join("boot"))?;
    let release = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .context("vmlinuz file name has no kernel release")?
        .to_owned();

    // Split packages keep the config in linux-base-<release>, which Debian removes from
    // the archive before the signed binary; then we boot without it (the VM itself checks
    // that BPF LSM is active).
    let mut config = Some(tree.join("boot").join(format!("config-{release}")));
    let mut config_from = image.clone();
    if !config.as_ref().is_some_and(|c| c.is_file()) {
        let base = format!("linux-base-{release}");
        config = None;
        config_from = format!("none ({base} is not in the archive)");
        if apt.knows(&base)? {
            apt.fetch(&base, &work, &tree)?;
            let path = tree.join("usr/lib/modules").join(&release).join("config");
            if path.is_file() {
                config = Some(path);
                config_from = base;
            }
        }
    }

    // Split packages keep the modules in linux-modules-<release>.
    let mut modules = test_modules(&tree, &release);
    if modules.is_empty() {
        let package = format!("linux-modules-{release}");
        if apt.knows(&package)? {
            apt.fetch(&package, &work, &tree)?;
            modules = test_modules(&tree, &release);
        }
    }

    recreate_dir(dir)?;
    copy(&vmlinuz, &dir.join("vmlinuz"))?;
    if let Some(config) = &config {
        copy(config, &dir.join("config"))?;
    }
    fs::create_dir_all(dir.join("modules"))?;
    let mut names = Vec::new();
    for module in &modules {
        let name = module.file_name().context("module path has no file name")?;
        copy(module, &dir.join("modules").join(name))?;
        names.push(name.to_string_lossy().into_owned());
    }
    let names = if names.is_empty() {
        "none (not in the package, or no package in the archive)".to_owned()
    } else {
        names.join(" ")
    };
    let marker = format!(
        "{image} {version}\nconfig: {config_from}\n{MODULES_LINE}{names}\n{}\n",
        wanted_line()
    );
    fs::write(dir.join(MARKER), marker)
        .with_context(|| format!("cannot write {}", dir.join(MARKER).display()))?;
    fs::remove_dir_all(&work).with_context(|| format!("cannot remove {}", work.display()))
}

fn wanted_line() -> String {
    format!("{WANTED_LINE}{}", TEST_MODULES.join(" "))
}

/// The [`TEST_MODULES`] found in an unpacked kernel package, whatever their compression.
fn test_modules(tree: &Path, release: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for base in ["lib/modules", "usr/lib/modules"] {
        let kernel = tree.join(base).join(release).join("kernel");
        for module in TEST_MODULES {
            let path = kernel.join(module);
            let (Some(dir), Some(stem)) = (path.parent(), path.file_name()) else {
                continue;
            };
            let prefix = format!("{}.ko", stem.to_string_lossy());
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            found.extend(
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                    }),
            );
        }
    }
    found
}

fn find_vmlinuz(boot: &Path) -> Result<PathBuf> {
    let entries = fs::read_dir(boot)
        .with_context(|| format!("the package has no /boot ({})", boot.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("vmlinuz-"))
        {
            return Ok(path);
        }
    }
    bail!("the package has no /boot/vmlinuz-*")
}

fn resolve(apt: &Apt, image: &Image) -> Result<String> {
    match image {
        Image::DependencyOf { meta, prefix } => {
            let depends = apt
                .field(meta, "Depends")?
                .with_context(|| format!("{meta} has no Depends field"))?;
            dependency_with_prefix(&depends, prefix).with_context(|| {
                format!("{meta} does not depend on a {prefix}* package (Depends: {depends})")
            })
        }
        Image::Newest { prefix, tag } => {
            let names = apt.names_starting_with(prefix)?;
            newest(&names, prefix, tag)
                .with_context(|| format!("no {prefix}*+{tag}-amd64 package in {}", apt.label()))
        }
    }
}

/// The package named `prefix...-amd64` in a Depends field (`a (= 1), b | c`).
fn dependency_with_prefix(depends: &str, prefix: &str) -> Option<String> {
    depends
        .split([',', '|'])
        .filter_map(|dep| dep.split_whitespace().next())
        .find(|name| name.starts_with(prefix) && name.ends_with("-amd64"))
        .map(str::to_owned)
}

/// The highest `<prefix><x.y.z>+<tag>-amd64` among `names`.
fn newest(names: &[String], prefix: &str, tag: &str) -> Option<String> {
    let version_of = |name: &str| -> Option<Vec<u32>> {
        let middle = name
            .strip_prefix("linux-")?
            .split_once('-')?
            .1
            .strip_suffix("-amd64")?;
        // A dash left in the middle is a flavour (`-cloud`, `-rt`): not the plain kernel.
        let (upstream, deb) = middle.split_once('+')?;
        if middle.contains('-') || !deb.starts_with(tag) {
            return None;
        }
        upstream.split('.').map(|part| part.parse().ok()).collect()
    };
    names
        .iter()
        .filter(|n| n.starts_with(prefix))
        .filter_map(|n| Some((version_of(n)?, n)))
        .max()
        .map(|(_, n)| n.clone())
}

fn recreate_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn newest_plain_flavour_by_numeric_version() {
        let list = names(&[
            "linux-image-6.12.9+deb12-amd64",
            "linux-image-6.12.95+deb12-amd64",
            "linux-image-6.12.95+deb12-amd64-dbg",
            "linux-image-6.12.96+deb12-cloud-amd64",
            "linux-image-6.12.99+deb13-amd64",
            "linux-image-6.13.1+deb12-amd64",
        ]);
        assert_eq!(
            newest(&list, "linux-image-6.12.", "deb12").as_deref(),
            Some("linux-image-6.12.95+deb12-amd64")
        );
        let list = names(&[
            "linux-binary-6.19.8+deb13-amd64",
            "linux-binary-6.19.14+deb13-amd64",
        ]);
        assert_eq!(
            newest(&list, "linux-binary-6.19.", "deb13").as_deref(),
            Some("linux-binary-6.19.14+deb13-amd64")
        );
        assert_eq!(newest(&[], "linux-image-6.12.", "deb12"), None);
    }

    #[test]
    fn dependency_of_metapackage() {
        let depends = "linux-image-6.1.0-50-amd64 (= 6.1.176-1)";
        assert_eq!(
            dependency_with_prefix(depends, "linux-image-6.1.").as_deref(),
            Some("linux-image-6.1.0-50-amd64")
        );
        let newer = "linux-base-amd64 (= 7.3.4-1), linux-image-7.3.4+deb13-amd64 (= 7.3.4-1)";
        assert_eq!(dependency_with_prefix(newer, "linux-image-6.1."), None);
    }

    #[test]
    fn config_lsm() {
        let config = "CONFIG_LSM_MMAP_MIN_ADDR=65536\nCONFIG_LSM=\"landlock,lockdown,bpf\"\n";
        assert_eq!(
            parse_config_lsm(config).as_deref(),
            Some("landlock,lockdown,bpf")
        );
        assert_eq!(parse_config_lsm("# CONFIG_LSM is not set\n"), None);
    }

    #[test]
    fn unknown_kernel_lists_known_ones() {
        let err = parse_name("5.4").err().unwrap_or_default();
        assert!(err.contains("6.1, 6.12, 6.19"), "{err}");
        assert!(parse_name("6.12").is_ok());
    }
}
