//! The command line: `scs-edge-agent run` starts the daemon; `flavor`, `image` and `server`
//! subcommands are a small admin CLI over the same domain services the API uses.
//!
//! Admin commands write desired state straight into the store (the daemon notices the commit within
//! `reconcile.change_poll_interval_ms`), so they work while the daemon is down and lose nothing when it
//! is killed. Output is JSON on stdout; errors go to stderr with an exit code per error class.
#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod host_network;
pub mod identity;
pub mod network;
pub mod update;

use crate::compute::{
    ComputeService, NetworkRequest, NewFlavor, NewServer, RebootKind, ServerStatus,
};
use crate::error_class::{Classify, ErrorClass};
use crate::image::format::DiskFormat;
use crate::image::{
    Caller, ImageQuery, ImageService, NewImage, SortDir, SortKey, VisibilityFilter,
};
use crate::network::NetworkService;
use clap::{Args, Parser, Subcommand};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// SCS Edge node agent.
#[derive(Debug, Parser)]
#[command(name = "scs-edge-agent", version, about)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "SCS_EDGE_CONFIG", default_value = crate::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// Whether `--config` (or `$SCS_EDGE_CONFIG`) named the file explicitly.
    pub fn config_is_explicit(&self) -> bool {
        self.config.as_os_str() != crate::config::DEFAULT_CONFIG_PATH
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent daemon.
    Run,
    /// Validate the configuration and print it with defaults filled in.
    CheckConfig,
    /// Manage flavors.
    #[command(subcommand)]
    Flavor(FlavorCommand),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Manage servers.
    #[command(subcommand)]
    Server(ServerCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Manage subnets.
    #[command(subcommand)]
    Subnet(network::SubnetCommand),
    /// Manage ports.
    #[command(subcommand)]
    Port(network::PortCommand),
    /// Manage security groups and their rules.
    #[command(subcommand)]
    SecurityGroup(network::SecurityGroupCommand),
    /// Manage routers.
    #[command(subcommand)]
    Router(network::RouterCommand),
    /// Manage floating IPs.
    #[command(subcommand)]
    FloatingIp(network::FloatingIpCommand),
    /// Identity: bootstrap the admin account, manage users, projects and grants.
    #[command(subcommand)]
    Identity(identity::IdentityCommand),
    /// Inspect and change (guarded) this node's own links.
    #[command(subcommand)]
    HostNetwork(host_network::HostNetworkCommand),
    /// First boot: find the site configuration and hardware profile, write the node's files.
    Provision(crate::provision::command::ProvisionArgs),
    /// Signed OS updates: import a release, show the update state, retry a failed version.
    #[command(subcommand)]
    Update(update::UpdateCommand),
}

/// `flavor …`
#[derive(Debug, Subcommand)]
pub enum FlavorCommand {
    /// Create a flavor.
    Create(FlavorCreate),
    /// List flavors.
    List,
    /// Show a flavor.
    Show {
        /// Flavor id.
        id: String,
    },
    /// Delete a flavor.
    Delete {
        /// Flavor id.
        id: String,
    },
}

/// `flavor create`
#[derive(Debug, Args)]
pub struct FlavorCreate {
    /// Name.
    #[arg(long)]
    pub name: String,
    /// Id (default: a new UUID).
    #[arg(long)]
    pub id: Option<String>,
    /// vCPUs.
    #[arg(long)]
    pub vcpus: u32,
    /// RAM in MiB.
    #[arg(long)]
    pub ram: u64,
    /// Root disk in GiB (0: as large as the image).
    #[arg(long, default_value_t = 0)]
    pub disk: u64,
    /// Extra spec `key=value` (repeatable).
    #[arg(long = "property", value_parser = parse_pair)]
    pub properties: Vec<(String, String)>,
}

/// `image …`
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import an image file.
    Import(ImageImport),
    /// List images.
    List,
    /// Show an image.
    Show {
        /// Image id.
        id: Uuid,
    },
    /// Delete an image.
    Delete {
        /// Image id.
        id: Uuid,
    },
}

/// `image import`
#[derive(Debug, Args)]
pub struct ImageImport {
    /// Name.
    #[arg(long)]
    pub name: String,
    /// File to import.
    #[arg(long)]
    pub file: PathBuf,
    /// raw or qcow2 (checked against the content).
    #[arg(long)]
    pub disk_format: String,
    /// Id (default: a new UUID).
    #[arg(long)]
    pub id: Option<Uuid>,
    /// Minimum root disk in GiB.
    #[arg(long, default_value_t = 0)]
    pub min_disk: u64,
    /// Minimum RAM in MiB.
    #[arg(long, default_value_t = 0)]
    pub min_ram: u64,
    /// Expected SHA-512 of the file (hex).
    #[arg(long)]
    pub sha512: Option<String>,
    /// Property `key=value` (repeatable).
    #[arg(long = "property", value_parser = parse_pair)]
    pub properties: Vec<(String, String)>,
}

