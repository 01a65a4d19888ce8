//! Exception and interrupt delivery: real-mode IVT, protected-mode IDT gates (with privilege
//! change and the TSS stack switch), long-mode gates (IST), error codes, and the double- and
//! triple-fault rules.

use crate::state::{Segment, bits, rflags};

use super::cpu::{Ctx, Fault, R, gp, np, seg, vec};
use super::seg::from_desc;

/// Where an event comes from (this decides the error code's EXT bit and the gate DPL check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// An exception raised by an instruction.
    Exception,
    /// INT n / INT3 / INTO: the gate's DPL is checked.
    Software,
    /// An external interrupt.
    External,
}

/// Whether a `w`-byte stack slot at offset `off` lies inside `ss`'s limit (expand-up, or
/// expand-down up to 64 KiB or 4 GiB by its B bit), as a PUSH checks it.
fn stack_slot_fits(ss: &Segment, off: u64, w: u8) -> bool {
    let last = off + u64::from(w) - 1;
    let limit = u64::from(ss.limit);
    if ss.typ & 0xc == 0x4 {
        let top = if ss.db { 0xffff_ffff } else { 0xffff };
        off > limit && last <= top
    } else {
        last <= limit
    }
}

fn contributory(v: u8) -> bool {
    matches!(v, 0 | 10 | 11 | 12 | 13)
}

/// What the run loop should do after an exception.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivered {
    /// The handler is entered.
    Ok,
    /// Triple fault.
    Shutdown,
    /// The backend could not deliver (task gates, VM86).
    Unsupported(&'static str),
}

