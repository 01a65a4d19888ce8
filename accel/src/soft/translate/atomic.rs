//! LOCK-prefixed read-modify-writes, and XCHG with memory (always locked), made atomic against
//! the other vCPUs' threads.
//!
//! The ordinary lowering of `lock add [m], r` is a load, an add and a store: another vCPU's
//! store between the two is lost (a spinlock released with a plain `mov` while another CPU's
//! `xchg` is half done stays taken forever). Here such an instruction is one helper: the
//! operand's page is translated for writing first (so a fault leaves everything untouched),
//! then the new value is computed from the old one and stored with a host compare-and-swap,
//! retried until no other vCPU wrote in between (on a page holding translated code too, whose
//! blocks are then invalidated). Operands that are not naturally aligned, that are not RAM
//! (MMIO, ROM) and CMPXCHG16B take a slow path under one machine-wide lock: atomic among
//! locked instructions, as a split lock is.

use std::sync::Mutex;

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::{Builder, addr_size, op_size};
use crate::soft::cpu::{Ctx, R};
use crate::soft::flags::{CcOp, mask, sext};
use crate::soft::mmu::{Acc, host_cas};
use crate::state::rflags;

/// Serialises the locked instructions that cannot use a host atomic.
static SLOW: Mutex<()> = Mutex::new(());

/// Lowers a locked read-modify-write of memory to the atomic helper.
pub(super) fn lower(b: &mut Builder, i: &Instruction) -> bool {
    use Mnemonic::*;
    let m = i.mnemonic();
    let mem0 = i.op0_kind() == OpKind::Memory;
    let locked = match m {
        Xchg => mem0 || i.op1_kind() == OpKind::Memory,
        Add | Adc | Sub | Sbb | And | Or | Xor | Inc | Dec | Not | Neg | Xadd | Cmpxchg | Bts
        | Btr | Btc | Cmpxchg8b | Cmpxchg16b => i.has_lock_prefix() && mem0,
        _ => false,
    };
    if locked {
        b.call(locked_rmw);
    }
    locked
}

/// Reads the `sz`-byte operand at `sg:off`, asks `f` for the value to store (None: store
/// nothing), stores it atomically, and returns the old value.
fn rmw(c: &mut Ctx, sg: u8, off: u64, sz: u8, f: &mut dyn FnMut(u64) -> Option<u64>) -> R<u64> {
    let lin = c.seg_addr(sg, off, sz, true)?;
    let user = c.c.cpl() == 3;
    let aligned = lin % u64::from(sz) == 0;
    if aligned {
        // The whole operand is in one page: translating it for writing raises the #PF the
        // instruction would, before anything changes.
        let e = c.translate(lin, Acc::W, user)?;
        let pa = e.phys | (lin & 0xfff);
        // RAM whose page holds translated code has no host address in the TLB (its writes
        // take the slow path for invalidation), but is just as atomic: a spinlock next to
        // the code that takes it is common.
        let host = if e.host != 0 {
            Some(e.host + (lin & 0xfff) as usize)
        } else {
            c.ram_ptr(pa, sz)
        };
        if let Some(p) = host {
            let mut stored = false;
            let old = host_cas(p, sz, &mut |old| {
                let new = f(old);
                stored = new.is_some();
                new
            });
            if stored {
                c.code_written(pa, sz);
            }
            return Ok(old);
        }
    }
    let _g = SLOW.lock().unwrap_or_else(|p| p.into_inner());
    let old = c.read(sg, off, sz)?;
    if let Some(new) = f(old) {
        c.write(sg, off, sz, new)?;
    }
    Ok(old)
}

