//! The shared-library closure of a program: what else must be granted for it to run.
//!
//! In a governed scope every executable mapping is checked, so a dynamically linked
//! program needs its dynamic loader (PT_INTERP) and every library it loads (DT_NEEDED,
//! transitively) granted too. Resolution follows the dynamic loader's order: DT_RPATH
//! (only when there is no DT_RUNPATH), DT_RUNPATH, the directories of /etc/ld.so.conf,
//! then the system directories, with `$ORIGIN` expanded and libraries of another ELF
//! class or machine skipped. LD_LIBRARY_PATH is ignored on purpose: a policy is built for
//! the host's normal resolution, not for one shell's environment.
//!
//! A script's `#!` interpreter is deliberately not followed: granting a script must not
//! silently grant a shell, which runs anything. Interpreters are granted explicitly.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use goblin::elf::Elf;

use crate::host::digest::FileDigest;

/// Directories the loader searches last on x86_64 Debian and most distributions.
const SYSTEM_DIRS: [&str; 6] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];
const LD_SO_CONF: &str = "/etc/ld.so.conf";
/// Bound on the closure, so a hostile file cannot make the walk run away.
const MAX_FILES: usize = 4096;

/// Why a closure could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid ELF file: {message}")]
    Malformed { path: PathBuf, message: String },
    #[error(
        "{library} (needed by {needed_by}) was not found in its RPATH/RUNPATH, ld.so.conf or the system directories"
    )]
    NotFound { library: String, needed_by: PathBuf },
    #[error("more than {MAX_FILES} files in the closure of {0}")]
    TooLarge(PathBuf),
    #[error("{} cannot be granted: {fill}", .path.display())]
    ExecutableZeroFill {
        path: PathBuf,
        fill: ExecutableZeroFill,
    },
}

/// A loadable segment that is executable and longer in memory than in the file. The
/// kernel's ELF loader maps the file part and fills the rest with `vm_brk_flags` as
/// anonymous memory that is writable *and* executable, with no mmap or mprotect an LSM
/// could refuse: a program granted with such a segment could write code there and run it.
/// Toolchains do not emit this (no ELF file under a Debian host's /usr/bin, /usr/lib
/// has it), so a grant of such a file is refused when the bundle is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutableZeroFill {
    pub vaddr: u64,
    pub file_size: u64,
    pub memory_size: u64,
}

impl std::fmt::Display for ExecutableZeroFill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "its executable segment at {:#x} is {} bytes in memory but {} in the file: the \
             kernel fills the rest with writable and executable memory that no rule can check",
            self.vaddr, self.memory_size, self.file_size
        )
    }
}

/// The first [`ExecutableZeroFill`] segment of the ELF file `bytes` (read from `path`);
/// `None` for an ELF file without one and for a file that is not ELF at all (a script).
fn executable_zero_fill(path: &Path, bytes: &[u8]) -> Result<Option<ExecutableZeroFill>, ElfError> {
    let Some(elf) = parse_elf(path, bytes)? else {
        return Ok(None);
    };
    Ok(elf
        .program_headers
        .iter()
        .find(|ph| {
            ph.p_type == goblin::elf::program_header::PT_LOAD
                && ph.p_flags & goblin::elf::program_header::PF_X != 0
                && ph.p_memsz > ph.p_filesz
        })
        .map(|ph| ExecutableZeroFill {
            vaddr: ph.p_vaddr,
            file_size: ph.p_filesz,
            memory_size: ph.p_memsz,
        }))
}

/// Refuses a file that has an [`ExecutableZeroFill`] segment, naming it.
pub fn grantable(path: &Path) -> Result<(), ElfError> {
    check_grantable(path, &read(path)?)
}

/// [`grantable`], and the file's digest from the same read: what a grant of it needs.
pub fn grantable_digest(path: &Path) -> Result<FileDigest, ElfError> {
    let bytes = read(path)?;
    check_grantable(path, &bytes)?;
    Ok(FileDigest::of_bytes(&bytes))
}

fn check_grantable(path: &Path, bytes: &[u8]) -> Result<(), ElfError> {
    match executable_zero_fill(path, bytes)? {
        Some(fill) => Err(ElfError::ExecutableZeroFill {
            path: path.into(),
            fill,
        }),
        None => Ok(()),
    }
}

/// What matters about one ELF file for resolution.
struct Object {
    class_64: bool,
    machine: u16,
    interpreter: Option<String>,
    needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
}

fn read(path: &Path) -> Result<Vec<u8>, ElfError> {
    std::fs::read(path).map_err(|source| ElfError::Read {
        path: path.into(),
        source,
    })
}

