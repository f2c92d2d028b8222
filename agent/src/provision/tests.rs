//! Provisioning on a temporary root with a fake sysfs, procfs and devfs.

use super::host::RecordingHost;
use super::layout::{
    self, AGENT_TOML, JOIN_TOKEN, MANAGEMENT_NETWORK, PROVIDER_NETWORK, SITE_TOML, STAMP,
    WATCHDOG_DROPIN,
};
use super::profile::{self, HardwareProfile, SelectError};
use super::site::SiteError;
use super::sources::{self, SourceKind};
use super::*;
use crate::config::AgentConfig;
use crate::system::clock::ManualClock;
use crate::system::mount::FakeMounter;
use crate::system::notify::RecordingNotifier;
use base64::Engine as _;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

const FINGERPRINT: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const TOKEN: &str = "s3cret-join-token";

fn site_toml(name: &str) -> String {
    format!(
        "[site]\nname = \"{name}\"\nregion_url = \"https://region.example.com\"\njoin_token = \"{TOKEN}\"\nca_fingerprint = \"{FINGERPRINT}\"\n"
    )
}

fn cmdline(name: &str) -> String {
    format!(
        "BOOT_IMAGE=/vmlinuz root=PARTLABEL=usr-a ro console=ttyS0 scs_edge.site={name} scs_edge.region_url=https://region.example.com scs_edge.join_token={TOKEN} scs_edge.ca_fingerprint={FINGERPRINT} quiet\n"
    )
}

fn shipped_profiles() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hardware-profiles")
}

/// A raw SMBIOS type-11 structure: header, string count, then the strings.
fn smbios_type11(strings: &[&str]) -> Vec<u8> {
    let mut raw = vec![11, 5, 0x2a, 0x00, u8::try_from(strings.len()).unwrap_or(0)];
    for s in strings {
        raw.extend_from_slice(s.as_bytes());
        raw.push(0);
    }
    raw.push(0);
    raw
}

/// A fake machine: a QEMU q35 guest with two virtio NICs at 00:02.0 and 00:03.0.
struct Node {
    dir: tempfile::TempDir,
    profiles: PathBuf,
    clock: ManualClock,
    mounter: FakeMounter,
}

impl Node {
    fn qemu() -> Self {
        let node = Self::bare();
        node.dmi("QEMU", "Standard PC (Q35 + ICH9, 2009)", "", "");
        node.nic("enp0s2", "52:54:00:12:34:01", "0000:00:02.0", true);
        node.nic("enp0s3", "52:54:00:12:34:02", "0000:00:03.0", true);
        node
    }

    fn bare() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("etc")).expect("etc");
        std::fs::create_dir_all(dir.path().join("var")).expect("var");
        let medium = dir.path().join("medium");
        Self {
            mounter: FakeMounter::with_medium(dir.path().join(sources::LABEL_DEVICE), medium),
            dir,
            profiles: shipped_profiles(),
            clock: ManualClock::new("2026-03-01T10:00:00Z".parse().expect("timestamp")),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, relative: &str, content: impl AsRef<[u8]>) {
        let path = self.root().join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }

    fn remove(&self, relative: &str) {
        std::fs::remove_file(self.root().join(relative)).expect("remove");
    }

    fn dmi(&self, vendor: &str, product: &str, sku: &str, board: &str) {
        self.write("sys/class/dmi/id/sys_vendor", format!("{vendor}\n"));
        self.write("sys/class/dmi/id/product_name", format!("{product}\n"));
        self.write("sys/class/dmi/id/product_sku", format!("{sku}\n"));
        self.write("sys/class/dmi/id/board_name", format!("{board}\n"));
    }

    /// A NIC laid out as sysfs does: `class/net/<name>` links into the device tree, and the
    /// interface's `device` link is relative (`../../../virtio0` for virtio, whose device is a child
    /// of its PCI function; `../../../<pci>` for a PCI NIC), so only the resolved path names the PCI
    /// address.
    fn nic(&self, name: &str, mac: &str, pci: &str, virtio: bool) {
        let (device, leaf) = if virtio {
            let leaf = format!("virtio-{name}");
            (format!("devices/pci0000:00/{pci}/{leaf}"), leaf)
        } else {
            (format!("devices/pci0000:00/{pci}"), pci.to_owned())
        };
        let interface = format!("{device}/net/{name}");
        std::fs::create_dir_all(self.root().join("sys").join(&interface)).expect("device");
        std::fs::create_dir_all(self.root().join("sys/class/net")).expect("class/net");
        std::os::unix::fs::symlink(
            format!("../../{interface}"),
            self.root().join(format!("sys/class/net/{name}")),
        )
        .expect("class symlink");
        self.write(&format!("sys/class/net/{name}/address"), format!("{mac}\n"));
        std::os::unix::fs::symlink(
            format!("../../../{leaf}"),
            self.root().join(format!("sys/{interface}/device")),
        )
        .expect("device symlink");
    }

    fn provisioner(&self) -> Provisioner<'_> {
        Provisioner {
            root: self.root().to_owned(),
            profiles_dir: self.profiles.clone(),
            mounter: &self.mounter,
            clock: &self.clock,
        }
    }

    fn attempt(&self) -> Attempt {
        self.provisioner().attempt().expect("attempt")
    }

    fn run(&self, wait: bool, host: &RecordingHost, notifier: &RecordingNotifier) -> u8 {
        let ports = Ports {
            console: host,
            terminal: host,
            networkd: host,
            notifier,
            pause: host,
        };
        let options = Options {
            wait,
            poll: std::time::Duration::from_secs(5),
        };
        run(&self.provisioner(), options, &ports).expect("run")
    }

    fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.root().join(relative)).expect(relative)
    }

    /// Every file under `etc/` and `var/` with its content.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.root().join("etc"), &mut out);
        walk(&self.root().join("var"), &mut out);
        out
    }
}

