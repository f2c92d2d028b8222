use super::*;
use std::cell::RefCell;
use std::collections::BTreeSet;

/// A host that records commands and keeps namespaces, links and the loopback address as sets; its
/// "engine" answers the control file the way the real one does.
#[derive(Default)]
struct FakeHost {
    commands: RefCell<Vec<String>>,
    netns: RefCell<BTreeSet<String>>,
    links: RefCell<BTreeSet<String>>,
    region_address: RefCell<bool>,
    /// The running engine's pid and control file.
    engine: RefCell<Option<(u32, PathBuf)>>,
    spawned: RefCell<u32>,
}

impl FakeHost {
    fn commands(&self) -> Vec<String> {
        self.commands.borrow().clone()
    }

    fn clear(&self) {
        self.commands.borrow_mut().clear();
    }
}

impl Host for &FakeHost {
    fn run(&self, argv: &[String]) -> Result<String, WanError> {
        let line = argv.join(" ");
        self.commands.borrow_mut().push(line.clone());
        let words: Vec<&str> = argv.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["ip", "-o", "-4", "addr", "show", "dev", "lo"] => {
                return Ok(if *self.region_address.borrow() {
                    "1: lo    inet 10.77.0.1/32 scope global lo\n".into()
                } else {
                    String::new()
                });
            }
            ["ip", "addr", "add", "10.77.0.1/32", "dev", "lo"] => {
                *self.region_address.borrow_mut() = true;
            }
            ["ip", "addr", "del", "10.77.0.1/32", "dev", "lo"] => {
                *self.region_address.borrow_mut() = false;
            }
            ["ip", "netns", "add", name] => {
                self.netns.borrow_mut().insert((*name).to_owned());
            }
            ["ip", "netns", "del", name] => {
                self.netns.borrow_mut().remove(*name);
                // The site's end goes with its namespace, and takes its peer along.
                self.links.borrow_mut().retain(|l| !name.ends_with(&l[3..]));
            }
            ["ip", "link", "add", name, ..] => {
                self.links.borrow_mut().insert((*name).to_owned());
            }
            ["ip", "link", "del", name] => {
                self.links.borrow_mut().remove(*name);
            }
            _ => {}
        }
        Ok(String::new())
    }

    fn netns_exists(&self, name: &str) -> bool {
        self.netns.borrow().contains(name)
    }

    fn link_exists(&self, name: &str) -> bool {
        self.links.borrow().contains(name)
    }

    fn spawn(&self, argv: &[String], _log: &Path) -> Result<u32, WanError> {
        self.commands
            .borrow_mut()
            .push(format!("spawn {}", argv.join(" ")));
        let control = PathBuf::from(argv.last().expect("control file"));
        *self.spawned.borrow_mut() += 1;
        let pid = 1000 + *self.spawned.borrow();
        *self.engine.borrow_mut() = Some((pid, control));
        Ok(pid)
    }

    fn alive(&self, pid: u32, _marker: &str) -> bool {
        let engine = self.engine.borrow().clone();
        let Some((_, control)) = engine.filter(|(running, _)| *running == pid) else {
            return false;
        };
        let Some(delay) = delay::read_control(&control).expect("control") else {
            *self.engine.borrow_mut() = None;
            return false;
        };
        std::fs::write(delay::ack_path(&control), delay.as_millis().to_string()).expect("ack");
        true
    }

    fn exited(&self, pid: u32) -> bool {
        !self.alive(pid, "")
    }

    fn kill(&self, pid: u32) {
        self.commands.borrow_mut().push(format!("kill {pid}"));
    }
}

fn wan(host: &FakeHost) -> (tempfile::TempDir, Wan<&FakeHost>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let wan = Wan::new(
        host,
        dir.path().join("wan"),
        strings(&["/lab", "wan-engine"]),
    );
    (dir, wan)
}

fn words(text: &str) -> Vec<String> {
    text.split(' ').map(str::to_owned).collect()
}

#[test]
fn sites_are_numbered_into_the_address_plan_with_names_that_fit_an_interface() {
    let sites = Site::numbered(2);
    assert_eq!(sites[1].name, "lab-2");
    assert_eq!(sites[1].netns(), "scs-lab-lab-2");
    assert_eq!(sites[1].host_link(), "lw-lab-2");
    assert_eq!(sites[1].host_address(), Ipv4Addr::new(10, 77, 2, 1));
    assert_eq!(sites[1].address(), Ipv4Addr::new(10, 77, 2, 2));
    let long = Site {
        name: "factory-floor-north".into(),
        index: 9,
    };
    assert_eq!(long.host_link(), "lw-factory-floo");
}

#[test]
fn the_operators_words_parse_into_changes() {
    let parse = |text: &str| Change::parse(&words(text));
    assert_eq!(parse("show").expect("show"), None);
    assert_eq!(parse("cut").expect("cut"), Some(Change::Cut));
    assert_eq!(parse("restore").expect("restore"), Some(Change::Restore));
    assert_eq!(
        parse("delay 300ms").expect("ms"),
        Some(Change::Delay(Duration::from_millis(300)))
    );
    assert_eq!(
        parse("delay 2s").expect("s"),
        Some(Change::Delay(Duration::from_secs(2)))
    );
    assert_eq!(
        parse("delay 0").expect("0"),
        Some(Change::Delay(Duration::ZERO))
    );
    assert_eq!(parse("loss 10%").expect("loss"), Some(Change::Loss(10.0)));
    assert_eq!(parse("loss 0.5").expect("bare"), Some(Change::Loss(0.5)));
    for wrong in [
        "delay",
        "delay fast",
        "loss 120%",
        "loss -1%",
        "jitter 5ms",
        "cut now",
    ] {
        assert!(parse(wrong).is_err(), "{wrong}");
    }
}

