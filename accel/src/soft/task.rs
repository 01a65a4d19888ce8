//! Hardware task switches (protected mode, 32-bit TSS): far JMP or CALL to a TSS descriptor or a
//! task gate, an interrupt or exception through a task gate, and IRET with NT set (SDM vol. 3,
//! 7.3). The outgoing state is saved in the current TSS, the incoming one loaded from the new TSS
//! (CR3, EIP, EFLAGS, the general registers, the segment registers and the LDT), TR, the busy
//! bits, NT and the back link follow the kind of switch, and CR0.TS is set. Errors found while
//! loading the new task's segments are raised in the new task, as on hardware.
//!
//! Not done (reported as unsupported): 16-bit (286) TSSs.

use super::cpu::{Ctx, Fault, R, gp, np, seg, ts};
use super::seg::from_desc;
use crate::state::{Segment, bits, rflags};

/// What starts a task switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    /// JMP far: the old task is left (not busy), no link.
    Jmp,
    /// CALL far: the new task is nested (NT, back link), the old one stays busy.
    Call,
    /// An interrupt or exception through a task gate: nested, as CALL.
    Int,
    /// IRET with NT: back to the task in the back link; the old task is left.
    Iret,
}

/// Offsets in a 32-bit TSS.
mod off {
    pub const LINK: u64 = 0x00;
    pub const CR3: u64 = 0x1c;
    pub const EIP: u64 = 0x20;
    pub const EFLAGS: u64 = 0x24;
    pub const EAX: u64 = 0x28;
    pub const ES: u64 = 0x48;
    pub const LDT: u64 = 0x60;
}

/// The smallest limit of a 32-bit TSS.
const TSS32_MIN_LIMIT: u32 = 0x67;

