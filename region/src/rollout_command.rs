//! `scs-edge-region rollout …`: the operator CLI for rollouts, over the same service the REST API
//! and the driver use (the store opened directly, the actor `cli`). `show --watch` follows a
//! rollout until it ends: bars per wave on a terminal, a line per change otherwise, and an exit
//! status scripts can wait on.

use anyhow::{Context as _, Result};
use clap::Subcommand;
use scs_edge_region::http::rollout_json;
use scs_edge_region::releases::Releases;
use scs_edge_region::rollouts::progress::{DISPLAY_STATES, Summary};
use scs_edge_region::rollouts::service::{RolloutView, Rollouts};
use scs_edge_region::rollouts::spec::RolloutSpec;
use std::io::{IsTerminal as _, Read as _, Write};
use std::path::PathBuf;
use std::time::Duration;

/// Exit status of `show --watch` when the rollout halted.
pub(crate) const EXIT_HALTED: u8 = 3;
/// Exit status of `show --watch` when the rollout was stopped.
pub(crate) const EXIT_STOPPED: u8 = 4;
/// How often `--watch` reads the rollout again.
const WATCH_EVERY: Duration = Duration::from_secs(2);

#[derive(Subcommand)]
pub(crate) enum RolloutCommand {
    /// Create a rollout from a spec (JSON: name, target_version, waves, max_parallel, …).
    Create {
        /// The spec file, or `-` for standard input.
        #[arg(long)]
        file: PathBuf,
    },
    /// List rollouts, newest first.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a rollout: waves, every site's state, the halt reason.
    Show {
        /// Rollout name.
        name: String,
        /// JSON, as the REST API answers.
        #[arg(long)]
        json: bool,
        /// Follow it until it completes (exit 0), halts (3) or is stopped (4).
        #[arg(long, conflicts_with = "json")]
        watch: bool,
    },
    /// Pause a running rollout: offers not begun go back, updates under way finish.
    Pause {
        /// Rollout name.
        name: String,
        /// Why, for the record.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Resume a paused or halted rollout; `--target` points it at a fixed release first.
    Resume {
        /// Rollout name.
        name: String,
        /// A published release to roll out instead, from the first wave.
        #[arg(long)]
        target: Option<String>,
    },
    /// Stop a rollout for good.
    Stop {
        /// Rollout name.
        name: String,
        /// Why, for the record.
        #[arg(long)]
        reason: String,
    },
    /// End the wait for the manual wave: air-gapped sites that did not report the release are
    /// skipped.
    Finish {
        /// Rollout name.
        name: String,
    },
    /// Write the bundle of the rollout's release for the air-gapped sites' stick.
    Bundle {
        /// Rollout name.
        name: String,
        /// The bundle file to write.
        #[arg(short, long)]
        out: PathBuf,
        /// A freshness waiver (`scs-edge-release waiver`) to ship with it.
        #[arg(long)]
        waiver: Option<PathBuf>,
    },
    /// Engage the fleet-wide switch: no rollout offers anything until `release-all`.
    StopAll {
        /// Why, for the record.
        #[arg(long)]
        reason: String,
    },
    /// Release the fleet-wide switch.
    ReleaseAll {
        /// Why, for the record.
        #[arg(long)]
        reason: String,
    },
}

/// Runs `command` as `actor`; returns the process's exit status.
pub(crate) async fn run(
    command: RolloutCommand,
    rollouts: &Rollouts,
    releases: impl AsyncFnOnce() -> Result<Releases>,
    actor: &str,
    out: &mut impl Write,
) -> Result<u8> {
    match command {
        RolloutCommand::Create { file } => {
            let text = if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                text
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("read {}", file.display()))?
            };
            let spec: RolloutSpec = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a rollout spec", file.display()))?;
            let created = rollouts.create(&spec, actor).await?;
            writeln!(
                out,
                "rollout {} of {} created: {} sites in {} waves",
                created.record.name,
                created.record.target_version,
                created.state.sites.len(),
                created.plan.waves.len()
            )?;
        }
        RolloutCommand::List { json } => {
            let list = rollouts.list().await?;
            if json {
                let rows: Vec<_> = list
                    .iter()
                    .map(|view| {
                        serde_json::json!({
                            "name": view.record.name,
                            "target_version": view.record.target_version,
                            "state": view.state.progress.name(),
                            "created_at": view.record.created_at,
                            "created_by": view.record.created_by,
                        })
                    })
                    .collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
            } else {
                writeln!(
                    out,
                    "{:<24} {:<12} {:<10} {:<8} {:>6}  CREATED",
                    "NAME", "TARGET", "STATE", "WAVE", "SITES"
                )?;
                for view in &list {
                    writeln!(
                        out,
                        "{:<24} {:<12} {:<10} {:<8} {:>6}  {} by {}",
                        view.record.name,
                        view.record.target_version,
                        view.state.progress.name(),
                        view.state.progress.wave().map_or_else(
                            || "-".to_owned(),
                            |wave| format!("{}/{}", wave + 1, view.plan.waves.len())
                        ),
                        view.state.sites.len(),
                        view.record.created_at,
                        view.record.created_by
                    )?;
                }
            }
        }
        RolloutCommand::Show { name, json, watch } => {
            if watch {
                return watch_rollout(rollouts, &name, out).await;
            }
            let (view, summary) = rollouts.progress(&name).await?;
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&rollout_json(&view, &summary))?
                )?;
            } else {
                render(&view, &summary, out)?;
            }
        }
        RolloutCommand::Pause { name, reason } => {
            rollouts.pause(&name, actor, &reason).await?;
            writeln!(out, "rollout {name} paused")?;
        }
        RolloutCommand::Resume { name, target } => {
            let view = rollouts.resume(&name, actor, target.as_deref()).await?;
            writeln!(
                out,
                "rollout {name} resumed ({})",
                view.record.target_version
            )?;
        }
        RolloutCommand::Stop { name, reason } => {
            rollouts.stop(&name, actor, &reason).await?;
            writeln!(out, "rollout {name} stopped")?;
        }
        RolloutCommand::Finish { name } => {
            rollouts.finish(&name, actor).await?;
            writeln!(out, "rollout {name}: manual wave finished")?;
        }
        RolloutCommand::Bundle {
            name,
            out: file,
            waiver,
        } => {
            let view = rollouts.show(&name).await?;
            let bytes = releases()
                .await?
                .export_bundle(&view.record.target_version, waiver.as_deref(), &file)
                .await?;
            let waiting: Vec<&str> = view
                .plan
                .waves
                .iter()
                .filter(|wave| wave.manual)
                .flat_map(|wave| &wave.sites)
                .map(String::as_str)
                .collect();
            writeln!(
                out,
                "wrote {} ({bytes} bytes): release {} for {}",
                file.display(),
                view.record.target_version,
                if waiting.is_empty() {
                    "no air-gapped site of this rollout".to_owned()
                } else {
                    waiting.join(", ")
                }
            )?;
        }
        RolloutCommand::StopAll { reason } => {
            rollouts.set_switch(true, actor, &reason).await?;
            writeln!(
                out,
                "rollout switch engaged: no rollout offers anything; offers not begun went back"
            )?;
        }
        RolloutCommand::ReleaseAll { reason } => {
            rollouts.set_switch(false, actor, &reason).await?;
            writeln!(out, "rollout switch released")?;
        }
    }
    Ok(0)
}

