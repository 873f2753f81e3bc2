//! Proof that cached digests follow the file: with the IMA policy loaded and a scope
//! that grants the `probe` fixture's digest, a granted file changed in place (same inode,
//! so IMA's cache entry survives unless IMA notices the write) must be refused, and a
//! refused file rewritten in place to granted content must run.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use crate::worker::{Outcome, Request, Worker};

/// The runner's fixtures and where checks may write.
pub(crate) struct Fixtures<'a> {
    pub probe: &'a Path,
    /// `probe` with 10 MiB appended, granted: hashing it costs far more than an exec.
    pub large: &'a Path,
    /// `probe` with [`TAIL`] bytes appended, granted; without them it is `probe` again.
    pub tailed: &'a Path,
    pub unlisted: &'a Path,
    pub dir: PathBuf,
}

type Check = Result<(), String>;
type CheckFn = fn(&mut Worker, &Fixtures<'_>) -> Check;

/// Bytes appended to `probe` to make the `tailed` fixture.
pub(crate) const TAIL: usize = 64;

const RAN: Outcome = Outcome::Exited(vm_tests::PROBE_EXIT);
const REFUSED: Outcome = Outcome::Refused(libc::EPERM);

/// Runs every check, printing `BENCH-CHECK PASS|FAIL name`; returns how many failed.
pub(crate) fn run_all(worker: &mut Worker, fx: &Fixtures<'_>) -> usize {
    std::fs::create_dir_all(&fx.dir).expect("check dir");
    let checks: [(&str, CheckFn); 7] = [
        ("digest-cache-is-in-use", cache_in_use),
        ("granted-file-written-in-place-is-refused", written_in_place),
        (
            "granted-file-changed-through-shared-mapping-is-refused",
            changed_through_mapping,
        ),
        (
            "granted-file-truncated-by-path-is-refused",
            truncated_by_path,
        ),
        (
            "refused-file-rewritten-to-granted-content-runs",
            refused_then_granted,
        ),
        (
            "granted-library-changed-in-place-is-refused",
            library_changed,
        ),
        (
            "library-held-by-a-writer-is-refused-before-and-after",
            library_written_by_earlier_writer,
        ),
    ];
    let mut failed = 0;
    for (name, check) in checks {
        match check(worker, fx) {
            Ok(()) => println!("BENCH-CHECK PASS {name}"),
            Err(why) => {
                failed += 1;
                println!("BENCH-CHECK FAIL {name}: {why}");
            }
        }
    }
    failed
}

fn exec_once(
    worker: &mut Worker,
    program: &Path,
    env: &[(&str, &str)],
) -> Result<(Outcome, String), String> {
    let reply = worker.run(&Request {
        program,
        count: 1,
        fresh_copy: false,
        env,
        capture: true,
    })?;
    let outcome = reply.outcomes.into_iter().next().ok_or("no outcome")?;
    Ok((outcome, reply.output))
}

fn expect(worker: &mut Worker, program: &Path, want: &Outcome, when: &str) -> Check {
    match exec_once(worker, program, &[])? {
        (got, _) if got == *want => Ok(()),
        (got, output) => {
            // Say whether the file really holds what the check thinks it does.
            let digest = enforcer::host::digest::FileDigest::of_file(program)
                .map(|d| d.to_string())
                .unwrap_or_default();
            Err(format!(
                "{when}: expected {want:?}, got {got:?} {} (file sha256 now {digest})",
                output.trim()
            ))
        }
    }
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let _ = std::fs::remove_file(to);
    std::fs::copy(from, to).map_err(|e| format!("copy to {}: {e}", to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())
}

/// Flips the last byte of `path` with pwrite: no truncation, same inode.
fn flip_last_byte(path: &Path) -> Result<(), String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, len - 1)
        .map_err(|e| e.to_string())?;
    byte[0] ^= 0x01;
    file.write_all_at(&byte, len - 1).map_err(|e| e.to_string())
}

