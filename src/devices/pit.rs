//! The 8254 programmable interval timer (ports 0x40-0x43) driven by the machine's [`Clock`] at
//! 1.193182 MHz, and system control port B (0x61), which gates channel 2 and shows its output for
//! calibration loops.
//!
//! Counters are computed from the clock when read, never ticked. Channel 0's output drives IRQ 0
//! through the [`IrqLine`] given to [`Pit::set_irq`]; because nothing runs between accesses, the
//! machine calls [`Pit::poll`] once the clock passes the deadline the PIT keeps in its clock
//! [`Timer`] (every register access polls too). Rising edges that happened since the last poll
//! are delivered as one pulse on the line: a late poll coalesces ticks, and the count is
//! returned for statistics.
//!
//! Simplified: a count is loaded at the write, not on the next input clock edge (one tick
//! earlier than the real part); in mode 3 with an odd count the counter's values are close but
//! not exact (OUT's timing is exact); the speaker makes no sound; channel 1's output goes
//! nowhere.

use std::sync::{Arc, Mutex};

use super::IrqLine;
use crate::bus::BusDevice;
use crate::clock::{Clock, Timer, ns_to_ticks, ticks_to_ns};

/// The PIT's input clock, in Hz.
pub const PIT_HZ: u64 = 1_193_182;

/// Port B's refresh-request bit toggles every 15.085 us, as on a PC.
const REFRESH_PERIOD_NS: u64 = 15_085;

const ACCESS_LO: u8 = 1;
const ACCESS_HI: u8 = 2;
const ACCESS_WORD: u8 = 3;

/// One counter.
#[derive(Debug, Clone)]
struct Channel {
    mode: u8,
    /// Bits 3-1 of the control word as written (modes 6 and 7 alias 2 and 3).
    mode_bits: u8,
    access: u8,
    bcd: bool,
    gate: bool,
    /// The count register as last written (the "CR"), 1..=65536 (10000 in BCD).
    programmed: u32,
    /// A whole count was written since the control word.
    loaded: bool,
    /// The counting element holds a count and counts (modes 1 and 5: has been triggered).
    armed: bool,
    /// Counting is not held by the gate.
    running: bool,
    /// The counting element's reload value.
    count: u32,
    /// Absolute PIT tick at which the elapsed count was `base`.
    start: u64,
    base: u64,
    /// Modes 2 and 3: `programmed` replaces `count` at tick `reload_at`, the end of the period.
    reload_at: Option<u64>,
    null_count: bool,
    /// What the counter reads while it is not counting.
    frozen: u16,
    write_hi_next: bool,
    write_lo: u8,
    read_hi_next: bool,
    latch: Option<(u16, bool)>,
    status_latch: Option<u8>,
    /// Rising edges of OUT counted since the last poll, and the tick they were counted up to.
    edges: u64,
    synced: u64,
}

impl Channel {
    fn new(gate: bool) -> Self {
        Channel {
            mode: 0,
            mode_bits: 0,
            access: ACCESS_WORD,
            bcd: false,
            gate,
            programmed: 0x10000,
            loaded: false,
            armed: false,
            running: false,
            count: 0x10000,
            start: 0,
            base: 0,
            reload_at: None,
            null_count: true,
            frozen: 0,
            write_hi_next: false,
            write_lo: 0,
            read_hi_next: false,
            latch: None,
            status_latch: None,
            edges: 0,
            synced: 0,
        }
    }

    fn modulus(&self) -> u32 {
        if self.bcd { 10_000 } else { 0x10000 }
    }

    /// Ticks counted by the counting element at absolute tick `now`.
    fn elapsed(&self, now: u64) -> u64 {
        self.base
            + if self.running {
                now.saturating_sub(self.start)
            } else {
                0
            }
    }

    fn out_at(&self, d: u64) -> bool {
        let n = u64::from(self.count);
        match self.mode {
            0 | 1 => d >= n,
            2 => d % n != n - 1,
            3 => d % n < n.div_ceil(2),
            _ => d != n,
        }
    }

