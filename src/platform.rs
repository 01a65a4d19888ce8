//! The PC's interrupt controllers and timers wired together for every backend: the 8259A pair,
//! the 8254 PIT, the IOAPIC, one local APIC per vCPU, the RTC's periodic interrupt, and the
//! machine clock with a timer thread that fires their deadlines.
//!
//! Interrupts reach a vCPU through [`Platform::interrupt_pending`] (a lock-free flag the backends
//! check whenever the guest can take an interrupt) and [`Platform::acknowledge`] (the INTA cycle:
//! LAPIC first, then the PIC through LINT0/ExtINT on the BSP). Whoever raises an interrupt for a
//! vCPU sets its flag and kicks it, so a running vCPU notices at its next block or KVM entry
//! and a halted one wakes.
//!
//! Lock order (no path takes them the other way): a device -> PIC or IOAPIC -> APIC bus; a vCPU's
//! LAPIC -> APIC bus -> IOAPIC. The APIC bus never locks a LAPIC: it queues messages in the target
//! vCPU's inbox, which the vCPU drains into its LAPIC when it acknowledges.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

use janus_accel::Kicker;

use crate::board;
use crate::bus::{Bus, BusError};
use crate::clock::Clock;
use crate::devices::IrqLine;
use crate::devices::cmos::Cmos;
use crate::devices::ioapic::Ioapic;
use crate::devices::lapic::{
    AddressCell, ApicBus, DeliveryMode, Destination, InterruptMessage, Lapic, LapicConfig,
    LapicMmio, MSR_APIC_BASE, TriggerMode, route,
};
use crate::devices::pic::{Pic, PicPort};
use crate::devices::pit::{Pit, SystemPortB};

/// One vCPU's side of the interrupt wiring.
#[derive(Debug, Default)]
struct CpuLine {
    inbox: Mutex<Vec<InterruptMessage>>,
    pending: AtomicBool,
    /// An INIT is among the messages: the vCPU must reset, whatever it is doing.
    init: AtomicBool,
    /// An NMI is among the messages or latched in the LAPIC (set until the vCPU takes it).
    nmi: AtomicBool,
    kicker: OnceLock<Kicker>,
}

impl CpuLine {
    /// Something may be waiting: set the flag and kick the vCPU.
    fn raise(&self) {
        self.pending.store(true, Ordering::SeqCst);
        if let Some(k) = self.kicker.get() {
            k.kick();
        }
    }
}

/// The machine's side of the APIC bus.
struct Apic {
    cpus: Arc<Vec<CpuLine>>,
    addresses: Vec<Arc<AddressCell>>,
    ioapic: Weak<Mutex<Ioapic>>,
}

impl ApicBus for Apic {
    fn deliver(&self, msg: InterruptMessage) {
        let addrs: Vec<_> = self.addresses.iter().map(|a| a.get()).collect();
        for t in route(&msg, &addrs) {
            if let Some(cpu) = self.cpus.get(t) {
                let mut inbox = cpu.inbox.lock().unwrap_or_else(|p| p.into_inner());
                inbox.push(msg);
                // Under the inbox's lock: whoever takes the messages clears it with them.
                match msg.mode {
                    DeliveryMode::Init => cpu.init.store(true, Ordering::SeqCst),
                    DeliveryMode::Nmi => cpu.nmi.store(true, Ordering::SeqCst),
                    _ => {}
                }
                drop(inbox);
                cpu.raise();
            }
        }
    }

    fn eoi(&self, vector: u8) {
        if let Some(io) = self.ioapic.upgrade() {
            io.lock().unwrap_or_else(|p| p.into_inner()).eoi(vector);
        }
    }
}

/// The PIC's INTR output, wired to the BSP's LINT0: in ExtINT mode (virtual wire) the BSP takes
/// the PIC's vector in its INTA cycle; in NMI mode (or Fixed) a rising edge is an NMI (or that
/// vector) of its LAPIC. (Lock order: a device -> the PIC -> the BSP's LAPIC; nothing that holds
/// a LAPIC takes the PIC.)
struct Intr {
    cpus: Arc<Vec<CpuLine>>,
    bsp: Arc<Mutex<Lapic>>,
}

impl IrqLine for Intr {
    fn set_level(&self, high: bool) {
        let nmi = {
            let mut l = lock(&self.bsp);
            let before = l.nmi_pending();
            l.set_lint(0, high);
            !before && l.nmi_pending()
        };
        if let Some(cpu) = self.cpus.first() {
            if nmi {
                cpu.nmi.store(true, Ordering::SeqCst);
            }
            if high || nmi {
                cpu.raise();
            }
        }
    }
}

/// Whose interrupt controllers a KVM guest uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IrqchipMode {
    /// janus's PIC, PIT, IOAPIC and LAPICs in userspace (every backend).
    #[default]
    User,
    /// KVM's in-kernel PIC, IOAPIC and LAPICs (KVM_CREATE_IRQCHIP); janus's PIT and other
    /// devices raise their ISA lines with KVM_IRQ_LINE.
    Kernel,
}

/// Where ISA lines go when KVM's in-kernel irqchip is in use: (IRQ, level).
pub type KernelLines = Arc<dyn Fn(u8, bool) + Send + Sync>;

/// An ISA interrupt line: drives the PIC input and the IOAPIC pin (IRQ 0 is pin 2, as on PCs),
/// or KVM's in-kernel irqchip once the machine routes lines there.
pub struct IsaIrq {
    pic: Arc<Mutex<Pic>>,
    ioapic: Arc<Mutex<Ioapic>>,
    irq: u8,
    kernel: Arc<OnceLock<KernelLines>>,
}