fn provisioned(attempt: Attempt) -> Provisioned {
    match attempt {
        Attempt::Done(done) => done,
        other => panic!("expected provisioned, got {other:?}"),
    }
}

fn waiting(attempt: Attempt) -> Waiting {
    match attempt {
        Attempt::Waiting(reason) => reason,
        other => panic!("expected waiting, got {other:?}"),
    }
}

fn invalid_key(attempt: Attempt) -> (SourceKind, String, String) {
    match waiting(attempt) {
        Waiting::Invalid(SiteError::Invalid {
            origin,
            key,
            reason,
        }) => (origin, key, reason),
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn kernel_command_line_settings_provision_the_whole_node() {
    let node = Node::qemu();
    node.write("proc/cmdline", cmdline("factory-7"));
    node.write("dev/watchdog0", "");
    let host = RecordingHost::default();
    let notifier = RecordingNotifier::default();

    assert_eq!(node.run(true, &host, &notifier), 0);

    let line = "SCS Edge: provisioned site factory-7 with hardware profile qemu-q35 (from kernel command line)";
    assert!(
        host.events().contains(&format!("out: {line}")),
        "{:?}",
        host.events()
    );
    assert!(host.events().contains(&format!("console: {line}")));
    assert!(host.events().contains(&"reload".to_owned()));
    assert_eq!(
        notifier.sent(),
        vec!["READY=1".to_owned(), format!("STATUS={line}")]
    );

    let site = node.read(SITE_TOML);
    assert!(site.contains("name = \"factory-7\""), "{site}");
    let mode = std::fs::metadata(node.root().join(SITE_TOML))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The join token gets a file of its own, readable by root only, holding nothing but the token.
    assert_eq!(node.read(JOIN_TOKEN), format!("{TOKEN}\n"));
    let mode = std::fs::metadata(node.root().join(JOIN_TOKEN))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        !node.read(AGENT_TOML).contains(TOKEN),
        "agent.toml is world-readable: it must not carry the join token"
    );
    let network = node.read(MANAGEMENT_NETWORK);
    assert!(
        network.contains("MACAddress=52:54:00:12:34:01"),
        "{network}"
    );
    assert!(network.contains("DHCP=yes"), "{network}");
    let provider = node.read(PROVIDER_NETWORK);
    assert!(
        provider.contains("MACAddress=52:54:00:12:34:02"),
        "{provider}"
    );
    let watchdog = node.read(WATCHDOG_DROPIN);
    assert!(watchdog.contains("RuntimeWatchdogSec=30s"), "{watchdog}");
    assert!(
        watchdog.contains("WatchdogDevice=/dev/watchdog0"),
        "{watchdog}"
    );
    // ttyS0 already has a getty: no wants-symlink.
    assert!(!node.root().join(layout::GETTY_WANTS).exists());

    let stamp: layout::Stamp = serde_json::from_str(&node.read(STAMP)).expect("stamp");
    assert_eq!(stamp.site, "factory-7");
    assert_eq!(stamp.profile, "qemu-q35");
    assert_eq!(stamp.source, "cmdline");
    assert_eq!(stamp.provisioned_at, "2026-03-01T10:00:00Z");
    assert!(
        !node.read(STAMP).contains(TOKEN),
        "the stamp must not carry the join token"
    );
}

#[test]
fn rendered_agent_toml_parses_with_agent_config_and_carries_the_layout() {
    let node = Node::qemu();
    node.write("proc/cmdline", cmdline("factory-7"));
    provisioned(node.attempt());
    let config = AgentConfig::parse(&node.read(AGENT_TOML), Path::new("agent.toml"))
        .expect("valid agent.toml");
    assert!(
        config.node.id.is_empty(),
        "the node keeps its own generated id"
    );
    assert_eq!(config.network.site_id, "factory-7");
    assert_eq!(config.api.public_url, None);
    assert!(config.network.enabled);
    let physnet = &config.network.physical_networks["physnet1"];
    assert_eq!(physnet.bridge, "br-ex");
    assert_eq!(physnet.uplinks, vec!["enp0s3".to_owned()]);
    assert_eq!(config.compute.reserved_host_memory_mb, 512);
    assert!(config.api.tls_names.contains(&"factory-7".to_owned()));
    // The region link: URL, site and the normalised CA pin from the site configuration, and the token
    // file provisioning wrote next to it.
    assert!(config.region.enabled());
    assert_eq!(config.region.url, "https://region.example.com");
    assert_eq!(config.region.site, "factory-7");
    assert_eq!(config.region.ca_fingerprint, FINGERPRINT);
    assert_eq!(
        config.region.join_token_file,
        Path::new("/").join(JOIN_TOKEN)
    );
    assert_eq!(
        config.region.join_token_file,
        Path::new(crate::config::DEFAULT_JOIN_TOKEN_FILE)
    );
    assert_eq!(
        config.region.heartbeat_interval_secs,
        crate::config::RegionConfig::default().heartbeat_interval_secs
    );
}

#[test]
fn api_url_from_the_site_configuration_becomes_the_catalog_url() {
    let node = Node::qemu();
    node.write(
        "proc/cmdline",
        format!(
            "{} scs_edge.api_url=https://10.77.3.2:8443",
            cmdline("factory-7")
        ),
    );
    provisioned(node.attempt());
    let config = AgentConfig::parse(&node.read(AGENT_TOML), Path::new("agent.toml"))
        .expect("valid agent.toml");
    assert_eq!(
        config.api.public_url.as_deref(),
        Some("https://10.77.3.2:8443")
    );
    // Clients reach it there (a port forward): the certificate names that address too.
    assert!(
        config.api.tls_names.iter().any(|name| name == "10.77.3.2"),
        "{:?}",
        config.api.tls_names
    );

    let refused = Node::qemu();
    refused.write(
        "proc/cmdline",
        format!(
            "{} scs_edge.api_url=http://127.0.0.1:8443",
            cmdline("factory-7")
        ),
    );
    let (_, key, reason) = invalid_key(refused.attempt());
    assert_eq!(key, "scs_edge.api_url");
    assert!(reason.contains("https://"), "{reason}");
    assert!(!refused.root().join(AGENT_TOML).exists());
}

#[test]
fn static_management_address_from_site_toml_is_rendered_for_networkd() {
    let node = Node::qemu();
    let text = format!(
        "{}[management]\naddress = \"10.0.0.5/24\"\ngateway = \"10.0.0.1\"\ndns = [\"10.0.0.53\"]\n",
        site_toml("factory-7")
    );
    node.write(sources::FW_CFG, text);
    provisioned(node.attempt());
    let network = node.read(MANAGEMENT_NETWORK);
    assert!(
        network.contains("Address=10.0.0.5/24\nGateway=10.0.0.1\nDNS=10.0.0.53\n"),
        "{network}"
    );
    assert!(!network.contains("DHCP=yes"));
    let config =
        AgentConfig::parse(&node.read(AGENT_TOML), Path::new("agent.toml")).expect("valid");
    assert!(config.api.tls_names.contains(&"10.0.0.5".to_owned()));
}

#[test]
fn base64_site_config_on_the_kernel_command_line_is_used() {
    let node = Node::qemu();
    let encoded = base64::engine::general_purpose::STANDARD.encode(site_toml("branch-3"));
    node.write(
        "proc/cmdline",
        format!("ro quiet scs_edge.site_config={encoded}\n"),
    );
    let done = provisioned(node.attempt());
    assert_eq!(
        (done.site.as_str(), done.source),
        ("branch-3", SourceKind::Cmdline)
    );
}

#[test]
fn base64_site_config_cannot_be_combined_with_single_settings() {
    let node = Node::qemu();
    let encoded = base64::engine::general_purpose::STANDARD.encode(site_toml("branch-3"));
    node.write(
        "proc/cmdline",
        format!("scs_edge.site_config={encoded} scs_edge.site=other\n"),
    );
    let (_, key, reason) = invalid_key(node.attempt());
    assert_eq!(key, "scs_edge.site");
    assert!(reason.contains("cannot be combined"), "{reason}");
}

#[test]
fn fw_cfg_site_toml_is_used() {
    let node = Node::qemu();
    node.write(sources::FW_CFG, site_toml("lab-1"));
    let done = provisioned(node.attempt());
    assert_eq!(
        (done.site.as_str(), done.source),
        ("lab-1", SourceKind::FwCfg)
    );
}

#[test]
fn smbios_oem_strings_are_used_and_foreign_strings_ignored() {
    let node = Node::qemu();
    node.write(
        "sys/firmware/dmi/entries/11-0/raw",
        smbios_type11(&[
            "io.systemd.credential:foo=bar",
            "scs-edge:site=lab-2",
            "scs-edge:region_url=https://region.example.com",
        ]),
    );
    node.write(
        "sys/firmware/dmi/entries/11-1/raw",
        smbios_type11(&[
            &format!("scs-edge:join_token={TOKEN}"),
            &format!("scs-edge:ca_fingerprint={FINGERPRINT}"),
            "vendor specific",
        ]),
    );
    // Another structure type must not be read as OEM strings.
    node.write(
        "sys/firmware/dmi/entries/1-0/raw",
        smbios_type11(&["scs-edge:site=wrong"]),
    );
    let done = provisioned(node.attempt());
    assert_eq!(
        (done.site.as_str(), done.source),
        ("lab-2", SourceKind::Smbios)
    );
}

#[test]
fn smbios_structure_parser_reads_strings_after_the_formatted_area() {
    assert_eq!(
        sources::smbios_strings(&smbios_type11(&["a=1", "b"])).expect("parse"),
        vec!["a=1".to_owned(), "b".to_owned()]
    );
    assert_eq!(
        sources::smbios_strings(&[11, 5, 0, 0, 0, 0, 0]).expect("empty"),
        Vec::<String>::new()
    );
    assert!(sources::smbios_strings(&[11, 9, 0]).is_err());
}

#[test]
fn scsedge_label_is_mounted_read_only_read_and_unmounted() {
    let node = Node::qemu();
    node.write(sources::LABEL_DEVICE, "");
    node.write("medium/site.toml", site_toml("usb-site"));
    let done = provisioned(node.attempt());
    assert_eq!(
        (done.site.as_str(), done.source),
        ("usb-site", SourceKind::Label)
    );
    let log = node.mounter.log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[0].starts_with("mount "), "{log:?}");
    assert!(log[1].starts_with("umount "), "{log:?}");
    let leftovers: Vec<_> = std::fs::read_dir(node.root().join("run"))
        .expect("run")
        .collect();
    assert!(leftovers.is_empty(), "mount point not removed");
}

