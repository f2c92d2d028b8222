//! The region's enrollment CA: the one key that decides which nodes belong to the fleet.
//!
//! It signs two kinds of certificate: the region's own TLS server certificate (so a node that pinned the
//! CA's fingerprint can verify the region with ordinary webpki rules) and short-lived node certificates
//! from the CSRs nodes send when they join or renew. A node certificate names its site in a URI SAN
//! (`urn:scs-edge:site:<name>`); the region reads the site from the verified certificate, never from
//! what the request claims. Nothing a CSR asks for (subject, extensions, CA flag) is copied: the region
//! takes only its public key.
//!
//! The key pair lives in the region's state directory (`ca.key`, mode 0600; `ca.crt`) and is created
//! once, on first start.

use jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use scs_edge_proto::SITE_URI_PREFIX;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The CA could not be created, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A CA file could not be read or written.
    #[error("CA file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The stored CA key or certificate does not parse.
    #[error("CA in {dir} is unusable: {reason}")]
    Corrupt {
        /// The state directory.
        dir: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A node's CSR is malformed, has a bad self-signature or asks for unsupported extensions.
    #[error("certificate signing request refused: {0}")]
    BadCsr(String),
    /// Signing failed (should not happen with a valid key).
    #[error("signing failed: {0}")]
    Signing(String),
}

/// A certificate the CA just issued.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// PEM of the certificate.
    pub pem: String,
    /// Serial number, lower-case hex without separators (the revocation check's key).
    pub serial: String,
    /// First valid instant.
    pub not_before: Timestamp,
    /// Last valid instant.
    pub not_after: Timestamp,
}

/// The region CA, loaded and ready to sign.
pub struct RegionCa {
    key: KeyPair,
    certificate_pem: String,
    certificate_der: Vec<u8>,
}

impl std::fmt::Debug for RegionCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionCa")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

const KEY_FILE: &str = "ca.key";
const CERT_FILE: &str = "ca.crt";
/// How long the CA itself is valid: long, because rotating the root means re-pinning every site.
const CA_LIFETIME: SignedDuration = SignedDuration::from_hours(24 * 365 * 20);
/// Certificates are back-dated by this much so a node whose clock runs slightly behind accepts them.
const CLOCK_SKEW: SignedDuration = SignedDuration::from_mins(5);

impl RegionCa {
    /// Loads the CA from `dir`, creating it (key first, 0600) when neither file exists. One file
    /// without the other is refused: that is a damaged state directory, and silently minting a new CA
    /// would orphan every enrolled site.
    pub fn load_or_create(dir: &Path, region_name: &str, now: Timestamp) -> Result<Self, CaError> {
        let key_path = dir.join(KEY_FILE);
        let cert_path = dir.join(CERT_FILE);
        match (key_path.exists(), cert_path.exists()) {
            (true, true) => Self::load(dir),
            (false, false) => {
                std::fs::create_dir_all(dir).map_err(|source| CaError::Io {
                    path: dir.to_owned(),
                    source,
                })?;
                let ca = Self::create(region_name, now)?;
                write_atomically(&key_path, ca.key.serialize_pem().as_bytes(), 0o600)?;
                write_atomically(&cert_path, ca.certificate_pem.as_bytes(), 0o644)?;
                Ok(ca)
            }
            _ => Err(CaError::Corrupt {
                dir: dir.to_owned(),
                reason: format!("only one of {KEY_FILE} and {CERT_FILE} exists"),
            }),
        }
    }

