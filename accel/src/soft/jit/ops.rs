//! Register-only ops: reading and writing guest registers (including AH-BH), ALU ops on
//! temporaries with their size masking, shifts (CL for a variable count), unary ops and
//! selects. Constants are folded; a temporary that dies at an op lends its register to the
//! result.

use dynasmrt::{DynasmApi, dynasm};

use super::super::ir::{BinOp, Op, T, UnOp};
use super::alloc::TLoc;
use super::codegen::{Gen, Unsupported, V, fits32, mask, x64};

impl Gen<'_> {
    pub(super) fn get(&mut self, d: T, r: u8, sz: u8) {
        if self.an.unused(self.k) {
            return;
        }
        let (g, high) = if r >= 16 { (r - 16, true) } else { (r, false) };
        let src = self.guest(g, true);
        let h = self.alloc();
        if high {
            x64!(self.a ; mov Rq(h), Rq(src) ; shr Rq(h), 8 ; movzx Rd(h), Rb(h));
        } else {
            match sz {
                1 => x64!(self.a ; movzx Rd(h), Rb(src)),
                2 => x64!(self.a ; movzx Rd(h), Rw(src)),
                4 => x64!(self.a ; mov Rd(h), Rd(src)),
                _ => x64!(self.a ; mov Rq(h), Rq(src)),
            }
        }
        self.def(d, h);
    }

    pub(super) fn set(&mut self, r: u8, s: T, sz: u8) {
        if r >= 16 {
            let g = r - 16;
            let v = self.val(s);
            let dst = self.guest(g, true);
            let t = self.alloc();
            match v {
                V::R(h) => x64!(self.a ; movzx Rd(t), Rb(h) ; shl Rd(t), 8),
                V::I(x) => self.mov_imm(t, (x & 0xff) << 8),
            }
            x64!(self.a ; and Rq(dst), !0xff00 ; or Rq(dst), Rq(t));
            self.dirty(g);
            return;
        }
        let pinned = self.r.guest[usize::from(r)].is_some_and(|h| self.r.pinned & (1 << h) != 0);
        if sz == 8 && !pinned {
            if let TLoc::Reg(h) = self.r.temp[usize::from(s)] {
                if self.dies(s) {
                    self.r.temp[usize::from(s)] = TLoc::None;
                    self.rename_guest(r, h);
                    self.r.touch(h);
                    return;
                }
            }
        }
        let v = self.val(s);
        let dst = self.guest(r, sz < 4);
        match (v, sz) {
            (V::R(h), 1) => x64!(self.a ; mov Rb(dst), Rb(h)),
            (V::R(h), 2) => x64!(self.a ; mov Rw(dst), Rw(h)),
            (V::R(h), 4) => x64!(self.a ; mov Rd(dst), Rd(h)),
            (V::R(h), _) => x64!(self.a ; mov Rq(dst), Rq(h)),
            (V::I(x), 1) => x64!(self.a ; mov Rb(dst), x as u8 as i8),
            (V::I(x), 2) => x64!(self.a ; mov Rw(dst), x as u16 as i16),
            (V::I(x), 4) => x64!(self.a ; mov Rd(dst), x as u32 as i32),
            (V::I(x), _) => self.mov_imm(dst, x),
        }
        self.dirty(r);
    }

    /// Masks `h` to `sz` bytes.
    pub fn zext(&mut self, h: u8, sz: u8) {
        match sz {
            1 => x64!(self.a ; movzx Rd(h), Rb(h)),
            2 => x64!(self.a ; movzx Rd(h), Rw(h)),
            4 => x64!(self.a ; mov Rd(h), Rd(h)),
            _ => {}
        }
    }

    /// `d op= s` on 64 bits (sz 8) or 32 bits.
    pub fn alu_rr(&mut self, op: BinOp, wide: bool, d: u8, s: u8) {
        match (op, wide) {
            (BinOp::Add, true) => x64!(self.a ; add Rq(d), Rq(s)),
            (BinOp::Add, false) => x64!(self.a ; add Rd(d), Rd(s)),
            (BinOp::Sub, true) => x64!(self.a ; sub Rq(d), Rq(s)),
            (BinOp::Sub, false) => x64!(self.a ; sub Rd(d), Rd(s)),
            (BinOp::And, true) => x64!(self.a ; and Rq(d), Rq(s)),
            (BinOp::And, false) => x64!(self.a ; and Rd(d), Rd(s)),
            (BinOp::Or, true) => x64!(self.a ; or Rq(d), Rq(s)),
            (BinOp::Or, false) => x64!(self.a ; or Rd(d), Rd(s)),
            (BinOp::Xor, true) => x64!(self.a ; xor Rq(d), Rq(s)),
            (BinOp::Xor, false) => x64!(self.a ; xor Rd(d), Rd(s)),
            (BinOp::Mul, _) => x64!(self.a ; imul Rq(d), Rq(s)),
            _ => unreachable!("shift in alu_rr"),
        }
    }

    /// `d op= imm` on 64 bits (sz 8, `imm` sign-extended) or 32 bits.
    pub fn alu_ri(&mut self, op: BinOp, wide: bool, d: u8, imm: i32) {
        match (op, wide) {
            (BinOp::Add, true) => x64!(self.a ; add Rq(d), imm),
            (BinOp::Add, false) => x64!(self.a ; add Rd(d), imm),
            (BinOp::Sub, true) => x64!(self.a ; sub Rq(d), imm),
            (BinOp::Sub, false) => x64!(self.a ; sub Rd(d), imm),
            (BinOp::And, true) => x64!(self.a ; and Rq(d), imm),
            (BinOp::And, false) => x64!(self.a ; and Rd(d), imm),
            (BinOp::Or, true) => x64!(self.a ; or Rq(d), imm),
            (BinOp::Or, false) => x64!(self.a ; or Rd(d), imm),
            (BinOp::Xor, true) => x64!(self.a ; xor Rq(d), imm),
            (BinOp::Xor, false) => x64!(self.a ; xor Rd(d), imm),
            (BinOp::Mul, _) => x64!(self.a ; imul Rq(d), Rq(d), imm),
            _ => unreachable!("shift in alu_ri"),
        }
    }

    pub(super) fn bin(&mut self, op: BinOp, d: T, a: T, b: T, sz: u8) -> Result<(), Unsupported> {
        if self.an.unused(self.k) {
            return Ok(());
        }
        let (va, vb) = (self.val(a), self.val(b));
        if let (V::I(x), V::I(y)) = (va, vb) {
            self.def_imm(d, op.eval(x, y, sz));
            return Ok(());
        }
        let wide = sz == 8;
        match op {
            BinOp::Shl | BinOp::Shr | BinOp::Sar => return self.shift(op, d, a, vb, sz),
            _ => {}
        }
        // Commutative ops with a constant first: swap so the constant is the immediate.
        let commutative = matches!(
            op,
            BinOp::Add | BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Mul
        );
        let (a, vb) = if commutative && matches!(va, V::I(_)) {
            (b, va)
        } else {
            (a, vb)
        };
        let h = self.copy_of(a);
        match vb {
            V::I(x) if !wide || fits32(x) => self.alu_ri(op, wide, h, x as u32 as i32),
            V::I(x) => {
                let t = self.imm_reg(x);
                self.alu_rr(op, wide, h, t);
            }
            V::R(s) => self.alu_rr(op, wide, h, s),
        }
        if op == BinOp::Mul || sz < 4 {
            self.zext(h, sz);
        }
        self.def(d, h);
        Ok(())
    }

    fn shift(&mut self, op: BinOp, d: T, a: T, vb: V, sz: u8) -> Result<(), Unsupported> {
        let bits = u32::from(sz) * 8;
        match vb {
            V::I(c) => {
                let c = (c & 63) as u8;
                if op == BinOp::Shl && u32::from(c) >= bits {
                    self.def_imm(d, 0);
                    return Ok(());
                }
                let h = self.copy_of(a);
                match op {
                    BinOp::Shl => {
                        x64!(self.a ; shl Rq(h), c as i8);
                        self.zext(h, sz);
                    }
                    BinOp::Shr => {
                        self.zext(h, sz);
                        if c != 0 {
                            x64!(self.a ; shr Rq(h), c as i8);
                        }
                    }
                    _ => {
                        self.sext(h, sz);
                        if c != 0 {
                            x64!(self.a ; sar Rq(h), c as i8);
                        }
                        self.zext(h, sz);
                    }
                }
                self.def(d, h);
            }
            V::R(_) => {
                let Op::Bin { b, .. } = self.b.ops[self.k] else {
                    return Err(Unsupported("shift count"));
                };
                return self.shift_cl(op, d, a, b, sz);
            }
        }
        Ok(())
    }

    /// A shift by a variable count, which goes through CL.
    fn shift_cl(&mut self, op: BinOp, d: T, a: T, b: T, sz: u8) -> Result<(), Unsupported> {
        let rcx = self.take(1);
        let vb = self.val(b);
        match vb {
            V::R(h) => x64!(self.a ; mov Rq(rcx), Rq(h)),
            V::I(x) => self.mov_imm(rcx, x),
        }
        let h = self.copy_of(a);
        match op {
            BinOp::Shl => x64!(self.a ; shl Rq(h), cl),
            BinOp::Shr => {
                self.zext(h, sz);
                x64!(self.a ; shr Rq(h), cl);
            }
            _ => {
                self.sext(h, sz);
                x64!(self.a ; sar Rq(h), cl);
            }
        }
        self.zext(h, sz);
        self.def(d, h);
        Ok(())
    }

    /// Sign-extends `h` from `sz` bytes to 64 bits.
    pub fn sext(&mut self, h: u8, sz: u8) {
        match sz {
            1 => x64!(self.a ; movsx Rq(h), Rb(h)),
            2 => x64!(self.a ; movsx Rq(h), Rw(h)),
            4 => x64!(self.a ; movsxd Rq(h), Rd(h)),
            _ => {}
        }
    }

    pub(super) fn un(&mut self, op: UnOp, d: T, a: T, sz: u8) {
        if self.an.unused(self.k) {
            return;
        }
        if let V::I(x) = self.val(a) {
            let m = mask(sz);
            let v = match op {
                UnOp::Not => !x & m,
                UnOp::Neg => x.wrapping_neg() & m,
                UnOp::Sext => super::super::flags::sext(x, sz) as u64,
                UnOp::Zext => x & m,
            };
            self.def_imm(d, v);
            return;
        }
        let h = self.copy_of(a);
        match op {
            UnOp::Not => {
                x64!(self.a ; not Rq(h));
                self.zext(h, sz);
            }
            UnOp::Neg => {
                x64!(self.a ; neg Rq(h));
                self.zext(h, sz);
            }
            UnOp::Sext => self.sext(h, sz),
            UnOp::Zext => self.zext(h, sz),
        }
        self.def(d, h);
    }

    pub(super) fn select(&mut self, d: T, c: T, a: T, b: T) {
        if self.an.unused(self.k) {
            return;
        }
        match self.val(c) {
            V::I(x) => {
                let src = if x != 0 { a } else { b };
                match self.val(src) {
                    V::I(v) => self.def_imm(d, v),
                    V::R(_) => {
                        let h = self.copy_of(src);
                        self.def(d, h);
                    }
                }
            }
            V::R(ch) => {
                let va = self.val(a);
                let ah = self.in_reg(va);
                let h = self.copy_of(b);
                x64!(self.a ; test Rq(ch), Rq(ch) ; cmovnz Rq(h), Rq(ah));
                self.def(d, h);
            }
        }
    }
}
