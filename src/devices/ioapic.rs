//! The I/O APIC at 0xFEC00000 (an 82093AA/ICH-style part, version 0x20, 24 pins): the
//! IOREGSEL/IOWIN window, ID, version and arbitration registers, the redirection table, edge and
//! level triggering with remote IRR, the EOI broadcast from the LAPICs and the ICH's directed
//! EOI register at offset 0x40.
//!
//! Wiring: devices drive pins through [`IoapicIrq`] (an [`IrqLine`]); on a PC the ISA IRQs go to
//! both the PIC and pins 0-15 (IRQ 0 to pin 2 by the usual override), which the machine does by
//! driving both lines. Redirected interrupts leave as [`InterruptMessage`]s on the [`ApicBus`]
//! given to [`Ioapic::set_bus`]; a LAPIC's EOI of a level-triggered vector comes back through
//! [`Ioapic::eoi`]. Lock order: device -> IOAPIC -> APIC bus, which must not lock a LAPIC.
//!
//! Simplified: the polarity bit is stored but levels mean "asserted"; delivery is instantaneous
//! (delivery status reads 0); destinations are 8 bits (no extended destination ID or interrupt
//! remapping, so x2APIC IDs above 254 cannot be reached); physical 0xFF means every LAPIC.

use std::sync::{Arc, Mutex};

use super::IrqLine;
use super::lapic::{ApicBus, DeliveryMode, Destination, InterruptMessage, TriggerMode};
use crate::bus::BusDevice;

/// The IOAPIC's usual MMIO base.
pub const IOAPIC_BASE: u64 = 0xfec0_0000;
/// The size of its MMIO window.
pub const IOAPIC_SIZE: u64 = 0x1000;
/// Redirection table entries (pins).
pub const IOAPIC_PINS: usize = 24;

const VERSION: u32 = 0x20 | ((IOAPIC_PINS as u32 - 1) << 16);

const RTE_DEST_LOGICAL: u64 = 1 << 11;
const RTE_DELIVERY_STATUS: u64 = 1 << 12;
const RTE_REMOTE_IRR: u64 = 1 << 14;
const RTE_LEVEL: u64 = 1 << 15;
const RTE_MASKED: u64 = 1 << 16;
/// Bits the guest can write: vector, delivery and destination mode, polarity, trigger, mask,
/// destination.
const RTE_WRITABLE: u64 = 0xff00_0000_0001_afff;

/// The I/O APIC.
pub struct Ioapic {
    id: u8,
    regsel: u8,
    redir: [u64; IOAPIC_PINS],
    /// Pin levels as last set (asserted = true, whatever the polarity bit says).
    lines: u32,
    bus: Option<Arc<dyn ApicBus>>,
    /// Messages sent.
    pub delivered: u64,
    /// Accesses of a width or offset the part does not decode (ignored).
    pub bad_accesses: u64,
}

impl std::fmt::Debug for Ioapic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ioapic")
            .field("id", &self.id)
            .field("regsel", &self.regsel)
            .field("lines", &format_args!("{:#x}", self.lines))
            .field("redir", &self.redir)
            .finish_non_exhaustive()
    }
}

impl Ioapic {
    /// An IOAPIC with APIC ID `id`, every pin masked (the reset state).
    pub fn new(id: u8) -> Self {
        Ioapic {
            id,
            regsel: 0,
            redir: [RTE_MASKED; IOAPIC_PINS],
            lines: 0,
            bus: None,
            delivered: 0,
            bad_accesses: 0,
        }
    }

