//! Control flow: JMP/Jcc/CALL/RET near (IR), LOOP/LOOPcc/JCXZ (IR), and far JMP/CALL/RET, INT n,
//! INT3, INTO, INT1, IRET/IRETD/IRETQ and BOUND (helpers).

use iced_x86::{Code, Instruction, Mnemonic, OpKind};

use super::{Builder, op_size};
use crate::soft::cpu::{Ctx, Fault, R, UD, gp, seg, vec};
use crate::soft::exception::Source;
use crate::soft::flags::{mask, sext};
use crate::soft::ir::{BinOp, Op};
use crate::soft::seg::from_desc;
use crate::soft::task::Switch;
use crate::state::rflags;

pub(super) fn lower(b: &mut Builder, i: &Instruction) -> bool {
    use Mnemonic::*;
    let m = i.mnemonic();
    match m {
        Jmp => match i.op0_kind() {
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                b.end(Op::Goto {
                    rip: i.near_branch_target(),
                });
            }
            OpKind::FarBranch16 | OpKind::FarBranch32 => b.call_end(far_jmp_call),
            _ if i.is_jmp_far_indirect() => b.call_end(far_jmp_call),
            _ => {
                let t = b.rd(i, 0, op_size(i, 0));
                b.end(Op::Jump { t });
            }
        },
        Jo | Jno | Jb | Jae | Je | Jne | Jbe | Ja | Js | Jns | Jp | Jnp | Jl | Jge | Jle | Jg => {
            let cc = super::mov::cc(i);
            b.end(Op::BranchCc {
                cc,
                taken: i.near_branch_target(),
            });
        }
        Call => match i.op0_kind() {
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                let sz = (-i.stack_pointer_increment()).clamp(2, 8) as u8;
                let r = b.k(i.next_ip());
                b.push(r, sz);
                b.end(Op::Goto {
                    rip: i.near_branch_target(),
                });
            }
            OpKind::FarBranch16 | OpKind::FarBranch32 => b.call_end(far_jmp_call),
            _ if i.is_call_far_indirect() => b.call_end(far_jmp_call),
            _ => {
                let sz = op_size(i, 0);
                let t = b.rd(i, 0, sz);
                let r = b.k(i.next_ip());
                b.push(r, sz);
                b.end(Op::Jump { t });
            }
        },
        Ret => {
            let sz = i.stack_pointer_increment_ret();
            let (v, nsp) = b.pop_peek(sz);
            let st = b.stack;
            let nsp = if i.op_count() > 0 {
                let k = b.k(i.immediate(0) & 0xffff);
                b.bin(BinOp::Add, nsp, k, st)
            } else {
                nsp
            };
            b.set(4, st, nsp);
            b.end(Op::Jump { t: v });
        }
        Loop | Loope | Loopne | Jcxz | Jecxz | Jrcxz => {
            let name = format!("{:?}", i.code());
            let asz = match m {
                Jcxz => 2,
                Jecxz => 4,
                Jrcxz => 8,
                _ if name.ends_with("_RCX") => 8,
                _ if name.ends_with("_ECX") => 4,
                _ => 2,
            };
            let cx = b.get(1, asz);
            let c = if matches!(m, Jcxz | Jecxz | Jrcxz) {
                let z = b.k(0);
                let d = b.t();
                // cx == 0  <=>  (cx - 1) borrows; use a select on cx.
                let one = b.k(1);
                b.op(Op::Select {
                    d,
                    c: cx,
                    a: z,
                    b: one,
                });
                d
            } else {
                let one = b.k(1);
                let n = b.bin(BinOp::Sub, cx, one, asz);
                b.set(1, asz, n);
                let z = b.k(0);
                let nz = b.t();
                b.op(Op::Select {
                    d: nz,
                    c: n,
                    a: one,
                    b: z,
                });
                if m == Loop {
                    nz
                } else {
                    let zf = b.t();
                    b.op(Op::Cond {
                        d: zf,
                        cc: if m == Loope { 4 } else { 5 },
                    });
                    b.bin(BinOp::And, nz, zf, 1)
                }
            };
            b.end(Op::Branch {
                c,
                taken: i.near_branch_target(),
            });
        }
        Retf => b.call_end(far_ret),
        Iret | Iretd | Iretq => b.call_end(iret),
        Int | Int3 | Into | Int1 => b.call_end(int),
        Bound => b.call(bound),
        _ => return false,
    }
    true
}

trait RetSize {
    fn stack_pointer_increment_ret(&self) -> u8;
}

