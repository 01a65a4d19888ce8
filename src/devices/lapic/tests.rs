//! Register-level tests of the LAPIC, its messages and routing.

use std::sync::Mutex;

use super::*;
use crate::bus::BusDevice;

#[derive(Default)]
struct Rec {
    msgs: Mutex<Vec<InterruptMessage>>,
    eois: Mutex<Vec<u8>>,
}
impl ApicBus for Rec {
    fn deliver(&self, msg: InterruptMessage) {
        self.msgs.lock().unwrap().push(msg);
    }
    fn eoi(&self, vector: u8) {
        self.eois.lock().unwrap().push(vector);
    }
}

fn lapic(id: u32) -> (Lapic, Clock, Arc<Rec>) {
    let clock = Clock::deterministic(1);
    let mut l = Lapic::new(LapicConfig::new(id), &clock);
    let rec = Arc::new(Rec::default());
    l.set_bus(rec.clone());
    (l, clock, rec)
}

fn wr(l: &mut Lapic, off: u64, v: u32) {
    l.mmio_write(off, &v.to_le_bytes());
}

fn rd(l: &mut Lapic, off: u64) -> u32 {
    let mut b = [0; 4];
    l.mmio_read(off, &mut b);
    u32::from_le_bytes(b)
}

/// A software-enabled LAPIC with spurious vector 0xff.
fn enabled(id: u32) -> (Lapic, Clock, Arc<Rec>) {
    let (mut l, c, r) = lapic(id);
    wr(&mut l, 0xf0, 0x1ff);
    (l, c, r)
}

fn esr(l: &mut Lapic) -> u32 {
    wr(l, 0x280, 0);
    rd(l, 0x280)
}

#[test]
fn power_up_state() {
    let (mut bsp, clock, _) = lapic(0);
    assert_eq!(rd(&mut bsp, 0x30), 0x0005_0014);
    assert_eq!(rd(&mut bsp, 0x20), 0);
    assert_eq!(rd(&mut bsp, 0xf0), 0xff);
    assert_eq!(rd(&mut bsp, 0xe0), 0xffff_ffff);
    assert_eq!(rd(&mut bsp, 0x350), 0x700);
    assert_eq!(rd(&mut bsp, 0x360), LVT_MASKED);
    assert_eq!(bsp.apic_base(), 0xfee0_0900);
    assert!(bsp.accepts_pic_interrupts() && !bsp.waiting_for_sipi());
    let mut ap = Lapic::new(LapicConfig::new(3), &clock);
    assert_eq!(rd(&mut ap, 0x20), 3 << 24);
    assert_eq!(ap.apic_base(), 0xfee0_0800);
    assert!(!ap.accepts_pic_interrupts() && ap.waiting_for_sipi());
    assert!(!ap.has_event());
}

#[test]
fn priorities_tpr_masking_and_eoi() {
    let (mut l, _, rec) = enabled(0);
    l.accept(0x41, TriggerMode::Edge);
    l.accept(0x32, TriggerMode::Edge);
    assert_eq!(rd(&mut l, 0x200 + 0x20), 1 << 1); // IRR bits 0x41 (word 2)
    assert_eq!(l.next_interrupt(), Some(0x41));
    wr(&mut l, 0x80, 0x50);
    assert_eq!(l.next_interrupt(), None, "TPR class 5 masks class 4");
    wr(&mut l, 0x80, 0x4f);
    assert_eq!(l.next_interrupt(), None, "the same class is masked too");
    assert_eq!(l.cr8(), 4);
    l.set_cr8(3);
    assert_eq!(rd(&mut l, 0x80), 0x30);
    assert_eq!(l.next_interrupt(), Some(0x41));
    l.acknowledge(0x41);
    assert_eq!(rd(&mut l, 0xa0), 0x40, "PPR follows the vector in service");
    assert_eq!(rd(&mut l, 0x100 + 0x20), 1 << 1);
    assert_eq!(l.next_interrupt(), None);
    l.accept(0x61, TriggerMode::Edge);
    assert_eq!(l.next_interrupt(), Some(0x61), "a higher class nests");
    l.acknowledge(0x61);
    wr(&mut l, 0xb0, 0);
    wr(&mut l, 0xb0, 0);
    assert_eq!(l.next_interrupt(), None, "0x32 is at the TPR's class");
    wr(&mut l, 0x80, 0x00);
    assert_eq!(l.next_interrupt(), Some(0x32));
    assert_eq!(rd(&mut l, 0xa0), 0x00);
    assert!(
        rec.eois.lock().unwrap().is_empty(),
        "edge EOIs are not broadcast"
    );
    // Level-triggered: TMR set, EOI broadcast.
    l.accept(0x80, TriggerMode::Level);
    assert_eq!(rd(&mut l, 0x180 + 0x40), 1);
    l.acknowledge(0x80);
    wr(&mut l, 0xb0, 0);
    assert_eq!(*rec.eois.lock().unwrap(), vec![0x80]);
    // EOI with nothing in service is harmless.
    l.acknowledge(0x32);
    wr(&mut l, 0xb0, 0);
    wr(&mut l, 0xb0, 0);
    assert_eq!(l.next_interrupt(), None);
}

