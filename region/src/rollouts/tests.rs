//! The rollout state machine, step by step, over sites that report what a node would.

use super::machine::{Decisions, Hold, Plan, Progress, Rollout, SiteState, SiteView, Wave};
use jiff::{SignedDuration, Timestamp};
use semver::Version;
use std::collections::{BTreeMap, BTreeSet};

fn v(text: &str) -> Version {
    text.parse().expect("version")
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).expect("time")
}

fn wave(name: &str, sites: &[&str], soak_secs: i64) -> Wave {
    Wave {
        name: name.into(),
        sites: sites.iter().map(|s| (*s).to_owned()).collect(),
        soak: SignedDuration::from_secs(soak_secs),
        manual: false,
    }
}

/// Canary, then two, then the rest; 2 at a time; 60 s soak; halt at the first failure.
fn plan() -> Plan {
    Plan {
        target: v("1.1.0"),
        waves: vec![
            wave("canary", &["a"], 60),
            wave("early", &["b", "c"], 60),
            wave("rest", &["d", "e", "f"], 60),
        ],
        max_parallel: 2,
        success_threshold_percent: 100,
        stop_on_failure: true,
        offline_deadline: SignedDuration::from_mins(10),
    }
}

/// A healthy, online site on `running`, idle, window open.
fn on(running: &str) -> SiteView {
    SiteView {
        online: true,
        running: Some(v(running)),
        updating: None,
        failed: BTreeSet::new(),
        refused: None,
        rolled_back: None,
        healthy: true,
        window_open: true,
        last_seen: Some(at(0)),
    }
}

/// The fleet: every site of `plan()` on 1.0.0.
fn fleet() -> BTreeMap<String, SiteView> {
    ["a", "b", "c", "d", "e", "f"]
        .iter()
        .map(|s| ((*s).to_owned(), on("1.0.0")))
        .collect()
}

fn updating(view: &mut SiteView) {
    view.updating = Some(v("1.1.0"));
}

fn committed(view: &mut SiteView) {
    view.updating = None;
    view.running = Some(v("1.1.0"));
}

/// One step at `now` after every online site reported (its heartbeat seen at `now`).
fn reported(
    rollout: &mut Rollout,
    plan: &Plan,
    views: &mut BTreeMap<String, SiteView>,
    now: Timestamp,
) -> Decisions {
    for view in views.values_mut().filter(|view| view.online) {
        view.last_seen = Some(now);
    }
    rollout.step(plan, views, now, Hold::Free)
}

fn offered(decisions: &Decisions) -> Vec<&str> {
    decisions.offer.iter().map(String::as_str).collect()
}

#[test]
fn waves_go_in_order_each_after_its_soak_and_never_more_than_max_parallel() {
    let plan = plan();
    let mut views = fleet();
    let mut rollout = Rollout::start(&plan, &views, at(0));

    // The canary alone.
    assert_eq!(
        offered(&reported(&mut rollout, &plan, &mut views, at(1))),
        ["a"]
    );
    assert!(
        rollout
            .step(&plan, &views, at(2), Hold::Free)
            .offer
            .is_empty(),
        "the canary first"
    );
    updating(views.get_mut("a").expect("a"));
    reported(&mut rollout, &plan, &mut views, at(3));
    assert!(matches!(rollout.sites["a"], SiteState::Updating { .. }));
    committed(views.get_mut("a").expect("a"));
    reported(&mut rollout, &plan, &mut views, at(10));
    assert_eq!(
        rollout.sites["a"],
        SiteState::Soaking {
            committed_at: at(10)
        }
    );
    // Soaking: the next wave waits.
    assert!(
        rollout
            .step(&plan, &views, at(69), Hold::Free)
            .offer
            .is_empty()
    );
    reported(&mut rollout, &plan, &mut views, at(70));
    assert_eq!(rollout.sites["a"], SiteState::Succeeded);
    assert_eq!(
        rollout.progress,
        Progress::Running {
            wave: 1,
            since: at(70)
        }
    );

    // Wave two: both at once (max_parallel 2).
    assert_eq!(
        offered(&reported(&mut rollout, &plan, &mut views, at(71))),
        ["b", "c"]
    );
    for site in ["b", "c"] {
        committed(views.get_mut(site).expect("site"));
    }
    reported(&mut rollout, &plan, &mut views, at(80));
    reported(&mut rollout, &plan, &mut views, at(140));
    assert!(matches!(
        rollout.progress,
        Progress::Running { wave: 2, .. }
    ));

    // Wave three: three sites, two at a time.
    assert_eq!(
        offered(&reported(&mut rollout, &plan, &mut views, at(141))),
        ["d", "e"]
    );
    committed(views.get_mut("d").expect("d"));
    // d soaks, so it no longer counts: f is offered in the same step.
    assert_eq!(
        offered(&reported(&mut rollout, &plan, &mut views, at(150))),
        ["f"]
    );
    assert!(
        rollout
            .step(&plan, &views, at(151), Hold::Free)
            .offer
            .is_empty()
    );
    for site in ["e", "f"] {
        committed(views.get_mut(site).expect("site"));
    }
    reported(&mut rollout, &plan, &mut views, at(160));
    reported(&mut rollout, &plan, &mut views, at(230));
    assert_eq!(rollout.progress, Progress::Completed);
    assert!(rollout.sites.values().all(|s| *s == SiteState::Succeeded));
}

