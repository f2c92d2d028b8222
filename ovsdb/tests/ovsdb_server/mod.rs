//! Real `ovsdb-server` processes for the integration tests, each in its own temporary directory
//! with its own free TCP ports, killed when dropped. Needs the Debian packages
//! `openvswitch-common` (ovsdb-server, ovsdb-tool, ovs-appctl) and `ovn-central` (the Northbound
//! schema) plus `ovn-common` (ovn-nbctl).
#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ovsdb::Remote;

/// The installed OVN Northbound schema.
pub(crate) const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";

/// Generous limit for anything the tests wait for; only reached when something is broken.
pub(crate) const DEADLINE: Duration = Duration::from_mins(1);

/// Fails with an actionable message when the OVS/OVN tools are missing.
pub(crate) fn require_tools() {
    for tool in ["ovsdb-server", "ovsdb-tool", "ovs-appctl", "ovn-nbctl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "{tool} not found: install the Debian packages openvswitch-common, ovn-central and \
             ovn-common to run the ovsdb integration tests"
        );
    }
    assert!(
        Path::new(NB_SCHEMA).exists(),
        "{NB_SCHEMA} missing: install the Debian package ovn-central"
    );
}

/// A TCP port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Polls a condition that has no notification (another process's state) until it holds.
pub(crate) async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !condition().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// One `ovsdb-server` process serving one database file.
pub(crate) struct Server {
    pub(crate) name: String,
    pub(crate) db: PathBuf,
    pub(crate) sock: PathBuf,
    pub(crate) ctl: PathBuf,
    log: PathBuf,
    /// Client TCP port (stays the same across restarts).
    pub(crate) port: u16,
    extra_remotes: Vec<String>,
    child: Option<Child>,
}

impl Server {
    fn new(dir: &Path, name: &str, db: PathBuf) -> Self {
        Self {
            name: name.to_owned(),
            db,
            sock: dir.join(format!("{name}.sock")),
            ctl: dir.join(format!("{name}.ctl")),
            log: dir.join(format!("{name}.log")),
            port: free_port(),
            extra_remotes: Vec::new(),
            child: None,
        }
    }

    /// A standalone Northbound database, started.
    pub(crate) fn standalone_nb(dir: &Path) -> Self {
        Self::standalone_nb_with(dir, &[])
    }

    /// A standalone Northbound database with extra `--remote` options, started.
    pub(crate) fn standalone_nb_with(dir: &Path, extra_remotes: &[&str]) -> Self {
        require_tools();
        let db = dir.join("nb.db");
        run("ovsdb-tool", &["create", path(&db), NB_SCHEMA]);
        let mut server = Self::new(dir, "nb", db);
        server.extra_remotes = extra_remotes.iter().map(|s| (*s).to_owned()).collect();
        server.start();
        server
    }

    /// Starts the process listening on the unix socket and the TCP port.
    pub(crate) fn start(&mut self) {
        self.start_with_tcp(true);
    }

    /// Starts the process; without TCP only the unix socket is served, so clients using TCP
    /// stay disconnected while the tests change the database over the socket.
    pub(crate) fn start_with_tcp(&mut self, tcp: bool) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let mut cmd = Command::new("ovsdb-server");
        cmd.arg(&self.db)
            .arg(format!("--remote=punix:{}", self.sock.display()))
            .arg(format!("--unixctl={}", self.ctl.display()))
            .arg(format!("--log-file={}", self.log.display()))
            .arg("-vconsole:off")
            .arg("-vfile:info");
        if tcp {
            cmd.arg(format!("--remote=ptcp:{}:127.0.0.1", self.port));
        }
        for remote in &self.extra_remotes {
            cmd.arg(format!("--remote={remote}"));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ovsdb-server");
        self.child = Some(child);
        self.wait_ready(tcp);
    }

    fn wait_ready(&mut self, tcp: bool) {
        let start = Instant::now();
        loop {
            let unix_ok = std::os::unix::net::UnixStream::connect(&self.sock).is_ok();
            let tcp_ok = !tcp || std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
            if unix_ok && tcp_ok && self.ctl.exists() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "ovsdb-server {} exited with {status}; log:\n{}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < DEADLINE,
                "ovsdb-server {} did not come up",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, like a crash.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.sock);
        let _ = std::fs::remove_file(&self.ctl);
    }

    pub(crate) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The TCP remote.
    pub(crate) fn tcp(&self) -> Remote {
        Remote::Tcp {
            host: "127.0.0.1".into(),
            port: self.port,
        }
    }

    /// The unix socket remote.
    pub(crate) fn unix(&self) -> Remote {
        Remote::Unix(self.sock.clone())
    }

    /// `ovs-appctl -t <ctl> ARGS…`.
    pub(crate) fn appctl(&self, args: &[&str]) -> String {
        let target = self.ctl.display().to_string();
        let mut all = vec!["-t", target.as_str()];
        all.extend_from_slice(args);
        run("ovs-appctl", &all)
    }

    /// `ovn-nbctl` against this server's unix socket.
    pub(crate) fn nbctl(&self, args: &[&str]) -> String {
        let db = format!("--db=unix:{}", self.sock.display());
        let mut all = vec![db.as_str(), "--no-leader-only", "--timeout=30"];
        all.extend_from_slice(args);
        run("ovn-nbctl", &all)
    }

    /// This member's RAFT role, from `cluster/status`.
    pub(crate) fn role(&self) -> Option<String> {
        let target = self.ctl.display().to_string();
        let output = Command::new("ovs-appctl")
            .args(["-t", &target, "cluster/status", "OVN_Northbound"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("Role: ").map(str::to_owned))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A RAFT cluster of Northbound servers.
pub(crate) struct Cluster {
    pub(crate) servers: Vec<Server>,
}

impl Cluster {
    /// Creates and starts an `n`-member cluster; returns once one member is leader and all
    /// members have joined.
    pub(crate) async fn start(dir: &Path, n: usize) -> Self {
        require_tools();
        let raft: Vec<String> = (0..n)
            .map(|_| format!("tcp:127.0.0.1:{}", free_port()))
            .collect();
        let mut servers = Vec::new();
        for (i, local) in raft.iter().enumerate() {
            let name = format!("s{}", i + 1);
            let db = dir.join(format!("{name}.db"));
            if i == 0 {
                run(
                    "ovsdb-tool",
                    &["create-cluster", path(&db), NB_SCHEMA, local],
                );
            } else {
                run(
                    "ovsdb-tool",
                    &["join-cluster", path(&db), "OVN_Northbound", local, &raft[0]],
                );
            }
            servers.push(Server::new(dir, &name, db));
        }
        for server in &mut servers {
            server.start();
        }
        let cluster = Self { servers };
        eventually("a cluster leader and all members joined", || async {
            cluster.leader().is_some()
                && cluster
                    .servers
                    .iter()
                    .all(|s| matches!(s.role().as_deref(), Some("leader" | "follower")))
        })
        .await;
        cluster
    }

    /// Index of the current leader among running members.
    pub(crate) fn leader(&self) -> Option<usize> {
        self.servers
            .iter()
            .position(|s| s.is_running() && s.role().as_deref() == Some("leader"))
    }

    /// All members' TCP remotes.
    pub(crate) fn remotes(&self) -> Vec<Remote> {
        self.servers.iter().map(Server::tcp).collect()
    }

    /// The member listening on `remote`.
    pub(crate) fn index_of(&self, remote: &Remote) -> usize {
        self.servers
            .iter()
            .position(|s| &s.tcp() == remote)
            .expect("remote belongs to the cluster")
    }
}
