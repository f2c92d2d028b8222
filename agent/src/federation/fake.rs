//! An in-memory region for the link's unit tests: a real CA that signs the node's CSRs (so the
//! credential checks run on real certificates), the region's report-sequence rules (duplicates
//! re-acknowledged, gaps refused with `expected_seq`), one-time tokens, revocation, desired state, and
//! scripted failures. Every call is recorded, with whether it carried the join token.

use super::credentials::Credentials;
use super::transport::{RegionTransport, TransportError};
use jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use scs_edge_proto::{
    DesiredState, Enrollment, ErrorCode, JoinRequest, RenewRequest, Report, ReportAck, ReportBatch,
};
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A certificate authority for tests.
pub(super) struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub(super) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("ca key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("ca"),
        }
    }

    pub(super) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Signs a node CSR as the region does (client certificate).
    pub(super) fn sign_csr(&self, csr_pem: &str) -> Result<String, String> {
        let mut csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| e.to_string())?;
        csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        csr.params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        Ok(csr
            .signed_by(&self.issuer)
            .map_err(|e| e.to_string())?
            .pem())
    }

    /// A server certificate for `names` (DNS names or IP addresses) and its key, both PEM.
    pub(super) fn server(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &self.issuer).expect("server cert");
        (cert.pem(), key.serialize_pem())
    }
}

/// One request the fake region received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Call {
    FetchCa,
    Join { site: String, token: String },
    Renew { certificate_pem: String },
    Reports { seqs: Vec<u64> },
    Desired,
}

/// The region's mutable state.
pub(super) struct Region {
    /// The CA `fetch_ca` serves (the real one unless a test swaps in an impostor).
    pub served_ca_pem: String,
    /// The CA enrollments name.
    pub enrollment_ca_pem: String,
    /// The token that joins (once).
    pub token: String,
    pub token_used: bool,
    /// Times the next enrollment carries.
    pub not_after: Timestamp,
    pub renew_after: Timestamp,
    /// Certificates the region issued (only those authenticate).
    pub issued: Vec<String>,
    /// Highest `seq` stored, and the reports stored (each once).
    pub stored_through: u64,
    pub stored: Vec<Report>,
    pub desired: DesiredState,
    pub revoked: bool,
    /// Errors the next calls return instead of answering, in order.
    pub failures: VecDeque<TransportError>,
    pub calls: Vec<Call>,
}

/// The fake region.
pub(super) struct FakeRegion {
    pub ca: TestCa,
    state: Mutex<Region>,
}

pub(super) const SITE: &str = "factory-7";
pub(super) const TOKEN: &str = "s3cret-join-token";

impl FakeRegion {
    pub(super) fn new(now: Timestamp) -> Self {
        let ca = TestCa::new("fake region CA");
        let pem = ca.pem();
        Self {
            state: Mutex::new(Region {
                served_ca_pem: pem.clone(),
                enrollment_ca_pem: pem,
                token: TOKEN.into(),
                token_used: false,
                not_after: now + SignedDuration::from_hours(24 * 30),
                renew_after: now + SignedDuration::from_hours(24 * 20),
                issued: Vec::new(),
                stored_through: 0,
                stored: Vec::new(),
                desired: DesiredState::default(),
                revoked: false,
                failures: VecDeque::new(),
                calls: Vec::new(),
            }),
            ca,
        }
    }

