//! System instructions: flag control (CLI STI CLD STD CLC STC CMC), HLT, descriptor-table
//! registers (LGDT LIDT SGDT SIDT LLDT LTR SLDT STR), control and debug registers, LMSW SMSW
//! CLTS, INVLPG, LAR LSL VERR VERW ARPL, UD0/UD1/UD2, cache-control no-ops (MSRs, CPUID and
//! fast system calls are in msr.rs).

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::{Builder, op_size};
use crate::soft::cpu::{Ctx, Fault, R, UD, gp};
use crate::soft::debug;
use crate::soft::flags::mask;
use crate::soft::seg::from_desc;
use crate::state::{bits, rflags};

pub(super) fn lower(b: &mut Builder, i: &Instruction) -> bool {
    use Mnemonic::*;
    let next = i.next_ip();
    match i.mnemonic() {
        Cli | Sti => b.call_then_stop(cli_sti, next),
        Cld | Std | Clc | Stc | Cmc | Clac | Stac => b.call(flag_op),
        Hlt => b.call_end(hlt),
        Cpuid => b.call(super::msr::cpuid),
        Lgdt | Lidt | Lldt | Ltr => b.call_then_stop(load_table, next),
        Sgdt | Sidt | Sldt | Str => b.call(store_table),
        Mov => b.call_then_stop(mov_cr_dr, next),
        Lmsw | Clts => b.call_then_stop(cr0_misc, next),
        Smsw => b.call(smsw),
        Rdmsr => b.call(super::msr::rdmsr),
        Wrmsr => b.call_then_stop(super::msr::wrmsr, next),
        Rdtsc | Rdtscp => b.call(super::msr::rdtsc),
        Rdpmc => b.call(super::msr::rdpmc),
        Rdpkru => b.call(super::msr::rdpkru),
        Wrpkru => b.call_then_stop(super::msr::wrpkru, next),
        Swapgs => b.call(super::msr::swapgs),
        Syscall | Sysret | Sysretq | Sysenter | Sysexit | Sysexitq => {
            b.call_end(super::msr::fast_syscall)
        }
        Invlpg => b.call_then_stop(invlpg, next),
        Invpcid => b.call_then_stop(invpcid, next),
        Lar | Lsl | Verr | Verw => b.call(lar_lsl),
        Arpl => b.call(arpl),
        Wbinvd | Invd | Clflush | Clflushopt | Clwb => b.call(privileged_nop),
        Ud0 | Ud1 | Ud2 => b.call_end(|_, _| Err(UD)),
        _ => return false,
    }
    true
}

pub(super) fn need_cpl0(c: &Ctx) -> R<()> {
    if c.c.cpl() != 0 { Err(gp(0)) } else { Ok(()) }
}

fn need_pe(c: &Ctx) -> R<()> {
    if !c.c.pe() || c.c.s.rflags & rflags::VM != 0 {
        Err(UD)
    } else {
        Ok(())
    }
}

fn cli_sti(c: &mut Ctx, i: &Instruction) -> R<()> {
    if c.c.pe() {
        let iopl = ((c.c.s.rflags & rflags::IOPL) >> 12) as u8;
        if c.c.cpl() > iopl {
            return Err(gp(0));
        }
    }
    if i.mnemonic() == Mnemonic::Sti {
        if c.c.s.rflags & rflags::IF == 0 {
            c.c.s.events.sti_shadow = true;
        }
        c.c.s.rflags |= rflags::IF;
    } else {
        c.c.s.rflags &= !rflags::IF;
    }
    Ok(())
}

fn flag_op(c: &mut Ctx, i: &Instruction) -> R<()> {
    let f = c.c.rflags();
    let nf = match i.mnemonic() {
        Mnemonic::Cld => f & !rflags::DF,
        Mnemonic::Std => f | rflags::DF,
        Mnemonic::Clc => f & !rflags::CF,
        Mnemonic::Stc => f | rflags::CF,
        Mnemonic::Cmc => f ^ rflags::CF,
        // CLAC/STAC (SMAP): CPL 0 only.
        Mnemonic::Clac | Mnemonic::Stac if c.c.cpl() == 0 => {
            if i.mnemonic() == Mnemonic::Clac {
                f & !rflags::AC
            } else {
                f | rflags::AC
            }
        }
        _ => return Err(UD),
    };
    c.c.set_rflags(nf);
    Ok(())
}

fn hlt(c: &mut Ctx, i: &Instruction) -> R<()> {
    need_cpl0(c)?;
    c.c.s.rip = i.next_ip();
    Err(Fault::Halt)
}

