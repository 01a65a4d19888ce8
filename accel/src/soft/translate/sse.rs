//! The SSE family on XMM and YMM registers: every legacy-encoded SSE, SSE2, SSE3, SSSE3,
//! SSE4.1, SSE4.2, AES-NI, PCLMULQDQ and SHA instruction, and every VEX-encoded AVX, AVX2, FMA
//! and F16C one (VEX.128 and VEX.256, the VEX forms of the former included), runs on the host's
//! own vector unit through `soft::host_fpu` with the guest's MXCSR (exceptions masked, then
//! judged here), when the host has the extension (it is offered to guests only then:
//! `crate::cpuid`); the hot integer and data-movement forms of string routines run in Rust
//! (`fast`), and so do the VEX forms that access memory element by element (`avx`). State instructions (FXSAVE,
//! XSAVE, LDMXCSR...) are in fpstate.rs; CRC32 (an SSE4.2 instruction on general-purpose
//! registers) is in ext.rs. MMX-register forms (MMX itself, and the SSE, SSE2 and SSSE3 forms
//! on MMX registers) run natively the same way and then commit the x87 state they alias:
//! TOP 0, every tag valid, the registers written.

use iced_x86::{CpuidFeature, Instruction, Mnemonic, OpKind, Register};

use super::fpstate::{self, check_sse, read_bytes, write_bytes};
use super::{Builder, gpr};
use crate::soft::cpu::{Ctx, Fault, R, UD, vec};
use crate::soft::host_fpu::{self, Run};
use crate::state::{bits, rflags};

/// Whether the host runs `f`, one of the vector extensions executed natively.
pub(crate) fn host_has(f: CpuidFeature) -> bool {
    use std::arch::is_x86_feature_detected as has;
    match f {
        CpuidFeature::MMX | CpuidFeature::SSE | CpuidFeature::SSE2 => true,
        CpuidFeature::SSE3 => has!("sse3"),
        CpuidFeature::SSSE3 => has!("ssse3"),
        CpuidFeature::SSE4_1 => has!("sse4.1"),
        CpuidFeature::SSE4_2 => has!("sse4.2"),
        CpuidFeature::AES => has!("aes"),
        CpuidFeature::PCLMULQDQ => has!("pclmulqdq"),
        CpuidFeature::SHA => has!("sha"),
        CpuidFeature::AVX => has!("avx"),
        CpuidFeature::AVX2 => has!("avx2"),
        CpuidFeature::FMA => has!("fma"),
        CpuidFeature::F16C => has!("f16c"),
        _ => false,
    }
}

/// Whether `i` is a legacy- or VEX-encoded XMM, YMM or MMX instruction of an extension the
/// host runs natively.
fn native_sse(i: &Instruction) -> bool {
    use iced_x86::EncodingKind::{Legacy, VEX};
    let f = i.cpuid_features();
    !f.is_empty()
        && matches!(i.encoding(), Legacy | VEX)
        && f.iter().all(|&x| host_has(x))
        && i.mnemonic() != Mnemonic::Crc32
}

/// Whether `i` has an MMX-register operand.
fn is_mmx(i: &Instruction) -> bool {
    (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Register && i.op_register(n).is_mm())
}

/// The checks of an MMX-register form: #UD with CR0.EM, #NM with CR0.TS, #MF for a pending
/// x87 exception; the forms that SSE and later added (CVTPI2PS, PSHUFW, PSHUFB mm...) also
/// need CR4.OSFXSR.
fn check_mmx(c: &Ctx, i: &Instruction) -> R<()> {
    if c.c.s.cr0 & bits::CR0_EM != 0 {
        return Err(UD);
    }
    fpstate::check_x87(c)?;
    fpstate::check_pending(c)?;
    if i.cpuid_features().iter().any(|&f| f != CpuidFeature::MMX) {
        check_sse(c)?;
    }
    Ok(())
}

/// The x87 side of an MMX instruction: TOP 0 and every register valid, and the registers as
/// the native run left them (the x87 control, pointers and exception flags are untouched).
fn commit_mmx(c: &mut Ctx, area: &host_fpu::XArea) {
    let old = c.c.s.fpu;
    let mut f = old;
    fpstate::get_x87(&area.0, &mut f, true);
    c.c.s.fpu.fsw = old.fsw & !0x3800;
    c.c.s.fpu.ftw = 0xff;
    c.c.s.fpu.st = f.st;
}

