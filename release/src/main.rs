//! `scs-edge-release`: the release manager's tool. It makes the role keys and the root of trust,
//! signs a release from `make image`'s output into a TUF repository, re-signs the timestamp,
//! exports a release as one air-gap bundle file, and issues freshness waivers for sites that can
//! never receive fresh metadata.
#![allow(clippy::print_stdout)]

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use scs_edge_release::Lifetimes;
use scs_edge_release::keys::{self, KeySet};
use scs_edge_release::repository::{NewRelease, Repository};
use scs_edge_release::waiver::{self, MAX_WAIVER_LIFETIME, WaiverTerms};
use std::path::PathBuf;

/// Signed OS releases of the SCS Edge node image.
#[derive(Debug, Parser)]
#[command(name = "scs-edge-release", version, about)]
struct Cli {
    /// The role keys (root, targets, snapshot, timestamp). Keep root and targets offline.
    #[arg(long, env = "SCS_EDGE_RELEASE_KEYS", default_value = "release/keys")]
    keys: PathBuf,
    /// The release repository (metadata/ and targets/).
    #[arg(
        long,
        env = "SCS_EDGE_RELEASE_REPO",
        default_value = "release/repository"
    )]
    repo: PathBuf,
    /// Days the timestamp stays valid; a node refuses to discover a release with an older one.
    #[arg(long, default_value_t = 7)]
    timestamp_days: i64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make the four role keys and root version 1 (the root of trust the image bakes in).
    Init,
    /// Replace the root key; the new root is signed by the old and the new key.
    RotateRoot,
    /// Sign a release from the image build output into the repository.
    Publish {
        /// `make image`'s output directory.
        #[arg(long, default_value = "target/image")]
        image_dir: PathBuf,
        /// The image version (as built: `scs-edge_<version>.usr.raw` …).
        #[arg(long)]
        version: semver::Version,
        /// The oldest version that may update to this one directly (default: any, 0.0.0).
        #[arg(long, default_value = "0.0.0")]
        min_from: semver::Version,
        /// Pull every node above this version back down to it (the regret field).
        #[arg(long)]
        max_version: Option<semver::Version>,
    },
    /// Re-sign timestamp.json with a fresh expiry.
    Timestamp,
    /// Write one release with the repository's metadata into a single bundle file.
    Bundle {
        /// The release.
        #[arg(long)]
        version: semver::Version,
        /// The bundle file to write.
        #[arg(long, short)]
        output: PathBuf,
        /// A freshness waiver (`scs-edge-release waiver`) to ship in the bundle as `waiver.json`.
        #[arg(long)]
        waiver: Option<PathBuf>,
    },
    /// Sign a freshness waiver with the targets key: lets the nodes of one site that can never
    /// receive fresh metadata accept a release whose metadata expired, for a few days.
    Waiver {
        /// The site (its name exactly as the nodes know it, `region.site`).
        #[arg(long)]
        site: String,
        /// Days it holds from now (1-90).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=max_waiver_days()))]
        days: u16,
        /// Why the site cannot receive fresh metadata; the nodes log and record it.
        #[arg(long)]
        reason: String,
        /// The waiver file to write.
        #[arg(long)]
        out: PathBuf,
    },
}

/// The most days a waiver may run (nodes refuse a longer one).
const fn max_waiver_days() -> i64 {
    MAX_WAIVER_LIFETIME.as_hours() / 24
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let keys = KeySet::new(&cli.keys);
    let repo = Repository::new(&cli.repo);
    let lifetimes = Lifetimes {
        timestamp: jiff::SignedDuration::from_hours(24 * cli.timestamp_days),
        ..Lifetimes::default()
    };
    let now = jiff::Timestamp::now();
    match cli.command {
        Command::Init => {
            let root = keys::init(&keys, &repo.metadata_dir(), &lifetimes, now).await?;
            println!(
                "root of trust: {} (keys in {})",
                root.display(),
                cli.keys.display()
            );
        }
        Command::RotateRoot => {
            let root = keys::rotate_root(&keys, &repo.metadata_dir(), &lifetimes, now).await?;
            println!(
                "new root: {} (cross-signed by the previous root key)",
                root.display()
            );
        }
        Command::Publish {
            image_dir,
            version,
            min_from,
            max_version,
        } => {
            let release = NewRelease {
                image_dir,
                version,
                min_from_version: min_from,
                max_version,
            };
            let manifest = repo
                .publish(&keys, &release, &lifetimes, now)
                .await
                .context("publishing the release")?;
            println!("{}", serde_json::to_string_pretty(&manifest)?);
        }
        Command::Timestamp => {
            let version = repo.refresh_timestamp(&keys, &lifetimes, now).await?;
            println!(
                "timestamp.json version {version}, valid {} days",
                cli.timestamp_days
            );
        }
        Command::Bundle {
            version,
            output,
            waiver,
        } => {
            let bytes = scs_edge_release::bundle::export_with_waiver(
                &repo,
                &version,
                waiver.as_deref(),
                &output,
            )
            .await?;
            println!("{}: {bytes} bytes", output.display());
        }
        Command::Waiver {
            site,
            days,
            reason,
            out,
        } => {
            let expires =
                now.checked_add(jiff::SignedDuration::from_hours(24 * i64::from(days)))?;
            let terms = WaiverTerms::new(site, now, expires, reason)?;
            let issued = waiver::issue(&keys, &repo.metadata_dir(), terms).await?;
            std::fs::write(&out, issued.to_json())
                .with_context(|| format!("writing {}", out.display()))?;
            let terms = issued.terms();
            println!(
                "{}: waiver for site {} from {} until {}",
                out.display(),
                terms.site,
                terms.issued,
                terms.expires
            );
        }
    }
    Ok(())
}
