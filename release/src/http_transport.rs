//! tough's [`Transport`] over a `reqwest::Client` the caller builds, so that a repository is read
//! with whatever identity and trust that client carries: the system roots and a site CA today, the
//! node's mTLS identity towards the region next. tough's own `HttpTransport` builds its own client
//! and cannot present a client certificate.
//!
//! It only fetches; tough verifies every byte it streams. A 404, 403 or 410 means the file is not
//! there ([`TransportErrorKind::FileNotFound`]): tough asks for the next root version on every
//! discovery and stops when it is missing, and some servers answer 403 for a missing file. Any
//! other failure — another status, no connection, a body cut short — is an error naming the URL.

use futures::TryStreamExt as _;
use reqwest::StatusCode;
use tough::{Transport, TransportError, TransportErrorKind, TransportStream};
use url::Url;

/// Fetches `http://` and `https://` URLs with one shared client (connections are reused across
/// the metadata and target files of a discovery).
#[derive(Debug, Clone)]
pub struct HttpClientTransport {
    client: reqwest::Client,
}

impl HttpClientTransport {
    /// Fetches with `client`.
    pub fn new(client: reqwest::Client) -> Self {
        Self { client }
    }
}

/// Why a file could not be fetched. Its presence in an error's source chain is what tells an
/// unreachable repository from a refused one (see [`crate::ReleaseError::Unreachable`]).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL is not `http://` or `https://`.
    #[error("not an http(s) URL")]
    Scheme,
    /// The server answered, but not with the file.
    #[error("the server answered {0}")]
    Status(StatusCode),
    /// No answer, or the body broke off; the text carries reqwest's whole cause chain (the
    /// refused connection, the TLS failure), which its own message leaves out.
    #[error("{0}")]
    Request(String),
}

impl FetchError {
    fn request(err: &reqwest::Error) -> Self {
        let mut text = err.to_string();
        let mut next = std::error::Error::source(err);
        while let Some(cause) = next {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            next = cause.source();
        }
        Self::Request(text)
    }
}

#[async_trait::async_trait]
impl Transport for HttpClientTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        let failed = |kind, url: &Url, err: FetchError| {
            TransportError::new_with_cause(kind, url.as_str(), err)
        };
        if !matches!(url.scheme(), "http" | "https") {
            return Err(failed(
                TransportErrorKind::UnsupportedUrlScheme,
                &url,
                FetchError::Scheme,
            ));
        }
        let response =
            self.client.get(url.clone()).send().await.map_err(|err| {
                failed(TransportErrorKind::Other, &url, FetchError::request(&err))
            })?;
        let status = response.status();
        if matches!(
            status,
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN | StatusCode::GONE
        ) {
            return Err(failed(
                TransportErrorKind::FileNotFound,
                &url,
                FetchError::Status(status),
            ));
        }
        if !status.is_success() {
            return Err(failed(
                TransportErrorKind::Other,
                &url,
                FetchError::Status(status),
            ));
        }
        Ok(Box::pin(response.bytes_stream().map_err(move |err| {
            failed(TransportErrorKind::Other, &url, FetchError::request(&err))
        })))
    }
}
