//! Device I/O in lockstep: backend A talks to the real devices and every access is recorded;
//! backend B is served the recorded reads in order, and its writes are compared with A's, so both
//! see the same inputs and any difference in what they send to devices is caught.

use std::collections::VecDeque;
use std::sync::Mutex;

use janus_accel::IoHandler;
use janus_accel::io::MsrFault;

/// The kind of a device access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoKind {
    /// Port read.
    PioRead,
    /// Port write.
    PioWrite,
    /// MMIO read.
    MmioRead,
    /// MMIO write.
    MmioWrite,
    /// RDMSR of a device's MSR (the LAPIC's TSC deadline, x2APIC): the data is the outcome
    /// (see [`msr_outcome`]).
    MsrRead,
    /// WRMSR of a device's MSR: the value written (8 bytes), then the outcome's tag.
    MsrWrite,
    /// Instructions retired at a block boundary (`addr`: how many) and the TSC the machine
    /// answered (8 bytes, or none). Recorded only by a [`Recorder::timed`] recorder, as are the
    /// interrupts taken below.
    Retired,
    /// An interrupt acknowledged (the vector, one byte).
    IntAck,
    /// An NMI taken.
    TakeNmi,
}

/// An MSR access's outcome as event bytes: empty when no device owns the MSR, `[1]` and the
/// value for a read served, `[1]` for a write taken, `[2]` for #GP.
fn msr_outcome<T: Copy>(r: Option<Result<T, MsrFault>>, bytes: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
    match r {
        None => vec![],
        Some(Ok(v)) => [vec![1], bytes(v)].concat(),
        Some(Err(MsrFault)) => vec![2],
    }
}

/// One device access and its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoEvent {
    /// Which access.
    pub kind: IoKind,
    /// Port or physical address.
    pub addr: u64,
    /// Bytes read or written.
    pub data: Vec<u8>,
}

impl std::fmt::Display for IoEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {:#x} {:02x?}", self.kind, self.addr, self.data)
    }
}

/// Accesses one recording keeps (about 16 MiB): a step, or a whole program under
/// [`super::WholeProgram`], that makes more (a REP INSB with a huge count on KVM) is not
/// recorded further, and [`Recorder::overflowed`] says so.
pub const MAX_EVENTS: usize = 1 << 18;

/// Wraps the real devices and records every access.
#[allow(missing_debug_implementations)]
pub struct Recorder<'a> {
    inner: &'a dyn IoHandler,
    /// Also time and interrupts: the vCPU reports retired instructions to the machine and takes
    /// interrupts from it itself (block-at-a-time lockstep).
    timed: bool,
    log: Mutex<Vec<IoEvent>>,
    overflowed: std::sync::atomic::AtomicBool,
}

