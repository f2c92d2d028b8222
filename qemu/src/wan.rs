//! The lab's wide-area links: each site of a many-site lab lives in its own network namespace and
//! reaches the region over a link the operator can impair — cut it, lose packets, add delay — to see
//! what a site does when its WAN misbehaves.
//!
//! Site `lab-i` gets namespace `scs-lab-lab-i` and a veth pair: `lw-lab-i` (10.77.i.1/30) on the
//! host, `wan0` (10.77.i.2/30, default route) in the namespace. The region listens on
//! [`REGION_ADDRESS`], an address on the host's loopback, so every site reaches it across its own
//! link and nothing needs forwarding or NAT. A QEMU node runs inside its site's namespace: its user
//! networking (slirp) is a process there, so the guest's traffic is that process's traffic on `wan0`.
//!
//! The impairments are netfilter rules in the site's namespace, in chain `SCSLAB`, which `INPUT -i
//! wan0` and `OUTPUT -o wan0` jump to (decision 0016: the lab's kernel has no `netem`): a cut drops
//! everything, loss drops at random, and a delay queues the site's outgoing packets to a
//! [`delay`] engine that lets each go after the delay. What is applied is recorded in the lab's work
//! directory, so `show` and `down` need nothing but the directory.

pub mod delay;
pub mod queue;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Where the region listens, on the host's loopback: reachable from every site's namespace across
/// its link, and from nowhere else.
pub const REGION_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The netfilter chain that holds a site's impairment.
const CHAIN: &str = "SCSLAB";
/// The site's end of its link, inside its namespace.
pub const SITE_LINK: &str = "wan0";
/// Interface names are at most 15 bytes (IFNAMSIZ less the NUL).
const IFNAMSIZ: usize = 15;
/// Sites are numbered into the third octet of 10.77.0.0/16.
pub const MAX_SITES: u8 = 254;
/// How long a started or changed delay engine has to confirm the delay it applies.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(10);

/// A WAN operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WanError {
    /// A host command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A program could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// The state in the work directory could not be read or written.
    #[error("lab WAN state {path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The state in the work directory is not what this version writes.
    #[error("lab WAN state {path}: {source}")]
    StateFormat {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// No many-site lab is up in the work directory.
    #[error("no many-site lab is up in {0} (start one with `scs-edge-lab up --sites N`)")]
    NotUp(PathBuf),
    /// The site is not one of the lab's.
    #[error("no site {site} in this lab (sites: {known})")]
    UnknownSite {
        /// The name asked for.
        site: String,
        /// The lab's sites.
        known: String,
    },
    /// A namespace of the lab exists already: another lab runs, or one was killed without `down`.
    #[error(
        "network namespace {0} exists already: another lab is up (`scs-edge-lab down --work-dir …` of that lab, or `ip netns del {0}`)"
    )]
    Busy(String),
    /// The operator's words did not parse.
    #[error("{0}")]
    Usage(String),
    /// The delay engine did not confirm its delay in time.
    #[error("the delay engine of {site} did not start: {log}")]
    Engine {
        /// The site.
        site: String,
        /// The end of the engine's log.
        log: String,
    },
}

/// One site of a many-site lab and its place in the address plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    /// The site's name (in the region and on the command line).
    pub name: String,
    /// Its number: the third octet of its link's addresses.
    pub index: u8,
}

impl Site {
    /// `lab-1` … `lab-<count>`.
    pub fn numbered(count: u8) -> Vec<Self> {
        (1..=count)
            .map(|index| Self {
                name: format!("lab-{index}"),
                index,
            })
            .collect()
    }

    /// The site's network namespace.
    pub fn netns(&self) -> String {
        format!("scs-lab-{}", self.name)
    }

    /// The host's end of the site's link.
    pub fn host_link(&self) -> String {
        let mut name = format!("lw-{}", self.name);
        name.truncate(IFNAMSIZ);
        name
    }

    /// The host's address on the link: the site's gateway.
    pub fn host_address(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.index, 1)
    }

    /// The site's address on the link, where the lab forwards its node's API.
    pub fn address(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.index, 2)
    }
}

