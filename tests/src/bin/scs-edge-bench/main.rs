//! `make bench`: SCS Edge benchmarks, each against a baseline measured in the same run.
//!
//! 1. create → domain running, 20 servers through the agent (in-process: domain API, store, reconcile
//!    loop, disk overlay, config drive, libvirt) interleaved with 20 domains defined and started straight
//!    through the virt crate from the very XML the agent produced (disks prepared beforehand).
//! 2. Agent RSS idle and with 20 servers (the real binary), against its own idle figure.
//! 3. Networking (see `network.rs`): 1000 ports through the OVSDB client vs ovn-nbctl, 1000 ports
//!    through the whole agent, and port-up latency against OVN's own.
//! 4. Identity (see `identity.rs`): token validation, issue and throughput of the agent binary against
//!    a real Keystone 30.0.0 started in the same run, token issue against the argon2id verification
//!    alone, RSS of both, and `GET /servers/detail` with 500 servers against none.
//! 5. The node image (see `image.rs`): build cold vs cached, size raw vs zstd, boot to agent READY
//!    under TCG vs boot to the login prompt.
//! 6. An OS update of a node (see `update.rs`): import from a stick vs sha256sum + dd of the same
//!    bytes, the server's downtime and reboot to blessed.
//! 7. The region (see `region.rs`): 10,000 simulated sites heartbeating every 10 s against one
//!    region process, on SQLite and on PostgreSQL, against `GET /healthz` on the same connections.
//! 8. A rollout (see `rollout.rs`): the same 10,000 sites following a release walked in four waves,
//!    against their heartbeats with no rollout; on SQLite and on PostgreSQL.
//! 9. Release downloads (see `downloads.rs`): 50 sites fetching a 256 MiB artifact at once from the
//!    region's repository, against one GET of it from a plain TLS file server.
//!
//! Guests boot a blank disk (SeaBIOS finds nothing to boot and idles), so guest CPU does not skew
//! control-plane timings. Writes target/bench/results.jsonl and docs/benchmarks.md.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod downloads;
mod fleet_load;
mod identity;
mod image;
mod network;
mod region;
mod rollout;
mod update;

use scs_edge_agent::compute::hypervisor::VirtType;
use scs_edge_agent::compute::{NewFlavor, NewServer};
use scs_edge_agent::config::AgentConfig;
use scs_edge_agent::daemon::{self, Agent, HostPorts};
use scs_edge_agent::image::NewImage;
use scs_edge_agent::image::format::DiskFormat;
use scs_edge_agent::system::notify::RecordingNotifier;
use scs_edge_tests::agent::{AgentOptions, AgentProcess};
use scs_edge_tests::bench::{Record, markdown_table, merge_rows, percentile, write_jsonl};
use scs_edge_tests::libvirt::{Observer, ensure_daemons};
use scs_edge_tests::{scratch_dir, target_dir, wait};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SERVERS: usize = 20;

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    scs_edge_agent::system::logging::init("warn", scs_edge_agent::system::logging::LogFormat::Text);
    ensure_daemons();
    // `scs-edge-bench [compute] [rss] [network] [identity] [image | boot] [update] [region]
    // [rollout] [downloads]` runs a subset and replaces only its rows of docs/benchmarks.md; `boot`
    // boots the image built last without rebuilding it. `SCS_EDGE_BENCH_ROLLOUT_SITES` and
    // `SCS_EDGE_BENCH_DOWNLOAD_MIB` shrink the rollout's fleet and the downloaded artifact for a
    // quicker run; the rows name the sizes they measured.
    let only: Vec<String> = std::env::args().skip(1).collect();
    let wanted = |part: &str| only.is_empty() || only.iter().any(|o| o == part);
    let mut records = Vec::new();
    if wanted("compute") {
        records.extend(create_to_running());
    }
    if wanted("rss") {
        records.extend(rss());
    }
    if wanted("network") {
        network::run(&mut records);
    }
    if wanted("identity") {
        identity::run(&mut records);
    }
    if wanted("image") {
        image::run(&mut records);
    } else if only.iter().any(|o| o == "boot") {
        image::boot(&mut records);
    }
    if wanted("update") {
        update::run(&mut records);
    }
    if wanted("region") {
        region::run(&mut records);
    }
    if wanted("rollout") {
        rollout::run(&mut records);
    }
    if wanted("downloads") {
        downloads::run(&mut records);
    }

    let jsonl = target_dir().join("bench/results.jsonl");
    write_jsonl(&jsonl, &records).expect("write results");
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .join("docs/benchmarks.md");
    let table = markdown_table(&records);
    let text = format!(
        "# Benchmarks\n\nProduced by `make bench` (`target/release/scs-edge-bench`) on {} ({} CPUs, {} MiB RAM; guests under {}).\nMachine-readable: `target/bench/results.jsonl`. Each figure is compared with a baseline measured in the same run.\n\n{}\n{}{}\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        host_memory_mib(),
        "TCG (libvirt domain type qemu)",
        table,
        NOTES,
        identity::notes()
    );
    println!("{table}");
    if only.is_empty() {
        std::fs::write(&docs, text).expect("write docs/benchmarks.md");
        println!("wrote {} and {}", jsonl.display(), docs.display());
    } else {
        let when = jiff::Timestamp::now()
            .strftime("%Y-%m-%d %H:%M UTC")
            .to_string();
        let existing = std::fs::read_to_string(&docs).unwrap_or_default();
        std::fs::write(&docs, merge_rows(&existing, &records, &when))
            .expect("write docs/benchmarks.md");
        println!(
            "wrote {} and this subset's rows of {}",
            jsonl.display(),
            docs.display()
        );
    }
}

