//! Region benchmark (part `region` of `scs-edge-bench`): 10,000 simulated sites heartbeating every
//! 10 s against one `scs-edge-region` process on this machine, once on SQLite and once on PostgreSQL.
//!
//! Every simulated site is a real node to the region: it was added through the operator API, joined
//! with its own one-time token and CSR, and holds its own mTLS connection with its own certificate.
//! Each sends a realistic report (four components, capacity, counts) every 10 s, at a random phase,
//! for the measurement window; latency is request write → full response read. The baseline, in the
//! same run over the very same 10,000 connections and schedule, is `GET /healthz`: TLS, HTTP and the
//! region's router without the fleet logic and the database — the floor the heartbeat cost sits on.
//! Region CPU comes from `/proc/<pid>/stat`, RSS from `/proc/<pid>/status`. The load generator runs on
//! the same two cores and competes with the region for them.

use scs_edge_proto::{
    Capacity, ComponentHealth, HealthState, JoinRequest, PROTOCOL_HEADER, PROTOCOL_VERSION, Report,
    ReportBatch, ResourceCounts, Versions, paths,
};
use scs_edge_tests::bench::{Record, percentile};
use scs_edge_tests::postgres;
use scs_edge_tests::region::{RegionOptions, RegionProcess, key_and_csr, tls_config};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const SITES: usize = 10_000;
const INTERVAL: Duration = Duration::from_secs(10);
const WARMUP: Duration = Duration::from_secs(20);
const WINDOW: Duration = Duration::from_mins(1);
const ENROLL_CONCURRENCY: usize = 32;

/// Runs both engines and appends their records.
pub(crate) fn run(records: &mut Vec<Record>) {
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = postgres::PostgresServer::shared();
    let database = server.create_database("bench_region");
    for (engine, url) in [
        ("SQLite", String::new()),
        ("PostgreSQL", database.url.clone()),
    ] {
        let region = RegionProcess::start(
            &format!("bench-region-{}", engine.to_lowercase()),
            RegionOptions {
                database_url: url,
                expected_interval_secs: 10,
                log_filter: "warn".into(),
                ..RegionOptions::default()
            },
        );
        let result = runtime.block_on(measure(&region));
        report(engine, &result, records);
    }
}

struct Phase {
    latencies_ms: Vec<f64>,
    errors: usize,
    cpu_percent: f64,
}

struct Measured {
    heartbeat: Phase,
    healthz: Phase,
    enroll_secs: f64,
    rss_idle_mib: f64,
    rss_loaded_mib: f64,
}

fn report(engine: &str, m: &Measured, records: &mut Vec<Record>) {
    let mut hb = m.heartbeat.latencies_ms.clone();
    hb.sort_by(f64::total_cmp);
    let mut floor = m.healthz.latencies_ms.clone();
    floor.sort_by(f64::total_cmp);
    let base = format!("{SITES} sites every {} s, {engine}", INTERVAL.as_secs());
    println!(
        "region {engine}: {} heartbeats ({} errors), {} healthz ({} errors), enrolment {:.1} s",
        hb.len(),
        m.heartbeat.errors,
        floor.len(),
        m.healthz.errors,
        m.enroll_secs
    );
    records.push(Record::compared(
        &format!("region heartbeat p50 ({base})"),
        percentile(&hb, 50.0),
        "ms",
        percentile(&floor, 50.0),
        "GET /healthz on the same connections",
        "p99 < 50 ms",
    ));
    records.push(Record::compared(
        &format!("region heartbeat p99 ({base})"),
        percentile(&hb, 99.0),
        "ms",
        percentile(&floor, 99.0),
        "GET /healthz on the same connections",
        "< 50 ms",
    ));
    records.push(Record::compared(
        &format!("region CPU under heartbeat load ({base})"),
        m.heartbeat.cpu_percent,
        "% of one core",
        m.healthz.cpu_percent,
        "the same connections serving GET /healthz",
        "fits 2 cores",
    ));
    records.push(Record::compared(
        &format!("region RSS with 10,000 connected sites ({engine})"),
        m.rss_loaded_mib,
        "MiB",
        m.rss_idle_mib,
        "the region idle after enrolment, before the connections",
        "report",
    ));
    records.push(Record::compared(
        &format!("region heartbeat errors ({base})"),
        m.heartbeat.errors as f64,
        "requests",
        hb.len() as f64,
        "heartbeats answered 200",
        "0",
    ));
    records.push(Record::compared(
        &format!("enrol {SITES} sites: add + token + join ({engine})"),
        m.enroll_secs,
        "s",
        SITES as f64,
        "sites",
        "report",
    ));
}

fn raise_fd_limit() {
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

/// A tiny HTTP/1.1 client over one TLS connection: a load generator holding 10,000 of them cannot
/// afford a connection pool and a client object per site.
struct Connection {
    stream: BufReader<TlsStream<TcpStream>>,
}

impl Connection {
    async fn open(port: u16, config: Arc<rustls::ClientConfig>) -> std::io::Result<Self> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let tls = TlsConnector::from(config).connect(name, tcp).await?;
        Ok(Self {
            stream: BufReader::new(tls),
        })
    }

    /// Sends one request and reads the whole answer; returns the status.
    async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
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
        let mut answer = vec![0; length];
        self.stream.read_exact(&mut answer).await?;
        Ok((status, answer))
    }
}

