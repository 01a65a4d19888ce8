//! Bit instructions: BT BTS BTR BTC (register and memory bit strings), BSF BSR, LZCNT, TZCNT,
//! POPCNT, and the rest of BMI1 (ANDN BEXTR BLSI BLSMSK BLSR, VEX-encoded). Flags the
//! architecture leaves undefined are given the values an Intel CPU gives them.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::{Builder, op_size};
use crate::soft::cpu::{Ctx, R};
use crate::soft::flags::{mask, parity, sext, sign_bit};
use crate::state::rflags::{AF, CF, OF, PF, SF, ZF};

pub(super) fn lower(b: &mut Builder, i: &Instruction) -> bool {
    use Mnemonic::*;
    match i.mnemonic() {
        Bt | Bts | Btr | Btc => b.call(bt),
        Bsf | Bsr => b.call(bsf_bsr),
        Lzcnt | Tzcnt | Popcnt => b.call(count),
        Andn | Bextr | Blsi | Blsmsk | Blsr => b.call(bmi1),
        _ => return false,
    }
    true
}

fn bt(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sz = op_size(i, 0);
    let bits = u64::from(sz) * 8;
    let off = c.rd_sz(i, 1, sz)?;
    let (v, bit, addr) = if i.op0_kind() == OpKind::Memory {
        let (s, a) = c.ea(i);
        let (a, bit) = if i.op1_kind() == OpKind::Register {
            let o = sext(off, sz);
            let am = mask(super::addr_size(i));
            let words = o.div_euclid(bits as i64);
            (
                a.wrapping_add((words * i64::from(sz)) as u64) & am,
                o.rem_euclid(bits as i64) as u64,
            )
        } else {
            (a, off % bits)
        };
        (c.read(s, a, sz)?, bit, Some((s, a)))
    } else {
        (c.rd(i, 0)?, off % bits, None)
    };
    let cf = v >> bit & 1 != 0;
    let nv = match i.mnemonic() {
        Mnemonic::Bts => v | 1 << bit,
        Mnemonic::Btr => v & !(1 << bit),
        Mnemonic::Btc => v ^ (1 << bit),
        _ => v,
    };
    if i.mnemonic() != Mnemonic::Bt {
        match addr {
            Some((s, a)) => c.write(s, a, sz, nv)?,
            None => c.wr(i, 0, nv)?,
        }
    }
    let f = c.c.rflags() & !CF;
    c.c.set_rflags(f | if cf { CF } else { 0 });
    Ok(())
}

fn bsf_bsr(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sz = op_size(i, 0);
    let v = c.rd(i, 1)? & mask(sz);
    let f = c.c.rflags() & !(ZF | CF | OF | SF | AF | PF);
    if v == 0 {
        // The destination is not written, not even zero-extended (Intel and AMD alike).
        c.c.set_rflags(f | ZF | PF);
        return Ok(());
    }
    let r = if i.mnemonic() == Mnemonic::Bsr {
        63 - u64::from(v.leading_zeros())
    } else {
        u64::from(v.trailing_zeros())
    };
    c.wr(i, 0, r)?;
    c.c.set_rflags(f | if parity(r) { PF } else { 0 });
    Ok(())
}

/// LZCNT, TZCNT, POPCNT: the count is written (a zero source gives the operand width for
/// LZCNT and TZCNT, with CF set); the other flags are cleared.
fn count(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sz = op_size(i, 0);
    let bits = u32::from(sz) * 8;
    let v = c.rd(i, 1)? & mask(sz);
    let f = c.c.rflags() & !(ZF | CF | OF | SF | AF | PF);
    let (r, nf) = match i.mnemonic() {
        Mnemonic::Popcnt => (u64::from(v.count_ones()), if v == 0 { ZF } else { 0 }),
        m => {
            let r = if v == 0 {
                u64::from(bits)
            } else if m == Mnemonic::Lzcnt {
                u64::from(v.leading_zeros() - (64 - bits))
            } else {
                u64::from(v.trailing_zeros())
            };
            (r, if v == 0 { CF } else { 0 } | if r == 0 { ZF } else { 0 })
        }
    };
    c.wr(i, 0, r)?;
    c.c.set_rflags(f | nf);
    Ok(())
}

/// ANDN, BEXTR, BLSI, BLSMSK, BLSR (32 or 64 bits): ZF and SF from the result (BLSMSK clears
/// ZF, BEXTR leaves SF clear), CF as each defines it, OF cleared, AF and PF cleared.
fn bmi1(c: &mut Ctx, i: &Instruction) -> R<()> {
    if !c.c.pe() || c.c.s.rflags & crate::state::rflags::VM != 0 {
        return Err(crate::soft::cpu::UD);
    }
    let sz = op_size(i, 0);
    let m = mask(sz);
    let bits = u64::from(sz) * 8;
    let (r, cf) = match i.mnemonic() {
        Mnemonic::Andn => {
            let a = c.rd(i, 1)? & m;
            let b = c.rd(i, 2)? & m;
            (!a & b & m, false)
        }
        Mnemonic::Bextr => {
            let src = c.rd(i, 1)? & m;
            let ctl = c.rd(i, 2)?;
            let start = ctl & 0xff;
            let len = (ctl >> 8) & 0xff;
            let v = if start >= bits { 0 } else { src >> start };
            let v = if len >= 64 {
                v
            } else {
                v & ((1u64 << len) - 1)
            };
            (v & m, false)
        }
        mn => {
            let src = c.rd(i, 1)? & m;
            let r = match mn {
                Mnemonic::Blsi => src.wrapping_neg() & src,
                Mnemonic::Blsmsk => src.wrapping_sub(1) ^ src,
                _ => src.wrapping_sub(1) & src,
            } & m;
            let cf = if mn == Mnemonic::Blsi {
                src != 0
            } else {
                src == 0
            };
            (r, cf)
        }
    };
    c.wr(i, 0, r)?;
    let mut f = c.c.rflags() & !(ZF | CF | OF | SF | AF | PF);
    if r == 0 && i.mnemonic() != Mnemonic::Blsmsk {
        f |= ZF;
    }
    if r & sign_bit(sz) != 0 && i.mnemonic() != Mnemonic::Bextr {
        f |= SF;
    }
    if cf {
        f |= CF;
    }
    c.c.set_rflags(f);
    Ok(())
}