impl Ctx<'_> {
    /// Delivers a hardware exception, escalating to #DF and triple fault as the CPU does.
    pub fn raise(&mut self, vector: u8, code: Option<u32>) -> Delivered {
        let mut cur = (vector, code);
        let mut first = vector;
        for _ in 0..4 {
            match self.deliver(cur.0, cur.1, Source::Exception, self.c.s.rip) {
                Ok(()) => return Delivered::Ok,
                Err(Fault::Exc {
                    vector: v2,
                    code: c2,
                }) => {
                    if first == vec::DF {
                        return Delivered::Shutdown;
                    }
                    let df = (contributory(first) && contributory(v2))
                        || (first == vec::PF && (contributory(v2) || v2 == vec::PF));
                    cur = if df { (vec::DF, Some(0)) } else { (v2, c2) };
                    first = cur.0;
                }
                Err(Fault::Unsupported(w)) => return Delivered::Unsupported(w),
                Err(Fault::Halt) => return Delivered::Ok,
            }
        }
        Delivered::Shutdown
    }

    /// The stack for privilege level `cpl` from the current 32- or 16-bit TSS (interrupts and
    /// call gates into an inner level outside long mode): its SP and its checked SS (#TS for a
    /// null, mismatched or unwritable selector, #SS if not present).
    pub fn inner_stack(&mut self, cpl: u8) -> R<(u64, Segment)> {
        let tr = self.c.s.tr;
        let (sp, sel) = if tr.typ & 8 != 0 {
            let a = tr.base + 4 + u64::from(cpl) * 8;
            (self.sys_read(a, 4)?, self.sys_read(a + 4, 2)? as u16)
        } else {
            let a = tr.base + 2 + u64::from(cpl) * 4;
            (self.sys_read(a, 2)?, self.sys_read(a + 2, 2)? as u16)
        };
        let err = u32::from(sel & 0xfffc);
        if sel & 0xfffc == 0 {
            return Err(super::cpu::ts(err));
        }
        let d = self.read_desc(sel).map_err(|_| super::cpu::ts(err))?;
        let ss = from_desc(sel, d);
        if (sel & 3) as u8 != cpl || ss.dpl != cpl || !ss.s || ss.typ & 0xa != 2 {
            return Err(super::cpu::ts(err));
        }
        if !ss.present {
            return Err(super::cpu::ss_fault(err));
        }
        Ok((sp, ss))
    }

    /// Delivers vector `v` with the return address `ret`.
    pub fn deliver(&mut self, v: u8, code: Option<u32>, src: Source, ret: u64) -> R<()> {
        let ext = u32::from(src == Source::External);
        if !self.c.pe() {
            return self.deliver_real(v, ret);
        }
        let vm86 = self.c.s.rflags & rflags::VM != 0;
        let long = self.c.s.long_mode_active();
        let gsz: u64 = if long { 16 } else { 8 };
        let idt = self.c.s.idt;
        let gerr = u32::from(v) * 8 + 2 + ext;
        if u64::from(v) * gsz + gsz - 1 > u64::from(idt.limit) {
            return Err(gp(gerr));
        }
        let ga = idt.base + u64::from(v) * gsz;
        let lo = self.sys_read(ga, 8)?;
        let hi = if long { self.sys_read(ga + 8, 8)? } else { 0 };
        let typ = ((lo >> 40) & 0x1f) as u8;
        let dpl = ((lo >> 45) & 3) as u8;
        let present = lo & (1 << 47) != 0;
        let valid = if long {
            matches!(typ, 0xe | 0xf)
        } else {
            matches!(typ, 0x6 | 0x7 | 0xe | 0xf | 0x5)
        };
        if !valid {
            return Err(gp(gerr));
        }
        let cpl = self.c.cpl();
        if src == Source::Software && dpl < cpl {
            return Err(gp(gerr));
        }
        if !present {
            return Err(np(gerr));
        }
        if typ == 0x5 {
            let tss = ((lo >> 16) & 0xffff) as u16;
            return self.task_switch(tss, super::task::Switch::Int, ret, code);
        }
        let trap = typ & 1 != 0;
        let gate32 = typ & 8 != 0;
        let sel = ((lo >> 16) & 0xffff) as u16;
        let mut off = (lo & 0xffff) | ((lo >> 32) & 0xffff_0000);
        if long {
            off |= (hi & 0xffff_ffff) << 32;
        }
        if sel & 0xfffc == 0 {
            return Err(gp(ext));
        }
        let d = self
            .read_desc(sel)
            .map_err(|_| gp(u32::from(sel & 0xfffc) + ext))?;
        let cs = from_desc(sel, d);
        let serr = u32::from(sel & 0xfffc) + ext;
        if !cs.s || cs.typ & 8 == 0 || cs.dpl > cpl || (long && !cs.l) {
            return Err(gp(serr));
        }
        if !cs.present {
            return Err(np(serr));
        }
        let new_cpl = if cs.typ & 4 != 0 { cpl } else { cs.dpl };
        // From virtual-8086 mode only to a ring-0 handler, through a 32-bit gate.
        if vm86 && new_cpl != 0 {
            return Err(gp(serr));
        }
        if vm86 && !gate32 {
            return Err(Fault::Unsupported(
                "a 16-bit gate taken from virtual-8086 mode",
            ));
        }
        // Faults push RFLAGS with RF set, so that the faulting instruction's restart does not
        // take an instruction breakpoint again (SDM 17.3.1.1); traps and interrupts do not.
        let fault = src == Source::Exception && !matches!(v, 1 | 3 | 4);
        let old_flags = self.c.rflags() | if fault { rflags::RF } else { 0 };
        let old_cs = self.c.s.cs.selector;
        let old_ss = self.c.s.ss;
        let old_sp = self.c.s.gpr[4];
        if long {
            let ist = (lo >> 32) & 7;
            let tr_base = self.c.s.tr.base;
            let mut sp = if ist != 0 {
                self.sys_read(tr_base + 0x24 + (ist - 1) * 8, 8)?
            } else if new_cpl < cpl {
                self.sys_read(tr_base + 4 + u64::from(new_cpl) * 8, 8)?
            } else {
                old_sp
            };
            sp &= !0xf;
            let mut frame = vec![
                u64::from(old_ss.selector),
                old_sp,
                old_flags,
                u64::from(old_cs),
                ret,
            ];
            if let Some(c) = code {
                frame.push(u64::from(c));
            }
            for w in &frame {
                sp = sp.wrapping_sub(8);
                self.sys_write(sp, 8, *w)?;
            }
            self.load_cs(sel, d, new_cpl)?;
            if new_cpl < cpl {
                self.c.s.ss = Segment {
                    selector: u16::from(new_cpl),
                    unusable: true,
                    dpl: new_cpl,
                    db: true,
                    ..Default::default()
                };
            }
            self.c.s.gpr[4] = sp;
            self.c.s.rip = off;
        } else {
            let w: u8 = if gate32 { 4 } else { 2 };
            let (mut ss, mut sp) = (old_ss, old_sp);
            let priv_change = new_cpl < cpl;
            if priv_change {
                (sp, ss) = self.inner_stack(new_cpl)?;
            }
            let spm = if ss.db { 0xffff_ffff } else { 0xffff };
            let mut frame = Vec::with_capacity(10);
            if vm86 {
                for r in [seg::GS, seg::FS, seg::DS, seg::ES] {
                    frame.push(u64::from(self.c.seg(r).selector));
                }
            }
            if priv_change {
                frame.push(u64::from(old_ss.selector));
                frame.push(old_sp);
            }
            frame.extend([old_flags, u64::from(old_cs), ret]);
            if let Some(c) = code {
                frame.push(u64::from(c));
            }
            // The whole frame must fit below the stack pointer inside SS's limit before anything
            // is pushed, as for a PUSH: #SS(EXT) on the current stack, #SS(selector + EXT) on an
            // inner one. A frame that wraps through 0 in steps that stay inside a 4 GiB segment
            // is fine; one whose slot straddles the top of the segment is not.
            let serr = if priv_change {
                u32::from(ss.selector & 0xfffc) + ext
            } else {
                ext
            };
            let mut p = sp;
            for _ in &frame {
                p = p.wrapping_sub(u64::from(w)) & spm;
                if !stack_slot_fits(&ss, p, w) {
                    return Err(super::cpu::ss_fault(serr));
                }
            }
            let mut p = sp;
            for x in &frame {
                p = p.wrapping_sub(u64::from(w)) & spm;
                self.sys_write(ss.base.wrapping_add(p), w, *x)?;
            }
            self.load_cs(sel, d, new_cpl)?;
            if priv_change {
                ss.typ |= 1;
                self.c.s.ss = ss;
            }
            if vm86 {
                for r in [seg::GS, seg::FS, seg::DS, seg::ES] {
                    *self.c.seg_mut(r) = Segment {
                        unusable: true,
                        ..Default::default()
                    };
                }
            }
            let sz = if ss.db { 4 } else { 2 };
            let spv = (sp & !spm) | p;
            self.c.set(4, sz, spv);
            self.c.s.rip = if gate32 {
                off & 0xffff_ffff
            } else {
                off & 0xffff
            };
        }
        let mut f = self.c.rflags() & !(rflags::TF | rflags::NT | rflags::RF | rflags::VM);
        if !trap {
            f &= !rflags::IF;
        }
        self.c.set_rflags(f);
        self.after_control_transfer();
        Ok(())
    }

    fn deliver_real(&mut self, v: u8, ret: u64) -> R<()> {
        let idt = self.c.s.idt;
        if u64::from(v) * 4 + 3 > u64::from(idt.limit) {
            return Err(gp(0));
        }
        let e = self.sys_read(idt.base + u64::from(v) * 4, 4)?;
        let f = self.c.rflags();
        self.push(f & 0xffff, 2)?;
        self.push(u64::from(self.c.s.cs.selector), 2)?;
        self.push(ret & 0xffff, 2)?;
        let sel = (e >> 16) as u16;
        self.c.s.cs.selector = sel;
        self.c.s.cs.base = u64::from(sel) << 4;
        self.c.s.rip = e & 0xffff;
        self.c
            .set_rflags(f & !(rflags::IF | rflags::TF | rflags::AC | rflags::RF));
        Ok(())
    }

    /// Hook after anything that may change CPL or the code size: nothing cached depends on it
    /// today (the translation key is recomputed per block), kept as the one place to add it.
    pub fn after_control_transfer(&mut self) {}

    /// Whether an NMI is to be delivered now: one is latched in the CPU (`nmi_pending`) or the
    /// machine has one for vCPU `index` (then taken from it), and neither an NMI handler (until
    /// its IRET) nor an STI or MOV SS shadow blocks it. IF plays no part.
    pub fn nmi_deliverable(&mut self, index: usize) -> bool {
        let ev = &self.c.s.events;
        if ev.nmi_masked || ev.sti_shadow || ev.mov_ss_shadow {
            return false;
        }
        if !ev.nmi_pending && self.io.nmi_pending(index) && self.io.take_nmi(index) {
            self.c.s.events.nmi_pending = true;
        }
        self.c.s.events.nmi_pending
    }

    /// IRET ends the blocking of NMIs that an NMI's delivery began, even when it faults (SDM
    /// vol. 3, 6.7.1). An NMI that waited for it is taken from the machine now, so that the
    /// run loop (and compiled code, which leaves for a pending event) delivers it before the
    /// next instruction.
    pub fn unblock_nmi(&mut self) {
        let ev = &mut self.c.s.events;
        if !ev.nmi_masked {
            return;
        }
        ev.nmi_masked = false;
        let index = self.c.index;
        if !ev.nmi_pending && self.io.nmi_pending(index) && self.io.take_nmi(index) {
            self.c.s.events.nmi_pending = true;
        }
    }

    /// Whether an external interrupt can be taken now.
    pub fn interrupts_open(&self) -> bool {
        let s = &self.c.s;
        s.rflags & rflags::IF != 0 && !s.events.sti_shadow && !s.events.mov_ss_shadow
    }

    /// Whether EFER.LMA should be set (LME and paging on).
    pub fn update_lma(&mut self) {
        let s = &mut self.c.s;
        if s.efer & bits::EFER_LME != 0 && s.cr0 & bits::CR0_PG != 0 {
            s.efer |= bits::EFER_LMA;
        } else {
            s.efer &= !bits::EFER_LMA;
        }
    }
}