impl RetSize for Instruction {
    fn stack_pointer_increment_ret(&self) -> u8 {
        match self.code() {
            Code::Retnw | Code::Retnw_imm16 => 2,
            Code::Retnd | Code::Retnd_imm16 => 4,
            _ => 8,
        }
    }
}

fn far_target(c: &mut Ctx, i: &Instruction) -> R<(u16, u64, u8)> {
    Ok(match i.op0_kind() {
        OpKind::FarBranch16 => (i.far_branch_selector(), u64::from(i.far_branch16()), 2),
        OpKind::FarBranch32 => (i.far_branch_selector(), u64::from(i.far_branch32()), 4),
        _ => {
            let sz = (i.memory_size().size() as u8).saturating_sub(2).clamp(2, 8);
            let (s, a) = c.ea(i);
            let off = c.read(s, a, sz)?;
            let am = mask(super::addr_size(i));
            let sel = c.read(s, a.wrapping_add(u64::from(sz)) & am, 2)? as u16;
            (sel, off, sz)
        }
    })
}

fn far_jmp_call(c: &mut Ctx, i: &Instruction) -> R<()> {
    let call = i.mnemonic() == Mnemonic::Call;
    let (sel, off, sz) = far_target(c, i)?;
    let old_cs = u64::from(c.c.s.cs.selector);
    let ret = i.next_ip();
    if !c.c.pe() || c.c.s.rflags & rflags::VM != 0 {
        if call {
            let st = c.c.stack_size();
            let sp0 = c.c.get(4, st);
            c.push(old_cs, sz)?;
            if let Err(e) = c.push(ret, sz) {
                c.c.set(4, st, sp0);
                return Err(e);
            }
        }
        c.c.s.cs.selector = sel;
        c.c.s.cs.base = u64::from(sel) << 4;
        c.c.s.rip = off & mask(sz);
        return Ok(());
    }
    let d = c.read_desc(sel).map_err(|_| gp(u32::from(sel & 0xfffc)))?;
    if d & (1 << 44) == 0 {
        let long = c.c.s.long_mode_active();
        return match (d >> 40) & 0xf {
            0xc => call_gate(c, call, sel, d, ret),
            0x4 if !long => call_gate(c, call, sel, d, ret),
            0x1 | 0x3 | 0x9 | 0xb if !long => {
                // A TSS: its DPL must admit the caller.
                let dpl = ((d >> 45) & 3) as u8;
                if dpl < c.c.cpl() || dpl < (sel & 3) as u8 {
                    return Err(gp(u32::from(sel & 0xfffc)));
                }
                let kind = if call { Switch::Call } else { Switch::Jmp };
                c.task_switch(sel, kind, ret, None)
            }
            0x5 if !long => {
                // A task gate: its DPL must admit the caller; its selector names the TSS.
                let dpl = ((d >> 45) & 3) as u8;
                if dpl < c.c.cpl() || dpl < (sel & 3) as u8 {
                    return Err(gp(u32::from(sel & 0xfffc)));
                }
                if d & (1 << 47) == 0 {
                    return Err(crate::soft::cpu::np(u32::from(sel & 0xfffc)));
                }
                let kind = if call { Switch::Call } else { Switch::Jmp };
                c.task_switch(((d >> 16) & 0xffff) as u16, kind, ret, None)
            }
            _ => Err(gp(u32::from(sel & 0xfffc))),
        };
    }
    let d = c.check_code(sel, true)?;
    let cs = from_desc(sel, d);
    let cpl = c.c.cpl();
    let target = if c.c.s.long_mode_active() && cs.l {
        off
    } else {
        off & mask(sz.min(4))
    };
    if !(c.c.s.long_mode_active() && cs.l) && target > u64::from(cs.limit) {
        return Err(gp(0));
    }
    if call {
        let st = c.c.stack_size();
        let sp0 = c.c.get(4, st);
        c.push(old_cs, sz)?;
        if let Err(e) = c.push(ret, sz) {
            c.c.set(4, st, sp0);
            return Err(e);
        }
    }
    c.load_cs(sel, d, cpl)?;
    c.c.s.rip = target;
    Ok(())
}