pub(super) fn lower(b: &mut Builder, i: &Instruction) -> bool {
    use Mnemonic::*;
    let next = i.next_ip();
    match i.mnemonic() {
        Fxsave | Fxsave64 | Fxrstor | Fxrstor64 => b.call(fpstate::fxsave),
        Xsave | Xsave64 | Xrstor | Xrstor64 | Xsaveopt | Xsaveopt64 => b.call(fpstate::xsave),
        Xgetbv => b.call(fpstate::xgetbv),
        Xsetbv => b.call_then_stop(fpstate::xgetbv, next),
        Ldmxcsr | Stmxcsr | Vldmxcsr | Vstmxcsr => b.call(fpstate::mxcsr),
        Vzeroupper | Vzeroall => b.call(fpstate::vzero),
        Movnti => {
            let sz = super::op_size(i, 1);
            let v = b.rd(i, 1, sz);
            b.wr(i, 0, sz, v);
        }
        Maskmovdqu | Vmaskmovdqu => b.call(maskmovdqu),
        Vmaskmovps | Vmaskmovpd | Vpmaskmovd | Vpmaskmovq => b.call(super::avx::maskmov),
        Vgatherdps | Vgatherdpd | Vgatherqps | Vgatherqpd | Vpgatherdd | Vpgatherdq
        | Vpgatherqd | Vpgatherqq => b.call(super::avx::gather),
        Maskmovq => b.call(maskmovq),
        _ if native_sse(i) => b.call(sse_native),
        _ => return false,
    }
    true
}

/// The memory operand of a native instruction: (operand index, size, store?).
fn mem_operand(i: &Instruction, x87: bool) -> Option<(u32, usize, bool)> {
    let n = (0..i.op_count()).find(|&n| i.op_kind(n) == OpKind::Memory)?;
    let size = i.memory_size().size();
    let store = if x87 {
        use Mnemonic::*;
        matches!(i.mnemonic(), Fst | Fstp | Fist | Fistp | Fisttp | Fbstp)
    } else {
        n == 0
    };
    Some((n, size, store))
}

/// The alignment a memory operand of `i` needs (#GP otherwise): legacy-encoded 16-byte operands
/// but those of [`unaligned_ok`] 16; VEX-encoded ones none but the aligned and non-temporal
/// moves, whose operand size.
fn alignment(i: &Instruction, size: usize) -> Option<u64> {
    use Mnemonic::*;
    if i.encoding() == iced_x86::EncodingKind::VEX {
        return matches!(
            i.mnemonic(),
            Vmovaps | Vmovapd | Vmovdqa | Vmovntps | Vmovntpd | Vmovntdq | Vmovntdqa
        )
        .then_some(size as u64);
    }
    (size == 16 && !unaligned_ok(i.mnemonic())).then_some(16)
}

/// Whether a 16-byte memory operand of `m` may be unaligned (everything else legacy-encoded
/// raises #GP on a misaligned one): the unaligned moves, LDDQU and the SSE4.2 string compares.
fn unaligned_ok(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Movups
            | Movupd
            | Movdqu
            | Lddqu
            | Pcmpestri
            | Pcmpestri64
            | Pcmpestrm
            | Pcmpestrm64
            | Pcmpistri
            | Pcmpistrm
    )
}

/// Whether `m` sets the arithmetic flags ((V)PTEST, VTESTPS/PD and the string compares: all
/// six).
fn sets_flags(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Ptest
            | Pcmpestri
            | Pcmpestri64
            | Pcmpestrm
            | Pcmpestrm64
            | Pcmpistri
            | Pcmpistrm
            | Vptest
            | Vtestps
            | Vtestpd
            | Vpcmpestri
            | Vpcmpestri64
            | Vpcmpestrm
            | Vpcmpestrm64
            | Vpcmpistri
            | Vpcmpistrm
    )
}

/// Whether `m` sets ZF, PF and CF as a comparison ((V)COMISS, (V)UCOMISD...).
fn compares(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Comiss | Ucomiss | Comisd | Ucomisd | Vcomiss | Vucomiss | Vcomisd | Vucomisd
    )
}

/// Whether `m` writes its index to ECX (the string compares' "index" forms).
fn writes_ecx(m: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        m,
        Pcmpestri | Pcmpestri64 | Pcmpistri | Vpcmpestri | Vpcmpestri64 | Vpcmpistri
    )
}

/// The same-size RAX (slot 0) or RCX (slot 1).
fn slot_reg(slot: usize, sz: u8) -> Register {
    match (slot, sz) {
        (0, 8) => Register::RAX,
        (0, 4) => Register::EAX,
        (0, 2) => Register::AX,
        (0, _) => Register::AL,
        (_, 8) => Register::RCX,
        (_, 4) => Register::ECX,
        (_, 2) => Register::CX,
        _ => Register::CL,
    }
}

/// What a native execution produced, before it is committed.
pub(super) struct Native {
    /// The XSAVE64 image after the instruction.
    pub area: host_fpu::XArea,
    /// Host RFLAGS after it.
    pub flags: u64,
    /// RAX after it (the first general-purpose operand).
    pub rax: u64,
    /// RCX after it (PCMPESTRI and PCMPISTRI's index).
    pub rcx: u64,
    /// The memory operand: (segment, offset, bytes, store?).
    pub mem: Option<(u8, u64, [u8; 64], usize, bool)>,
}