#[test]
fn timer_one_shot_with_divider() {
    let (mut l, clock, _) = enabled(0);
    wr(&mut l, 0x3e0, 0x3); // divide by 16
    wr(&mut l, 0x320, 0x30); // one-shot, vector 0x30
    wr(&mut l, 0x380, 1000);
    assert_eq!(l.deadline(), Some(16_000));
    assert_eq!(clock.next_deadline(), Some(16_000));
    clock.advance_to(8_000);
    assert_eq!(rd(&mut l, 0x390), 500);
    l.poll();
    assert_eq!(l.next_interrupt(), None);
    clock.advance_to(16_000);
    l.poll();
    assert_eq!(l.next_interrupt(), Some(0x30));
    assert_eq!(rd(&mut l, 0x390), 0);
    assert_eq!(l.deadline(), None);
    assert_eq!(clock.next_deadline(), None);
    assert_eq!(l.timer_fires, 1);
    // Masked: it expires without an interrupt. Count 0 stops it.
    l.acknowledge(0x30);
    wr(&mut l, 0xb0, 0);
    wr(&mut l, 0x320, 0x10030);
    wr(&mut l, 0x380, 10);
    clock.advance_ns(1_000);
    l.poll();
    assert_eq!(l.next_interrupt(), None);
    wr(&mut l, 0x380, 10);
    wr(&mut l, 0x380, 0);
    assert_eq!(l.deadline(), None);
}

#[test]
fn timer_periodic_coalescing_and_divider_change() {
    let (mut l, clock, _) = enabled(0);
    wr(&mut l, 0x3e0, 0xb); // divide by 1
    wr(&mut l, 0x320, 0x2_0040); // periodic, vector 0x40
    wr(&mut l, 0x380, 100);
    for t in [100, 200] {
        clock.advance_to(t);
        l.poll();
        assert_eq!(l.next_interrupt(), Some(0x40));
        l.acknowledge(0x40);
        wr(&mut l, 0xb0, 0);
    }
    clock.advance_to(450);
    l.poll();
    assert_eq!(l.timer_fires, 3, "two late periods fire once");
    assert_eq!(l.deadline(), Some(500));
    assert_eq!(rd(&mut l, 0x390), 50);
    wr(&mut l, 0x3e0, 0x0); // divide by 2: 50 ticks left take 100 ns
    assert_eq!(rd(&mut l, 0x390), 50);
    assert_eq!(l.deadline(), Some(550));
    clock.advance_to(550);
    assert_eq!(rd(&mut l, 0x390), 100, "reloaded");
    l.poll();
    assert_eq!(l.deadline(), Some(750));
}