impl<'a> Recorder<'a> {
    /// Records accesses made through `inner`.
    pub fn new(inner: &'a dyn IoHandler) -> Self {
        Recorder {
            inner,
            timed: false,
            log: Mutex::new(Vec::new()),
            overflowed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Records accesses, time reports and interrupt acknowledgements made through `inner`
    /// (which must count instructions): the vCPU talks to the machine's clock and interrupt
    /// controllers itself.
    pub fn timed(inner: &'a dyn IoHandler) -> Self {
        Recorder {
            timed: true,
            ..Recorder::new(inner)
        }
    }

    /// Whether accesses were left out of the recording since the last [`Recorder::take`]
    /// (more than [`MAX_EVENTS`]).
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes the accesses recorded so far.
    pub fn take(&self) -> Vec<IoEvent> {
        self.overflowed
            .store(false, std::sync::atomic::Ordering::Relaxed);
        std::mem::take(&mut *self.log.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn push(&self, kind: IoKind, addr: u64, data: &[u8]) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() >= MAX_EVENTS {
            self.overflowed
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        log.push(IoEvent {
            kind,
            addr,
            data: data.to_vec(),
        });
    }
}

impl IoHandler for Recorder<'_> {
    fn pio_read(&self, vcpu: usize, port: u16, data: &mut [u8]) {
        self.inner.pio_read(vcpu, port, data);
        self.push(IoKind::PioRead, u64::from(port), data);
    }
    fn pio_write(&self, vcpu: usize, port: u16, data: &[u8]) {
        self.inner.pio_write(vcpu, port, data);
        self.push(IoKind::PioWrite, u64::from(port), data);
    }
    fn mmio_read(&self, vcpu: usize, addr: u64, data: &mut [u8]) {
        self.inner.mmio_read(vcpu, addr, data);
        self.push(IoKind::MmioRead, addr, data);
    }
    fn mmio_write(&self, vcpu: usize, addr: u64, data: &[u8]) {
        self.inner.mmio_write(vcpu, addr, data);
        self.push(IoKind::MmioWrite, addr, data);
    }
    // Device MSRs are the machine's only under a timed recording (block-at-a-time lockstep):
    // a single-stepped software vCPU reads its TSC from its instruction count, not from the
    // machine's clock, so a TSC-deadline timer armed on the machine would fire at the wrong
    // time; there the CPU offers no TSC deadline (no device answers), as before.
    fn msr_read(&self, vcpu: usize, msr: u32) -> Option<Result<u64, MsrFault>> {
        if !self.timed {
            return None;
        }
        let r = self.inner.msr_read(vcpu, msr);
        let data = msr_outcome(r, |v: u64| v.to_le_bytes().to_vec());
        self.push(IoKind::MsrRead, u64::from(msr), &data);
        r
    }
    fn msr_write(&self, vcpu: usize, msr: u32, value: u64) -> Option<Result<(), MsrFault>> {
        if !self.timed {
            return None;
        }
        let r = self.inner.msr_write(vcpu, msr, value);
        let data = [value.to_le_bytes().to_vec(), msr_outcome(r, |()| vec![])].concat();
        self.push(IoKind::MsrWrite, u64::from(msr), &data);
        r
    }
    fn counts_instructions(&self) -> bool {
        self.timed && self.inner.counts_instructions()
    }
    fn retired(&self, vcpu: usize, n: u64) -> Option<u64> {
        if !self.timed {
            return None;
        }
        let r = self.inner.retired(vcpu, n);
        self.push(
            IoKind::Retired,
            n,
            &r.map(u64::to_le_bytes).unwrap_or_default(),
        );
        r
    }
    fn interrupt_pending(&self, vcpu: usize) -> bool {
        self.timed && self.inner.interrupt_pending(vcpu)
    }
    fn acknowledge_interrupt(&self, vcpu: usize) -> Option<u8> {
        if !self.timed {
            return None;
        }
        let r = self.inner.acknowledge_interrupt(vcpu);
        if let Some(v) = r {
            self.push(IoKind::IntAck, 0, &[v]);
        }
        r
    }
    fn nmi_pending(&self, vcpu: usize) -> bool {
        self.timed && self.inner.nmi_pending(vcpu)
    }
    fn take_nmi(&self, vcpu: usize) -> bool {
        if !self.timed {
            return false;
        }
        let r = self.inner.take_nmi(vcpu);
        if r {
            self.push(IoKind::TakeNmi, 0, &[]);
        }
        r
    }
}

/// Serves recorded reads and checks writes against the recording.
#[derive(Debug, Default)]
pub struct Replayer {
    /// Serves time and interrupts too (see [`Recorder::timed`]).
    timed: bool,
    events: Mutex<VecDeque<IoEvent>>,
    mismatches: Mutex<Vec<String>>,
}

/// Mismatches kept per step.
const MAX_MISMATCHES: usize = 32;

impl Replayer {
    /// A replayer of a [`Recorder::timed`] recording.
    pub fn timed() -> Self {
        Replayer {
            timed: true,
            ..Replayer::default()
        }
    }

    /// Whether every recorded event has been served.
    pub fn drained(&self) -> bool {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// The next event, when it is `kind` (for time and interrupt questions, which A asked
    /// in the same order); `None` (and a mismatch) otherwise.
    fn next_timed(&self, kind: IoKind) -> Option<IoEvent> {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        match events.front() {
            Some(e) if e.kind == kind => events.pop_front(),
            other => {
                let what = match other {
                    Some(e) => format!("backend a made {e}"),
                    None => "backend a made no more".into(),
                };
                drop(events);
                self.mismatch(format!("backend b asked {kind:?} but {what}"));
                None
            }
        }
    }

    /// Whether the next recorded event is `kind` (A took an interrupt or NMI here: the
    /// questions that led to it are not recorded, as the two executors ask them a different
    /// number of times, e.g. once per REP iteration or per block).
    fn front_is(&self, kind: IoKind) -> bool {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .front()
            .is_some_and(|e| e.kind == kind)
    }

    /// Loads the accesses the other backend made in this step.
    pub fn load(&self, events: Vec<IoEvent>) {
        *self.events.lock().unwrap_or_else(|p| p.into_inner()) = events.into();
    }

    /// Takes the mismatches found, including recorded accesses this backend did not make.
    pub fn finish(&self) -> Vec<String> {
        let mut m = std::mem::take(&mut *self.mismatches.lock().unwrap_or_else(|p| p.into_inner()));
        for e in self
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            if m.len() < MAX_MISMATCHES {
                m.push(format!("backend b did not make the access {e}"));
            }
        }
        m
    }

    /// The next event if it is `kind` at `addr`, whatever its length (an MSR outcome's). A
    /// step recorded on KVM has none where the software CPU asks (KVM keeps the local APIC's
    /// MSRs, and the software CPU probes IA32_TSC_DEADLINE for CPUID): unless both sides are
    /// software (a timed recording), no recorded MSR access means "no device's".
    fn next_msr(&self, kind: IoKind, msr: u32) -> Option<IoEvent> {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        match events.front() {
            Some(e) if e.kind == kind && e.addr == u64::from(msr) => events.pop_front(),
            Some(e) if !self.timed && !matches!(e.kind, IoKind::MsrRead | IoKind::MsrWrite) => None,
            None if !self.timed => None,
            other => {
                let what = match other {
                    Some(e) => format!("backend a made {e}"),
                    None => "backend a made no more accesses".into(),
                };
                drop(events);
                self.mismatch(format!("backend b made {kind:?} {msr:#x} but {what}"));
                None
            }
        }
    }

    fn next(&self, kind: IoKind, addr: u64, len: usize) -> Option<IoEvent> {
        let e = self
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        match e {
            Some(e) if e.kind == kind && e.addr == addr && e.data.len() == len => Some(e),
            other => {
                let what = match other {
                    Some(e) => format!("backend a made {e}"),
                    None => "backend a made no more accesses".into(),
                };
                self.mismatch(format!(
                    "backend b made {kind:?} {addr:#x} ({len} bytes) but {what}"
                ));
                None
            }
        }
    }

    /// Records a mismatch; only the first few are kept (a runaway REP into MMIO would otherwise
    /// fill memory with them).
    fn mismatch(&self, m: String) {
        let mut v = self.mismatches.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < MAX_MISMATCHES {
            v.push(m);
        }
    }

    fn read(&self, kind: IoKind, addr: u64, data: &mut [u8]) {
        match self.next(kind, addr, data.len()) {
            Some(e) => data.copy_from_slice(&e.data),
            None => data.fill(0xff),
        }
    }

    fn write(&self, kind: IoKind, addr: u64, data: &[u8]) {
        if let Some(e) = self.next(kind, addr, data.len())
            && e.data != data
        {
            self.mismatch(format!(
                "backend b wrote {:02x?} to {addr:#x}, backend a wrote {:02x?}",
                data, e.data
            ));
        }
    }
}

impl IoHandler for Replayer {
    fn pio_read(&self, _vcpu: usize, port: u16, data: &mut [u8]) {
        self.read(IoKind::PioRead, u64::from(port), data);
    }
    fn pio_write(&self, _vcpu: usize, port: u16, data: &[u8]) {
        self.write(IoKind::PioWrite, u64::from(port), data);
    }
    fn mmio_read(&self, _vcpu: usize, addr: u64, data: &mut [u8]) {
        self.read(IoKind::MmioRead, addr, data);
    }
    fn mmio_write(&self, _vcpu: usize, addr: u64, data: &[u8]) {
        self.write(IoKind::MmioWrite, addr, data);
    }
    fn msr_read(&self, _vcpu: usize, msr: u32) -> Option<Result<u64, MsrFault>> {
        let e = self.next_msr(IoKind::MsrRead, msr)?;
        match e.data.as_slice() {
            [1, v @ ..] if v.len() == 8 => Some(Ok(u64::from_le_bytes(v.try_into().ok()?))),
            [2] => Some(Err(MsrFault)),
            _ => None,
        }
    }
    fn msr_write(&self, _vcpu: usize, msr: u32, value: u64) -> Option<Result<(), MsrFault>> {
        let e = self.next_msr(IoKind::MsrWrite, msr)?;
        let (written, outcome) = e.data.split_at(8.min(e.data.len()));
        if written != value.to_le_bytes() {
            self.mismatch(format!(
                "backend b wrote {value:#x} to MSR {msr:#x}, backend a wrote {written:02x?}"
            ));
        }
        match outcome {
            [1] => Some(Ok(())),
            [2] => Some(Err(MsrFault)),
            _ => None,
        }
    }
    fn counts_instructions(&self) -> bool {
        self.timed
    }
    fn retired(&self, _vcpu: usize, n: u64) -> Option<u64> {
        if !self.timed {
            return None;
        }
        let e = self.next_timed(IoKind::Retired)?;
        if e.addr != n {
            self.mismatch(format!(
                "backend b retired {n} instructions in a block, backend a {}",
                e.addr
            ));
        }
        Some(u64::from_le_bytes(e.data.as_slice().try_into().ok()?))
    }
    fn interrupt_pending(&self, _vcpu: usize) -> bool {
        self.timed && self.front_is(IoKind::IntAck)
    }
    fn acknowledge_interrupt(&self, _vcpu: usize) -> Option<u8> {
        if !self.timed {
            return None;
        }
        self.next_timed(IoKind::IntAck)?.data.first().copied()
    }
    fn nmi_pending(&self, _vcpu: usize) -> bool {
        self.timed && self.front_is(IoKind::TakeNmi)
    }
    fn take_nmi(&self, _vcpu: usize) -> bool {
        self.timed && self.next_timed(IoKind::TakeNmi).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl IoHandler for Fixed {
        fn pio_read(&self, _: usize, port: u16, data: &mut [u8]) {
            data.fill(port as u8);
        }
        fn pio_write(&self, _: usize, _: u16, _: &[u8]) {}
        fn mmio_read(&self, _: usize, _: u64, data: &mut [u8]) {
            data.fill(0xff);
        }
        fn mmio_write(&self, _: usize, _: u64, _: &[u8]) {}
    }

    #[test]
    fn replays_reads_and_accepts_equal_writes() {
        let rec = Recorder::new(&Fixed);
        let mut b = [0u8; 1];
        rec.pio_read(0, 0x71, &mut b);
        rec.pio_write(0, 0x3f8, b"A");
        let rep = Replayer::default();
        rep.load(rec.take());
        let mut c = [0u8; 1];
        rep.pio_read(0, 0x71, &mut c);
        assert_eq!(c, [0x71]);
        rep.pio_write(0, 0x3f8, b"A");
        assert!(rep.finish().is_empty());
    }

    #[test]
    fn reports_different_writes_and_missing_accesses() {
        let rec = Recorder::new(&Fixed);
        rec.pio_write(0, 0x3f8, b"A");
        rec.mmio_write(0, 0xd000_0000, &[1, 2, 3, 4]);
        let rep = Replayer::default();
        rep.load(rec.take());
        rep.pio_write(0, 0x3f8, b"B");
        let m = rep.finish();
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].contains("wrote [42]"), "{m:?}");
        assert!(m[1].contains("did not make"), "{m:?}");
    }

    /// Owns MSR 0x6e0 (as the LAPIC owns the TSC deadline) and refuses writes of 0 to it.
    struct Msrs;
    impl IoHandler for Msrs {
        fn pio_read(&self, _: usize, _: u16, _: &mut [u8]) {}
        fn pio_write(&self, _: usize, _: u16, _: &[u8]) {}
        fn mmio_read(&self, _: usize, _: u64, _: &mut [u8]) {}
        fn mmio_write(&self, _: usize, _: u64, _: &[u8]) {}
        fn msr_read(&self, _: usize, msr: u32) -> Option<Result<u64, MsrFault>> {
            (msr == 0x6e0).then_some(Ok(0x1234_5678_9abc))
        }
        fn msr_write(&self, _: usize, msr: u32, v: u64) -> Option<Result<(), MsrFault>> {
            (msr == 0x6e0).then_some(if v == 0 { Err(MsrFault) } else { Ok(()) })
        }
    }

    #[test]
    fn device_msrs_are_recorded_and_replayed_with_their_outcomes() {
        let rec = Recorder::timed(&Msrs);
        assert_eq!(rec.msr_read(0, 0x6e0), Some(Ok(0x1234_5678_9abc)));
        assert_eq!(rec.msr_read(0, 0x10), None);
        assert_eq!(rec.msr_write(0, 0x6e0, 5), Some(Ok(())));
        assert_eq!(rec.msr_write(0, 0x6e0, 0), Some(Err(MsrFault)));
        let rep = Replayer::default();
        rep.load(rec.take());
        assert_eq!(rep.msr_read(0, 0x6e0), Some(Ok(0x1234_5678_9abc)));
        assert_eq!(rep.msr_read(0, 0x10), None);
        assert_eq!(rep.msr_write(0, 0x6e0, 5), Some(Ok(())));
        assert_eq!(rep.msr_write(0, 0x6e0, 0), Some(Err(MsrFault)));
        assert!(rep.finish().is_empty());
        // B writing another value is a mismatch.
        rep.load(rec.take());
        let rec = Recorder::timed(&Msrs);
        rec.msr_write(0, 0x6e0, 5);
        rep.load(rec.take());
        rep.msr_write(0, 0x6e0, 6);
        assert_eq!(rep.finish().len(), 1);
    }

    /// A machine under deterministic time: 100 ns per instruction, interrupt 0x30 waiting.
    struct Timed(std::sync::atomic::AtomicBool);
    impl IoHandler for Timed {
        fn pio_read(&self, _: usize, _: u16, data: &mut [u8]) {
            data.fill(7);
        }
        fn pio_write(&self, _: usize, _: u16, _: &[u8]) {}
        fn mmio_read(&self, _: usize, _: u64, _: &mut [u8]) {}
        fn mmio_write(&self, _: usize, _: u64, _: &[u8]) {}
        fn counts_instructions(&self) -> bool {
            true
        }
        fn retired(&self, _: usize, n: u64) -> Option<u64> {
            Some(n * 100)
        }
        fn interrupt_pending(&self, _: usize) -> bool {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
        fn acknowledge_interrupt(&self, _: usize) -> Option<u8> {
            self.0
                .swap(false, std::sync::atomic::Ordering::SeqCst)
                .then_some(0x30)
        }
    }

    #[test]
    fn a_timed_recording_replays_time_and_the_interrupts_taken_where_they_were_taken() {
        let machine = Timed(true.into());
        let rec = Recorder::timed(&machine);
        assert!(rec.counts_instructions());
        assert_eq!(rec.retired(0, 3), Some(300));
        // Questions are not recorded; what was taken is.
        assert!(rec.interrupt_pending(0) && rec.interrupt_pending(0));
        assert_eq!(rec.acknowledge_interrupt(0), Some(0x30));
        let mut d = [0];
        rec.pio_read(0, 0x60, &mut d);
        let rep = Replayer::timed();
        rep.load(rec.take());
        assert!(rep.counts_instructions());
        // No interrupt before the block's time report, as on A.
        assert!(!rep.interrupt_pending(0));
        assert_eq!(rep.retired(0, 3), Some(300));
        assert!(rep.interrupt_pending(0) && rep.interrupt_pending(0));
        assert_eq!(rep.acknowledge_interrupt(0), Some(0x30));
        assert!(!rep.interrupt_pending(0));
        rep.pio_read(0, 0x60, &mut d);
        assert_eq!(d, [7]);
        assert!(rep.drained() && rep.finish().is_empty());
        // A block of another length is a mismatch.
        let rec = Recorder::timed(&machine);
        rec.retired(0, 3);
        rep.load(rec.take());
        assert_eq!(rep.retired(0, 4), Some(300));
        assert_eq!(rep.finish().len(), 1);
        // Untimed recorders leave time and interrupts alone.
        let plain = Recorder::new(&machine);
        assert!(!plain.counts_instructions() && !plain.interrupt_pending(0));
        assert!(plain.take().is_empty());
    }

    #[test]
    fn a_recording_is_bounded() {
        let rec = Recorder::new(&Fixed);
        for _ in 0..MAX_EVENTS + 10 {
            rec.pio_write(0, 0x80, &[1]);
        }
        assert!(rec.overflowed());
        assert_eq!(rec.take().len(), MAX_EVENTS);
        assert!(!rec.overflowed());
    }

    #[test]
    fn reports_an_access_a_did_not_make() {
        let rep = Replayer::default();
        rep.load(vec![]);
        let mut d = [0u8; 2];
        rep.pio_read(0, 0x60, &mut d);
        assert_eq!(d, [0xff, 0xff]);
        assert_eq!(rep.finish().len(), 1);
    }
}
