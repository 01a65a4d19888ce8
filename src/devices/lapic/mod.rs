//! The local APIC of each vCPU: xAPIC registers (MMIO at 0xFEE00000, see [`LapicMmio`]) and
//! x2APIC MSRs (0x800-0x8FF), IA32_APIC_BASE and IA32_TSC_DEADLINE; TPR/PPR, IRR/ISR/TMR, EOI,
//! LVT entries, the timer (one-shot, periodic, TSC-deadline) on the machine's [`Clock`], the
//! error register and IPIs. Also the interrupt messages that LAPICs and the IOAPIC exchange, and
//! [`route`], which finds their targets.
//!
//! Wiring: each LAPIC sends IPIs and EOI broadcasts to an [`ApicBus`] that the machine
//! implements. Lock order: a vCPU holds its LAPIC, then the bus may take the IOAPIC; so the bus
//! (and the IOAPIC's, which is the same) must never lock a LAPIC: it queues each message for its
//! targets ([`route`] over lock-free [`AddressCell`]s) and kicks them; each vCPU thread then
//! hands its queue to [`Lapic::receive`]. Before entering the guest a vCPU calls
//! [`Lapic::poll`] (timer), takes INIT/SIPI/NMI/ExtINT events, and injects
//! [`Lapic::next_interrupt`] with [`Lapic::acknowledge`].
//!
//! Simplified: lowest-priority delivery picks a target by vector, not by arbitration priority;
//! no focus processor, EOI-broadcast suppression, CMCI LVT or remote read; the thermal and
//! performance LVTs have no sources; a relocated IA32_APIC_BASE is recorded but the page stays
//! where the machine mapped it; SMIs are ignored; LINT polarity is ignored; the timer's bus
//! clock is 1 GHz.

use std::sync::Arc;

use crate::clock::{Clock, Timer};

mod message;
mod regs;
#[cfg(test)]
mod tests;

use message::x2apic_ldr;
pub use message::{
    AddressCell, ApicBus, DeliveryMode, Destination, InterruptMessage, LapicAddress, TriggerMode,
    route,
};
pub use regs::{GpFault, LapicMmio};

/// The architectural default base of the xAPIC registers.
pub const APIC_DEFAULT_BASE: u64 = 0xfee0_0000;
/// IA32_APIC_BASE.
pub const MSR_APIC_BASE: u32 = 0x1b;
/// IA32_TSC_DEADLINE.
pub const MSR_TSC_DEADLINE: u32 = 0x6e0;
/// The LAPIC timer's input ("bus") clock before the divider: 1 GHz, as KVM and QEMU use.
pub const APIC_TIMER_HZ: u64 = 1_000_000_000;

const BASE_BSP: u64 = 1 << 8;
const BASE_EXTD: u64 = 1 << 10;
const BASE_EN: u64 = 1 << 11;
/// Version 0x14 (integrated APIC), six LVT entries.
const VERSION: u32 = 0x14 | (5 << 16);

const LVT_TIMER: usize = 0;
const LVT_LINT0: usize = 3;
const LVT_ERROR: usize = 5;
const LVT_MASKED: u32 = 1 << 16;
const LVT_REMOTE_IRR: u32 = 1 << 14;
const LVT_LEVEL: u32 = 1 << 15;
const SVR_ENABLE: u32 = 1 << 8;

const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
const ESR_RECV_ILLEGAL_VECTOR: u32 = 1 << 6;
const ESR_ILLEGAL_REGISTER: u32 = 1 << 7;

// Timer modes (LVT timer bits 18:17); 0 is one-shot.
const TIMER_PERIODIC: u32 = 1;
const TIMER_TSC_DEADLINE: u32 = 2;

/// What a LAPIC is and what the vCPU model offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LapicConfig {
    /// The initial APIC ID (xAPIC uses its low 8 bits).
    pub apic_id: u32,
    /// The bootstrap processor (IA32_APIC_BASE.BSP, LINT0 in ExtINT mode at reset).
    pub bsp: bool,
    /// CPUID advertises x2APIC (else IA32_APIC_BASE.EXTD is reserved).
    pub x2apic: bool,
    /// CPUID advertises the TSC-deadline timer mode.
    pub tsc_deadline: bool,
    /// MAXPHYADDR: IA32_APIC_BASE bits at and above it are reserved.
    pub phys_addr_bits: u8,
}

impl LapicConfig {
    /// A LAPIC with every feature, for vCPU `apic_id`, BSP if it is 0.
    pub fn new(apic_id: u32) -> Self {
        LapicConfig {
            apic_id,
            bsp: apic_id == 0,
            x2apic: true,
            tsc_deadline: true,
            phys_addr_bits: 46,
        }
    }
}

