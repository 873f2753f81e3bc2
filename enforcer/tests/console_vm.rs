//! The web console of an agent enforcing in a VM, in a real headless Chromium on this host.
//!
//! `cargo xtask vm-test` runs this test when the VM's console scenario
//! (vm-tests/src/scenarios/console.rs) asks for it. qemu forwards the agent's HTTP port
//! and the scenario's step port to this host's loopback; the environment names them:
//! `ENFORCER_VM_CONSOLE` (the console's base URL), `ENFORCER_VM_STEPS` (the step port's
//! address) and `ENFORCER_VM_TOKEN` (the API token). Through the step port the test asks
//! the VM for what only it can do: run an exec in the scope, unload the programs.
//!
//! A plain `cargo test` ignores it: it needs that VM. The same pages against a window fed
//! a signed log are in console.rs.

// The package's dependencies are the library's; this target uses only a few of them.
#![allow(unused_crate_dependencies)]

// Shared with console.rs, which uses what this target does not.
#[allow(dead_code)]
mod browser;
#[allow(dead_code)]
mod http_support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use browser::Browser;
use http_support::{Answer, send};
use serde_json::{Value, json};

/// The scope the VM's agent governs (vm-tests' `signed::LIVE`).
const SCOPE: &str = "/vmtest-live";
/// The VM's agent signs a checkpoint every 2 s while records arrive; a proof needs one
/// after its record. The margin is for TCG.
const CHECKPOINT_PATIENCE: Duration = Duration::from_secs(30);

/// The VM's forwarded ports and its token.
struct Vm {
    console: SocketAddr,
    steps: SocketAddr,
    token: String,
}

impl Vm {
    fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: `cargo xtask vm-test` runs this against a VM's agent")
            })
        };
        let addr = |name: &str, text: &str| -> SocketAddr {
            text.parse()
                .unwrap_or_else(|e| panic!("{name}={text:?} is not host:port: {e}"))
        };
        let console = var("ENFORCER_VM_CONSOLE");
        let console_addr = console
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("ENFORCER_VM_CONSOLE={console:?} is not an http:// URL"));
        Self {
            console: addr("ENFORCER_VM_CONSOLE", console_addr.trim_end_matches('/')),
            steps: addr("ENFORCER_VM_STEPS", &var("ENFORCER_VM_STEPS")),
            token: var("ENFORCER_VM_TOKEN"),
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.console)
    }

    /// Asks the VM's scenario for `step`; its one-line answer.
    fn step(&self, step: &str) -> String {
        let mut stream = TcpStream::connect(self.steps)
            .unwrap_or_else(|e| panic!("the VM's step port {}: {e}", self.steps));
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .expect("timeout");
        stream
            .write_all(format!("{step}\n").as_bytes())
            .unwrap_or_else(|e| panic!("send step {step}: {e}"));
        let mut answer = String::new();
        BufReader::new(stream)
            .read_line(&mut answer)
            .unwrap_or_else(|e| panic!("the VM's answer to {step}: {e}"));
        answer.trim_end().to_owned()
    }

    /// GET `path` on the VM's agent, with the token.
    fn get(&self, path: &str) -> Answer {
        let bearer = format!("Authorization: Bearer {}", self.token);
        send(self.console, &format!("GET {path} HTTP/1.1"), &[&bearer])
    }

    /// The newest decisions in the scope, as the API pages them.
    fn decisions(&self) -> Vec<Value> {
        let page = self.get(&format!("/api/v1/decisions?scope={SCOPE}&limit=200"));
        assert_eq!(page.status, 200, "{}", page.body);
        let page: Value = serde_json::from_str(&page.body).expect("a decision page");
        page["decisions"].as_array().cloned().unwrap_or_default()
    }

    /// The newest decision in the scope whose path ends with `name`.
    fn decision(&self, name: &str) -> Value {
        self.decisions()
            .into_iter()
            .find(|d| d["path"].as_str().is_some_and(|p| p.ends_with(name)))
            .unwrap_or_else(|| panic!("no decision for …{name} in {SCOPE}"))
    }
}

fn exec_ref(decision: &Value) -> String {
    format!(
        "{}:{}",
        decision["boot_id"].as_str().expect("boot_id"),
        decision["exec_id"].as_u64().expect("exec_id")
    )
}

