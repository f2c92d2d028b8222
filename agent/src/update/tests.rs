//! The update domain over real TUF repositories (made with the release crate in temporary
//! directories, read as bundles or served by a real web server) and fake host effects: what is
//! staged, written, recorded and counted at each step.

use super::gate::{self, BootClock, Findings, GateProbes, GateSettings, GateVerdict};
use super::host::{BootEntry, Drain, Power, SlotState, Sysupdate};
use super::record::{Outcome, Phase, RebootWhen};
use super::*;
use crate::system::clock::ManualClock;
use crate::system::mount::FakeMounter;
use futures::future::BoxFuture;
use scs_edge_proto::release::ArtifactKind;
use scs_edge_release::keys::{self, KeySet};
use scs_edge_release::repository::{NewRelease, Repository};
use scs_edge_release::test_support::ServedFolder;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use uuid::Uuid;

fn v(text: &str) -> Version {
    text.parse().expect("version")
}

/// The site the test node belongs to (`region.site`).
const SITE: &str = "factory-7";

/// A release manager's repository and a node's update directory, side by side.
struct Site {
    dir: tempfile::TempDir,
    keys: KeySet,
    repo: Repository,
    sysupdate: Arc<FakeSysupdate>,
    clock: Arc<ManualClock>,
}

impl Site {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = KeySet::new(dir.path().join("keys"));
        let repo = Repository::new(dir.path().join("repository"));
        let root = keys::init(
            &keys,
            &repo.metadata_dir(),
            &scs_edge_release::Lifetimes::default(),
            Timestamp::now(),
        )
        .await
        .expect("init");
        std::fs::copy(root, dir.path().join("root.json")).expect("root of trust");
        Self {
            dir,
            keys,
            repo,
            sysupdate: Arc::new(FakeSysupdate::default()),
            clock: Arc::new(ManualClock::new(Timestamp::now())),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Publishes `version` (artifacts with distinct bytes) and exports its bundle.
    async fn release(&self, version: &str) -> ImportSource {
        self.release_signed(version, &scs_edge_release::Lifetimes::default(), None)
            .await
    }

    /// Publishes `version` with a timestamp that expired an hour before it was signed, as a bundle
    /// that travelled too long finds it, and exports its bundle with `waiver` inside.
    async fn stale_release(&self, version: &str, waiver: Option<&Path>) -> ImportSource {
        let stale = scs_edge_release::Lifetimes {
            timestamp: jiff::SignedDuration::from_hours(-1),
            ..scs_edge_release::Lifetimes::default()
        };
        self.release_signed(version, &stale, waiver).await
    }

    async fn release_signed(
        &self,
        version: &str,
        lifetimes: &scs_edge_release::Lifetimes,
        waiver: Option<&Path>,
    ) -> ImportSource {
        let image = scs_edge_release::test_support::image_output(&self.path("image"), version);
        let release = NewRelease {
            image_dir: image,
            version: v(version),
            min_from_version: v("0.0.0"),
            max_version: None,
        };
        self.repo
            .publish(&self.keys, &release, lifetimes, Timestamp::now())
            .await
            .expect("publish");
        let bundle = self.path(&format!("{version}.bundle"));
        bundle::export_with_waiver(&self.repo, &v(version), waiver, &bundle)
            .await
            .expect("bundle");
        ImportSource::Bundle(bundle)
    }

    /// A freshness waiver for `site`, valid for a week from an hour before the node's clock, in
    /// the file `<site>.waiver.json`.
    async fn waiver(&self, site: &str) -> PathBuf {
        let now = self.clock.now();
        let terms = scs_edge_release::waiver::WaiverTerms::new(
            site,
            now - jiff::SignedDuration::from_hours(1),
            now + jiff::SignedDuration::from_hours(24 * 7),
            "the site is reached by ship",
        )
        .expect("terms");
        let waiver = scs_edge_release::waiver::issue(&self.keys, &self.repo.metadata_dir(), terms)
            .await
            .expect("issue");
        let path = self.path(&format!("{site}{WAIVER_SUFFIX}"));
        std::fs::write(&path, waiver.to_json()).expect("write");
        path
    }

    /// Serves the repository over HTTP, as a mirror or the region would.
    fn serve(&self) -> ServedFolder {
        ServedFolder::new(self.dir.path())
    }

    /// The node running `running`.
    fn node(&self, running: &str) -> Updater {
        self.node_with_mounter(running, FakeMounter::default())
    }

    /// The daemon's update task over `node` and `host`, looking for a stick at `stick`, with no
    /// maintenance window and no repository unless the test sets them.
    fn watcher(
        &self,
        node: &Arc<Updater>,
        host: &Arc<FakeHost>,
        stick: PathBuf,
    ) -> watcher::UpdateWatcher {
        watcher::UpdateWatcher {
            updater: node.clone(),
            drain: host.clone(),
            power: host.clone(),
            window: own_window(None),
            stop_timeout: Duration::from_secs(1),
            poll: Duration::from_secs(5),
            stick,
            sys_class_block: self.path("sys-class-block"),
            repository: None,
            region: None,
            clock: self.clock.clone(),
        }
    }

    /// The node running `running`, with a stick at `device` that shows the files of `contents`.
    fn node_with_stick(&self, running: &str, device: &Path, contents: &Path) -> Updater {
        std::fs::write(device, b"").expect("device node");
        let stick = FakeMounter::with_medium(device.to_path_buf(), contents.to_path_buf());
        self.node_with_mounter(running, stick)
    }

    fn node_with_mounter(&self, running: &str, mounter: FakeMounter) -> Updater {
        let settings = UpdateSettings {
            dir: self.path("state/update"),
            root_of_trust: self.path("root.json"),
            running: v(running),
            run_dir: self.path("run"),
            limits: ExtractLimits::default(),
            site: Some(SITE.into()),
        };
        Updater::new(
            settings,
            self.clock.clone(),
            self.sysupdate.clone(),
            Arc::new(mounter),
        )
    }
}

struct FakeSysupdate {
    installed: Mutex<Vec<(PathBuf, Version)>>,
    fail_next: AtomicBool,
    slot: Mutex<SlotState>,
}

impl Default for FakeSysupdate {
    fn default() -> Self {
        Self {
            installed: Mutex::default(),
            fail_next: AtomicBool::default(),
            slot: Mutex::new(SlotState::TriesExhausted),
        }
    }
}

impl Sysupdate for FakeSysupdate {
    fn install(&self, source: &Path, version: &Version) -> Result<(), String> {
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err("No space left on device".into());
        }
        // What the transfers match: each kind once, named with the version (and slot UUID).
        let names: Vec<String> = std::fs::read_dir(source)
            .map_err(|err| err.to_string())?
            .filter_map(Result::ok)
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        for kind in ArtifactKind::REQUIRED {
            let suffix = kind.file_suffix().expect("suffix");
            let prefix = format!("scs-edge_{version}");
            if !names
                .iter()
                .any(|name| name.starts_with(&prefix) && name.ends_with(suffix))
            {
                return Err(format!("no {prefix}…{suffix} in {}", source.display()));
            }
        }
        self.installed
            .lock()
            .expect("lock")
            .push((source.to_path_buf(), version.clone()));
        Ok(())
    }

