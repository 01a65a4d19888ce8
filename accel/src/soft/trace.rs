//! Debug tracing for the software CPU, switched on by the `JANUS_SOFT_TRACE` environment
//! variable (a comma-separated list, printed on stderr):
//!
//! - `exc`: every exception raised, with its vector, error code, RIP, CR2 and CPL;
//! - `blocks`: every block the run loop enters (linear RIP; blocks the JIT chains to directly
//!   are not seen, so use `--accel interp` for a complete trace);
//! - `insns`: every instruction, disassembled (forces one-instruction blocks: slow);
//! - `last=N`: keep the last N block entries and print them when the guest triple-faults or
//!   the backend fails (default 32 whenever tracing is on).
//!
//! The kernel boots on the software backend were debugged with it; it costs one branch per
//! block when off.

use std::collections::VecDeque;

/// Which events to print.
#[derive(Debug, Default)]
pub struct Trace {
    /// Print exceptions.
    pub exc: bool,
    /// Print block entries.
    pub blocks: bool,
    /// Print every instruction.
    pub insns: bool,
    /// Ring of the last block entries: (linear RIP, instruction count).
    ring: VecDeque<(u64, u64)>,
    ring_len: usize,
}

impl Trace {
    /// The tracing the environment asks for, if any.
    pub fn from_env() -> Option<Box<Trace>> {
        let spec = std::env::var("JANUS_SOFT_TRACE").ok()?;
        Some(Box::new(Trace::parse(&spec)))
    }

    /// Parses a `JANUS_SOFT_TRACE` value.
    pub fn parse(spec: &str) -> Trace {
        let mut t = Trace {
            ring_len: 32,
            ..Default::default()
        };
        for w in spec.split(',').map(str::trim) {
            match w {
                "exc" => t.exc = true,
                "blocks" => t.blocks = true,
                "insns" => t.insns = true,
                _ => {
                    if let Some(n) = w.strip_prefix("last=").and_then(|n| n.parse().ok()) {
                        t.ring_len = n;
                    }
                }
            }
        }
        t
    }

    /// Records a block entry.
    pub fn block(&mut self, vcpu: usize, lin: u64, icount: u64) {
        if self.blocks {
            eprintln!("trace[{vcpu}]: block {lin:#x} icount {icount}");
        }
        if self.ring_len > 0 {
            if self.ring.len() == self.ring_len {
                self.ring.pop_front();
            }
            self.ring.push_back((lin, icount));
        }
    }

    /// Prints the last block entries.
    pub fn dump(&self, vcpu: usize) {
        for (lin, icount) in &self.ring {
            eprintln!("trace[{vcpu}]: recent block {lin:#x} icount {icount}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Trace;

    #[test]
    fn spec_is_parsed_and_ring_keeps_the_last_entries() {
        let mut t = Trace::parse("exc, last=2");
        assert!(t.exc && !t.blocks && !t.insns);
        for i in 0..5 {
            t.block(0, 0x1000 + i, i);
        }
        assert_eq!(
            t.ring.iter().map(|e| e.0).collect::<Vec<_>>(),
            [0x1003, 0x1004]
        );
    }
}
