//! x87/SSE/AVX state management: the FXSAVE image, FXSAVE/FXRSTOR (and their REX.W forms),
//! XSAVE/XRSTOR/XSAVEOPT with the XSAVE header and the AVX component, XGETBV/XSETBV,
//! (V)LDMXCSR/(V)STMXCSR, VZEROUPPER/VZEROALL, the CR0/CR4/XCR0 rules that gate the FPU, SSE
//! and VEX instructions (#UD, #NM), and byte-range memory access for wide operands.

use iced_x86::{Instruction, Mnemonic};

use crate::soft::cpu::{Ctx, Fault, R, UD, gp, vec};
use crate::soft::host_fpu::{XArea, mxcsr_mask};
use crate::state::{FpuState, bits};

/// #NM.
pub const NM: Fault = Fault::Exc {
    vector: vec::NM,
    code: None,
};

/// XCR0 bits janus implements: x87, SSE and AVX (the CPU model may offer less: XSETBV takes
/// what CPUID.(0xD,0).EAX says).
pub const XCR0_SUPPORTED: u64 = 7;

/// The XSAVE area size for x87|SSE|AVX: the legacy region, the 64-byte header and YMM_Hi128.
pub const XSAVE_SIZE: u32 = 832;

/// The XSAVE area size the components enabled in `xcr0` need (CPUID.(0xD,0).EBX).
pub fn xsave_size(xcr0: u64) -> u32 {
    if xcr0 & 4 != 0 { XSAVE_SIZE } else { 576 }
}

/// The offset of YMM_Hi128 in the standard XSAVE format (CPUID.(0xD,2).EBX).
const YMM_HI128: usize = 576;

/// The SSE checks: #UD with CR0.EM or without CR4.OSFXSR, then #NM with CR0.TS.
pub fn check_sse(c: &Ctx) -> R<()> {
    if c.c.s.cr0 & bits::CR0_EM != 0 || c.c.s.cr4 & bits::CR4_OSFXSR == 0 {
        return Err(UD);
    }
    if c.c.s.cr0 & bits::CR0_TS != 0 {
        return Err(NM);
    }
    Ok(())
}

/// The checks of a VEX-encoded instruction (prefixes before VEX decode as invalid, so #UD
/// already): #UD in real and virtual-8086 mode, without CR4.OSXSAVE or unless XCR0 enables SSE
/// and AVX; then #NM with CR0.TS. (CR0.EM and CR4.OSFXSR do not apply.)
pub fn check_avx(c: &Ctx) -> R<()> {
    let s = &c.c.s;
    if !c.c.pe()
        || s.rflags & crate::state::rflags::VM != 0
        || s.cr4 & bits::CR4_OSXSAVE == 0
        || s.fpu.xcr0 & 6 != 6
    {
        return Err(UD);
    }
    if s.cr0 & bits::CR0_TS != 0 {
        return Err(NM);
    }
    Ok(())
}

/// The checks of an instruction of the SSE family: VEX forms [`check_avx`], legacy ones
/// [`check_sse`].
pub fn check_simd(c: &Ctx, i: &Instruction) -> R<()> {
    if i.encoding() == iced_x86::EncodingKind::VEX {
        check_avx(c)
    } else {
        check_sse(c)
    }
}

/// The x87 checks: #NM with CR0.EM or CR0.TS.
pub fn check_x87(c: &Ctx) -> R<()> {
    if c.c.s.cr0 & (bits::CR0_EM | bits::CR0_TS) != 0 {
        return Err(NM);
    }
    Ok(())
}

/// A waiting x87 instruction with an unmasked exception pending (FSW.ES) raises #MF when
/// CR0.NE is set. With NE clear a PC would signal FERR# to the interrupt controller; janus
/// ignores the pending exception there (a documented simplification).
pub fn check_pending(c: &Ctx) -> R<()> {
    if c.c.s.fpu.fsw & 0x80 != 0 && c.c.s.cr0 & bits::CR0_NE != 0 {
        return Err(Fault::Exc {
            vector: vec::MF,
            code: None,
        });
    }
    Ok(())
}