    fn slot(&self, _version: &Version) -> Result<SlotState, String> {
        Ok(*self.slot.lock().expect("lock"))
    }
}

#[derive(Default)]
struct FakeHost {
    reboots: AtomicU32,
    /// How many reboot requests systemd refuses before it takes one.
    refused_reboots: AtomicU32,
    marked_bad: AtomicU32,
    unhealthy: Mutex<Findings>,
    probed_with: Mutex<Vec<Vec<Uuid>>>,
    active: Vec<Uuid>,
    booted_for: Mutex<std::time::Duration>,
}

impl Power for FakeHost {
    fn reboot(&self) -> BoxFuture<'_, Result<(), String>> {
        self.reboots.fetch_add(1, Ordering::SeqCst);
        let refused = self
            .refused_reboots
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        Box::pin(async move {
            if refused {
                Err("Transaction for reboot.target/start is destructive".to_owned())
            } else {
                Ok(())
            }
        })
    }
}

impl BootEntry for FakeHost {
    fn mark_bad(&self) -> Result<(), String> {
        self.marked_bad.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl Drain for FakeHost {
    fn stop_workloads(&self, _timeout: Duration) -> BoxFuture<'_, Result<Vec<Uuid>, String>> {
        Box::pin(async { Ok(self.active.clone()) })
    }
}

impl GateProbes for FakeHost {
    fn unhealthy(&self, restore: &[Uuid]) -> BoxFuture<'_, Findings> {
        self.probed_with
            .lock()
            .expect("lock")
            .push(restore.to_vec());
        // Each look advances the boot clock by a poll, as real time would.
        *self.booted_for.lock().expect("lock") += Duration::from_secs(5);
        let findings = self.unhealthy.lock().expect("lock").clone();
        Box::pin(async move { findings })
    }
}

impl BootClock for FakeHost {
    fn since_boot(&self) -> Duration {
        *self.booted_for.lock().expect("lock")
    }
}

const GATE: GateSettings = GateSettings {
    window: Duration::from_mins(1),
    poll: Duration::ZERO,
};

/// The kind of a refusal; `None` for any other error.
fn refusal_kind(err: &UpdateError) -> Option<&'static str> {
    match err {
        UpdateError::Refused { kind, .. } => Some(kind),
        _ => None,
    }
}

/// A maintenance window `clock` is never in: an installed release waits, nothing reboots.
fn closed_window(clock: &ManualClock) -> window::MaintenanceWindow {
    let now = clock.now().to_zoned(jiff::tz::TimeZone::UTC);
    let closed = format!(
        "{:02}:00-{:02}:00",
        (now.hour() + 2) % 24,
        (now.hour() + 3) % 24
    );
    window::MaintenanceWindow::parse(&closed).expect("window")
}

/// A maintenance window `clock` is in for the rest of the hour.
fn open_window(clock: &ManualClock) -> window::MaintenanceWindow {
    let now = clock.now().to_zoned(jiff::tz::TimeZone::UTC);
    let open = format!("{:02}:00-{:02}:00", now.hour(), (now.hour() + 1) % 24);
    window::MaintenanceWindow::parse(&open).expect("window")
}

/// The node's own `window` and no region's.
fn own_window(window: Option<window::MaintenanceWindow>) -> Arc<window::RebootWindow> {
    Arc::new(window::RebootWindow::new(window, None))
}

/// The repository `served` publishes, reached with the client the agent builds.
fn online(served: &ServedFolder) -> (reqwest::Url, reqwest::Client) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = online::client(None).expect("client");
    (served.url("repository/"), client)
}

/// Imports, installs and reboots `bundle` on `node`, returning the host's record of it.
/// A node on 1.1.0 that took 1.2.0 from a bundle and rebooted into it, before its gate ran.
async fn rebooted_from_1_1_0_into_1_2_0() -> (Site, ImportSource, FakeHost) {
    let site = Site::new().await;
    let bundle = site.release("1.2.0").await;
    let host = FakeHost::default();
    update_to(&site.node("1.1.0"), &bundle, &host).await;
    (site, bundle, host)
}

async fn update_to(node: &Updater, bundle: &ImportSource, host: &FakeHost) -> Version {
    let version = node
        .import(bundle, RebootWhen::Now, &LogProgress)
        .await
        .expect("import");
    assert_eq!(
        node.install_staged(&LogProgress).expect("install"),
        Some(version.clone())
    );
    assert_eq!(
        node.reboot_due(None, node.clock.now()).expect("due"),
        Some(version.clone())
    );
    node.reboot_into_installed(host, host, Duration::from_secs(1))
        .await
        .expect("reboot");
    version
}