impl std::fmt::Debug for IsaIrq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsaIrq").field("irq", &self.irq).finish()
    }
}

impl IrqLine for IsaIrq {
    fn set_level(&self, high: bool) {
        if let Some(k) = self.kernel.get() {
            k(self.irq, high);
            return;
        }
        self.pic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_irq(self.irq, high);
        let pin = if self.irq == 0 {
            2
        } else {
            usize::from(self.irq)
        };
        self.ioapic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_irq(pin, high);
    }
}

/// A GSI above the ISA lines: an IOAPIC pin only (no PIC input).
struct GsiLine {
    ioapic: Arc<Mutex<Ioapic>>,
    gsi: u32,
    kernel: Arc<OnceLock<KernelLines>>,
}

impl IrqLine for GsiLine {
    fn set_level(&self, high: bool) {
        if let Some(k) = self.kernel.get() {
            if let Ok(g) = u8::try_from(self.gsi) {
                k(g, high);
            }
            return;
        }
        lock(&self.ioapic).set_irq(self.gsi as usize, high);
    }
}

/// A PCI INTx line on an IOAPIC pin and an 8259 input.
struct PciIntx {
    ioapic: Arc<dyn IrqLine>,
    pic: Arc<Mutex<Pic>>,
    pic_irq: u8,
    kernel: Arc<OnceLock<KernelLines>>,
}

impl IrqLine for PciIntx {
    fn set_level(&self, high: bool) {
        self.ioapic.set_level(high);
        match self.kernel.get() {
            Some(k) => k(self.pic_irq, high),
            None => lock(&self.pic).set_irq(self.pic_irq, high),
        }
    }
}

/// The interrupt message an MSI write of `data` to `address` is (Intel SDM vol. 3, 11.11):
/// address 0xFEEx_xxxx with the destination id in bits 19:12 and logical destination mode in
/// bit 2; data with the vector in bits 7:0, the delivery mode in 10:8 and level trigger in
/// bit 15. `None` for an address outside the interrupt window or a mode MSI cannot carry.
pub fn msi_message(address: u64, data: u32) -> Option<InterruptMessage> {
    if address >> 20 != 0xfee {
        return None;
    }
    let mode = match DeliveryMode::from_bits(data >> 8)? {
        DeliveryMode::StartUp => return None,
        m => m,
    };
    let dest = ((address >> 12) & 0xff) as u32;
    let destination = if address & 1 << 2 != 0 {
        Destination::Logical(dest)
    } else if dest == 0xff {
        Destination::All
    } else {
        Destination::Physical(dest)
    };
    Some(InterruptMessage {
        destination,
        mode,
        vector: data as u8,
        trigger: if data & 1 << 15 != 0 {
            TriggerMode::Level
        } else {
            TriggerMode::Edge
        },
    })
}

