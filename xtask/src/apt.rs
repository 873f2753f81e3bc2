//! apt-get and apt-cache on a private state directory (`target/apt/<name>/`) with sources of
//! our choosing, so the system's sources and lists are never touched.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cmd;

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const MIRROR: &str = "http://deb.debian.org/debian";
const SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";

/// A Debian suite (component `main`), such as `bookworm` or `trixie-backports`.
pub(crate) struct Suite(String);

impl Suite {
    pub(crate) fn new(name: &str) -> Suite {
        Suite(name.to_owned())
    }

    fn source_line(&self) -> String {
        let mirror = if self.0.ends_with("-security") {
            SECURITY_MIRROR
        } else {
            MIRROR
        };
        format!("deb [signed-by={KEYRING}] {mirror} {} main\n", self.0)
    }
}

pub(crate) struct Apt {
    dir: PathBuf,
    /// What the sources are, for messages.
    label: String,
}

impl Apt {
    pub(crate) fn new(dir: &Path, suites: &[Suite]) -> Result<Apt> {
        if !Path::new(KEYRING).is_file() {
            bail!("{KEYRING} is missing: install the debian-archive-keyring package");
        }
        for sub in ["lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
        }
        let sources: String = suites.iter().map(|s| s.source_line()).collect();
        fs::write(dir.join("sources.list"), sources)
            .with_context(|| format!("cannot write {}/sources.list", dir.display()))?;
        let names: Vec<_> = suites.iter().map(|s| s.0.as_str()).collect();
        Ok(Apt {
            dir: dir.to_owned(),
            label: format!("Debian {}", names.join(" + ")),
        })
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let opt = |name: &str, value: &Path| format!("{name}={}", value.display());
        for option in [
            opt("Dir::Etc::SourceList", &self.dir.join("sources.list")),
            opt("Dir::Etc::SourceParts", Path::new("/dev/null")),
            opt("Dir::Etc::Preferences", Path::new("/dev/null")),
            opt("Dir::Etc::PreferencesParts", Path::new("/dev/null")),
            opt("Dir::State::Lists", &self.dir.join("lists")),
            opt("Dir::Cache", &self.dir.join("cache")),
            // Downloads land in our own directory; the _apt sandbox user may not reach it.
            "APT::Sandbox::User=root".to_owned(),
            "Acquire::Languages=none".to_owned(),
            "Dpkg::Use-Pty=0".to_owned(),
        ] {
            cmd.arg("-o").arg(option);
        }
        cmd.arg("-q").env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    pub(crate) fn update(&self) -> Result<()> {
        cmd::run(self.command("apt-get").arg("update"))
            .with_context(|| format!("cannot fetch the package lists of {}", self.label))
    }

    pub(crate) fn names_starting_with(&self, prefix: &str) -> Result<Vec<String>> {
        let out = cmd::stdout(self.command("apt-cache").args(["pkgnames", prefix]))?;
        Ok(out.lines().map(str::to_owned).collect())
    }

    pub(crate) fn knows(&self, package: &str) -> Result<bool> {
        Ok(self
            .names_starting_with(package)?
            .iter()
            .any(|n| n == package))
    }

    /// One field of the candidate version's record.
    pub(crate) fn field(&self, package: &str, field: &str) -> Result<Option<String>> {
        let out =
            cmd::stdout(
                self.command("apt-cache")
                    .args(["show", "--no-all-versions", package]),
            )?;
        let prefix = format!("{field}: ");
        Ok(out
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(str::to_owned))
    }

    /// Downloads `package` into `work`, unpacks it into `tree` and returns its version.
    pub(crate) fn fetch(&self, package: &str, work: &Path, tree: &Path) -> Result<String> {
        cmd::run(
            self.command("apt-get")
                .arg("download")
                .arg(package)
                .current_dir(work),
        )
        .with_context(|| format!("cannot download {package} from {}", self.label))?;
        let deb = fs::read_dir(work)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                name.starts_with(&format!("{package}_")) && name.ends_with(".deb")
            })
            .with_context(|| format!("apt-get download left no {package}_*.deb"))?;
        let version = cmd::stdout(
            Command::new("dpkg-deb")
                .args(["-f"])
                .arg(&deb)
                .arg("Version"),
        )?;
        cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(tree))?;
        fs::remove_file(&deb).with_context(|| format!("cannot remove {}", deb.display()))?;
        Ok(version.trim().to_owned())
    }
}
