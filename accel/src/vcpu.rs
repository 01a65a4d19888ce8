//! The backend traits: an accelerator makes vCPUs, a vCPU runs guest code.

use crate::debug::Breakpoint;
use crate::exit::{Exit, ExitCounters};
use crate::io::IoHandler;
use crate::kick::Kicker;
use crate::memory::GuestMemory;
use crate::state::CpuState;

/// What can go wrong when driving a vCPU: a host-side failure, never a guest mistake. The contract
/// names no backend: a backend wraps its own cause in [`VcpuError::Backend`].
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// An operation of the backend failed on the host.
    #[error("{backend} {op} failed: {source}")]
    Backend {
        /// The backend as a user knows it, e.g. "KVM".
        backend: &'static str,
        /// The operation, e.g. "KVM_SET_SREGS".
        op: &'static str,
        /// The backend's own error.
        source: Box<dyn std::error::Error + Send + Sync>,
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

/// The input lines of an interrupt controller inside a backend: `(gsi, level)`.
pub type IrqLines = std::sync::Arc<dyn Fn(u32, bool) + Send + Sync>;

/// A CPU execution engine that creates vCPUs over guest memory. Opened by
/// [`crate::registry::open`]; used as `Box<dyn Accelerator>`.
pub trait Accelerator: Send + Sync {
    /// Capabilities of this backend on this host.
    fn caps(&self) -> AccelCaps;

    /// Creates vCPU number `index` (its APIC id).
    fn create_vcpu(&self, index: usize) -> Result<Box<dyn Vcpu + Send>, VcpuError>;

    /// The input lines of the backend's own interrupt controllers (KVM's in-kernel irqchip),
    /// when it has them: devices outside the backend raise their interrupts there.
    fn irq_lines(&self) -> Option<IrqLines> {
        None
    }

    /// The features the CPU model (`--cpu`) asked for that this backend does not run, and so
    /// does not offer.
    fn cpu_missing(&self) -> Vec<&'static str> {
        Vec::new()
    }
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

    /// Replaces this vCPU's breakpoints (none: `&[]`); see [`crate::debug`] for what `run`
    /// does at one.
    ///
    /// # Errors
    /// More hardware breakpoints than the CPU has, or the backend's own failure.
    fn set_breakpoints(&mut self, breakpoints: &[Breakpoint]) -> Result<(), VcpuError>;

    /// The guest memory this vCPU runs on.
    fn memory(&self) -> &GuestMemory;

    /// Reads guest-virtual memory at `linear` through the guest's page tables (as the vCPU's
    /// state has them). Returns how many bytes were read (fewer where the mapping ends).
    ///
    /// # Errors
    /// The state cannot be read.
    fn read_virt(&mut self, linear: u64, buf: &mut [u8]) -> Result<usize, VcpuError> {
        let s = self.state()?;
        Ok(crate::walk::read_virt(&s, self.memory(), linear, buf))
    }

    /// Writes guest-virtual memory at `linear` through the guest's page tables, as a device
    /// does (code translated from the bytes is dropped on every vCPU). Returns how many bytes
    /// were written.
    ///
    /// # Errors
    /// The state cannot be read.
    fn write_virt(&mut self, linear: u64, data: &[u8]) -> Result<usize, VcpuError> {
        let s = self.state()?;
        Ok(crate::walk::write_virt(&s, self.memory(), linear, data))
    }

    /// Queues an external interrupt for delivery when the guest can take it.
    fn inject_interrupt(&mut self, vector: u8) -> Result<(), VcpuError>;

    /// A handle other threads use to stop this vCPU's `run`.
    fn kicker(&self) -> Kicker;

    /// Exit and instruction counters so far.
    fn counters(&self) -> ExitCounters;
}

/// A boxed vCPU is a vCPU: generic code (the machine's vCPU loop) takes either.
impl<V: Vcpu + ?Sized> Vcpu for Box<V> {
    fn index(&self) -> usize {
        (**self).index()
    }
    fn state(&mut self) -> Result<CpuState, VcpuError> {
        (**self).state()
    }
    fn set_state(&mut self, state: &CpuState) -> Result<(), VcpuError> {
        (**self).set_state(state)
    }
    fn run(&mut self, io: &dyn IoHandler) -> Result<Exit, VcpuError> {
        (**self).run(io)
    }
    fn set_single_step(&mut self, on: bool) -> Result<(), VcpuError> {
        (**self).set_single_step(on)
    }
    fn set_breakpoints(&mut self, breakpoints: &[Breakpoint]) -> Result<(), VcpuError> {
        (**self).set_breakpoints(breakpoints)
    }
    fn memory(&self) -> &GuestMemory {
        (**self).memory()
    }
    fn read_virt(&mut self, linear: u64, buf: &mut [u8]) -> Result<usize, VcpuError> {
        (**self).read_virt(linear, buf)
    }
    fn write_virt(&mut self, linear: u64, data: &[u8]) -> Result<usize, VcpuError> {
        (**self).write_virt(linear, data)
    }
    fn inject_interrupt(&mut self, vector: u8) -> Result<(), VcpuError> {
        (**self).inject_interrupt(vector)
    }
    fn kicker(&self) -> Kicker {
        (**self).kicker()
    }
    fn counters(&self) -> ExitCounters {
        (**self).counters()
    }
}