#[test]
fn a_site_still_in_its_health_gate_has_not_committed_even_though_it_boots_the_target() {
    let mut plan = plan();
    plan.waves[0].soak = SignedDuration::ZERO;
    let mut views = fleet();
    let mut rollout = Rollout::start(&plan, &views, at(0));
    reported(&mut rollout, &plan, &mut views, at(1));
    // Rebooted into 1.1.0, the gate verifying it: the report's OS version is already the target.
    let a = views.get_mut("a").expect("a");
    a.running = Some(v("1.1.0"));
    a.updating = Some(v("1.1.0"));
    for tick in 2..10 {
        assert!(
            rollout
                .step(&plan, &views, at(tick), Hold::Free)
                .offer
                .is_empty()
        );
    }
    assert!(matches!(rollout.sites["a"], SiteState::Updating { .. }));
    assert!(matches!(
        rollout.progress,
        Progress::Running { wave: 0, .. }
    ));
    // The gate fails: back on 1.0.0, and the rollout halts having offered nobody else.
    let a = views.get_mut("a").expect("a");
    a.running = Some(v("1.0.0"));
    a.updating = None;
    a.failed.insert(v("1.1.0"));
    reported(&mut rollout, &plan, &mut views, at(10));
    assert!(matches!(rollout.progress, Progress::Halted { .. }));
}

#[test]
fn a_report_from_the_image_a_rolled_back_site_leaves_is_a_failure_not_a_commit() {
    // Seen on a real node: the gate rolled back and the heartbeat went out before the reboot —
    // still on 1.1.0, idle, 1.1.0 failed. Then silence while it reboots.
    let mut plan = plan();
    plan.waves[0].soak = SignedDuration::from_secs(10);
    let mut views = fleet();
    let mut rollout = Rollout::start(&plan, &views, at(0));
    reported(&mut rollout, &plan, &mut views, at(1));
    updating(views.get_mut("a").expect("a"));
    reported(&mut rollout, &plan, &mut views, at(2));
    let a = views.get_mut("a").expect("a");
    a.running = Some(v("1.1.0"));
    a.updating = None;
    a.failed.insert(v("1.1.0"));
    a.last_seen = Some(at(3));
    reported(&mut rollout, &plan, &mut views, at(4));
    assert!(
        matches!(rollout.sites["a"], SiteState::Failed { .. }),
        "{:?}",
        rollout.sites["a"]
    );
    for tick in 5..60 {
        assert!(
            rollout
                .step(&plan, &views, at(tick), Hold::Free)
                .offer
                .is_empty()
        );
    }
    assert!(matches!(rollout.progress, Progress::Halted { .. }));
}

#[test]
fn a_soak_ends_only_with_a_report_from_after_it() {
    let mut plan = plan();
    plan.waves[0].soak = SignedDuration::from_secs(10);
    let mut views = fleet();
    let mut rollout = Rollout::start(&plan, &views, at(0));
    reported(&mut rollout, &plan, &mut views, at(1));
    committed(views.get_mut("a").expect("a"));
    reported(&mut rollout, &plan, &mut views, at(2));
    assert!(matches!(rollout.sites["a"], SiteState::Soaking { .. }));
    // Quiet since at(2): still "online" (within three intervals), but nothing says it stayed
    // healthy through the soak.
    rollout.step(&plan, &views, at(20), Hold::Free);
    assert!(matches!(rollout.sites["a"], SiteState::Soaking { .. }));
    reported(&mut rollout, &plan, &mut views, at(21));
    assert_eq!(rollout.sites["a"], SiteState::Succeeded);
}

#[test]
fn a_canary_that_rolls_back_halts_the_rollout_and_no_other_site_is_offered() {
    let plan = plan();
    let mut views = fleet();
    let mut rollout = Rollout::start(&plan, &views, at(0));
    reported(&mut rollout, &plan, &mut views, at(1));
    updating(views.get_mut("a").expect("a"));
    reported(&mut rollout, &plan, &mut views, at(2));
    // The gate failed: back on 1.0.0, 1.1.0 recorded as failed.
    let a = views.get_mut("a").expect("a");
    a.updating = None;
    a.failed.insert(v("1.1.0"));
    a.rolled_back = Some((v("1.1.0"), "ovn-controller did not connect".into()));
    let decisions = reported(&mut rollout, &plan, &mut views, at(30));
    assert_eq!(decisions.take_back, ["a"]);
    assert!(matches!(rollout.sites["a"], SiteState::Failed { .. }));
    let Progress::Halted { wave, reason } = &rollout.progress else {
        panic!("halted: {:?}", rollout.progress);
    };
    assert_eq!(*wave, 0);
    assert!(
        reason.contains("canary")
            && reason.contains("a: 1.1.0 failed its health gate")
            && reason.contains("ovn-controller did not connect"),
        "{reason}"
    );
    for later in 31..40 {
        assert!(
            rollout
                .step(&plan, &views, at(later), Hold::Free)
                .offer
                .is_empty()
        );
    }
    assert!(
        ["b", "c", "d", "e", "f"]
            .iter()
            .all(|site| rollout.sites[*site] == SiteState::Waiting)
    );

    // Resumed: the operator acknowledged the canary's failure, so it no longer halts the rollout;
    // it stays failed (1.1.0 is never offered to it again) and the next wave goes on.
    rollout.resume(at(100)).expect("resume a halt");
    reported(&mut rollout, &plan, &mut views, at(101));
    assert!(matches!(
        rollout.progress,
        Progress::Running { wave: 1, .. }
    ));
    assert!(matches!(
        rollout.sites["a"],
        SiteState::Failed {
            acknowledged: true,
            ..
        }
    ));
    assert_eq!(
        offered(&reported(&mut rollout, &plan, &mut views, at(102))),
        ["b", "c"]
    );
}

