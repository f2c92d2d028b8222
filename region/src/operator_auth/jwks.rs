//! The identity provider's signing keys, as we trust them: parsed from its JWKS into keys that can
//! only ever verify asymmetric signatures, and the gate that limits how often we ask for them again.
//!
//! A JWKS is data from the network; each key in it is parsed on its own so one key we do not
//! understand (an encryption key, a P-521 key, a future key type) does not take the others down with
//! it. Symmetric (`oct`) keys are dropped on sight: a verifier that can build an HMAC key from the
//! JWKS is one `alg` header away from accepting tokens "signed" with a public key.

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::time::{Duration, Instant};

/// The signature algorithms we verify: asymmetric only. `none` and `HS*` (and anything unknown) map to
/// `None`, which is how they get refused before any key is looked at.
pub(crate) fn asymmetric_algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// What a key is, which decides which algorithms may be verified with it. ECDSA curves are part of
/// the kind because ES256 is only defined on P-256 and ES384 only on P-384.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// `kty: RSA`: RS256/384/512 and PS256/384/512.
    Rsa,
    /// `kty: EC, crv: P-256`: ES256.
    EcP256,
    /// `kty: EC, crv: P-384`: ES384.
    EcP384,
    /// `kty: OKP, crv: Ed25519`: EdDSA.
    Ed25519,
}

impl KeyKind {
    fn permits(self, alg: Algorithm) -> bool {
        matches!(
            (self, alg),
            (
                Self::Rsa,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) | (Self::EcP256, Algorithm::ES256)
                | (Self::EcP384, Algorithm::ES384)
                | (Self::Ed25519, Algorithm::EdDSA)
        )
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rsa => "RSA key",
            Self::EcP256 => "EC P-256 key",
            Self::EcP384 => "EC P-384 key",
            Self::Ed25519 => "Ed25519 key",
        })
    }
}

/// One verification key from the JWKS.
#[derive(Clone)]
pub(crate) struct VerificationKey {
    /// What the key is; decides the algorithm family.
    pub(crate) kind: KeyKind,
    /// The JWK's own `alg`, when the IdP pinned the key to one algorithm (Keycloak does).
    pub(crate) pinned: Option<Algorithm>,
    /// The public key, only ever built from RSA/EC/OKP parameters.
    pub(crate) decoding: DecodingKey,
}

impl VerificationKey {
    /// Whether a token claiming `alg` may be verified with this key; `Err` says what the key allows,
    /// for the log line.
    pub(crate) fn check_algorithm(&self, alg: Algorithm) -> Result<(), String> {
        let pinned_ok = self.pinned.is_none_or(|pinned| pinned == alg);
        if self.kind.permits(alg) && pinned_ok {
            Ok(())
        } else if let Some(pinned) = self.pinned {
            Err(format!("{} pinned to {pinned:?}", self.kind))
        } else {
            Err(self.kind.to_string())
        }
    }
}

/// The usable keys of one JWKS, by `kid`.
#[derive(Clone, Default)]
pub(crate) struct KeySet {
    keys: HashMap<String, VerificationKey>,
}

