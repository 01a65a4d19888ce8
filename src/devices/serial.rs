//! A 16550A UART (COM1 at 0x3f8): the registers an ordinary driver programs, with a 16-byte
//! receive FIFO, loopback, scratch register, divisor latch, and the interrupt identification
//! priority of the real part. Transmit is immediate, so THR is always empty.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use super::IrqLine;
use crate::bus::BusDevice;
use crate::sink::Sink;

const IER_RDI: u8 = 0x01; // received data available
const IER_THRI: u8 = 0x02; // transmitter holding register empty
const IER_RLSI: u8 = 0x04; // receiver line status

const IIR_NONE: u8 = 0x01;
const IIR_RLSI: u8 = 0x06;
const IIR_RDI: u8 = 0x04;
const IIR_THRI: u8 = 0x02;
const IIR_MSI: u8 = 0x00;
const IIR_FIFO: u8 = 0xc0;

const LCR_DLAB: u8 = 0x80;
const LSR_DR: u8 = 0x01;
const LSR_OE: u8 = 0x02;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;
const MCR_LOOP: u8 = 0x10;

const FIFO_SIZE: usize = 16;

/// Bytes typed by the user, waiting for the guest (filled by the machine's stdin thread).
pub type InputQueue = Arc<Mutex<VecDeque<u8>>>;

/// The UART.
pub struct Serial {
    out: Sink,
    input: InputQueue,
    rx: VecDeque<u8>,
    ier: u8,
    lcr: u8,
    mcr: u8,
    lsr_extra: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    fcr: u8,
    thri_pending: bool,
    msr_delta: u8,
    irq: Option<Arc<dyn IrqLine>>,
    irq_level: bool,
    /// Bytes transmitted (for stats).
    pub tx_bytes: u64,
}

impl std::fmt::Debug for Serial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serial")
            .field("ier", &self.ier)
            .field("lcr", &self.lcr)
            .field("mcr", &self.mcr)
            .field("rx", &self.rx.len())
            .finish_non_exhaustive()
    }
}

impl Serial {
    /// A UART writing to `out`, reading typed bytes from `input`.
    pub fn new(out: Sink, input: InputQueue) -> Self {
        Serial {
            out,
            input,
            rx: VecDeque::new(),
            ier: 0,
            lcr: 0x03,
            mcr: 0x08,
            lsr_extra: 0,
            scr: 0,
            dll: 0x0c,
            dlm: 0,
            fcr: 0,
            thri_pending: false,
            msr_delta: 0,
            irq: None,
            irq_level: false,
            tx_bytes: 0,
        }
    }

    /// Wires the interrupt line (IRQ 4 on a PC).
    pub fn set_irq(&mut self, irq: Arc<dyn IrqLine>) {
        self.irq = Some(irq);
        self.update_irq();
    }

    /// Typed bytes arrived in the input queue: take them into the receive FIFO and raise the
    /// received-data interrupt if the guest enabled it (a guest that waits for that interrupt
    /// never polls the line status on its own).
    pub fn poll_input(&mut self) {
        self.pull_input();
        self.update_irq();
    }

    /// Moves typed bytes into the receive FIFO (not in loopback, where the line is disconnected).
    fn pull_input(&mut self) {
        if self.mcr & MCR_LOOP != 0 || self.rx.len() >= FIFO_SIZE {
            return;
        }
        if let Ok(mut q) = self.input.try_lock() {
            while self.rx.len() < FIFO_SIZE {
                match q.pop_front() {
                    Some(b) => self.rx.push_back(b),
                    None => break,
                }
            }
        }
    }

    fn lsr(&mut self) -> u8 {
        self.pull_input();
        let dr = if self.rx.is_empty() { 0 } else { LSR_DR };
        dr | LSR_THRE | LSR_TEMT | self.lsr_extra
    }

    fn msr(&self) -> u8 {
        let lines = if self.mcr & MCR_LOOP != 0 {
            // Loopback: RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD.
            ((self.mcr & 0x02) << 3)
                | ((self.mcr & 0x01) << 5)
                | ((self.mcr & 0x04) << 4)
                | ((self.mcr & 0x08) << 4)
        } else {
            0xb0 // CTS, DSR, DCD asserted: a terminal is attached.
        };
        lines | self.msr_delta
    }