/// The x87 tag of an 80-bit value: 0 valid, 1 zero, 2 special (NaN, infinity, denormal,
/// unsupported).
pub fn tag_of(v: u128) -> u16 {
    let exp = (v >> 64) as u16 & 0x7fff;
    let man = v as u64;
    if exp == 0 {
        if man == 0 { 1 } else { 2 }
    } else if exp == 0x7fff || man >> 63 == 0 {
        2
    } else {
        0
    }
}

/// The full 16-bit tag word (FNSTENV, FNSAVE) from the abridged one and the register values.
pub fn full_tag(f: &FpuState) -> u16 {
    let top = f.top();
    (0..8u8).fold(0u16, |acc, p| {
        let t = if f.ftw & (1 << p) == 0 {
            3
        } else {
            tag_of(f.st[usize::from(p.wrapping_sub(top) & 7)])
        };
        acc | t << (2 * p)
    })
}

/// The abridged tag word from a full one.
pub fn abridged_tag(full: u16) -> u8 {
    (0..8).fold(0u8, |acc, p| {
        acc | u8::from((full >> (2 * p)) & 3 != 3) << p
    })
}

fn put(a: &mut [u8], at: usize, v: &[u8]) {
    a[at..at + v.len()].copy_from_slice(v);
}

fn get_u16(a: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([a[at], a[at + 1]])
}

fn get_u32(a: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(a[at..at + 4].try_into().unwrap_or_default())
}

fn get_u64(a: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(a[at..at + 8].try_into().unwrap_or_default())
}

fn get_u128(a: &[u8], at: usize) -> u128 {
    u128::from_le_bytes(a[at..at + 16].try_into().unwrap_or_default())
}

/// Writes the x87 part (bytes 0-23 and 32-159) of an FXSAVE image; `w64` picks the 64-bit
/// FIP/FDP layout (FXSAVE64), else 32-bit offsets with FCS/FDS, which this CPU (like the host,
/// CPUID.7.EBX[13]) stores as zero.
pub fn put_x87(a: &mut [u8], f: &FpuState, w64: bool) {
    put(a, 0, &f.fcw.to_le_bytes());
    put(a, 2, &f.fsw.to_le_bytes());
    a[4] = f.ftw;
    a[5] = 0;
    put(a, 6, &f.fop.to_le_bytes());
    if w64 {
        put(a, 8, &f.fip.to_le_bytes());
        put(a, 16, &f.fdp.to_le_bytes());
    } else {
        put(a, 8, &(f.fip as u32).to_le_bytes());
        put(a, 12, &0u32.to_le_bytes());
        put(a, 16, &(f.fdp as u32).to_le_bytes());
        put(a, 20, &0u32.to_le_bytes());
    }
    for (n, v) in f.st.iter().enumerate() {
        put(a, 32 + 16 * n, &v.to_le_bytes()[..10]);
        put(a, 42 + 16 * n, &[0; 6]);
    }
}

/// Writes MXCSR, MXCSR_MASK and XMM0-15 of an FXSAVE image.
pub fn put_sse(a: &mut [u8], f: &FpuState) {
    put(a, 24, &f.mxcsr.to_le_bytes());
    put(a, 28, &mxcsr_mask().to_le_bytes());
    for (n, v) in f.xmm.iter().enumerate() {
        put(a, 160 + 16 * n, &v.to_le_bytes());
    }
}

/// Writes the upper halves of YMM0-15 at YMM_Hi128's offset of an XSAVE image.
pub fn put_ymm(a: &mut [u8], f: &FpuState) {
    for (n, v) in f.ymm_hi.iter().enumerate() {
        put(a, YMM_HI128 + 16 * n, &v.to_le_bytes());
    }
}

/// Reads the upper halves of YMM0-15 from an XSAVE image.
pub fn get_ymm(a: &[u8], f: &mut FpuState) {
    for (n, v) in f.ymm_hi.iter_mut().enumerate() {
        *v = get_u128(a, YMM_HI128 + 16 * n);
    }
}

