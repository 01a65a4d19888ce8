//! The LAPIC's register interface: the xAPIC page ([`Lapic::mmio_read`], [`LapicMmio`]), the
//! x2APIC MSRs and IA32_APIC_BASE ([`Lapic::read_msr`], [`Lapic::write_msr`]), and sending IPIs
//! from the ICR.

use std::sync::{Arc, Mutex};

use super::*;
use crate::bus::BusDevice;

/// A GP fault, the guest-visible result of a bad MSR access, for the backend to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpFault;

/// Registers readable through the x2APIC MSRs (offsets as in the xAPIC page; ICR apart).
fn x2apic_readable(off: u32) -> bool {
    matches!(off, 0x20 | 0x30 | 0x80 | 0xa0 | 0xd0 | 0xf0 | 0x100..=0x280 | 0x320..=0x390 | 0x3e0)
}

impl Lapic {
    // ---- registers ----

    fn read_reg(&self, off: u32) -> Option<u32> {
        Some(match off {
            0x20 if self.x2apic() => self.id,
            0x20 => self.id << 24,
            0x30 => VERSION,
            0x80 => u32::from(self.tpr),
            0x90 => u32::from(self.apr()),
            0xa0 => u32::from(self.ppr()),
            0xb0 | 0xc0 => 0, // EOI is write-only; remote read is not supported
            0xd0 => self.ldr,
            0xe0 => self.dfr,
            0xf0 => self.svr,
            0x100..=0x170 => self.isr[(off as usize - 0x100) >> 4],
            0x180..=0x1f0 => self.tmr[(off as usize - 0x180) >> 4],
            0x200..=0x270 => self.irr[(off as usize - 0x200) >> 4],
            0x280 => self.esr,
            0x300 => self.icr as u32,
            0x310 => (self.icr >> 32) as u32,
            0x320..=0x370 => self.lvt[(off as usize - 0x320) >> 4],
            0x380 => self.initial_count,
            0x390 => self.current_count(),
            0x3e0 => self.dcr,
            _ => return None,
        })
    }

    /// Writes register `off`; false for an offset that is not a writable register.
    fn write_reg(&mut self, off: u32, v: u32) -> bool {
        match off {
            0x20 if !self.x2apic() => {
                self.id = v >> 24;
                self.publish();
            }
            0x80 => self.tpr = v as u8,
            0xb0 => self.eoi(),
            0xd0 if !self.x2apic() => {
                self.ldr = v & 0xff00_0000;
                self.publish();
            }
            0xe0 if !self.x2apic() => {
                self.dfr = v | 0x0fff_ffff;
                self.publish();
            }
            0xf0 => self.write_svr(v),
            0x280 => self.esr = std::mem::take(&mut self.esr_pending),
            0x300 => {
                self.icr = (self.icr & !0xffff_ffff) | u64::from(v & !(1 << 12));
                self.send_ipi();
            }
            0x310 if !self.x2apic() => {
                self.icr = (self.icr & 0xffff_ffff) | u64::from(v & 0xff00_0000) << 32;
            }
            0x320..=0x370 => self.write_lvt((off as usize - 0x320) >> 4, v),
            0x380 => {
                if self.timer_mode() != TIMER_TSC_DEADLINE {
                    self.arm_count(v);
                }
            }
            0x3e0 => self.write_dcr(v),
            _ => return false,
        }
        true
    }

    fn write_svr(&mut self, v: u32) {
        self.svr = v & 0x3ff;
        if !self.software_enabled() {
            for lvt in &mut self.lvt {
                *lvt |= LVT_MASKED;
            }
        }
        self.publish();
    }

    fn write_lvt(&mut self, i: usize, v: u32) {
        let writable = match i {
            LVT_TIMER if self.cfg.tsc_deadline => 0x6_0000,
            LVT_TIMER => 0x2_0000,
            1 | 2 => 0x700,          // thermal, performance: delivery mode
            3 | 4 => 0x700 | 0xa000, // LINT: delivery mode, polarity, trigger
            _ => 0,                  // error
        } | 0xff
            | LVT_MASKED;
        let old = self.lvt[i];
        let mut new = (v & writable) | (old & LVT_REMOTE_IRR);
        if !self.software_enabled() {
            new |= LVT_MASKED;
        }
        self.lvt[i] = new;
        if i == LVT_TIMER {
            let was_tsc = (old >> 17) & 3 == TIMER_TSC_DEADLINE;
            if was_tsc != (self.timer_mode() == TIMER_TSC_DEADLINE) {
                // Switching to or from TSC-deadline mode disarms the timer.
                self.initial_count = 0;
                self.tsc_deadline = 0;
                self.timer_next = None;
                self.timer.clear();
            }
        }
    }

