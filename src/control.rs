//! Why a machine stops, and the shared handle through which devices, vCPU threads and the main
//! thread ask it to.
//!
//! The first reason recorded wins: a guest that writes to the debug-exit port and then halts has
//! exited with its byte, not halted. Recording a reason kicks every vCPU so that all threads
//! leave guest code promptly. The same handle carries the vCPUs' exit counters to the console
//! while the machine runs (Ctrl-A s): a request kicks every vCPU, which publishes its counters
//! before it next enters the guest.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use janus_accel::{CpuState, ExitCounters, Kicker, VcpuFailure};

/// Why the machine stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The guest wrote this byte to the debug-exit port.
    GuestExit(u8),
    /// The guest triple-faulted.
    TripleFault(Box<CpuState>),
    /// A vCPU halted with interrupts disabled: nothing can wake it.
    HaltedInterruptsOff {
        /// The vCPU.
        vcpu: usize,
        /// CS selector and RIP after the HLT.
        cs: u16,
        /// RIP after the HLT.
        rip: u64,
    },
    /// The guest asked for a reset (i8042 0xFE, port 0x92, or KVM's system event).
    Reset(&'static str),
    /// The guest asked for a power-off.
    PowerOff,
    /// `--timeout` expired.
    Timeout,
    /// The user pressed Ctrl-C (SIGINT).
    Interrupted,
    /// SIGTERM or SIGHUP (the signal's number).
    Signal(i32),
    /// The user quit from the console (Ctrl-A x).
    ConsoleQuit,
    /// A replay reached the instruction its recording stops at (a divergence `janus diff`
    /// saved): the instructions retired.
    ReplayStop(u64),
    /// The backend could not run the guest.
    VcpuFailed(Box<VcpuFailure>),
    /// A host-side error while running.
    HostError(String),
    /// Guest output could not be written (a full disk, stdout on /dev/full): the message.
    OutputFailed(String),
}

/// Exit statuses of `janus run`, one per cause (the guest's own byte uses 0-255 as written).
pub mod status {
    /// The guest triple-faulted.
    pub const TRIPLE_FAULT: i32 = 112;
    /// A vCPU halted with interrupts off.
    pub const HALTED: i32 = 113;
    /// The guest reset the machine.
    pub const RESET: i32 = 114;
    /// The backend failed to run the guest (KVM internal error, entry failure...).
    pub const VCPU_FAILED: i32 = 115;
    /// The guest powered the machine off.
    pub const POWER_OFF: i32 = 116;
    /// `--timeout` expired (as coreutils' `timeout`).
    pub const TIMEOUT: i32 = 124;
    /// Interrupted by Ctrl-C (128 + SIGINT).
    pub const INTERRUPTED: i32 = 130;
    /// Stopped by SIGHUP (128 + SIGHUP).
    pub const HANGUP: i32 = 129;
    /// Stopped by SIGTERM (128 + SIGTERM).
    pub const TERMINATED: i32 = 143;
    /// Quit from the console with Ctrl-A x (as QEMU's `-serial mon:stdio` does).
    pub const CONSOLE_QUIT: i32 = 0;
    /// A host error (bad input, KVM unavailable, ...).
    pub const HOST_ERROR: i32 = 1;
    /// Guest output could not be written (sysexits' EX_IOERR).
    pub const OUTPUT_FAILED: i32 = 74;
    /// Guest output went to a closed pipe (128 + SIGPIPE, as a process killed by it).
    pub const BROKEN_PIPE: i32 = 141;
}

