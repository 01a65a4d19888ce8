//! Stack instructions: PUSH/POP of registers, immediates and memory (IR), of segment registers,
//! PUSHA/POPA, PUSHF/POPF, ENTER/LEAVE (helpers).

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::{Builder, op_size, sreg};
use crate::soft::cpu::{Ctx, R, seg};
use crate::soft::flags::mask;
use crate::state::rflags;

pub(super) fn lower(b: &mut Builder, i: &Instruction) -> bool {
    use Mnemonic::*;
    let sz = (-i.stack_pointer_increment()).clamp(1, 8) as u8;
    match i.mnemonic() {
        Push => {
            if i.op0_kind() == OpKind::Register && i.op0_register().is_segment_register() {
                b.call(push_seg);
            } else {
                let v = b.rd(i, 0, sz);
                b.push(v, sz);
            }
        }
        Pop => {
            let sz = i.stack_pointer_increment().clamp(1, 8) as u8;
            if i.op0_kind() == OpKind::Register && i.op0_register().is_segment_register() {
                if i.op0_register() == iced_x86::Register::CS {
                    return false;
                }
                b.call_then_stop(pop_seg, i.next_ip());
            } else if i.op0_kind() == OpKind::Memory {
                b.call(pop_mem);
            } else {
                let (v, nsp) = b.pop_peek(sz);
                let st = b.stack;
                b.set(4, st, nsp);
                b.wr(i, 0, sz, v);
            }
        }
        Pusha | Pushad => b.call(pusha),
        Popa | Popad => b.call(popa),
        Pushf | Pushfd | Pushfq => b.call(pushf),
        Popf | Popfd | Popfq => b.call_then_stop(popf, i.next_ip()),
        Enter => b.call(enter),
        Leave => b.call(leave),
        _ => return false,
    }
    true
}

fn push_seg(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sz = (-i.stack_pointer_increment()).clamp(2, 8) as u8;
    let v = u64::from(c.c.seg(sreg(i.op0_register())).selector);
    c.push(v, sz)
}

fn pop_seg(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sz = i.stack_pointer_increment().clamp(2, 8) as u8;
    let v = c.peek(0, sz)? as u16;
    let sr = sreg(i.op0_register());
    // The stack pointer moves at the old stack's address size (POP SS may change SS.B).
    let st = c.c.stack_size();
    c.load_seg(sr, v)?;
    let sp = c.c.get(4, st).wrapping_add(u64::from(sz));
    c.c.set(4, st, sp);
    if sr == seg::SS {
        c.c.s.events.mov_ss_shadow = true;
    }
    Ok(())
}

fn pop_mem(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sz = op_size(i, 0);
    let v = c.peek(0, sz)?;
    let st = c.c.stack_size();
    let old = c.c.get(4, st);
    c.sp_add(u64::from(sz));
    if let Err(e) = c.wr(i, 0, v) {
        c.c.set(4, st, old);
        return Err(e);
    }
    Ok(())
}

fn pusha(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sz: u8 = if i.mnemonic() == Mnemonic::Pushad {
        4
    } else {
        2
    };
    let st = c.c.stack_size();
    let sp0 = c.c.get(4, st);
    // The pushed (E)SP is the register at the operand size, whatever the stack's address size:
    // PUSHAD on a 16-bit stack stores all of ESP.
    let pushed_sp = c.c.get(4, sz);
    for (k, r) in [0u8, 1, 2, 3, 4, 5, 6, 7].into_iter().enumerate() {
        let v = if r == 4 { pushed_sp } else { c.c.get(r, sz) };
        let a = sp0.wrapping_sub(u64::from(sz) * (k as u64 + 1)) & mask(st);
        c.write(seg::SS, a, sz, v)?;
    }
    c.c.set(4, st, sp0.wrapping_sub(u64::from(sz) * 8));
    Ok(())
}

