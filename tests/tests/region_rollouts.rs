//! Rollouts through a real region process: releases signed at a release manager's desk and
//! published with the region's CLI, rolled out over simulated sites that speak the node protocol
//! (`fleet_sim`). The region steps its rollouts every 200 ms and expects a heartbeat every second;
//! the sites heartbeat every 300 ms.
//!
//! What the region did is checked against what the sites saw: every desired state a site received,
//! with the time it arrived, and the time it told the region it committed. The REST progress is
//! sampled as well, but only the sites' records are complete.

use jiff::{SignedDuration, Timestamp};
use reqwest::Method;
use scs_edge_proto::UpdatePhase;
use scs_edge_tests::fleet_sim::{Behaviour, SimSite};
use scs_edge_tests::postgres::{PostgresServer, TestDatabase};
use scs_edge_tests::region::{Answer, RegionOptions, RegionProcess};
use scs_edge_tests::release_desk::Desk;
use scs_edge_tests::wait;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// How often the region steps its rollouts.
const TICK: Duration = Duration::from_millis(200);
/// How often a simulated site heartbeats.
const HEARTBEAT: Duration = Duration::from_millis(300);
/// The longest any one awaited condition may take: generous for a loaded two-core machine; a
/// passing run takes a small part of it.
const PATIENCE: Duration = Duration::from_secs(90);
/// The version every site runs at the start.
const RUNNING: &str = "1.0.0";
/// How long a wave waits for an offline site: a little more than the three heartbeat intervals
/// the region accepts at least, so that the wave gives up on it within seconds.
const OFFLINE_DEADLINE_SECS: u64 = 5;
/// Both processes read the same system clock, and everything a site records happens after what
/// the region did to cause it, so the sites' times need no allowance for skew — only for the
/// clock being slewed between two readings.
const CLOCK_ALLOWANCE: SignedDuration = SignedDuration::from_millis(50);
/// The in-flight states of a site as the REST progress shows them.
const IN_FLIGHT: [&str; 4] = ["offered", "downloading", "installing", "verifying"];

/// A region with published releases and its simulated sites.
struct Fleet {
    sites: BTreeMap<String, SimSite>,
    region: RegionProcess,
    _desk: Desk,
    _database: Option<TestDatabase>,
}

/// One simulated site to enrol: name, labels, behaviour.
struct Enrol<'a> {
    site: &'a str,
    labels: &'a [(&'a str, &'a str)],
    behaviour: Behaviour,
}

fn enrol<'a>(site: &'a str, labels: &'a [(&'a str, &'a str)], behaviour: Behaviour) -> Enrol<'a> {
    Enrol {
        site,
        labels,
        behaviour,
    }
}

impl Fleet {
    /// Signs and publishes `releases`, starts a region (on `database`, else SQLite) and enrols
    /// `sites`; returns once every site has read its first desired state.
    fn start(
        label: &str,
        releases: &[&str],
        database: Option<TestDatabase>,
        sites: Vec<Enrol<'_>>,
    ) -> Self {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let desk = Desk::new(&runtime);
        for version in releases {
            desk.sign(&runtime, version);
        }
        let region = RegionProcess::start(
            label,
            RegionOptions {
                database_url: database
                    .as_ref()
                    .map(|db| db.url.clone())
                    .unwrap_or_default(),
                expected_interval_secs: 1,
                extra: format!(
                    "{}\n[rollouts]\ntick_millis = {}\n",
                    desk.region_config(),
                    TICK.as_millis()
                ),
                ..RegionOptions::default()
            },
        );
        let published = region.cli_ok(&["release", "publish", &desk.repository_arg()]);
        for version in releases {
            assert!(
                published.contains(&format!("published {version}")),
                "{published}"
            );
        }
        let sites: BTreeMap<String, SimSite> = sites
            .into_iter()
            .map(|enrol| {
                let token = region.add_labelled_site_with_token(enrol.site, enrol.labels);
                let sim = SimSite::join(
                    &region,
                    enrol.site,
                    &token,
                    RUNNING,
                    enrol.behaviour,
                    HEARTBEAT,
                );
                (enrol.site.to_owned(), sim)
            })
            .collect();
        for sim in sites.values() {
            wait::until(
                &format!("{} reads its first desired state", sim.site),
                PATIENCE,
                || sim.desired().map(|_| ()),
            );
        }
        Self {
            sites,
            region,
            _desk: desk,
            _database: database,
        }
    }

