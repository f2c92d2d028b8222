//! The wire to the region: HTTPS with rustls (aws-lc-rs), behind [`RegionTransport`] so the link's
//! logic is tested over an in-memory region and the real client is tested against a real TLS server.
//!
//! Three trust levels, one per phase of the link:
//! * fetching the CA (`GET /node/v1/ca`): TLS *without* chain verification — the node has nothing to
//!   verify against yet. The handshake signature is still checked, and the caller compares the CA's
//!   fingerprint with its pin before it trusts anything (and before the join token goes anywhere);
//! * joining: the fetched, pinned CA as the only root, normal WebPKI verification of the region's
//!   name (DNS or IP, from the URL);
//! * everything after: the same root, plus the node certificate as TLS client identity (mTLS).
//!
//! Every request carries [`PROTOCOL_HEADER`]; refusals arrive as [`ErrorBody`] and become
//! [`TransportError::Refused`] with the region's code, so the link decides what to do by code.

use super::credentials::Credentials;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use scs_edge_proto::{
    DesiredState, Enrollment, ErrorBody, ErrorCode, JoinRequest, PROTOCOL_HEADER, PROTOCOL_VERSION,
    RenewRequest, ReportAck, ReportBatch, paths,
};
use sha2::{Digest as _, Sha256};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Largest answer the node reads from the region; every answer is a few KiB.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// A region that does not accept a connection within this long counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole exchange (a batch of reports) that takes longer than this is abandoned and retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a release download may wait for its next bytes.
const REPOSITORY_READ_TIMEOUT: Duration = Duration::from_mins(2);
/// Longest region message kept for logs and status.
const MAX_MESSAGE_CHARS: usize = 512;

/// An exchange with the region that did not produce the expected answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// No answer: DNS, connect, TLS handshake, timeout, or the connection broke.
    #[error("cannot reach the region at {url}: {reason}")]
    Unreachable {
        /// The request URL.
        url: String,
        /// What failed, with its causes.
        reason: String,
    },
    /// The region answered with an error.
    #[error("the region refused {what} ({status} {}): {message}", code_name(*.code))]
    Refused {
        /// What was asked.
        what: &'static str,
        /// HTTP status.
        status: u16,
        /// The region's code ([`ErrorCode::Internal`] or [`ErrorCode::Unknown`] when the body was not an
        /// [`ErrorBody`], e.g. from a proxy).
        code: ErrorCode,
        /// The region's explanation (never a secret).
        message: String,
        /// For [`ErrorCode::OutOfOrder`]: the `seq` the region expects next.
        expected_seq: Option<u64>,
    },
    /// The region answered 2xx with a body that is not what the protocol says.
    #[error("the region's answer to {what} is malformed: {reason}")]
    Malformed {
        /// What was asked.
        what: &'static str,
        /// Why it cannot be used.
        reason: String,
    },
    /// The TLS client could not be set up (an unusable CA or node certificate).
    #[error("cannot set up TLS for the region: {0}")]
    Tls(String),
}

