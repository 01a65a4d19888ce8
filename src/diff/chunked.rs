//! Block-at-a-time lockstep of two software backends under deterministic time: both report
//! retired instructions at the same block boundaries (see accel/src/soft/icount.rs), so instead
//! of single-stepping, A runs a chunk of about [`CHUNK`] instructions at full speed against the
//! machine, with everything it asked the machine recorded (device accesses, its time reports
//! and the TSC they returned, interrupt and NMI acknowledgements, device MSRs); B then runs to
//! the same boundary served that recording, and the two are compared: the same calls in the
//! same order, the same registers, and all of RAM every `ram_every` instructions. A chunk that
//! disagrees is found again instruction by instruction: the run is deterministic, so the
//! caller boots the machine afresh, runs the good chunks again this way and single-steps the
//! bad one ([`ChunkEnd::Diverged`] names where it starts).

use std::sync::atomic::{AtomicU64, Ordering};

use janus_accel::io::MsrFault;
use janus_accel::kick::Kicker;
use janus_accel::{Exit, IoHandler};

use super::compare::compare;
use super::replay::{Recorder, Replayer};
use super::{Side, compare_ram, exit_name};
use crate::control::{Control, StopReason};
use crate::platform::Platform;

/// Instructions per chunk (a recording holds one chunk's calls: at most one time report per
/// instruction, well under the recorder's bound).
pub const CHUNK: u64 = 100_000;

/// How a block-at-a-time run ended.
#[derive(Debug)]
pub(super) enum ChunkEnd {
    /// The guest stopped, the same way on both.
    Agreed(StopReason),
    /// The instruction limit was reached (A's count; the chunks before it agreed).
    Limit,
    /// The chunk starting after `start` instructions disagreed: `why` says how.
    Diverged { start: u64, why: String },
    /// A host error.
    Failed(String),
}

/// Forwards every call to `inner` and kicks `kicker` once `target` instructions have been
/// reported retired.
struct Counted<'a> {
    inner: &'a dyn IoHandler,
    total: AtomicU64,
    target: AtomicU64,
    kicker: Kicker,
}

impl<'a> Counted<'a> {
    fn new(inner: &'a dyn IoHandler, start: u64, kicker: Kicker) -> Self {
        Counted {
            inner,
            total: AtomicU64::new(start),
            target: AtomicU64::new(u64::MAX),
            kicker,
        }
    }
    fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

impl IoHandler for Counted<'_> {
    fn pio_read(&self, vcpu: usize, port: u16, data: &mut [u8]) {
        self.inner.pio_read(vcpu, port, data);
    }
    fn pio_write(&self, vcpu: usize, port: u16, data: &[u8]) {
        self.inner.pio_write(vcpu, port, data);
    }
    fn mmio_read(&self, vcpu: usize, addr: u64, data: &mut [u8]) {
        self.inner.mmio_read(vcpu, addr, data);
    }
    fn mmio_write(&self, vcpu: usize, addr: u64, data: &[u8]) {
        self.inner.mmio_write(vcpu, addr, data);
    }
    fn interrupt_pending(&self, vcpu: usize) -> bool {
        self.inner.interrupt_pending(vcpu)
    }
    fn acknowledge_interrupt(&self, vcpu: usize) -> Option<u8> {
        self.inner.acknowledge_interrupt(vcpu)
    }
    fn nmi_pending(&self, vcpu: usize) -> bool {
        self.inner.nmi_pending(vcpu)
    }
    fn take_nmi(&self, vcpu: usize) -> bool {
        self.inner.take_nmi(vcpu)
    }
    fn counts_instructions(&self) -> bool {
        self.inner.counts_instructions()
    }
    fn retired(&self, vcpu: usize, n: u64) -> Option<u64> {
        let r = self.inner.retired(vcpu, n);
        let total = self.total.fetch_add(n, Ordering::Relaxed) + n;
        if total >= self.target.load(Ordering::Relaxed) {
            self.kicker.kick();
        }
        r
    }
    fn msr_read(&self, vcpu: usize, msr: u32) -> Option<Result<u64, MsrFault>> {
        self.inner.msr_read(vcpu, msr)
    }
    fn msr_write(&self, vcpu: usize, msr: u32, value: u64) -> Option<Result<(), MsrFault>> {
        self.inner.msr_write(vcpu, msr, value)
    }
}

/// How one side's chunk ended.
enum Ran {
    /// At the chunk's end (A), or at A's end (B).
    Boundary,
    /// Halted with nothing to wake it: no interrupt and no timer armed (A), or A's answers
    /// used up (B).
    Halted,
    /// The guest stopped (A: the machine's stop request; both: a triple fault or a failure).
    Stopped(StopReason),
}

