//! The two cascaded 8259A programmable interrupt controllers of a PC (master at 0x20/0x21 with
//! IRQ 0-7, slave at 0xA0/0xA1 with IRQ 8-15 on the master's IRQ 2) and the edge/level control
//! registers (ELCR) at 0x4D0/0x4D1.
//!
//! Wiring: devices drive lines through [`PicIrq`] (an [`IrqLine`]); the pair's INTR output goes
//! to whatever [`Pic::set_intr`] is given (the BSP's LAPIC LINT0, or straight to the CPU);
//! when the CPU takes the interrupt it calls [`Pic::acknowledge`], the INTA cycle, for the vector.
//! The bus sees the pair through three [`PicPort`]s. Lock order: device -> PIC -> INTR line; the
//! INTR line must not lock devices.
//!
//! Simplified: an edge request stays latched if its line drops before INTA (as in QEMU, so that
//! devices may pulse lines); the real part would withdraw it and answer with the spurious
//! IRQ 7, which here happens only for level lines and masking races. The cascade input does
//! follow the slave's INT. ICW3 is ignored (the PC wiring is fixed), as are ICW4's 8080 and
//! buffered modes.

use std::sync::{Arc, Mutex};

use super::IrqLine;
use crate::bus::BusDevice;

/// Register state of one 8259A.
#[derive(Debug, Default, Clone)]
struct Chip {
    /// Line levels as last set (edge detection and level-mode requests).
    lines: u8,
    irr: u8,
    isr: u8,
    imr: u8,
    /// The IRQ with the lowest priority is `priority_add - 1` (rotation).
    priority_add: u8,
    vector_base: u8,
    read_isr: bool,
    poll: bool,
    special_mask: bool,
    /// 0: ready for OCWs; 1..=3: the next data byte is ICW2..ICW4.
    init_state: u8,
    init4: bool,
    single: bool,
    /// ICW1.LTIM: every line level-triggered.
    ltim: bool,
    auto_eoi: bool,
    rotate_on_auto_eoi: bool,
    special_fully_nested: bool,
    elcr: u8,
    elcr_mask: u8,
}

impl Chip {
    fn level_mask(&self) -> u8 {
        if self.ltim { 0xff } else { self.elcr }
    }

    /// Sets input `irq`. An edge request stays latched if the line drops before INTA (so that
    /// devices may pulse their line), unless `withdraw`, as for the cascade input, where the
    /// request follows the slave's INT the way the real part's IRR follows its inputs.
    fn set_line(&mut self, irq: u8, high: bool, withdraw: bool) {
        let bit = 1 << irq;
        if self.level_mask() & bit != 0 || (withdraw && !high) {
            // Level: the request follows the line.
            if high {
                self.irr |= bit;
            } else {
                self.irr &= !bit;
            }
        } else if high && self.lines & bit == 0 {
            self.irr |= bit; // rising edge latches
        }
        if high {
            self.lines |= bit;
        } else {
            self.lines &= !bit;
        }
    }

    /// Priority (0 highest) of the highest-priority bit in `mask`, or 8 for none.
    fn priority(&self, mask: u8) -> u8 {
        (0..8)
            .find(|p| mask & (1 << ((p + self.priority_add) & 7)) != 0)
            .unwrap_or(8)
    }

    /// The IRQ this chip would present on INTR now, if any.
    fn pending(&self, is_master: bool) -> Option<u8> {
        let req = self.priority(self.irr & !self.imr);
        if req == 8 {
            return None;
        }
        let mut in_service = self.isr;
        if self.special_mask {
            in_service &= !self.imr;
        }
        if self.special_fully_nested && is_master {
            // A slave in service does not block higher-priority slave requests.
            in_service &= !(1 << 2);
        }
        (req < self.priority(in_service)).then_some((req + self.priority_add) & 7)
    }

