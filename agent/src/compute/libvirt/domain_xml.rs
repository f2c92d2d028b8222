//! Domain XML for a server, and the agent's metadata element inside it.
//!
//! q35, virtio disk and NICs, a virtio-rng fed from the host's `/dev/urandom` (SCS entropy standard,
//! scs-0101), the serial console logged by virtlogd to a file (the console-output API reads it), and the
//! owner element that lets the agent tell its domains from anyone else's.

use crate::compute::hypervisor::{DomainSpec, NicAttachment, VirtType};
use quick_xml::escape::escape;
use std::fmt::Write as _;

/// XML namespace of the agent's metadata element.
pub const METADATA_NS: &str = "https://scs.community/ns/edge-agent/1";

/// The owner element as the agent reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Node id.
    pub node: String,
    /// Digest of the spec the domain was defined from.
    pub digest: String,
}

fn path_text(path: &std::path::Path) -> String {
    escape(&*path.to_string_lossy()).into_owned()
}

/// Renders the domain XML.
pub fn render(spec: &DomainSpec) -> String {
    let virt_type = match spec.virt_type {
        VirtType::Kvm => "kvm",
        VirtType::Qemu => "qemu",
    };
    // Under KVM the host CPU is passed through; under TCG the baseline x86-64 model keeps emulation cheap.
    let cpu = match spec.virt_type {
        VirtType::Kvm => "<cpu mode='host-passthrough' check='none' migratable='on'/>",
        VirtType::Qemu => {
            "<cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model></cpu>"
        }
    };
    let mut nics = String::new();
    for nic in &spec.nics {
        let mac = escape(nic.mac.as_str());
        match &nic.attachment {
            // NICs on networks are plugged into the integration bridge by the agent once libvirt
            // made the tap (see network::chassis): libvirt's own `virtualport` would need ovs-vsctl on
            // the default database path.
            NicAttachment::Tap { dev } | NicAttachment::Ovs { dev, .. } => {
                let _ = write!(
                    nics,
                    "\n    <interface type='ethernet'>\n      <mac address='{mac}'/>\n      <target dev='{}' managed='yes'/>\n      <model type='virtio'/>\n    </interface>",
                    escape(dev.as_str())
                );
            }
        }
    }
    format!(
        "<domain type='{virt_type}'>
  <name>{name}</name>
  <uuid>{id}</uuid>
  <title>{title}</title>
  <metadata>
    <agent:owner xmlns:agent='{METADATA_NS}' node='{node}' digest='{digest}'/>
  </metadata>
  <memory unit='MiB'>{memory}</memory>
  <vcpu placement='static'>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='{machine}'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  {cpu}
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='{root_format}' discard='unmap'/>
      <source file='{root}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{config}'/>
      <target dev='vdb' bus='virtio'/>
      <readonly/>
      <serial>config-2</serial>
    </disk>{nics}
    <serial type='pty'>
      <log file='{console}' append='on'/>
      <target port='0'/>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
    </rng>
    <controller type='usb' model='none'/>
    <memballoon model='virtio'/>
  </devices>
</domain>
",
        name = escape(spec.domain_name().as_str()),
        id = spec.id,
        title = escape(spec.title.as_str()),
        node = escape(spec.node_id.as_str()),
        digest = spec.digest(),
        memory = spec.memory_mib,
        vcpus = spec.vcpus,
        machine = escape(spec.machine.as_str()),
        root_format = spec.root_disk_format.as_str(),
        root = path_text(&spec.root_disk),
        config = path_text(&spec.config_drive),
        console = path_text(&spec.console_log),
    )
}