#[test]
fn a_refusal_after_the_offer_fails_the_site_an_older_one_does_not() {
    let plan = plan();
    let mut views = fleet();
    let mut rollout = Rollout::start(&plan, &views, at(0));
    views.get_mut("a").expect("a").refused = Some((v("1.1.0"), at(-5)));
    reported(&mut rollout, &plan, &mut views, at(1));
    reported(&mut rollout, &plan, &mut views, at(2));
    assert!(
        matches!(rollout.sites["a"], SiteState::Offered { .. }),
        "a refusal from before the offer is about something else"
    );
    views.get_mut("a").expect("a").refused = Some((v("1.1.0"), at(3)));
    let decisions = reported(&mut rollout, &plan, &mut views, at(4));
    assert_eq!(decisions.take_back, ["a"]);
    assert_eq!(
        rollout.sites["a"],
        SiteState::Failed {
            reason: "the site refused 1.1.0".into(),
            acknowledged: false,
        }
    );
}

#[test]
fn an_unhealthy_site_while_soaking_fails_and_halts() {
    let plan = plan();
    let mut views = fleet();
    let mut rollout = Rollout::start(&plan, &views, at(0));
    reported(&mut rollout, &plan, &mut views, at(1));
    committed(views.get_mut("a").expect("a"));
    reported(&mut rollout, &plan, &mut views, at(10));
    views.get_mut("a").expect("a").healthy = false;
    reported(&mut rollout, &plan, &mut views, at(20));
    assert_eq!(
        rollout.sites["a"],
        SiteState::Failed {
            reason: "unhealthy while soaking".into(),
            acknowledged: false,
        }
    );
    assert!(matches!(rollout.progress, Progress::Halted { .. }));
}

#[test]
fn an_offline_site_is_skipped_after_the_deadline_without_blocking_the_wave() {
    let mut plan = plan();
    plan.waves = vec![wave("all", &["a", "b"], 0)];
    let mut views = fleet();
    views.get_mut("b").expect("b").online = false;
    let mut rollout = Rollout::start(&plan, &views, at(0));
    assert_eq!(
        offered(&reported(&mut rollout, &plan, &mut views, at(1))),
        ["a"]
    );
    committed(views.get_mut("a").expect("a"));
    reported(&mut rollout, &plan, &mut views, at(10));
    reported(&mut rollout, &plan, &mut views, at(11));
    assert_eq!(rollout.sites["a"], SiteState::Succeeded);
    assert_eq!(
        rollout.sites["b"],
        SiteState::Waiting,
        "still within the deadline"
    );
    // Back before the deadline: it catches up.
    let mut returning = views.clone();
    returning.get_mut("b").expect("b").online = true;
    let mut caught_up = rollout.clone();
    assert_eq!(
        offered(&reported(&mut caught_up, &plan, &mut returning, at(300))),
        ["b"]
    );
    // Offline for the whole wave: absent, and the wave passes without it.
    reported(&mut rollout, &plan, &mut views, at(600));
    assert_eq!(rollout.sites["b"], SiteState::Absent { since: at(600) });
    reported(&mut rollout, &plan, &mut views, at(601));
    assert_eq!(rollout.progress, Progress::Completed);
}

#[test]
fn sites_on_the_target_or_that_failed_it_before_are_not_offered() {
    let plan = plan();
    let mut views = fleet();
    views.insert("a".into(), on("1.1.0"));
    views.get_mut("b").expect("b").failed.insert(v("1.1.0"));
    let rollout = Rollout::start(&plan, &views, at(0));
    assert_eq!(rollout.sites["a"], SiteState::Succeeded);
    assert!(matches!(rollout.sites["b"], SiteState::Skipped { .. }));
    assert_eq!(rollout.sites["c"], SiteState::Waiting);
}

#[test]
fn a_closed_window_holds_the_offer_and_a_threshold_tolerates_some_failures() {
    let mut plan = plan();
    plan.waves = vec![wave("all", &["a", "b", "c", "d"], 0)];
    plan.max_parallel = 4;
    plan.stop_on_failure = false;
    plan.success_threshold_percent = 75;
    let mut views = fleet();
    views.get_mut("d").expect("d").window_open = false;
    let mut rollout = Rollout::start(&plan, &views, at(0));
    assert_eq!(
        offered(&reported(&mut rollout, &plan, &mut views, at(1))),
        ["a", "b", "c"]
    );
    views.get_mut("d").expect("d").window_open = true;
    assert_eq!(
        offered(&reported(&mut rollout, &plan, &mut views, at(2))),
        ["d"]
    );
    // One of four fails: 75 % can still pass.
    views.get_mut("a").expect("a").failed.insert(v("1.1.0"));
    for site in ["b", "c", "d"] {
        committed(views.get_mut(site).expect("site"));
    }
    reported(&mut rollout, &plan, &mut views, at(10));
    assert!(matches!(rollout.progress, Progress::Running { .. }));
    reported(&mut rollout, &plan, &mut views, at(11));
    assert_eq!(rollout.progress, Progress::Completed);
    // Two of four would not.
    let mut strict = Rollout::start(&plan, &fleet(), at(0));
    let mut views = fleet();
    reported(&mut strict, &plan, &mut views, at(1));
    for site in ["a", "b"] {
        views.get_mut(site).expect("site").failed.insert(v("1.1.0"));
    }
    reported(&mut strict, &plan, &mut views, at(5));
    assert!(matches!(strict.progress, Progress::Halted { .. }));
}

