//! Lazy flags in compiled code. Within a block the last flag-setting op is known at compile
//! time (`Fk::Known`) and its operands and result stay in host registers; the core's `Lazy` is
//! written only where something outside the block could look (exits, helper calls, slow paths).
//! A condition is computed by redoing the op on the host when the host's flags match the
//! guest's (ADD SUB ADC SBB logic INC DEC), by testing the result or the auxiliary value where
//! that suffices, and otherwise by the interpreter's own code through a call.

use dynasmrt::{DynamicLabel, DynasmApi, DynasmLabelApi, dynasm};

use super::super::flags::CcOp;
use super::super::ir::{BinOp, T};
use super::alloc::{CALLER_SAVED, FLoc, Own, fv};
use super::buffer;
use super::codegen::{
    Fk, Gen, LAZY_HOME, LAZY_OP, LAZY_SZ, RT_SAVE, Store, Unsupported, V, fits32, mask, x64,
};

/// `$mn dst, src` at operand size `$sz` (`src` a register or a constant that fits).
macro_rules! sized {
    ($g:expr, $mn:ident, $sz:expr, $d:expr, $s:expr) => {
        match ($sz, $s) {
            (1, V::R(s)) => x64!($g.a ; $mn Rb($d), Rb(s)),
            (2, V::R(s)) => x64!($g.a ; $mn Rw($d), Rw(s)),
            (4, V::R(s)) => x64!($g.a ; $mn Rd($d), Rd(s)),
            (_, V::R(s)) => x64!($g.a ; $mn Rq($d), Rq(s)),
            (1, V::I(x)) => x64!($g.a ; $mn Rb($d), x as i8),
            (2, V::I(x)) => x64!($g.a ; $mn Rw($d), x as i16),
            (4, V::I(x)) => x64!($g.a ; $mn Rd($d), x as i32),
            (_, V::I(x)) => x64!($g.a ; $mn Rq($d), x as i32),
        }
    };
}

/// Host ALU ops used on guest-sized operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ar {
    /// add.
    Add,
    /// sub.
    Sub,
    /// adc.
    Adc,
    /// sbb.
    Sbb,
    /// cmp.
    Cmp,
    /// and.
    And,
    /// or.
    Or,
    /// xor.
    Xor,
    /// test.
    Test,
}

impl Ar {
    /// The host op of an IR op.
    pub fn of(op: BinOp) -> Ar {
        match op {
            BinOp::Add => Ar::Add,
            BinOp::Sub => Ar::Sub,
            BinOp::And => Ar::And,
            BinOp::Or => Ar::Or,
            _ => Ar::Xor,
        }
    }
}