    fn sim(&self, site: &str) -> &SimSite {
        &self.sites[site]
    }

    /// Creates a rollout over the operator API.
    fn create(&self, spec: &Value) -> Answer {
        self.region.api_send(Method::POST, "/api/v1/rollouts", spec)
    }

    fn act(&self, rollout: &str, action: &str, body: &Value) -> Answer {
        self.region.api_send(
            Method::POST,
            &format!("/api/v1/rollouts/{rollout}/{action}"),
            body,
        )
    }

    fn switch(&self, engaged: bool, reason: &str) {
        let answer = self.region.api_send(
            Method::PUT,
            "/api/v1/rollout-switch",
            &json!({ "engaged": engaged, "reason": reason }),
        );
        assert_eq!(answer.status, 200, "{:?}", answer.json);
        assert_eq!(answer.json["engaged"], engaged, "{:?}", answer.json);
    }

    /// The rollout as `GET /api/v1/rollouts/{name}` shows it.
    fn rollout(&self, name: &str) -> Value {
        let (status, body) = self
            .region
            .api_get(&format!("/api/v1/rollouts/{name}"), None);
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Polls the rollout until `done` holds for it; returns what it showed then.
    fn await_rollout(&self, name: &str, what: &str, mut done: impl FnMut(&Value) -> bool) -> Value {
        wait::until(&format!("rollout {name}: {what}"), PATIENCE, || {
            let rollout = self.rollout(name);
            done(&rollout).then_some(rollout)
        })
    }

    /// Every site's desired state, as the operator API shows it.
    fn desired_states(&self) -> BTreeMap<String, Value> {
        let (status, body) = self.region.api_get("/api/v1/sites", None);
        assert_eq!(status, 200, "{body}");
        body["sites"]
            .as_array()
            .expect("sites")
            .iter()
            .map(|site| {
                (
                    site["name"].as_str().expect("name").to_owned(),
                    site["desired"].clone(),
                )
            })
            .collect()
    }

    /// Sites' offers of `version` so far, by site.
    fn offers(&self, version: &str) -> BTreeMap<String, usize> {
        self.sites
            .iter()
            .map(|(name, sim)| (name.clone(), sim.offers_of(version).len()))
            .collect()
    }

    /// Watches for `ticks` of the region's driver that no site receives a new offer of `version`.
    ///
    /// A bounded observation, not a wait for something to happen: the claim is "nothing is
    /// offered while …", and the sites' records are read throughout the period, so an offer at
    /// any moment of it fails the test.
    fn assert_no_offers_for(&self, ticks: u32, version: &str, why: &str) {
        let before = self.offers(version);
        let period = TICK * ticks;
        let news = wait::within(period, || {
            let now = self.offers(version);
            (now != before).then_some(now)
        });
        assert!(
            news.is_none(),
            "{why}: offers of {version} went out: before {before:?}, then {news:?}"
        );
    }
}

fn state(rollout: &Value) -> &str {
    rollout["progress"]["state"].as_str().unwrap_or_default()
}

fn site_state<'a>(rollout: &'a Value, site: &str) -> &'a str {
    rollout["progress"]["sites"]
        .as_array()
        .and_then(|sites| sites.iter().find(|row| row["site"] == site))
        .and_then(|row| row["state"].as_str())
        .unwrap_or_default()
}

fn wave_sites(rollout: &Value, wave: usize) -> Vec<String> {
    rollout["plan"]["waves"][wave]["sites"]
        .as_array()
        .expect("wave sites")
        .iter()
        .map(|site| site.as_str().expect("site").to_owned())
        .collect()
}