    /// The INTA cycle for `irq`: IRR -> ISR (or auto-EOI).
    fn intack(&mut self, irq: u8) {
        let bit = 1 << irq;
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.priority_add = (irq + 1) & 7;
            }
        } else {
            self.isr |= bit;
        }
        if self.level_mask() & bit == 0 {
            self.irr &= !bit;
        }
    }

    fn icw1(&mut self, v: u8) {
        let (elcr, elcr_mask, lines) = (self.elcr, self.elcr_mask, self.lines);
        *self = Chip {
            elcr,
            elcr_mask,
            lines,
            init_state: 1,
            init4: v & 0x01 != 0,
            single: v & 0x02 != 0,
            ltim: v & 0x08 != 0,
            ..Chip::default()
        };
        // Level-triggered lines that are high stay requested; edges must come anew.
        self.irr = self.lines & self.level_mask();
    }

    fn write_command(&mut self, v: u8) {
        if v & 0x10 != 0 {
            self.icw1(v);
        } else if v & 0x08 != 0 {
            // OCW3.
            if v & 0x04 != 0 {
                self.poll = true;
            }
            if v & 0x02 != 0 {
                self.read_isr = v & 0x01 != 0;
            }
            if v & 0x40 != 0 {
                self.special_mask = v & 0x20 != 0;
            }
        } else {
            // OCW2.
            let level = v & 7;
            match v >> 5 {
                0 => self.rotate_on_auto_eoi = false,
                4 => self.rotate_on_auto_eoi = true,
                cmd @ (1 | 5) => {
                    // Non-specific EOI: the highest-priority IRQ in service.
                    let p = self.priority(self.isr);
                    if p != 8 {
                        let irq = (p + self.priority_add) & 7;
                        self.isr &= !(1 << irq);
                        if cmd == 5 {
                            self.priority_add = (irq + 1) & 7;
                        }
                    }
                }
                3 => self.isr &= !(1 << level),
                6 => self.priority_add = (level + 1) & 7,
                7 => {
                    self.isr &= !(1 << level);
                    self.priority_add = (level + 1) & 7;
                }
                _ => {} // 2: no operation
            }
        }
    }

    fn write_data(&mut self, v: u8) {
        match self.init_state {
            1 => {
                self.vector_base = v & 0xf8;
                self.init_state = match (self.single, self.init4) {
                    (false, _) => 2,
                    (true, true) => 3,
                    (true, false) => 0,
                };
            }
            2 => self.init_state = if self.init4 { 3 } else { 0 }, // ICW3: cascade wiring is fixed
            3 => {
                self.special_fully_nested = v & 0x10 != 0;
                self.auto_eoi = v & 0x02 != 0;
                self.init_state = 0;
            }
            _ => self.imr = v, // OCW1
        }
    }
}

/// The master/slave pair.
pub struct Pic {
    chips: [Chip; 2],
    intr: Option<Arc<dyn IrqLine>>,
    intr_level: bool,
    /// INTA cycles that found no request and returned the spurious IRQ 7 or 15 vector.
    pub spurious: u64,
}

impl std::fmt::Debug for Pic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pic")
            .field("master", &self.chips[0])
            .field("slave", &self.chips[1])
            .field("intr", &self.intr_level)
            .finish_non_exhaustive()
    }
}

impl Default for Pic {
    fn default() -> Self {
        Self::new()
    }
}

impl Pic {
    /// A pair in its power-up state: nothing masked, vector bases 0, every line edge-triggered.
    /// Firmware or the kernel programs it with ICW1-4 before use.
    pub fn new() -> Self {
        let mut chips = [Chip::default(), Chip::default()];
        chips[0].elcr_mask = 0xf8; // IRQ 0, 1 and 2 are always edge-triggered
        chips[1].elcr_mask = 0xde; // and so are IRQ 8 and 13
        Pic {
            chips,
            intr: None,
            intr_level: false,
            spurious: 0,
        }
    }