#[test]
fn each_impairment_is_its_rules_and_a_cut_is_nothing_else() {
    let clear = Impairment::default();
    assert!(clear.rules().is_empty());
    assert_eq!(clear.to_string(), "clear");
    let both = clear
        .with(Change::Delay(Duration::from_millis(300)))
        .with(Change::Loss(10.0));
    assert_eq!(both.to_string(), "delay 300 ms, loss 10%");
    assert_eq!(
        both.rules(),
        [
            words("-m statistic --mode random --probability 0.100000 -j DROP"),
            words("-o wan0 -j NFQUEUE --queue-num 0 --queue-bypass"),
        ]
    );
    let cut = both.with(Change::Cut);
    assert_eq!(cut.rules(), [words("-j DROP")]);
    assert_eq!(cut.to_string(), "cut");
    assert_eq!(
        cut.with(Change::Loss(5.0)).rules().len(),
        1,
        "a loss ends a cut"
    );
    assert_eq!(both.with(Change::Restore), Impairment::default());
}

#[test]
fn up_builds_each_site_behind_its_own_link_and_down_undoes_it_once() {
    let host = FakeHost::default();
    let (_dir, wan) = wan(&host);
    wan.up(&Site::numbered(2)).expect("up");
    let commands = host.commands();
    for expected in [
        "ip addr add 10.77.0.1/32 dev lo",
        "ip netns add scs-lab-lab-1",
        "ip link add lw-lab-1 type veth peer name wan0 netns scs-lab-lab-1",
        "ip addr add 10.77.1.1/30 dev lw-lab-1",
        "ip -n scs-lab-lab-1 addr add 10.77.1.2/30 dev wan0",
        "ip -n scs-lab-lab-1 route add default via 10.77.1.1",
        "ip netns exec scs-lab-lab-2 iptables -w -t filter -A INPUT -i wan0 -j SCSLAB",
        "ip netns exec scs-lab-lab-2 iptables -w -t filter -A OUTPUT -o wan0 -j SCSLAB",
    ] {
        assert!(
            commands.iter().any(|c| c == expected),
            "{expected} in {commands:#?}"
        );
    }
    assert_eq!(wan.sites().expect("sites").len(), 2);
    assert!(matches!(wan.up(&Site::numbered(1)), Err(WanError::Busy(_))));

    wan.down().expect("down");
    assert!(host.netns.borrow().is_empty());
    assert!(host.links.borrow().is_empty());
    assert!(!*host.region_address.borrow());
    assert!(matches!(wan.sites(), Err(WanError::NotUp(_))));
    host.clear();
    wan.down().expect("a second down");
    assert!(host.commands().is_empty(), "{:?}", host.commands());
}

#[test]
fn a_delay_starts_the_engine_before_queueing_and_restore_stops_it() {
    let host = FakeHost::default();
    let (dir, wan) = wan(&host);
    wan.up(&Site::numbered(2)).expect("up");
    host.clear();

    let applied = wan
        .change("lab-1", Change::Delay(Duration::from_millis(300)))
        .expect("delay");
    assert_eq!(applied.delay_ms, 300);
    let commands = host.commands();
    let spawn = commands
        .iter()
        .position(|c| c.starts_with("spawn "))
        .expect("spawned");
    let queue = commands
        .iter()
        .position(|c| c.contains("NFQUEUE"))
        .expect("queued");
    assert!(
        spawn < queue,
        "the engine runs before packets are queued to it: {commands:#?}"
    );
    assert!(
        commands[spawn].starts_with("spawn ip netns exec scs-lab-lab-1 /lab wan-engine --control ")
    );

    host.clear();
    wan.change("lab-1", Change::Delay(Duration::from_millis(50)))
        .expect("shorter");
    assert!(
        !host.commands().iter().any(|c| c.starts_with("spawn")),
        "the running engine is told"
    );
    let control = dir.path().join("wan/lab-1.delay");
    assert_eq!(
        std::fs::read_to_string(delay::ack_path(&control)).expect("ack"),
        "50"
    );

    wan.change("lab-1", Change::Loss(10.0)).expect("loss");
    assert_eq!(
        wan.impairment("lab-1").expect("show").to_string(),
        "delay 50 ms, loss 10%"
    );
    assert_eq!(wan.impairment("lab-2").expect("other").to_string(), "clear");

    wan.change("lab-1", Change::Restore).expect("restore");
    assert!(host.engine.borrow().is_none(), "the engine stopped");
    assert!(!control.exists());
    assert_eq!(
        wan.impairment("lab-1").expect("show"),
        Impairment::default()
    );
    assert!(matches!(
        wan.change("lab-9", Change::Cut),
        Err(WanError::UnknownSite { .. })
    ));
    wan.down().expect("down");
}