#[tokio::test]
async fn a_bundle_is_verified_staged_written_and_committed_once_the_new_boot_is_healthy() {
    let site = Site::new().await;
    let bundle = site.release("1.1.0").await;
    let node = site.node("1.0.0");
    let server = Uuid::new_v4();
    let host = FakeHost {
        active: vec![server],
        ..FakeHost::default()
    };

    let version = update_to(&node, &bundle, &host).await;
    assert_eq!(version, v("1.1.0"));
    let installed = site.sysupdate.installed.lock().expect("lock").clone();
    assert_eq!(installed.len(), 1);
    assert!(installed[0].0.ends_with("staged/1.1.0"));
    assert_eq!(host.reboots.load(Ordering::SeqCst), 1);
    match node.record().expect("record").phase {
        Phase::Rebooting {
            version,
            from,
            restore,
            ..
        } => {
            assert_eq!((version, from), (v("1.1.0"), v("1.0.0")));
            assert_eq!(restore, vec![server]);
        }
        other => panic!("{other:?}"),
    }

    // The new boot: the same state directory, the new version running.
    let booted = site.node("1.1.0");
    let verdict = gate::judge(&booted, &host, &host, &host, &host, GATE)
        .await
        .expect("gate");
    assert_eq!(verdict, GateVerdict::Committed(v("1.1.0")));
    assert_eq!(host.probed_with.lock().expect("lock")[0], vec![server]);
    let record = booted.record().expect("record");
    assert_eq!(record.phase, Phase::Idle);
    assert!(matches!(
        record.last_outcome,
        Some(Outcome::Committed { ref version, .. }) if *version == v("1.1.0")
    ));
    assert!(
        !site.path("state/update/staged/1.1.0").exists(),
        "staging cleaned up"
    );
    assert_eq!(host.marked_bad.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_failed_gate_rolls_back_records_the_version_and_refuses_it_until_an_explicit_retry() {
    let (site, bundle, host) = rebooted_from_1_1_0_into_1_2_0().await;

    host.unhealthy
        .lock()
        .expect("lock")
        .pending("ovn-controller is not connected".into());
    let booted = site.node("1.2.0");
    let verdict = gate::judge(&booted, &host, &host, &host, &host, GATE)
        .await
        .expect("gate");
    let GateVerdict::RolledBack { version, reason } = verdict else {
        panic!("{verdict:?}");
    };
    assert_eq!(version, v("1.2.0"));
    assert!(
        reason.contains("ovn-controller is not connected"),
        "{reason}"
    );
    assert!(
        host.probed_with.lock().expect("lock").len() >= 12,
        "looked until the window closed"
    );
    assert_eq!(host.marked_bad.load(Ordering::SeqCst), 1);
    assert_eq!(
        host.reboots.load(Ordering::SeqCst),
        2,
        "the update's and the rollback's"
    );

    // Back on 1.1.0: the failure is on record and the same release is refused, and counted.
    let back = site.node("1.1.0");
    let verdict = gate::judge(&back, &host, &host, &host, &host, GATE)
        .await
        .expect("gate");
    assert_eq!(verdict, GateVerdict::NothingToVerify);
    let err = back
        .import(&bundle, RebootWhen::Now, &LogProgress)
        .await
        .expect_err("failed before");
    assert!(
        err.to_string().contains("failed on this node before"),
        "{err}"
    );
    let record = back.record().expect("record");
    assert!(record.failed.contains_key(&v("1.2.0")));
    assert_eq!(record.refused["failed_before"], 1);
    assert!(matches!(
        record.last_outcome,
        Some(Outcome::RolledBack { .. })
    ));

    assert!(back.retry(&v("1.2.0")).expect("retry"));
    assert_eq!(
        back.import(&bundle, RebootWhen::Now, &LogProgress)
            .await
            .expect("an explicit retry imports it again"),
        v("1.2.0")
    );
}

#[tokio::test]
async fn a_unit_that_failed_for_good_fails_the_gate_at_once_instead_of_at_the_end_of_its_window() {
    let (site, _, host) = rebooted_from_1_1_0_into_1_2_0().await;

    host.unhealthy
        .lock()
        .expect("lock")
        .settled("ovn-controller.service has failed".into());
    let verdict = gate::judge(&site.node("1.2.0"), &host, &host, &host, &host, GATE)
        .await
        .expect("gate");
    let GateVerdict::RolledBack { reason, .. } = verdict else {
        panic!("{verdict:?}");
    };
    assert!(
        reason.contains("ovn-controller.service has failed"),
        "{reason}"
    );
    assert_eq!(
        host.probed_with.lock().expect("lock").len(),
        1,
        "decided on the first look"
    );
    assert_eq!(host.marked_bad.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_new_version_that_never_reached_its_gate_is_recorded_as_failed() {
    let (site, _, host) = rebooted_from_1_1_0_into_1_2_0().await;
    // systemd-boot used up the new entry's tries and booted 1.1.0 again.
    let back = site.node("1.1.0");
    let verdict = gate::judge(&back, &host, &host, &host, &host, GATE)
        .await
        .expect("gate");
    assert_eq!(
        verdict,
        GateVerdict::ReturnedEarly {
            version: v("1.2.0")
        }
    );
    let record = back.record().expect("record");
    assert!(
        record.failed[&v("1.2.0")]
            .reason
            .contains("did not come up")
    );
    assert_eq!(record.phase, Phase::Idle);
}

#[tokio::test]
async fn a_tampered_bundle_is_refused_counted_and_changes_nothing() {
    let site = Site::new().await;
    let good = site.release("1.1.0").await;
    let node = site.node("1.0.0");
    node.import(&good, RebootWhen::Window, &LogProgress)
        .await
        .expect("stage a good release first");
    let staged_before = node.record().expect("record").phase;

    let bytes = std::fs::read(site.path("1.1.0.bundle")).expect("bundle");
    let tampered = site.path("tampered.bundle");
    // The last target's bytes sit just before the tar trailer (two 512-byte zero blocks).
    let mut flipped = bytes.clone();
    let at = bytes.len() - 1024 - 4096;
    flipped[at] ^= 0x01;
    std::fs::write(&tampered, flipped).expect("write");
    let err = node
        .import(
            &ImportSource::Bundle(tampered),
            RebootWhen::Now,
            &LogProgress,
        )
        .await
        .expect_err("tampered");
    assert!(matches!(err, UpdateError::Refused { .. }), "{err}");
    let record = node.record().expect("record");
    assert_eq!(
        record.phase, staged_before,
        "the staged release stays staged"
    );
    assert_eq!(record.refused.values().sum::<u64>(), 1);
    assert!(
        record.last_refusal.expect("last").reason.contains("ash"),
        "a hash refusal"
    );
    assert!(!site.path("state/update/incoming").exists());

    let downgrade = site.node("1.5.0");
    let err = downgrade
        .import(&good, RebootWhen::Now, &LogProgress)
        .await
        .expect_err("downgrade");
    assert_eq!(refusal_kind(&err), Some("downgrade"), "{err}");
}

#[tokio::test]
async fn a_failed_slot_write_keeps_the_release_staged_and_the_next_attempt_starts_over() {
    let site = Site::new().await;
    let bundle = site.release("1.1.0").await;
    let node = site.node("1.0.0");
    node.import(&bundle, RebootWhen::Now, &LogProgress)
        .await
        .expect("import");
    site.sysupdate.fail_next.store(true, Ordering::SeqCst);
    let err = node.install_staged(&LogProgress).expect_err("disk full");
    assert!(err.to_string().contains("No space left"), "{err}");
    let record = node.record().expect("record");
    assert_eq!(record.phase.name(), "staged");
    assert!(record.last_error.expect("error").contains("No space left"));
    assert_eq!(
        node.install_staged(&LogProgress).expect("second attempt"),
        Some(v("1.1.0"))
    );
}

#[tokio::test]
async fn an_import_killed_midway_is_dropped_when_the_agent_starts() {
    let site = Site::new().await;
    let node = site.node("1.0.0");
    let file = node.record_file().clone();
    file.try_lock()
        .expect("lock")
        .update(|record| {
            record.phase = Phase::Importing {
                source: "/dev/sdb".into(),
                since: Timestamp::now(),
            };
        })
        .expect("write");
    std::fs::create_dir_all(site.path("state/update/incoming/metadata")).expect("partial");
    node.recover().expect("recover");
    assert_eq!(node.record().expect("record").phase, Phase::Idle);
    assert!(!site.path("state/update/incoming").exists());
}

#[tokio::test]
async fn a_reboot_waits_for_the_maintenance_window_unless_asked_for_now() {
    let site = Site::new().await;
    let bundle = site.release("1.1.0").await;
    let node = site.node("1.0.0");
    node.import(&bundle, RebootWhen::Window, &LogProgress)
        .await
        .expect("import");
    node.install_staged(&LogProgress).expect("install");
    let window = window::MaintenanceWindow::parse("02:00-04:00").expect("window");
    let noon: Timestamp = "2026-12-07T12:00:00Z".parse().expect("time");
    let night: Timestamp = "2026-12-08T02:30:00Z".parse().expect("time");
    assert_eq!(node.reboot_due(Some(&window), noon).expect("due"), None);
    assert_eq!(
        node.reboot_due(Some(&window), night).expect("due"),
        Some(v("1.1.0"))
    );
    assert_eq!(
        node.reboot_due(None, noon).expect("due"),
        Some(v("1.1.0")),
        "a site without a window reboots at once"
    );
}

#[tokio::test]
async fn a_power_cut_before_the_new_version_ran_boots_or_writes_it_again_instead_of_condemning_it()
{
    let (site, _, host) = rebooted_from_1_1_0_into_1_2_0().await;
    // The loader booted 1.1.0, but 1.2.0's entry still has tries: the power failed first.
    *site.sysupdate.slot.lock().expect("lock") = SlotState::Bootable;
    let back = site.node("1.1.0");
    let verdict = gate::judge(&back, &host, &host, &host, &host, GATE)
        .await
        .expect("gate");
    assert_eq!(
        verdict,
        GateVerdict::NotReached {
            version: v("1.2.0")
        }
    );
    let record = back.record().expect("record");
    assert_eq!(record.phase.name(), "installed", "rebooted into again");
    assert!(record.failed.is_empty());
    assert_eq!(
        back.reboot_due(None, back.clock.now()).expect("due"),
        Some(v("1.2.0"))
    );
    back.reboot_into_installed(&host, &host, Duration::from_secs(1))
        .await
        .expect("reboot again");

    // This time the entry was lost while the loader renamed it: the slot is written again.
    *site.sysupdate.slot.lock().expect("lock") = SlotState::Missing;
    let verdict = gate::judge(&back, &host, &host, &host, &host, GATE)
        .await
        .expect("gate");
    assert_eq!(
        verdict,
        GateVerdict::NotReached {
            version: v("1.2.0")
        }
    );
    assert_eq!(back.record().expect("record").phase.name(), "staged");
    assert_eq!(
        back.install_staged(&LogProgress).expect("install"),
        Some(v("1.2.0"))
    );
}

#[tokio::test]
async fn a_release_is_imported_from_a_repository_url_exactly_as_from_a_bundle() {
    let site = Site::new().await;
    site.release("1.0.0").await;
    site.release("1.1.0").await;
    let served = site.serve();
    let (url, client) = online(&served);
    let source = ImportSource::Repository { url, client };
    let node = site.node("1.0.0");

    // Stage only: nothing is unpacked, the targets stream from the repository into staging.
    let version = node
        .import(&source, RebootWhen::Window, &LogProgress)
        .await
        .expect("import");
    assert_eq!(version, v("1.1.0"), "the newest of the two offered");
    let record = node.record().expect("record");
    let Phase::Staged { staged } = record.phase else {
        panic!("{:?}", record.phase);
    };
    assert_eq!(staged.manifest.version, v("1.1.0"));
    assert_eq!(
        std::fs::read_dir(&staged.dir).expect("staged").count(),
        staged.manifest.artifacts.len()
    );
    assert!(!site.path("state/update/incoming").exists());
    assert!(site.sysupdate.installed.lock().expect("lock").is_empty());

    // The running version offered again is refused and counted, as from a bundle.
    let updated = site.node("1.1.0");
    let err = updated
        .import(&source, RebootWhen::Window, &LogProgress)
        .await
        .expect_err("already running");
    assert_eq!(refusal_kind(&err), Some("already_running"), "{err}");
    let record = updated.record().expect("record");
    assert_eq!(record.refused["already_running"], 1);
    assert_eq!(
        record.last_refusal.expect("refusal").source,
        served.url("repository/").to_string()
    );

    // A repository that does not answer is no verdict on any release: an error, not a refusal.
    let unserved = source.to_string();
    drop(served);
    let err = updated
        .import(&source, RebootWhen::Window, &LogProgress)
        .await
        .expect_err("unreachable");
    assert!(matches!(err, UpdateError::Source { .. }), "{err}");
    let record = updated.record().expect("record");
    assert_eq!(
        record.refused.values().sum::<u64>(),
        1,
        "nothing more counted"
    );
    assert!(
        record
            .last_error
            .is_some_and(|error| error.contains(&unserved) && error.contains("onnect")),
    );
}

#[tokio::test]
async fn the_periodic_check_stages_what_is_new_once_and_counts_nothing_new_as_nothing() {
    let site = Site::new().await;
    site.release("1.0.0").await;
    let served = site.serve();
    let (url, client) = online(&served);
    let node = site.node("1.0.0");

    // Only the running version is published: nothing new, nothing written but the time the
    // verification saw.
    assert_eq!(
        node.check(&url, &client, &LogProgress)
            .await
            .expect("check"),
        None
    );
    let record = node.record().expect("record");
    assert_eq!(record.last_known_time, Some(site.clock.now()));
    assert_eq!(
        UpdateRecord {
            last_known_time: None,
            ..record
        },
        UpdateRecord::default()
    );

    site.release("1.1.0").await;
    assert_eq!(
        node.check(&url, &client, &LogProgress)
            .await
            .expect("check"),
        Some(v("1.1.0"))
    );
    let staged = node.record().expect("record").phase;
    assert!(matches!(
        &staged,
        Phase::Staged { staged } if staged.reboot == RebootWhen::Window
    ));

    // Already staged: not fetched again.
    site.clock.advance(jiff::SignedDuration::from_hours(1));
    assert_eq!(
        node.check(&url, &client, &LogProgress)
            .await
            .expect("check"),
        None
    );
    let record = node.record().expect("record");
    assert_eq!(record.phase, staged, "staged once");
    assert!(record.refused.is_empty() && record.last_error.is_none());

    // A tampered target of the next release is a refusal, counted; the staged release stays.
    site.release("1.2.0").await;
    scs_edge_release::test_support::flip_a_byte_of_the_usr_target(
        &site.repo.targets_dir(),
        "1.2.0",
    );
    let err = node
        .check(&url, &client, &LogProgress)
        .await
        .expect_err("tampered");
    assert_eq!(refusal_kind(&err), Some("hash"), "{err}");
    let record = node.record().expect("record");
    assert_eq!(record.phase, staged);
    assert_eq!(record.refused["hash"], 1);
    assert!(!site.path("state/update/staged/1.2.0").exists());
}

#[tokio::test]
async fn the_watcher_checks_the_repository_every_interval_and_writes_what_it_staged() {
    let site = Site::new().await;
    site.release("1.0.0").await;
    let served = site.serve();
    let (url, client) = online(&served);
    let node = Arc::new(site.node("1.0.0"));
    let host = Arc::new(FakeHost::default());
    let watcher = watcher::UpdateWatcher {
        window: own_window(Some(closed_window(&site.clock))),
        repository: Some(online::RepositoryCheck {
            url,
            client,
            every: Duration::from_hours(1),
        }),
        ..site.watcher(&node, &host, site.path("no-stick"))
    };
    let mut looked = watcher::Looked::default();
    watcher.look(&mut looked).await;
    assert_eq!(node.record().expect("record").phase, Phase::Idle);

    site.release("1.1.0").await;
    site.clock.advance(jiff::SignedDuration::from_mins(59));
    watcher.look(&mut looked).await;
    assert_eq!(
        node.record().expect("record").phase,
        Phase::Idle,
        "not checked again before the interval is over"
    );

    site.clock.advance(jiff::SignedDuration::from_mins(1));
    watcher.look(&mut looked).await;
    let record = node.record().expect("record");
    assert!(
        matches!(&record.phase, Phase::Installed { staged, .. } if staged.manifest.version == v("1.1.0")),
        "{:?}",
        record.phase
    );
    assert_eq!(site.sysupdate.installed.lock().expect("lock").len(), 1);
    assert!(record.refused.is_empty() && record.last_error.is_none());
    assert_eq!(host.reboots.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn expired_metadata_is_refused_without_a_waiver_and_staged_under_one_recorded_and_counted() {
    let site = Site::new().await;
    let waiver = site.waiver(SITE).await;
    let stale = site.stale_release("1.1.0", None).await;
    let node = Arc::new(site.node("1.0.0"));

    let err = node
        .import(&stale, RebootWhen::Window, &LogProgress)
        .await
        .expect_err("expired");
    assert_eq!(refusal_kind(&err), Some("expired"), "{err}");

    let waived = site.stale_release("1.2.0", Some(&waiver)).await;
    assert_eq!(
        node.import(&waived, RebootWhen::Window, &LogProgress)
            .await
            .expect("accepted under the waiver in the bundle"),
        v("1.2.0")
    );
    let record = node.record().expect("record");
    assert_eq!(record.phase.name(), "staged");
    assert_eq!(record.refused["expired"], 1);
    assert_eq!(record.waivers_used, 1);
    let used = record.last_waiver.expect("last waiver");
    assert_eq!(used.site, SITE);
    assert_eq!(used.reason, "the site is reached by ship");
    assert_eq!(used.version, v("1.2.0"));
    assert_eq!(used.used_at, site.clock.now());
    assert_eq!(used.source, waived.to_string());
    assert!(used.expires > site.clock.now());

    let health = status::health(&node);
    assert_eq!(health.detail["waivers_used"], 1);
    assert_eq!(
        health.detail["last_waiver"]["reason"],
        "the site is reached by ship"
    );
    let mut registry = crate::metrics::Metrics::registry();
    registry.register_collector(Box::new(status::UpdateCollector(node.clone())));
    let metrics = crate::metrics::Metrics::new(registry).encode();
    assert!(
        metrics.contains("scs_edge_update_waivers_used_total 1\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_waiver_for_another_site_is_a_refusal_like_the_others_and_stages_nothing() {
    let site = Site::new().await;
    let ours = site.waiver(SITE).await;
    let theirs = site.waiver("factory-8").await;
    let waived = site.stale_release("1.1.0", Some(&ours)).await;
    let node = Arc::new(site.node("1.0.0"));

    // Named on the command line, it takes the place of the good one in the bundle.
    let err = node
        .import_with_waiver(&waived, &theirs, RebootWhen::Window, &LogProgress)
        .await
        .expect_err("another site's waiver");
    assert_eq!(refusal_kind(&err), Some("waiver"), "{err}");
    assert!(err.to_string().contains(r#"for site "factory-8""#), "{err}");
    let record = node.record().expect("record");
    assert_eq!(record.phase, Phase::Idle);
    assert_eq!(record.refused["waiver"], 1);
    assert_eq!(record.waivers_used, 0);
    assert!(record.last_waiver.is_none());
    assert!(!site.path("state/update/staged/1.1.0").exists());
    assert!(!site.path("state/update/incoming").exists());

    // A node that knows no site name accepts no waiver.
    let nameless = Updater::new(
        UpdateSettings {
            site: None,
            ..node.settings.clone()
        },
        site.clock.clone(),
        site.sysupdate.clone(),
        Arc::new(FakeMounter::default()),
    );
    let err = nameless
        .import(&waived, RebootWhen::Window, &LogProgress)
        .await
        .expect_err("no site name");
    assert_eq!(refusal_kind(&err), Some("waiver"), "{err}");

    // An unreadable waiver file is no verdict on the release.
    let err = node
        .import_with_waiver(
            &waived,
            &site.path("missing.waiver.json"),
            RebootWhen::Window,
            &LogProgress,
        )
        .await
        .expect_err("missing file");
    assert!(matches!(err, UpdateError::Source { .. }), "{err}");

    assert_eq!(
        node.import_with_waiver(&waived, &ours, RebootWhen::Window, &LogProgress)
            .await
            .expect("this site's waiver"),
        v("1.1.0")
    );
    assert_eq!(node.record().expect("record").waivers_used, 1);
}

#[tokio::test]
async fn a_waiver_beside_the_bundle_on_a_stick_is_used_and_two_are_one_too_many() {
    let site = Site::new().await;
    let waiver = site.waiver(SITE).await;
    let ImportSource::Bundle(bundle) = site.stale_release("1.1.0", None).await else {
        panic!("a bundle");
    };
    let stick = site.path("stick");
    std::fs::create_dir_all(&stick).expect("stick");
    std::fs::copy(&bundle, stick.join("scs-edge_1.1.0.bundle")).expect("bundle");
    std::fs::copy(&waiver, stick.join(format!("{SITE}{WAIVER_SUFFIX}"))).expect("waiver");
    let device = site.path("sdb");
    let node = site.node_with_stick("1.0.0", &device, &stick);

    assert_eq!(
        node.import(
            &ImportSource::Device(device.clone()),
            RebootWhen::Window,
            &LogProgress
        )
        .await
        .expect("accepted under the waiver on the stick"),
        v("1.1.0")
    );
    let record = node.record().expect("record");
    assert_eq!(record.waivers_used, 1);
    assert_eq!(
        record.last_waiver.expect("last waiver").source,
        device.display().to_string()
    );

    std::fs::copy(&waiver, stick.join(WAIVER_FILE)).expect("second waiver");
    let err = node
        .import(
            &ImportSource::Device(device),
            RebootWhen::Window,
            &LogProgress,
        )
        .await
        .expect_err("two waivers");
    assert!(matches!(err, UpdateError::Source { .. }), "{err}");
    assert!(err.to_string().contains("2 waiver files"), "{err}");
}

#[tokio::test]
async fn a_clock_stepped_back_is_refused_even_when_tufs_own_record_of_the_time_is_gone() {
    let site = Site::new().await;
    let node = site.node("1.0.0");
    let first = site.release("1.1.0").await;
    node.import(&first, RebootWhen::Window, &LogProgress)
        .await
        .expect("import 1.1.0");
    let seen = node.record().expect("record").last_known_time;
    assert_eq!(seen, Some(site.clock.now()));

    // tough starts afresh when its file is unreadable; the record still knows.
    std::fs::write(
        site.path("state/update/tuf/latest_known_time.json"),
        b"not json",
    )
    .expect("spoil tough's record");
    site.clock.advance(jiff::SignedDuration::from_hours(-24));
    let next = site.release("1.2.0").await;
    let err = node
        .import(&next, RebootWhen::Window, &LogProgress)
        .await
        .expect_err("stepped-back clock");
    assert_eq!(refusal_kind(&err), Some("clock"), "{err}");
    let record = node.record().expect("record");
    assert_eq!(record.refused["clock"], 1);
    assert!(
        matches!(&record.phase, Phase::Staged { staged } if staged.manifest.version == v("1.1.0")),
        "the release staged before stays: {:?}",
        record.phase
    );
    assert_eq!(record.last_known_time, seen, "a refusal does not move it");
}

#[tokio::test]
async fn a_stick_plugged_in_again_between_two_looks_is_imported_again_and_one_left_in_is_not() {
    let site = Site::new().await;
    let ImportSource::Bundle(bundle) = site.release("1.1.0").await else {
        panic!("a bundle");
    };
    // A truncated bundle: every import of it is refused and counted, which makes imports visible.
    let contents = site.path("stick");
    std::fs::create_dir_all(&contents).expect("stick");
    let bytes = std::fs::read(&bundle).expect("bundle");
    std::fs::write(
        contents.join("scs-edge_1.1.0.bundle"),
        &bytes[..bytes.len() / 2],
    )
    .expect("truncated bundle");
    // What udev and the kernel show: the label's link to the device node, and the disk's number.
    let device = site.path("sdb");
    let node = Arc::new(site.node_with_stick("1.0.0", &device, &contents));
    let label = site.path("by-label-SCSEDGE-UPDATE");
    std::os::unix::fs::symlink(&device, &label).expect("label link");
    let sys_disk = site.path("sys-class-block/sdb");
    std::fs::create_dir_all(&sys_disk).expect("sysfs");
    std::fs::write(sys_disk.join("diskseq"), "17\n").expect("diskseq");

    let host = Arc::new(FakeHost::default());
    let watcher = site.watcher(&node, &host, label);
    let refusals = || -> u64 { node.record().expect("record").refused.values().sum() };
    let mut looked = watcher::Looked::default();
    watcher.look(&mut looked).await;
    assert_eq!(refusals(), 1, "the stick is imported when it appears");

    watcher.look(&mut looked).await;
    assert_eq!(refusals(), 1, "the stick left in is not imported twice");

    // Pulled and plugged in again between two looks: the same /dev/sdb, a new disk.
    std::fs::write(sys_disk.join("diskseq"), "18\n").expect("diskseq");
    watcher.look(&mut looked).await;
    assert_eq!(refusals(), 2, "the new insertion is imported");
    assert_eq!(node.record().expect("record").phase, Phase::Idle);
    assert!(site.sysupdate.installed.lock().expect("lock").is_empty());
    assert_eq!(host.reboots.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_reboot_systemd_refused_after_the_drain_is_asked_for_again_until_it_is_taken() {
    let site = Site::new().await;
    let node = Arc::new(site.node("1.0.0"));
    node.import(&site.release("1.1.0").await, RebootWhen::Now, &LogProgress)
        .await
        .expect("staged");
    let host = Arc::new(FakeHost::default());
    host.refused_reboots.store(1, Ordering::SeqCst);
    let watcher = site.watcher(&node, &host, site.path("no-stick"));
    let mut looked = watcher::Looked::default();
    let rebooting = |node: &Updater| {
        matches!(
            node.record().expect("record").phase,
            Phase::Rebooting { .. }
        )
    };

    watcher.look(&mut looked).await;
    assert_eq!(
        host.reboots.load(Ordering::SeqCst),
        1,
        "written, drained, asked"
    );
    assert!(
        rebooting(&node),
        "the servers are stopped: the record says so"
    );

    watcher.look(&mut looked).await;
    assert_eq!(host.reboots.load(Ordering::SeqCst), 2, "asked again");
    assert!(rebooting(&node));

    watcher.look(&mut looked).await;
    assert_eq!(
        host.reboots.load(Ordering::SeqCst),
        2,
        "a reboot systemd took is not asked for again"
    );
}

/// The region as the update task sees it: the desired state the link saved, and a repository, or
/// not joined yet.
struct FakeOffer {
    desired: Mutex<scs_edge_proto::DesiredState>,
    repository: Mutex<Option<(reqwest::Url, reqwest::Client)>>,
}

impl FakeOffer {
    /// The region changes the site's desired state, as an operator or a rollout does: a new
    /// generation.
    fn change(&self, change: impl FnOnce(&mut scs_edge_proto::DesiredState)) {
        let mut desired = self.desired.lock().expect("lock");
        change(&mut desired);
        desired.generation += 1;
    }
}

impl region::RegionOffer for FakeOffer {
    fn wanted(&self) -> Result<Option<String>, String> {
        Ok(self.desired.lock().expect("lock").target_os_version.clone())
    }

    fn window(&self) -> Result<Option<window::MaintenanceWindow>, region::RegionWindowError> {
        region::desired_window(&self.desired.lock().expect("lock"))
    }

    fn repository(&self) -> Result<(reqwest::Url, reqwest::Client), String> {
        self.repository
            .lock()
            .expect("lock")
            .clone()
            .ok_or_else(|| "the node has not joined its region yet".to_owned())
    }
}

/// A node on 1.0.0 of a region's site whose repository serves 1.1.0 and 1.2.0.
struct RegionSite {
    site: Site,
    served: ServedFolder,
    node: Arc<Updater>,
    offer: Arc<FakeOffer>,
    host: Arc<FakeHost>,
}

impl RegionSite {
    /// The site, its region asking for `wanted` and not joined yet.
    async fn new(wanted: Option<&str>) -> Self {
        let site = Site::new().await;
        site.release("1.1.0").await;
        site.release("1.2.0").await;
        let served = site.serve();
        let node = Arc::new(site.node("1.0.0"));
        let offer = Arc::new(FakeOffer {
            desired: Mutex::new(scs_edge_proto::DesiredState {
                generation: 1,
                target_os_version: wanted.map(str::to_owned),
                ..scs_edge_proto::DesiredState::default()
            }),
            repository: Mutex::new(None),
        });
        Self {
            site,
            served,
            node,
            offer,
            host: Arc::new(FakeHost::default()),
        }
    }

    /// The update task with the region's offer, the node's own window `own` and the region's
    /// window, when it sends one.
    fn watcher(&self, own: Option<window::MaintenanceWindow>) -> watcher::UpdateWatcher {
        let offer: Arc<dyn region::RegionOffer> = self.offer.clone();
        watcher::UpdateWatcher {
            window: Arc::new(window::RebootWindow::new(own, Some(offer.clone()))),
            region: Some(watcher::RegionFeed {
                offer,
                retry: Duration::from_mins(10),
            }),
            ..self
                .site
                .watcher(&self.node, &self.host, self.site.path("no-stick"))
        }
    }

    /// The update task with a closed window of the node's own.
    fn waiting_watcher(&self) -> watcher::UpdateWatcher {
        self.watcher(Some(closed_window(&self.site.clock)))
    }

    fn join(&self) {
        *self.offer.repository.lock().expect("lock") = Some(online(&self.served));
    }

    fn phase(&self) -> Phase {
        self.node.record().expect("record").phase
    }

    fn installed(&self) -> Vec<Version> {
        let installed = self.site.sysupdate.installed.lock().expect("lock");
        installed
            .iter()
            .map(|(_, version)| version.clone())
            .collect()
    }

    /// Stages `version` from the region's repository as the update task does, without writing it.
    async fn stage(&self, version: &str) {
        let (url, client) = online(&self.served);
        let taken = self
            .node
            .take(&url, &client, &v(version), &LogProgress)
            .await
            .expect("take");
        assert_eq!(taken, Some(v(version)));
        assert!(
            matches!(self.phase(), Phase::Staged { staged } if staged.origin == record::Origin::Region)
        );
    }
}

#[tokio::test]
async fn the_region_offer_stages_the_wanted_release_not_the_newest_once_the_link_is_up() {
    let region = RegionSite::new(Some("1.1.0")).await;
    let watcher = region.waiting_watcher();
    let mut looked = watcher::Looked::default();

    // Not joined yet: nothing happens, and nothing again until the retry interval is over.
    watcher.look(&mut looked).await;
    assert_eq!(region.phase(), Phase::Idle);
    region.join();
    watcher.look(&mut looked).await;
    assert_eq!(region.phase(), Phase::Idle, "waits");
    region
        .site
        .clock
        .advance(jiff::SignedDuration::from_mins(10));
    watcher.look(&mut looked).await;
    let record = region.node.record().expect("record");
    assert!(
        matches!(&record.phase, Phase::Installed { staged, .. } if staged.manifest.version == v("1.1.0")),
        "1.1.0 as the region asks, not the newest 1.2.0: {:?}",
        record.phase
    );
    assert!(record.refused.is_empty() && record.last_error.is_none());
}

#[tokio::test]
async fn a_release_the_region_offers_that_the_node_may_not_take_is_refused_once() {
    let region = RegionSite::new(Some("0.9.0")).await;
    region.join();
    let watcher = region.waiting_watcher();
    let mut looked = watcher::Looked::default();
    watcher.look(&mut looked).await;
    let record = region.node.record().expect("record");
    assert_eq!(
        record.refused.get("manifest"),
        Some(&1),
        "{:?}",
        record.refused
    );
    assert_eq!(record.phase, Phase::Idle);

    region
        .site
        .clock
        .advance(jiff::SignedDuration::from_hours(5));
    watcher.look(&mut looked).await;
    assert_eq!(
        region
            .node
            .record()
            .expect("record")
            .refused
            .get("manifest"),
        Some(&1),
        "not asked again while the region asks for the same version"
    );

    // The region asks for another version: that one is taken.
    region
        .offer
        .change(|desired| desired.target_os_version = Some("1.2.0".into()));
    watcher.look(&mut looked).await;
    assert!(matches!(
        region.phase(),
        Phase::Installed { staged, .. } if staged.manifest.version == v("1.2.0")
    ));
}

#[tokio::test]
async fn a_release_the_region_takes_back_before_it_is_written_is_dropped_and_never_written() {
    let region = RegionSite::new(Some("1.1.0")).await;
    region.join();
    region.stage("1.1.0").await;
    let staged_dir = region.site.path("state/update/staged/1.1.0");
    assert!(staged_dir.is_dir());

    // The rollout is paused: the site's desired version is cleared before the next look.
    region
        .offer
        .change(|desired| desired.target_os_version = None);
    let watcher = region.watcher(None);
    let mut looked = watcher::Looked::default();
    watcher.look(&mut looked).await;
    assert_eq!(region.phase(), Phase::Idle);
    assert!(region.installed().is_empty(), "no slot written");
    assert!(!staged_dir.exists(), "its files are gone");
    assert_eq!(region.host.reboots.load(Ordering::SeqCst), 0);
    let report = status::report(&region.node, None).expect("report");
    assert_eq!(report.target, None);

    watcher.look(&mut looked).await;
    assert_eq!(region.phase(), Phase::Idle, "and stays gone");
}

#[tokio::test]
async fn a_release_the_region_replaced_is_dropped_even_while_the_new_one_cannot_be_fetched() {
    let region = RegionSite::new(Some("1.1.0")).await;
    region.join();
    region.stage("1.1.0").await;

    // The region moves on to 1.2.0 while the link is down: 1.1.0 must not be written meanwhile.
    *region.offer.repository.lock().expect("lock") = None;
    region
        .offer
        .change(|desired| desired.target_os_version = Some("1.2.0".into()));
    let watcher = region.waiting_watcher();
    let mut looked = watcher::Looked::default();
    watcher.look(&mut looked).await;
    assert_eq!(region.phase(), Phase::Idle);
    assert!(region.installed().is_empty());
    assert!(!region.site.path("state/update/staged/1.1.0").exists());

    region.join();
    region
        .site
        .clock
        .advance(jiff::SignedDuration::from_mins(10));
    watcher.look(&mut looked).await;
    assert!(
        matches!(region.phase(), Phase::Installed { staged, .. } if staged.manifest.version == v("1.2.0"))
    );
    assert_eq!(region.installed(), vec![v("1.2.0")]);
}

#[tokio::test]
async fn a_release_from_a_stick_is_written_whatever_the_region_wants() {
    let region = RegionSite::new(Some("1.1.0")).await;
    let bundle = region.site.release("1.3.0").await;
    region
        .node
        .import(&bundle, RebootWhen::Window, &LogProgress)
        .await
        .expect("import");
    region
        .offer
        .change(|desired| desired.target_os_version = None);
    let watcher = region.waiting_watcher();
    let mut looked = watcher::Looked::default();
    watcher.look(&mut looked).await;
    assert!(
        matches!(region.phase(), Phase::Installed { staged, .. } if staged.manifest.version == v("1.3.0")),
        "{:?}",
        region.phase()
    );
    assert_eq!(region.installed(), vec![v("1.3.0")]);
}

#[tokio::test]
async fn nothing_past_staging_is_undone_when_the_region_takes_its_release_back() {
    let region = RegionSite::new(Some("1.1.0")).await;
    region.join();
    let watcher = region.waiting_watcher();
    let mut looked = watcher::Looked::default();
    watcher.look(&mut looked).await;
    assert_eq!(region.phase().name(), "installed");

    region
        .offer
        .change(|desired| desired.target_os_version = None);
    watcher.look(&mut looked).await;
    assert_eq!(region.phase().name(), "installed", "the slot is written");
    assert!(region.site.path("state/update/staged/1.1.0").is_dir());
}

#[tokio::test]
async fn a_window_the_region_sends_decides_the_reboot_instead_of_the_nodes_own() {
    let region = RegionSite::new(Some("1.1.0")).await;
    region.join();
    let closed = closed_window(&region.site.clock);
    region
        .offer
        .change(|desired| desired.maintenance_window = Some(closed.to_string()));
    // The node has no window of its own: alone, it would reboot as soon as the slot is written.
    let watcher = region.watcher(None);
    let mut looked = watcher::Looked::default();
    watcher.look(&mut looked).await;
    assert_eq!(region.phase().name(), "installed");
    assert_eq!(region.host.reboots.load(Ordering::SeqCst), 0);
    let window = watcher.window.current();
    let report = status::report(&region.node, window.as_ref()).expect("report");
    assert_eq!(
        report.window,
        Some(closed.to_string()),
        "the window in force"
    );

    region.offer.change(|desired| {
        desired.maintenance_window = Some(open_window(&region.site.clock).to_string());
    });
    watcher.look(&mut looked).await;
    assert_eq!(region.host.reboots.load(Ordering::SeqCst), 1);
    assert_eq!(region.phase().name(), "rebooting");
}

#[tokio::test]
async fn a_window_from_the_region_the_node_cannot_read_leaves_its_own_in_force() {
    let region = RegionSite::new(Some("1.1.0")).await;
    region.join();
    region.offer.change(|desired| {
        desired.maintenance_window = Some("sat,sun 22:00-02:00 Europe/Berlin".into());
    });
    let own = closed_window(&region.site.clock);
    let watcher = region.watcher(Some(own.clone()));
    let mut looked = watcher::Looked::default();
    let logged = logged_warnings(|| {
        for _ in 0..3 {
            assert_eq!(watcher.window.current(), Some(own.clone()));
        }
    });
    assert_eq!(
        logged
            .matches("keeping the node's own maintenance window")
            .count(),
        1,
        "once per desired state: {logged}"
    );
    watcher.look(&mut looked).await;
    assert_eq!(region.phase().name(), "installed");
    assert_eq!(
        region.host.reboots.load(Ordering::SeqCst),
        0,
        "not \"no window\", which would reboot at once"
    );
    let report = status::report(&region.node, watcher.window.current().as_ref()).expect("report");
    assert_eq!(report.window, Some(own.to_string()));

    region.offer.change(|desired| {
        desired.maintenance_window = Some("weekends".into());
    });
    let logged = logged_warnings(|| watcher.window.current());
    assert_eq!(
        logged
            .matches("keeping the node's own maintenance window")
            .count(),
        1,
        "a new desired state is complained about again: {logged}"
    );
}

/// What `run` logs at warning level.
fn logged_warnings<T>(run: impl FnOnce() -> T) -> String {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, run);
    let bytes = buffer.0.lock().expect("lock").clone();
    String::from_utf8(bytes).expect("utf-8")
}