    /// The highest-priority pending interrupt, as IIR reports it.
    fn pending(&mut self) -> u8 {
        if self.ier & IER_RLSI != 0 && self.lsr_extra & LSR_OE != 0 {
            IIR_RLSI
        } else if self.ier & IER_RDI != 0 && self.lsr() & LSR_DR != 0 {
            IIR_RDI
        } else if self.ier & IER_THRI != 0 && self.thri_pending {
            IIR_THRI
        } else if self.ier & 0x08 != 0 && self.msr_delta != 0 {
            IIR_MSI
        } else {
            IIR_NONE
        }
    }

    fn update_irq(&mut self) {
        let level = self.pending() != IIR_NONE && self.mcr & 0x08 != 0;
        if level != self.irq_level {
            self.irq_level = level;
            if let Some(irq) = &self.irq {
                irq.set_level(level);
            }
        }
    }

    fn transmit(&mut self, b: u8) {
        if self.mcr & MCR_LOOP != 0 {
            if self.rx.len() < FIFO_SIZE {
                self.rx.push_back(b);
            } else {
                self.lsr_extra |= LSR_OE;
            }
        } else {
            // Output errors (a closed pipe) must not stop the guest.
            let _ = self.out.write_all(&[b]);
            if b == b'\n' {
                let _ = self.out.flush();
            }
            self.tx_bytes += 1;
        }
        self.thri_pending = true;
    }

    /// Flushes buffered output.
    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }

    fn read_reg(&mut self, reg: u64) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match reg {
            0 if dlab => self.dll,
            0 => {
                self.pull_input();
                let b = self.rx.pop_front().unwrap_or(0);
                self.pull_input();
                b
            }
            1 if dlab => self.dlm,
            1 => self.ier,
            2 => {
                let id = self.pending();
                if id == IIR_THRI {
                    // Reading IIR while THRE is the reported source clears it.
                    self.thri_pending = false;
                }
                let fifo = if self.fcr & 1 != 0 { IIR_FIFO } else { 0 };
                id | fifo
            }
            3 => self.lcr,
            4 => self.mcr,
            5 => {
                let v = self.lsr();
                self.lsr_extra = 0; // OE clears on read.
                v
            }
            6 => {
                let v = self.msr();
                self.msr_delta = 0;
                v
            }
            _ => self.scr,
        }
    }

    fn write_reg(&mut self, reg: u64, v: u8) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match reg {
            0 if dlab => self.dll = v,
            0 => self.transmit(v),
            1 if dlab => self.dlm = v,
            1 => {
                let was = self.ier;
                self.ier = v & 0x0f;
                if self.ier & IER_THRI != 0 && was & IER_THRI == 0 {
                    // Enabling THRE interrupts with THR empty raises one at once.
                    self.thri_pending = true;
                }
            }
            2 => {
                self.fcr = v & 0xc9;
                if v & 0x02 != 0 {
                    self.rx.clear();
                }
            }
            3 => self.lcr = v,
            4 => {
                let old = self.msr() & 0xf0;
                self.mcr = v & 0x1f;
                let new = self.msr() & 0xf0;
                if self.mcr & MCR_LOOP != 0 {
                    // Delta bits: CTS, DSR, trailing edge of RI, DCD.
                    let changed = old ^ new;
                    self.msr_delta |= ((changed >> 4) & 0x0b) | (((old & !new) >> 4) & 0x04);
                }
            }
            5 | 6 => {} // LSR and MSR are read-only.
            _ => self.scr = v,
        }
    }
}

impl BusDevice for Serial {
    fn label(&self) -> &str {
        "uart0"
    }

