//! The agent binary under test: its own state directory and config, readiness via a real
//! `NOTIFY_SOCKET`, kill -9 and restart, and the admin CLI.

use crate::libvirt::{Observer, URI};
use crate::{free_port, scratch_dir};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Knobs the tests turn.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `compute.shutdown_timeout_secs`.
    pub shutdown_timeout_secs: u64,
    /// `reconcile.observe_interval_ms`.
    pub observe_interval_ms: u64,
    /// `reconcile.resync_interval_secs`.
    pub resync_interval_secs: u64,
    /// `$WATCHDOG_USEC` to start with, as systemd would set it.
    pub watchdog_usec: Option<u64>,
    /// `log.filter`. Tests default to debug for the agent's own targets; benchmarks pass the
    /// production default (`info`) so logging costs what it costs on a node.
    pub log_filter: String,
    /// Extra TOML appended to the config.
    pub extra: String,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            shutdown_timeout_secs: 20,
            observe_interval_ms: 300,
            resync_interval_secs: 30,
            watchdog_usec: None,
            log_filter: "info,scs_edge_agent=debug".into(),
            extra: String::new(),
        }
    }
}

/// A running (or stopped) agent process with its own state.
pub struct AgentProcess {
    dir: tempfile::TempDir,
    /// Config file.
    pub config: PathBuf,
    /// `node.state_dir`.
    pub state_dir: PathBuf,
    /// `node.id`.
    pub node_id: String,
    /// HTTPS port on 127.0.0.1.
    pub port: u16,
    options: AgentOptions,
    child: Option<Child>,
    notify: UnixDatagram,
}

/// What an admin command printed.
#[derive(Debug)]
pub struct CliOutput {
    /// Exit code.
    pub code: i32,
    /// Parsed stdout (null when empty or not JSON).
    pub json: serde_json::Value,
    /// stderr text.
    pub stderr: String,
}

/// The agent binary next to the test binary (`target/<profile>/scs-edge-agent`).
pub fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("SCS_EDGE_AGENT_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    // Test binaries live in target/<profile>/deps, other binaries (the bench) in target/<profile>.
    let mut profile_dir = exe.parent().expect("exe dir");
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir.parent().expect("target/<profile>");
    }
    let bin = profile_dir.join("scs-edge-agent");
    assert!(
        bin.exists(),
        "{} missing: build it first (`cargo build --workspace --bins`)",
        bin.display()
    );
    bin
}

impl AgentProcess {
    /// Writes a config and starts the agent, waiting for READY=1.
    pub fn start(label: &str, options: AgentOptions) -> Self {
        let mut agent = Self::prepare(label, options);
        agent.spawn();
        agent.wait_ready(Duration::from_mins(2));
        agent
    }

    /// Writes the config without starting anything.
    pub fn prepare(label: &str, options: AgentOptions) -> Self {
        crate::libvirt::ensure_daemons();
        let dir = scratch_dir(label);
        let state_dir = dir.path().join("state");
        let node_id = format!("test-{label}-{}", &Uuid::new_v4().to_string()[..8]);
        let port = free_port();
        let config = dir.path().join("agent.toml");
        let text = format!(
            "[node]\nid = \"{node_id}\"\nstate_dir = \"{}\"\n\n[api]\nlisten = \"127.0.0.1:{port}\"\n\n[compute]\nlibvirt_uri = \"{URI}\"\nshutdown_timeout_secs = {}\ncpu_allocation_ratio = 64.0\nreserved_host_memory_mb = 512\n\n[reconcile]\nobserve_interval_ms = {}\nresync_interval_secs = {}\nchange_poll_interval_ms = 100\nbackoff_initial_ms = 200\nbackoff_max_secs = 5\n\n[log]\nfilter = \"{}\"\n{}",
            state_dir.display(),
            options.shutdown_timeout_secs,
            options.observe_interval_ms,
            options.resync_interval_secs,
            options.log_filter,
            options.extra
        );
        std::fs::write(&config, text).expect("write config");
        let notify =
            UnixDatagram::bind(dir.path().join("notify.sock")).expect("bind notify socket");
        Self {
            dir,
            config,
            state_dir,
            node_id,
            port,
            options,
            child: None,
            notify,
        }
    }