/// One local APIC.
pub struct Lapic {
    cfg: LapicConfig,
    clock: Clock,
    timer: Timer,
    bus: Option<Arc<dyn ApicBus>>,
    address: Arc<AddressCell>,
    apic_base: u64,
    id: u32,
    tpr: u8,
    ldr: u32,
    dfr: u32,
    svr: u32,
    isr: [u32; 8],
    tmr: [u32; 8],
    irr: [u32; 8],
    esr: u32,
    esr_pending: u32,
    icr: u64,
    /// Timer, thermal, performance, LINT0, LINT1, error.
    lvt: [u32; 6],
    initial_count: u32,
    dcr: u32,
    /// When the current count was `initial_count`, and the next expiry, in clock ns.
    timer_start: u64,
    timer_next: Option<u64>,
    tsc_deadline: u64,
    lint_level: [bool; 2],
    nmi: bool,
    init: bool,
    sipi: Option<u8>,
    wait_for_sipi: bool,
    extint: bool,
    /// Timer expiries (periodic expiries coalesced by a late poll count once each).
    pub timer_fires: u64,
    /// MMIO accesses of a width or alignment the xAPIC does not support (ignored).
    pub bad_accesses: u64,
}

impl std::fmt::Debug for Lapic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lapic")
            .field("apic_base", &format_args!("{:#x}", self.apic_base))
            .field("id", &self.id)
            .field("tpr", &self.tpr)
            .field("svr", &format_args!("{:#x}", self.svr))
            .field("irr", &self.irr)
            .field("isr", &self.isr)
            .field("lvt", &self.lvt)
            .field("timer_next", &self.timer_next)
            .finish_non_exhaustive()
    }
}

fn highest(bits: &[u32; 8]) -> Option<u8> {
    (0..8)
        .rev()
        .find(|&i| bits[i] != 0)
        .map(|i| (i * 32 + 31 - bits[i].leading_zeros() as usize) as u8)
}

fn set_bit(bits: &mut [u32; 8], v: u8, on: bool) {
    let (w, b) = (usize::from(v >> 5), 1u32 << (v & 31));
    if on {
        bits[w] |= b;
    } else {
        bits[w] &= !b;
    }
}

fn bit(bits: &[u32; 8], v: u8) -> bool {
    bits[usize::from(v >> 5)] & (1 << (v & 31)) != 0
}

impl Lapic {
    /// A LAPIC in its power-up state (enabled in xAPIC mode at [`APIC_DEFAULT_BASE`], software-
    /// disabled, LVTs masked but the BSP's LINT0 in ExtINT mode so the PIC reaches it; an AP
    /// waits for INIT and SIPI) whose timer runs on `clock`.
    pub fn new(cfg: LapicConfig, clock: &Clock) -> Self {
        let mut l = Lapic {
            cfg,
            timer: clock.timer(&format!("lapic{}", cfg.apic_id)),
            clock: clock.clone(),
            bus: None,
            address: Arc::default(),
            apic_base: APIC_DEFAULT_BASE | BASE_EN | if cfg.bsp { BASE_BSP } else { 0 },
            id: cfg.apic_id & 0xff,
            tpr: 0,
            ldr: 0,
            dfr: u32::MAX,
            svr: 0xff,
            isr: [0; 8],
            tmr: [0; 8],
            irr: [0; 8],
            esr: 0,
            esr_pending: 0,
            icr: 0,
            lvt: [LVT_MASKED; 6],
            initial_count: 0,
            dcr: 0,
            timer_start: 0,
            timer_next: None,
            tsc_deadline: 0,
            lint_level: [false; 2],
            nmi: false,
            init: false,
            sipi: None,
            wait_for_sipi: !cfg.bsp,
            extint: false,
            timer_fires: 0,
            bad_accesses: 0,
        };
        l.reset_registers();
        l
    }

    /// Connects the APIC bus for IPIs and EOI broadcasts.
    pub fn set_bus(&mut self, bus: Arc<dyn ApicBus>) {
        self.bus = Some(bus);
    }

    /// The lock-free view of this LAPIC's address, for the machine's router.
    pub fn address_cell(&self) -> Arc<AddressCell> {
        self.address.clone()
    }

    /// This LAPIC's address now.
    pub fn address(&self) -> LapicAddress {
        self.address.get()
    }

    fn enabled(&self) -> bool {
        self.apic_base & BASE_EN != 0
    }

    fn x2apic(&self) -> bool {
        self.apic_base & BASE_EXTD != 0
    }

