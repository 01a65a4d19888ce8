//! janus: the machine model shared by every backend: the PC memory map, the PIO and MMIO buses
//! and their devices, the loaders, the vCPU threads and the run loop.
#![deny(missing_docs)]

pub mod acpi;
pub mod bench;
pub mod board;
pub mod bus;
pub mod clock;
pub mod console;
pub mod control;
pub mod devices;
pub mod diff;
pub mod firmware;
pub mod fuzz;
pub mod gdb;
pub mod layout;
pub mod loader;
pub mod machine;
pub mod milestones;
pub mod mptable;
pub mod msg;
pub mod net;
pub mod pci;
pub mod platform;
pub mod record;
pub mod signals;
pub mod sink;
pub mod stats;
pub mod vcpu_loop;
pub mod virtio;

pub use control::{Control, StopReason};
pub use janus_accel::AccelKind;
pub use machine::{Machine, MachineConfig, MachineError, RunOutcome};