#[test]
fn random_fleets_and_operators_never_break_the_rollout_rules() {
    use rand::{Rng as _, SeedableRng as _};
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    for _ in 0..200 {
        let mut plan = plan();
        plan.max_parallel = rng.random_range(1..=3);
        plan.stop_on_failure = rng.random_bool(0.5);
        plan.success_threshold_percent = rng.random_range(50..=100);
        let mut views = fleet();
        let mut rollout = Rollout::start(&plan, &views, at(0));
        let mut last_wave = 0;
        let mut hold = Hold::Free;
        for tick in 1..200 {
            // Each site does something a node might: start, commit, fail, drop off, come back.
            for view in views.values_mut() {
                match rng.random_range(0..20) {
                    0 => updating(view),
                    1 | 2 => committed(view),
                    3 => {
                        view.updating = None;
                        view.failed.insert(v("1.1.0"));
                    }
                    4 => view.online = !view.online,
                    5 => view.healthy = !view.healthy,
                    _ => {}
                }
            }
            // And operators do what operators do; refusals are fine, they change nothing.
            let before = rollout.clone();
            let operated = match rng.random_range(0..40) {
                0 => rollout.pause("op", "look", at(tick * 10)).map(|_| ()),
                1 => rollout.resume(at(tick * 10)),
                2 => rollout.stop("op", "enough").map(|_| ()),
                3 => {
                    hold = if hold == Hold::Free {
                        Hold::Switch
                    } else {
                        Hold::Free
                    };
                    Ok(())
                }
                _ => Ok(()),
            };
            if operated.is_err() {
                assert_eq!(rollout, before, "a refused action changed the rollout");
            }
            let in_flight_before = rollout.sites.values().filter(|s| s.in_flight()).count();
            let stopped_before = matches!(rollout.progress, Progress::Stopped { .. });
            let decisions = rollout.step(&plan, &views, at(tick * 10), hold);
            for site in &decisions.offer {
                assert!(
                    !views[site].failed.contains(&plan.target),
                    "offered {site} a failed version"
                );
                assert!(matches!(rollout.progress, Progress::Running { .. }));
                assert_eq!(
                    hold,
                    Hold::Free,
                    "offered {site} while the switch is engaged"
                );
                assert!(!stopped_before, "a stopped rollout offered {site}");
            }
            if !decisions.offer.is_empty() {
                // Sites may start on their own (a stick, a raced take-back); offers never add
                // beyond the limit.
                let in_flight = rollout.sites.values().filter(|s| s.in_flight()).count();
                assert!(
                    in_flight <= plan.max_parallel.max(in_flight_before),
                    "{in_flight} in flight"
                );
            }
            if hold == Hold::Switch
                || matches!(
                    rollout.progress,
                    Progress::Paused { .. } | Progress::Stopped { .. }
                )
            {
                assert!(
                    !rollout
                        .sites
                        .values()
                        .any(|s| matches!(s, SiteState::Offered { .. })),
                    "an offer not begun stayed out while held"
                );
            }
            if let Some(wave) = rollout.progress.wave() {
                assert!(
                    wave >= last_wave,
                    "went back from wave {last_wave} to {wave}"
                );
                last_wave = wave;
            }
        }
    }
}

#[test]
fn the_manual_wave_is_never_offered_and_waits_for_imports_until_finished() {
    let mut plan = plan();
    plan.waves = vec![wave("online", &["a"], 0), {
        let mut manual = wave("manual", &["b", "c", "d"], 0);
        manual.manual = true;
        manual
    }];
    plan.stop_on_failure = false;
    plan.success_threshold_percent = 50;
    let mut views = fleet();
    let mut rollout = Rollout::start(&plan, &views, at(0));
    reported(&mut rollout, &plan, &mut views, at(1));
    committed(views.get_mut("a").expect("a"));
    reported(&mut rollout, &plan, &mut views, at(2));
    reported(&mut rollout, &plan, &mut views, at(3));
    assert!(matches!(
        rollout.progress,
        Progress::Running { wave: 1, .. }
    ));
    for tick in 4..20 {
        assert!(
            rollout
                .step(&plan, &views, at(tick), Hold::Free)
                .offer
                .is_empty(),
            "air-gapped sites are never offered online"
        );
    }
    // b imported the stick and committed; c imported it and rolled back; d never did.
    committed(views.get_mut("b").expect("b"));
    views.get_mut("c").expect("c").failed.insert(v("1.1.0"));
    reported(&mut rollout, &plan, &mut views, at(30));
    reported(&mut rollout, &plan, &mut views, at(31));
    assert_eq!(rollout.sites["b"], SiteState::Succeeded);
    assert!(matches!(rollout.sites["c"], SiteState::Failed { .. }));
    assert_eq!(rollout.sites["d"], SiteState::Waiting);
    assert!(matches!(
        rollout.progress,
        Progress::Running { wave: 1, .. }
    ));
    // Nothing to finish outside a manual wave.
    assert!(
        Rollout::start(&plan, &fleet(), at(0))
            .finish(&plan)
            .is_err()
    );
    rollout.finish(&plan).expect("finish");
    assert!(matches!(rollout.sites["d"], SiteState::Skipped { .. }));
    reported(&mut rollout, &plan, &mut views, at(40));
    assert_eq!(rollout.progress, Progress::Completed);
}

#[test]
fn pause_holds_and_takes_back_offers_not_begun_stop_is_for_good() {
    let plan = plan();
    let mut views = fleet();
    let mut rollout = Rollout::start(&plan, &views, at(0));
    assert_eq!(
        offered(&reported(&mut rollout, &plan, &mut views, at(1))),
        ["a"]
    );
    let paused = rollout
        .pause("carol", "checking ovn", at(2))
        .expect("pause");
    assert_eq!(paused.take_back, ["a"]);
    assert_eq!(rollout.sites["a"], SiteState::Waiting);
    assert!(rollout.pause("carol", "again", at(3)).is_err());
    assert!(
        rollout
            .step(&plan, &views, at(4), Hold::Free)
            .offer
            .is_empty()
    );
    rollout.resume(at(5)).expect("resume");
    assert_eq!(
        offered(&reported(&mut rollout, &plan, &mut views, at(6))),
        ["a"]
    );
    // Begun before the stop: followed to its verdict; nothing offered afterwards.
    updating(views.get_mut("a").expect("a"));
    reported(&mut rollout, &plan, &mut views, at(7));
    rollout.stop("carol", "wrong release").expect("stop");
    assert!(rollout.is_active(), "a is still updating");
    assert!(rollout.resume(at(8)).is_err());
    committed(views.get_mut("a").expect("a"));
    reported(&mut rollout, &plan, &mut views, at(9));
    reported(&mut rollout, &plan, &mut views, at(80));
    assert_eq!(rollout.sites["a"], SiteState::Succeeded);
    assert!(!rollout.is_active());
    assert!(matches!(rollout.progress, Progress::Stopped { ref by, .. } if by == "carol"));
    assert!(
        rollout
            .sites
            .values()
            .filter(|s| **s == SiteState::Waiting)
            .count()
            == 5
    );
}

