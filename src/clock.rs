//! The machine's virtual clock: one time source in nanoseconds that every timer device reads, in
//! real time or, for repeatable runs, deterministically from retired instructions (`--icount`).
//!
//! Timer devices (PIT, LAPIC timers, RTC) never keep host timers of their own. Each registers a
//! [`Timer`] with the clock and stores in it the virtual time of its next event; the machine asks
//! [`Clock::next_deadline`] how long a halted vCPU may sleep, and once the clock has passed a
//! deadline it calls the owning device's `poll` method, which raises the interrupt.
//!
//! In deterministic mode time moves only when the software backend reports retired instructions
//! ([`Clock::advance_instructions`]) or when every vCPU is idle and the machine jumps to the next
//! deadline ([`Clock::advance_to`]), so a run repeats exactly. The instruction counter is shared by
//! all vCPUs: with more than one vCPU running freely the interleaving, and so the time each vCPU
//! sees, depends on the host scheduler.
//!
//! Simplified: a whole number of ns per instruction; one guest TSC frequency per clock and no
//! per-vCPU TSC offset (a guest that writes IA32_TSC is the backend's business).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Nanoseconds in a second.
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// The guest TSC frequency used by [`Clock::real_time`] and [`Clock::deterministic`]: 1 GHz, so
/// that with one nanosecond per instruction the TSC counts retired instructions.
pub const DEFAULT_TSC_HZ: u64 = 1_000_000_000;

const NO_DEADLINE: u64 = u64::MAX;

/// How a clock measures time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockMode {
    /// Host monotonic time since the clock was made.
    RealTime,
    /// Retired instructions times a fixed number of nanoseconds, plus idle jumps.
    Deterministic {
        /// Virtual nanoseconds per retired instruction (at least 1).
        ns_per_instruction: u64,
    },
}

/// Called with the new deadline when a timer's deadline moves earlier (see
/// [`Clock::set_deadline_listener`]).
pub type DeadlineListener = Arc<dyn Fn(u64) + Send + Sync>;

struct TimerState {
    label: String,
    deadline: AtomicU64,
}

struct Inner {
    mode: ClockMode,
    start: Instant,
    /// Deterministic time in ns (unused in real-time mode).
    virt_ns: AtomicU64,
    tsc_hz: u64,
    timers: Mutex<Vec<Weak<TimerState>>>,
    listener: Mutex<Option<DeadlineListener>>,
}

/// The machine's clock; cheap to clone (clones share one time source).
#[derive(Clone)]
pub struct Clock {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("mode", &self.inner.mode)
            .field("now_ns", &self.now_ns())
            .field("next_deadline", &self.next_deadline())
            .finish()
    }
}

/// Converts a duration in ns into ticks of a `hz` clock, rounding down.
pub fn ns_to_ticks(ns: u64, hz: u64) -> u64 {
    (u128::from(ns) * u128::from(hz) / u128::from(NS_PER_SEC)).min(u128::from(u64::MAX)) as u64
}

/// The first nanosecond at which a `hz` clock started at 0 has counted `ticks` ticks (rounding
/// up, so that `ns_to_ticks(ticks_to_ns(t, hz), hz) == t`).
pub fn ticks_to_ns(ticks: u64, hz: u64) -> u64 {
    let hz = u128::from(hz.max(1));
    (u128::from(ticks) * u128::from(NS_PER_SEC))
        .div_ceil(hz)
        .min(u128::from(u64::MAX)) as u64
}

impl Clock {
    /// A clock in `mode` whose guest TSC runs at `tsc_hz`.
    pub fn new(mode: ClockMode, tsc_hz: u64) -> Self {
        let mode = match mode {
            ClockMode::Deterministic { ns_per_instruction } => ClockMode::Deterministic {
                ns_per_instruction: ns_per_instruction.max(1),
            },
            m => m,
        };
        Clock {
            inner: Arc::new(Inner {
                mode,
                start: Instant::now(),
                virt_ns: AtomicU64::new(0),
                tsc_hz: tsc_hz.max(1),
                timers: Mutex::new(Vec::new()),
                listener: Mutex::new(None),
            }),
        }
    }

    /// A real-time clock with the default TSC frequency.
    pub fn real_time() -> Self {
        Clock::new(ClockMode::RealTime, DEFAULT_TSC_HZ)
    }

    /// A deterministic clock at 0 ns, `ns_per_instruction` per retired instruction. Tests use
    /// it as a manual clock, moving it with [`Clock::advance_to`] and [`Clock::advance_ns`].
    pub fn deterministic(ns_per_instruction: u64) -> Self {
        Clock::new(
            ClockMode::Deterministic { ns_per_instruction },
            DEFAULT_TSC_HZ,
        )
    }