/// Reads the x87 part of an FXSAVE image into `f`.
pub fn get_x87(a: &[u8], f: &mut FpuState, w64: bool) {
    f.fcw = get_u16(a, 0);
    f.fsw = get_u16(a, 2);
    f.ftw = a[4];
    f.fop = get_u16(a, 6) & 0x7ff;
    if w64 {
        f.fip = get_u64(a, 8);
        f.fdp = get_u64(a, 16);
    } else {
        f.fip = u64::from(get_u32(a, 8));
        f.fdp = u64::from(get_u32(a, 16));
    }
    for (n, v) in f.st.iter_mut().enumerate() {
        *v = get_u128(a, 32 + 16 * n) & ((1u128 << 80) - 1);
    }
}

/// Reads XMM0-15 of an FXSAVE image into `f` (MXCSR is checked and loaded by the caller).
pub fn get_xmm(a: &[u8], f: &mut FpuState) {
    for (n, v) in f.xmm.iter_mut().enumerate() {
        *v = get_u128(a, 160 + 16 * n);
    }
}

/// The XSAVE64 image of `f` (x87, SSE and AVX), with every exception masked and the exception
/// flags, ES and B cleared, as the native stub wants it.
pub fn stub_area(f: &FpuState) -> XArea {
    let mut a = XArea::default();
    let mut m = *f;
    m.fcw |= 0x3f;
    m.fsw &= !0x80ff;
    if m.mxcsr & (1 << 11) == 0 {
        // FTZ applies only while underflow is masked.
        m.mxcsr &= !0x8000;
    }
    m.mxcsr = (m.mxcsr | 0x1f80) & !0x3f & mxcsr_mask();
    put_x87(&mut a.0, &m, true);
    put_sse(&mut a.0, &m);
    put_ymm(&mut a.0, &m);
    a
}

/// The next access of a byte-range copy: 8, 4, 2 or 1 bytes (memory accesses are power-of-two
/// sized).
fn chunk(left: usize) -> usize {
    match left {
        8.. => 8,
        4..=7 => 4,
        2..=3 => 2,
        _ => 1,
    }
}

/// Reads `n` bytes at `seg:off` (8 bytes at a time; a fault leaves nothing changed).
pub fn read_bytes(c: &mut Ctx, seg: u8, off: u64, out: &mut [u8], asz_mask: u64) -> R<()> {
    let mut k = 0;
    while k < out.len() {
        let n = chunk(out.len() - k);
        let v = c.read(seg, off.wrapping_add(k as u64) & asz_mask, n as u8)?;
        out[k..k + n].copy_from_slice(&v.to_le_bytes()[..n]);
        k += n;
    }
    Ok(())
}

/// Writes `data` at `seg:off`: every page is checked first, so a fault writes nothing.
pub fn write_bytes(c: &mut Ctx, seg: u8, off: u64, data: &[u8], asz_mask: u64) -> R<()> {
    let user = c.c.cpl() == 3;
    let mut k = 0;
    while k < data.len() {
        let n = chunk(data.len() - k);
        let lin = c.seg_addr(seg, off.wrapping_add(k as u64) & asz_mask, n as u8, true)?;
        c.probe_write(lin, n as u8, user)?;
        k += n;
    }
    let mut k = 0;
    while k < data.len() {
        let n = chunk(data.len() - k);
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&data[k..k + n]);
        c.write(
            seg,
            off.wrapping_add(k as u64) & asz_mask,
            n as u8,
            u64::from_le_bytes(b),
        )?;
        k += n;
    }
    Ok(())
}

/// The address-size mask of the instruction's memory operand.
pub fn asz_mask(i: &Instruction) -> u64 {
    crate::soft::flags::mask(super::addr_size(i))
}

/// The memory operand's (segment, offset), or #GP(0) unless its linear address is a
/// multiple of `align`.
pub(super) fn aligned(c: &Ctx, i: &Instruction, align: u64) -> R<(u8, u64)> {
    let (s, off) = c.ea(i);
    let base = c.c.seg(s).base;
    let lin = if c.c.long64() && s != crate::soft::cpu::seg::FS && s != crate::soft::cpu::seg::GS {
        off
    } else {
        base.wrapping_add(off)
    };
    if lin % align != 0 {
        return Err(gp(0));
    }
    Ok((s, off))
}

