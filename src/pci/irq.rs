//! Interrupts of PCI functions: INTx pins wired (swizzled, shared, level-triggered) to the
//! board's INTx GSIs, and MSI messages sent to the LAPICs.
//!
//! A function is handed [`PciInterrupts`] when it joins the bus and calls
//! [`PciInterrupts::raise`]/[`PciInterrupts::lower`] with its config space: with MSI enabled and
//! bus mastering on it sends its message on an edge (MSI has no level); else, unless INTx is
//! disabled in its command register, it drives its INTx pin. Several functions share a GSI: the
//! line is a wired OR, high while any of them asserts it.

use std::sync::{Arc, Mutex};

use super::config::{ConfigSpace, command, reg};
use crate::devices::IrqLine;

/// Offset of the MSI capability janus puts in a function's config space.
pub const MSI_CAP_OFFSET: usize = 0x40;
/// The MSI capability's id.
pub const CAP_ID_MSI: u8 = 0x05;
/// Status register: the function has a capabilities list.
const STATUS_CAP_LIST: u16 = 1 << 4;
/// Status register: the function asserts INTx.
const STATUS_INTERRUPT: u16 = 1 << 3;
/// MSI message control: MSI enable.
const MSI_ENABLE: u16 = 1 << 0;
/// MSI message control: 64-bit message address capable.
const MSI_64BIT: u16 = 1 << 7;

/// Where MSI messages go (the APIC bus, or KVM's).
pub trait MsiSink: Send + Sync {
    /// Sends the message `data` to `address` (0xFEEx_xxxx: a LAPIC interrupt message).
    fn send(&self, address: u64, data: u32);
}

/// A GSI shared by several INTx pins: high while any of them asserts it.
pub struct SharedIntx {
    line: Arc<dyn IrqLine>,
    /// One bit per slot asserting the line.
    asserted: Mutex<u32>,
}

impl std::fmt::Debug for SharedIntx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedIntx").finish_non_exhaustive()
    }
}

impl SharedIntx {
    /// A wired OR driving `line`.
    pub fn new(line: Arc<dyn IrqLine>) -> Arc<Self> {
        Arc::new(SharedIntx {
            line,
            asserted: Mutex::new(0),
        })
    }

    fn set(&self, slot: usize, high: bool) {
        let mut a = self.asserted.lock().unwrap_or_else(|p| p.into_inner());
        let bit = 1u32 << (slot % 32);
        let was = *a != 0;
        if high {
            *a |= bit;
        } else {
            *a &= !bit;
        }
        let now = *a != 0;
        // A level-triggered line: asserting again while high re-drives it (an IOAPIC entry
        // with remote IRR clear sends again), as the wire would stay high.
        if now || was {
            self.line.set_level(now);
        }
    }
}

/// The interrupts of the function in one slot.
#[derive(Clone, Default)]
pub struct PciInterrupts {
    slot: usize,
    intx: Option<Arc<SharedIntx>>,
    msi: Option<Arc<dyn MsiSink>>,
}

impl std::fmt::Debug for PciInterrupts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciInterrupts")
            .field("slot", &self.slot)
            .field("intx", &self.intx.is_some())
            .field("msi", &self.msi.is_some())
            .finish()
    }
}

impl PciInterrupts {
    /// Slot `slot`'s interrupts: its INTx pin on `intx`, its MSIs to `msi`.
    pub fn new(slot: usize, intx: Option<Arc<SharedIntx>>, msi: Option<Arc<dyn MsiSink>>) -> Self {
        PciInterrupts { slot, intx, msi }
    }

    /// The function signals an interrupt: an MSI when enabled (and bus mastering is on), else
    /// its INTx pin goes high unless disabled. Sets the status register's interrupt bit for
    /// INTx.
    pub fn raise(&self, config: &mut ConfigSpace) {
        if let Some((address, data)) = msi_message(config) {
            if config.command() & command::BUS_MASTER != 0
                && let Some(m) = &self.msi
            {
                m.send(address, data);
            }
            return;
        }
        let status = config.u16_at(reg::STATUS);
        config.set(reg::STATUS, &(status | STATUS_INTERRUPT).to_le_bytes());
        if config.command() & command::INTX_DISABLE == 0
            && let Some(l) = &self.intx
        {
            l.set(self.slot, true);
        }
    }

    /// Sends the message `data` to `address` (an MSI-X vector; the caller has checked that
    /// it may: enabled, unmasked, bus mastering on).
    pub fn send_msi(&self, address: u64, data: u32) {
        if let Some(m) = &self.msi {
            m.send(address, data);
        }
    }

    /// The function's interrupt condition is gone: its INTx pin goes low.
    pub fn lower(&self, config: &mut ConfigSpace) {
        let status = config.u16_at(reg::STATUS);
        config.set(reg::STATUS, &(status & !STATUS_INTERRUPT).to_le_bytes());
        if let Some(l) = &self.intx {
            l.set(self.slot, false);
        }
    }
}

