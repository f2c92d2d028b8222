//! `scs-edge-region`: the service (`serve`) and the operator CLI over the same fleet domain.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use jiff::SignedDuration;
use scs_edge_region::ca::RegionCa;
use scs_edge_region::config::{DEFAULT_CONFIG_PATH, RegionConfig};
use scs_edge_region::fleet::status::{connectivity, site_health};
use scs_edge_region::fleet::{EnrollmentPolicy, Fleet, SystemClock};
use scs_edge_region::http::{self, AppState, LoginSettings, OperatorAccess, Sessions};
use scs_edge_region::operator_auth::{OidcSettings, OperatorAuth};
use scs_edge_region::releases::{Releases, ReleasesError};
use scs_edge_region::rollouts::service::Rollouts;
use scs_edge_region::store::{Delivery, DesiredChange, Store};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

mod rollout_command;
use rollout_command::RolloutCommand;

#[derive(Parser)]
#[command(
    name = "scs-edge-region",
    version,
    about = "SCS Edge region: the fleet's enrollment CA, inventory and dashboard"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "SCS_EDGE_REGION_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: node endpoints, operator API and dashboard on one HTTPS port.
    Serve,
    /// Create the state directory, the CA and the database; print the CA fingerprint sites pin.
    Init,
    /// Sites of the fleet.
    #[command(subcommand)]
    Site(SiteCommand),
    /// Join tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// OS releases the region mirrors and serves to its sites (`[releases]`).
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// Rollouts of a release across the fleet in waves.
    #[command(subcommand)]
    Rollout(RolloutCommand),
}

#[derive(Subcommand)]
enum ReleaseCommand {
    /// Mirror a release repository signed with `scs-edge-release` — its folder, or a bundle file —
    /// after verifying it against the fleet's root of trust.
    Publish {
        /// The release tool's repository folder, or a `.bundle` file.
        source: PathBuf,
    },
    /// List releases, newest first.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one release with its artifacts.
    Show {
        /// Version.
        version: String,
    },
    /// Withdraw a release: offered to no site from now on.
    Withdraw {
        /// Version.
        version: String,
        /// Why, for the record and the dashboard.
        #[arg(long)]
        reason: String,
    },
    /// Re-sign the served timestamp now if less than half its lifetime is left (`serve` does this
    /// hourly).
    Timestamp,
}

