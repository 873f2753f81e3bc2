//! The `[http]` section of the configuration file: where the read-only HTTP window
//! listens, and the token that guards what is not public.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::HttpError;

/// Where the window listens when `[http]` names no address: loopback, so decisions (which
/// show paths and uids) are not reachable from the network by default. 9464 is in the
/// range Prometheus exporters use and not taken by a well-known one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// The longest token file read: a bearer token is a line, not a document.
const MAX_TOKEN_BYTES: u64 = 4096;

/// `[http]`: present means on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Address and port; anything but loopback needs `token_file`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// A file holding the bearer token every path but `/healthz`, `/readyz` and `/metrics`
    /// requires (the whole `/api/`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

fn default_listen() -> SocketAddr {
    // A constant that parses; `Default` for SocketAddr would be 0.0.0.0, the opposite.
    DEFAULT_LISTEN
        .parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9464)))
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            token_file: None,
        }
    }
}

impl HttpSettings {
    /// Refuses a listener beyond loopback without a token: the window would show every
    /// decision to whoever reaches the port.
    pub fn check(&self) -> Result<(), String> {
        // An IPv4-mapped loopback (::ffff:127.0.0.1) is loopback too.
        if !self.listen.ip().to_canonical().is_loopback() && self.token_file.is_none() {
            return Err(format!(
                "[http] listen = \"{}\" is not a loopback address: set [http] token_file too \
                 (a file holding the bearer token), or listen on 127.0.0.1",
                self.listen
            ));
        }
        Ok(())
    }

    /// Reads the token, when one is configured.
    pub fn token(&self) -> Result<Option<Token>, HttpError> {
        self.token_file.as_deref().map(Token::read).transpose()
    }
}

/// The bearer token, kept only as its SHA-256: comparing fixed-length digests in constant
/// time leaks neither the token's bytes nor its length.
#[derive(Clone)]
pub struct Token([u8; 32]);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// Reads a token file: its text with surrounding white space trimmed (editors add a
    /// newline), not empty.
    pub fn read(path: &Path) -> Result<Self, HttpError> {
        use std::io::Read as _;
        let failed = |source| HttpError::TokenFile {
            path: path.into(),
            source,
        };
        let file = std::fs::File::open(path).map_err(failed)?;
        let mut text = String::new();
        file.take(MAX_TOKEN_BYTES)
            .read_to_string(&mut text)
            .map_err(failed)?;
        Self::new(text.trim()).ok_or_else(|| HttpError::EmptyToken { path: path.into() })
    }

    /// A token from its text; `None` for an empty one, which would let anyone in.
    #[must_use]
    pub fn new(text: &str) -> Option<Self> {
        (!text.is_empty()).then(|| Self(Self::digest(text.as_bytes())))
    }

    fn digest(bytes: &[u8]) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(bytes).into()
    }

    /// Whether an `Authorization` header's value carries this token.
    #[must_use]
    pub fn admits(&self, header: Option<&[u8]>) -> bool {
        use subtle::ConstantTimeEq as _;
        let Some(given) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        Self::digest(given).ct_eq(&self.0).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(listen: &str, token: bool) -> HttpSettings {
        HttpSettings {
            listen: listen.parse().expect("address"),
            token_file: token.then(|| "/etc/enforcer/http-token".into()),
        }
    }

    #[test]
    fn loopback_needs_no_token_and_anything_else_does() {
        for ok in [
            "127.0.0.1:9464",
            "127.0.0.2:1",
            "[::1]:9464",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert_eq!(settings(ok, false).check(), Ok(()), "{ok}");
        }
        for open in ["0.0.0.0:9464", "10.0.0.5:9464", "[::]:9464"] {
            let err = settings(open, false).check().expect_err(open);
            assert!(err.contains("token_file") && err.contains(open), "{err}");
            assert_eq!(settings(open, true).check(), Ok(()), "{open} with a token");
        }
    }

    #[test]
    fn the_token_is_checked_whole() {
        let token = Token::new("s3cret").expect("token");
        assert!(token.admits(Some(b"Bearer s3cret")));
        for wrong in [
            &b"Bearer s3cre"[..],
            b"Bearer s3cret ",
            b"Bearer S3CRET",
            b"bearer s3cret",
            b"Basic s3cret",
            b"s3cret",
            b"Bearer ",
            b"",
        ] {
            assert!(
                !token.admits(Some(wrong)),
                "{:?}",
                String::from_utf8_lossy(wrong)
            );
        }
        assert!(!token.admits(None), "no header, no entry");
        assert!(
            Token::new("").is_none(),
            "an empty token would admit anyone"
        );
    }

    #[test]
    fn token_files_are_trimmed_and_must_not_be_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "abc\n").expect("write");
        assert!(
            Token::read(&path)
                .expect("read")
                .admits(Some(b"Bearer abc"))
        );
        std::fs::write(&path, " \n").expect("write");
        let err = Token::read(&path).expect_err("empty").to_string();
        assert!(err.contains("empty") && err.contains("token"), "{err}");
        let missing = Token::read(&dir.path().join("nope"))
            .expect_err("missing")
            .to_string();
        assert!(missing.contains("nope"), "{missing}");
    }
}
