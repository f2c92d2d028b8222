//! The load generator's side of a simulated fleet, shared by the region parts (`region`, `rollout`,
//! `downloads`): sites enrolled the way a node joins, each holding one raw mTLS connection of its
//! own, and the region process's CPU and RSS read from `/proc`.
//!
//! The connection is a few lines of HTTP/1.1 rather than an HTTP client: a generator holding 10,000
//! sites cannot afford a pool and a client object per site, and the download benchmark needs the
//! body as a stream it hashes, not a buffer.

use scs_edge_proto::{JoinRequest, PROTOCOL_HEADER, PROTOCOL_VERSION, paths};
use scs_edge_tests::region::{RegionOptions, RegionProcess, key_and_csr, tls_config};
use scs_edge_tests::release_desk::Desk;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Sites enrolled at once: enough to keep the region busy, few enough not to measure the queue.
const ENROLL_CONCURRENCY: usize = 32;

/// 10,000 connections need more descriptors than the default soft limit.
pub(crate) fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: getrlimit/setrlimit write/read the struct we pass; no other memory is involved.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max.max(65_536);
            limit.rlim_max = limit.rlim_max.max(65_536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit);
        }
    }
}

/// The generator's runtime: two workers, as the machine the region shares has two cores.
pub(crate) fn load_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A region trusting `desk`'s releases, with `desk`'s repository published through the region's
/// CLI (`version` among it), as an operator does.
pub(crate) fn region_with_releases(
    label: &str,
    options: RegionOptions,
    desk: &Desk,
    version: &str,
) -> RegionProcess {
    let region = RegionProcess::start(
        label,
        RegionOptions {
            extra: format!("{}\n{}", desk.region_config(), options.extra),
            ..options
        },
    );
    let published = region.cli_ok(&["release", "publish", &desk.repository_arg()]);
    assert!(
        published.contains(&format!("published {version}")),
        "{published}"
    );
    region
}

/// One TLS connection speaking just enough HTTP/1.1 for the node protocol.
pub(crate) struct Connection {
    stream: BufReader<TlsStream<TcpStream>>,
}

impl Connection {
    pub(crate) async fn open(
        port: u16,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<Self> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let tls = TlsConnector::from(config).connect(name, tcp).await?;
        Ok(Self {
            stream: BufReader::new(tls),
        })
    }

    /// Sends one request and reads the whole answer: status and body.
    pub(crate) async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let (status, length) = self.exchange(method, path, body).await?;
        let mut answer = vec![0; length];
        self.stream.read_exact(&mut answer).await?;
        Ok((status, answer))
    }

    /// Sends one request and reads the answer's head; returns the status and the body's length,
    /// the body left to read from [`Self::body`].
    pub(crate) async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, usize)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n{PROTOCOL_HEADER}: {PROTOCOL_VERSION}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let writer = self.stream.get_mut();
        writer.write_all(head.as_bytes()).await?;
        writer.write_all(body).await?;
        writer.flush().await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad status line {line:?}"),
                )
            })?;
        let mut length = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        Ok((status, length))
    }

    /// The body of the answer [`Self::exchange`] read the head of, `length` bytes of it.
    pub(crate) fn body(&mut self, length: usize) -> impl AsyncRead + Unpin + '_ {
        (&mut self.stream).take(length as u64)
    }
}