fn client_config(ca_pem: &str, identity: Option<(&str, &str)>) -> Arc<rustls::ClientConfig> {
    Arc::new(tls_config(ca_pem, identity))
}

struct Enrolled {
    site: String,
    config: Arc<rustls::ClientConfig>,
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
    let config = client_config(
        ca_pem,
        Some((&enrollment.certificate_pem, &key.serialize_pem())),
    );
    Enrolled { site, config }
}

fn heartbeat(seq: u64) -> Vec<u8> {
    let report = Report {
        seq,
        sent_at: jiff::Timestamp::now(),
        versions: Versions {
            agent: "0.1.0".into(),
            os: "2026.11.22".into(),
            k3s: None,
        },
        health: ["libvirt", "ovn", "k3s", "agent"]
            .into_iter()
            .map(|c| ComponentHealth {
                component: c.into(),
                state: if c == "k3s" {
                    HealthState::Absent
                } else {
                    HealthState::Healthy
                },
                detail: None,
            })
            .collect(),
        capacity: Capacity {
            vcpus: 16,
            memory_mib: 65_536,
            disk_free_gib: 800,
        },
        resources: ResourceCounts {
            servers: 12,
            networks: 3,
            ports: 15,
            images: 4,
            projects: 2,
        },
        update: None,
    };
    serde_json::to_vec(&ReportBatch {
        reports: vec![report],
    })
    .expect("json")
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

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

async fn measure(region: &RegionProcess) -> Measured {
    let ca_pem = region.ca_pem();
    let pid = region.pid().expect("region pid");
    let operator = client_config(&ca_pem, None);

    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..ENROLL_CONCURRENCY {
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
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if index >= SITES {
                    return mine;
                }
                mine.push(enroll(&mut conn, index, &ca_pem).await);
            }
        }));
    }
    let mut sites = Vec::with_capacity(SITES);
    for worker in workers {
        sites.extend(worker.await.expect("enrol worker"));
    }
    let enroll_secs = started.elapsed().as_secs_f64();
    let rss_idle_mib = rss_mib(pid);

    // Open every site's connection, then run the heartbeat phase and the healthz phase on them.
    let mut connections = Vec::with_capacity(SITES);
    for chunk in sites.chunks(256) {
        let opened = futures_join(chunk.iter().map(|s| {
            let (config, port) = (s.config.clone(), region.port());
            async move {
                Connection::open(port, config)
                    .await
                    .expect("site connection")
            }
        }))
        .await;
        connections.extend(chunk.iter().map(|s| s.site.clone()).zip(opened));
    }
    let (heartbeat, connections) = phase(connections, pid, true).await;
    let rss_loaded_mib = rss_mib(pid);
    let (healthz, _) = phase(connections, pid, false).await;
    Measured {
        heartbeat,
        healthz,
        enroll_secs,
        rss_idle_mib,
        rss_loaded_mib,
    }
}

async fn futures_join<F: std::future::Future + Send + 'static>(
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

/// One phase: every connection sends on its own 10 s schedule at a random phase; latencies are
/// recorded after the warm-up, for the window. Returns the connections for the next phase.
async fn phase(
    connections: Vec<(String, Connection)>,
    pid: u32,
    heartbeats: bool,
) -> (Phase, Vec<(String, Connection)>) {
    let begin = tokio::time::Instant::now();
    let measure_from = begin + WARMUP;
    let measure_until = measure_from + WINDOW;
    let cpu_at = Arc::new(std::sync::Mutex::new(None::<(u64, Instant)>));
    let mut tasks = Vec::with_capacity(connections.len());
    for (site, mut conn) in connections {
        let cpu_at = cpu_at.clone();
        tasks.push(tokio::spawn(async move {
            let offset = Duration::from_millis(rand::random::<u64>() % INTERVAL.as_millis() as u64);
            let mut tick = tokio::time::interval_at(begin + offset, INTERVAL);
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut seq = 0;
            loop {
                let at = tick.tick().await;
                if at >= measure_until {
                    break;
                }
                if at >= measure_from {
                    let mut first = cpu_at.lock().expect("cpu");
                    if first.is_none() {
                        *first = Some((cpu_ticks(pid), Instant::now()));
                    }
                }
                let started = Instant::now();
                let answer = if heartbeats {
                    seq += 1;
                    conn.request("POST", &paths::reports(&site), &heartbeat(seq))
                        .await
                } else {
                    conn.request("GET", "/healthz", b"").await
                };
                let ok = matches!(answer, Ok((200, _)));
                if at >= measure_from {
                    if ok {
                        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        errors += 1;
                    }
                }
            }
            (site, conn, latencies, errors)
        }));
    }
    let mut latencies_ms = Vec::new();
    let mut errors = 0;
    let mut back = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (site, conn, l, e) = task.await.expect("site task");
        latencies_ms.extend(l);
        errors += e;
        back.push((site, conn));
    }
    #[allow(unsafe_code)]
    // SAFETY: sysconf reads a configuration value; no memory is involved.
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_percent = cpu_at.lock().expect("cpu").map_or(0.0, |(ticks, at)| {
        (cpu_ticks(pid) - ticks) as f64 / ticks_per_sec / at.elapsed().as_secs_f64() * 100.0
    });
    (
        Phase {
            latencies_ms,
            errors,
            cpu_percent,
        },
        back,
    )
}
