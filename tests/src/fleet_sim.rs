//! Simulated sites for the rollout tests: each speaks the node protocol as an agent does — joins
//! with a token, heartbeats on a fixed interval with a running sequence, fetches the desired state
//! when the heartbeat's ack says its generation moved — and takes an OS release the way the agent's
//! updater does, compressed into heartbeats: importing, staged, installed, one missed heartbeat for
//! the reboot, then the health gate's verdict (at once, or after heartbeats that report the gate
//! still deciding, for [`Behaviour::RollsBackAfterVerifying`]).
//!
//! A site knows only what a node knows: its own desired state, never the region's rollouts. What
//! it received is kept with the time it arrived ([`SimSite::witness`]), so a test checks the region's
//! ordering against evidence the region did not write.
//!
//! Its update report follows the agent's (`agent/src/update/status.rs`): `importing` names no
//! target yet — the agent learns the version only once the release verified — so to the region a
//! site still importing has not begun; from `staged` on the report names the version.

use crate::region::{RegionProcess, SimulatedNode, client};
use jiff::Timestamp;
use scs_edge_proto::{
    Capacity, ComponentHealth, DesiredState, HealthState, PROTOCOL_HEADER, PROTOCOL_VERSION,
    Report, ReportAck, ReportBatch, ResourceCounts, UpdateOutcome, UpdatePhase, UpdateReport,
    Versions, paths,
};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How a site takes a release the region offers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Imports, installs, reboots and commits every release.
    Good,
    /// `version` fails the health gate after the reboot: the site is back on the version it came
    /// from, with `version` in its failed list and the rollback as its last outcome. Any other
    /// version goes well.
    RollsBack {
        /// The bad release.
        version: String,
        /// What the health gate found.
        reason: String,
    },
    /// Like [`Self::RollsBack`], but first heartbeats `beats` times while its health gate decides,
    /// as the agent does: phase `verifying`, already running `version` (the booted image's).
    RollsBackAfterVerifying {
        /// The bad release.
        version: String,
        /// What the health gate found.
        reason: String,
        /// Heartbeats during the gate.
        beats: u32,
    },
    /// Commits, then a component goes down for good.
    UnhealthyAfterCommit,
    /// Spends this many heartbeats importing (a slow link) before the release is staged.
    SlowImport(u32),
    /// Waits, installed, for its maintenance window until the test opens it
    /// ([`SimSite::open_window`]): an update that has begun and cannot be hurried.
    WaitsForWindow,
}

/// A desired state as it arrived at the site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// When the site read it.
    pub at: Timestamp,
    /// What it said.
    pub desired: DesiredState,
}

/// How an update ended on the site, by the site's own clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The version.
    pub version: String,
    /// `committed` or `rolled_back`.
    pub result: String,
    /// `sent_at` of the first heartbeat that told the region.
    pub at: Timestamp,
}

/// Where the site's updater is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Idle,
    Importing { version: String, left: u32 },
    Staged(String),
    Installed(String),
    Rebooting(String),
    Verifying { version: String, left: u32 },
}

/// Everything the site holds; shared between its heartbeat thread and the test.
struct Node {
    behaviour: Behaviour,
    running: String,
    healthy: bool,
    phase: Phase,
    failed: Vec<String>,
    last_outcome: Option<UpdateOutcome>,
    /// The generation of the desired state last read.
    generation: u64,
    wanted: Option<String>,
    window_open: bool,
    powered: bool,
    next_seq: u64,
    /// Reports taken but not acknowledged yet (the region was out of reach): sent again, in order.
    queue: Vec<Report>,
    witness: Vec<Received>,
    verdicts: Vec<Verdict>,
    /// A verdict taken at the reboot, stamped with the first heartbeat that carries it.
    unreported: Option<(String, String)>,
    reported_phase: UpdatePhase,
}

/// The node's link to the region: its certificate, over a client that survives refused connections.
struct Link {
    url: String,
    site: String,
    client: reqwest::blocking::Client,
}