    pub(super) fn state(&self) -> MutexGuard<'_, Region> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    pub(super) fn stored_seqs(&self) -> Vec<u64> {
        self.state().stored.iter().map(|r| r.seq).collect()
    }

    fn refuse(what: &'static str, status: u16, code: ErrorCode, message: &str) -> TransportError {
        TransportError::Refused {
            what,
            status,
            code,
            message: message.into(),
            expected_seq: None,
        }
    }

    /// Records the call, then answers with a scripted failure if one is queued.
    fn enter(&self, call: Call) -> Result<MutexGuard<'_, Region>, TransportError> {
        let mut region = self.state();
        region.calls.push(call);
        match region.failures.pop_front() {
            Some(err) => Err(err),
            None => Ok(region),
        }
    }

    fn authenticate(
        region: &Region,
        credentials: &Credentials,
        what: &'static str,
    ) -> Result<(), TransportError> {
        if region.revoked {
            return Err(Self::refuse(
                what,
                403,
                ErrorCode::SiteRevoked,
                "site decommissioned",
            ));
        }
        if !region.issued.contains(&credentials.certificate_pem) {
            return Err(Self::refuse(
                what,
                401,
                ErrorCode::Unauthenticated,
                "unknown certificate",
            ));
        }
        Ok(())
    }

    fn enroll(&self, region: &mut Region, csr_pem: &str) -> Result<Enrollment, TransportError> {
        let certificate_pem = self
            .ca
            .sign_csr(csr_pem)
            .map_err(|e| Self::refuse("the csr", 400, ErrorCode::BadRequest, &e))?;
        region.issued.push(certificate_pem.clone());
        Ok(Enrollment {
            site: SITE.into(),
            certificate_pem,
            ca_pem: region.enrollment_ca_pem.clone(),
            not_after: region.not_after,
            renew_after: region.renew_after,
        })
    }
}

impl RegionTransport for FakeRegion {
    async fn fetch_ca(&self) -> Result<String, TransportError> {
        Ok(self.enter(Call::FetchCa)?.served_ca_pem.clone())
    }

    async fn join(
        &self,
        _ca_pem: &str,
        request: &JoinRequest,
    ) -> Result<Enrollment, TransportError> {
        let mut region = self.enter(Call::Join {
            site: request.site.clone(),
            token: request.token.clone(),
        })?;
        if request.token != region.token || region.token_used {
            return Err(Self::refuse(
                "the join",
                401,
                ErrorCode::InvalidJoinToken,
                "join token unknown, expired or used",
            ));
        }
        region.token_used = true;
        self.enroll(&mut region, &request.csr_pem)
    }

    async fn renew(
        &self,
        credentials: &Credentials,
        request: &RenewRequest,
    ) -> Result<Enrollment, TransportError> {
        let mut region = self.enter(Call::Renew {
            certificate_pem: credentials.certificate_pem.clone(),
        })?;
        Self::authenticate(&region, credentials, "the renewal")?;
        self.enroll(&mut region, &request.csr_pem)
    }

    async fn send_reports(
        &self,
        credentials: &Credentials,
        batch: &ReportBatch,
    ) -> Result<ReportAck, TransportError> {
        let mut region = self.enter(Call::Reports {
            seqs: batch.reports.iter().map(|r| r.seq).collect(),
        })?;
        Self::authenticate(&region, credentials, "the reports")?;
        let consecutive = batch.reports.windows(2).all(|w| w[1].seq == w[0].seq + 1);
        let Some(first) = batch.reports.first().map(|r| r.seq) else {
            return Err(Self::refuse(
                "the reports",
                400,
                ErrorCode::BadRequest,
                "empty batch",
            ));
        };
        if !consecutive || batch.reports.len() > scs_edge_proto::MAX_REPORTS_PER_BATCH {
            return Err(Self::refuse(
                "the reports",
                400,
                ErrorCode::BadRequest,
                "bad batch",
            ));
        }
        if first > region.stored_through + 1 {
            return Err(TransportError::Refused {
                what: "the reports",
                status: 409,
                code: ErrorCode::OutOfOrder,
                message: "gap in the report sequence".into(),
                expected_seq: Some(region.stored_through + 1),
            });
        }
        for report in &batch.reports {
            if report.seq > region.stored_through {
                region.stored_through = report.seq;
                region.stored.push(report.clone());
            }
        }
        Ok(ReportAck {
            acked_through: region.stored_through,
            desired_generation: region.desired.generation,
        })
    }

    async fn desired(&self, credentials: &Credentials) -> Result<DesiredState, TransportError> {
        let region = self.enter(Call::Desired)?;
        Self::authenticate(&region, credentials, "the desired state")?;
        Ok(region.desired.clone())
    }
}
