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

/// Whether port I/O is allowed at the current privilege (no TSS bitmap: IOPL only).
pub fn io_allowed(c: &mut Ctx, port: u16, size: u8) -> R<bool> {
    if !c.c.pe() {
        return Ok(true);
    }
    let iopl = ((c.c.s.rflags & rflags::IOPL) >> 12) as u8;
    if c.c.s.rflags & rflags::VM == 0 && c.c.cpl() <= iopl {
        return Ok(true);
    }
    // The TSS I/O permission bitmap (SDM 20.5.2): every bit of the accessed ports must be
    // clear, and the bytes holding them inside the TSS limit.
    let tr = c.c.s.tr;
    if tr.unusable || !matches!(tr.typ, 0x9 | 0xb) || tr.limit < 0x67 {
        return Ok(false);
    }
    let base = c.sys_read(tr.base + 0x66, 2)?;
    let byte = base + u64::from(port / 8);
    if byte + 1 > u64::from(tr.limit) {
        return Ok(false);
    }
    let bits = c.sys_read(tr.base + byte, 2)?;
    let want = ((1u64 << size) - 1) << (port % 8);
    Ok(bits & want == 0)
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
        if !io_allowed(c, port, sz)? {
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
    loop {
        if rep && c.c.get(1, asz) == 0 {
            break;
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