    /// OUT at tick `now`.
    fn out(&self, now: u64) -> bool {
        if (self.mode == 2 || self.mode == 3) && !self.gate {
            return true;
        }
        if !self.armed {
            return self.mode != 0;
        }
        self.out_at(self.elapsed(now))
    }

    /// Rising edges of OUT for elapsed counts in (d0, d1].
    fn rising_edges(&self, d0: u64, d1: u64) -> u64 {
        let n = u64::from(self.count);
        if d1 <= d0 {
            return 0;
        }
        match self.mode {
            0 | 1 => u64::from(d0 < n && n <= d1),
            2 | 3 if n >= 2 => d1 / n - d0 / n,
            2 | 3 => 0,
            _ => u64::from(d0 <= n && n < d1),
        }
    }

    /// Counts edges up to `now` and applies a reload that fell due.
    fn sync(&mut self, now: u64) {
        if !self.armed {
            self.synced = now;
            return;
        }
        if let Some(at) = self.reload_at
            && self.running
            && now >= at
        {
            let (d0, d1) = (self.elapsed(self.synced.min(at)), self.elapsed(at));
            self.edges += self.rising_edges(d0, d1);
            self.count = self.programmed;
            self.start = at;
            self.base = 0;
            self.reload_at = None;
            self.null_count = false;
            self.synced = at;
        }
        let (d0, d1) = (self.elapsed(self.synced.max(self.start)), self.elapsed(now));
        self.edges += self.rising_edges(d0, d1);
        self.synced = now;
    }

    /// The absolute tick of OUT's next rising edge, if it will rise without a register access.
    fn next_edge(&self, now: u64) -> Option<u64> {
        if !self.armed || !self.running {
            return None;
        }
        let (n, d) = (u64::from(self.count), self.elapsed(now));
        let next = match self.mode {
            0 | 1 => (d < n).then_some(n),
            2 | 3 => (n >= 2).then_some((d / n + 1) * n),
            _ => (d <= n).then_some(n + 1),
        }?;
        let tick = (self.start + next).checked_sub(self.base)?;
        Some(self.reload_at.map_or(tick, |at| at.min(tick)))
    }

    /// The counter's value now (binary, before BCD encoding).
    fn value(&self, now: u64) -> u16 {
        if !self.armed {
            return self.frozen;
        }
        let (n, d, m) = (
            u64::from(self.count),
            self.elapsed(now),
            u64::from(self.modulus()),
        );
        let v = match self.mode {
            0 | 1 | 4 | 5 => (n + m - d % m) % m,
            2 => n - d % n,
            3 => {
                let phase = d % n;
                if n % 2 == 0 {
                    n - 2 * (phase % (n / 2))
                } else if phase < n.div_ceil(2) {
                    n - 2 * phase
                } else {
                    n - 1 - 2 * (phase - n.div_ceil(2))
                }
            }
            _ => 0,
        };
        (v % m) as u16
    }

    fn encoded_value(&self, now: u64) -> u16 {
        let v = self.value(now);
        if self.bcd { to_bcd(v) } else { v }
    }

    fn status(&self, now: u64) -> u8 {
        (u8::from(self.out(now)) << 7)
            | (u8::from(self.null_count) << 6)
            | (self.access << 4)
            | (self.mode_bits << 1)
            | u8::from(self.bcd)
    }

    fn start_counting(&mut self, now: u64) {
        self.count = self.programmed;
        self.armed = true;
        self.running = true;
        self.start = now;
        self.base = 0;
        self.synced = now;
        self.reload_at = None;
        self.null_count = false;
    }

    fn control(&mut self, now: u64, v: u8) {
        self.frozen = self.value(now);
        let mode_bits = (v >> 1) & 7;
        *self = Channel {
            mode: if mode_bits >= 6 {
                mode_bits - 4
            } else {
                mode_bits
            },
            mode_bits,
            access: (v >> 4) & 3,
            bcd: v & 1 != 0,
            frozen: self.frozen,
            edges: self.edges,
            programmed: self.programmed,
            ..Channel::new(self.gate)
        };
        self.synced = now;
    }