#[test]
fn scsedge_label_without_site_toml_is_invalid_not_ignored() {
    let node = Node::qemu();
    node.write(sources::LABEL_DEVICE, "");
    std::fs::create_dir_all(node.root().join("medium")).expect("medium");
    let (origin, key, _) = invalid_key(node.attempt());
    assert_eq!((origin, key.as_str()), (SourceKind::Label, "site.toml"));
}

#[test]
fn sources_are_tried_in_order_cmdline_fw_cfg_smbios_label() {
    let node = Node::qemu();
    node.write("proc/cmdline", cmdline("from-cmdline"));
    node.write(sources::FW_CFG, site_toml("from-fwcfg"));
    node.write(
        "sys/firmware/dmi/entries/11-0/raw",
        smbios_type11(&[
            "scs-edge:site=from-smbios",
            "scs-edge:region_url=https://region.example.com",
            &format!("scs-edge:join_token={TOKEN}"),
            &format!("scs-edge:ca_fingerprint={FINGERPRINT}"),
        ]),
    );
    node.write(sources::LABEL_DEVICE, "");
    node.write("medium/site.toml", site_toml("from-label"));
    let mounter = node.mounter.log().len();
    let found = |node: &Node| {
        sources::discover(node.root(), &node.mounter)
            .expect("discover")
            .map(|f| (f.site.name, f.source))
    };
    assert_eq!(
        found(&node),
        Some(("from-cmdline".into(), SourceKind::Cmdline))
    );
    assert_eq!(
        node.mounter.log().len(),
        mounter,
        "later sources are not even looked at"
    );
    node.write("proc/cmdline", "ro quiet\n");
    assert_eq!(found(&node), Some(("from-fwcfg".into(), SourceKind::FwCfg)));
    node.remove(sources::FW_CFG);
    assert_eq!(
        found(&node),
        Some(("from-smbios".into(), SourceKind::Smbios))
    );
    node.remove("sys/firmware/dmi/entries/11-0/raw");
    assert_eq!(found(&node), Some(("from-label".into(), SourceKind::Label)));
}

