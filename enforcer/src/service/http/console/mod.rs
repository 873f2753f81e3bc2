//! The web console: a few pages the agent serves under `/` (docs/console.md).
//!
//! One HTML shell, a stylesheet and two scripts, compiled into the binary: the console
//! works on a host without internet access and loads nothing from anywhere else, which
//! the Content-Security-Policy enforces in the browser too. The pages hold no data; the
//! scripts read the JSON API with the operator's token, so the pages themselves need
//! none, and everything the log says is put into the page as text, never as markup.

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::server::{Body, reply};

const SHELL: &str = include_str!("index.html");
const APP: &str = include_str!("app.js");
const PROOF: &str = include_str!("proof.js");
const STYLE: &str = include_str!("console.css");

/// Scripts and styles from this origin only, data from the API only, no frames, forms,
/// plugins or inline code. `connect-src 'self'` is what the API calls need.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// What `path` is in the console, if anything: its content type and bytes.
fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" | "/decisions" | "/lineage" | "/proof" => Some(("text/html; charset=utf-8", SHELL)),
        "/console/app.js" => Some(("text/javascript; charset=utf-8", APP)),
        "/console/proof.js" => Some(("text/javascript; charset=utf-8", PROOF)),
        "/console/console.css" => Some(("text/css; charset=utf-8", STYLE)),
        // The exec is read by the page from its own address.
        _ if path.starts_with("/lineage/") => Some(("text/html; charset=utf-8", SHELL)),
        _ => None,
    }
}

/// Whether `path` is part of the console (served without a token: it holds no data).
pub(super) fn serves(path: &str) -> bool {
    asset(path).is_some()
}

/// The console's answer for `path`, if it is one of its own.
pub(super) fn respond(path: &str) -> Option<Response<Body>> {
    let (content_type, text) = asset(path)?;
    let mut response = reply(StatusCode::OK, content_type, text);
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // An upgraded agent serves new scripts at once.
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_share_the_shell_and_nothing_else_is_served() {
        for page in ["/", "/decisions", "/proof", "/lineage", "/lineage/ab-12:3"] {
            assert_eq!(asset(page).map(|a| a.1), Some(SHELL), "{page}");
        }
        for other in [
            "/console/",
            "/console/../app.js",
            "/index.html",
            "/api/v1/status",
        ] {
            assert!(asset(other).is_none(), "{other}");
        }
    }

    #[test]
    fn the_shell_loads_only_its_own_assets() {
        // No inline script or style, which the policy would refuse anyway, and no
        // address outside the agent.
        assert!(!SHELL.contains("<script>") && !SHELL.contains("style="));
        for text in [SHELL, APP, PROOF, STYLE] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
        // Paths and names in the log are anyone's bytes: they go in as text nodes.
        for script in [APP, PROOF] {
            assert!(!script.contains("innerHTML") && !script.contains("insertAdjacentHTML"));
        }
        for src in [
            "/console/app.js",
            "/console/proof.js",
            "/console/console.css",
        ] {
            assert!(SHELL.contains(src), "{src}");
            assert!(asset(src).is_some(), "{src}");
        }
    }
}