impl Gen<'_> {
    /// A value fit for a sized host op: 64-bit constants that do not sign-extend from 32 bits
    /// go to a register.
    pub fn opnd(&mut self, v: V, sz: u8) -> V {
        match v {
            V::I(x) if sz == 8 && !fits32(x) => V::R(self.imm_reg(x)),
            V::I(x) => V::I(x & mask(sz)),
            r => r,
        }
    }

    /// `op d, s` at size `sz`.
    pub fn arith(&mut self, op: Ar, sz: u8, d: u8, s: V) {
        let s = self.opnd(s, sz);
        match op {
            Ar::Add => sized!(self, add, sz, d, s),
            Ar::Sub => sized!(self, sub, sz, d, s),
            Ar::Adc => sized!(self, adc, sz, d, s),
            Ar::Sbb => sized!(self, sbb, sz, d, s),
            Ar::Cmp => sized!(self, cmp, sz, d, s),
            Ar::And => sized!(self, and, sz, d, s),
            Ar::Or => sized!(self, or, sz, d, s),
            Ar::Xor => sized!(self, xor, sz, d, s),
            Ar::Test => sized!(self, test, sz, d, s),
        }
    }

    /// A pending flag value as an operand, loading it from its home if it was evicted.
    pub fn fval(&mut self, f: usize) -> V {
        match self.r.flag[f] {
            FLoc::Reg(h) => {
                self.lock(V::R(h));
                V::R(h)
            }
            FLoc::Imm(x) => V::I(x),
            FLoc::Home => {
                let h = self.alloc();
                let off = LAZY_HOME[f];
                x64!(self.a ; mov Rq(h), QWORD [r15 + off]);
                self.r.own[usize::from(h)] = Own::Flag(f as u8);
                self.r.flag[f] = FLoc::Reg(h);
                V::R(h)
            }
            FLoc::None => V::I(0),
        }
    }

    /// A pending flag value in a register.
    pub fn freg(&mut self, f: usize) -> u8 {
        let v = self.fval(f);
        self.in_reg(v)
    }

    /// Installs a new flags state; the registers given become flag registers.
    pub fn install(&mut self, cc: CcOp, sz: u8, vals: [FLoc; 4]) {
        let keep = |h: u8| vals.contains(&FLoc::Reg(h));
        for f in 0..4 {
            if let FLoc::Reg(h) = self.r.flag[f] {
                if !keep(h) {
                    self.r.own[usize::from(h)] = Own::Free;
                }
            }
        }
        self.r.fdirty = 0;
        for (f, &v) in vals.iter().enumerate() {
            self.r.flag[f] = v;
            match v {
                FLoc::Reg(h) => {
                    self.r.own[usize::from(h)] = Own::Flag(f as u8);
                    self.r.fdirty |= 1 << f;
                }
                FLoc::Imm(_) => self.r.fdirty |= 1 << f,
                _ => {}
            }
        }
        self.fk = Fk::Known { cc, sz, mem: false };
    }

    /// The stores that write the pending flags to the core.
    pub fn flag_stores(&self) -> Vec<Store> {
        let mut v = self.pending_stores();
        v.retain(|s| s.off == LAZY_OP || s.off == LAZY_SZ || LAZY_HOME.contains(&s.off));
        debug_assert!(v.len() <= 6);
        v
    }

    /// Writes the pending flags to the core.
    pub fn sync_flags(&mut self) {
        let s = self.flag_stores();
        self.emit_stores(&s);
        self.r.fdirty = 0;
        if let Fk::Known { cc, sz, .. } = self.fk {
            self.fk = Fk::Known { cc, sz, mem: true };
        }
    }

    /// Calls `f(rt, arg)` keeping every live register; the result is in the returned scratch
    /// register.
    pub fn call_out(&mut self, f: usize, arg: u64) -> u8 {
        let res = self.alloc();
        let save = self.r.live() & CALLER_SAVED & !(1 << res);
        for h in 0..16u8 {
            if save & (1 << h) != 0 {
                let off = RT_SAVE + 8 * i32::from(h);
                x64!(self.a ; mov QWORD [r14 + off], Rq(h));
            }
        }
        x64!(self.a
            ; mov rdi, r14
            ; mov rsi, QWORD arg as i64
            ; mov rax, QWORD f as i64
            ; call rax
            ; mov Rq(res), rax
        );
        for h in 0..16u8 {
            if save & (1 << h) != 0 {
                let off = RT_SAVE + 8 * i32::from(h);
                x64!(self.a ; mov Rq(h), QWORD [r14 + off]);
            }
        }
        res
    }

    /// Redoes the last flag-setting op on the host so that the host flags equal the guest's
    /// (all six for ADD SUB ADC SBB; all but AF for logic ops; all but CF for INC DEC).
    /// Returns false for other kinds.
    fn recompute(&mut self) -> bool {
        let Fk::Known { cc, sz, .. } = self.fk else {
            return false;
        };
        if self.hf
            && matches!(
                cc,
                CcOp::Add | CcOp::Sub | CcOp::Logic | CcOp::Inc | CcOp::Dec
            )
        {
            return true;
        }
        match cc {
            CcOp::Logic => {
                let r = self.freg(fv::R);
                self.arith(Ar::Test, sz, r, V::R(r));
            }
            CcOp::Sub => {
                let a = self.freg(fv::A);
                let b = self.fval(fv::B);
                self.arith(Ar::Cmp, sz, a, b);
            }
            CcOp::Add | CcOp::Inc | CcOp::Dec => {
                let a = self.fval(fv::A);
                let b = self.fval(fv::B);
                let b = self.opnd(b, sz);
                let t = self.alloc();
                match a {
                    V::R(h) => x64!(self.a ; mov Rq(t), Rq(h)),
                    V::I(x) => self.mov_imm(t, x),
                }
                let op = if cc == CcOp::Dec { Ar::Sub } else { Ar::Add };
                self.arith(op, sz, t, b);
            }
            CcOp::Adc | CcOp::Sbb => {
                // The carry in is what the result leaves over: (r - a - b) or (a - b - r).
                let a = self.fval(fv::A);
                let b = self.fval(fv::B);
                let b = self.opnd(b, sz);
                let r = self.fval(fv::R);
                let t = self.alloc();
                if cc == CcOp::Adc {
                    let r = self.in_reg(r);
                    x64!(self.a ; mov Rq(t), Rq(r));
                    self.arith(Ar::Sub, 8, t, a);
                    self.arith(Ar::Sub, 8, t, b);
                } else {
                    let ah = self.in_reg(a);
                    x64!(self.a ; mov Rq(t), Rq(ah));
                    self.arith(Ar::Sub, 8, t, b);
                    self.arith(Ar::Sub, 8, t, r);
                }
                self.arith(Ar::Test, sz, t, V::R(t));
                x64!(self.a ; setnz Rb(t) ; bt Rd(t), 0);
                match a {
                    V::R(h) => x64!(self.a ; mov Rq(t), Rq(h)),
                    V::I(x) => self.mov_imm(t, x),
                }
                let op = if cc == CcOp::Adc { Ar::Adc } else { Ar::Sbb };
                self.arith(op, sz, t, b);
            }
            _ => return false,
        }
        true
    }

    /// Sets the host flags so that host condition code returned is guest condition `cc`.
    pub fn host_cond(&mut self, cc: u8) -> u8 {
        let c2 = cc >> 1;
        if let Fk::Known { cc: kind, sz, .. } = self.fk {
            match kind {
                CcOp::Add | CcOp::Sub | CcOp::Adc | CcOp::Sbb | CcOp::Logic if self.recompute() => {
                    return cc;
                }
                CcOp::Inc | CcOp::Dec if c2 == 1 || c2 == 3 => {
                    let x = self.freg(fv::X);
                    if c2 == 3 {
                        let r = self.freg(fv::R);
                        self.arith(Ar::Test, sz, r, V::R(r));
                    }
                    x64!(self.a ; bt Rd(x), 0);
                    return cc;
                }
                CcOp::Inc | CcOp::Dec if self.recompute() => return cc,
                CcOp::Mul | CcOp::Shl | CcOp::Shr | CcOp::Sar if matches!(c2, 2 | 4 | 5) => {
                    let r = self.freg(fv::R);
                    self.arith(Ar::Test, sz, r, V::R(r));
                    return cc;
                }
                CcOp::Mul if c2 <= 1 => {
                    let x = self.freg(fv::X);
                    x64!(self.a ; test Rq(x), Rq(x));
                    return if cc & 1 == 0 { 5 } else { 4 };
                }
                CcOp::Eflags if c2 <= 5 => {
                    let bit = [0x800, 1, 0x40, 0x41, 0x80, 4][usize::from(c2)];
                    let x = self.freg(fv::X);
                    x64!(self.a ; test Rd(x), bit);
                    return if cc & 1 == 0 { 5 } else { 4 };
                }
                _ => {}
            }
        }
        self.sync_flags();
        let r = self.call_out(buffer::lazy_cond as *const () as usize, u64::from(cc));
        x64!(self.a ; test Rd(r), Rd(r));
        5
    }

    /// All six arithmetic flags in a scratch register.
    pub fn all_flags(&mut self) -> u8 {
        if let Fk::Known { cc, .. } = self.fk {
            match cc {
                CcOp::Eflags => {
                    let x = self.fval(fv::X);
                    let t = self.alloc();
                    match x {
                        V::R(h) => x64!(self.a ; mov Rq(t), Rq(h)),
                        V::I(v) => self.mov_imm(t, v),
                    }
                    return t;
                }
                CcOp::Add
                | CcOp::Sub
                | CcOp::Adc
                | CcOp::Sbb
                | CcOp::Logic
                | CcOp::Inc
                | CcOp::Dec => {
                    let x = if matches!(cc, CcOp::Inc | CcOp::Dec) {
                        Some(self.freg(fv::X))
                    } else {
                        None
                    };
                    let t = self.alloc();
                    if self.recompute() {
                        let keep: i32 = match cc {
                            CcOp::Logic => 0xc4,
                            CcOp::Inc | CcOp::Dec => 0x8d4,
                            _ => 0x8d5,
                        };
                        x64!(self.a ; pushfq ; pop Rq(t) ; and Rd(t), keep);
                        if let Some(x) = x {
                            x64!(self.a ; or Rq(t), Rq(x));
                        }
                        return t;
                    }
                    self.release(t);
                }
                _ => {}
            }
        }
        self.sync_flags();
        self.call_out(buffer::lazy_all as *const () as usize, 0)
    }

    /// The current carry flag as a flag value of 0 or 1 (for INC and DEC, which keep it).
    fn carry_value(&mut self) -> FLoc {
        match self.fk {
            Fk::Known {
                cc: CcOp::Inc | CcOp::Dec,
                ..
            } => {
                // Kept as it is; its register must survive the op's other allocations.
                let x = self.r.flag[fv::X];
                if let FLoc::Reg(h) = x {
                    self.lock(V::R(h));
                }
                return x;
            }
            Fk::Known {
                cc: CcOp::Logic, ..
            } => return FLoc::Imm(0),
            Fk::Known {
                cc: CcOp::Eflags, ..
            } => {
                let x = self.fval(fv::X);
                let t = self.alloc();
                match x {
                    V::R(h) => x64!(self.a ; mov Rd(t), Rd(h) ; and Rd(t), 1),
                    V::I(v) => self.mov_imm(t, v & 1),
                }
                return FLoc::Reg(t);
            }
            _ => {}
        }
        let hc = self.host_cond(2);
        let t = self.alloc();
        self.setcc(hc, t);
        x64!(self.a ; movzx Rd(t), Rb(t));
        FLoc::Reg(t)
    }

    /// Frees the registers of the pending flag values other than `keep` (once nothing will read
    /// them: an op that replaces the flags has taken what it needs).
    fn drop_flag_values(&mut self, keep: FLoc) {
        for f in [fv::A, fv::B, fv::R, fv::X] {
            if let FLoc::Reg(h) = self.r.flag[f] {
                if keep != FLoc::Reg(h) {
                    self.r.own[usize::from(h)] = Own::Free;
                    self.r.locked &= !(1 << h);
                    self.r.flag[f] = FLoc::None;
                    self.r.fdirty &= !(1 << f);
                }
            }
        }
    }

    /// A flag value taken from temporary `t`.
    fn flag_from(&mut self, t: T) -> FLoc {
        match self.val(t) {
            V::I(x) => FLoc::Imm(x),
            V::R(_) => FLoc::Reg(self.copy_of(t)),
        }
    }

    /// The `Flags` op.
    pub(super) fn flags_op(&mut self, cc: CcOp, sz: u8, a: T, b: T, r: T) {
        if !self.an.flags_live(self.k) {
            return;
        }
        let x = if matches!(cc, CcOp::Inc | CcOp::Dec) {
            self.carry_value()
        } else {
            FLoc::None
        };
        self.drop_flag_values(x);
        let fr = self.flag_from(r);
        let (fa, fb) = if cc == CcOp::Logic {
            (FLoc::None, FLoc::None)
        } else {
            (self.flag_from(a), self.flag_from(b))
        };
        self.install(cc, sz, [fa, fb, fr, x]);
    }

    /// Fused register ALU ops (`AluR`, and `AluI` when `s` is `None`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn alu(
        &mut self,
        op: BinOp,
        cc: CcOp,
        r: u8,
        s: Option<u8>,
        imm: i32,
        sz: u8,
        write: bool,
        flags: bool,
    ) -> Result<(), Unsupported> {
        if r >= 16 || s.is_some_and(|s| s >= 16) {
            self.alu_high(op, cc, r, s, imm, write, flags);
            return Ok(());
        }
        let live = flags && self.an.flags_live(self.k);
        if !live && !write {
            return Ok(());
        }
        let x = if live && matches!(cc, CcOp::Inc | CcOp::Dec) {
            self.carry_value()
        } else {
            FLoc::None
        };
        if live {
            self.drop_flag_values(x);
        }
        let g = self.guest(r, true);
        let src = match s {
            Some(s) => V::R(self.guest(s, true)),
            None => V::I(imm as i64 as u64 & mask(sz)),
        };
        let logic = cc == CcOp::Logic;
        let (mut fa, mut fb) = (FLoc::None, FLoc::None);
        if live && !logic {
            let t = self.alloc();
            x64!(self.a ; mov Rq(t), Rq(g));
            fa = FLoc::Reg(t);
            fb = match src {
                V::R(h) => {
                    let t = self.alloc();
                    x64!(self.a ; mov Rq(t), Rq(h));
                    FLoc::Reg(t)
                }
                V::I(v) => FLoc::Imm(v),
            };
        }
        let host = match (op, write) {
            (BinOp::Sub, false) => Ar::Cmp,
            (BinOp::And, false) => Ar::Test,
            _ => Ar::of(op),
        };
        let mut fr = FLoc::None;
        if write {
            self.arith(host, sz, g, src);
            self.dirty(r);
            if live {
                let t = self.alloc();
                x64!(self.a ; mov Rq(t), Rq(g));
                fr = FLoc::Reg(t);
            }
        } else {
            let t = self.alloc();
            x64!(self.a ; mov Rq(t), Rq(g));
            self.arith(Ar::of(op), sz, t, src);
            fr = FLoc::Reg(t);
        }
        if live {
            self.install(cc, sz, [fa, fb, fr, x]);
            self.hf = true;
        }
        Ok(())
    }

    /// A byte register into a new scratch register (16..=19: AH CH DH BH).
    fn byte_reg(&mut self, r: u8) -> u8 {
        let g = self.guest(r & 15, true);
        let t = self.alloc();
        if r >= 16 {
            x64!(self.a ; mov Rq(t), Rq(g) ; shr Rq(t), 8 ; movzx Rd(t), Rb(t));
        } else {
            x64!(self.a ; movzx Rd(t), Rb(g));
        }
        t
    }

    /// Byte ALU ops with AH-BH as an operand.
    #[allow(clippy::too_many_arguments)]
    fn alu_high(
        &mut self,
        op: BinOp,
        cc: CcOp,
        r: u8,
        s: Option<u8>,
        imm: i32,
        write: bool,
        flags: bool,
    ) {
        let live = flags && self.an.flags_live(self.k);
        let x = if live && matches!(cc, CcOp::Inc | CcOp::Dec) {
            self.carry_value()
        } else {
            FLoc::None
        };
        let a = self.byte_reg(r);
        let b = match s {
            Some(s) => V::R(self.byte_reg(s)),
            None => V::I(imm as u64 & 0xff),
        };
        let res = self.alloc();
        x64!(self.a ; mov Rq(res), Rq(a));
        self.arith(Ar::of(op), 1, res, b);
        if write {
            let g = self.guest(r & 15, true);
            if r >= 16 {
                let t = self.alloc();
                x64!(self.a
                    ; movzx Rd(t), Rb(res)
                    ; shl Rd(t), 8
                    ; and Rq(g), !0xff00
                    ; or Rq(g), Rq(t)
                );
            } else {
                x64!(self.a ; mov Rb(g), Rb(res));
            }
            self.dirty(r & 15);
        }
        if live {
            let (fa, fb) = if cc == CcOp::Logic {
                (FLoc::None, FLoc::None)
            } else {
                let fb = match b {
                    V::R(h) => FLoc::Reg(h),
                    V::I(v) => FLoc::Imm(v),
                };
                (FLoc::Reg(a), fb)
            };
            self.install(cc, 1, [fa, fb, FLoc::Reg(res), x]);
        }
    }

    /// The `Carry` and `Cond` ops.
    pub(super) fn cond(&mut self, d: T, cc: u8) {
        if self.an.unused(self.k) {
            return;
        }
        let hc = self.host_cond(cc);
        let t = self.alloc();
        self.setcc(hc, t);
        x64!(self.a ; movzx Rd(t), Rb(t));
        self.def(d, t);
    }

    /// `setcc` with a run-time condition code.
    pub fn setcc(&mut self, cc: u8, h: u8) {
        match cc & 15 {
            0 => x64!(self.a ; seto Rb(h)),
            1 => x64!(self.a ; setno Rb(h)),
            2 => x64!(self.a ; setb Rb(h)),
            3 => x64!(self.a ; setae Rb(h)),
            4 => x64!(self.a ; sete Rb(h)),
            5 => x64!(self.a ; setne Rb(h)),
            6 => x64!(self.a ; setbe Rb(h)),
            7 => x64!(self.a ; seta Rb(h)),
            8 => x64!(self.a ; sets Rb(h)),
            9 => x64!(self.a ; setns Rb(h)),
            10 => x64!(self.a ; setp Rb(h)),
            11 => x64!(self.a ; setnp Rb(h)),
            12 => x64!(self.a ; setl Rb(h)),
            13 => x64!(self.a ; setge Rb(h)),
            14 => x64!(self.a ; setle Rb(h)),
            _ => x64!(self.a ; setg Rb(h)),
        }
    }

    /// `jcc` with a run-time condition code.
    pub fn jcc(&mut self, cc: u8, l: DynamicLabel) {
        match cc & 15 {
            0 => x64!(self.a ; jo =>l),
            1 => x64!(self.a ; jno =>l),
            2 => x64!(self.a ; jb =>l),
            3 => x64!(self.a ; jae =>l),
            4 => x64!(self.a ; je =>l),
            5 => x64!(self.a ; jne =>l),
            6 => x64!(self.a ; jbe =>l),
            7 => x64!(self.a ; ja =>l),
            8 => x64!(self.a ; js =>l),
            9 => x64!(self.a ; jns =>l),
            10 => x64!(self.a ; jp =>l),
            11 => x64!(self.a ; jnp =>l),
            12 => x64!(self.a ; jl =>l),
            13 => x64!(self.a ; jge =>l),
            14 => x64!(self.a ; jle =>l),
            _ => x64!(self.a ; jg =>l),
        }
    }
}