#[test]
fn an_invalid_first_source_is_reported_not_skipped() {
    let node = Node::qemu();
    node.write("proc/cmdline", "scs_edge.site=only-a-name\n");
    node.write(sources::FW_CFG, site_toml("valid-but-second"));
    let (origin, key, reason) = invalid_key(node.attempt());
    assert_eq!(
        (origin, key.as_str()),
        (SourceKind::Cmdline, "scs_edge.region_url")
    );
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn every_invalid_input_class_names_source_and_key_and_writes_nothing() {
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("bad name", site_toml("Factory_7"), "site.name", "DNS label"),
        (
            "name too long",
            site_toml(&"a".repeat(64)),
            "site.name",
            "DNS label",
        ),
        (
            "http url",
            site_toml("f").replace("https://region", "http://region"),
            "site.region_url",
            "https://",
        ),
        (
            "short fingerprint",
            site_toml("f").replace(FINGERPRINT, "sha256:abcd"),
            "site.ca_fingerprint",
            "64 hex",
        ),
        (
            "md5 fingerprint",
            site_toml("f").replace("sha256:", "md5:"),
            "site.ca_fingerprint",
            "sha256:",
        ),
        (
            "unknown key",
            format!("{}colour = \"red\"\n", site_toml("f")),
            "site",
            "unknown field `colour`",
        ),
        (
            "unknown table",
            format!("{}[extras]\nx = 1\n", site_toml("f")),
            "extras",
            "unknown field `extras`",
        ),
        (
            "empty token",
            site_toml("f").replace(TOKEN, ""),
            "site.join_token",
            "1-4096",
        ),
        (
            "token with space",
            site_toml("f").replace(TOKEN, "a b"),
            "site.join_token",
            "printable",
        ),
        (
            "gateway without address",
            format!("{}[management]\ngateway = \"10.0.0.1\"\n", site_toml("f")),
            "management.gateway",
            "static",
        ),
        (
            "gateway outside network",
            format!(
                "{}[management]\naddress = \"10.0.0.5/24\"\ngateway = \"10.9.0.1\"\n",
                site_toml("f")
            ),
            "management.gateway",
            "not inside",
        ),
        ("not toml", "[site\nname=".into(), "(line 1)", ""),
    ];
    for (what, text, key, reason_part) in cases {
        let node = Node::qemu();
        node.write(sources::FW_CFG, &text);
        let before = node.snapshot();
        let (origin, got_key, reason) = invalid_key(node.attempt());
        assert_eq!(origin, SourceKind::FwCfg, "{what}");
        assert!(
            got_key.starts_with(key),
            "{what}: key {got_key:?}, want {key:?}"
        );
        assert!(reason.contains(reason_part), "{what}: {reason}");
        assert!(!reason.contains(TOKEN), "{what}: the token leaked");
        assert_eq!(node.snapshot(), before, "{what}: something was written");
    }
}

