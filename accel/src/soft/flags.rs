//! Lazy condition codes: the last flag-setting operation is kept with its operands and result,
//! and each arithmetic flag (CF PF AF ZF SF OF) is computed only when something reads it.

use crate::state::rflags::{AF, CF, OF, PF, SF, ZF};

/// The six arithmetic flags.
pub const ARITH: u64 = CF | PF | AF | ZF | SF | OF;

/// The kind of the last flag-setting operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CcOp {
    /// Flags are stored explicitly in `aux`.
    Eflags,
    /// `res = a + b`.
    Add,
    /// `res = a + b + carry` (the carry is recovered from the operands and result).
    Adc,
    /// `res = a - b` (also CMP and NEG with a = 0).
    Sub,
    /// `res = a - b - borrow`.
    Sbb,
    /// AND, OR, XOR, TEST: CF = OF = AF = 0.
    Logic,
    /// INC: `res = a + 1`, CF kept in `aux`.
    Inc,
    /// DEC: `res = a - 1`, CF kept in `aux`.
    Dec,
    /// SHL by `b` (1..=63): `a` is the original value.
    Shl,
    /// SHR by `b`.
    Shr,
    /// SAR by `b`.
    Sar,
    /// MUL/IMUL: CF = OF = `aux`; SF ZF PF from `res`, AF = 0.
    Mul,
}

/// The lazy flags state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lazy {
    /// Operation kind.
    pub op: CcOp,
    /// Operand size in bytes (1, 2, 4, 8).
    pub sz: u8,
    /// First operand.
    pub a: u64,
    /// Second operand (or shift count).
    pub b: u64,
    /// Result.
    pub res: u64,
    /// Saved CF for INC/DEC, overflow for MUL, the flags themselves for `Eflags`.
    pub aux: u64,
}

impl Default for Lazy {
    fn default() -> Self {
        Lazy {
            op: CcOp::Eflags,
            sz: 1,
            a: 0,
            b: 0,
            res: 0,
            aux: 0,
        }
    }
}

/// Mask of an operand size in bytes.
#[inline]
pub fn mask(sz: u8) -> u64 {
    // A table: this sits on every interpreted ALU op and flag read. Sizes are 1, 2, 4 or 8;
    // anything else gives the 64-bit mask rather than trusting the index.
    const MASKS: [u64; 16] = {
        let mut m = [u64::MAX; 16];
        m[1] = 0xff;
        m[2] = 0xffff;
        m[4] = 0xffff_ffff;
        m
    };
    MASKS[usize::from(sz & 15)]
}

/// The sign bit of an operand size in bytes.
#[inline]
pub fn sign_bit(sz: u8) -> u64 {
    1u64 << ((u32::from(sz) * 8).wrapping_sub(1) & 63)
}

/// Even parity of the low byte, as PF reports it.
#[inline]
pub fn parity(v: u64) -> bool {
    (v as u8).count_ones() % 2 == 0
}

impl Lazy {
    /// Stores the flags explicitly.
    #[inline]
    pub fn set_eflags(&mut self, f: u64) {
        self.op = CcOp::Eflags;
        self.aux = f & ARITH;
    }

    /// Carry flag.
    #[inline(always)]
    pub fn cf(&self) -> bool {
        // Inline for explicit flags and CMP/SUB (the usual producers of a carry that is read);
        // the rest out of line.
        match self.op {
            CcOp::Eflags => self.aux & CF != 0,
            CcOp::Sub => {
                let m = mask(self.sz);
                self.a & m < self.b & m
            }
            _ => self.cf_slow(),
        }
    }