impl Ctx<'_> {
    /// Switches to the task whose TSS selector is `sel` (from the instruction, the task gate or
    /// the back link); `next` is the EIP saved for the outgoing task; `code` an error code to
    /// push on the new task's stack (exceptions through task gates).
    pub fn task_switch(&mut self, sel: u16, kind: Switch, next: u64, code: Option<u32>) -> R<()> {
        let err = u32::from(sel & 0xfffc);
        if self.c.s.long_mode_active() {
            return Err(gp(err));
        }
        // A bad target TSS is #TS for IRET (the link was bad) and #GP otherwise.
        let bad = || {
            if kind == Switch::Iret {
                ts(err)
            } else {
                gp(err)
            }
        };
        if sel & 4 != 0 || sel & 0xfffc == 0 {
            return Err(bad());
        }
        let (new, desc_at) = self.read_sys_desc(sel).map_err(|_| bad())?;
        let busy = new.typ & 2 != 0;
        let tss32 = !new.s && (new.typ & !2) == 9;
        let tss16 = !new.s && (new.typ & !2) == 1;
        if tss16 {
            return Err(Fault::Unsupported("a task switch to a 16-bit TSS"));
        }
        if !tss32 {
            return Err(bad());
        }
        // The incoming task must be busy for IRET and available otherwise.
        if busy != (kind == Switch::Iret) {
            return Err(bad());
        }
        if !new.present {
            return Err(np(err));
        }
        if new.limit < TSS32_MIN_LIMIT {
            return Err(ts(err));
        }
        let old = self.c.s.tr;
        if old.typ & !2 != 9 || old.limit < TSS32_MIN_LIMIT {
            // The outgoing task has no 32-bit TSS to save into.
            return Err(Fault::Unsupported(
                "a task switch from a 16-bit or missing TSS",
            ));
        }
        // Read the whole new TSS first: a fault here leaves the old task untouched.
        let nb = new.base;
        let mut image = [0u32; 26];
        for (k, w) in image.iter_mut().enumerate() {
            *w = self.sys_read(nb + 4 * k as u64, 4)? as u32;
        }
        let new_cr3 = u64::from(image[(off::CR3 / 4) as usize]);
        let new_eip = u64::from(image[(off::EIP / 4) as usize]);
        let mut new_flags = u64::from(image[(off::EFLAGS / 4) as usize]);

        // Save the outgoing task.
        let ob = old.base;
        let mut flags = self.c.rflags();
        if kind == Switch::Iret {
            flags &= !rflags::NT;
        }
        self.sys_write(ob + off::EIP, 4, next & 0xffff_ffff)?;
        self.sys_write(ob + off::EFLAGS, 4, flags & 0xffff_ffff)?;
        for r in 0..8u64 {
            self.sys_write(
                ob + off::EAX + 4 * r,
                4,
                self.c.s.gpr[r as usize] & 0xffff_ffff,
            )?;
        }
        for sr in [seg::ES, seg::CS, seg::SS, seg::DS, seg::FS, seg::GS] {
            let v = u64::from(self.c.seg(sr).selector);
            self.sys_write(ob + off::ES + 4 * u64::from(sr), 2, v)?;
        }
        // Busy bits: the old task stays busy when nested (CALL, interrupt).
        if matches!(kind, Switch::Jmp | Switch::Iret) {
            self.set_busy(old.selector, false)?;
        }
        if kind != Switch::Iret {
            let b5 = self.sys_read(desc_at + 5, 1)?;
            self.sys_write(desc_at + 5, 1, b5 | 2)?;
        }
        if matches!(kind, Switch::Call | Switch::Int) {
            new_flags |= rflags::NT;
            self.sys_write(nb + off::LINK, 2, u64::from(old.selector))?;
        }

        // Load the incoming task's state.
        self.c.s.tr = Segment {
            typ: new.typ | 2,
            ..new
        };
        self.c.s.cr0 |= bits::CR0_TS;
        if self.c.s.cr0 & bits::CR0_PG != 0 {
            self.c.s.cr3 = new_cr3;
            self.c.tlb.flush(true);
        }
        self.c.s.rip = new_eip;
        self.c.set_rflags(new_flags | rflags::FIXED);
        for r in 0..8usize {
            self.c.s.gpr[r] = u64::from(image[(off::EAX / 4) as usize + r]);
        }
        let sels: Vec<u16> = (0..6)
            .map(|k| image[(off::ES / 4) as usize + k] as u16)
            .collect();
        let ldt = image[(off::LDT / 4) as usize] as u16;
        // The selectors go in unchecked first (so that a fault below is taken in the new task
        // with its selectors in place), then each descriptor is loaded and checked.
        for (k, &s) in sels.iter().enumerate() {
            self.c.seg_mut(k as u8).selector = s;
        }
        self.load_ldt(ldt, ts)?;
        if new_flags & rflags::VM != 0 {
            // A virtual-8086 task: its selectors are paragraphs, nothing to check.
            for (k, &s) in sels.iter().enumerate() {
                *self.c.seg_mut(k as u8) = super::translate::vm86_seg(s, k as u8 == seg::CS);
            }
            self.c.s.rip &= 0xffff;
        } else {
            self.load_task_segments(&sels)?;
        }
        if let Some(c) = code {
            let st = self.c.stack_size();
            self.push(u64::from(c), st.min(4))?;
        }
        Ok(())
    }

    /// Sets or clears the busy bit of the TSS descriptor `sel` in the GDT.
    fn set_busy(&mut self, sel: u16, on: bool) -> R<()> {
        let a = self.desc_addr(sel)?;
        let b5 = self.sys_read(a + 5, 1)?;
        let v = if on { b5 | 2 } else { b5 & !2 };
        self.sys_write(a + 5, 1, v)
    }

    /// CS, SS and the data segments of the new task, checked against its privilege level (the
    /// RPL of its CS): descriptor errors are #TS, absent segments #NP (#SS for SS).
    fn load_task_segments(&mut self, sels: &[u16]) -> R<()> {
        let cs_sel = sels[usize::from(seg::CS)];
        let cpl = (cs_sel & 3) as u8;
        let err = u32::from(cs_sel & 0xfffc);
        if cs_sel & 0xfffc == 0 {
            return Err(ts(err));
        }
        let d = self.read_desc(cs_sel).map_err(|_| ts(err))?;
        let cs = from_desc(cs_sel, d);
        let conforming = cs.typ & 4 != 0;
        if !cs.s
            || cs.typ & 8 == 0
            || (conforming && cs.dpl > cpl)
            || (!conforming && cs.dpl != cpl)
        {
            return Err(ts(err));
        }
        if !cs.present {
            return Err(np(err));
        }
        self.load_cs(cs_sel, d, cpl)?;
        // load_seg checks against the CPL just loaded; its #GP becomes #TS here.
        let as_ts = |f: Fault| match f {
            Fault::Exc { vector: 13, code } => ts(code.unwrap_or(0)),
            f => f,
        };
        let ss_sel = sels[usize::from(seg::SS)];
        if ss_sel & 0xfffc == 0 {
            return Err(ts(0));
        }
        self.load_seg(seg::SS, ss_sel).map_err(as_ts)?;
        for sr in [seg::ES, seg::DS, seg::FS, seg::GS] {
            self.load_seg(sr, sels[usize::from(sr)]).map_err(as_ts)?;
        }
        Ok(())
    }
}