#[test]
fn the_switch_takes_back_offers_not_begun_and_holds_every_wave() {
    let plan = plan();
    let mut views = fleet();
    let mut rollout = Rollout::start(&plan, &views, at(0));
    reported(&mut rollout, &plan, &mut views, at(1));
    let held = rollout.step(&plan, &views, at(2), Hold::Switch);
    assert_eq!(held.take_back, ["a"]);
    for tick in 3..10 {
        assert!(
            rollout
                .step(&plan, &views, at(tick), Hold::Switch)
                .offer
                .is_empty()
        );
    }
    assert!(matches!(
        rollout.progress,
        Progress::Running { wave: 0, .. }
    ));
    assert_eq!(
        offered(&reported(&mut rollout, &plan, &mut views, at(10))),
        ["a"]
    );
}

#[test]
fn a_site_absent_for_its_wave_catches_up_first_when_it_returns() {
    let mut plan = plan();
    plan.offline_deadline = SignedDuration::from_secs(60);
    plan.waves[0].soak = SignedDuration::ZERO;
    let mut views = fleet();
    views.get_mut("a").expect("a").online = false;
    views.get_mut("a").expect("a").last_seen = Some(at(-100));
    let mut rollout = Rollout::start(&plan, &views, at(0));
    assert!(
        rollout
            .step(&plan, &views, at(1), Hold::Free)
            .offer
            .is_empty()
    );
    reported(&mut rollout, &plan, &mut views, at(61));
    assert_eq!(rollout.sites["a"], SiteState::Absent { since: at(61) });
    reported(&mut rollout, &plan, &mut views, at(62));
    assert!(
        matches!(rollout.progress, Progress::Running { wave: 1, .. }),
        "the canary's absence does not block the next wave: {:?}",
        rollout.progress
    );
    assert_eq!(
        offered(&reported(&mut rollout, &plan, &mut views, at(63))),
        ["b", "c"]
    );
    // Back while the next wave runs: it goes first once a slot is free.
    views.get_mut("a").expect("a").online = true;
    assert!(
        rollout
            .step(&plan, &views, at(64), Hold::Free)
            .offer
            .is_empty(),
        "b and c fill both slots"
    );
    committed(views.get_mut("b").expect("b"));
    assert_eq!(
        offered(&reported(&mut rollout, &plan, &mut views, at(70))),
        ["a"]
    );
}

#[test]
fn a_straggler_soaking_after_the_last_wave_keeps_the_rollout_running_until_its_soak_ends() {
    // Found in the lab of three sites: the rollout completed while the site that came back late
    // still soaked, and a completed rollout is never stepped again — its soak never ended.
    let mut plan = plan();
    plan.offline_deadline = SignedDuration::from_secs(60);
    plan.waves = vec![wave("canary", &["a"], 60), wave("rest", &["b"], 0)];
    let mut views = fleet();
    views.get_mut("a").expect("a").online = false;
    views.get_mut("a").expect("a").last_seen = Some(at(-100));
    let mut rollout = Rollout::start(&plan, &views, at(0));
    reported(&mut rollout, &plan, &mut views, at(61));
    assert_eq!(rollout.sites["a"], SiteState::Absent { since: at(61) });
    reported(&mut rollout, &plan, &mut views, at(62));
    assert_eq!(
        offered(&reported(&mut rollout, &plan, &mut views, at(63))),
        ["b"]
    );
    views.get_mut("a").expect("a").online = true;
    assert_eq!(
        offered(&reported(&mut rollout, &plan, &mut views, at(64))),
        ["a"],
        "back while the last wave runs: offered at once"
    );
    committed(views.get_mut("b").expect("b"));
    committed(views.get_mut("a").expect("a"));
    reported(&mut rollout, &plan, &mut views, at(70));
    reported(&mut rollout, &plan, &mut views, at(71));
    assert_eq!(rollout.sites["b"], SiteState::Succeeded);
    assert!(
        matches!(rollout.sites["a"], SiteState::Soaking { .. }),
        "{:?}",
        rollout.sites["a"]
    );
    assert!(
        matches!(rollout.progress, Progress::Running { .. }),
        "the straggler still soaks: {:?}",
        rollout.progress
    );
    reported(&mut rollout, &plan, &mut views, at(131));
    reported(&mut rollout, &plan, &mut views, at(132));
    assert_eq!(rollout.sites["a"], SiteState::Succeeded);
    assert_eq!(rollout.progress, Progress::Completed);
}

#[test]
fn a_halted_rollout_retargeted_to_a_fixed_release_starts_again_and_never_reoffers_the_bad_one() {
    let mut plan = plan();
    let mut views = fleet();
    let mut rollout = Rollout::start(&plan, &views, at(0));
    reported(&mut rollout, &plan, &mut views, at(1));
    views.get_mut("a").expect("a").failed.insert(v("1.1.0"));
    reported(&mut rollout, &plan, &mut views, at(2));
    assert!(matches!(rollout.progress, Progress::Halted { .. }));
    // Nothing to retarget while running, and a stop is for good.
    let mut running = Rollout::start(&plan, &views, at(0));
    assert!(
        running
            .retarget(&mut plan.clone(), v("1.1.1"), &views, at(3))
            .is_err()
    );

    rollout
        .retarget(&mut plan, v("1.1.1"), &views, at(3))
        .expect("retarget");
    assert_eq!(plan.target, v("1.1.1"));
    assert!(rollout.sites.values().all(|s| *s == SiteState::Waiting));
    assert_eq!(
        offered(&reported(&mut rollout, &plan, &mut views, at(4))),
        ["a"]
    );
}

