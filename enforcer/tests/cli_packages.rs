//! `bundle create --from-package` and `bundle drift` against real Debian packages, fetched
//! through this host's apt (lists from `apt-get update`, signed by Debian's archive key).
//! The disk side is a temporary `--root` holding a package unpacked by dpkg-deb, so the
//! tests change nothing on the system. They need root only for apt-get download's cache
//! lock, and the archive reachable; every download is bounded by `timeout`.

// The package's dependencies are the library's; this target uses only a few of them.
#![allow(unused_crate_dependencies)]

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::Run;

/// A package with no dependencies beyond libc, small, and shipping one program.
const SMALL: &str = "hello";
/// A package the archive carries in two versions (bookworm and bookworm-security), with
/// an epoch in its version: drift between two real releases.
const TWO_VERSIONS: &str = "bind9-host";
/// A package with an older bookworm and a newer bookworm-security version, that needs only
/// libc6 and has no maintainer scripts: apt can upgrade it inside a temporary root whose
/// other packages are the host's, where bind9-host would pull in bind9-libs and its
/// libraries.
const APT_UPGRADE: &str = "patch";

fn enforcer(dir: &Path, args: &[&str]) -> Run {
    common::enforcer(dir, args)
}

/// Runs a system tool under `timeout` so a slow mirror fails the test instead of hanging it.
fn tool(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("300")
        .arg(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `apt-get download PACKAGE[=VERSION]` into `dir`; the .deb's path.
fn download(dir: &Path, spec: &str) -> PathBuf {
    let before: Vec<_> = debs(dir);
    tool(
        dir,
        "apt-get",
        &["-q", "-o", "APT::Sandbox::User=root", "download", spec],
    );
    debs(dir)
        .into_iter()
        .find(|d| !before.contains(d))
        .unwrap_or_else(|| {
            panic!(
                "apt-get download {spec} left no new .deb in {}",
                dir.display()
            )
        })
}

fn debs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect()
}

fn field(deb: &Path, name: &str) -> String {
    tool(
        Path::new("/"),
        "dpkg-deb",
        &["-f", deb.to_str().expect("utf-8"), name],
    )
    .trim()
    .to_owned()
}

fn sha256(path: &Path) -> String {
    let out = tool(
        Path::new("/"),
        "sha256sum",
        &[path.to_str().expect("utf-8")],
    );
    out.split_whitespace().next().expect("digest").to_owned()
}

/// Unpacks `deb` into `root` and records it in a dpkg database there, as installing it
/// would (status and file list), so `dpkg-query --admindir` answers for the root.
fn install_into(root: &Path, deb: &Path) {
    let deb_s = deb.to_str().expect("utf-8");
    tool(
        Path::new("/"),
        "dpkg-deb",
        &["-x", deb_s, root.to_str().expect("utf-8")],
    );
    let admin = root.join("var/lib/dpkg");
    std::fs::create_dir_all(admin.join("info")).expect("admindir");
    std::fs::create_dir_all(admin.join("updates")).expect("admindir");
    let package = field(deb, "Package");
    std::fs::write(
        admin.join("status"),
        format!(
            "Package: {package}\nStatus: install ok installed\nVersion: {}\nArchitecture: {}\n\
             Maintainer: test\nDescription: test\n",
            field(deb, "Version"),
            field(deb, "Architecture"),
        ),
    )
    .expect("status");
    let listing = tool(Path::new("/"), "dpkg-deb", &["-c", deb_s]);
    let mut list = String::from("/.\n");
    for line in listing.lines() {
        // `-rwxr-xr-x root/root 117456 2026-05-20 10:35 ./usr/bin/host`
        let path = line.split_whitespace().nth(5).expect("path column");
        let path = path.trim_start_matches('.').trim_end_matches('/');
        if !path.is_empty() {
            list.push_str(path);
            list.push('\n');
        }
    }
    std::fs::write(admin.join(format!("info/{package}.list")), list).expect("list");
    // The package's own md5sums, where dpkg keeps them once installed.
    let control = root.join("control");
    tool(
        Path::new("/"),
        "dpkg-deb",
        &["-e", deb_s, control.to_str().expect("utf-8")],
    );
    std::fs::rename(
        control.join("md5sums"),
        admin.join(format!("info/{package}.md5sums")),
    )
    .expect("md5sums");
    std::fs::remove_dir_all(control).expect("control");
}

fn create_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "bundle",
        "create",
        "--issuer",
        "ops",
        "--bundle-id",
        "pkg",
        "--serial",
        "1",
        "--scope",
        "/agents.slice",
        "--valid-for",
        "8h",
        "--force",
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    args
}

