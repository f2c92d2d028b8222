//! The node's identity towards the region — its private key, its certificate, the region CA and the
//! enrollment's dates — and the link's other small files, all in `<state_dir>/federation/`.
//!
//! A key and its certificate must never come apart, across crashes too: the node could no longer
//! authenticate, and only a new join token would bring it back. So new credentials are *staged* next
//! to the live ones (`<name>.next`): the key first, before its certificate request leaves the node
//! (no certificate is ever signed for a key the node might lose), then the CA and the enrollment, and
//! the certificate last — `node.crt.next` is the commit mark. The commit renames the staged files over
//! the live ones, the certificate last. Loading finishes an interrupted commit (the mark exists) or
//! discards an incomplete stage (it does not), so the live files only ever change to a complete,
//! matching set. Every file is written atomically (temporary name, fsync, rename, fsync the directory).

use jiff::Timestamp;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use scs_edge_proto::{DesiredState, Enrollment, SITE_URI_PREFIX};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// The node's private key (mode 0600).
pub const NODE_KEY: &str = "node.key";
/// The node certificate the region signed.
pub const NODE_CRT: &str = "node.crt";
/// The region CA: the only trust anchor for the region's server certificate.
pub const CA_CRT: &str = "ca.crt";
/// The enrollment's site and dates (`not_after`, `renew_after`).
pub const ENROLLMENT: &str = "enrollment.json";
/// The last desired state fetched from the region.
pub const DESIRED: &str = "desired.json";
/// Written when the region revoked the site; while it exists the link stays off.
pub const REVOKED: &str = "revoked.json";
/// Suffix of staged files (`node.key.next`).
const STAGED: &str = "next";
/// The order a commit renames staged files in: the certificate (the commit mark) last.
const COMMIT_ORDER: [&str; 4] = [CA_CRT, ENROLLMENT, NODE_KEY, NODE_CRT];

/// A credential file could not be read, written or trusted.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Filesystem failure.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file holds something other than what it should.
    #[error("{path} is malformed: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the content of a key or token).
        reason: String,
    },
    /// The region's answer to a join or renewal cannot be used.
    #[error("the region's enrollment cannot be used: {0}")]
    Enrollment(String),
    /// The region's CA certificate is not a PEM certificate.
    #[error("the region CA is not a PEM certificate: {0}")]
    CaCertificate(String),
    /// The key or the certificate request could not be made.
    #[error("cannot make a node key and certificate request: {0}")]
    Csr(String),
}

/// A secret string (a private key PEM, a join token): its `Debug` never shows it, so it cannot leak
/// into a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value, for the one place that must send or parse it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A fresh node key and the certificate request for it.
#[derive(Debug, Clone)]
pub struct NodeKey {
    /// PKCS#8 PEM of the ECDSA P-256 key.
    pub key: Secret,
    /// PKCS#10 PEM: subject CN = site, SAN URI `urn:scs-edge:site:<site>`.
    pub csr_pem: String,
}

/// Makes a new ECDSA P-256 key on the node — the key never leaves it — and a CSR naming `site` the way
/// the region reads it (the URI SAN; the CN is for humans).
pub fn new_node_key(site: &str) -> Result<NodeKey, CredentialsError> {
    let csr_err = |e: rcgen::Error| CredentialsError::Csr(e.to_string());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(csr_err)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(csr_err)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, site);
    let uri =
        rcgen::string::Ia5String::try_from(format!("{SITE_URI_PREFIX}{site}")).map_err(csr_err)?;
    params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
    let csr_pem = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(csr_err)?;
    Ok(NodeKey {
        key: Secret::new(key.serialize_pem()),
        csr_pem,
    })
}

/// `sha256:<64 hex>` of the first certificate's DER in `pem`: the form of `region.ca_fingerprint`.
pub fn ca_fingerprint(pem: &str) -> Result<String, CredentialsError> {
    let der = first_certificate(pem).map_err(CredentialsError::CaCertificate)?;
    let digest = Sha256::digest(der.as_ref());
    let mut text = String::from("sha256:");
    for byte in digest {
        let _ = write!(text, "{byte:02x}");
    }
    Ok(text)
}

fn first_certificate(pem: &str) -> Result<CertificateDer<'static>, String> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| "no certificate in it".to_owned())?
        .map_err(|e| e.to_string())
}

/// The enrollment's facts beside the PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct EnrollmentRecord {
    site: String,
    not_after: Timestamp,
    renew_after: Timestamp,
}