#[test]
fn partial_and_unknown_kernel_command_line_settings_are_invalid() {
    let node = Node::qemu();
    node.write(
        "proc/cmdline",
        format!(
            "scs_edge.site=f scs_edge.region_url=https://r.example scs_edge.join_token={TOKEN}\n"
        ),
    );
    let (_, key, _) = invalid_key(node.attempt());
    assert_eq!(key, "scs_edge.ca_fingerprint");
    node.write(
        "proc/cmdline",
        format!("{} scs_edge.colour=red", cmdline("f").trim()),
    );
    let (_, key, reason) = invalid_key(node.attempt());
    assert_eq!(key, "scs_edge.colour");
    assert!(reason.contains("unknown setting"), "{reason}");
    node.write(
        "proc/cmdline",
        format!("{} scs_edge.site=g", cmdline("f").trim()),
    );
    let (_, key, reason) = invalid_key(node.attempt());
    assert_eq!(
        (key.as_str(), reason.as_str()),
        ("scs_edge.site", "given more than once")
    );
}

#[test]
fn invalid_configuration_without_wait_exits_4_with_headline_on_stderr() {
    let node = Node::qemu();
    node.write("proc/cmdline", cmdline("f").replace("https://", "http://"));
    let host = RecordingHost::default();
    assert_eq!(
        node.run(false, &host, &RecordingNotifier::default()),
        EXIT_INVALID
    );
    let events = host.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let message = events[0].strip_prefix("err: ").expect("stderr");
    let mut lines = message.lines();
    assert_eq!(lines.next(), Some(HEADLINE_INVALID));
    assert_eq!(lines.next(), Some("source:  kernel command line"));
    assert_eq!(lines.next(), Some("key:     scs_edge.region_url"));
}

#[test]
fn no_configuration_writes_nothing_and_exits_3_naming_every_source() {
    let node = Node::qemu();
    node.write("proc/cmdline", "BOOT_IMAGE=/vmlinuz ro quiet\n");
    let before = node.snapshot();
    let host = RecordingHost::default();
    assert_eq!(
        node.run(false, &host, &RecordingNotifier::default()),
        EXIT_NO_CONFIG
    );
    assert_eq!(node.snapshot(), before);
    let events = host.events();
    let message = events[0].strip_prefix("err: ").expect("stderr");
    assert!(
        message.starts_with(&format!("{HEADLINE_NO_CONFIG}\n")),
        "{message}"
    );
    for needle in [
        "proc/cmdline",
        "scs_edge.site=",
        "scs_edge.site_config=",
        "qemu_fw_cfg/by_name/opt/org.scs-edge/site.toml/raw",
        "dmi/entries/11-*/raw",
        "scs-edge:ca_fingerprint=",
        "dev/disk/by-label/SCSEDGE",
    ] {
        assert!(message.contains(needle), "missing {needle}: {message}");
    }
}

#[test]
fn waiting_prints_once_per_reason_then_provisions_when_the_stick_arrives() {
    let node = Node::qemu();
    let host = RecordingHost::default();
    let notifier = RecordingNotifier::default();
    let root = node.root().to_owned();
    // Poll 1 and 2: nothing. Then an invalid stick, twice. Then a valid one.
    host.on_pause(|| {});
    let r = root.clone();
    host.on_pause(move || {
        std::fs::write(r.join(sources::LABEL_DEVICE), "").expect("device");
    });
    host.on_pause(|| {});
    let r = root.clone();
    host.on_pause(move || {
        std::fs::write(r.join("medium/site.toml"), site_toml("late-site")).expect("stick");
    });
    std::fs::create_dir_all(root.join("dev/disk/by-label")).expect("dev");
    node.write(
        "medium/site.toml",
        site_toml("late-site").replace("https", "ftp"),
    );

    assert_eq!(node.run(true, &host, &notifier), 0);

    let events = host.events();
    let shown: Vec<&String> = events.iter().filter(|e| e.starts_with("out: ")).collect();
    assert_eq!(
        shown.len(),
        3,
        "one message per reason, then success: {events:?}"
    );
    assert!(shown[0].starts_with(&format!("out: {HEADLINE_NO_CONFIG}\n")));
    assert!(shown[0].ends_with("Checking again every 5 s."));
    assert!(shown[1].starts_with(&format!("out: {HEADLINE_INVALID}\n")));
    assert!(shown[2].starts_with("out: SCS Edge: provisioned site late-site with hardware profile qemu-q35 (from SCSEDGE filesystem)"));
    assert_eq!(
        events.iter().filter(|e| e.starts_with("pause 5")).count(),
        4
    );
    assert_eq!(
        events.iter().filter(|e| e.starts_with("console: ")).count(),
        3
    );
    let sent = notifier.sent();
    assert!(
        sent[0].starts_with("STATUS=waiting for site configuration: none on"),
        "{sent:?}"
    );
    assert!(
        sent[1].starts_with(
            "STATUS=site configuration invalid: SCSEDGE filesystem: key `site.region_url`"
        ),
        "{sent:?}"
    );
    assert_eq!(sent[2], "READY=1");
}

