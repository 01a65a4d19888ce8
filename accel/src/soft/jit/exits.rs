//! Block entry and exits, instruction boundaries and helper calls. Every exit first writes the
//! cached state back and counts the block's instructions; a direct exit then leaves through a
//! `jmp rel32` that the dispatcher patches to the next block once it exists (a chain), an
//! indirect exit looks its target up in the jump cache, and everything else returns to the
//! dispatcher. Out-of-line stubs are queued in `Gen::cold` and emitted after the block.

use dynasmrt::{DynasmApi, DynasmLabelApi, dynasm};

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::super::flags::CcOp;
use super::super::ir::{HelperFn, T};
use super::alloc::{ALLOCATABLE, CALLER_SAVED, Own};
use super::buffer::{self, code};
use super::codegen::{
    CORE_CR0, CORE_CS_BASE, CORE_GPR, CORE_ICOUNT, CORE_RIP, CORE_SMC, ExitRec, Gen, LAZY_HOME,
    LAZY_OP, LAZY_SZ, RT_ATTENTION, RT_CUR_KEY, RT_ICOUNT_LIMIT, RT_JC, RT_NONFLAT, Store, V,
    fits32, x64,
};

/// SHL/SAL, SHR or SAR of a general register (not AH..BH) by CL: (register, size, flags op).
fn shift_by_cl(i: &Instruction) -> Option<(u8, u8, CcOp)> {
    let cc = match i.mnemonic() {
        Mnemonic::Shl | Mnemonic::Sal => CcOp::Shl,
        Mnemonic::Shr => CcOp::Shr,
        Mnemonic::Sar => CcOp::Sar,
        _ => return None,
    };
    if i.op_count() != 2
        || i.op0_kind() != OpKind::Register
        || i.op1_kind() != OpKind::Register
        || i.op1_register() != Register::CL
    {
        return None;
    }
    match super::super::translate::gpr(i.op0_register()) {
        Some((r, sz)) if r < 16 && matches!(sz, 1 | 2 | 4 | 8) => Some((r, sz, cc)),
        _ => None,
    }
}
use super::rt::{CallSite, JC_ENTRIES, JC_SHIFT};

