//! The VM's one network interface: an e1000 NIC on qemu's user network, which `cargo xtask
//! vm-test` gives every VM so that the host can reach ports it forwards to the guest
//! (`FORWARDED` in xtask's qemu.rs). Nothing else uses it: qemu's `restrict=on` keeps the
//! guest from reaching the host or anything beyond.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::Unavailable;
use super::modules;

/// The guest's address on qemu's user network, where forwarded ports arrive.
pub(crate) const GUEST_ADDR: &str = "10.0.2.15";

/// Loads the NIC's driver and brings its interface up on [`GUEST_ADDR`]. A scenario that
/// needs the host is [`Unavailable`] without the driver (a kernel whose modules Debian no
/// longer publishes) or without a NIC (a VM booted by hand).
#[track_caller]
pub(crate) fn up() {
    modules::load("e1000");
    let iface = Path::new("/sys/class/net/eth0");
    let start = Instant::now();
    while !iface.exists() {
        if start.elapsed() > Duration::from_secs(10) {
            std::panic::panic_any(Unavailable(
                "the e1000 driver is loaded but the VM has no NIC: qemu was started without \
                 one (`cargo xtask vm-test` gives it one)"
                    .to_owned(),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The address stays across scenarios; adding it again fails with EEXIST, harmlessly.
    let _ = ip(&["addr", "add", &format!("{GUEST_ADDR}/24"), "dev", "eth0"]);
    ip(&["link", "set", "eth0", "up"]).unwrap_or_else(|e| panic!("{e}"));
}

/// busybox `ip ARGS`; the failure with its output.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("/bin/ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