#[test]
fn timer_tsc_deadline_mode() {
    let (mut l, clock, _) = enabled(0);
    wr(&mut l, 0x380, 1000); // one-shot running ...
    wr(&mut l, 0x320, 0x4_0050); // ... until TSC-deadline mode disarms it
    assert_eq!(l.deadline(), None);
    assert_eq!(rd(&mut l, 0x380), 0);
    wr(&mut l, 0x380, 1000); // ignored in TSC-deadline mode
    assert_eq!(rd(&mut l, 0x390), 0);
    clock.advance_to(5_000);
    let tsc = clock.tsc() + 2_000;
    l.write_msr(MSR_TSC_DEADLINE, tsc).unwrap();
    assert_eq!(l.read_msr(MSR_TSC_DEADLINE), Ok(tsc));
    assert_eq!(l.deadline(), Some(clock.tsc_to_ns(tsc)));
    clock.advance_to(clock.tsc_to_ns(tsc));
    l.poll();
    assert_eq!(l.next_interrupt(), Some(0x50));
    assert_eq!(
        l.read_msr(MSR_TSC_DEADLINE),
        Ok(0),
        "expiry clears the deadline"
    );
    // Outside TSC-deadline mode the MSR reads 0 and writes are ignored.
    l.write_msr(MSR_TSC_DEADLINE, tsc + 10).unwrap();
    wr(&mut l, 0x320, 0x0_0050);
    assert_eq!(l.read_msr(MSR_TSC_DEADLINE), Ok(0));
    l.set_tsc_deadline(1);
    assert_eq!(l.deadline(), None);
}

#[test]
fn icr_ipis_init_sipi_and_shorthands() {
    let (mut l, _, rec) = enabled(0);
    let sent = |rec: &Rec| rec.msgs.lock().unwrap().drain(..).collect::<Vec<_>>();
    wr(&mut l, 0x310, 2 << 24);
    wr(&mut l, 0x300, 0x4500); // INIT, assert
    wr(&mut l, 0x300, 0x8500); // INIT level de-assert: not sent
    wr(&mut l, 0x300, 0x4608); // SIPI, page 8
    assert_eq!(
        sent(&rec),
        vec![
            InterruptMessage {
                destination: Destination::Physical(2),
                mode: DeliveryMode::Init,
                vector: 0,
                trigger: TriggerMode::Edge
            },
            InterruptMessage {
                destination: Destination::Physical(2),
                mode: DeliveryMode::StartUp,
                vector: 8,
                trigger: TriggerMode::Edge
            },
        ]
    );
    assert_eq!(
        rd(&mut l, 0x300) & (1 << 12),
        0,
        "delivery status is always idle"
    );
    wr(&mut l, 0x300, 0xc_0031); // all excluding self, fixed 0x31
    assert_eq!(sent(&rec)[0].destination, Destination::AllExcept(0));
    assert_eq!(l.next_interrupt(), None);
    wr(&mut l, 0x300, 0x8_0032); // all including self
    assert_eq!(sent(&rec).len(), 1);
    assert_eq!(l.next_interrupt(), Some(0x32));
    wr(&mut l, 0x300, 0x4_0033); // self only
    assert!(sent(&rec).is_empty());
    assert_eq!(l.next_interrupt(), Some(0x33));
    wr(&mut l, 0x300, 0x0805); // logical, fixed, illegal vector 5
    assert!(sent(&rec).is_empty());
    assert_eq!(esr(&mut l), ESR_SEND_ILLEGAL_VECTOR);
    assert_eq!(esr(&mut l), 0, "a second write clears it");
    wr(&mut l, 0x300, 0x0b00); // logical, reserved delivery mode 3: dropped
    wr(&mut l, 0x300, 0x0c02); // logical NMI
    assert_eq!(sent(&rec)[0].destination, Destination::Logical(2));
}

#[test]
fn ap_start_up_with_init_and_sipi() {
    let (mut ap, _, _) = lapic(1);
    let msg = |mode, vector| InterruptMessage {
        destination: Destination::Physical(1),
        mode,
        vector,
        trigger: TriggerMode::Edge,
    };
    ap.receive(&msg(DeliveryMode::StartUp, 0x10));
    assert_eq!(
        ap.take_sipi(),
        Some(0x10),
        "APs wait for a SIPI from power-up"
    );
    ap.receive(&msg(DeliveryMode::StartUp, 0x11));
    assert_eq!(ap.take_sipi(), None, "a running AP ignores SIPIs");
    wr(&mut ap, 0xf0, 0x1ff);
    ap.accept(0x40, TriggerMode::Edge);
    ap.receive(&msg(DeliveryMode::Init, 0));
    assert!(ap.take_init() && ap.waiting_for_sipi());
    assert_eq!(rd(&mut ap, 0xf0), 0xff, "INIT resets the registers");
    assert_eq!(ap.next_interrupt(), None);
    assert_eq!(rd(&mut ap, 0x20), 1 << 24, "but not the ID");
    ap.receive(&msg(DeliveryMode::StartUp, 0x12));
    ap.receive(&msg(DeliveryMode::StartUp, 0x13));
    assert_eq!(ap.take_sipi(), Some(0x12));
    ap.receive(&msg(DeliveryMode::Nmi, 0));
    ap.receive(&msg(DeliveryMode::ExtInt, 0));
    assert!(ap.has_event());
    assert!(ap.take_nmi() && !ap.take_nmi());
    assert!(ap.take_extint());
    // Software-disabled: fixed messages are dropped.
    ap.receive(&msg(DeliveryMode::Fixed, 0x50));
    assert_eq!(ap.next_interrupt(), None);
}

