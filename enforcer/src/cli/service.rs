//! `enforcer install-unit`: installs the agent as a systemd service.
//!
//! What it writes (every path under `--root` when given):
//! - `/etc/systemd/system/enforcer.service`, from `packaging/enforcer.service` with
//!   `ExecStart=` naming the real binary and configuration file;
//! - for each systemd unit that holds a governed scope (`/agents.slice` is the slice
//!   `agents.slice`, `/ci.slice/x` lies in `ci.slice`), a drop-in
//!   `/etc/systemd/system/<unit>.d/enforcer.conf` with `Wants=` and `After=` the agent,
//!   and `enforcer.service.d/scopes.conf` with `Before=` them, so the workloads start
//!   once enforcement is in place;
//! - `enforcer.service.d/paths.conf` when the configuration puts writable directories
//!   outside those the unit already opens (`ProtectSystem=strict`);
//! - the configuration file, with every default spelled out, only when there is none;
//! - the bundle directory (mode 0700) when missing.
//!
//! The governed units never `Requires=` or `BindsTo=` the agent: restarting the agent
//! would then restart the workloads, and enforcement does not need it (it stays pinned
//! in the kernel). docs/service.md gives the reasoning.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::Context as _;
use clap::Args;

use crate::agent::Settings;
use crate::agent::settings::ConfigError;
use crate::authz::artifact::ScopePath;
use crate::paths;

/// The unit as shipped; `ExecStart=` is rewritten on install.
pub(super) const UNIT_TEMPLATE: &str = include_str!("../../../packaging/enforcer.service");
/// The `ExecStart=` line of [`UNIT_TEMPLATE`].
const TEMPLATE_EXEC_START: &str =
    "ExecStart=/usr/local/bin/enforcer run --config /etc/enforcer/config.toml";
/// The agent's unit name.
pub(super) const UNIT_NAME: &str = "enforcer.service";
/// Where administrators' units live (not `/usr/lib`: that is the package manager's).
pub(super) const UNIT_DIR: &str = "/etc/systemd/system";
/// First line of every file this command writes: only such files are ever replaced or
/// removed, so an administrator's own drop-in of the same name is left alone.
const MARKER: &str = "# Written by `enforcer install-unit`";
/// Name of the drop-in in each governed unit's `.d` directory.
const GOVERNED_DROPIN: &str = "enforcer.conf";
/// apt's configuration directory: where it is, apt runs, and the hook goes in.
const APT_CONF_DIR: &str = "/etc/apt/apt.conf.d";
/// The apt hook's file there.
const APT_HOOK: &str = "80enforcer";
/// Directories the shipped unit already makes writable under `ProtectSystem=strict`.
const WRITABLE_IN_UNIT: &[&str] = &[
    "/etc/enforcer/bundles",
    "/var/lib/enforcer",
    "/run/enforcer",
    "/sys/fs/bpf",
    "/sys/fs/cgroup",
];
/// Units that contain the agent itself (or PID 1): they cannot be ordered after it.
const AGENT_UNITS: &[&str] = &["-.slice", "system.slice", UNIT_NAME, "init.scope"];

/// Installs the agent's systemd unit, the drop-ins that order the governed slices after
/// it, and a default configuration when there is none. Then `systemctl daemon-reload`.
#[derive(Debug, Args)]
pub struct InstallUnitArgs {
    /// The configuration file the agent will read. Written with every default when
    /// missing; an existing one is never overwritten, only checked.
    #[arg(long, env = "ENFORCER_CONFIG", value_name = "FILE", default_value = paths::CONFIG)]
    pub config: PathBuf,
    /// Install below this directory instead of / (packaging, tests): every path written
    /// is prefixed with it, the unit still names the paths without it. Implies
    /// --no-daemon-reload.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The agent binary the unit runs [default: this binary; with --root, give the
    /// path the binary will have on the target system].
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Do not run `systemctl daemon-reload` afterwards.
    #[arg(long)]
    pub no_daemon_reload: bool,
    /// Also `systemctl enable` the unit, so it starts at boot (with --root: in that tree).
    #[arg(long)]
    pub enable: bool,
}