/// Runs `i` natively on the guest's x87/SSE state (exceptions masked); commits nothing.
pub(super) fn run_native(c: &mut Ctx, i: &Instruction, x87: bool) -> R<Native> {
    let mut r = *i;
    let mut buf = [0u8; 64];
    let mut mem = None;
    if let Some((_, size, store)) = mem_operand(i, x87) {
        if size > 64 {
            return Err(Fault::Unsupported("x87/SSE memory operand over 64 bytes"));
        }
        let (s, off) = match alignment(i, size) {
            Some(a) if !x87 => fpstate::aligned(c, i, a)?,
            _ => c.ea(i),
        };
        let m = fpstate::asz_mask(i);
        if !store {
            read_bytes(c, s, off, &mut buf[..size], m)?;
        }
        mem = Some((s, off, size, store));
        r.set_memory_base(Register::RDI);
        r.set_memory_index(Register::None);
        r.set_memory_index_scale(1);
        r.set_memory_displacement64(0);
        r.set_memory_displ_size(0);
        r.set_segment_prefix(Register::None);
    }
    // RAX, RCX and RDX as they are: the string compares' implicit lengths (explicit
    // general-purpose operands take slots 0 and 1 below).
    let mut gprs = [c.c.get(0, 8), c.c.get(1, 8), 0, c.c.get(2, 8)];
    let mut slot = 0;
    for n in 0..i.op_count() {
        if i.op_kind(n) != OpKind::Register {
            continue;
        }
        if let Some((x, sz)) = gpr(i.op_register(n)) {
            gprs[slot.min(1)] = c.c.get(x, 8);
            r.set_op_register(n, slot_reg(slot, sz));
            slot += 1;
        }
    }
    gprs[2] = c.c.rflags()
        & (rflags::CF | rflags::PF | rflags::AF | rflags::ZF | rflags::SF | rflags::OF);
    // One stub per distinct rewritten instruction, whatever its guest address.
    r.set_ip(0);
    r.set_len(0);
    let mut area = fpstate::stub_area(&c.c.s.fpu);
    let flags = host_fpu::execute(
        &r,
        Run {
            area: &mut area,
            mem: &mut buf,
            gpr: &mut gprs,
        },
    )
    .map_err(|_| Fault::Unsupported("x87/SSE stub: no executable memory or no encoding"))?;
    Ok(Native {
        area,
        flags,
        rax: gprs[0],
        rcx: gprs[1],
        mem: mem.map(|(s, off, size, store)| (s, off, buf, size, store)),
    })
}

/// Writes a native instruction's memory result, if it stores.
pub(super) fn store_result(c: &mut Ctx, i: &Instruction, n: &Native) -> R<()> {
    if let Some((s, off, buf, size, true)) = n.mem {
        write_bytes(c, s, off, &buf[..size], fpstate::asz_mask(i))?;
    }
    Ok(())
}

/// The comparison flags of COMISS/UCOMISS/FCOMI...: ZF PF CF from the host, OF SF AF clear.
pub(super) fn set_compare_flags(c: &mut Ctx, host: u64) {
    let arith = rflags::CF | rflags::PF | rflags::AF | rflags::ZF | rflags::SF | rflags::OF;
    let f = c.c.rflags() & !arith;
    c.c.set_rflags(f | (host & (rflags::ZF | rflags::PF | rflags::CF)));
}