fn load_table(c: &mut Ctx, i: &Instruction) -> R<()> {
    need_cpl0(c)?;
    match i.mnemonic() {
        Mnemonic::Lgdt | Mnemonic::Lidt => {
            if i.op0_kind() != OpKind::Memory {
                return Err(UD);
            }
            let (s, a) = c.ea(i);
            let limit = c.read(s, a, 2)? as u16;
            let am = mask(super::addr_size(i));
            let base = if c.c.long64() {
                let base = c.read(s, a.wrapping_add(2) & am, 8)?;
                if !crate::soft::mmu::canonical_in(base, c.c.s.cr4) {
                    return Err(gp(0));
                }
                base
            } else {
                let b = c.read(s, a.wrapping_add(2) & am, 4)?;
                if op_size(i, 0) == 2
                    && i.code_size() != iced_x86::CodeSize::Code32
                    && !is_32bit_op(i)
                {
                    b & 0xff_ffff
                } else {
                    b
                }
            };
            let t = crate::state::DescriptorTable { base, limit };
            if i.mnemonic() == Mnemonic::Lgdt {
                c.c.s.gdt = t
            } else {
                c.c.s.idt = t
            }
        }
        Mnemonic::Lldt => {
            need_pe(c)?;
            let sel = c.rd_sz(i, 0, 2)? as u16;
            c.load_ldt(sel, gp)?;
        }
        _ => {
            need_pe(c)?;
            let sel = c.rd_sz(i, 0, 2)? as u16;
            if sel & 0xfffc == 0 || sel & 4 != 0 {
                return Err(gp(u32::from(sel & 0xfffc)));
            }
            let (mut s, a) = c.read_sys_desc(sel)?;
            let ok = !s.s && (s.typ == 9 || (s.typ == 1 && !c.c.s.long_mode_active()));
            if !ok {
                return Err(gp(u32::from(sel & 0xfffc)));
            }
            if !s.present {
                return Err(crate::soft::cpu::np(u32::from(sel & 0xfffc)));
            }
            s.typ |= 2;
            let b5 = c.sys_read(a + 5, 1)?;
            c.sys_write(a + 5, 1, b5 | 2)?;
            c.c.s.tr = s;
        }
    }
    Ok(())
}

fn is_32bit_op(i: &Instruction) -> bool {
    matches!(
        i.code(),
        iced_x86::Code::Lgdt_m1632 | iced_x86::Code::Lidt_m1632
    ) && i.code_size() == iced_x86::CodeSize::Code32
}

fn store_table(c: &mut Ctx, i: &Instruction) -> R<()> {
    match i.mnemonic() {
        Mnemonic::Sgdt | Mnemonic::Sidt => {
            if i.op0_kind() != OpKind::Memory {
                return Err(UD);
            }
            let t = if i.mnemonic() == Mnemonic::Sgdt {
                c.c.s.gdt
            } else {
                c.c.s.idt
            };
            let (s, a) = c.ea(i);
            let am = mask(super::addr_size(i));
            let bsz = if c.c.long64() { 8 } else { 4 };
            c.write(s, a, 2, u64::from(t.limit))?;
            c.write(s, a.wrapping_add(2) & am, bsz, t.base)?;
        }
        m => {
            need_pe(c)?;
            let v = u64::from(if m == Mnemonic::Sldt {
                c.c.s.ldt.selector
            } else {
                c.c.s.tr.selector
            });
            if i.op0_kind() == OpKind::Memory {
                c.wr_sz(i, 0, 2, v)?
            } else {
                c.wr(i, 0, v)?
            }
        }
    }
    Ok(())
}

fn cr_num(r: Register) -> Option<u8> {
    let n = (r as u32).checked_sub(Register::CR0 as u32)?;
    (n < 16).then_some(n as u8)
}

fn dr_num(r: Register) -> Option<u8> {
    let n = (r as u32).checked_sub(Register::DR0 as u32)?;
    (n < 16).then_some(n as u8)
}