impl crate::pci::MsiSink for Platform {
    fn send(&self, address: u64, data: u32) {
        if let Some(k) = self.kernel_msi.get() {
            k(address, data);
            return;
        }
        match msi_message(address, data) {
            Some(m) if self.kernel.get().is_none() => self.apic.deliver(m),
            _ => {
                self.msi_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The interrupt controllers and timers of one machine.
pub struct Platform {
    clock: Clock,
    pic: Arc<Mutex<Pic>>,
    pit: Arc<Mutex<Pit>>,
    ioapic: Arc<Mutex<Ioapic>>,
    lapics: Vec<Arc<Mutex<Lapic>>>,
    cpus: Arc<Vec<CpuLine>>,
    rtc: OnceLock<Arc<Mutex<Cmos>>>,
    wake: Arc<(Mutex<bool>, Condvar)>,
    /// No timer is due before this virtual time (a lower bound kept by the deadline listener;
    /// deterministic time polls only once the clock passes it).
    next_due: Arc<AtomicU64>,
    /// Per vCPU: halted or not started (deterministic time jumps only when all are).
    idle: Vec<AtomicBool>,
    /// KVM's in-kernel irqchip, when the ISA lines go there.
    kernel: Arc<OnceLock<KernelLines>>,
    /// The APIC bus (MSIs are sent on it).
    apic: Arc<dyn ApicBus>,
    /// KVM's in-kernel LAPICs, when MSIs go there (KVM_SIGNAL_MSI).
    kernel_msi: OnceLock<janus_accel::MsiSender>,
    /// MSIs not delivered: not an interrupt message, or `--irqchip kernel` (not wired yet).
    msi_dropped: AtomicU64,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("vcpus", &self.lapics.len())
            .finish_non_exhaustive()
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Platform {
    /// Builds the controllers for `nr_vcpus` vCPUs on `clock`.
    pub fn new(nr_vcpus: usize, clock: Clock) -> Arc<Self> {
        let cpus: Arc<Vec<CpuLine>> = Arc::new((0..nr_vcpus).map(|_| CpuLine::default()).collect());
        let ioapic = Ioapic::shared(board::ioapic_id(nr_vcpus));
        let lapics: Vec<Arc<Mutex<Lapic>>> = (0..nr_vcpus.max(1))
            .map(|i| Arc::new(Mutex::new(Lapic::new(LapicConfig::new(i as u32), &clock))))
            .collect();
        let pic = Pic::shared();
        lock(&pic).set_intr(Arc::new(Intr {
            cpus: cpus.clone(),
            bsp: lapics[0].clone(),
        }));
        let apic: Arc<dyn ApicBus> = Arc::new(Apic {
            cpus: cpus.clone(),
            addresses: lapics.iter().map(|l| lock(l).address_cell()).collect(),
            ioapic: Arc::downgrade(&ioapic),
        });
        lock(&ioapic).set_bus(apic.clone());
        for l in &lapics {
            lock(l).set_bus(apic.clone());
        }
        let pit = Pit::shared(&clock);
        let p = Arc::new(Platform {
            clock: clock.clone(),
            pic,
            pit,
            ioapic,
            lapics,
            cpus,
            rtc: OnceLock::new(),
            wake: Arc::new((Mutex::new(false), Condvar::new())),
            next_due: Arc::new(AtomicU64::new(u64::MAX)),
            idle: (0..nr_vcpus).map(|i| AtomicBool::new(i > 0)).collect(),
            kernel: Arc::new(OnceLock::new()),
            apic,
            kernel_msi: OnceLock::new(),
            msi_dropped: AtomicU64::new(0),
        });
        lock(&p.pit).set_irq(p.isa_irq(board::PIT_IRQ));
        let wake = p.wake.clone();
        let next_due = p.next_due.clone();
        clock.set_deadline_listener(Arc::new(move |ns| {
            next_due.fetch_min(ns, Ordering::AcqRel);
            *lock(&wake.0) = true;
            wake.1.notify_all();
        }));
        p
    }

    /// The interrupt line of ISA IRQ `irq`.
    pub fn isa_irq(&self, irq: u8) -> Arc<dyn IrqLine> {
        Arc::new(IsaIrq {
            pic: self.pic.clone(),
            ioapic: self.ioapic.clone(),
            irq,
            kernel: self.kernel.clone(),
        })
    }

    /// The interrupt line of IOAPIC pin `gsi` alone (the PCI INTx GSIs above the ISA ones), or
    /// of KVM's in-kernel IOAPIC once the machine routes lines there.
    pub fn gsi_line(&self, gsi: u32) -> Arc<dyn IrqLine> {
        Arc::new(GsiLine {
            ioapic: self.ioapic.clone(),
            gsi,
            kernel: self.kernel.clone(),
        })
    }

    /// `--irqchip kernel`: from now on MSIs go to `msi` (KVM_SIGNAL_MSI).
    pub fn route_msis_to_kernel(&self, msi: janus_accel::MsiSender) {
        let _ = self.kernel_msi.set(msi);
    }

    /// A PCI INTx line: IOAPIC pin `gsi` and 8259 IRQ `pic_irq` together (the OS uses one
    /// or the other, as its `_PIC` choice says), or both through KVM_IRQ_LINE under
    /// `--irqchip kernel` (KVM routes GSIs 0-15 to its PIC too).
    pub fn pci_intx_line(&self, gsi: u32, pic_irq: u8) -> Arc<dyn IrqLine> {
        Arc::new(PciIntx {
            ioapic: self.gsi_line(gsi),
            pic: self.pic.clone(),
            pic_irq,
            kernel: self.kernel.clone(),
        })
    }

    /// MSIs that were not delivered (not an interrupt message, or `--irqchip kernel` without
    /// a way to KVM's LAPICs).
    pub fn msi_dropped(&self) -> u64 {
        self.msi_dropped.load(Ordering::Relaxed)
    }

    /// `--irqchip kernel`: from now on every ISA line goes to `lines` (KVM_IRQ_LINE) instead of
    /// janus's PIC and IOAPIC.
    pub fn route_to_kernel(&self, lines: KernelLines) {
        let _ = self.kernel.set(lines);
    }

    /// The machine clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Puts the PIT (0x40-0x43) and port 0x61 (its channel 2 gate and output) on the bus: with
    /// janus's controllers and with KVM's in-kernel irqchip alike (janus's PIT raises IRQ 0
    /// through whichever interrupt controllers are in use).
    ///
    /// # Errors
    /// A range collides with a device already there.
    pub fn attach_pit(&self, pio: &mut Bus) -> Result<(), BusError> {
        pio.insert(
            u64::from(board::PIT_PORT),
            board::PIT_PORT_LEN,
            self.pit.clone(),
        )?;
        pio.insert(
            u64::from(board::SYSTEM_PORT_B),
            1,
            Arc::new(Mutex::new(SystemPortB::new(self.pit.clone()))),
        )?;
        Ok(())
    }

    /// Puts the controllers on the buses: PIC 0x20/0xA0/0x4D0, PIT 0x40, port 0x61, IOAPIC and
    /// LAPIC MMIO.
    ///
    /// # Errors
    /// A range collides with a device already there.
    pub fn attach(&self, pio: &mut Bus, mmio: &mut Bus) -> Result<(), BusError> {
        pio.insert(
            u64::from(board::PIC_MASTER_PORT),
            board::PIC_PORT_LEN,
            Arc::new(Mutex::new(PicPort::master(self.pic.clone()))),
        )?;
        pio.insert(
            u64::from(board::PIC_SLAVE_PORT),
            board::PIC_PORT_LEN,
            Arc::new(Mutex::new(PicPort::slave(self.pic.clone()))),
        )?;
        pio.insert(
            u64::from(board::PIC_ELCR_PORT),
            board::PIC_PORT_LEN,
            Arc::new(Mutex::new(PicPort::elcr(self.pic.clone()))),
        )?;
        self.attach_pit(pio)?;
        mmio.insert(board::IOAPIC_ADDR, board::IOAPIC_LEN, self.ioapic.clone())?;
        mmio.insert(
            board::LAPIC_ADDR,
            board::LAPIC_LEN,
            Arc::new(Mutex::new(LapicMmio::new(self.lapics.clone()).with_wake({
                let cpus = self.cpus.clone();
                Arc::new(move |vcpu, nmi| {
                    if let Some(c) = cpus.get(vcpu) {
                        if nmi {
                            c.nmi.store(true, Ordering::SeqCst);
                        }
                        c.raise();
                    }
                })
            }))),
        )?;
        Ok(())
    }

    /// Lets the timer thread poll the RTC's periodic interrupt.
    pub fn set_rtc(&self, rtc: Arc<Mutex<Cmos>>) {
        let _ = self.rtc.set(rtc);
    }

    /// Registers vCPU `index`'s kicker, so that interrupts for it wake it.
    pub fn add_vcpu(&self, index: usize, kicker: Kicker) {
        if let Some(c) = self.cpus.get(index) {
            let _ = c.kicker.set(kicker);
        }
    }

    /// Whether an interrupt may be waiting for `vcpu`.
    pub fn interrupt_pending(&self, vcpu: usize) -> bool {
        self.cpus
            .get(vcpu)
            .is_some_and(|c| c.pending.load(Ordering::Acquire))
    }

    /// Delivers queued messages to the vCPU's LAPIC and runs its timer.
    fn sync(&self, vcpu: usize, lapic: &mut Lapic) {
        let msgs = std::mem::take(&mut *lock(&self.cpus[vcpu].inbox));
        for m in &msgs {
            lapic.receive(m);
        }
        lapic.poll();
    }

    /// [`Platform::sync`] for an access of the vCPU's own (an MSR): an interrupt that the
    /// sync made deliverable (a timer whose deadline just passed) is flagged as pending, as
    /// the timer thread would have; its poll now finds the timer already fired.
    fn sync_from_vcpu(&self, vcpu: usize, lapic: &mut Lapic) {
        self.sync(vcpu, lapic);
        if lapic.next_interrupt().is_some() {
            self.cpus[vcpu].raise();
        }
    }

    /// The INTA cycle for `vcpu`: the LAPIC's highest interrupt, else (BSP) the PIC's.
    pub fn acknowledge(&self, vcpu: usize) -> Option<u8> {
        let cpu = self.cpus.get(vcpu)?;
        cpu.pending.store(false, Ordering::SeqCst);
        let mut lapic = lock(&self.lapics[vcpu]);
        self.sync(vcpu, &mut lapic);
        if let Some(v) = lapic.next_interrupt() {
            lapic.acknowledge(v);
            cpu.pending.store(true, Ordering::SeqCst);
            return Some(v);
        }
        let extint = lapic.take_extint();
        if extint || (vcpu == 0 && lapic.accepts_pic_interrupts()) {
            drop(lapic);
            let mut pic = lock(&self.pic);
            if extint || pic.has_interrupt() {
                let v = pic.acknowledge();
                cpu.pending.store(true, Ordering::SeqCst);
                return Some(v);
            }
        }
        None
    }

    /// [`Lapic::summary`] of `vcpu`'s local APIC.
    pub fn lapic_summary(&self, vcpu: usize) -> Option<String> {
        Some(lock(self.lapics.get(vcpu)?).summary())
    }

    /// RDMSR of `vcpu`'s local APIC MSRs, IA32_TSC_DEADLINE and the x2APIC range (the CPU
    /// keeps IA32_APIC_BASE): `None` for the others.
    pub fn msr_read(&self, vcpu: usize, msr: u32) -> Option<Result<u64, janus_accel::MsrFault>> {
        if msr == MSR_APIC_BASE || !Lapic::handles_msr(msr) {
            return None;
        }
        let mut lapic = lock(self.lapics.get(vcpu)?);
        self.sync_from_vcpu(vcpu, &mut lapic);
        Some(lapic.read_msr(msr).map_err(|_| janus_accel::MsrFault))
    }

    /// WRMSR of `vcpu`'s local APIC MSRs, as [`Platform::msr_read`], and of IA32_APIC_BASE,
    /// which the CPU keeps too: the LAPIC takes its enable and x2APIC bits (or refuses the
    /// value, and the CPU raises #GP).
    pub fn msr_write(
        &self,
        vcpu: usize,
        msr: u32,
        value: u64,
    ) -> Option<Result<(), janus_accel::MsrFault>> {
        if !Lapic::handles_msr(msr) {
            return None;
        }
        let mut lapic = lock(self.lapics.get(vcpu)?);
        self.sync_from_vcpu(vcpu, &mut lapic);
        let r = if msr == MSR_APIC_BASE {
            lapic.set_apic_base(value)
        } else {
            lapic.write_msr(msr, value)
        };
        // A self-IPI, an EOI or a TPR write may have made an interrupt deliverable (or sent
        // this vCPU an NMI).
        if lapic.nmi_pending() {
            self.cpus[vcpu].nmi.store(true, Ordering::SeqCst);
        }
        if lapic.next_interrupt().is_some() || lapic.nmi_pending() {
            self.cpus[vcpu].raise();
        }
        Some(r.map_err(|_| janus_accel::MsrFault))
    }

    /// Whether an INIT arrived for `vcpu` that [`Platform::take_init`] has not taken (one
    /// atomic load: the vCPU loop asks after every exit).
    pub fn init_pending(&self, vcpu: usize) -> bool {
        self.cpus
            .get(vcpu)
            .is_some_and(|c| c.init.load(Ordering::Acquire))
    }

    /// Whether something that wakes a vCPU halted with interrupts disabled is waiting: an INIT,
    /// or an NMI unless `nmi_blocked` (its NMI handler runs until IRET). (SMI would too; janus
    /// sends none.)
    pub fn wakes_halted_with_interrupts_off(&self, vcpu: usize, nmi_blocked: bool) -> bool {
        self.init_pending(vcpu) || (!nmi_blocked && self.nmi_pending(vcpu))
    }

    /// Whether an NMI may be waiting for `vcpu` (one atomic load).
    pub fn nmi_pending(&self, vcpu: usize) -> bool {
        self.cpus
            .get(vcpu)
            .is_some_and(|c| c.nmi.load(Ordering::Acquire))
    }

    /// Takes the NMI latched for `vcpu` (an NMI IPI, the IOAPIC's NMI mode, a LINT pin in NMI
    /// mode): true if there was one. A second NMI before this one is taken is lost, as on a
    /// processor, which latches one.
    pub fn take_nmi(&self, vcpu: usize) -> bool {
        let Some(cpu) = self.cpus.get(vcpu) else {
            return false;
        };
        let mut lapic = lock(&self.lapics[vcpu]);
        // Cleared before the messages are taken: an NMI sent meanwhile sets it again.
        cpu.nmi.store(false, Ordering::SeqCst);
        self.sync(vcpu, &mut lapic);
        lapic.take_nmi()
    }

    /// The NMI button (Ctrl-A n, as QEMU's `nmi` command): a pulse on every vCPU's LINT1,
    /// which the firmware tables name as the NMI input; a LAPIC with LINT1 in NMI mode (as PC
    /// firmware and Linux leave the BSP's) takes an NMI. False with KVM's in-kernel irqchip,
    /// whose LAPICs are not these.
    pub fn nmi_button(&self) -> bool {
        if self.kernel.get().is_some() {
            return false;
        }
        for (i, l) in self.lapics.iter().enumerate() {
            let nmi = {
                let mut l = lock(l);
                l.set_lint(1, true);
                l.set_lint(1, false);
                l.nmi_pending()
            };
            if nmi && let Some(cpu) = self.cpus.get(i) {
                cpu.nmi.store(true, Ordering::SeqCst);
                cpu.raise();
            }
        }
        true
    }

    /// Whether an NMI can still come to wake `vcpu` halted with interrupts disabled: one is
    /// waiting, or a device line reaches the IOAPIC in NMI mode. (Another vCPU's NMI IPI is not
    /// foreseen: the bootstrap processor halted so ends the machine unless this holds.)
    pub fn nmi_may_come(&self, vcpu: usize) -> bool {
        self.nmi_pending(vcpu) || lock(&self.ioapic).routes_nmi()
    }

    /// Takes an INIT that arrived for `vcpu`, whatever it was doing (running, halted): its
    /// LAPIC has reset, and the vCPU must too, as a processor does. `Some(true)`: an
    /// application processor, now waiting for a start-up IPI; `Some(false)`: the bootstrap
    /// processor, which restarts at the reset vector; `None`: no INIT.
    pub fn take_init(&self, vcpu: usize) -> Option<bool> {
        let mut lapic = lock(self.lapics.get(vcpu)?);
        if !self.sync_taking_init(vcpu, &mut lapic) {
            return None;
        }
        let bsp = lapic
            .read_msr(MSR_APIC_BASE)
            .is_ok_and(|b| b & (1 << 8) != 0);
        if bsp {
            let _ = lapic.take_init();
        }
        Some(!bsp)
    }

    /// For an application processor waiting after INIT: the start-up vector of a SIPI that
    /// arrived, if any.
    pub fn take_sipi(&self, vcpu: usize) -> Option<u8> {
        let mut lapic = lock(self.lapics.get(vcpu)?);
        // An INIT before the SIPI is this wait's, not one for the running vCPU to take.
        self.sync_taking_init(vcpu, &mut lapic);
        let _ = lapic.take_init();
        lapic.take_sipi()
    }

    /// [`Platform::sync`], also taking the INIT flag with the messages (atomically, under the
    /// inbox's lock). Returns whether an INIT was among them.
    fn sync_taking_init(&self, vcpu: usize, lapic: &mut Lapic) -> bool {
        let cpu = &self.cpus[vcpu];
        let (msgs, init) = {
            let mut inbox = lock(&cpu.inbox);
            (
                std::mem::take(&mut *inbox),
                cpu.init.swap(false, Ordering::SeqCst),
            )
        };
        for m in &msgs {
            lapic.receive(m);
        }
        lapic.poll();
        init
    }

    /// Wakes the timer thread now (the machine is stopping: it should not sleep out its wait).
    pub fn wake_timers(&self) {
        let (flag, cv) = &*self.wake;
        *lock(flag) = true;
        cv.notify_all();
    }

    /// Runs the timers until `stop` says so: sleeps until the next deadline (or until a device
    /// arms an earlier one), then polls the PIT, the RTC and the LAPICs whose time has come.
    pub fn timer_loop(&self, stop: &dyn Fn() -> bool) {
        while !stop() {
            let wait = self
                .clock
                .host_wait()
                .unwrap_or(Duration::from_millis(50))
                .min(Duration::from_millis(50));
            {
                let (flag, cv) = &*self.wake;
                let mut woken = lock(flag);
                if !*woken && !wait.is_zero() {
                    woken = cv
                        .wait_timeout(woken, wait)
                        .map(|r| r.0)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                *woken = false;
            }
            self.poll_timers();
        }
    }

    /// Polls the PIT, the RTC and the LAPICs whose deadline has passed (they raise their
    /// interrupts and re-arm).
    pub fn poll_timers(&self) {
        self.next_due.store(u64::MAX, Ordering::Release);
        for label in self.clock.expired() {
            match label.as_str() {
                "pit" => {
                    lock(&self.pit).poll();
                }
                "rtc" => {
                    if let Some(rtc) = self.rtc.get() {
                        lock(rtc).poll();
                    }
                }
                l => {
                    if let Some(i) = l
                        .strip_prefix("lapic")
                        .and_then(|n| n.parse::<usize>().ok())
                        && let Some(lapic) = self.lapics.get(i)
                    {
                        lock(lapic).poll();
                        self.cpus[i].raise();
                    }
                }
            }
        }
        if let Some(d) = self.clock.next_deadline() {
            self.next_due.fetch_min(d, Ordering::AcqRel);
        }
    }

    /// Deterministic time: `vcpu` retired `n` instructions (at a block boundary). Moves the
    /// clock, fires the timers that are due and returns the guest TSC.
    pub fn retired(&self, _vcpu: usize, n: u64) -> u64 {
        self.clock.advance_instructions(n);
        if self.clock.now_ns() >= self.next_due.load(Ordering::Acquire) {
            self.poll_timers();
        }
        self.clock.tsc()
    }

    /// Marks `vcpu` idle (halted, or waiting for a start-up IPI) or running again.
    pub fn set_idle(&self, vcpu: usize, idle: bool) {
        if let Some(f) = self.idle.get(vcpu) {
            f.store(idle, Ordering::SeqCst);
        }
    }

    /// Deterministic time with every vCPU idle: jumps the clock to the next timer deadline and
    /// fires it. Returns whether it did (false in real time, with a vCPU running, or with no
    /// timer armed).
    pub fn idle_jump(&self) -> bool {
        if !self.clock.is_deterministic() || !self.idle.iter().all(|f| f.load(Ordering::SeqCst)) {
            return false;
        }
        let Some(d) = self.clock.next_deadline() else {
            return false;
        };
        self.clock.advance_to(d);
        self.poll_timers();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::lapic::APIC_DEFAULT_BASE;

    /// A platform of `n` vCPUs on `clock`, attached to new port and MMIO buses.
    fn attached(n: usize, clock: Clock) -> (Arc<Platform>, Bus, Bus) {
        let p = Platform::new(n, clock);
        let mut pio = Bus::new("pio");
        let mut mmio = Bus::new("mmio");
        p.attach(&mut pio, &mut mmio).unwrap();
        (p, pio, mmio)
    }

    #[test]
    fn pic_interrupt_reaches_the_bsp_through_lint0() {
        let (p, pio, _mmio) = attached(2, Clock::real_time());
        // ICW1-4 for the master: vector base 0x20, then unmask IRQ 4 only.
        for (port, v) in [
            (0x20, 0x11),
            (0x21, 0x20),
            (0x21, 0x04),
            (0x21, 0x01),
            (0x21, 0xef),
        ] {
            pio.write(0, port, &[v]);
        }
        assert!(!p.interrupt_pending(0));
        p.isa_irq(4).set_level(true);
        assert!(p.interrupt_pending(0));
        assert!(!p.interrupt_pending(1));
        assert_eq!(p.acknowledge(0), Some(0x24));
        assert_eq!(p.acknowledge(1), None);
    }

    #[test]
    fn ipis_wake_the_target_and_sipi_is_seen_by_a_waiting_ap() {
        let (p, _pio, mmio) = attached(2, Clock::real_time());
        let k = Kicker::new();
        p.add_vcpu(1, k.clone());
        let icr_hi = APIC_DEFAULT_BASE + 0x310;
        let icr_lo = APIC_DEFAULT_BASE + 0x300;
        // Software-enable the BSP's LAPIC (SVR), then INIT and SIPI (vector 0x9a) to APIC id 1.
        mmio.write(0, APIC_DEFAULT_BASE + 0xf0, &0x1ffu32.to_le_bytes());
        mmio.write(0, icr_hi, &(1u32 << 24).to_le_bytes());
        mmio.write(0, icr_lo, &0x4500u32.to_le_bytes());
        mmio.write(0, icr_hi, &(1u32 << 24).to_le_bytes());
        mmio.write(0, icr_lo, &0x469au32.to_le_bytes());
        assert!(k.pending());
        assert_eq!(p.take_sipi(1), Some(0x9a));
    }

    /// A self-IPI (ICR shorthand "self", the x2APIC SELF IPI register) is taken by the sender's
    /// own LAPIC with no message on the bus: the write itself must flag it pending, or a vCPU
    /// with IF=1 runs on and the vector stays in the IRR.
    #[test]
    fn self_ipis_are_flagged_pending() {
        let (p, _pio, mmio) = attached(1, Clock::real_time());
        let k = Kicker::new();
        p.add_vcpu(0, k.clone());
        mmio.write(0, APIC_DEFAULT_BASE + 0xf0, &0x1ffu32.to_le_bytes());
        assert!(!p.interrupt_pending(0));
        mmio.write(0, APIC_DEFAULT_BASE + 0x300, &0x4_0041u32.to_le_bytes());
        assert!(p.interrupt_pending(0));
        assert!(k.pending());
        assert_eq!(p.acknowledge(0), Some(0x41));
        mmio.write(0, APIC_DEFAULT_BASE + 0xb0, &0u32.to_le_bytes());
        assert_eq!(p.acknowledge(0), None);
        // x2APIC mode through IA32_APIC_BASE, then SELF IPI (0x83f).
        assert_eq!(p.msr_write(0, 0x1b, 0xfee0_0d00), Some(Ok(())));
        assert_eq!(
            p.msr_write(0, 0x1b, 0xfee0_0900),
            Some(Err(janus_accel::MsrFault))
        );
        assert!(!p.interrupt_pending(0));
        assert_eq!(p.msr_write(0, 0x83f, 0x42), Some(Ok(())));
        assert!(p.interrupt_pending(0));
        assert_eq!(p.acknowledge(0), Some(0x42));
    }

    /// NMIs: an IPI of delivery mode NMI (self, by APIC ID, all including self) is flagged for
    /// its target and taken once; one sent to an AP still waiting for its start-up IPI is
    /// dropped; a device line in the IOAPIC's NMI mode is an NMI that may come.
    #[test]
    fn nmi_ipis_are_flagged_and_taken_once() {
        let (p, _pio, mmio) = attached(2, Clock::real_time());
        let k = Kicker::new();
        p.add_vcpu(0, k.clone());
        let icr_hi = APIC_DEFAULT_BASE + 0x310;
        let icr_lo = APIC_DEFAULT_BASE + 0x300;
        // Self NMI, with the LAPIC still software-disabled (NMIs do not care).
        assert!(!p.nmi_pending(0) && !p.nmi_may_come(0));
        mmio.write(0, icr_lo, &0x4_0400u32.to_le_bytes());
        assert!(p.nmi_pending(0) && k.pending() && p.nmi_may_come(0));
        assert!(p.wakes_halted_with_interrupts_off(0, false));
        assert!(!p.wakes_halted_with_interrupts_off(0, true));
        assert!(p.take_nmi(0));
        assert!(!p.nmi_pending(0) && !p.take_nmi(0));
        // To APIC ID 1, waiting for SIPI: dropped. To APIC ID 0: taken; two merge into one.
        mmio.write(0, icr_hi, &(1u32 << 24).to_le_bytes());
        mmio.write(0, icr_lo, &0x400u32.to_le_bytes());
        assert!(!p.take_nmi(1));
        mmio.write(0, icr_hi, &0u32.to_le_bytes());
        mmio.write(0, icr_lo, &0x400u32.to_le_bytes());
        mmio.write(0, icr_lo, &0x400u32.to_le_bytes());
        assert!(p.nmi_pending(0));
        assert!(p.take_nmi(0) && !p.take_nmi(0));
        // All including self reaches vCPU 0 (and vCPU 1, which drops it).
        mmio.write(0, icr_lo, &0x8_0400u32.to_le_bytes());
        assert!(p.take_nmi(0));
        // IOAPIC pin 8: NMI mode, unmasked; then its rising edge.
        let ioapic = |reg: u32, v: u32| {
            mmio.write(0, board::IOAPIC_ADDR, &reg.to_le_bytes());
            mmio.write(0, board::IOAPIC_ADDR + 0x10, &v.to_le_bytes());
        };
        ioapic(0x21, 0);
        ioapic(0x20, 0x400);
        assert!(p.nmi_may_come(0) && !p.nmi_pending(0));
        p.isa_irq(8).set_level(true);
        assert!(p.nmi_pending(0));
        assert!(p.take_nmi(0));
    }

    /// The PIC's INTR drives the BSP's LINT0: in NMI mode its rising edge is one NMI, and the
    /// PIC's vector is not taken (no INTA).
    #[test]
    fn lint0_in_nmi_mode_turns_intr_into_an_nmi() {
        let (p, pio, mmio) = attached(1, Clock::real_time());
        for (port, v) in [
            (0x20, 0x11),
            (0x21, 0x20),
            (0x21, 0x04),
            (0x21, 0x01),
            (0x21, 0xef),
        ] {
            pio.write(0, port, &[v]);
        }
        mmio.write(0, APIC_DEFAULT_BASE + 0xf0, &0x1ffu32.to_le_bytes());
        mmio.write(0, APIC_DEFAULT_BASE + 0x350, &0x400u32.to_le_bytes());
        p.isa_irq(4).set_level(true);
        assert!(p.nmi_pending(0));
        assert!(p.take_nmi(0));
        assert_eq!(p.acknowledge(0), None, "INTR is no interrupt in NMI mode");
        p.isa_irq(4).set_level(false);
        p.isa_irq(4).set_level(true);
        assert!(!p.take_nmi(0), "INTR stayed high: no new edge");
    }

    /// The NMI button pulses LINT1: an NMI where LINT1 is in NMI mode (vCPU 0 here), none where
    /// it is masked (vCPU 1).
    #[test]
    fn the_nmi_button_is_an_nmi_through_lint1() {
        let (p, _pio, mmio) = attached(2, Clock::real_time());
        assert!(p.nmi_button());
        assert!(!p.take_nmi(0), "LINT1 masked at reset");
        mmio.write(0, APIC_DEFAULT_BASE + 0xf0, &0x1ffu32.to_le_bytes());
        mmio.write(0, APIC_DEFAULT_BASE + 0x360, &0x400u32.to_le_bytes());
        assert!(p.nmi_button());
        assert!(p.nmi_pending(0) && p.take_nmi(0));
        assert!(!p.nmi_pending(1) && !p.take_nmi(1));
        p.route_to_kernel(Arc::new(|_, _| {}));
        assert!(!p.nmi_button());
    }

    /// An MSI is an interrupt message on the APIC bus: vector, destination, trigger from its
    /// address and data; writes outside the 0xFEEx_xxxx window are dropped and counted.
    #[test]
    fn msis_reach_the_addressed_lapic() {
        use crate::pci::MsiSink;
        assert_eq!(
            msi_message(0xfee0_1000, 0x4045),
            Some(InterruptMessage {
                destination: Destination::Physical(1),
                mode: DeliveryMode::Fixed,
                vector: 0x45,
                trigger: TriggerMode::Edge,
            })
        );
        assert_eq!(
            msi_message(0xfee0_0004, 0x8131).map(|m| (m.destination, m.mode, m.trigger)),
            Some((
                Destination::Logical(0),
                DeliveryMode::LowestPriority,
                TriggerMode::Level
            ))
        );
        assert_eq!(msi_message(0xfed0_0000, 0x45), None);
        assert_eq!(msi_message(0xfee0_0000, 0x0645), None, "start-up is no MSI");
        let (p, _pio, mmio) = attached(2, Clock::real_time());
        let k = Kicker::new();
        p.add_vcpu(1, k.clone());
        mmio.write(1, APIC_DEFAULT_BASE + 0xf0, &0x1ffu32.to_le_bytes());
        p.send(0xfee0_1000, 0x45);
        assert!(k.pending());
        assert!(!p.interrupt_pending(0));
        assert_eq!(p.acknowledge(1), Some(0x45));
        p.send(0x1234, 0x45);
        assert_eq!(p.msi_dropped(), 1);
        // --irqchip kernel: MSIs go to KVM's LAPICs as they are, none to janus's.
        let sent = Arc::new(Mutex::new(Vec::new()));
        let s = sent.clone();
        p.route_msis_to_kernel(Arc::new(move |a, d| s.lock().unwrap().push((a, d))));
        p.send(0xfee0_1000, 0x46);
        assert_eq!(*sent.lock().unwrap(), vec![(0xfee0_1000, 0x46)]);
        assert_eq!(p.acknowledge(1), None);
    }

    /// A PCI INTx GSI (IOAPIC pin 16, level-triggered) reaches the LAPIC its entry names, and
    /// not the PIC.
    #[test]
    fn gsi_lines_drive_ioapic_pins_above_the_isa_ones() {
        let (p, _pio, mmio) = attached(1, Clock::real_time());
        mmio.write(0, APIC_DEFAULT_BASE + 0xf0, &0x1ffu32.to_le_bytes());
        // Redirection entry 16: vector 0x50, level-triggered, active low, to APIC id 0.
        let ioapic = crate::devices::ioapic::IOAPIC_BASE;
        mmio.write(0, ioapic, &0x31u32.to_le_bytes());
        mmio.write(0, ioapic + 0x10, &0u32.to_le_bytes());
        mmio.write(0, ioapic, &0x30u32.to_le_bytes());
        mmio.write(
            0,
            ioapic + 0x10,
            &(0x50u32 | 1 << 13 | 1 << 15).to_le_bytes(),
        );
        p.gsi_line(16).set_level(true);
        assert!(p.interrupt_pending(0));
        assert_eq!(p.acknowledge(0), Some(0x50));
        // EOI with the line still high: the level-triggered pin sends again.
        mmio.write(0, APIC_DEFAULT_BASE + 0xb0, &0u32.to_le_bytes());
        assert_eq!(p.acknowledge(0), Some(0x50));
        p.gsi_line(16).set_level(false);
        mmio.write(0, APIC_DEFAULT_BASE + 0xb0, &0u32.to_le_bytes());
        assert_eq!(p.acknowledge(0), None);
    }

    /// A PCI INTx line drives its IOAPIC pin and its 8259 IRQ: an OS in PIC mode (here the
    /// master and slave programmed, IRQ 10 level-triggered in the ELCR) takes it from the PIC.
    #[test]
    fn pci_intx_lines_reach_the_pic_too() {
        let (p, pio, _mmio) = attached(1, Clock::real_time());
        for (port, v) in [
            (0x20, 0x11),
            (0x21, 0x20),
            (0x21, 0x04),
            (0x21, 0x01),
            (0x21, 0xfb), // only the cascade unmasked
            (0xa0, 0x11),
            (0xa1, 0x28),
            (0xa1, 0x02),
            (0xa1, 0x01),
            (0xa1, 0xfb),  // IRQ 10 (slave input 2) unmasked
            (0x4d1, 0x04), // IRQ 10 level-triggered
        ] {
            pio.write(0, port, &[v]);
        }
        let line = p.pci_intx_line(16, 10);
        line.set_level(true);
        assert!(p.interrupt_pending(0));
        assert_eq!(p.acknowledge(0), Some(0x2a));
        line.set_level(false);
        // The IOAPIC pin followed (its entry is masked: nothing sent).
        assert_eq!(p.acknowledge(0), None);
    }

    /// A TSC deadline that passes is noticed by the vCPU's own next MSR access (it polls the
    /// timer): the interrupt must be flagged pending then, or a vCPU that halts next sleeps
    /// forever (the timer thread finds the timer already fired). Linux's reboot path hung so.
    #[test]
    fn a_timer_fired_by_the_vcpus_own_msr_access_is_pending() {
        let clock = Clock::deterministic(1);
        let (p, _pio, mmio) = attached(1, clock.clone());
        let k = Kicker::new();
        p.add_vcpu(0, k.clone());
        mmio.write(0, APIC_DEFAULT_BASE + 0xf0, &0x1ffu32.to_le_bytes());
        // LVT timer: TSC-deadline mode (bits 18:17 = 2), vector 0xec.
        mmio.write(0, APIC_DEFAULT_BASE + 0x320, &0x4_00ecu32.to_le_bytes());
        let tsc = clock.tsc() + 1000;
        assert_eq!(p.msr_write(0, 0x6e0, tsc), Some(Ok(())));
        assert_eq!(p.msr_read(0, 0x6e0), Some(Ok(tsc)));
        assert!(!p.interrupt_pending(0));
        clock.advance_ns(10_000);
        // The access fires the timer (the deadline reads 0 again) and flags the interrupt.
        assert_eq!(p.msr_read(0, 0x6e0), Some(Ok(0)));
        assert!(p.interrupt_pending(0));
        assert!(k.pending());
        assert_eq!(p.acknowledge(0), Some(0xec));
        // MSRs the LAPIC does not own, and IA32_APIC_BASE (the CPU's), are not the platform's.
        assert_eq!(p.msr_read(0, 0x10), None);
        assert_eq!(p.msr_read(0, 0x1b), None);
    }
}
