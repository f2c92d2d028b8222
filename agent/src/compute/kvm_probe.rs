//! Deciding whether guests get KVM or TCG.
//!
//! `/dev/kvm` existing proves little. Some nested setups back it with `kvm_pvm` (pagetable-based
//! virtualization), which runs only PVM-enabled guest kernels: a stock cloud image hangs in its kernel's
//! decompressor, and trivial guest code still runs fine (so running code alone is not a proof). The probe
//! therefore asks, in order: does the CPU expose hardware virtualization (`vmx`/`svm`), is the matching
//! KVM module (`kvm_intel`/`kvm_amd`) loaded, and does a real-mode vCPU execute
//! `mov al, 0x2a; out 0x10, al; hlt` within a deadline. KVM is used only if all three hold — and
//! never on a machine that QEMU itself emulates instruction by instruction (TCG, hypervisor signature
//! `TCGTCGTCGTCG`, as the lab's nodes are on hosts without KVM): TCG emulates AMD-V well enough for
//! the probe and for `kvm_amd` to load, but a real guest under it panicked the node's kernel.
#![allow(unsafe_code)] // KVM's memory-region ioctl hands the kernel a raw host pointer.

use super::hypervisor::VirtType;
use crate::config::VirtTypeSetting;
use std::time::Duration;

/// The probe's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmVerdict {
    /// Guest code ran as expected.
    Usable,
    /// Why KVM will not be used.
    Unusable(String),
}

/// Something that can tell whether KVM runs guests here.
pub trait AcceleratorProbe: Send + Sync {
    /// Runs the probe.
    fn probe(&self) -> KvmVerdict;
}

/// Runs a few instructions through `/dev/kvm`.
#[derive(Debug, Clone, Copy)]
pub struct DevKvmProbe {
    /// How long the guest may take before KVM is declared unusable.
    pub deadline: Duration,
}

impl Default for DevKvmProbe {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(3),
        }
    }
}

/// Guest-physical address of the probe code.
const CODE_ADDR: u64 = 0x1000;
/// Port and value the probe code writes.
const PROBE_PORT: u16 = 0x10;
const PROBE_VALUE: u8 = 0x2a;
/// `mov al, 0x2a; out 0x10, al; hlt`
const PROBE_CODE: [u8; 5] = [0xb0, PROBE_VALUE, 0xe6, PROBE_PORT as u8, 0xf4];

