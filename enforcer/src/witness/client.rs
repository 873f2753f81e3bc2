//! The log's side of `add-checkpoint`: send a checkpoint and a consistency proof to a
//! witness, get its cosignature lines back, or a typed reason naming the status.
//!
//! Plain HTTP/1.1 over TCP, one connection per request, with a deadline for the whole
//! exchange: a witness is reached on loopback or through a local proxy that does TLS, and
//! a witness that hangs must not hold up the log.

use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, StatusCode, Uri};

use super::protocol::{
    ADD_CHECKPOINT_PATH, AddCheckpoint, MAX_PROOF_LINES, MAX_RESPONSE_BYTES,
    parse_cosignatures_body, parse_size_body,
};
use crate::audit::tlog::{NoteError, NoteSignature, SignedNote, TreeHash};

/// How long [`add_checkpoint`] waits for a witness: connecting, sending and reading.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The most bytes of a refusal's text kept in an error.
const MAX_DETAIL: usize = 512;

/// Why a witness did not cosign. The status-bearing variants are the witness's answer;
/// the others say the exchange itself failed.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("witness URL {url:?} is not usable: {problem}")]
    BadUrl { url: String, problem: &'static str },
    #[error(
        "the consistency proof has {len} hashes, more than the {MAX_PROOF_LINES} a witness \
         accepts"
    )]
    ProofTooLong { len: usize },
    #[error("cannot reach witness {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP exchange with witness {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: hyper::Error,
    },
    #[error("witness {url} did not answer within {after:?}")]
    Timeout { url: String, after: Duration },
    /// 409: the witness's latest cosigned checkpoint of this log has another size. Resend
    /// with `old_size = witness_size` and a proof from that size.
    #[error(
        "witness has cosigned this log up to size {witness_size}, not the old size sent \
         (409); resend with a consistency proof from size {witness_size}"
    )]
    Conflict { witness_size: u64 },
    /// 403: no signature on the checkpoint verifies under the log keys the witness trusts.
    #[error("witness refused the checkpoint's signature (403): {detail}")]
    Forbidden { detail: String },
    /// 404: the witness does not cosign for this origin (or the URL is not a witness).
    #[error("witness does not know this log (404): {detail}")]
    UnknownLog { detail: String },
    /// 422: the checkpoint does not extend what the witness cosigned: a fork or a bad
    /// proof.
    #[error("witness found the checkpoint inconsistent with what it cosigned (422): {detail}")]
    InconsistentProof { detail: String },
    /// 400: the witness could not read the request.
    #[error("witness could not read the request (400): {detail}")]
    BadRequest { detail: String },
    /// Any other status.
    #[error("witness answered {status}: {detail}")]
    Status { status: StatusCode, detail: String },
    #[error("witness answered 200 but not with cosignature lines: {0}")]
    BadCosignatures(#[source] NoteError),
    #[error("witness answered 409 without a readable size ({problem})")]
    BadConflict { problem: &'static str },
}

/// Where to send the request: the socket address and the request target.
pub(super) struct Target {
    host: String,
    port: u16,
    authority: String,
    path: String,
}

pub(super) fn target(url: &str) -> Result<Target, WitnessError> {
    let bad = |problem| WitnessError::BadUrl {
        url: url.to_owned(),
        problem,
    };
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad(
            "only http:// is spoken; put a TLS proxy in front for https",
        ));
    }
    let authority = uri.authority().ok_or(bad("no host"))?;
    if uri.query().is_some() {
        return Err(bad("a submission prefix has no query"));
    }
    let host = authority.host();
    Ok(Target {
        // An IPv6 literal comes bracketed; the socket wants it bare.
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port: authority.port_u16().unwrap_or(80),
        authority: authority.as_str().to_owned(),
        path: format!("{}{ADD_CHECKPOINT_PATH}", uri.path().trim_end_matches('/')),
    })
}

