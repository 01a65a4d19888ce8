//! The one owned exit type every backend returns from [`crate::Vcpu::run`].
//!
//! Port and MMIO accesses never appear here: backends serve them in place through the
//! [`crate::IoHandler`]. What remains is small, and every variant that means "the guest cannot go
//! on" carries the state that caused it.

use crate::state::CpuState;

/// Why [`crate::Vcpu::run`] returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The guest executed HLT. The vCPU may be resumed when an interrupt is due.
    Halt,
    /// The guest triple-faulted: the CPU shut down.
    Shutdown(Box<CpuState>),
    /// One instruction was executed in single-step mode.
    SingleStep,
    /// The vCPU reached a breakpoint ([`crate::debug`]) at this linear address; the
    /// instruction there has not run.
    Breakpoint(u64),
    /// A stop was requested through the vCPU's [`crate::Kicker`].
    Stopped,
    /// The platform asked for a reset, power-off or reported a crash (KVM_EXIT_SYSTEM_EVENT).
    SystemEvent(SystemEventKind),
    /// The backend could not execute the guest: the failure and the state at that point.
    Failed(Box<VcpuFailure>),
}

/// A platform event reported by the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemEventKind {
    /// The guest asked for a power-off.
    Shutdown,
    /// The guest asked for a reset.
    Reset,
    /// The guest reported a crash.
    Crash,
    /// An event type janus does not know, by number.
    Other(u32),
}

/// A backend's failure to run guest code, with everything a report needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuFailure {
    /// What failed, e.g. "KVM emulation failure" or "KVM entry failure".
    pub what: String,
    /// Backend-specific detail: suberror and data words, hardware failure reason.
    pub detail: String,
    /// The instruction bytes at RIP, when they could be read.
    pub insn_bytes: Vec<u8>,
    /// The instruction at RIP, disassembled, when it could be decoded.
    pub disassembly: Option<String>,
    /// The state at the failure.
    pub state: CpuState,
}

impl std::fmt::Display for VcpuFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.what, self.detail)?;
        write!(
            f,
            " at {:04x}:{:x} ({} mode)",
            self.state.cs.selector,
            self.state.rip,
            self.state.mode_name()
        )?;
        if let Some(d) = &self.disassembly {
            write!(f, ": {d}")?;
        }
        if !self.insn_bytes.is_empty() {
            f.write_str(" [")?;
            for (i, b) in self.insn_bytes.iter().enumerate() {
                if i > 0 {
                    f.write_str(" ")?;
                }
                write!(f, "{b:02x}")?;
            }
            f.write_str("]")?;
        }
        Ok(())
    }
}

/// The kinds of events a backend counts, for `--stats`. KVM counts each KVM exit; the software
/// backend counts the same device-visible events so that the two can be compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExitReasonKind {
    /// Port input.
    IoIn,
    /// Port output.
    IoOut,
    /// MMIO read.
    MmioRead,
    /// MMIO write.
    MmioWrite,
    /// HLT.
    Halt,
    /// Single-step trap.
    Debug,
    /// Interrupted by a signal (a kick or a host signal).
    Interrupted,
    /// Triple fault.
    Shutdown,
    /// System event.
    SystemEvent,
    /// Entry failure, or an internal error the software fallback could not absorb.
    Failure,
    /// KVM_EXIT_INTERNAL_ERROR (KVM could not emulate an instruction or deliver an event).
    InternalError,
    /// The guest became able to take an interrupt janus had waiting.
    InterruptWindow,
    /// Any other exit.
    Other,
}

impl ExitReasonKind {
    /// Every kind, in report order.
    pub const ALL: [ExitReasonKind; 13] = [
        ExitReasonKind::IoIn,
        ExitReasonKind::IoOut,
        ExitReasonKind::MmioRead,
        ExitReasonKind::MmioWrite,
        ExitReasonKind::Halt,
        ExitReasonKind::Debug,
        ExitReasonKind::Interrupted,
        ExitReasonKind::Shutdown,
        ExitReasonKind::SystemEvent,
        ExitReasonKind::Failure,
        ExitReasonKind::InternalError,
        ExitReasonKind::InterruptWindow,
        ExitReasonKind::Other,
    ];

    /// The name used in `--stats`.
    pub fn name(self) -> &'static str {
        match self {
            ExitReasonKind::IoIn => "io-in",
            ExitReasonKind::IoOut => "io-out",
            ExitReasonKind::MmioRead => "mmio-read",
            ExitReasonKind::MmioWrite => "mmio-write",
            ExitReasonKind::Halt => "hlt",
            ExitReasonKind::Debug => "debug",
            ExitReasonKind::Interrupted => "interrupted",
            ExitReasonKind::Shutdown => "shutdown",
            ExitReasonKind::SystemEvent => "system-event",
            ExitReasonKind::Failure => "failure",
            ExitReasonKind::InternalError => "internal-error",
            ExitReasonKind::InterruptWindow => "irq-window",
            ExitReasonKind::Other => "other",
        }
    }
}

/// Per-vCPU counters of exits by reason and of retired instructions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExitCounters {
    counts: [u64; ExitReasonKind::ALL.len()],
    /// Guest instructions retired, when the backend can count them exactly.
    pub instructions: Option<u64>,
    /// Backend-specific counters (e.g. the JIT's blocks compiled), by name, summed on merge.
    pub extra: std::collections::BTreeMap<String, u64>,
}

impl ExitCounters {
    /// Counts one exit.
    #[inline]
    pub fn bump(&mut self, kind: ExitReasonKind) {
        self.counts[kind as usize] += 1;
    }

    /// Counts `n` exits at once (string I/O on the software backend).
    #[inline]
    pub fn add(&mut self, kind: ExitReasonKind, n: u64) {
        self.counts[kind as usize] += n;
    }

    /// The count for one kind.
    pub fn get(&self, kind: ExitReasonKind) -> u64 {
        self.counts[kind as usize]
    }

    /// All exits.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds another vCPU's counters to these.
    pub fn merge(&mut self, other: &ExitCounters) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        for (k, v) in &other.extra {
            *self.extra.entry(k.clone()).or_default() += v;
        }
        self.instructions = match (self.instructions, other.instructions) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_merge_and_total() {
        let mut a = ExitCounters::default();
        a.bump(ExitReasonKind::IoOut);
        a.add(ExitReasonKind::IoIn, 3);
        let mut b = ExitCounters::default();
        b.bump(ExitReasonKind::IoOut);
        b.instructions = Some(10);
        a.merge(&b);
        assert_eq!(a.get(ExitReasonKind::IoOut), 2);
        assert_eq!(a.get(ExitReasonKind::IoIn), 3);
        assert_eq!(a.total(), 5);
        assert_eq!(a.instructions, Some(10));
    }

    #[test]
    fn failure_display_names_instruction_and_place() {
        let mut state = CpuState::boot_sector();
        state.rip = 0x7c10;
        let f = VcpuFailure {
            what: "KVM emulation failure".into(),
            detail: "suberror 1".into(),
            insn_bytes: vec![0xcc],
            disassembly: Some("int3".into()),
            state,
        };
        let s = f.to_string();
        assert!(s.contains("0000:7c10"), "{s}");
        assert!(s.contains("int3"), "{s}");
        assert!(s.contains("[cc]"), "{s}");
    }
}
