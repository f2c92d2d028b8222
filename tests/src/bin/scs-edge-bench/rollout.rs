//! Rollout benchmark (part `rollout` of `scs-edge-bench`): what walking a release over 10,000 sites
//! costs the region that serves their heartbeats meanwhile, on SQLite and on PostgreSQL.
//!
//! The sites are the region part's (enrolled as nodes, one mTLS connection each, a heartbeat every
//! 10 s at a random phase) and follow their desired state as the agent does (`fleet_sim::Updater`):
//! an ack whose desired generation moved makes the site fetch its desired state, and a new target is
//! reported importing, staged, installed, (no heartbeat: the reboot), then running, one step per
//! heartbeat — nothing is downloaded. The release is a small one signed at a release desk and
//! published with the region's CLI, as an operator does.
//!
//! One stream of heartbeats runs throughout; each is counted in the phase it was sent in: the
//! baseline (no rollout) or the walk (from the rollout's creation to its completion). The walk is
//! compared with a floor of three heartbeat intervals a wave: the heartbeats that carry staged,
//! installed and running.

use crate::fleet_load::{
    Connection, CpuReading, client_config, connect_all, enroll_all, load_runtime, raise_fd_limit,
    region_with_releases,
};
use scs_edge_proto::{DesiredState, ReportAck, paths};
use scs_edge_tests::bench::{Record, percentile};
use scs_edge_tests::fleet_sim::Updater;
use scs_edge_tests::postgres;
use scs_edge_tests::region::{RegionOptions, RegionProcess};
use scs_edge_tests::release_desk::Desk;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// Sites, unless `SCS_EDGE_BENCH_ROLLOUT_SITES` says otherwise (a quicker run on a busy machine).
const SITES: usize = 10_000;
const INTERVAL: Duration = Duration::from_secs(10);
/// Every site heartbeats a few times (and reads its first desired state) before anything counts.
const WARMUP: Duration = Duration::from_secs(20);
const BASELINE: Duration = Duration::from_mins(1);
/// The region's default `[rollouts] tick_millis`, which this part leaves as it is.
const TICK: Duration = Duration::from_secs(5);
const WAVES: usize = 4;
/// The floor's heartbeats per wave: staged, installed and running must each reach the region on a
/// heartbeat of their own, whatever else a wave waits for (the offer's fetch, importing, the reboot's
/// silent interval and the driver's tick come on top, so the walk cannot reach it).
const HEARTBEATS_PER_UPDATE: u32 = 3;
/// Longest walk before the bench gives up and says where the rollout stood.
const WALK_LIMIT: Duration = Duration::from_mins(30);
const RUNNING: &str = "1.0.0";
const TARGET: &str = "1.1.0";
const ROLLOUT: &str = "bench-walk";

/// Which phase a heartbeat belongs to, by when it was sent.
const WARMING: u8 = 0;
const BASELINE_PHASE: u8 = 1;
const BETWEEN: u8 = 2;
const WALK: u8 = 3;
const DONE: u8 = 4;

pub(crate) fn sites() -> usize {
    std::env::var("SCS_EDGE_BENCH_ROLLOUT_SITES")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(SITES)
}

/// Runs both engines and appends their records.
pub(crate) fn run(records: &mut Vec<Record>) {
    raise_fd_limit();
    let sites = sites();
    let runtime = load_runtime();
    let desk = Desk::new(&runtime);
    desk.sign(&runtime, TARGET);
    let server = postgres::PostgresServer::shared();
    let database = server.create_database("bench_rollout");
    for (engine, url) in [
        ("SQLite", String::new()),
        ("PostgreSQL", database.url.clone()),
    ] {
        let region = region_with_releases(
            &format!("bench-rollout-{}", engine.to_lowercase()),
            RegionOptions {
                database_url: url,
                expected_interval_secs: 10,
                // INFO of the region's own targets: the driver logs ticks over 100 ms there.
                log_filter: "warn,scs_edge_region=info".into(),
                ..RegionOptions::default()
            },
            &desk,
            TARGET,
        );
        let measured = runtime.block_on(measure(&region, sites));
        measured.report(engine, sites, records);
    }
}

/// What one site's heartbeats saw, by phase.
#[derive(Default)]
struct Seen {
    baseline_ms: Vec<f64>,
    walk_ms: Vec<f64>,
    desired_ms: Vec<f64>,
    errors: usize,
    on_target: bool,
}

struct Measured {
    seen: Seen,
    baseline_cpu: f64,
    walk_cpu: f64,
    walk_secs: f64,
    longest_tick_ms: Option<f64>,
    slow_ticks: usize,
}