fn locked_rmw(c: &mut Ctx, i: &Instruction) -> R<()> {
    use Mnemonic::*;
    let m = i.mnemonic();
    if m == Cmpxchg8b || m == Cmpxchg16b {
        return wide(c, i);
    }
    let mem = if i.op0_kind() == OpKind::Memory { 0 } else { 1 };
    let sz = op_size(i, mem);
    let mk = mask(sz);
    let (sg, mut off) = c.ea(i);
    let mut bit = 0;
    if matches!(m, Bts | Btr | Btc) {
        // A register bit offset addresses the bit string around the operand.
        let bits = u64::from(sz) * 8;
        let o = c.rd_sz(i, 1, sz)?;
        if i.op1_kind() == OpKind::Register {
            let o = sext(o, sz);
            let words = o.div_euclid(bits as i64);
            off = off.wrapping_add((words * i64::from(sz)) as u64) & mask(addr_size(i));
            bit = o.rem_euclid(bits as i64) as u64;
        } else {
            bit = o % bits;
        }
    }
    let src = match m {
        Xchg => c.rd(i, 1 - mem)? & mk,
        Add | Adc | Sub | Sbb | And | Or | Xor | Xadd | Cmpxchg => c.rd(i, 1)? & mk,
        _ => 0,
    };
    let cin = u64::from(c.c.lazy.cf());
    let acc = c.c.get(0, sz);
    let compute = move |old: u64| -> Option<u64> {
        let new = match m {
            Xchg => src,
            Add | Xadd => old.wrapping_add(src),
            Adc => old.wrapping_add(src).wrapping_add(cin),
            Sub => old.wrapping_sub(src),
            Sbb => old.wrapping_sub(src).wrapping_sub(cin),
            And => old & src,
            Or => old | src,
            Xor => old ^ src,
            Inc => old.wrapping_add(1),
            Dec => old.wrapping_sub(1),
            Not => !old,
            Neg => old.wrapping_neg(),
            Bts => old | 1 << bit,
            Btr => old & !(1 << bit),
            Btc => old ^ 1 << bit,
            _ if old == acc => src,
            _ => return None,
        };
        Some(new & mk)
    };
    let mut f = compute;
    let old = rmw(c, sg, off, sz, &mut f)? & mk;
    let r = compute(old).unwrap_or(old);
    let lazy = |c: &mut Ctx, cc, a, b, r| c.c.lazy.set(cc, sz, a, b, r);
    match m {
        Xchg => c.wr(i, 1 - mem, old)?,
        Add => lazy(c, CcOp::Add, old, src, r),
        Adc => lazy(c, CcOp::Adc, old, src, r),
        Sub => lazy(c, CcOp::Sub, old, src, r),
        Sbb => lazy(c, CcOp::Sbb, old, src, r),
        And | Or | Xor => lazy(c, CcOp::Logic, r, r, r),
        Inc => lazy(c, CcOp::Inc, old, 1, r),
        Dec => lazy(c, CcOp::Dec, old, 1, r),
        Not => {}
        Neg => lazy(c, CcOp::Sub, 0, old, r),
        Xadd => {
            c.wr(i, 1, old)?;
            lazy(c, CcOp::Add, old, src, r);
        }
        Bts | Btr | Btc => {
            let f = c.c.rflags() & !rflags::CF;
            c.c.set_rflags(f | if old >> bit & 1 != 0 { rflags::CF } else { 0 });
        }
        _ => {
            lazy(c, CcOp::Sub, acc, old, acc.wrapping_sub(old) & mk);
            if old != acc {
                c.c.set(0, sz, old);
            }
        }
    }
    Ok(())
}

/// LOCK CMPXCHG8B (a host 64-bit compare-and-swap) and LOCK CMPXCHG16B (under the slow lock).
fn wide(c: &mut Ctx, i: &Instruction) -> R<()> {
    if i.mnemonic() == Mnemonic::Cmpxchg16b {
        let _g = SLOW.lock().unwrap_or_else(|p| p.into_inner());
        return super::alu::cmpxchg_wide(c, i);
    }
    let (sg, off) = c.ea(i);
    let cur = c.c.get(0, 4) | c.c.get(2, 4) << 32;
    let new = c.c.get(3, 4) | c.c.get(1, 4) << 32;
    let old = rmw(c, sg, off, 8, &mut |old| (old == cur).then_some(new))?;
    let f = c.c.rflags() & !rflags::ZF;
    if old == cur {
        c.c.set_rflags(f | rflags::ZF);
    } else {
        c.c.set(0, 4, old & 0xffff_ffff);
        c.c.set(2, 4, old >> 32);
        c.c.set_rflags(f);
    }
    Ok(())
}