/// A simulated site with a heartbeat thread; the thread stops when this is dropped.
pub struct SimSite {
    /// The site's name.
    pub site: String,
    node: Arc<Mutex<Node>>,
    stop: Option<mpsc::Sender<()>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl SimSite {
    /// Joins `site` with `token`, running OS `running`, and heartbeats `every` from now on.
    pub fn join(
        region: &RegionProcess,
        site: &str,
        token: &str,
        running: &str,
        behaviour: Behaviour,
        every: Duration,
    ) -> Self {
        let joined = SimulatedNode::join(region, site, token);
        let link = Link {
            url: joined.url.clone(),
            site: site.to_owned(),
            client: client(&region.ca_pem(), Some((&joined.cert_pem, &joined.key_pem))),
        };
        let node = Arc::new(Mutex::new(Node::new(behaviour, running)));
        let (stop, stopped) = mpsc::channel::<()>();
        let shared = Arc::clone(&node);
        let thread = std::thread::Builder::new()
            .name(format!("sim-{site}"))
            .spawn(move || {
                // The heartbeat interval is the protocol's clock, not a wait for something.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    let mut node = shared.lock().unwrap_or_else(PoisonError::into_inner);
                    if node.powered {
                        node.heartbeat(&link);
                    }
                }
            })
            .expect("spawn the site's heartbeat thread");
        Self {
            site: site.to_owned(),
            node,
            stop: Some(stop),
            thread: Mutex::new(Some(thread)),
        }
    }

    /// The site's state; fails the test with the heartbeat thread's panic if that died.
    fn node(&self) -> std::sync::MutexGuard<'_, Node> {
        let mut thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner);
        if thread.as_ref().is_some_and(JoinHandle::is_finished)
            && let Some(Err(panic)) = thread.take().map(JoinHandle::join)
        {
            std::panic::resume_unwind(panic);
        }
        drop(thread);
        self.node.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The OS version it runs.
    pub fn running(&self) -> String {
        self.node().running.clone()
    }

    /// Every desired state it received, oldest first.
    pub fn witness(&self) -> Vec<Received> {
        self.node().witness.clone()
    }

    /// When desired states newly naming `version` arrived: once per offer, a re-offer after a
    /// take-back counting again.
    pub fn offers_of(&self, version: &str) -> Vec<Timestamp> {
        let witness = self.witness();
        let mut before: Option<&str> = None;
        let mut offers = Vec::new();
        for received in &witness {
            let now = received.desired.target_os_version.as_deref();
            if now == Some(version) && before != Some(version) {
                offers.push(received.at);
            }
            before = now;
        }
        offers
    }

    /// The desired state it read last.
    pub fn desired(&self) -> Option<DesiredState> {
        self.node()
            .witness
            .last()
            .map(|received| received.desired.clone())
    }

    /// When it told the region it committed `version`.
    pub fn committed_at(&self, version: &str) -> Option<Timestamp> {
        self.node()
            .verdicts
            .iter()
            .find(|verdict| verdict.version == version && verdict.result == "committed")
            .map(|verdict| verdict.at)
    }

    /// The update phase its latest heartbeat reported.
    pub fn reported_phase(&self) -> UpdatePhase {
        self.node().reported_phase
    }

    /// The site goes dark: no heartbeat is taken until [`Self::power_on`].
    pub fn power_off(&self) {
        self.node().powered = false;
    }

    /// The site is back and heartbeats again.
    pub fn power_on(&self) {
        self.node().powered = true;
    }

    /// Its maintenance window opens: an installed release reboots at the next heartbeat.
    pub fn open_window(&self) {
        self.node().window_open = true;
    }
}

impl Drop for SimSite {
    fn drop(&mut self) {
        drop(self.stop.take());
        let thread = self
            .thread
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(thread) = thread.take() {
            let _ = thread.join();
        }
    }
}

impl Node {
    /// A powered, healthy node running `running` that has read no desired state yet.
    fn new(behaviour: Behaviour, running: &str) -> Self {
        Self {
            behaviour,
            running: running.to_owned(),
            healthy: true,
            phase: Phase::Idle,
            failed: Vec::new(),
            last_outcome: None,
            generation: 0,
            wanted: None,
            window_open: false,
            powered: true,
            next_seq: 1,
            queue: Vec::new(),
            witness: Vec::new(),
            verdicts: Vec::new(),
            unreported: None,
            reported_phase: UpdatePhase::Idle,
        }
    }