/// What is done to a site's link; the default is a clean link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Impairment {
    /// Nothing passes either way.
    pub cut: bool,
    /// Each packet, either way, is lost with this probability (percent; 0 = none).
    pub loss_percent: f64,
    /// The site's outgoing packets are held this long (0 = none).
    pub delay_ms: u64,
}

impl fmt::Display for Impairment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.cut {
            return f.write_str("cut");
        }
        let mut parts = Vec::new();
        if self.delay_ms > 0 {
            parts.push(format!("delay {} ms", self.delay_ms));
        }
        if self.loss_percent > 0.0 {
            parts.push(format!("loss {}%", self.loss_percent));
        }
        if parts.is_empty() {
            f.write_str("clear")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// An operator's change to a site's link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// Drop everything both ways (delay and loss go: a cut link has neither).
    Cut,
    /// Back to a clean link.
    Restore,
    /// Hold the site's outgoing packets this long (zero removes the delay).
    Delay(Duration),
    /// Lose this share of packets each way, in percent (zero removes the loss).
    Loss(f64),
}

impl Change {
    /// Parses `cut`, `restore`, `delay <n>ms|<n>s` or `loss <p>%`; `show` is `None`.
    pub fn parse(words: &[String]) -> Result<Option<Self>, WanError> {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let usage = || {
            WanError::Usage(format!(
                "expected cut, restore, delay <ms>ms, loss <percent>% or show, not `{}`",
                words.join(" ")
            ))
        };
        match words.as_slice() {
            ["show"] => Ok(None),
            ["cut"] => Ok(Some(Self::Cut)),
            ["restore"] => Ok(Some(Self::Restore)),
            ["delay", value] => {
                let (number, unit) = if let Some(ms) = value.strip_suffix("ms") {
                    (ms, 1)
                } else if let Some(s) = value.strip_suffix('s') {
                    (s, 1000)
                } else if *value == "0" {
                    ("0", 1)
                } else {
                    return Err(usage());
                };
                let number: u64 = number.parse().map_err(|_| usage())?;
                Ok(Some(Self::Delay(Duration::from_millis(number * unit))))
            }
            ["loss", value] => {
                let percent: f64 = value
                    .strip_suffix('%')
                    .unwrap_or(value)
                    .parse()
                    .map_err(|_| usage())?;
                if !(0.0..=100.0).contains(&percent) {
                    return Err(WanError::Usage(format!(
                        "loss {value}: between 0% and 100%"
                    )));
                }
                Ok(Some(Self::Loss(percent)))
            }
            _ => Err(usage()),
        }
    }
}

impl Impairment {
    /// The impairment after `change`.
    #[must_use]
    pub fn with(self, change: Change) -> Self {
        match change {
            Change::Cut => Self {
                cut: true,
                ..Self::default()
            },
            Change::Restore => Self::default(),
            Change::Delay(delay) => Self {
                cut: false,
                delay_ms: delay.as_millis() as u64,
                ..self
            },
            Change::Loss(percent) => Self {
                cut: false,
                loss_percent: percent,
                ..self
            },
        }
    }

    /// The rules of chain `SCSLAB` (each the words after `-A SCSLAB`), in order: a packet lost is
    /// not delayed first.
    pub fn rules(&self) -> Vec<Vec<String>> {
        let words = |text: &str| text.split(' ').map(str::to_owned).collect::<Vec<_>>();
        if self.cut {
            return vec![words("-j DROP")];
        }
        let mut rules = Vec::new();
        if self.loss_percent > 0.0 {
            rules.push(words(&format!(
                "-m statistic --mode random --probability {:.6} -j DROP",
                self.loss_percent / 100.0
            )));
        }
        if self.delay_ms > 0 {
            // Without an engine bound to the queue the kernel lets packets pass: a dead engine
            // removes the delay, never the link.
            rules.push(words(&format!(
                "-o {SITE_LINK} -j NFQUEUE --queue-num {} --queue-bypass",
                delay::QUEUE_NUMBER
            )));
        }
        rules
    }
}

