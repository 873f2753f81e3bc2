//! Fixture: well-known ways to run code that no grant covers, or to tamper with the
//! enforcer. Each prints what happened and exits with a code the runner asserts on.
//!
//! Exit codes are in `vm_tests::attack`: the attack worked (for code injection, the
//! injected code's own exit code), or was refused with EPERM or EACCES, or failed.

use std::ffi::CString;
use std::io::Read as _;

use vm_tests::attack::{EACCES, EPERM, OTHER, WORKED};

fn refused(what: &str) -> ! {
    let err = std::io::Error::last_os_error();
    println!("{what}: {err}");
    std::process::exit(match err.raw_os_error() {
        Some(libc::EPERM) => EPERM,
        Some(libc::EACCES) => EACCES,
        _ => OTHER,
    })
}

use vm_tests::technique::{CODE, run_code};

fn anon_rwx() -> ! {
    // SAFETY: plain syscalls on memory we own.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            refused("mmap RWX");
        }
        std::ptr::copy_nonoverlapping(CODE.as_ptr(), p.cast(), CODE.len());
        run_code(p.cast())
    }
}

fn mprotect_exec() -> ! {
    // SAFETY: plain syscalls on memory we own.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            refused("mmap RW");
        }
        std::ptr::copy_nonoverlapping(CODE.as_ptr(), p.cast(), CODE.len());
        if libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC) != 0 {
            refused("mprotect RX");
        }
        run_code(p.cast())
    }
}

/// Maps a (granted) file writable and executable, privately: its code could then be
/// replaced at will, so this is anonymous executable memory in disguise.
fn wx_file(path: &str) -> ! {
    let file = std::fs::File::open(path).expect("open program");
    // SAFETY: plain syscalls on memory we own.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            libc::MAP_PRIVATE,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
        );
        if p == libc::MAP_FAILED {
            refused("mmap of a file RWX");
        }
        std::ptr::copy_nonoverlapping(CODE.as_ptr(), p.cast(), CODE.len());
        run_code(p.cast())
    }
}

fn memfd_exec(path: &str) -> ! {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .expect("read program");
    let name = CString::new("payload").expect("name");
    // SAFETY: plain syscalls; argv and envp are NULL-terminated arrays of C strings.
    unsafe {
        let fd = libc::memfd_create(name.as_ptr(), 0);
        if fd < 0 {
            refused("memfd_create");
        }
        if libc::write(fd, bytes.as_ptr().cast(), bytes.len()) != bytes.len() as isize {
            refused("write memfd");
        }
        let argv = [name.as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null()];
        libc::fexecve(fd, argv.as_ptr(), envp.as_ptr());
        refused("fexecve")
    }
}

fn deleted_exec(path: &str) -> ! {
    // A copy that is opened, then unlinked: it runs from an fd with no name left.
    let copy = format!("{path}.deleted-copy");
    std::fs::copy(path, &copy).expect("copy program");
    let file = std::fs::File::open(&copy).expect("open copy");
    std::fs::remove_file(&copy).expect("unlink copy");
    let name = CString::new("deleted").expect("name");
    // SAFETY: argv and envp are NULL-terminated arrays of C strings; the fd stays open.
    unsafe {
        let argv = [name.as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null()];
        libc::fexecve(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            argv.as_ptr(),
            envp.as_ptr(),
        );
    }
    refused("fexecve of a deleted file")
}

fn ptrace_attach(pid: libc::pid_t) -> ! {
    // SAFETY: plain syscall.
    unsafe {
        if libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) != 0 {
            refused("ptrace attach");
        }
        libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
    }
    println!("ptrace attach: attached");
    std::process::exit(WORKED)
}

fn proc_mem(pid: libc::pid_t) -> ! {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/{pid}/mem"))
    {
        Ok(_) => {
            println!("open /proc/{pid}/mem: opened for writing");
            std::process::exit(WORKED)
        }
        Err(_) => refused("open /proc/PID/mem"),
    }
}