fn profile_file(name: &str, rules: &str) -> String {
    format!(
        "[profile]\nname = \"{name}\"\ndescription = \"test\"\n\n[match]\n{rules}\n\n[[nic]]\nrole = \"management\"\nname = \"en*\"\n"
    )
}

fn profiles_dir(files: &[(&str, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(format!("{name}.toml")), text).expect("profile");
    }
    dir
}

fn load(dir: &tempfile::TempDir) -> Vec<HardwareProfile> {
    profile::load_dir(dir.path()).expect("profiles")
}

fn dmi(vendor: &str, product: &str) -> hardware::Dmi {
    hardware::Dmi {
        sys_vendor: vendor.into(),
        product_name: product.into(),
        ..hardware::Dmi::default()
    }
}

#[test]
fn most_specific_profile_wins_exact_over_glob() {
    let dir = profiles_dir(&[
        (
            "dell-any",
            profile_file(
                "dell-any",
                "sys_vendor = \"Dell Inc.\"\nproduct_name = \"PowerEdge *\"",
            ),
        ),
        (
            "dell-xr11",
            profile_file(
                "dell-xr11",
                "sys_vendor = \"Dell Inc.\"\nproduct_name = \"PowerEdge XR11\"",
            ),
        ),
        (
            "dell-xr",
            profile_file(
                "dell-xr",
                "sys_vendor = \"Dell Inc.\"\nproduct_name = \"PowerEdge XR*\"",
            ),
        ),
    ]);
    let profiles = load(&dir);
    let pick = |product: &str| {
        profile::select(&profiles, &dmi("Dell Inc.", product), None).map(|p| p.profile.name.clone())
    };
    assert_eq!(pick("PowerEdge XR11"), Ok("dell-xr11".into()));
    assert_eq!(pick("PowerEdge XR12"), Ok("dell-xr".into()));
    assert_eq!(pick("PowerEdge R650"), Ok("dell-any".into()));
    assert_eq!(
        profile::select(&profiles, &dmi("HPE", "DL20"), None),
        Err(SelectError::NoMatch)
    );
}

#[test]
fn equally_specific_matches_are_an_error_naming_both() {
    let dir = profiles_dir(&[
        ("one", profile_file("one", "sys_vendor = \"QEMU\"")),
        (
            "two",
            profile_file("two", "product_name = \"Standard PC (Q35 + ICH9, 2009)\""),
        ),
    ]);
    let profiles = load(&dir);
    let err = profile::select(
        &profiles,
        &dmi("QEMU", "Standard PC (Q35 + ICH9, 2009)"),
        None,
    )
    .expect_err("tie");
    assert_eq!(
        err,
        SelectError::Tie {
            first: "one".into(),
            second: "two".into()
        }
    );
    assert!(err.to_string().contains("one and two"), "{err}");
}

#[test]
fn unknown_hardware_waits_with_the_dmi_data_and_the_profiles_it_tried() {
    let node = Node::bare();
    node.dmi("ACME", "Box 9000", "", "");
    node.nic("eno1", "aa:bb:cc:00:00:01", "0000:01:00.0", false);
    node.write("proc/cmdline", cmdline("f"));
    let before = node.snapshot();
    let host = RecordingHost::default();
    assert_eq!(
        node.run(false, &host, &RecordingNotifier::default()),
        EXIT_INVALID
    );
    assert_eq!(node.snapshot(), before);
    let message = host.events()[0].clone();
    assert!(
        message.starts_with(&format!("err: {HEADLINE_NO_PROFILE}\n")),
        "{message}"
    );
    assert!(message.contains("sys_vendor=\"ACME\""), "{message}");
    assert!(
        message.contains("qemu-q35: sys_vendor=\"QEMU\""),
        "{message}"
    );
    assert!(
        message.contains("generic-x86_64: (no [match] rules"),
        "{message}"
    );
}

#[test]
fn a_forced_generic_profile_provisions_unknown_hardware_management_only() {
    let node = Node::bare();
    node.dmi("ACME", "Box 9000", "", "");
    node.nic("eno2", "aa:bb:cc:00:00:02", "0000:02:00.0", false);
    node.nic("eno1", "aa:bb:cc:00:00:01", "0000:01:00.0", false);
    node.write(
        "proc/cmdline",
        format!(
            "{} scs_edge.hardware_profile=generic-x86_64",
            cmdline("f").trim()
        ),
    );
    let done = provisioned(node.attempt());
    assert_eq!(done.profile, "generic-x86_64");
    assert!(
        node.read(MANAGEMENT_NETWORK)
            .contains("MACAddress=aa:bb:cc:00:00:01")
    );
    assert!(!node.root().join(PROVIDER_NETWORK).exists());
    let config =
        AgentConfig::parse(&node.read(AGENT_TOML), Path::new("agent.toml")).expect("valid");
    assert!(config.network.physical_networks.is_empty());
}

