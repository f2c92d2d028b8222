//! `scs-edge-lab` (`make lab`): boots one SCS Edge site from the node image in QEMU and hands the
//! operator an OpenStack `clouds.yaml` for it.
//!
//! The site gets its configuration over QEMU fw_cfg as an edge server gets it from its BMC or a USB
//! stick; the image provisions itself from it and the `qemu-q35` hardware profile. Once the agent is
//! READY the lab bootstraps the admin account over the serial console, copies the agent's API
//! certificate out, writes `<work dir>/clouds.yaml` and prints `ready: <path>`. It then keeps the
//! node running until Ctrl-C.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use scs_edge_lab::{LabNode, LabOptions, SiteDelivery, default_image, target_dir};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Under TCG on two busy cores a first boot takes minutes, not seconds.
const BOOT_TIMEOUT: Duration = Duration::from_mins(15);

struct Args {
    image: PathBuf,
    work_dir: PathBuf,
    api_port: u16,
    site: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        image: default_image(),
        work_dir: target_dir().join("lab"),
        api_port: 8443,
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
            "--site" => args.site = value()?,
            "--help" | "-h" => {
                return Err(
                    "usage: scs-edge-lab [--image RAW] [--work-dir DIR] [--api-port PORT] [--site NAME]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// The lab's site configuration. The region URL points at the host (QEMU user networking's
/// 10.0.2.2); until the region service exists nothing answers there and the site runs on its own.
/// The API URL is the port forward, so the service catalog names what clients on the host reach.
fn site_toml(name: &str, api_port: u16) -> String {
    format!(
        "[site]\nname = \"{name}\"\nregion_url = \"https://10.0.2.2:9443\"\njoin_token = \"lab-join-token\"\n\
         ca_fingerprint = \"sha256:{}\"\napi_url = \"https://127.0.0.1:{api_port}\"\n",
        "0".repeat(64)
    )
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
    let options = LabOptions::new(
        args.image.clone(),
        args.work_dir.clone(),
        args.api_port,
        SiteDelivery::FwCfg(site_toml(&args.site, args.api_port)),
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
    println!("ready: {}", clouds.display());
    println!(
        "  OS_CLIENT_CONFIG_FILE={} /opt/scs-edge-clients/bin/openstack --os-cloud scs-edge-lab flavor list",
        clouds.display()
    );
    println!("Ctrl-C stops the node.");
    while node.is_running() {
        std::thread::sleep(Duration::from_secs(1));
    }
    Err("the node powered off".into())
}