#[test]
fn a_site_that_began_after_its_offer_was_taken_back_is_followed_and_judged() {
    let plan = plan();
    let mut views = fleet();
    let mut rollout = Rollout::start(&plan, &views, at(0));
    reported(&mut rollout, &plan, &mut views, at(1));
    rollout.pause("carol", "hold on", at(2)).expect("pause");
    // The node had fetched the offer just before it went back.
    updating(views.get_mut("a").expect("a"));
    reported(&mut rollout, &plan, &mut views, at(3));
    assert_eq!(rollout.sites["a"], SiteState::Updating { since: at(3) });
    views.get_mut("a").expect("a").updating = None;
    views.get_mut("a").expect("a").failed.insert(v("1.1.0"));
    let decisions = reported(&mut rollout, &plan, &mut views, at(4));
    assert_eq!(decisions.take_back, ["a"]);
    rollout.resume(at(5)).expect("resume");
    reported(&mut rollout, &plan, &mut views, at(6));
    assert!(
        matches!(rollout.progress, Progress::Halted { .. }),
        "a failure during a pause was not looked at: it halts"
    );
}

mod specs {
    use super::super::spec::{Candidate, RolloutSpec, SpecError};
    use std::collections::BTreeMap;

    fn spec(json: &str) -> RolloutSpec {
        serde_json::from_str(json).expect("spec")
    }

    /// Ten sites, `site-0` … `site-9`; the first two carry `ring=canary`.
    fn labels() -> Vec<(String, BTreeMap<String, String>)> {
        (0..10)
            .map(|i| {
                let labels = if i < 2 {
                    BTreeMap::from([("ring".to_owned(), "canary".to_owned())])
                } else {
                    BTreeMap::new()
                };
                (format!("site-{i}"), labels)
            })
            .collect()
    }

    fn candidates(sites: &[(String, BTreeMap<String, String>)]) -> Vec<Candidate<'_>> {
        sites
            .iter()
            .map(|(name, labels)| Candidate {
                name,
                labels,
                manual: false,
            })
            .collect()
    }

    #[test]
    fn air_gapped_sites_form_a_manual_last_wave_whatever_the_selectors() {
        let sites = labels();
        let mut all = candidates(&sites);
        // An air-gapped canary: the canary selector does not take it.
        all[0].manual = true;
        all[5].manual = true;
        let plan = spec(THREE_WAVES).plan(&all).expect("plan");
        assert_eq!(plan.waves.len(), 4);
        let last = &plan.waves[3];
        assert!(last.manual && last.name == "manual");
        assert_eq!(last.sites, ["site-0", "site-5"]);
        assert_eq!(plan.waves[0].sites, ["site-1"]);
        assert_eq!(
            plan.waves[1].sites.len(),
            3,
            "30 % of the eight online sites"
        );
        assert!(plan.waves[..3].iter().all(|w| !w.manual
            && !w.sites.contains(&"site-0".to_owned())
            && !w.sites.contains(&"site-5".to_owned())));
        let reserved =
            spec(r#"{"name": "r", "target_version": "1.1.0", "waves": [{"name": "manual"}]}"#);
        assert!(matches!(
            reserved.plan(&all),
            Err(SpecError::Invalid(reason)) if reason.contains("manual")
        ));
    }

    const THREE_WAVES: &str = r#"{"name": "to-1-1-0", "target_version": "1.1.0",
        "waves": [{"name": "canary", "selector": {"ring": "canary"}, "soak_secs": 600},
                  {"name": "early", "percent": 30, "soak_secs": 3600},
                  {"name": "rest"}],
        "max_parallel": 3}"#;

    #[test]
    fn selectors_then_percentages_then_the_rest_take_every_site_once_and_the_same_way_again() {
        let sites = labels();
        let plan = spec(THREE_WAVES).plan(&candidates(&sites)).expect("plan");
        let mut canary = plan.waves[0].sites.clone();
        canary.sort();
        assert_eq!(canary, ["site-0", "site-1"]);
        assert_eq!(plan.waves[1].sites.len(), 3, "30 % of ten");
        assert_eq!(plan.waves[2].sites.len(), 5);
        let mut all: Vec<&String> = plan.waves.iter().flat_map(|w| &w.sites).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 10, "each site once");
        assert_eq!(plan.max_parallel, 3);
        assert_eq!(plan.success_threshold_percent, 100);
        assert!(plan.stop_on_failure);
        assert_eq!(
            spec(THREE_WAVES).plan(&candidates(&sites)).expect("again"),
            plan,
            "the same rollout assigns the same way"
        );
        // The early wave is a spread, not the first names in order.
        assert_ne!(plan.waves[1].sites, ["site-2", "site-3", "site-4"]);
    }

    #[test]
    fn sites_no_wave_takes_and_out_of_range_values_are_refused_with_what_is_wrong() {
        let sites = labels();
        let only_canary = spec(
            r#"{"name": "c", "target_version": "1.1.0",
                "waves": [{"name": "canary", "selector": {"ring": "canary"}}]}"#,
        );
        let Err(SpecError::Unassigned(left)) = only_canary.plan(&candidates(&sites)) else {
            panic!("unassigned sites");
        };
        assert_eq!(left.len(), 8);
        for (json, words) in [
            (
                r#"{"name": "Bad", "target_version": "1.1.0", "waves": [{"name": "a"}]}"#,
                "name",
            ),
            (
                r#"{"name": "r", "target_version": "latest", "waves": [{"name": "a"}]}"#,
                "semantic version",
            ),
            (
                r#"{"name": "r", "target_version": "1.1.0", "waves": []}"#,
                "waves",
            ),
            (
                r#"{"name": "r", "target_version": "1.1.0", "waves": [{"name": "a"}, {"name": "a"}]}"#,
                "unique",
            ),
            (
                r#"{"name": "r", "target_version": "1.1.0", "waves": [{"name": "a", "percent": 0}]}"#,
                "percent",
            ),
            (
                r#"{"name": "r", "target_version": "1.1.0", "waves": [{"name": "a"}], "max_parallel": 0}"#,
                "max_parallel",
            ),
            (
                r#"{"name": "r", "target_version": "1.1.0", "waves": [{"name": "a"}], "success_threshold_percent": 101}"#,
                "success_threshold_percent",
            ),
            (
                r#"{"name": "r", "target_version": "1.1.0", "waves": [{"name": "a"}], "offline_deadline_secs": 0}"#,
                "offline_deadline_secs",
            ),
            (
                r#"{"name": "r", "target_version": "1.1.0", "waves": [{"name": "a", "soak_secs": 99999999}]}"#,
                "soak_secs",
            ),
        ] {
            let err = spec(json).plan(&candidates(&sites)).expect_err(json);
            assert!(err.to_string().contains(words), "{json}: {err}");
        }
        assert!(
            serde_json::from_str::<RolloutSpec>(
                r#"{"name": "r", "target_version": "1.1.0", "waves": [{"name": "a"}], "max_paralel": 2}"#
            )
            .is_err(),
            "a typo is refused, not ignored"
        );
    }
}