    /// One heartbeat: the updater moves on one step, the report goes out (none while rebooting),
    /// and a moved desired generation is fetched and acted on.
    fn heartbeat(&mut self, link: &Link) {
        if !self.advance() {
            return;
        }
        let report = self.report();
        self.reported_phase = report
            .update
            .as_ref()
            .map_or(UpdatePhase::Idle, |u| u.phase);
        if let Some((version, result)) = self.unreported.take() {
            self.verdicts.push(Verdict {
                version,
                result,
                at: report.sent_at,
            });
        }
        self.queue.push(report);
        let Some(ack) = link.deliver(&self.queue) else {
            return;
        };
        self.queue.retain(|report| report.seq > ack.acked_through);
        if ack.desired_generation != self.generation
            && let Some(desired) = link.desired()
        {
            self.generation = desired.generation;
            self.witness.push(Received {
                at: Timestamp::now(),
                desired: desired.clone(),
            });
            self.want(desired.target_os_version);
        }
    }

    /// The updater's step since the last heartbeat; false when the node is rebooting and sends
    /// nothing this time.
    fn advance(&mut self) -> bool {
        let next = match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Idle => match &self.wanted {
                Some(version) if *version != self.running && !self.failed.contains(version) => {
                    let left = match self.behaviour {
                        Behaviour::SlowImport(beats) => beats.max(1),
                        _ => 1,
                    };
                    Phase::Importing {
                        version: version.clone(),
                        left,
                    }
                }
                _ => Phase::Idle,
            },
            Phase::Importing { version, left } if left > 1 => Phase::Importing {
                version,
                left: left - 1,
            },
            Phase::Importing { version, .. } => Phase::Staged(version),
            Phase::Staged(version) => Phase::Installed(version),
            Phase::Installed(version)
                if self.behaviour == Behaviour::WaitsForWindow && !self.window_open =>
            {
                Phase::Installed(version)
            }
            Phase::Installed(version) => {
                self.phase = Phase::Rebooting(version);
                return false;
            }
            Phase::Rebooting(version) => match &self.behaviour {
                Behaviour::RollsBackAfterVerifying {
                    version: bad,
                    beats,
                    ..
                } if *bad == version && *beats > 0 => Phase::Verifying {
                    version,
                    left: *beats,
                },
                _ => {
                    self.verdict(version);
                    Phase::Idle
                }
            },
            Phase::Verifying { version, left } if left > 1 => Phase::Verifying {
                version,
                left: left - 1,
            },
            Phase::Verifying { version, .. } => {
                self.verdict(version);
                Phase::Idle
            }
        };
        self.phase = next;
        true
    }

    /// The health gate's verdict on `version` after the reboot.
    fn verdict(&mut self, version: String) {
        let outcome = match &self.behaviour {
            Behaviour::RollsBack {
                version: bad,
                reason,
            }
            | Behaviour::RollsBackAfterVerifying {
                version: bad,
                reason,
                ..
            } if *bad == version => {
                self.failed.push(version.clone());
                UpdateOutcome {
                    result: "rolled_back".into(),
                    version,
                    reason: Some(reason.clone()),
                }
            }
            behaviour => {
                if *behaviour == Behaviour::UnhealthyAfterCommit {
                    self.healthy = false;
                }
                self.running.clone_from(&version);
                UpdateOutcome {
                    result: "committed".into(),
                    version,
                    reason: None,
                }
            }
        };
        self.unreported = Some((outcome.version.clone(), outcome.result.clone()));
        self.last_outcome = Some(outcome);
    }

    /// What the region's desired state now names. A release the region no longer offers is
    /// dropped while it is not written yet, as the agent does; a written one is the reboot's.
    fn want(&mut self, target: Option<String>) {
        let unwritten = match &self.phase {
            Phase::Importing { version, .. } | Phase::Staged(version) => Some(version),
            _ => None,
        };
        if unwritten.is_some_and(|version| target.as_ref() != Some(version)) {
            self.phase = Phase::Idle;
        }
        self.wanted = target;
    }

    fn report(&mut self) -> Report {
        let seq = self.next_seq;
        self.next_seq += 1;
        let (phase, target) = match &self.phase {
            Phase::Idle => (UpdatePhase::Idle, None),
            Phase::Importing { .. } => (UpdatePhase::Importing, None),
            Phase::Staged(version) => (UpdatePhase::Staged, Some(version.clone())),
            Phase::Installed(version) => (UpdatePhase::Installed, Some(version.clone())),
            Phase::Rebooting(version) => (UpdatePhase::Rebooting, Some(version.clone())),
            Phase::Verifying { version, .. } => (UpdatePhase::Verifying, Some(version.clone())),
        };
        // While the gate decides, the node runs the new version's image.
        let os = match &self.phase {
            Phase::Verifying { version, .. } => version.clone(),
            _ => self.running.clone(),
        };
        let component = |name: &str, healthy: bool| ComponentHealth {
            component: name.into(),
            state: if healthy {
                HealthState::Healthy
            } else {
                HealthState::Down
            },
            detail: (!healthy).then(|| "not answering since the update".into()),
        };
        Report {
            seq,
            sent_at: Timestamp::now(),
            versions: Versions {
                agent: "sim".into(),
                os,
                k3s: None,
            },
            health: vec![component("libvirt", true), component("ovn", self.healthy)],
            capacity: Capacity {
                vcpus: 8,
                memory_mib: 16384,
                disk_free_gib: 100,
            },
            resources: ResourceCounts::default(),
            update: Some(UpdateReport {
                phase,
                target,
                failed: self.failed.clone(),
                last_outcome: self.last_outcome.clone(),
                refused: 0,
                last_refusal: None,
                last_error: None,
                waivers_used: 0,
                window: None,
            }),
        }
    }
}

