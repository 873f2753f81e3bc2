//! A real headless Chromium, driven over WebDriver (chromedriver), pointed at a base URL:
//! an in-process HTTP window here, an agent's forwarded port from a VM test later.
//!
//! WebDriver is spoken as plain JSON over HTTP/1.1 on a loopback socket: the handful of
//! commands the console's tests need (new session, navigate, run a script, choose a file,
//! screenshot)
//! do not justify a WebDriver crate, its async runtime and its TLS stack on our build.
//!
//! Chromium and chromedriver come from Debian (`cargo xtask setup` installs them). Where
//! they are missing the tests skip with the reason printed, except under `CI=true`, where
//! a missing browser is a failure: CI is where setup ran.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// How long a page may take to show what a test waits for.
const PATIENCE: Duration = Duration::from_secs(20);

/// One browser at a time: two cores do not run several Chromiums well.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A browser session on `base` (e.g. `http://127.0.0.1:8080`).
pub(crate) struct Browser {
    driver: Child,
    port: u16,
    session: String,
    base: String,
    profile: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

/// The program `name`, from `env` if set, else from the PATH; `None` when not a file.
fn program(env: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session on `base`; `None` (with the
    /// reason printed) when they are not installed, unless `CI=true`.
    pub(crate) fn open(base: &str) -> Option<Self> {
        let found = (
            program("ENFORCER_CHROMIUM", "chromium"),
            program("ENFORCER_CHROMEDRIVER", "chromedriver"),
        );
        let (Some(chromium), Some(chromedriver)) = found else {
            let why = "chromium or chromedriver is not installed (apt-get install chromium \
                       chromium-driver, or `cargo xtask setup`; ENFORCER_CHROMIUM and \
                       ENFORCER_CHROMEDRIVER name other copies)";
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: {why}"
            );
            eprintln!("SKIPPED: {why}");
            return None;
        };
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            // Its own process group, which holds the browser it starts: ending the group
            // ends the browser even when the session could not be closed.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", chromedriver.display()));
        let profile = tempfile::tempdir().expect("tempdir");
        let mut browser = Self {
            driver,
            port,
            session: String::new(),
            base: base.trim_end_matches('/').to_owned(),
            profile,
            _turn: turn,
        };
        browser.wait_for_driver();
        browser.session = browser.start_session(&chromium);
        Some(browser)
    }

    fn wait_for_driver(&self) {
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn start_session(&self, chromium: &Path) -> String {
        let args = [
            "--headless=new",
            // Root (the VM, CI containers) cannot use Chromium's sandbox.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", self.profile.path().display()),
        ];
        let answer = self.call(
            "POST",
            "/session",
            &json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": chromium, "args": args},
            }}}),
        );
        answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_owned()
    }

    /// One WebDriver command; its `value`. Panics with the driver's error.
    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        // GET and DELETE carry no body: chromedriver refuses a DELETE with one.
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("chromedriver");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).expect("send");
        let (head, body) = read_answer(&mut stream);
        let answer: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {head}\n{body}"));
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "WebDriver {method} {path}: {answer}"
        );
        answer["value"].clone()
    }

    fn session_call(&self, method: &str, path: &str, body: &Value) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    /// Opens `path` under the base URL and waits until the console's page `page` has
    /// loaded its data.
    pub(crate) fn goto(&self, path: &str, page: &str) {
        let url = format!("{}{path}", self.base);
        self.session_call("POST", "/url", &json!({ "url": url }));
        self.wait_for_page(page);
    }

    /// Waits until the console's page `page` has loaded its data (after a click, say).
    pub(crate) fn wait_for_page(&self, page: &str) {
        self.wait_until(&format!("the {page} page to load"), || {
            self.script("return document.body.dataset.ready", &[]) == page
        });
    }

    /// Waits until the browser is at `path` under the base URL (after a click, say).
    pub(crate) fn wait_until_at(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.wait_until(&format!("the browser to be at {url}"), || {
            self.script("return location.href", &[]) == url.as_str()
        });
    }

    /// Answers the console's token prompt, which a page shows when the API says 401.
    pub(crate) fn give_token(&self, token: &str) {
        self.wait_for_text("main", "needs its API token");
        self.script(
            "document.getElementById('token').value = arguments[0]; \
             document.querySelector('#token-form button').click()",
            &[json!(token)],
        );
    }

    /// Runs `body` as a function of `args` in the page; what it returns.
    pub(crate) fn script(&self, body: &str, args: &[Value]) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            &json!({"script": body, "args": args}),
        )
    }

    /// The text of the first element `css` selects; `None` when there is none.
    pub(crate) fn text(&self, css: &str) -> Option<String> {
        let text = self.script(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : null",
            &[json!(css)],
        );
        text.as_str().map(str::to_owned)
    }

    /// Waits until `css` selects an element whose text contains `wanted`; its text.
    pub(crate) fn wait_for_text(&self, css: &str, wanted: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let last = self.text(css);
            if let Some(text) = last.as_ref().filter(|t| t.contains(wanted)) {
                return text.clone();
            }
            assert!(
                Instant::now() < deadline,
                "waited {PATIENCE:?} for {css} to show {wanted:?}; it shows {last:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn click(&self, css: &str) {
        let clicked = self.script(
            "const e = document.querySelector(arguments[0]); if (e) e.click(); return !!e",
            &[json!(css)],
        );
        assert_eq!(clicked, json!(true), "nothing to click at {css}");
    }

    /// Chooses the file at `path` in the file input `css`, as a user would.
    pub(crate) fn upload(&self, css: &str, path: &Path) {
        let element = self.session_call(
            "POST",
            "/element",
            &json!({"using": "css selector", "value": css}),
        );
        // The W3C name of an element reference.
        let id = element["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {element}"));
        self.session_call(
            "POST",
            &format!("/element/{id}/value"),
            &json!({ "text": path.to_str().expect("a UTF-8 path") }),
        );
    }

    fn wait_until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "waited {PATIENCE:?} for {what} at {}",
                self.script("return location.href", &[])
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG of the window as `<name>.png` in `$ENFORCER_SCREENSHOTS`, if set
    /// (docs/console/ holds the ones the documentation shows).
    pub(crate) fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("ENFORCER_SCREENSHOTS") else {
            return;
        };
        let png = self.session_call("GET", "/screenshot", &Value::Null);
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 PNG"))
            .expect("base64");
        let path = Path::new(&dir).join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Best effort: the driver's end takes the browser with it anyway.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.call(
                    "DELETE",
                    &format!("/session/{}", self.session),
                    &Value::Null,
                )
            }));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Reads one answer: its head, then as many bytes as its Content-Length says.
/// chromedriver keeps the connection open whatever the request asks, so the end of the
/// stream cannot mark the end of the answer.
fn read_answer(stream: &mut TcpStream) -> (String, String) {
    let mut raw = Vec::new();
    let mut byte = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut byte).expect("read");
        assert!(n > 0, "chromedriver closed the connection mid-answer");
        raw.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no Content-Length: {head}"));
    let mut body = raw.split_off(head_end + 4);
    while body.len() < length {
        let n = stream.read(&mut byte).expect("read");
        assert!(n > 0, "chromedriver closed the connection mid-answer");
        body.extend_from_slice(&byte[..n]);
    }
    (head, String::from_utf8(body).expect("UTF-8"))
}