    fn software_enabled(&self) -> bool {
        self.svr & SVR_ENABLE != 0
    }

    fn publish(&self) {
        self.address.set(LapicAddress {
            apic_id: self.id,
            logical_id: (self.ldr >> 24) as u8,
            flat: self.dfr >> 28 == 0xf,
            x2apic: self.x2apic(),
            enabled: self.enabled(),
            software_enabled: self.enabled() && self.software_enabled(),
        });
    }

    /// The register state of RESET and INIT (the ID and IA32_APIC_BASE are kept).
    fn reset_registers(&mut self) {
        self.tpr = 0;
        self.ldr = if self.x2apic() {
            x2apic_ldr(self.id)
        } else {
            0
        };
        self.dfr = u32::MAX;
        self.svr = 0xff;
        self.isr = [0; 8];
        self.tmr = [0; 8];
        self.irr = [0; 8];
        self.esr = 0;
        self.esr_pending = 0;
        self.icr = 0;
        self.lvt = [LVT_MASKED; 6];
        if self.cfg.bsp {
            self.lvt[LVT_LINT0] = 0x700; // ExtINT, unmasked: the PIC's virtual wire
        }
        self.initial_count = 0;
        self.dcr = 0;
        self.timer_next = None;
        self.tsc_deadline = 0;
        self.timer.clear();
        self.publish();
    }

    // ---- interrupt state ----

    /// Sets `vector` in the IRR (TMR per `trigger`). Vectors below 16 are illegal: they set the
    /// receive-illegal-vector error instead.
    pub fn accept(&mut self, vector: u8, trigger: TriggerMode) {
        if vector < 16 {
            self.signal_error(ESR_RECV_ILLEGAL_VECTOR);
            return;
        }
        set_bit(&mut self.irr, vector, true);
        set_bit(&mut self.tmr, vector, trigger == TriggerMode::Level);
    }

    fn signal_error(&mut self, bits: u32) {
        self.esr_pending |= bits;
        let lvt = self.lvt[LVT_ERROR];
        if lvt & LVT_MASKED == 0 && lvt as u8 >= 16 {
            set_bit(&mut self.irr, lvt as u8, true);
            set_bit(&mut self.tmr, lvt as u8, false);
        }
    }

    /// The processor priority: TPR, or the class of the highest vector in service if higher.
    pub fn ppr(&self) -> u8 {
        let isrv = highest(&self.isr).unwrap_or(0);
        if self.tpr >> 4 >= isrv >> 4 {
            self.tpr
        } else {
            isrv & 0xf0
        }
    }

    fn apr(&self) -> u8 {
        let top = highest(&self.irr)
            .unwrap_or(0)
            .max(highest(&self.isr).unwrap_or(0));
        if self.tpr >> 4 >= top >> 4 {
            self.tpr
        } else {
            top & 0xf0
        }
    }

    /// The highest requested vector whose priority class is above the PPR's, if the LAPIC is
    /// enabled: the interrupt the vCPU should take next (when RFLAGS.IF allows).
    pub fn next_interrupt(&self) -> Option<u8> {
        if !self.enabled() {
            return None;
        }
        let v = highest(&self.irr)?;
        (v >> 4 > self.ppr() >> 4).then_some(v)
    }

    /// The vCPU took `vector` (from [`Lapic::next_interrupt`]): IRR -> ISR.
    pub fn acknowledge(&mut self, vector: u8) {
        if bit(&self.irr, vector) {
            set_bit(&mut self.irr, vector, false);
            set_bit(&mut self.isr, vector, true);
        }
    }

    /// The spurious-interrupt vector (SVR bits 7:0).
    pub fn spurious_vector(&self) -> u8 {
        self.svr as u8
    }

    fn eoi(&mut self) {
        let Some(v) = highest(&self.isr) else { return };
        set_bit(&mut self.isr, v, false);
        for pin in 0..2 {
            let lvt = &mut self.lvt[LVT_LINT0 + pin];
            if *lvt & LVT_REMOTE_IRR != 0 && *lvt as u8 == v {
                *lvt &= !LVT_REMOTE_IRR;
                let level = self.lint_level[pin];
                self.lint_level[pin] = false;
                self.set_lint(pin, level);
            }
        }
        if bit(&self.tmr, v)
            && let Some(bus) = &self.bus
        {
            bus.eoi(v);
        }
    }

    /// The TPR as CR8 shows it (bits 7:4).
    pub fn cr8(&self) -> u64 {
        u64::from(self.tpr >> 4)
    }

