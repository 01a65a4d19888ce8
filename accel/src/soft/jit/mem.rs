//! Guest memory accesses in compiled code. The fast path applies the segment (base and a
//! cached limit check outside 64-bit mode), looks the linear page up in the TLB mirror (index,
//! compare the tag of the access's last byte, add the host offset) and accesses host memory
//! directly. Anything else (a miss, an access across a page, MMIO, a write to a page holding
//! translated code, a fault) goes to an out-of-line stub that writes the state back and calls
//! the MMU through `buffer::load_slow` / `store_slow`.

use dynasmrt::{DynamicLabel, DynasmApi, DynasmLabelApi, dynasm};

use super::super::cpu::seg;
use super::super::ir::T;
use super::alloc::CALLER_SAVED;
use super::buffer;
use super::codegen::{
    CORE_RIP, CORE_SMC, Gen, RT_SAVE, RT_SEG_BASE, RT_SEG_RLIM, RT_SEG_WLIM, RT_TLB_GEN,
    RT_TLB_WGEN, V, fits32, x64,
};
use super::rt::{TLB_ENTRIES, TLB_SHIFT};

/// Bytes of one TLB mirror.
const TLB_BYTES: i32 = (TLB_ENTRIES << TLB_SHIFT) as i32;

impl Gen<'_> {
    /// Emits the segment and TLB checks of an access of `sz` bytes at `seg:off`; jumps to
    /// `slow` when the fast path cannot be taken. Returns `(t, l)`: the access is at `[t + l]`.
    /// `t` is `into` when given.
    fn fast_addr(
        &mut self,
        sg: u8,
        off: V,
        sz: u8,
        write: bool,
        slow: DynamicLabel,
        into: Option<u8>,
    ) -> (u8, u8) {
        let s = i32::from(sg);
        let flat_bit = 1u64 << (u32::from(sg) + if write { 8 } else { 0 });
        let l = if self.bits == 64 || self.flat & flat_bit != 0 {
            if sg == seg::FS || sg == seg::GS {
                let l = self.alloc();
                match off {
                    V::R(h) => x64!(self.a ; mov Rq(l), Rq(h)),
                    V::I(x) => self.mov_imm(l, x),
                }
                let base = RT_SEG_BASE + 8 * s;
                x64!(self.a ; add Rq(l), QWORD [r14 + base]);
                l
            } else {
                self.in_reg(off)
            }
        } else {
            let lim = if write { RT_SEG_WLIM } else { RT_SEG_RLIM } + 8 * s;
            let base = RT_SEG_BASE + 8 * s;
            let l = self.alloc();
            match off {
                V::R(h) => {
                    x64!(self.a
                        ; lea Rq(l), [Rq(h) + i32::from(sz)]
                        ; cmp Rq(l), QWORD [r14 + lim]
                        ; ja =>slow
                        ; mov Rd(l), Rd(h)
                    );
                }
                V::I(x) => {
                    let end = x.wrapping_add(u64::from(sz));
                    if fits32(end) {
                        x64!(self.a ; cmp QWORD [r14 + lim], end as i32 ; jb =>slow);
                    } else {
                        x64!(self.a ; jmp =>slow);
                    }
                    x64!(self.a ; mov Rd(l), x as u32 as i32);
                }
            }
            x64!(self.a ; add Rd(l), DWORD [r14 + base]);
            l
        };
        let i = self.alloc();
        let t = into.unwrap_or_else(|| self.alloc());
        let user = i32::from(self.key >> 8 == 3);
        let table = user * TLB_BYTES;
        let tag = table + if write { 8 } else { 0 };
        let addend = table + 16;
        let imask = ((TLB_ENTRIES - 1) << TLB_SHIFT) as i32;
        let generation = if write { RT_TLB_WGEN } else { RT_TLB_GEN };
        x64!(self.a
            ; mov Rq(i), Rq(l)
            ; shr Rq(i), (12 - TLB_SHIFT) as i8
            ; and Rd(i), imask
            ; lea Rq(t), [Rq(l) + (i32::from(sz) - 1)]
            ; and Rq(t), -4096
            ; or Rq(t), QWORD [r14 + generation]
            ; cmp Rq(t), QWORD [r12 + Rq(i) + tag]
            ; jne =>slow
            ; mov Rq(t), QWORD [r12 + Rq(i) + addend]
        );
        (t, l)
    }

    /// Loads argument register `to` with `v` as it was before the registers were saved.
    fn arg(&mut self, to: u8, v: V, save: u16) {
        match v {
            V::R(h) if save & (1 << h) != 0 => {
                let off = RT_SAVE + 8 * i32::from(h);
                x64!(self.a ; mov Rq(to), QWORD [r14 + off]);
            }
            V::R(h) => x64!(self.a ; mov Rq(to), Rq(h)),
            V::I(x) => self.mov_imm(to, x),
        }
    }

    /// Restores saved registers except `but`.
    fn restore_regs(&mut self, save: u16, but: Option<u8>) {
        for h in 0..16u8 {
            if save & (1 << h) != 0 && Some(h) != but {
                let off = RT_SAVE + 8 * i32::from(h);
                x64!(self.a ; mov Rq(h), QWORD [r14 + off]);
            }
        }
    }

    /// `Load`.
    pub(super) fn load(&mut self, d: T, sg: u8, a: T, sz: u8) {
        let off = self.val(a);
        let slow = self.a.new_dynamic_label();
        let back = self.a.new_dynamic_label();
        let dst = self.alloc();
        let (t, l) = self.fast_addr(sg, off, sz, false, slow, Some(dst));
        match sz {
            1 => x64!(self.a ; movzx Rd(dst), BYTE [Rq(t) + Rq(l)]),
            2 => x64!(self.a ; movzx Rd(dst), WORD [Rq(t) + Rq(l)]),
            4 => x64!(self.a ; mov Rd(dst), DWORD [Rq(t) + Rq(l)]),
            _ => x64!(self.a ; mov Rq(dst), QWORD [Rq(t) + Rq(l)]),
        }
        x64!(self.a ; =>back);
        let stores = self.pending_stores();
        let live = self.r.live();
        let (rip, n) = (self.rip, self.n);
        let fault = self.fault_label(n);
        let segsz = i32::from(sg) | i32::from(sz) << 8;
        self.cold.push(Box::new(move |g: &mut Gen| {
            x64!(g.a ; =>slow);
            let save = live & CALLER_SAVED;
            for h in 0..16u8 {
                if save & (1 << h) != 0 {
                    let o = RT_SAVE + 8 * i32::from(h);
                    x64!(g.a ; mov QWORD [r14 + o], Rq(h));
                }
            }
            g.emit_stores(&stores);
            g.store_imm64(CORE_RIP, rip);
            g.arg(2, off, save);
            x64!(g.a
                ; mov rdi, r14
                ; mov esi, segsz
                ; mov rax, QWORD buffer::load_slow as *const () as usize as i64
                ; call rax
                ; test rdx, rdx
                ; jnz =>fault
                ; mov Rq(dst), rax
            );
            g.restore_regs(save, Some(dst));
            x64!(g.a ; jmp =>back);
        }));
        self.def(d, dst);
    }

    /// `Store`.
    pub(super) fn store(&mut self, sg: u8, a: T, s: T, sz: u8) {
        let v = self.val(s);
        let v = match v {
            V::I(x) if sz == 8 && !fits32(x) => V::R(self.imm_reg(x)),
            v => v,
        };
        let off = self.val(a);
        let slow = self.a.new_dynamic_label();
        let back = self.a.new_dynamic_label();
        let (t, l) = self.fast_addr(sg, off, sz, true, slow, None);
        match (v, sz) {
            (V::R(h), 1) => x64!(self.a ; mov BYTE [Rq(t) + Rq(l)], Rb(h)),
            (V::R(h), 2) => x64!(self.a ; mov WORD [Rq(t) + Rq(l)], Rw(h)),
            (V::R(h), 4) => x64!(self.a ; mov DWORD [Rq(t) + Rq(l)], Rd(h)),
            (V::R(h), _) => x64!(self.a ; mov QWORD [Rq(t) + Rq(l)], Rq(h)),
            (V::I(x), 1) => x64!(self.a ; mov BYTE [Rq(t) + Rq(l)], x as i8),
            (V::I(x), 2) => x64!(self.a ; mov WORD [Rq(t) + Rq(l)], x as i16),
            (V::I(x), 4) => x64!(self.a ; mov DWORD [Rq(t) + Rq(l)], x as i32),
            (V::I(x), _) => x64!(self.a ; mov QWORD [Rq(t) + Rq(l)], x as i32),
        }
        x64!(self.a ; =>back);
        let stores = self.pending_stores();
        let live = self.r.live();
        let (rip, n) = (self.rip, self.n);
        let fault = self.fault_label(n);
        let segsz = i32::from(sg) | i32::from(sz) << 8;
        // When the store ends its instruction, a write into translated code leaves from here
        // (the state is stored; RIP and the count are the next instruction's).
        let boundary = super::analysis::boundary_after(&self.b.ops, self.k);
        self.cold.push(Box::new(move |g: &mut Gen| {
            x64!(g.a ; =>slow);
            let save = live & CALLER_SAVED;
            for h in 0..16u8 {
                if save & (1 << h) != 0 {
                    let o = RT_SAVE + 8 * i32::from(h);
                    x64!(g.a ; mov QWORD [r14 + o], Rq(h));
                }
            }
            g.emit_stores(&stores);
            g.store_imm64(CORE_RIP, rip);
            g.arg(2, off, save);
            g.arg(1, v, save);
            x64!(g.a
                ; mov rdi, r14
                ; mov esi, segsz
                ; mov rax, QWORD buffer::store_slow as *const () as usize as i64
                ; call rax
                ; test rax, rax
                ; jnz =>fault
            );
            if let Some((next_n, next_rip)) = boundary {
                let stay = g.a.new_dynamic_label();
                x64!(g.a ; cmp BYTE [r15 + CORE_SMC], 0 ; je =>stay);
                g.store_imm64(CORE_RIP, next_rip);
                x64!(g.a ; add r13, i32::from(next_n) ; jmp extern g.exit_done ; =>stay);
            }
            g.restore_regs(save, None);
            x64!(g.a ; jmp =>back);
        }));
        if boundary.is_none() {
            self.risky = true;
        }
    }
}