/// Writes a control register with the architectural checks; flushes the TLB as needed.
pub fn write_cr(c: &mut Ctx, n: u8, v: u64) -> R<()> {
    let s = &c.c.s;
    match n {
        0 => {
            let v = (v & 0xffff_ffff) | bits::CR0_ET;
            if v & bits::CR0_PG != 0 && v & bits::CR0_PE == 0 {
                return Err(gp(0));
            }
            if v & bits::CR0_NW != 0 && v & bits::CR0_CD == 0 {
                return Err(gp(0));
            }
            let enabling_pg = v & bits::CR0_PG != 0 && s.cr0 & bits::CR0_PG == 0;
            if enabling_pg && s.efer & bits::EFER_LME != 0 && s.cr4 & bits::CR4_PAE == 0 {
                return Err(gp(0));
            }
            if v & bits::CR0_PG == 0 && s.efer & bits::EFER_LMA != 0 && c.c.long64() {
                return Err(gp(0));
            }
            let changed = (v ^ s.cr0) & (bits::CR0_PG | bits::CR0_WP | bits::CR0_PE) != 0;
            c.c.s.cr0 = v;
            c.update_lma();
            if changed {
                c.c.tlb.flush(false);
            }
        }
        2 => c.c.s.cr2 = v,
        3 => {
            c.c.s.cr3 = v & if c.c.s.long_mode_active() {
                0x000f_ffff_ffff_ffff
            } else {
                0xffff_ffff
            };
            c.c.tlb.flush(true);
        }
        4 => {
            let known = 0x1
                | 0x2
                | 0x4
                | 0x8
                | 0x10
                | 0x20
                | 0x40
                | 0x80
                | 0x100
                | bits::CR4_OSFXSR
                | bits::CR4_OSXMMEXCPT
                | bits::CR4_OSXSAVE
                | bits::CR4_SMEP
                | bits::CR4_SMAP
                | bits::CR4_PKE;
            let la57 = v & bits::CR4_LA57 != 0;
            if v & !known != 0 && (v & !known != bits::CR4_LA57 || !c.c.cpuid.has("la57")) {
                return Err(gp(0));
            }
            // CR4.PAE cannot be cleared, nor CR4.LA57 changed, in long mode.
            if s.long_mode_active()
                && (v & bits::CR4_PAE == 0 || la57 != (s.cr4 & bits::CR4_LA57 != 0))
            {
                return Err(gp(0));
            }
            let paging = bits::CR4_PAE
                | bits::CR4_LA57
                | bits::CR4_PSE
                | bits::CR4_PGE
                | bits::CR4_SMEP
                | bits::CR4_SMAP
                | bits::CR4_PKE;
            let changed = (v ^ s.cr4) & paging != 0;
            c.c.s.cr4 = v;
            if changed {
                c.c.tlb.flush(false);
            }
        }
        8 => {
            if v > 15 {
                return Err(gp(0));
            }
            c.c.s.cr8 = v;
        }
        _ => return Err(UD),
    }
    Ok(())
}

/// MOV DR with DR7.GD set: a #DB fault with DR6.BD; GD is cleared for the handler.
fn general_detect(c: &mut Ctx) -> R<()> {
    let d = &mut c.c.s.debug;
    if d.dr7 & debug::DR7_GD == 0 {
        return Ok(());
    }
    d.dr7 &= !debug::DR7_GD;
    d.dr6 |= debug::DR6_BD;
    Err(Fault::Exc {
        vector: crate::soft::cpu::vec::DB,
        code: None,
    })
}

fn mov_cr_dr(c: &mut Ctx, i: &Instruction) -> R<()> {
    need_cpl0(c)?;
    let (r0, r1) = (i.op0_register(), i.op1_register());
    let wide = c.c.long64();
    let sz = if wide { 8 } else { 4 };
    let dr45 = |n: u8, c: &Ctx| -> R<u8> {
        if n == 4 || n == 5 {
            if c.c.s.cr4 & (1 << 3) != 0 {
                Err(UD)
            } else {
                Ok(n + 2)
            }
        } else if n > 7 {
            Err(UD)
        } else {
            Ok(n)
        }
    };
    if let Some(n) = cr_num(r0) {
        let v = c.rd_sz(i, 1, sz)?;
        write_cr(c, n, v)
    } else if let Some(n) = cr_num(r1) {
        let v = match n {
            0 => c.c.s.cr0,
            2 => c.c.s.cr2,
            3 => c.c.s.cr3,
            4 => c.c.s.cr4,
            8 => c.c.s.cr8,
            _ => return Err(UD),
        };
        c.wr_sz(i, 0, sz, v)
    } else if let Some(n) = dr_num(r0) {
        let n = dr45(n, c)?;
        general_detect(c)?;
        let v = c.rd_sz(i, 1, sz)?;
        let d = &mut c.c.s.debug;
        match n {
            0..=3 => d.dr[usize::from(n)] = v,
            _ if v >> 32 != 0 => return Err(gp(0)),
            _ => debug::write_status(d, n, v),
        }
        Ok(())
    } else if let Some(n) = dr_num(r1) {
        let n = dr45(n, c)?;
        general_detect(c)?;
        let d = &c.c.s.debug;
        let v = match n {
            0..=3 => d.dr[usize::from(n)],
            6 => debug::read_dr6(d),
            _ => debug::read_dr7(d),
        };
        c.wr_sz(i, 0, sz, v)
    } else {
        Err(UD)
    }
}

fn cr0_misc(c: &mut Ctx, i: &Instruction) -> R<()> {
    need_cpl0(c)?;
    if i.mnemonic() == Mnemonic::Clts {
        c.c.s.cr0 &= !bits::CR0_TS;
        return Ok(());
    }
    let v = c.rd_sz(i, 0, 2)? & 0xf;
    let cr0 = c.c.s.cr0;
    let nv = (cr0 & !0xe) | v | (cr0 & bits::CR0_PE);
    write_cr(c, 0, nv)
}