fn inspect(dir: &Path, bundle: &str) -> String {
    let run = enforcer(dir, &["bundle", "inspect", bundle]);
    assert_eq!(run.code, 0, "inspect failed: {}", run.stderr);
    run.stdout
}

#[test]
fn a_package_is_granted_from_the_archive_and_a_changed_file_on_disk_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let deb = download(dir.path(), SMALL);
    let version = field(&deb, "Version");
    let arch = field(&deb, "Architecture");
    let root = dir.path().join("root");
    tool(
        Path::new("/"),
        "dpkg-deb",
        &[
            "-x",
            deb.to_str().expect("utf-8"),
            root.to_str().expect("utf-8"),
        ],
    );
    let program = root.join("usr/bin/hello");
    let archive_digest = sha256(&program);
    let root_s = root.to_str().expect("utf-8");
    let spec = format!("{SMALL}={version}");

    let run = enforcer(
        dir.path(),
        &create_args("b.json", &["--from-package", &spec, "--root", root_s]),
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains(&format!("{SMALL} {version} {arch}: 1 file(s) to grant")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("trust: archive"), "{}", run.stdout);
    assert!(!run.stdout.contains("drift"), "{}", run.stdout);
    let shown = inspect(dir.path(), "b.json");
    assert!(
        shown.contains(&format!(
            "sha256:{archive_digest}  deb:{SMALL}/{version}/{arch}:/usr/bin/hello"
        )),
        "{shown}"
    );

    // A changed program on disk: reported, the archive's digest still granted, exit 3.
    let mut bytes = std::fs::read(&program).expect("read");
    bytes.push(0);
    std::fs::write(&program, bytes).expect("write");
    let changed = sha256(&program);
    let run = enforcer(
        dir.path(),
        &create_args("b.json", &["--from-package", &spec, "--root", root_s]),
    );
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "drift: {} differs from the package: disk {changed}, archive {archive_digest}",
            program.display()
        )),
        "{}",
        run.stdout
    );
    assert!(inspect(dir.path(), "b.json").contains(&archive_digest));
    assert!(!inspect(dir.path(), "b.json").contains(&changed));
    let run = enforcer(
        dir.path(),
        &create_args(
            "b.json",
            &["--from-package", &spec, "--root", root_s, "--allow-drift"],
        ),
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("drift: "), "{}", run.stdout);

    // The same .deb handed over as a file (what an apt hook gets) gives the same grant.
    let deb_s = deb.to_str().expect("utf-8");
    let run = enforcer(
        dir.path(),
        &create_args(
            "d.json",
            &["--from-deb", deb_s, "--root", root_s, "--allow-drift"],
        ),
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(inspect(dir.path(), "d.json").contains(&archive_digest));
}

