//! Shifts and rotates: SHL/SHR/SAR by an immediate in IR with lazy flags; by CL, and ROL ROR
//! RCL RCR SHLD SHRD, as helpers that compute CF and OF exactly.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::{Builder, op_size};
use crate::soft::cpu::{Ctx, R};
use crate::soft::flags::{CcOp, mask, parity, sign_bit};
use crate::soft::ir::{BinOp, Op};
use crate::state::rflags::{AF, CF, OF, PF, SF, ZF};

pub(super) fn lower(b: &mut Builder, i: &Instruction) -> bool {
    use Mnemonic::*;
    let m = i.mnemonic();
    match m {
        Shl | Sal | Shr | Sar => {
            let sz = op_size(i, 0);
            if i.op1_kind() == OpKind::Register {
                b.call(shift);
                return true;
            }
            let cnt = i.immediate(1) & if sz == 8 { 63 } else { 31 };
            if cnt == 0 {
                // Writes the operand back unchanged and leaves the flags alone: hardware does
                // the write (a 32-bit register is zero-extended, a read-only page faults).
                let x = b.rd(i, 0, sz);
                b.wr(i, 0, sz, x);
                return true;
            }
            let x = b.rd(i, 0, sz);
            let k = b.k(cnt);
            let (op, cc) = match m {
                Shr => (BinOp::Shr, CcOp::Shr),
                Sar => (BinOp::Sar, CcOp::Sar),
                _ => (BinOp::Shl, CcOp::Shl),
            };
            let r = b.bin(op, x, k, sz);
            b.wr(i, 0, sz, r);
            b.flags(cc, sz, x, k, r);
        }
        Rol | Ror
            if i.op1_kind() == OpKind::Immediate8
                && i.op0_kind() == OpKind::Register
                && super::gpr(i.op0_register()).is_some_and(|(r, _)| r < 16) =>
        {
            // Hot in integer loops: an IR op, so that the interpreter need not materialise the
            // old flags when the liveness pass finds them dead, and the JIT compiles it inline.
            let sz = op_size(i, 0);
            let (r, _) = super::gpr(i.op0_register()).unwrap_or((0, 1));
            let cnt = i.immediate8() & if sz == 8 { 63 } else { 31 };
            if cnt == 0 {
                // Written back unchanged, flags kept (as the immediate shifts).
                let x = b.rd(i, 0, sz);
                b.wr(i, 0, sz, x);
            } else {
                b.op(Op::Rot {
                    left: m == Rol,
                    r,
                    sz,
                    cnt,
                    keep: true,
                });
            }
        }
        Rol | Ror | Rcl | Rcr => b.call(shift),
        Shld | Shrd => b.call(double_shift),
        _ => return false,
    }
    true
}

fn szp(f: u64, r: u64, sz: u8) -> u64 {
    let mut f = f & !(SF | ZF | PF);
    if r & mask(sz) == 0 {
        f |= ZF;
    }
    if r & sign_bit(sz) != 0 {
        f |= SF;
    }
    if parity(r) {
        f |= PF;
    }
    f
}

fn set_co(f: u64, cf: bool, of: bool) -> u64 {
    (f & !(CF | OF)) | if cf { CF } else { 0 } | if of { OF } else { 0 }
}

/// ROL/ROR of `v` by `cnt` (already masked to 5 or 6 bits): the result and the arithmetic
/// flags `f` with CF and OF updated.
#[inline]
pub(crate) fn rotate(left: bool, v: u64, cnt: u32, sz: u8, f: u64) -> (u64, u64) {
    let bits = u32::from(sz) * 8;
    let m = mask(sz);
    let msb = |x: u64| x & sign_bit(sz) != 0;
    let n = cnt % bits;
    if left {
        let r = if n == 0 {
            v & m
        } else {
            ((v << n) | (v & m) >> (bits - n)) & m
        };
        let cf = r & 1 != 0;
        (r, set_co(f, cf, msb(r) ^ cf))
    } else {
        let r = if n == 0 {
            v & m
        } else {
            (((v & m) >> n) | (v << (bits - n))) & m
        };
        (
            r,
            set_co(f, msb(r), msb(r) ^ (r & (sign_bit(sz) >> 1) != 0)),
        )
    }
}