/// Why nothing was installed.
#[derive(Debug, thiserror::Error)]
pub(super) enum InstallError {
    // The configuration error follows as the source (`{:#}` prints the chain).
    #[error("refusing to install")]
    Config(#[from] ConfigError),
    #[error(
        "refusing to install: {what} {path:?} must be an absolute path without . or .. components"
    )]
    NotAbsolute { what: &'static str, path: PathBuf },
    #[error(
        "refusing to install: {what} {path:?} holds a character a unit file would have to \
         quote or escape (whitespace, quotes, \\, $, %, ;, control characters); use a plain path"
    )]
    Unquotable { what: &'static str, path: PathBuf },
    #[error("refusing to install: the binary {0} does not exist (give --binary PATH)")]
    NoBinary(PathBuf),
    #[error(
        "refusing to install: packaging/enforcer.service has no line {TEMPLATE_EXEC_START:?} to rewrite"
    )]
    Template,
    #[error(
        "refusing to replace {0}: it was not written by `enforcer install-unit`; move it \
         away or merge it by hand"
    )]
    Foreign(PathBuf),
}

/// One file to write.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PlannedFile {
    /// The path on the target system (without `--root`).
    path: PathBuf,
    text: String,
}

/// Everything install-unit will do, computed before anything is touched.
#[derive(Debug)]
struct Plan {
    unit: PlannedFile,
    /// `enforcer.service.d/scopes.conf` and `paths.conf`: `None` removes an old one.
    service_dropins: Vec<(PathBuf, Option<String>)>,
    /// Governed unit name → its drop-in.
    governed: BTreeMap<String, PlannedFile>,
    /// Directories to create (mode 0700) when missing.
    dirs: Vec<PathBuf>,
    /// The configuration to write if there is none (`None`: one exists).
    new_config: Option<String>,
    warnings: Vec<String>,
}

/// The systemd unit that holds a scope's processes, if one does: the deepest slice of
/// the path's leading slices, or the first service or scope unit. What lies below a
/// service or scope (a delegated subtree, e.g. a user's manager) is not the system
/// manager's, and a plain directory is not a unit at all.
fn governing_unit(scope: &ScopePath) -> Option<&str> {
    let mut unit = None;
    for component in scope.components() {
        if !is_unit_name(component) {
            break;
        }
        if component.ends_with(".slice") {
            unit = Some(component);
        } else if component.ends_with(".service") || component.ends_with(".scope") {
            return Some(component);
        } else {
            break;
        }
    }
    unit
}

/// A name systemd accepts for a unit: letters, digits and `:-_.\@`, at most 255 bytes.
fn is_unit_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
}

/// Checks a path that goes into the unit or a drop-in unquoted.
fn plain_path(what: &'static str, path: &Path) -> Result<String, InstallError> {
    let absolute = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !absolute {
        return Err(InstallError::NotAbsolute {
            what,
            path: path.to_owned(),
        });
    }
    match path.to_str() {
        Some(s)
            if !s
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "\"'\\$%;".contains(c)) =>
        {
            Ok(s.to_owned())
        }
        _ => Err(InstallError::Unquotable {
            what,
            path: path.to_owned(),
        }),
    }
}

/// The unit text for this binary and configuration file.
fn unit_text(binary: &str, config: &str) -> Result<String, InstallError> {
    if !UNIT_TEMPLATE.lines().any(|l| l == TEMPLATE_EXEC_START) {
        return Err(InstallError::Template);
    }
    let exec_start = format!("ExecStart={binary} run --config {config}");
    Ok(format!(
        "{MARKER} from packaging/enforcer.service. Local changes belong in a drop-in\n\
         # (`systemctl edit enforcer`): running install-unit again replaces this file.\n\
         {}",
        UNIT_TEMPLATE.replacen(TEMPLATE_EXEC_START, &exec_start, 1)
    ))
}