#[test]
#[ignore = "needs an agent enforcing in a VM: `cargo xtask vm-test` runs it"]
fn the_console_shows_what_the_vm_agent_enforces_and_decides() {
    let vm = Vm::from_env();
    // Without a browser it prints `SKIPPED: why` (a failure under CI=true), which xtask
    // hands to the VM's scenario as its reason to skip.
    let Some(browser) = Browser::open(&vm.base()) else {
        return;
    };

    // The overview, after the token: the scope enforced, with its grants and bundle.
    browser.goto("/", "overview");
    browser.give_token(&vm.token);
    browser.wait_for_text("#enforcing", "Enforcing");
    let row = format!("#scopes tr[data-scope='{SCOPE}']");
    let scope = browser.wait_for_text(&row, "enforce");
    let grants: u64 = browser
        .text(&format!("{row} .grants"))
        .and_then(|g| g.trim().parse().ok())
        .unwrap_or(0);
    assert!(grants > 0, "the scope shows no grants: {scope}");
    browser.wait_for_text("#bundles tr[data-bundle='console']", "vm-console");
    browser.screenshot("vm-overview");

    // The lineage of the script the VM ran: script, its interpreter, their two children.
    let script = vm.decision("/console-job.sh");
    browser.goto(&format!("/lineage/{}", exec_ref(&script)), "lineage");
    let tree = browser.wait_for_text("#tree", "console-job.sh");
    let interpreter = vm.decision("/bin/sh");
    let child = vm.decision("/console-child");
    let refused = vm.decision("/console-refused");
    let nested = |outer: &Value, inner: &Value| {
        browser.script(
            "const n = document.querySelector(`#tree .node[data-exec='${arguments[0]}']`); \
             return !!n && !!n.parentElement.querySelector(`.node[data-exec='${arguments[1]}']`)",
            &[outer["exec_id"].clone(), inner["exec_id"].clone()],
        )
    };
    assert_eq!(nested(&script, &interpreter), json!(true), "{tree}");
    assert_eq!(nested(&interpreter, &child), json!(true), "{tree}");
    assert_eq!(nested(&interpreter, &refused), json!(true), "{tree}");
    assert_eq!(nested(&child, &interpreter), json!(false), "{tree}");
    let node = |d: &Value| format!("#tree .node[data-exec='{}']", d["exec_id"]);
    let allowed = browser.wait_for_text(&node(&child), "allow");
    assert!(allowed.contains("authorized by"), "{allowed}");
    browser.wait_for_text(&node(&refused), "deny");
    browser.screenshot("vm-lineage");

    // The live view, open while the VM runs an exec: it shows up without a reload.
    browser.goto(&format!("/decisions?scope={SCOPE}"), "decisions");
    browser.wait_for_text("#stream-state", "live");
    let ran = vm.step("exec");
    let paths: Vec<&str> = ran
        .strip_prefix("ran ")
        .unwrap_or_else(|| panic!("the VM did not run the exec: {ran}"))
        .split(' ')
        .collect();
    let [refused_path, allowed_path] = paths[..] else {
        panic!("the VM's answer names two programs: {ran}");
    };
    let find_row = |path: &str, decision: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let row = browser.script(
                "const r = [...document.querySelectorAll('#decisions tbody tr')] \
                   .find((r) => r.innerText.includes(arguments[0])); \
                 return r ? r.innerText : null",
                &[json!(path)],
            );
            if let Some(text) = row.as_str() {
                assert!(text.contains(decision), "{path}: {text}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{path} did not appear in the live view"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    find_row(refused_path, "deny");
    find_row(allowed_path, "allow");
    browser.screenshot("vm-decisions");

    // The proof of the child's exec, once a checkpoint covers it; then one changed byte.
    let exec = exec_ref(&child);
    let start = Instant::now();
    loop {
        let proof = vm.get(&format!("/api/v1/proof/{exec}"));
        if proof.status == 200 {
            break;
        }
        assert!(
            start.elapsed() < CHECKPOINT_PATIENCE,
            "no proof of {exec} within {CHECKPOINT_PATIENCE:?}: {} {}",
            proof.status,
            proof.body
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    browser.goto(&format!("/proof?exec={exec}"), "proof");
    browser.wait_for_text("#verdict", "PROVEN");
    let facts = browser.wait_for_text("#facts", "console-child");
    assert!(facts.contains("vm.example/console"), "the origin: {facts}");
    assert!(facts.contains("allow"), "{facts}");
    browser.screenshot("vm-proof");
    browser.script(
        "const t = document.getElementById('proof-text'); const p = JSON.parse(t.value); \
         const changed = p.record.replace('console-child', 'console-chilb'); \
         if (changed === p.record) throw new Error('the record does not name the child'); \
         p.record = changed; t.value = JSON.stringify(p, null, 2);",
        &[],
    );
    browser.click("#verify");
    let refused = browser.wait_for_text("#verdict", "REFUSED");
    assert!(refused.contains("record-altered"), "{refused}");

    // The programs unloaded from outside the agent: /readyz says so, and so does the page.
    assert_eq!(vm.step("unload"), "unloaded");
    let start = Instant::now();
    let readiness = loop {
        let ready = send(vm.console, "GET /readyz HTTP/1.1", &[]);
        if ready.status == 503 {
            break ready.body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "/readyz is still {} after the unload: {}",
            ready.status,
            ready.body
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let report: Value = serde_json::from_str(&readiness).expect("a readiness report");
    let program = report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == "program"))
        .unwrap_or_else(|| panic!("no program check: {readiness}"));
    assert_eq!(program["ok"], json!(false), "{readiness}");
    browser.goto("/", "overview");
    let why = browser.wait_for_text("#why", "program");
    assert!(why.contains("unloaded from outside the agent"), "{why}");
    browser.wait_for_text("#enforcing", "Not enforcing");
    browser.screenshot("vm-not-ready");
}