#[test]
fn a_deb_the_archive_did_not_publish_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let deb = download(dir.path(), SMALL);
    // The same package name and version, rebuilt with a changed program: a valid .deb
    // whose SHA-256 is not the one the signed index lists.
    let raw = dir.path().join("raw");
    let raw_s = raw.to_str().expect("utf-8");
    tool(
        Path::new("/"),
        "dpkg-deb",
        &["-R", deb.to_str().expect("utf-8"), raw_s],
    );
    let program = raw.join("usr/bin/hello");
    let mut bytes = std::fs::read(&program).expect("read");
    bytes.push(0);
    std::fs::write(&program, bytes).expect("write");
    let forged = dir.path().join("forged.deb");
    tool(
        Path::new("/"),
        "dpkg-deb",
        &["-b", raw_s, forged.to_str().expect("utf-8")],
    );

    let run = enforcer(
        dir.path(),
        &create_args("f.json", &["--from-deb", forged.to_str().expect("utf-8")]),
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("is not what the archive published"),
        "{}",
        run.stderr
    );
    assert!(!dir.path().join("f.json").exists());

    // A keyring that did not sign the lists verifies nothing: refused, not trusted.
    let empty = dir.path().join("empty.gpg");
    std::fs::write(&empty, b"").expect("keyring");
    let run = enforcer(
        dir.path(),
        &create_args(
            "f.json",
            &[
                "--from-deb",
                deb.to_str().expect("utf-8"),
                "--keyring",
                empty.to_str().expect("utf-8"),
            ],
        ),
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("no package index"), "{}", run.stderr);
}

/// The two versions of `package` the archive lists, older first.
fn two_versions(package: &str) -> (String, String) {
    let out = tool(Path::new("/"), "apt-cache", &["madison", package]);
    let mut versions: Vec<String> = out
        .lines()
        .filter_map(|l| l.split('|').nth(1).map(|v| v.trim().to_owned()))
        .collect();
    versions.dedup();
    assert!(
        versions.len() >= 2,
        "the archive lists one version of {package} ({versions:?}): pick another package \
         with a bookworm and a bookworm-security version (apt-cache madison)"
    );
    // madison lists newest first.
    (versions[versions.len() - 1].clone(), versions[0].clone())
}

