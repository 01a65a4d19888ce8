//! Port I/O: IN and OUT with an immediate or DX port, checked against IOPL and the TSS I/O
//! permission bitmap in protected mode (a denied access raises #GP(0)).

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::{Builder, op_size};
use crate::exit::ExitReasonKind;
use crate::soft::cpu::{Ctx, R, gp};
use crate::state::rflags;

pub(super) fn lower(b: &mut Builder, i: &Instruction) -> bool {
    match i.mnemonic() {
        Mnemonic::In => b.call(port_in),
        Mnemonic::Out => b.call(port_out),
        _ => return false,
    }
    true
}

fn port(c: &Ctx, i: &Instruction, n: u32) -> u16 {
    if i.op_kind(n) == OpKind::Register {
        c.c.get(2, 2) as u16
    } else {
        i.immediate(n) as u16
    }
}

fn port_in(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sz = op_size(i, 0);
    let p = port(c, i, 1);
    if !io_allowed(c, p, sz)? {
        return Err(gp(0));
    }
    let mut b = [0u8; 4];
    c.io.pio_read(c.c.index, p, &mut b[..usize::from(sz)]);
    c.c.counters.bump(ExitReasonKind::IoIn);
    c.c.set(0, sz, u64::from(u32::from_le_bytes(b)));
    Ok(())
}

fn port_out(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sz = op_size(i, 1);
    let p = port(c, i, 0);
    if !io_allowed(c, p, sz)? {
        return Err(gp(0));
    }
    let v = c.c.get(0, sz) as u32;
    c.io.pio_write(c.c.index, p, &v.to_le_bytes()[..usize::from(sz)]);
    c.c.counters.bump(ExitReasonKind::IoOut);
    Ok(())
}

/// Whether port I/O of `size` bytes at `port` is allowed: always in real mode; in protected mode
/// at CPL <= IOPL outside virtual-8086 mode, else when the TSS I/O permission bitmap allows it.
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