/// Reads the owner element libvirt returns for our namespace; `None` if it is not ours in shape.
pub fn parse_owner(xml: &str) -> Option<Owner> {
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event().ok()? {
            quick_xml::events::Event::Empty(element) | quick_xml::events::Event::Start(element) => {
                if element.local_name().as_ref() != b"owner" {
                    return None;
                }
                let mut node = None;
                let mut digest = None;
                for attribute in element.attributes().flatten() {
                    let value = attribute.unescape_value().ok()?.into_owned();
                    match attribute.key.local_name().as_ref() {
                        b"node" => node = Some(value),
                        b"digest" => digest = Some(value),
                        _ => {}
                    }
                }
                return Some(Owner {
                    node: node?,
                    digest: digest.unwrap_or_default(),
                });
            }
            quick_xml::events::Event::Eof => return None,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::hypervisor::NicSpec;
    use crate::image::format::DiskFormat;
    use std::path::PathBuf;
    use uuid::Uuid;

    fn spec() -> DomainSpec {
        let id = Uuid::parse_str("6f1f5d3a-3b9e-4c1e-9a51-2f7d2d0c9e11").expect("uuid");
        DomainSpec {
            id,
            node_id: "edge-1".into(),
            title: "web <1> & 'friends'".into(),
            vcpus: 2,
            memory_mib: 4096,
            virt_type: VirtType::Qemu,
            machine: "q35".into(),
            root_disk: PathBuf::from(format!("/var/lib/scs-edge/servers/{id}/disk.qcow2")),
            root_disk_format: DiskFormat::Qcow2,
            config_drive: PathBuf::from(format!("/var/lib/scs-edge/servers/{id}/config-drive.img")),
            console_log: PathBuf::from(format!("/var/lib/scs-edge/servers/{id}/console.log")),
            nics: vec![
                NicSpec {
                    port_id: Uuid::parse_str("0b8f8b3e-1111-4222-8333-944455556666").expect("uuid"),
                    mac: "fa:16:3e:01:02:03".into(),
                    attachment: NicAttachment::Tap {
                        dev: "tap0b8f8b3e-11".into(),
                    },
                },
                NicSpec {
                    port_id: Uuid::parse_str("1c9f9c4f-2222-4333-8444-a55566667777").expect("uuid"),
                    mac: "fa:16:3e:04:05:06".into(),
                    attachment: NicAttachment::Ovs {
                        bridge: "br-int".into(),
                        dev: "tap1c9f9c4f-22".into(),
                    },
                },
            ],
        }
    }

    #[test]
    fn domain_xml_matches_snapshot() {
        insta::assert_snapshot!(render(&spec()));
    }

    #[test]
    fn xml_carries_the_devices_the_platform_promises() {
        let xml = render(&spec());
        for needle in [
            "<domain type='qemu'>",
            "machine='q35'",
            "<target dev='vda' bus='virtio'/>",
            "<rng model='virtio'>",
            "<log file='/var/lib/scs-edge/servers/6f1f5d3a-3b9e-4c1e-9a51-2f7d2d0c9e11/console.log' append='on'/>",
            "<target dev='tap1c9f9c4f-22' managed='yes'/>",
            "<title>web &lt;1&gt; &amp; &apos;friends&apos;</title>",
        ] {
            assert!(xml.contains(needle), "missing {needle}");
        }
    }

    #[test]
    fn kvm_domains_pass_the_host_cpu_through() {
        let mut s = spec();
        s.virt_type = VirtType::Kvm;
        let xml = render(&s);
        assert!(xml.starts_with("<domain type='kvm'>") && xml.contains("host-passthrough"));
    }

    #[test]
    fn owner_element_round_trips_as_libvirt_returns_it() {
        // libvirt hands the element back with its namespace as the default namespace.
        let returned =
            format!("<owner xmlns=\"{METADATA_NS}\" node=\"edge-1\" digest=\"abc123\"/>");
        assert_eq!(
            parse_owner(&returned),
            Some(Owner {
                node: "edge-1".into(),
                digest: "abc123".into()
            })
        );
        assert_eq!(parse_owner("<other/>"), None);
        assert_eq!(parse_owner("garbage"), None);
    }
}
