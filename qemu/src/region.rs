//! A local `scs-edge-region` process: the region `make lab` starts for its site, and the one the
//! integration tests and the region benchmark run against.
//!
//! It owns a directory holding the configuration (`region.toml`), the state (CA, SQLite database)
//! and the log; `start` initialises the CA (reading the fingerprint sites pin from `init`), starts
//! `serve` and returns once the HTTPS port accepts connections, which the region only opens after its
//! CA and database are ready.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// How the region is configured.
#[derive(Debug, Clone)]
pub struct RegionOptions {
    /// Config, state and log go here.
    pub dir: PathBuf,
    /// HTTPS port (on `listen_ip`).
    pub port: u16,
    /// Address to listen on: loopback for tests; QEMU's user networking reaches the host's loopback
    /// as 10.0.2.2, so a lone site needs nothing wider either. The lab of many sites listens on
    /// every address: its sites reach the region over their links, and its operator on loopback,
    /// the only peer a region without an identity provider takes as an operator.
    pub listen_ip: String,
    /// The address in the region's URL, when `listen_ip` is the wildcard.
    pub advertise_ip: Option<String>,
    /// Names and addresses in the server certificate.
    pub names: Vec<String>,
    /// `region.database_url`; empty = SQLite in the state directory.
    pub database_url: String,
    /// `reports.expected_interval_secs`.
    pub expected_interval_secs: u32,
    /// Extra TOML appended to the config (`[oidc]`, `[dashboard]`, …).
    pub extra: String,
    /// `RUST_LOG` for `serve`.
    pub log_filter: String,
}

impl RegionOptions {
    /// A loopback region in `dir` on `port` with SQLite and a 10 s heartbeat interval.
    pub fn new(dir: PathBuf, port: u16) -> Self {
        Self {
            dir,
            port,
            listen_ip: "127.0.0.1".into(),
            advertise_ip: None,
            names: vec!["127.0.0.1".into(), "localhost".into()],
            database_url: String::new(),
            expected_interval_secs: 10,
            extra: String::new(),
            log_filter: "info".into(),
        }
    }
}

/// A region process (running or stopped) and its directory.
pub struct RegionProcess {
    options: RegionOptions,
    /// The config file.
    pub config: PathBuf,
    /// The CA fingerprint sites pin (`sha256:…`).
    pub fingerprint: String,
    child: Option<Child>,
}

/// The `scs-edge-region` binary beside the running executable (`target/<profile>/`), or
/// `$SCS_EDGE_REGION_BIN`.
pub fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("SCS_EDGE_REGION_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("scs-edge-region")
}

impl RegionProcess {
    /// Writes the config, runs `init`, starts `serve` and waits until it listens.
    pub fn start(options: RegionOptions) -> Result<Self, String> {
        std::fs::create_dir_all(&options.dir)
            .map_err(|e| format!("{}: {e}", options.dir.display()))?;
        let config = options.dir.join("region.toml");
        let database = if options.database_url.is_empty() {
            String::new()
        } else {
            format!("database_url = \"{}\"\n", options.database_url)
        };
        let names: Vec<String> = options.names.iter().map(|n| format!("\"{n}\"")).collect();
        let text = format!(
            "[region]\nname = \"lab\"\nstate_dir = \"{}\"\n{database}\n[listen]\naddress = \"{}:{}\"\nnames = [{}]\n\n[reports]\nexpected_interval_secs = {}\n\n{}",
            options.dir.join("state").display(),
            options.listen_ip,
            options.port,
            names.join(", "),
            options.expected_interval_secs.max(1),
            options.extra,
        );
        std::fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
        let mut region = Self {
            options,
            config,
            fingerprint: String::new(),
            child: None,
        };
        let init = region.cli_ok(&["init"])?;
        init.lines()
            .find_map(|l| l.strip_prefix("ca_fingerprint = \""))
            .and_then(|l| l.strip_suffix('"'))
            .ok_or_else(|| format!("no fingerprint in `init` output: {init}"))?
            .clone_into(&mut region.fingerprint);
        region.spawn()?;
        Ok(region)
    }

