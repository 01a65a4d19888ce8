//! System instructions: flag control (CLI STI CLD STD CLC STC CMC), HLT, CPUID, descriptor-table
//! registers (LGDT LIDT SGDT SIDT LLDT LTR SLDT STR), control and debug registers, LMSW SMSW
//! CLTS, MSRs, RDTSC/RDTSCP, SWAPGS, SYSCALL/SYSRET, SYSENTER/SYSEXIT, INVLPG, LAR LSL VERR
//! VERW ARPL, UD0/UD1/UD2, cache-control no-ops.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::{Builder, op_size};
use crate::soft::cpu::{Ctx, Fault, R, UD, gp};
use crate::soft::flags::mask;
use crate::soft::mmu::canonical;
use crate::soft::seg::from_desc;
use crate::state::{Segment, bits, rflags};

pub(super) fn lower(b: &mut Builder, i: &Instruction) -> bool {
    use Mnemonic::*;
    let next = i.next_ip();
    match i.mnemonic() {
        Cli | Sti => b.call_then_stop(cli_sti, next),
        Cld | Std | Clc | Stc | Cmc | Clac | Stac => b.call(flag_op),
        Hlt => b.call_end(hlt),
        Cpuid => b.call(cpuid),
        Lgdt | Lidt | Lldt | Ltr => b.call_then_stop(load_table, next),
        Sgdt | Sidt | Sldt | Str => b.call(store_table),
        Mov => b.call_then_stop(mov_cr_dr, next),
        Lmsw | Clts => b.call_then_stop(cr0_misc, next),
        Smsw => b.call(smsw),
        Rdmsr => b.call(rdmsr),
        Wrmsr => b.call_then_stop(wrmsr, next),
        Rdtsc | Rdtscp => b.call(rdtsc),
        Swapgs => b.call(swapgs),
        Syscall | Sysret | Sysretq | Sysenter | Sysexit | Sysexitq => b.call_end(fast_syscall),
        Invlpg => b.call_then_stop(invlpg, next),
        Lar | Lsl | Verr | Verw => b.call(lar_lsl),
        Arpl => b.call(arpl),
        Wbinvd | Invd | Clflush | Clflushopt => b.call(privileged_nop),
        Ud0 | Ud1 | Ud2 => b.call_end(|_, _| Err(UD)),
        _ => return false,
    }
    true
}

fn need_cpl0(c: &Ctx) -> R<()> {
    if c.c.cpl() != 0 { Err(gp(0)) } else { Ok(()) }
}

fn need_pe(c: &Ctx) -> R<()> {
    if !c.c.pe() || c.c.s.rflags & rflags::VM != 0 { Err(UD) } else { Ok(()) }
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

fn host_cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let r = std::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// CPUID as this backend implements it: the host's vendor, family and brand, and only the
/// features the software CPU executes.
pub fn cpuid_leaf(index: usize, nr_vcpus: usize, leaf: u32, sub: u32) -> [u32; 4] {
    match leaf {
        0 => {
            let h = host_cpuid(0, 0);
            [h[0].min(7), h[1], h[2], h[3]]
        }
        1 => {
            let h = host_cpuid(1, 0);
            let ebx = (index as u32) << 24 | (nr_vcpus.min(255) as u32) << 16 | 8 << 8;
            let ecx = 1 << 13 | 1 << 23; // CMPXCHG16B, POPCNT
            let mut edx = 1 << 3 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 8 | 1 << 9 | 1 << 11 | 1 << 13
                | 1 << 15 | 1 << 17 | 1 << 19; // PSE TSC MSR PAE CX8 APIC SEP PGE CMOV PSE36 CLFSH
            if nr_vcpus > 1 {
                edx |= 1 << 28;
            }
            [h[0], ebx, ecx, edx]
        }
        0x8000_0000 => {
            let h = host_cpuid(0x8000_0000, 0);
            [0x8000_0008, h[1], h[2], h[3]]
        }
        0x8000_0001 => {
            let h = host_cpuid(0x8000_0001, 0);
            // LAHF/SAHF in 64-bit mode, LZCNT; SYSCALL, NX, RDTSCP, LM.
            [h[0], 0, 1 | 1 << 5, 1 << 11 | 1 << 20 | 1 << 27 | 1 << 29]
        }
        0x8000_0002..=0x8000_0004 => host_cpuid(leaf, 0),
        0x8000_0008 => [(host_cpuid(0x8000_0008, 0)[0] & 0xffff).max(0x3024), 0, 0, 0],
        _ => {
            let _ = sub;
            [0; 4]
        }
    }
}

fn cpuid(c: &mut Ctx, _: &Instruction) -> R<()> {
    let r = cpuid_leaf(c.c.index, c.c.nr_vcpus, c.c.get(0, 4) as u32, c.c.get(1, 4) as u32);
    for (reg, v) in [0u8, 3, 1, 2].into_iter().zip(r) {
        c.c.set(reg, 4, u64::from(v));
    }
    Ok(())
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
                c.read(s, a.wrapping_add(2) & am, 8)?
            } else {
                let b = c.read(s, a.wrapping_add(2) & am, 4)?;
                if op_size(i, 0) == 2 && i.code_size() != iced_x86::CodeSize::Code32 && !is_32bit_op(i) {
                    b & 0xff_ffff
                } else {
                    b
                }
            };
            let t = crate::state::DescriptorTable { base, limit };
            if i.mnemonic() == Mnemonic::Lgdt { c.c.s.gdt = t } else { c.c.s.idt = t }
        }
        Mnemonic::Lldt => {
            need_pe(c)?;
            let sel = c.rd_sz(i, 0, 2)? as u16;
            if sel & 0xfffc == 0 {
                c.c.s.ldt = Segment { selector: sel, unusable: true, ..Default::default() };
                return Ok(());
            }
            if sel & 4 != 0 {
                return Err(gp(u32::from(sel & 0xfffc)));
            }
            let (s, _) = c.read_sys_desc(sel)?;
            if s.s || s.typ != 2 {
                return Err(gp(u32::from(sel & 0xfffc)));
            }
            if !s.present {
                return Err(crate::soft::cpu::np(u32::from(sel & 0xfffc)));
            }
            c.c.s.ldt = s;
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
    matches!(i.code(), iced_x86::Code::Lgdt_m1632 | iced_x86::Code::Lidt_m1632)
        && i.code_size() == iced_x86::CodeSize::Code32
}