/// The node's current identity towards the region.
#[derive(Clone)]
pub struct Credentials {
    /// The site the certificate names.
    pub site: String,
    /// The node certificate (PEM).
    pub certificate_pem: String,
    /// The region CA (PEM): the only root the node trusts for the region.
    pub ca_pem: String,
    /// The certificate's last valid instant.
    pub not_after: Timestamp,
    /// From when the node renews.
    pub renew_after: Timestamp,
    key: Secret,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("site", &self.site)
            .field("not_after", &self.not_after)
            .field("renew_after", &self.renew_after)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Checks that the pieces fit: both PEMs parse and the key is the certificate's.
    fn new(
        record: EnrollmentRecord,
        certificate_pem: String,
        ca_pem: String,
        key: Secret,
    ) -> Result<Self, String> {
        let certificate =
            first_certificate(&certificate_pem).map_err(|e| format!("node certificate: {e}"))?;
        first_certificate(&ca_pem).map_err(|e| format!("CA certificate: {e}"))?;
        let key_der = PrivateKeyDer::from_pem_slice(key.expose().as_bytes())
            .map_err(|e| format!("node key: {e}"))?;
        let signing = rustls::crypto::aws_lc_rs::default_provider()
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| format!("node key: {e}"))?;
        rustls::sign::CertifiedKey::new(vec![certificate], signing)
            .keys_match()
            .map_err(|e| format!("the certificate is not for the node's key: {e}"))?;
        Ok(Self {
            site: record.site,
            certificate_pem,
            ca_pem,
            not_after: record.not_after,
            renew_after: record.renew_after,
            key,
        })
    }

    /// The private key PEM, for building the TLS client identity.
    pub fn key_pem(&self) -> &str {
        self.key.expose()
    }

    /// Whether the region asked for renewal by now.
    pub fn renewal_due(&self, now: Timestamp) -> bool {
        now >= self.renew_after
    }

    /// Whether the certificate is no longer valid.
    pub fn expired(&self, now: Timestamp) -> bool {
        now >= self.not_after
    }
}

/// Why the link is off for good: the region revoked the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// When the node learnt it.
    pub at: Timestamp,
    /// What the region said.
    pub message: String,
}

/// `<state_dir>/federation/`: credentials, desired state and the revocation mark.
#[derive(Debug, Clone)]
pub struct FederationDir {
    dir: PathBuf,
}