fn smsw(c: &mut Ctx, i: &Instruction) -> R<()> {
    let v = c.c.s.cr0;
    if i.op0_kind() == OpKind::Memory {
        c.wr_sz(i, 0, 2, v)
    } else {
        c.wr(i, 0, v)
    }
}

fn invlpg(c: &mut Ctx, i: &Instruction) -> R<()> {
    need_cpl0(c)?;
    let (s, a) = c.ea(i);
    let lin = if c.c.long64() {
        a.wrapping_add(if s >= 4 { c.c.seg(s).base } else { 0 })
    } else {
        c.c.seg(s).base.wrapping_add(a) & 0xffff_ffff
    };
    c.c.tlb.flush_page(lin);
    Ok(())
}

/// INVPCID: the TLB entries of one address (type 0), of one PCID (1), all of them (2) or all
/// but the global ones (3). CR4.PCIDE is never set here, so every entry belongs to PCID 0
/// and the descriptor must name PCID 0 for types 0 and 1.
fn invpcid(c: &mut Ctx, i: &Instruction) -> R<()> {
    if c.c.s.rflags & rflags::VM != 0 {
        return Err(UD);
    }
    need_cpl0(c)?;
    let ty = c.rd(i, 0)?;
    let (s, a) = c.ea(i);
    let m = crate::soft::flags::mask(super::addr_size(i));
    let pcid = c.read(s, a, 8)?;
    let lin = c.read(s, a.wrapping_add(8) & m, 8)?;
    if ty > 3 || pcid > 0xfff {
        return Err(gp(0));
    }
    match ty {
        0 | 1 if pcid != 0 => return Err(gp(0)),
        0 if !crate::soft::mmu::canonical_in(lin, c.c.s.cr4) => return Err(gp(0)),
        0 => c.c.tlb.flush_page(lin),
        2 => c.c.tlb.flush(false),
        _ => c.c.tlb.flush(true),
    }
    Ok(())
}

fn lar_lsl(c: &mut Ctx, i: &Instruction) -> R<()> {
    need_pe(c)?;
    let m = i.mnemonic();
    let n = if matches!(m, Mnemonic::Lar | Mnemonic::Lsl) {
        1
    } else {
        0
    };
    let sel = c.rd_sz(i, n, 2)? as u16;
    let f = c.c.rflags() & !rflags::ZF;
    let fail = |c: &mut Ctx| {
        c.c.set_rflags(f);
        Ok(())
    };
    if sel & 0xfffc == 0 {
        return fail(c);
    }
    let Ok(d) = c.read_desc(sel) else {
        return fail(c);
    };
    let s = from_desc(sel, d);
    let code = s.s && s.typ & 8 != 0;
    let conforming = code && s.typ & 4 != 0;
    let cpl = c.c.cpl();
    let rpl = (sel & 3) as u8;
    if !conforming && (s.dpl < cpl || s.dpl < rpl) {
        return fail(c);
    }
    let long = c.c.s.long_mode_active();
    let ok = match m {
        Mnemonic::Lar | Mnemonic::Lsl => {
            s.s || match s.typ {
                2 | 9 | 0xb => true,
                0xc => m == Mnemonic::Lar,
                1 | 3 => !long,
                4 | 5 => !long && m == Mnemonic::Lar,
                _ => false,
            }
        }
        Mnemonic::Verr => s.s && (!code || s.typ & 2 != 0),
        _ => s.s && !code && s.typ & 2 != 0,
    };
    if !ok {
        return fail(c);
    }
    match m {
        Mnemonic::Lar => {
            let sz = op_size(i, 0);
            c.wr_sz(i, 0, sz, (d >> 32) & 0x00ff_ff00)?;
        }
        Mnemonic::Lsl => {
            let sz = op_size(i, 0);
            c.wr_sz(i, 0, sz, u64::from(s.limit))?;
        }
        _ => {}
    }
    c.c.set_rflags(f | rflags::ZF);
    Ok(())
}

fn arpl(c: &mut Ctx, i: &Instruction) -> R<()> {
    need_pe(c)?;
    let d = c.rd_sz(i, 0, 2)?;
    let s = c.rd_sz(i, 1, 2)?;
    let f = c.c.rflags() & !rflags::ZF;
    if d & 3 < s & 3 {
        c.wr_sz(i, 0, 2, (d & !3) | (s & 3))?;
        c.c.set_rflags(f | rflags::ZF);
    } else {
        c.c.set_rflags(f);
    }
    Ok(())
}

fn privileged_nop(c: &mut Ctx, i: &Instruction) -> R<()> {
    if matches!(i.mnemonic(), Mnemonic::Wbinvd | Mnemonic::Invd) {
        need_cpl0(c)?;
    }
    Ok(())
}