fn sse_native(c: &mut Ctx, i: &Instruction) -> R<()> {
    let mmx = is_mmx(i);
    if mmx {
        check_mmx(c, i)?;
    } else if i.encoding() == iced_x86::EncodingKind::VEX {
        fpstate::check_avx(c)?;
        if let Some(r) = fast_vex(c, i) {
            return r;
        }
    } else {
        check_sse(c)?;
        if let Some(r) = fast(c, i) {
            return r;
        }
    }
    let n = run_native(c, i, false)?;
    let old = c.c.s.fpu.mxcsr;
    let mut raised =
        u32::from_le_bytes([n.area.0[24], n.area.0[25], n.area.0[26], n.area.0[27]]) & 0x3f;
    // With underflow unmasked the CPU signals any tiny result, exact or not (masked, only an
    // inexact one): the masked run (FTZ off, as FTZ applies only when UE is masked) shows
    // a tiny result as a denormal in a computed lane.
    if old & (1 << 11) == 0 && tiny_result(i, &n.area) {
        raised |= 0x10;
    }
    let unmasked = raised & !(old >> 7) & 0x3f;
    if unmasked != 0 {
        // Pre-computation exceptions (invalid, denormal, divide) that are unmasked stop the
        // instruction before the post-computation ones are looked for; nothing is written.
        // An unmasked overflow or underflow is reported without precision, as the CPU does.
        let report = |raised: u32| {
            let pre = raised & 0x7;
            if pre & !(old >> 7) != 0 {
                pre
            } else if raised & !(old >> 7) & 0x18 != 0 {
                raised & !0x20
            } else {
                raised
            }
        };
        // (V)DPPS and (V)DPPD multiply, then add: an unmasked exception of the additions comes
        // after the products' flags are in, one of the products stops it before the additions.
        let set = match dp_product_flags(c, i, &n) {
            Some(p) if p & !(old >> 7) & 0x3f != 0 => report(p),
            Some(p) => p | report(raised),
            None => report(raised),
        };
        c.c.s.fpu.mxcsr = old | set;
        if mmx {
            // The switch to MMX state happens even so (measured: CVTPD2PI with an unmasked
            // invalid operation on an AMD EPYC host); the destination is not written.
            mmx_transition(&mut c.c.s.fpu);
        }
        return Err(if c.c.s.cr4 & bits::CR4_OSXMMEXCPT != 0 {
            Fault::Exc {
                vector: vec::XM,
                code: None,
            }
        } else {
            UD
        });
    }
    store_result(c, i, &n)?;
    if mmx {
        commit_mmx(c, &n.area);
    }
    fpstate::get_xmm(&n.area.0, &mut c.c.s.fpu);
    fpstate::get_ymm(&n.area.0, &mut c.c.s.fpu);
    c.c.s.fpu.mxcsr = old | raised;
    if i.op0_kind() == OpKind::Register {
        if let Some((x, sz)) = gpr(i.op0_register()) {
            c.c.set(x, sz, n.rax);
        }
    }
    let m = i.mnemonic();
    if compares(m) {
        set_compare_flags(c, n.flags);
    } else if sets_flags(m) {
        let arith = rflags::CF | rflags::PF | rflags::AF | rflags::ZF | rflags::SF | rflags::OF;
        let f = c.c.rflags() & !arith;
        c.c.set_rflags(f | (n.flags & arith));
    }
    if writes_ecx(m) {
        c.c.set(1, 4, n.rcx);
    }
    Ok(())
}

/// For (V)DPPS and (V)DPPD, the exception flags of the multiplication stage alone: the products
/// the immediate selects (the other lanes zeroed in both sources), computed natively by
/// (V)MULPS or (V)MULPD with the guest's MXCSR; `None` for every other instruction.
fn dp_product_flags(c: &Ctx, i: &Instruction, n: &Native) -> Option<u32> {
    use iced_x86::Code;
    let double = match i.mnemonic() {
        Mnemonic::Dpps | Mnemonic::Vdpps => false,
        Mnemonic::Dppd | Mnemonic::Vdppd => true,
        _ => return None,
    };
    let vex = i.encoding() == iced_x86::EncodingKind::VEX;
    let wide = i.op0_register().is_ymm();
    let f = &c.c.s.fpu;
    let operand = |k: u32| -> [u8; 32] {
        let mut b = [0u8; 32];
        if i.op_kind(k) == OpKind::Register {
            let (x, _) = super::avx::vreg(i.op_register(k));
            b[..16].copy_from_slice(&f.xmm[x].to_le_bytes());
            b[16..].copy_from_slice(&f.ymm_hi[x].to_le_bytes());
        } else if let Some((_, _, m, size, _)) = n.mem {
            b[..size.min(32)].copy_from_slice(&m[..size.min(32)]);
        }
        b
    };
    let (mut a, mut b) = if vex {
        (operand(1), operand(2))
    } else {
        (operand(0), operand(1))
    };
    let (w, lanes) = if double { (8, 2) } else { (4, 4) };
    let imm = i.immediate8();
    for half in 0..2 {
        for k in 0..lanes {
            if imm >> (4 + k) & 1 == 0 {
                let at = 16 * half + w * k;
                a[at..at + w].fill(0);
                b[at..at + w].fill(0);
            }
        }
    }
    let insn = match (double, wide) {
        (false, false) => {
            Instruction::with2(Code::Mulps_xmm_xmmm128, Register::XMM0, Register::XMM1)
        }
        (true, false) => {
            Instruction::with2(Code::Mulpd_xmm_xmmm128, Register::XMM0, Register::XMM1)
        }
        (false, true) => Instruction::with3(
            Code::VEX_Vmulps_ymm_ymm_ymmm256,
            Register::YMM0,
            Register::YMM0,
            Register::YMM1,
        ),
        (true, true) => Instruction::with3(
            Code::VEX_Vmulpd_ymm_ymm_ymmm256,
            Register::YMM0,
            Register::YMM0,
            Register::YMM1,
        ),
    }
    .ok()?;
    let mut area = fpstate::stub_area(f);
    area.0[160..176].copy_from_slice(&a[..16]);
    area.0[176..192].copy_from_slice(&b[..16]);
    area.0[host_fpu::YMM_HI128..host_fpu::YMM_HI128 + 16].copy_from_slice(&a[16..]);
    area.0[host_fpu::YMM_HI128 + 16..host_fpu::YMM_HI128 + 32].copy_from_slice(&b[16..]);
    host_fpu::execute(
        &insn,
        Run {
            area: &mut area,
            mem: &mut [0; 64],
            gpr: &mut [0; 4],
        },
    )
    .ok()?;
    Some(u32::from_le_bytes([area.0[24], area.0[25], area.0[26], area.0[27]]) & 0x3f)
}