#[test]
fn a_missing_profile_nic_waits_and_lists_the_interfaces_present() {
    let node = Node::bare();
    node.dmi("QEMU", "Standard PC (Q35 + ICH9, 2009)", "", "");
    node.nic("enp0s2", "52:54:00:12:34:01", "0000:00:02.0", true);
    node.write("proc/cmdline", cmdline("f"));
    let reason = waiting(node.attempt());
    let message = reason.message(node.root(), &node.profiles);
    assert!(message.starts_with(HEADLINE_NO_PROFILE), "{message}");
    assert!(
        message.contains("nic[1] (provider NIC, pci_path 0000:00:03.0): no such interface"),
        "{message}"
    );
    assert!(
        message.contains("enp0s2 (mac 52:54:00:12:34:01, pci 0000:00:02.0)"),
        "{message}"
    );
    assert_eq!(reason.exit_code(), EXIT_INVALID);
}

#[test]
fn a_required_tpm_that_is_missing_waits() {
    let node = Node::bare();
    node.dmi("Lenovo", "ThinkEdge SE350 -[7Z46CTO1WW]-", "", "");
    node.nic("eno1", "aa:bb:cc:00:00:01", "0000:01:00.0", false);
    node.nic("eno3", "aa:bb:cc:00:00:03", "0000:02:00.0", false);
    node.write("proc/cmdline", cmdline("f"));
    let message = waiting(node.attempt()).message(node.root(), &node.profiles);
    assert!(message.contains("a TPM is required"), "{message}");
    std::fs::create_dir_all(node.root().join("sys/class/tpm/tpm0")).expect("tpm");
    assert_eq!(
        provisioned(node.attempt()).profile,
        "lenovo-thinkedge-se350"
    );
}

#[test]
fn a_console_other_than_ttys0_gets_a_serial_getty() {
    let node = Node::bare();
    node.dmi("Dell Inc.", "PowerEdge XR11", "", "");
    node.nic("eno1", "aa:bb:cc:00:00:01", "0000:01:00.0", false);
    node.nic("eno2", "aa:bb:cc:00:00:02", "0000:01:00.1", false);
    node.write("proc/cmdline", cmdline("f"));
    provisioned(node.attempt());
    let link = node
        .root()
        .join(layout::GETTY_WANTS)
        .join("serial-getty@ttyS1.service");
    assert_eq!(
        std::fs::read_link(link).expect("symlink"),
        PathBuf::from("/usr/lib/systemd/system/serial-getty@.service")
    );
    // No /dev/watchdog0 on this fake machine, and the profile does not require one.
    assert!(!node.root().join(WATCHDOG_DROPIN).exists());
}

#[test]
fn re_running_with_the_same_inputs_writes_nothing() {
    let node = Node::qemu();
    node.write("proc/cmdline", cmdline("factory-7"));
    let first = provisioned(node.attempt());
    assert!(first.written.contains(&STAMP.to_owned()));
    assert_eq!(
        first.written.last(),
        Some(&STAMP.to_owned()),
        "the stamp is written last"
    );
    let before = node.snapshot();
    node.clock.advance(jiff::SignedDuration::from_hours(1));
    let host = RecordingHost::default();
    assert_eq!(node.run(true, &host, &RecordingNotifier::default()), 0);
    assert_eq!(node.snapshot(), before, "stamp and files untouched");
    assert!(!host.events().contains(&"reload".to_owned()));
    assert!(
        host.events()[0].contains("nothing written"),
        "{:?}",
        host.events()
    );
    // The agent deletes the join token once it joined: a later boot with the same inputs does not
    // bring the used token back.
    node.remove(JOIN_TOKEN);
    let before = node.snapshot();
    assert_eq!(
        node.run(
            true,
            &RecordingHost::default(),
            &RecordingNotifier::default()
        ),
        0
    );
    assert_eq!(node.snapshot(), before);
    assert!(!node.root().join(JOIN_TOKEN).exists());
}

#[test]
fn changed_inputs_re_provision_and_remove_files_no_longer_rendered() {
    let node = Node::qemu();
    node.write("proc/cmdline", cmdline("factory-7"));
    node.write("dev/watchdog0", "");
    provisioned(node.attempt());
    assert!(node.root().join(WATCHDOG_DROPIN).exists());
    node.remove("dev/watchdog0");
    node.write("proc/cmdline", cmdline("factory-8"));
    let done = provisioned(node.attempt());
    assert_eq!(done.site, "factory-8");
    assert!(node.read(SITE_TOML).contains("factory-8"));
    assert!(
        !node.root().join(WATCHDOG_DROPIN).exists(),
        "stale drop-in removed"
    );
}

#[test]
fn a_provisioned_node_keeps_its_layout_when_the_sources_go_away_or_break() {
    let node = Node::qemu();
    node.write("proc/cmdline", cmdline("factory-7"));
    provisioned(node.attempt());
    let before = node.snapshot();
    node.write("proc/cmdline", "ro quiet\n");
    let host = RecordingHost::default();
    let notifier = RecordingNotifier::default();
    assert_eq!(node.run(true, &host, &notifier), 0);
    assert_eq!(node.snapshot(), before);
    assert_eq!(notifier.sent()[0], "READY=1");
    node.write("proc/cmdline", "scs_edge.site=broken\n");
    let host = RecordingHost::default();
    assert_eq!(node.run(true, &host, &RecordingNotifier::default()), 0);
    assert_eq!(node.snapshot(), before);
    assert!(
        host.events()[0].starts_with(&format!("err: {HEADLINE_INVALID}")),
        "{:?}",
        host.events()
    );
}