#[test]
fn drift_between_two_real_versions_is_listed_with_exit_codes_for_cron() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (old, new) = two_versions(TWO_VERSIONS);
    let old_deb = download(dir.path(), &format!("{TWO_VERSIONS}={old}"));
    let new_deb = download(dir.path(), &format!("{TWO_VERSIONS}={new}"));
    let root = dir.path().join("root");
    let root_s = root.to_str().expect("utf-8");
    install_into(&root, &old_deb);
    // An alternative leading to the packaged program, as update-alternatives makes them.
    std::fs::create_dir_all(root.join("etc/alternatives")).expect("alternatives");
    std::os::unix::fs::symlink("/usr/bin/host", root.join("etc/alternatives/resolver"))
        .expect("symlink");

    let run = enforcer(
        dir.path(),
        &create_args(
            "b.json",
            &["--from-package", TWO_VERSIONS, "--root", root_s],
        ),
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!("{TWO_VERSIONS} {old} ")),
        "installed version is the default: {}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("/usr/bin/host is also run as the alternative resolver"),
        "{}",
        run.stdout
    );

    let run = enforcer(dir.path(), &["bundle", "drift", "b.json", "--root", root_s]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains(&format!("{TWO_VERSIONS}: granted {old}, installed {old}")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.ends_with("no drift\n"), "{}", run.stdout);

    // The upgrade: the new version unpacked over the old one, as dpkg would.
    install_into(&root, &new_deb);
    let run = enforcer(dir.path(), &["bundle", "drift", "b.json", "--root", root_s]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains(&format!("{TWO_VERSIONS}: granted {old}, installed {new}")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("  changed: /usr/bin/host "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .ends_with("drift: the disk no longer matches the bundle\n"),
        "{}",
        run.stdout
    );

    // A program the package gained is new; one it lost is gone. Then as JSON.
    let extra = root.join("usr/bin/host-extra");
    std::fs::copy(root.join("usr/bin/host"), &extra).expect("copy");
    let list = root.join(format!("var/lib/dpkg/info/{TWO_VERSIONS}.list"));
    let mut text = std::fs::read_to_string(&list).expect("list");
    text.push_str("/usr/bin/host-extra\n");
    std::fs::write(&list, text).expect("list");
    std::fs::remove_file(root.join("usr/bin/host")).expect("remove");
    let run = enforcer(
        dir.path(),
        &["bundle", "drift", "b.json", "--root", root_s, "--json"],
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON report");
    let package = &report["packages"][0];
    assert_eq!(report["drift"], true);
    assert_eq!(package["installed_version"], new.as_str());
    assert_eq!(package["granted_versions"][0], old.as_str());
    assert_eq!(package["gone"][0], "/usr/bin/host", "{package}");
    assert_eq!(
        package["new"][0]["path"], "/usr/bin/host-extra",
        "{package}"
    );

    // A diversion: the package's file lives elsewhere, and is compared there.
    install_into(&root, &old_deb);
    std::fs::remove_file(&extra).expect("remove");
    std::fs::rename(root.join("usr/bin/host"), root.join("usr/bin/host.distrib")).expect("move");
    std::fs::write(root.join("usr/bin/host"), "#!/bin/sh\necho local\n").expect("write");
    std::fs::write(
        root.join("var/lib/dpkg/diversions"),
        "/usr/bin/host\n/usr/bin/host.distrib\n:\n",
    )
    .expect("diversions");
    let run = enforcer(dir.path(), &["bundle", "drift", "b.json", "--root", root_s]);
    assert_eq!(
        run.code, 0,
        "the diverted file is the package's: {}{}",
        run.stdout, run.stderr
    );

    // Trouble is 2, whatever the drift.
    let run = enforcer(
        dir.path(),
        &["bundle", "drift", "missing.json", "--root", root_s],
    );
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("missing.json"), "{}", run.stderr);
}

/// Runs `enforcer bundle apt-hook ARGS` with `stdin` as apt would feed it.
fn apt_hook(dir: &Path, args: &[&str], stdin: &str) -> Run {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_enforcer"))
        .args(["bundle", "apt-hook"])
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run enforcer");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn the_apt_hook_names_what_an_upgrade_breaks_writes_a_candidate_and_never_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (old, new) = two_versions(TWO_VERSIONS);
    let old_deb = download(dir.path(), &format!("{TWO_VERSIONS}={old}"));
    let new_deb = download(dir.path(), &format!("{TWO_VERSIONS}={new}"));
    let unpacked = dir.path().join("new");
    tool(
        Path::new("/"),
        "dpkg-deb",
        &[
            "-x",
            new_deb.to_str().expect("utf-8"),
            unpacked.to_str().expect("utf-8"),
        ],
    );
    let new_digest = sha256(&unpacked.join("usr/bin/host"));
    let bundles = dir.path().join("bundles");
    std::fs::create_dir(&bundles).expect("bundle dir");
    std::fs::write(bundles.join("README"), "not a bundle\n").expect("write");
    let run = enforcer(
        dir.path(),
        &create_args(
            "bundles/dns.json",
            &[
                "--from-deb",
                old_deb.to_str().expect("utf-8"),
                "--root",
                "/nonexistent",
            ],
        ),
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let hook_args = ["--bundle-dir", "bundles", "--out-dir", "candidates"];

    // Version 1 of Pre-Install-Pkgs: one .deb path a line.
    let stdin = format!("{}\n", new_deb.display());
    let run = apt_hook(dir.path(), &hook_args, &stdin);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "bundles/dns.json: would break: /usr/bin/host ({TWO_VERSIONS} {old} -> {new}): content changes"
        )),
        "{}{}",
        run.stdout,
        run.stderr
    );
    let shown = inspect(dir.path(), "candidates/dns.serial-2.json");
    assert!(shown.contains("serial 2"), "{shown}");
    assert!(
        shown.contains(&format!("sha256:{new_digest}  deb:{TWO_VERSIONS}/{new}/")),
        "{shown}"
    );

    // A .deb the archive did not publish: reported, and apt still goes on.
    let stray = dir.path().join(format!("{TWO_VERSIONS}_0_amd64.deb"));
    std::fs::write(&stray, b"not a package").expect("write");
    let run = apt_hook(dir.path(), &hook_args, &format!("{}\n", stray.display()));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("(apt goes on)"), "{}", run.stderr);

    // Out of time: gives up, exit 0.
    let mut args = hook_args.to_vec();
    args.extend(["--timeout", "0s"]);
    let run = apt_hook(dir.path(), &args, &stdin);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("gave up after"), "{}", run.stderr);
}