/// FXSAVE, FXSAVE64, FXRSTOR, FXRSTOR64.
pub(super) fn fxsave(c: &mut Ctx, i: &Instruction) -> R<()> {
    check_x87(c)?;
    let (s, off) = aligned(c, i, 16)?;
    let w64 = matches!(i.mnemonic(), Mnemonic::Fxsave64 | Mnemonic::Fxrstor64);
    let m = asz_mask(i);
    if matches!(i.mnemonic(), Mnemonic::Fxsave | Mnemonic::Fxsave64) {
        // Bytes 464-511 are the software's; FXSAVE leaves them (and 416-463) alone.
        let mut a = [0u8; 416];
        put_x87(&mut a, &c.c.s.fpu, w64);
        put_sse(&mut a, &c.c.s.fpu);
        write_bytes(c, s, off, &a, m)
    } else {
        let mut a = [0u8; 416];
        read_bytes(c, s, off, &mut a, m)?;
        let mxcsr = get_u32(&a, 24);
        if mxcsr & !mxcsr_mask() != 0 {
            return Err(gp(0));
        }
        let f = &mut c.c.s.fpu;
        get_x87(&a, f, w64);
        get_xmm(&a, f);
        f.mxcsr = mxcsr;
        Ok(())
    }
}

/// Whether the x87 state is in its initial configuration (XSAVE's init optimisation).
fn x87_init(f: &FpuState) -> bool {
    f.fcw == 0x37f
        && f.fsw == 0
        && f.ftw == 0
        && f.fop == 0
        && f.fip == 0
        && f.fdp == 0
        && f.st.iter().all(|&v| v == 0)
}

/// XSAVE, XSAVE64, XSAVEOPT, XSAVEOPT64, XRSTOR, XRSTOR64 (standard form; x87, SSE and AVX
/// components). XSAVE writes every component of RFBM with XSTATE_BV saying which are in use;
/// XSAVEOPT leaves out those in their initial configuration (its init optimisation; the
/// modified optimisation, skipping what is unchanged since the last XRSTOR, is an
/// implementation choice janus does not make).
pub(super) fn xsave(c: &mut Ctx, i: &Instruction) -> R<()> {
    use Mnemonic::*;
    if c.c.s.cr4 & bits::CR4_OSXSAVE == 0 {
        return Err(UD);
    }
    if c.c.s.cr0 & bits::CR0_TS != 0 {
        return Err(NM);
    }
    let (s, off) = aligned(c, i, 64)?;
    let m = i.mnemonic();
    let w64 = matches!(m, Xsave64 | Xrstor64 | Xsaveopt64);
    let am = asz_mask(i);
    let rfbm = (c.c.get(0, 4) | c.c.get(2, 4) << 32) & c.c.s.fpu.xcr0;
    // Only the components RFBM names are touched (the header always): the area read and
    // written is up to the last of them.
    let len = if rfbm & 4 != 0 { 832 } else { 576 };
    let mut a = [0u8; 832];
    if matches!(m, Xsave | Xsave64 | Xsaveopt | Xsaveopt64) {
        // Read the area first: components outside RFBM, and header bits outside it, are kept.
        read_bytes(c, s, off, &mut a[..len], am)?;
        let f = c.c.s.fpu;
        let inuse = u64::from(!x87_init(&f))
            | u64::from(f.xmm.iter().any(|&x| x != 0)) << 1
            | u64::from(f.ymm_hi.iter().any(|&x| x != 0)) << 2;
        let opt = matches!(m, Xsaveopt | Xsaveopt64);
        let save = if opt { rfbm & inuse } else { rfbm };
        let bv = (get_u64(&a, 512) & !rfbm) | (rfbm & inuse);
        if save & 1 != 0 {
            put_x87(&mut a, &f, w64);
        }
        if save & 2 != 0 {
            put_sse(&mut a, &f);
        } else if rfbm & 6 != 0 {
            // MXCSR and MXCSR_MASK go with SSE or AVX, even when XMM is not saved.
            put(&mut a, 24, &f.mxcsr.to_le_bytes());
            put(&mut a, 28, &mxcsr_mask().to_le_bytes());
        }
        if save & 4 != 0 {
            put_ymm(&mut a, &f);
        }
        put(&mut a, 512, &bv.to_le_bytes());
        return write_bytes(c, s, off, &a[..len], am);
    }
    read_bytes(c, s, off, &mut a[..len], am)?;
    let bv = get_u64(&a, 512);
    let comp = get_u64(&a, 520);
    if comp >> 63 != 0 {
        // The compacted form (XSAVEC/XSAVES) is not advertised.
        return Err(gp(0));
    }
    if bv & !c.c.s.fpu.xcr0 != 0 || comp != 0 || get_u64(&a, 528) != 0 {
        return Err(gp(0));
    }
    let mxcsr = get_u32(&a, 24);
    if rfbm & 6 != 0 && mxcsr & !mxcsr_mask() != 0 {
        return Err(gp(0));
    }
    let f = &mut c.c.s.fpu;
    if rfbm & 1 != 0 {
        if bv & 1 != 0 {
            get_x87(&a, f, w64);
        } else {
            f.fcw = 0x37f;
            f.fsw = 0;
            f.ftw = 0;
            f.fop = 0;
            f.fip = 0;
            f.fdp = 0;
            f.st = [0; 8];
        }
    }
    if rfbm & 6 != 0 {
        f.mxcsr = mxcsr;
    }
    if rfbm & 2 != 0 {
        if bv & 2 != 0 {
            get_xmm(&a, f);
        } else {
            f.xmm = [0; 16];
        }
    }
    if rfbm & 4 != 0 {
        if bv & 4 != 0 {
            get_ymm(&a, f);
        } else {
            f.ymm_hi = [0; 16];
        }
    }
    Ok(())
}