fn store_table(c: &mut Ctx, i: &Instruction) -> R<()> {
    match i.mnemonic() {
        Mnemonic::Sgdt | Mnemonic::Sidt => {
            if i.op0_kind() != OpKind::Memory {
                return Err(UD);
            }
            let t = if i.mnemonic() == Mnemonic::Sgdt { c.c.s.gdt } else { c.c.s.idt };
            let (s, a) = c.ea(i);
            let am = mask(super::addr_size(i));
            let bsz = if c.c.long64() { 8 } else { 4 };
            c.write(s, a, 2, u64::from(t.limit))?;
            c.write(s, a.wrapping_add(2) & am, bsz, t.base)?;
        }
        m => {
            need_pe(c)?;
            let v = u64::from(if m == Mnemonic::Sldt { c.c.s.ldt.selector } else { c.c.s.tr.selector });
            if i.op0_kind() == OpKind::Memory { c.wr_sz(i, 0, 2, v)? } else { c.wr(i, 0, v)? }
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
            c.c.s.cr3 = v & if c.c.s.long_mode_active() { 0x000f_ffff_ffff_ffff } else { 0xffff_ffff };
            c.c.tlb.flush(true);
        }
        4 => {
            let known = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400;
            if v & !known != 0 {
                return Err(gp(0));
            }
            if s.long_mode_active() && v & bits::CR4_PAE == 0 {
                return Err(gp(0));
            }
            let changed = (v ^ s.cr4) & (bits::CR4_PAE | bits::CR4_PSE | bits::CR4_PGE) != 0;
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

fn mov_cr_dr(c: &mut Ctx, i: &Instruction) -> R<()> {
    need_cpl0(c)?;
    let (r0, r1) = (i.op0_register(), i.op1_register());
    let wide = c.c.long64();
    let sz = if wide { 8 } else { 4 };
    let dr45 = |n: u8, c: &Ctx| -> R<u8> {
        if n == 4 || n == 5 {
            if c.c.s.cr4 & (1 << 3) != 0 { Err(UD) } else { Ok(n + 2) }
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
        let v = c.rd_sz(i, 1, sz)?;
        c.c.dr[usize::from(n)] = v;
        Ok(())
    } else if let Some(n) = dr_num(r1) {
        let n = dr45(n, c)?;
        let v = c.c.dr[usize::from(n)];
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
    if i.op0_kind() == OpKind::Memory { c.wr_sz(i, 0, 2, v) } else { c.wr(i, 0, v) }
}

mod msr {
    pub const TSC: u32 = 0x10;
    pub const APIC_BASE: u32 = 0x1b;
    pub const SYSENTER_CS: u32 = 0x174;
    pub const SYSENTER_ESP: u32 = 0x175;
    pub const SYSENTER_EIP: u32 = 0x176;
    pub const EFER: u32 = 0xc000_0080;
    pub const STAR: u32 = 0xc000_0081;
    pub const LSTAR: u32 = 0xc000_0082;
    pub const CSTAR: u32 = 0xc000_0083;
    pub const SFMASK: u32 = 0xc000_0084;
    pub const FS_BASE: u32 = 0xc000_0100;
    pub const GS_BASE: u32 = 0xc000_0101;
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    pub const TSC_AUX: u32 = 0xc000_0103;
}

fn rdmsr(c: &mut Ctx, _: &Instruction) -> R<()> {
    need_cpl0(c)?;
    let s = &c.c.s;
    let v = match c.c.get(1, 4) as u32 {
        msr::TSC => c.c.tsc(),
        msr::APIC_BASE => s.apic_base,
        msr::SYSENTER_CS => s.sysenter_cs,
        msr::SYSENTER_ESP => s.sysenter_esp,
        msr::SYSENTER_EIP => s.sysenter_eip,
        msr::EFER => s.efer,
        msr::STAR => s.star,
        msr::LSTAR => s.lstar,
        msr::CSTAR => s.cstar,
        msr::SFMASK => s.sfmask,
        msr::FS_BASE => s.fs.base,
        msr::GS_BASE => s.gs.base,
        msr::KERNEL_GS_BASE => s.kernel_gs_base,
        msr::TSC_AUX => s.tsc_aux,
        _ => return Err(gp(0)),
    };
    c.c.set(0, 4, v & 0xffff_ffff);
    c.c.set(2, 4, v >> 32);
    Ok(())
}

fn wrmsr(c: &mut Ctx, _: &Instruction) -> R<()> {
    need_cpl0(c)?;
    let v = c.c.get(0, 4) | c.c.get(2, 4) << 32;
    let addr_ok = canonical(v);
    let idx = c.c.get(1, 4) as u32;
    let icount = c.c.icount;
    let s = &mut c.c.s;
    match idx {
        msr::TSC => c.c.tsc_offset = v.wrapping_sub(icount),
        msr::APIC_BASE => s.apic_base = v,
        msr::SYSENTER_CS => s.sysenter_cs = v & 0xffff,
        msr::SYSENTER_ESP if addr_ok => s.sysenter_esp = v,
        msr::SYSENTER_EIP if addr_ok => s.sysenter_eip = v,
        msr::EFER => {
            let allowed = bits::EFER_SCE | bits::EFER_LME | bits::EFER_NXE;
            if v & !(allowed | bits::EFER_LMA) != 0 {
                return Err(gp(0));
            }
            if s.cr0 & bits::CR0_PG != 0 && (v ^ s.efer) & bits::EFER_LME != 0 {
                return Err(gp(0));
            }
            s.efer = (v & allowed) | (s.efer & bits::EFER_LMA);
        }
        msr::STAR => s.star = v,
        msr::LSTAR if addr_ok => s.lstar = v,
        msr::CSTAR if addr_ok => s.cstar = v,
        msr::SFMASK => s.sfmask = v & 0xffff_ffff,
        msr::FS_BASE if addr_ok => s.fs.base = v,
        msr::GS_BASE if addr_ok => s.gs.base = v,
        msr::KERNEL_GS_BASE if addr_ok => s.kernel_gs_base = v,
        msr::TSC_AUX => s.tsc_aux = v & 0xffff_ffff,
        _ => return Err(gp(0)),
    }
    if idx == msr::EFER {
        c.c.tlb.flush(false);
    }
    Ok(())
}

fn rdtsc(c: &mut Ctx, i: &Instruction) -> R<()> {
    if c.c.s.cr4 & (1 << 2) != 0 && c.c.cpl() != 0 {
        return Err(gp(0));
    }
    let t = c.c.tsc();
    c.c.set(0, 4, t & 0xffff_ffff);
    c.c.set(2, 4, t >> 32);
    if i.mnemonic() == Mnemonic::Rdtscp {
        let aux = c.c.s.tsc_aux;
        c.c.set(1, 4, aux);
    }
    Ok(())
}

fn swapgs(c: &mut Ctx, _: &Instruction) -> R<()> {
    if !c.c.long64() {
        return Err(UD);
    }
    need_cpl0(c)?;
    let s = &mut c.c.s;
    std::mem::swap(&mut s.gs.base, &mut s.kernel_gs_base);
    Ok(())
}

fn flat(sel: u16, code: bool, dpl: u8, long: bool) -> Segment {
    Segment {
        selector: sel,
        base: 0,
        limit: 0xffff_ffff,
        typ: if code { 0xb } else { 0x3 },
        s: true,
        dpl,
        present: true,
        l: code && long,
        db: !(code && long),
        g: true,
        ..Default::default()
    }
}

fn fast_syscall(c: &mut Ctx, i: &Instruction) -> R<()> {
    let lma = c.c.s.long_mode_active();
    let next = i.next_ip();
    match i.mnemonic() {
        Mnemonic::Syscall => {
            if c.c.s.efer & bits::EFER_SCE == 0 || !c.c.pe() {
                return Err(UD);
            }
            let sel = ((c.c.s.star >> 32) & 0xfffc) as u16;
            let f = c.c.rflags();
            if lma {
                c.c.set(1, 8, next);
                c.c.set(11, 8, f & !rflags::RF);
                c.c.s.rip = if c.c.long64() { c.c.s.lstar } else { c.c.s.cstar };
                c.c.set_rflags(f & !c.c.s.sfmask & !rflags::RF);
            } else {
                c.c.set(1, 4, next);
                c.c.s.rip = c.c.s.star & 0xffff_ffff;
                c.c.set_rflags(f & !(rflags::VM | rflags::IF | rflags::RF));
            }
            c.c.s.cs = flat(sel, true, 0, lma);
            c.c.s.ss = flat(sel + 8, false, 0, false);
        }
        Mnemonic::Sysret | Mnemonic::Sysretq => {
            if c.c.s.efer & bits::EFER_SCE == 0 || !c.c.pe() {
                return Err(UD);
            }
            if c.c.cpl() != 0 {
                return Err(gp(0));
            }
            let base = ((c.c.s.star >> 48) & 0xffff) as u16;
            let q = i.mnemonic() == Mnemonic::Sysretq;
            let rip = if q { c.c.get(1, 8) } else { c.c.get(1, 4) };
            if q && !canonical(rip) {
                return Err(gp(0));
            }
            if lma {
                let f = c.c.get(11, 8);
                c.c.set_rflags((f & 0x3c_7fd7) | rflags::FIXED);
            } else {
                c.c.s.rflags |= rflags::IF;
            }
            c.c.s.cs = if q { flat((base + 16) | 3, true, 3, true) } else { flat(base | 3, true, 3, false) };
            let mut ss = flat((base + 8) | 3, false, 3, false);
            ss.dpl = 3;
            c.c.s.ss = ss;
            c.c.s.rip = rip;
        }
        Mnemonic::Sysenter => {
            if !c.c.pe() {
                return Err(gp(0));
            }
            let cs = (c.c.s.sysenter_cs & 0xfffc) as u16;
            if cs == 0 {
                return Err(gp(0));
            }
            let f = c.c.rflags();
            c.c.set_rflags(f & !(rflags::VM | rflags::IF | rflags::RF));
            c.c.s.cs = flat(cs, true, 0, lma);
            c.c.s.ss = flat(cs + 8, false, 0, false);
            c.c.s.rip = if lma { c.c.s.sysenter_eip } else { c.c.s.sysenter_eip & 0xffff_ffff };
            let sp = c.c.s.sysenter_esp;
            c.c.set(4, 8, if lma { sp } else { sp & 0xffff_ffff });
        }
        _ => {
            let cs = (c.c.s.sysenter_cs & 0xfffc) as u16;
            if !c.c.pe() || c.c.cpl() != 0 || cs == 0 {
                return Err(gp(0));
            }
            let q = i.mnemonic() == Mnemonic::Sysexitq;
            if q {
                c.c.s.cs = flat((cs + 32) | 3, true, 3, true);
                c.c.s.ss = flat((cs + 40) | 3, false, 3, false);
                c.c.s.rip = c.c.get(2, 8);
                let sp = c.c.get(1, 8);
                c.c.set(4, 8, sp);
            } else {
                c.c.s.cs = flat((cs + 16) | 3, true, 3, false);
                c.c.s.ss = flat((cs + 24) | 3, false, 3, false);
                c.c.s.rip = c.c.get(2, 4);
                let sp = c.c.get(1, 4);
                c.c.set(4, 8, sp);
            }
        }
    }
    Ok(())
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

fn lar_lsl(c: &mut Ctx, i: &Instruction) -> R<()> {
    need_pe(c)?;
    let m = i.mnemonic();
    let n = if matches!(m, Mnemonic::Lar | Mnemonic::Lsl) { 1 } else { 0 };
    let sel = c.rd_sz(i, n, 2)? as u16;
    let f = c.c.rflags() & !rflags::ZF;
    let fail = |c: &mut Ctx| {
        c.c.set_rflags(f);
        Ok(())
    };
    if sel & 0xfffc == 0 {
        return fail(c);
    }
    let Ok(d) = c.read_desc(sel) else { return fail(c) };
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