    fn read(&mut self, _vcpu: usize, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.read_reg((offset + i as u64) & 7);
        }
        self.update_irq();
    }

    fn write(&mut self, _vcpu: usize, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            self.write_reg((offset + i as u64) & 7, b);
        }
        self.update_irq();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Line(AtomicBool);
    impl IrqLine for Line {
        fn set_level(&self, high: bool) {
            self.0.store(high, Ordering::SeqCst);
        }
    }

    fn uart() -> (Serial, Buf, InputQueue) {
        let out = Buf::default();
        let q: InputQueue = Arc::default();
        (Serial::new(Box::new(out.clone()), q.clone()), out, q)
    }

    fn rd(s: &mut Serial, reg: u64) -> u8 {
        let mut b = [0];
        s.read(0, reg, &mut b);
        b[0]
    }

    #[test]
    fn transmits_and_reports_thr_empty() {
        let (mut s, out, _) = uart();
        s.write(0, 0, b"h");
        s.write(0, 0, b"i");
        assert_eq!(&*out.0.lock().unwrap(), b"hi");
        assert_eq!(rd(&mut s, 5) & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
        assert_eq!(s.tx_bytes, 2);
    }

    #[test]
    fn divisor_latch_and_scratch() {
        let (mut s, out, _) = uart();
        s.write(0, 3, &[0x83]); // DLAB on, 8N1
        s.write(0, 0, &[0x01]);
        s.write(0, 1, &[0x00]);
        assert_eq!(rd(&mut s, 0), 0x01);
        s.write(0, 3, &[0x03]);
        assert!(
            out.0.lock().unwrap().is_empty(),
            "DLL write must not transmit"
        );
        s.write(0, 7, &[0x5a]);
        assert_eq!(rd(&mut s, 7), 0x5a);
    }

    #[test]
    fn receives_typed_bytes_with_data_ready_and_interrupt() {
        let (mut s, _, q) = uart();
        let line = Arc::new(Line(AtomicBool::new(false)));
        s.set_irq(line.clone());
        s.write(0, 4, &[0x0b]); // DTR, RTS, OUT2
        s.write(0, 1, &[IER_RDI]);
        assert_eq!(rd(&mut s, 2) & 0x0f, IIR_NONE);
        q.lock().unwrap().extend(b"ok");
        assert_eq!(rd(&mut s, 5) & LSR_DR, LSR_DR);
        assert_eq!(rd(&mut s, 2) & 0x0f, IIR_RDI);
        assert!(line.0.load(Ordering::SeqCst));
        assert_eq!(rd(&mut s, 0), b'o');
        assert_eq!(rd(&mut s, 0), b'k');
        assert_eq!(rd(&mut s, 5) & LSR_DR, 0);
        assert!(!line.0.load(Ordering::SeqCst));
    }

    #[test]
    fn typed_bytes_raise_the_interrupt_without_the_guest_polling() {
        // A guest driver that sleeps until the received-data interrupt (Linux's 8250) never
        // reads the line status first: the input side must raise the line itself.
        let (mut s, _, q) = uart();
        let line = Arc::new(Line(AtomicBool::new(false)));
        s.set_irq(line.clone());
        s.write(0, 4, &[0x0b]);
        s.write(0, 1, &[IER_RDI]);
        q.lock().unwrap().extend(b"x");
        assert!(!line.0.load(Ordering::SeqCst), "nothing pulled yet");
        s.poll_input();
        assert!(line.0.load(Ordering::SeqCst), "poll_input raises IRQ 4");
        assert_eq!(rd(&mut s, 0), b'x');
        assert!(!line.0.load(Ordering::SeqCst));
    }

    #[test]
    fn thre_interrupt_is_raised_on_enable_and_cleared_by_iir_read() {
        let (mut s, _, _) = uart();
        s.write(0, 1, &[IER_THRI]);
        assert_eq!(rd(&mut s, 2) & 0x0f, IIR_THRI);
        assert_eq!(rd(&mut s, 2) & 0x0f, IIR_NONE);
        s.write(0, 0, b"x");
        assert_eq!(rd(&mut s, 2) & 0x0f, IIR_THRI);
    }

    #[test]
    fn loopback_echoes_and_mirrors_modem_lines() {
        let (mut s, out, q) = uart();
        q.lock().unwrap().push_back(b'z'); // the outside line is disconnected in loopback
        s.write(0, 4, &[MCR_LOOP | 0x0a]); // loop, RTS, OUT2
        s.write(0, 0, &[0xa5]);
        assert!(out.0.lock().unwrap().is_empty());
        assert_eq!(rd(&mut s, 5) & LSR_DR, LSR_DR);
        assert_eq!(rd(&mut s, 0), 0xa5);
        let msr = rd(&mut s, 6);
        assert_eq!(msr & 0xf0, 0x90, "RTS->CTS, OUT2->DCD, got {msr:#x}");
    }

    #[test]
    fn fifo_enable_shows_in_iir_and_overrun_sets_oe() {
        let (mut s, _, _) = uart();
        s.write(0, 2, &[0x07]);
        assert_eq!(rd(&mut s, 2) & 0xc0, 0xc0);
        s.write(0, 4, &[MCR_LOOP]);
        for i in 0..20 {
            s.write(0, 0, &[i]);
        }
        assert_eq!(rd(&mut s, 5) & LSR_OE, LSR_OE);
        assert_eq!(rd(&mut s, 5) & LSR_OE, 0);
    }
}