mod views {
    use super::super::observe::view;
    use super::{at, v};
    use crate::store::{Site, SiteState, fixtures};
    use jiff::SignedDuration;
    use scs_edge_proto::{
        ComponentHealth, DesiredState, HealthState, UpdatePhase, UpdateRefusal, UpdateReport,
    };
    use std::collections::BTreeMap;

    fn site(update: Option<UpdateReport>, health: HealthState) -> Site {
        Site {
            name: "factory-1".into(),
            state: SiteState::Active,
            created_at: at(0),
            joined_at: Some(at(0)),
            last_seen: Some(at(100)),
            last_report: Some(fixtures::report(
                3,
                "1.0.0",
                vec![ComponentHealth {
                    component: "ovn".into(),
                    state: health,
                    detail: None,
                }],
                update,
                at(100),
            )),
            last_seq: 3,
            desired: DesiredState {
                generation: 2,
                labels: BTreeMap::new(),
                target_os_version: Some("1.1.0".into()),
                maintenance_window: None,
            },
            delivery: crate::store::Delivery::Online,
        }
    }

    #[test]
    fn a_heartbeat_becomes_what_the_machine_follows() {
        let interval = SignedDuration::from_secs(10);
        let update = UpdateReport {
            phase: UpdatePhase::Installing,
            target: Some("1.1.0".into()),
            failed: vec!["0.9.0".into(), "not-a-version".into()],
            last_outcome: None,
            refused: 1,
            last_refusal: Some(UpdateRefusal {
                kind: "expired".into(),
                reason: "timestamp expired".into(),
                at: at(90),
            }),
            last_error: None,
            waivers_used: 0,
            window: None,
        };
        let seen = view(&site(Some(update), HealthState::Healthy), at(105), interval);
        assert!(seen.online && seen.healthy && seen.window_open);
        assert_eq!(seen.running, Some(v("1.0.0")));
        assert_eq!(seen.updating, Some(v("1.1.0")));
        assert_eq!(seen.failed.into_iter().collect::<Vec<_>>(), [v("0.9.0")]);
        assert_eq!(seen.refused, Some((v("1.1.0"), at(90))));
        assert_eq!(seen.rolled_back, None);

        // A rollback names the version and what the gate found.
        let mut rolled = site(None, HealthState::Healthy);
        if let Some(report) = rolled.last_report.as_mut() {
            report.update = Some(UpdateReport {
                phase: UpdatePhase::Idle,
                target: None,
                failed: vec!["1.1.0".into()],
                last_outcome: Some(scs_edge_proto::UpdateOutcome {
                    result: "rolled_back".into(),
                    version: "1.1.0".into(),
                    reason: Some("ovn-controller did not connect".into()),
                }),
                refused: 0,
                last_refusal: None,
                last_error: None,
                waivers_used: 0,
                window: None,
            });
        }
        assert_eq!(
            view(&rolled, at(105), interval).rolled_back,
            Some((v("1.1.0"), "ovn-controller did not connect".into()))
        );

        let idle = view(&site(None, HealthState::Degraded), at(200), interval);
        assert!(!idle.online, "three missed heartbeats");
        assert!(!idle.healthy);
        assert_eq!(idle.updating, None);
        assert_eq!(idle.refused, None);
    }

    /// `at(0)` is a Friday, 08:00 UTC.
    #[test]
    fn a_site_is_offered_within_an_hour_of_its_window_the_one_the_node_reports_first() {
        let interval = SignedDuration::from_secs(10);
        let with_windows = |desired: Option<&str>, reported: Option<&str>| {
            let update = reported.map(|window| UpdateReport {
                phase: UpdatePhase::Idle,
                target: None,
                failed: Vec::new(),
                last_outcome: None,
                refused: 0,
                last_refusal: None,
                last_error: None,
                waivers_used: 0,
                window: Some(window.to_owned()),
            });
            let mut site = site(update, HealthState::Healthy);
            site.desired.maintenance_window = desired.map(str::to_owned);
            view(&site, at(105), interval).window_open
        };
        assert!(with_windows(None, None), "no window: always open");
        assert!(!with_windows(Some("sat 22:00-02:00"), None));
        assert!(
            with_windows(Some("fri 08:30-09:00"), None),
            "opens within the hour"
        );
        assert!(with_windows(Some("fri 07:00-09:00"), None), "open now");
        assert!(
            !with_windows(Some("fri 08:30-09:00"), Some("sun 01:00-03:00")),
            "the node reports another window in force"
        );
        assert!(
            with_windows(Some("sat 22:00-02:00"), Some("not a window")),
            "unreadable: the node's own rule decides"
        );
    }
}

