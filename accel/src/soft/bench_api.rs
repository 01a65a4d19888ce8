//! Entry points for janus's micro-benchmarks (benches/soft.rs): decode and translation of one
//! block, without running it. Not part of the stable API.

use crate::io::NoDevices;
use crate::memory::GuestMemory;
use crate::state::CpuState;

use super::cpu::{Core, Ctx};
use super::translate;

/// A translator positioned at a state, for repeated block translations.
#[derive(Debug)]
pub struct Translator {
    core: Box<Core>,
}

impl Translator {
    /// A translator over `mem`, starting from `state`.
    pub fn new(mem: GuestMemory, state: &CpuState) -> Self {
        let mut core = Box::new(Core::new(mem, 0));
        core.s = state.clone();
        core.set_rflags(state.rflags);
        Translator { core }
    }

    /// Decodes and lowers the block at the current RIP to IR (uncached); returns the number of
    /// guest instructions in it, or 0 if the first fetch faults.
    pub fn translate_block(&mut self) -> usize {
        let mode = translate::mode_key(&self.core, false);
        let mut ctx = Ctx {
            c: &mut self.core,
            io: &NoDevices,
        };
        match translate::translate(&mut ctx, mode, translate::MAX_BLOCK) {
            Ok((b, _)) => b.insns.len(),
            Err(_) => 0,
        }
    }
}
