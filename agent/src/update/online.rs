//! Reaching a release repository online: the HTTP client the node reads it with, and the daemon's
//! periodic check of `[update] repository_url`. TUF verifies every byte fetched, so TLS here keeps
//! the transfer private and reaches the right server; it is not what makes a release trusted, and a
//! plain `http://` mirror is allowed.

use super::UpdateError;
use crate::config::UpdateConfig;
use std::path::Path;
use std::time::Duration;

/// How long to wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for the next bytes of an answer. There is no limit on a whole transfer: a target
/// is hundreds of megabytes on what may be a slow site link, and the record stays locked while a
/// stalled server holds it, so a stall must end.
const READ_TIMEOUT: Duration = Duration::from_mins(2);

/// A client with the system's roots plus, when given, the certificates in `extra_ca` (a PEM file:
/// a site CA, or the one a TLS-inspecting proxy signs with). Needs the process's rustls provider,
/// which `main` installs first thing.
pub fn client(extra_ca: Option<&Path>) -> Result<reqwest::Client, UpdateError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("scs-edge-agent/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT);
    if let Some(path) = extra_ca {
        let unusable = |reason: String| UpdateError::Source {
            origin: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|err| unusable(err.to_string()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|err| unusable(format!("not a PEM certificate bundle: {err}")))?;
        if certificates.is_empty() {
            return Err(unusable("holds no certificate".into()));
        }
        builder = builder.tls_certs_merge(certificates);
    }
    builder.build().map_err(|err| UpdateError::Source {
        origin: "the repository client".into(),
        reason: err.to_string(),
    })
}

/// The daemon's periodic look at a repository.
#[derive(Debug, Clone)]
pub struct RepositoryCheck {
    /// The repository's base URL.
    pub url: reqwest::Url,
    /// The client that reaches it.
    pub client: reqwest::Client,
    /// How often to look.
    pub every: Duration,
}

impl RepositoryCheck {
    /// The check `[update]` asks for, with a [`client`] over `repository_ca_file`; `None` when no
    /// `repository_url` is set.
    pub fn from_config(config: &UpdateConfig) -> Result<Option<Self>, UpdateError> {
        let Some(url) = &config.repository_url else {
            return Ok(None);
        };
        let url = reqwest::Url::parse(url).map_err(|err| UpdateError::Source {
            origin: url.clone(),
            reason: err.to_string(),
        })?;
        Ok(Some(Self {
            url,
            client: client(config.repository_ca_file.as_deref())?,
            every: Duration::from_secs(config.check_interval_secs),
        }))
    }
}
