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

use crate::fleet_load::{
    Connection, CpuReading, connect_all, enroll_all, load_runtime, raise_fd_limit, rss_mib,
};
use scs_edge_proto::{
    Capacity, ComponentHealth, HealthState, Report, ReportBatch, ResourceCounts, Versions, paths,
};
use scs_edge_tests::bench::{Record, percentile};
use scs_edge_tests::postgres;
use scs_edge_tests::region::{RegionOptions, RegionProcess};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SITES: usize = 10_000;
const INTERVAL: Duration = Duration::from_secs(10);
const WARMUP: Duration = Duration::from_secs(20);
const WINDOW: Duration = Duration::from_mins(1);

/// Runs both engines and appends their records.
pub(crate) fn run(records: &mut Vec<Record>) {
    raise_fd_limit();
    let runtime = load_runtime();
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

async fn measure(region: &RegionProcess) -> Measured {
    let pid = region.pid().expect("region pid");
    let (sites, enroll_secs) = enroll_all(region, SITES).await;
    let rss_idle_mib = rss_mib(pid);

    // Open every site's connection, then run the heartbeat phase and the healthz phase on them.
    let connections = connect_all(region.port(), &sites).await;
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
    let cpu_at = Arc::new(std::sync::Mutex::new(None::<CpuReading>));
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
                        *first = Some(CpuReading::now(pid));
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
    let cpu_percent = cpu_at
        .lock()
        .expect("cpu")
        .map_or(0.0, |reading| reading.percent_since(pid));
    (
        Phase {
            latencies_ms,
            errors,
            cpu_percent,
        },
        back,
    )
}