#[test]
fn trust_disk_grants_what_matches_dpkgs_md5s_says_it_is_weaker_and_refuses_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let deb = download(dir.path(), SMALL);
    let root = dir.path().join("root");
    let root_s = root.to_str().expect("utf-8");
    install_into(&root, &deb);
    let program = root.join("usr/bin/hello");
    let digest = sha256(&program);

    let args = ["--from-package", SMALL, "--trust-disk", "--root", root_s];
    let run = enforcer(dir.path(), &create_args("b.json", &args));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("digests from the DISK"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("weaker than the archive"),
        "{}",
        run.stdout
    );
    let shown = inspect(dir.path(), "b.json");
    assert!(
        shown.contains(&format!("sha256:{digest}  deb+disk:{SMALL}/")),
        "{shown}"
    );

    let mut bytes = std::fs::read(&program).expect("read");
    bytes.push(0);
    std::fs::write(&program, bytes).expect("write");
    let run = enforcer(dir.path(), &create_args("b.json", &args));
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("refused: /usr/bin/hello: MD5 "),
        "{}",
        run.stdout
    );
    assert!(!inspect(dir.path(), "b.json").contains("/usr/bin/hello"));
}

/// apt-get and dpkg working on a temporary root instead of the host's: the root's dpkg
/// database, apt cache, state and logs are under `dir`; the host's sources and signed
/// lists are only read, so packages are authenticated by apt's own chain. apt reads the
/// root's `etc/apt/apt.conf.d` and none of the host's configuration (its hooks included).
struct AptRoot {
    dir: PathBuf,
    root: PathBuf,
    conf: PathBuf,
}