/// Flips the last byte through a shared writable mapping: the change reaches the file
/// without any write(2).
fn flip_last_byte_mapped(path: &Path) -> Result<(), String> {
    use std::os::fd::AsRawFd as _;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| e.to_string())?;
    let len = usize::try_from(file.metadata().map_err(|e| e.to_string())?.len())
        .map_err(|e| e.to_string())?;
    // SAFETY: a fresh shared mapping of a file we own, unmapped before returning; the
    // index is inside it.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        let last = p.cast::<u8>().add(len - 1);
        *last ^= 0x01;
        libc::msync(p, len, libc::MS_SYNC);
        libc::munmap(p, len);
    }
    Ok(())
}

fn cache_in_use(worker: &mut Worker, fx: &Fixtures<'_>) -> Check {
    // Each exec of a fresh copy hashes the file; execs of one file after the first must
    // not, or the cache is off (the loader did not configure it) or broken.
    let ran = Outcome::Exited(vm_tests::PROBE_EXIT);
    let run = |worker: &mut Worker, fresh_copy: bool, count: usize| -> Result<f64, String> {
        let req = Request {
            program: fx.large,
            count,
            fresh_copy,
            env: &[],
            capture: false,
        };
        #[allow(clippy::cast_precision_loss, reason = "a mean for a comparison")]
        Ok(worker.timed(&req, &ran)? as f64 / count as f64)
    };
    run(worker, false, 1)?;
    let cached = run(worker, false, 5)?;
    let uncached = run(worker, true, 3)?;
    if cached < uncached / 2.0 {
        Ok(())
    } else {
        Err(format!(
            "an exec of the cached 10 MiB binary took {:.1} ms, of a fresh copy {:.1} ms: \
             digests are not cached (does the loader pass digest_cache::layout?)",
            cached / 1e6,
            uncached / 1e6
        ))
    }
}

/// A copy of `from` at `name`, executed until its digest is cached.
fn cached_copy(
    worker: &mut Worker,
    fx: &Fixtures<'_>,
    from: &Path,
    name: &str,
) -> Result<PathBuf, String> {
    let tool = fx.dir.join(name);
    copy(from, &tool)?;
    expect(worker, &tool, &RAN, "first exec")?;
    expect(worker, &tool, &RAN, "cached exec")?;
    Ok(tool)
}

/// A cached granted file whose last byte `flip` changes must be refused, and run again
/// once `flip` changes it back.
fn changed_in_place(
    worker: &mut Worker,
    fx: &Fixtures<'_>,
    name: &str,
    how: &str,
    flip: fn(&Path) -> Check,
) -> Check {
    let tool = cached_copy(worker, fx, fx.probe, name)?;
    flip(&tool)?;
    expect(
        worker,
        &tool,
        &REFUSED,
        &format!("after a one-byte change {how}"),
    )?;
    flip(&tool)?;
    expect(
        worker,
        &tool,
        &RAN,
        &format!("after changing the byte back {how}"),
    )
}

fn written_in_place(worker: &mut Worker, fx: &Fixtures<'_>) -> Check {
    changed_in_place(worker, fx, "written", "by pwrite", flip_last_byte)
}

fn changed_through_mapping(worker: &mut Worker, fx: &Fixtures<'_>) -> Check {
    changed_in_place(
        worker,
        fx,
        "mapped",
        "through a shared mapping",
        flip_last_byte_mapped,
    )
}