async fn measure(region: &RegionProcess, count: usize) -> Measured {
    let pid = region.pid().expect("region pid");
    let (sites, enroll_secs) = enroll_all(region, count).await;
    println!("rollout: {count} sites enrolled in {enroll_secs:.1} s");
    let connections = connect_all(region.port(), &sites).await;

    let phase = Arc::new(AtomicU8::new(WARMING));
    let begin = tokio::time::Instant::now();
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|(site, conn)| tokio::spawn(follow(site, conn, begin, phase.clone())))
        .collect();

    tokio::time::sleep(WARMUP).await;
    phase.store(BASELINE_PHASE, Ordering::SeqCst);
    let baseline_from = CpuReading::now(pid);
    tokio::time::sleep(BASELINE).await;
    let baseline_cpu = baseline_from.percent_since(pid);
    phase.store(BETWEEN, Ordering::SeqCst);

    let mut operator = Connection::open(region.port(), client_config(&region.ca_pem(), None))
        .await
        .expect("operator connection");
    let spec = serde_json::json!({
        "name": ROLLOUT,
        "target_version": TARGET,
        "max_parallel": 10_000,
        "waves": [
            { "name": "canary", "percent": 1 },
            { "name": "early", "percent": 9 },
            { "name": "broad", "percent": 40 },
            { "name": "rest" },
        ],
    });
    phase.store(WALK, Ordering::SeqCst);
    let walk_from = CpuReading::now(pid);
    let started = Instant::now();
    let (status, body) = operator
        .request(
            "POST",
            "/api/v1/rollouts",
            &serde_json::to_vec(&spec).expect("json"),
        )
        .await
        .expect("create the rollout");
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    // The short list, not the rollout itself: a poll must not cost the region a 10,000-row summary.
    loop {
        let (status, body) = operator
            .request("GET", "/api/v1/rollouts", b"")
            .await
            .expect("list rollouts");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let list: serde_json::Value = serde_json::from_slice(&body).expect("rollouts json");
        let state = list["rollouts"][0]["state"].as_str().unwrap_or_default();
        if state != "running" {
            break;
        }
        assert!(
            started.elapsed() < WALK_LIMIT,
            "rollout still running after {WALK_LIMIT:?}: {list}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let walk_cpu = walk_from.percent_since(pid);
    phase.store(DONE, Ordering::SeqCst);
    let polled_secs = started.elapsed().as_secs_f64();

    let (status, body) = operator
        .request("GET", &format!("/api/v1/rollouts/{ROLLOUT}"), b"")
        .await
        .expect("show the rollout");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let rollout: serde_json::Value = serde_json::from_slice(&body).expect("rollout json");
    let state = rollout["progress"]["state"].as_str().unwrap_or_default();
    assert_eq!(
        state, "completed",
        "the rollout ended {state}: {}",
        rollout["progress"]["reason"]
    );
    // The region's own record: created, and the step that completed it.
    let at = |field: &str| -> jiff::Timestamp {
        rollout[field]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("rollout {field}: {}", rollout[field]))
    };
    let walk_secs = at("updated_at")
        .duration_since(at("created_at"))
        .as_secs_f64();
    println!(
        "rollout: completed after {walk_secs:.1} s (seen by polling after {polled_secs:.1} s)"
    );

    let mut seen = Seen::default();
    let mut on_target = 0;
    for task in tasks {
        let site = task.await.expect("site task");
        seen.baseline_ms.extend(site.baseline_ms);
        seen.walk_ms.extend(site.walk_ms);
        seen.desired_ms.extend(site.desired_ms);
        seen.errors += site.errors;
        on_target += usize::from(site.on_target);
    }
    seen.on_target = on_target == count;
    println!("rollout: {on_target} of {count} sites run {TARGET}");
    let (longest_tick_ms, slow_ticks) = slow_ticks(&region.log_path());
    Measured {
        seen,
        baseline_cpu,
        walk_cpu,
        walk_secs,
        longest_tick_ms,
        slow_ticks,
    }
}

