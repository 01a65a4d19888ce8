//! The KVM backend: hardware virtualisation through /dev/kvm.
//!
//! [`KvmAccel`] opens the device, checks the API version and every capability janus relies on,
//! creates the VM and registers guest memory as slots; [`KvmVcpu`] runs a vCPU and serves its
//! exits. On hosts where /dev/kvm is the `kvm_pvm` module (no VT-x/AMD-V), only CPL3 64-bit code
//! runs natively: real-mode, 32-bit and kernel code goes through KVM's in-kernel instruction
//! emulator, which stops with KVM_EXIT_INTERNAL_ERROR on what it cannot emulate. janus then runs
//! that one instruction in its software CPU and resumes KVM (see `fallback`); with the fallback
//! off, or when the software CPU cannot run it either, the stop becomes [`crate::Exit::Failed`]
//! with the instruction and state.

mod convert;
mod debug;
mod fallback;
mod signal;
mod untrap;
mod vcpu;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kvm_bindings::{KVM_CAP_SET_GUEST_DEBUG2, KVM_GUESTDBG_BLOCKIRQ, KVM_MEM_READONLY};
use kvm_ioctls::{Cap, Kvm, VmFd};

pub use signal::signal_thread;
pub use vcpu::KvmVcpu;

use crate::memory::{GuestMemory, RegionKind};
use crate::vcpu::{AccelCaps, Accelerator, IrqLines, MsiSender, Vcpu, VcpuError};

/// The default KVM device node.
pub const DEFAULT_DEVICE: &str = "/dev/kvm";

/// Where the TSS that VT-x needs for real mode goes: three pages just below the BIOS ROM area,
/// inside the MMIO hole, as other VMMs place it.
const TSS_ADDRESS: usize = 0xfffb_d000;
/// The EPT identity map page (Intel real mode), right after the TSS.
const IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;