impl AptRoot {
    /// Seeds the root's dpkg database with the host's, less `absent`: the host's packages
    /// count as installed (so a dependency on libc6 is met) though the root holds none of
    /// their files.
    fn new(dir: &Path, absent: &str) -> Self {
        let root = dir.join("root");
        let admin = root.join("var/lib/dpkg");
        for sub in ["info", "updates", "triggers"] {
            std::fs::create_dir_all(admin.join(sub)).expect("admindir");
        }
        for sub in ["etc/apt/apt.conf.d", "var/log"] {
            std::fs::create_dir_all(root.join(sub)).expect("root dir");
        }
        for sub in ["apt-state", "apt-cache", "apt-log"] {
            std::fs::create_dir_all(dir.join(sub)).expect("apt dir");
        }
        let host = std::fs::read_to_string("/var/lib/dpkg/status").expect("host dpkg status");
        let own = format!("Package: {absent}\n");
        let status: Vec<&str> = host
            .split("\n\n")
            .filter(|p| !p.trim().is_empty() && !p.starts_with(&own))
            .collect();
        std::fs::write(admin.join("status"), status.join("\n\n") + "\n").expect("status");
        // An empty file list for each: dpkg reads one per installed package, and warns
        // for each one missing.
        for entry in std::fs::read_dir("/var/lib/dpkg/info").expect("host dpkg info") {
            let name = entry.expect("entry").file_name();
            let name = name.to_str().expect("utf-8");
            let Some(stem) = name.strip_suffix(".list") else {
                continue;
            };
            // PACKAGE.list, or PACKAGE:ARCH.list for Multi-Arch: same.
            if stem.split(':').next() != Some(absent) {
                std::fs::write(admin.join("info").join(name), "").expect("list");
            }
        }
        // Read through APT_CONFIG, before apt looks at Dir::Etc::Parts: so the host's parts
        // are never read. dpkg's --log is not under --root: without it dpkg would append
        // to the host's /var/log/dpkg.log. The sandbox user cannot write into a private
        // temporary directory, as in `download`.
        let conf = dir.join("apt.conf");
        let (d, r) = (dir.display(), root.display());
        std::fs::write(
            &conf,
            format!(
                "Dir::Etc::Parts \"{r}/etc/apt/apt.conf.d\";\n\
                 Dir::Etc::Main \"/dev/null\";\n\
                 Dir::Etc::Preferences \"/dev/null\";\n\
                 Dir::Etc::PreferencesParts \"/dev/null\";\n\
                 Dir::State \"{d}/apt-state/\";\n\
                 Dir::State::Lists \"/var/lib/apt/lists/\";\n\
                 Dir::State::status \"{r}/var/lib/dpkg/status\";\n\
                 Dir::Cache \"{d}/apt-cache/\";\n\
                 Dir::Log \"{d}/apt-log/\";\n\
                 DPkg::Options {{ \"--root={r}\"; \"--log={r}/var/log/dpkg.log\"; }};\n\
                 APT::Sandbox::User \"root\";\n"
            ),
        )
        .expect("apt.conf");
        Self {
            dir: dir.to_owned(),
            root,
            conf,
        }
    }

    /// `program ARGS` (apt-get, apt-config) on the root; candidates the hook writes go to
    /// `DIR/candidates`.
    fn apt(&self, program: &str, args: &[&str]) -> Run {
        let out = Command::new("timeout")
            .arg("300")
            .arg(program)
            .args(args)
            .current_dir(&self.dir)
            .env("APT_CONFIG", &self.conf)
            .env("ENFORCER_APT_CANDIDATES", self.dir.join("candidates"))
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LC_ALL", "C")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        Run {
            code: out.status.code().expect("exit code"),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn apt_get(&self, args: &[&str]) -> Run {
        let mut all = vec!["-y", "-q"];
        all.extend_from_slice(args);
        self.apt("apt-get", &all)
    }

    fn installed_version(&self, package: &str) -> String {
        let admin = self.root.join("var/lib/dpkg");
        tool(
            Path::new("/"),
            "dpkg-query",
            &[
                "--admindir",
                admin.to_str().expect("utf-8"),
                "-W",
                "-f",
                "${Version}",
                package,
            ],
        )
    }
}

#[test]
fn apt_runs_the_installed_hook_in_a_real_upgrade_which_it_reports_and_apt_finishes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let (old, new) = two_versions(APT_UPGRADE);
    let apt = AptRoot::new(dir, APT_UPGRADE);
    let bundles = dir.join("bundles");
    std::fs::create_dir(&bundles).expect("bundle dir");