/// The host's network configuration and processes, as the lab changes them.
pub trait Host {
    /// Runs a command; its stdout, or an error carrying its stderr.
    fn run(&self, argv: &[String]) -> Result<String, WanError>;
    /// Whether network namespace `name` exists.
    fn netns_exists(&self, name: &str) -> bool;
    /// Whether the host has interface `name`.
    fn link_exists(&self, name: &str) -> bool;
    /// Starts a long-running program detached from the caller (its own process group, so a
    /// Ctrl-C meant for the command that started it does not reach it); output to `log`.
    fn spawn(&self, argv: &[String], log: &Path) -> Result<u32, WanError>;
    /// Whether process `pid` runs and its command line contains `marker` (a recycled pid does not).
    fn alive(&self, pid: u32, marker: &str) -> bool;
    /// Whether process `pid` has exited (a zombie counts). Unlike [`Host::alive`] this needs no
    /// command line, which reads empty for a moment while the process execs.
    fn exited(&self, pid: u32) -> bool;
    /// Sends SIGKILL to `pid`.
    fn kill(&self, pid: u32);
}

/// The real host.
#[derive(Debug, Default, Clone, Copy)]
pub struct System;

impl Host for System {
    fn run(&self, argv: &[String]) -> Result<String, WanError> {
        let command = argv.join(" ");
        let output = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| WanError::Spawn {
                command: command.clone(),
                source,
            })?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(WanError::Command {
                command,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }

    fn netns_exists(&self, name: &str) -> bool {
        Path::new("/run/netns").join(name).exists()
    }

    fn link_exists(&self, name: &str) -> bool {
        Path::new("/sys/class/net").join(name).exists()
    }

    fn spawn(&self, argv: &[String], log: &Path) -> Result<u32, WanError> {
        use std::os::unix::process::CommandExt as _;
        let command = argv.join(" ");
        let state_err = |source| WanError::State {
            path: log.to_owned(),
            source,
        };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(state_err)?;
        let err = out.try_clone().map_err(state_err)?;
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|source| WanError::Spawn { command, source })?;
        Ok(child.id())
    }

    fn alive(&self, pid: u32, marker: &str) -> bool {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
    }

    fn exited(&self, pid: u32) -> bool {
        crate::process_gone(pid)
    }

    fn kill(&self, pid: u32) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}

/// The lab's sites, as recorded when they were set up.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Topology {
    sites: Vec<Site>,
}

/// A site's link as the lab left it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LinkState {
    impairment: Impairment,
    engine_pid: Option<u32>,
}

/// The WAN links of the lab whose state lives in `dir`.
pub struct Wan<H> {
    host: H,
    dir: PathBuf,
    engine: Vec<String>,
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|&w| w.to_owned()).collect()
}

impl<H: Host> Wan<H> {
    /// Links whose state lives in `dir`; `engine` is the command that runs a delay engine
    /// (`scs-edge-lab wan-engine`), to which `--control <file>` is appended.
    pub fn new(host: H, dir: PathBuf, engine: Vec<String>) -> Self {
        Self { host, dir, engine }
    }

    fn topology_path(&self) -> PathBuf {
        self.dir.join("topology.json")
    }

    fn state_path(&self, site: &Site) -> PathBuf {
        self.dir.join(format!("{}.json", site.name))
    }

    fn control_path(&self, site: &Site) -> PathBuf {
        self.dir.join(format!("{}.delay", site.name))
    }

    fn engine_log(&self, site: &Site) -> PathBuf {
        self.dir.join(format!("{}-engine.log", site.name))
    }

    fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, WanError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| WanError::StateFormat {
                        path: path.to_owned(),
                        source,
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(WanError::State {
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), WanError> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|source| WanError::StateFormat {
            path: path.to_owned(),
            source,
        })?;
        write_replacing(path, &bytes)
    }

    fn run(&self, words: &[&str]) -> Result<String, WanError> {
        self.host.run(&strings(words))
    }

    fn iptables(&self, site: &Site, words: &[&str]) -> Result<String, WanError> {
        let netns = site.netns();
        let mut argv = vec![
            "ip", "netns", "exec", &netns, "iptables", "-w", "-t", "filter",
        ];
        argv.extend_from_slice(words);
        self.run(&argv)
    }

