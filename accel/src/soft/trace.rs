//! Debug tracing for the software CPU, switched on by `janus run --trace SPEC` (or the
//! `JANUS_SOFT_TRACE` environment variable, the same SPEC), a comma-separated list, printed on
//! stderr or to `--trace-file`:
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
use std::io::Write;
use std::sync::{Arc, Mutex};

/// What to trace: a parsed SPEC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceSpec {
    /// Print exceptions.
    pub exc: bool,
    /// Print block entries.
    pub blocks: bool,
    /// Print every instruction.
    pub insns: bool,
    /// Block entries kept for a failure report.
    pub last: usize,
}

impl std::str::FromStr for TraceSpec {
    type Err = String;

    /// Parses `exc,blocks,insns,last=N` (any subset, in any order).
    fn from_str(spec: &str) -> Result<Self, String> {
        let mut t = TraceSpec {
            exc: false,
            blocks: false,
            insns: false,
            last: 32,
        };
        for w in spec.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match w {
                "exc" => t.exc = true,
                "blocks" => t.blocks = true,
                "insns" => t.insns = true,
                _ => {
                    t.last = w
                        .strip_prefix("last=")
                        .and_then(|n| n.parse().ok())
                        .ok_or_else(|| format!("'{w}' is not one of exc, blocks, insns, last=N"))?;
                }
            }
        }
        Ok(t)
    }
}

/// Where trace lines go: stderr, or a shared writer (`--trace-file`).
pub type TraceOut = Option<Arc<Mutex<Box<dyn Write + Send>>>>;

/// The tracing of one vCPU.
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
    out: TraceOut,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace")
            .field("exc", &self.exc)
            .field("blocks", &self.blocks)
            .field("insns", &self.insns)
            .finish_non_exhaustive()
    }
}

impl Trace {
    /// Tracing as `spec` says, written to `out` (stderr when `None`).
    pub fn new(spec: TraceSpec, out: TraceOut) -> Trace {
        Trace {
            exc: spec.exc,
            blocks: spec.blocks,
            insns: spec.insns,
            ring: VecDeque::new(),
            ring_len: spec.last,
            out,
        }
    }

    /// The tracing the environment asks for (`JANUS_SOFT_TRACE`), if any; unknown words in it
    /// are ignored.
    pub fn from_env() -> Option<Box<Trace>> {
        let spec = std::env::var("JANUS_SOFT_TRACE").ok()?;
        Some(Box::new(Trace::parse(&spec)))
    }

    /// Parses a SPEC leniently (unknown words ignored), tracing to stderr.
    pub fn parse(spec: &str) -> Trace {
        let known: Vec<&str> = spec
            .split(',')
            .filter(|w| w.trim().parse::<TraceSpec>().is_ok())
            .collect();
        let spec = known.join(",").parse().unwrap_or(TraceSpec {
            exc: false,
            blocks: false,
            insns: false,
            last: 32,
        });
        Trace::new(spec, None)
    }

    /// Writes one trace line.
    pub fn line(&self, args: std::fmt::Arguments<'_>) {
        match &self.out {
            Some(w) => {
                let _ = writeln!(w.lock().unwrap_or_else(|p| p.into_inner()), "{args}");
            }
            // A full stderr drops the line rather than panic.
            None => {
                let _ = writeln!(std::io::stderr().lock(), "{args}");
            }
        }
    }

    /// Records a block entry.
    pub fn block(&mut self, vcpu: usize, lin: u64, icount: u64) {
        if self.blocks {
            self.line(format_args!(
                "trace[{vcpu}]: block {lin:#x} icount {icount}"
            ));
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
            self.line(format_args!(
                "trace[{vcpu}]: recent block {lin:#x} icount {icount}"
            ));
        }
        if let Some(w) = &self.out {
            let _ = w.lock().unwrap_or_else(|p| p.into_inner()).flush();
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

    #[test]
    fn flag_spec_is_strict() {
        let s: super::TraceSpec = "exc,insns,last=5".parse().unwrap();
        assert!(s.exc && s.insns && !s.blocks && s.last == 5);
        assert!("exc,bogus".parse::<super::TraceSpec>().is_err());
        assert!("last=x".parse::<super::TraceSpec>().is_err());
    }
}
