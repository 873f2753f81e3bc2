//! dpkg's database under a root: what is installed, which files a package owns, their
//! MD5s, diversions and alternatives. Read through `dpkg-query --admindir` where dpkg has
//! a query for it, so the database format stays dpkg's business.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{DebianError, LOCAL_TIMEOUT, output, run, under_root};

/// One `dpkg-divert` record: dpkg installs `package`'s `from` as `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diversion {
    pub from: String,
    pub to: String,
    /// The package that owns the diversion; `None` for a local (administrator's) one.
    pub by: Option<String>,
}

/// An installed package version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    pub version: String,
    pub architecture: String,
}

/// dpkg's view of the system under `root`.
#[derive(Debug)]
pub struct Dpkg {
    root: PathBuf,
    admindir: PathBuf,
    diversions: Vec<Diversion>,
}

impl Dpkg {
    /// The database at `root/var/lib/dpkg`, if there is one (an unpacked test root may
    /// have none: then nothing is installed and nothing is diverted).
    pub fn open(root: &Path) -> Result<Self, DebianError> {
        let admindir = root.join("var/lib/dpkg");
        let diversions = match std::fs::read_to_string(admindir.join("diversions")) {
            Ok(text) => parse_diversions(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(DebianError::Io {
                    path: admindir.join("diversions"),
                    source,
                });
            }
        };
        Ok(Self {
            root: root.to_owned(),
            admindir,
            diversions,
        })
    }

    fn query(&self) -> Command {
        let mut cmd = Command::new("dpkg-query");
        cmd.arg(format!("--admindir={}", self.admindir.display()));
        cmd
    }

    fn has_db(&self) -> bool {
        self.admindir.join("status").is_file()
    }

    /// The installed version and architecture of `package`, if it is installed.
    pub fn installed(&self, package: &str) -> Result<Option<Installed>, DebianError> {
        if !self.has_db() {
            return Ok(None);
        }
        let out = output(
            self.query()
                .args(["-W", "-f", "${db:Status-Status} ${Version} ${Architecture}"])
                .arg(package),
            LOCAL_TIMEOUT,
        )?;
        // dpkg-query exits 1 for a package it has never heard of.
        let text = String::from_utf8_lossy(&out.stdout);
        let mut parts = text.split_whitespace();
        Ok(match (parts.next(), parts.next(), parts.next()) {
            (Some("installed"), Some(version), Some(architecture)) => Some(Installed {
                version: version.to_owned(),
                architecture: architecture.to_owned(),
            }),
            _ => None,
        })
    }

