//! Integer ALU: ADD ADC SUB SBB AND OR XOR CMP TEST INC DEC NEG NOT in IR, and XADD, CMPXCHG,
//! CMPXCHG8B/16B as helpers. Memory destinations are written before the flags are recorded so a
//! faulting store leaves the flags untouched.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::{Builder, op_size};
use crate::soft::cpu::{Ctx, R, gp};
use crate::soft::flags::CcOp;
use crate::soft::ir::{BinOp, Op, UnOp};
use crate::state::rflags;

pub(super) fn lower(b: &mut Builder, i: &Instruction) -> bool {
    use Mnemonic::*;
    let m = i.mnemonic();
    match m {
        Add | Sub | And | Or | Xor | Cmp | Test if fusable(i) => {
            let sz = op_size(i, 0);
            let (op, cc) = match m {
                Add => (BinOp::Add, CcOp::Add),
                Sub | Cmp => (BinOp::Sub, CcOp::Sub),
                And | Test => (BinOp::And, CcOp::Logic),
                Or => (BinOp::Or, CcOp::Logic),
                _ => (BinOp::Xor, CcOp::Logic),
            };
            let write = m != Cmp && m != Test;
            let (r, _) = super::gpr(i.op0_register()).unwrap_or((0, 1));
            if i.op1_kind() == OpKind::Register {
                let (s, _) = super::gpr(i.op1_register()).unwrap_or((0, 1));
                b.op(Op::AluR {
                    op,
                    cc,
                    r,
                    s,
                    sz,
                    write,
                    flags: true,
                });
            } else {
                let imm = i.immediate(1) & crate::soft::flags::mask(sz);
                let imm = crate::soft::flags::sext(imm, sz) as i32;
                b.op(Op::AluI {
                    op,
                    cc,
                    r,
                    sz,
                    write,
                    flags: true,
                    imm,
                });
            }
        }
        Inc | Dec if i.op0_kind() == OpKind::Register => {
            let sz = op_size(i, 0);
            let (r, _) = super::gpr(i.op0_register()).unwrap_or((0, 1));
            let (op, cc) = if m == Inc {
                (BinOp::Add, CcOp::Inc)
            } else {
                (BinOp::Sub, CcOp::Dec)
            };
            b.op(Op::AluI {
                op,
                cc,
                r,
                sz,
                write: true,
                flags: true,
                imm: 1,
            });
        }
        Adc | Sbb
            if b.interp
                && i.op0_kind() == OpKind::Register
                && i.op1_kind() == OpKind::Register
                && super::gpr(i.op0_register()).is_some_and(|(r, _)| r < 16)
                && super::gpr(i.op1_register()).is_some_and(|(r, _)| r < 16) =>
        {
            let (r, sz) = super::gpr(i.op0_register()).unwrap_or((0, 1));
            let (s, _) = super::gpr(i.op1_register()).unwrap_or((0, 1));
            b.op(Op::AdcR {
                r,
                s,
                sz,
                sub: m == Sbb,
                flags: true,
            });
        }
        Add | Adc | Sub | Sbb | And | Or | Xor | Cmp | Test => {
            let sz = op_size(i, 0);
            let x = b.rd(i, 0, sz);
            let y = b.rd(i, 1, sz);
            let (op, cc) = match m {
                Add | Adc => (BinOp::Add, if m == Add { CcOp::Add } else { CcOp::Adc }),
                Sub | Sbb | Cmp => (
                    BinOp::Sub,
                    match m {
                        Sbb => CcOp::Sbb,
                        _ => CcOp::Sub,
                    },
                ),
                And | Test => (BinOp::And, CcOp::Logic),
                Or => (BinOp::Or, CcOp::Logic),
                _ => (BinOp::Xor, CcOp::Logic),
            };
            let mut r = b.bin(op, x, y, sz);
            if m == Adc || m == Sbb {
                let c = b.t();
                b.op(Op::Carry { d: c });
                r = b.bin(op, r, c, sz);
            }
            if m != Cmp && m != Test {
                b.wr(i, 0, sz, r);
            }
            if cc == CcOp::Logic {
                b.flags(cc, sz, r, r, r);
            } else {
                b.flags(cc, sz, x, y, r);
            }
        }
        Inc | Dec => {
            let sz = op_size(i, 0);
            let x = b.rd(i, 0, sz);
            let one = b.k(1);
            let (op, cc) = if m == Inc {
                (BinOp::Add, CcOp::Inc)
            } else {
                (BinOp::Sub, CcOp::Dec)
            };
            let r = b.bin(op, x, one, sz);
            b.wr(i, 0, sz, r);
            b.flags(cc, sz, x, one, r);
        }
        Neg => {
            let sz = op_size(i, 0);
            let x = b.rd(i, 0, sz);
            let r = b.un(UnOp::Neg, x, sz);
            b.wr(i, 0, sz, r);
            let z = b.k(0);
            b.flags(CcOp::Sub, sz, z, x, r);
        }
        Not => {
            let sz = op_size(i, 0);
            let x = b.rd(i, 0, sz);
            let r = b.un(UnOp::Not, x, sz);
            b.wr(i, 0, sz, r);
        }
        Xadd => b.call(xadd),
        Cmpxchg => b.call(cmpxchg),
        Cmpxchg8b | Cmpxchg16b => b.call(cmpxchg_wide),
        _ => return false,
    }
    true
}