    /// Loads an existing CA from `dir`.
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| CaError::Io { path, source })
        };
        let corrupt = |reason: String| CaError::Corrupt {
            dir: dir.to_owned(),
            reason,
        };
        let key =
            KeyPair::from_pem(&read(KEY_FILE)?).map_err(|e| corrupt(format!("{KEY_FILE}: {e}")))?;
        let certificate_pem = read(CERT_FILE)?;
        let certificate_der = pem_to_der(&certificate_pem, "CERTIFICATE")
            .ok_or_else(|| corrupt(format!("{CERT_FILE}: no PEM certificate")))?;
        // Prove the pair belongs together before any node trusts a certificate signed with it.
        Issuer::from_ca_cert_der(&certificate_der.clone().into(), &key)
            .map_err(|e| corrupt(format!("{CERT_FILE}: {e}")))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&certificate_der)
            .map_err(|e| corrupt(format!("{CERT_FILE}: {e}")))?;
        if parsed.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
        {
            return Err(corrupt(format!(
                "{CERT_FILE} does not belong to {KEY_FILE}"
            )));
        }
        Ok(Self {
            key,
            certificate_pem,
            certificate_der,
        })
    }

    fn create(region_name: &str, now: Timestamp) -> Result<Self, CaError> {
        let key = KeyPair::generate().map_err(|e| CaError::Signing(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "SCS Edge");
        name.push(
            DnType::CommonName,
            format!("SCS Edge region CA {region_name}"),
        );
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = to_offset(now - CLOCK_SKEW);
        params.not_after = to_offset(now + CA_LIFETIME);
        params.serial_number = Some(random_serial());
        let certificate = params
            .self_signed(&key)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        Ok(Self {
            key,
            certificate_pem: certificate.pem(),
            certificate_der: certificate.der().to_vec(),
        })
    }

    /// The CA certificate (PEM): what nodes fetch and check against their pin.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The CA certificate (DER), for building rustls trust stores.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// `sha256:<hex>` of the CA certificate's DER: the pin an operator puts into a site's config.
    pub fn fingerprint(&self) -> String {
        fingerprint_of_der(&self.certificate_der)
    }

    /// Issues the region's TLS server certificate for the names (DNS names or IP addresses) nodes and
    /// operators use to reach it.
    pub fn issue_server_certificate(
        &self,
        names: &[String],
        now: Timestamp,
        lifetime: SignedDuration,
    ) -> Result<(IssuedCertificate, KeyPair), CaError> {
        let key = KeyPair::generate().map_err(|e| CaError::Signing(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().map_or("scs-edge-region", String::as_str),
        );
        params.distinguished_name = dn;
        for name in names {
            let san = match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    name.clone()
                        .try_into()
                        .map_err(|e| CaError::Signing(format!("name {name:?}: {e}")))?,
                ),
            };
            params.subject_alt_names.push(san);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let issued = self.sign(params, &key, now, lifetime)?;
        Ok((issued, key))
    }

    /// Signs a node's CSR for `site`. Only the CSR's public key is used (its self-signature is
    /// verified first); subject, SAN and usages are the region's.
    pub fn sign_node_csr(
        &self,
        csr_pem: &str,
        site: &str,
        now: Timestamp,
        lifetime: SignedDuration,
    ) -> Result<IssuedCertificate, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "SCS Edge site");
        dn.push(DnType::CommonName, site);
        params.distinguished_name = dn;
        let uri = format!("{SITE_URI_PREFIX}{site}");
        params.subject_alt_names = vec![SanType::URI(
            uri.try_into()
                .map_err(|e| CaError::Signing(format!("site URI: {e}")))?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(params, &csr.public_key, now, lifetime)
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        public_key: &impl rcgen::PublicKeyData,
        now: Timestamp,
        lifetime: SignedDuration,
    ) -> Result<IssuedCertificate, CaError> {
        let not_before = now - CLOCK_SKEW;
        let not_after = now + lifetime;
        params.not_before = to_offset(not_before);
        params.not_after = to_offset(not_after);
        let serial = random_serial();
        let serial_hex = to_hex(serial.as_ref());
        params.serial_number = Some(serial);
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_ca_cert_der(&self.certificate_der.clone().into(), &self.key)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        let certificate = params
            .signed_by(public_key, &issuer)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        Ok(IssuedCertificate {
            pem: certificate.pem(),
            serial: serial_hex,
            // The certificate stores whole seconds.
            not_before: Timestamp::from_second(not_before.as_second()).unwrap_or(not_before),
            not_after: Timestamp::from_second(not_after.as_second()).unwrap_or(not_after),
        })
    }
}

/// `sha256:<hex>` of a DER certificate — the pin format nodes are configured with.
pub fn fingerprint_of_der(der: &[u8]) -> String {
    format!("sha256:{}", to_hex(&Sha256::digest(der)))
}

/// Lower-case hex, the one spelling of serials and fingerprints the region stores and shows.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// 16 random bytes with the top bit cleared (a positive DER INTEGER, RFC 5280 §4.1.2.2).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // never a leading zero byte, so the hex spelling is stable
    SerialNumber::from_slice(&bytes)
}

fn to_offset(t: Timestamp) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t.as_second())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Decodes the first PEM block with `label`.
pub fn pem_to_der(pem: &str, label: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let body: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| CaError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests;
