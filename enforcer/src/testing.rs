//! Helpers for host tests that need what not every machine has (root, the kernel's BTF).
//! On a developer's machine such a test says it was skipped; under `CI=true` it fails,
//! so CI can never pass a check it did not run.

/// Whether a test that needs `what` may run: `available` says whether this machine has
/// it. Prints why it is skipped when not, and panics instead under `CI=true`.
pub(crate) fn requires(what: &str, available: bool) -> bool {
    if !available {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "this test needs {what}, which this machine lacks, and CI=true runs every test"
        );
        eprintln!("skipped: this test needs {what}");
    }
    available
}

/// Whether this process runs as root.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether the running kernel publishes its BTF.
pub(crate) fn has_kernel_btf() -> bool {
    std::path::Path::new(crate::kernel::btf::VMLINUX_BTF).exists()
}