    fn load(&mut self, now: u64, raw: u16) {
        let n = if self.bcd {
            u32::from(from_bcd(raw))
        } else {
            u32::from(raw)
        };
        self.programmed = if n == 0 { self.modulus() } else { n };
        self.loaded = true;
        match self.mode {
            1 | 5 => self.null_count = true, // loaded by the next trigger
            2 | 3 if self.armed && self.running => {
                let (n, d) = (u64::from(self.count), self.elapsed(now));
                self.reload_at = Some(self.start + (d / n + 1) * n - self.base);
                self.null_count = true;
            }
            2 | 3 if !self.gate => self.null_count = true, // loaded when the gate rises
            _ => {
                self.start_counting(now);
                self.running = self.gate || self.mode == 2 || self.mode == 3;
            }
        }
    }

    fn write(&mut self, now: u64, v: u8) {
        self.sync(now);
        match self.access {
            ACCESS_LO => self.load(now, u16::from(v)),
            ACCESS_HI => self.load(now, u16::from(v) << 8),
            _ if !self.write_hi_next => {
                self.write_lo = v;
                self.write_hi_next = true;
                if self.mode == 0 {
                    // Writing the first byte stops a mode 0 count (OUT stays low).
                    self.frozen = self.value(now);
                    self.armed = false;
                }
            }
            _ => {
                self.write_hi_next = false;
                self.load(now, u16::from(self.write_lo) | u16::from(v) << 8);
            }
        }
    }

    fn read(&mut self, now: u64) -> u8 {
        if let Some(s) = self.status_latch.take() {
            return s;
        }
        let (v, hi) = match self.latch {
            Some((v, hi_next)) => {
                let word_lo = self.access == ACCESS_WORD && !hi_next;
                self.latch = word_lo.then_some((v, true));
                (
                    v,
                    self.access == ACCESS_HI || (self.access == ACCESS_WORD && hi_next),
                )
            }
            None => {
                let v = self.encoded_value(now);
                let hi = match self.access {
                    ACCESS_HI => true,
                    ACCESS_WORD => {
                        self.read_hi_next = !self.read_hi_next;
                        !self.read_hi_next
                    }
                    _ => false,
                };
                (v, hi)
            }
        };
        if hi { (v >> 8) as u8 } else { v as u8 }
    }

    fn latch_count(&mut self, now: u64) {
        if self.latch.is_none() {
            self.latch = Some((self.encoded_value(now), false));
        }
    }

    fn set_gate(&mut self, now: u64, high: bool) {
        self.sync(now);
        let rising = high && !self.gate;
        self.gate = high;
        match self.mode {
            0 | 4 if self.armed => {
                if high && !self.running {
                    self.start = now;
                    self.running = true;
                } else if !high && self.running {
                    self.base = self.elapsed(now);
                    self.running = false;
                }
            }
            1 | 5 if rising && self.loaded => self.start_counting(now),
            2 | 3 if !high && self.running => {
                self.base = self.elapsed(now);
                self.running = false;
            }
            2 | 3 if rising && self.loaded => self.start_counting(now),
            _ => {}
        }
    }
}

fn to_bcd(v: u16) -> u16 {
    let v = v % 10_000;
    ((v / 1000) << 12) | ((v / 100 % 10) << 8) | ((v / 10 % 10) << 4) | (v % 10)
}

fn from_bcd(v: u16) -> u16 {
    (v >> 12) * 1000 + (v >> 8 & 0xf) * 100 + (v >> 4 & 0xf) * 10 + (v & 0xf)
}

/// The three channels and port 0x61.
pub struct Pit {
    clock: Clock,
    timer: Timer,
    channels: [Channel; 3],
    /// Port 0x61 bits 0-3 as written (gate 2, speaker enable, parity and channel check).
    port_b: u8,
    irq: Option<Arc<dyn IrqLine>>,
    irq_level: bool,
    /// Channel 0 rising edges seen by [`Pit::poll`] (more than one pulse each when coalesced).
    pub ticks: u64,
}

