//! What this node has to give: CPUs and memory, read from the host.
//!
//! Behind a trait so capacity checks are testable, and so the admin CLI can check capacity without a
//! libvirt connection.

use std::io;

/// Host resources relevant to placing servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostResources {
    /// Logical CPUs.
    pub cpus: u32,
    /// Physical memory in MiB.
    pub memory_mib: u64,
}

/// Reads host resources.
pub trait HostInventory: Send + Sync {
    /// CPUs and memory of this node.
    fn resources(&self) -> io::Result<HostResources>;
}

/// Reads `/proc/meminfo` and the CPU count.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcHostInventory;

impl HostInventory for ProcHostInventory {
    fn resources(&self) -> io::Result<HostResources> {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as u32;
        let meminfo = std::fs::read_to_string("/proc/meminfo")?;
        let memory_kib = parse_mem_total(&meminfo).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "no MemTotal in /proc/meminfo")
        })?;
        Ok(HostResources {
            cpus,
            memory_mib: memory_kib / 1024,
        })
    }
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        line.strip_prefix("MemTotal:")?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

/// Fixed resources for tests.
#[derive(Debug, Clone, Copy)]
pub struct FixedHostInventory(pub HostResources);

impl HostInventory for FixedHostInventory {
    fn resources(&self) -> io::Result<HostResources> {
        Ok(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_in_kib() {
        assert_eq!(
            parse_mem_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24_576_000)
        );
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn this_host_reports_something_plausible() {
        let r = ProcHostInventory.resources().expect("proc");
        assert!(r.cpus >= 1 && r.memory_mib >= 64);
    }
}
