//! Data movement: MOV (incl. segment registers), MOVZX/MOVSX/MOVSXD, LEA, XCHG, CMOVcc, SETcc,
//! XLAT, CBW..CQO, BSWAP, LAHF/SAHF, LDS/LES/LFS/LGS/LSS, NOP forms.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::{Builder, op_size, sreg};
use crate::soft::cpu::{Ctx, R, UD, seg};
use crate::soft::flags::{mask, sext};
use crate::soft::ir::{Op, UnOp};
use crate::state::rflags;

/// The condition nibble of a Jcc/SETcc/CMOVcc.
pub fn cc(i: &Instruction) -> u8 {
    (i.condition_code() as u8).wrapping_sub(1) & 0xf
}

pub(super) fn lower(b: &mut Builder, i: &Instruction) -> bool {
    use Mnemonic::*;
    match i.mnemonic() {
        Mov => {
            let r0 = i.op0_kind() == OpKind::Register;
            let r1 = i.op1_kind() == OpKind::Register;
            if r0 && i.op0_register().is_segment_register() {
                if i.op0_register() == iced_x86::Register::CS {
                    b.call_end(|_, _| Err(UD));
                } else {
                    b.call_then_stop(mov_to_seg, i.next_ip());
                }
            } else if r1 && i.op1_register().is_segment_register() {
                b.call(mov_from_seg);
            } else if (r0 && (i.op0_register().is_cr() || i.op0_register().is_dr()))
                || (r1 && (i.op1_register().is_cr() || i.op1_register().is_dr()))
            {
                return false; // system.rs
            } else {
                let sz = op_size(i, 0);
                let v = b.rd(i, 1, sz);
                b.wr(i, 0, sz, v);
            }
        }
        Movzx => {
            let v = b.rd(i, 1, op_size(i, 1));
            b.wr(i, 0, op_size(i, 0), v);
        }
        Movsx | Movsxd => {
            let s = op_size(i, 1);
            let v = b.rd(i, 1, s);
            let v = b.un(UnOp::Sext, v, s);
            b.wr(i, 0, op_size(i, 0), v);
        }
        Lea => {
            let (_, a) = b.ea(i);
            b.wr(i, 0, op_size(i, 0), a);
        }
        Xchg => {
            let sz = op_size(i, 0);
            let x = b.rd(i, 0, sz);
            let y = b.rd(i, 1, sz);
            if i.op1_kind() == OpKind::Memory {
                b.wr(i, 1, sz, x);
                b.wr(i, 0, sz, y);
            } else {
                b.wr(i, 0, sz, y);
                b.wr(i, 1, sz, x);
            }
        }
        Nop | Reservednop | Pause | Endbr32 | Endbr64 | Prefetch | Prefetchw | Prefetchnta
        | Prefetcht0 | Prefetcht1 | Prefetcht2 | Lfence | Mfence | Sfence => {}
        Cmovo | Cmovno | Cmovb | Cmovae | Cmove | Cmovne | Cmovbe | Cmova | Cmovs | Cmovns
        | Cmovp | Cmovnp | Cmovl | Cmovge | Cmovle | Cmovg => {
            let sz = op_size(i, 0);
            let src = b.rd(i, 1, sz);
            let old = b.rd(i, 0, sz);
            let c = b.t();
            b.op(Op::Cond { d: c, cc: cc(i) });
            let d = b.t();
            b.op(Op::Select {
                d,
                c,
                a: src,
                b: old,
            });
            b.wr(i, 0, sz, d);
        }
        Seto | Setno | Setb | Setae | Sete | Setne | Setbe | Seta | Sets | Setns | Setp | Setnp
        | Setl | Setge | Setle | Setg => {
            let c = b.t();
            b.op(Op::Cond { d: c, cc: cc(i) });
            b.wr(i, 0, 1, c);
        }
        Xlatb => b.call(xlat),
        Cbw | Cwde | Cdqe | Cwd | Cdq | Cqo => b.call(convert),
        Bswap => b.call(bswap),
        Lahf => b.call(lahf),
        Sahf => b.call(sahf),
        Lds | Les | Lfs | Lgs | Lss => b.call_then_stop(load_far_ptr, i.next_ip()),
        _ => return false,
    }
    true
}

fn mov_to_seg(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sel = c.rd_sz(i, 1, 2)? as u16;
    let sr = sreg(i.op0_register());
    c.load_seg(sr, sel)?;
    if sr == seg::SS {
        c.c.s.events.mov_ss_shadow = true;
    }
    Ok(())
}

fn mov_from_seg(c: &mut Ctx, i: &Instruction) -> R<()> {
    let v = u64::from(c.c.seg(sreg(i.op1_register())).selector);
    if i.op0_kind() == OpKind::Memory {
        c.wr_sz(i, 0, 2, v)
    } else {
        c.wr(i, 0, v)
    }
}

fn xlat(c: &mut Ctx, i: &Instruction) -> R<()> {
    let asz = super::addr_size(i);
    let off = c.c.get(3, asz).wrapping_add(c.c.get(0, 1)) & mask(asz);
    let v = c.read(sreg(i.memory_segment()), off, 1)?;
    c.c.set(0, 1, v);
    Ok(())
}

fn convert(c: &mut Ctx, i: &Instruction) -> R<()> {
    use Mnemonic::*;
    match i.mnemonic() {
        Cbw => c.c.set(0, 2, sext(c.c.get(0, 1), 1) as u64),
        Cwde => c.c.set(0, 4, sext(c.c.get(0, 2), 2) as u64),
        Cdqe => c.c.set(0, 8, sext(c.c.get(0, 4), 4) as u64),
        Cwd => c.c.set(2, 2, (sext(c.c.get(0, 2), 2) >> 16) as u64),
        Cdq => c.c.set(2, 4, (sext(c.c.get(0, 4), 4) >> 32) as u64),
        _ => c.c.set(2, 8, (c.c.get(0, 8) as i64 >> 63) as u64),
    }
    Ok(())
}

fn bswap(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sz = op_size(i, 0);
    let v = c.rd(i, 0)?;
    let r = match sz {
        8 => v.swap_bytes(),
        4 => u64::from((v as u32).swap_bytes()),
        _ => 0, // BSWAP of a 16-bit register is undefined; real CPUs give 0.
    };
    c.wr(i, 0, r)
}

fn lahf(c: &mut Ctx, _: &Instruction) -> R<()> {
    let f = c.c.rflags() & 0xff;
    c.c.set(16, 1, f);
    Ok(())
}

fn sahf(c: &mut Ctx, _: &Instruction) -> R<()> {
    let ah = c.c.get(16, 1);
    let f = c.c.rflags();
    let m = rflags::CF | rflags::PF | rflags::AF | rflags::ZF | rflags::SF;
    c.c.set_rflags((f & !m) | (ah & m));
    Ok(())
}

fn load_far_ptr(c: &mut Ctx, i: &Instruction) -> R<()> {
    if i.op1_kind() != OpKind::Memory {
        return Err(UD);
    }
    let sz = op_size(i, 0);
    let (s, a) = c.ea(i);
    let off = c.read(s, a, sz)?;
    let amask = mask(super::addr_size(i));
    let sel = c.read(s, a.wrapping_add(u64::from(sz)) & amask, 2)? as u16;
    let sr = match i.mnemonic() {
        Mnemonic::Lds => seg::DS,
        Mnemonic::Les => seg::ES,
        Mnemonic::Lfs => seg::FS,
        Mnemonic::Lgs => seg::GS,
        _ => seg::SS,
    };
    c.load_seg(sr, sel)?;
    c.wr(i, 0, off)
}