fn xmm_index(r: Register) -> usize {
    r as usize - Register::XMM0 as usize
}

/// The 128-bit operand `n` (an XMM register, or 16 bytes of memory, aligned unless `unaligned`).
fn rd128(c: &mut Ctx, i: &Instruction, n: u32, unaligned: bool) -> R<u128> {
    if i.op_kind(n) == OpKind::Register {
        return Ok(c.c.s.fpu.xmm[xmm_index(i.op_register(n))]);
    }
    let (s, off) = if unaligned {
        c.ea(i)
    } else {
        fpstate::aligned(c, i, 16)?
    };
    let mut b = [0u8; 16];
    read_bytes(c, s, off, &mut b, fpstate::asz_mask(i))?;
    Ok(u128::from_le_bytes(b))
}

/// Lane-wise `f` over `w`-byte lanes.
fn lanes(a: u128, b: u128, w: u32, f: impl Fn(u64, u64) -> u64) -> u128 {
    let bits = 8 * w;
    let m = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    (0..128 / bits).fold(0u128, |acc, k| {
        let x = (a >> (k * bits)) as u64 & m;
        let y = (b >> (k * bits)) as u64 & m;
        acc | u128::from(f(x, y) & m) << (k * bits)
    })
}

/// The hot integer and data-movement forms of string and memory routines, in Rust (no
/// MXCSR or flags involved); `None` for everything else, which runs natively.
fn fast(c: &mut Ctx, i: &Instruction) -> Option<R<()>> {
    use Mnemonic::*;
    let m = i.mnemonic();
    let unaligned = matches!(m, Movups | Movupd | Movdqu);
    let x0 = (i.op0_kind() == OpKind::Register && i.op0_register().is_xmm())
        .then(|| xmm_index(i.op0_register()));
    let two = i.op_count() == 2;
    if !two {
        return None;
    }
    if m == Pmovmskb {
        let (r, _) = gpr(i.op0_register())?;
        let v = c.c.s.fpu.xmm[xmm_index(i.op1_register())];
        let mask = (0..16).fold(0u64, |acc, k| acc | (((v >> (8 * k + 7)) & 1) as u64) << k);
        c.c.set(r, 4, mask);
        return Some(Ok(()));
    }
    if matches!(m, Movaps | Movapd | Movdqa | Movups | Movupd | Movdqu) {
        return Some(match x0 {
            Some(d) => rd128(c, i, 1, unaligned).map(|v| c.c.s.fpu.xmm[d] = v),
            None => {
                let v = c.c.s.fpu.xmm[xmm_index(i.op1_register())];
                let at = if unaligned {
                    Ok(c.ea(i))
                } else {
                    fpstate::aligned(c, i, 16)
                };
                at.and_then(|(s, off)| {
                    write_bytes(c, s, off, &v.to_le_bytes(), fpstate::asz_mask(i))
                })
            }
        });
    }
    let d = x0?;
    let op: fn(u128, u128) -> u128 = match m {
        Pxor | Xorps | Xorpd => |a, b| a ^ b,
        Por | Orps | Orpd => |a, b| a | b,
        Pand | Andps | Andpd => |a, b| a & b,
        Pandn | Andnps | Andnpd => |a, b| !a & b,
        Pcmpeqb => |a, b| lanes(a, b, 1, |x, y| if x == y { u64::MAX } else { 0 }),
        Pcmpeqw => |a, b| lanes(a, b, 2, |x, y| if x == y { u64::MAX } else { 0 }),
        Pcmpeqd => |a, b| lanes(a, b, 4, |x, y| if x == y { u64::MAX } else { 0 }),
        Pcmpeqq => |a, b| lanes(a, b, 8, |x, y| if x == y { u64::MAX } else { 0 }),
        Pshufb => pshufb,
        Pminub => |a, b| lanes(a, b, 1, u64::min),
        Pminuw => |a, b| lanes(a, b, 2, u64::min),
        Pminud => |a, b| lanes(a, b, 4, u64::min),
        Pmaxuw => |a, b| lanes(a, b, 2, u64::max),
        Pmaxud => |a, b| lanes(a, b, 4, u64::max),
        Pmaxub => |a, b| lanes(a, b, 1, u64::max),
        Paddb => |a, b| lanes(a, b, 1, u64::wrapping_add),
        Paddw => |a, b| lanes(a, b, 2, u64::wrapping_add),
        Paddd => |a, b| lanes(a, b, 4, u64::wrapping_add),
        Paddq => |a, b| lanes(a, b, 8, u64::wrapping_add),
        Psubb => |a, b| lanes(a, b, 1, u64::wrapping_sub),
        Psubw => |a, b| lanes(a, b, 2, u64::wrapping_sub),
        Psubd => |a, b| lanes(a, b, 4, u64::wrapping_sub),
        Psubq => |a, b| lanes(a, b, 8, u64::wrapping_sub),
        _ => return None,
    };
    Some(rd128(c, i, 1, false).map(|b| {
        let a = c.c.s.fpu.xmm[d];
        c.c.s.fpu.xmm[d] = op(a, b);
    }))
}