fn popa(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sz: u8 = if i.mnemonic() == Mnemonic::Popad {
        4
    } else {
        2
    };
    let mut v = [0u64; 8];
    for (k, x) in v.iter_mut().enumerate() {
        *x = c.peek(u64::from(sz) * k as u64, sz)?;
    }
    for (k, r) in [7u8, 6, 5, 4, 3, 2, 1, 0].into_iter().enumerate() {
        if r != 4 {
            c.c.set(r, sz, v[k]);
        }
    }
    c.sp_add(u64::from(sz) * 8);
    Ok(())
}

fn pushf(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sz = (-i.stack_pointer_increment()).clamp(2, 8) as u8;
    if c.c.s.rflags & rflags::VM != 0 && c.c.s.rflags & rflags::IOPL != rflags::IOPL {
        return Err(crate::soft::cpu::gp(0));
    }
    let f = c.c.rflags() & !(rflags::VM | rflags::RF);
    c.push(f & mask(sz), sz)
}

/// The RFLAGS bits POPF/IRET may change at the current privilege.
pub fn popf_mask(c: &Ctx) -> u64 {
    let mut m = rflags::CF
        | rflags::PF
        | rflags::AF
        | rflags::ZF
        | rflags::SF
        | rflags::TF
        | rflags::DF
        | rflags::OF
        | rflags::NT
        | rflags::AC
        | rflags::ID;
    let cpl = c.c.cpl();
    let iopl = ((c.c.s.rflags & rflags::IOPL) >> 12) as u8;
    if cpl <= iopl {
        m |= rflags::IF;
    }
    if cpl == 0 {
        m |= rflags::IOPL;
    }
    m
}

fn popf(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sz = i.stack_pointer_increment().clamp(2, 8) as u8;
    if c.c.s.rflags & rflags::VM != 0 && c.c.s.rflags & rflags::IOPL != rflags::IOPL {
        return Err(crate::soft::cpu::gp(0));
    }
    let v = c.pop(sz)?;
    let m = popf_mask(c) & mask(sz);
    let f = c.c.rflags();
    c.c.set_rflags((f & !m) | (v & m));
    Ok(())
}

fn enter(c: &mut Ctx, i: &Instruction) -> R<()> {
    let size = i.immediate(0) & 0xffff;
    let level = i.immediate(1) & 31;
    let sz: u8 = match i.code() {
        iced_x86::Code::Enterw_imm16_imm8 => 2,
        iced_x86::Code::Enterd_imm16_imm8 => 4,
        _ => 8,
    };
    let st = c.c.stack_size();
    let (sp0, bp0) = (c.c.get(4, st), c.c.get(5, sz));
    let mut sp = sp0.wrapping_sub(u64::from(sz)) & mask(st);
    c.write(seg::SS, sp, sz, bp0)?;
    let frame = sp;
    let mut bp = c.c.get(5, st);
    for _ in 1..level.max(1) {
        if level == 0 {
            break;
        }
        bp = bp.wrapping_sub(u64::from(sz)) & mask(st);
        let v = c.read(seg::SS, bp, sz)?;
        sp = sp.wrapping_sub(u64::from(sz)) & mask(st);
        c.write(seg::SS, sp, sz, v)?;
    }
    if level > 0 {
        sp = sp.wrapping_sub(u64::from(sz)) & mask(st);
        c.write(seg::SS, sp, sz, frame)?;
    }
    sp = sp.wrapping_sub(size) & mask(st);
    c.c.set(5, sz, frame);
    c.c.set(4, st, sp);
    Ok(())
}

fn leave(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sz: u8 = match i.code() {
        iced_x86::Code::Leavew => 2,
        iced_x86::Code::Leaved => 4,
        _ => 8,
    };
    let st = c.c.stack_size();
    let bp = c.c.get(5, st);
    let v = c.read(seg::SS, bp, sz)?;
    c.c.set(4, st, bp.wrapping_add(u64::from(sz)));
    c.c.set(5, sz, v);
    Ok(())
}