pub(crate) fn client_config(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Arc<rustls::ClientConfig> {
    Arc::new(tls_config(ca_pem, identity))
}

/// A site the region knows, with the credentials it joined with.
pub(crate) struct Enrolled {
    pub(crate) site: String,
    pub(crate) config: Arc<rustls::ClientConfig>,
    /// Its certificate and key (PEM), for a connection to a server other than the region.
    pub(crate) identity: (String, String),
}

/// Adds, tokens and joins one site over one operator connection.
async fn enroll(conn: &mut Connection, index: usize, ca_pem: &str) -> Enrolled {
    let site = format!("bench-{index:05}");
    let (status, body) = conn
        .request(
            "POST",
            "/api/v1/sites",
            format!("{{\"name\":\"{site}\"}}").as_bytes(),
        )
        .await
        .expect("add site");
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let (status, body) = conn
        .request("POST", &format!("/api/v1/sites/{site}/tokens"), b"{}")
        .await
        .expect("token");
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let token: serde_json::Value = serde_json::from_slice(&body).expect("token json");
    let (key, csr) = key_and_csr();
    let join = JoinRequest {
        site: site.clone(),
        token: token["token"].as_str().expect("token").to_owned(),
        csr_pem: csr,
        agent_version: "bench".into(),
    };
    let (status, body) = conn
        .request(
            "POST",
            paths::JOIN,
            &serde_json::to_vec(&join).expect("json"),
        )
        .await
        .expect("join");
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let enrollment: scs_edge_proto::Enrollment = serde_json::from_slice(&body).expect("enrollment");
    let key_pem = key.serialize_pem();
    let config = client_config(ca_pem, Some((&enrollment.certificate_pem, &key_pem)));
    Enrolled {
        site,
        config,
        identity: (enrollment.certificate_pem, key_pem),
    }
}

/// Enrols `count` sites (`bench-00000` on) over a few operator connections; returns them in
/// order and how long it took.
pub(crate) async fn enroll_all(region: &RegionProcess, count: usize) -> (Vec<Enrolled>, f64) {
    let ca_pem = region.ca_pem();
    let operator = client_config(&ca_pem, None);
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..ENROLL_CONCURRENCY.min(count) {
        let (next, operator, ca_pem, port) = (
            next.clone(),
            operator.clone(),
            ca_pem.clone(),
            region.port(),
        );
        workers.push(tokio::spawn(async move {
            let mut conn = Connection::open(port, operator)
                .await
                .expect("operator connection");
            let mut mine = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return mine;
                }
                mine.push((index, enroll(&mut conn, index, &ca_pem).await));
            }
        }));
    }
    let mut sites = Vec::with_capacity(count);
    for worker in workers {
        sites.extend(worker.await.expect("enrol worker"));
    }
    sites.sort_by_key(|(index, _)| *index);
    (
        sites.into_iter().map(|(_, site)| site).collect(),
        started.elapsed().as_secs_f64(),
    )
}

/// Opens every site's own connection to the region, a few hundred handshakes at a time.
pub(crate) async fn connect_all(port: u16, sites: &[Enrolled]) -> Vec<(String, Connection)> {
    let mut connections = Vec::with_capacity(sites.len());
    for chunk in sites.chunks(256) {
        let opened = join_spawned(chunk.iter().map(|s| {
            let config = s.config.clone();
            async move {
                Connection::open(port, config)
                    .await
                    .expect("site connection")
            }
        }))
        .await;
        connections.extend(chunk.iter().map(|s| s.site.clone()).zip(opened));
    }
    connections
}

/// Runs the futures as tasks (so they use both cores) and returns their outputs in order.
pub(crate) async fn join_spawned<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("task"));
    }
    out
}

/// The region's CPU time from one reading to another, as a share of one core.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuReading {
    ticks: u64,
    at: Instant,
}

impl CpuReading {
    pub(crate) fn now(pid: u32) -> Self {
        Self {
            ticks: cpu_ticks(pid),
            at: Instant::now(),
        }
    }

    /// Percent of one core `pid` used since this reading.
    pub(crate) fn percent_since(self, pid: u32) -> f64 {
        #[allow(unsafe_code)]
        // SAFETY: sysconf reads a configuration value; no memory is involved.
        let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (cpu_ticks(pid) - self.ticks) as f64 / ticks_per_sec / self.at.elapsed().as_secs_f64()
            * 100.0
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command: utime is the 14th, stime the 15th field overall.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
}

/// `VmRSS` of `pid`, MiB.
pub(crate) fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}