impl KeySet {
    /// Parses a JWKS document. Keys we cannot or must not use are skipped with a log line; a
    /// document with no usable key at all is an error, because replacing a working key set with an
    /// empty one would lock every operator out on what is most likely an IdP misconfiguration.
    pub(crate) fn from_jwks(body: &[u8]) -> Result<Self, JwksError> {
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(body).map_err(JwksError::Json)?;
        let mut keys = HashMap::new();
        for value in document.keys {
            match parse_key(value) {
                Ok((kid, key)) => match keys.entry(kid) {
                    Entry::Occupied(first) => {
                        tracing::warn!(kid = %first.key(), "JWKS lists this kid twice; keeping the first key");
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(key);
                    }
                },
                Err(skip) => tracing::debug!(reason = %skip, "JWKS key skipped"),
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        Ok(Self { keys })
    }

    /// The key with this `kid`.
    pub(crate) fn get(&self, kid: &str) -> Option<&VerificationKey> {
        self.keys.get(kid)
    }

    /// How many keys we hold (for logs and `Debug`).
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

/// A JWKS document we cannot use at all.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Not JSON, or no `keys` array.
    #[error("JWKS is not a JSON object with a `keys` array: {0}")]
    Json(#[source] serde_json::Error),
    /// Every key was skipped (symmetric, encryption-only, unsupported curve, no `kid`, …).
    #[error(
        "JWKS has no usable signature key (keys need a kid and kty RSA, EC P-256/P-384 or OKP Ed25519)"
    )]
    NoUsableKey,
}

/// The fields of a JWK we look at; everything else (x5c, x5t, …) is ignored.
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    public_key_use: Option<String>,
    key_ops: Option<Vec<String>>,
    alg: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Why one JWK was skipped (a debug log line, never an error to the caller).
fn parse_key(value: serde_json::Value) -> Result<(String, VerificationKey), String> {
    let raw: RawJwk = serde_json::from_value(value).map_err(|e| format!("not a JWK: {e}"))?;
    // Tokens select keys by kid only (see `AuthError::MissingKid`), so a key without one is unusable.
    let kid = raw.kid.ok_or("no kid")?;
    if raw.public_key_use.as_deref().is_some_and(|u| u != "sig") {
        return Err(format!("{kid}: not a signature key (use != sig)"));
    }
    if raw
        .key_ops
        .as_ref()
        .is_some_and(|ops| !ops.iter().any(|op| op == "verify"))
    {
        return Err(format!("{kid}: key_ops does not include verify"));
    }
    // A pinned alg we do not verify (RSA-OAEP, HS256 on an RSA key, …) means the IdP does not intend
    // this key for the signatures we accept.
    let pinned = match raw.alg.as_deref() {
        None => None,
        Some(name) => Some(
            asymmetric_algorithm(name)
                .ok_or_else(|| format!("{kid}: alg {name:?} is not an asymmetric signature"))?,
        ),
    };
    let required = |field: Option<String>, name: &str| {
        field.ok_or_else(|| format!("{kid}: {} key without `{name}`", raw.kty))
    };
    let (kind, decoding) = match (raw.kty.as_str(), raw.crv.as_deref()) {
        ("RSA", _) => (
            KeyKind::Rsa,
            DecodingKey::from_rsa_components(&required(raw.n, "n")?, &required(raw.e, "e")?),
        ),
        ("EC", Some(curve @ ("P-256" | "P-384"))) => (
            if curve == "P-256" {
                KeyKind::EcP256
            } else {
                KeyKind::EcP384
            },
            DecodingKey::from_ec_components(&required(raw.x, "x")?, &required(raw.y, "y")?),
        ),
        ("OKP", Some("Ed25519")) => (
            KeyKind::Ed25519,
            DecodingKey::from_ed_components(&required(raw.x, "x")?),
        ),
        // `oct` lands here on purpose: a shared secret published in a JWKS is never a trust anchor.
        (kty, crv) => return Err(format!("{kid}: unsupported key type {kty} (crv {crv:?})")),
    };
    let decoding = decoding.map_err(|e| format!("{kid}: bad key parameters: {e}"))?;
    let key = VerificationKey {
        kind,
        pinned,
        decoding,
    };
    if let Some(pinned) = pinned {
        key.check_algorithm(pinned)
            .map_err(|allowed| format!("{kid}: alg {pinned:?} does not fit a {allowed}"))?;
    }
    Ok((kid, key))
}

/// Limits how often a JWKS fetch may happen after the first one.
///
/// Unknown `kid`s come from the network: without a limit, anyone could make the region fetch the
/// JWKS once per request they send. The first refetch after start is always allowed (a key rotated
/// just before start should work at once); after that, one per `min_interval`.
#[derive(Debug)]
pub(crate) struct RefetchGate {
    min_interval: Duration,
    last: Option<Instant>,
}

impl RefetchGate {
    pub(crate) fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last: None,
        }
    }

    /// Takes the slot if one is free at `now` (and then the caller must fetch).
    pub(crate) fn try_begin(&mut self, now: Instant) -> bool {
        let free = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.min_interval);
        if free {
            self.last = Some(now);
        }
        free
    }
}
