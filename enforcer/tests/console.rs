//! The web console in a real headless Chromium: a real HTTP window on 127.0.0.1:0 reading
//! a real audit log written by `AuditLog` with signed checkpoints, the window's feed
//! standing in for the agent's loop. `ENFORCER_SCREENSHOTS=DIR` saves each page as a PNG
//! (docs/console/).

// The package's dependencies are the library's; this target uses only a few of them.
#![allow(unused_crate_dependencies)]

mod browser;
mod http_support;

use std::net::SocketAddr;
use std::path::Path;

use browser::Browser;
use enforcer::service::http::Window;
use enforcer_common::decision;
use http_support::signed_log::{self, BOOT, CHILD, INTERPRETER, SCRIPT};
use http_support::{TOKEN, enforcing, start};
use serde_json::json;

fn base(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

#[test]
fn pages_load_without_the_token_under_a_strict_policy_and_the_api_still_needs_it() {
    use http_support::{get, send};
    let window = Window::new(enforcing());
    let (addr, _dir) = start(&window, true, None);
    for (path, kind) in [
        ("/", "text/html"),
        ("/decisions", "text/html"),
        (&format!("/lineage/{BOOT}:{SCRIPT}")[..], "text/html"),
        ("/proof", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/proof.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ] {
        let page = get(addr, path);
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(
            page.head.contains(&format!("content-type: {kind}")),
            "{path}: {}",
            page.head
        );
        assert!(
            page.head
                .contains("content-security-policy: default-src 'none'; script-src 'self'"),
            "{path}: {}",
            page.head
        );
        assert!(
            page.head.contains("x-content-type-options: nosniff"),
            "{path}"
        );
    }
    assert_eq!(get(addr, "/api/v1/status").status, 401);
    assert_eq!(
        get(addr, "/console/other.js").status,
        401,
        "only the console's own files"
    );
    let bearer = format!("Authorization: Bearer {TOKEN}");
    assert_eq!(
        send(addr, "GET /console/other.js HTTP/1.1", &[&bearer]).status,
        404
    );
    assert_eq!(send(addr, "POST / HTTP/1.1", &[]).status, 405, "read-only");
}

#[test]
fn the_overview_shows_each_scope_its_mode_and_grants_and_asks_for_the_token() {
    let window = Window::new(enforcing());
    let (addr, _dir) = start(&window, true, None);
    let Some(browser) = Browser::open(&base(addr)) else {
        return;
    };
    browser.goto("/", "overview");
    // The page loads without the token; the API does not answer without it.
    browser.give_token(TOKEN);
    browser.wait_for_text("#enforcing", "Enforcing");
    let scope = browser.wait_for_text("#scopes tr[data-scope='/agents.slice']", "enforce");
    assert_eq!(
        browser
            .text("#scopes tr[data-scope='/agents.slice'] .grants")
            .as_deref(),
        Some("3"),
        "{scope}"
    );
    let break_glass = browser.wait_for_text("#scopes tr[data-scope='/ci.slice']", "monitor");
    assert!(
        break_glass.contains("break-glass until 2030"),
        "{break_glass}"
    );
    let bundle = browser.wait_for_text("#bundles tr[data-bundle='agents']", "ops");
    assert!(
        bundle.contains("2030-01-01T00:00:00Z"),
        "the expiry: {bundle}"
    );
    assert_eq!(
        browser
            .text("#bundles tr[data-bundle='agents'] .grants")
            .as_deref(),
        Some("3")
    );
    browser.screenshot("overview");
}

#[test]
fn a_scope_that_denies_everything_says_why() {
    let mut snapshot = enforcing();
    let status = snapshot.figures.status.as_mut().expect("status");
    status.scopes[0].grants = 0;
    status.scopes[0].denies_everything = true;
    status.scopes[0].why = vec!["no bundle grants anything in /agents.slice".into()];
    let window = Window::new(snapshot);
    let (addr, _dir) = start(&window, false, None);
    let Some(browser) = Browser::open(&base(addr)) else {
        return;
    };
    browser.goto("/", "overview");
    let row = browser.wait_for_text(
        "#scopes tr[data-scope='/agents.slice']",
        "denies everything",
    );
    assert!(row.contains("no bundle grants anything"), "{row}");
}

#[test]
fn a_decision_written_to_the_log_appears_in_the_live_view() {
    let log_dir = tempfile::tempdir().expect("tempdir");
    signed_log::write(log_dir.path());
    let window = Window::new(enforcing());
    let (addr, _dir) = start(&window, false, Some(log_dir.path()));
    let Some(browser) = Browser::open(&base(addr)) else {
        return;
    };
    browser.goto("/decisions", "decisions");
    browser.wait_for_text("#decisions tbody tr[data-exec='4']", "/tmp/payload");
    browser.wait_for_text("#stream-state", "live");
    let rows = || {
        browser.script(
            "return document.querySelectorAll('#decisions tbody tr').length",
            &[],
        )
    };
    assert_eq!(rows(), json!(4), "the log's four decisions");

    // The agent's path: written to the log, then handed to the feed.
    let mut log = signed_log::open(log_dir.path());
    signed_log::append(
        &mut log,
        &signed_log::exec(9, 1, "/usr/bin/curl", decision::DENY),
        |r| window.publish_decision(r),
    );
    let row = browser.wait_for_text("#decisions tbody tr[data-exec='9']", "/usr/bin/curl");
    assert!(row.contains("deny"), "{row}");
    assert_eq!(
        browser.script(
            "return document.querySelector('#decisions tbody tr').dataset.exec",
            &[]
        ),
        json!("9"),
        "the newest on top"
    );
    browser.screenshot("decisions");

    // A filter applies to the page and the stream alike.
    browser.goto("/decisions?decision=allow", "decisions");
    browser.wait_for_text("#stream-state", "live");
    browser.wait_for_text("#decisions tbody", "/opt/jobs/build.sh");
    assert!(browser.text("#decisions tbody tr[data-exec='9']").is_none());
    signed_log::append(
        &mut log,
        &signed_log::exec(10, 1, "/usr/bin/cat", decision::DENY),
        |r| window.publish_decision(r),
    );
    signed_log::append(
        &mut log,
        &signed_log::exec(11, 1, "/usr/bin/make", decision::ALLOW),
        |r| window.publish_decision(r),
    );
    browser.wait_for_text("#decisions tbody tr[data-exec='11']", "/usr/bin/make");
    assert!(
        browser
            .text("#decisions tbody tr[data-exec='10']")
            .is_none(),
        "a denial is not an allow"
    );
}

#[test]
fn the_lineage_of_a_script_shows_its_interpreter_and_their_child() {
    let log_dir = tempfile::tempdir().expect("tempdir");
    signed_log::write(log_dir.path());
    let window = Window::new(enforcing());
    let (addr, _dir) = start(&window, false, Some(log_dir.path()));
    let Some(browser) = Browser::open(&base(addr)) else {
        return;
    };
    browser.goto("/decisions", "decisions");
    browser.wait_for_text("#decisions tbody tr[data-exec='2']", "build.sh");
    // Clicking a decision leads to its process tree.
    browser.click("#decisions tbody tr[data-exec='2'] a[href^='/lineage/']");
    browser.wait_for_page("lineage");
    assert_eq!(
        browser.script("return decodeURIComponent(location.pathname)", &[]),
        json!(format!("/lineage/{BOOT}:{SCRIPT}"))
    );
    let tree = browser.wait_for_text("#tree", "/opt/jobs/build.sh");
    for path in ["/usr/bin/bash", "/usr/bin/python3", "/tmp/payload"] {
        assert!(tree.contains(path), "{path} in {tree}");
    }
    // Nesting: the shell holds the script, which holds its interpreter, which holds the
    // denied child.
    let nested = |outer: u64, inner: u64| {
        browser.script(
            "const n = document.querySelector(`#tree .node[data-exec='${arguments[0]}']`); \
             return !!n && !!n.parentElement.querySelector(`.node[data-exec='${arguments[1]}']`)",
            &[json!(outer), json!(inner)],
        )
    };
    assert_eq!(nested(1, SCRIPT), json!(true));
    assert_eq!(nested(SCRIPT, INTERPRETER), json!(true));
    assert_eq!(nested(INTERPRETER, CHILD), json!(true));
    assert_eq!(
        nested(CHILD, INTERPRETER),
        json!(false),
        "not the other way round"
    );
    let interpreter =
        browser.wait_for_text(&format!("#tree .node[data-exec='{INTERPRETER}']"), "allow");
    assert!(interpreter.contains("authorized by"), "{interpreter}");
    assert!(interpreter.contains("serial 7"), "{interpreter}");
    assert!(
        interpreter.contains("build tools"),
        "the grant: {interpreter}"
    );
    let child = browser.wait_for_text(&format!("#tree .node[data-exec='{CHILD}']"), "deny");
    assert!(child.contains("no authorization"), "{child}");
    browser.screenshot("lineage");
}

#[test]
fn the_proof_viewer_checks_a_real_proof_and_names_what_a_changed_byte_breaks() {
    let log_dir = tempfile::tempdir().expect("tempdir");
    signed_log::write(log_dir.path());
    let mut snapshot = enforcing();
    snapshot.host_key = signed_log::open(log_dir.path()).host_vkey();
    let window = Window::new(snapshot);
    let (addr, _dir) = start(&window, false, Some(log_dir.path()));
    let Some(browser) = Browser::open(&base(addr)) else {
        return;
    };
    browser.goto(&format!("/proof?exec={BOOT}:{CHILD}"), "proof");
    let verdict = browser.wait_for_text("#verdict", "PROVEN");
    browser.wait_for_text(
        "#steps",
        "the record's SHA-256 leaf hash is the hash it states",
    );
    assert_eq!(
        browser.script(
            "return document.getElementById('verdict').dataset.outcome",
            &[]
        ),
        json!("proven"),
        "{verdict}"
    );
    let facts = browser.wait_for_text("#facts", "/tmp/payload");
    assert!(facts.contains(signed_log::ORIGIN), "{facts}");
    assert!(facts.contains("deny"), "{facts}");

    // One byte changed in each part: the reason says which part.
    for (code, change) in [
        (
            "record-altered",
            "p.record = p.record.replace('/tmp/payload', '/tmp/pbyload')",
        ),
        (
            "not-included",
            "p.inclusion[0] = (p.inclusion[0][0] === 'A' ? 'B' : 'A') + p.inclusion[0].slice(1)",
        ),
        ("wrong-index", "p.index = p.index + 1"),
        // The tree size line: the signed text changes.
        (
            "checkpoint-signature",
            "p.checkpoint = p.checkpoint.replace(/\\n(\\d)\\n/, (m, n) => `\\n${(Number(n) + 1) % 10}\\n`)",
        ),
    ] {
        browser.script(
            &format!(
                "const t = document.getElementById('proof-text'); \
                 const original = t.dataset.original || t.value; \
                 t.dataset.original = original; const p = JSON.parse(original); {change}; \
                 if (JSON.stringify(p) === JSON.stringify(JSON.parse(original))) \
                   throw new Error('nothing changed'); \
                 t.value = JSON.stringify(p, null, 2);"
            ),
            &[],
        );
        browser.click("#verify");
        let refused = browser.wait_for_text("#verdict", "REFUSED");
        assert!(refused.contains(code), "{code}: {refused}");
        if code == "record-altered" {
            browser.screenshot("proof-refused");
        }
    }

    // The key matters: another host's key refuses the genuine proof.
    browser.script(
        "const t = document.getElementById('proof-text'); t.value = t.dataset.original; \
         document.getElementById('host-key').value = arguments[0];",
        &[json!(other_host_vkey())],
    );
    browser.click("#verify");
    let refused = browser.wait_for_text("#verdict", "REFUSED");
    assert!(refused.contains("checkpoint-signature"), "{refused}");

    // A proof file, as `enforcer audit prove` writes it, loaded from disk.
    let file = log_dir.path().join("child.proof.json");
    let proof = http_support::get(addr, &format!("/api/v1/proof/{BOOT}:{CHILD}"));
    assert_eq!(proof.status, 200, "{}", proof.body);
    std::fs::write(&file, &proof.body).expect("write the proof file");
    browser.goto("/proof", "proof");
    browser.upload("#proof-file", &file);
    browser.wait_for_text("#verdict", "PROVEN");
    browser.wait_for_text("#facts", "/tmp/payload");

    // A record from before format 3, in the log the format-2 agent left (SHA3-512 record
    // hashes, the whole line as the leaf): the page checks that kind too.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audit-format2");
    let old = enforcer::audit::proof::prove(&fixture, &enforcer::audit::proof::Selector::Seq(4))
        .expect("prove a format-2 record");
    let file = log_dir.path().join("format2.proof.json");
    std::fs::write(&file, serde_json::to_vec(&old).expect("json")).expect("write");
    let fixture_key = enforcer::authz::trust::SigningKey::from_seed(&[9; 32]);
    let fixture_vkey =
        enforcer::audit::tlog::NoteVerifier::new("test.example/host-a", fixture_key.public_key())
            .expect("vkey")
            .to_string();
    browser.goto("/proof", "proof");
    browser.script(
        "document.getElementById('host-key').value = arguments[0];",
        &[json!(fixture_vkey)],
    );
    browser.upload("#proof-file", &file);
    browser.wait_for_text("#verdict", "PROVEN");
    browser.wait_for_text("#steps", "the record's SHA3-512 is the hash it states");
    browser.script(
        "const t = document.getElementById('proof-text'); const p = JSON.parse(t.value); \
         p.record = p.record.replace('\"pid\":900', '\"pid\":901'); \
         t.value = JSON.stringify(p, null, 2);",
        &[],
    );
    browser.click("#verify");
    let refused = browser.wait_for_text("#verdict", "REFUSED");
    assert!(refused.contains("record-altered"), "{refused}");

    // Picking a decision on the page fetches its proof: an allowed one, with its bundle.
    browser.goto("/proof", "proof");
    let picked = browser.script(
        "const s = document.getElementById('pick'); \
         const o = [...s.options].find((o) => o.text.includes('/usr/bin/python3')); \
         s.value = o.value; s.dispatchEvent(new Event('change')); return o.value",
        &[],
    );
    browser.wait_until_at(&format!("/proof?seq={}", picked.as_str().expect("a seq")));
    browser.wait_for_page("proof");
    let verdict = browser.wait_for_text("#verdict", "PROVEN");
    let facts = browser.wait_for_text("#facts", "/usr/bin/python3");
    assert!(
        facts.contains("build tools"),
        "the grant it cites: {facts} {verdict}"
    );
    let steps = browser.wait_for_text("#steps", "1 artifact(s) carried");
    assert!(steps.contains("enforcer proof verify"), "{steps}");
    browser.screenshot("proof");
}

/// The vkey of a key that did not sign the log, under the log's origin.
fn other_host_vkey() -> String {
    let other = enforcer::authz::trust::SigningKey::from_seed(&[8; 32]);
    enforcer::audit::tlog::NoteVerifier::new(signed_log::ORIGIN, other.public_key())
        .expect("vkey")
        .to_vkey()
}