fn shift(c: &mut Ctx, i: &Instruction) -> R<()> {
    // Fast path, hot in integer loops: ROL/ROR of a general register by an immediate.
    let m = i.mnemonic();
    if (m == Mnemonic::Rol || m == Mnemonic::Ror)
        && i.op0_kind() == OpKind::Register
        && i.op1_kind() == OpKind::Immediate8
        && let Some((r, sz)) = super::gpr(i.op0_register())
    {
        let cnt = u32::from(i.immediate8()) & if sz == 8 { 63 } else { 31 };
        let v = c.c.get(r, sz);
        if cnt == 0 {
            c.c.set(r, sz, v);
            return Ok(());
        }
        let (res, f) = rotate(m == Mnemonic::Rol, v, cnt, sz, c.c.lazy.all());
        c.c.set(r, sz, res);
        c.c.lazy.set_eflags(f);
        return Ok(());
    }
    let sz = op_size(i, 0);
    let bits = u32::from(sz) * 8;
    let m = mask(sz);
    let v = c.rd(i, 0)?;
    let cnt = (c.rd_sz(i, 1, 1)? & if sz == 8 { 63 } else { 31 }) as u32;
    if cnt == 0 {
        // The operand is written back unchanged (see the immediate form); flags are kept.
        return c.wr(i, 0, v);
    }
    let rotate_through_carry = matches!(i.mnemonic(), Mnemonic::Rcl | Mnemonic::Rcr);
    if rotate_through_carry && cnt % (bits + 1) == 0 {
        // A full turn through CF (8 and 16 bits): the value comes back and no flag changes.
        return c.wr(i, 0, v);
    }
    let f = c.c.rflags();
    let msb = |x: u64| x & sign_bit(sz) != 0;
    let (r, flags) = match i.mnemonic() {
        Mnemonic::Shl | Mnemonic::Sal | Mnemonic::Shr | Mnemonic::Sar => {
            let (r, cc) = match i.mnemonic() {
                Mnemonic::Shr => ((v & m) >> cnt, CcOp::Shr),
                Mnemonic::Sar => (
                    (crate::soft::flags::sext(v, sz) >> cnt) as u64 & m,
                    CcOp::Sar,
                ),
                _ => ((v << cnt) & m, CcOp::Shl),
            };
            c.wr(i, 0, r)?;
            c.c.lazy.set(cc, sz, v, u64::from(cnt), r);
            return Ok(());
        }
        Mnemonic::Rol | Mnemonic::Ror => rotate(i.mnemonic() == Mnemonic::Rol, v, cnt, sz, f),
        Mnemonic::Rcl => {
            let n = cnt % (bits + 1);
            let mut r = v & m;
            let mut cf = f & CF != 0;
            for _ in 0..n {
                let out = msb(r);
                r = ((r << 1) | u64::from(cf)) & m;
                cf = out;
            }
            (r, set_co(f, cf, msb(r) ^ cf))
        }
        _ => {
            let n = cnt % (bits + 1);
            let mut r = v & m;
            let mut cf = f & CF != 0;
            let of = msb(r) ^ cf;
            for _ in 0..n {
                let out = r & 1 != 0;
                r = (r >> 1) | if cf { sign_bit(sz) } else { 0 };
                cf = out;
            }
            (r, set_co(f, cf, of))
        }
    };
    c.wr(i, 0, r)?;
    c.c.set_rflags(flags);
    Ok(())
}

fn double_shift(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sz = op_size(i, 0);
    let bits = u32::from(sz) * 8;
    let m = mask(sz);
    let d = c.rd(i, 0)? & m;
    let s = c.rd(i, 1)? & m;
    let cnt = (c.rd_sz(i, 2, 1)? & if sz == 8 { 63 } else { 31 }) as u32;
    if cnt == 0 {
        return c.wr(i, 0, d);
    }
    let shld = i.mnemonic() == Mnemonic::Shld;
    let (r, cf) = if bits == 64 {
        // cnt is 1..=63 here.
        if shld {
            let cat = u128::from(d) << 64 | u128::from(s);
            (((cat << cnt) >> 64) as u64, (cat >> (128 - cnt)) & 1 != 0)
        } else {
            let cat = u128::from(s) << 64 | u128::from(d);
            ((cat >> cnt) as u64, (cat >> (cnt - 1)) & 1 != 0)
        }
    } else {
        // 16 and 32 bits: the count (up to 31) shifts the 3-operand concatenation
        // dest:src:dest. For 16-bit counts above 16 the architecture leaves the result
        // undefined; this is what Intel CPUs do (checked on the host for every count).
        let cat = (u128::from(d) << (2 * bits)) | (u128::from(s) << bits) | u128::from(d);
        if shld {
            let r = ((cat << cnt) >> (2 * bits)) as u64 & m;
            (r, (cat >> (3 * bits - cnt)) & 1 != 0)
        } else {
            ((cat >> cnt) as u64 & m, (cat >> (cnt - 1)) & 1 != 0)
        }
    };
    c.wr(i, 0, r)?;
    let of = (r ^ d) & sign_bit(sz) != 0;
    let f = szp(set_co(c.c.rflags(), cf, of), r, sz) & !AF;
    c.c.set_rflags(f);
    Ok(())
}
