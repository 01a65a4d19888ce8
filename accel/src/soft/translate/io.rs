//! Port I/O: IN and OUT with an immediate or DX port, checked against IOPL and the TSS I/O
//! permission bitmap in protected mode (a denied access raises #GP(0)).

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::{Builder, op_size};
use crate::exit::ExitReasonKind;
use crate::soft::cpu::{Ctx, R, gp};

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
    if !super::string::io_allowed(c, p, sz)? {
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
    if !super::string::io_allowed(c, p, sz)? {
        return Err(gp(0));
    }
    let v = c.c.get(0, sz) as u32;
    c.io.pio_write(c.c.index, p, &v.to_le_bytes()[..usize::from(sz)]);
    c.c.counters.bump(ExitReasonKind::IoOut);
    Ok(())
}
