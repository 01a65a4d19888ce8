//! String instructions: MOVS STOS LODS CMPS SCAS INS OUTS, with REP/REPE/REPNE, any address
//! size and DF. Each iteration commits its register updates only after its memory accesses, so
//! a fault mid-REP leaves RSI/RDI/RCX at the faulting iteration with RIP at the instruction. Long
//! REPs yield every few thousand iterations (RIP stays, the run loop resumes them); while
//! single-stepping they yield after every iteration, as the TF trap does on hardware.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::Builder;
use crate::exit::ExitReasonKind;
use crate::soft::cpu::{Ctx, R, seg};
use crate::soft::flags::{CcOp, mask};
use crate::soft::mmu::{Acc, host_copy, host_fill};
use crate::state::rflags;

const CHUNK: u32 = 4096;

pub(super) fn lower(b: &mut Builder, i: &Instruction) -> bool {
    use Mnemonic::*;
    match i.mnemonic() {
        Movsb | Movsw | Movsd | Movsq | Stosb | Stosw | Stosd | Stosq | Lodsb | Lodsw | Lodsd
        | Lodsq | Cmpsb | Cmpsw | Cmpsd | Cmpsq | Scasb | Scasw | Scasd | Scasq | Insb | Insw
        | Insd | Outsb | Outsw | Outsd => {
            let plain = |k: OpKind| matches!(k, OpKind::Register | OpKind::Memory);
            if i.mnemonic() == Movsd && (plain(i.op0_kind()) || plain(i.op1_kind())) {
                return false; // SSE2 MOVSD
            }
            if i.mnemonic() == Cmpsd && i.op_count() > 2 {
                return false; // SSE2 CMPSD
            }
            b.call_end(string);
        }
        _ => return false,
    }
    true
}

fn addr_size(i: &Instruction) -> u8 {
    for n in 0..i.op_count() {
        match i.op_kind(n) {
            OpKind::MemorySegSI | OpKind::MemorySegDI | OpKind::MemoryESDI => return 2,
            OpKind::MemorySegESI | OpKind::MemorySegEDI | OpKind::MemoryESEDI => return 4,
            OpKind::MemorySegRSI | OpKind::MemorySegRDI | OpKind::MemoryESRDI => return 8,
            _ => {}
        }
    }
    2
}

/// The fast path of forward REP MOVS/STOS on RAM: as many elements as lie within the current
/// source and destination pages (and `max`), done with one host memset/memcpy; RSI/RDI/RCX are
/// updated as the element loop would. Returns the number of elements done, 0 when anything is
/// not plain (a segment limit or wrap inside the run, a page not mapped or not RAM, a write to a
/// page holding translated code, overlapping source and destination): the element loop then
/// does the next element and raises whatever fault it meets, precisely.
fn bulk(c: &mut Ctx, movs: bool, src_seg: u8, sz: u8, asz: u8, max: u32) -> u32 {
    let am = mask(asz);
    let cx = c.c.get(1, asz);
    let di = c.c.get(7, asz);
    let si = c.c.get(6, asz);
    let user = c.c.cpl() == 3;
    let esz = u64::from(sz);
    // Elements that fit in the rest of the page at linear address `lin`.
    let room = |lin: u64| (0x1000 - (lin & 0xfff)) / esz;
    let Ok(lin_d) = c.seg_addr(seg::ES, di, sz, true) else {
        return 0;
    };
    let mut k = cx.min(room(lin_d)).min(u64::from(max));
    let mut lin_s = 0;
    if movs {
        let Ok(l) = c.seg_addr(src_seg, si, sz, false) else {
            return 0;
        };
        lin_s = l;
        k = k.min(room(lin_s));
    }
    // No wrap of the offsets inside the run, and the last element passes the segment checks at
    // the linear address the first one implies.
    let span = k * esz;
    let wraps = |off: u64| off.checked_add(span - 1).is_none_or(|end| end > am);
    if k == 0 || wraps(di) || (movs && wraps(si)) {
        return 0;
    }
    let last = (k - 1) * esz;
    if c.seg_addr(seg::ES, di + last, sz, true) != Ok(lin_d.wrapping_add(last)) {
        return 0;
    }
    if movs && c.seg_addr(src_seg, si + last, sz, false) != Ok(lin_s.wrapping_add(last)) {
        return 0;
    }
    let src = if movs {
        match c.translate(lin_s, Acc::R, user) {
            Ok(e) if e.host != 0 => e.host + (lin_s & 0xfff) as usize,
            _ => return 0,
        }
    } else {
        0
    };
    let dst = match c.translate(lin_d, Acc::W, user) {
        Ok(e) if e.host != 0 => e.host + (lin_d & 0xfff) as usize,
        _ => return 0,
    };
    let len = span as usize;
    if movs {
        if dst < src + len && src < dst + len {
            return 0;
        }
        host_copy(dst, src, len);
        c.c.set(6, asz, (si + span) & am);
    } else {
        let v = c.c.get(0, sz);
        host_fill(dst, k as usize, sz, v);
    }
    c.c.set(7, asz, (di + span) & am);
    c.c.set(1, asz, (cx - k) & am);
    k as u32
}