    /// Creates every site's namespace, link and empty impairment chain, and the region's address.
    /// The sites are recorded first, so that `down` undoes a set-up that failed half-way.
    pub fn up(&self, sites: &[Site]) -> Result<(), WanError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| WanError::State {
            path: self.dir.clone(),
            source,
        })?;
        if let Some(taken) = sites
            .iter()
            .map(Site::netns)
            .find(|netns| self.host.netns_exists(netns))
        {
            return Err(WanError::Busy(taken));
        }
        Self::write(
            &self.topology_path(),
            &Topology {
                sites: sites.to_vec(),
            },
        )?;
        if !self.region_address_present()? {
            self.run(&[
                "ip",
                "addr",
                "add",
                &format!("{REGION_ADDRESS}/32"),
                "dev",
                "lo",
            ])?;
        }
        for site in sites {
            let netns = site.netns();
            let host_link = site.host_link();
            let host_address = format!("{}/30", site.host_address());
            let address = format!("{}/30", site.address());
            let gateway = site.host_address().to_string();
            self.run(&["ip", "netns", "add", &netns])?;
            self.run(&[
                "ip", "link", "add", &host_link, "type", "veth", "peer", "name", SITE_LINK,
                "netns", &netns,
            ])?;
            self.run(&["ip", "addr", "add", &host_address, "dev", &host_link])?;
            self.run(&["ip", "link", "set", &host_link, "up"])?;
            self.run(&["ip", "-n", &netns, "link", "set", "lo", "up"])?;
            self.run(&[
                "ip", "-n", &netns, "addr", "add", &address, "dev", SITE_LINK,
            ])?;
            self.run(&["ip", "-n", &netns, "link", "set", SITE_LINK, "up"])?;
            self.run(&[
                "ip", "-n", &netns, "route", "add", "default", "via", &gateway,
            ])?;
            self.iptables(site, &["-N", CHAIN])?;
            self.iptables(site, &["-A", "INPUT", "-i", SITE_LINK, "-j", CHAIN])?;
            self.iptables(site, &["-A", "OUTPUT", "-o", SITE_LINK, "-j", CHAIN])?;
            Self::write(&self.state_path(site), &LinkState::default())?;
        }
        Ok(())
    }

    fn region_address_present(&self) -> Result<bool, WanError> {
        let addresses = self.run(&["ip", "-o", "-4", "addr", "show", "dev", "lo"])?;
        Ok(addresses.contains(&format!(" {REGION_ADDRESS}/32 ")))
    }

    /// The lab's sites; an error when no many-site lab is up in the directory.
    pub fn sites(&self) -> Result<Vec<Site>, WanError> {
        Self::read::<Topology>(&self.topology_path())?
            .map(|t| t.sites)
            .ok_or_else(|| WanError::NotUp(self.dir.clone()))
    }

    fn site(&self, name: &str) -> Result<Site, WanError> {
        let sites = self.sites()?;
        sites
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .ok_or_else(|| WanError::UnknownSite {
                site: name.to_owned(),
                known: sites
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// What is applied to a site's link.
    pub fn impairment(&self, name: &str) -> Result<Impairment, WanError> {
        let site = self.site(name)?;
        Ok(Self::read::<LinkState>(&self.state_path(&site))?
            .unwrap_or_default()
            .impairment)
    }

    /// Applies an operator's change to a site's link and returns what now holds. A delay is in
    /// force when this returns: the engine has confirmed it before packets are queued to it.
    pub fn change(&self, name: &str, change: Change) -> Result<Impairment, WanError> {
        let site = self.site(name)?;
        let path = self.state_path(&site);
        let mut state = Self::read::<LinkState>(&path)?.unwrap_or_default();
        let wanted = state.impairment.with(change);
        if wanted.delay_ms > 0 {
            state.engine_pid = Some(self.hold(&site, state.engine_pid, wanted.delay_ms)?);
        }
        self.iptables(&site, &["-F", CHAIN])?;
        for rule in wanted.rules() {
            let mut words = vec!["-A", CHAIN];
            words.extend(rule.iter().map(String::as_str));
            self.iptables(&site, &words)?;
        }
        if wanted.delay_ms == 0 {
            self.release(&site, state.engine_pid.take());
        }
        state.impairment = wanted;
        Self::write(&path, &state)?;
        Ok(wanted)
    }

    /// Sets the delay of a site's engine, starting the engine when none runs, and waits until the
    /// engine confirms it; returns the engine's pid.
    fn hold(&self, site: &Site, running: Option<u32>, delay_ms: u64) -> Result<u32, WanError> {
        let control = self.control_path(site);
        let marker = control.display().to_string();
        write_replacing(&control, delay_ms.to_string().as_bytes())?;
        let pid = if let Some(pid) = running.filter(|&pid| self.host.alive(pid, &marker)) {
            pid
        } else {
            let _ = std::fs::remove_file(delay::ack_path(&control));
            let netns = site.netns();
            let mut argv = strings(&["ip", "netns", "exec", &netns]);
            argv.extend(self.engine.iter().cloned());
            argv.extend(strings(&["--control", &marker]));
            self.host.spawn(&argv, &self.engine_log(site))?
        };
        let wanted = delay_ms.to_string();
        let confirmed = crate::poll_until(ENGINE_TIMEOUT, || {
            if std::fs::read_to_string(delay::ack_path(&control)).is_ok_and(|a| a == wanted) {
                return Some(true);
            }
            self.host.exited(pid).then_some(false)
        });
        if confirmed == Some(true) {
            return Ok(pid);
        }
        self.release(site, Some(pid));
        let log = std::fs::read_to_string(self.engine_log(site)).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        Err(WanError::Engine {
            site: site.name.clone(),
            log: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        })
    }

    /// Stops a site's delay engine: without its control file it lets every held packet go and
    /// exits; one that does not is killed.
    fn release(&self, site: &Site, pid: Option<u32>) {
        let control = self.control_path(site);
        let _ = std::fs::remove_file(&control);
        let marker = control.display().to_string();
        if let Some(pid) = pid.filter(|&pid| self.host.alive(pid, &marker)) {
            let gone = crate::poll_until(ENGINE_TIMEOUT, || self.host.exited(pid).then_some(()));
            if gone.is_none() {
                self.host.kill(pid);
            }
        }
        let _ = std::fs::remove_file(delay::ack_path(&control));
    }

    /// Removes everything `up` and `change` made: engines, namespaces (with their rules), links,
    /// the region's address and the state. Whatever is already gone is skipped, so `down` can run
    /// any number of times, and after an `up` that failed half-way. Processes running inside the
    /// namespaces (QEMU) must be stopped first: a namespace lives as long as a process in it.
    pub fn down(&self) -> Result<(), WanError> {
        let Some(topology) = Self::read::<Topology>(&self.topology_path())? else {
            return Ok(());
        };
        // One failure does not stop the rest: the state stays for another `down` only then.
        let mut failures = Vec::new();
        for site in &topology.sites {
            let path = self.state_path(site);
            let state = Self::read::<LinkState>(&path)
                .ok()
                .flatten()
                .unwrap_or_default();
            self.release(site, state.engine_pid);
            if self.host.netns_exists(&site.netns()) {
                failures.extend(self.run(&["ip", "netns", "del", &site.netns()]).err());
            }
            // The host's end goes with the namespace's, but the kernel cleans a namespace up
            // after `ip netns del` returns.
            let host_link = site.host_link();
            let gone = crate::poll_until(Duration::from_secs(5), || {
                (!self.host.link_exists(&host_link)).then_some(())
            });
            if gone.is_none() {
                failures.extend(self.run(&["ip", "link", "del", &host_link]).err());
            }
        }
        match self.region_address_present() {
            Ok(true) => failures.extend(
                self.run(&[
                    "ip",
                    "addr",
                    "del",
                    &format!("{REGION_ADDRESS}/32"),
                    "dev",
                    "lo",
                ])
                .err(),
            ),
            Ok(false) => {}
            Err(e) => failures.push(e),
        }
        if let Some(first) = failures.into_iter().next() {
            return Err(first);
        }
        for site in &topology.sites {
            let _ = std::fs::remove_file(self.state_path(site));
            let _ = std::fs::remove_file(self.engine_log(site));
        }
        std::fs::remove_file(self.topology_path()).map_err(|source| WanError::State {
            path: self.topology_path(),
            source,
        })
    }
}

/// Writes a file whole or not at all: a reader (`show`, the engine) never sees half of it.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), WanError> {
    let state_err = |source| WanError::State {
        path: path.to_owned(),
        source,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    std::fs::write(&temporary, bytes).map_err(state_err)?;
    std::fs::rename(&temporary, path).map_err(state_err)
}

#[cfg(test)]
mod tests;