/// `bytes` (of the file at `path`) parsed as ELF; `Ok(None)` when it is not ELF at all.
fn parse_elf<'a>(path: &Path, bytes: &'a [u8]) -> Result<Option<Elf<'a>>, ElfError> {
    if !bytes.starts_with(b"\x7fELF") {
        return Ok(None);
    }
    Elf::parse(bytes)
        .map(Some)
        .map_err(|e| ElfError::Malformed {
            path: path.into(),
            message: e.to_string(),
        })
}

/// Parses `bytes` as ELF; `Ok(None)` when it is not ELF at all.
fn parse(path: &Path, bytes: &[u8]) -> Result<Option<Object>, ElfError> {
    let Some(elf) = parse_elf(path, bytes)? else {
        return Ok(None);
    };
    let split = |v: &[&str]| {
        v.iter()
            .flat_map(|s| s.split(':'))
            .map(str::to_owned)
            .collect()
    };
    Ok(Some(Object {
        class_64: elf.is_64,
        machine: elf.header.e_machine,
        interpreter: elf.interpreter.map(str::to_owned),
        needed: elf.libraries.iter().map(|s| (*s).to_owned()).collect(),
        rpath: split(&elf.rpaths),
        runpath: split(&elf.runpaths),
    }))
}

/// Directories listed in ld.so.conf, following `include` globs of the form `dir/*.conf`.
fn ld_so_conf_dirs(path: &Path, depth: u32, out: &mut Vec<PathBuf>) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    for line in text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
    {
        if let Some(pattern) = line.strip_prefix("include").map(str::trim) {
            if depth > 4 {
                continue;
            }
            let pattern = Path::new(pattern);
            let pattern = if pattern.is_absolute() {
                pattern.to_path_buf()
            } else {
                path.parent().unwrap_or(Path::new("/")).join(pattern)
            };
            for included in glob_conf(&pattern) {
                ld_so_conf_dirs(&included, depth + 1, out);
            }
        } else if line.starts_with('/') {
            out.push(PathBuf::from(line));
        }
    }
}

/// Expands the only glob shape ld.so.conf uses in practice: `DIR/*SUFFIX`.
fn glob_conf(pattern: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (
        pattern.parent(),
        pattern.file_name().and_then(|n| n.to_str()),
    ) else {
        return Vec::new();
    };
    let Some(suffix) = name.strip_prefix('*') else {
        return vec![pattern.to_path_buf()];
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.ends_with(suffix))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Resolves libraries the way the dynamic loader does for one host.
pub struct Resolver {
    conf_dirs: Vec<PathBuf>,
}

impl Default for Resolver {
    fn default() -> Self {
        let mut conf_dirs = Vec::new();
        ld_so_conf_dirs(Path::new(LD_SO_CONF), 0, &mut conf_dirs);
        Self { conf_dirs }
    }
}

impl Resolver {
    fn expand_origin(dir: &str, origin: &Path) -> PathBuf {
        let origin = origin.display().to_string();
        PathBuf::from(
            dir.replace("${ORIGIN}", &origin)
                .replace("$ORIGIN", &origin),
        )
    }

    /// Finds `library` for `needer`, or `None`.
    fn find(&self, library: &str, needer: &Path, obj: &Object) -> Option<PathBuf> {
        if library.contains('/') {
            return Some(PathBuf::from(library));
        }
        let origin = needer.parent().unwrap_or(Path::new("/"));
        let rpath = if obj.runpath.is_empty() {
            obj.rpath.as_slice()
        } else {
            &[]
        };
        let candidates = rpath
            .iter()
            .chain(&obj.runpath)
            .map(|d| Self::expand_origin(d, origin))
            .chain(self.conf_dirs.iter().cloned())
            .chain(SYSTEM_DIRS.iter().map(PathBuf::from));
        for dir in candidates {
            let path = dir.join(library);
            // A library of another class or machine (a 32-bit libc in /lib) is skipped,
            // as the loader does.
            let compatible = std::fs::read(&path)
                .ok()
                .and_then(|b| parse(&path, &b).ok().flatten());
            if compatible
                .is_some_and(|lib| lib.class_64 == obj.class_64 && lib.machine == obj.machine)
            {
                return Some(path);
            }
        }
        None
    }

    /// Files named `name` in the directories the loader searches for any program (those
    /// of ld.so.conf, then the system directories), in that order: where a library that
    /// a record names only by its file name can be.
    #[must_use]
    pub fn by_name(&self, name: &str) -> Vec<PathBuf> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Vec::new();
        }
        let mut found: Vec<PathBuf> = Vec::new();
        for dir in self
            .conf_dirs
            .iter()
            .cloned()
            .chain(SYSTEM_DIRS.iter().map(PathBuf::from))
        {
            let path = dir.join(name);
            if path.is_file() && !found.contains(&path) {
                found.push(path);
            }
        }
        found
    }

    /// `files` plus everything they need to run: dynamic loaders and shared libraries,
    /// transitively. Files that are not ELF (scripts, data) contribute only themselves. Paths are canonical (symlinks
    /// resolved) and each appears once, in discovery order.
    pub fn closure(&self, files: &[PathBuf]) -> Result<Vec<PathBuf>, ElfError> {
        let mut seen = BTreeSet::new();
        let mut order = Vec::new();
        let mut queue: VecDeque<PathBuf> = files.iter().cloned().collect();
        while let Some(path) = queue.pop_front() {
            let canonical = std::fs::canonicalize(&path).map_err(|source| ElfError::Read {
                path: path.clone(),
                source,
            })?;
            if !seen.insert(canonical.clone()) {
                continue;
            }
            if seen.len() > MAX_FILES {
                return Err(ElfError::TooLarge(
                    files.first().cloned().unwrap_or_default(),
                ));
            }
            order.push(canonical.clone());
            let bytes = read(&canonical)?;
            let Some(obj) = parse(&canonical, &bytes)? else {
                continue;
            };
            queue.extend(obj.interpreter.iter().map(PathBuf::from));
            for library in &obj.needed {
                // Resolve against the path as named, so $ORIGIN means what the loader
                // sees for the first file; canonical for libraries found later.
                let found = self
                    .find(library, &path, &obj)
                    .ok_or_else(|| ElfError::NotFound {
                        library: library.clone(),
                        needed_by: canonical.clone(),
                    })?;
                queue.push_back(found);
            }
        }
        Ok(order)
    }
}