const NOTES: &str = "## What is measured\n\n\
- **create → running (agent)**: from calling `ComputeService::create_server` to libvirt reporting the domain running, polled every millisecond on a separate connection. It includes the store transaction (fsync), the work queue, the qcow2 overlay (written in-process), config drive, domain definition and start.\n\
- **create → running (virt crate)**: `Domain::define_xml` + `Domain::create` with the XML the agent produced for a warm-up server, on copies of its prepared files; interleaved with the agent's creates, one of each per round (alternating which goes first), 20 rounds. Both are timed alike: the action runs on its own thread while the bench polls libvirt every millisecond until the domain runs.\n\
- **agent RSS**: `VmRSS` of the `scs-edge-agent` process after READY=1 with no servers, and after 20 servers reached ACTIVE; the idle figure is the baseline of the loaded one.\n\
- **1000 ports, OVSDB client vs ovn-nbctl**: a switch and a port group with three ACLs made by ovn-nbctl; then 1000 ports each created, added to the switch and to the port group in one transaction by the agent's `ovsdb` client over one connection — against the same three operations as one `ovn-nbctl` invocation per port (how CMS scripts drive OVN).\n\
- **1000 ports through the agent**: `NetworkService::create_port` 1000 times (each a durable SQLite transaction with IPAM and the security group), the OVN reconciler diffing the model against the northbound replica; timed until a separate monitor sees all 1000 logical switch ports.\n\
- **port up**: a veth plugged into br-int with `iface-id` = port id; time until OVN sets `up=true` (seen by a separate monitor) and until the agent reports the port ACTIVE.\n\
- **image build**: `scripts/build-image.sh` forced, with the release agent already built: cold = mkosi's incremental and package caches removed (packages downloaded again), cached = both caches kept.\n\
- **image size**: the raw image's length (sparse), the blocks it occupies, and `zstd -T0 -12` of it; k3s is not in it (it cannot be downloaded here).\n\
- **boot to READY**: the image in QEMU under TCG (2 vCPUs, 3 GiB, OVMF) with its site configuration over fw_cfg, from starting QEMU to systemd's ActiveEnterTimestampMonotonic of the agent (READY=1, after provisioning) and of the last of libvirtd, ovs-vswitchd, ovn-controller and ovn-northd (the baseline), placed on the host's clock by one reading of /proc/uptime over the serial console. **reboot to READY**: the same node rebooted (`systemctl reboot` on its console, no provisioning: what each OS update costs), from sending the command to READY=1. `make bench` prints `systemd-analyze time`, the agent's critical chain and the slowest units of both boots.\n\
- **OS update** (`update.rs`): image N boots, runs one server, and takes N+1 (`scripts/build-update-test-images.sh`, signed at a release desk with the development keys) from an `SCSEDGE-UPDATE` stick the agent picks up by itself. **import** = the agent's journal from \"update stick found\" to \"release written into the inactive slot\" (TUF verification, staging, `systemd-sysupdate`); its **floor**, measured first on the same node with the same bundle on another stick: `sha256sum` of the bundle, then one `tar` pass decompressing the two partition images into the inactive slot with `dd conv=fsync` and writing the UKI to the ESP. **downtime** = from the drain's ACPI stop of the server to its domain started again on N+1 (journal timestamps of both boots; the guest clock is the host's RTC), against shutdown and boot to the health gate alone. **reboot to blessed** = from the reboot asked for to the gate's commit.\n\
- **rollout walk** (`rollout.rs`): 10,000 sites (`SCS_EDGE_BENCH_ROLLOUT_SITES`), enrolled and connected as in the region part, heartbeat every 10 s at a random phase and follow their desired state as the agent does (`fleet_sim::Updater`: importing, staged, installed, a silent heartbeat for the reboot, running; nothing downloaded). After 20 s of warm-up, 60 s of heartbeats with no rollout are the baseline; then a rollout of a small release published with the region's CLI walks four waves (1 %, 9 %, 40 %, the rest; soak 0, `max_parallel` 10000, default `tick_millis` 5000) and every heartbeat sent until it completed counts for the walk. The walk time is the region's own record (`updated_at` of the completing step − `created_at`), against a floor of three heartbeat intervals a wave; the longest `step_all` comes from the region's `rollouts stepped took=…` log lines (INFO, ticks over 100 ms only).\n\
- **release downloads** (`downloads.rs`): a release whose UKI is 256 MiB of random bytes (`SCS_EDGE_BENCH_DOWNLOAD_MIB`), published with the region's CLI; 50 enrolled sites with it as their desired version GET it at once from the repository over their own mTLS connections, each read to the end and SHA-256 checked in the bench; aggregate = 50 × size / wall time. Baseline: the median of three GETs of the same file (page cache warm) from a plain tokio-rustls server in the bench process, same provider and client, read in 64 KiB pieces. RSS peak: `VmRSS` of the region sampled every 20 ms during the downloads.\n";