impl StopReason {
    /// The process exit status for this reason.
    pub fn exit_status(&self) -> i32 {
        match self {
            StopReason::GuestExit(b) => i32::from(*b),
            StopReason::TripleFault(_) => status::TRIPLE_FAULT,
            StopReason::HaltedInterruptsOff { .. } => status::HALTED,
            StopReason::Reset(_) => status::RESET,
            StopReason::PowerOff => status::POWER_OFF,
            StopReason::Timeout => status::TIMEOUT,
            StopReason::Interrupted => status::INTERRUPTED,
            StopReason::Signal(sig) => 128 + sig,
            StopReason::ConsoleQuit | StopReason::ReplayStop(_) => status::CONSOLE_QUIT,
            StopReason::VcpuFailed(_) => status::VCPU_FAILED,
            StopReason::HostError(_) => status::HOST_ERROR,
            StopReason::OutputFailed(_) => status::OUTPUT_FAILED,
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::GuestExit(b) => {
                write!(f, "guest exited with status {b} (debug-exit port 0xf4)")
            }
            StopReason::TripleFault(s) => write!(
                f,
                "guest triple-faulted at {:04x}:{:x} ({} mode); CPU shut down",
                s.cs.selector,
                s.rip,
                s.mode_name()
            ),
            StopReason::HaltedInterruptsOff { vcpu, cs, rip } => write!(
                f,
                "vCPU {vcpu} halted with interrupts disabled at {cs:04x}:{rip:x}; nothing can wake it"
            ),
            StopReason::Reset(how) => write!(f, "guest reset the machine ({how})"),
            StopReason::PowerOff => write!(f, "guest powered the machine off"),
            StopReason::Timeout => write!(f, "timeout expired; guest stopped"),
            StopReason::Interrupted => write!(f, "interrupted (Ctrl-C); guest stopped"),
            StopReason::Signal(sig) => {
                write!(
                    f,
                    "stopped by {}; guest stopped",
                    crate::signals::name(*sig)
                )
            }
            StopReason::ConsoleQuit => write!(f, "quit from the console (Ctrl-A x); guest stopped"),
            StopReason::ReplayStop(n) => write!(
                f,
                "the replay reached its stop after {n} instructions; guest stopped"
            ),
            StopReason::VcpuFailed(v) => write!(f, "vCPU failed: {v}"),
            StopReason::HostError(e) => write!(f, "host error: {e}"),
            StopReason::OutputFailed(e) => write!(f, "{e}; guest stopped"),
        }
    }
}

/// The machine's stop handle, shared by devices, vCPU threads and the main thread.
#[derive(Debug)]
pub struct Control {
    reason: Mutex<Option<StopReason>>,
    stopped: Condvar,
    kickers: Mutex<Vec<Kicker>>,
    /// The latest counters request (0: none yet).
    counters_wanted: AtomicU64,
    /// Each vCPU's answer: the request it answered and its counters.
    counters: Mutex<BTreeMap<usize, (u64, ExitCounters)>>,
    notify: Sender<()>,
    notified: Receiver<()>,
}

impl Default for Control {
    fn default() -> Self {
        let (notify, notified) = crossbeam_channel::unbounded();
        Control {
            reason: Mutex::new(None),
            stopped: Condvar::new(),
            kickers: Mutex::new(Vec::new()),
            counters_wanted: AtomicU64::new(0),
            counters: Mutex::new(BTreeMap::new()),
            notify,
            notified,
        }
    }
}

impl Control {
    /// A fresh handle with no stop requested.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a vCPU to kick when the machine stops.
    pub fn add_kicker(&self, k: Kicker) {
        let stopping = self.stopping();
        if stopping {
            k.kick();
        }
        self.kickers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(k);
    }