fn governed_dropin(unit: &str, scopes: &[&ScopePath], config: &str) -> String {
    let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    format!(
        "{MARKER} from {config}, which governs {scopes}.\n\
         # Processes in {unit} start once the agent has put the policy in force. Wants=,\n\
         # never Requires= or BindsTo=: stopping or restarting the agent must not stop these\n\
         # workloads, and need not, since enforcement stays pinned in the kernel meanwhile\n\
         # (docs/service.md).\n\
         [Unit]\n\
         Wants={UNIT_NAME}\n\
         After={UNIT_NAME}\n",
        scopes = scopes.join(", "),
    )
}

fn plan(
    config_text_path: &str,
    cfg: &Settings,
    binary: &str,
    new_config: Option<String>,
) -> Result<Plan, InstallError> {
    let unit_path = Path::new(UNIT_DIR).join(UNIT_NAME);
    let dropin_dir = Path::new(UNIT_DIR).join(format!("{UNIT_NAME}.d"));
    let mut warnings = Vec::new();

    let mut by_unit: BTreeMap<&str, Vec<&ScopePath>> = BTreeMap::new();
    for scope in cfg.scope_paths() {
        match governing_unit(scope) {
            Some(unit) if AGENT_UNITS.contains(&unit) => warnings.push(format!(
                "scope {scope} lies in {unit}, which holds the agent itself (or PID 1): it cannot \
                 be ordered after the agent, so nothing there waits for enforcement at boot"
            )),
            Some(unit) => by_unit.entry(unit).or_default().push(scope),
            None => warnings.push(format!(
                "scope {scope} is not in a systemd slice or service: nothing orders it after the \
                 agent; whoever creates it must wait for `systemctl start enforcer`"
            )),
        }
    }
    let governed: BTreeMap<String, PlannedFile> = by_unit
        .iter()
        .map(|(unit, scopes)| {
            let file = PlannedFile {
                path: Path::new(UNIT_DIR)
                    .join(format!("{unit}.d"))
                    .join(GOVERNED_DROPIN),
                text: governed_dropin(unit, scopes, config_text_path),
            };
            ((*unit).to_owned(), file)
        })
        .collect();

    let scopes_dropin = (!by_unit.is_empty()).then(|| {
        let units: Vec<&str> = by_unit.keys().copied().collect();
        format!(
            "{MARKER} from {config_text_path}:\n\
             # the units holding governed scopes start after the agent is ready (they say so\n\
             # too, in their enforcer.conf drop-ins).\n\
             [Unit]\n\
             Before={}\n",
            units.join(" ")
        )
    });

    // Directories the agent writes, by the configuration. Those the unit does not
    // already open need ReadWritePaths=, and must exist before the unit starts.
    let socket_dir = cfg.socket().parent().unwrap_or(Path::new("/")).to_owned();
    let writable: [(&'static str, &Path); 6] = [
        ("bundle_dir", cfg.bundle_dir()),
        ("state_dir", cfg.state_dir()),
        ("audit_dir", cfg.audit_dir()),
        ("the socket's directory", &socket_dir),
        ("pin_dir", cfg.pin_dir()),
        ("cgroup_root", cfg.cgroup_root()),
    ];
    let mut extra = Vec::new();
    let mut dirs = vec![cfg.bundle_dir().to_path_buf()];
    for (what, path) in writable {
        let shown = plain_path(what, path)?;
        if WRITABLE_IN_UNIT.iter().any(|w| path.starts_with(w)) {
            continue;
        }
        // "-": a directory missing at start is the agent's to report, with a reason.
        extra.push(format!("ReadWritePaths=-{shown}"));
        if matches!(what, "state_dir" | "audit_dir" | "bundle_dir")
            && !dirs.iter().any(|d| d == path)
        {
            dirs.push(path.to_path_buf());
        }
    }
    let paths_dropin = (!extra.is_empty()).then(|| {
        format!(
            "{MARKER} from {config_text_path}:\n\
             # directories it names outside those the unit opens; ProtectSystem=strict leaves\n\
             # everything else read-only.\n\
             [Service]\n\
             {}\n",
            extra.join("\n")
        )
    });

    // The unit has no network (PrivateNetwork=yes, AF_UNIX only); the HTTP window needs
    // its address family and, for loopback, nothing wider than localhost.
    let http_dropin = cfg.http.as_ref().map(|http| {
        let allow = if http.listen.ip().is_loopback() {
            "localhost"
        } else {
            // Beyond loopback every path but the probes needs the token; which
            // scrapers may connect is the operator's to narrow here.
            "any"
        };
        format!(
            "{MARKER} from {config_text_path}:\n\
             # the HTTP window ([http] listen = {}): the unit otherwise has no network.\n\
             [Service]\n\
             PrivateNetwork=no\n\
             RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n\
             IPAddressDeny=any\n\
             IPAddressAllow={allow}\n",
            http.listen
        )
    });

    Ok(Plan {
        unit: PlannedFile {
            path: unit_path,
            text: unit_text(binary, config_text_path)?,
        },
        service_dropins: vec![
            (dropin_dir.join("scopes.conf"), scopes_dropin),
            (dropin_dir.join("paths.conf"), paths_dropin),
            (dropin_dir.join("http.conf"), http_dropin),
        ],
        governed,
        dirs,
        new_config,
        warnings,
    })
}

/// apt's `DPkg::Pre-Install-Pkgs` hook: `enforcer bundle apt-hook` on the bundles the
/// agent loads. The hook always exits 0 and bounds its own time, so apt never waits on it
/// for long and never fails because of it (docs/packages.md).
fn apt_hook(
    config_text_path: &str,
    binary: &str,
    cfg: &Settings,
) -> Result<PlannedFile, InstallError> {
    let bundle_dir = plain_path("bundle_dir", cfg.bundle_dir())?;
    Ok(PlannedFile {
        path: Path::new(APT_CONF_DIR).join(APT_HOOK),
        text: format!(
            "{MARKER} from {config_text_path}:\n\
             # before dpkg unpacks an upgrade, report which grants of the governed bundles it\n\
             # breaks and write an unsigned candidate bundle (docs/packages.md). Never blocks apt.\n\
             DPkg::Pre-Install-Pkgs {{ \"{binary} bundle apt-hook --bundle-dir {bundle_dir}\"; }};\n"
        ),
    })
}

/// `path` (absolute, checked) below `root`.
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Whether an existing file is ours to replace or remove.
fn written_by_us(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.starts_with(MARKER))
}