/// [`Resolver::closure`] with this host's loader configuration.
pub fn with_dependencies(files: &[PathBuf]) -> Result<Vec<PathBuf>, ElfError> {
    Resolver::default().closure(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_binary_closure_has_loader_and_libc() {
        // This test binary is dynamically linked against glibc on every supported host.
        let me = std::env::current_exe().expect("exe");
        let closure = with_dependencies(std::slice::from_ref(&me)).expect("closure");
        assert_eq!(closure[0], std::fs::canonicalize(&me).expect("canonical"));
        let names: Vec<String> = closure
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert!(names.iter().any(|n| n.starts_with("ld-linux")), "{names:?}");
        assert!(names.iter().any(|n| n.starts_with("libc.so")), "{names:?}");
        let unique: BTreeSet<_> = closure.iter().collect();
        assert_eq!(unique.len(), closure.len(), "no duplicates");
    }

    #[test]
    fn scripts_do_not_bring_their_interpreter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("s.sh");
        let interp = std::env::current_exe().expect("exe");
        std::fs::write(&script, format!("#!{} -x\necho hi\n", interp.display())).expect("write");
        let closure = with_dependencies(std::slice::from_ref(&script)).expect("closure");
        assert_eq!(
            closure,
            vec![std::fs::canonicalize(&script).expect("canonical")]
        );
    }

    #[test]
    fn missing_library_is_named() {
        let obj = Object {
            class_64: true,
            machine: goblin::elf::header::EM_X86_64,
            interpreter: None,
            needed: vec![],
            rpath: vec![],
            runpath: vec!["$ORIGIN/lib".into()],
        };
        let r = Resolver { conf_dirs: vec![] };
        assert_eq!(
            r.find("libdoes-not-exist.so.9", Path::new("/x/prog"), &obj),
            None
        );
        assert_eq!(
            Resolver::expand_origin("$ORIGIN/../lib:${ORIGIN}", Path::new("/opt/a")),
            PathBuf::from("/opt/a/../lib:/opt/a")
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = dir.path().join("bad");
        let mut bytes = b"\x7fELF\x02\x01\x01".to_vec();
        bytes.extend([0xffu8; 100]);
        std::fs::write(&bad, bytes).expect("write");
        assert!(matches!(
            with_dependencies(&[bad]),
            Err(ElfError::Malformed { .. })
        ));
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"just data").expect("write");
        assert_eq!(
            with_dependencies(std::slice::from_ref(&plain))
                .expect("ok")
                .len(),
            1
        );
    }
}