impl std::fmt::Debug for Pit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pit")
            .field("channels", &self.channels)
            .field("port_b", &self.port_b)
            .field("timer", &self.timer)
            .finish_non_exhaustive()
    }
}

impl Pit {
    /// A PIT on `clock` with no channel programmed (firmware programs channel 0). Channel 0 and
    /// 1 gates are tied high; channel 2's follows port 0x61 bit 0, initially low.
    pub fn new(clock: &Clock) -> Self {
        Pit {
            timer: clock.timer("pit"),
            clock: clock.clone(),
            channels: [Channel::new(true), Channel::new(true), Channel::new(false)],
            port_b: 0,
            irq: None,
            irq_level: false,
            ticks: 0,
        }
    }

    /// A PIT shared between the bus (0x40-0x43), [`SystemPortB`] and the machine's timer service.
    pub fn shared(clock: &Clock) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self::new(clock)))
    }

    /// Wires channel 0's output (IRQ 0 on a PC).
    pub fn set_irq(&mut self, irq: Arc<dyn IrqLine>) {
        irq.set_level(self.irq_level);
        self.irq = Some(irq);
        self.poll();
    }

    fn now_tick(&self) -> u64 {
        ns_to_ticks(self.clock.now_ns(), PIT_HZ)
    }

    /// Brings channel 0's output line up to the clock: rising edges since the last poll become
    /// one pulse, then the line takes OUT's level; re-arms the clock timer for the next edge.
    /// Returns the number of rising edges seen (0 if none). Cheap; call it whenever the clock
    /// passes [`Timer::deadline`] (the machine's timer service) or more often.
    pub fn poll(&mut self) -> u64 {
        let now = self.now_tick();
        let ch = &mut self.channels[0];
        ch.sync(now);
        let edges = std::mem::take(&mut ch.edges);
        let out = ch.out(now);
        let next = ch.next_edge(now);
        if let Some(irq) = &self.irq {
            if edges > 0 {
                irq.set_level(!out);
                irq.set_level(out);
            } else if out != self.irq_level {
                irq.set_level(out);
            }
        }
        self.irq_level = out;
        self.ticks += edges;
        self.timer.set(next.map(|t| ticks_to_ns(t, PIT_HZ)));
        edges
    }

    /// The virtual time of channel 0's next rising edge, if armed.
    pub fn deadline(&self) -> Option<u64> {
        self.timer.deadline()
    }

    /// Sets the gate input of `channel` (0-2; others are ignored). On a PC only channel 2's gate
    /// is wired (to port 0x61 bit 0).
    pub fn set_gate(&mut self, channel: usize, high: bool) {
        let now = self.now_tick();
        if let Some(ch) = self.channels.get_mut(channel) {
            ch.set_gate(now, high);
        }
        self.poll();
    }

    /// OUT of `channel` now (false for channels that do not exist).
    pub fn out(&mut self, channel: usize) -> bool {
        let now = self.sync_all();
        self.channels.get(channel).is_some_and(|c| c.out(now))
    }

    /// Brings every channel up to the clock (a reload may have fallen due); returns the tick.
    fn sync_all(&mut self) -> u64 {
        let now = self.now_tick();
        for ch in &mut self.channels {
            ch.sync(now);
        }
        now
    }

    fn write_control(&mut self, v: u8) {
        let now = self.sync_all();
        let sel = usize::from(v >> 6);
        if sel == 3 {
            // Read-back: bit 5 low latches counts, bit 4 low latches status.
            for (i, ch) in self.channels.iter_mut().enumerate() {
                if v & (2 << i) == 0 {
                    continue;
                }
                if v & 0x10 == 0 && ch.status_latch.is_none() {
                    ch.status_latch = Some(ch.status(now));
                }
                if v & 0x20 == 0 {
                    ch.latch_count(now);
                }
            }
            return;
        }
        let ch = &mut self.channels[sel];
        if v & 0x30 == 0 {
            ch.latch_count(now);
        } else {
            ch.control(now, v);
        }
    }

    /// Reads port 0x40 + `reg` (0-3).
    fn read_port(&mut self, reg: u64) -> u8 {
        let now = self.sync_all();
        match reg {
            0..=2 => self.channels[reg as usize].read(now),
            _ => 0xff, // the control register is write-only
        }
    }

    /// Writes port 0x40 + `reg` (0-3).
    fn write_port(&mut self, reg: u64, v: u8) {
        let now = self.now_tick();
        match reg {
            0..=2 => self.channels[reg as usize].write(now, v),
            _ => self.write_control(v),
        }
        self.poll();
    }

    /// Port 0x61 as read: bits 0-3 as written, 4 the refresh toggle, 5 channel 2's OUT.
    pub fn read_port_b(&mut self) -> u8 {
        let refresh = (self.clock.now_ns() / REFRESH_PERIOD_NS) & 1 == 1;
        self.port_b | u8::from(refresh) << 4 | u8::from(self.out(2)) << 5
    }

    /// Port 0x61 as written: bit 0 gates channel 2, bit 1 enables the speaker (not emulated),
    /// bits 2-3 are stored; the rest are read-only.
    pub fn write_port_b(&mut self, v: u8) {
        self.port_b = v & 0x0f;
        self.set_gate(2, v & 1 != 0);
    }
}