/// The wire name of an error code (`invalid_join_token`), as the region writes it.
pub fn code_name(code: ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The node-facing endpoints of the region.
pub trait RegionTransport: Send + Sync {
    /// `GET /node/v1/ca` without verifying the server's chain: the region CA as PEM, to be checked
    /// against the pin by the caller.
    fn fetch_ca(&self) -> impl Future<Output = Result<String, TransportError>> + Send;
    /// `POST /node/v1/join`, trusting only `ca_pem`.
    fn join(
        &self,
        ca_pem: &str,
        request: &JoinRequest,
    ) -> impl Future<Output = Result<Enrollment, TransportError>> + Send;
    /// `POST /node/v1/sites/{site}/certificate` over mTLS with the current credentials.
    fn renew(
        &self,
        credentials: &Credentials,
        request: &RenewRequest,
    ) -> impl Future<Output = Result<Enrollment, TransportError>> + Send;
    /// `POST /node/v1/sites/{site}/reports` over mTLS.
    fn send_reports(
        &self,
        credentials: &Credentials,
        batch: &ReportBatch,
    ) -> impl Future<Output = Result<ReportAck, TransportError>> + Send;
    /// `GET /node/v1/sites/{site}/desired` over mTLS.
    fn desired(
        &self,
        credentials: &Credentials,
    ) -> impl Future<Output = Result<DesiredState, TransportError>> + Send;
}

/// A shared transport is a transport (the link owns its transport; tests keep a handle on theirs).
impl<T: RegionTransport> RegionTransport for Arc<T> {
    fn fetch_ca(&self) -> impl Future<Output = Result<String, TransportError>> + Send {
        (**self).fetch_ca()
    }

    fn join(
        &self,
        ca_pem: &str,
        request: &JoinRequest,
    ) -> impl Future<Output = Result<Enrollment, TransportError>> + Send {
        (**self).join(ca_pem, request)
    }

    fn renew(
        &self,
        credentials: &Credentials,
        request: &RenewRequest,
    ) -> impl Future<Output = Result<Enrollment, TransportError>> + Send {
        (**self).renew(credentials, request)
    }

    fn send_reports(
        &self,
        credentials: &Credentials,
        batch: &ReportBatch,
    ) -> impl Future<Output = Result<ReportAck, TransportError>> + Send {
        (**self).send_reports(credentials, batch)
    }

    fn desired(
        &self,
        credentials: &Credentials,
    ) -> impl Future<Output = Result<DesiredState, TransportError>> + Send {
        (**self).desired(credentials)
    }
}

/// The real region client over reqwest, with TLS configurations built here (aws-lc-rs provider).
pub struct HttpsTransport {
    base: String,
    provider: Arc<CryptoProvider>,
    /// The mTLS client for the current certificate (keyed by its digest), so heartbeats reuse one
    /// connection instead of a handshake every few seconds; replaced when the certificate is.
    mtls: Mutex<Option<([u8; 32], reqwest::Client)>>,
}

impl std::fmt::Debug for HttpsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsTransport")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl HttpsTransport {
    /// A client for the region at `url` (`https://host:port`, validated by the configuration).
    pub fn new(url: &str) -> Self {
        Self {
            base: url.trim_end_matches('/').to_owned(),
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            mtls: Mutex::new(None),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn builder(
        &self,
    ) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, TransportError>
    {
        rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TransportError::Tls(e.to_string()))
    }

    /// TLS that accepts any server certificate but still checks the handshake signature.
    fn unverified_tls(&self) -> Result<rustls::ClientConfig, TransportError> {
        let verifier = FetchCaVerifier {
            algorithms: self.provider.signature_verification_algorithms,
        };
        Ok(self
            .builder()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth())
    }

    fn roots(ca_pem: &str) -> Result<rustls::RootCertStore, TransportError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| TransportError::Tls(format!("region CA: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| TransportError::Tls(format!("region CA: {e}")))?;
        }
        if roots.is_empty() {
            return Err(TransportError::Tls("region CA: no certificate".into()));
        }
        Ok(roots)
    }

    fn pinned_tls(&self, ca_pem: &str) -> Result<rustls::ClientConfig, TransportError> {
        Ok(self
            .builder()?
            .with_root_certificates(Self::roots(ca_pem)?)
            .with_no_client_auth())
    }

    fn mutual_tls(
        &self,
        credentials: &Credentials,
    ) -> Result<rustls::ClientConfig, TransportError> {
        let chain = CertificateDer::pem_slice_iter(credentials.certificate_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TransportError::Tls(format!("node certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(credentials.key_pem().as_bytes())
            .map_err(|e| TransportError::Tls(format!("node key: {e}")))?;
        self.builder()?
            .with_root_certificates(Self::roots(&credentials.ca_pem)?)
            .with_client_auth_cert(chain, key)
            .map_err(|e| TransportError::Tls(format!("node certificate: {e}")))
    }

    fn client(tls: rustls::ClientConfig) -> Result<reqwest::Client, TransportError> {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            PROTOCOL_HEADER,
            reqwest::header::HeaderValue::from(PROTOCOL_VERSION),
        );
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .default_headers(headers)
            .user_agent(concat!("scs-edge-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| TransportError::Tls(chain_text(&e)))
    }

    /// A client for the region's release repository: the node's certificate, as on the link, but
    /// no limit on a whole answer — a release target is hundreds of megabytes on what may be a slow
    /// site link — only on waiting for the next bytes, so a stalled transfer ends.
    pub fn repository_client(
        &self,
        credentials: &Credentials,
    ) -> Result<reqwest::Client, TransportError> {
        reqwest::Client::builder()
            .tls_backend_preconfigured(self.mutual_tls(credentials)?)
            .user_agent(concat!("scs-edge-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(REPOSITORY_READ_TIMEOUT)
            .build()
            .map_err(|e| TransportError::Tls(chain_text(&e)))
    }

    /// The region's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn mtls_client(&self, credentials: &Credentials) -> Result<reqwest::Client, TransportError> {
        let digest: [u8; 32] = Sha256::digest(credentials.certificate_pem.as_bytes()).into();
        let mut cached = self.mtls.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((key, client)) = cached.as_ref()
            && *key == digest
        {
            return Ok(client.clone());
        }
        let client = Self::client(self.mutual_tls(credentials)?)?;
        *cached = Some((digest, client.clone()));
        Ok(client)
    }

    async fn exchange<T: serde::de::DeserializeOwned>(
        what: &'static str,
        url: String,
        request: reqwest::RequestBuilder,
    ) -> Result<T, TransportError> {
        let bytes = Self::answer(what, url, request).await?;
        serde_json::from_slice(&bytes).map_err(|e| TransportError::Malformed {
            what,
            reason: e.to_string(),
        })
    }

    async fn answer(
        what: &'static str,
        url: String,
        request: reqwest::RequestBuilder,
    ) -> Result<Vec<u8>, TransportError> {
        let unreachable = |e: &reqwest::Error| TransportError::Unreachable {
            url: url.clone(),
            reason: chain_text(e),
        };
        let response = request.send().await.map_err(|e| unreachable(&e))?;
        let status = response.status();
        if response
            .content_length()
            .is_some_and(|len| len > MAX_ANSWER_BYTES as u64)
        {
            return Err(TransportError::Malformed {
                what,
                reason: format!("the answer is larger than {MAX_ANSWER_BYTES} bytes"),
            });
        }
        let bytes = response.bytes().await.map_err(|e| unreachable(&e))?;
        if bytes.len() > MAX_ANSWER_BYTES {
            return Err(TransportError::Malformed {
                what,
                reason: format!("the answer is larger than {MAX_ANSWER_BYTES} bytes"),
            });
        }
        if status.is_success() {
            Ok(bytes.to_vec())
        } else {
            Err(refusal(what, status.as_u16(), &bytes))
        }
    }
}

/// Reads a non-2xx answer: the region's [`ErrorBody`], or whatever a proxy in between said.
pub fn refusal(what: &'static str, status: u16, body: &[u8]) -> TransportError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(body) => TransportError::Refused {
            what,
            status,
            code: body.error.code,
            message: truncate(&body.error.message),
            expected_seq: body.error.expected_seq,
        },
        Err(_) => TransportError::Refused {
            what,
            status,
            code: if status >= 500 {
                ErrorCode::Internal
            } else {
                ErrorCode::Unknown
            },
            message: truncate(String::from_utf8_lossy(body).trim()),
            expected_seq: None,
        },
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(MAX_MESSAGE_CHARS).collect()
}

/// An error with its causes (`error sending request: client error (Connect): tcp connect error: …`):
/// reqwest's own text alone rarely says what went wrong.
fn chain_text(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl RegionTransport for HttpsTransport {
    async fn fetch_ca(&self) -> Result<String, TransportError> {
        let what = "the CA download";
        let url = self.url(paths::CA);
        let client = Self::client(self.unverified_tls()?)?;
        let bytes = Self::answer(what, url.clone(), client.get(&url)).await?;
        String::from_utf8(bytes).map_err(|_| TransportError::Malformed {
            what,
            reason: "the CA is not UTF-8 text".into(),
        })
    }

    async fn join(
        &self,
        ca_pem: &str,
        request: &JoinRequest,
    ) -> Result<Enrollment, TransportError> {
        let url = self.url(paths::JOIN);
        let client = Self::client(self.pinned_tls(ca_pem)?)?;
        Self::exchange("the join", url.clone(), client.post(&url).json(request)).await
    }

    async fn renew(
        &self,
        credentials: &Credentials,
        request: &RenewRequest,
    ) -> Result<Enrollment, TransportError> {
        let url = self.url(&paths::certificate(&credentials.site));
        let client = self.mtls_client(credentials)?;
        Self::exchange("the renewal", url.clone(), client.post(&url).json(request)).await
    }

    async fn send_reports(
        &self,
        credentials: &Credentials,
        batch: &ReportBatch,
    ) -> Result<ReportAck, TransportError> {
        let url = self.url(&paths::reports(&credentials.site));
        let client = self.mtls_client(credentials)?;
        Self::exchange("the reports", url.clone(), client.post(&url).json(batch)).await
    }

    async fn desired(&self, credentials: &Credentials) -> Result<DesiredState, TransportError> {
        let url = self.url(&paths::desired(&credentials.site));
        let client = self.mtls_client(credentials)?;
        Self::exchange("the desired state", url.clone(), client.get(&url)).await
    }
}

/// Used for the CA download only: accepts any certificate chain (there is nothing to verify it against
/// yet; the pin is checked on what the download returns) but verifies the handshake signature, so
/// the peer at least holds the key of the certificate it presents.
#[derive(Debug)]
struct FetchCaVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for FetchCaVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
