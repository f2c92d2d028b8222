//! `scs-edge-region` under test: a real process with its own state directory, database and port; a
//! simulated node that speaks the node protocol with its own key and certificate (for the bad-input
//! cases an agent would never produce, and for load); and a TCP relay that can cut a node off.

use crate::{free_port, lab, scratch_dir};
use rcgen::{CertificateParams, KeyPair};
use scs_edge_proto::{
    DesiredState, Enrollment, ErrorBody, JoinRequest, PROTOCOL_HEADER, PROTOCOL_VERSION, Report,
    ReportBatch, paths,
};
use std::io::Read;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Knobs the tests turn.
#[derive(Debug, Clone, Default)]
pub struct RegionOptions {
    /// `region.database_url`; empty = SQLite in the state directory.
    pub database_url: String,
    /// `reports.expected_interval_secs` (default 1 here, so staleness and outages show quickly).
    pub expected_interval_secs: u32,
    /// Extra TOML appended to the config (`[oidc]`, `[dashboard]`, …).
    pub extra: String,
    /// `RUST_LOG` for the region (default: debug for its own targets).
    pub log_filter: String,
    /// Names and addresses in its certificate beside 127.0.0.1 and localhost (`10.0.2.2` for
    /// nodes in QEMU, which reach the host's loopback there).
    pub extra_names: Vec<String>,
}

/// A region process in a scratch directory (the lab crate's [`lab::RegionProcess`], with the test
/// conveniences: panics instead of errors, an operator HTTPS client, the site as JSON).
pub struct RegionProcess {
    inner: lab::RegionProcess,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for RegionProcess {
    type Target = lab::RegionProcess;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl std::ops::DerefMut for RegionProcess {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl RegionProcess {
    /// Writes a config, runs `init`, starts `serve` and waits until it listens.
    pub fn start(label: &str, options: RegionOptions) -> Self {
        let dir = scratch_dir(label);
        let mut lab_options = lab::RegionOptions::new(dir.path().to_path_buf(), free_port());
        lab_options.database_url = options.database_url;
        lab_options.expected_interval_secs = if options.expected_interval_secs == 0 {
            1
        } else {
            options.expected_interval_secs
        };
        lab_options.extra = options.extra;
        lab_options.names.extend(options.extra_names);
        lab_options.log_filter = if options.log_filter.is_empty() {
            "info,scs_edge_region=debug".into()
        } else {
            options.log_filter
        };
        let inner =
            lab::RegionProcess::start(lab_options).unwrap_or_else(|e| panic!("start region: {e}"));
        Self { inner, _dir: dir }
    }

    /// Starts `serve` again after [`lab::RegionProcess::stop`] or `kill9`.
    pub fn spawn(&mut self) {
        self.inner
            .spawn()
            .unwrap_or_else(|e| panic!("restart region: {e}"));
    }

    /// The region CA certificate (PEM).
    pub fn ca_pem(&self) -> String {
        self.inner.ca_pem().expect("region CA")
    }

    /// Runs the CLI and returns stdout, failing the test on a non-zero exit.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        self.inner.cli_ok(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `site add` + `token create`; returns the token.
    pub fn add_site_with_token(&self, site: &str) -> String {
        self.inner
            .join_token(site)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// An HTTPS client trusting the region CA, without a client certificate (operators, browsers).
    pub fn operator_client(&self) -> reqwest::blocking::Client {
        client(&self.ca_pem(), None)
    }

    /// GET an operator API path (loopback access, or with a bearer token).
    pub fn api_get(&self, path: &str, bearer: Option<&str>) -> (u16, serde_json::Value) {
        let mut request = self.operator_client().get(format!("{}{path}", self.url()));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().expect("operator API");
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(serde_json::Value::Null))
    }

    /// Sends `body` to an operator API path (loopback access): what the region answered.
    pub fn api_send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> Answer {
        let response = self
            .operator_client()
            .request(method, format!("{}{path}", self.url()))
            .json(body)
            .send()
            .expect("operator API");
        answer(response)
    }

    /// Adds `site` with `labels` and creates a join token for it over the operator API (one
    /// request each, where the CLI would start two processes); returns the token.
    pub fn add_labelled_site_with_token(&self, site: &str, labels: &[(&str, &str)]) -> String {
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), serde_json::Value::from(*value)))
            .collect();
        let added = self.api_send(
            reqwest::Method::POST,
            "/api/v1/sites",
            &serde_json::json!({ "name": site, "labels": labels }),
        );
        assert_eq!(added.status, 201, "add {site}: {:?}", added.json);
        let token = self.api_send(
            reqwest::Method::POST,
            &format!("/api/v1/sites/{site}/tokens"),
            &serde_json::json!({}),
        );
        assert_eq!(token.status, 201, "token for {site}: {:?}", token.json);
        token.json["token"].as_str().expect("token").to_owned()
    }

