//! `scs-edge-agent`: the daemon and its admin CLI.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a CLI's output is its interface

use anyhow::Context as _;
use clap::Parser;
use scs_edge_agent::cli::{Cli, Command, run_admin};
use scs_edge_agent::compute::kvm_probe::{DevKvmProbe, choose_virt_type};
use scs_edge_agent::config::AgentConfig;
use scs_edge_agent::daemon::{self, Agent, HostPorts};
use scs_edge_agent::system::logging;
use scs_edge_agent::system::notify::SdNotifier;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    // One crypto provider for the whole process, before anything touches rustls.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    // Provisioning writes agent.toml: it runs before there is one to load.
    if let Some(Command::Provision(args)) = &cli.command {
        return ExitCode::from(scs_edge_agent::provision::command::run(args));
    }
    let config = match AgentConfig::load(&cli.config, cli.config_is_explicit()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("scs-edge-agent: {err}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => match run_daemon(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!("{err:#}");
                eprintln!("scs-edge-agent: {err:#}");
                ExitCode::FAILURE
            }
        },
        Command::Update(command) => {
            ExitCode::from(scs_edge_agent::cli::update::run(command, &config))
        }
        Command::CheckConfig => {
            println!("{}", toml::to_string_pretty(&config).unwrap_or_default());
            ExitCode::SUCCESS
        }
        admin => {
            let result = daemon::services_without_loops(&config)
                .map_err(|err| scs_edge_agent::cli::CliFailure {
                    message: err.to_string(),
                    code: 1,
                })
                .and_then(|services| run_admin(admin, &services));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(failure) => {
                    eprintln!("scs-edge-agent: {}", failure.message);
                    ExitCode::from(failure.code)
                }
            }
        }
    }
}

fn run_daemon(config: AgentConfig) -> anyhow::Result<()> {
    let sink = logging::init(&config.log.filter, config.log.format);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        ?sink,
        "scs-edge-agent starting"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("agent")
        .build()?;
    runtime.block_on(async move {
        let (store, node_id) = daemon::open_store(&config).context("opening the store")?;
        let virt_type = choose_virt_type(config.compute.virt_type, &DevKvmProbe::default());
        tracing::info!(virt_type = ?virt_type.0, reason = %virt_type.1, "accelerator chosen");
        let ports = HostPorts::real(&config, &node_id, Some(&tokio::runtime::Handle::current()))?;
        let agent = Agent::assemble(config, store, node_id, virt_type, &ports);
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(err) => {
                        tracing::error!(%err, "cannot listen for SIGTERM");
                        return;
                    }
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("shutdown requested");
            signals.cancel();
        });
        agent
            .run(Arc::new(SdNotifier::from_env()), shutdown)
            .await
            .context("running the agent")
    })
}