    /// The clock's mode.
    pub fn mode(&self) -> ClockMode {
        self.inner.mode
    }

    /// Whether time moves only with instructions and explicit jumps.
    pub fn is_deterministic(&self) -> bool {
        matches!(self.inner.mode, ClockMode::Deterministic { .. })
    }

    /// Virtual time now, in nanoseconds since the clock was made.
    pub fn now_ns(&self) -> u64 {
        match self.inner.mode {
            ClockMode::RealTime => {
                u64::try_from(self.inner.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
            }
            ClockMode::Deterministic { .. } => self.inner.virt_ns.load(Ordering::Acquire),
        }
    }

    /// Reports `n` retired instructions (software backend, deterministic mode; a no-op in real
    /// time).
    pub fn advance_instructions(&self, n: u64) {
        if let ClockMode::Deterministic { ns_per_instruction } = self.inner.mode {
            self.advance_ns(n.saturating_mul(ns_per_instruction));
        }
    }

    /// Moves deterministic time forward by `ns` (a no-op in real time).
    pub fn advance_ns(&self, ns: u64) {
        if self.is_deterministic() {
            let _ = self
                .inner
                .virt_ns
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                    Some(t.saturating_add(ns))
                });
        }
    }

    /// Moves deterministic time forward to `ns` if it is later than now (the idle jump of a
    /// machine whose vCPUs all wait for a timer); never moves time back; a no-op in real time.
    pub fn advance_to(&self, ns: u64) {
        if self.is_deterministic() {
            self.inner.virt_ns.fetch_max(ns, Ordering::AcqRel);
        }
    }

    /// The guest TSC frequency in Hz.
    pub fn tsc_hz(&self) -> u64 {
        self.inner.tsc_hz
    }

    /// The guest TSC now (ticks of [`Clock::tsc_hz`] since the clock was made).
    pub fn tsc(&self) -> u64 {
        ns_to_ticks(self.now_ns(), self.inner.tsc_hz)
    }

    /// The virtual time at which the TSC reaches `tsc`.
    pub fn tsc_to_ns(&self, tsc: u64) -> u64 {
        ticks_to_ns(tsc, self.inner.tsc_hz)
    }

    /// Registers a timer named `label` (for debugging) with no deadline.
    pub fn timer(&self, label: &str) -> Timer {
        let state = Arc::new(TimerState {
            label: label.to_string(),
            deadline: AtomicU64::new(NO_DEADLINE),
        });
        let mut timers = self.inner.timers.lock().unwrap_or_else(|p| p.into_inner());
        timers.retain(|t| t.strong_count() > 0);
        timers.push(Arc::downgrade(&state));
        Timer {
            state,
            clock: self.clone(),
        }
    }

    /// The earliest deadline of all live timers, in virtual ns, if any is armed.
    pub fn next_deadline(&self) -> Option<u64> {
        let timers = self.inner.timers.lock().unwrap_or_else(|p| p.into_inner());
        timers
            .iter()
            .filter_map(Weak::upgrade)
            .map(|t| t.deadline.load(Ordering::Acquire))
            .min()
            .filter(|&d| d != NO_DEADLINE)
    }

    /// The labels of timers whose deadline has passed (for logs and tests).
    pub fn expired(&self) -> Vec<String> {
        let now = self.now_ns();
        let timers = self.inner.timers.lock().unwrap_or_else(|p| p.into_inner());
        timers
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|t| t.deadline.load(Ordering::Acquire) <= now)
            .map(|t| t.label.clone())
            .collect()
    }

    /// How long a halted vCPU may sleep in host time before the next deadline: `None` if no
    /// timer is armed (sleep until kicked), zero if the deadline has passed. In deterministic
    /// mode host time means nothing: the answer is zero when a deadline exists, and the machine
    /// should instead jump the clock with [`Clock::advance_to`] once every vCPU is idle.
    pub fn host_wait(&self) -> Option<Duration> {
        let deadline = self.next_deadline()?;
        Some(match self.inner.mode {
            ClockMode::RealTime => Duration::from_nanos(deadline.saturating_sub(self.now_ns())),
            ClockMode::Deterministic { .. } => Duration::ZERO,
        })
    }

    /// Sets the function called when a timer's deadline moves earlier than it was (the machine
    /// kicks its sleeping vCPUs there, so they recompute how long to sleep). It runs with the
    /// device that armed the timer locked, so it must not lock devices.
    pub fn set_deadline_listener(&self, listener: DeadlineListener) {
        *self
            .inner
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(listener);
    }
}