/// The flavor every benchmark's servers use: the smallest a blank-disk guest idles in.
fn bench_flavor() -> NewFlavor {
    NewFlavor {
        id: Some("bench".into()),
        name: "bench".into(),
        description: None,
        vcpus: 1,
        ram_mb: 64,
        disk_gb: 1,
        ephemeral_gb: 0,
        swap_mb: 0,
        is_public: true,
        extra_specs: BTreeMap::new(),
    }
}

fn host_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .map(|v| v.trim().trim_end_matches(" kB").trim().to_owned())
            })
        })
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

fn blank_disk(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("blank.raw");
    std::fs::write(&path, vec![0u8; 1 << 20]).expect("blank disk");
    path
}

/// Removes every domain a benchmark defined, even when it panics half-way.
struct DomainCleanup(Vec<String>);

impl Drop for DomainCleanup {
    fn drop(&mut self) {
        let observer = Observer::connect();
        for node in &self.0 {
            for id in observer.owned_by(node) {
                observer.remove(id);
            }
        }
    }
}

fn create_to_running() -> Vec<Record> {
    let dir = scratch_dir("bench-create");
    let mut config = AgentConfig::default();
    config.node.id = format!("bench-{}", &Uuid::new_v4().to_string()[..8]);
    config.node.state_dir = dir.path().join("state");
    config.api.listen = "127.0.0.1:0".parse().expect("addr");
    config.compute.cpu_allocation_ratio = 64.0;
    config.compute.shutdown_timeout_secs = 1;
    config.log.filter = "warn".into();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _cleanup = DomainCleanup(vec![config.node.id.clone(), "bench-baseline".into()]);

    let (store, node_id) = daemon::open_store(&config).expect("store");
    let ports = HostPorts::real(&config, &node_id, Some(runtime.handle())).expect("host ports");
    let agent = Agent::assemble(
        config.clone(),
        store,
        node_id.clone(),
        (VirtType::Qemu, "benchmark".into()),
        &ports,
    );
    let compute = agent.compute.clone();
    let images = agent.images.clone();
    let loops = agent.loops.clone();
    let shutdown = CancellationToken::new();
    let run = runtime.spawn(agent.run(Arc::new(RecordingNotifier::default()), shutdown.clone()));
    runtime.block_on(loops.first_pass_done());

    let blank = blank_disk(dir.path());
    let image = images
        .import(
            NewImage {
                name: "blank".into(),
                disk_format: Some(DiskFormat::Raw),
                ..NewImage::default()
            },
            &mut std::fs::File::open(&blank).expect("open"),
        )
        .expect("import");
    compute.create_flavor(bench_flavor()).expect("flavor");

    let observer = Observer::connect();
    let baseline_dir = dir.path().join("baseline");
    std::fs::create_dir_all(&baseline_dir).expect("baseline dir");
    let mut agent_ms = Vec::new();
    let mut virt_ms = Vec::new();
    let mut baseline_ids = Vec::new();
    let launcher = Observer::connect(); // a second connection: the poller must not queue behind it
    let request = |round: usize, id: Uuid| NewServer {
        id: Some(id),
        name: format!("bench-{round}"),
        project_id: "bench".into(),
        user_id: "bench".into(),
        flavor_id: "bench".into(),
        image_id: image.id,
        ..NewServer::default()
    };
    // Both sides are timed alike: the action runs on its own thread while this one polls libvirt
    // every millisecond until the domain runs, so polling load falls on both equally.
    let until_running = |id: Uuid, action: &(dyn Fn() + Sync)| -> Duration {
        let started = Instant::now();
        std::thread::scope(|scope| {
            scope.spawn(action);
            wait::until("domain running", Duration::from_mins(2), || {
                let running = observer.running(id);
                if !running {
                    std::thread::sleep(Duration::from_millis(1));
                }
                running.then_some(())
            });
        });
        started.elapsed()
    };

    // Warm-up (not counted): the first QEMU start pays for page cache and libvirt caches, and this
    // server's XML and prepared files are the template of every baseline twin.
    let template = Uuid::new_v4();
    until_running(template, &|| {
        compute.create_server(request(0, template)).expect("create");
    });
    let xml = observer
        .domain(template)
        .expect("domain")
        .get_xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE)
        .expect("xml");
    let template_dir = config
        .node
        .state_dir
        .join("servers")
        .join(template.to_string());

    for round in 1..=SERVERS {
        let twin = Uuid::new_v4();
        let twin_dir = baseline_dir.join(twin.to_string());
        std::fs::create_dir_all(&twin_dir).expect("twin dir");
        for file in ["disk.qcow2", "config-drive.img"] {
            std::fs::copy(template_dir.join(file), twin_dir.join(file))
                .expect("copy prepared file");
        }
        let twin_xml = xml
            .replace(
                &template_dir.display().to_string(),
                &twin_dir.display().to_string(),
            )
            .replace(&template.to_string(), &twin.to_string())
            .replace(&format!("node='{node_id}'"), "node='bench-baseline'")
            .replace(&format!("node=\"{node_id}\""), "node=\"bench-baseline\"");
        let server = Uuid::new_v4();
        let agent = || {
            until_running(server, &|| {
                compute
                    .create_server(request(round, server))
                    .expect("create");
            })
        };
        let direct = || {
            until_running(twin, &|| {
                let domain = virt::domain::Domain::define_xml(launcher.connection(), &twin_xml)
                    .expect("define");
                domain.create().expect("start");
            })
        };
        // Alternate which goes first, so neither always meets the host in the same state.
        let (agent_time, virt_time) = if round % 2 == 0 {
            let a = agent();
            (a, direct())
        } else {
            let v = direct();
            (agent(), v)
        };
        baseline_ids.push(twin);
        agent_ms.push(agent_time.as_secs_f64() * 1000.0);
        virt_ms.push(virt_time.as_secs_f64() * 1000.0);
        eprintln!(
            "round {round}: agent {:.1} ms, virt crate {:.1} ms",
            agent_time.as_secs_f64() * 1000.0,
            virt_time.as_secs_f64() * 1000.0
        );
    }

    for id in &baseline_ids {
        observer.remove(*id);
    }
    for server in compute.servers().expect("servers") {
        compute.delete_server(server.id).expect("delete");
    }
    wait::until("bench servers deleted", Duration::from_mins(2), || {
        compute.servers().ok().filter(Vec::is_empty).map(|_| ())
    });
    shutdown.cancel();
    let _ = runtime.block_on(run);

    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let mut agent_sorted = agent_ms.clone();
    agent_sorted.sort_by(f64::total_cmp);
    let mut virt_sorted = virt_ms.clone();
    virt_sorted.sort_by(f64::total_cmp);
    vec![
        Record::compared(
            "create → domain running, mean of 20 (agent vs virt crate)",
            mean(&agent_ms),
            "ms",
            mean(&virt_ms),
            "define+start via virt crate",
            "ratio ≤ 1.05",
        ),
        Record::compared(
            "create → domain running, p50 of 20",
            percentile(&agent_sorted, 50.0),
            "ms",
            percentile(&virt_sorted, 50.0),
            "define+start via virt crate",
            "ratio ≤ 1.05",
        ),
        Record::compared(
            "create → domain running, p95 of 20",
            percentile(&agent_sorted, 95.0),
            "ms",
            percentile(&virt_sorted, 95.0),
            "define+start via virt crate",
            "—",
        ),
    ]
}

