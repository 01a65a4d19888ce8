//! The x87 FPU. Arithmetic, loads, stores, comparisons and the stack run on the host's x87
//! unit through `soft::native` (80-bit results, rounding and precision control, C0-C3, the
//! stack fault and tag handling are the hardware's); the control instructions (FNINIT, FNCLEX,
//! FLDCW, FNSTCW, FNSTSW, FNSTENV, FLDENV, FNSAVE, FRSTOR, FWAIT) are here.
//!
//! Like the host (FDP_EXCPTN_ONLY, no FOP compatibility mode), FIP follows every non-control
//! instruction while FOP and FDP change only with an unmasked exception. An unmasked exception
//! is simplified: the masked response is kept, FSW.ES and B are set, and the next waiting
//! instruction raises #MF (CR0.NE) — kernels and C libraries run with every x87 exception
//! masked.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::Builder;
use super::fpstate::{
    abridged_tag, asz_mask, check_pending, check_x87, full_tag, read_bytes, write_bytes,
};
use super::sse::{run_native, set_compare_flags, store_result};
use crate::soft::cpu::{Ctx, R};
use crate::state::bits;

/// Lowers an x87 instruction (and FWAIT); anything else is left to the next family.
pub(super) fn lower(b: &mut Builder, i: &Instruction) -> bool {
    use Mnemonic::*;
    match i.mnemonic() {
        Fninit | Fnclex | Fldcw | Fnstcw | Fnstsw | Fneni | Fndisi | Fnsetpm | Frstpm => {
            b.call(control)
        }
        Fnstenv | Fldenv | Fnsave | Frstor => b.call(env),
        Wait => b.call(fwait),
        Emms => b.call(emms),
        _ if is_x87(i) => b.call(x87_native),
        _ => return false,
    }
    true
}

/// Whether `i` is an x87 instruction (by the CPUID feature iced-x86 gives it).
fn is_x87(i: &Instruction) -> bool {
    // (FISTTP is SSE3's, by CPUID, and the x87's, by what it runs on.)
    i.mnemonic() == Mnemonic::Fisttp
        || i.cpuid_features().iter().any(|x| {
            use iced_x86::CpuidFeature::*;
            matches!(x, FPU | FPU287 | FPU287XL_ONLY | FPU387 | FPU387SL_ONLY)
        })
}

/// EMMS (AMD kernels run `fnclex; emms; fild` before every FXRSTOR, the FXSAVE-leak
/// workaround; the other MMX instructions are in sse.rs): every x87 register empty, TOP 0.
fn emms(c: &mut Ctx, _: &Instruction) -> R<()> {
    if c.c.s.cr0 & bits::CR0_EM != 0 {
        return Err(crate::soft::cpu::UD);
    }
    super::fpstate::check_x87(c)?;
    check_pending(c)?;
    // Like every MMX instruction, TOP becomes 0 (measured on an AMD EPYC host; Bochs does the
    // same); the physical registers keep their values.
    let f = &mut c.c.s.fpu;
    let top = usize::from(f.top());
    f.st.rotate_right(top);
    f.fsw &= !0x3800;
    f.ftw = 0;
    Ok(())
}

/// FWAIT: #NM when CR0.MP and CR0.TS are both set, then a pending unmasked exception.
fn fwait(c: &mut Ctx, _: &Instruction) -> R<()> {
    let cr0 = c.c.s.cr0;
    if cr0 & bits::CR0_MP != 0 && cr0 & bits::CR0_TS != 0 {
        return Err(super::fpstate::NM);
    }
    check_pending(c)
}

/// FSW.ES and B from the exception flags and the masks.
fn summary(fsw: u16, fcw: u16) -> u16 {
    if fsw & 0x3f & !fcw != 0 {
        fsw | 0x8080
    } else {
        fsw & !0x8080
    }
}

/// Sets FSW (TOP included), keeping each physical register's value: `st` is in stack order,
/// so a new TOP rotates it.
fn set_fsw(f: &mut crate::state::FpuState, fsw: u16) {
    let old = f.top();
    f.fsw = fsw;
    let shift = usize::from(f.top().wrapping_sub(old) & 7);
    f.st.rotate_left(shift);
}

/// FNINIT's state (ST0-7 keep their physical registers' values).
fn init(f: &mut crate::state::FpuState) {
    set_fsw(f, 0);
    f.fcw = 0x37f;
    f.ftw = 0;
    f.fop = 0;
    f.fip = 0;
    f.fdp = 0;
}

fn control(c: &mut Ctx, i: &Instruction) -> R<()> {
    use Mnemonic::*;
    check_x87(c)?;
    let f = &mut c.c.s.fpu;
    match i.mnemonic() {
        Fninit => init(f),
        Fnclex => f.fsw &= 0x7f00,
        Fldcw => {
            let v = c.rd_sz(i, 0, 2)? as u16;
            let f = &mut c.c.s.fpu;
            // Bit 6 reads as one and bits 13-15 as zero, as on the host.
            f.fcw = (v & 0x1f3f) | 0x40;
            f.fsw = summary(f.fsw, f.fcw);
        }
        Fnstcw => {
            let v = f.fcw;
            c.wr_sz(i, 0, 2, u64::from(v))?;
        }
        Fnstsw => {
            let v = f.fsw;
            if i.op0_kind() == OpKind::Register {
                c.c.set(0, 2, u64::from(v));
            } else {
                c.wr_sz(i, 0, 2, u64::from(v))?;
            }
        }
        // FENI, FDISI, FSETPM and FRSTPM do nothing after the 80287.
        _ => {}
    }
    Ok(())
}