#[derive(Subcommand)]
enum SiteCommand {
    /// Add a site (pending until a node joins with a token).
    Add {
        /// Site name: lower-case letters, digits, '-'.
        name: String,
        /// Labels, `key=value`, repeatable.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// List sites.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one site with its latest report.
    Show {
        /// Site name.
        name: String,
    },
    /// Change a site's settings the region delivers in its desired state.
    Set {
        /// Site name.
        name: String,
        /// Its maintenance window (`sat,sun 22:00-02:00`, UTC): the node reboots into an update
        /// only then, and rollouts offer ahead of it.
        #[arg(long, conflicts_with = "no_window")]
        window: Option<String>,
        /// Remove the window the region set: the node's own applies.
        #[arg(long)]
        no_window: bool,
        /// How it gets releases: `online` from the region, or `manual` on a stick (air-gapped;
        /// rollouts put it in their manual last wave).
        #[arg(long, value_parser = ["online", "manual"])]
        delivery: Option<String>,
    },
    /// Decommission a site: revoke its certificates and void its tokens.
    Remove {
        /// Site name.
        name: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a one-time join token for a site; printed once, stored only as a hash.
    Create {
        /// Site name.
        site: String,
        /// Lifetime in hours (default from the configuration).
        #[arg(long)]
        ttl_hours: Option<u32>,
    },
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected key=value, got {text:?}"))
}

fn main() -> Result<std::process::ExitCode> {
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    let cli = Cli::parse();
    let config = RegionConfig::load(&cli.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let status = runtime.block_on(run(cli.command, config))?;
    Ok(std::process::ExitCode::from(status))
}

async fn open_fleet(config: &RegionConfig) -> Result<Fleet> {
    std::fs::create_dir_all(&config.region.state_dir)
        .with_context(|| format!("create {}", config.region.state_dir.display()))?;
    let ca = RegionCa::load_or_create(
        &config.region.state_dir,
        &config.region.name,
        jiff::Timestamp::now(),
    )?;
    let store = Store::open(&config.database_url()).await?;
    Ok(Fleet::new(
        store,
        Arc::new(ca),
        Arc::new(SystemClock),
        EnrollmentPolicy {
            certificate_lifetime: config.enrollment.node_certificate_lifetime(),
            token_lifetime: SignedDuration::from_hours(i64::from(
                config.enrollment.join_token_hours,
            )),
        },
    ))
}

/// Runs `command`; returns the process's exit status.
async fn run(command: Command, config: RegionConfig) -> Result<u8> {
    let fleet = open_fleet(&config).await?;
    let mut out = std::io::stdout().lock();
    match command {
        Command::Serve => {
            drop(out);
            serve(config, fleet).await?;
        }
        Command::Init => {
            writeln!(
                out,
                "region {} ready; database {}",
                config.region.name,
                fleet.store().engine()
            )?;
            writeln!(out, "ca_fingerprint = \"{}\"", fleet.ca().fingerprint())?;
        }
        Command::Site(SiteCommand::Add { name, labels }) => {
            let site = fleet
                .add_site(&name, labels.into_iter().collect::<BTreeMap<_, _>>())
                .await?;
            writeln!(out, "added site {} ({})", site.name, site.state.as_str())?;
        }
        Command::Site(SiteCommand::List { json }) => {
            let sites = fleet.sites().await?;
            let now = fleet.now();
            let interval =
                SignedDuration::from_secs(i64::from(config.reports.expected_interval_secs));
            if json {
                let rows: Vec<_> = sites
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "name": s.name, "state": s.state.as_str(),
                            "connectivity": connectivity(s, now, interval).as_str(),
                            "health": site_health(s).as_str(),
                            "last_seen": s.last_seen, "last_seq": s.last_seq,
                        })
                    })
                    .collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
            } else {
                writeln!(
                    out,
                    "{:<24} {:<15} {:<8} {:<10} {:<10} LAST SEEN",
                    "SITE", "STATE", "LINK", "HEALTH", "AGENT"
                )?;
                for s in &sites {
                    let report = s.last_report.as_ref();
                    writeln!(
                        out,
                        "{:<24} {:<15} {:<8} {:<10} {:<10} {}",
                        s.name,
                        s.state.as_str(),
                        connectivity(s, now, interval).as_str(),
                        site_health(s).as_str(),
                        report.map_or("-", |r| r.versions.agent.as_str()),
                        s.last_seen.map_or("never".to_owned(), |t| t.to_string()),
                    )?;
                }
            }
        }
        Command::Site(SiteCommand::Show { name }) => {
            let detail = fleet.site(&name).await?;
            let site = &detail.site;
            writeln!(out, "site:        {}", site.name)?;
            writeln!(out, "state:       {}", site.state.as_str())?;
            writeln!(out, "created:     {}", site.created_at)?;
            writeln!(
                out,
                "joined:      {}",
                site.joined_at.map_or("-".into(), |t| t.to_string())
            )?;
            writeln!(
                out,
                "last seen:   {}",
                site.last_seen.map_or("never".into(), |t| t.to_string())
            )?;
            writeln!(out, "reports:     {}", site.last_seq)?;
            if let Some(report) = &site.last_report {
                writeln!(out, "agent:       {}", report.versions.agent)?;
                writeln!(out, "os:          {}", report.versions.os)?;
                for h in &report.health {
                    writeln!(
                        out,
                        "health:      {:<10} {}{}",
                        h.component,
                        h.state.as_str(),
                        h.detail
                            .as_ref()
                            .map_or(String::new(), |d| format!(" ({d})"))
                    )?;
                }
            }
            for (k, v) in &site.desired.labels {
                writeln!(out, "label:       {k}={v}")?;
            }
        }
        Command::Site(SiteCommand::Remove { name }) => {
            let site = fleet.remove_site(&name).await?;
            writeln!(
                out,
                "site {} decommissioned; its certificates are revoked",
                site.name
            )?;
        }
        Command::Release(command) => {
            let releases = open_releases(&config, &fleet)?;
            release_command(command, &releases, &mut out).await?;
        }
        Command::Rollout(command) => {
            let rollouts = Rollouts::new(
                fleet.store().clone(),
                Arc::new(SystemClock),
                SignedDuration::from_secs(i64::from(config.reports.expected_interval_secs)),
            );
            let releases = async || open_releases(&config, &fleet);
            return rollout_command::run(command, &rollouts, releases, CLI_OPERATOR, &mut out)
                .await;
        }
        Command::Site(SiteCommand::Set {
            name,
            window,
            no_window,
            delivery,
        }) => {
            if let Some(delivery) = delivery.as_deref().and_then(Delivery::parse) {
                fleet.set_delivery(&name, delivery).await?;
                writeln!(out, "site {name}: releases delivered {}", delivery.as_str())?;
            }
            let window = match (window, no_window) {
                (Some(window), _) => Some(Some(window)),
                (None, true) => Some(None),
                (None, false) => None,
            };
            if window.is_some() {
                let change = DesiredChange {
                    maintenance_window: window,
                    ..DesiredChange::default()
                };
                let desired = fleet.change_desired(&name, &change).await?;
                writeln!(
                    out,
                    "site {name}: maintenance window {} (desired generation {})",
                    desired
                        .maintenance_window
                        .as_deref()
                        .unwrap_or("the node's own"),
                    desired.generation
                )?;
            }
        }
        Command::Token(TokenCommand::Create { site, ttl_hours }) => {
            let token = fleet
                .create_join_token(
                    &site,
                    ttl_hours.map(|h| SignedDuration::from_hours(i64::from(h))),
                )
                .await?;
            writeln!(out, "site = \"{}\"", token.site)?;
            writeln!(out, "join_token = \"{}\"", token.token)?;
            writeln!(out, "ca_fingerprint = \"{}\"", fleet.ca().fingerprint())?;
            writeln!(
                out,
                "# expires {}; shown once, stored only as a hash",
                token.expires_at
            )?;
        }
    }
    Ok(0)
}

