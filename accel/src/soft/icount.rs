//! Deterministic time for the software vCPU (`--icount`): at every block boundary the vCPU
//! reports the instructions it retired since the last report through [`IoHandler::retired`];
//! the machine moves its clock and fires the timers that are due, whose interrupts are then
//! taken at this same boundary. The JIT, whose code otherwise chains from block to block, is
//! told to come back after each block (an instruction-count limit checked at block entry), so
//! both executors report at the same boundaries and a run repeats exactly. Devices read during
//! a block see the time of the block's start.
//!
//! The guest TSC follows the machine clock: at each report it is set to the clock's TSC, and it
//! counts one per instruction within a block (monotonic, and exact at block boundaries).

use crate::io::IoHandler;

use super::cpu::Core;

/// The vCPU's side of deterministic time.
#[derive(Debug, Default)]
pub(super) struct TimeSync {
    /// The machine asked for reports in this `run`.
    on: bool,
    /// The instruction count at the last report.
    reported: u64,
    /// A report has been made since the vCPU was created or its state set.
    started: bool,
}

impl TimeSync {
    /// Called at the start of each `run`.
    pub fn begin(&mut self, io: &dyn IoHandler) {
        self.on = io.counts_instructions();
    }

    /// Whether time counts instructions in this `run` (then every block boundary reports).
    pub fn on(&self) -> bool {
        self.on
    }

    /// Forgets the last report (after `set_state`, which may move the TSC).
    pub fn reset(&mut self) {
        self.started = false;
    }

    /// At a block boundary: reports the instructions retired since the last report. Returns
    /// the instruction count at which compiled code must come back (the end of the next block),
    /// or `None` when time does not count instructions.
    pub fn sync(&mut self, io: &dyn IoHandler, vcpu: usize, core: &mut Core) -> Option<u64> {
        if !self.on {
            return None;
        }
        let n = core.icount.wrapping_sub(self.reported);
        if n > 0 || !self.started {
            self.started = true;
            self.reported = core.icount;
            if let Some(tsc) = io.retired(vcpu, n) {
                core.tsc_offset = tsc.wrapping_sub(core.icount);
            }
        }
        Some(core.icount.wrapping_add(1))
    }
}