#[test]
fn x2apic_msrs_and_apic_base_transitions() {
    let (mut l, _, rec) = enabled(0x123);
    assert_eq!(rd(&mut l, 0x20), 0x23 << 24);
    assert_eq!(
        l.read_msr(0x802),
        Err(GpFault),
        "no x2APIC MSRs in xAPIC mode"
    );
    assert_eq!(
        l.write_msr(MSR_APIC_BASE, 0xfee0_0400),
        Err(GpFault),
        "EXTD without EN"
    );
    assert_eq!(
        l.write_msr(MSR_APIC_BASE, 0xfee0_0c01),
        Err(GpFault),
        "reserved bit"
    );
    assert_eq!(
        l.write_msr(MSR_APIC_BASE, 1 << 50 | 0xc00),
        Err(GpFault),
        "above MAXPHYADDR"
    );
    l.write_msr(MSR_APIC_BASE, 0xfee0_0c00).unwrap();
    assert_eq!(l.read_msr(0x802), Ok(0x123));
    assert_eq!(l.read_msr(0x80d), Ok(0x12 << 16 | 1 << 3));
    assert_eq!(l.read_msr(0x803), Ok(0x0005_0014));
    assert_eq!(rd(&mut l, 0x20), u32::MAX, "the xAPIC page is gone");
    l.write_msr(0x808, 0x20).unwrap();
    assert_eq!(l.read_msr(0x808), Ok(0x20));
    for (msr, v) in [
        (0x808, 0x100),
        (0x80b, 1),
        (0x828, 1),
        (0x802, 0),
        (0x80d, 0),
        (0x83f, 0x100),
    ] {
        assert_eq!(l.write_msr(msr, v), Err(GpFault), "write {msr:#x}");
    }
    for msr in [0x80b, 0x83f, 0x809, 0x80e, 0x831, 0x82f, 0x8ff] {
        assert_eq!(l.read_msr(msr), Err(GpFault), "read {msr:#x}");
    }
    l.write_msr(0x830, 7 << 32 | 0x0_0040).unwrap();
    assert_eq!(
        rec.msgs.lock().unwrap()[0].destination,
        Destination::Physical(7),
        "32-bit destination in the ICR's high half"
    );
    assert_eq!(l.read_msr(0x830), Ok(7 << 32 | 0x40));
    l.write_msr(0x83f, 0x45).unwrap(); // SELF IPI
    assert_eq!(l.next_interrupt(), Some(0x45));
    l.acknowledge(0x45);
    assert_eq!(l.read_msr(0x812), Ok(1 << 5), "ISR word 2");
    l.write_msr(0x80b, 0).unwrap();
    assert_eq!(l.read_msr(0x812), Ok(0));
    assert_eq!(
        l.write_msr(MSR_APIC_BASE, 0xfee0_0800),
        Err(GpFault),
        "x2APIC -> xAPIC"
    );
    l.write_msr(MSR_APIC_BASE, 0xfee0_0000).unwrap(); // disable
    assert_eq!(
        l.write_msr(MSR_APIC_BASE, 0xfee0_0c00),
        Err(GpFault),
        "disabled -> x2APIC"
    );
    assert!(
        l.accepts_pic_interrupts(),
        "a disabled LAPIC passes the PIC through"
    );
    assert_eq!(rd(&mut l, 0x30), u32::MAX);
    l.write_msr(MSR_APIC_BASE, 0xfee0_0800).unwrap();
    assert_eq!(rd(&mut l, 0xf0), 0xff, "re-enabled in the reset state");
    assert_eq!(rd(&mut l, 0x20), 0x23 << 24);
    // Without x2APIC support EXTD is reserved.
    let mut plain = Lapic::new(
        LapicConfig {
            x2apic: false,
            ..LapicConfig::new(1)
        },
        &Clock::deterministic(1),
    );
    assert_eq!(plain.write_msr(MSR_APIC_BASE, 0xfee0_0c00), Err(GpFault));
    assert_eq!(plain.write_msr(0x1234, 0), Err(GpFault));
    assert!(Lapic::handles_msr(0x80f) && !Lapic::handles_msr(0x900));
}