    /// Starts `serve` (again) and waits until the port accepts connections.
    pub fn spawn(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Err("the region is already running".into());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("region log: {e}"))?;
        let stderr = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env("RUST_LOG", &self.options.log_filter)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", binary().display()))?;
        // A runner that is killed cannot stop its region; `scs-edge-lab down` finds it here.
        let _ = std::fs::write(pid_path(&self.options.dir), child.id().to_string());
        self.child = Some(child);
        let address = format!("{}:{}", self.advertised_ip(), self.options.port);
        let listening = crate::poll_until(Duration::from_secs(30), || {
            if !self.running() {
                return Some(false);
            }
            TcpStream::connect(&address).ok().map(|_| true)
        });
        match listening {
            Some(true) => Ok(()),
            _ => Err(format!(
                "the region did not start listening on {address}:\n{}",
                self.log_tail(40)
            )),
        }
    }

    /// Whether `serve` still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGTERM (a clean shutdown) and wait.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// SIGKILL and wait: a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The serving process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The HTTPS port.
    pub fn port(&self) -> u16 {
        self.options.port
    }

    /// `https://<advertised ip>:<port>`: where sites reach the region.
    pub fn url(&self) -> String {
        format!("https://{}:{}", self.advertised_ip(), self.options.port)
    }

    fn advertised_ip(&self) -> &str {
        self.options
            .advertise_ip
            .as_deref()
            .unwrap_or(&self.options.listen_ip)
    }

    /// The region CA certificate (PEM).
    pub fn ca_pem(&self) -> Result<String, String> {
        let path = self.options.dir.join("state/ca.crt");
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Runs the operator CLI on this region's config.
    pub fn cli(&self, args: &[&str]) -> Result<Output, String> {
        Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .map_err(|e| format!("run {}: {e}", binary().display()))
    }

    /// Runs the CLI; stdout on success, the error output otherwise.
    pub fn cli_ok(&self, args: &[&str]) -> Result<String, String> {
        let output = self.cli(args)?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "scs-edge-region {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// Creates a join token for `site` (adding the site first when it does not exist) and returns it.
    pub fn join_token(&self, site: &str) -> Result<String, String> {
        let list = self.cli_ok(&["site", "list", "--json"])?;
        let known: serde_json::Value =
            serde_json::from_str(&list).map_err(|e| format!("site list: {e}"))?;
        let exists = known
            .as_array()
            .is_some_and(|sites| sites.iter().any(|s| s["name"] == site));
        if !exists {
            self.cli_ok(&["site", "add", site])?;
        }
        let out = self.cli_ok(&["token", "create", site])?;
        out.lines()
            .find_map(|l| l.strip_prefix("join_token = \""))
            .and_then(|l| l.strip_suffix('"'))
            .map(str::to_owned)
            .ok_or_else(|| format!("no token in `token create` output: {out}"))
    }

    /// One site as `site list --json` shows it.
    pub fn site_status(&self, site: &str) -> Result<Option<serde_json::Value>, String> {
        let list = self.cli_ok(&["site", "list", "--json"])?;
        let sites: serde_json::Value =
            serde_json::from_str(&list).map_err(|e| format!("site list: {e}"))?;
        Ok(sites
            .as_array()
            .and_then(|all| all.iter().find(|s| s["name"] == site).cloned()))
    }

    /// The log file.
    pub fn log_path(&self) -> PathBuf {
        self.options.dir.join("region.log")
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The region's directory.
    pub fn dir(&self) -> &Path {
        &self.options.dir
    }
}

fn pid_path(dir: &Path) -> PathBuf {
    dir.join("region.pid")
}

/// Stops the region a killed runner left serving from `dir` (SIGTERM, then waits up to 10 s). Only
/// a process whose command line names the directory's config is touched.
pub fn stop_recorded(dir: &Path) {
    let Some(pid) = std::fs::read_to_string(pid_path(dir))
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
    else {
        return;
    };
    let config = dir.join("region.toml");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&cmdline).contains(&*config.to_string_lossy()) {
        let _ = Command::new("kill").arg(pid.to_string()).status();
        crate::poll_until(Duration::from_secs(10), || {
            crate::process_gone(pid).then_some(())
        });
    }
    let _ = std::fs::remove_file(pid_path(dir));
}

impl Drop for RegionProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