    /// A pair shared between the bus, the IRQ lines and the vCPUs.
    pub fn shared() -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self::new()))
    }

    /// Wires the INTR output; it is told every change of level.
    pub fn set_intr(&mut self, intr: Arc<dyn IrqLine>) {
        intr.set_level(self.intr_level);
        self.intr = Some(intr);
    }

    /// Sets the level of IRQ `line` (0-15; others are ignored).
    pub fn set_irq(&mut self, line: u8, high: bool) {
        if line < 16 {
            self.chips[usize::from(line >> 3)].set_line(line & 7, high, false);
            self.update();
        }
    }

    /// Whether INTR is asserted: an unmasked request outranks everything in service.
    pub fn has_interrupt(&self) -> bool {
        self.intr_level
    }

    /// The INTA cycle: the vector of the highest-priority request, moved to in-service. With no
    /// request (it went away, or was masked, since INTR rose) the answer is the spurious vector of
    /// IRQ 7, or of IRQ 15 with the master's IRQ 2 taken into service, as on real hardware.
    pub fn acknowledge(&mut self) -> u8 {
        let vector = match self.chips[0].pending(true) {
            Some(2) if !self.chips[0].single => {
                self.chips[0].intack(2);
                match self.chips[1].pending(false) {
                    Some(irq) => {
                        self.chips[1].intack(irq);
                        self.chips[1].vector_base | irq
                    }
                    None => {
                        self.spurious += 1;
                        self.chips[1].vector_base | 7
                    }
                }
            }
            Some(irq) => {
                self.chips[0].intack(irq);
                self.chips[0].vector_base | irq
            }
            None => {
                self.spurious += 1;
                self.chips[0].vector_base | 7
            }
        };
        self.update();
        vector
    }

    /// The slave's INTR drives the master's IRQ 2.
    fn update_slave_line(&mut self) {
        let s = self.chips[1].pending(false).is_some();
        self.chips[0].set_line(2, s, true);
    }

    fn update(&mut self) {
        self.update_slave_line();
        let level = self.chips[0].pending(true).is_some();
        if level != self.intr_level {
            self.intr_level = level;
            if let Some(intr) = &self.intr {
                intr.set_level(level);
            }
        }
    }

    fn poll_read(&mut self, chip: usize) -> u8 {
        let v = match self.chips[chip].pending(chip == 0) {
            Some(irq) => {
                self.chips[chip].intack(irq);
                0x80 | irq
            }
            None => 0,
        };
        self.update();
        v
    }

    /// Reads port `reg` (0 or 1) of `chip` (0 master, 1 slave).
    fn read_port(&mut self, chip: usize, reg: u64) -> u8 {
        let c = &mut self.chips[chip];
        if c.poll {
            c.poll = false;
            return self.poll_read(chip);
        }
        match (reg, c.read_isr) {
            (0, true) => c.isr,
            (0, false) => c.irr,
            _ => c.imr,
        }
    }

    fn write_port(&mut self, chip: usize, reg: u64, v: u8) {
        if reg == 0 {
            self.chips[chip].write_command(v);
        } else {
            self.chips[chip].write_data(v);
        }
        self.update();
    }

    /// The ELCR of `chip`.
    pub fn elcr(&self, chip: usize) -> u8 {
        self.chips[chip & 1].elcr
    }

    /// Sets the ELCR of `chip` (bits that must stay edge-triggered are ignored), as firmware does
    /// through port 0x4D0/0x4D1.
    pub fn set_elcr(&mut self, chip: usize, v: u8) {
        let c = &mut self.chips[chip & 1];
        c.elcr = v & c.elcr_mask;
        // A line that becomes level-triggered requests while high.
        c.irr = (c.irr & !c.level_mask()) | (c.lines & c.level_mask());
        self.update();
    }

    /// (IRR, ISR, IMR) of `chip` (0 master, 1 slave), for tests and debugging.
    pub fn registers(&self, chip: usize) -> (u8, u8, u8) {
        let c = &self.chips[chip & 1];
        (c.irr, c.isr, c.imr)
    }
}

/// One IRQ line of the pair, for a device to drive.
#[derive(Debug)]
pub struct PicIrq {
    pic: Arc<Mutex<Pic>>,
    line: u8,
}

impl PicIrq {
    /// IRQ `line` (0-15) of `pic`.
    pub fn new(pic: Arc<Mutex<Pic>>, line: u8) -> Self {
        PicIrq { pic, line }
    }
}

