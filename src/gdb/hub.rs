//! Where the gdbstub meets the vCPU threads: all-stop coordination.
//!
//! A vCPU belongs to its thread, so the stub never touches one directly. When the debugger
//! stops the machine (Ctrl-C, a breakpoint or a finished step on any vCPU, a new connection,
//! or `-S` before the first instruction), every vCPU is held: it is kicked out of guest code
//! and parks in [`Hub::check`], called by the vCPU loop before each `run` and in its waits.
//! A parked vCPU runs the jobs the stub sends it (read registers, write memory, set
//! breakpoints: closures over `&mut dyn Vcpu`) until the stub resumes it, with its own action
//! (continue, step, or stay parked under gdb's scheduler locking). Once every vCPU is parked
//! after a stop, the stub is told which vCPU stopped first and why.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use janus_accel::{Exit, Kicker, Vcpu};

use crate::control::Control;

/// What a vCPU does when the debugger resumes the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// Run until the next stop.
    Continue,
    /// Run one instruction, then stop the machine.
    Step,
    /// Stay parked (gdb's scheduler locking holds this thread).
    Stay,
}

/// Why the machine stopped for the debugger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopWhy {
    /// The debugger asked (Ctrl-C, or a new connection).
    Interrupted,
    /// A breakpoint at this linear address.
    Breakpoint(u64),
    /// A single step finished.
    Step,
}

/// A stop, reported to the stub once every vCPU is parked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stop {
    /// The vCPU that stopped first.
    pub vcpu: usize,
    /// Why.
    pub why: StopWhy,
}

/// Work for a parked vCPU.
type Job = Box<dyn FnOnce(&mut dyn Vcpu) + Send>;

struct State {
    /// Each vCPU must park (or stay parked).
    hold: Vec<bool>,
    /// Each vCPU is parked now.
    parked: Vec<bool>,
    /// Each vCPU single-steps when it resumes.
    step: Vec<bool>,
    /// Each vCPU is single-stepping for the debugger now.
    stepping: Vec<bool>,
    /// Jobs waiting for each vCPU.
    jobs: Vec<Vec<Job>>,
    /// The first stop since the last resume, not yet reported.
    stop: Option<Stop>,
}

/// The meeting point of the stub and the vCPU threads.
pub struct Hub {
    nr: usize,
    state: Mutex<State>,
    changed: Condvar,
    /// Some vCPU must park: the vCPU loop's fast path reads only this.
    attention: AtomicBool,
    kickers: Mutex<Vec<Option<Kicker>>>,
    stops: Sender<Stop>,
    stops_rx: Receiver<Stop>,
    control: Arc<Control>,
    /// The stub has told gdb the machine ended (the run waits a little for that).
    exit_reported: Mutex<bool>,
    exit_cond: Condvar,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("nr", &self.nr)
            .finish_non_exhaustive()
    }
}

