//! `scs-edge-lab` (`make lab`): starts a local region, boots SCS Edge sites from the node image in
//! QEMU that join it, and hands the operator an OpenStack `clouds.yaml` for them.
//!
//! ```text
//! scs-edge-lab [up] [--sites N] [--no-nodes] [--image RAW] [--work-dir DIR]
//!                   [--api-port PORT] [--region-port PORT] [--site NAME]
//! scs-edge-lab wan <site> cut|restore|delay <n>ms|loss <p>%|show [--work-dir DIR]
//! scs-edge-lab down [--work-dir DIR]
//! ```
//!
//! One site (the default, `make lab`): the region (`scs-edge-region` on SQLite, state in `<work
//! dir>/region`) listens on the host's loopback, which the guest reaches as 10.0.2.2 through QEMU's
//! user networking, and the site's API is forwarded to the host's loopback.
//!
//! Several sites (`--sites N`, N ≥ 2; decision 0016): each site `lab-i` lives in network namespace
//! `scs-lab-lab-i` behind its own link (see `scs_edge_lab::wan`), QEMU runs inside it, the region
//! listens on 10.77.0.1 and the site's API is forwarded to 10.77.i.2:8443, so both the site's link
//! to the region and clients' way to the site cross the link that `wan` impairs. The sites boot in
//! parallel with 2 GiB each. `--no-nodes` sets up the region and the links only (for the tests, or
//! an agent run by hand with `ip netns exec`; each site's `site.toml` with a join token is written
//! to `<work dir>/sites/<site>/`). `down`, Ctrl-C and SIGTERM remove QEMU, the region, the delay
//! engines, the namespaces, the links and the region's address.
//!
//! In both, the lab adds each site and a one-time join token to the region, and the site gets its
//! configuration — region URL, token, CA fingerprint — over QEMU fw_cfg as an edge server gets it
//! from its BMC or a USB stick; the image provisions itself from it and the `qemu-q35` hardware
//! profile, and its agent joins the region over mTLS. Once an agent is READY the lab bootstraps the
//! admin account over the serial console, copies the agent's API certificate out, waits for the
//! site's first report to reach the region, writes `<work dir>/clouds.yaml` and prints `ready:
//! <path>`. It then keeps everything running until Ctrl-C.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use scs_edge_lab::wan::{self, Change, Site, System, Wan};
use scs_edge_lab::{
    LabNode, LabOptions, RegionOptions, RegionProcess, SiteDelivery, default_image, target_dir,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

/// Under TCG on two busy cores a first boot takes minutes, not seconds.
const BOOT_TIMEOUT: Duration = Duration::from_mins(15);
/// Guest RAM of each site when several share the host.
const MANY_SITES_MEMORY_MIB: u32 = 2048;
/// The agent's API port on a site's link address.
const SITE_API_PORT: u16 = 8443;

struct UpArgs {
    image: PathBuf,
    work_dir: PathBuf,
    api_port: u16,
    region_port: u16,
    site: String,
    sites: u8,
    nodes: bool,
}

enum Mode {
    Up(UpArgs),
    Wan {
        work_dir: PathBuf,
        site: String,
        words: Vec<String>,
    },
    Down {
        work_dir: PathBuf,
    },
    Engine {
        control: PathBuf,
    },
}

const USAGE: &str = "usage:
  scs-edge-lab [up] [--sites N] [--no-nodes] [--image RAW] [--work-dir DIR] [--api-port PORT] [--region-port PORT] [--site NAME]
  scs-edge-lab wan <site> cut|restore|delay <n>ms|loss <p>%|show [--work-dir DIR]
  scs-edge-lab down [--work-dir DIR]";

fn parse_args() -> Result<Mode, String> {
    let mut all: Vec<String> = std::env::args().skip(1).collect();
    let command = match all.first().map(String::as_str) {
        Some(word @ ("up" | "wan" | "down" | "wan-engine")) => {
            let word = word.to_owned();
            all.remove(0);
            word
        }
        _ => "up".to_owned(),
    };
    let mut up = UpArgs {
        image: default_image(),
        work_dir: target_dir().join("lab"),
        api_port: 8443,
        region_port: 9443,
        site: "lab".into(),
        sites: 1,
        nodes: true,
    };
    let mut control = None;
    let mut words = Vec::new();
    let mut it = all.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--work-dir" => up.work_dir = value()?.into(),
            "--image" => up.image = value()?.into(),
            "--api-port" => {
                up.api_port = value()?.parse().map_err(|e| format!("--api-port: {e}"))?;
            }
            "--region-port" => {
                up.region_port = value()?
                    .parse()
                    .map_err(|e| format!("--region-port: {e}"))?;
            }
            "--site" => up.site = value()?,
            "--sites" => {
                up.sites = value()?
                    .parse()
                    .ok()
                    .filter(|n| (1..=wan::MAX_SITES).contains(n))
                    .ok_or_else(|| format!("--sites: 1 to {}", wan::MAX_SITES))?;
            }
            "--no-nodes" => up.nodes = false,
            "--control" => control = Some(PathBuf::from(value()?)),
            "--help" | "-h" => return Err(USAGE.into()),
            word if command == "wan" && !word.starts_with("--") => words.push(word.to_owned()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    match command.as_str() {
        "up" => Ok(Mode::Up(up)),
        "down" => Ok(Mode::Down {
            work_dir: up.work_dir,
        }),
        "wan-engine" => Ok(Mode::Engine {
            control: control.ok_or("wan-engine needs --control FILE")?,
        }),
        _ => {
            if words.is_empty() {
                return Err(format!("wan needs a site\n{USAGE}"));
            }
            let site = words.remove(0);
            if words.is_empty() {
                words.push("show".into());
            }
            Ok(Mode::Wan {
                work_dir: up.work_dir,
                site,
                words,
            })
        }
    }
}

fn main() -> ExitCode {
    let mode = match parse_args() {
        Ok(mode) => mode,
        Err(message) => {
            eprintln!("scs-edge-lab: {message}");
            return ExitCode::from(2);
        }
    };
    let outcome = match mode {
        Mode::Up(args) if args.sites > 1 => up_many(&args),
        Mode::Up(args) => up_one(&args),
        Mode::Wan {
            work_dir,
            site,
            words,
        } => change_wan(&work_dir, &site, &words),
        Mode::Down { work_dir } => {
            drop(teardown(&work_dir));
            Ok(())
        }
        Mode::Engine { control } => wan::delay::run(&control).map_err(|e| e.to_string()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("scs-edge-lab: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The host as the guest sees it through QEMU's user networking.
const HOST_FROM_GUEST: &str = "10.0.2.2";
/// How long the lab waits for the site's first report once its agent is READY (join, first
/// heartbeat; the agent's first attempt may land before the guest's network is fully up).
const JOIN_TIMEOUT: Duration = Duration::from_mins(3);

/// One site to boot: where its node lives and how the region and clients reach it.
struct SiteSpec {
    name: String,
    work_dir: PathBuf,
    region_url: String,
    api_address: String,
    api_port: u16,
    netns: Option<String>,
    memory_mib: Option<u32>,
}

impl SiteSpec {
    /// The API URL is the port forward, so the service catalog names what clients reach.
    fn api_url(&self) -> String {
        format!("https://{}:{}", self.api_address, self.api_port)
    }

    /// The site's configuration: the region, a one-time token from it and its CA fingerprint.
    fn site_toml(&self, region: &RegionProcess, token: &str) -> String {
        format!(
            "[site]\nname = \"{}\"\nregion_url = \"{}\"\njoin_token = \"{token}\"\n\
             ca_fingerprint = \"{}\"\napi_url = \"{}\"\n",
            self.name,
            self.region_url,
            region.fingerprint,
            self.api_url(),
        )
    }
}

/// The lab region's `[releases]` and `[rollouts]`: it trusts the root of trust the development image
/// carries (`make image`'s release repository) and holds that repository's timestamp key, alone in
/// a folder of its own as on a real region host, so releases signed with the development keys can
/// be published to it and rolled out. Without a development repository, no `[releases]`.
fn releases_section(work_dir: &Path) -> Result<String, String> {
    let image = target_dir().join("image");
    let metadata = image.join("releases").join("metadata");
    let root = scs_edge_release::keys::latest_root(&metadata)
        .ok()
        .map(|(_, path)| path);
    let timestamp_key = image.join("keys").join("release").join("timestamp.pk8");
    let rollouts = "[rollouts]\ntick_millis = 2000\n";
    let Some(root) = root.filter(|_| timestamp_key.exists()) else {
        return Ok(rollouts.to_owned());
    };
    let keys = work_dir.join("region-release-keys");
    std::fs::create_dir_all(&keys).map_err(|e| format!("{}: {e}", keys.display()))?;
    std::fs::copy(&timestamp_key, keys.join("timestamp.pk8"))
        .map_err(|e| format!("{}: {e}", timestamp_key.display()))?;
    Ok(format!(
        "[releases]\nroot_of_trust = \"{}\"\ntimestamp_key_dir = \"{}\"\n\n{rollouts}",
        root.display(),
        keys.display()
    ))
}

/// Starts (or restarts, keeping its state) the lab's region.
/// Starts the lab's region on `listen_ip`; sites reach it at `advertise_ip` when that is set.
fn start_region(
    args: &UpArgs,
    listen_ip: &str,
    advertise_ip: Option<&str>,
    names: &[&str],
) -> Result<RegionProcess, String> {
    let mut options = RegionOptions::new(args.work_dir.join("region"), args.region_port);
    listen_ip.clone_into(&mut options.listen_ip);
    options.advertise_ip = advertise_ip.map(str::to_owned);
    options.names = names.iter().map(|&n| n.to_owned()).collect();
    options.extra = releases_section(&args.work_dir)?;
    let region = RegionProcess::start(options)?;
    println!(
        "region: {} (dashboard; log {})",
        region.url(),
        region.log_path().display()
    );
    Ok(region)
}

/// The admin password of the lab's sites, made once and kept in the work directory.
fn admin_password(work_dir: &Path) -> Result<String, String> {
    let secrets = work_dir.join("secrets");
    std::fs::create_dir_all(&secrets).map_err(|e| e.to_string())?;
    let password_file = secrets.join("admin");
    if !password_file.exists() {
        let password: String = {
            use rand::Rng as _;
            let mut rng = rand::rng();
            (0..32)
                .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
                .collect()
        };
        std::fs::write(&password_file, &password).map_err(|e| e.to_string())?;
    }
    std::fs::read_to_string(&password_file).map_err(|e| e.to_string())
}

/// One `clouds.yaml` entry.
fn cloud(name: &str, api_url: &str, password: &str, cacert: &Path) -> String {
    format!(
        "  {name}:\n    auth:\n      auth_url: {api_url}/identity/v3\n      username: admin\n      \
         password: {password}\n      project_name: admin\n      user_domain_name: Default\n      \
         project_domain_name: Default\n    region_name: RegionOne\n    identity_api_version: 3\n    \
         cacert: {}\n",
        cacert.display()
    )
}

/// Boots a site's node, bootstraps its admin, copies its API certificate out and waits until the
/// site has joined the region. Returns the node and the certificate's path.
fn bring_up(
    spec: &SiteSpec,
    image: &Path,
    region: &RegionProcess,
    password: &str,
) -> Result<(LabNode, PathBuf), String> {
    let say = |line: String| println!("[{}] {line}", spec.name);
    let token = region.join_token(&spec.name)?;
    let mut options = LabOptions::new(
        image.to_owned(),
        spec.work_dir.clone(),
        spec.api_port,
        SiteDelivery::FwCfg(spec.site_toml(region, &token)),
    );
    spec.api_address.clone_into(&mut options.api_address);
    options.netns.clone_from(&spec.netns);
    if let Some(memory) = spec.memory_mib {
        options.memory_mib = memory;
    }
    let node = LabNode::boot(&options).map_err(|e| format!("{}: {e}", spec.name))?;
    say(format!(
        "booting {} under {} ({}){}; console log: {}",
        image.display(),
        node.accel.0,
        node.accel.1,
        spec.netns
            .as_ref()
            .map_or_else(String::new, |netns| format!(" in netns {netns}")),
        node.console_log().display()
    ));
    node.console
        .wait_for("root@", BOOT_TIMEOUT)
        .map_err(|e| format!("{}: {e}", spec.name))?;
    let ready = node
        .wait_agent_ready(BOOT_TIMEOUT)
        .map_err(|e| format!("{}: {e}", spec.name))?;
    say(format!(
        "agent READY {:.1} s after power-on",
        ready.as_secs_f64()
    ));

    let (status, output) = node
        .console
        .shell(
            &format!(
                "umask 077; printf %s '{password}' > /run/scs-edge-admin && \
                 scs-edge-agent identity bootstrap --admin-password-file /run/scs-edge-admin >/dev/null; \
                 r=$?; rm -f /run/scs-edge-admin; (exit $r)"
            ),
            Duration::from_mins(2),
        )
        .map_err(|e| e.to_string())?;
    if status != 0 {
        return Err(format!(
            "{}: identity bootstrap failed: {output}",
            spec.name
        ));
    }
    let (status, cert) = node
        .console
        .shell("cat /var/lib/scs-edge/tls/api.crt", Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    if status != 0 || !cert.contains("BEGIN CERTIFICATE") {
        return Err(format!(
            "{}: cannot read the agent's certificate: {cert}",
            spec.name
        ));
    }
    let cacert = spec.work_dir.join("api.crt");
    std::fs::write(&cacert, cert.trim_start()).map_err(|e| e.to_string())?;
    // A failing status query is kept for the message: "did not join" would hide it.
    let mut last_error = String::new();
    let joined = scs_edge_lab::poll_until(JOIN_TIMEOUT, || {
        let site = region
            .site_status(&spec.name)
            .map_err(|e| last_error = e)
            .ok()??;
        (site["state"] == "active" && site["last_seq"].as_u64().unwrap_or(0) >= 1).then_some(site)
    })
    .ok_or_else(|| {
        format!(
            "site {} did not join the region within {JOIN_TIMEOUT:?}{}; region log:\n{}",
            spec.name,
            if last_error.is_empty() {
                String::new()
            } else {
                format!(" (last status query: {last_error})")
            },
            region.log_tail(20)
        )
    })?;
    say(format!(
        "joined the region {:.1} s after power-on: {} link, health {}",
        node.started.elapsed().as_secs_f64(),
        joined["connectivity"],
        joined["health"]
    ));
    Ok((node, cacert))
}

/// Today's lab: one site on the host's loopback.
fn up_one(args: &UpArgs) -> Result<(), String> {
    let mut region = start_region(
        args,
        "127.0.0.1",
        None,
        &[HOST_FROM_GUEST, "127.0.0.1", "localhost"],
    )?;
    if !args.nodes {
        println!("ready: region only (--no-nodes)");
        while region.running() {
            std::thread::sleep(Duration::from_secs(1));
        }
        return Err("the region stopped".into());
    }
    let spec = SiteSpec {
        name: args.site.clone(),
        work_dir: args.work_dir.clone(),
        region_url: format!("https://{HOST_FROM_GUEST}:{}", region.port()),
        api_address: "127.0.0.1".into(),
        api_port: args.api_port,
        netns: None,
        memory_mib: None,
    };
    let password = admin_password(&args.work_dir)?;
    let (mut node, cacert) = bring_up(&spec, &args.image, &region, &password)?;
    let clouds = args.work_dir.join("clouds.yaml");
    std::fs::write(
        &clouds,
        format!(
            "clouds:\n{}",
            cloud("scs-edge-lab", &node.api_url(), &password, &cacert)
        ),
    )
    .map_err(|e| e.to_string())?;
    println!("ready: {}", clouds.display());
    println!(
        "  OS_CLIENT_CONFIG_FILE={} /opt/scs-edge-clients/bin/openstack --os-cloud scs-edge-lab flavor list",
        clouds.display()
    );
    println!(
        "  dashboard: {} (loopback only; no identity provider in the lab)",
        region.url()
    );
    println!("Ctrl-C stops the node and the region.");
    while node.is_running() && region.running() {
        std::thread::sleep(Duration::from_secs(1));
    }
    if region.running() {
        Err("the node powered off".into())
    } else {
        Err("the region stopped".into())
    }
}

fn links(work_dir: &Path) -> Wan<System> {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("scs-edge-lab"));
    Wan::new(
        System,
        work_dir.join("wan"),
        vec![exe.display().to_string(), "wan-engine".into()],
    )
}

/// One teardown at a time: a signal's and the runner's own, when both come at once.
static TEARDOWN: Mutex<()> = Mutex::new(());

/// Stops everything a lab in `work_dir` runs and removes its links: QEMU, the region, the delay
/// engines, namespaces, links and the region's address. Idempotent. Returns the teardown lock, for
/// a caller that exits next and must not let another teardown start in between.
fn teardown(work_dir: &Path) -> std::sync::MutexGuard<'static, ()> {
    let one = TEARDOWN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Ok(sites) = std::fs::read_dir(work_dir.join("sites")) {
        for site in sites.flatten() {
            scs_edge_lab::stop_qemu(&site.path());
        }
    }
    scs_edge_lab::stop_qemu(work_dir);
    scs_edge_lab::region::stop_recorded(&work_dir.join("region"));
    if let Err(e) = links(work_dir).down() {
        eprintln!("scs-edge-lab: tearing the links down: {e}");
    }
    one
}

/// Tears the lab down however the runner ends: on return (drop) and on SIGINT or SIGTERM.
struct Teardown(PathBuf);

impl Teardown {
    /// From now on a Ctrl-C or SIGTERM tears the lab down and exits.
    fn arm(work_dir: &Path) -> Result<Self, String> {
        use tokio::signal::unix::{SignalKind, signal};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("signal runtime: {e}"))?;
        // Registered here, before anything is set up, so no signal goes unseen.
        let (mut interrupt, mut terminate) = {
            let _context = runtime.enter();
            (
                signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?,
                signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?,
            )
        };
        let dir = work_dir.to_owned();
        std::thread::Builder::new()
            .name("lab-signals".into())
            .spawn(move || {
                let name = runtime.block_on(async {
                    tokio::select! {
                        _ = interrupt.recv() => "SIGINT",
                        _ = terminate.recv() => "SIGTERM",
                    }
                });
                println!("{name}: tearing the lab down");
                let _done = teardown(&dir);
                std::process::exit(130);
            })
            .map_err(|e| format!("signal thread: {e}"))?;
        Ok(Self(work_dir.to_owned()))
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        drop(teardown(&self.0));
    }
}

/// Several sites, each in its own namespace behind an impairable link.
fn up_many(args: &UpArgs) -> Result<(), String> {
    // Whatever a killed lab left in this directory goes first.
    drop(teardown(&args.work_dir));
    let _teardown = Teardown::arm(&args.work_dir)?;
    let sites = Site::numbered(args.sites);
    let wan = links(&args.work_dir);
    wan.up(&sites).map_err(|e| e.to_string())?;
    let region_ip = wan::REGION_ADDRESS.to_string();
    // Every address: the sites come over their links, the operator's browser and CLI on loopback.
    let mut region = start_region(
        args,
        "0.0.0.0",
        Some(&region_ip),
        &[&region_ip, "127.0.0.1", "localhost"],
    )?;
    let specs: Vec<SiteSpec> = sites
        .iter()
        .map(|site| SiteSpec {
            name: site.name.clone(),
            work_dir: args.work_dir.join("sites").join(&site.name),
            region_url: region.url(),
            api_address: site.address().to_string(),
            api_port: SITE_API_PORT,
            netns: Some(site.netns()),
            memory_mib: Some(MANY_SITES_MEMORY_MIB),
        })
        .collect();
    for spec in &specs {
        println!(
            "[{}] netns {}, link {} ({} ↔ {}), API {}",
            spec.name,
            spec.netns.as_deref().unwrap_or_default(),
            sites
                .iter()
                .find(|s| s.name == spec.name)
                .map(Site::host_link)
                .unwrap_or_default(),
            spec.api_address,
            region_ip,
            spec.api_url(),
        );
    }
    if !args.nodes {
        for spec in &specs {
            std::fs::create_dir_all(&spec.work_dir).map_err(|e| e.to_string())?;
            let token = region.join_token(&spec.name)?;
            let file = spec.work_dir.join("site.toml");
            std::fs::write(&file, spec.site_toml(&region, &token)).map_err(|e| e.to_string())?;
        }
        println!(
            "ready: {} sites, no nodes (site.toml with a join token in {}/sites/<site>/)",
            specs.len(),
            args.work_dir.display()
        );
        println!("  scs-edge-lab wan <site> cut|restore|delay <n>ms|loss <p>%|show");
        println!("Ctrl-C stops the region and removes the links.");
        while region.running() {
            std::thread::sleep(Duration::from_secs(1));
        }
        return Err("the region stopped".into());
    }

    let password = admin_password(&args.work_dir)?;
    let outcomes: Vec<Result<(LabNode, PathBuf), String>> = std::thread::scope(|scope| {
        let booting: Vec<_> = specs
            .iter()
            .map(|spec| scope.spawn(|| bring_up(spec, &args.image, &region, &password)))
            .collect();
        booting
            .into_iter()
            .map(|boot| {
                boot.join()
                    .unwrap_or_else(|_| Err("a site's bring-up panicked".into()))
            })
            .collect()
    });
    let mut nodes = Vec::new();
    let mut failures = Vec::new();
    let mut clouds_text = String::from("clouds:\n");
    for (spec, outcome) in specs.iter().zip(outcomes) {
        match outcome {
            Ok((node, cacert)) => {
                clouds_text.push_str(&cloud(&spec.name, &node.api_url(), &password, &cacert));
                nodes.push(node);
            }
            Err(e) => failures.push(e),
        }
    }
    if !failures.is_empty() {
        return Err(failures.join("\n"));
    }
    let clouds = args.work_dir.join("clouds.yaml");
    std::fs::write(&clouds, clouds_text).map_err(|e| e.to_string())?;
    println!("ready: {}", clouds.display());
    println!(
        "  OS_CLIENT_CONFIG_FILE={} /opt/scs-edge-clients/bin/openstack --os-cloud lab-1 flavor list",
        clouds.display()
    );
    println!(
        "  dashboard: https://127.0.0.1:{} (loopback only: no identity provider in the lab)",
        region.port()
    );
    println!("  scs-edge-lab wan <site> cut|restore|delay <n>ms|loss <p>%|show");
    println!("Ctrl-C stops the nodes and the region and removes the links.");
    while region.running() && nodes.iter_mut().all(LabNode::is_running) {
        std::thread::sleep(Duration::from_secs(1));
    }
    if region.running() {
        Err("a node powered off".into())
    } else {
        Err("the region stopped".into())
    }
}

/// `scs-edge-lab wan <site> …`: changes or shows a site's link.
fn change_wan(work_dir: &Path, site: &str, words: &[String]) -> Result<(), String> {
    let wan = links(work_dir);
    let change = Change::parse(words).map_err(|e| e.to_string())?;
    let now = match change {
        Some(change) => wan.change(site, change),
        None => wan.impairment(site),
    }
    .map_err(|e| e.to_string())?;
    println!("{site}: {now}");
    Ok(())
}
