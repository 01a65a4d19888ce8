//! janus-accel: the CPU execution engines of janus behind one backend contract.
//!
//! An [`Accelerator`] creates [`Vcpu`]s over a shared [`GuestMemory`]. A vCPU runs guest code
//! until it needs the machine: port and MMIO accesses are served in place through the
//! [`IoHandler`] the caller passes to [`Vcpu::run`]; everything else (halt, shutdown, a finished
//! single step, a stop request, a failure) ends `run` with an owned [`Exit`]. The contract knows no
//! devices: those live in the `janus` crate.
//!
//! Backends: [`kvm`] (hardware virtualisation through /dev/kvm) and [`soft`] (the software CPU:
//! an IR interpreter and a JIT). Both take and give the same backend-neutral [`CpuState`]; the
//! [`registry`] names them and opens one ([`registry::open`]). Nothing else outside a backend's
//! folder names a backend.
#![deny(missing_docs)]

pub mod cpuid;
pub mod debug;
pub mod disasm;
pub mod exit;
pub mod io;
pub mod kick;
pub mod kvm;
pub mod memory;
pub mod registry;
pub mod soft;
pub mod state;
mod vcpu;
pub mod walk;

pub use debug::{Breakpoint, BreakpointKind};
pub use exit::{Exit, ExitCounters, ExitReasonKind, SystemEventKind, VcpuFailure};
pub use io::{IoHandler, MsrFault, NoDevices};
pub use kick::Kicker;
pub use memory::{GuestMemory, MemoryError, Region, RegionKind};
pub use registry::{AccelConfig, AccelKind, OpenError, TscSource};
pub use state::{
    CpuState, DebugRegs, DescriptorTable, Events, FpuState, PendingException, Reg, Segment,
    rflags_if,
};
pub use vcpu::{AccelCaps, Accelerator, IrqLines, Vcpu, VcpuError};