/// One device timer: a deadline in virtual ns that [`Clock::next_deadline`] takes into account.
/// Dropping it unregisters it.
pub struct Timer {
    state: Arc<TimerState>,
    clock: Clock,
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer")
            .field("label", &self.state.label)
            .field("deadline", &self.deadline())
            .finish()
    }
}

impl Timer {
    /// Arms the timer for virtual time `ns` (replacing any earlier deadline).
    pub fn set_deadline(&self, ns: u64) {
        let ns = ns.min(NO_DEADLINE - 1);
        let old = self.state.deadline.swap(ns, Ordering::AcqRel);
        if ns < old {
            let listener = self
                .clock
                .inner
                .listener
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(l) = listener {
                l(ns);
            }
        }
    }

    /// Disarms the timer.
    pub fn clear(&self) {
        self.state.deadline.store(NO_DEADLINE, Ordering::Release);
    }

    /// Arms the timer for `ns`, or disarms it for `None`.
    pub fn set(&self, ns: Option<u64>) {
        match ns {
            Some(ns) => self.set_deadline(ns),
            None => self.clear(),
        }
    }

    /// The armed deadline, if any.
    pub fn deadline(&self) -> Option<u64> {
        Some(self.state.deadline.load(Ordering::Acquire)).filter(|&d| d != NO_DEADLINE)
    }

    /// The clock this timer belongs to.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_time_moves_with_instructions_and_jumps_only() {
        let c = Clock::deterministic(3);
        assert!(c.is_deterministic());
        assert_eq!(c.now_ns(), 0);
        c.advance_instructions(10);
        assert_eq!(c.now_ns(), 30);
        c.advance_to(25); // never backwards
        assert_eq!(c.now_ns(), 30);
        c.advance_to(1000);
        c.advance_ns(5);
        assert_eq!(c.now_ns(), 1005);
        assert_eq!(c.tsc(), 1005); // 1 GHz TSC
        assert_eq!(
            Clock::deterministic(0).mode(),
            ClockMode::Deterministic {
                ns_per_instruction: 1
            }
        );
    }

    #[test]
    fn real_time_moves_on_its_own_and_ignores_instruction_reports() {
        let c = Clock::real_time();
        let a = c.now_ns();
        c.advance_instructions(1 << 40);
        c.advance_to(u64::MAX);
        std::thread::sleep(Duration::from_millis(2));
        let b = c.now_ns();
        assert!(b > a && b - a < 10 * NS_PER_SEC, "{a} {b}");
    }

    #[test]
    fn next_deadline_is_the_earliest_live_timer() {
        let c = Clock::deterministic(1);
        assert_eq!(c.next_deadline(), None);
        assert_eq!(c.host_wait(), None);
        let t1 = c.timer("a");
        let t2 = c.timer("b");
        t1.set_deadline(500);
        t2.set_deadline(200);
        assert_eq!(c.next_deadline(), Some(200));
        t2.clear();
        assert_eq!(c.next_deadline(), Some(500));
        c.advance_to(600);
        assert_eq!(c.expired(), vec!["a".to_string()]);
        assert_eq!(c.host_wait(), Some(Duration::ZERO));
        drop(t1);
        assert_eq!(c.next_deadline(), None);
        t2.set(Some(700));
        assert_eq!(t2.deadline(), Some(700));
    }

    #[test]
    fn listener_hears_only_earlier_deadlines() {
        let c = Clock::deterministic(1);
        let heard = Arc::new(Mutex::new(Vec::new()));
        let h = heard.clone();
        c.set_deadline_listener(Arc::new(move |ns| h.lock().unwrap().push(ns)));
        let t = c.timer("t");
        t.set_deadline(100);
        t.set_deadline(300);
        t.set_deadline(50);
        assert_eq!(*heard.lock().unwrap(), vec![100, 50]);
    }

    #[test]
    fn tick_conversions_round_trip() {
        let pit = 1_193_182;
        for t in [0, 1, 2, 65_536, 1_193_182, 1 << 40] {
            assert_eq!(ns_to_ticks(ticks_to_ns(t, pit), pit), t);
            assert_eq!(
                ns_to_ticks(ticks_to_ns(t, pit) - u64::from(t > 0), pit),
                t.saturating_sub(1)
            );
        }
        assert_eq!(ns_to_ticks(NS_PER_SEC, pit), pit);
        let c = Clock::new(ClockMode::RealTime, 2_000_000_000);
        assert_eq!(c.tsc_to_ns(2_000), 1_000);
    }
}
