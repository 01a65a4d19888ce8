//! The VEX instructions that touch guest memory element by element, in Rust over the soft MMU
//! (the rest of AVX, AVX2, FMA and F16C runs natively through `sse`): the masked moves
//! (VMASKMOVPS/PD, VPMASKMOVD/Q), which access only the elements their mask selects and so fault
//! only for those, and the gathers (VGATHERDPS/DPD/QPS/QPD, VPGATHERDD/DQ/QD/QQ), which load
//! element by element in order, clearing each mask element as its load completes, so that a
//! fault leaves the completed elements in the destination and the rest in the mask.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::fpstate::check_avx;
use crate::soft::cpu::{Ctx, R, UD};

/// A vector register: (number, 32 bytes wide?).
pub(super) fn vreg(r: Register) -> (usize, bool) {
    if r.is_ymm() {
        ((r as usize - Register::YMM0 as usize) & 15, true)
    } else {
        (
            (r as usize).wrapping_sub(Register::XMM0 as usize) & 15,
            false,
        )
    }
}

/// The 32 bytes of YMMn.
fn get(c: &Ctx, n: usize) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..16].copy_from_slice(&c.c.s.fpu.xmm[n].to_le_bytes());
    b[16..].copy_from_slice(&c.c.s.fpu.ymm_hi[n].to_le_bytes());
    b
}

/// Writes YMMn whole.
fn set(c: &mut Ctx, n: usize, b: &[u8; 32]) {
    let lo: [u8; 16] = b[..16].try_into().unwrap_or_default();
    let hi: [u8; 16] = b[16..].try_into().unwrap_or_default();
    c.c.s.fpu.xmm[n] = u128::from_le_bytes(lo);
    c.c.s.fpu.ymm_hi[n] = u128::from_le_bytes(hi);
}

/// Element `k` (of `w` bytes) of `b`.
fn elem(b: &[u8; 32], k: usize, w: usize) -> u64 {
    let mut e = [0u8; 8];
    e[..w].copy_from_slice(&b[k * w..k * w + w]);
    u64::from_le_bytes(e)
}

fn put_elem(b: &mut [u8; 32], k: usize, w: usize, v: u64) {
    b[k * w..k * w + w].copy_from_slice(&v.to_le_bytes()[..w]);
}

/// Whether element `k` of a mask selects (its top bit).
fn selects(mask: &[u8; 32], k: usize, w: usize) -> bool {
    mask[k * w + w - 1] & 0x80 != 0
}

/// VMASKMOVPS, VMASKMOVPD, VPMASKMOVD, VPMASKMOVQ: the load form (`dst, mask, mem`) zeroes
/// the elements its mask leaves out (and, for VEX.128, bits 255:128); the store form
/// (`mem, mask, src`) writes only the selected elements, after checking all of them can be
/// written. Elements left out are never accessed.
pub(super) fn maskmov(c: &mut Ctx, i: &Instruction) -> R<()> {
    check_avx(c)?;
    let w = match i.mnemonic() {
        Mnemonic::Vmaskmovps | Mnemonic::Vpmaskmovd => 4,
        _ => 8,
    };
    let (mask_reg, wide) = vreg(i.op1_register());
    let mask = get(c, mask_reg);
    let n = if wide { 32 } else { 16 } / w;
    let (s, off) = c.ea(i);
    let am = super::fpstate::asz_mask(i);
    let at = |k: usize| off.wrapping_add((k * w) as u64) & am;
    if i.op0_kind() == OpKind::Memory {
        let data = get(c, vreg(i.op2_register()).0);
        let user = c.c.cpl() == 3;
        for k in (0..n).filter(|&k| selects(&mask, k, w)) {
            let lin = c.seg_addr(s, at(k), w as u8, true)?;
            c.probe_write(lin, w as u8, user)?;
        }
        for k in (0..n).filter(|&k| selects(&mask, k, w)) {
            c.write(s, at(k), w as u8, elem(&data, k, w))?;
        }
        return Ok(());
    }
    let mut out = [0u8; 32];
    for k in (0..n).filter(|&k| selects(&mask, k, w)) {
        let v = c.read(s, at(k), w as u8)?;
        put_elem(&mut out, k, w, v);
    }
    set(c, vreg(i.op0_register()).0, &out);
    Ok(())
}

/// The gathers: `dst, [base + index_k * scale + disp], mask`.
pub(super) fn gather(c: &mut Ctx, i: &Instruction) -> R<()> {
    use Mnemonic::*;
    check_avx(c)?;
    let (dst, dst_wide) = vreg(i.op0_register());
    let (msk, _) = vreg(i.op2_register());
    let (idx, idx_wide) = vreg(i.memory_index());
    if dst == msk || dst == idx || msk == idx {
        return Err(UD);
    }
    let (w, iw) = match i.mnemonic() {
        Vgatherdps | Vpgatherdd => (4, 4),
        Vgatherdpd | Vpgatherdq => (8, 4),
        Vgatherqps | Vpgatherqd => (4, 8),
        _ => (8, 8),
    };
    let dst_bytes = if dst_wide { 32 } else { 16 };
    let idx_bytes = if idx_wide { 32 } else { 16 };
    let n = (dst_bytes / w).min(idx_bytes / iw);
    let index = get(c, idx);
    let asz = super::addr_size(i);
    let am = crate::soft::flags::mask(asz);
    let base = match super::gpr(i.memory_base()) {
        Some((r, _)) => c.c.get(r, asz),
        None => 0,
    };
    let disp = i.memory_displacement64();
    let scale = u64::from(i.memory_index_scale());
    let seg = super::sreg(i.memory_segment());
    let mut d = get(c, dst);
    let mut m = get(c, msk);
    // Bits above the elements (and above 127 for the 128-bit forms) are zeroed in both.
    let clear_above = |b: &mut [u8; 32]| b[n * w..].fill(0);
    clear_above(&mut d);
    for k in 0..n {
        if !selects(&m, k, w) {
            continue;
        }
        let ix = elem(&index, k, iw);
        let ix = if iw == 4 {
            ix as u32 as i32 as i64 as u64
        } else {
            ix
        };
        let off = base.wrapping_add(ix.wrapping_mul(scale)).wrapping_add(disp) & am;
        match c.read(seg, off, w as u8) {
            Ok(v) => {
                put_elem(&mut d, k, w, v);
                put_elem(&mut m, k, w, 0);
            }
            Err(e) => {
                set(c, dst, &d);
                clear_above(&mut m);
                set(c, msk, &m);
                return Err(e);
            }
        }
    }
    set(c, dst, &d);
    set(c, msk, &[0; 32]);
    Ok(())
}
