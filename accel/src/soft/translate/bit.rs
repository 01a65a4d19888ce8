//! Bit instructions: BT BTS BTR BTC (register and memory bit strings), BSF BSR, LZCNT, POPCNT,
//! and TZCNT (which runs as BSF: BMI1 is not advertised, as on a CPU without it).

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::{Builder, op_size};
use crate::soft::cpu::{Ctx, R};
use crate::soft::flags::{mask, sext};
use crate::state::rflags::{AF, CF, OF, PF, SF, ZF};

pub(super) fn lower(b: &mut Builder, i: &Instruction) -> bool {
    use Mnemonic::*;
    match i.mnemonic() {
        Bt | Bts | Btr | Btc => b.call(bt),
        Bsf | Bsr | Tzcnt => b.call(bsf_bsr),
        Lzcnt | Popcnt => b.call(count),
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
        c.c.set_rflags(f | ZF);
        return Ok(());
    }
    let r = if i.mnemonic() == Mnemonic::Bsr {
        63 - u64::from(v.leading_zeros())
    } else {
        u64::from(v.trailing_zeros())
    };
    c.wr(i, 0, r)?;
    c.c.set_rflags(f);
    Ok(())
}

fn count(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sz = op_size(i, 0);
    let bits = u32::from(sz) * 8;
    let v = c.rd(i, 1)? & mask(sz);
    let f = c.c.rflags() & !(ZF | CF | OF | SF | AF | PF);
    let (r, nf) = if i.mnemonic() == Mnemonic::Popcnt {
        (u64::from(v.count_ones()), if v == 0 { ZF } else { 0 })
    } else {
        let r = u64::from(v.leading_zeros() - (64 - bits));
        (r, if v == 0 { CF } else { 0 } | if r == 0 { ZF } else { 0 })
    };
    c.wr(i, 0, r)?;
    c.c.set_rflags(f | nf);
    Ok(())
}
