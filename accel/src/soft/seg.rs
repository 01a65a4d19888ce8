//! Segmentation: descriptor reads from the GDT/LDT, descriptor-to-cache conversion, and the
//! checked loads of data, stack and system segment registers with their #GP/#SS/#NP codes.

use crate::state::{Segment, rflags};

use super::cpu::{Ctx, R, gp, np, seg, ss_fault};

/// Builds a segment cache from a selector and a raw 8-byte descriptor.
pub fn from_desc(sel: u16, d: u64) -> Segment {
    let mut s = Segment {
        selector: sel,
        base: ((d >> 16) & 0xff_ffff) | ((d >> 56) & 0xff) << 24,
        ..Default::default()
    };
    let mut limit = ((d & 0xffff) | ((d >> 48) & 0xf) << 16) as u32;
    s.set_attributes(((d >> 40) & 0xf0ff) as u16);
    if s.g {
        limit = limit << 12 | 0xfff;
    }
    s.limit = limit;
    s
}

impl Ctx<'_> {
    /// The linear address of a selector's descriptor, or #GP(selector) beyond the table.
    pub fn desc_addr(&self, sel: u16) -> R<u64> {
        let idx = u64::from(sel & 0xfff8);
        let (base, limit, usable) = if sel & 4 != 0 {
            let l = &self.c.s.ldt;
            (l.base, u64::from(l.limit), !l.unusable && l.present)
        } else {
            (self.c.s.gdt.base, u64::from(self.c.s.gdt.limit), true)
        };
        if !usable || idx + 7 > limit {
            return Err(gp(u32::from(sel & 0xfffc)));
        }
        Ok(base.wrapping_add(idx))
    }

    /// Reads the 8-byte descriptor of a selector.
    pub fn read_desc(&mut self, sel: u16) -> R<u64> {
        let a = self.desc_addr(sel)?;
        self.sys_read(a, 8)
    }

    /// Reads a 16-byte system descriptor (long mode) or an 8-byte one, as a segment cache.
    pub fn read_sys_desc(&mut self, sel: u16) -> R<(Segment, u64)> {
        let a = self.desc_addr(sel)?;
        let d = self.sys_read(a, 8)?;
        let mut s = from_desc(sel, d);
        if self.c.s.long_mode_active() {
            if a + 15 > self.c.s.gdt.base + u64::from(self.c.s.gdt.limit) {
                return Err(gp(u32::from(sel & 0xfffc)));
            }
            let hi = self.sys_read(a + 8, 8)?;
            s.base |= (hi & 0xffff_ffff) << 32;
        }
        Ok((s, a))
    }

    /// Loads LDTR from `sel` (LLDT, a task switch): null leaves it unusable; a selector in the
    /// LDT, past the GDT's limit or not naming an LDT descriptor is `bad` (#GP for LLDT, #TS for
    /// a task switch), an absent one #NP; page faults reading the GDT go through as they are.
    pub fn load_ldt(&mut self, sel: u16, bad: fn(u32) -> super::cpu::Fault) -> R<()> {
        let err = u32::from(sel & 0xfffc);
        if sel & 0xfffc == 0 {
            self.c.s.ldt = Segment {
                selector: sel,
                unusable: true,
                ..Default::default()
            };
            return Ok(());
        }
        if sel & 4 != 0 {
            return Err(bad(err));
        }
        self.desc_addr(sel).map_err(|_| bad(err))?;
        let (s, _) = self.read_sys_desc(sel)?;
        if s.s || s.typ != 2 {
            return Err(bad(err));
        }
        if !s.present {
            return Err(super::cpu::np(err));
        }
        self.c.s.ldt = s;
        Ok(())
    }

    /// Sets the accessed bit of a descriptor in memory.
    pub fn set_accessed(&mut self, sel: u16, d: u64) -> R<()> {
        if d & (1 << 40) == 0 {
            let a = self.desc_addr(sel)?;
            self.sys_write(a + 5, 1, (d >> 40) | 1)?;
        }
        Ok(())
    }

    /// Loads a data or stack segment register as MOV/POP/LDS do.
    pub fn load_seg(&mut self, sr: u8, sel: u16) -> R<()> {
        if !self.c.pe() || self.c.s.rflags & rflags::VM != 0 {
            let s = self.c.seg_mut(sr);
            s.selector = sel;
            s.base = u64::from(sel) << 4;
            s.unusable = false;
            s.present = true;
            if self.c.s.rflags & rflags::VM != 0 {
                *self.c.seg_mut(sr) = Segment::real_mode(sel, sr == seg::CS);
                self.c.seg_mut(sr).dpl = 3;
            }
            return Ok(());
        }
        let cpl = self.c.cpl();
        let rpl = (sel & 3) as u8;
        if sel & 0xfffc == 0 {
            if sr == seg::SS && !(self.c.long64() && cpl != 3 && rpl == cpl) {
                return Err(gp(0));
            }
            let s = self.c.seg_mut(sr);
            *s = Segment {
                selector: sel,
                unusable: true,
                ..Default::default()
            };
            if sr == seg::SS {
                s.dpl = cpl;
                s.db = true;
            }
            return Ok(());
        }
        let d = self.read_desc(sel)?;
        let s = from_desc(sel, d);
        let err = u32::from(sel & 0xfffc);
        if sr == seg::SS {
            let writable_data = s.s && s.typ & 0xa == 0x2;
            if rpl != cpl || s.dpl != cpl || !writable_data {
                return Err(gp(err));
            }
            if !s.present {
                return Err(ss_fault(err));
            }
        } else {
            let code = s.typ & 8 != 0;
            let readable = !code || s.typ & 2 != 0;
            let conforming = code && s.typ & 4 != 0;
            if !s.s || !readable || (!conforming && (s.dpl < cpl || s.dpl < rpl)) {
                return Err(gp(err));
            }
            if !s.present {
                return Err(np(err));
            }
        }
        self.set_accessed(sel, d)?;
        let mut s = s;
        s.typ |= 1;
        *self.c.seg_mut(sr) = s;
        Ok(())
    }

    /// Loads CS for a far transfer to code segment `sel` at privilege `cpl` (checks done by the
    /// caller); sets the selector's RPL to `cpl`.
    pub fn load_cs(&mut self, sel: u16, d: u64, cpl: u8) -> R<()> {
        self.set_accessed(sel, d)?;
        let mut s = from_desc((sel & 0xfffc) | u16::from(cpl), d);
        s.typ |= 1;
        self.c.s.cs = s;
        Ok(())
    }

    /// Checks a code segment descriptor for a direct far JMP/CALL/RET to privilege `cpl`.
    pub fn check_code(&mut self, sel: u16, same_priv: bool) -> R<u64> {
        if sel & 0xfffc == 0 {
            return Err(gp(0));
        }
        let d = self.read_desc(sel)?;
        let s = from_desc(sel, d);
        let err = u32::from(sel & 0xfffc);
        if !s.s || s.typ & 8 == 0 {
            return Err(gp(err));
        }
        let cpl = self.c.cpl();
        let rpl = (sel & 3) as u8;
        let conforming = s.typ & 4 != 0;
        if same_priv {
            if conforming {
                if s.dpl > cpl {
                    return Err(gp(err));
                }
            } else if rpl > cpl || s.dpl != cpl {
                return Err(gp(err));
            }
        }
        if !s.present {
            return Err(np(err));
        }
        Ok(d)
    }
}