impl IrqLine for PicIrq {
    fn set_level(&self, high: bool) {
        self.pic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_irq(self.line, high);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortKind {
    Master,
    Slave,
    Elcr,
}

/// One of the pair's three port ranges, as a bus device: `master` at 0x20 (2 ports), `slave` at
/// 0xA0 (2 ports), `elcr` at 0x4D0 (2 ports). Wider accesses are split into byte accesses, as
/// the ISA bus does.
#[derive(Debug)]
pub struct PicPort {
    pic: Arc<Mutex<Pic>>,
    kind: PortKind,
}

impl PicPort {
    /// The master's ports (0x20-0x21).
    pub fn master(pic: Arc<Mutex<Pic>>) -> Self {
        PicPort {
            pic,
            kind: PortKind::Master,
        }
    }
    /// The slave's ports (0xA0-0xA1).
    pub fn slave(pic: Arc<Mutex<Pic>>) -> Self {
        PicPort {
            pic,
            kind: PortKind::Slave,
        }
    }
    /// The ELCR ports (0x4D0 master, 0x4D1 slave).
    pub fn elcr(pic: Arc<Mutex<Pic>>) -> Self {
        PicPort {
            pic,
            kind: PortKind::Elcr,
        }
    }
}

impl BusDevice for PicPort {
    fn label(&self) -> &str {
        match self.kind {
            PortKind::Master => "pic-master",
            PortKind::Slave => "pic-slave",
            PortKind::Elcr => "pic-elcr",
        }
    }

    fn read(&mut self, _vcpu: usize, offset: u64, data: &mut [u8]) {
        let mut pic = self.pic.lock().unwrap_or_else(|p| p.into_inner());
        for (i, b) in data.iter_mut().enumerate() {
            let reg = (offset + i as u64) & 1;
            *b = match self.kind {
                PortKind::Master => pic.read_port(0, reg),
                PortKind::Slave => pic.read_port(1, reg),
                PortKind::Elcr => pic.elcr(reg as usize),
            };
        }
    }

    fn write(&mut self, _vcpu: usize, offset: u64, data: &[u8]) {
        let mut pic = self.pic.lock().unwrap_or_else(|p| p.into_inner());
        for (i, &b) in data.iter().enumerate() {
            let reg = (offset + i as u64) & 1;
            match self.kind {
                PortKind::Master => pic.write_port(0, reg, b),
                PortKind::Slave => pic.write_port(1, reg, b),
                PortKind::Elcr => pic.set_elcr(reg as usize, b),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Line(AtomicBool);
    impl IrqLine for Line {
        fn set_level(&self, high: bool) {
            self.0.store(high, Ordering::SeqCst);
        }
    }

    struct Pair {
        pic: Arc<Mutex<Pic>>,
        master: PicPort,
        slave: PicPort,
        elcr: PicPort,
    }

    impl Pair {
        fn out(&mut self, port: u16, v: u8) {
            let (dev, off) = match port {
                0x20 | 0x21 => (&mut self.master, port - 0x20),
                0xa0 | 0xa1 => (&mut self.slave, port - 0xa0),
                _ => (&mut self.elcr, port - 0x4d0),
            };
            dev.write(0, u64::from(off), &[v]);
        }
        fn inb(&mut self, port: u16) -> u8 {
            let (dev, off) = match port {
                0x20 | 0x21 => (&mut self.master, port - 0x20),
                0xa0 | 0xa1 => (&mut self.slave, port - 0xa0),
                _ => (&mut self.elcr, port - 0x4d0),
            };
            let mut b = [0];
            dev.read(0, u64::from(off), &mut b);
            b[0]
        }
        fn irq(&self, line: u8, high: bool) {
            self.pic.lock().unwrap().set_irq(line, high);
        }
        fn pending(&self) -> bool {
            self.pic.lock().unwrap().has_interrupt()
        }
        fn ack(&self) -> u8 {
            self.pic.lock().unwrap().acknowledge()
        }
        fn regs(&self, chip: usize) -> (u8, u8, u8) {
            self.pic.lock().unwrap().registers(chip)
        }
    }

    /// The pair as a BIOS leaves it: vectors 0x20 and 0x28, cascade on IRQ 2, 8086 mode, and
    /// nothing masked.
    fn pair_with(icw4: u8) -> Pair {
        let pic = Pic::shared();
        let mut p = Pair {
            master: PicPort::master(pic.clone()),
            slave: PicPort::slave(pic.clone()),
            elcr: PicPort::elcr(pic.clone()),
            pic,
        };
        for (base, vec, icw3) in [(0x20, 0x20, 0x04), (0xa0, 0x28, 0x02)] {
            p.out(base, 0x11); // ICW1: edge, cascade, ICW4 needed
            p.out(base + 1, vec); // ICW2
            p.out(base + 1, icw3); // ICW3
            p.out(base + 1, icw4); // ICW4
            p.out(base + 1, 0x00); // OCW1: unmask all
        }
        p
    }

    fn pair() -> Pair {
        pair_with(0x01)
    }

    #[test]
    fn init_sequence_then_interrupt_ack_and_eoi() {
        let mut p = pair();
        let line = Arc::new(Line(AtomicBool::new(false)));
        p.pic.lock().unwrap().set_intr(line.clone());
        assert!(!p.pending());
        p.irq(0, true);
        assert!(p.pending() && line.0.load(Ordering::SeqCst));
        assert_eq!(p.ack(), 0x20);
        assert_eq!(p.regs(0), (0x00, 0x01, 0x00));
        assert!(!line.0.load(Ordering::SeqCst));
        // The line is still high but it is edge-triggered: no new request.
        p.out(0x20, 0x20); // non-specific EOI
        assert_eq!(p.regs(0).1, 0);
        assert!(!p.pending());
        p.irq(0, false);
        p.irq(0, true);
        assert!(p.pending());
    }

    #[test]
    fn masking_holds_requests_until_unmasked() {
        let mut p = pair();
        p.out(0x21, 0x02); // mask IRQ 1
        p.irq(1, true);
        assert!(!p.pending());
        assert_eq!(p.regs(0).0, 0x02); // requested but masked
        assert_eq!(p.inb(0x21), 0x02);
        p.out(0x21, 0x00);
        assert!(p.pending());
        assert_eq!(p.ack(), 0x21);
    }

    #[test]
    fn fixed_priority_and_nesting() {
        let mut p = pair();
        p.irq(3, true);
        p.irq(5, true);
        assert_eq!(p.ack(), 0x23);
        assert!(!p.pending(), "IRQ 5 must wait while IRQ 3 is in service");
        p.irq(1, true);
        assert!(p.pending(), "IRQ 1 outranks IRQ 3 and nests");
        assert_eq!(p.ack(), 0x21);
        assert_eq!(p.regs(0).1, 0x0a);
        p.out(0x20, 0x20); // EOI ends IRQ 1, the highest in service
        assert_eq!(p.regs(0).1, 0x08);
        p.out(0x20, 0x63); // specific EOI for IRQ 3
        assert_eq!(p.ack(), 0x25);
    }

    #[test]
    fn rotation_on_eoi_and_set_priority() {
        let mut p = pair();
        p.irq(0, true);
        assert_eq!(p.ack(), 0x20);
        p.out(0x20, 0xa0); // rotate on non-specific EOI: IRQ 0 becomes lowest
        p.irq(0, false);
        p.irq(0, true);
        p.irq(4, true);
        assert_eq!(p.ack(), 0x24);
        p.out(0x20, 0xe4); // rotate on specific EOI of IRQ 4: IRQ 5 is now highest
        p.irq(6, true);
        assert_eq!(p.ack(), 0x26);
        p.out(0x20, 0x66);
        p.out(0x20, 0xc3); // set priority: IRQ 3 lowest, IRQ 4 highest
        p.irq(4, false);
        p.irq(4, true);
        assert_eq!(p.ack(), 0x24);
        p.out(0x20, 0x64);
        assert_eq!(p.ack(), 0x20);
    }

    #[test]
    fn cascade_through_irq2() {
        let mut p = pair();
        p.irq(10, true);
        assert!(p.pending());
        assert_eq!(p.ack(), 0x2a);
        assert_eq!(p.regs(0).1, 0x04);
        assert_eq!(p.regs(1).1, 0x04);
        // Masking on the slave hides its lines from the master.
        p.out(0xa1, 0x08);
        p.irq(11, true);
        assert!(!p.pending());
        p.out(0xa0, 0x20);
        p.out(0x20, 0x20);
        assert_eq!(p.regs(0).1 | p.regs(1).1, 0);
        assert!(!p.pending());
        p.out(0xa1, 0x00);
        assert_eq!(p.ack(), 0x2b);
    }

    #[test]
    fn level_triggered_lines_through_elcr() {
        let mut p = pair();
        p.out(0x4d1, 0x08); // IRQ 11 level-triggered
        assert_eq!(p.inb(0x4d1), 0x08);
        p.out(0x4d0, 0xff); // IRQ 0-2 cannot be level-triggered
        assert_eq!(p.inb(0x4d0), 0xf8);
        p.out(0x4d0, 0x00);
        p.irq(11, true);
        assert_eq!(p.ack(), 0x2b);
        p.out(0xa0, 0x20);
        p.out(0x20, 0x20);
        assert!(p.pending(), "a level line still high requests again");
        assert_eq!(p.ack(), 0x2b);
        p.out(0xa0, 0x20);
        p.out(0x20, 0x20);
        p.irq(11, false);
        assert!(!p.pending());
        // ICW1.LTIM makes every line of that chip level-triggered.
        p.out(0x20, 0x19);
        p.out(0x21, 0x20);
        p.out(0x21, 0x04);
        p.out(0x21, 0x01);
        p.irq(5, true);
        assert_eq!(p.ack(), 0x25);
        p.out(0x20, 0x20);
        assert!(p.pending());
    }

    #[test]
    fn spurious_irq7_and_irq15() {
        let mut p = pair();
        p.out(0x4d0, 0x20); // IRQ 5 level
        p.irq(5, true);
        assert!(p.pending());
        p.irq(5, false); // gone before the INTA cycle
        assert_eq!(p.ack(), 0x27);
        assert_eq!(p.regs(0).1, 0, "a spurious IRQ 7 is not put in service");
        p.out(0x4d1, 0x20); // IRQ 13 may not be level; IRQ 14 may
        assert_eq!(p.inb(0x4d1), 0x00);
        p.out(0x4d1, 0x40);
        p.irq(14, true);
        p.irq(14, false);
        p.irq(14, true);
        // The master saw IRQ 2; the slave's request vanishes before INTA.
        let mut guard = p.pic.lock().unwrap();
        guard.chips[1].irr = 0;
        assert_eq!(guard.acknowledge(), 0x2f);
        assert_eq!(
            guard.registers(0).1,
            0x04,
            "the master's IRQ 2 is in service"
        );
        assert_eq!(guard.registers(1).1, 0x00);
        assert_eq!(guard.spurious, 2);
    }

    #[test]
    fn ocw3_reads_and_poll_mode() {
        let mut p = pair();
        p.irq(3, true);
        p.irq(4, true);
        assert_eq!(p.inb(0x20), 0x18); // IRR by default
        p.out(0x20, 0x0b); // read ISR
        assert_eq!(p.inb(0x20), 0x00);
        p.out(0x20, 0x0c); // poll
        assert_eq!(p.inb(0x20), 0x83);
        assert_eq!(p.inb(0x20), 0x08, "one poll, then ISR reads again");
        p.out(0x20, 0x0a); // read IRR
        assert_eq!(p.inb(0x20), 0x10);
        p.out(0x20, 0x0c);
        assert_eq!(p.inb(0x20), 0x00, "IRQ 4 is below IRQ 3 in service");
    }

    #[test]
    fn auto_eoi_and_special_mask_mode() {
        let p = pair_with(0x03); // auto-EOI
        p.irq(3, true);
        assert_eq!(p.ack(), 0x23);
        assert_eq!(p.regs(0).1, 0);
        p.irq(5, true);
        assert_eq!(p.ack(), 0x25);

        let mut p = pair();
        p.irq(3, true);
        assert_eq!(p.ack(), 0x23);
        p.irq(5, true);
        assert!(!p.pending());
        p.out(0x21, 0x08); // mask IRQ 3 ...
        p.out(0x20, 0x68); // ... in special mask mode: lower priorities may interrupt
        assert!(p.pending());
        assert_eq!(p.ack(), 0x25);
        p.out(0x20, 0x48); // special mask mode off
        p.out(0x20, 0x65);
        assert!(!p.pending());
    }

    #[test]
    fn odd_accesses_never_panic() {
        let mut p = pair();
        p.master.read(0, 0, &mut []);
        p.master.write(0, 0, &[]);
        p.elcr.write(0, 7, &[0x00]); // offsets wrap to the two ports
        p.irq(200, true);
        p.irq(16, true);
        assert!(!p.pending());
        // A word write to 0x20 is a byte to 0x20 then one to 0x21.
        p.master.write(0, 0, &[0x0b, 0x40]);
        assert_eq!(p.inb(0x21), 0x40);
        let mut w = [0u8; 4];
        p.slave.read(0, 1, &mut w);
        assert_eq!(w, [0, 0, 0, 0]);
        p.elcr.write(0, 1, &[0xff, 0xff]);
        assert_eq!(p.inb(0x4d1), 0xde);
        // ICW1 in the middle of anything restarts initialisation; a bare data byte then is ICW2.
        p.out(0x20, 0x13); // single, ICW4
        p.out(0x21, 0x08);
        p.out(0x21, 0x01);
        p.irq(0, false);
        p.irq(0, true);
        assert_eq!(p.ack(), 0x08);
        p.out(0x20, 0x40); // OCW2 "no operation"
        p.out(0x20, 0x20);
        p.irq(0, false);
        // EOI with nothing in service is harmless.
        p.out(0x20, 0x20);
        p.out(0xa0, 0x60);
        let fresh = Pic::default();
        assert!(!fresh.has_interrupt());
    }
}