impl FederationDir {
    /// The directory (created on first write, mode 0700).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn staged(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.{STAGED}"))
    }

    fn ensure_dir(&self) -> Result<(), CredentialsError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| CredentialsError::Io {
                what: "create",
                path: self.dir.clone(),
                source,
            })
    }

    /// The live credentials, after finishing or discarding an interrupted update; `None` before the
    /// first join.
    pub fn load(&self) -> Result<Option<Credentials>, CredentialsError> {
        self.recover()?;
        let Some(key) = read_optional(&self.file(NODE_KEY))? else {
            return Ok(None);
        };
        let certificate = read_required(&self.file(NODE_CRT))?;
        let ca = read_required(&self.file(CA_CRT))?;
        let record_path = self.file(ENROLLMENT);
        let record: EnrollmentRecord = serde_json::from_str(&read_required(&record_path)?)
            .map_err(|e| CredentialsError::Malformed {
                path: record_path.clone(),
                reason: e.to_string(),
            })?;
        Credentials::new(record, certificate, ca, Secret::new(key))
            .map(Some)
            .map_err(|reason| CredentialsError::Malformed {
                path: self.dir.clone(),
                reason,
            })
    }

    /// Finishes a commit a crash interrupted (its mark, the staged certificate, exists) or throws away
    /// a stage that never completed.
    fn recover(&self) -> Result<(), CredentialsError> {
        if self.staged(NODE_CRT).exists() {
            self.promote()?;
            tracing::info!(dir = %self.dir.display(), "finished an interrupted update of the node credentials");
        } else {
            self.discard_staged()?;
        }
        Ok(())
    }

    /// Writes a new key beside the live one; it becomes live only with its certificate.
    pub fn stage_key(&self, key: &NodeKey) -> Result<(), CredentialsError> {
        self.ensure_dir()?;
        write_atomic(&self.staged(NODE_KEY), key.key.expose().as_bytes(), 0o600)
    }

    /// Removes staged files (a join or renewal that failed).
    pub fn discard_staged(&self) -> Result<(), CredentialsError> {
        for name in COMMIT_ORDER {
            let path = self.staged(name);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(CredentialsError::Io {
                        what: "remove",
                        path,
                        source: e,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Makes `enrollment` with the staged key the live credentials, after checking it is for `site`
    /// and for that key.
    pub fn commit(
        &self,
        site: &str,
        enrollment: &Enrollment,
    ) -> Result<Credentials, CredentialsError> {
        if enrollment.site != site {
            return Err(CredentialsError::Enrollment(format!(
                "it is for site {:?}, this node is {site:?}",
                enrollment.site
            )));
        }
        if enrollment.renew_after > enrollment.not_after {
            return Err(CredentialsError::Enrollment(
                "renew_after lies after not_after".into(),
            ));
        }
        let key = read_required(&self.staged(NODE_KEY))?;
        let record = EnrollmentRecord {
            site: enrollment.site.clone(),
            not_after: enrollment.not_after,
            renew_after: enrollment.renew_after,
        };
        let credentials = Credentials::new(
            record.clone(),
            enrollment.certificate_pem.clone(),
            enrollment.ca_pem.clone(),
            Secret::new(key),
        )
        .map_err(CredentialsError::Enrollment)?;
        let mut json = serde_json::to_string_pretty(&record).unwrap_or_default();
        json.push('\n');
        write_atomic(&self.staged(CA_CRT), enrollment.ca_pem.as_bytes(), 0o644)?;
        write_atomic(&self.staged(ENROLLMENT), json.as_bytes(), 0o644)?;
        // The commit mark: from here on the update is finished, by this call or the next load.
        write_atomic(
            &self.staged(NODE_CRT),
            enrollment.certificate_pem.as_bytes(),
            0o644,
        )?;
        self.promote()?;
        Ok(credentials)
    }

    fn promote(&self) -> Result<(), CredentialsError> {
        for name in COMMIT_ORDER {
            let from = self.staged(name);
            match std::fs::rename(&from, self.file(name)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(CredentialsError::Io {
                        what: "rename",
                        path: from,
                        source: e,
                    });
                }
                _ => {}
            }
        }
        sync_dir(&self.dir)
    }

    /// The last desired state saved, if any.
    pub fn load_desired(&self) -> Result<Option<DesiredState>, CredentialsError> {
        self.load_json(DESIRED)
    }

    /// Saves the desired state the region sent.
    pub fn save_desired(&self, desired: &DesiredState) -> Result<(), CredentialsError> {
        self.save_json(DESIRED, desired)
    }

    /// The revocation mark, if the region revoked this site.
    pub fn revocation(&self) -> Result<Option<Revocation>, CredentialsError> {
        self.load_json(REVOKED)
    }

    /// Records that the region revoked this site, so the link stays off across restarts.
    pub fn mark_revoked(&self, revocation: &Revocation) -> Result<(), CredentialsError> {
        self.save_json(REVOKED, revocation)
    }

    fn load_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, CredentialsError> {
        let path = self.file(name);
        let Some(text) = read_optional(&path)? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| CredentialsError::Malformed {
                path,
                reason: e.to_string(),
            })
    }

    fn save_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), CredentialsError> {
        self.ensure_dir()?;
        let mut json = serde_json::to_string_pretty(value).unwrap_or_default();
        json.push('\n');
        write_atomic(&self.file(name), json.as_bytes(), 0o644)
    }
}

/// Reads the join token; `None` when the file does not exist. Surrounding whitespace is not part of
/// the token (provisioning ends the file with a newline; an operator's editor may too).
pub fn read_token(path: &Path) -> Result<Option<Secret>, CredentialsError> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    let token = text.trim();
    if token.is_empty() {
        return Err(CredentialsError::Malformed {
            path: path.to_owned(),
            reason: "the join token file is empty".into(),
        });
    }
    Ok(Some(Secret::new(token.to_owned())))
}

/// Deletes the used join token; a token that is already gone is fine.
pub fn remove_token(path: &Path) -> Result<(), CredentialsError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(CredentialsError::Io {
            what: "remove",
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, CredentialsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CredentialsError::Io {
            what: "read",
            path: path.to_owned(),
            source: e,
        }),
    }
}

fn read_required(path: &Path) -> Result<String, CredentialsError> {
    std::fs::read_to_string(path).map_err(|source| CredentialsError::Io {
        what: "read",
        path: path.to_owned(),
        source,
    })
}

fn sync_dir(dir: &Path) -> Result<(), CredentialsError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| CredentialsError::Io {
            what: "sync",
            path: dir.to_owned(),
            source,
        })
}

/// Temporary name, exact mode, fsync, rename, fsync the directory: the file is old or new, never torn.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CredentialsError> {
    let io_err = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| CredentialsError::Io { what, path, source }
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("remove", &tmp)(e)),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    // The umask may have cleared bits `mode` asks for.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all())
        .map_err(io_err("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("rename", &tmp))?;
    sync_dir(dir)
}