/// Runs both sides a chunk at a time from `start` retired instructions until `limit`, the end
/// of the guest, or a disagreement. `ram_every` is rounded up to whole chunks.
pub(super) fn run(
    a: &mut Side,
    b: &mut Side,
    io: &dyn IoHandler,
    platform: &Platform,
    control: &Control,
    limit: u64,
    ram_every: u64,
) -> (u64, ChunkEnd) {
    let start = 0;
    let recorder = Recorder::timed(io);
    let replayer = Replayer::timed();
    let ca = Counted::new(&recorder, start, a.vcpu.kicker());
    let cb = Counted::new(&replayer, start, b.vcpu.kicker());
    control.add_kicker(a.vcpu.kicker());
    for s in [&mut *a, &mut *b] {
        if let Err(e) = s.vcpu.set_single_step(false) {
            return (start, ChunkEnd::Failed(e.to_string()));
        }
    }
    let mut since_ram = 0;
    loop {
        let from = ca.total();
        if from >= limit {
            return (from, ChunkEnd::Limit);
        }
        ca.target
            .store((from + CHUNK).min(limit), Ordering::Relaxed);
        let wait = Wait::Machine { platform, io };
        let ra = match run_side(a, &ca, &wait, control) {
            Ok(r) => r,
            Err(e) => return (from, ChunkEnd::Failed(e)),
        };
        if recorder.overflowed() {
            let e = "a chunk made more calls than a recording holds";
            return (from, ChunkEnd::Failed(e.into()));
        }
        replayer.load(recorder.take());
        // B runs to where A ended, chunk boundary or not.
        cb.target.store(ca.total(), Ordering::Relaxed);
        let rb = match run_side(b, &cb, &Wait::Replay(&replayer), control) {
            Ok(r) => r,
            Err(e) => return (from, ChunkEnd::Failed(e)),
        };
        let mut why = replayer.finish();
        if ca.total() != cb.total() {
            why.push(format!(
                "backend a retired {} instructions, backend b {}",
                ca.total(),
                cb.total()
            ));
        }
        let (sa, sb) = match (a.vcpu.state(), b.vcpu.state()) {
            (Ok(x), Ok(y)) => (x, y),
            (Err(e), _) | (_, Err(e)) => return (from, ChunkEnd::Failed(e.to_string())),
        };
        why.extend(compare(&sa, &sb, 0).iter().map(ToString::to_string));
        if let (Ran::Stopped(StopReason::TripleFault(_) | StopReason::VcpuFailed(_)), r)
        | (r, Ran::Stopped(StopReason::TripleFault(_) | StopReason::VcpuFailed(_))) = (&ra, &rb)
            && !matches!(r, Ran::Stopped(_))
        {
            why.push("only one backend shut down or failed".into());
        }
        since_ram += ca.total() - from;
        let last = !matches!(ra, Ran::Boundary);
        if why.is_empty() && (since_ram >= ram_every || last) {
            since_ram = 0;
            why.extend(
                compare_ram(&a.mem, &b.mem)
                    .iter()
                    .map(|(addr, x, y)| format!("memory {addr:#x}: a={x:#04x} b={y:#04x}")),
            );
        }
        if !why.is_empty() {
            let why = why.join("\n  ");
            return (from, ChunkEnd::Diverged { start: from, why });
        }
        match ra {
            Ran::Boundary => {}
            Ran::Stopped(r) => return (ca.total(), ChunkEnd::Agreed(r)),
            Ran::Halted if sa.rflags & janus_accel::state::rflags::IF == 0 => {
                let r = StopReason::HaltedInterruptsOff {
                    vcpu: 0,
                    cs: sa.cs.selector,
                    rip: sa.rip,
                };
                return (ca.total(), ChunkEnd::Agreed(r));
            }
            Ran::Halted => {
                let e = "the guest waits for an interrupt that no timer will raise";
                return (ca.total(), ChunkEnd::Failed(e.into()));
            }
        }
    }
}

/// What a side does when its vCPU halts.
enum Wait<'a> {
    /// A: as the machine's vCPU loop under deterministic time, jump the clock to the next
    /// timer (asking the machine directly, not through the recording).
    Machine {
        platform: &'a Platform,
        io: &'a dyn IoHandler,
    },
    /// B: run again while A's answers last (A woke at this point and went on).
    Replay(&'a Replayer),
}

/// Runs one side to its target.
fn run_side(
    side: &mut Side,
    io: &Counted<'_>,
    wait: &Wait<'_>,
    control: &Control,
) -> Result<Ran, String> {
    let kicker = side.vcpu.kicker();
    loop {
        let exit = side.vcpu.run(io).map_err(|e| e.to_string())?;
        let at_target = io.total() >= io.target.load(Ordering::Relaxed);
        match exit {
            Exit::Stopped | Exit::SingleStep => {
                kicker.clear();
                if let (Wait::Machine { .. }, Some(r)) = (wait, control.reason()) {
                    return Ok(Ran::Stopped(r));
                }
                if at_target {
                    return Ok(Ran::Boundary);
                }
            }
            Exit::Halt => match wait {
                Wait::Machine {
                    platform,
                    io: machine,
                } => {
                    platform.set_idle(0, true);
                    let woken = machine.interrupt_pending(0)
                        || platform.nmi_pending(0)
                        || platform.idle_jump();
                    platform.set_idle(0, false);
                    if !woken {
                        return Ok(Ran::Halted);
                    }
                }
                Wait::Replay(r) if r.drained() || at_target => return Ok(Ran::Halted),
                Wait::Replay(_) => {}
            },
            Exit::Shutdown(s) => return Ok(Ran::Stopped(StopReason::TripleFault(s))),
            Exit::Failed(f) => return Ok(Ran::Stopped(StopReason::VcpuFailed(f))),
            e => {
                return Err(format!(
                    "unexpected exit in block lockstep: {}",
                    exit_name(&e)
                ));
            }
        }
    }
}
