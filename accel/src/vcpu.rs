//! The backend traits: an accelerator makes vCPUs, a vCPU runs guest code.

use crate::exit::{Exit, ExitCounters};
use crate::io::IoHandler;
use crate::kick::Kicker;
use crate::state::CpuState;

/// What can go wrong when driving a vCPU: a host-side failure, never a guest mistake.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// A KVM ioctl failed.
    #[error("KVM {op} failed: {source}")]
    Kvm {
        /// The ioctl, e.g. "KVM_SET_SREGS".
        op: &'static str,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// The backend cannot do what was asked.
    #[error("{0}")]
    Unsupported(String),
}

/// What a backend can do, reported by `janus info` and used by the machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccelCaps {
    /// Backend name, e.g. "kvm".
    pub name: &'static str,
    /// A human description of the flavour, e.g. "KVM API 12 (kvm_pvm)".
    pub flavour: String,
    /// Single-stepping is available.
    pub single_step: bool,
    /// An in-kernel interrupt controller can be created.
    pub irqchip: bool,
    /// Retired instructions are counted exactly.
    pub instruction_count: bool,
    /// Maximum number of vCPUs.
    pub max_vcpus: usize,
    /// Further facts for `janus info`: (name, value).
    pub details: Vec<(String, String)>,
}

/// A CPU execution engine that creates vCPUs over guest memory.
pub trait Accelerator: Send + Sync {
    /// The vCPU type of this backend.
    type Vcpu: Vcpu + Send + 'static;

    /// Capabilities of this backend on this host.
    fn caps(&self) -> AccelCaps;

    /// Creates vCPU number `index` (its APIC id).
    fn create_vcpu(&self, index: usize) -> Result<Self::Vcpu, VcpuError>;
}

/// One virtual CPU.
pub trait Vcpu {
    /// This vCPU's index (APIC id).
    fn index(&self) -> usize;

    /// Reads the whole architectural state.
    fn state(&mut self) -> Result<CpuState, VcpuError>;

    /// Replaces the whole architectural state.
    fn set_state(&mut self, state: &CpuState) -> Result<(), VcpuError>;

    /// Runs guest code until an [`Exit`]; port and MMIO accesses go to `io` meanwhile.
    fn run(&mut self, io: &dyn IoHandler) -> Result<Exit, VcpuError>;

    /// Turns single-stepping on or off: with it on, `run` returns [`Exit::SingleStep`] after each
    /// instruction.
    fn set_single_step(&mut self, on: bool) -> Result<(), VcpuError>;

    /// Queues an external interrupt for delivery when the guest can take it.
    fn inject_interrupt(&mut self, vector: u8) -> Result<(), VcpuError>;

    /// A handle other threads use to stop this vCPU's `run`.
    fn kicker(&self) -> Kicker;

    /// Exit and instruction counters so far.
    fn counters(&self) -> ExitCounters;
}