/// Far JMP/CALL through a call gate (`lo`, the gate's first 8 bytes, at selector `gsel`): a
/// 16- or 32-bit gate in protected mode, a 64-bit one (16 bytes) in long mode. CALL to a more
/// privileged non-conforming segment switches to the TSS's stack for the new level, pushing the
/// old SS:ESP and, for legacy gates, copying the gate's parameter count of words or dwords;
/// in long mode SS becomes the null selector of the new level.
fn call_gate(c: &mut Ctx, call: bool, gsel: u16, lo: u64, ret: u64) -> R<()> {
    let long = c.c.s.long_mode_active();
    let cpl = c.c.cpl();
    let gerr = u32::from(gsel & 0xfffc);
    let gdpl = ((lo >> 45) & 3) as u8;
    if gdpl < cpl || gdpl < (gsel & 3) as u8 {
        return Err(gp(gerr));
    }
    if lo & (1 << 47) == 0 {
        return Err(super::super::cpu::np(gerr));
    }
    let mut off = (lo & 0xffff) | ((lo >> 32) & 0xffff_0000);
    if long {
        let hi = c.sys_read(c.desc_addr(gsel)? + 8, 8)?;
        if (hi >> 40) & 0x1f != 0 {
            return Err(gp(gerr));
        }
        off |= (hi & 0xffff_ffff) << 32;
    }
    let gate32 = lo & (1 << 43) != 0;
    let w: u8 = if long {
        8
    } else if gate32 {
        4
    } else {
        2
    };
    let tsel = ((lo >> 16) & 0xffff) as u16;
    if tsel & 0xfffc == 0 {
        return Err(gp(0));
    }
    let terr = u32::from(tsel & 0xfffc);
    let td = c.read_desc(tsel).map_err(|_| gp(terr))?;
    let cs = from_desc(tsel, td);
    if !cs.s || cs.typ & 8 == 0 || cs.dpl > cpl || (long && (!cs.l || cs.db)) {
        return Err(gp(terr));
    }
    if !cs.present {
        return Err(super::super::cpu::np(terr));
    }
    let conforming = cs.typ & 4 != 0;
    let target = if long { off } else { off & mask(w) };
    if !long && target > u64::from(cs.limit) {
        return Err(gp(0));
    }
    if !call {
        if !conforming && cs.dpl != cpl {
            return Err(gp(terr));
        }
        c.load_cs(tsel, td, cpl)?;
        c.c.s.rip = target;
        return Ok(());
    }
    let old_cs = u64::from(c.c.s.cs.selector);
    let new_cpl = if conforming { cpl } else { cs.dpl };
    if new_cpl == cpl {
        let st = c.c.stack_size();
        let sp0 = c.c.get(4, st);
        c.push(old_cs, w)?;
        if let Err(e) = c.push(ret, w) {
            c.c.set(4, st, sp0);
            return Err(e);
        }
        c.load_cs(tsel, td, cpl)?;
        c.c.s.rip = target;
        return Ok(());
    }
    let old_ss = c.c.s.ss;
    let old_sp = c.c.s.gpr[4];
    let tr = c.c.s.tr;
    if long {
        let nsp = c.sys_read(tr.base + 4 + u64::from(new_cpl) * 8, 8)?;
        let frame = [u64::from(old_ss.selector), old_sp, old_cs, ret];
        let mut sp = nsp;
        for x in frame {
            sp = sp.wrapping_sub(8);
            c.sys_write(sp, 8, x)?;
        }
        c.load_cs(tsel, td, new_cpl)?;
        c.c.s.ss = crate::state::Segment {
            selector: u16::from(new_cpl),
            unusable: true,
            dpl: new_cpl,
            db: true,
            ..Default::default()
        };
        c.c.s.gpr[4] = sp;
        c.c.s.rip = target;
        return Ok(());
    }
    // The new stack from the TSS (32- or 16-bit), checked as the CPU does (#TS, #SS).
    let (nsp, mut ss) = c.inner_stack(new_cpl)?;
    // Parameters, read from the old stack before anything changes.
    let count = (lo >> 32) & 0x1f;
    let old_spm = if old_ss.db { 0xffff_ffff } else { 0xffff };
    let mut params = Vec::with_capacity(count as usize);
    for k in 0..count {
        let a = old_sp.wrapping_add(k * u64::from(w)) & old_spm;
        params.push(c.sys_read(old_ss.base.wrapping_add(a), w)?);
    }
    let mut frame = vec![u64::from(old_ss.selector), old_sp & old_spm];
    frame.extend(params.iter().rev());
    frame.extend([old_cs, ret]);
    let spm: u64 = if ss.db { 0xffff_ffff } else { 0xffff };
    let mut p = nsp & spm;
    for x in &frame {
        p = p.wrapping_sub(u64::from(w)) & spm;
        c.sys_write(ss.base.wrapping_add(p), w, *x)?;
    }
    c.load_cs(tsel, td, new_cpl)?;
    ss.typ |= 1;
    c.c.s.ss = ss;
    let st = if ss.db { 4 } else { 2 };
    c.c.set(4, st, (nsp & !spm) | p);
    c.c.s.rip = target;
    Ok(())
}