    #[inline(never)]
    fn cf_slow(&self) -> bool {
        let m = mask(self.sz);
        match self.op {
            CcOp::Eflags => self.aux & CF != 0,
            CcOp::Add => self.res & m < self.a & m,
            CcOp::Adc => {
                let cin = self.res.wrapping_sub(self.a).wrapping_sub(self.b) & m;
                if cin != 0 {
                    self.res & m <= self.a & m
                } else {
                    self.res & m < self.a & m
                }
            }
            CcOp::Sub => self.a & m < self.b & m,
            CcOp::Sbb => {
                let bin = self.a.wrapping_sub(self.b).wrapping_sub(self.res) & m;
                if bin != 0 {
                    self.a & m <= self.b & m
                } else {
                    self.a & m < self.b & m
                }
            }
            CcOp::Logic => false,
            CcOp::Inc | CcOp::Dec => self.aux != 0,
            CcOp::Shl => {
                let bits = u64::from(self.sz) * 8;
                if self.b > bits {
                    false
                } else {
                    (u128::from(self.a) << self.b) >> bits & 1 != 0
                }
            }
            CcOp::Shr | CcOp::Sar => {
                let v = if self.op == CcOp::Sar {
                    sext(self.a, self.sz) as u64
                } else {
                    self.a & m
                };
                let c = self.b.wrapping_sub(1);
                if c >= 64 {
                    (v as i64) < 0 && self.op == CcOp::Sar
                } else {
                    (v >> c) & 1 != 0
                }
            }
            CcOp::Mul => self.aux != 0,
        }
    }

    /// Zero flag.
    #[inline]
    pub fn zf(&self) -> bool {
        if self.op == CcOp::Eflags {
            self.aux & ZF != 0
        } else {
            self.res & mask(self.sz) == 0
        }
    }

    /// Sign flag.
    #[inline]
    pub fn sf(&self) -> bool {
        if self.op == CcOp::Eflags {
            self.aux & SF != 0
        } else {
            self.res & sign_bit(self.sz) != 0
        }
    }

    /// Parity flag.
    #[inline]
    pub fn pf(&self) -> bool {
        if self.op == CcOp::Eflags {
            self.aux & PF != 0
        } else {
            parity(self.res)
        }
    }

    /// Auxiliary carry flag.
    #[inline]
    pub fn af(&self) -> bool {
        match self.op {
            CcOp::Eflags => self.aux & AF != 0,
            CcOp::Add | CcOp::Adc | CcOp::Sub | CcOp::Sbb | CcOp::Inc | CcOp::Dec => {
                (self.a ^ self.b ^ self.res) & 0x10 != 0
            }
            _ => false,
        }
    }

    /// Overflow flag.
    #[inline]
    pub fn of(&self) -> bool {
        let s = sign_bit(self.sz);
        match self.op {
            CcOp::Eflags => self.aux & OF != 0,
            CcOp::Add | CcOp::Adc | CcOp::Inc => (self.a ^ self.res) & (self.b ^ self.res) & s != 0,
            CcOp::Sub | CcOp::Sbb | CcOp::Dec => (self.a ^ self.b) & (self.a ^ self.res) & s != 0,
            CcOp::Logic | CcOp::Sar => false,
            CcOp::Shl => ((self.res & s != 0) as u8 ^ self.cf() as u8) != 0,
            CcOp::Shr => self.a & s != 0,
            CcOp::Mul => self.aux != 0,
        }
    }

    /// All six flags as RFLAGS bits.
    pub fn all(&self) -> u64 {
        if self.op == CcOp::Eflags {
            return self.aux;
        }
        let mut f = 0;
        if self.cf() {
            f |= CF;
        }
        if self.pf() {
            f |= PF;
        }
        if self.af() {
            f |= AF;
        }
        if self.zf() {
            f |= ZF;
        }
        if self.sf() {
            f |= SF;
        }
        if self.of() {
            f |= OF;
        }
        f
    }

    /// Evaluates condition code `cc` (the low nibble of Jcc/SETcc/CMOVcc opcodes).
    #[inline(always)]
    pub fn cond(&self, cc: u8) -> bool {
        // Inline fast paths for the common producers (CMP/SUB, and ZF from anything but
        // explicit flags); the rest out of line.
        let inv = cc & 1 != 0;
        if self.op == CcOp::Sub {
            let m = mask(self.sz);
            let (a, b) = (self.a & m, self.b & m);
            let r = match cc >> 1 {
                1 => a < b,
                2 => a == b,
                3 => a <= b,
                6 => sext(a, self.sz) < sext(b, self.sz),
                7 => sext(a, self.sz) <= sext(b, self.sz),
                _ => return self.cond_slow(cc),
            };
            return r ^ inv;
        }
        if cc >> 1 == 2 && self.op != CcOp::Eflags {
            return (self.res & mask(self.sz) == 0) ^ inv;
        }
        self.cond_slow(cc)
    }