/// One page of guest memory, page-aligned, freed on drop (after the VM using it is gone).
struct GuestPage {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl GuestPage {
    fn new() -> Option<Self> {
        let layout = std::alloc::Layout::from_size_align(0x1000, 0x1000).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        (!ptr.is_null()).then_some(Self { ptr, layout })
    }
}

impl Drop for GuestPage {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed` with this layout and is freed once.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

fn run_guest() -> Result<(), String> {
    use kvm_ioctls::{Kvm, VcpuExit};
    let kvm = Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))?;
    let page = GuestPage::new().ok_or("cannot allocate guest memory")?;
    // SAFETY: `page` is a live, exclusively owned 4 KiB allocation; the code fits in it.
    unsafe { std::ptr::copy_nonoverlapping(PROBE_CODE.as_ptr(), page.ptr, PROBE_CODE.len()) };
    let vm = kvm
        .create_vm()
        .map_err(|e| format!("KVM_CREATE_VM failed: {e}"))?;
    let region = kvm_bindings::kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: CODE_ADDR,
        memory_size: 0x1000,
        userspace_addr: page.ptr as u64,
        flags: 0,
    };
    // SAFETY: the region points at `page`, which outlives `vm` (declared before it, dropped after).
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION failed: {e}"))?;
    let mut vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU failed: {e}"))?;
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS failed: {e}"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("KVM_SET_SREGS failed: {e}"))?;
    let regs = kvm_bindings::kvm_regs {
        rip: CODE_ADDR,
        rflags: 0x2,
        ..Default::default()
    };
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS failed: {e}"))?;
    let mut wrote = false;
    for _ in 0..16 {
        match vcpu.run().map_err(|e| format!("KVM_RUN failed: {e}"))? {
            VcpuExit::IoOut(PROBE_PORT, [PROBE_VALUE]) => wrote = true,
            VcpuExit::Hlt if wrote => return Ok(()),
            other => return Err(format!("guest code misbehaved under KVM: {other:?}")),
        }
    }
    Err("guest code never halted under KVM".into())
}

/// The hypervisor signature (CPUID leaf 0x4000_0000) decides first: emulated virtualization is no
/// virtualization.
pub fn hypervisor_verdict(signature: &[u8]) -> Result<(), String> {
    if signature == b"TCGTCGTCGTCG" {
        return Err(
            "this machine is emulated by QEMU TCG: its virtualization extensions cannot run guests"
                .into(),
        );
    }
    Ok(())
}

/// The hypervisor signature CPUID reports (twelve zero bytes on bare metal).
fn hypervisor_signature() -> Vec<u8> {
    let leaf = core::arch::x86_64::__cpuid(0x4000_0000);
    [leaf.ebx, leaf.ecx, leaf.edx]
        .iter()
        .flat_map(|register| register.to_le_bytes())
        .collect()
}

/// Hardware virtualization as `/proc/cpuinfo` and the loaded modules show it.
pub fn hardware_verdict(cpuinfo: &str, loaded_modules: &[String]) -> Result<(), String> {
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().collect())
        .unwrap_or_default();
    let (flag, module) = if flags.contains(&"vmx") {
        ("vmx", "kvm_intel")
    } else if flags.contains(&"svm") {
        ("svm", "kvm_amd")
    } else {
        let pvm = if loaded_modules.iter().any(|m| m == "kvm_pvm") {
            " (/dev/kvm is kvm_pvm, which runs only PVM-enabled guest kernels)"
        } else {
            ""
        };
        return Err(format!("the CPU exposes neither vmx nor svm{pvm}"));
    };
    if !loaded_modules.iter().any(|m| m == module) {
        return Err(format!("the CPU has {flag} but {module} is not loaded"));
    }
    Ok(())
}

fn loaded_modules() -> Vec<String> {
    std::fs::read_dir("/sys/module")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl AcceleratorProbe for DevKvmProbe {
    fn probe(&self) -> KvmVerdict {
        if let Err(reason) = hypervisor_verdict(&hypervisor_signature()) {
            return KvmVerdict::Unusable(reason);
        }
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        if let Err(reason) = hardware_verdict(&cpuinfo, &loaded_modules()) {
            return KvmVerdict::Unusable(reason);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        // A wedged KVM_RUN cannot be interrupted; the thread is abandoned if it never returns.
        let spawned = std::thread::Builder::new()
            .name("kvm-probe".into())
            .spawn(move || {
                let _ = tx.send(run_guest());
            });
        if let Err(err) = spawned {
            return KvmVerdict::Unusable(format!("cannot start probe thread: {err}"));
        }
        match rx.recv_timeout(self.deadline) {
            Ok(Ok(())) => KvmVerdict::Usable,
            Ok(Err(reason)) => KvmVerdict::Unusable(reason),
            Err(_) => KvmVerdict::Unusable(format!(
                "guest code did not finish within {:?}",
                self.deadline
            )),
        }
    }
}

/// Applies the `compute.virt_type` setting: explicit choices win, `auto` asks the probe.
pub fn choose_virt_type(
    setting: VirtTypeSetting,
    probe: &dyn AcceleratorProbe,
) -> (VirtType, String) {
    match setting {
        VirtTypeSetting::Kvm => (VirtType::Kvm, "configured".into()),
        VirtTypeSetting::Qemu => (VirtType::Qemu, "configured".into()),
        VirtTypeSetting::Auto => match probe.probe() {
            KvmVerdict::Usable => (VirtType::Kvm, "probe ran guest code under KVM".into()),
            KvmVerdict::Unusable(reason) => (VirtType::Qemu, reason),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(KvmVerdict);
    impl AcceleratorProbe for Fixed {
        fn probe(&self) -> KvmVerdict {
            self.0.clone()
        }
    }

    #[test]
    fn auto_follows_the_probe_and_explicit_settings_skip_it() {
        assert_eq!(
            choose_virt_type(VirtTypeSetting::Auto, &Fixed(KvmVerdict::Usable)).0,
            VirtType::Kvm
        );
        let (t, why) = choose_virt_type(
            VirtTypeSetting::Auto,
            &Fixed(KvmVerdict::Unusable("hangs".into())),
        );
        assert_eq!((t, why.as_str()), (VirtType::Qemu, "hangs"));
        assert_eq!(
            choose_virt_type(VirtTypeSetting::Qemu, &Fixed(KvmVerdict::Usable)).0,
            VirtType::Qemu
        );
        assert_eq!(
            choose_virt_type(
                VirtTypeSetting::Kvm,
                &Fixed(KvmVerdict::Unusable(String::new()))
            )
            .0,
            VirtType::Kvm
        );
    }

    fn modules(names: &[&str]) -> Vec<String> {
        names.iter().map(|&s| s.to_owned()).collect()
    }

    #[test]
    fn a_machine_emulated_by_tcg_never_runs_guests_under_kvm() {
        let refusal = hypervisor_verdict(b"TCGTCGTCGTCG").expect_err("TCG");
        assert!(refusal.contains("emulated by QEMU TCG"), "{refusal}");
        assert!(
            hypervisor_verdict(b"KVMKVMKVM\0\0\0").is_ok(),
            "nested under KVM may"
        );
        assert!(hypervisor_verdict(&[0; 12]).is_ok(), "bare metal may");
    }

    #[test]
    fn pvm_backed_dev_kvm_is_not_hardware_virtualization() {
        let cpuinfo = "processor\t: 0\nflags\t\t: fpu vme de pse hypervisor lm\n";
        let err = hardware_verdict(cpuinfo, &modules(&["kvm", "kvm_pvm"])).expect_err("pvm");
        assert!(err.contains("kvm_pvm"), "{err}");
    }

    #[test]
    fn vmx_needs_kvm_intel_loaded() {
        let cpuinfo = "flags\t\t: fpu vmx lm\n";
        assert!(
            hardware_verdict(cpuinfo, &modules(&["kvm"]))
                .expect_err("module")
                .contains("kvm_intel")
        );
        assert_eq!(
            hardware_verdict(cpuinfo, &modules(&["kvm", "kvm_intel"])),
            Ok(())
        );
        assert_eq!(
            hardware_verdict("flags : svm\n", &modules(&["kvm_amd"])),
            Ok(())
        );
    }
}
