//! Crash safety: the agent is killed with SIGKILL at random points while servers are created and
//! deleted; after the last restart every server that should exist runs exactly once and nothing of a
//! deleted server is left — no domain, no disk, no config drive, no row.
//!
//! The seed is printed; `SCS_EDGE_CRASH_SEED=<seed>` replays a run.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use scs_edge_tests::agent::{AgentOptions, AgentProcess};
use scs_edge_tests::libvirt::Observer;
use std::collections::BTreeSet;
use std::time::Duration;
use uuid::Uuid;

const CYCLES: usize = 50;
const CONVERGE: Duration = Duration::from_mins(5);

#[test]
fn kill_9_at_random_points_during_50_create_delete_cycles_leaves_no_orphans_and_loses_nothing() {
    let seed = std::env::var("SCS_EDGE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("crash test seed: {seed} (replay with SCS_EDGE_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let options = AgentOptions {
        shutdown_timeout_secs: 2,
        observe_interval_ms: 200,
        ..AgentOptions::default()
    };
    let mut agent = AgentProcess::start("crash", options);
    let image = agent.seed_guest().to_string();

    let mut alive: BTreeSet<Uuid> = BTreeSet::new();
    let mut deleted: BTreeSet<Uuid> = BTreeSet::new();
    let mut kills = 0;
    for cycle in 0..CYCLES {
        let id = Uuid::new_v4();
        let id_text = id.to_string();
        let name = format!("cycle-{cycle}");
        agent.cli_ok(&[
            "server", "create", "--id", &id_text, "--name", &name, "--flavor", "tiny", "--image",
            &image, "--nics", "1",
        ]);
        alive.insert(id);

        // Give the agent a random head start so kills land at different steps of the build.
        std::thread::sleep(Duration::from_millis(rng.random_range(0..250)));
        if rng.random_bool(0.8) {
            let victim = if rng.random_bool(0.7) {
                id
            } else {
                *alive
                    .iter()
                    .nth(rng.random_range(0..alive.len()))
                    .expect("alive")
            };
            agent.cli_ok(&["server", "delete", &victim.to_string()]);
            alive.remove(&victim);
            deleted.insert(victim);
        }
        if rng.random_bool(0.5) {
            std::thread::sleep(Duration::from_millis(rng.random_range(0..400)));
            agent.kill9();
            kills += 1;
            agent.spawn();
            // Half the time, kill again before the first pass after the restart has finished.
            if rng.random_bool(0.5) {
                agent.wait_ready(CONVERGE);
            }
        }
    }
    assert!(
        kills >= 10,
        "only {kills} kills: the run proves too little (seed {seed})"
    );

    // One last unclean restart, then let the agent converge.
    agent.kill9();
    agent.spawn();
    agent.wait_ready(CONVERGE);
    for id in &deleted {
        agent.wait_status(*id, "DELETED", CONVERGE);
    }
    for id in &alive {
        agent.wait_status(*id, "ACTIVE", CONVERGE);
    }

    // Rows: exactly the servers that should exist, each once, none lost.
    let listed = agent.cli_ok(&["server", "list"]);
    let listed: Vec<Uuid> = listed
        .as_array()
        .expect("list")
        .iter()
        .map(|s| Uuid::parse_str(s["id"].as_str().expect("id")).expect("uuid"))
        .collect();
    assert_eq!(
        listed.len(),
        alive.len(),
        "duplicated or extra rows (seed {seed})"
    );
    assert_eq!(
        listed.iter().copied().collect::<BTreeSet<_>>(),
        alive,
        "rows differ from what should exist (seed {seed})"
    );

    // Domains: one running domain per server, none for deleted ones.
    let observer = Observer::connect();
    let domains: BTreeSet<Uuid> = observer.owned_by(&agent.node_id).into_iter().collect();
    assert_eq!(domains, alive, "orphan or missing domains (seed {seed})");
    for id in &alive {
        assert!(
            observer.running(*id),
            "server {id} not running (seed {seed})"
        );
    }

    // Files: a directory with disk and config drive per server, nothing else, no half-written files.
    let servers_dir = agent.state_dir.join("servers");
    let mut dirs = BTreeSet::new();
    for entry in std::fs::read_dir(&servers_dir).expect("servers dir") {
        let entry = entry.expect("entry");
        let id =
            Uuid::parse_str(&entry.file_name().to_string_lossy()).expect("only server directories");
        dirs.insert(id);
        let files: BTreeSet<String> = std::fs::read_dir(entry.path())
            .expect("dir")
            .map(|f| f.expect("file").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            files.contains("disk.qcow2") && files.contains("config-drive.img"),
            "{id}: {files:?} (seed {seed})"
        );
        assert!(
            !files.iter().any(|f| std::path::Path::new(f)
                .extension()
                .is_some_and(|e| e == "tmp")),
            "{id}: leftover temporary file in {files:?} (seed {seed})"
        );
    }
    assert_eq!(
        dirs, alive,
        "orphan or missing server directories (seed {seed})"
    );
    let images = std::fs::read_dir(agent.state_dir.join("images"))
        .expect("images")
        .count();
    assert_eq!(
        images, 1,
        "exactly the one imported image file (seed {seed})"
    );
}
