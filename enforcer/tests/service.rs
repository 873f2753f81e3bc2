//! `enforcer install-unit`, run as an operator or a packager would (the built binary,
//! with `--root` so nothing outside a temporary directory is touched), and the installed
//! unit checked by `systemd-analyze verify`.

// The package's dependencies are the library's; this target uses only a few of them.
#![allow(unused_crate_dependencies)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_enforcer");
const UNIT: &str = "etc/systemd/system/enforcer.service";
const CONFIG: &str = "etc/enforcer/config.toml";

/// A staging root for install-unit.
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    /// install-unit into this root; the unit runs the binary under test, which exists,
    /// so `systemd-analyze verify` can check ExecStart=.
    fn install(&self, extra: &[&str]) -> Output {
        Command::new(BIN)
            .arg("install-unit")
            .arg("--root")
            .arg(self.dir.path())
            .args(["--binary", BIN])
            .args(extra)
            .env_remove("ENFORCER_CONFIG")
            .env_remove("RUST_LOG")
            .output()
            .expect("run enforcer install-unit")
    }

    fn install_ok(&self) -> String {
        let out = self.install(&[]);
        assert!(out.status.success(), "install-unit failed:\n{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

const TWO_SCOPES: &str = "[[scope]]\npath = \"/agents.slice\"\n\n[[scope]]\npath = \"/ci.slice/x\"\nmode = \"monitor\"\n";

#[test]
fn installs_the_unit_and_orders_the_governed_slices_after_it() {
    let root = Root::new();
    root.write(CONFIG, TWO_SCOPES);
    let stdout = root.install_ok();

    let unit = root.read(UNIT);
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30s",
        "Restart=always",
        "KillMode=mixed",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "WantedBy=multi-user.target",
        "CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_SYS_ADMIN CAP_KILL CAP_DAC_OVERRIDE",
        &format!("ExecStart={BIN} run --config /etc/enforcer/config.toml"),
    ] {
        assert!(has_line(&unit, line), "unit lacks {line:?}:\n{unit}");
    }
    assert!(
        !unit.contains("/usr/local/bin/enforcer run"),
        "ExecStart was rewritten"
    );
    for line in unit.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !line.starts_with("ProtectKernelTunables=")
                && !line.starts_with("ProtectControlGroups="),
            "{line}: would make bpffs or cgroupfs read-only"
        );
    }

    let scopes = root.read("etc/systemd/system/enforcer.service.d/scopes.conf");
    assert!(
        has_line(&scopes, "Before=agents.slice ci.slice"),
        "{scopes}"
    );
    for slice in ["agents.slice", "ci.slice"] {
        let dropin = root.read(&format!("etc/systemd/system/{slice}.d/enforcer.conf"));
        assert!(has_line(&dropin, "Wants=enforcer.service"), "{dropin}");
        assert!(has_line(&dropin, "After=enforcer.service"), "{dropin}");
        for never in ["Requires=", "BindsTo=", "Requisite=", "PartOf="] {
            assert!(
                !dropin.lines().any(|l| l.starts_with(never)),
                "{slice}: {never}\n{dropin}"
            );
        }
        assert!(
            stdout.contains(&format!("{slice}.d/enforcer.conf")),
            "reported: {stdout}"
        );
    }
    assert!(stdout.contains("enforcer.service"), "{stdout}");

    assert_eq!(
        root.read(CONFIG),
        TWO_SCOPES,
        "an existing configuration is left as it was"
    );
    let bundles = std::fs::metadata(root.path("etc/enforcer/bundles")).expect("bundle dir");
    assert!(bundles.is_dir());
    assert_eq!(bundles.permissions().mode() & 0o777, 0o700);
}

#[test]
fn writes_a_default_configuration_only_when_there_is_none() {
    let root = Root::new();
    let stdout = root.install_ok();
    assert_eq!(root.read(CONFIG), enforcer::agent::Settings::default_text());
    assert!(stdout.contains("config.toml"), "{stdout}");
    assert!(
        !root
            .path("etc/systemd/system/enforcer.service.d/scopes.conf")
            .exists(),
        "no scopes, no Before="
    );

    let mine = "# mine\nself_test = false\n";
    root.write(CONFIG, mine);
    let stdout = root.install_ok();
    assert_eq!(root.read(CONFIG), mine, "never overwritten");
    assert!(stdout.contains("kept"), "{stdout}");
}