/// `server …`
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Create a server.
    Create(Box<ServerCreate>),
    /// List servers.
    List,
    /// Show a server.
    Show {
        /// Server id.
        id: Uuid,
    },
    /// Power a stopped server on.
    Start {
        /// Server id.
        id: Uuid,
    },
    /// Shut a server down.
    Stop {
        /// Server id.
        id: Uuid,
    },
    /// Reboot a server.
    Reboot {
        /// Server id.
        id: Uuid,
        /// Power cycle instead of asking the guest.
        #[arg(long)]
        hard: bool,
    },
    /// Delete a server.
    Delete {
        /// Server id.
        id: Uuid,
    },
    /// Wait until a server reaches a status (or is gone, with `--status DELETED`).
    Wait {
        /// Server id.
        id: Uuid,
        /// Status to wait for: BUILD, ACTIVE, SHUTOFF, ERROR, … or DELETED.
        #[arg(long)]
        status: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

/// `server create`
#[derive(Debug, Args)]
pub struct ServerCreate {
    /// Name.
    #[arg(long)]
    pub name: String,
    /// Flavor id.
    #[arg(long)]
    pub flavor: String,
    /// Image id.
    #[arg(long)]
    pub image: Uuid,
    /// Id (default: a new UUID).
    #[arg(long)]
    pub id: Option<Uuid>,
    /// File with cloud-init user data.
    #[arg(long)]
    pub user_data: Option<PathBuf>,
    /// Metadata `key=value` (repeatable).
    #[arg(long = "meta", value_parser = parse_pair)]
    pub metadata: Vec<(String, String)>,
    /// A NIC on this network (repeatable, in guest order).
    #[arg(long = "network")]
    pub networks: Vec<Uuid>,
    /// A NIC on this existing port (repeatable, after the `--network` NICs).
    #[arg(long = "port")]
    pub ports: Vec<Uuid>,
    /// Security group of the ports made for `--network` (repeatable; default: the project's default).
    #[arg(long = "security-group")]
    pub security_groups: Vec<Uuid>,
    /// Plain tap NICs not on any network (nodes without networking).
    #[arg(long, default_value_t = 0)]
    pub nics: u32,
    /// Project id.
    #[arg(long, default_value = "admin")]
    pub project: String,
    /// User id.
    #[arg(long, default_value = "admin")]
    pub user: String,
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected key=value, got {text:?}"))
}

/// A failed admin command: message and exit code.
#[derive(Debug)]
pub struct CliFailure {
    /// For stderr.
    pub message: String,
    /// Exit code: 3 bad request, 4 not found, 5 conflict, 6 unavailable, 7 timeout (`server wait`),
    /// 8 host-network change not kept, 10 unauthorized, 11 forbidden, 1 otherwise.
    pub code: u8,
}

impl<E: Classify + std::fmt::Display> From<E> for CliFailure {
    fn from(err: E) -> Self {
        let code = match err.class() {
            ErrorClass::BadRequest | ErrorClass::TooLarge => 3,
            ErrorClass::NotFound => 4,
            ErrorClass::Conflict => 5,
            ErrorClass::Unavailable => 6,
            ErrorClass::Unauthorized => 10,
            ErrorClass::Forbidden => 11,
            ErrorClass::Internal => 1,
        };
        Self {
            message: err.to_string(),
            code,
        }
    }
}

impl CliFailure {
    fn other(message: String) -> Self {
        Self { message, code: 1 }
    }
}

pub(crate) fn print<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// The domain services admin commands use.
pub struct AdminServices {
    /// Images.
    pub images: std::sync::Arc<ImageService>,
    /// Flavors and servers.
    pub compute: std::sync::Arc<ComputeService>,
    /// Networking.
    pub network: std::sync::Arc<NetworkService>,
    /// Identity.
    pub identity: std::sync::Arc<crate::identity::IdentityService>,
    /// The state directory (pending host-network changes live there).
    pub state_dir: std::path::PathBuf,
}

/// Runs one admin command against the services.
pub fn run_admin(command: Command, services: &AdminServices) -> Result<(), CliFailure> {
    let (images, compute) = (services.images.as_ref(), services.compute.as_ref());
    match command {
        Command::Run | Command::CheckConfig | Command::Provision(_) | Command::Update(_) => {
            Err(CliFailure::other("not an admin command".into()))
        }
        Command::Network(cmd) => network::network(cmd, &services.network),
        Command::Subnet(cmd) => network::subnet(cmd, &services.network),
        Command::Port(cmd) => network::port(cmd, &services.network),
        Command::SecurityGroup(cmd) => network::security_group(cmd, &services.network),
        Command::Router(cmd) => network::router(cmd, &services.network),
        Command::FloatingIp(cmd) => network::floating_ip(cmd, &services.network),
        Command::HostNetwork(cmd) => host_network::run(cmd, &services.state_dir),
        Command::Identity(cmd) => identity::run(cmd, &services.identity),
        Command::Flavor(cmd) => match cmd {
            FlavorCommand::Create(args) => {
                print(&compute.create_flavor(NewFlavor {
                    id: args.id,
                    name: args.name,
                    description: None,
                    vcpus: args.vcpus,
                    ram_mb: args.ram,
                    disk_gb: args.disk,
                    ephemeral_gb: 0,
                    swap_mb: 0,
                    is_public: true,
                    extra_specs: args.properties.into_iter().collect(),
                })?);
                Ok(())
            }
            FlavorCommand::List => {
                let _: () = print(&compute.flavors()?);
                Ok(())
            }
            FlavorCommand::Show { id } => {
                let _: () = print(&compute.flavor(&id)?);
                Ok(())
            }
            FlavorCommand::Delete { id } => Ok(compute.delete_flavor(&id)?),
        },
        Command::Image(cmd) => match cmd {
            ImageCommand::Import(args) => {
                let mut file = std::fs::File::open(&args.file).map_err(|e| CliFailure {
                    message: format!("cannot open {}: {e}", args.file.display()),
                    code: 3,
                })?;
                let request = NewImage {
                    id: args.id,
                    name: args.name,
                    disk_format: DiskFormat::parse(&args.disk_format),
                    min_disk_gb: args.min_disk,
                    min_ram_mb: args.min_ram,
                    properties: args.properties.into_iter().collect::<BTreeMap<_, _>>(),
                    expected_sha512: args.sha512,
                };
                let _: () = print(&images.import(request, &mut file)?);
                Ok(())
            }
            ImageCommand::List => {
                let everything = ImageQuery {
                    visibility: Some(VisibilityFilter::All),
                    sort: vec![(SortKey::CreatedAt, SortDir::Asc)],
                    ..ImageQuery::default()
                };
                let _: () = print(&images.list(&Caller::operator(), &everything)?.images);
                Ok(())
            }
            ImageCommand::Show { id } => {
                let _: () = print(&images.get(id)?);
                Ok(())
            }
            ImageCommand::Delete { id } => Ok(images.delete(id, &Caller::operator())?),
        },
        Command::Server(cmd) => match cmd {
            ServerCommand::Create(args) => {
                let user_data = match &args.user_data {
                    Some(path) => Some(std::fs::read(path).map_err(|e| CliFailure {
                        message: format!("cannot read {}: {e}", path.display()),
                        code: 3,
                    })?),
                    None => None,
                };
                let _: () = print(
                    &compute.create_server(NewServer {
                        id: args.id,
                        name: args.name,
                        project_id: args.project,
                        user_id: args.user,
                        flavor_id: args.flavor,
                        image_id: args.image,
                        user_data,
                        metadata: args.metadata.into_iter().collect(),
                        networks: args
                            .networks
                            .into_iter()
                            .map(NetworkRequest::Network)
                            .chain(args.ports.into_iter().map(NetworkRequest::Port))
                            .collect(),
                        security_groups: (!args.security_groups.is_empty())
                            .then_some(args.security_groups),
                        nics: args.nics,
                        key_name: None,
                        availability_zone: None,
                    })?,
                );
                Ok(())
            }
            ServerCommand::List => {
                let _: () = print(&compute.servers()?);
                Ok(())
            }
            ServerCommand::Show { id } => {
                let _: () = print(&compute.server(id)?);
                Ok(())
            }
            ServerCommand::Start { id } => {
                let _: () = print(&compute.start_server(id)?);
                Ok(())
            }
            ServerCommand::Stop { id } => {
                let _: () = print(&compute.stop_server(id)?);
                Ok(())
            }
            ServerCommand::Reboot { id, hard } => {
                let _: () = print(&compute.reboot_server(
                    id,
                    if hard {
                        RebootKind::Hard
                    } else {
                        RebootKind::Soft
                    },
                )?);
                Ok(())
            }
            ServerCommand::Delete { id } => Ok(compute.delete_server(id)?),
            ServerCommand::Wait {
                id,
                status,
                timeout,
            } => wait(compute, id, &status, Duration::from_secs(timeout)),
        },
    }
}

/// Polls the store until the server has `status` and no pending work (or is gone for `DELETED`).
fn wait(
    compute: &ComputeService,
    id: Uuid,
    status: &str,
    timeout: Duration,
) -> Result<(), CliFailure> {
    let want_deleted = status == "DELETED";
    let want = if want_deleted {
        None
    } else {
        Some(ServerStatus::parse(status).ok_or_else(|| CliFailure {
            message: format!("unknown status {status:?}"),
            code: 3,
        })?)
    };
    let started = Instant::now();
    loop {
        match compute.server(id) {
            Ok(server)
                if Some(server.status) == want
                    && server.generation == server.observed_generation =>
            {
                print(&server);
                return Ok(());
            }
            Ok(server) if started.elapsed() >= timeout => {
                return Err(CliFailure {
                    message: format!(
                        "server {id} is {} after {timeout:?}, not {status}",
                        server.status.as_str()
                    ),
                    code: 7,
                });
            }
            Err(crate::compute::ComputeError::ServerNotFound(_)) if want_deleted => return Ok(()),
            Err(err) if !matches!(err, crate::compute::ComputeError::ServerNotFound(_)) => {
                return Err(err.into());
            }
            Err(err) if started.elapsed() >= timeout => return Err(err.into()),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