    /// Records `reason` if none is recorded yet, and kicks every vCPU.
    pub fn request_stop(&self, reason: StopReason) {
        {
            let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
            if r.is_some() {
                return;
            }
            *r = Some(reason);
            self.stopped.notify_all();
        }
        for k in self
            .kickers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            k.kick();
        }
        let _ = self.notify.send(());
    }

    /// Forgets the stop request and the vCPUs that obeyed it, so that the machine's devices
    /// serve another run (`janus diff --skip`: the lockstep starts where a full-speed run
    /// stopped).
    pub fn resume(&self) {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.kickers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Whether a stop was requested.
    pub fn stopping(&self) -> bool {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Waits up to `timeout` for a stop request; returns whether one was made.
    pub fn wait_stopping(&self, timeout: Duration) -> bool {
        let r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_some() {
            return true;
        }
        let (r, _) = self
            .stopped
            .wait_timeout(r, timeout)
            .unwrap_or_else(|p| p.into_inner());
        r.is_some()
    }

    /// The recorded reason.
    pub fn reason(&self) -> Option<StopReason> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The latest request for counters; a vCPU that has not answered it yet calls
    /// [`Control::publish_counters`] before it enters the guest again.
    pub fn counters_wanted(&self) -> u64 {
        self.counters_wanted.load(Ordering::Relaxed)
    }

    /// A vCPU's answer to request `request`.
    pub fn publish_counters(&self, vcpu: usize, request: u64, counters: ExitCounters) {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(vcpu, (request, counters));
    }

    /// The exit counters of the running vCPUs, merged: asks each for its counters, kicks them
    /// and waits up to `timeout` for every one to answer (a vCPU waiting for its start-up IPI
    /// does not, and counts nothing). Returns the counters and how many vCPUs answered.
    pub fn collect_counters(&self, timeout: Duration) -> (ExitCounters, usize) {
        let request = self.counters_wanted.fetch_add(1, Ordering::Relaxed) + 1;
        let kickers = self
            .kickers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for k in &kickers {
            k.kick();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let answers = self.counters.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = answers.values().filter(|(r, _)| *r == request).count();
            if fresh >= kickers.len() || Instant::now() >= deadline {
                let mut total = ExitCounters::default();
                for (_, c) in answers.values().filter(|(r, _)| *r == request) {
                    total.merge(c);
                }
                return (total, fresh);
            }
            drop(answers);
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// A channel that receives one message per stop request.
    pub fn notified(&self) -> &Receiver<()> {
        &self.notified
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins_and_kicks() {
        let c = Control::new();
        let k = Kicker::new();
        c.add_kicker(k.clone());
        assert!(!c.stopping());
        c.request_stop(StopReason::GuestExit(3));
        c.request_stop(StopReason::Timeout);
        assert_eq!(c.reason(), Some(StopReason::GuestExit(3)));
        assert!(k.pending());
        assert!(c.notified().try_recv().is_ok());
    }

    #[test]
    fn counters_are_collected_from_the_vcpus_that_answer() {
        let c = std::sync::Arc::new(Control::new());
        let k = Kicker::new();
        c.add_kicker(k.clone());
        let vcpu = {
            let c = c.clone();
            std::thread::spawn(move || {
                // A vCPU loop: answer each new request once, when kicked.
                let mut answered = 0;
                while !c.stopping() {
                    let want = c.counters_wanted();
                    if want != answered {
                        let mut n = ExitCounters::default();
                        n.add(janus_accel::ExitReasonKind::IoIn, 7);
                        c.publish_counters(0, want, n);
                        answered = want;
                    }
                    k.park(Duration::from_millis(5));
                    k.clear();
                }
            })
        };
        let (n, answered) = c.collect_counters(Duration::from_secs(10));
        assert_eq!(answered, 1);
        assert_eq!(n.get(janus_accel::ExitReasonKind::IoIn), 7);
        c.request_stop(StopReason::Timeout);
        vcpu.join().unwrap();
    }

    #[test]
    fn statuses_are_distinct_per_cause() {
        let causes = [
            StopReason::Timeout.exit_status(),
            StopReason::Interrupted.exit_status(),
            StopReason::Signal(libc::SIGTERM).exit_status(),
            StopReason::Signal(libc::SIGHUP).exit_status(),
            StopReason::Reset("x").exit_status(),
            StopReason::PowerOff.exit_status(),
            StopReason::HostError(String::new()).exit_status(),
            StopReason::HaltedInterruptsOff {
                vcpu: 0,
                cs: 0,
                rip: 0,
            }
            .exit_status(),
            StopReason::TripleFault(Box::default()).exit_status(),
        ];
        let mut sorted = causes.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), causes.len());
        assert_eq!(StopReason::GuestExit(7).exit_status(), 7);
        assert_eq!(
            StopReason::Signal(libc::SIGTERM).exit_status(),
            status::TERMINATED
        );
        assert_eq!(
            StopReason::Signal(libc::SIGHUP).exit_status(),
            status::HANGUP
        );
    }
}