/// The release mirror; an error naming the missing section when `[releases]` is not configured.
fn open_releases(config: &RegionConfig, fleet: &Fleet) -> Result<Releases> {
    let settings = config
        .release_settings()
        .ok_or(ReleasesError::NotConfigured)?;
    Ok(Releases::open(
        &settings,
        fleet.store().clone(),
        Arc::new(SystemClock),
    )?)
}

/// The CLI acts as the host's operator (`cli`): whoever can run it can read the state directory.
const CLI_OPERATOR: &str = "cli";

async fn release_command(
    command: ReleaseCommand,
    releases: &Releases,
    out: &mut impl Write,
) -> Result<()> {
    match command {
        ReleaseCommand::Publish { source } => {
            for record in releases.publish(&source, CLI_OPERATOR).await? {
                writeln!(
                    out,
                    "published {} (from {} up, {} bytes)",
                    record.manifest.version,
                    record.manifest.min_from_version,
                    record
                        .manifest
                        .artifacts
                        .iter()
                        .map(|a| a.length)
                        .sum::<u64>()
                )?;
            }
        }
        ReleaseCommand::List { json } => {
            let list = releases.list().await?;
            if json {
                let rows: Vec<_> = list.iter().map(http::release_json).collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
            } else {
                writeln!(
                    out,
                    "{:<16} {:<10} {:<12} {:<16} PUBLISHED",
                    "VERSION", "STATE", "FROM", "BY"
                )?;
                for record in &list {
                    writeln!(
                        out,
                        "{:<16} {:<10} {:<12} {:<16} {}",
                        record.manifest.version.to_string(),
                        record.state.as_str(),
                        record.manifest.min_from_version.to_string(),
                        record.published_by,
                        record.published_at
                    )?;
                }
            }
        }
        ReleaseCommand::Show { version } => {
            let record = releases.show(&version).await?;
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&http::release_json(&record))?
            )?;
        }
        ReleaseCommand::Withdraw { version, reason } => {
            let record = releases.withdraw(&version, CLI_OPERATOR, &reason).await?;
            writeln!(
                out,
                "release {} withdrawn: no site is offered it any more",
                record.manifest.version
            )?;
        }
        ReleaseCommand::Timestamp => match releases.refresh_timestamp_if_due().await? {
            Some(version) => writeln!(out, "timestamp re-signed (version {version})")?,
            None => writeln!(out, "timestamp still fresh; nothing signed")?,
        },
    }
    Ok(())
}

/// Keeps the served timestamp fresh: sites refuse a stale one (the frozen-mirror defence).
async fn refresh_timestamps(releases: Releases, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_hours(1));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(error) = releases.refresh_timestamp_if_due().await {
            tracing::warn!(%error, "re-signing the release timestamp failed");
        }
    }
}