    // install-unit writes the hook into the root's apt.conf.d, for the configuration's
    // bundle directory; apt then runs exactly that hook, and no other.
    let config = apt.root.join("etc/enforcer/config.toml");
    std::fs::create_dir_all(config.parent().expect("parent")).expect("config dir");
    std::fs::write(
        &config,
        format!("bundle_dir = {:?}\n", bundles.display().to_string()),
    )
    .expect("config");
    let bin = env!("CARGO_BIN_EXE_enforcer");
    let root_s = apt.root.to_str().expect("utf-8");
    let run = enforcer(dir, &["install-unit", "--root", root_s, "--binary", bin]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("apt.conf.d/80enforcer"),
        "{}",
        run.stdout
    );
    let run = apt.apt("apt-config", &["dump", "DPkg::Pre-Install-Pkgs"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        format!(
            "DPkg::Pre-Install-Pkgs \"\";\nDPkg::Pre-Install-Pkgs:: \"{bin} bundle apt-hook \
             --bundle-dir {}\";\n",
            bundles.display()
        ),
        "apt does not see the hook install-unit wrote, or sees others"
    );

    // The old version, installed by apt (the hook runs; nothing is governed yet), then
    // granted as the operator would: from the archive, checked against the disk.
    let run = apt.apt_get(&["install", &format!("{APT_UPGRADE}={old}")]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains("enforcer apt-hook"), "{}", run.stdout);
    assert_eq!(apt.installed_version(APT_UPGRADE), old);
    let program = apt.root.join("usr/bin/patch");
    let old_digest = sha256(&program);
    let run = enforcer(
        dir,
        &create_args(
            "bundles/tools.json",
            &["--from-package", APT_UPGRADE, "--root", root_s],
        ),
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        inspect(dir, "bundles/tools.json").contains(&format!("sha256:{old_digest}  deb:")),
        "the bundle does not grant the installed program"
    );

    // The upgrade: the hook names the grant it breaks before dpkg unpacks, writes the
    // candidate, and apt finishes with the new program in the root.
    let run = apt.apt_get(&["install", "--only-upgrade", APT_UPGRADE]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(apt.installed_version(APT_UPGRADE), new);
    let new_digest = sha256(&program);
    assert_ne!(
        new_digest,
        old_digest,
        "the upgrade did not replace {}",
        program.display()
    );
    let report = format!(
        "enforcer apt-hook: {}: would break: /usr/bin/patch ({APT_UPGRADE} {old} -> {new}): \
         content changes, sha256 {old_digest} -> {new_digest}",
        bundles.join("tools.json").display()
    );
    let reported = run.stdout.find(&report);
    let unpacked = run.stdout.find(&format!("Unpacking {APT_UPGRADE} ({new})"));
    assert!(
        reported.is_some() && unpacked.is_some() && reported < unpacked,
        "no report before the unpack:\n{}{}",
        run.stdout,
        run.stderr
    );
    let shown = inspect(dir, "candidates/tools.serial-2.json");
    assert!(shown.contains("serial 2"), "{shown}");
    assert!(
        shown.contains(&format!("sha256:{new_digest}  deb:{APT_UPGRADE}/{new}/")),
        "{shown}"
    );
    assert!(!shown.contains(&old_digest), "{shown}");

    // apt's richer protocol (version 3: its configuration, then a line per package with
    // versions and the .deb) gives the hook the same .deb.
    std::fs::remove_dir_all(dir.join("candidates")).expect("rm candidates");
    let v3 = format!("DPkg::Tools::Options::{bin}::Version=3");
    let run = apt.apt_get(&["-o", &v3, "install", "--reinstall", APT_UPGRADE]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(&report), "{}{}", run.stdout, run.stderr);
    assert!(dir.join("candidates/tools.serial-2.json").is_file());

    // A hook that cannot do its work says so, and apt still finishes.
    std::fs::remove_dir_all(&bundles).expect("rm bundles");
    let run = apt.apt_get(&["install", "--reinstall", APT_UPGRADE]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "enforcer apt-hook: cannot list {}",
            bundles.display()
        )) && run.stderr.contains("(apt goes on)"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout
            .contains(&format!("Setting up {APT_UPGRADE} ({new})")),
        "{}",
        run.stdout
    );

    // And the check above can fail: a Pre-Install-Pkgs hook that exits non-zero stops apt
    // before anything is unpacked.
    let run = apt.apt_get(&[
        "-o",
        "DPkg::Pre-Install-Pkgs::=false",
        "install",
        "--reinstall",
        APT_UPGRADE,
    ]);
    assert_ne!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("Failure running script false"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("Unpacking"), "{}", run.stdout);
}
