//! SHA-256 file digests: a program's identity is its content, not its name or path.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

pub use enforcer_common::DIGEST_LEN;

/// A SHA-256 digest of a file's content.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileDigest(pub [u8; DIGEST_LEN]);

/// Why a digest could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "invalid SHA-256 digest {input:?}: expected 64 hexadecimal characters, optionally prefixed by \"sha256:\""
    )]
    Syntax { input: String },
}

impl FileDigest {
    /// Hashes the file at `path`, streaming it so large binaries need no large buffer.
    pub fn of_file(path: &Path) -> Result<Self, DigestError> {
        let read_err = |source| DigestError::Read {
            path: path.display().to_string(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(read_err)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(read_err)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(Self(hasher.finalize().into()))
    }

    /// Hashes bytes already in memory.
    #[must_use]
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }
}

impl FromStr for FileDigest {
    type Err = DigestError;

    /// Accepts `sha256:<hex>` or bare `<hex>`; 64 hex characters, either case.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let syntax = || DigestError::Syntax {
            input: input.to_owned(),
        };
        let hex_part = input.strip_prefix("sha256:").unwrap_or(input);
        let mut out = [0u8; DIGEST_LEN];
        hex::decode_to_slice(hex_part, &mut out).map_err(|_| syntax())?;
        Ok(Self(out))
    }
}

impl fmt::Display for FileDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for FileDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // sha256("abc") from FIPS 180-2.
        let d = FileDigest::of_bytes(b"abc");
        assert_eq!(
            d.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn file_and_bytes_agree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        assert_eq!(
            FileDigest::of_file(&path).expect("hash"),
            FileDigest::of_bytes(&data)
        );
    }

    #[test]
    fn parse_round_trip_and_prefix() {
        let d = FileDigest::of_bytes(b"x");
        let s = d.to_string();
        assert_eq!(s.parse::<FileDigest>().expect("bare"), d);
        assert_eq!(
            format!("sha256:{}", s.to_uppercase())
                .parse::<FileDigest>()
                .expect("prefixed"),
            d
        );
    }

    #[test]
    fn parse_rejects_bad_syntax() {
        for bad in [
            "",
            "abc",
            &"0".repeat(63),
            &"0".repeat(65),
            &"g".repeat(64),
            "sha512:00",
        ] {
            let err = bad.parse::<FileDigest>().expect_err(bad);
            assert!(err.to_string().contains("invalid SHA-256 digest"), "{err}");
        }
    }

    #[test]
    fn missing_file_names_the_path() {
        let err =
            FileDigest::of_file(Path::new("/nonexistent/enforcer-test")).expect_err("missing");
        assert!(
            err.to_string().contains("/nonexistent/enforcer-test"),
            "{err}"
        );
    }
}