    /// The site as the operator API shows it (`{"site": …, "history": …, "outages": …}`).
    pub fn site_json(&self, site: &str) -> serde_json::Value {
        let (status, body) = self.api_get(&format!("/api/v1/sites/{site}"), None);
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// TLS towards the region: trusting only its CA, optionally presenting a node certificate (PEM cert +
/// key). One builder for the blocking test client and the benchmark's load generator.
pub fn tls_config(ca_pem: &str, identity: Option<(&str, &str)>) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots);
    match identity {
        Some((cert_pem, key_pem)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                    .map(|c| c.expect("cert PEM"))
                    .collect();
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    }
}

/// A blocking HTTPS client trusting `ca_pem`, optionally with a client certificate (PEM cert + key).
pub fn client(ca_pem: &str, identity: Option<(&str, &str)>) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .use_preconfigured_tls(tls_config(ca_pem, identity))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// An answer from the region: status and body.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body as JSON (Null when not JSON).
    pub json: serde_json::Value,
}

impl Answer {
    /// The error code of a proto error body.
    pub fn code(&self) -> String {
        serde_json::from_value::<ErrorBody>(self.json.clone())
            .map(|b| {
                serde_json::to_value(b.error.code)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }
}

fn answer(response: reqwest::blocking::Response) -> Answer {
    let status = response.status().as_u16();
    let mut text = String::new();
    let _ = response.take(16 << 20).read_to_string(&mut text);
    Answer {
        status,
        json: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    }
}

/// A node speaking the node protocol directly: its own key, CSR and certificate.
pub struct SimulatedNode {
    /// The region's base URL.
    pub url: String,
    /// The site it joined as.
    pub site: String,
    /// Its certificate (PEM).
    pub cert_pem: String,
    /// Its key (PEM).
    pub key_pem: String,
    ca_pem: String,
    client: reqwest::blocking::Client,
}

/// A fresh key and a CSR for it (what a node makes before joining or renewing).
pub fn key_and_csr() -> (KeyPair, String) {
    let key = KeyPair::generate().expect("key");
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem");
    (key, csr)
}

/// POSTs a join; `Ok` with the enrollment on 201.
pub fn join(
    url: &str,
    ca_pem: &str,
    site: &str,
    token: &str,
    csr_pem: &str,
) -> Result<Enrollment, Answer> {
    let request = JoinRequest {
        site: site.into(),
        token: token.into(),
        csr_pem: csr_pem.into(),
        agent_version: "sim".into(),
    };
    let response = client(ca_pem, None)
        .post(format!("{url}{}", paths::JOIN))
        .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
        .json(&request)
        .send()
        .expect("join request");
    if response.status().as_u16() == 201 {
        Ok(response.json().expect("enrollment"))
    } else {
        Err(answer(response))
    }
}

impl SimulatedNode {
    /// Joins `site` with `token`; panics with the region's answer when refused.
    pub fn join(region: &RegionProcess, site: &str, token: &str) -> Self {
        let (key, csr) = key_and_csr();
        let enrollment = join(&region.url(), &region.ca_pem(), site, token, &csr)
            .unwrap_or_else(|a| panic!("join refused: {} {}", a.status, a.json));
        Self::from_parts(
            &region.url(),
            &region.ca_pem(),
            site,
            enrollment.certificate_pem,
            key.serialize_pem(),
        )
    }

    /// A node with a given certificate and key (e.g. another site's, for the refusal tests).
    pub fn from_parts(
        url: &str,
        ca_pem: &str,
        site: &str,
        cert_pem: String,
        key_pem: String,
    ) -> Self {
        let client = client(ca_pem, Some((&cert_pem, &key_pem)));
        Self {
            url: url.into(),
            site: site.into(),
            cert_pem,
            key_pem,
            ca_pem: ca_pem.into(),
            client,
        }
    }

    /// The same credentials, talking about another site's path.
    #[must_use]
    pub fn posing_as(&self, site: &str) -> Self {
        Self::from_parts(
            &self.url,
            &self.ca_pem,
            site,
            self.cert_pem.clone(),
            self.key_pem.clone(),
        )
    }

    /// POSTs reports.
    pub fn send(&self, reports: Vec<Report>) -> Answer {
        self.post_raw(
            &paths::reports(&self.site),
            serde_json::to_vec(&ReportBatch { reports }).expect("json"),
        )
    }

    /// POSTs raw bytes to a path (malformed and oversized bodies).
    pub fn post_raw(&self, path: &str, body: Vec<u8>) -> Answer {
        let response = self
            .client
            .post(format!("{}{path}", self.url))
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("POST");
        answer(response)
    }

    /// GETs the desired state.
    pub fn desired(&self) -> Result<DesiredState, Answer> {
        let response = self
            .client
            .get(format!("{}{}", self.url, paths::desired(&self.site)))
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
            .send()
            .expect("GET desired");
        if response.status().is_success() {
            Ok(response.json().expect("desired"))
        } else {
            Err(answer(response))
        }
    }
}

/// A TCP relay between a node and the region that the test can cut and restore: the link to the
/// centre failing while both ends keep running.
pub struct TcpRelay {
    /// The port nodes connect to on 127.0.0.1.
    pub port: u16,
    cut: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    /// Bytes relayed from the region to nodes: what a download cost on the link.
    down: Arc<std::sync::atomic::AtomicU64>,
}

impl TcpRelay {
    /// Relays 127.0.0.1:<new port> to 127.0.0.1:`upstream`.
    pub fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let down = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (cut2, conns2, down2) = (cut.clone(), connections.clone(), down.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                if cut2.load(Ordering::SeqCst) {
                    let _ = inbound.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    let _ = inbound.shutdown(Shutdown::Both);
                    continue;
                };
                if let (Ok(a), Ok(b)) = (inbound.try_clone(), outbound.try_clone()) {
                    conns2.lock().expect("conns").extend([a, b]);
                }
                pipe(
                    inbound.try_clone().expect("clone"),
                    outbound.try_clone().expect("clone"),
                    None,
                );
                pipe(outbound, inbound, Some(down2.clone()));
            }
        });
        Self {
            port,
            cut,
            connections,
            down,
        }
    }

    /// Bytes relayed from the region towards nodes so far.
    pub fn bytes_down(&self) -> u64 {
        self.down.load(Ordering::SeqCst)
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for conn in self.connections.lock().expect("conns").drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either closes, counting into `counted`.
fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    counted: Option<Arc<std::sync::atomic::AtomicU64>>,
) {
    std::thread::spawn(move || {
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let read = match std::io::Read::read(&mut from, &mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            if std::io::Write::write_all(&mut to, &buffer[..read]).is_err() {
                break;
            }
            if let Some(counted) = &counted {
                counted.fetch_add(read as u64, Ordering::SeqCst);
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