/// The 128-bit integer operation of a hot form (the same for legacy and VEX), if `m` is one.
fn int_op(m: Mnemonic) -> Option<fn(u128, u128) -> u128> {
    use Mnemonic::*;
    Some(match m {
        Vpxor | Vxorps | Vxorpd => |a, b| a ^ b,
        Vpor | Vorps | Vorpd => |a, b| a | b,
        Vpand | Vandps | Vandpd => |a, b| a & b,
        Vpandn | Vandnps | Vandnpd => |a, b| !a & b,
        Vpcmpeqb => |a, b| lanes(a, b, 1, |x, y| if x == y { u64::MAX } else { 0 }),
        Vpcmpeqw => |a, b| lanes(a, b, 2, |x, y| if x == y { u64::MAX } else { 0 }),
        Vpcmpeqd => |a, b| lanes(a, b, 4, |x, y| if x == y { u64::MAX } else { 0 }),
        Vpcmpeqq => |a, b| lanes(a, b, 8, |x, y| if x == y { u64::MAX } else { 0 }),
        Vpshufb => pshufb,
        Vpminub => |a, b| lanes(a, b, 1, u64::min),
        Vpmaxub => |a, b| lanes(a, b, 1, u64::max),
        Vpaddb => |a, b| lanes(a, b, 1, u64::wrapping_add),
        Vpaddd => |a, b| lanes(a, b, 4, u64::wrapping_add),
        Vpaddq => |a, b| lanes(a, b, 8, u64::wrapping_add),
        Vpsubb => |a, b| lanes(a, b, 1, u64::wrapping_sub),
        _ => return None,
    })
}

/// The VEX operand `n` as two 128-bit halves (the upper zero for a 128-bit one): a register,
/// or 16 or 32 bytes of memory (aligned to its size if `aligned`).
fn rd_vex(c: &mut Ctx, i: &Instruction, n: u32, wide: bool, aligned: bool) -> R<[u128; 2]> {
    if i.op_kind(n) == OpKind::Register {
        let (x, _) = super::avx::vreg(i.op_register(n));
        let f = &c.c.s.fpu;
        return Ok([f.xmm[x], if wide { f.ymm_hi[x] } else { 0 }]);
    }
    let size = if wide { 32 } else { 16 };
    let (s, off) = if aligned {
        fpstate::aligned(c, i, size as u64)?
    } else {
        c.ea(i)
    };
    let mut b = [0u8; 32];
    read_bytes(c, s, off, &mut b[..size], fpstate::asz_mask(i))?;
    let lo: [u8; 16] = b[..16].try_into().unwrap_or_default();
    let hi: [u8; 16] = b[16..].try_into().unwrap_or_default();
    Ok([u128::from_le_bytes(lo), u128::from_le_bytes(hi)])
}

