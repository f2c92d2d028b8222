//! An OVS + OVN stack started by the harness, in its own directory and (optionally) its own network
//! namespace: ovsdb-servers for Open_vSwitch, OVN_Northbound and OVN_Southbound, ovs-vswitchd with the
//! userspace (`netdev`) datapath, ovn-northd and ovn-controller. Nothing of the chassis is configured
//! here: the agent under test does that (system-id, ovn-remote, bridge mappings, provider bridges).

use crate::scratch_dir;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// A running stack; stopped (and its namespace deleted) on drop.
pub struct OvnStack {
    dir: tempfile::TempDir,
    /// Network namespace of ovs-vswitchd and ovn-controller (`None`: the root namespace).
    pub netns: Option<String>,
}

fn run(mut command: Command) -> Output {
    let rendered = format!("{command:?}");
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{rendered}: {e}"));
    assert!(
        out.status.success(),
        "{rendered} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A short unique suffix for names that must fit IFNAMSIZ.
pub fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_owned()
}

impl OvnStack {
    /// Starts a stack; `in_netns` puts the datapath and ovn-controller in a fresh namespace.
    pub fn start(label: &str, in_netns: bool) -> Self {
        let dir = scratch_dir(label);
        let netns = in_netns.then(|| format!("scs-{label}-{}", short_id()));
        let stack = Self { dir, netns };
        if let Some(ns) = &stack.netns {
            run(Self::plain("ip", &["netns", "add", ns]));
            run(Self::plain("ip", &["-n", ns, "link", "set", "lo", "up"]));
        }
        let d = stack.dir.path();
        for (db, schema) in [
            ("conf.db", "/usr/share/openvswitch/vswitch.ovsschema"),
            ("nb.db", "/usr/share/ovn/ovn-nb.ovsschema"),
            ("sb.db", "/usr/share/ovn/ovn-sb.ovsschema"),
        ] {
            assert!(
                Path::new(schema).exists(),
                "{schema} missing: apt-get install openvswitch-switch ovn-central ovn-host"
            );
            run(Self::plain(
                "ovsdb-tool",
                &["create", &d.join(db).to_string_lossy(), schema],
            ));
        }
        for (db, sock, name) in [
            ("conf.db", "ovs.sock", "ovs"),
            ("nb.db", "nb.sock", "nb"),
            ("sb.db", "sb.sock", "sb"),
        ] {
            let mut args = vec![
                d.join(db).to_string_lossy().into_owned(),
                format!("--remote=punix:{}", d.join(sock).display()),
                format!("--unixctl={}", d.join(format!("{name}.ctl")).display()),
                format!("--pidfile={}", d.join(format!("{name}-db.pid")).display()),
                format!("--log-file={}", d.join(format!("{name}-db.log")).display()),
                "--detach".into(),
                "-vconsole:off".into(),
            ];
            if name == "ovs" {
                args.push("--remote=db:Open_vSwitch,Open_vSwitch,manager_options".into());
            }
            run(stack.command(
                "ovsdb-server",
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
                false,
            ));
        }
        run(stack.vsctl_command(&["--no-wait", "init"]));
        let ovs = format!("unix:{}", d.join("ovs.sock").display());
        run(stack.command(
            "ovs-vswitchd",
            &[
                &ovs,
                &format!("--pidfile={}", d.join("vswitchd.pid").display()),
                &format!("--log-file={}", d.join("vswitchd.log").display()),
                &format!("--unixctl={}", d.join("vswitchd.ctl").display()),
                "--detach",
                "-vconsole:off",
            ],
            true,
        ));
        run(stack.command(
            "ovn-northd",
            &[
                &format!("--ovnnb-db={}", stack.northbound()),
                &format!("--ovnsb-db={}", stack.southbound()),
                &format!("--pidfile={}", d.join("northd.pid").display()),
                &format!("--log-file={}", d.join("northd.log").display()),
                &format!("--unixctl={}", d.join("northd.ctl").display()),
                "--detach",
                "-vconsole:off",
            ],
            false,
        ));
        run(stack.command(
            "ovn-controller",
            &[
                &ovs,
                &format!("--pidfile={}", d.join("controller.pid").display()),
                &format!("--log-file={}", d.join("controller.log").display()),
                "--detach",
                "-vconsole:off",
            ],
            true,
        ));
        stack
    }

    fn plain(program: &str, args: &[&str]) -> Command {
        let mut c = Command::new(program);
        c.args(args);
        c
    }

    /// A command with the stack's directories in its environment, in the namespace if `in_netns`.
    fn command(&self, program: &str, args: &[&str], in_netns: bool) -> Command {
        let mut c = match (&self.netns, in_netns) {
            (Some(ns), true) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            _ => Command::new(program),
        };
        c.args(args);
        let d = self.dir.path();
        for var in [
            "OVS_RUNDIR",
            "OVS_LOGDIR",
            "OVS_DBDIR",
            "OVS_SYSCONFDIR",
            "OVN_RUNDIR",
            "OVN_LOGDIR",
            "OVN_DBDIR",
            "OVN_SYSCONFDIR",
        ] {
            c.env(var, d);
        }
        c
    }

    fn vsctl_command(&self, args: &[&str]) -> Command {
        let db = format!("--db=unix:{}", self.dir.path().join("ovs.sock").display());
        let mut all = vec![db.as_str(), "--timeout=10"];
        all.extend_from_slice(args);
        self.command("ovs-vsctl", &all, false)
    }

    /// `ovs-vsctl` against the stack's switch; panics on failure.
    pub fn vsctl(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&run(self.vsctl_command(args)).stdout)
            .trim()
            .to_owned()
    }

    /// `ovn-nbctl` against the stack's northbound database; panics on failure.
    pub fn nbctl(&self, args: &[&str]) -> String {
        let db = format!("--db={}", self.northbound());
        let mut all = vec![db.as_str()];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&run(self.command("ovn-nbctl", &all, false)).stdout)
            .trim()
            .to_owned()
    }

    /// `ovn-nbctl` timing: the same command, returning the output without asserting success.
    pub fn nbctl_command(&self, args: &[&str]) -> Command {
        let db = format!("--db={}", self.northbound());
        let mut all = vec![db.as_str()];
        all.extend_from_slice(args);
        self.command("ovn-nbctl", &all, false)
    }

    /// Runs a program inside the stack's namespace (or the root one); panics on failure.
    pub fn in_netns(&self, program: &str, args: &[&str]) -> String {
        String::from_utf8_lossy(&run(self.command(program, args, true)).stdout)
            .trim()
            .to_owned()
    }

    /// OVSDB remote of the northbound database.
    pub fn northbound(&self) -> String {
        format!("unix:{}", self.dir.path().join("nb.sock").display())
    }

    /// OVSDB remote of the southbound database.
    pub fn southbound(&self) -> String {
        format!("unix:{}", self.dir.path().join("sb.sock").display())
    }

    /// OVSDB remote of the local switch.
    pub fn switch(&self) -> String {
        format!("unix:{}", self.dir.path().join("ovs.sock").display())
    }

    /// The stack's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the northbound ovsdb-server (as a crash would) and starts it again on the same file.
    pub fn restart_northbound(&self) {
        Self::kill_pidfile(&self.dir.path().join("nb-db.pid"));
        let d = self.dir.path();
        run(self.command(
            "ovsdb-server",
            &[
                &d.join("nb.db").to_string_lossy(),
                &format!("--remote=punix:{}", d.join("nb.sock").display()),
                &format!("--unixctl={}", d.join("nb.ctl").display()),
                &format!("--pidfile={}", d.join("nb-db.pid").display()),
                &format!("--log-file={}", d.join("nb-db.log").display()),
                "--detach",
                "-vconsole:off",
            ],
            false,
        ));
    }

    fn kill_pidfile(pidfile: &Path) {
        let Ok(text) = std::fs::read_to_string(pidfile) else {
            return;
        };
        let Ok(pid) = text.trim().parse::<i32>() else {
            return;
        };
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        crate::wait::until("daemon gone", Duration::from_secs(10), || {
            (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
        });
        let _ = std::fs::remove_file(pidfile);
    }

    /// Waits until ovn-controller has created the integration bridge (after the agent configured it).
    pub fn wait_integration_bridge(&self, bridge: &str) {
        crate::wait::until(
            "ovn-controller to create the integration bridge",
            Duration::from_mins(1),
            || {
                let out = self.vsctl_command(&["br-exists", bridge]).output().ok()?;
                out.status.success().then_some(())
            },
        );
    }
}