#[test]
fn kernel_command_line_quoting_is_handled_like_the_kernel() {
    assert_eq!(
        sources::cmdline_params("a=1  \"b=two words\" c=\"x y\"\n"),
        vec![
            "a=1".to_owned(),
            "b=two words".to_owned(),
            "c=x y".to_owned()
        ]
    );
}

#[test]
fn glob_matches_stars_anywhere_and_nothing_else() {
    for (pattern, text, expected) in [
        ("ThinkEdge SE350*", "ThinkEdge SE350 -[7Z46CTO1WW]-", true),
        ("ThinkEdge SE350*", "ThinkEdge SE360", false),
        ("X11SDV-*-TP8F", "X11SDV-8C-TP8F", true),
        ("X11SDV-*-TP8F", "X11SDV-8C-TP8F-01", false),
        ("*", "", true),
        ("a*b*c", "abc", true),
        ("a*b*c", "acb", false),
        ("en*", "eno1", true),
        ("PowerEdge XR11", "PowerEdge XR11", true),
        ("PowerEdge XR11", "PowerEdge XR1", false),
    ] {
        assert_eq!(
            profile::glob_match(pattern, text),
            expected,
            "{pattern} vs {text}"
        );
    }
}

#[test]
fn every_shipped_hardware_profile_loads_and_validates() {
    let dir = shipped_profiles();
    let profiles = profile::load_dir(&dir).expect("every profile in hardware-profiles/ is valid");
    let names: Vec<&str> = profiles.iter().map(|p| p.profile.name.as_str()).collect();
    for expected in [
        "qemu-q35",
        "lenovo-thinkedge-se350",
        "dell-poweredge-xr11",
        "supermicro-sys-e300-9d",
        "generic-x86_64",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    // No two shipped profiles may tie on any machine that one of them names exactly.
    for profile in &profiles {
        let rules = &profile.rules;
        let exact = |rule: &Option<String>| {
            rule.clone()
                .filter(|r| !r.contains('*'))
                .unwrap_or_default()
        };
        let machine = hardware::Dmi {
            sys_vendor: exact(&rules.sys_vendor),
            product_name: exact(&rules.product_name),
            product_sku: exact(&rules.product_sku),
            board_vendor: exact(&rules.board_vendor),
            board_name: exact(&rules.board_name),
        };
        if let Err(SelectError::Tie { first, second }) = profile::select(&profiles, &machine, None)
        {
            panic!("shipped profiles {first} and {second} tie");
        }
    }
}

#[test]
fn profile_schema_rejects_unknown_keys_and_inconsistent_layouts() {
    let path = Path::new("/x/p.toml");
    let base = profile_file("p", "sys_vendor = \"X\"");
    let cases = [
        (
            format!("{base}colour = 1\n"),
            "nic[0].colour",
            "unknown field `colour`",
        ),
        (
            base.replace("role = \"management\"", "role = \"provider\""),
            "nic",
            "exactly one",
        ),
        (
            base.replace("name = \"en*\"", "pci_path = \"00:02.0\""),
            "nic[0].pci_path",
            "PCI address",
        ),
        (
            format!("{base}pci_path = \"0000:00:02.0\"\n"),
            "nic[0]",
            "exactly one of",
        ),
        (
            base.replace("name = \"p\"", "name = \"q\""),
            "profile.name",
            "file name",
        ),
        (
            format!("{base}[console]\nserial = \"ttyS1\"\nbaud = 1200\n"),
            "console.baud",
            "one of",
        ),
        (
            format!("{base}[tpm]\npolicy = \"maybe\"\n"),
            "tpm.policy",
            "unknown variant",
        ),
        (
            format!("{base}[[disk]]\nrole = \"system\"\nuse = \"data-partition\"\n"),
            "disk[0].use",
            "vm-storage",
        ),
        (
            format!("{base}[[nic]]\nrole = \"provider\"\nname = \"eno2\"\nbridge = \"br-int\"\n"),
            "nic[1].bridge",
            "br-int",
        ),
    ];
    for (text, key, reason) in cases {
        match HardwareProfile::parse(&text, path) {
            Err(
                profile::ProfileError::Parse {
                    key: k, reason: r, ..
                }
                | profile::ProfileError::Invalid {
                    key: k, reason: r, ..
                },
            ) => {
                assert_eq!(k, key, "{text}");
                assert!(r.contains(reason), "{text}: {r}");
            }
            other => panic!("{text}: expected an error, got {other:?}"),
        }
    }
}

#[test]
fn a_broken_profile_directory_waits_rather_than_guessing() {
    let node = Node::qemu();
    let dir = profiles_dir(&[("bad", "[profile]\nname = \"bad\"\n".into())]);
    let node = Node {
        profiles: dir.path().to_owned(),
        ..node
    };
    node.write("proc/cmdline", cmdline("f"));
    let reason = waiting(node.attempt());
    assert!(matches!(reason, Waiting::Profiles(_)), "{reason:?}");
    assert_eq!(reason.headline(), HEADLINE_NO_PROFILE);
}
