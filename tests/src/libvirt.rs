//! virtlogd and libvirtd, started by the harness (there is no systemd here), and a direct libvirt
//! connection for tests to observe what the agent did.

use crate::{RunLock, run_dir};
use std::process::Command;
use std::time::Duration;
use uuid::Uuid;
use virt::connect::Connect;
use virt::domain::Domain;

/// The URI the tests and the agent use.
pub const URI: &str = "qemu:///system";

fn answers() -> bool {
    Connect::open(Some(URI)).is_ok_and(|mut c| c.close().is_ok())
}

/// Makes sure virtlogd and libvirtd run; starts them (daemonised, pid files and logs under
/// `/run/scs-edge-tests`) if they do not answer. Safe to call from parallel test processes.
pub fn ensure_daemons() {
    virt::error::clear_error_callback();
    let _lock = RunLock::acquire("libvirt");
    if answers() {
        return;
    }
    let dir = run_dir();
    let virtlogd_running = Command::new("pgrep")
        .args(["-x", "virtlogd"])
        .status()
        .is_ok_and(|s| s.success());
    if !virtlogd_running {
        let status = Command::new("/usr/sbin/virtlogd")
            .args(["-d", "-p"])
            .arg(dir.join("virtlogd.pid"))
            .status()
            .expect("run virtlogd (apt-get install libvirt-daemon-system)");
        assert!(status.success(), "virtlogd failed to start");
    }
    let status = Command::new("/usr/sbin/libvirtd")
        .args(["-d", "--pid-file"])
        .arg(dir.join("libvirtd.pid"))
        .env(
            "LIBVIRT_LOG_OUTPUTS",
            format!("3:file:{}", dir.join("libvirtd.log").display()),
        )
        .status()
        .expect("run libvirtd (apt-get install libvirt-daemon-system)");
    assert!(status.success(), "libvirtd failed to start");
    crate::wait::until("libvirtd to answer", Duration::from_secs(30), || {
        answers().then_some(())
    });
}

/// A libvirt connection for observing domains from the test side.
pub struct Observer {
    conn: Connect,
}

impl Default for Observer {
    fn default() -> Self {
        Self::connect()
    }
}

impl Observer {
    /// Connects (starting the daemons if needed).
    pub fn connect() -> Self {
        ensure_daemons();
        Self {
            conn: Connect::open(Some(URI)).expect("connect to libvirt"),
        }
    }

    /// The domain of a server, if libvirt has one.
    pub fn domain(&self, id: Uuid) -> Option<Domain> {
        Domain::lookup_by_uuid_string(&self.conn, &id.to_string()).ok()
    }

    /// `(state, reason)` of a server's domain.
    pub fn state(&self, id: Uuid) -> Option<(u32, i32)> {
        self.domain(id).and_then(|d| d.get_state().ok())
    }

    /// Whether the domain is running.
    pub fn running(&self, id: Uuid) -> bool {
        self.state(id)
            .is_some_and(|(s, _)| s == virt::sys::VIR_DOMAIN_RUNNING)
    }

    /// Whether the domain is shut off.
    pub fn shut_off(&self, id: Uuid) -> bool {
        self.state(id)
            .is_some_and(|(s, _)| s == virt::sys::VIR_DOMAIN_SHUTOFF)
    }

    /// QEMU process id of a running domain (changes on every cold start).
    pub fn domain_id(&self, id: Uuid) -> Option<u32> {
        self.domain(id).and_then(|d| d.get_id())
    }

    /// The live domain XML.
    pub fn xml(&self, id: Uuid) -> Option<String> {
        self.domain(id).and_then(|d| d.get_xml_desc(0).ok())
    }

    /// UUIDs of every domain whose XML carries `node='<node_id>'` in the agent's metadata.
    pub fn owned_by(&self, node_id: &str) -> Vec<Uuid> {
        let needle = format!("node='{node_id}'");
        let needle2 = format!("node=\"{node_id}\"");
        self.conn
            .list_all_domains(0)
            .expect("list domains")
            .into_iter()
            .filter(|d| {
                d.get_xml_desc(0)
                    .is_ok_and(|x| x.contains(&needle) || x.contains(&needle2))
            })
            .filter_map(|d| {
                d.get_uuid_string()
                    .ok()
                    .and_then(|u| Uuid::parse_str(&u).ok())
            })
            .collect()
    }

    /// Defines (and optionally starts) a domain straight through libvirt, bypassing the agent.
    pub fn define(&self, xml: &str, start: bool) -> Domain {
        let domain = Domain::define_xml(&self.conn, xml).expect("define");
        if start {
            domain.create().expect("start");
        }
        domain
    }

    /// Destroys and undefines a domain behind the agent's back.
    pub fn remove(&self, id: Uuid) {
        if let Some(domain) = self.domain(id) {
            let _ = domain.destroy();
            let _ = domain.undefine_flags(virt::sys::VIR_DOMAIN_UNDEFINE_NVRAM);
        }
    }

    /// The underlying connection.
    pub fn connection(&self) -> &Connect {
        &self.conn
    }
}