mod service {
    use super::super::machine::{Progress, SiteState};
    use super::super::service::{RolloutError, Rollouts};
    use super::super::spec::RolloutSpec;
    use crate::fleet::{Clock as _, ManualClock};
    use crate::store::{ReleaseRecord, ReleaseState, Store, fixtures};
    use jiff::{SignedDuration, Timestamp};
    use scs_edge_proto::{UpdatePhase, UpdateReport};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    async fn fleet() -> (Store, Arc<ManualClock>, Rollouts) {
        let store = Store::open("sqlite::memory:").await.expect("store");
        let clock = Arc::new(ManualClock::new(
            Timestamp::from_second(1_800_000_000).expect("t"),
        ));
        let manifest = scs_edge_proto::release::ReleaseManifest {
            schema: scs_edge_proto::release::MANIFEST_SCHEMA,
            version: "1.1.0".parse().expect("v"),
            min_from_version: semver::Version::new(0, 0, 0),
            max_version: None,
            artifacts: Vec::new(),
        };
        store
            .add_releases(&[ReleaseRecord {
                manifest,
                state: ReleaseState::Available,
                published_at: clock.now(),
                published_by: "alice".into(),
                withdrawal: None,
            }])
            .await
            .expect("release");
        for (site, ring) in [("a", "canary"), ("b", "main"), ("c", "main")] {
            let labels = BTreeMap::from([("ring".to_owned(), ring.to_owned())]);
            fixtures::joined_site(&store, site, &labels, clock.now()).await;
            fixtures::heartbeat(&store, site, 1, "1.0.0", None, clock.now()).await;
        }
        let rollouts = Rollouts::new(store.clone(), clock.clone(), SignedDuration::from_secs(10));
        (store, clock, rollouts)
    }

    fn spec(target: &str) -> RolloutSpec {
        serde_json::from_str(&format!(
            r#"{{"name": "to-{}", "target_version": "{target}", "max_parallel": 2,
                "waves": [{{"name": "canary", "selector": {{"ring": "canary"}}, "soak_secs": 30}},
                          {{"name": "rest"}}]}}"#,
            target.replace('.', "-")
        ))
        .expect("spec")
    }

    async fn desired(store: &Store, site: &str) -> Option<String> {
        store
            .site(site)
            .await
            .expect("site")
            .expect("site")
            .desired
            .target_os_version
    }

    #[tokio::test]
    async fn a_rollout_offers_the_canary_then_the_rest_through_the_sites_desired_states() {
        let (store, clock, rollouts) = fleet().await;
        assert!(matches!(
            rollouts.create(&spec("9.9.9"), "alice").await,
            Err(RolloutError::UnknownRelease(_))
        ));
        // Heartbeats come every 10 s here: a site is offline after 30 s, not sooner.
        let mut hasty = spec("1.1.0");
        hasty.offline_deadline_secs = 20;
        assert!(matches!(
            rollouts.create(&hasty, "alice").await,
            Err(RolloutError::Spec(reason)) if reason.to_string().contains("three heartbeat")
        ));
        let created = rollouts
            .create(&spec("1.1.0"), "alice")
            .await
            .expect("created");
        assert_eq!(created.plan.waves[0].sites, ["a"]);
        assert!(matches!(
            rollouts.create(&spec("1.1.0"), "bob").await,
            Err(RolloutError::Exists(_))
        ));

        rollouts.step_all().await.expect("step");
        assert_eq!(desired(&store, "a").await.as_deref(), Some("1.1.0"));
        assert_eq!(
            desired(&store, "b").await,
            None,
            "the rest waits for the canary"
        );

        // The canary's node takes it and reports 1.1.0; after its soak the rest is offered.
        clock.advance(SignedDuration::from_secs(5));
        fixtures::heartbeat(
            &store,
            "a",
            2,
            "1.0.0",
            Some(UpdateReport {
                phase: UpdatePhase::Installing,
                target: Some("1.1.0".into()),
                failed: Vec::new(),
                last_outcome: None,
                refused: 0,
                last_refusal: None,
                last_error: None,
                waivers_used: 0,
                window: None,
            }),
            clock.now(),
        )
        .await;
        rollouts.step_all().await.expect("step");
        let shown = rollouts.show("to-1-1-0").await.expect("show");
        assert!(matches!(shown.state.sites["a"], SiteState::Updating { .. }));
        fixtures::heartbeat(&store, "a", 3, "1.1.0", None, clock.now()).await;
        rollouts.step_all().await.expect("step");
        clock.advance(SignedDuration::from_secs(30));
        for (site, seq) in [("a", 4), ("b", 2), ("c", 2)] {
            fixtures::heartbeat(
                &store,
                site,
                seq,
                if site == "a" { "1.1.0" } else { "1.0.0" },
                None,
                clock.now(),
            )
            .await;
        }
        rollouts.step_all().await.expect("soaked");
        rollouts.step_all().await.expect("next wave");
        assert_eq!(desired(&store, "b").await.as_deref(), Some("1.1.0"));
        assert_eq!(desired(&store, "c").await.as_deref(), Some("1.1.0"));
        let shown = rollouts.show("to-1-1-0").await.expect("show");
        assert!(matches!(
            shown.state.progress,
            Progress::Running { wave: 1, .. }
        ));
        assert!(shown.record.revision > 1);
        assert!(matches!(
            rollouts.resume("to-1-1-0", "bob", None).await,
            Err(RolloutError::WrongState { name, .. }) if name == "to-1-1-0"
        ));
    }
}