impl BusDevice for Pit {
    fn label(&self) -> &str {
        "pit"
    }

    fn read(&mut self, _vcpu: usize, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.read_port((offset + i as u64) & 3);
        }
    }

    fn write(&mut self, _vcpu: usize, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            self.write_port((offset + i as u64) & 3, b);
        }
    }
}

/// System control port B (0x61), a view of the PIT's channel 2 gate and output.
#[derive(Debug)]
pub struct SystemPortB {
    pit: Arc<Mutex<Pit>>,
}

impl SystemPortB {
    /// Port 0x61 over `pit`.
    pub fn new(pit: Arc<Mutex<Pit>>) -> Self {
        SystemPortB { pit }
    }
}

impl BusDevice for SystemPortB {
    fn label(&self) -> &str {
        "port61"
    }

    fn read(&mut self, _vcpu: usize, _offset: u64, data: &mut [u8]) {
        let v = self
            .pit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .read_port_b();
        data.fill(0xff);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn write(&mut self, _vcpu: usize, _offset: u64, data: &[u8]) {
        if let Some(&v) = data.first() {
            self.pit
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .write_port_b(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every level the line is driven to.
    #[derive(Default)]
    struct Line(Mutex<Vec<bool>>);
    impl IrqLine for Line {
        fn set_level(&self, high: bool) {
            self.0.lock().unwrap().push(high);
        }
    }
    impl Line {
        fn rises(&self) -> usize {
            let v = self.0.lock().unwrap();
            v.windows(2).filter(|w| !w[0] && w[1]).count() + usize::from(v.first() == Some(&true))
        }
    }

    struct Rig {
        clock: Clock,
        pit: Arc<Mutex<Pit>>,
        line: Arc<Line>,
        port_b: SystemPortB,
    }

    impl Rig {
        fn new() -> Self {
            let clock = Clock::deterministic(1);
            let pit = Pit::shared(&clock);
            let line = Arc::new(Line::default());
            pit.lock().unwrap().set_irq(line.clone());
            line.0.lock().unwrap().clear();
            Rig {
                port_b: SystemPortB::new(pit.clone()),
                clock,
                pit,
                line,
            }
        }
        /// Moves the clock to absolute PIT tick `t`.
        fn at(&self, t: u64) {
            self.clock.advance_to(ticks_to_ns(t, PIT_HZ));
        }
        fn out(&self, port: u64, v: u8) {
            self.pit.lock().unwrap().write(0, port - 0x40, &[v]);
        }
        fn inb(&self, port: u64) -> u8 {
            let mut b = [0];
            self.pit.lock().unwrap().read(0, port - 0x40, &mut b);
            b[0]
        }
        fn count(&self, port: u64) -> u16 {
            u16::from(self.inb(port)) | u16::from(self.inb(port)) << 8
        }
        fn program(&self, ch: u8, control: u8, count: u16) {
            self.out(0x43, ch << 6 | control);
            self.out(0x40 + u64::from(ch), count as u8);
            self.out(0x40 + u64::from(ch), (count >> 8) as u8);
        }
        fn poll(&self) -> u64 {
            self.pit.lock().unwrap().poll()
        }
        fn b(&mut self) -> u8 {
            let mut b = [0];
            self.port_b.read(0, 0, &mut b);
            b[0]
        }
    }

    #[test]
    fn mode0_interrupt_on_terminal_count() {
        let r = Rig::new();
        r.program(0, 0x30, 100);
        assert!(!r.pit.lock().unwrap().out(0));
        assert_eq!(
            r.pit.lock().unwrap().deadline(),
            Some(ticks_to_ns(100, PIT_HZ))
        );
        r.at(99);
        assert_eq!(r.count(0x40), 1);
        assert_eq!(r.poll(), 0);
        r.at(100);
        assert_eq!(r.clock.expired(), vec!["pit".to_string()]);
        assert_eq!(r.poll(), 1);
        assert_eq!(r.line.rises(), 1);
        assert!(*r.line.0.lock().unwrap().last().unwrap());
        assert_eq!(r.pit.lock().unwrap().deadline(), None, "one interrupt only");
        r.at(101);
        assert_eq!(r.count(0x40), 0xffff, "the counter wraps and goes on");
        // Reprogramming lowers OUT at once.
        r.out(0x43, 0x30);
        assert!(!*r.line.0.lock().unwrap().last().unwrap());
    }

    #[test]
    fn mode2_rate_generator_periods_and_coalescing() {
        let r = Rig::new();
        r.program(0, 0x34, 10);
        assert_eq!(r.line.rises(), 1, "the control word raises OUT");
        r.line.0.lock().unwrap().clear();
        r.at(35);
        assert_eq!(r.count(0x40), 5);
        assert_eq!(r.poll(), 3);
        assert_eq!(r.line.rises(), 1, "late ticks come as one pulse");
        assert_eq!(
            r.pit.lock().unwrap().deadline(),
            Some(ticks_to_ns(40, PIT_HZ))
        );
        r.at(39);
        assert!(
            !r.pit.lock().unwrap().out(0),
            "OUT is low for the last tick of a period"
        );
        r.at(40);
        assert!(r.pit.lock().unwrap().out(0));
        assert_eq!(r.count(0x40), 10);
        assert_eq!(r.poll(), 1);
        // A second of count 2 is 596591 periods, delivered without a loop.
        r.program(0, 0x34, 2);
        r.at(40 + PIT_HZ);
        assert_eq!(r.poll(), PIT_HZ / 2);
    }

    #[test]
    fn mode2_new_count_waits_for_the_end_of_the_period() {
        let r = Rig::new();
        r.program(0, 0x34, 100);
        r.at(30);
        r.program(0, 0x34 & 0x0f | 0x30, 0); // same mode, control word restarts: count 65536
        r.at(40);
        assert_eq!(r.count(0x40), 65536u32.wrapping_sub(10) as u16);
        r.program(0, 0x34, 100);
        r.at(60);
        r.out(0x40, 50);
        r.out(0x40, 0);
        r.out(0x43, 0xe2); // read-back status of channel 0
        assert_eq!(
            r.inb(0x40) & 0x40,
            0x40,
            "null count until the new count is loaded"
        );
        assert_eq!(r.count(0x40), 80);
        r.at(160); // the period started at 40 ends at 140
        assert_eq!(r.count(0x40), 30);
        assert_eq!(r.poll(), 1);
        r.at(210);
        assert_eq!(r.poll(), 1);
        r.out(0x43, 0xe2);
        assert_eq!(r.inb(0x40) & 0x40, 0);
    }

    #[test]
    fn mode3_square_wave_even_and_odd() {
        let r = Rig::new();
        r.program(0, 0x36, 10);
        let seen: Vec<(u16, bool)> = (0..=10)
            .map(|t| {
                r.at(t);
                (r.count(0x40), r.pit.lock().unwrap().out(0))
            })
            .collect();
        assert_eq!(
            seen.iter().map(|s| s.0).collect::<Vec<_>>(),
            [10, 8, 6, 4, 2, 10, 8, 6, 4, 2, 10]
        );
        assert_eq!(seen.iter().filter(|s| s.1).count(), 6);
        assert!(seen[4].1 && !seen[5].1 && seen[10].1);
        assert_eq!(r.poll(), 1);
        r.program(0, 0x36, 5);
        let start = 10;
        let outs: Vec<bool> = (0..5)
            .map(|t| {
                r.at(start + t);
                r.pit.lock().unwrap().out(0)
            })
            .collect();
        assert_eq!(outs, [true, true, true, false, false]);
    }

    #[test]
    fn latch_and_read_back() {
        let r = Rig::new();
        r.program(0, 0x34, 1000);
        r.at(100);
        r.out(0x43, 0x00); // latch channel 0
        r.at(200);
        r.out(0x43, 0x00); // ignored: already latched
        assert_eq!(r.count(0x40), 900);
        assert_eq!(r.count(0x40), 800, "the latch is gone after two reads");
        // Read-back: status and count of channel 0; status first.
        r.out(0x43, 0xc2);
        r.at(300);
        assert_eq!(r.inb(0x40), 0x80 | 0x30 | 0x04);
        assert_eq!(r.count(0x40), 800);
        // Status alone, and a control word without a count shows null count.
        r.out(0x43, 0x76); // channel 1, lo/hi, mode 3
        r.out(0x43, 0xe4);
        assert_eq!(r.inb(0x41), 0x80 | 0x40 | 0x30 | 0x06);
        // Low-byte-only and high-byte-only access.
        r.out(0x43, 0x50); // channel 1, lsb only, mode 0
        r.out(0x41, 0x20);
        r.at(310);
        assert_eq!(r.inb(0x41), 0x16);
        assert_eq!(r.inb(0x41), 0x16);
        r.out(0x43, 0x60); // msb only
        r.out(0x41, 0x02);
        r.at(311);
        assert_eq!(r.inb(0x41), 0x01, "0x0200 - 1 = 0x01ff");
    }

    #[test]
    fn port_61_gates_channel_2_for_calibration() {
        let mut r = Rig::new();
        // As Linux's pit_calibrate_tsc: gate on, speaker off, mode 0, lo/hi.
        let b = r.b();
        r.port_b.write(0, 0, &[(b & !0x02) | 0x01]);
        r.out(0x43, 0xb0);
        r.out(0x42, 0xe8);
        r.out(0x42, 0x03);
        r.at(999);
        assert_eq!(r.b() & 0x21, 0x01);
        r.at(1000);
        assert_eq!(r.b() & 0x21, 0x21);
        // Gate low holds a mode 0 count; bits 2-3 stick, bit 5 and up are read-only.
        r.port_b.write(0, 0, &[0xfc]);
        assert_eq!(r.b() & 0xef, 0x2c);
        r.out(0x43, 0xb0);
        r.out(0x42, 0x10);
        r.out(0x42, 0x00);
        r.at(2000);
        assert_eq!(r.count(0x42), 0x10, "gate low: not counting");
        r.port_b.write(0, 0, &[0x01]);
        r.at(2005);
        assert_eq!(r.count(0x42), 0x0b);
        // The refresh bit toggles every 15.085 us.
        let t = r.clock.now_ns();
        r.clock.advance_to((t / 15_085 + 1) * 15_085);
        let a = r.b() & 0x10;
        r.clock.advance_ns(15_085);
        assert_ne!(r.b() & 0x10, a);
    }

    #[test]
    fn hardware_triggered_modes_1_and_5_and_strobe_4() {
        let mut r = Rig::new();
        r.out(0x43, 0xb2); // channel 2, mode 1
        r.out(0x42, 10);
        r.out(0x42, 0);
        assert!(r.pit.lock().unwrap().out(2), "mode 1 waits for a trigger");
        r.at(50);
        r.port_b.write(0, 0, &[1]);
        assert!(!r.pit.lock().unwrap().out(2));
        r.at(59);
        assert!(!r.pit.lock().unwrap().out(2));
        r.at(60);
        assert!(r.pit.lock().unwrap().out(2));
        // Mode 5: one strobe, N+1 ticks after the trigger.
        r.port_b.write(0, 0, &[0]);
        r.out(0x43, 0xba);
        r.out(0x42, 5);
        r.out(0x42, 0);
        r.port_b.write(0, 0, &[1]);
        let outs: Vec<bool> = (0..8)
            .map(|t| {
                r.at(60 + t);
                r.pit.lock().unwrap().out(2)
            })
            .collect();
        assert_eq!(outs, [true, true, true, true, true, false, true, true]);
        // Mode 4 on channel 0: the strobe is an interrupt.
        r.program(0, 0x38, 20); // at tick 67
        r.at(67 + 20);
        assert!(!r.pit.lock().unwrap().out(0));
        assert_eq!(r.poll(), 0);
        r.at(67 + 21);
        assert_eq!(r.poll(), 1);
        assert_eq!(r.pit.lock().unwrap().deadline(), None);
    }

    #[test]
    fn bcd_counting() {
        let r = Rig::new();
        r.program(0, 0x31, 0x0100); // mode 0, BCD 100
        r.at(1);
        assert_eq!(r.count(0x40), 0x0099);
        r.at(101);
        assert_eq!(r.count(0x40), 0x9999, "BCD wraps at 10000");
        r.program(0, 0x35, 0x0000); // mode 2, BCD 0 = 10000
        assert_eq!(
            r.pit.lock().unwrap().deadline(),
            Some(ticks_to_ns(101 + 10_000, PIT_HZ))
        );
    }

    #[test]
    fn odd_accesses_never_panic() {
        let r = Rig::new();
        let mut port_b = SystemPortB::new(r.pit.clone());
        port_b.read(0, 0, &mut []);
        port_b.write(0, 0, &[]);
        let mut w = [0u8; 4];
        port_b.read(0, 0, &mut w);
        assert_eq!(w[1..], [0xff; 3]);
        r.pit.lock().unwrap().read(0, 0, &mut []);
        r.pit.lock().unwrap().write(0, 0, &[]);
        assert_eq!(r.inb(0x43), 0xff, "the control register is write-only");
        // Unprogrammed channels read something and raise nothing.
        let _ = r.count(0x40);
        assert_eq!(r.poll(), 0);
        // A word access covers two ports.
        let mut w = [0u8; 2];
        r.pit.lock().unwrap().read(0, 2, &mut w);
        r.pit.lock().unwrap().write(0, 3, &[0x34, 0x00]);
        // Mode 2 and 3 with count 1 (illegal on the real part) and read-back of nothing.
        r.program(0, 0x34, 1);
        r.at(10);
        let _ = r.poll();
        r.program(0, 0x36, 1);
        r.at(20);
        let _ = r.poll();
        r.out(0x43, 0xc0);
        r.out(0x43, 0xfe); // read-back with neither count nor status
        let mut pit = r.pit.lock().unwrap();
        pit.set_gate(7, true);
        assert!(!pit.out(9));
        // Half a count, then a control word: the stale byte is dropped.
        pit.write(0, 0x43 - 0x40, &[0x30]);
        pit.write(0, 0, &[0x12]);
        pit.write(0, 3, &[0x30]);
        assert!(!pit.channels[0].write_hi_next);
        assert_eq!(to_bcd(1234), 0x1234);
        assert_eq!(from_bcd(0x9999), 9999);
    }
}
