//! What the shims of `buffer.rs` do once they hold references: the memory slow path (the soft
//! MMU's full access: segment checks, page walk with A/D bits, #PF, MMIO, writes into translated
//! code), which then refills the TLB mirror, and helper calls, after which the runtime caches are
//! brought up to date with whatever the helper changed.

use super::super::cpu::Ctx;
use super::super::mmu::Acc;
use super::buffer::Pair;
use super::rt::Rt;

/// Refills the mirror after a successful access of `sz` bytes at `seg:off`.
fn refill(rt: &mut Rt, ctx: &mut Ctx, seg: u8, off: u64, sz: u8, acc: Acc) {
    let Ok(lin) = ctx.seg_addr(seg, off, sz, acc == Acc::W) else {
        return;
    };
    if (lin & 0xfff) + u64::from(sz) > 0x1000 {
        return;
    }
    let user = ctx.c.cpl() == 3;
    if let Ok(e) = ctx.translate(lin, acc, user) {
        rt.fill(ctx.c, lin, acc, user, e.host, e.phys, e.global);
    }
}

/// A load that missed the fast path.
pub fn load(rt: &mut Rt, ctx: &mut Ctx, segsz: u64, off: u64) -> Pair {
    let (seg, sz) = (segsz as u8, (segsz >> 8) as u8);
    rt.slow += 1;
    match ctx.read(seg, off, sz) {
        Ok(value) => {
            refill(rt, ctx, seg, off, sz, Acc::R);
            Pair { value, status: 0 }
        }
        Err(f) => {
            rt.fault = Some(f);
            Pair {
                value: 0,
                status: 1,
            }
        }
    }
}

/// A store that missed the fast path.
pub fn store(rt: &mut Rt, ctx: &mut Ctx, segsz: u64, off: u64, v: u64) -> u64 {
    let (seg, sz) = (segsz as u8, (segsz >> 8) as u8);
    rt.slow += 1;
    match ctx.write(seg, off, sz, v) {
        Ok(()) => {
            refill(rt, ctx, seg, off, sz, Acc::W);
            0
        }
        Err(f) => {
            rt.fault = Some(f);
            1
        }
    }
}

/// Whether the helper of this instruction leaves alone everything `Rt::refresh` follows: the
/// segment registers, CR0, EFER, RFLAGS.VM, the TLB and the pending events (STI and MOV SS
/// shadows, injected events). A short list of data instructions the translator leaves to
/// helpers; anything else is refreshed after, which a helper call in an LZMA loop spent a
/// quarter of its time on.
pub fn keeps_mode(i: &iced_x86::Instruction) -> bool {
    use iced_x86::Mnemonic::*;
    matches!(
        i.mnemonic(),
        Shl | Sal
            | Shr
            | Sar
            | Rol
            | Ror
            | Rcl
            | Rcr
            | Shld
            | Shrd
            | Bt
            | Bts
            | Btr
            | Btc
            | Bsf
            | Bsr
            | Popcnt
            | Lzcnt
            | Tzcnt
            | Bswap
            | Mul
            | Imul
            | Div
            | Idiv
            | Xadd
            | Cmpxchg
            | Cmpxchg8b
            | Cmpxchg16b
            | Xchg
            | Adc
            | Sbb
            | Movsb
            | Movsw
            | Movsd
            | Movsq
            | Stosb
            | Stosw
            | Stosd
            | Stosq
            | Lodsb
            | Lodsw
            | Lodsd
            | Lodsq
            | Cmpsb
            | Cmpsw
            | Cmpsd
            | Cmpsq
            | Scasb
            | Scasw
            | Scasd
            | Scasq
            | In
            | Out
            | Insb
            | Insw
            | Insd
            | Outsb
            | Outsw
            | Outsd
            | Pushf
            | Pushfd
            | Pushfq
            | Lahf
            | Sahf
            | Cpuid
            | Rdtsc
            | Rdtscp
    )
}

/// A helper call.
pub fn call(rt: &mut Rt, ctx: &mut Ctx, site: u64) -> u64 {
    let s = &rt.calls[site as usize];
    let r = (s.f)(ctx, s.insn());
    if !s.keeps_mode {
        rt.refresh(ctx);
    }
    match r {
        Ok(()) => 0,
        Err(f) => {
            rt.fault = Some(f);
            1
        }
    }
}
