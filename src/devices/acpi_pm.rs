//! The ACPI fixed power-management registers the FADT names ([`crate::acpi`]), at port 0x600 as
//! on QEMU's PIIX4 machine: PM1a event block (status 0x600, enable 0x602), PM1a control
//! (0x604) and the 24-bit PM timer (0x608, 3.579545 MHz from the machine clock).
//!
//! Writing PM1a_CNT with SLP_EN and the `\_S5` sleep type powers the machine off. SCI_EN reads
//! as 1: the hardware is always in ACPI mode (the FADT has no SMI command port).
//!
//! Simplified: no event ever sets a status bit and no SCI is raised; sleep types other than S5
//! are ignored (counted).

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::clock::{Clock, ns_to_ticks};
use crate::control::{Control, StopReason};

/// The first port of the block.
pub const PM_BASE: u16 = 0x600;
/// PM1a event block (status and enable, 2 bytes each).
pub const PM1A_EVT_PORT: u16 = PM_BASE;
/// PM1a control block (2 bytes).
pub const PM1A_CNT_PORT: u16 = PM_BASE + 4;
/// PM timer (4 bytes).
pub const PM_TMR_PORT: u16 = PM_BASE + 8;
/// Ports the device decodes.
pub const PM_LEN: u64 = 12;
/// The SLP_TYP value of S5 (soft off) that `\_S5` gives.
pub const PM1_CNT_SLP_TYP_S5: u8 = 5;
/// PM timer frequency in Hz.
pub const PM_TIMER_HZ: u64 = 3_579_545;

const SCI_EN: u16 = 1;
const SLP_EN: u16 = 1 << 13;

/// The PM register block.
#[derive(Debug)]
pub struct AcpiPm {
    control: Arc<Control>,
    clock: Clock,
    enable: u16,
    cnt: u16,
    /// Sleep requests for a state janus does not have.
    pub ignored_sleeps: u64,
}

impl AcpiPm {
    /// The registers, powering off through `control`, the timer counting on `clock`.
    pub fn new(control: Arc<Control>, clock: Clock) -> Self {
        AcpiPm {
            control,
            clock,
            enable: 0,
            cnt: SCI_EN,
            ignored_sleeps: 0,
        }
    }

    fn read_reg(&self, offset: u64) -> u32 {
        match offset {
            0..=1 => 0, // PM1_STS: no events
            2..=3 => u32::from(self.enable),
            4..=5 => u32::from(self.cnt),
            8..=11 => (ns_to_ticks(self.clock.now_ns(), PM_TIMER_HZ) & 0xff_ffff) as u32,
            _ => 0xffff_ffff,
        }
    }

    fn write_cnt(&mut self, v: u16) {
        self.cnt = (v & !SLP_EN) | SCI_EN;
        if v & SLP_EN != 0 {
            if (v >> 10) & 7 == u16::from(PM1_CNT_SLP_TYP_S5) {
                self.control.request_stop(StopReason::PowerOff);
            } else {
                self.ignored_sleeps += 1;
            }
        }
    }
}

impl BusDevice for AcpiPm {
    fn label(&self) -> &str {
        "acpi-pm"
    }

    fn read(&mut self, _vcpu: usize, offset: u64, data: &mut [u8]) {
        // Registers are read at their natural width; a narrower read takes the bytes at its
        // offset within the register.
        let (reg, shift) = match offset {
            0..=1 => (0, offset * 8),
            2..=3 => (2, (offset - 2) * 8),
            4..=5 => (4, (offset - 4) * 8),
            8..=11 => (8, (offset - 8) * 8),
            _ => (offset, 0),
        };
        let v = u64::from(self.read_reg(reg)) >> shift;
        for (i, b) in data.iter_mut().enumerate() {
            *b = (v >> (8 * i)) as u8;
        }
    }

    fn write(&mut self, _vcpu: usize, offset: u64, data: &[u8]) {
        let mut v = 0u16;
        for (i, &b) in data.iter().take(2).enumerate() {
            v |= u16::from(b) << (8 * i);
        }
        match (offset, data.len()) {
            (2, 1) => self.enable = (self.enable & 0xff00) | v,
            (3, 1) => self.enable = (self.enable & 0x00ff) | v << 8,
            (2, _) => self.enable = v,
            (4, 1) => self.write_cnt((self.cnt & 0xff00) | v),
            (5, 1) => self.write_cnt((self.cnt & 0x00ff) | v << 8),
            (4, _) => self.write_cnt(v),
            _ => {} // status bits are write-1-to-clear and none is ever set; the timer is RO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm() -> (AcpiPm, Arc<Control>, Clock) {
        let c = Arc::new(Control::new());
        let clock = Clock::deterministic(1);
        (AcpiPm::new(c.clone(), clock.clone()), c, clock)
    }

    #[test]
    fn slp_en_with_s5_powers_off() {
        let (mut d, c, _) = pm();
        let mut b = [0u8; 2];
        d.read(0, 4, &mut b);
        assert_eq!(u16::from_le_bytes(b), SCI_EN);
        // S3-like type: ignored.
        d.write(0, 4, &(SLP_EN | 3 << 10).to_le_bytes());
        assert_eq!(c.reason(), None);
        assert_eq!(d.ignored_sleeps, 1);
        // SLP_TYP without SLP_EN: nothing.
        d.write(0, 4, &(5u16 << 10).to_le_bytes());
        assert_eq!(c.reason(), None);
        // The high byte alone (as a byte write) with SLP_EN | S5.
        d.write(0, 5, &[((SLP_EN | 5 << 10) >> 8) as u8]);
        assert_eq!(c.reason(), Some(StopReason::PowerOff));
    }

    #[test]
    fn pm_timer_counts_at_3_58_mhz_in_24_bits() {
        let (mut d, _, clock) = pm();
        let rd = |d: &mut AcpiPm| {
            let mut b = [0u8; 4];
            d.read(0, 8, &mut b);
            u32::from_le_bytes(b)
        };
        assert_eq!(rd(&mut d), 0);
        clock.advance_ns(1_000_000_000);
        assert_eq!(rd(&mut d), 3_579_545);
        clock.advance_ns(4_000_000_000); // wraps at 2^24
        assert_eq!(
            u64::from(rd(&mut d)),
            ns_to_ticks(5_000_000_000, PM_TIMER_HZ) & 0xff_ffff
        );
        let mut e = [0u8; 2];
        d.write(0, 2, &[0x21, 0x01]);
        d.read(0, 2, &mut e);
        assert_eq!(e, [0x21, 0x01]);
    }
}