/// The hot VEX forms of string and memory routines (glibc's AVX2 strlen, memchr, memcpy...) in
/// Rust: the moves, logic, byte compares and minimum, PSHUFB, VPMOVMSKB; `None` for everything
/// else, which runs natively. A VEX.128 result zeroes bits 255:128.
fn fast_vex(c: &mut Ctx, i: &Instruction) -> Option<R<()>> {
    use Mnemonic::*;
    let m = i.mnemonic();
    let reg0 = i.op0_kind() == OpKind::Register;
    if m == Vpmovmskb {
        let (r, _) = gpr(i.op0_register())?;
        let (x, wide) = super::avx::vreg(i.op1_register());
        let f = &c.c.s.fpu;
        let bits =
            |v: u128| (0..16).fold(0u64, |acc, k| acc | (((v >> (8 * k + 7)) & 1) as u64) << k);
        let mask = bits(f.xmm[x]) | if wide { bits(f.ymm_hi[x]) << 16 } else { 0 };
        c.c.set(r, 4, mask);
        return Some(Ok(()));
    }
    let set = |c: &mut Ctx, v: [u128; 2]| {
        let (x, _) = super::avx::vreg(i.op0_register());
        c.c.s.fpu.xmm[x] = v[0];
        c.c.s.fpu.ymm_hi[x] = v[1];
    };
    if matches!(m, Vmovdqu | Vmovdqa | Vmovups | Vmovaps | Vmovupd | Vmovapd) && i.op_count() == 2 {
        let aligned = matches!(m, Vmovdqa | Vmovaps | Vmovapd);
        if reg0 {
            let wide = i.op0_register().is_ymm();
            return Some(rd_vex(c, i, 1, wide, aligned).map(|v| set(c, v)));
        }
        let (x, wide) = super::avx::vreg(i.op1_register());
        let size = if wide { 32 } else { 16 };
        let mut b = [0u8; 32];
        b[..16].copy_from_slice(&c.c.s.fpu.xmm[x].to_le_bytes());
        b[16..].copy_from_slice(&c.c.s.fpu.ymm_hi[x].to_le_bytes());
        let at = if aligned {
            fpstate::aligned(c, i, size as u64)
        } else {
            Ok(c.ea(i))
        };
        return Some(
            at.and_then(|(s, off)| write_bytes(c, s, off, &b[..size], fpstate::asz_mask(i))),
        );
    }
    let op = int_op(m)?;
    if i.op_count() != 3 || !reg0 {
        return None;
    }
    let wide = i.op0_register().is_ymm();
    let (a, _) = super::avx::vreg(i.op1_register());
    let a = [c.c.s.fpu.xmm[a], c.c.s.fpu.ymm_hi[a]];
    Some(rd_vex(c, i, 2, wide, false).map(|b| {
        let hi = if wide { op(a[1], b[1]) } else { 0 };
        set(c, [op(a[0], b[0]), hi]);
    }))
}

/// PSHUFB: each byte of the result is the byte of `a` that the low four bits of `b`'s byte
/// select, or zero where that byte's bit 7 is set.
fn pshufb(a: u128, b: u128) -> u128 {
    let (a, b) = (a.to_le_bytes(), b.to_le_bytes());
    let r: [u8; 16] = std::array::from_fn(|k| {
        if b[k] & 0x80 != 0 {
            0
        } else {
            a[usize::from(b[k] & 15)]
        }
    });
    u128::from_le_bytes(r)
}

/// Whether an arithmetic or narrowing instruction left a denormal in a lane it computed.
fn tiny_result(i: &Instruction, area: &host_fpu::XArea) -> bool {
    use Mnemonic::*;
    let m = i.mnemonic();
    let (wide, lanes) = match m {
        Addps | Subps | Mulps | Divps | Addsubps | Haddps | Hsubps | Dpps | Vaddps | Vsubps
        | Vmulps | Vdivps | Vaddsubps | Vhaddps | Vhsubps | Vdpps => (false, 4),
        Addss | Subss | Mulss | Divss | Cvtsd2ss | Vaddss | Vsubss | Vmulss | Vdivss
        | Vcvtsd2ss => (false, 1),
        Cvtpd2ps | Vcvtpd2ps => (false, 2),
        Addpd | Subpd | Mulpd | Divpd | Addsubpd | Haddpd | Hsubpd | Dppd | Vaddpd | Vsubpd
        | Vmulpd | Vdivpd | Vaddsubpd | Vhaddpd | Vhsubpd | Vdppd => (true, 2),
        Addsd | Subsd | Mulsd | Divsd | Vaddsd | Vsubsd | Vmulsd | Vdivsd => (true, 1),
        _ => match fma_lanes(m) {
            Some(l) => l,
            None => return false,
        },
    };
    if i.op0_kind() != OpKind::Register {
        return false;
    }
    let r = i.op0_register();
    let (x, ymm) = if r.is_xmm() {
        (r as usize - Register::XMM0 as usize, false)
    } else if r.is_ymm() {
        (r as usize - Register::YMM0 as usize, true)
    } else {
        return false;
    };
    let at = |o: usize| u128::from_le_bytes(area.0[o..o + 16].try_into().unwrap_or_default());
    let mut halves = vec![at(160 + 16 * x)];
    // A 256-bit form computes both halves (VCVTPD2PS ymm narrows into an XMM register).
    if ymm && lanes > 1 {
        halves.push(at(host_fpu::YMM_HI128 + 16 * x));
    }
    halves.iter().any(|&v| {
        (0..lanes).any(|k| {
            if wide {
                let e = (v >> (64 * k)) as u64;
                e & 0x7ff0_0000_0000_0000 == 0 && e & 0x000f_ffff_ffff_ffff != 0
            } else {
                let e = (v >> (32 * k)) as u32;
                e & 0x7f80_0000 == 0 && e & 0x007f_ffff != 0
            }
        })
    })
}