    /// An IOAPIC shared between the MMIO bus, its pins and the EOI path.
    pub fn shared(id: u8) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self::new(id)))
    }

    /// Connects the APIC bus that carries its messages to the LAPICs.
    pub fn set_bus(&mut self, bus: Arc<dyn ApicBus>) {
        self.bus = Some(bus);
    }

    /// Sets the level of `pin` (0-23; others are ignored). An edge entry sends on each rising
    /// edge (lost while masked, as on the real part); a level entry sends while the pin is
    /// asserted and remote IRR is clear.
    pub fn set_irq(&mut self, pin: usize, high: bool) {
        if pin >= IOAPIC_PINS {
            return;
        }
        let bit = 1u32 << pin;
        let was = self.lines & bit != 0;
        if high {
            self.lines |= bit;
        } else {
            self.lines &= !bit;
        }
        if high && (!was || self.redir[pin] & RTE_LEVEL != 0) {
            self.service(pin);
        }
    }

    /// A LAPIC's EOI of `vector`: clears remote IRR of the level-triggered pins with that
    /// vector, which send again if still asserted.
    pub fn eoi(&mut self, vector: u8) {
        for pin in 0..IOAPIC_PINS {
            let e = self.redir[pin];
            if e & RTE_REMOTE_IRR != 0 && e as u8 == vector {
                self.redir[pin] &= !RTE_REMOTE_IRR;
                if self.lines & (1 << pin) != 0 {
                    self.service(pin);
                }
            }
        }
    }

    /// Whether some unmasked redirection entry sends NMIs: a device line can then wake a
    /// processor halted with interrupts disabled.
    pub fn routes_nmi(&self) -> bool {
        self.redir.iter().any(|e| {
            e & RTE_MASKED == 0
                && DeliveryMode::from_bits((*e >> 8) as u32) == Some(DeliveryMode::Nmi)
        })
    }

    /// Redirection entry `pin` as the guest would read it.
    pub fn entry(&self, pin: usize) -> u64 {
        self.redir.get(pin).copied().unwrap_or(0)
    }

    /// Sends pin `pin`'s interrupt if its entry allows.
    fn service(&mut self, pin: usize) {
        let e = self.redir[pin];
        if e & RTE_MASKED != 0 {
            return;
        }
        let mode = match DeliveryMode::from_bits((e >> 8) as u32) {
            Some(DeliveryMode::StartUp) | None => return, // reserved in a redirection entry
            Some(m) => m,
        };
        let level = e & RTE_LEVEL != 0
            && matches!(mode, DeliveryMode::Fixed | DeliveryMode::LowestPriority);
        if level {
            if e & RTE_REMOTE_IRR != 0 {
                return;
            }
            self.redir[pin] |= RTE_REMOTE_IRR;
        }
        let dest = (e >> 56) as u32;
        let destination = if e & RTE_DEST_LOGICAL != 0 {
            Destination::Logical(dest)
        } else if dest == 0xff {
            Destination::All
        } else {
            Destination::Physical(dest)
        };
        let msg = InterruptMessage {
            destination,
            mode,
            vector: e as u8,
            trigger: if level {
                TriggerMode::Level
            } else {
                TriggerMode::Edge
            },
        };
        self.delivered += 1;
        if let Some(bus) = &self.bus {
            bus.deliver(msg);
        }
    }

    fn read_register(&self) -> u32 {
        match self.regsel {
            0x00 | 0x02 => u32::from(self.id) << 24, // ID; arbitration ID follows it
            0x01 => VERSION,
            r @ 0x10..=0x3f => {
                let e = self.redir[usize::from(r - 0x10) / 2];
                if r & 1 == 0 {
                    e as u32
                } else {
                    (e >> 32) as u32
                }
            }
            _ => u32::MAX,
        }
    }

    fn write_register(&mut self, v: u32) {
        match self.regsel {
            0x00 => self.id = ((v >> 24) & 0xf) as u8, // bits 27:24; the rest are reserved
            r @ 0x10..=0x3f => {
                let pin = usize::from(r - 0x10) / 2;
                let old = self.redir[pin];
                let new = if r & 1 == 0 {
                    (old & !0xffff_ffff) | u64::from(v)
                } else {
                    (old & 0xffff_ffff) | u64::from(v) << 32
                };
                let mut e = (new & RTE_WRITABLE) | (old & (RTE_REMOTE_IRR | RTE_DELIVERY_STATUS));
                if e & RTE_LEVEL == 0 {
                    // Linux clears a stuck remote IRR by switching the entry to edge.
                    e &= !RTE_REMOTE_IRR;
                }
                self.redir[pin] = e;
                if e & RTE_LEVEL != 0 && self.lines & (1 << pin) != 0 {
                    self.service(pin); // unmasked with the pin asserted
                }
            }
            _ => {} // version and arbitration are read-only; others do not exist
        }
    }
}

impl BusDevice for Ioapic {
    fn label(&self) -> &str {
        "ioapic"
    }

    /// IOREGSEL (0x00) and IOWIN (0x10) read as 32-bit registers of which any bytes may be read;
    /// everything else reads as 0.
    fn read(&mut self, _vcpu: usize, offset: u64, data: &mut [u8]) {
        let dword = match offset & !3 {
            0x00 => u32::from(self.regsel),
            0x10 => self.read_register(),
            _ => 0,
        };
        let bytes = dword.to_le_bytes();
        let within = (offset & 3) as usize;
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(within + i).copied().unwrap_or(0);
        }
    }

    /// IOREGSEL takes the low byte of any write at 0x00; IOWIN only aligned 32-bit writes; the
    /// EOI register (0x40) takes a vector.
    fn write(&mut self, _vcpu: usize, offset: u64, data: &[u8]) {
        match (offset, data) {
            (0x00, [v, ..]) => self.regsel = *v,
            (0x10, &[a, b, c, d]) => self.write_register(u32::from_le_bytes([a, b, c, d])),
            (0x40, [v, ..]) => self.eoi(*v),
            _ => self.bad_accesses += 1,
        }
    }
}