#[test]
fn destinations_and_routing() {
    let clock = Clock::deterministic(1);
    let mut ls: Vec<Lapic> = (0..4)
        .map(|i| Lapic::new(LapicConfig::new(i), &clock))
        .collect();
    for (i, l) in ls.iter_mut().enumerate() {
        wr(l, 0xf0, 0x1ff);
        wr(l, 0xd0, 1 << (24 + i)); // flat logical IDs 1, 2, 4, 8
    }
    let addrs = |ls: &[Lapic]| {
        ls.iter()
            .map(|l| l.address_cell().get())
            .collect::<Vec<_>>()
    };
    let msg = |destination, mode| InterruptMessage {
        destination,
        mode,
        vector: 0x41,
        trigger: TriggerMode::Edge,
    };
    let fixed = |d| msg(d, DeliveryMode::Fixed);
    assert_eq!(
        route(&fixed(Destination::Physical(2)), &addrs(&ls)),
        vec![2]
    );
    assert_eq!(
        route(&fixed(Destination::Physical(0xff)), &addrs(&ls)).len(),
        4
    );
    assert_eq!(
        route(&fixed(Destination::Logical(0x05)), &addrs(&ls)),
        vec![0, 2]
    );
    assert_eq!(
        route(&fixed(Destination::AllExcept(1)), &addrs(&ls)),
        vec![0, 2, 3]
    );
    assert_eq!(route(&fixed(Destination::All), &addrs(&ls)).len(), 4);
    let lowest = msg(Destination::Logical(0x0f), DeliveryMode::LowestPriority);
    assert_eq!(route(&lowest, &addrs(&ls)), vec![0x41 % 4]);
    // Cluster model: cluster 1, members 1 and 2.
    wr(&mut ls[3], 0xe0, 0x0fff_ffff);
    wr(&mut ls[3], 0xd0, 0x12 << 24);
    assert!(ls[3].address().matches(&Destination::Logical(0x12)));
    assert!(!ls[3].address().matches(&Destination::Logical(0x22)));
    assert!(!ls[3].address().matches(&Destination::Logical(0x11)));
    // x2APIC: cluster = id >> 4, bit = id & 15.
    ls[2].write_msr(MSR_APIC_BASE, 0xfee0_0c00).unwrap();
    let a = ls[2].address();
    assert!(a.matches(&Destination::Logical(1 << 2)));
    assert!(!a.matches(&Destination::Logical(1 << 16 | 1 << 2)));
    assert!(
        a.matches(&Destination::Physical(u32::MAX)) && !a.matches(&Destination::Physical(0xff))
    );
    // Disabled LAPICs receive nothing.
    ls[1].write_msr(MSR_APIC_BASE, 0).unwrap();
    assert_eq!(route(&fixed(Destination::All), &addrs(&ls)), vec![0, 2, 3]);
}

#[test]
fn lint_pins_nmi_and_level_with_remote_irr() {
    let (mut l, _, _) = enabled(0);
    wr(&mut l, 0x360, 0x400); // LINT1: NMI
    l.set_lint(1, true);
    l.set_lint(1, true);
    assert!(l.take_nmi() && !l.take_nmi(), "one NMI per rising edge");
    wr(&mut l, 0x350, 0x8060); // LINT0: fixed, level, vector 0x60
    l.set_lint(0, true);
    assert_eq!(rd(&mut l, 0x350) & LVT_REMOTE_IRR, LVT_REMOTE_IRR);
    assert!(!l.accepts_pic_interrupts());
    assert_eq!(l.next_interrupt(), Some(0x60));
    l.acknowledge(0x60);
    wr(&mut l, 0xb0, 0); // still high: delivered again
    assert_eq!(l.next_interrupt(), Some(0x60));
    l.acknowledge(0x60);
    l.set_lint(0, false);
    wr(&mut l, 0xb0, 0);
    assert_eq!(rd(&mut l, 0x350) & LVT_REMOTE_IRR, 0);
    assert_eq!(l.next_interrupt(), None);
    l.set_lint(5, true);
}