    /// Paths `package` owns (files, directories, symlinks); empty if not installed.
    pub fn files(&self, package: &str) -> Result<Vec<String>, DebianError> {
        if self.installed(package)?.is_none() {
            return Ok(Vec::new());
        }
        let out = run(self.query().arg("-L").arg(package), LOCAL_TIMEOUT)?;
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .filter(|l| l.starts_with('/'))
            .map(str::to_owned)
            .collect())
    }

    /// The packages that own `path`, trying its other spelling under merged /usr
    /// (`/lib/x` and `/usr/lib/x`): dpkg knows only the one the package ships.
    pub fn owners(&self, path: &str) -> Result<Vec<String>, DebianError> {
        if !self.has_db() {
            return Ok(Vec::new());
        }
        for candidate in usr_merge_spellings(path) {
            let out = output(self.query().arg("-S").arg(&candidate), LOCAL_TIMEOUT)?;
            let text = String::from_utf8_lossy(&out.stdout);
            for line in text.lines() {
                if line.starts_with("diversion by") || line.starts_with("local diversion") {
                    continue;
                }
                if let Some((packages, found)) = line.rsplit_once(": ")
                    && found == candidate
                {
                    return Ok(packages
                        .split(", ")
                        .map(|p| p.split(':').next().unwrap_or(p).to_owned())
                        .collect());
                }
            }
        }
        Ok(Vec::new())
    }

    /// MD5 of every file of `package` as installed, conffiles included (dpkg keeps those
    /// in its status file, the others in `info/PKG.md5sums`). Absolute path → hex.
    pub fn md5sums(&self, package: &str) -> Result<HashMap<String, String>, DebianError> {
        let mut sums = HashMap::new();
        if self.installed(package)?.is_none() {
            return Ok(sums);
        }
        let path = run(
            self.query().args(["--control-path", package, "md5sums"]),
            LOCAL_TIMEOUT,
        )?;
        let path = String::from_utf8_lossy(&path).trim().to_owned();
        if !path.is_empty() {
            let text = std::fs::read_to_string(&path).map_err(|source| DebianError::Io {
                path: PathBuf::from(&path),
                source,
            })?;
            for line in text.lines() {
                if let Some((md5, file)) = line.split_once("  ") {
                    sums.insert(format!("/{file}"), md5.to_owned());
                }
            }
        }
        let conffiles = run(
            self.query().args(["-W", "-f", "${Conffiles}"]).arg(package),
            LOCAL_TIMEOUT,
        )?;
        for line in String::from_utf8_lossy(&conffiles).lines() {
            let mut parts = line.split_whitespace();
            if let (Some(file), Some(md5)) = (parts.next(), parts.next()) {
                sums.insert(file.to_owned(), md5.to_owned());
            }
        }
        Ok(sums)
    }

    /// Where `package`'s `path` is on disk: its diversion target if another package (or
    /// the administrator) diverted it, else the path itself; under the root.
    pub fn disk_path(&self, package: &str, path: &str) -> PathBuf {
        let diverted = self
            .diversions
            .iter()
            .find(|d| d.from == path && d.by.as_deref() != Some(package));
        under_root(&self.root, diverted.map_or(path, |d| d.to.as_str()))
    }

    /// The diversion that moves `package`'s `path`, if any.
    pub fn diversion(&self, package: &str, path: &str) -> Option<&Diversion> {
        self.diversions
            .iter()
            .find(|d| d.from == path && d.by.as_deref() != Some(package))
    }

    /// `/etc/alternatives` under the root: target path → alternative names leading to it.
    /// Alternatives are symlinks made by maintainer scripts, not package content: exec
    /// follows them to a packaged file, and that file's content is what is checked.
    pub fn alternatives(&self) -> BTreeMap<String, Vec<String>> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let Ok(dir) = std::fs::read_dir(self.root.join("etc/alternatives")) else {
            return map;
        };
        for entry in dir.flatten() {
            if let Ok(target) = std::fs::read_link(entry.path()) {
                map.entry(target.display().to_string())
                    .or_default()
                    .push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        map
    }
}

/// `/lib/x` and `/usr/lib/x` (and the like for bin, sbin, lib32, lib64): the same file on
/// a merged-/usr system, but dpkg records one of them.
pub fn usr_merge_spellings(path: &str) -> Vec<String> {
    let mut out = vec![path.to_owned()];
    for dir in ["/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/libx32/"] {
        if let Some(rest) = path.strip_prefix(&format!("/usr{dir}")) {
            out.push(format!("{dir}{rest}"));
        } else if let Some(rest) = path.strip_prefix(dir) {
            out.push(format!("/usr{dir}{rest}"));
        }
    }
    out
}

/// dpkg's `diversions` file: records of three lines (from, to, package; `:` for local).
fn parse_diversions(text: &str) -> Vec<Diversion> {
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks_exact(3)
        .map(|r| Diversion {
            from: r[0].to_owned(),
            to: r[1].to_owned(),
            by: (r[2] != ":").then(|| r[2].to_owned()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diversions_parse_local_and_packaged() {
        let d =
            parse_diversions("/bin/sh\n/bin/sh.distrib\ndash\n/usr/bin/x\n/usr/bin/x.real\n:\n");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].by.as_deref(), Some("dash"));
        assert_eq!(d[1].by, None);
    }

    #[test]
    fn merged_usr_spellings_go_both_ways() {
        assert_eq!(
            usr_merge_spellings("/usr/lib/x86_64-linux-gnu/libc.so.6"),
            [
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_64-linux-gnu/libc.so.6"
            ]
        );
        assert_eq!(usr_merge_spellings("/bin/ls"), ["/bin/ls", "/usr/bin/ls"]);
        assert_eq!(usr_merge_spellings("/opt/x"), ["/opt/x"]);
    }
}