/// One pin of the IOAPIC, for a device to drive.
#[derive(Debug)]
pub struct IoapicIrq {
    ioapic: Arc<Mutex<Ioapic>>,
    pin: usize,
}

impl IoapicIrq {
    /// Pin `pin` (0-23) of `ioapic`.
    pub fn new(ioapic: Arc<Mutex<Ioapic>>, pin: usize) -> Self {
        IoapicIrq { ioapic, pin }
    }
}

impl IrqLine for IoapicIrq {
    fn set_level(&self, high: bool) {
        self.ioapic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_irq(self.pin, high);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Rec(Mutex<Vec<InterruptMessage>>);
    impl ApicBus for Rec {
        fn deliver(&self, msg: InterruptMessage) {
            self.0.lock().unwrap().push(msg);
        }
        fn eoi(&self, _vector: u8) {}
    }
    impl Rec {
        fn take(&self) -> Vec<InterruptMessage> {
            self.0.lock().unwrap().drain(..).collect()
        }
    }

    fn ioapic() -> (Ioapic, Arc<Rec>) {
        let mut io = Ioapic::new(4);
        let rec = Arc::new(Rec::default());
        io.set_bus(rec.clone());
        (io, rec)
    }

    fn reg(io: &mut Ioapic, sel: u8) -> u32 {
        io.write(0, 0, &[sel]);
        let mut b = [0; 4];
        io.read(0, 0x10, &mut b);
        u32::from_le_bytes(b)
    }

    fn set(io: &mut Ioapic, sel: u8, v: u32) {
        io.write(0, 0, &u32::from(sel).to_le_bytes());
        io.write(0, 0x10, &v.to_le_bytes());
    }

    /// Programs pin `pin`: low dword `low`, destination `dest`.
    fn program(io: &mut Ioapic, pin: u8, low: u32, dest: u8) {
        set(io, 0x11 + 2 * pin, u32::from(dest) << 24);
        set(io, 0x10 + 2 * pin, low);
    }

    fn fixed(destination: Destination, vector: u8, trigger: TriggerMode) -> InterruptMessage {
        InterruptMessage {
            destination,
            mode: DeliveryMode::Fixed,
            vector,
            trigger,
        }
    }

    #[test]
    fn identification_registers_and_reset_state() {
        let (mut io, _) = ioapic();
        assert_eq!(reg(&mut io, 0x00), 4 << 24);
        assert_eq!(reg(&mut io, 0x01), 0x0017_0020);
        assert_eq!(reg(&mut io, 0x02), 4 << 24);
        set(&mut io, 0x00, 0x0a00_0000);
        set(&mut io, 0x01, 0);
        set(&mut io, 0x02, 0);
        assert_eq!(reg(&mut io, 0x00), 0x0a00_0000);
        set(&mut io, 0x00, 0xffff_ffff);
        assert_eq!(
            reg(&mut io, 0x00),
            0x0f00_0000,
            "only ID bits 27:24 are writable"
        );
        set(&mut io, 0x00, 0x0a00_0000);
        assert_eq!(reg(&mut io, 0x01), 0x0017_0020, "version is read-only");
        for pin in 0..IOAPIC_PINS as u8 {
            assert_eq!(reg(&mut io, 0x10 + 2 * pin), 0x1_0000, "masked at reset");
            assert_eq!(reg(&mut io, 0x11 + 2 * pin), 0);
        }
        let mut b = [0; 4];
        io.read(0, 0, &mut b);
        assert_eq!(b[0], 0x3f, "IOREGSEL reads back");
        // Read-only and reserved bits do not stick.
        set(&mut io, 0x10, 0xffff_ffff);
        set(&mut io, 0x11, 0xffff_ffff);
        assert_eq!(io.entry(0), 0xff00_0000_0001_afff);
    }

    #[test]
    fn edge_pins_send_on_rising_edges() {
        let (mut io, rec) = ioapic();
        program(&mut io, 4, 0x34, 1);
        io.set_irq(4, true);
        io.set_irq(4, true);
        assert_eq!(
            rec.take(),
            vec![fixed(Destination::Physical(1), 0x34, TriggerMode::Edge)]
        );
        io.set_irq(4, false);
        io.set_irq(4, true);
        assert_eq!(rec.take().len(), 1);
        // Masked edges are lost, and unmasking does not replay them.
        program(&mut io, 4, 0x1_0034, 1);
        io.set_irq(4, false);
        io.set_irq(4, true);
        program(&mut io, 4, 0x34, 1);
        assert!(rec.take().is_empty());
        assert_eq!(io.delivered, 2);
    }

    #[test]
    fn level_pins_with_remote_irr_and_eoi() {
        let (mut io, rec) = ioapic();
        program(&mut io, 10, 0x1_803a, 0); // level, masked
        io.set_irq(10, true);
        assert!(rec.take().is_empty());
        program(&mut io, 10, 0x803a, 0); // unmasking with the pin asserted sends
        assert_eq!(
            rec.take(),
            vec![fixed(Destination::Physical(0), 0x3a, TriggerMode::Level)]
        );
        assert_ne!(io.entry(10) & RTE_REMOTE_IRR, 0);
        io.set_irq(10, true);
        assert!(rec.take().is_empty(), "remote IRR holds further messages");
        io.eoi(0x3b);
        assert!(rec.take().is_empty(), "another vector's EOI");
        io.eoi(0x3a);
        assert_eq!(rec.take().len(), 1, "still asserted: sent again");
        io.set_irq(10, false);
        io.write(0, 0x40, &[0x3a, 0, 0, 0]); // the directed EOI register
        assert!(rec.take().is_empty());
        assert_eq!(io.entry(10) & RTE_REMOTE_IRR, 0);
        // A stuck remote IRR is cleared by switching the entry to edge.
        io.set_irq(10, true);
        assert_eq!(rec.take().len(), 1);
        program(&mut io, 10, 0x1_003a, 0);
        assert_eq!(io.entry(10) & RTE_REMOTE_IRR, 0);
    }

    #[test]
    fn delivery_modes_and_destinations() {
        let (mut io, rec) = ioapic();
        program(&mut io, 1, 0x0931, 0x03); // lowest priority, logical
        program(&mut io, 2, 0x0032, 0xff); // physical broadcast
        program(&mut io, 3, 0x8400, 0); // NMI, level: no remote IRR
        program(&mut io, 5, 0x0700, 0); // ExtINT
        program(&mut io, 6, 0x0600, 0); // StartUp is reserved here
        program(&mut io, 7, 0x0300, 0); // reserved
        for pin in [1, 2, 3, 5, 6, 7] {
            io.set_irq(pin, true);
        }
        let msgs = rec.take();
        assert_eq!(msgs.len(), 4);
        assert_eq!(msgs[0].destination, Destination::Logical(3));
        assert_eq!(msgs[0].mode, DeliveryMode::LowestPriority);
        assert_eq!(msgs[1].destination, Destination::All);
        assert_eq!(
            (msgs[2].mode, msgs[2].trigger),
            (DeliveryMode::Nmi, TriggerMode::Edge)
        );
        assert_eq!(io.entry(3) & RTE_REMOTE_IRR, 0);
        assert_eq!(msgs[3].mode, DeliveryMode::ExtInt);
        io.set_irq(3, true);
        assert_eq!(
            rec.take().len(),
            1,
            "a level NMI pin keeps sending while asserted"
        );
    }

    #[test]
    fn odd_accesses_never_panic() {
        let (mut io, rec) = ioapic();
        io.write(0, 0, &[]);
        io.write(0, 0x40, &[]);
        io.read(0, 0, &mut []);
        io.read(0, 0xfff, &mut [0; 8]);
        io.bad_accesses = 0;
        io.set_irq(24, true);
        io.set_irq(usize::MAX, true);
        io.eoi(0x99);
        assert!(rec.take().is_empty());
        assert_eq!(reg(&mut io, 0x40), u32::MAX, "no such register");
        assert_eq!(reg(&mut io, 0xff), u32::MAX);
        set(&mut io, 0x7f, 1);
        // IOWIN: narrow reads see the register's bytes; narrow writes are ignored.
        io.write(0, 0, &[0x01]);
        let mut b = [0u8; 2];
        io.read(0, 0x12, &mut b);
        assert_eq!(b, [0x17, 0x00]);
        let mut q = [0xaa; 8];
        io.read(0, 0x10, &mut q);
        assert_eq!(q, [0x20, 0, 0x17, 0, 0, 0, 0, 0]);
        io.write(0, 0, &[0x10]);
        io.write(0, 0x10, &[0x33]);
        io.write(0, 0x12, &[0, 0]);
        io.write(0, 0x20, &[1, 2, 3, 4]);
        assert_eq!(io.bad_accesses, 3);
        assert_eq!(io.entry(0), RTE_MASKED);
        let mut z = [0xaa; 4];
        io.read(0, 0x20, &mut z);
        assert_eq!(z, [0; 4]);
        assert_eq!(io.entry(99), 0);
        // A pin driven through the IrqLine adaptor.
        let shared = Ioapic::shared(0);
        shared.lock().unwrap().set_bus(rec.clone());
        program(&mut shared.lock().unwrap(), 9, 0x49, 0);
        IoapicIrq::new(shared.clone(), 9).set_level(true);
        assert_eq!(rec.take().len(), 1);
    }
}