/// Writes `text` to `path` unless it already holds it; says what happened.
fn put(path: &Path, text: &str, ours_only: bool) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(old) if old == text => return Ok(format!("unchanged {}", path.display())),
        Ok(_) if ours_only && !written_by_us(path) => {
            return Err(InstallError::Foreign(path.to_owned()).into());
        }
        _ => {}
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let existed = path.exists();
    crate::fsutil::replace_atomically(path, text.as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(format!(
        "{} {}",
        if existed { "replaced" } else { "wrote" },
        path.display()
    ))
}

/// Removes a file we wrote earlier that is no longer wanted, and its `.d` directory
/// when that is left empty.
fn remove_ours(path: &Path, why: &str) -> anyhow::Result<Option<String>> {
    if !written_by_us(path) {
        return Ok(None);
    }
    std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))?;
    if let Some(dir) = path.parent() {
        // Fails, as it should, when the directory holds anything else.
        let _ = std::fs::remove_dir(dir);
    }
    Ok(Some(format!("removed {} ({why})", path.display())))
}

/// Governed-unit drop-ins from an earlier run, by unit name.
fn earlier_governed(unit_dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(unit_dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let unit = name.strip_suffix(".d")?.to_owned();
            let file = e.path().join(GOVERNED_DROPIN);
            written_by_us(&file).then_some((unit, file))
        })
        .collect()
}