fn rss_kib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .expect("VmRSS")
}

fn rss() -> Vec<Record> {
    let agent = AgentProcess::start("bench-rss", AgentOptions::default());
    let pid = agent.pid().expect("agent pid");
    let dir = agent.dir().to_owned();
    let blank = blank_disk(&dir);
    let image = agent.cli_ok(&[
        "image",
        "import",
        "--name",
        "blank",
        "--disk-format",
        "raw",
        "--file",
        blank.to_str().expect("utf8"),
    ]);
    let image = image["id"].as_str().expect("id").to_owned();
    agent.cli_ok(&[
        "flavor", "create", "--id", "tiny", "--name", "tiny", "--vcpus", "1", "--ram", "64",
        "--disk", "1",
    ]);
    // Let the agent settle after its first pass and the imports before reading the idle figure.
    std::thread::sleep(Duration::from_secs(3));
    let idle = rss_kib(pid) / 1024.0;
    let mut ids = Vec::new();
    for i in 0..SERVERS {
        let json = agent.cli_ok(&[
            "server",
            "create",
            "--name",
            &format!("rss-{i}"),
            "--flavor",
            "tiny",
            "--image",
            &image,
        ]);
        ids.push(Uuid::parse_str(json["id"].as_str().expect("id")).expect("uuid"));
    }
    for id in &ids {
        agent.wait_status(*id, "ACTIVE", Duration::from_mins(5));
    }
    std::thread::sleep(Duration::from_secs(3));
    let loaded = rss_kib(pid) / 1024.0;
    vec![
        Record {
            name: "agent RSS, idle".into(),
            value: idle,
            unit: "MiB".into(),
            baseline: None,
            baseline_name: String::new(),
            ratio: None,
            goal: "—".into(),
        },
        Record::compared(
            "agent RSS with 20 servers",
            loaded,
            "MiB",
            idle,
            "idle RSS",
            "—",
        ),
    ]
}
