//! Interrupt messages on the APIC bus (IPIs and IOAPIC redirections), the machine's side of
//! that bus ([`ApicBus`]), and [`route`], which finds a message's targets from each LAPIC's
//! lock-free [`AddressCell`].

use std::sync::atomic::{AtomicU64, Ordering};

/// How an interrupt message is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    /// The vector, to every target.
    Fixed,
    /// The vector, to one of the targets.
    LowestPriority,
    /// A system-management interrupt (ignored by janus).
    Smi,
    /// A non-maskable interrupt.
    Nmi,
    /// INIT: reset the processor, which then waits for a start-up IPI (APs).
    Init,
    /// Start-up IPI: an AP waiting after INIT starts at `vector << 12` in real mode.
    StartUp,
    /// The vector comes from the 8259A PIC's INTA cycle.
    ExtInt,
}

impl DeliveryMode {
    /// The mode encoded in bits 10:8 of an ICR, LVT or IOAPIC entry, if valid there.
    pub fn from_bits(bits: u32) -> Option<Self> {
        Some(match bits & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::StartUp,
            7 => DeliveryMode::ExtInt,
            _ => return None,
        })
    }
}

/// Edge- or level-triggered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerMode {
    /// Delivered once; no EOI message to the IOAPIC.
    Edge,
    /// Recorded in the TMR; its EOI is broadcast to the IOAPIC.
    Level,
}

/// Who receives a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// By APIC ID (0xFF in xAPIC mode, 0xFFFFFFFF in x2APIC mode: everyone).
    Physical(u32),
    /// By logical ID, matched against each LAPIC's LDR (and DFR in xAPIC mode).
    Logical(u32),
    /// Every LAPIC.
    All,
    /// Every LAPIC except the one with this APIC ID (the "all excluding self" shorthand).
    AllExcept(u32),
}

/// An interrupt message on the APIC bus: an IPI or an IOAPIC redirection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptMessage {
    /// The targets.
    pub destination: Destination,
    /// How to deliver.
    pub mode: DeliveryMode,
    /// The vector (for Fixed and LowestPriority; the start page for StartUp).
    pub vector: u8,
    /// Edge or level.
    pub trigger: TriggerMode,
}

/// The machine's side of the APIC bus. Called with the sending device locked: it must not lock
/// a LAPIC (queue and kick instead; see the module documentation).
pub trait ApicBus: Send + Sync {
    /// Delivers `msg` to the LAPICs it addresses.
    fn deliver(&self, msg: InterruptMessage);
    /// A LAPIC's EOI of a level-triggered `vector`: the machine passes it to the IOAPIC's
    /// [`eoi`](crate::devices::ioapic::Ioapic::eoi).
    fn eoi(&self, vector: u8);
}

/// How a LAPIC is addressed, for [`route`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LapicAddress {
    /// The APIC ID (8 bits in xAPIC mode, 32 in x2APIC mode).
    pub apic_id: u32,
    /// xAPIC logical ID (LDR bits 31:24).
    pub logical_id: u8,
    /// xAPIC DFR flat model (else cluster).
    pub flat: bool,
    /// In x2APIC mode.
    pub x2apic: bool,
    /// Globally enabled (IA32_APIC_BASE.EN).
    pub enabled: bool,
    /// Software-enabled (SVR bit 8): accepts Fixed and LowestPriority messages.
    pub software_enabled: bool,
}

impl LapicAddress {
    /// Whether `dest` addresses this LAPIC.
    pub fn matches(&self, dest: &Destination) -> bool {
        if !self.enabled {
            return false;
        }
        match *dest {
            Destination::All => true,
            Destination::AllExcept(id) => id != self.apic_id,
            Destination::Physical(d) if self.x2apic => d == u32::MAX || d == self.apic_id,
            Destination::Physical(d) => d == 0xff || d == self.apic_id,
            Destination::Logical(d) if self.x2apic => {
                let ldr = x2apic_ldr(self.apic_id);
                d == u32::MAX || (d >> 16 == ldr >> 16 && d & ldr & 0xffff != 0)
            }
            Destination::Logical(d) => {
                let (mda, lid) = (d as u8, self.logical_id);
                if mda == 0xff {
                    true
                } else if self.flat {
                    mda & lid != 0
                } else {
                    mda >> 4 == lid >> 4 && mda & lid & 0xf != 0
                }
            }
        }
    }
}

/// The indices in `lapics` that `msg` goes to. Lowest-priority messages go to one software-
/// enabled target chosen by vector (KVM's "vector hashing"), not by arbitration priority.
pub fn route(msg: &InterruptMessage, lapics: &[LapicAddress]) -> Vec<usize> {
    let lowest = msg.mode == DeliveryMode::LowestPriority;
    let targets: Vec<usize> = lapics
        .iter()
        .enumerate()
        .filter(|(_, a)| a.matches(&msg.destination) && (!lowest || a.software_enabled))
        .map(|(i, _)| i)
        .collect();
    if lowest && !targets.is_empty() {
        vec![targets[usize::from(msg.vector) % targets.len()]]
    } else {
        targets
    }
}

/// The logical ID an x2APIC derives from its ID: cluster in bits 31:16, one bit of 16 below.
pub(super) fn x2apic_ldr(id: u32) -> u32 {
    ((id >> 4) << 16) | (1 << (id & 0xf))
}

/// A LAPIC's [`LapicAddress`], published without a lock so that routers never lock LAPICs.
#[derive(Debug, Default)]
pub struct AddressCell(AtomicU64);

impl AddressCell {
    /// The address as last published.
    pub fn get(&self) -> LapicAddress {
        let v = self.0.load(Ordering::Acquire);
        LapicAddress {
            apic_id: v as u32,
            logical_id: (v >> 32) as u8,
            flat: v & (1 << 40) != 0,
            x2apic: v & (1 << 41) != 0,
            enabled: v & (1 << 42) != 0,
            software_enabled: v & (1 << 43) != 0,
        }
    }

    pub(super) fn set(&self, a: LapicAddress) {
        let v = u64::from(a.apic_id)
            | u64::from(a.logical_id) << 32
            | u64::from(a.flat) << 40
            | u64::from(a.x2apic) << 41
            | u64::from(a.enabled) << 42
            | u64::from(a.software_enabled) << 43;
        self.0.store(v, Ordering::Release);
    }
}
