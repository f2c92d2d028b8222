//! The SCS mandatory flavors (scs-0103-v1), seeded so a fresh site passes the flavor standards.
//!
//! The standard fixes each flavor's name, vCPUs, RAM and root disk, and the `scs:*` extra specs that
//! describe them (scs-0100 names, scs-0103 the list). Values are copied from
//! `SCS-Spec.MandatoryFlavors.verbose.yaml` of the standards repository; the table is data, not logic,
//! and a unit test pins every row. Seeding creates only what is missing and never changes a flavor an
//! operator edited — the standards tests will say so if they no longer match.

use super::flavor::NewFlavor;
use std::collections::BTreeMap;

/// One mandatory flavor: name, vCPUs, RAM MiB, disk GiB (0 = none), `scs:cpu-type`, `scs:disk0-type`.
struct Mandatory(
    &'static str,
    u32,
    u64,
    u64,
    &'static str,
    Option<&'static str>,
);

const MANDATORY: &[Mandatory] = &[
    Mandatory("SCS-1V-4", 1, 4096, 0, "shared-core", None),
    Mandatory("SCS-2V-8", 2, 8192, 0, "shared-core", None),
    Mandatory("SCS-4V-16", 4, 16384, 0, "shared-core", None),
    Mandatory("SCS-8V-32", 8, 32768, 0, "shared-core", None),
    Mandatory("SCS-1V-2", 1, 2048, 0, "shared-core", None),
    Mandatory("SCS-2V-4", 2, 4096, 0, "shared-core", None),
    Mandatory("SCS-4V-8", 4, 8192, 0, "shared-core", None),
    Mandatory("SCS-8V-16", 8, 16384, 0, "shared-core", None),
    Mandatory("SCS-16V-32", 16, 32768, 0, "shared-core", None),
    Mandatory("SCS-1V-8", 1, 8192, 0, "shared-core", None),
    Mandatory("SCS-2V-16", 2, 16384, 0, "shared-core", None),
    Mandatory("SCS-4V-32", 4, 32768, 0, "shared-core", None),
    Mandatory("SCS-1L-1", 1, 1024, 0, "crowded-core", None),
    Mandatory("SCS-2V-4-20s", 2, 4096, 20, "shared-core", Some("ssd")),
    Mandatory("SCS-4V-16-100s", 4, 16384, 100, "shared-core", Some("ssd")),
];

/// The mandatory flavors as creation requests; the flavor id is its name (stable across sites).
pub fn mandatory() -> Vec<NewFlavor> {
    MANDATORY
        .iter()
        .map(
            |&Mandatory(name, vcpus, ram_mb, disk_gb, cpu_type, disk_type)| {
                let mut extra_specs = BTreeMap::from([
                    ("scs:cpu-type".to_owned(), cpu_type.to_owned()),
                    ("scs:name-v1".to_owned(), name_v1(name)),
                    ("scs:name-v2".to_owned(), name.to_owned()),
                ]);
                if let Some(disk_type) = disk_type {
                    extra_specs.insert("scs:disk0-type".to_owned(), disk_type.to_owned());
                }
                NewFlavor {
                    id: Some(name.to_owned()),
                    name: name.to_owned(),
                    description: None,
                    vcpus,
                    ram_mb,
                    disk_gb,
                    ephemeral_gb: 0,
                    swap_mb: 0,
                    is_public: true,
                    extra_specs,
                }
            },
        )
        .collect()
}

/// The v1 name: `SCS-2V-4-20s` → `SCS-2V:4:20s` (colons instead of the dashes after the CPU part).
fn name_v1(name: &str) -> String {
    let mut parts = name.splitn(3, '-');
    let (prefix, cpu) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let rest = parts.next().unwrap_or_default().replace('-', ":");
    format!("{prefix}-{cpu}:{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_fifteen_mandatory_flavors_with_their_standard_values() {
        let flavors = mandatory();
        assert_eq!(flavors.len(), 15);
        let by_name: BTreeMap<_, _> = flavors.iter().map(|f| (f.name.as_str(), f)).collect();
        let crowded = by_name["SCS-1L-1"];
        assert_eq!(
            (crowded.vcpus, crowded.ram_mb, crowded.disk_gb),
            (1, 1024, 0)
        );
        assert_eq!(crowded.extra_specs["scs:cpu-type"], "crowded-core");
        assert_eq!(crowded.extra_specs["scs:name-v1"], "SCS-1L:1");
        let ssd = by_name["SCS-4V-16-100s"];
        assert_eq!((ssd.vcpus, ssd.ram_mb, ssd.disk_gb), (4, 16384, 100));
        assert_eq!(ssd.extra_specs["scs:disk0-type"], "ssd");
        assert_eq!(ssd.extra_specs["scs:name-v1"], "SCS-4V:16:100s");
        assert_eq!(ssd.extra_specs["scs:name-v2"], "SCS-4V-16-100s");
        for flavor in &flavors {
            flavor.validate().expect("valid flavor");
            assert_eq!(flavor.id.as_deref(), Some(flavor.name.as_str()));
            // The name encodes the sizes (scs-0100): SCS-<cpus><V|L>-<GiB RAM>[-<disk>…].
            let mut parts = flavor.name.trim_start_matches("SCS-").split('-');
            let cpu = parts.next().expect("cpu");
            assert_eq!(
                cpu[..cpu.len() - 1].parse::<u32>().expect("cpus"),
                flavor.vcpus
            );
            let ram: u64 = parts.next().expect("ram").parse().expect("ram");
            assert_eq!(ram * 1024, flavor.ram_mb);
            if let Some(disk) = parts.next() {
                assert_eq!(
                    disk.trim_end_matches('s').parse::<u64>().expect("disk"),
                    flavor.disk_gb
                );
            }
        }
    }
}
