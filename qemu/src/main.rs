//! `scs-edge-lab` (`make lab`): starts a local region, boots one SCS Edge site from the node image in
//! QEMU that joins it, and hands the operator an OpenStack `clouds.yaml` for the site.
//!
//! The region (`scs-edge-region` on SQLite, state in `<work dir>/region`) listens on the host's
//! loopback, which the guest reaches as 10.0.2.2 through QEMU's user networking. The lab adds the
//! site and a one-time join token there, and the site gets its configuration — region URL, token,
//! CA fingerprint — over QEMU fw_cfg as an edge server gets it from its BMC or a USB stick; the image
//! provisions itself from it and the `qemu-q35` hardware profile, and its agent joins the region over
//! mTLS. Once the agent is READY the lab bootstraps the admin account over the serial console, copies
//! the agent's API certificate out, writes `<work dir>/clouds.yaml`, waits for the site's first report
//! to reach the region and prints `ready: <path>`. It then keeps both running until Ctrl-C.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use scs_edge_lab::{
    LabNode, LabOptions, RegionOptions, RegionProcess, SiteDelivery, default_image, target_dir,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Under TCG on two busy cores a first boot takes minutes, not seconds.
const BOOT_TIMEOUT: Duration = Duration::from_mins(15);

struct Args {
    image: PathBuf,
    work_dir: PathBuf,
    api_port: u16,
    region_port: u16,
    site: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        image: default_image(),
        work_dir: target_dir().join("lab"),
        api_port: 8443,
        region_port: 9443,
        site: "lab".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--image" => args.image = value()?.into(),
            "--work-dir" => args.work_dir = value()?.into(),
            "--api-port" => {
                args.api_port = value()?.parse().map_err(|e| format!("--api-port: {e}"))?;
            }
            "--region-port" => {
                args.region_port = value()?
                    .parse()
                    .map_err(|e| format!("--region-port: {e}"))?;
            }
            "--site" => args.site = value()?,
            "--help" | "-h" => {
                return Err(
                    "usage: scs-edge-lab [--image RAW] [--work-dir DIR] [--api-port PORT] [--region-port PORT] [--site NAME]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// The host as the guest sees it through QEMU's user networking.
const HOST_FROM_GUEST: &str = "10.0.2.2";
/// How long the lab waits for the site's first report once its agent is READY (join, first
/// heartbeat; the agent's first attempt may land before the guest's network is fully up).
const JOIN_TIMEOUT: Duration = Duration::from_mins(3);

/// The lab's site configuration: the local region (through 10.0.2.2), a one-time token from it and
/// its CA fingerprint. The API URL is the port forward, so the service catalog names what clients on
/// the host reach.
fn site_toml(name: &str, api_port: u16, region: &RegionProcess, token: &str) -> String {
    format!(
        "[site]\nname = \"{name}\"\nregion_url = \"https://{HOST_FROM_GUEST}:{}\"\njoin_token = \"{token}\"\n\
         ca_fingerprint = \"{}\"\napi_url = \"https://127.0.0.1:{api_port}\"\n",
        region.port(),
        region.fingerprint,
    )
}

/// Starts (or restarts, keeping its state) the lab's region.
fn start_region(args: &Args) -> Result<RegionProcess, String> {
    let mut options = RegionOptions::new(args.work_dir.join("region"), args.region_port);
    options.names = vec![
        HOST_FROM_GUEST.into(),
        "127.0.0.1".into(),
        "localhost".into(),
    ];
    let region = RegionProcess::start(options)?;
    println!(
        "region: {} (dashboard; log {})",
        region.url(),
        region.log_path().display()
    );
    Ok(region)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("scs-edge-lab: {message}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("scs-edge-lab: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let mut region = start_region(args)?;
    let token = region.join_token(&args.site)?;
    let options = LabOptions::new(
        args.image.clone(),
        args.work_dir.clone(),
        args.api_port,
        SiteDelivery::FwCfg(site_toml(&args.site, args.api_port, &region, &token)),
    );
    let mut node = LabNode::boot(&options).map_err(|e| e.to_string())?;
    println!(
        "booting {} under {} ({}); console log: {}",
        args.image.display(),
        node.accel.0,
        node.accel.1,
        node.console_log().display()
    );
    node.console
        .wait_for("root@", BOOT_TIMEOUT)
        .map_err(|e| e.to_string())?;
    let ready = node
        .wait_agent_ready(BOOT_TIMEOUT)
        .map_err(|e| e.to_string())?;
    println!("agent READY {:.1} s after power-on", ready.as_secs_f64());

    let secrets = args.work_dir.join("secrets");
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
    let password = std::fs::read_to_string(&password_file).map_err(|e| e.to_string())?;
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
        return Err(format!("identity bootstrap failed: {output}"));
    }
    let (status, cert) = node
        .console
        .shell("cat /var/lib/scs-edge/tls/api.crt", Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    if status != 0 || !cert.contains("BEGIN CERTIFICATE") {
        return Err(format!("cannot read the agent's certificate: {cert}"));
    }
    let cacert = args.work_dir.join("api.crt");
    std::fs::write(&cacert, cert.trim_start()).map_err(|e| e.to_string())?;
    let clouds = args.work_dir.join("clouds.yaml");
    std::fs::write(
        &clouds,
        format!(
            "clouds:\n  scs-edge-lab:\n    auth:\n      auth_url: {}/identity/v3\n      username: admin\n      \
             password: {password}\n      project_name: admin\n      user_domain_name: Default\n      \
             project_domain_name: Default\n    region_name: RegionOne\n    identity_api_version: 3\n    \
             cacert: {}\n",
            node.api_url(),
            cacert.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let joined = scs_edge_lab::poll_until(JOIN_TIMEOUT, || {
        let site = region.site_status(&args.site).ok()??;
        (site["state"] == "active" && site["last_seq"].as_u64().unwrap_or(0) >= 1).then_some(site)
    })
    .ok_or_else(|| {
        format!(
            "site {} did not join the region within {JOIN_TIMEOUT:?}; region log:\n{}",
            args.site,
            region.log_tail(20)
        )
    })?;
    println!(
        "site {} joined the region: {} link, health {}",
        args.site, joined["connectivity"], joined["health"]
    );
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