#[test]
fn an_invalid_configuration_is_refused_by_name_and_nothing_is_written() {
    let root = Root::new();
    root.write(CONFIG, "[[scope]]\npath = \"agents.slice\"\n");
    let out = root.install(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to install"), "{stderr}");
    assert!(
        stderr.contains(&root.path(CONFIG).display().to_string()),
        "names the file: {stderr}"
    );
    assert!(
        stderr.contains("must be absolute"),
        "names the problem: {stderr}"
    );
    assert!(!root.path(UNIT).exists(), "nothing installed");
    assert!(
        !root.path("etc/enforcer/bundles").exists(),
        "nothing created"
    );

    root.write(CONFIG, "trusst = \"/etc/enforcer/trust.toml\"\n");
    let out = root.install(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("trusst"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_scope_dropped_from_the_configuration_loses_its_dropin() {
    let root = Root::new();
    root.write(CONFIG, TWO_SCOPES);
    root.install_ok();
    // The administrator's own drop-in in the same directory must survive.
    root.write(
        "etc/systemd/system/ci.slice.d/limits.conf",
        "[Slice]\nCPUQuota=50%\n",
    );

    root.write(CONFIG, "[[scope]]\npath = \"/agents.slice\"\n");
    let stdout = root.install_ok();
    assert!(
        !root
            .path("etc/systemd/system/ci.slice.d/enforcer.conf")
            .exists(),
        "{stdout}"
    );
    assert!(
        root.path("etc/systemd/system/ci.slice.d/limits.conf")
            .exists()
    );
    assert!(
        root.path("etc/systemd/system/agents.slice.d/enforcer.conf")
            .exists()
    );
    let scopes = root.read("etc/systemd/system/enforcer.service.d/scopes.conf");
    assert!(has_line(&scopes, "Before=agents.slice"), "{scopes}");
    assert!(stdout.contains("removed"), "{stdout}");
}

#[test]
fn a_dropin_not_written_by_install_unit_is_never_replaced() {
    let root = Root::new();
    root.write(CONFIG, TWO_SCOPES);
    let theirs = "[Unit]\nDescription=the administrator's\n";
    root.write("etc/systemd/system/agents.slice.d/enforcer.conf", theirs);
    let out = root.install(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("not written by `enforcer install-unit`"),
        "{}",
        text(&out)
    );
    assert_eq!(
        root.read("etc/systemd/system/agents.slice.d/enforcer.conf"),
        theirs
    );
    assert!(!root.path(UNIT).exists(), "refused before writing anything");
}

/// `systemd-analyze verify` on unit files: `Ok` when it exits 0 and says nothing about
/// them. It exits 0 on unknown keys and unparsable values (it only logs them), so its
/// output counts too; lines about the host's own units do not.
fn verify(root: &Root, units: &[&Path]) -> Result<(), String> {
    let out = match Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(units)
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run systemd-analyze ({e}): install it with `cargo xtask setup` (Debian \
             package systemd); the unit cannot be checked without it"
        ),
    };
    let root_text = root.dir.path().display().to_string();
    let ours: Vec<&str> = std::str::from_utf8(&out.stderr)
        .expect("utf-8")
        .lines()
        .chain(std::str::from_utf8(&out.stdout).expect("utf-8").lines())
        .filter(|l| l.contains(&root_text) || l.contains("enforcer") || l.contains(".slice"))
        .collect();
    if out.status.success() && ours.is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {}", out.status, ours.join("\n")))
    }
}

#[test]
fn the_installed_unit_passes_systemd_analyze_verify() {
    let root = Root::new();
    // With [http], so that the network drop-in is checked too.
    root.write(CONFIG, &format!("{TWO_SCOPES}\n[http]\n"));
    root.install_ok();
    let unit = root.path(UNIT);
    let http = root.read("etc/systemd/system/enforcer.service.d/http.conf");
    assert!(has_line(&http, "IPAddressAllow=localhost"), "{http}");
    // The drop-ins next to the unit are read too, the slices' included.
    verify(&root, &[&unit]).unwrap_or_else(|e| panic!("verify failed on the installed unit:\n{e}"));

    // The check can fail: broken copies of the unit must not pass.
    let good = root.read(UNIT);
    let broken = [
        ("Type=notify", "Type=notifyy"),
        ("WatchdogSec=30s", "WatchdogSec=soon"),
        (
            &format!("ExecStart={BIN} "),
            "ExecStart=/nonexistent/enforcer ",
        ),
        ("[Service]", "[Service]\nNoSuchKey=1"),
    ];
    for (from, to) in broken {
        assert!(good.contains(from), "{from}");
        let copy = root.path("etc/systemd/system/enforcer-broken.service");
        std::fs::write(&copy, good.replacen(from, to, 1)).expect("write copy");
        assert!(
            verify(&root, &[&copy]).is_err(),
            "verify passed a unit with {to:?}"
        );
    }
    // And a broken drop-in of a governed slice is caught through the unit.
    std::fs::remove_file(root.path("etc/systemd/system/enforcer-broken.service")).expect("rm");
    root.write(
        "etc/systemd/system/ci.slice.d/zz-broken.conf",
        "[Unit]\nAfterr=enforcer.service\n",
    );
    assert!(
        verify(&root, &[&unit]).is_err(),
        "verify passed a broken slice drop-in"
    );
}

#[test]
fn on_a_host_with_apt_the_package_hook_is_installed_and_apt_reads_it() {
    const HOOK: &str = "etc/apt/apt.conf.d/80enforcer";
    // No apt configuration directory: not a host apt runs on, no hook.
    let bare = Root::new();
    bare.write(CONFIG, TWO_SCOPES);
    bare.install_ok();
    assert!(!bare.path(HOOK).exists(), "a hook without apt");

    let root = Root::new();
    root.write(CONFIG, TWO_SCOPES);
    std::fs::create_dir_all(root.path("etc/apt/apt.conf.d")).expect("mkdir");
    let stdout = root.install_ok();
    assert!(stdout.contains("80enforcer"), "{stdout}");
    // apt itself parses the file and finds the hook, bundle directory included.
    let out = Command::new("apt-config")
        .arg("-c")
        .arg(root.path(HOOK))
        .args(["dump", "DPkg::Pre-Install-Pkgs"])
        .output()
        .expect("run apt-config (Debian package apt)");
    let dump = text(&out);
    assert!(
        out.status.success()
            && dump.contains(&format!(
                "\"{BIN} bundle apt-hook --bundle-dir /etc/enforcer/bundles\""
            )),
        "apt does not read the hook:\n{dump}\n{}",
        root.read(HOOK)
    );

    // An administrator's own file of that name is left alone, and nothing is written.
    let theirs = "DPkg::Pre-Install-Pkgs { \"/usr/local/bin/theirs\"; };\n";
    root.write(HOOK, theirs);
    let out = root.install(&[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("not written by `enforcer install-unit`"),
        "{}",
        text(&out)
    );
    assert_eq!(root.read(HOOK), theirs);
}