/// FNSTENV, FLDENV, FNSAVE, FRSTOR in the protected-mode layouts (28 bytes with a 32-bit
/// operand size, 14 with 16-bit; used in real mode too, a simplification); reserved halves
/// are written as ones, FCS and FDS as zero, as the host does.
fn env(c: &mut Ctx, i: &Instruction) -> R<()> {
    use Mnemonic::*;
    check_x87(c)?;
    let m = i.mnemonic();
    let wide = i.memory_size().size() == 28 || i.memory_size().size() == 108;
    let (s, off) = c.ea(i);
    let am = asz_mask(i);
    let env_len = if wide { 28 } else { 14 };
    let regs = matches!(m, Fnsave | Frstor);
    let len = env_len + if regs { 80 } else { 0 };
    let mut a = [0u8; 108];
    if matches!(m, Fnstenv | Fnsave) {
        let f = c.c.s.fpu;
        let words = [
            u32::from(f.fcw),
            u32::from(f.fsw),
            u32::from(full_tag(&f)),
            f.fip as u32,
            u32::from(f.fop) << 16,
            f.fdp as u32,
            0,
        ];
        for (k, w) in words.iter().enumerate() {
            if wide {
                let w = if matches!(k, 0 | 1 | 2 | 6) {
                    w | 0xffff_0000
                } else {
                    *w
                };
                a[4 * k..4 * k + 4].copy_from_slice(&w.to_le_bytes());
            } else {
                let w = if k == 4 { 0 } else { *w as u16 };
                a[2 * k..2 * k + 2].copy_from_slice(&w.to_le_bytes());
            }
        }
        if regs {
            for (n, v) in f.st.iter().enumerate() {
                a[env_len + 10 * n..env_len + 10 * n + 10].copy_from_slice(&v.to_le_bytes()[..10]);
            }
        }
        write_bytes(c, s, off, &a[..len], am)?;
        let f = &mut c.c.s.fpu;
        if m == Fnsave {
            init(f);
        } else {
            // FNSTENV masks every exception after storing.
            f.fcw |= 0x3f;
        }
        return Ok(());
    }
    read_bytes(c, s, off, &mut a[..len], am)?;
    let word = |k: usize| -> u32 {
        if wide {
            u32::from_le_bytes(a[4 * k..4 * k + 4].try_into().unwrap_or_default())
        } else {
            u32::from(u16::from_le_bytes([a[2 * k], a[2 * k + 1]]))
        }
    };
    let f = &mut c.c.s.fpu;
    f.fcw = (word(0) as u16 & 0x1f3f) | 0x40;
    f.ftw = abridged_tag(word(2) as u16);
    f.fip = u64::from(word(3));
    f.fop = if wide {
        (word(4) >> 16) as u16 & 0x7ff
    } else {
        0
    };
    f.fdp = u64::from(word(5));
    let fsw = summary(word(1) as u16, f.fcw);
    set_fsw(f, fsw);
    if regs {
        for (n, v) in f.st.iter_mut().enumerate() {
            let mut b = [0u8; 16];
            b[..10].copy_from_slice(&a[env_len + 10 * n..env_len + 10 * n + 10]);
            *v = u128::from_le_bytes(b);
        }
    }
    Ok(())
}

/// The guest's FOP: the low three bits of the D8-DF opcode byte and the ModR/M byte.
fn fop_of(c: &Ctx, i: &Instruction) -> u16 {
    let mut e = iced_x86::Encoder::new(c.c.s.code_bitness());
    if e.encode(i, i.ip()).is_err() {
        return 0;
    }
    let bytes = e.take_buffer();
    match bytes.iter().position(|&x| (0xd8..=0xdf).contains(&x)) {
        Some(p) if p + 1 < bytes.len() => u16::from(bytes[p] & 7) << 8 | u16::from(bytes[p + 1]),
        _ => 0,
    }
}

fn x87_native(c: &mut Ctx, i: &Instruction) -> R<()> {
    check_x87(c)?;
    check_pending(c)?;
    let n = run_native(c, i, true)?;
    store_result(c, i, &n)?;
    let old = c.c.s.fpu;
    let mut f = old;
    super::fpstate::get_x87(&n.area.0, &mut f, true);
    let raised = f.fsw & 0x7f;
    f.fcw = old.fcw;
    f.fsw = summary((f.fsw & 0x7f00) | (old.fsw & 0x7f) | raised, old.fcw);
    f.fip = i.ip();
    f.fop = old.fop;
    f.fdp = old.fdp;
    if raised & 0x3f & !old.fcw != 0 {
        f.fop = fop_of(c, i);
        if let Some((_, off, ..)) = n.mem {
            f.fdp = off;
        }
    }
    c.c.s.fpu = f;
    if matches!(
        i.mnemonic(),
        Mnemonic::Fcomi | Mnemonic::Fcomip | Mnemonic::Fucomi | Mnemonic::Fucomip
    ) {
        set_compare_flags(c, n.flags);
    }
    Ok(())
}