fn in_flight(rollout: &Value) -> Vec<String> {
    rollout["progress"]["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .filter(|row| IN_FLIGHT.contains(&row["state"].as_str().unwrap_or_default()))
        .map(|row| row["site"].as_str().expect("site").to_owned())
        .collect()
}

fn spec(name: &str, target: &str, waves: &Value, max_parallel: usize) -> Value {
    json!({
        "name": name,
        "target_version": target,
        "waves": waves,
        "max_parallel": max_parallel,
        "offline_deadline_secs": 3600,
    })
}

/// The canary by label, half the fleet, the rest.
fn three_waves(label: &str, database: Option<TestDatabase>) {
    let target = "1.1.0";
    let main: &[(&str, &str)] = &[("ring", "main")];
    let mut sites = vec![enrol("canary-1", &[("ring", "canary")], Behaviour::Good)];
    let names: Vec<String> = (1..=7).map(|n| format!("site-{n}")).collect();
    sites.extend(names.iter().map(|name| enrol(name, main, Behaviour::Good)));
    let fleet = Fleet::start(label, &[target], database, sites);

    let waves = json!([
        { "name": "canary", "selector": { "ring": "canary" }, "soak_secs": 2 },
        { "name": "early", "percent": 50, "soak_secs": 1 },
        { "name": "rest" },
    ]);
    let created = fleet.create(&spec("os-1-1", target, &waves, 2));
    assert_eq!(created.status, 201, "{:?}", created.json);
    let mut most_in_flight = Vec::new();
    let done = fleet.await_rollout("os-1-1", "completed", |rollout| {
        let flying = in_flight(rollout);
        if flying.len() > most_in_flight.len() {
            most_in_flight = flying;
        }
        state(rollout) == "completed"
    });
    assert!(
        most_in_flight.len() <= 2,
        "more than max_parallel in flight: {most_in_flight:?}"
    );
    let canary = wave_sites(&done, 0);
    let early = wave_sites(&done, 1);
    let rest = wave_sites(&done, 2);
    assert_eq!(canary, ["canary-1"], "{done}");
    assert_eq!(early.len(), 4, "50 % of 8 sites: {done}");
    assert_eq!(rest.len(), 3, "{done}");

    // Each wave after the soak of the one before: the canary alone first.
    let sim = |site: &String| fleet.sim(site);
    let offered = |site: &String| {
        let offers = sim(site).offers_of(target);
        assert_eq!(offers.len(), 1, "{site} offered once: {offers:?}");
        offers[0]
    };
    let committed = |site: &String| {
        sim(site)
            .committed_at(target)
            .unwrap_or_else(|| panic!("{site} committed {target}"))
    };
    let canary_committed = committed(&canary[0]);
    for site in early.iter().chain(&rest) {
        assert!(
            offered(site) + CLOCK_ALLOWANCE >= canary_committed + SignedDuration::from_secs(2),
            "{site} offered at {} before the canary's 2 s soak ended (committed {canary_committed})",
            offered(site)
        );
    }
    let early_committed = early.iter().map(committed).max().expect("early sites");
    for site in &rest {
        assert!(
            offered(site) + CLOCK_ALLOWANCE >= early_committed + SignedDuration::from_secs(1),
            "{site} offered at {} before the early wave's 1 s soak ended (last commit {early_committed})",
            offered(site)
        );
    }

    // Never more than two updating at once, by the sites' own records: each site updates from
    // the offer it read to the commit it sent, within the region's in-flight span of it.
    let spans: Vec<(Timestamp, Timestamp, &String)> = canary
        .iter()
        .chain(&early)
        .chain(&rest)
        .map(|site| (offered(site), committed(site), site))
        .collect();
    for (start, _, site) in &spans {
        let overlapping: Vec<&&String> = spans
            .iter()
            .filter(|(from, to, _)| from <= start && start < to)
            .map(|(_, _, other)| other)
            .collect();
        assert!(
            overlapping.len() <= 2,
            "when {site} was offered, {overlapping:?} were updating"
        );
    }

    for (name, sim) in &fleet.sites {
        assert_eq!(sim.running(), target, "{name}");
        assert_eq!(site_state(&done, name), "committed", "{done}");
    }
}

#[test]
fn a_release_rolls_out_in_three_waves_canary_first_each_after_its_soak() {
    three_waves("rollout-waves", None);
}

#[test]
fn a_release_rolls_out_in_three_waves_canary_first_each_after_its_soak_on_postgresql() {
    let database = PostgresServer::shared().create_database("rollout_waves");
    three_waves("rollout-waves-pg", Some(database));
}

/// A canary labelled `ring=canary` that takes releases as `canary` does, and seven good sites;
/// returns the fleet and the good sites' names.
fn canary_fleet(label: &str, releases: &[&str], canary: Behaviour) -> (Fleet, Vec<String>) {
    let main: &[(&str, &str)] = &[("ring", "main")];
    let mut sites = vec![enrol("canary-1", &[("ring", "canary")], canary)];
    let names: Vec<String> = (1..=7).map(|n| format!("site-{n}")).collect();
    sites.extend(names.iter().map(|name| enrol(name, main, Behaviour::Good)));
    (Fleet::start(label, releases, None, sites), names)
}

/// Creates rollout `os-1-1` of `target`: the canary first, soaking `soak_secs`, then the rest,
/// three at a time. Returns every site's desired state from before.
fn roll_out_canary_first(fleet: &Fleet, target: &str, soak_secs: u64) -> BTreeMap<String, Value> {
    let before = fleet.desired_states();
    let waves = json!([
        { "name": "canary", "selector": { "ring": "canary" }, "soak_secs": soak_secs },
        { "name": "rest" },
    ]);
    let created = fleet.create(&spec("os-1-1", target, &waves, 3));
    assert_eq!(created.status, 201, "{:?}", created.json);
    before
}

/// Waits for rollout `name` to halt on the canary, the reason saying `why` and the canary shown
/// as `shown`; fails if any other site was offered `bad` or had its desired state changed since
/// `before`.
fn assert_halted_on_the_canary_alone(
    fleet: &Fleet,
    (name, bad): (&str, &str),
    (why, shown): (&str, &str),
    before: &BTreeMap<String, Value>,
    others: &[String],
) -> Value {
    let halted = fleet.await_rollout(name, "halted (or, wrongly, completed)", |r| {
        matches!(state(r), "halted" | "completed")
    });
    assert_eq!(state(&halted), "halted", "{halted}");
    let reason = halted["progress"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("canary-1") && reason.contains(why),
        "{halted}"
    );
    assert_eq!(site_state(&halted, "canary-1"), shown, "{halted}");
    let after = fleet.desired_states();
    for site in others {
        assert_eq!(after[site], before[site], "{site}");
        assert!(fleet.sim(site).offers_of(bad).is_empty(), "{site}");
    }
    halted
}

#[test]
fn a_canary_that_rolls_back_halts_the_rollout_and_touches_nobody_else_until_a_fixed_release_resumes_it()
 {
    let (bad, fixed) = ("1.1.0", "1.1.1");
    let (fleet, names) = canary_fleet(
        "rollout-halt",
        &[bad, fixed],
        Behaviour::RollsBack {
            version: bad.into(),
            reason: "ovn-controller did not connect".into(),
        },
    );
    let before = roll_out_canary_first(&fleet, bad, 1);
    let rolled_back = ("rolled back", "rolled back");
    assert_halted_on_the_canary_alone(&fleet, ("os-1-1", bad), rolled_back, &before, &names);
    let shown = fleet.region.cli_ok(&["rollout", "show", "os-1-1"]);
    assert!(shown.contains("halted"), "{shown}");
    assert!(
        shown.lines().any(|line| line.starts_with("reason:")
            && line.contains("canary-1")
            && line.contains("rolled back")),
        "{shown}"
    );
    let after = fleet.desired_states();
    // The canary's went back to what it was, in a new generation it has read.
    assert_eq!(after["canary-1"]["target_os_version"], Value::Null);
    let canary = fleet.sim("canary-1");
    wait::until(
        "the canary reads that its offer was taken back",
        PATIENCE,
        || {
            canary
                .desired()
                .filter(|desired| desired.target_os_version.is_none())
                .filter(|desired| {
                    Some(desired.generation) == after["canary-1"]["generation"].as_u64()
                })
        },
    );
    assert_eq!(canary.running(), "1.0.0");

    let resumed = fleet
        .region
        .cli_ok(&["rollout", "resume", "os-1-1", "--target", fixed]);
    assert!(resumed.contains(fixed), "{resumed}");
    let done = fleet.await_rollout("os-1-1", "completed on the fixed release", |r| {
        state(r) == "completed"
    });
    assert_eq!(done["target_version"], fixed, "{done}");
    for (name, sim) in &fleet.sites {
        assert_eq!(sim.running(), fixed, "{name}");
    }
    assert_eq!(
        canary.offers_of(bad).len(),
        1,
        "the bad release reached the canary once: {:?}",
        canary.witness()
    );
}

/// A node heartbeats through its health gate, already on the new version's image (phase
/// `verifying`): that is no commit yet. A wave without soak must wait for the verdict.
#[test]
fn a_canary_still_in_its_health_gate_has_not_committed() {
    let bad = "1.1.0";
    let (fleet, names) = canary_fleet(
        "rollout-gate",
        &[bad],
        Behaviour::RollsBackAfterVerifying {
            version: bad.into(),
            reason: "servers did not come back".into(),
            beats: 3,
        },
    );
    let before = roll_out_canary_first(&fleet, bad, 0);
    let rolled_back = ("rolled back", "rolled back");
    assert_halted_on_the_canary_alone(&fleet, ("os-1-1", bad), rolled_back, &before, &names);
}

#[test]
fn a_canary_unhealthy_during_its_soak_halts_the_rollout_before_anyone_else_is_offered() {
    let target = "1.1.0";
    let (fleet, names) = canary_fleet(
        "rollout-unhealthy",
        &[target],
        Behaviour::UnhealthyAfterCommit,
    );
    let before = roll_out_canary_first(&fleet, target, 30);
    let unhealthy = ("unhealthy while soaking", "failed");
    assert_halted_on_the_canary_alone(&fleet, ("os-1-1", target), unhealthy, &before, &names);
    assert_eq!(
        fleet.sim("canary-1").running(),
        target,
        "no rollback: the gate passed"
    );
}

#[test]
fn a_site_offline_for_the_whole_wave_is_absent_and_catches_up_when_it_returns() {
    let target = "1.1.0";
    let first: &[(&str, &str)] = &[("ring", "first")];
    let second: &[(&str, &str)] = &[("ring", "second")];
    let last: &[(&str, &str)] = &[("ring", "last")];
    let sites = vec![
        enrol("first-1", first, Behaviour::Good),
        enrol("first-2", first, Behaviour::Good),
        enrol("first-3", first, Behaviour::Good),
        enrol("second-1", second, Behaviour::Good),
        enrol("second-2", second, Behaviour::Good),
        // The last wave waits for its windows, so it is still running when the absent site
        // returns, and with one at a time a returned site needs the slot an update holds.
        enrol("last-1", last, Behaviour::WaitsForWindow),
        enrol("last-2", last, Behaviour::WaitsForWindow),
        enrol("last-3", last, Behaviour::WaitsForWindow),
    ];
    let fleet = Fleet::start("rollout-absent", &[target], None, sites);
    let away = fleet.sim("first-3");
    away.power_off();
    wait::until("the region sees first-3 offline", PATIENCE, || {
        (fleet.region.site_json("first-3")["site"]["connectivity"] == "stale").then_some(())
    });

    let waves = json!([
        { "name": "first", "selector": { "ring": "first" } },
        { "name": "second", "selector": { "ring": "second" } },
        { "name": "last" },
    ]);
    let mut offline = spec("os-1-1", target, &waves, 1);
    offline["offline_deadline_secs"] = json!(OFFLINE_DEADLINE_SECS);
    let created = fleet.create(&offline);
    assert_eq!(created.status, 201, "{:?}", created.json);

    // The deadline passes: the first wave and the second go on without it.
    // "installing": the site has read its offer and holds the one slot until its window opens.
    let waiting = fleet.await_rollout(
        "os-1-1",
        "a last-wave site installed, first-3 absent",
        |r| {
            let flying = in_flight(r);
            r["progress"]["wave"] == 2
                && flying.len() == 1
                && site_state(r, &flying[0]) == "installing"
                && site_state(r, "first-3") == "absent"
        },
    );
    for wave in [0, 1] {
        assert_eq!(
            waiting["progress"]["waves"][wave]["status"], "done",
            "{waiting}"
        );
    }
    for site in ["first-1", "first-2", "second-1", "second-2"] {
        assert_eq!(site_state(&waiting, site), "committed", "{waiting}");
    }

    away.power_on();
    fleet.await_rollout("os-1-1", "first-3 back, waiting for a slot", |r| {
        site_state(r, "first-3") == "pending"
    });
    let not_offered_yet: Vec<&str> = ["last-1", "last-2", "last-3"]
        .into_iter()
        .filter(|site| fleet.sim(site).offers_of(target).is_empty())
        .collect();
    assert_eq!(not_offered_yet.len(), 2, "one at a time");
    for site in ["last-1", "last-2", "last-3"] {
        fleet.sim(site).open_window();
    }
    let done = fleet.await_rollout("os-1-1", "completed", |r| state(r) == "completed");

    let returned = away.offers_of(target);
    assert_eq!(returned.len(), 1, "{:?}", away.witness());
    for site in not_offered_yet {
        let offers = fleet.sim(site).offers_of(target);
        assert!(
            offers.iter().all(|offer| *offer > returned[0]),
            "the returned site is offered first: first-3 at {}, {site} at {offers:?}",
            returned[0]
        );
    }
    for (name, sim) in &fleet.sites {
        assert_eq!(sim.running(), target, "{name}");
        assert_eq!(site_state(&done, name), "committed", "{done}");
    }
}

#[test]
fn pause_stop_and_the_switch_take_back_offers_not_begun() {
    let target = "1.1.0";
    let first: &[(&str, &str)] = &[("ring", "first")];
    let others: Vec<String> = (1..=6).map(|n| format!("site-{n}")).collect();
    let mut sites = vec![
        enrol("begun-1", first, Behaviour::WaitsForWindow),
        enrol("slow-1", first, Behaviour::SlowImport(u32::MAX)),
    ];
    sites.extend(others.iter().map(|name| enrol(name, &[], Behaviour::Good)));
    let fleet = Fleet::start("rollout-hold", &[target], None, sites);
    let begun = fleet.sim("begun-1");
    let slow = fleet.sim("slow-1");

    let waves = json!([
        { "name": "first", "selector": { "ring": "first" } },
        { "name": "rest" },
    ]);
    let created = fleet.create(&spec("os-1-1", target, &waves, 2));
    assert_eq!(created.status, 201, "{:?}", created.json);
    fleet.await_rollout("os-1-1", "begun-1 installed, slow-1 importing", |r| {
        site_state(r, "begun-1") == "installing"
            // Importing, it names no version yet (as the agent): offered, shown as downloading.
            && site_state(r, "slow-1") == "downloading"
            && slow.reported_phase() == UpdatePhase::Importing
    });
    let others_before: BTreeMap<String, Value> = fleet
        .desired_states()
        .into_iter()
        .filter(|(site, _)| others.contains(site))
        .collect();

    // Pause: the offer slow-1 has not begun on goes back; begun-1 goes on.
    let paused = fleet.act("os-1-1", "pause", &json!({ "reason": "a report to read" }));
    assert_eq!(paused.status, 200, "{:?}", paused.json);
    assert_eq!(state(&paused.json), "paused", "{:?}", paused.json);
    let offered = slow.desired().expect("slow-1's desired state");
    assert_eq!(offered.target_os_version.as_deref(), Some(target));
    wait::until("slow-1 reads its offer taken back", PATIENCE, || {
        slow.desired()
            .filter(|desired| desired.target_os_version.is_none())
            .filter(|desired| desired.generation > offered.generation)
    });
    wait::until("slow-1 drops the import", PATIENCE, || {
        (slow.reported_phase() == UpdatePhase::Idle).then_some(())
    });
    assert_eq!(
        begun.desired().and_then(|d| d.target_os_version).as_deref(),
        Some(target),
        "begun-1's offer stays"
    );
    begun.open_window();
    let finished = fleet.await_rollout("os-1-1", "begun-1 committed while paused", |r| {
        site_state(r, "begun-1") == "committed"
    });
    assert_eq!(state(&finished), "paused", "{finished}");
    assert_eq!(begun.running(), target);

    // The switch holds a resumed rollout: nothing offered until it is released.
    fleet.switch(true, "incident on the WAN");
    let resumed = fleet.act("os-1-1", "resume", &json!({}));
    assert_eq!(resumed.status, 200, "{:?}", resumed.json);
    assert_eq!(state(&resumed.json), "running", "{:?}", resumed.json);
    fleet.assert_no_offers_for(10, target, "the switch is engaged");
    assert!(in_flight(&fleet.rollout("os-1-1")).is_empty());
    fleet.switch(false, "WAN fixed");
    wait::until("slow-1 offered again", PATIENCE, || {
        (slow.offers_of(target).len() == 2).then_some(())
    });

    // Stop: the offer goes back, and nothing is offered after it.
    let stopped = fleet.act("os-1-1", "stop", &json!({ "reason": "we go for 1.2" }));
    assert_eq!(stopped.status, 200, "{:?}", stopped.json);
    assert_eq!(state(&stopped.json), "stopped", "{:?}", stopped.json);
    wait::until("slow-1 reads its offer taken back again", PATIENCE, || {
        slow.desired()
            .filter(|desired| desired.target_os_version.is_none())
    });
    fleet.assert_no_offers_for(10, target, "the rollout is stopped");

    let others_after: BTreeMap<String, Value> = fleet
        .desired_states()
        .into_iter()
        .filter(|(site, _)| others.contains(site))
        .collect();
    assert_eq!(others_after, others_before, "the second wave never started");
    for site in &others {
        assert!(fleet.sim(site).offers_of(target).is_empty(), "{site}");
    }
}

/// What a refused request must not change: the rollouts and every site's desired state.
fn fleet_record(fleet: &Fleet) -> (Value, BTreeMap<String, Value>) {
    let (status, rollouts) = fleet.region.api_get("/api/v1/rollouts", None);
    assert_eq!(status, 200, "{rollouts}");
    (rollouts, fleet.desired_states())
}

/// Sends `request`; it must be refused with `status` and `code`, its message naming `mentions`,
/// and leave the rollouts and the sites' desired states as they were.
fn assert_refused(
    fleet: &Fleet,
    request: impl FnOnce() -> Answer,
    (status, code): (u16, &str),
    mentions: &[&str],
) {
    let before = fleet_record(fleet);
    let answer = request();
    assert_eq!(
        (answer.status, answer.code().as_str()),
        (status, code),
        "{:?}",
        answer.json
    );
    let message = answer.json["error"]["message"].as_str().unwrap_or_default();
    for word in mentions {
        assert!(message.contains(word), "{word:?} not in {message:?}");
    }
    assert_eq!(fleet_record(fleet), before, "after {message}");
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let (first, second) = ("1.1.0", "1.2.0");
    let a: &[(&str, &str)] = &[("ring", "a")];
    let b: &[(&str, &str)] = &[("ring", "b")];
    let sites = vec![
        enrol("a-1", a, Behaviour::Good),
        enrol("a-2", a, Behaviour::Good),
        enrol("b-1", b, Behaviour::Good),
        enrol("b-2", b, Behaviour::Good),
    ];
    let fleet = Fleet::start("rollout-refusals", &[first, second], None, sites);
    let all = json!([{ "name": "all" }]);

    assert_refused(
        &fleet,
        || fleet.create(&spec("os-9", "9.9.9", &all, 1)),
        (422, "unknown_release"),
        &["9.9.9"],
    );
    let only_a = json!([{ "name": "a", "selector": { "ring": "a" } }]);
    assert_refused(
        &fleet,
        || fleet.create(&spec("os-1-1", first, &only_a, 1)),
        (400, "bad_request"),
        &["b-1", "b-2"],
    );
    for percent in [0, 101] {
        let waves = json!([{ "name": "a", "percent": percent }, { "name": "rest" }]);
        assert_refused(
            &fleet,
            || fleet.create(&spec("os-1-1", first, &waves, 1)),
            (400, "bad_request"),
            &["percent"],
        );
    }
    assert_refused(
        &fleet,
        || fleet.act("nope", "pause", &json!({ "reason": "x" })),
        (404, "unknown_rollout"),
        &["nope"],
    );
    let (status, body) = fleet.region.api_get("/api/v1/rollouts/nope", None);
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("unknown_rollout")),
        "{body}"
    );

    // A completed rollout cannot be paused.
    let created = fleet.create(&spec("os-1-1", first, &all, 4));
    assert_eq!(created.status, 201, "{:?}", created.json);
    fleet.await_rollout("os-1-1", "completed", |r| state(r) == "completed");
    assert_refused(
        &fleet,
        || fleet.act("os-1-1", "pause", &json!({ "reason": "too late" })),
        (409, "conflict"),
        &["completed"],
    );

    // An active rollout (held by the switch, so that nothing moves while the refusals are
    // checked) keeps its sites: another over them, or one of the same name, is refused.
    fleet.switch(true, "holding the next release");
    let created = fleet.create(&spec("os-1-2", second, &all, 4));
    assert_eq!(created.status, 201, "{:?}", created.json);
    assert_refused(
        &fleet,
        || fleet.create(&spec("os-1-2-again", second, &all, 1)),
        (409, "conflict"),
        &["os-1-2", "a-1", "a-2", "b-1", "b-2"],
    );
    assert_refused(
        &fleet,
        || fleet.create(&spec("os-1-2", second, &all, 1)),
        (409, "conflict"),
        &["os-1-2", "exists"],
    );
}
