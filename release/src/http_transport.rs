//! tough's [`Transport`] over a `reqwest::Client` the caller builds, so that a repository is read
//! with whatever identity and trust that client carries: the system roots and a site CA today, the
//! node's mTLS identity towards the region next. tough's own `HttpTransport` builds its own client
//! and cannot present a client certificate.
//!
//! A body that breaks off is resumed where it stopped, with a `Range` request, when the server
//! offers ranges (`Accept-Ranges: bytes`): a release target is hundreds of megabytes on what may be
//! a site's flaky WAN link, and starting it again each time it drops may never finish. tough hashes
//! the whole stream as it comes, so a resumed body that does not continue the same file is a hash
//! refusal, never a bad install.
//!
//! It only fetches; tough verifies every byte it streams. A 404, 403 or 410 means the file is not
//! there ([`TransportErrorKind::FileNotFound`]): tough asks for the next root version on every
//! discovery and stops when it is missing, and some servers answer 403 for a missing file. Any
//! other failure — another status, no connection, a body cut short — is an error naming the URL.

use reqwest::StatusCode;
use tough::{Transport, TransportError, TransportErrorKind, TransportStream};
use url::Url;

/// Fetches `http://` and `https://` URLs with one shared client (connections are reused across
/// the metadata and target files of a discovery).
#[derive(Debug, Clone)]
pub struct HttpClientTransport {
    client: reqwest::Client,
    resume: Resume,
}

/// How often a body that broke off is resumed, and how long to wait first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// Resumptions per file; 0 turns resuming off.
    pub attempts: u32,
    /// The wait before the first; it doubles after each, up to a minute.
    pub first_wait: std::time::Duration,
}

impl Default for Resume {
    /// Five resumptions, 2 s apart at first: a link that drops for a minute or two is ridden out.
    fn default() -> Self {
        Self {
            attempts: 5,
            first_wait: std::time::Duration::from_secs(2),
        }
    }
}

impl HttpClientTransport {
    /// Fetches with `client`, resuming as [`Resume::default`].
    pub fn new(client: reqwest::Client) -> Self {
        Self {
            client,
            resume: Resume::default(),
        }
    }

    /// The same, resuming as `resume` says.
    #[must_use]
    pub fn resuming(mut self, resume: Resume) -> Self {
        self.resume = resume;
        self
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
        let ranges = response
            .headers()
            .get(reqwest::header::ACCEPT_RANGES)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"bytes"));
        let validator = response.headers().get(reqwest::header::ETAG).cloned();
        let body = Body {
            client: self.client.clone(),
            url,
            stream: Box::pin(response.bytes_stream()),
            received: 0,
            attempts_left: if ranges { self.resume.attempts } else { 0 },
            wait: self.resume.first_wait,
            validator,
        };
        // Resuming awaits new requests, which tough's stream type (`Sync`) cannot hold: a task
        // receives the body and hands it over through a channel, and stops when the reader goes.
        let (sender, chunks) = futures::channel::mpsc::channel(4);
        tokio::spawn(body.deliver(sender));
        Ok(Box::pin(chunks))
    }
}

/// A body being received, and what it takes to ask for the rest of it.
struct Body {
    client: reqwest::Client,
    url: Url,
    stream: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    received: u64,
    attempts_left: u32,
    wait: std::time::Duration,
    /// The file's `ETag`, sent as `If-Range` so a file that changed is not continued.
    validator: Option<reqwest::header::HeaderValue>,
}

impl Body {
    /// Sends the body's chunks, resumed where it broke off, then its end or its error.
    async fn deliver(
        mut self,
        mut sender: futures::channel::mpsc::Sender<Result<bytes::Bytes, TransportError>>,
    ) {
        use futures::{SinkExt as _, StreamExt as _};
        loop {
            let item = match self.stream.next().await {
                Some(Ok(chunk)) => {
                    self.received += chunk.len() as u64;
                    Ok(chunk)
                }
                None => return,
                Some(Err(err)) => match self.resume(FetchError::request(&err)).await {
                    Ok(()) => continue,
                    Err(err) => Err(err),
                },
            };
            let last = item.is_err();
            if sender.send(item).await.is_err() || last {
                return;
            }
        }
    }

    /// Asks for the rest of the file after `broke`, waiting and asking again while attempts are
    /// left; the error when none is.
    async fn resume(&mut self, mut broke: FetchError) -> Result<(), TransportError> {
        loop {
            if self.attempts_left == 0 {
                return Err(TransportError::new_with_cause(
                    TransportErrorKind::Other,
                    self.url.as_str(),
                    broke,
                ));
            }
            self.attempts_left -= 1;
            tokio::time::sleep(self.wait).await;
            self.wait = (self.wait * 2).min(std::time::Duration::from_mins(1));
            tracing::info!(url = %self.url, from = self.received, "resuming a download that broke off");
            let mut request = self
                .client
                .get(self.url.clone())
                .header(reqwest::header::RANGE, format!("bytes={}-", self.received));
            if let Some(validator) = &self.validator {
                request = request.header(reqwest::header::IF_RANGE, validator.clone());
            }
            match request.send().await {
                Ok(response) if continues(&response, self.received) => {
                    self.stream = Box::pin(response.bytes_stream());
                    return Ok(());
                }
                Ok(response) => {
                    // The server sent something else (the whole file, another part): not the rest.
                    return Err(TransportError::new_with_cause(
                        TransportErrorKind::Other,
                        self.url.as_str(),
                        FetchError::Status(response.status()),
                    ));
                }
                Err(err) => broke = FetchError::request(&err),
            }
        }
    }
}

/// Whether `response` is the part of the file from byte `from` on.
fn continues(response: &reqwest::Response, from: u64) -> bool {
    response.status() == StatusCode::PARTIAL_CONTENT
        && response
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("bytes "))
            .and_then(|range| range.split_once('-'))
            .is_some_and(|(first, _)| first.trim().parse::<u64>() == Ok(from))
}