/// Adds an MSI capability (one vector, 64-bit address) at [`MSI_CAP_OFFSET`], linked at the
/// end of the capabilities list.
pub fn add_msi_capability(config: &mut ConfigSpace) {
    let o = MSI_CAP_OFFSET;
    config.set(o, &[CAP_ID_MSI, 0]);
    config.link_capability(o);
    config.set(o + 2, &MSI_64BIT.to_le_bytes());
    // Writable: enable, multiple message enable (one vector is all it grants: MME reads back
    // as written but only vector 0 is used), the address (dword aligned) and the data.
    config.set_wmask(o + 2, &(MSI_ENABLE | 0x70).to_le_bytes());
    config.set_wmask(o + 4, &0xffff_fffcu32.to_le_bytes());
    config.set_wmask(o + 8, &[0xff; 4]);
    config.set_wmask(o + 12, &[0xff, 0xff]);
}

/// The MSI message the function sends now, when it has an MSI capability and it is enabled.
pub fn msi_message(config: &ConfigSpace) -> Option<(u64, u32)> {
    let o = MSI_CAP_OFFSET;
    let mut id = [0u8; 1];
    config.read(o, &mut id);
    if config.u16_at(reg::STATUS) & STATUS_CAP_LIST == 0
        || id[0] != CAP_ID_MSI
        || config.u16_at(o + 2) & MSI_ENABLE == 0
    {
        return None;
    }
    let address = u64::from(config.u32_at(o + 4)) | u64::from(config.u32_at(o + 8)) << 32;
    Some((address, u32::from(config.u16_at(o + 12))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Default)]
    struct Level(AtomicBool, Mutex<u32>);
    impl IrqLine for Level {
        fn set_level(&self, high: bool) {
            self.0.store(high, Ordering::SeqCst);
            *self.1.lock().unwrap() += 1;
        }
    }

    #[derive(Default)]
    struct Msis(Mutex<Vec<(u64, u32)>>);
    impl MsiSink for Msis {
        fn send(&self, address: u64, data: u32) {
            self.0.lock().unwrap().push((address, data));
        }
    }

    fn config() -> ConfigSpace {
        let mut c = ConfigSpace::new(0x1af4, 0x10ff, 0xff_0000, 0);
        c.set_interrupt_pin(1);
        c
    }

    #[test]
    fn intx_is_a_wired_or_and_obeys_intx_disable() {
        let line = Arc::new(Level::default());
        let shared = SharedIntx::new(line.clone());
        let a = PciInterrupts::new(1, Some(shared.clone()), None);
        let b = PciInterrupts::new(5, Some(shared), None);
        let (mut ca, mut cb) = (config(), config());
        a.raise(&mut ca);
        assert!(line.0.load(Ordering::SeqCst));
        assert_ne!(ca.u16_at(reg::STATUS) & STATUS_INTERRUPT, 0);
        b.raise(&mut cb);
        a.lower(&mut ca);
        assert!(line.0.load(Ordering::SeqCst), "slot 5 still asserts it");
        assert_eq!(ca.u16_at(reg::STATUS) & STATUS_INTERRUPT, 0);
        b.lower(&mut cb);
        assert!(!line.0.load(Ordering::SeqCst));
        // INTx disabled: the status bit says pending, the line stays low.
        ca.write(reg::COMMAND, &command::INTX_DISABLE.to_le_bytes());
        a.raise(&mut ca);
        assert!(!line.0.load(Ordering::SeqCst));
        assert_ne!(ca.u16_at(reg::STATUS) & STATUS_INTERRUPT, 0);
    }

    #[test]
    fn msi_is_sent_when_enabled_with_bus_mastering() {
        let line = Arc::new(Level::default());
        let msis = Arc::new(Msis::default());
        let irq = PciInterrupts::new(
            2,
            Some(SharedIntx::new(line.clone())),
            Some(msis.clone() as Arc<dyn MsiSink>),
        );
        let mut c = config();
        add_msi_capability(&mut c);
        assert_eq!(c.u16_at(reg::STATUS) & STATUS_CAP_LIST, STATUS_CAP_LIST);
        assert_eq!(c.u16_at(reg::CAPABILITIES) & 0xff, MSI_CAP_OFFSET as u16);
        // Program the message as a guest does: address, data, then enable.
        let o = MSI_CAP_OFFSET;
        c.write(o + 4, &0xfee0_1003u32.to_le_bytes());
        c.write(o + 8, &0u32.to_le_bytes());
        c.write(o + 12, &0x4041u16.to_le_bytes());
        assert_eq!(msi_message(&c), None, "not enabled yet");
        c.write(o + 2, &0xffffu16.to_le_bytes());
        assert_eq!(c.u16_at(o + 2), MSI_64BIT | MSI_ENABLE | 0x70);
        assert_eq!(msi_message(&c), Some((0xfee0_1000, 0x4041)));
        // Without bus mastering nothing is sent, and INTx stays quiet too.
        irq.raise(&mut c);
        assert!(msis.0.lock().unwrap().is_empty());
        assert!(!line.0.load(Ordering::SeqCst));
        c.write(reg::COMMAND, &command::BUS_MASTER.to_le_bytes());
        irq.raise(&mut c);
        assert_eq!(*msis.0.lock().unwrap(), vec![(0xfee0_1000, 0x4041)]);
        assert!(!line.0.load(Ordering::SeqCst));
    }
}
