//! Fixture: what an ordinary program does, run in an enforcing scope to show that nothing
//! it needs is refused: threads, files, memory maps, a child process, and `dlopen` of a
//! granted library it does not link (libm). Prints what it did; exits 0 when all of it
//! worked, 1 with the step that failed otherwise.

use std::ffi::CStr;
use std::io::{Read as _, Write as _};
use std::process::Command;

fn fail(step: &str, err: impl std::fmt::Display) -> ! {
    println!("workload: {step}: {err}");
    std::process::exit(1)
}

/// Calls `cos` from a library opened at run time, as plugins and language runtimes do.
fn dlopen_libm() -> f64 {
    const LIBM: &CStr = c"libm.so.6";
    // SAFETY: dlopen/dlsym with NUL-terminated names; the symbol is `double cos(double)`.
    unsafe {
        let handle = libc::dlopen(LIBM.as_ptr(), libc::RTLD_NOW);
        if handle.is_null() {
            let why = CStr::from_ptr(libc::dlerror())
                .to_string_lossy()
                .into_owned();
            fail("dlopen libm.so.6", why);
        }
        let symbol = libc::dlsym(handle, c"cos".as_ptr());
        if symbol.is_null() {
            fail("dlsym cos", "not found");
        }
        let cos: extern "C" fn(f64) -> f64 = std::mem::transmute(symbol);
        cos(0.0)
    }
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/tmp".into());
    // Threads.
    let sums: Vec<u64> = (1..=4u64)
        .map(|i| std::thread::spawn(move || (0..100_000u64).map(|x| x % (i + 7)).sum::<u64>()))
        .map(|t| t.join().unwrap_or_else(|_| fail("thread", "panicked")))
        .collect();
    println!("workload: 4 threads summed {}", sums.iter().sum::<u64>());
    // Files: write, read back, rename, remove.
    let path = std::path::Path::new(&dir).join("workload.data");
    let mut file = std::fs::File::create(&path).unwrap_or_else(|e| fail("create", e));
    file.write_all(&[7u8; 65_536])
        .unwrap_or_else(|e| fail("write", e));
    drop(file);
    let moved = path.with_extension("moved");
    std::fs::rename(&path, &moved).unwrap_or_else(|e| fail("rename", e));
    let mut back = Vec::new();
    std::fs::File::open(&moved)
        .and_then(|mut f| f.read_to_end(&mut back))
        .unwrap_or_else(|e| fail("read", e));
    std::fs::remove_file(&moved).unwrap_or_else(|e| fail("remove", e));
    println!("workload: wrote and read back {} bytes", back.len());
    // Anonymous memory, as every allocator maps it: read-write, never executable.
    let mut big = vec![0u8; 16 << 20];
    big.iter_mut().step_by(4096).for_each(|b| *b = 1);
    println!("workload: touched {} MiB", big.len() >> 20);
    // A library loaded at run time.
    println!("workload: cos(0) from libm = {}", dlopen_libm());
    // A child process.
    let child = Command::new("/bin/busybox")
        .args(["echo", "child ran"])
        .output()
        .unwrap_or_else(|e| fail("spawn busybox", e));
    if !child.status.success() {
        fail("busybox echo", child.status);
    }
    print!("workload: {}", String::from_utf8_lossy(&child.stdout));
    println!("workload: ok");
}