/// The human form of `rollout show`.
fn render(view: &RolloutView, summary: &Summary, out: &mut impl Write) -> Result<()> {
    writeln!(
        out,
        "rollout {} of {}: {}{}",
        view.record.name,
        view.record.target_version,
        summary.state,
        summary.wave.map_or_else(String::new, |wave| format!(
            ", wave {}/{} ({})",
            wave + 1,
            view.plan.waves.len(),
            view.plan.waves[wave].name
        ))
    )?;
    if let Some(reason) = &summary.reason {
        match &summary.by {
            Some(by) => writeln!(out, "reason: {reason} (by {by})")?,
            None => writeln!(out, "reason: {reason}")?,
        }
    }
    writeln!(
        out,
        "created {} by {}; max {} at once, {}% must succeed{}",
        view.record.created_at,
        view.record.created_by,
        view.plan.max_parallel,
        view.plan.success_threshold_percent,
        if view.plan.stop_on_failure {
            ", halts at the first failure"
        } else {
            ""
        }
    )?;
    for (index, wave) in summary.waves.iter().enumerate() {
        writeln!(
            out,
            "wave {} {:<12} {:<8} soak {:>5}s  {}",
            index + 1,
            wave.name,
            wave.status,
            wave.soak_secs,
            counts(wave)
        )?;
        for site in summary.sites.iter().filter(|site| site.wave == index) {
            writeln!(
                out,
                "    {:<28} {:<12} {}",
                site.site,
                site.state,
                site.detail.as_deref().unwrap_or("")
            )?;
        }
    }
    Ok(())
}

fn counts(wave: &scs_edge_region::rollouts::progress::WaveProgress) -> String {
    DISPLAY_STATES
        .iter()
        .filter_map(|state| wave.counts.get(state).map(|n| format!("{n} {state}")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Follows a rollout until it ends; the exit status says how.
async fn watch_rollout(rollouts: &Rollouts, name: &str, out: &mut impl Write) -> Result<u8> {
    let terminal = std::io::stdout().is_terminal();
    let bars = indicatif::MultiProgress::new();
    let mut wave_bars: Vec<indicatif::ProgressBar> = Vec::new();
    let header = bars.add(indicatif::ProgressBar::new_spinner());
    let mut last = String::new();
    loop {
        let (view, summary) = rollouts.progress(name).await?;
        let line = format!(
            "{} {}: {}{}",
            view.record.name,
            view.record.target_version,
            summary.state,
            summary
                .reason
                .as_ref()
                .map_or_else(String::new, |reason| format!(" — {reason}"))
        );
        if terminal {
            header.set_message(line.clone());
            for (index, wave) in summary.waves.iter().enumerate() {
                if wave_bars.len() <= index {
                    let bar = bars.add(indicatif::ProgressBar::new(wave.sites as u64));
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{prefix:<14} [{bar:30}] {pos}/{len} {msg}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    bar.set_prefix(wave.name.clone());
                    wave_bars.push(bar);
                }
                let done = ["committed", "rolled back", "failed", "skipped", "absent"]
                    .iter()
                    .filter_map(|state| wave.counts.get(state))
                    .sum::<usize>();
                wave_bars[index].set_position(done as u64);
                wave_bars[index].set_message(counts(wave));
            }
        } else {
            let waves = summary
                .waves
                .iter()
                .map(|wave| format!("{}[{}]", wave.name, counts(wave)))
                .collect::<Vec<_>>()
                .join(" ");
            let full = format!("{line} | {waves}");
            if full != last {
                writeln!(
                    out,
                    "{} {full}",
                    jiff::Timestamp::now().strftime("%H:%M:%S")
                )?;
                out.flush()?;
                last = full;
            }
        }
        let status = match summary.state {
            "completed" => Some(0),
            "halted" => Some(EXIT_HALTED),
            "stopped" if !view.record.active => Some(EXIT_STOPPED),
            _ => None,
        };
        if let Some(status) = status {
            if terminal {
                header.finish_with_message(line);
                for bar in &wave_bars {
                    bar.finish();
                }
            }
            return Ok(status);
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}