/// The lanes an FMA form computes in each 128-bit half: (double?, count).
fn fma_lanes(m: Mnemonic) -> Option<(bool, u32)> {
    use Mnemonic::*;
    Some(match m {
        Vfmadd132ps | Vfmadd213ps | Vfmadd231ps | Vfmsub132ps | Vfmsub213ps | Vfmsub231ps
        | Vfnmadd132ps | Vfnmadd213ps | Vfnmadd231ps | Vfnmsub132ps | Vfnmsub213ps
        | Vfnmsub231ps | Vfmaddsub132ps | Vfmaddsub213ps | Vfmaddsub231ps | Vfmsubadd132ps
        | Vfmsubadd213ps | Vfmsubadd231ps => (false, 4),
        Vfmadd132pd | Vfmadd213pd | Vfmadd231pd | Vfmsub132pd | Vfmsub213pd | Vfmsub231pd
        | Vfnmadd132pd | Vfnmadd213pd | Vfnmadd231pd | Vfnmsub132pd | Vfnmsub213pd
        | Vfnmsub231pd | Vfmaddsub132pd | Vfmaddsub213pd | Vfmaddsub231pd | Vfmsubadd132pd
        | Vfmsubadd213pd | Vfmsubadd231pd => (true, 2),
        Vfmadd132ss | Vfmadd213ss | Vfmadd231ss | Vfmsub132ss | Vfmsub213ss | Vfmsub231ss
        | Vfnmadd132ss | Vfnmadd213ss | Vfnmadd231ss | Vfnmsub132ss | Vfnmsub213ss
        | Vfnmsub231ss => (false, 1),
        Vfmadd132sd | Vfmadd213sd | Vfmadd231sd | Vfmsub132sd | Vfmsub213sd | Vfmsub231sd
        | Vfnmadd132sd | Vfnmadd213sd | Vfnmadd231sd | Vfnmsub132sd | Vfnmsub213sd
        | Vfnmsub231sd => (true, 1),
        _ => return None,
    })
}

/// (V)MASKMOVDQU: the bytes of the first operand whose mask byte has bit 7 set go to DS:rDI.
fn maskmovdqu(c: &mut Ctx, i: &Instruction) -> R<()> {
    fpstate::check_simd(c, i)?;
    let (d, m) = data_and_mask(i);
    let data = c.c.s.fpu.xmm[xmm_index(d) & 15].to_le_bytes();
    let mask = c.c.s.fpu.xmm[xmm_index(m) & 15].to_le_bytes();
    let asz = super::addr_size(i);
    let base = c.c.get(7, asz);
    let seg = super::sreg(i.memory_segment());
    let m = crate::soft::flags::mask(asz);
    for k in 0..16 {
        if mask[k] & 0x80 != 0 {
            c.write(seg, base.wrapping_add(k as u64) & m, 1, u64::from(data[k]))?;
        }
    }
    Ok(())
}

/// The data and mask registers of MASKMOVDQU and MASKMOVQ (iced-x86 gives the implicit
/// DS:rDI destination as operand 0).
fn data_and_mask(i: &Instruction) -> (Register, Register) {
    let mut r = (0..i.op_count())
        .filter(|&n| i.op_kind(n) == OpKind::Register)
        .map(|n| i.op_register(n));
    let d = r.next().unwrap_or(Register::None);
    (d, r.next().unwrap_or(d))
}

/// MASKMOVQ: MASKMOVDQU on MMX registers (the bytes of the first whose mask byte in the second
/// has bit 7 set go to DS:rDI), then the MMX state (TOP 0, every tag valid).
fn maskmovq(c: &mut Ctx, i: &Instruction) -> R<()> {
    check_mmx(c, i)?;
    let f = &c.c.s.fpu;
    let top = usize::from(f.top());
    // MMn is physical register n, ST((n - TOP) mod 8) in stack order.
    let mm = |r: Register| {
        let n = (r as usize).wrapping_sub(Register::MM0 as usize);
        f.st[(n + 8 - top) & 7] as u64
    };
    let (d, m) = data_and_mask(i);
    let data = mm(d).to_le_bytes();
    let mask = mm(m).to_le_bytes();
    let asz = super::addr_size(i);
    let base = c.c.get(7, asz);
    let seg = super::sreg(i.memory_segment());
    let m = crate::soft::flags::mask(asz);
    for k in 0..8 {
        if mask[k] & 0x80 != 0 {
            c.write(seg, base.wrapping_add(k as u64) & m, 1, u64::from(data[k]))?;
        }
    }
    mmx_transition(&mut c.c.s.fpu);
    Ok(())
}

/// The x87 state after an MMX instruction that writes no MMX register: TOP 0 (the physical
/// registers keep their values), every tag valid.
fn mmx_transition(f: &mut crate::state::FpuState) {
    let top = usize::from(f.top());
    f.st.rotate_right(top);
    f.fsw &= !0x3800;
    f.ftw = 0xff;
}