    /// Starts the daemon without waiting for readiness.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "agent already running");
        self.drain_notifications();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let mut command = Command::new(binary());
        command
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .env("NOTIFY_SOCKET", self.dir.path().join("notify.sock"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some(usec) = self.options.watchdog_usec {
            command.env("WATCHDOG_USEC", usec.to_string());
        }
        self.child = Some(command.spawn().expect("spawn agent"));
    }

    /// Receives sd_notify datagrams until one says READY=1; returns every message seen.
    pub fn wait_ready(&self, timeout: Duration) -> Vec<String> {
        self.wait_notify("READY=1", timeout)
    }

    /// Receives sd_notify datagrams until one contains `needle`.
    pub fn wait_notify(&self, needle: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {needle} within {timeout:?}; got {seen:?}\n{}",
                self.log_tail()
            );
            self.notify.set_read_timeout(Some(left)).expect("timeout");
            if let Ok(n) = self.notify.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = text.contains(needle);
                seen.push(text);
                if hit {
                    return seen;
                }
            }
        }
    }

    /// Discards notifications a previous process instance sent, so waits only see the new one's.
    fn drain_notifications(&self) {
        let mut buf = vec![0u8; 4096];
        self.notify.set_nonblocking(true).expect("nonblocking");
        while self.notify.recv(&mut buf).is_ok() {}
        self.notify.set_nonblocking(false).expect("blocking");
    }

    /// SIGKILL, as a power cut or OOM kill would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        assert_eq!(send_signal(pid, libc::SIGTERM), 0, "SIGTERM failed");
        child.wait().ok().and_then(|s| s.code())
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Runs an admin command (`flavor …`, `image …`, `server …`).
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let output: Output = Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run cli");
        CliOutput {
            code: output.status.code().unwrap_or(-1),
            json: serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs an admin command that must succeed; returns its JSON.
    pub fn cli_ok(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli(args);
        assert_eq!(
            out.code, 0,
            "scs-edge-agent {args:?} failed: {}",
            out.stderr
        );
        out.json
    }

    /// Imports the test guest and creates a flavor `tiny` (1 vCPU, 128 MiB, 1 GiB); returns the image id.
    pub fn seed_guest(&self) -> Uuid {
        let image = crate::guest::image();
        let json = self.cli_ok(&[
            "image",
            "import",
            "--name",
            "busybox-guest",
            "--disk-format",
            "raw",
            "--file",
            image.to_str().expect("utf8"),
        ]);
        self.cli_ok(&[
            "flavor", "create", "--id", "tiny", "--name", "tiny", "--vcpus", "1", "--ram", "128",
            "--disk", "1",
        ]);
        Uuid::parse_str(json["id"].as_str().expect("image id")).expect("uuid")
    }

    /// Creates a server and returns its id.
    pub fn create_server(&self, name: &str, image: Uuid, extra: &[&str]) -> Uuid {
        let image = image.to_string();
        let mut args = vec![
            "server", "create", "--name", name, "--flavor", "tiny", "--image", &image,
        ];
        args.extend_from_slice(extra);
        let json = self.cli_ok(&args);
        Uuid::parse_str(json["id"].as_str().expect("server id")).expect("uuid")
    }

    /// Waits (through the CLI, i.e. the store) until a server has `status` with nothing pending.
    pub fn wait_status(&self, id: Uuid, status: &str, timeout: Duration) -> serde_json::Value {
        let id = id.to_string();
        let secs = timeout.as_secs().to_string();
        let out = self.cli(&[
            "server",
            "wait",
            &id,
            "--status",
            status,
            "--timeout",
            &secs,
        ]);
        assert_eq!(
            out.code,
            0,
            "server {id} did not reach {status}: {}\n{}",
            out.stderr,
            self.log_tail()
        );
        out.json
    }

    /// A server's directory.
    pub fn server_dir(&self, id: Uuid) -> PathBuf {
        self.state_dir.join("servers").join(id.to_string())
    }

    /// A server's serial console log.
    pub fn console(&self, id: Uuid) -> String {
        crate::guest::console_text(&self.server_dir(id).join("console.log"))
    }

    /// Waits until the console shows `needle` at least `count` times.
    pub fn wait_console(&self, id: Uuid, needle: &str, count: usize, timeout: Duration) -> String {
        let found = crate::wait::within(timeout, || {
            let text = self.console(id);
            (text.matches(needle).count() >= count).then_some(text)
        });
        found.unwrap_or_else(|| {
            let console = self.console(id);
            let lines: Vec<&str> = console.lines().collect();
            let server = self.cli(&["server", "show", &id.to_string()]);
            panic!(
                "timed out after {timeout:?} waiting for {count}x {needle:?} on the console of {id} \
                 (seen {}x)\n--- server ---\n{}{}\n--- console tail ---\n{}\n--- agent log tail ---\n{}",
                console.matches(needle).count(),
                server.json,
                server.stderr,
                lines[lines.len().saturating_sub(25)..].join("\n"),
                self.log_tail()
            )
        })
    }

    /// An HTTPS client that trusts exactly the agent's (kept, self-signed) certificate.
    pub fn https_client(&self) -> reqwest::blocking::Client {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let pem = std::fs::read(self.state_dir.join("tls/api.crt"))
            .expect("certificate kept in the state dir");
        let cert = reqwest::Certificate::from_pem(&pem).expect("pem");
        reqwest::blocking::Client::builder()
            .tls_certs_only([cert])
            .timeout(Duration::from_mins(1))
            .build()
            .expect("client")
    }

    /// Path of the agent's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    /// The last lines of the agent log, for assertion messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The scratch directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// kill(2) on a child we spawned and still own (not yet reaped, so the pid cannot be reused).
#[allow(unsafe_code)]
pub(crate) fn send_signal(pid: libc::pid_t, signal: libc::c_int) -> libc::c_int {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill9();
        // Leave no guests behind: remove every domain this agent's node owns.
        let observer = Observer::connect();
        for id in observer.owned_by(&self.node_id) {
            observer.remove(id);
        }
    }
}
