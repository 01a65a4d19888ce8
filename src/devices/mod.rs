//! The machine's devices, each behind [`crate::bus::BusDevice`].

pub mod acpi_pm;
pub mod cmos;
pub mod debugcon;
pub mod exit_port;
pub mod fw_cfg;
pub mod i8042;
pub mod ide;
pub mod ioapic;
pub mod lapic;
pub mod pic;
pub mod pit;
pub mod post;
pub mod serial;

/// An interrupt line a device drives (wired to an interrupt controller by the machine).
pub trait IrqLine: Send + Sync {
    /// Sets the line's level.
    fn set_level(&self, high: bool);
}
