//! The DSSE-style envelope: payload type, payload bytes, and signatures over the
//! pre-authentication encoding ([`pae`]) of both.

use super::*;

/// The pre-authentication encoding that signatures cover:
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal.
/// Lengths make the split between type and body unambiguous.
#[must_use]
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let head = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    );
    let mut out = Vec::with_capacity(head.len() + payload.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// One signature in an envelope. The key id only helps find the key: what counts is which
/// trusted public key the signature verifies under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvelopeSignature {
    pub key_id: KeyId,
    pub sig: [u8; 64],
}

/// A parsed, unverified envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub payload_type: String,
    pub payload: Vec<u8>,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Serialize, Deserialize)]
struct EnvelopeWire {
    #[serde(rename = "payloadType")]
    payload_type: String,
    payload: String,
    signatures: Vec<SignatureWire>,
}

#[derive(Serialize, Deserialize)]
struct SignatureWire {
    keyid: String,
    sig: String,
}

impl Envelope {
    /// An unsigned envelope around `payload`.
    #[must_use]
    pub fn new(kind: ArtifactKind, payload: Vec<u8>) -> Self {
        Self {
            payload_type: kind.payload_type().to_owned(),
            payload,
            signatures: Vec::new(),
        }
    }

    /// Parses an envelope: size limit first, then strict JSON (no unknown fields, no
    /// trailing data), canonical base64, well-formed key ids and 64-byte signatures.
    pub fn parse(bytes: &[u8]) -> Result<Self, ArtifactError> {
        if bytes.len() > MAX_ARTIFACT_BYTES {
            return Err(ArtifactError::TooLarge {
                size: bytes.len(),
                limit: MAX_ARTIFACT_BYTES,
            });
        }
        let wire: EnvelopeWire = from_json(bytes, "envelope")?;
        let payload = BASE64
            .decode(&wire.payload)
            .map_err(|e| malformed("envelope", format!("payload is not canonical base64: {e}")))?;
        if wire.signatures.len() > MAX_SIGNATURES {
            return Err(malformed(
                "envelope",
                format!(
                    "{} signatures, at most {MAX_SIGNATURES} allowed",
                    wire.signatures.len()
                ),
            ));
        }
        let signatures = wire
            .signatures
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let key_id = s
                    .keyid
                    .parse::<KeyId>()
                    .map_err(|e| malformed("envelope", format!("signature {i}: {e}")))?;
                let bytes = BASE64.decode(&s.sig).map_err(|e| {
                    malformed(
                        "envelope",
                        format!("signature {i} is not canonical base64: {e}"),
                    )
                })?;
                let sig = <[u8; 64]>::try_from(bytes.as_slice()).map_err(|_| {
                    malformed(
                        "envelope",
                        format!(
                            "signature {i} is {} bytes, Ed25519 signatures are 64",
                            bytes.len()
                        ),
                    )
                })?;
                Ok(EnvelopeSignature { key_id, sig })
            })
            .collect::<Result<_, ArtifactError>>()?;
        Ok(Self {
            payload_type: wire.payload_type,
            payload,
            signatures,
        })
    }

    /// Compact JSON with no trailing newline: every byte of it is significant, so any
    /// change to it is detected (the property tests rely on this).
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let wire = EnvelopeWire {
            payload_type: self.payload_type.clone(),
            payload: BASE64.encode(&self.payload),
            signatures: self
                .signatures
                .iter()
                .map(|s| SignatureWire {
                    keyid: s.key_id.to_string(),
                    sig: BASE64.encode(s.sig),
                })
                .collect(),
        };
        // Strings and sequences only: serialisation into memory cannot fail.
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    pub fn kind(&self) -> Result<ArtifactKind, ArtifactError> {
        ArtifactKind::from_payload_type(&self.payload_type)
    }

    #[must_use]
    pub fn id(&self) -> ArtifactId {
        ArtifactId::of_payload(&self.payload)
    }

    /// The bytes that signatures cover.
    #[must_use]
    pub fn signed_message(&self) -> Vec<u8> {
        pae(&self.payload_type, &self.payload)
    }

    /// Adds `key`'s signature. Returns false, changing nothing, when that key already
    /// signed: a second signature by one key would not count anyway.
    pub fn add_signature(&mut self, key: &SigningKey) -> bool {
        let key_id = key.key_id();
        if self.signatures.iter().any(|s| s.key_id == key_id) {
            return false;
        }
        let sig = key.sign(&self.signed_message());
        self.signatures.push(EnvelopeSignature { key_id, sig });
        true
    }
}