    fn write_dcr(&mut self, v: u32) {
        let count = self.current_count();
        let running = self.timer_next.is_some() && count > 0;
        self.dcr = v & 0xb;
        if running {
            // Keep the current count; later ticks use the new divisor.
            let done = u64::from(self.initial_count - count) * self.tick_ns();
            let now = self.clock.now_ns();
            self.timer_start = now.saturating_sub(done);
            self.timer_next = Some(now + u64::from(count) * self.tick_ns());
            self.timer.set(self.timer_next);
        }
    }

    fn send_ipi(&mut self) {
        let low = self.icr as u32;
        let Some(mode) = DeliveryMode::from_bits(low >> 8) else {
            return;
        };
        let trigger = if low & (1 << 15) != 0 {
            TriggerMode::Level
        } else {
            TriggerMode::Edge
        };
        if mode == DeliveryMode::ExtInt
            || (mode == DeliveryMode::Init && trigger == TriggerMode::Level && low & (1 << 14) == 0)
        {
            return; // not sendable; INIT level de-assert only synchronises arbitration IDs
        }
        let vector = low as u8;
        if matches!(mode, DeliveryMode::Fixed | DeliveryMode::LowestPriority) && vector < 16 {
            self.signal_error(ESR_SEND_ILLEGAL_VECTOR);
            return;
        }
        let dest = if self.x2apic() {
            (self.icr >> 32) as u32
        } else {
            (self.icr >> 56) as u32
        };
        let mut msg = InterruptMessage {
            destination: if low & (1 << 11) != 0 {
                Destination::Logical(dest)
            } else {
                Destination::Physical(dest)
            },
            mode,
            vector,
            trigger,
        };
        let shorthand = (low >> 18) & 3;
        if shorthand == 1 || shorthand == 2 {
            self.receive(&msg);
        }
        if shorthand == 1 {
            return;
        }
        if shorthand != 0 {
            msg.destination = Destination::AllExcept(self.id);
        }
        if let Some(bus) = &self.bus {
            bus.deliver(msg);
        }
    }

    // ---- xAPIC MMIO ----

    /// A read of the xAPIC page at `offset`. Registers are 32 bits wide at 16-byte strides;
    /// bytes outside them read as 0, a reserved register reads as 0 and sets the
    /// illegal-register error; the page reads as all ones when the LAPIC is disabled or in
    /// x2APIC mode.
    pub fn mmio_read(&mut self, offset: u64, data: &mut [u8]) {
        if !self.enabled() || self.x2apic() {
            data.fill(0xff);
            return;
        }
        data.fill(0);
        let within = (offset & 0xf) as usize;
        if within + data.len() > 4 {
            self.bad_accesses += 1;
        }
        let off = (offset & 0xff0) as u32;
        let v = match self.read_reg(off) {
            Some(v) => v,
            None => {
                self.signal_error(ESR_ILLEGAL_REGISTER);
                0
            }
        };
        let bytes = v.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            if let Some(&x) = bytes.get(within + i) {
                *b = x;
            }
        }
    }

    /// A write to the xAPIC page at `offset`: only aligned 32-bit writes take effect, as KVM
    /// does; writes to read-only registers are ignored; reserved ones set the illegal-register
    /// error.
    pub fn mmio_write(&mut self, offset: u64, data: &[u8]) {
        if !self.enabled() || self.x2apic() {
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            self.bad_accesses += 1;
            return;
        };
        if offset & 0xf != 0 {
            self.bad_accesses += 1;
            return;
        }
        let off = (offset & 0xff0) as u32;
        let read_only = matches!(off, 0x30 | 0x90 | 0xa0 | 0xc0 | 0x100..=0x270 | 0x390);
        if !read_only && !self.write_reg(off, u32::from_le_bytes(bytes)) {
            self.signal_error(ESR_ILLEGAL_REGISTER);
        }
    }

    // ---- MSRs ----

    /// Whether `msr` belongs to the LAPIC (IA32_APIC_BASE, IA32_TSC_DEADLINE, x2APIC range).
    pub fn handles_msr(msr: u32) -> bool {
        matches!(msr, MSR_APIC_BASE | MSR_TSC_DEADLINE | 0x800..=0x8ff)
    }

    /// IA32_APIC_BASE.
    pub fn apic_base(&self) -> u64 {
        self.apic_base
    }

    /// RDMSR of a LAPIC MSR. x2APIC registers fault outside x2APIC mode, and so do write-only
    /// and reserved ones.
    ///
    /// # Errors
    /// [`GpFault`] for the guest.
    pub fn read_msr(&self, msr: u32) -> Result<u64, GpFault> {
        match msr {
            MSR_APIC_BASE => Ok(self.apic_base),
            MSR_TSC_DEADLINE => Ok(self.tsc_deadline()),
            0x830 if self.x2apic() => Ok(self.icr),
            0x800..=0x8ff if self.x2apic() => {
                let off = (msr - 0x800) << 4;
                if x2apic_readable(off) {
                    self.read_reg(off).map(u64::from).ok_or(GpFault)
                } else {
                    Err(GpFault)
                }
            }
            _ => Err(GpFault),
        }
    }

    /// WRMSR of a LAPIC MSR.
    ///
    /// # Errors
    /// [`GpFault`] for the guest: an invalid IA32_APIC_BASE value or mode transition, an
    /// x2APIC register outside x2APIC mode, a read-only or reserved register, reserved bits.
    pub fn write_msr(&mut self, msr: u32, v: u64) -> Result<(), GpFault> {
        match msr {
            MSR_APIC_BASE => return self.set_apic_base(v),
            MSR_TSC_DEADLINE => {
                self.set_tsc_deadline(v);
                return Ok(());
            }
            0x830 if self.x2apic() => {
                self.icr = v & !(1 << 12);
                self.send_ipi();
                return Ok(());
            }
            0x800..=0x8ff if self.x2apic() => {}
            _ => return Err(GpFault),
        }
        let off = (msr - 0x800) << 4;
        let ok = v >> 32 == 0
            && match off {
                0x80 | 0x3f0 => v <= 0xff,
                0xb0 | 0x280 => v == 0,
                0xf0 => v & !0x3ff == 0,
                0x3e0 => v & !0xb == 0,
                0x320..=0x380 => true,
                _ => false,
            };
        if !ok {
            return Err(GpFault);
        }
        if off == 0x3f0 {
            self.accept(v as u8, TriggerMode::Edge); // SELF IPI
        } else {
            self.write_reg(off, v as u32);
        }
        Ok(())
    }

    /// Writes IA32_APIC_BASE: global enable, x2APIC mode, BSP flag and the (recorded, not
    /// remapped) base. Disabling resets the registers; entering x2APIC mode sets the ID to the
    /// initial APIC ID and derives the LDR.
    ///
    /// # Errors
    /// [`GpFault`] for reserved bits, EXTD without EN, x2APIC -> xAPIC or disabled -> x2APIC.
    pub fn set_apic_base(&mut self, v: u64) -> Result<(), GpFault> {
        let mut reserved = 0x2ff | !0u64 << self.cfg.phys_addr_bits.min(63);
        if !self.cfg.x2apic {
            reserved |= BASE_EXTD;
        }
        let (en, x2) = (v & BASE_EN != 0, v & BASE_EXTD != 0);
        let (was_en, was_x2) = (self.enabled(), self.x2apic());
        if v & reserved != 0 || (x2 && !en) || (was_x2 && en && !x2) || (!was_en && x2) {
            return Err(GpFault);
        }
        self.apic_base = v;
        if !en && was_en {
            self.id = self.cfg.apic_id & 0xff;
            self.reset_registers();
        } else if x2 && !was_x2 {
            self.id = self.cfg.apic_id;
            self.ldr = x2apic_ldr(self.id);
        }
        self.publish();
        Ok(())
    }
}

