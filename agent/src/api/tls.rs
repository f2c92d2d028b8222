//! The listener's certificate: the operator's, or a self-signed one made on first start and kept.
//!
//! Keeping the self-signed certificate matters: clients pin it (`--os-cacert`) and a new one on every
//! restart would break them. The key is written with mode 0600 and replaced atomically.

use crate::config::ApiConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the listener has no certificate.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot load {what} from {path}: {reason}")]
    Load {
        /// Certificate or key.
        what: &'static str,
        /// File.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The self-signed certificate could not be made or stored.
    #[error("cannot create self-signed certificate in {dir}: {reason}")]
    Create {
        /// Directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the pair.
    #[error("TLS configuration rejected: {0}")]
    Config(#[from] rustls::Error),
}

/// Where the certificate came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateSource {
    /// `api.tls_cert` / `api.tls_key`.
    Configured(PathBuf),
    /// Self-signed, made now.
    Created(PathBuf),
    /// Self-signed, made on an earlier start.
    Kept(PathBuf),
}

fn load(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    fn load_err(
        what: &'static str,
        path: &Path,
    ) -> impl Fn(rustls::pki_types::pem::Error) -> TlsError + use<> {
        let path = path.to_owned();
        move |e| TlsError::Load {
            what,
            path: path.clone(),
            reason: e.to_string(),
        }
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(load_err("certificate", cert))?
        .collect::<Result<_, _>>()
        .map_err(load_err("certificate", cert))?;
    if certs.is_empty() {
        return Err(TlsError::Load {
            what: "certificate",
            path: cert.to_owned(),
            reason: "no certificate in file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(load_err("private key", key))?;
    Ok((certs, key))
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Loads the configured pair, or loads/creates the self-signed pair under `tls_dir`.
pub fn server_config(
    api: &ApiConfig,
    tls_dir: &Path,
) -> Result<(Arc<rustls::ServerConfig>, CertificateSource), TlsError> {
    let (certs, key, source) = if let (Some(cert), Some(key)) = (&api.tls_cert, &api.tls_key) {
        let (certs, key_der) = load(cert, key)?;
        (certs, key_der, CertificateSource::Configured(cert.clone()))
    } else {
        let cert = tls_dir.join("api.crt");
        let key = tls_dir.join("api.key");
        if cert.exists() && key.exists() {
            let (certs, key_der) = load(&cert, &key)?;
            (certs, key_der, CertificateSource::Kept(cert))
        } else {
            let create_err = |reason: String| TlsError::Create {
                dir: tls_dir.to_owned(),
                reason,
            };
            let mut names = vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "::1".to_owned(),
            ];
            names.extend(host_name());
            names.extend(api.tls_names.iter().cloned());
            names.dedup();
            let generated =
                rcgen::generate_simple_self_signed(names).map_err(|e| create_err(e.to_string()))?;
            std::fs::create_dir_all(tls_dir).map_err(|e| create_err(e.to_string()))?;
            // Key first: a crash between the two writes leaves no certificate, so the next start
            // makes a fresh pair instead of loading a certificate without its key.
            crate::system::file::write_atomic(
                &key,
                generated.signing_key.serialize_pem().as_bytes(),
                0o600,
            )
            .map_err(|e| create_err(e.to_string()))?;
            crate::system::file::write_atomic(&cert, generated.cert.pem().as_bytes(), 0o644)
                .map_err(|e| create_err(e.to_string()))?;
            let (certs, key_der) = load(&cert, &key)?;
            (certs, key_der, CertificateSource::Created(cert))
        }
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_is_created_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let api = ApiConfig::default();
        let (_, first) = server_config(&api, dir.path()).expect("create");
        assert!(matches!(first, CertificateSource::Created(_)));
        let pem = std::fs::read(dir.path().join("api.crt")).expect("cert");
        let (_, second) = server_config(&api, dir.path()).expect("reload");
        assert!(matches!(second, CertificateSource::Kept(_)));
        assert_eq!(
            std::fs::read(dir.path().join("api.crt")).expect("cert"),
            pem
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("api.key"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn configured_pair_that_does_not_exist_is_a_clear_error() {
        let api = ApiConfig {
            tls_cert: Some("/nonexistent/c.pem".into()),
            tls_key: Some("/nonexistent/k.pem".into()),
            ..ApiConfig::default()
        };
        let err = server_config(&api, Path::new("/tmp")).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/c.pem"), "{err}");
    }
}