/// How long the stub waits for a parked vCPU to run a job before giving up on it (a vCPU
/// whose thread ended with the machine never answers).
const JOB_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a parked vCPU looks at whether the machine is stopping.
const PARK_SLICE: Duration = Duration::from_millis(50);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// A hub for `nr` vCPUs; with `hold`, every vCPU parks before its first instruction
    /// (`-S`) and the stop is reported as [`StopWhy::Interrupted`] of vCPU 0.
    pub fn new(nr: usize, hold: bool, control: Arc<Control>) -> Self {
        let (stops, stops_rx) = crossbeam_channel::unbounded();
        Hub {
            nr,
            state: Mutex::new(State {
                hold: vec![hold; nr],
                parked: vec![false; nr],
                step: vec![false; nr],
                stepping: vec![false; nr],
                jobs: (0..nr).map(|_| Vec::new()).collect(),
                stop: hold.then_some(Stop {
                    vcpu: 0,
                    why: StopWhy::Interrupted,
                }),
            }),
            changed: Condvar::new(),
            attention: AtomicBool::new(hold),
            kickers: Mutex::new(vec![None; nr]),
            stops,
            stops_rx,
            control,
            exit_reported: Mutex::new(false),
            exit_cond: Condvar::new(),
        }
    }

    /// The number of vCPUs.
    pub fn vcpus(&self) -> usize {
        self.nr
    }

    /// Registers vCPU `index`'s kicker.
    pub fn add_kicker(&self, index: usize, k: Kicker) {
        if let Some(slot) = lock(&self.kickers).get_mut(index) {
            *slot = Some(k);
        }
    }

    /// The machine's stop handle.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Stops reported once every vCPU has parked.
    pub fn stops(&self) -> &Receiver<Stop> {
        &self.stops_rx
    }

    fn kick_all(&self) {
        for k in lock(&self.kickers).iter().flatten() {
            k.kick();
        }
    }

    /// Holds every vCPU and records `stop` unless a stop is already pending.
    fn stop_all(&self, stop: Stop) {
        {
            let mut s = lock(&self.state);
            if s.stop.is_none() {
                s.stop = Some(stop);
            }
            s.hold.iter_mut().for_each(|h| *h = true);
            self.attention.store(true, Ordering::SeqCst);
            self.report_if_all_parked(&mut s);
        }
        self.kick_all();
        self.changed.notify_all();
    }

    /// The debugger asks the machine to stop (Ctrl-C, a new connection).
    pub fn interrupt(&self) {
        self.stop_all(Stop {
            vcpu: 0,
            why: StopWhy::Interrupted,
        });
    }

    fn report_if_all_parked(&self, s: &mut State) {
        if s.parked.iter().all(|p| *p)
            && let Some(stop) = s.stop.take()
        {
            let _ = self.stops.send(stop);
        }
    }

    /// Resumes the machine: each vCPU with its action (`actions[i]` for vCPU `i`).
    pub fn resume(&self, actions: &[Resume]) {
        // A stop reported before this resume is stale.
        while self.stops_rx.try_recv().is_ok() {}
        let mut s = lock(&self.state);
        s.stop = None;
        for i in 0..self.nr {
            let a = actions.get(i).copied().unwrap_or(Resume::Continue);
            s.hold[i] = a == Resume::Stay;
            s.step[i] = a == Resume::Step;
        }
        self.attention
            .store(s.hold.iter().any(|h| *h), Ordering::SeqCst);
        drop(s);
        self.changed.notify_all();
    }

    /// Runs `job` on parked vCPU `index` and returns its result; `None` if the vCPU did not
    /// answer within [`JOB_TIMEOUT`] (its thread ended with the machine).
    pub fn with_vcpu<R: Send + 'static>(
        &self,
        index: usize,
        job: impl FnOnce(&mut dyn Vcpu) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        {
            let mut s = lock(&self.state);
            s.jobs
                .get_mut(index)?
                .push(Box::new(move |v: &mut dyn Vcpu| {
                    let _ = tx.send(job(v));
                }));
        }
        self.changed.notify_all();
        let deadline = Instant::now() + JOB_TIMEOUT;
        loop {
            match rx.recv_timeout(PARK_SLICE) {
                Ok(r) => return Some(r),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return None,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    // A machine that stopped has no parked vCPUs left to answer.
                    if self.control.stopping() || Instant::now() >= deadline {
                        return None;
                    }
                }
            }
        }
    }

    /// The vCPU loop's hook before each `run` and in its waits: parks vCPU `index` while the
    /// debugger holds it, running the stub's jobs, and sets single-stepping for what follows.
    /// Returns at once when nothing is asked, and when the machine stops.
    pub fn check(&self, index: usize, vcpu: &mut dyn Vcpu) {
        if !self.attention.load(Ordering::Relaxed) {
            return;
        }
        let mut s = lock(&self.state);
        if !s.hold.get(index).copied().unwrap_or(false) {
            return;
        }
        s.parked[index] = true;
        self.report_if_all_parked(&mut s);
        loop {
            let jobs = std::mem::take(&mut s.jobs[index]);
            if !jobs.is_empty() {
                drop(s);
                for job in jobs {
                    job(vcpu);
                }
                s = lock(&self.state);
                continue;
            }
            if !s.hold[index] || self.control.stopping() {
                break;
            }
            s = self
                .changed
                .wait_timeout(s, PARK_SLICE)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        s.parked[index] = false;
        let step = std::mem::replace(&mut s.step[index], false);
        let was = std::mem::replace(&mut s.stepping[index], step);
        drop(s);
        if step != was {
            let _ = vcpu.set_single_step(step);
        }
        // The kick that brought it here is served; one that stops the machine stays.
        if let Some(Some(k)) = lock(&self.kickers).get(index) {
            k.clear();
            if self.control.stopping() {
                k.kick();
            }
        }
    }

    /// The vCPU loop's hook after each `run`: a breakpoint, or the end of a debugger's
    /// single step (a stepped HLT included), stops the machine for the debugger.
    pub fn after_exit(&self, index: usize, exit: &Exit) {
        let why = match exit {
            Exit::Breakpoint(addr) => StopWhy::Breakpoint(*addr),
            Exit::SingleStep | Exit::Halt
                if lock(&self.state).stepping.get(index).copied() == Some(true) =>
            {
                StopWhy::Step
            }
            _ => return,
        };
        self.stop_all(Stop { vcpu: index, why });
    }

    /// Whether the debugger holds vCPU `index` (its wait loops return to let it park).
    pub fn holds(&self, index: usize) -> bool {
        self.attention.load(Ordering::Relaxed)
            && lock(&self.state).hold.get(index).copied() == Some(true)
    }

    /// Releases every vCPU for good (the debugger left): no holds, no stepping.
    pub fn release_all(&self) {
        self.resume(&vec![Resume::Continue; self.nr]);
    }

    /// The stub has told gdb that the machine ended.
    pub fn exit_reported(&self) {
        *lock(&self.exit_reported) = true;
        self.exit_cond.notify_all();
    }

    /// Called by the run once the machine stopped: waits up to `timeout` for the stub to tell
    /// a connected gdb, so that gdb sees the exit before janus is gone.
    pub fn wait_exit_reported(&self, timeout: Duration, connected: bool) {
        if !connected {
            return;
        }
        let deadline = Instant::now() + timeout;
        let mut done = lock(&self.exit_reported);
        while !*done {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            done = self
                .exit_cond
                .wait_timeout(done, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use janus_accel::memory::{GuestMemory, RegionKind};
    use janus_accel::registry::{AccelConfig, AccelKind, open};
    use janus_accel::{CpuState, NoDevices};

    /// A vCPU thread in miniature: check, run, after_exit, until the machine stops.
    fn vcpu_loop(hub: Arc<Hub>, mut v: Box<dyn Vcpu + Send>) {
        let control = hub.control().clone();
        while !control.stopping() {
            hub.check(0, &mut *v);
            match v.run(&NoDevices) {
                Ok(Exit::Stopped) => v.kicker().clear(),
                Ok(e) => hub.after_exit(0, &e),
                Err(_) => break,
            }
        }
    }

    #[test]
    fn held_vcpu_runs_jobs_steps_and_stops_at_a_breakpoint() {
        let mut mem = GuestMemory::new();
        mem.add(0, 1 << 20, RegionKind::Ram).unwrap();
        // mov ax, 1 / inc ax / inc ax / jmp $ (an endless loop for the Ctrl-C case).
        mem.load(0x7c00, &[0xb8, 0x01, 0x00, 0x40, 0x40, 0xeb, 0xfe])
            .unwrap();
        let accel = open(AccelKind::Interp, &AccelConfig::new(mem, 1)).unwrap();
        let mut v = accel.create_vcpu(0).unwrap();
        v.set_state(&CpuState::boot_sector()).unwrap();
        let control = Arc::new(Control::new());
        let hub = Arc::new(Hub::new(1, true, control.clone()));
        hub.add_kicker(0, v.kicker());
        control.add_kicker(v.kicker());
        let t = {
            let hub = hub.clone();
            std::thread::spawn(move || vcpu_loop(hub, v))
        };
        let wait = || hub.stops().recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(wait().why, StopWhy::Interrupted, "-S holds it first");
        let rip = || hub.with_vcpu(0, |v| v.state().unwrap().rip).unwrap();
        assert_eq!(rip(), 0x7c00);
        hub.resume(&[Resume::Step]);
        assert_eq!(wait().why, StopWhy::Step);
        assert_eq!(rip(), 0x7c03);
        let bp = janus_accel::Breakpoint {
            addr: 0x7c05,
            kind: janus_accel::BreakpointKind::Software,
        };
        hub.with_vcpu(0, move |v| v.set_breakpoints(&[bp]).unwrap())
            .unwrap();
        hub.resume(&[Resume::Continue]);
        assert_eq!(wait().why, StopWhy::Breakpoint(0x7c05));
        hub.with_vcpu(0, |v| v.set_breakpoints(&[]).unwrap())
            .unwrap();
        hub.resume(&[Resume::Continue]);
        std::thread::sleep(Duration::from_millis(20));
        hub.interrupt();
        assert_eq!(wait().why, StopWhy::Interrupted);
        assert_eq!(rip(), 0x7c05, "stopped in the loop");
        control.request_stop(crate::control::StopReason::Timeout);
        t.join().unwrap();
    }
}