    #[inline(never)]
    fn cond_slow(&self, cc: u8) -> bool {
        let r = match cc >> 1 {
            0 => self.of(),
            1 => self.cf(),
            2 => self.zf(),
            3 => self.cf() || self.zf(),
            4 => self.sf(),
            5 => self.pf(),
            6 => {
                if self.op == CcOp::Sub {
                    sext(self.a, self.sz) < sext(self.b, self.sz)
                } else {
                    self.sf() != self.of()
                }
            }
            _ => {
                if self.op == CcOp::Sub {
                    sext(self.a, self.sz) <= sext(self.b, self.sz)
                } else {
                    self.zf() || self.sf() != self.of()
                }
            }
        };
        r ^ (cc & 1 != 0)
    }

    /// Records an operation's flags.
    #[inline]
    pub fn set(&mut self, op: CcOp, sz: u8, a: u64, b: u64, res: u64) {
        if matches!(op, CcOp::Inc | CcOp::Dec) {
            self.aux = u64::from(self.cf());
        }
        self.op = op;
        self.sz = sz;
        self.a = a;
        self.b = b;
        self.res = res;
    }
}

/// Sign-extends the low `sz` bytes of `v` to 64 bits, as i64.
#[inline]
pub fn sext(v: u64, sz: u8) -> i64 {
    match sz {
        1 => v as i8 as i64,
        2 => v as i16 as i64,
        4 => v as i32 as i64,
        _ => v as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(op: CcOp, sz: u8, a: u64, b: u64, res: u64) -> u64 {
        let mut l = Lazy::default();
        l.set(op, sz, a, b, res);
        l.all()
    }

    #[test]
    fn add_flags() {
        // add al, 0x7f + 1 = 0x80: OF, SF, AF
        assert_eq!(flags(CcOp::Add, 1, 0x7f, 1, 0x80), OF | SF | AF);
        // 0xff + 1 = 0: CF ZF PF AF
        assert_eq!(flags(CcOp::Add, 1, 0xff, 1, 0), CF | ZF | PF | AF);
    }

    #[test]
    fn sub_flags_and_conditions() {
        let mut l = Lazy::default();
        l.set(CcOp::Sub, 4, 1, 2, 0xffff_ffff);
        assert!(l.cf() && l.sf() && !l.zf() && !l.of());
        assert!(l.cond(0xc)); // JL
        assert!(l.cond(0x2)); // JB
        assert!(!l.cond(0xf)); // JG
    }

    #[test]
    fn adc_sbb_carry_in() {
        // 0xff + 0xff + 1 = 0x1ff -> res 0xff, CF
        assert_ne!(flags(CcOp::Adc, 1, 0xff, 0xff, 0xff) & CF, 0);
        // 0 - 0 - 1 -> 0xff borrow
        assert_ne!(flags(CcOp::Sbb, 1, 0, 0, 0xff) & CF, 0);
        assert_eq!(flags(CcOp::Sbb, 1, 5, 3, 2) & CF, 0);
    }

    #[test]
    fn inc_keeps_carry() {
        let mut l = Lazy::default();
        l.set_eflags(CF);
        l.set(CcOp::Inc, 1, 0x7f, 1, 0x80);
        assert_eq!(l.all(), CF | OF | SF | AF);
    }

    #[test]
    fn shift_flags() {
        // shl al, 1 with al = 0x80 -> 0, CF=1, OF=1
        assert_eq!(
            flags(CcOp::Shl, 1, 0x80, 1, 0) & (CF | OF | ZF),
            CF | OF | ZF
        );
        // shr al, 1 with al = 0x81 -> 0x40, CF=1, OF=1 (msb of original)
        assert_eq!(flags(CcOp::Shr, 1, 0x81, 1, 0x40) & (CF | OF), CF | OF);
        // sar al, 1 with 0x81 -> 0xc0, CF=1, OF=0
        assert_eq!(flags(CcOp::Sar, 1, 0x81, 1, 0xc0) & (CF | OF | SF), CF | SF);
    }
}
