//! Why a machine stops, and the shared handle through which devices, vCPU threads and the main
//! thread ask it to.
//!
//! The first reason recorded wins: a guest that writes to the debug-exit port and then halts has
//! exited with its byte, not halted. Recording a reason kicks every vCPU so that all threads
//! leave guest code promptly.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use janus_accel::{CpuState, Kicker, VcpuFailure};

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
    /// The backend could not run the guest.
    VcpuFailed(Box<VcpuFailure>),
    /// A host-side error while running.
    HostError(String),
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
            StopReason::ConsoleQuit => status::CONSOLE_QUIT,
            StopReason::VcpuFailed(_) => status::VCPU_FAILED,
            StopReason::HostError(_) => status::HOST_ERROR,
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
            StopReason::VcpuFailed(v) => write!(f, "vCPU failed: {v}"),
            StopReason::HostError(e) => write!(f, "host error: {e}"),
        }
    }
}

/// The machine's stop handle, shared by devices, vCPU threads and the main thread.
#[derive(Debug)]
pub struct Control {
    reason: Mutex<Option<StopReason>>,
    stopped: Condvar,
    kickers: Mutex<Vec<Kicker>>,
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