impl Drop for OvnStack {
    fn drop(&mut self) {
        for pid in [
            "controller.pid",
            "northd.pid",
            "vswitchd.pid",
            "sb-db.pid",
            "nb-db.pid",
            "ovs-db.pid",
        ] {
            Self::kill_pidfile(&self.dir.path().join(pid));
        }
        if let Some(ns) = &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A network namespace standing in for a VM (or an outside host) on a veth pair.
pub struct Netns {
    /// Namespace name.
    pub name: String,
    /// The veth end outside the namespace (in the stack's namespace).
    pub outside: String,
    host_side: Option<String>,
}

impl Netns {
    /// A namespace whose `eth0` (with `mac`) is wired to a veth end `outside` in the stack's namespace.
    pub fn new(stack: &OvnStack, label: &str, mac: &str) -> Self {
        let id = short_id();
        let name = format!("{label}-{id}");
        let outside = format!("v{label}{id}").chars().take(15).collect::<String>();
        let inside = format!("i{id}");
        run(OvnStack::plain("ip", &["netns", "add", &name]));
        run(OvnStack::plain(
            "ip",
            &["-n", &name, "link", "set", "lo", "up"],
        ));
        let mut add = Command::new("ip");
        if let Some(ns) = &stack.netns {
            add.args(["-n", ns]);
        }
        add.args([
            "link", "add", &outside, "type", "veth", "peer", "name", &inside, "netns", &name,
        ]);
        run(add);
        run(OvnStack::plain(
            "ip",
            &["-n", &name, "link", "set", &inside, "name", "eth0"],
        ));
        run(OvnStack::plain(
            "ip",
            &["-n", &name, "link", "set", "eth0", "address", mac],
        ));
        run(OvnStack::plain(
            "ip",
            &["-n", &name, "link", "set", "eth0", "up"],
        ));
        let ns = Self {
            name,
            outside,
            host_side: stack.netns.clone(),
        };
        ns.outside_cmd(&["link", "set", &ns.outside, "up"]);
        // The userspace datapath does not complete checksums the kernel left to the NIC.
        let _ = Command::new("ip")
            .args([
                "netns", "exec", &ns.name, "ethtool", "-K", "eth0", "tx", "off",
            ])
            .output();
        let mut off = match &ns.host_side {
            Some(stack_ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", stack_ns, "ethtool"]);
                c
            }
            None => Command::new("ethtool"),
        };
        let _ = off.args(["-K", &ns.outside, "tx", "off"]).output();
        ns
    }

    fn outside_cmd(&self, args: &[&str]) {
        let mut c = Command::new("ip");
        if let Some(ns) = &self.host_side {
            c.args(["-n", ns]);
        }
        c.args(args);
        run(c);
    }

    /// Plugs the outside end into `bridge` as the VIF of logical port `port_id`.
    pub fn plug(&self, stack: &OvnStack, bridge: &str, port_id: &str) {
        stack.vsctl(&[
            "add-port",
            bridge,
            &self.outside,
            "--",
            "set",
            "Interface",
            &self.outside,
            &format!("external_ids:iface-id={port_id}"),
        ]);
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    /// Gives eth0 a static address and default route.
    pub fn address(&self, cidr: &str, gateway: Option<&str>) {
        run(OvnStack::plain(
            "ip",
            &["-n", &self.name, "addr", "add", cidr, "dev", "eth0"],
        ));
        if let Some(gw) = gateway {
            run(OvnStack::plain(
                "ip",
                &["-n", &self.name, "route", "add", "default", "via", gw],
            ));
        }
    }

    /// Asks for a DHCP lease (busybox udhcpc) and applies it; returns the leased address.
    pub fn dhcp(&self) -> Option<String> {
        let script = std::env::temp_dir().join("scs-edge-udhcpc.sh");
        if !script.exists() {
            let _ = std::fs::write(
                &script,
                "#!/bin/sh\ncase \"$1\" in bound|renew)\n  ip addr flush dev \"$interface\"\n  ip addr add \"$ip/$mask\" dev \"$interface\"\n  [ -n \"$router\" ] && ip route replace default via \"${router%% *}\"\n  echo \"LEASE $ip\"\n  ;;\nesac\n",
            );
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755));
        }
        let out = self.exec(
            "busybox",
            &[
                "udhcpc",
                "-i",
                "eth0",
                "-n",
                "-q",
                "-f",
                "-t",
                "8",
                "-T",
                "1",
                "-s",
                &script.to_string_lossy(),
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("LEASE ").map(str::to_owned))
    }

    /// One ping; true if answered within a second.
    pub fn ping_once(&self, ip: &str) -> bool {
        self.exec("ping", &["-c", "1", "-W", "1", ip])
            .status
            .success()
    }

    /// Pings until answered (up to `attempts` times); true if it got through.
    pub fn reaches(&self, ip: &str, attempts: u32) -> bool {
        (0..attempts).any(|_| self.ping_once(ip))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