/// A register destination and a register or small immediate source: one fused op.
fn fusable(i: &Instruction) -> bool {
    if i.op0_kind() != OpKind::Register || super::gpr(i.op0_register()).is_none() {
        return false;
    }
    match i.op1_kind() {
        OpKind::Register => super::gpr(i.op1_register()).is_some(),
        OpKind::Memory => false,
        _ => {
            let sz = op_size(i, 0);
            let v = crate::soft::flags::sext(i.immediate(1) & crate::soft::flags::mask(sz), sz);
            i32::try_from(v).is_ok()
        }
    }
}

fn xadd(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sz = op_size(i, 0);
    let d = c.rd(i, 0)?;
    let s = c.rd(i, 1)?;
    let r = d.wrapping_add(s);
    if i.op0_kind() == OpKind::Memory {
        // The store may fault: it goes first, so the register is untouched if it does.
        c.wr(i, 0, r)?;
        c.wr(i, 1, d)?;
    } else {
        // SRC := DEST, then DEST := sum: with one register for both, the sum wins.
        c.wr(i, 1, d)?;
        c.wr(i, 0, r)?;
    }
    c.c.lazy
        .set(CcOp::Add, sz, d, s, r & crate::soft::flags::mask(sz));
    Ok(())
}

fn cmpxchg(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sz = op_size(i, 0);
    let acc = c.c.get(0, sz);
    let d = c.rd(i, 0)?;
    let r = acc.wrapping_sub(d) & crate::soft::flags::mask(sz);
    if acc == d {
        let s = c.rd(i, 1)?;
        c.wr(i, 0, s)?;
    } else {
        if i.op0_kind() == OpKind::Memory {
            c.wr(i, 0, d)?;
        }
        c.c.set(0, sz, d);
    }
    c.c.lazy.set(CcOp::Sub, sz, acc, d, r);
    Ok(())
}

pub(super) fn cmpxchg_wide(c: &mut Ctx, i: &Instruction) -> R<()> {
    let (sg, a) = c.ea(i);
    let f = c.c.rflags() & !rflags::ZF;
    if i.mnemonic() == Mnemonic::Cmpxchg8b {
        let m = c.read(sg, a, 8)?;
        let cur = c.c.get(0, 4) | c.c.get(2, 4) << 32;
        if m == cur {
            let n = c.c.get(3, 4) | c.c.get(1, 4) << 32;
            c.write(sg, a, 8, n)?;
            c.c.set_rflags(f | rflags::ZF);
        } else {
            c.write(sg, a, 8, m)?;
            c.c.set(0, 4, m & 0xffff_ffff);
            c.c.set(2, 4, m >> 32);
            c.c.set_rflags(f);
        }
    } else {
        if a & 15 != 0 {
            return Err(gp(0));
        }
        let lo = c.read(sg, a, 8)?;
        let hi = c.read(sg, a.wrapping_add(8), 8)?;
        if lo == c.c.get(0, 8) && hi == c.c.get(2, 8) {
            let (nl, nh) = (c.c.get(3, 8), c.c.get(1, 8));
            c.write(sg, a, 8, nl)?;
            c.write(sg, a.wrapping_add(8), 8, nh)?;
            c.c.set_rflags(f | rflags::ZF);
        } else {
            c.write(sg, a, 8, lo)?;
            c.write(sg, a.wrapping_add(8), 8, hi)?;
            c.c.set(0, 8, lo);
            c.c.set(2, 8, hi);
            c.c.set_rflags(f);
        }
    }
    Ok(())
}