fn far_ret(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sz: u8 = match i.code() {
        Code::Retfw | Code::Retfw_imm16 => 2,
        Code::Retfd | Code::Retfd_imm16 => 4,
        _ => 8,
    };
    let imm = if i.op_count() > 0 {
        i.immediate(0) & 0xffff
    } else {
        0
    };
    let off = c.peek(0, sz)?;
    let sel = c.peek(u64::from(sz), sz)? as u16;
    if !c.c.pe() || c.c.s.rflags & rflags::VM != 0 {
        c.sp_add(2 * u64::from(sz) + imm);
        c.c.s.cs.selector = sel;
        c.c.s.cs.base = u64::from(sel) << 4;
        c.c.s.rip = off & mask(sz);
        return Ok(());
    }
    let cpl = c.c.cpl();
    let rpl = (sel & 3) as u8;
    if rpl < cpl {
        return Err(gp(u32::from(sel & 0xfffc)));
    }
    let d = c.check_code(sel, false)?;
    let cs = from_desc(sel, d);
    let conforming = cs.typ & 4 != 0;
    if (conforming && cs.dpl > rpl) || (!conforming && cs.dpl != rpl) {
        return Err(gp(u32::from(sel & 0xfffc)));
    }
    if rpl > cpl {
        let k = 2 * u64::from(sz) + imm;
        let nsp = c.peek(k, sz)?;
        let nss = c.peek(k + u64::from(sz), sz)? as u16;
        c.load_cs(sel, d, rpl)?;
        c.load_seg(seg::SS, nss)?;
        let st = c.c.stack_size();
        c.c.set(4, st, nsp.wrapping_add(imm));
        for s in [seg::ES, seg::DS, seg::FS, seg::GS] {
            let x = *c.c.seg(s);
            if !x.unusable && x.dpl < rpl && x.typ & 0xc != 0xc {
                *c.c.seg_mut(s) = crate::state::Segment {
                    unusable: true,
                    ..Default::default()
                };
            }
        }
    } else {
        c.load_cs(sel, d, cpl)?;
        c.sp_add(2 * u64::from(sz) + imm);
    }
    c.c.s.rip = if c.c.long64() {
        off
    } else {
        off & mask(sz.min(4))
    };
    Ok(())
}

