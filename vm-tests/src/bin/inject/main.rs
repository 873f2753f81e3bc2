//! Fixture: ways to run machine code whose file content no grant covers, from inside a
//! granted program: change a granted file's page cache while or after it is mapped
//! executable, or get executable memory that is not a file mapping at all. Each
//! technique injects `technique::CODE` and calls it, so it really ran when the fixture
//! exits with `technique::INJECTED`.
//!
//! The runner runs every technique once outside every scope (where it must work) and once
//! inside a scope as an unprivileged user (where the kernel must refuse the step the
//! fixture prints, with the errno in the exit code). Exit codes: `vm_tests::technique`.
//!
//! `LIB` is a file whose content is granted, at least a page long; it is copied, never
//! changed. `DIR` is a writable work directory (created if missing); `userfaultfd` and
//! `io-uring` need it on tmpfs.

mod elf;
mod files;
mod memory;
mod overlay;
mod process;
mod sys;
mod uffd;
mod uring;

use vm_tests::technique;

const USAGE: &str = "usage: inject TECHNIQUE [ARGS]
  write-after-map LIB DIR      write-before-map LIB DIR     shared-writable-map LIB DIR
  truncate-refill LIB DIR      deleted-map LIB DIR          memfd-map
  sysv-shm                     shared-anon                  hugetlb
  read-implies-exec            userfaultfd DIR              io-uring LIB DIR
  o-direct LIB DIR             proc-self-mem                ptrace-poke
  stack-code                   mark-exec-stack SRC DST      overlay LIB DIR
  read-implies-exec-brk        dev-zero                     write-ia32-stack DST
  map-served FILE              packet-ring                  xdp-ring
  dma-heap HEAP                write-exec-zero-fill DST
  write-layer-after-map LIB MERGED UPPER";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["write-after-map", lib, dir] => files::write_after_map(lib, dir),
        ["write-before-map", lib, dir] => files::write_before_map(lib, dir),
        ["shared-writable-map", lib, dir] => files::shared_writable_map(lib, dir),
        ["truncate-refill", lib, dir] => files::truncate_refill(lib, dir),
        ["memfd-map"] => memory::memfd_map(),
        ["deleted-map", lib, dir] => files::deleted_map(lib, dir),
        ["sysv-shm"] => memory::sysv_shm(),
        ["shared-anon"] => memory::shared_anon(),
        ["hugetlb"] => memory::hugetlb(),
        ["read-implies-exec"] => memory::read_implies_exec(),
        ["read-implies-exec-brk"] => memory::read_implies_exec_brk(),
        ["dev-zero"] => memory::dev_zero(),
        ["packet-ring"] => memory::packet_ring(),
        ["xdp-ring"] => memory::xdp_ring(),
        ["dma-heap", heap] => memory::dma_heap(heap),
        ["userfaultfd", dir] => uffd::userfaultfd(dir),
        ["io-uring", lib, dir] => uring::io_uring(lib, dir),
        ["o-direct", lib, dir] => files::o_direct(lib, dir),
        ["proc-self-mem"] => process::proc_self_mem(),
        ["ptrace-poke"] => process::ptrace_poke(),
        ["stack-code"] => memory::stack_code(),
        ["mark-exec-stack", src, dst] => elf::mark_exec_stack(src, dst),
        ["write-ia32-stack", dst] => elf::write_ia32_stack(dst),
        ["write-exec-zero-fill", dst] => elf::write_exec_zero_fill(dst),
        ["overlay", lib, dir] => overlay::overlay(lib, dir),
        ["write-layer-after-map", lib, merged, upper] => {
            files::write_layer_after_map(lib, merged, upper)
        }
        ["map-served", file] => files::map_served(file),
        _ => {
            eprintln!("{USAGE}");
            technique::broken("unknown technique or wrong arguments")
        }
    }
    std::process::exit(technique::WORKED)
}