fn self_mem() -> ! {
    // No ptrace check applies to a process's own memory; writes through this file ignore
    // page protections, so a granted program could patch its own code.
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/mem")
    {
        Ok(_) => {
            println!("open /proc/self/mem: opened for writing");
            std::process::exit(WORKED)
        }
        Err(_) => refused("open /proc/self/mem"),
    }
}

fn cgroup_escape(to: &str) -> ! {
    // Moving oneself to another cgroup is how a governed process would leave its scope.
    match std::fs::write(format!("{to}/cgroup.procs"), "0") {
        Ok(()) => {
            println!("moved to {to}");
            std::process::exit(WORKED)
        }
        Err(_) => refused("write cgroup.procs"),
    }
}

fn unpin(path: &str) -> ! {
    // Pins keep enforcement alive without the agent; removing them detaches it.
    match std::fs::remove_file(path) {
        Ok(()) => {
            println!("unlinked {path}");
            std::process::exit(WORKED)
        }
        Err(_) => refused("unlink pin"),
    }
}

fn bpf_syscall() -> ! {
    // BPF_PROG_GET_NEXT_ID (11): the first step of finding and detaching programs.
    let mut attr = [0u32; 4];
    // SAFETY: `attr` is large enough for the get-next-id command.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            11,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT) {
        refused("bpf(BPF_PROG_GET_NEXT_ID)");
    }
    println!("bpf(BPF_PROG_GET_NEXT_ID): allowed");
    std::process::exit(WORKED)
}

fn kill(pid: libc::pid_t) -> ! {
    // SAFETY: plain syscall.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        refused("kill");
    }
    println!("kill: delivered");
    std::process::exit(WORKED)
}

/// Execs `path` `count` times from inside the scope (posix_spawn, no fork of a large
/// process), counting the EPERM refusals: floods the decision ring buffer fast.
fn exec_storm(path: &str, count: u32) -> ! {
    let prog = CString::new(path).expect("path");
    let argv = [prog.as_ptr(), std::ptr::null_mut()];
    let envp: [*mut libc::c_char; 1] = [std::ptr::null_mut()];
    let mut refused = 0;
    for _ in 0..count {
        let mut pid = 0;
        // SAFETY: argv and envp are NULL-terminated; pid is written by the call.
        let r = unsafe {
            libc::posix_spawn(
                &mut pid,
                prog.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                argv.as_ptr().cast(),
                envp.as_ptr(),
            )
        };
        if r == libc::EPERM {
            refused += 1;
        } else if r == 0 {
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        }
    }
    println!("exec storm: {refused} of {count} refused");
    std::process::exit(if refused == count { WORKED } else { OTHER })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pid = || {
        args.get(2)
            .and_then(|p| p.parse().ok())
            .expect("pid argument")
    };
    match args.get(1).map(String::as_str) {
        Some("anon-rwx") => anon_rwx(),
        Some("mprotect-exec") => mprotect_exec(),
        Some("memfd-exec") => memfd_exec(args.get(2).expect("program path")),
        Some("wx-file") => wx_file(args.get(2).expect("program path")),
        Some("deleted-exec") => deleted_exec(args.get(2).expect("program path")),
        Some("ptrace") => ptrace_attach(pid()),
        Some("proc-mem") => proc_mem(pid()),
        Some("bpf") => bpf_syscall(),
        Some("self-mem") => self_mem(),
        Some("cgroup-escape") => cgroup_escape(args.get(2).expect("cgroup dir")),
        Some("unpin") => unpin(args.get(2).expect("pin path")),
        Some("kill") => kill(pid()),
        Some("exec-storm") => exec_storm(
            args.get(2).expect("program path"),
            args.get(3).and_then(|n| n.parse().ok()).expect("count"),
        ),
        _ => {
            eprintln!(
                "usage: attacks anon-rwx|mprotect-exec|wx-file PATH|memfd-exec PATH|deleted-exec PATH|ptrace PID|proc-mem PID|self-mem|cgroup-escape DIR|unpin PATH|bpf|kill PID"
            );
            std::process::exit(OTHER)
        }
    }
}