/// One site for the whole run: heartbeats every interval at a random phase and follows its desired
/// state, until the walk is over.
async fn follow(
    site: String,
    mut conn: Connection,
    begin: tokio::time::Instant,
    phase: Arc<AtomicU8>,
) -> Seen {
    let offset = Duration::from_millis(rand::random::<u64>() % INTERVAL.as_millis() as u64);
    let mut tick = tokio::time::interval_at(begin + offset, INTERVAL);
    let mut updater = Updater::new(RUNNING);
    let mut seen = Seen::default();
    let reports = paths::reports(&site);
    let desired = paths::desired(&site);
    loop {
        tick.tick().await;
        let sent_in = phase.load(Ordering::SeqCst);
        if sent_in == DONE {
            break;
        }
        let Some(batch) = updater.heartbeat() else {
            continue;
        };
        let started = Instant::now();
        let answer = conn
            .request("POST", &reports, &serde_json::to_vec(&batch).expect("json"))
            .await;
        let took = started.elapsed().as_secs_f64() * 1000.0;
        let ack: ReportAck = match answer {
            Ok((200, body)) => serde_json::from_slice(&body).expect("ack"),
            Ok((status, body)) => panic!(
                "{site}: heartbeat refused with {status}: {}",
                String::from_utf8_lossy(&body)
            ),
            Err(error) => {
                // The region is on this machine: an error is the region failing, not the network.
                seen.errors += 1;
                eprintln!("{site}: heartbeat failed: {error}");
                continue;
            }
        };
        match sent_in {
            BASELINE_PHASE => seen.baseline_ms.push(took),
            WALK => seen.walk_ms.push(took),
            _ => {}
        }
        if updater.acked(&ack) {
            let started = Instant::now();
            let (status, body) = conn
                .request("GET", &desired, b"")
                .await
                .expect("desired state");
            assert_eq!(status, 200, "{site}: {}", String::from_utf8_lossy(&body));
            if sent_in == WALK {
                seen.desired_ms
                    .push(started.elapsed().as_secs_f64() * 1000.0);
            }
            let state: DesiredState = serde_json::from_slice(&body).expect("desired json");
            updater.received(state);
        }
    }
    seen.on_target = updater.running() == TARGET;
    seen
}

/// The longest tick of the rollouts driver the region logged (it logs those over 100 ms) and how
/// many it logged.
fn slow_ticks(log: &std::path::Path) -> (Option<f64>, usize) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let took: Vec<f64> = text
        .lines()
        .map(without_colours)
        .filter(|line| line.contains("rollouts stepped"))
        .filter_map(|line| {
            let value = line.split_once("took=")?.1.split_whitespace().next()?;
            duration_ms(value)
        })
        .collect();
    (took.iter().copied().reduce(f64::max), took.len())
}

/// The line without terminal colour sequences (the region's log writer colours its fields).
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A `Duration` as `Debug` prints it (`812.3ms`, `1.2s`, `950µs`), in milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "s" => 1000.0,
        "ms" => 1.0,
        "µs" | "us" => 0.001,
        "ns" => 0.000_001,
        _ => return None,
    };
    Some(number * scale)
}

impl Measured {
    fn report(&self, engine: &str, sites: usize, records: &mut Vec<Record>) {
        let mut baseline = self.seen.baseline_ms.clone();
        baseline.sort_by(f64::total_cmp);
        let mut walk = self.seen.walk_ms.clone();
        walk.sort_by(f64::total_cmp);
        let mut desired = self.seen.desired_ms.clone();
        desired.sort_by(f64::total_cmp);
        let base = format!(
            "{} sites every {} s, {engine}",
            thousands(sites),
            INTERVAL.as_secs()
        );
        let no_rollout = format!("the same sites, no rollout ({} s)", BASELINE.as_secs());
        println!(
            "rollout {engine}: {} heartbeats in the baseline, {} during the walk, {} errors; desired-state GET during the walk: {} p50 {:.1} ms p99 {:.1} ms; {} ticks over 100 ms logged; every site on {TARGET}: {}",
            baseline.len(),
            walk.len(),
            self.seen.errors,
            desired.len(),
            percentile(&desired, 50.0),
            percentile(&desired, 99.0),
            self.slow_ticks,
            self.seen.on_target,
        );
        records.push(Record::compared(
            &format!("rollout walk: heartbeat p50 ({base})"),
            percentile(&walk, 50.0),
            "ms",
            percentile(&baseline, 50.0),
            &no_rollout,
            "—",
        ));
        records.push(Record::compared(
            &format!("rollout walk: heartbeat p99 ({base})"),
            percentile(&walk, 99.0),
            "ms",
            percentile(&baseline, 99.0),
            &no_rollout,
            "< 50 ms",
        ));
        records.push(Record::compared(
            &format!("rollout walk: region CPU ({base})"),
            self.walk_cpu,
            "% of one core",
            self.baseline_cpu,
            &no_rollout,
            "fits 2 cores",
        ));
        let floor = (INTERVAL * HEARTBEATS_PER_UPDATE).as_secs_f64() * WAVES as f64;
        records.push(Record::compared(
            &format!("rollout walk: created → completed, {WAVES} waves ({base})"),
            self.walk_secs,
            "s",
            floor,
            &format!("{WAVES} waves × {HEARTBEATS_PER_UPDATE} heartbeat intervals"),
            "—",
        ));
        let (longest, unit) = match self.longest_tick_ms {
            Some(ms) => (ms, "ms".to_owned()),
            None => (100.0, "ms (at most: no tick over 100 ms logged)".to_owned()),
        };
        records.push(Record::compared(
            &format!("rollout walk: longest step_all tick ({base})"),
            longest,
            &unit,
            TICK.as_secs_f64() * 1000.0,
            "the tick interval (tick_millis)",
            "≪ tick",
        ));
    }
}

/// `10000` as `10,000`, as the other region rows name their fleet.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