/// Reads and checks the configuration at `path`, or the default one when there is
/// none. Returns it with the text to write when it is new.
fn read_config(path: &Path) -> Result<(Settings, Option<String>), InstallError> {
    if path.exists() {
        return Ok((Settings::load(path)?, None));
    }
    let text = Settings::default_text();
    Ok((Settings::parse(&text, path)?, Some(text)))
}

fn write_config(path: &Path, text: &str) -> anyhow::Result<String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    // create_new: a configuration that appeared meanwhile is still never overwritten.
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
    {
        Ok(mut file) => {
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(format!(
                "wrote {} (defaults; no scope is governed until you add one)",
                path.display()
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(format!(
            "kept {} (an existing configuration is never overwritten)",
            path.display()
        )),
        Err(e) => Err(e).with_context(|| format!("cannot write {}", path.display())),
    }
}

fn systemctl(root: Option<&Path>, args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = Command::new("systemctl");
    if let Some(root) = root {
        cmd.arg(format!("--root={}", root.display()));
    }
    cmd.args(args);
    let status = cmd
        .status()
        .with_context(|| format!("cannot run systemctl {}", args.join(" ")))?;
    anyhow::ensure!(
        status.success(),
        "systemctl {} failed ({status})",
        args.join(" ")
    );
    Ok(())
}

pub(super) fn command(args: &InstallUnitArgs) -> anyhow::Result<ExitCode> {
    let root = match &args.root {
        // Absolute, so that what is printed, and systemctl --root, do not depend on the
        // working directory.
        Some(r) => std::path::absolute(r).with_context(|| format!("--root {}", r.display()))?,
        None => PathBuf::from("/"),
    };
    let config_text_path = plain_path("configuration file", &args.config)?;
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .context("cannot tell where this binary is; give --binary PATH")?,
    };
    let binary_text = plain_path("binary", &binary)?;
    let mut warnings = Vec::new();
    if args.root.is_none() && !binary.is_file() {
        return Err(InstallError::NoBinary(binary).into());
    }

    let config_path = under(&root, &args.config);
    let (cfg, new_config) = read_config(&config_path)?;
    let plan = plan(&config_text_path, &cfg, &binary_text, new_config)?;
    warnings.extend(plan.warnings.iter().cloned());

    // On a host with apt, the hook that says before an upgrade which grants it breaks.
    let apt_hook = under(&root, Path::new(APT_CONF_DIR))
        .is_dir()
        .then(|| apt_hook(&config_text_path, &binary_text, &cfg))
        .transpose()?;

    // Refuse before writing anything if an administrator's file is in the way.
    for file in plan.governed.values().chain(&apt_hook) {
        let path = under(&root, &file.path);
        if path.exists() && !written_by_us(&path) {
            return Err(InstallError::Foreign(path).into());
        }
    }

    let mut report = Vec::new();
    report.push(put(&under(&root, &plan.unit.path), &plan.unit.text, false)?);
    for (path, text) in &plan.service_dropins {
        let path = under(&root, path);
        match text {
            Some(text) => report.push(put(&path, text, true)?),
            None => report.extend(remove_ours(&path, "no longer needed")?),
        }
    }
    for file in plan.governed.values() {
        report.push(put(&under(&root, &file.path), &file.text, true)?);
    }
    if let Some(file) = &apt_hook {
        report.push(put(&under(&root, &file.path), &file.text, true)?);
    }
    for (unit, file) in earlier_governed(&under(&root, Path::new(UNIT_DIR))) {
        if !plan.governed.contains_key(&unit) {
            report.extend(remove_ours(&file, "no governed scope left in it")?);
        }
    }
    match &plan.new_config {
        Some(text) => report.push(write_config(&config_path, text)?),
        None => report.push(format!(
            "kept {} ({} governed scope(s); an existing configuration is never overwritten)",
            config_path.display(),
            cfg.scopes.len()
        )),
    }
    for dir in &plan.dirs {
        let path = under(&root, dir);
        if !path.exists() {
            crate::fsutil::create_private_dir(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            report.push(format!("created {} (mode 0700)", path.display()));
        }
    }
    for line in &report {
        println!("{line}");
    }
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }

    if args.root.is_none() && !args.no_daemon_reload {
        // sd_booted(): systemd creates this directory when it is PID 1.
        if Path::new("/run/systemd/system").is_dir() {
            systemctl(None, &["daemon-reload"])?;
            println!("ran systemctl daemon-reload");
        } else {
            println!("systemd is not running here: no daemon-reload");
        }
    }
    if args.enable {
        systemctl(args.root.as_deref(), &["enable", UNIT_NAME])?;
        println!("enabled {UNIT_NAME}");
    }
    if args.root.is_none() {
        println!("start it with: systemctl start enforcer (logs: journalctl -u enforcer)");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(s: &str) -> ScopePath {
        s.parse().expect("scope")
    }

    #[test]
    fn units_holding_scopes() {
        let cases = [
            ("/agents.slice", Some("agents.slice")),
            ("/ci.slice/x", Some("ci.slice")),
            ("/ci.slice/ci-x.slice/job", Some("ci-x.slice")),
            ("/system.slice/foo.service", Some("foo.service")),
            ("/system.slice/foo.service/sub.slice", Some("foo.service")),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice",
                Some("user@1000.service"),
            ),
            ("/machine.slice/docker-abc.scope", Some("docker-abc.scope")),
            ("/plain", None),
            ("/plain/agents.slice", None),
            ("/bad name.slice", None),
        ];
        for (path, unit) in cases {
            assert_eq!(governing_unit(&scope(path)), unit, "{path}");
        }
    }

    #[test]
    fn template_has_the_line_install_unit_rewrites() {
        let text = unit_text("/usr/bin/enforcer", "/etc/enforcer/other.toml").expect("unit");
        assert!(text.starts_with(MARKER));
        assert!(
            text.contains("\nExecStart=/usr/bin/enforcer run --config /etc/enforcer/other.toml\n")
        );
        assert!(!text.contains("/usr/local/bin/enforcer"));
        for line in [
            "Type=notify",
            "NotifyAccess=main",
            "Restart=always",
            "WantedBy=multi-user.target",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}");
        }
    }

    /// Every path the template opens for writing is one the plan treats as open, and
    /// the hardening that would make bpffs or cgroupfs read-only is absent.
    #[test]
    fn template_and_plan_agree_on_writable_paths() {
        for path in WRITABLE_IN_UNIT {
            let dir = path
                .trim_start_matches("/var/lib/")
                .trim_start_matches("/run/");
            assert!(
                UNIT_TEMPLATE.contains(path) || UNIT_TEMPLATE.contains(&format!("Directory={dir}")),
                "{path}"
            );
        }
        for forbidden in [
            "ProtectKernelTunables=",
            "ProtectControlGroups=",
            "ProtectProc=",
            "PrivateUsers=",
        ] {
            assert!(
                !UNIT_TEMPLATE.lines().any(|l| l.starts_with(forbidden)),
                "{forbidden}"
            );
        }
        assert_eq!(
            paths::CONFIG,
            "/etc/enforcer/config.toml",
            "TEMPLATE_EXEC_START names it"
        );
    }

    #[test]
    fn paths_that_would_need_quoting_are_refused() {
        for bad in [
            "relative", "/a/../b", "/a b", "/a$b", "/a%b", "/a\"b", "/a;b", "/a\nb",
        ] {
            assert!(plain_path("binary", Path::new(bad)).is_err(), "{bad:?}");
        }
        assert_eq!(
            plain_path("binary", Path::new("/usr/bin/enforcer")).expect("plain"),
            "/usr/bin/enforcer"
        );
    }

    fn config(text: &str) -> Settings {
        Settings::parse(text, Path::new("c.toml")).expect("config")
    }

    #[test]
    fn plan_orders_governed_units_after_the_agent() {
        let cfg = config(
            "[[scope]]\npath = \"/agents.slice\"\n[[scope]]\npath = \"/ci.slice/x\"\n\
             [[scope]]\npath = \"/ci.slice/y\"\n[[scope]]\npath = \"/system.slice\"\n",
        );
        let plan =
            plan("/etc/enforcer/config.toml", &cfg, "/usr/bin/enforcer", None).expect("plan");
        assert_eq!(
            plan.governed.keys().collect::<Vec<_>>(),
            ["agents.slice", "ci.slice"]
        );
        let ci = &plan.governed["ci.slice"];
        assert_eq!(
            ci.path,
            Path::new("/etc/systemd/system/ci.slice.d/enforcer.conf")
        );
        assert!(ci.text.contains("governs /ci.slice/x, /ci.slice/y."));
        assert!(
            ci.text
                .contains("\nWants=enforcer.service\nAfter=enforcer.service\n")
        );
        for never in ["Requires=", "BindsTo=", "Requisite=", "PartOf="] {
            assert!(!ci.text.lines().any(|l| l.starts_with(never)), "{never}");
        }
        let scopes = plan.service_dropins[0].1.as_deref().expect("scopes.conf");
        assert!(scopes.contains("\nBefore=agents.slice ci.slice\n"));
        assert!(
            plan.service_dropins[1].1.is_none(),
            "defaults need no extra paths"
        );
        assert!(
            plan.warnings.iter().any(|w| w.contains("/system.slice")),
            "{:?}",
            plan.warnings
        );
        assert_eq!(plan.dirs, [PathBuf::from(paths::BUNDLE_DIR)]);
    }

    #[test]
    fn directories_outside_the_unit_are_opened() {
        let cfg =
            config("state_dir = \"/srv/enforcer/state\"\nsocket = \"/run/ctl/enforcer.sock\"\n");
        let plan =
            plan("/etc/enforcer/config.toml", &cfg, "/usr/bin/enforcer", None).expect("plan");
        let paths = plan.service_dropins[1].1.as_deref().expect("paths.conf");
        assert!(
            paths.contains("\nReadWritePaths=-/srv/enforcer/state\n"),
            "{paths}"
        );
        assert!(paths.contains("\nReadWritePaths=-/run/ctl\n"), "{paths}");
        assert!(!paths.contains("/var/lib/enforcer"), "{paths}");
        assert!(plan.dirs.contains(&PathBuf::from("/srv/enforcer/state")));
        assert!(plan.service_dropins[0].1.is_none(), "no scopes, no Before=");
        assert!(plan.service_dropins[2].1.is_none(), "no [http], no network");
    }

    #[test]
    fn the_http_window_opens_the_network_it_needs() {
        let cfg = config("[http]\nlisten = \"127.0.0.1:9464\"\n");
        let plan =
            plan("/etc/enforcer/config.toml", &cfg, "/usr/bin/enforcer", None).expect("plan");
        let http = plan.service_dropins[2].1.as_deref().expect("http.conf");
        for line in [
            "\nPrivateNetwork=no\n",
            "\nRestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n",
            "\nIPAddressDeny=any\n",
            "\nIPAddressAllow=localhost\n",
        ] {
            assert!(http.contains(line), "{line:?} missing from {http}");
        }
    }
}