/// Errors of setting up the KVM backend; each names what the user can check.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// The device node cannot be opened.
    #[error(
        "cannot open {path}: {source} (is the kvm module loaded and are you allowed to use it?)"
    )]
    Open {
        /// The node.
        path: PathBuf,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// The kernel's KVM API version is not the stable one.
    #[error("KVM API version {0} is not supported (janus needs 12)")]
    ApiVersion(i32),
    /// A capability janus needs is missing.
    #[error("KVM lacks the capability {0}, which janus needs")]
    MissingCap(&'static str),
    /// An ioctl failed during set-up.
    #[error("{op} failed: {source}")]
    Ioctl {
        /// The ioctl.
        op: &'static str,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// The kick signal handler could not be installed.
    #[error("cannot install the vCPU kick signal handler: {0}")]
    Signal(String),
}

/// Facts about a host's KVM, gathered without creating guest memory.
#[derive(Debug, Clone)]
pub struct KvmProbe {
    /// The capabilities report.
    pub caps: AccelCaps,
}

/// Required capabilities, with their names for error messages.
const REQUIRED: [(Cap, &str); 5] = [
    (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
    (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
    (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
    (Cap::VcpuEvents, "KVM_CAP_VCPU_EVENTS"),
    (Cap::Hlt, "KVM_CAP_HLT"),
];

fn open(path: &Path) -> Result<Kvm, KvmError> {
    use std::os::unix::ffi::OsStrExt;
    let cpath =
        std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| KvmError::Open {
            path: path.to_path_buf(),
            source: kvm_ioctls::Error::new(libc::EINVAL),
        })?;
    let kvm = Kvm::new_with_path(cpath).map_err(|source| KvmError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let v = kvm.get_api_version();
    if v != 12 {
        return Err(KvmError::ApiVersion(v));
    }
    for (cap, name) in REQUIRED {
        if !kvm.check_extension(cap) {
            return Err(KvmError::MissingCap(name));
        }
    }
    Ok(kvm)
}

/// Whether the host CPU advertises VT-x or AMD-V (otherwise /dev/kvm is a paravirtual flavour
/// such as kvm_pvm).
/// Whether the host's KVM runs guests with VT-x or AMD-V (not kvm_pvm's paravirtual mode).
pub fn hardware_assisted() -> bool {
    !is_paravirtual() && host_has_hw_virt()
}

fn host_has_hw_virt() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| {
            s.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
        })
        .unwrap_or(false)
}

/// Whether /dev/kvm is a paravirtual flavour without VT-x/AMD-V (kvm_pvm), where only CPL3 code
/// runs on the CPU and single-step traps in CPL3 code reach the guest instead of janus.
pub fn is_paravirtual() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

fn flavour() -> String {
    let pvm = is_paravirtual();
    let hw = host_has_hw_virt();
    match (pvm, hw) {
        (true, _) => "kvm_pvm (no VT-x/AMD-V: CPL3 64-bit code runs natively, real-mode, \
                      32-bit and kernel code runs in KVM's instruction emulator)"
            .into(),
        (false, true) => {
            if Path::new("/sys/module/kvm_intel").exists() {
                "kvm_intel (VT-x)".into()
            } else if Path::new("/sys/module/kvm_amd").exists() {
                "kvm_amd (AMD-V)".into()
            } else {
                "hardware-assisted".into()
            }
        }
        (false, false) => "unknown flavour (no vmx/svm flag in /proc/cpuinfo)".into(),
    }
}

fn guest_debug_flags(kvm: &Kvm) -> u32 {
    let v = kvm.check_extension_raw(u64::from(KVM_CAP_SET_GUEST_DEBUG2));
    u32::try_from(v).unwrap_or(0)
}

/// Reports what the KVM at `path` offers, for `janus info` and `--accel auto`.
///
/// # Errors
/// As [`KvmAccel::new`] for opening and checking the device.
pub fn probe(path: &Path) -> Result<KvmProbe, KvmError> {
    let kvm = open(path)?;
    let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
    let dbg2 = guest_debug_flags(&kvm);
    let details = vec![
        ("api version".into(), kvm.get_api_version().to_string()),
        ("recommended vcpus".into(), kvm.get_nr_vcpus().to_string()),
        ("memory slots".into(), kvm.get_nr_memslots().to_string()),
        (
            "readonly memory".into(),
            yes(kvm.check_extension(Cap::ReadonlyMem)),
        ),
        (
            "set tss addr".into(),
            yes(kvm.check_extension(Cap::SetTssAddr)),
        ),
        ("in-kernel pit".into(), yes(kvm.check_extension(Cap::Pit2))),
        ("sync regs".into(), yes(kvm.check_extension(Cap::SyncRegs))),
        (
            "single-step irq blocking".into(),
            yes(dbg2 & KVM_GUESTDBG_BLOCKIRQ != 0),
        ),
        ("tsc khz".into(), yes(kvm.check_extension(Cap::GetTscKhz))),
    ];
    Ok(KvmProbe {
        caps: AccelCaps {
            name: "kvm",
            flavour: flavour(),
            single_step: kvm.check_extension(Cap::SetGuestDebug),
            irqchip: kvm.check_extension(Cap::Irqchip),
            instruction_count: false,
            max_vcpus: kvm.get_max_vcpus(),
            details,
        },
    })
}

/// The KVM accelerator: one VM with janus's guest memory registered.
#[derive(Debug)]
pub struct KvmAccel {
    kvm: Kvm,
    vm: Arc<VmFd>,
    memory: GuestMemory,
    caps: AccelCaps,
    /// KVM's in-kernel PIC, IOAPIC, local APICs and PIT are in use (`--irqchip kernel`).
    kernel_irqchip: bool,
    supported_msrs: Vec<u32>,
    nr_vcpus: usize,
    fallback: bool,
    /// `--cpu` other than plain `host`, and the features it wants that KVM does not offer.
    cpu: Option<(crate::cpuid::CpuSpec, Vec<&'static str>)>,
}

impl KvmAccel {
    /// Opens KVM at `path`, creates a VM and registers every region of `memory` as a slot.
    /// `nr_vcpus` is used for the topology CPUID reports.
    ///
    /// # Errors
    /// [`KvmError`] naming the step that failed.
    pub fn new(path: &Path, memory: &GuestMemory, nr_vcpus: usize) -> Result<Self, KvmError> {
        let kvm = open(path)?;
        signal::install().map_err(KvmError::Signal)?;
        let vm = kvm.create_vm().map_err(|source| KvmError::Ioctl {
            op: "KVM_CREATE_VM",
            source,
        })?;
        if kvm.check_extension(Cap::SetTssAddr) {
            vm.set_tss_address(TSS_ADDRESS)
                .map_err(|source| KvmError::Ioctl {
                    op: "KVM_SET_TSS_ADDR",
                    source,
                })?;
            // Only VT-x needs the identity map; other flavours may refuse it harmlessly.
            let _ = vm.set_identity_map_address(IDENTITY_MAP_ADDRESS);
        }
        let readonly = kvm.check_extension(Cap::ReadonlyMem);
        for (slot, r) in memory.regions().iter().enumerate() {
            let flags = if r.kind() == RegionKind::Rom && readonly {
                KVM_MEM_READONLY
            } else {
                0
            };
            let region = kvm_bindings::kvm_userspace_memory_region {
                slot: slot as u32,
                flags,
                guest_phys_addr: r.base(),
                memory_size: r.size(),
                userspace_addr: r.host_addr(),
            };
            // SAFETY: the host range is a live anonymous mapping owned by `memory`'s regions,
            // which this accelerator keeps a clone of (`self.memory`) for as long as the VM lives.
            unsafe { vm.set_user_memory_region(region) }.map_err(|source| KvmError::Ioctl {
                op: "KVM_SET_USER_MEMORY_REGION",
                source,
            })?;
        }
        let supported_msrs = kvm
            .get_msr_index_list()
            .map(|l| l.as_slice().to_vec())
            .unwrap_or_default();
        let caps = probe(path)?.caps;
        Ok(KvmAccel {
            kvm,
            vm: Arc::new(vm),
            memory: memory.clone(),
            caps,
            kernel_irqchip: false,
            supported_msrs,
            nr_vcpus,
            fallback: true,
            cpu: None,
        })
    }

    /// The vCPUs are CPU model `spec` (`--cpu`), as far as KVM offers its features (kvm_pvm
    /// ignores KVM_SET_CPUID2: there the guest sees the host's CPUID whatever the model).
    ///
    /// # Errors
    /// KVM_GET_SUPPORTED_CPUID fails.
    pub fn with_cpu(mut self, spec: &crate::cpuid::CpuSpec) -> Result<Self, KvmError> {
        if *spec == crate::cpuid::CpuSpec::default() {
            self.cpu = None;
            return Ok(self);
        }
        let mut cpuid = self
            .kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(|source| KvmError::Ioctl {
                op: "KVM_GET_SUPPORTED_CPUID",
                source,
            })?;
        let missing = vcpu::apply_model(&mut cpuid, spec);
        self.cpu = Some((spec.clone(), missing));
        Ok(self)
    }

    /// Turns the software fallback on (the default) or off (`--no-fallback`: a
    /// KVM_EXIT_INTERNAL_ERROR then ends the run with KVM's raw report).
    pub fn with_fallback(mut self, on: bool) -> Self {
        self.fallback = on;
        self
    }
}

impl KvmAccel {
    /// `--irqchip kernel`: KVM's in-kernel 8259 pair, IOAPIC and local APICs
    /// (KVM_CREATE_IRQCHIP), with the PC's GSI routing: GSI n is PIC input n and IOAPIC pin n,
    /// except that ISA IRQ 0 is IOAPIC pin 2 (the override the MADT and MP table announce) and
    /// GSI 2 reaches no IOAPIC pin. Must come before any vCPU is created. Devices outside KVM
    /// raise their lines with [`KvmIrqLines`].
    ///
    /// There is no in-kernel PIT (no KVM_CREATE_PIT2): janus's own 8254 stays in userspace and
    /// raises IRQ 0 through KVM_IRQ_LINE, as QEMU can run it. KVM's PIT reads OUT2 back wrong
    /// right after a mode 0 command (test-roms/pit_pic.asm, check 21), on VT-x/AMD-V and
    /// kvm_pvm alike.
    ///
    /// # Errors
    /// [`KvmError`] naming the ioctl that failed (or the capability KVM lacks).
    pub fn with_kernel_irqchip(mut self) -> Result<Self, KvmError> {
        use kvm_bindings::{
            KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
            KVM_IRQCHIP_PIC_SLAVE, KvmIrqRouting, kvm_irq_routing_entry,
        };
        let err = |op| move |source| KvmError::Ioctl { op, source };
        if !self.kvm.check_extension(Cap::Irqchip) {
            return Err(KvmError::MissingCap("KVM_CAP_IRQCHIP"));
        }
        self.vm
            .create_irq_chip()
            .map_err(err("KVM_CREATE_IRQCHIP"))?;
        let route = |gsi: u32, irqchip: u32, pin: u32| {
            let mut e = kvm_irq_routing_entry {
                gsi,
                type_: KVM_IRQ_ROUTING_IRQCHIP,
                ..Default::default()
            };
            e.u.irqchip.irqchip = irqchip;
            e.u.irqchip.pin = pin;
            e
        };
        let no_room = |_| KvmError::MissingCap("KVM_CAP_IRQ_ROUTING (24 routes)");
        let mut routing = KvmIrqRouting::new(0).map_err(no_room)?;
        let mut entries = Vec::new();
        for gsi in 0..24u32 {
            match gsi {
                0..8 => entries.push(route(gsi, KVM_IRQCHIP_PIC_MASTER, gsi)),
                8..16 => entries.push(route(gsi, KVM_IRQCHIP_PIC_SLAVE, gsi - 8)),
                _ => {}
            }
            match gsi {
                0 => entries.push(route(0, KVM_IRQCHIP_IOAPIC, 2)),
                2 => {}
                g => entries.push(route(g, KVM_IRQCHIP_IOAPIC, g)),
            }
        }
        for e in entries {
            routing.push(e).map_err(no_room)?;
        }
        self.vm
            .set_gsi_routing(&routing)
            .map_err(err("KVM_SET_GSI_ROUTING"))?;
        self.kernel_irqchip = true;
        Ok(self)
    }

    /// The input lines of the in-kernel irqchip, when there is one.
    pub fn kernel_irq_lines(&self) -> Option<KvmIrqLines> {
        self.kernel_irqchip.then(|| KvmIrqLines(self.vm.clone()))
    }
}

/// Drives the in-kernel irqchip's input lines (KVM_IRQ_LINE) from devices outside KVM.
#[derive(Clone, Debug)]
pub struct KvmIrqLines(Arc<VmFd>);

impl KvmIrqLines {
    /// Sets GSI `gsi` (ISA IRQ n is GSI n) to `level`. A failure is the guest's loss of an
    /// interrupt, not the host's error: it is ignored.
    pub fn set(&self, gsi: u32, level: bool) {
        let _ = self.0.set_irq_line(gsi, level);
    }

    /// Sends an MSI, `data` written to `address`, to the in-kernel LAPICs (KVM_SIGNAL_MSI).
    ///
    /// # Errors
    /// The ioctl's error (the caller, a device, ignores it: the guest loses an interrupt).
    pub fn signal_msi(&self, address: u64, data: u32) -> Result<i32, KvmError> {
        let msi = kvm_bindings::kvm_msi {
            address_lo: address as u32,
            address_hi: (address >> 32) as u32,
            data,
            ..Default::default()
        };
        self.0.signal_msi(msi).map_err(|source| KvmError::Ioctl {
            op: "KVM_SIGNAL_MSI",
            source,
        })
    }
}

impl Accelerator for KvmAccel {
    fn caps(&self) -> AccelCaps {
        self.caps.clone()
    }

    fn create_vcpu(&self, index: usize) -> Result<Box<dyn Vcpu + Send>, VcpuError> {
        Ok(Box::new(self.new_vcpu(index)?))
    }

    fn cpu_missing(&self) -> Vec<&'static str> {
        self.cpu.as_ref().map(|c| c.1.clone()).unwrap_or_default()
    }

    fn irq_lines(&self) -> Option<IrqLines> {
        let lines = self.kernel_irq_lines()?;
        Some(Arc::new(move |gsi, level| lines.set(gsi, level)))
    }

    fn msi_sender(&self) -> Option<MsiSender> {
        let lines = self.kernel_irq_lines()?;
        Some(Arc::new(move |address, data| {
            let _ = lines.signal_msi(address, data);
        }))
    }
}

impl KvmAccel {
    /// Creates vCPU number `index` (its APIC id), as the concrete type.
    ///
    /// # Errors
    /// The KVM ioctl that failed.
    pub fn new_vcpu(&self, index: usize) -> Result<KvmVcpu, VcpuError> {
        let mut v = KvmVcpu::new(
            &self.kvm,
            &self.vm,
            index,
            self.nr_vcpus,
            self.memory.clone(),
            self.supported_msrs.clone(),
            vcpu::VcpuOptions {
                blockirq: guest_debug_flags(&self.kvm) & KVM_GUESTDBG_BLOCKIRQ != 0,
                fallback: self.fallback,
                cpu: self.cpu.as_ref().map(|c| c.0.clone()),
            },
        )?;
        v.kernel_irqchip = self.kernel_irqchip;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::RegionKind;

    /// KVM_SIGNAL_MSI reaches the in-kernel irqchip: a fixed-vector message to APIC id 0 is
    /// accepted (and only with the irqchip does the backend offer an MSI sender).
    #[test]
    fn msis_are_signalled_to_the_in_kernel_irqchip() {
        let path = Path::new(DEFAULT_DEVICE);
        if let Err(e) = probe(path) {
            if std::env::var("JANUS_REQUIRE_KVM").as_deref() == Ok("1") {
                panic!("KVM is required (JANUS_REQUIRE_KVM=1) but unavailable: {e}");
            }
            eprintln!("!!!! SKIPPED msis_are_signalled_to_the_in_kernel_irqchip: {e} !!!!");
            return;
        }
        let mut memory = GuestMemory::new();
        memory.add(0, 1 << 20, RegionKind::Ram).unwrap();
        let plain = KvmAccel::new(path, &memory, 1).unwrap();
        assert!(plain.msi_sender().is_none());
        let accel = KvmAccel::new(path, &memory, 1)
            .unwrap()
            .with_kernel_irqchip()
            .unwrap();
        let _vcpu = accel.new_vcpu(0).unwrap();
        assert!(accel.msi_sender().is_some());
        let lines = accel.kernel_irq_lines().unwrap();
        assert!(lines.signal_msi(0xfee0_0000, 0x41).is_ok());
    }
}