fn truncated_by_path(worker: &mut Worker, fx: &Fixtures<'_>) -> Check {
    use std::os::unix::ffi::OsStrExt as _;
    let tool = cached_copy(worker, fx, fx.tailed, "truncated")?;
    // truncate(2) by path: no file is opened, so no writer ever closes it. What is left is
    // `probe` plus one byte, which no grant covers.
    let len = std::fs::metadata(&tool).map_err(|e| e.to_string())?.len() - TAIL as u64 + 1;
    let c_path = std::ffi::CString::new(tool.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated path we own.
    if unsafe {
        libc::truncate(
            c_path.as_ptr(),
            i64::try_from(len).map_err(|e| e.to_string())?,
        )
    } != 0
    {
        return Err(format!("truncate: {}", std::io::Error::last_os_error()));
    }
    expect(worker, &tool, &REFUSED, "after truncate(2) by path")
}

fn refused_then_granted(worker: &mut Worker, fx: &Fixtures<'_>) -> Check {
    let tool = fx.dir.join("refused");
    copy(fx.unlisted, &tool)?;
    expect(worker, &tool, &REFUSED, "ungranted content")?;
    expect(worker, &tool, &REFUSED, "ungranted content, again")?;
    let granted = std::fs::read(fx.probe).map_err(|e| e.to_string())?;
    let file = OpenOptions::new()
        .write(true)
        .open(&tool)
        .map_err(|e| e.to_string())?;
    file.write_all_at(&granted, 0).map_err(|e| e.to_string())?;
    file.set_len(granted.len() as u64)
        .map_err(|e| e.to_string())?;
    drop(file);
    expect(
        worker,
        &tool,
        &RAN,
        "after rewriting it in place with granted content",
    )
}

/// A copy, at `name` in the check directory, of a library the policy grants (by digest).
fn granted_library_copy(fx: &Fixtures<'_>, name: &str) -> Result<PathBuf, String> {
    let closure = enforcer::host::elf::with_dependencies(&[fx.probe.to_path_buf()])
        .map_err(|e| e.to_string())?;
    let real = closure
        .iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libgcc_s"))
        })
        .ok_or_else(|| format!("probe links no libgcc_s: {closure:?}"))?;
    let lib = fx.dir.join(name);
    copy(real, &lib)?;
    Ok(lib)
}

/// Runs `probe` with `lib` preloaded; `Ok(true)` if the loader mapped it, `Ok(false)` if
/// the mapping was refused.
fn preload(worker: &mut Worker, fx: &Fixtures<'_>, lib: &Path) -> Result<bool, String> {
    let (outcome, output) = exec_once(
        worker,
        fx.probe,
        &[("LD_PRELOAD", lib.to_str().ok_or("path")?)],
    )?;
    if outcome != RAN {
        return Err(format!(
            "probe with {} preloaded: {outcome:?} {output}",
            lib.display()
        ));
    }
    Ok(!output.contains("cannot be preloaded"))
}

fn library_changed(worker: &mut Worker, fx: &Fixtures<'_>) -> Check {
    let lib = granted_library_copy(fx, "libgranted.so")?;
    for when in ["first preload", "cached preload"] {
        if !preload(worker, fx, &lib)? {
            return Err(format!("{when}: the granted library was refused"));
        }
    }
    flip_last_byte(&lib)?;
    if preload(worker, fx, &lib)? {
        return Err("after a one-byte pwrite: the changed library was mapped".into());
    }
    Ok(())
}

fn library_written_by_earlier_writer(worker: &mut Worker, fx: &Fixtures<'_>) -> Check {
    // A writer that opened the file before it was mapped could change it afterwards
    // without a new open. The mapping rule refuses to map a file anyone holds open for
    // writing; once that writer has changed it and closed it, no digest cached before
    // the change may let it map.
    let lib = granted_library_copy(fx, "libheld.so")?;
    let writer = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lib)
        .map_err(|e| e.to_string())?;
    if preload(worker, fx, &lib)? {
        return Err("the granted library was mapped while a writer held it".into());
    }
    let len = writer.metadata().map_err(|e| e.to_string())?.len();
    let mut byte = [0u8; 1];
    writer
        .read_exact_at(&mut byte, len - 1)
        .map_err(|e| e.to_string())?;
    writer
        .write_all_at(&[byte[0] ^ 1], len - 1)
        .map_err(|e| e.to_string())?;
    drop(writer);
    if preload(worker, fx, &lib)? {
        return Err("the library changed by the earlier writer was mapped".into());
    }
    Ok(())
}