impl Gen<'_> {
    /// Stores a constant RIP.
    pub fn store_rip(&mut self, rip: u64) {
        self.store_imm64(CORE_RIP, rip);
    }

    /// The block's entry: the attention check.
    pub fn prologue(&mut self) {
        let attn = self.a.new_dynamic_label();
        x64!(self.a
            ; mov rax, QWORD [r14 + RT_ATTENTION]
            ; cmp BYTE [rax], 0
            ; jne =>attn
        );
        if self.icount {
            // Deterministic time: the machine's next timer deadline, in instructions.
            x64!(self.a ; cmp r13, QWORD [r14 + RT_ICOUNT_LIMIT] ; jae =>attn);
        }
        if self.flat != 0 {
            // Compiled for flat segments: leave if one is not (the dispatcher recompiles).
            let flat = self.flat as i32;
            x64!(self.a ; test QWORD [r14 + RT_NONFLAT], flat ; jnz =>attn);
        }
        let rip = self.b.rip;
        self.cold.push(Box::new(move |g: &mut Gen| {
            x64!(g.a ; =>attn);
            g.store_rip(rip);
            x64!(g.a ; jmp extern g.exit_done);
        }));
        self.loop_entry();
    }

    /// A looping block: loads its guest registers into the host registers they keep for the
    /// whole block, then the loop head.
    fn loop_entry(&mut self) {
        let Some((regs, head)) = self.looping.clone() else {
            return;
        };
        for &(g, h) in &regs {
            let off = Self::gpr(g);
            x64!(self.a ; mov Rq(h), QWORD [r15 + off]);
            self.r.own[usize::from(h)] = Own::Guest(g);
            self.r.guest[usize::from(g)] = Some(h);
            self.r.pinned |= 1 << h;
            // From the second iteration on they may differ from the core's copy.
            self.r.gdirty |= 1 << g;
        }
        x64!(self.a ; =>head);
    }

    /// Whether an exit to `target` can be the loop's back edge (the registers are where the
    /// loop head expects them).
    fn back_edge(&self, target: u64) -> bool {
        match &self.looping {
            Some((regs, _)) if target == self.b.rip => regs
                .iter()
                .all(|&(g, h)| self.r.guest[usize::from(g)] == Some(h)),
            _ => false,
        }
    }

    /// The loop's back edge: flags are written back (the head knows nothing of them), guest
    /// registers stay; the attention flag and overwritten code are checked on the way.
    /// What the back edge stores: the guest registers the loop head does not keep (their
    /// stores), and everything (should the loop be left there). Taken before the other exit's
    /// write-back changes the compile-time state.
    fn back_stores(&self) -> (Vec<Store>, Vec<Store>) {
        let kept = |g: u8| {
            self.looping
                .as_ref()
                .is_some_and(|(regs, _)| regs.iter().any(|&(k, _)| k == g))
        };
        let all = self.pending_stores();
        let others = all
            .iter()
            .copied()
            .filter(|s| (0..16u8).any(|g| s.off == Self::gpr(g) && !kept(g)))
            .collect();
        (others, all)
    }

    /// The loop's back edge, with the stores `back_stores` gave.
    fn loop_back(&mut self, (others, stores): (Vec<Store>, Vec<Store>)) {
        let Some((_, head)) = self.looping.clone() else {
            return;
        };
        // The head has only the kept registers: write back the others.
        self.emit_stores(&others);
        let n = self.b.insns.len() as i32;
        let leave = self.a.new_dynamic_label();
        x64!(self.a ; add r13, n);
        if self.writes {
            x64!(self.a ; cmp BYTE [r15 + CORE_SMC], 0 ; jne =>leave);
        }
        // RAX may hold a guest register here (one the head keeps, or one the leave path
        // writes back): the flag's address goes through it with RAX saved around.
        x64!(self.a
            ; push rax
            ; mov rax, QWORD [r14 + RT_ATTENTION]
            ; cmp BYTE [rax], 0
            ; pop rax
            ; jne =>leave
        );
        if self.icount {
            x64!(self.a ; cmp r13, QWORD [r14 + RT_ICOUNT_LIMIT] ; jae =>leave);
        }
        x64!(self.a ; jmp =>head);
        let rip = self.b.rip;
        self.cold.push(Box::new(move |g: &mut Gen| {
            x64!(g.a ; =>leave);
            g.emit_stores(&stores);
            g.store_rip(rip);
            x64!(g.a ; jmp extern g.exit_done);
        }));
    }

    /// An instruction boundary: leaves if the previous instruction overwrote translated code.
    pub(super) fn insn(&mut self, n: u16, rip: u64) {
        if self.risky && n > 0 {
            let l = self.a.new_dynamic_label();
            x64!(self.a ; cmp BYTE [r15 + CORE_SMC], 0 ; jne =>l);
            let stores = self.pending_stores();
            self.cold.push(Box::new(move |g: &mut Gen| {
                x64!(g.a ; =>l);
                g.emit_stores(&stores);
                g.store_rip(rip);
                x64!(g.a ; add r13, i32::from(n) ; jmp extern g.exit_done);
            }));
        }
        self.risky = false;
        self.n = n;
        self.rip = rip;
    }

    /// Counts the block's instructions and, where the block may have changed things, leaves
    /// for the dispatcher if translated code was overwritten or the mode changed (RIP must be
    /// stored already when `stored`).
    /// `key`: whether the next block must have been compiled under this block's key (direct
    /// exits; the jump cache compares the run-time key itself).
    fn leave_checks(&mut self, key: bool) {
        if self.writes {
            x64!(self.a ; cmp BYTE [r15 + CORE_SMC], 0 ; jne extern self.exit_done);
        }
        if self.calls_helpers && key {
            let key = self.key as i32;
            x64!(self.a ; cmp QWORD [r14 + RT_CUR_KEY], key ; jne extern self.exit_done);
        }
    }

    /// Looks the linear address in RAX up in the jump cache and jumps there on a hit (RCX and
    /// RDX are clobbered; everything is stored).
    fn jc_lookup(&mut self) {
        let key = self.key as i32;
        let mask = (JC_ENTRIES - 1) as i32;
        x64!(self.a
            ; mov rcx, rax
            ; shr rcx, 12
            ; xor rcx, rax
            ; and ecx, mask
            ; shl ecx, JC_SHIFT as i8
            ; cmp rax, QWORD [r14 + rcx + RT_JC]
            ; jne >miss
        );
        if self.calls_helpers {
            x64!(self.a
                ; mov rdx, QWORD [r14 + RT_CUR_KEY]
                ; cmp rdx, QWORD [r14 + rcx + RT_JC + 8]
            );
        } else {
            x64!(self.a ; cmp QWORD [r14 + rcx + RT_JC + 8], key);
        }
        x64!(self.a
            ; jne >miss
            ; jmp QWORD [r14 + rcx + RT_JC + 16]
            ; miss:
        );
    }

    /// Puts the linear address of the RIP in RAX into RAX.
    fn rip_to_lin(&mut self) {
        if self.bits != 64 {
            x64!(self.a ; add eax, DWORD [r15 + CORE_CS_BASE]);
        }
    }

    /// A direct exit to `target` (everything stored).
    fn exit_const(&mut self, target: u64) {
        let n = self.b.insns.len() as i32;
        x64!(self.a ; add r13, n);
        if self.writes || self.calls_helpers {
            self.store_rip(target);
            self.leave_checks(true);
        }
        let lin_mask = if self.bits == 64 {
            u64::MAX
        } else {
            0xffff_ffff
        };
        let tlin = self.lin.wrapping_sub(self.b.rip).wrapping_add(target) & lin_mask;
        let cross_page = (tlin ^ self.lin) >> 12 != 0;
        let stub = self.a.new_dynamic_label();
        let via_jc = self.a.new_dynamic_label();
        if cross_page {
            x64!(self.a ; test BYTE [r15 + CORE_CR0 + 3], 0x80u8 as i8 ; jnz =>via_jc);
        }
        let at = self.base + self.a.offset().0;
        x64!(self.a ; jmp =>stub);
        let idx = self.exits.len();
        let id = ((self.exit_base + idx) as u64) << 8 | code::CHAIN;
        self.exits.push(ExitRec {
            at,
            stub: 0,
            target,
            cross_page,
        });
        let bits = self.bits;
        self.cold.push(Box::new(move |g: &mut Gen| {
            g.exits[idx].stub = g.base + g.a.offset().0;
            x64!(g.a ; =>stub);
            g.store_rip(target);
            x64!(g.a ; mov eax, id as i32 ; jmp extern g.exit);
            if cross_page {
                x64!(g.a ; =>via_jc);
                g.store_rip(target);
                if bits == 64 {
                    g.mov_imm(0, target);
                } else {
                    x64!(g.a ; mov eax, target as u32 as i32);
                    g.rip_to_lin();
                }
                g.jc_lookup();
                x64!(g.a ; mov eax, id as i32 ; jmp extern g.exit);
            }
        }));
    }

    /// `Goto`.
    pub(super) fn goto(&mut self, target: u64) {
        if self.back_edge(target) {
            self.sync_flags();
            let stores = self.back_stores();
            self.loop_back(stores);
            return;
        }
        self.sync();
        self.exit_const(target);
    }

    /// `Jump`: an indirect branch.
    pub(super) fn jump(&mut self, t: T) {
        self.sync();
        let v = self.val(t);
        match v {
            V::R(h) => x64!(self.a ; mov QWORD [r15 + CORE_RIP], Rq(h) ; mov rax, Rq(h)),
            V::I(x) => {
                self.store_rip(x);
                self.mov_imm(0, x);
            }
        }
        let n = self.b.insns.len() as i32;
        x64!(self.a ; add r13, n);
        self.leave_checks(false);
        self.rip_to_lin();
        self.jc_lookup();
        x64!(self.a ; jmp extern self.exit_done);
    }

    /// `End`: a helper has set RIP.
    pub(super) fn end(&mut self) {
        self.sync();
        let n = self.b.insns.len() as i32;
        x64!(self.a ; add r13, n);
        self.leave_checks(false);
        x64!(self.a ; mov rax, QWORD [r15 + CORE_RIP]);
        self.rip_to_lin();
        self.jc_lookup();
        x64!(self.a ; jmp extern self.exit_done);
    }

    /// `Branch` on a temporary.
    pub(super) fn branch(&mut self, c: T, taken: u64, fall: u64) {
        if taken != fall && (self.back_edge(taken) || self.back_edge(fall)) {
            let v = self.val(c);
            let h = self.in_reg(v);
            self.sync_flags();
            let (back, other, cc) = if self.back_edge(taken) {
                (taken, fall, 5)
            } else {
                (fall, taken, 4)
            };
            let _ = back;
            let l = self.a.new_dynamic_label();
            let stores = self.back_stores();
            x64!(self.a ; test Rq(h), Rq(h));
            self.jcc(cc, l);
            self.sync();
            self.exit_const(other);
            x64!(self.a ; =>l);
            self.loop_back(stores);
            return;
        }
        self.sync();
        match self.val(c) {
            V::I(x) => self.exit_const(if x != 0 { taken } else { fall }),
            V::R(h) => {
                let l = self.a.new_dynamic_label();
                x64!(self.a ; test Rq(h), Rq(h) ; jnz =>l);
                self.exit_const(fall);
                x64!(self.a ; =>l);
                self.exit_const(taken);
            }
        }
    }

    /// `BranchCc` on a condition of the flags.
    pub(super) fn branch_cc(&mut self, cc: u8, taken: u64, fall: u64) {
        if taken != fall && (self.back_edge(taken) || self.back_edge(fall)) {
            self.sync_flags();
            let hc = self.host_cond(cc);
            let (other, hc) = if self.back_edge(taken) {
                (fall, hc)
            } else {
                (taken, hc ^ 1)
            };
            let l = self.a.new_dynamic_label();
            let stores = self.back_stores();
            self.jcc(hc, l);
            self.sync();
            self.exit_const(other);
            x64!(self.a ; =>l);
            self.loop_back(stores);
            return;
        }
        self.sync();
        if taken == fall {
            self.exit_const(taken);
            return;
        }
        let hc = self.host_cond(cc);
        let l = self.a.new_dynamic_label();
        self.jcc(hc, l);
        self.exit_const(fall);
        x64!(self.a ; =>l);
        self.exit_const(taken);
    }

    /// `Call`: a helper compiled natively, or called with the state written back.
    pub(super) fn call(&mut self, f: HelperFn, n: u16) {
        let insn = self.b.insns[usize::from(n)];
        if let Some(nat) = super::inline_helpers::Native::of(&insn) {
            self.native(nat);
            return;
        }
        self.sync();
        for h in ALLOCATABLE {
            if CALLER_SAVED & (1 << h) != 0 && matches!(self.r.own[usize::from(h)], Own::Temp(_)) {
                self.evict(h);
            }
        }
        self.forget_state();
        let rip = self.rip;
        self.store_rip(rip);
        if let Some((r, sz, cc)) = shift_by_cl(&insn) {
            self.shift_by_cl(r, sz, cc);
            self.risky = true;
            return;
        }
        let site = (self.call_base + self.calls.len()) as i32;
        self.calls.push(CallSite {
            f,
            block: self.b.clone(),
            n,
            keeps_mode: super::slow::keeps_mode(&insn),
        });
        let fault = self.fault_label(self.n);
        x64!(self.a
            ; mov QWORD [r15 + CORE_ICOUNT], r13
            ; mov rdi, r14
            ; mov esi, site
            ; mov rax, QWORD buffer::call_helper as *const () as usize as i64
            ; call rax
            ; mov r13, QWORD [r15 + CORE_ICOUNT]
            ; test rax, rax
            ; jnz =>fault
        );
        self.risky = true;
    }

    /// SHL, SHR or SAR of guest register `r` by CL, in place of its helper and with the same
    /// effect on the core (the state is written back and forgotten as for a call, so only
    /// RAX, RCX and RDX are used): a count of 0 (after masking) writes the register back
    /// unchanged and keeps the flags; otherwise the result is written and the lazy flags
    /// become (op, size, value, count, result), as `Lazy::set` does. The bzImage's LZMA
    /// decoder makes ten million of these calls.
    fn shift_by_cl(&mut self, r: u8, sz: u8, cc: CcOp) {
        let gpr = CORE_GPR + 8 * i32::from(r);
        let rcx_home = CORE_GPR + 8;
        let cmask: i32 = if sz == 8 { 63 } else { 31 };
        let zero = self.a.new_dynamic_label();
        let done = self.a.new_dynamic_label();
        x64!(self.a
            ; movzx ecx, BYTE [r15 + rcx_home]
            ; and ecx, cmask
            ; jz =>zero
        );
        // RAX = the operand (zero-extended from its size), RDX = the result (likewise).
        match (sz, cc) {
            (8, _) => x64!(self.a ; mov rax, QWORD [r15 + gpr] ; mov rdx, rax),
            (4, CcOp::Sar) => x64!(self.a ; mov eax, DWORD [r15 + gpr] ; mov edx, eax),
            (4, _) => x64!(self.a ; mov eax, DWORD [r15 + gpr] ; mov edx, eax),
            (2, CcOp::Sar) => x64!(self.a ; movzx eax, WORD [r15 + gpr] ; movsx edx, ax),
            (2, _) => x64!(self.a ; movzx eax, WORD [r15 + gpr] ; mov edx, eax),
            (_, CcOp::Sar) => x64!(self.a ; movzx eax, BYTE [r15 + gpr] ; movsx edx, al),
            _ => x64!(self.a ; movzx eax, BYTE [r15 + gpr] ; mov edx, eax),
        }
        match (sz, cc) {
            (8, CcOp::Shl) => x64!(self.a ; shl rdx, cl),
            (8, CcOp::Shr) => x64!(self.a ; shr rdx, cl),
            (8, _) => x64!(self.a ; sar rdx, cl),
            (_, CcOp::Shl) => x64!(self.a ; shl edx, cl),
            (_, CcOp::Shr) => x64!(self.a ; shr edx, cl),
            _ => x64!(self.a ; sar edx, cl),
        }
        match sz {
            8 | 4 => x64!(self.a ; mov QWORD [r15 + gpr], rdx),
            2 => x64!(self.a ; movzx edx, dx ; mov WORD [r15 + gpr], dx),
            _ => x64!(self.a ; movzx edx, dl ; mov BYTE [r15 + gpr], dl),
        }
        let (op, size) = (cc as u8 as i8, sz as i8);
        let [a, b, res, _] = LAZY_HOME;
        x64!(self.a
            ; mov BYTE [r15 + LAZY_OP], op
            ; mov BYTE [r15 + LAZY_SZ], size
            ; mov QWORD [r15 + a], rax
            ; mov QWORD [r15 + b], rcx
            ; mov QWORD [r15 + res], rdx
            ; jmp =>done
            ; =>zero
        );
        if sz == 4 {
            // Written back unchanged: a 32-bit write clears the upper half.
            x64!(self.a ; mov eax, DWORD [r15 + gpr] ; mov QWORD [r15 + gpr], rax);
        }
        x64!(self.a ; =>done);
    }

    /// Emits the queued out-of-line code and the fault exits.
    pub fn epilogue(&mut self) {
        while !self.cold.is_empty() {
            let c = std::mem::take(&mut self.cold);
            for f in c {
                f(self);
            }
        }
        for (n, l) in std::mem::take(&mut self.fault_labels) {
            let fault = code::FAULT as i32;
            x64!(self.a
                ; =>l
                ; add r13, i32::from(n)
                ; mov eax, fault
                ; jmp extern self.exit
            );
        }
        let _ = fits32(0);
    }
}
