//! Breakpoints on KVM ([`crate::debug`]): hardware ones in DR0-DR3 through KVM_SET_GUEST_DEBUG
//! (KVM_GUESTDBG_USE_HW_BP), software ones as an INT3 written into guest memory
//! (KVM_GUESTDBG_USE_SW_BP), keeping the byte it replaced to put back. A breakpoint at the RIP
//! where `run` starts is not taken: it is lifted for one single step.
//!
//! On kvm_pvm, code that KVM's instruction emulator runs (real mode, 32-bit and kernel code)
//! takes a software breakpoint's INT3 as the guest's own #BP instead of exiting: use hardware
//! breakpoints there (the emulator checks DR0-DR3).

use kvm_bindings::{
    KVM_GUESTDBG_BLOCKIRQ, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP,
    KVM_GUESTDBG_USE_SW_BP, kvm_guest_debug,
};

use super::vcpu::{KvmVcpu, kvm_err};
use crate::debug::{Breakpoint, BreakpointKind};
use crate::exit::Exit;
use crate::io::IoHandler;
use crate::vcpu::{Vcpu, VcpuError};

/// INT3.
const INT3: u8 = 0xcc;
/// DR6.B0-B3: a debug-address register matched.
const DR6_HIT: u64 = 0xf;

/// The breakpoints of one KVM vCPU.
#[derive(Debug, Default)]
pub(super) struct Breakpoints {
    set: Vec<Breakpoint>,
    /// Software breakpoints written into memory: (linear, physical, the byte replaced).
    patched: Vec<(u64, u64, u8)>,
}

impl Breakpoints {
    fn hardware(&self) -> impl Iterator<Item = u64> + '_ {
        self.set
            .iter()
            .filter(|b| b.kind == BreakpointKind::Hardware)
            .map(|b| b.addr)
    }
}

/// What KVM_GUESTDBG_* flags and debug registers the vCPU runs with.
pub(super) fn guest_debug(bps: &Breakpoints, single_step: bool, blockirq: bool) -> kvm_guest_debug {
    let mut dbg = kvm_guest_debug::default();
    if single_step {
        dbg.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP;
        if blockirq {
            dbg.control |= KVM_GUESTDBG_BLOCKIRQ;
        }
    }
    let mut dr7 = 0u64;
    for (i, addr) in bps.hardware().enumerate() {
        dbg.arch.debugreg[i] = addr;
        // Ln: enable locally; R/Wn = 00 and LENn = 00: an instruction fetch.
        dr7 |= 1 << (2 * i);
    }
    if dr7 != 0 {
        dbg.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP;
        dbg.arch.debugreg[7] = dr7;
    }
    if !bps.patched.is_empty() {
        dbg.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP;
    }
    dbg
}

impl KvmVcpu {
    /// Hands the flags and registers of [`guest_debug`] to KVM.
    pub(super) fn apply_guest_debug(&mut self) -> Result<(), VcpuError> {
        let dbg = guest_debug(&self.breakpoints, self.single_step, self.blockirq);
        self.fd
            .set_guest_debug(&dbg)
            .map_err(kvm_err("KVM_SET_GUEST_DEBUG"))
    }

    /// [`Vcpu::set_breakpoints`] on KVM.
    pub(super) fn replace_breakpoints(&mut self, bps: &[Breakpoint]) -> Result<(), VcpuError> {
        crate::debug::check(bps)?;
        self.unpatch();
        self.breakpoints.set = bps.to_vec();
        let state = self.state()?;
        for b in bps.iter().filter(|b| b.kind == BreakpointKind::Software) {
            let Some(pa) = crate::walk::translate(&state, &self.memory, b.addr) else {
                return Err(VcpuError::Unsupported(format!(
                    "software breakpoint at {:#x}: the address is not mapped",
                    b.addr
                )));
            };
            let mut old = [0u8];
            if self.memory.read(pa, &mut old).is_err()
                || self.memory.write_dma(pa, &[INT3]).is_err()
            {
                return Err(VcpuError::Unsupported(format!(
                    "software breakpoint at {:#x}: not in RAM",
                    b.addr
                )));
            }
            self.breakpoints.patched.push((b.addr, pa, old[0]));
        }
        self.apply_guest_debug()
    }

    /// Puts back every byte a software breakpoint replaced.
    fn unpatch(&mut self) {
        for (_, pa, old) in self.breakpoints.patched.drain(..) {
            let _ = self.memory.write_dma(pa, &[old]);
        }
    }

    /// Whether a debug exit (its exception vector, linear PC and DR6) was a breakpoint.
    pub(super) fn breakpoint_hit(&self, exception: u32, pc: u64, dr6: u64) -> bool {
        match exception {
            3 => self.breakpoints.patched.iter().any(|p| p.0 == pc),
            1 => dr6 & DR6_HIT != 0 && self.breakpoints.hardware().any(|a| a == pc),
            _ => false,
        }
    }

    /// At the start of `run`: steps over a breakpoint at RIP (none is taken there): the
    /// breakpoints without it for one single step, then all of them again. (RFLAGS.RF would
    /// do for a hardware one on VT-x, but KVM's instruction emulator, which runs most code on
    /// kvm_pvm, ignores it.) `Some` is an exit of that one instruction other than the step's
    /// end (a halt, say).
    pub(super) fn resume_over_breakpoint(
        &mut self,
        io: &dyn IoHandler,
    ) -> Result<Option<Exit>, VcpuError> {
        if self.breakpoints.set.is_empty() {
            return Ok(None);
        }
        let lin = self.state()?.linear_rip();
        if !self.breakpoints.set.iter().any(|b| b.addr == lin) {
            return Ok(None);
        }
        let all = self.breakpoints.set.clone();
        let others: Vec<Breakpoint> = all.iter().copied().filter(|b| b.addr != lin).collect();
        let stepping = std::mem::replace(&mut self.single_step, true);
        self.replace_breakpoints(&others)?;
        let exit = self.run_loop(io);
        self.single_step = stepping;
        self.replace_breakpoints(&all)?;
        match exit? {
            Exit::SingleStep if !stepping => Ok(None),
            e => Ok(Some(e)),
        }
    }
}