/// Called with a vCPU's index when its own register write made an interrupt deliverable, and
/// whether an NMI is among what is pending (a self-NMI, a LINT pin in NMI mode).
pub type WakeVcpu = Arc<dyn Fn(usize, bool) + Send + Sync>;

/// The xAPIC page (0xFEE00000, 4 KiB) of every vCPU, as one bus device: an access goes to the
/// LAPIC of the vCPU that made it.
pub struct LapicMmio {
    lapics: Vec<Arc<Mutex<Lapic>>>,
    wake: Option<WakeVcpu>,
}

impl std::fmt::Debug for LapicMmio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LapicMmio")
            .field("lapics", &self.lapics.len())
            .finish_non_exhaustive()
    }
}

impl LapicMmio {
    /// The page over `lapics`, indexed by vCPU.
    pub fn new(lapics: Vec<Arc<Mutex<Lapic>>>) -> Self {
        LapicMmio { lapics, wake: None }
    }

    /// Calls `wake` after a write that leaves an interrupt deliverable or an NMI latched (a
    /// self-IPI, an EOI or a TPR write that unblocks one): nothing else flags it for the vCPU, which would otherwise
    /// run on with IF=1 and the vector stuck in the IRR.
    pub fn with_wake(mut self, wake: WakeVcpu) -> Self {
        self.wake = Some(wake);
        self
    }
}

impl BusDevice for LapicMmio {
    fn label(&self) -> &str {
        "lapic"
    }

    fn read(&mut self, vcpu: usize, offset: u64, data: &mut [u8]) {
        match self.lapics.get(vcpu) {
            Some(l) => l
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .mmio_read(offset, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, vcpu: usize, offset: u64, data: &[u8]) {
        if let Some(l) = self.lapics.get(vcpu) {
            let (deliverable, nmi) = {
                let mut l = l.lock().unwrap_or_else(|p| p.into_inner());
                l.mmio_write(offset, data);
                (l.next_interrupt().is_some(), l.nmi_pending())
            };
            if (deliverable || nmi)
                && let Some(wake) = &self.wake
            {
                wake(vcpu, nmi);
            }
        }
    }
}
