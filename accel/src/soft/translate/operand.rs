//! Operand access for helpers: effective addresses, operand reads and writes, and the stack,
//! computed from the decoded instruction at run time (the IR computes the same in ops).

use iced_x86::{Instruction, OpKind, Register};

use super::{addr_size, gpr, op_size, sreg};
use crate::soft::cpu::{Ctx, R, seg};
use crate::soft::flags::mask;

impl Ctx<'_> {
    /// The effective address (segment, offset) of the instruction's memory operand.
    pub fn ea(&self, i: &Instruction) -> (u8, u64) {
        let asz = addr_size(i);
        let m = mask(asz);
        let base = i.memory_base();
        let mut off = i.memory_displacement64();
        if base != Register::RIP && base != Register::EIP {
            if let Some((r, _)) = gpr(base) {
                off = off.wrapping_add(self.c.get(r, asz));
            }
            if let Some((r, _)) = gpr(i.memory_index()) {
                off =
                    off.wrapping_add(self.c.get(r, asz) << i.memory_index_scale().trailing_zeros());
            }
        }
        (sreg(i.memory_segment()), off & m)
    }

    /// Reads operand `n` at its own size.
    pub fn rd(&mut self, i: &Instruction, n: u32) -> R<u64> {
        let sz = op_size(i, n);
        self.rd_sz(i, n, sz)
    }

    /// Reads operand `n` at size `sz` (immediates are sign-extended by the decoder, then masked).
    pub fn rd_sz(&mut self, i: &Instruction, n: u32, sz: u8) -> R<u64> {
        match i.op_kind(n) {
            OpKind::Register => {
                let r = i.op_register(n);
                Ok(match gpr(r) {
                    Some((x, _)) => self.c.get(x, sz),
                    None if r.is_segment_register() => u64::from(self.c.seg(sreg(r)).selector),
                    None => 0,
                })
            }
            OpKind::Memory => {
                let (s, a) = self.ea(i);
                self.read(s, a, sz)
            }
            _ => Ok(i.immediate(n) & mask(sz)),
        }
    }

    /// Writes operand `n` at its own size.
    pub fn wr(&mut self, i: &Instruction, n: u32, v: u64) -> R<()> {
        let sz = op_size(i, n);
        self.wr_sz(i, n, sz, v)
    }

    /// Writes operand `n` at size `sz`.
    pub fn wr_sz(&mut self, i: &Instruction, n: u32, sz: u8, v: u64) -> R<()> {
        match i.op_kind(n) {
            OpKind::Register => {
                if let Some((x, _)) = gpr(i.op_register(n)) {
                    self.c.set(x, sz, v);
                }
                Ok(())
            }
            _ => {
                let (s, a) = self.ea(i);
                self.write(s, a, sz, v)
            }
        }
    }

    /// Checks operand `n` (if memory) is writable, before any register is changed.
    pub fn probe_op(&mut self, i: &Instruction, n: u32) -> R<()> {
        if i.op_kind(n) == OpKind::Memory {
            let sz = op_size(i, n);
            let (s, a) = self.ea(i);
            let lin = self.seg_addr(s, a, sz, true)?;
            let user = self.c.cpl() == 3;
            self.probe_write(lin, sz, user)?;
        }
        Ok(())
    }

    /// Pushes `v` of `sz` bytes (the stack pointer moves only if the write succeeds).
    pub fn push(&mut self, v: u64, sz: u8) -> R<()> {
        let st = self.c.stack_size();
        let sp = self.c.get(4, st).wrapping_sub(u64::from(sz)) & mask(st);
        self.write(seg::SS, sp, sz, v)?;
        self.c.set(4, st, sp);
        Ok(())
    }

    /// Reads the stack at offset `k` bytes above the stack pointer.
    pub fn peek(&mut self, k: u64, sz: u8) -> R<u64> {
        let st = self.c.stack_size();
        let sp = self.c.get(4, st).wrapping_add(k) & mask(st);
        self.read(seg::SS, sp, sz)
    }

    /// Adds `k` to the stack pointer.
    pub fn sp_add(&mut self, k: u64) {
        let st = self.c.stack_size();
        let sp = self.c.get(4, st).wrapping_add(k);
        self.c.set(4, st, sp);
    }

    /// Pops `sz` bytes.
    pub fn pop(&mut self, sz: u8) -> R<u64> {
        let v = self.peek(0, sz)?;
        self.sp_add(u64::from(sz));
        Ok(v)
    }
}