async fn serve(config: RegionConfig, fleet: Fleet) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let http_client = reqwest::Client::builder()
        .use_preconfigured_tls(identity_provider_tls()?)
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let operator_access = if let Some(settings) = &config.oidc {
        let slot = Arc::new(std::sync::OnceLock::new());
        tokio::spawn(discover_identity_provider(
            settings.clone(),
            http_client.clone(),
            slot.clone(),
        ));
        OperatorAccess::Oidc(slot)
    } else {
        tracing::warn!(
            "no [oidc] configured: the operator API and dashboard answer loopback clients only, without authentication"
        );
        OperatorAccess::LoopbackOnly
    };
    let releases = if config.releases.is_some() {
        Some(open_releases(&config, &fleet)?)
    } else {
        tracing::info!("no [releases] configured: the region serves no OS releases");
        None
    };
    let expected_interval =
        SignedDuration::from_secs(i64::from(config.reports.expected_interval_secs));
    let rollouts = Rollouts::new(
        fleet.store().clone(),
        Arc::new(SystemClock),
        expected_interval,
    );
    let public_url = config.public_url();
    let state = AppState {
        fleet: fleet.clone(),
        operator_access,
        login: Arc::new(LoginSettings {
            client_id: config.dashboard.client_id.clone(),
            client_secret: config.dashboard.client_secret.clone(),
            resource: config.dashboard.resource.clone(),
            redirect_uri: format!("{public_url}/oidc/callback"),
        }),
        sessions: Sessions::default(),
        http_client,
        region_name: config.region.name.as_str().into(),
        expected_interval,
        releases: releases.clone(),
        rollouts: rollouts.clone(),
    };
    let tls = http::tls_config(fleet.ca(), &config.listen.names, fleet.now())
        .map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(config.listen.address)
        .await
        .with_context(|| format!("bind {}", config.listen.address))?;
    tracing::info!(
        address = %listener.local_addr()?,
        database = fleet.store().engine(),
        ca_fingerprint = %fleet.ca().fingerprint(),
        "scs-edge-region serving"
    );
    let shutdown = CancellationToken::new();
    let retention = SignedDuration::from_hours(i64::from(config.reports.retention_hours));
    let pruner = tokio::spawn(prune_reports(fleet.clone(), retention, shutdown.clone()));
    let refresher =
        releases.map(|releases| tokio::spawn(refresh_timestamps(releases, shutdown.clone())));
    let driver = tokio::spawn(drive_rollouts(
        rollouts,
        std::time::Duration::from_millis(config.rollouts.tick_millis),
        shutdown.clone(),
    ));
    let server = tokio::spawn(http::serve(
        listener,
        tls,
        http::router(state),
        shutdown.clone(),
    ));
    wait_for_signal().await?;
    tracing::info!("shutting down");
    shutdown.cancel();
    let _ = server.await;
    let _ = pruner.await;
    let _ = driver.await;
    if let Some(refresher) = refresher {
        let _ = refresher.await;
    }
    Ok(())
}

/// Discovers the identity provider, retrying with backoff until it answers: nodes are served from
/// the start, operators once the provider was reached (503 until then).
async fn discover_identity_provider(
    settings: OidcSettings,
    http: reqwest::Client,
    slot: Arc<std::sync::OnceLock<OperatorAuth>>,
) {
    let mut delay = std::time::Duration::from_secs(1);
    loop {
        match OperatorAuth::discover(settings.clone(), http.clone()).await {
            Ok(auth) => {
                tracing::info!(issuer = %settings.issuer, "identity provider discovered");
                let _ = slot.set(auth);
                return;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?delay, "identity provider discovery failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_mins(1));
            }
        }
    }
}

/// Steps every active rollout each `every`: offers, follows, halts. A failed tick is logged and
/// the next one tries again from the stored state; several region processes on one database stay
/// correct through the rollouts' revision check.
async fn drive_rollouts(
    rollouts: Rollouts,
    every: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let started = std::time::Instant::now();
        if let Err(error) = rollouts.step_all().await {
            tracing::warn!(%error, "stepping rollouts failed");
        }
        let took = started.elapsed();
        if took > std::time::Duration::from_millis(100) {
            tracing::info!(?took, "rollouts stepped");
        }
    }
}

/// The report history is kept for `retention`; pruning hourly keeps the table bounded.
async fn prune_reports(fleet: Fleet, retention: SignedDuration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_hours(1));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match fleet.store().prune_reports(fleet.now() - retention).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "old reports pruned"),
            Err(error) => tracing::warn!(%error, "pruning reports failed"),
        }
    }
}

/// TLS towards the identity provider: the system's CA bundle.
fn identity_provider_tls() -> Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    let bundle = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt");
    if bundle.exists() {
        for cert in CertificateDer::pem_file_iter(bundle).context("read the system CA bundle")? {
            let _ = roots.add(cert.context("system CA bundle")?);
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
