//! Patching the code of a running, granted program: its own text through /proc/self/mem,
//! or a child's through ptrace.

use std::os::fd::AsRawFd as _;

use vm_tests::technique;

use crate::sys;

/// The code that gets patched: `mov eax, 7; ret` until `CODE` replaces it. Its text page
/// is mapped read and execute only, from this granted program.
#[inline(never)]
extern "C" fn victim() -> i32 {
    7
}

/// `victim`'s address, the same in a child after fork.
fn victim_addr() -> usize {
    (victim as extern "C" fn() -> i32 as *const ()).addr()
}

/// Calls `victim` in a way the compiler cannot fold to its original result, and exits
/// with what it returns.
fn call_victim() -> ! {
    let f = std::hint::black_box(victim as extern "C" fn() -> i32);
    let code = f();
    println!("victim() returned {code}");
    std::process::exit(code)
}

/// Opens /proc/self/mem for writing and writes `CODE` over `victim`, then calls it.
///
/// Kernel path: `mem_open` (`proc_mem_open` → `mm_access` with `PTRACE_MODE_ATTACH`)
/// and `security_file_open` with `FMODE_WRITE`; the write goes through
/// `access_remote_vm` with `FOLL_FORCE`, which writes to a read-only private text page
/// by copying it on write.
/// Injection: the program's own text, mapped from a granted file, now holds code that
/// is not in any file.
pub(crate) fn proc_self_mem() -> ! {
    let mem = sys::open("/proc/self/mem", libc::O_RDWR, 0, "open /proc/self/mem");
    println!("opened /proc/self/mem for writing");
    let at = victim_addr();
    sys::pwrite(mem.as_raw_fd(), &technique::CODE, at, "write code");
    println!("wrote CODE over victim at {at:#x}");
    call_victim()
}

/// Forks a child that asks to be traced and stops; writes `CODE` over the child's
/// `victim` with `PTRACE_POKETEXT` and lets it call it. Exits with the child's exit
/// code (also when the child's `PTRACE_TRACEME` was refused).
///
/// Kernel path: `ptrace_traceme` → `security_ptrace_traceme`, then `ptrace_request` →
/// `generic_ptrace_pokedata` → `access_process_vm` with `FOLL_FORCE | FOLL_WRITE`.
/// Injection: the child's text, mapped from a granted file, is changed by its tracer.
pub(crate) fn ptrace_poke() -> ! {
    // SAFETY: the process is single-threaded here, so the child may do anything.
    let pid = sys::check(unsafe { libc::fork() }, "fork");
    if pid == 0 {
        // SAFETY: plain syscall.
        let r = unsafe {
            libc::ptrace(
                libc::PTRACE_TRACEME,
                0,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            )
        };
        sys::check(r, "PTRACE_TRACEME");
        println!("child: traced by its parent, stopping");
        // SAFETY: plain syscall.
        unsafe { libc::raise(libc::SIGSTOP) };
        call_victim();
    }
    let status = sys::wait(pid);
    if !libc::WIFSTOPPED(status) {
        sys::exit_like(pid, status);
    }
    let at = victim_addr();
    let mut word = peek(pid, at).to_ne_bytes();
    word[..technique::CODE.len()].copy_from_slice(&technique::CODE);
    // SAFETY: plain syscall; the data argument is the word itself.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_POKETEXT,
            pid,
            at as *mut libc::c_void,
            libc::c_long::from_ne_bytes(word) as *mut libc::c_void,
        )
    };
    sys::check(r, "PTRACE_POKETEXT");
    println!("poked CODE over the child's victim at {at:#x}");
    // SAFETY: plain syscall; signal 0 drops the SIGSTOP.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_CONT,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    sys::check(r, "PTRACE_CONT");
    sys::exit_like(pid, sys::wait(pid))
}

/// Reads the word at `at` in the stopped tracee `pid`.
fn peek(pid: libc::pid_t, at: usize) -> libc::c_long {
    // SAFETY: errno is thread-local and always writable; PEEKTEXT may return -1 as data.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: plain syscall.
    let word = unsafe {
        libc::ptrace(
            libc::PTRACE_PEEKTEXT,
            pid,
            at as *mut libc::c_void,
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    if word == -1 && sys::errno() != 0 {
        technique::fail("PTRACE_PEEKTEXT");
    }
    word
}
