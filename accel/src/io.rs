//! The device side of the backend contract: how a vCPU reaches ports and MMIO.

/// Serves a vCPU's port and MMIO accesses. KVM's backend calls it on KVM_EXIT_IO and
/// KVM_EXIT_MMIO; the software backend calls it from IN/OUT and its memory slow path. Either way
/// the device sees the same call. A guest's bad access is the handler's business (count it,
/// return all ones): these calls cannot fail.
pub trait IoHandler: Sync {
    /// A port read of `data.len()` bytes (1, 2 or 4).
    fn pio_read(&self, vcpu: usize, port: u16, data: &mut [u8]);
    /// A port write of `data.len()` bytes (1, 2 or 4).
    fn pio_write(&self, vcpu: usize, port: u16, data: &[u8]);
    /// An MMIO read at a guest physical address outside RAM.
    fn mmio_read(&self, vcpu: usize, addr: u64, data: &mut [u8]);
    /// An MMIO write at a guest physical address outside RAM.
    fn mmio_write(&self, vcpu: usize, addr: u64, data: &[u8]);

    /// Whether an external interrupt may be waiting for `vcpu` (a cheap check that backends make
    /// whenever the guest can take an interrupt). A machine without interrupt controllers has
    /// none.
    fn interrupt_pending(&self, _vcpu: usize) -> bool {
        false
    }

    /// The interrupt acknowledge cycle: the vector of the highest-priority interrupt for `vcpu`,
    /// now in service, or `None` if nothing is deliverable after all. Called only when the guest
    /// can take an interrupt (IF set, no interrupt shadow).
    fn acknowledge_interrupt(&self, _vcpu: usize) -> Option<u8> {
        None
    }

    /// Whether an NMI may be waiting for `vcpu`: a cheap check that backends make wherever the
    /// guest could take one (IF does not mask an NMI; only an NMI handler running until its
    /// IRET blocks it). A machine without interrupt controllers has none.
    fn nmi_pending(&self, _vcpu: usize) -> bool {
        false
    }

    /// Takes the pending NMI of `vcpu` (at most one is latched): true if there was one, which
    /// the backend now delivers. Called only when the guest can take an NMI.
    fn take_nmi(&self, _vcpu: usize) -> bool {
        false
    }

    /// Deterministic time (`--icount`): whether the machine's clock moves with the instructions
    /// a backend retires, so that the backend must call [`IoHandler::retired`]. Asked once per
    /// [`crate::Vcpu::run`]; backends that cannot count instructions (KVM) never ask.
    fn counts_instructions(&self) -> bool {
        false
    }

    /// Deterministic time: `vcpu` retired `n` more instructions. Called at every block
    /// boundary, where interrupts are taken: the machine moves its clock and fires the timers
    /// whose deadline passed, raising their interrupts as usual, so that an interrupt arrives
    /// at the same instruction in every run. Returns the guest TSC now, when the machine's
    /// clock defines it.
    fn retired(&self, _vcpu: usize, _n: u64) -> Option<u64> {
        None
    }

    /// RDMSR of an MSR that a device of the machine owns (the local APIC's IA32_TSC_DEADLINE
    /// and x2APIC registers): `None` when no device owns `msr`.
    fn msr_read(&self, _vcpu: usize, _msr: u32) -> Option<Result<u64, MsrFault>> {
        None
    }

    /// WRMSR of an MSR that a device of the machine owns: `None` when no device owns `msr`.
    fn msr_write(&self, _vcpu: usize, _msr: u32, _value: u64) -> Option<Result<(), MsrFault>> {
        None
    }
}

/// A device refused an RDMSR or WRMSR: the guest takes #GP(0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrFault;

/// A machine with no devices: port and MMIO reads return all ones (an open bus), writes are
/// dropped, and no interrupt ever arrives. For benchmarks and tests that run bare code.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDevices;

impl IoHandler for NoDevices {
    fn pio_read(&self, _: usize, _: u16, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn pio_write(&self, _: usize, _: u16, _: &[u8]) {}
    fn mmio_read(&self, _: usize, _: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn mmio_write(&self, _: usize, _: u64, _: &[u8]) {}
}