fn iret(c: &mut Ctx, i: &Instruction) -> R<()> {
    c.unblock_nmi();
    let sz: u8 = match i.code() {
        Code::Iretw => 2,
        Code::Iretd => 4,
        _ => 8,
    };
    let k = u64::from(sz);
    let ip = c.peek(0, sz)?;
    let sel = c.peek(k, sz)? as u16;
    let fl = c.peek(2 * k, sz)?;
    let cur = c.c.rflags();
    if !c.c.pe() {
        c.sp_add(3 * k);
        c.c.s.cs.selector = sel;
        c.c.s.cs.base = u64::from(sel) << 4;
        c.c.s.rip = ip & mask(sz);
        let m = if sz == 2 { 0xffff } else { 0x257fd5 };
        c.c.set_rflags((cur & !m) | (fl & m));
        return Ok(());
    }
    if c.c.s.rflags & rflags::VM != 0 {
        // IOPL 3: as in real mode, but IOPL (and VM) stay; else #GP(0) for the monitor.
        if cur & rflags::IOPL != rflags::IOPL {
            return Err(gp(0));
        }
        c.sp_add(3 * k);
        *c.c.seg_mut(seg::CS) = vm86_seg(sel, true);
        c.c.s.rip = ip & mask(sz);
        let m = super::stack::popf_mask(c) & mask(sz);
        c.c.set_rflags((cur & !m) | (fl & m));
        return Ok(());
    }
    if cur & rflags::NT != 0 && !c.c.s.long_mode_active() {
        // Back to the task in this TSS's link field.
        let link = c.sys_read(c.c.s.tr.base, 2)? as u16;
        return c.task_switch(link, Switch::Iret, i.next_ip(), None);
    }
    let cpl = c.c.cpl();
    if fl & rflags::VM != 0 && cpl == 0 && sz == 4 {
        // Into virtual-8086 mode: EIP, CS, EFLAGS, ESP, SS, ES, DS, FS, GS.
        let mut w = [0u64; 6];
        for (n, x) in w.iter_mut().enumerate() {
            *x = c.peek((3 + n as u64) * k, sz)?;
        }
        let [nsp, nss, es, ds, fs, gs] = w;
        c.c.set_rflags(fl & 0x003f_7fd5);
        *c.c.seg_mut(seg::CS) = vm86_seg(sel, true);
        for (r, v) in [
            (seg::SS, nss),
            (seg::ES, es),
            (seg::DS, ds),
            (seg::FS, fs),
            (seg::GS, gs),
        ] {
            *c.c.seg_mut(r) = vm86_seg(v as u16, false);
        }
        c.c.s.gpr[4] = nsp & 0xffff_ffff;
        c.c.s.rip = ip & 0xffff;
        return Ok(());
    }
    let rpl = (sel & 3) as u8;
    if rpl < cpl {
        return Err(gp(u32::from(sel & 0xfffc)));
    }
    let d = c.check_code(sel, false)?;
    let cs = from_desc(sel, d);
    let conforming = cs.typ & 4 != 0;
    if (conforming && cs.dpl > rpl) || (!conforming && cs.dpl != rpl) {
        return Err(gp(u32::from(sel & 0xfffc)));
    }
    let mut m = super::stack::popf_mask(c) | rflags::RF;
    if cpl == 0 {
        m |= rflags::IF | rflags::IOPL | rflags::VIF | rflags::VIP;
    }
    m &= mask(sz);
    let long = c.c.long64();
    if rpl > cpl || long {
        let nsp = c.peek(3 * k, sz)?;
        let nss = c.peek(4 * k, sz)? as u16;
        c.load_cs(sel, d, rpl)?;
        if nss & 0xfffc == 0 && c.c.long64() && rpl < 3 {
            c.c.s.ss = crate::state::Segment {
                selector: nss,
                unusable: true,
                dpl: rpl,
                db: true,
                ..Default::default()
            };
        } else {
            c.load_seg(seg::SS, nss)?;
        }
        let st = c.c.stack_size();
        c.c.set(4, if long { 8 } else { st }, nsp);
        if rpl > cpl {
            for s in [seg::ES, seg::DS, seg::FS, seg::GS] {
                let x = *c.c.seg(s);
                if !x.unusable && x.dpl < rpl && x.typ & 0xc != 0xc {
                    let base = x.base;
                    *c.c.seg_mut(s) = crate::state::Segment {
                        unusable: true,
                        base,
                        ..Default::default()
                    };
                }
            }
        }
    } else {
        c.load_cs(sel, d, cpl)?;
        c.sp_add(3 * k);
    }
    c.c.set_rflags((cur & !m) | (fl & m));
    c.c.s.rip = if c.c.long64() {
        ip
    } else {
        ip & mask(sz.min(4))
    };
    Ok(())
}

/// A segment register as virtual-8086 mode has it: real-mode base and limit, DPL 3.
pub(crate) fn vm86_seg(sel: u16, code: bool) -> crate::state::Segment {
    crate::state::Segment {
        dpl: 3,
        ..crate::state::Segment::real_mode(sel, code)
    }
}

fn int(c: &mut Ctx, i: &Instruction) -> R<()> {
    let (v, src) = match i.mnemonic() {
        Mnemonic::Int3 => (vec::BP, Source::Software),
        Mnemonic::Int1 => (vec::DB, Source::Exception),
        Mnemonic::Into => {
            if !c.c.lazy.of() {
                c.c.s.rip = i.next_ip();
                return Ok(());
            }
            (vec::OF, Source::Software)
        }
        _ => (i.immediate(0) as u8, Source::Software),
    };
    // In virtual-8086 mode INT n goes to the protected-mode handler only at IOPL 3 (without
    // VME); otherwise the monitor gets #GP(0). INT3, INTO and INT1 are not IOPL-sensitive.
    if c.c.s.rflags & rflags::VM != 0
        && c.c.s.rflags & rflags::IOPL != rflags::IOPL
        && i.mnemonic() == Mnemonic::Int
    {
        return Err(gp(0));
    }
    let save = c.c.s.clone();
    let lazy = c.c.lazy;
    if let Err(e) = c.deliver(v, None, src, i.next_ip()) {
        c.c.s = save;
        c.c.lazy = lazy;
        return Err(e);
    }
    Ok(())
}

fn bound(c: &mut Ctx, i: &Instruction) -> R<()> {
    if i.op1_kind() != OpKind::Memory {
        return Err(UD);
    }
    let sz = op_size(i, 0);
    let idx = sext(c.rd(i, 0)?, sz);
    let (s, a) = c.ea(i);
    let lo = sext(c.read(s, a, sz)?, sz);
    let hi = sext(
        c.read(
            s,
            a.wrapping_add(u64::from(sz)) & mask(super::addr_size(i)),
            sz,
        )?,
        sz,
    );
    if idx < lo || idx > hi {
        return Err(Fault::Exc {
            vector: vec::BR,
            code: None,
        });
    }
    Ok(())
}