/// VZEROUPPER (bits 255:128 of every YMM register) and VZEROALL (all of them).
pub(super) fn vzero(c: &mut Ctx, i: &Instruction) -> R<()> {
    check_avx(c)?;
    let f = &mut c.c.s.fpu;
    f.ymm_hi = [0; 16];
    if i.mnemonic() == Mnemonic::Vzeroall {
        f.xmm = [0; 16];
    }
    Ok(())
}

/// XGETBV and XSETBV.
pub(super) fn xgetbv(c: &mut Ctx, i: &Instruction) -> R<()> {
    if c.c.s.cr4 & bits::CR4_OSXSAVE == 0 {
        return Err(UD);
    }
    let idx = c.c.get(1, 4);
    if i.mnemonic() == Mnemonic::Xgetbv {
        if idx != 0 {
            return Err(gp(0));
        }
        let v = c.c.s.fpu.xcr0;
        c.c.set(0, 4, v & 0xffff_ffff);
        c.c.set(2, 4, v >> 32);
        return Ok(());
    }
    super::system::need_cpl0(c)?;
    let v = c.c.get(0, 4) | c.c.get(2, 4) << 32;
    // XCR0 must keep x87, may not name a component the model does not offer (CPUID.(0xD,0)),
    // and AVX needs SSE.
    let supported = u64::from(c.c.cpuid.get(0xd, 0)[0]) & XCR0_SUPPORTED;
    if idx != 0 || v & 1 == 0 || v & !supported != 0 || v & 6 == 4 {
        return Err(gp(0));
    }
    c.c.s.fpu.xcr0 = v;
    Ok(())
}

/// LDMXCSR and STMXCSR, and their VEX forms.
pub(super) fn mxcsr(c: &mut Ctx, i: &Instruction) -> R<()> {
    check_simd(c, i)?;
    if matches!(i.mnemonic(), Mnemonic::Ldmxcsr | Mnemonic::Vldmxcsr) {
        let v = c.rd_sz(i, 0, 4)? as u32;
        if v & !mxcsr_mask() != 0 {
            return Err(gp(0));
        }
        c.c.s.fpu.mxcsr = v;
        Ok(())
    } else {
        let v = c.c.s.fpu.mxcsr;
        c.wr_sz(i, 0, 4, u64::from(v))
    }
}