    /// MOV to CR8.
    pub fn set_cr8(&mut self, v: u64) {
        self.tpr = ((v & 0xf) << 4) as u8;
    }

    /// Takes a message routed to this LAPIC. A globally disabled LAPIC ignores everything; a
    /// software-disabled one drops Fixed and LowestPriority messages.
    pub fn receive(&mut self, msg: &InterruptMessage) {
        if !self.enabled() {
            return;
        }
        match msg.mode {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                if self.software_enabled() {
                    self.accept(msg.vector, msg.trigger);
                }
            }
            // A processor waiting for its start-up IPI takes no NMI (it would run it before
            // any IDT of its own); INIT drops one latched before it.
            DeliveryMode::Nmi => self.nmi = !self.wait_for_sipi,
            DeliveryMode::Init => {
                self.reset_registers();
                self.nmi = false;
                self.init = true;
                self.sipi = None;
                self.wait_for_sipi = self.apic_base & BASE_BSP == 0;
            }
            DeliveryMode::StartUp => {
                if self.wait_for_sipi {
                    self.wait_for_sipi = false;
                    self.sipi = Some(msg.vector);
                }
            }
            DeliveryMode::ExtInt => self.extint = true,
            DeliveryMode::Smi => {}
        }
    }

    /// Sets the level of LINT0 (`pin` 0) or LINT1 (1) as its LVT entry says: Fixed (edge or
    /// level with remote IRR), NMI on a rising edge; ExtINT is answered by
    /// [`Lapic::accepts_pic_interrupts`] instead.
    pub fn set_lint(&mut self, pin: usize, high: bool) {
        let Some(prev) = self.lint_level.get(pin).copied() else {
            return;
        };
        self.lint_level[pin] = high;
        let lvt = self.lvt[LVT_LINT0 + pin];
        if !self.enabled() || lvt & LVT_MASKED != 0 {
            return;
        }
        let rising = high && !prev;
        match (DeliveryMode::from_bits(lvt >> 8), lvt & LVT_LEVEL != 0) {
            // Level: delivered while high, once until the EOI clears remote IRR.
            (Some(DeliveryMode::Fixed), true) if high && lvt & LVT_REMOTE_IRR == 0 => {
                self.lvt[LVT_LINT0 + pin] |= LVT_REMOTE_IRR;
                self.accept(lvt as u8, TriggerMode::Level);
            }
            (Some(DeliveryMode::Fixed), false) if rising => {
                self.accept(lvt as u8, TriggerMode::Edge)
            }
            (Some(DeliveryMode::Nmi), _) if rising => self.nmi = true,
            _ => {}
        }
    }

    /// Whether the PIC's INTR reaches this vCPU: the LAPIC is globally disabled (a CPU without
    /// one), or LINT0 is an unmasked ExtINT entry (virtual wire mode, as on the BSP at reset).
    pub fn accepts_pic_interrupts(&self) -> bool {
        let lvt = self.lvt[LVT_LINT0];
        !self.enabled() || (lvt & LVT_MASKED == 0 && (lvt >> 8) & 7 == 7)
    }

    /// Whether an NMI is latched (an NMI message, or a LINT pin in NMI mode that rose).
    pub fn nmi_pending(&self) -> bool {
        self.nmi
    }

    /// Takes a pending NMI.
    pub fn take_nmi(&mut self) -> bool {
        std::mem::take(&mut self.nmi)
    }

    /// Takes a pending INIT: the machine resets the vCPU (an AP then waits for a SIPI).
    pub fn take_init(&mut self) -> bool {
        std::mem::take(&mut self.init)
    }

    /// Takes a start-up IPI's vector: the AP starts in real mode at CS = vector << 8, IP = 0.
    pub fn take_sipi(&mut self) -> Option<u8> {
        self.sipi.take()
    }

    /// Takes a pending ExtINT message: the vector comes from [`Pic::acknowledge`](super::pic::Pic::acknowledge).
    pub fn take_extint(&mut self) -> bool {
        std::mem::take(&mut self.extint)
    }

    /// Whether the vCPU is in wait-for-SIPI (an AP before start-up, or after INIT).
    pub fn waiting_for_sipi(&self) -> bool {
        self.wait_for_sipi
    }

    /// Whether something should wake a halted vCPU: an interrupt above the PPR, or an NMI,
    /// INIT, SIPI or ExtINT event.
    pub fn has_event(&self) -> bool {
        self.next_interrupt().is_some()
            || self.nmi
            || self.init
            || self.sipi.is_some()
            || self.extint
    }

    // ---- timer ----

    fn timer_mode(&self) -> u32 {
        (self.lvt[LVT_TIMER] >> 17) & 3
    }

    /// The divide configuration's divisor (1 to 128).
    fn divisor(&self) -> u64 {
        let v = (self.dcr & 3) | ((self.dcr >> 1) & 4);
        1 << ((v + 1) & 7)
    }

    fn tick_ns(&self) -> u64 {
        self.divisor() * crate::clock::NS_PER_SEC / APIC_TIMER_HZ
    }

    fn current_count(&self) -> u32 {
        if self.timer_mode() == TIMER_TSC_DEADLINE || self.timer_next.is_none() {
            return 0;
        }
        let n = u64::from(self.initial_count);
        let elapsed = self.clock.now_ns().saturating_sub(self.timer_start) / self.tick_ns();
        let left = if self.timer_mode() == TIMER_PERIODIC {
            n - elapsed % n
        } else {
            n.saturating_sub(elapsed)
        };
        left as u32
    }

    fn arm_count(&mut self, count: u32) {
        self.initial_count = count;
        if count == 0 {
            self.timer_next = None;
        } else {
            self.timer_start = self.clock.now_ns();
            self.timer_next = Some(self.timer_start + u64::from(count) * self.tick_ns());
        }
        self.timer.set(self.timer_next);
    }

    /// Fires the timer if its deadline has passed (the LVT timer vector unless masked) and
    /// re-arms the clock timer. Call it before looking for interrupts and whenever the clock
    /// passes this LAPIC's deadline; cheap otherwise.
    pub fn poll(&mut self) {
        let now = self.clock.now_ns();
        let Some(next) = self.timer_next.filter(|&n| n <= now) else {
            return;
        };
        self.timer_next = match self.timer_mode() {
            TIMER_PERIODIC => {
                let period = u64::from(self.initial_count) * self.tick_ns();
                Some(next + ((now - next) / period + 1) * period)
            }
            TIMER_TSC_DEADLINE => {
                self.tsc_deadline = 0;
                None
            }
            _ => None,
        };
        self.timer.set(self.timer_next);
        self.timer_fires += 1;
        let lvt = self.lvt[LVT_TIMER];
        if lvt & LVT_MASKED == 0 {
            self.accept(lvt as u8, TriggerMode::Edge);
        }
    }

    /// One line on the state that decides what this LAPIC delivers next (for reports on a
    /// guest that stopped making progress): the timer, the highest vectors requested and in
    /// service, the task priority.
    pub fn summary(&self) -> String {
        let mode = match self.timer_mode() {
            TIMER_PERIODIC => "periodic",
            TIMER_TSC_DEADLINE => "TSC-deadline",
            0 => "one-shot",
            _ => "reserved mode",
        };
        let now = self.clock.now_ns();
        let timer = match self.timer_next {
            Some(t) if t > now => format!("due in {} us", (t - now) / 1000),
            Some(t) => format!("{} us overdue", (now - t) / 1000),
            None => "disarmed".into(),
        };
        let lvt = self.lvt[LVT_TIMER];
        let vector = |v: Option<u8>| v.map_or("none".into(), |v| format!("{v:#04x}"));
        format!(
            "LAPIC {}: timer {mode} {timer}{}, vector {:#04x}; IRR {}, ISR {}, TPR {:#04x}",
            if self.enabled() && self.software_enabled() {
                "on"
            } else {
                "off"
            },
            if lvt & LVT_MASKED != 0 {
                " (masked)"
            } else {
                ""
            },
            lvt & 0xff,
            vector(highest(&self.irr)),
            vector(highest(&self.isr)),
            self.tpr
        )
    }

    /// The virtual time of the next timer expiry, if armed.
    pub fn deadline(&self) -> Option<u64> {
        self.timer_next
    }

    /// IA32_TSC_DEADLINE as read: the armed deadline in TSC-deadline mode, else 0.
    pub fn tsc_deadline(&self) -> u64 {
        if self.enabled() && self.timer_mode() == TIMER_TSC_DEADLINE {
            self.tsc_deadline
        } else {
            0
        }
    }

    /// Writes IA32_TSC_DEADLINE: arms the timer for that TSC value (0 disarms); ignored outside
    /// TSC-deadline mode.
    pub fn set_tsc_deadline(&mut self, tsc: u64) {
        if !self.enabled() || self.timer_mode() != TIMER_TSC_DEADLINE {
            return;
        }
        self.tsc_deadline = tsc;
        self.timer_next = (tsc != 0).then(|| self.clock.tsc_to_ns(tsc));
        self.timer.set(self.timer_next);
    }
}