/// A site's updater without a link of its own, for a load generator that holds thousands of
/// sites on connections it manages itself, where a thread and an HTTP client per site would not
/// fit. It takes releases as [`SimSite`]'s [`Behaviour::Good`] does, one step per heartbeat; the
/// caller sends what [`Self::heartbeat`] returns and hands back the region's answers.
pub struct Updater {
    node: Node,
}

impl Updater {
    /// A site running OS `running` that has read no desired state yet.
    pub fn new(running: &str) -> Self {
        Self {
            node: Node::new(Behaviour::Good, running),
        }
    }

    /// This heartbeat's reports (the unacknowledged ones first), after the updater's step; `None`
    /// while the node reboots and sends nothing.
    pub fn heartbeat(&mut self) -> Option<ReportBatch> {
        if !self.node.advance() {
            return None;
        }
        let report = self.node.report();
        self.node.queue.push(report);
        Some(ReportBatch {
            reports: self.node.queue.clone(),
        })
    }

    /// The region took the reports: true when its desired generation moved, so the desired state
    /// is to be fetched and handed to [`Self::received`].
    pub fn acked(&mut self, ack: &ReportAck) -> bool {
        self.node
            .queue
            .retain(|report| report.seq > ack.acked_through);
        ack.desired_generation != self.node.generation
    }

    /// The desired state the region answered with.
    pub fn received(&mut self, desired: DesiredState) {
        self.node.generation = desired.generation;
        self.node.want(desired.target_os_version);
    }

    /// The OS version it runs.
    pub fn running(&self) -> &str {
        &self.node.running
    }
}

impl Link {
    /// Sends the queued reports; the region's ack, or `None` when it was out of reach (the
    /// reports stay queued, as an agent's do).
    fn deliver(&self, queue: &[Report]) -> Option<ReportAck> {
        let batch = ReportBatch {
            reports: queue.to_vec(),
        };
        let request = self
            .client
            .post(format!("{}{}", self.url, paths::reports(&self.site)))
            .json(&batch);
        self.exchange(request, "reports")
    }

    fn desired(&self) -> Option<DesiredState> {
        let request = self
            .client
            .get(format!("{}{}", self.url, paths::desired(&self.site)));
        self.exchange(request, "desired state")
    }

    /// `None` when the region was out of reach; any refusal is a bug in the simulation or the
    /// region, and fails the test.
    fn exchange<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::blocking::RequestBuilder,
        what: &str,
    ) -> Option<T> {
        let response = request
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
            .send()
            .ok()?;
        let status = response.status();
        assert!(
            status.is_success(),
            "site {}: {what} refused with {status}: {}",
            self.site,
            response.text().unwrap_or_default()
        );
        Some(response.json().expect(what))
    }
}