#[test]
fn odd_accesses_and_software_disable() {
    let (mut l, _, _) = enabled(0);
    l.mmio_read(0xffc, &mut []);
    l.mmio_write(0xb0, &[]);
    l.mmio_read(0xfff, &mut [0; 8]);
    l.bad_accesses = 0;
    assert_eq!(esr(&mut l), ESR_ILLEGAL_REGISTER, "0xff0 is reserved");
    // Partial and unaligned reads see the register's bytes; unaligned writes are ignored.
    let mut b = [0u8; 1];
    l.mmio_read(0x33, &mut b);
    assert_eq!(b[0], 0x00);
    l.mmio_read(0x32, &mut b);
    assert_eq!(b[0], 0x05);
    let mut q = [0xaa; 8];
    l.mmio_read(0x30, &mut q);
    assert_eq!(q, [0x14, 0, 5, 0, 0, 0, 0, 0]);
    l.mmio_write(0x82, &[0x70, 0]);
    l.mmio_write(0x84, &0x70u32.to_le_bytes());
    l.mmio_write(0x80, &[0x70; 8]);
    assert_eq!(rd(&mut l, 0x80), 0);
    assert_eq!(l.bad_accesses, 4);
    // Read-only registers ignore writes; reserved ones report an illegal register.
    wr(&mut l, 0x30, 0);
    wr(&mut l, 0x390, 5);
    assert_eq!(rd(&mut l, 0x30), 0x0005_0014);
    assert_eq!(esr(&mut l), 0);
    assert_eq!(rd(&mut l, 0x40), 0);
    wr(&mut l, 0x3f0, 0x40); // SELF IPI exists only in x2APIC mode
    assert_eq!(esr(&mut l), ESR_ILLEGAL_REGISTER);
    // An illegal vector received sets the error and raises the error LVT's vector.
    wr(&mut l, 0x370, 0xee);
    l.accept(3, TriggerMode::Edge);
    assert_eq!(l.next_interrupt(), Some(0xee));
    assert_eq!(esr(&mut l), ESR_RECV_ILLEGAL_VECTOR);
    wr(&mut l, 0x370, 0x05); // an illegal error vector must not loop
    l.accept(4, TriggerMode::Edge);
    // Software disable masks every LVT and keeps them masked.
    wr(&mut l, 0x320, 0x20);
    wr(&mut l, 0xf0, 0x0ff);
    assert_eq!(rd(&mut l, 0x320), LVT_MASKED | 0x20);
    wr(&mut l, 0x320, 0x21);
    assert_eq!(rd(&mut l, 0x320), LVT_MASKED | 0x21);
    assert_eq!(rd(&mut l, 0x350) & LVT_MASKED, LVT_MASKED);
    assert!(!l.accepts_pic_interrupts());
    // Reserved LVT bits do not stick; DFR's low bits read as ones.
    wr(&mut l, 0xf0, 0x1ff);
    wr(&mut l, 0x370, 0xffff_ffff);
    assert_eq!(rd(&mut l, 0x370), 0x1_00ff);
    wr(&mut l, 0xe0, 0);
    assert_eq!(rd(&mut l, 0xe0), 0x0fff_ffff);
    wr(&mut l, 0x3e0, 0xffff_ffff);
    assert_eq!(rd(&mut l, 0x3e0), 0xb);
    // The shared page sends each vCPU to its own LAPIC.
    let lapic = Arc::new(Mutex::new(l));
    let mut page = LapicMmio::new(vec![lapic.clone()]);
    let mut w = [0; 4];
    page.read(0, 0x30, &mut w);
    assert_eq!(u32::from_le_bytes(w), 0x0005_0014);
    page.read(5, 0x30, &mut w);
    assert_eq!(w, [0xff; 4]);
    page.write(5, 0x80, &[1, 0, 0, 0]);
    page.write(0, 0x80, &[0x10, 0, 0, 0]);
    assert_eq!(lapic.lock().unwrap().cr8(), 1);
    assert_eq!(page.label(), "lapic");
}
