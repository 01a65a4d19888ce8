//! MUL, IMUL (one, two and three operands), DIV and IDIV with #DE on a zero divisor or a
//! quotient that does not fit. After MUL/IMUL CF = OF = "the high half is significant"; the
//! undefined flags get the values an Intel CPU gives; DIV and IDIV leave every flag alone, as
//! Intel CPUs do.

use iced_x86::{Instruction, Mnemonic};

use super::{Builder, op_size};
use crate::soft::cpu::{Ctx, Fault, R, vec};
use crate::soft::flags::{mask, parity, sext, sign_bit};
use crate::state::rflags::{AF, CF, OF, PF, SF, ZF};

const DE: Fault = Fault::Exc {
    vector: vec::DE,
    code: None,
};

pub(super) fn lower(b: &mut Builder, i: &Instruction) -> bool {
    match i.mnemonic() {
        Mnemonic::Mul | Mnemonic::Imul => b.call(mul),
        Mnemonic::Div | Mnemonic::Idiv => b.call(div),
        _ => return false,
    }
    true
}

fn mul(c: &mut Ctx, i: &Instruction) -> R<()> {
    let signed = i.mnemonic() == Mnemonic::Imul;
    let n = i.op_count();
    let sz = op_size(i, if n == 1 { 0 } else { 1 }).min(op_size(i, 0));
    let bits = u32::from(sz) * 8;
    let m = mask(sz);
    let (a, b) = if n == 1 {
        (c.c.get(0, sz), c.rd(i, 0)?)
    } else if n == 2 {
        (c.rd(i, 0)?, c.rd(i, 1)?)
    } else {
        (c.rd(i, 1)?, c.rd_sz(i, 2, sz)?)
    };
    let (lo, hi, ovf) = if signed {
        let p = i128::from(sext(a, sz)) * i128::from(sext(b, sz));
        let lo = p as u64 & m;
        let hi = (p >> bits) as u64 & m;
        (lo, hi, i128::from(sext(lo, sz)) != p)
    } else {
        let p = u128::from(a & m) * u128::from(b & m);
        let lo = p as u64 & m;
        let hi = (p >> bits) as u64 & m;
        (lo, hi, hi != 0)
    };
    if n == 1 {
        if sz == 1 {
            c.c.set(0, 2, lo | hi << 8);
        } else {
            c.c.set(0, sz, lo);
            c.c.set(2, sz, hi);
        }
    } else {
        c.wr_sz(i, 0, sz, lo)?;
    }
    // CF = OF = "the high half is significant". SF ZF AF PF are undefined: Intel CPUs give SF
    // and PF from the low half, and clear ZF (even for a zero product) and AF.
    let mut f = c.c.rflags() & !(CF | PF | AF | ZF | SF | OF);
    if ovf {
        f |= CF | OF;
    }
    if lo & sign_bit(sz) != 0 {
        f |= SF;
    }
    if parity(lo) {
        f |= PF;
    }
    c.c.set_rflags(f);
    Ok(())
}

fn div(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sz = op_size(i, 0);
    let bits = u32::from(sz) * 8;
    let m = mask(sz);
    let d = c.rd(i, 0)? & m;
    if d == 0 {
        return Err(DE);
    }
    let (hi, lo) = if sz == 1 {
        (c.c.get(16, 1), c.c.get(0, 1))
    } else {
        (c.c.get(2, sz), c.c.get(0, sz))
    };
    let (q, r) = if i.mnemonic() == Mnemonic::Div {
        let n = (u128::from(hi) << bits) | u128::from(lo);
        let q = n / u128::from(d);
        if q > u128::from(m) {
            return Err(DE);
        }
        (q as u64, (n % u128::from(d)) as u64)
    } else {
        let n = (((u128::from(hi) << bits) | u128::from(lo)) << (128 - 2 * bits)) as i128
            >> (128 - 2 * bits);
        let dv = i128::from(sext(d, sz));
        let q = n.checked_div(dv).ok_or(DE)?;
        let lim = 1i128 << (bits - 1);
        if q >= lim || q < -lim {
            return Err(DE);
        }
        (q as u64 & m, (n % dv) as u64 & m)
    };
    if sz == 1 {
        c.c.set(0, 2, q | r << 8);
    } else {
        c.c.set(0, sz, q);
        c.c.set(2, sz, r);
    }
    Ok(())
}