fn string(c: &mut Ctx, i: &Instruction) -> R<()> {
    use Mnemonic::*;
    let m = i.mnemonic();
    let sz = i.memory_size().size().clamp(1, 8) as u8;
    let asz = addr_size(i);
    let am = mask(asz);
    let rep = i.has_rep_prefix() || i.has_repne_prefix();
    let is_cmp = matches!(
        m,
        Cmpsb | Cmpsw | Cmpsd | Cmpsq | Scasb | Scasw | Scasd | Scasq
    );
    let is_io = matches!(m, Insb | Insw | Insd | Outsb | Outsw | Outsd);
    if is_io {
        let port = c.c.get(2, 2) as u16;
        if !super::io::io_allowed(c, port, sz)? {
            return Err(crate::soft::cpu::gp(0));
        }
    }
    let src_seg = super::sreg(i.memory_segment());
    let step = if c.c.s.rflags & rflags::DF != 0 {
        (sz as u64).wrapping_neg()
    } else {
        u64::from(sz)
    };
    let mut n = 0u32;
    let bulk_ok = rep
        && !c.c.single_step
        && step == u64::from(sz)
        && matches!(
            m,
            Movsb | Movsw | Movsd | Movsq | Stosb | Stosw | Stosd | Stosq
        );
    loop {
        if rep && c.c.get(1, asz) == 0 {
            break;
        }
        if bulk_ok {
            let movs = matches!(m, Movsb | Movsw | Movsd | Movsq);
            let k = bulk(c, movs, src_seg, sz, asz, CHUNK - n);
            if k > 0 {
                n += k;
                if c.c.get(1, asz) == 0 {
                    break;
                }
                if n >= CHUNK {
                    c.c.icount = c.c.icount.wrapping_sub(1);
                    return Ok(());
                }
                continue;
            }
        }
        let si = c.c.get(6, asz);
        let di = c.c.get(7, asz);
        let port = c.c.get(2, 2) as u16;
        let (mut dsi, mut ddi) = (false, false);
        match m {
            Movsb | Movsw | Movsd | Movsq => {
                let v = c.read(src_seg, si, sz)?;
                c.write(seg::ES, di, sz, v)?;
                (dsi, ddi) = (true, true);
            }
            Stosb | Stosw | Stosd | Stosq => {
                let v = c.c.get(0, sz);
                c.write(seg::ES, di, sz, v)?;
                ddi = true;
            }
            Lodsb | Lodsw | Lodsd | Lodsq => {
                let v = c.read(src_seg, si, sz)?;
                c.c.set(0, sz, v);
                dsi = true;
            }
            Cmpsb | Cmpsw | Cmpsd | Cmpsq => {
                let a = c.read(src_seg, si, sz)?;
                let b = c.read(seg::ES, di, sz)?;
                c.c.lazy
                    .set(CcOp::Sub, sz, a, b, a.wrapping_sub(b) & mask(sz));
                (dsi, ddi) = (true, true);
            }
            Scasb | Scasw | Scasd | Scasq => {
                let a = c.c.get(0, sz);
                let b = c.read(seg::ES, di, sz)?;
                c.c.lazy
                    .set(CcOp::Sub, sz, a, b, a.wrapping_sub(b) & mask(sz));
                ddi = true;
            }
            Insb | Insw | Insd => {
                // Check the destination first so that a fault does not consume device input.
                let lin = c.seg_addr(seg::ES, di, sz, true)?;
                let user = c.c.cpl() == 3;
                c.probe_write(lin, sz, user)?;
                let mut buf = [0u8; 4];
                c.io.pio_read(c.c.index, port, &mut buf[..usize::from(sz)]);
                c.c.counters.bump(ExitReasonKind::IoIn);
                c.write(seg::ES, di, sz, u64::from(u32::from_le_bytes(buf)))?;
                ddi = true;
            }
            _ => {
                let v = c.read(src_seg, si, sz)?;
                let b = (v as u32).to_le_bytes();
                c.io.pio_write(c.c.index, port, &b[..usize::from(sz)]);
                c.c.counters.bump(ExitReasonKind::IoOut);
                dsi = true;
            }
        }
        if dsi {
            c.c.set(6, asz, si.wrapping_add(step) & am);
        }
        if ddi {
            c.c.set(7, asz, di.wrapping_add(step) & am);
        }
        if !rep {
            break;
        }
        let cx = c.c.get(1, asz).wrapping_sub(1) & am;
        c.c.set(1, asz, cx);
        if cx == 0 {
            break;
        }
        if is_cmp {
            let zf = c.c.lazy.zf();
            if (i.has_repe_prefix() && !zf) || (i.has_repne_prefix() && zf) {
                break;
            }
        }
        n += 1;
        if n >= CHUNK || c.c.single_step {
            // Yield: RIP stays at this instruction; it does not retire yet. Single-stepping
            // traps after every iteration, as TF does on hardware.
            c.c.icount = c.c.icount.wrapping_sub(1);
            return Ok(());
        }
    }
    c.c.s.rip = i.next_ip();
    Ok(())
}