/// Asks the witness at `url` (its submission prefix, e.g. `http://127.0.0.1:7380`) to
/// cosign `note`, a checkpoint signed by the log, given that the witness last cosigned
/// the log at `old_size` (0 if never) and that `proof` proves the checkpoint extends that
/// tree. Returns the cosignature lines the witness sent, unverified: check them with the
/// witness's [`crate::audit::tlog::CosignatureVerifier`] before adding them to the
/// checkpoint (the spec asks clients to ignore lines by keys they do not know).
///
/// Waits at most [`TIMEOUT`].
pub async fn add_checkpoint(
    url: &str,
    old_size: u64,
    proof: &[TreeHash],
    note: &SignedNote,
) -> Result<Vec<NoteSignature>, WitnessError> {
    add_checkpoint_within(url, old_size, proof, note, TIMEOUT).await
}

/// [`add_checkpoint`] with another deadline.
pub async fn add_checkpoint_within(
    url: &str,
    old_size: u64,
    proof: &[TreeHash],
    note: &SignedNote,
    timeout: Duration,
) -> Result<Vec<NoteSignature>, WitnessError> {
    if proof.len() > MAX_PROOF_LINES {
        return Err(WitnessError::ProofTooLong { len: proof.len() });
    }
    let target = target(url)?;
    let body = AddCheckpoint::encode(old_size, proof, note);
    let (status, _, body) = tokio::time::timeout(timeout, post(url, &target, body.into()))
        .await
        .map_err(|_| WitnessError::Timeout {
            url: url.to_owned(),
            after: timeout,
        })??;
    interpret(status, &body)
}

/// Posts `body` to `add-checkpoint` and reads the whole answer. (Tests post bodies that
/// [`AddCheckpoint::encode`] would never write through this.)
pub(super) async fn post(
    url: &str,
    target: &Target,
    body: Bytes,
) -> Result<(StatusCode, HeaderMap, Bytes), WitnessError> {
    let http = |source| WitnessError::Http {
        url: url.to_owned(),
        source,
    };
    let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|source| WitnessError::Connect {
            url: url.to_owned(),
            source,
        })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(http)?;
    // The connection is driven by its own task; it ends when the answer is read and the
    // sender dropped, or when the deadline drops this future.
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("witness connection ended: {e}");
        }
    });
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = hyper::Method::POST;
    *request.uri_mut() = target.path.parse().map_err(|_| WitnessError::BadUrl {
        url: url.to_owned(),
        problem: "its path cannot carry /add-checkpoint",
    })?;
    let headers = request.headers_mut();
    if let Ok(host) = HeaderValue::from_str(&target.authority) {
        headers.insert(header::HOST, host);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status();
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| match e.downcast::<hyper::Error>() {
            Ok(e) => http(*e),
            Err(_) => WitnessError::Status {
                status,
                detail: format!("the answer is larger than {MAX_RESPONSE_BYTES} bytes"),
            },
        })?
        .to_bytes();
    Ok((status, parts.headers, body))
}

/// What the witness's answer means.
fn interpret(status: StatusCode, body: &[u8]) -> Result<Vec<NoteSignature>, WitnessError> {
    let detail = || {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let mut end = text.len().min(MAX_DETAIL);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_owned()
    };
    match status {
        StatusCode::OK => parse_cosignatures_body(body).map_err(WitnessError::BadCosignatures),
        StatusCode::CONFLICT => match parse_size_body(body) {
            Ok(witness_size) => Err(WitnessError::Conflict { witness_size }),
            Err(problem) => Err(WitnessError::BadConflict { problem }),
        },
        StatusCode::FORBIDDEN => Err(WitnessError::Forbidden { detail: detail() }),
        StatusCode::NOT_FOUND => Err(WitnessError::UnknownLog { detail: detail() }),
        StatusCode::UNPROCESSABLE_ENTITY => {
            Err(WitnessError::InconsistentProof { detail: detail() })
        }
        StatusCode::BAD_REQUEST => Err(WitnessError::BadRequest { detail: detail() }),
        status => Err(WitnessError::Status {
            status,
            detail: detail(),
        }),
    }
}
