//! x87, SSE and SSE2 on the software CPU: results, MXCSR rounding and flags, DAZ/FTZ, NaN
//! rules, comparisons into RFLAGS, the x87 stack and tags, FXSAVE/XSAVE layouts, and the
//! CR0/CR4 rules (#NM, #UD, #XM, #GP). Expected values are what an x86-64 CPU gives.

use iced_x86::code_asm::*;

use super::*;
use crate::state::Reg;

const DATA: u64 = 0x8000;

/// Long mode with CR4.OSFXSR|OSXMMEXCPT|OSXSAVE, CR0.NE and MP, FNINIT state; runs `f` to HLT
/// (or to the first exception, whose vector is returned).
fn run_fpu(
    setup: impl FnOnce(&mut CpuState),
    f: impl FnOnce(&mut CodeAssembler),
) -> (Machine, CpuState) {
    let mut m = Machine::new();
    let code = asm(64, CODE, |a| {
        f(a);
        a.hlt().unwrap();
    });
    let mut s = long_state(&m);
    s.cr4 |= bits::CR4_OSFXSR | bits::CR4_OSXMMEXCPT | bits::CR4_OSXSAVE;
    s.cr0 |= bits::CR0_NE | bits::CR0_MP;
    s.fpu.fcw = 0x37f;
    s.fpu.ftw = 0;
    setup(&mut s);
    m.load(CODE, &code);
    m.set(&s);
    let s = m.run_to_halt();
    (m, s)
}

fn run(f: impl FnOnce(&mut CodeAssembler)) -> (Machine, CpuState) {
    run_fpu(|_| {}, f)
}

/// Runs `f` with an IDT whose every vector halts with the vector number in R15.
pub(super) fn fault_vector(
    setup: impl FnOnce(&mut CpuState),
    f: impl FnOnce(&mut CodeAssembler),
) -> u64 {
    let mut m = Machine::new();
    let code = asm(64, CODE, |a| {
        a.mov(r15, 0xffu64).unwrap();
        f(a);
        a.hlt().unwrap();
    });
    m.load(CODE, &code);
    // Handlers at 0x9000 + 16*v: mov r15d, v; hlt.
    for v in 0..32u64 {
        let h = asm(64, 0x9000 + 16 * v, |a| {
            a.mov(r15d, v as u32).unwrap();
            a.hlt().unwrap();
        });
        m.load(0x9000 + 16 * v, &h);
        gate64(&m, v as u8, 0x9000 + 16 * v, 0);
    }
    let mut s = long_state(&m);
    s.cr4 |= bits::CR4_OSFXSR | bits::CR4_OSXMMEXCPT | bits::CR4_OSXSAVE;
    s.cr0 |= bits::CR0_NE | bits::CR0_MP;
    s.fpu.fcw = 0x37f;
    s.fpu.ftw = 0;
    setup(&mut s);
    m.set(&s);
    m.run_to_halt().reg(Reg::R15)
}

fn f32s(v: [f32; 4]) -> u128 {
    v.iter()
        .enumerate()
        .fold(0, |acc, (i, x)| acc | u128::from(x.to_bits()) << (32 * i))
}

fn f64s(v: [f64; 2]) -> u128 {
    u128::from(v[0].to_bits()) | u128::from(v[1].to_bits()) << 64
}

#[test]
fn packed_single_arithmetic_and_moves() {
    let (m, s) = run_fpu(
        |s| {
            s.fpu.xmm[1] = f32s([1.0, 2.0, 3.0, 4.0]);
            s.fpu.xmm[2] = f32s([0.5, 0.25, -3.0, 8.0]);
        },
        |a| {
            a.movaps(xmm0, xmm1).unwrap();
            a.addps(xmm0, xmm2).unwrap();
            a.mulps(xmm1, xmm2).unwrap();
            a.mov(eax, DATA as u32).unwrap();
            a.movups(xmmword_ptr(rax + 4), xmm0).unwrap();
            a.movdqa(xmmword_ptr(rax + 0x20), xmm1).unwrap();
            a.movss(xmm3, dword_ptr(rax + 8)).unwrap();
        },
    );
    assert_eq!(s.fpu.xmm[0], f32s([1.5, 2.25, 0.0, 12.0]));
    assert_eq!(s.fpu.xmm[1], f32s([0.5, 0.5, -9.0, 32.0]));
    assert_eq!(m.rd(DATA + 4, 4), u64::from(1.5f32.to_bits()));
    assert_eq!(m.rd(DATA + 0x2c, 4), u64::from(32.0f32.to_bits()));
    // MOVSS from memory zeroes bits 32-127.
    assert_eq!(s.fpu.xmm[3], u128::from(2.25f32.to_bits()));
    assert_eq!(s.fpu.mxcsr, 0x1f80);
}

#[test]
fn rounding_modes_follow_mxcsr() {
    // 1/3 in single precision, rounded down and up differ in the last bit.
    let go = |rc: u32| {
        run_fpu(
            |s| {
                s.fpu.mxcsr = 0x1f80 | rc << 13;
                s.fpu.xmm[0] = f32s([1.0, 0.0, 0.0, 0.0]);
                s.fpu.xmm[1] = f32s([3.0, 0.0, 0.0, 0.0]);
            },
            |a| {
                a.divss(xmm0, xmm1).unwrap();
                a.cvtss2si(eax, xmm1).unwrap();
                a.cvttsd2si(rbx, xmm2).unwrap();
            },
        )
        .1
    };
    let near = go(0).fpu.xmm[0] as u32;
    let down = go(1).fpu.xmm[0] as u32;
    let up = go(2).fpu.xmm[0] as u32;
    let zero = go(3).fpu.xmm[0] as u32;
    assert_eq!(near, (1.0f32 / 3.0).to_bits());
    assert_eq!(down, zero);
    assert_eq!(up, down + 1);
    // Inexact is flagged (PE, bit 5).
    assert_eq!(go(0).fpu.mxcsr & 0x3f, 0x20);
    assert_eq!(go(0).reg(Reg::Rax), 3);
}

#[test]
fn nan_rules_and_indefinite() {
    let qnan_a = 0x7fc0_0001u32;
    let snan_b = 0x7f80_0002u32;
    let (_, s) = run_fpu(
        |s| {
            s.fpu.xmm[0] = u128::from(qnan_a);
            s.fpu.xmm[1] = u128::from(snan_b);
            s.fpu.xmm[2] = f32s([0.0; 4]);
            s.fpu.xmm[3] = f32s([0.0; 4]);
            s.fpu.xmm[4] = u128::from(snan_b);
            s.fpu.xmm[5] = f32s([1.0; 4]);
        },
        |a| {
            // First operand's QNaN wins; 0/0 gives the negative default NaN; an SNaN is quieted.
            a.addss(xmm0, xmm1).unwrap();
            a.divss(xmm2, xmm3).unwrap();
            a.addss(xmm5, xmm4).unwrap();
        },
    );
    assert_eq!(s.fpu.xmm[0] as u32, qnan_a);
    assert_eq!(s.fpu.xmm[2] as u32, 0xffc0_0000);
    assert_eq!(s.fpu.xmm[5] as u32, 0x7fc0_0002);
    // Invalid (IE) from the SNaN and 0/0.
    assert_eq!(s.fpu.mxcsr & 1, 1);
}

#[test]
fn daz_and_ftz() {
    let tiny = f64::from_bits(1); // the smallest denormal
    let go = |mxcsr: u32| {
        run_fpu(
            |s| {
                s.fpu.mxcsr = mxcsr;
                s.fpu.xmm[0] = f64s([tiny, 0.0]);
                s.fpu.xmm[2] = f64s([f64::MIN_POSITIVE, 0.0]);
                s.fpu.xmm[3] = f64s([0.5, 0.0]);
            },
            |a| {
                a.addsd(xmm0, xmm0).unwrap();
                a.mulsd(xmm2, xmm3).unwrap();
            },
        )
        .1
    };
    let plain = go(0x1f80);
    assert_eq!(plain.fpu.xmm[0] as u64, 2);
    assert_eq!(plain.fpu.xmm[2] as u64, f64::MIN_POSITIVE.to_bits() / 2);
    // DAZ: denormal inputs read as zero.
    let daz = go(0x1f80 | 0x40);
    assert_eq!(daz.fpu.xmm[0] as u64, 0);
    // FTZ: a denormal result is flushed to +0, with underflow and inexact flagged.
    let ftz = go(0x1f80 | 0x8000);
    assert_eq!(ftz.fpu.xmm[2] as u64, 0);
    assert_eq!(ftz.fpu.mxcsr & 0x30, 0x30);
}

#[test]
fn comparisons_set_zf_pf_cf() {
    let (_, s) = run_fpu(
        |s| {
            s.fpu.xmm[0] = f64s([1.0, 0.0]);
            s.fpu.xmm[1] = f64s([2.0, 0.0]);
            s.fpu.xmm[2] = u128::from(f64::NAN.to_bits());
        },
        |a| {
            a.comisd(xmm0, xmm1).unwrap(); // less: CF
            a.setb(al).unwrap();
            a.ucomisd(xmm0, xmm2).unwrap(); // unordered: ZF PF CF
            a.setp(bl).unwrap();
            a.cmpltpd(xmm0, xmm1).unwrap();
        },
    );
    assert_eq!(s.reg(Reg::Rax) & 0xff, 1);
    assert_eq!(s.reg(Reg::Rbx) & 0xff, 1);
    assert_eq!(s.fpu.xmm[0] as u64, u64::MAX);
    assert_eq!((s.fpu.xmm[0] >> 64) as u64, 0);
    // UCOMISD with a QNaN raises no invalid.
    assert_eq!(s.fpu.mxcsr & 1, 0);
}

#[test]
fn sse2_integer_ops() {
    let (_, s) = run_fpu(
        |s| {
            s.fpu.xmm[0] = 0x00ff_7f80_0102_0304_0506_0708_090a_0b0c;
            s.fpu.xmm[1] = 0x0101_0101_0101_0101_0101_0101_0101_0101;
        },
        |a| {
            a.movdqa(xmm2, xmm0).unwrap();
            a.paddusb(xmm2, xmm1).unwrap();
            a.pcmpeqb(xmm3, xmm3).unwrap();
            a.pmovmskb(ecx, xmm0).unwrap();
            a.pshufd(xmm4, xmm0, 0x1b).unwrap();
            a.psrldq(xmm0, 4).unwrap();
            a.mov(rdx, 0x1234_5678_9abc_def0u64).unwrap();
            a.movq(xmm5, rdx).unwrap();
            a.pextrw(esi, xmm5, 3).unwrap();
        },
    );
    assert_eq!(s.fpu.xmm[2], 0x01ff_8081_0203_0405_0607_0809_0a0b_0c0d);
    assert_eq!(s.fpu.xmm[3], u128::MAX);
    assert_eq!(s.reg(Reg::Rcx), 0x5000);
    assert_eq!(s.fpu.xmm[4], 0x090a_0b0c_0506_0708_0102_0304_00ff_7f80);
    assert_eq!(s.fpu.xmm[0], 0x0000_0000_00ff_7f80_0102_0304_0506_0708);
    assert_eq!(s.fpu.xmm[5], 0x1234_5678_9abc_def0);
    assert_eq!(s.reg(Reg::Rsi), 0x1234);
}

#[test]
fn conversions_with_64_bit_forms() {
    let (_, s) = run_fpu(
        |s| {
            s.fpu.xmm[1] = f64s([-2.5, 0.0]);
            s.fpu.xmm[2] = f64s([1e30, 0.0]);
        },
        |a| {
            a.cvtsd2si(rax, xmm1).unwrap(); // round to even: -2
            a.cvttsd2si(rbx, xmm1).unwrap(); // truncate: -2
            a.cvttsd2si(ecx, xmm2).unwrap(); // out of range: integer indefinite
            a.mov(rdx, -7i64).unwrap();
            a.cvtsi2sd(xmm3, rdx).unwrap();
            a.cvtsd2ss(xmm4, xmm3).unwrap();
        },
    );
    assert_eq!(s.reg(Reg::Rax) as i64, -2);
    assert_eq!(s.reg(Reg::Rbx) as i64, -2);
    assert_eq!(s.reg(Reg::Rcx), 0x8000_0000);
    assert_eq!(s.fpu.xmm[3] as u64, (-7.0f64).to_bits());
    assert_eq!(s.fpu.xmm[4] as u32, (-7.0f32).to_bits());
    assert_eq!(s.fpu.mxcsr & 1, 1);
}

#[test]
fn x87_arithmetic_stack_and_tags() {
    let (m, s) = run(|a| {
        a.mov(eax, DATA as u32).unwrap();
        a.mov(dword_ptr(rax), 3).unwrap();
        a.fild(dword_ptr(rax)).unwrap(); // 3
        a.fldpi().unwrap(); // pi, 3
        a.fmulp(st1, st0).unwrap(); // 3pi
        a.fld1().unwrap();
        a.fadd_2(st0, st0).unwrap(); // 2, 3pi
        a.fdivp(st1, st0).unwrap(); // 1.5pi
        a.fst(qword_ptr(rax + 8)).unwrap();
        a.fistp(dword_ptr(rax + 16)).unwrap(); // round to nearest: 5
        a.fnstsw(ax).unwrap();
    });
    let v = f64::from_bits(m.rd(DATA + 8, 8));
    assert!((v - 1.5 * std::f64::consts::PI).abs() < 1e-15);
    assert_eq!(m.rd(DATA + 16, 4), 5);
    assert_eq!(s.fpu.ftw, 0);
    assert_eq!(s.fpu.top(), 0);
    // Inexact (PE) from FLDPI rounding / FIST.
    assert_eq!(s.reg(Reg::Rax) & 0x20, 0x20);
    assert!(s.fpu.fip > CODE && s.fpu.fip < CODE + 0x40);
}

#[test]
fn x87_compare_into_eflags_and_fcmov() {
    let (_, s) = run(|a| {
        a.fld1().unwrap();
        a.fldz().unwrap(); // st0 = 0, st1 = 1
        a.fcomi(st0, st1).unwrap(); // 0 < 1: CF
        a.setb(bl).unwrap();
        a.fcmovb(st0, st1).unwrap(); // CF: st0 = 1
        a.ftst().unwrap();
        a.fnstsw(ax).unwrap();
        a.fxam().unwrap();
    });
    assert_eq!(s.reg(Reg::Rbx) & 0xff, 1);
    assert_eq!(s.fpu.st[0], 0x3fff_8000_0000_0000_0000);
    // FTST of +1: C3 C2 C0 clear.
    assert_eq!(s.reg(Reg::Rax) & 0x4500, 0);
    // FXAM of +1 (normal): C2 set, C3 C0 clear, C1 = sign = 0.
    assert_eq!(s.fpu.fsw & 0x4700, 0x0400);
}

#[test]
fn x87_stack_overflow_sets_invalid_and_sf() {
    let (_, s) = run(|a| {
        for _ in 0..9 {
            a.fld1().unwrap();
        }
    });
    // IE and SF with C1 = 1 (overflow); the ninth push stores the indefinite.
    assert_eq!(s.fpu.fsw & 0x41, 0x41);
    assert_eq!(s.fpu.fsw & 0x200, 0x200);
    assert_eq!(s.fpu.st[0], 0xffff_c000_0000_0000_0000);
}

#[test]
fn emms_empties_every_tag() {
    let (_, s) = run(|a| {
        a.fld1().unwrap();
        a.fldz().unwrap();
        a.emms().unwrap();
    });
    assert_eq!(s.fpu.ftw, 0);
    // TOP becomes 0 (as on an AMD EPYC host: `fld1; fldz; emms` leaves FSW 0); the physical
    // registers stay, so FLD1's 1.0 (physical 7) is ST7.
    assert_eq!(s.fpu.top(), 0);
    assert_eq!(s.fpu.st[7], 0x3fff_8000_0000_0000_0000);
}

#[test]
fn fninit_keeps_physical_registers() {
    // FLD1 leaves 1.0 in physical register 7 (TOP = 7); FNINIT sets TOP = 0, so that register
    // is ST7 now, and FLDZ then writes physical 7 again through ST0 = physical 7.
    let (_, s) = run(|a| {
        a.fld1().unwrap();
        a.fninit().unwrap();
    });
    assert_eq!(s.fpu.top(), 0);
    assert_eq!(s.fpu.st[7], 0x3fff_8000_0000_0000_0000);
    assert_eq!(s.fpu.st[0], 0);
}

#[test]
fn x87_control_and_environment() {
    let (m, s) = run(|a| {
        a.mov(eax, DATA as u32).unwrap();
        a.mov(word_ptr(rax), 0x0c7f).unwrap(); // round toward zero
        a.fldcw(word_ptr(rax)).unwrap();
        a.fld1().unwrap();
        a.fnstcw(word_ptr(rax + 2)).unwrap();
        a.fnstenv(ptr(rax + 0x10)).unwrap();
        a.mov(word_ptr(rax + 0x4e), 0xbeef).unwrap();
        a.db(&[0x66, 0xd9, 0x70, 0x40]).unwrap(); // fnstenv (14 bytes) [rax+0x40]
        a.fninit().unwrap();
        a.fnstsw(word_ptr(rax + 4)).unwrap();
    });
    assert_eq!(m.rd(DATA + 2, 2), 0x0c7f);
    assert_eq!(m.rd(DATA + 0x10, 4), 0xffff_0c7f);
    // FSW with TOP = 7; tags: ST0 (physical 7) valid.
    assert_eq!(m.rd(DATA + 0x14, 4), 0xffff_3800);
    assert_eq!(m.rd(DATA + 0x18, 4), 0xffff_3fff);
    assert_eq!(m.rd(DATA + 4, 2), 0);
    assert_eq!(s.fpu.fcw, 0x37f);
    // The 16-bit environment is 14 bytes: the two after it are untouched.
    assert_eq!(m.rd(DATA + 0x4e, 2), 0xbeef);
    assert_eq!(s.fpu.ftw, 0);
}

#[test]
fn fnsave_frstor_and_fldenv_round_trip() {
    let (_, s) = run(|a| {
        a.mov(eax, DATA as u32).unwrap();
        a.fld1().unwrap();
        a.fldpi().unwrap(); // TOP = 6: ST0 = pi, ST1 = 1
        a.fnsave(ptr(rax)).unwrap(); // 108 bytes, then FNINIT
        a.fldz().unwrap();
        a.frstor(ptr(rax)).unwrap();
        a.fnstenv(ptr(rax + 0x80)).unwrap();
        a.fninit().unwrap();
        a.fldenv(ptr(rax + 0x80)).unwrap(); // TOP = 6 again: the registers follow
    });
    assert_eq!(s.fpu.top(), 6);
    assert_eq!(s.fpu.ftw, 0xc0);
    assert_eq!(s.fpu.st[0] >> 64, 0x4000); // pi
    assert_eq!(s.fpu.st[1], 0x3fff_8000_0000_0000_0000);
    // FNSTENV masked every exception; FLDENV loaded that control word.
    assert_eq!(s.fpu.fcw, 0x37f);
}

#[test]
fn fxsave_layout_and_round_trip() {
    let (m, s) = run_fpu(
        |s| {
            s.fpu.xmm[7] = 0x1111_2222_3333_4444_5555_6666_7777_8888;
            s.fpu.mxcsr = 0x1f80 | 0x6000;
        },
        |a| {
            a.mov(eax, DATA as u32).unwrap();
            a.fld1().unwrap();
            a.fxsave64(ptr(rax)).unwrap();
            a.pxor(xmm7, xmm7).unwrap();
            a.fninit().unwrap();
            a.fxrstor64(ptr(rax)).unwrap();
        },
    );
    assert_eq!(m.rd(DATA, 2), 0x37f);
    assert_eq!(m.rd(DATA + 2, 2), 0x3800);
    assert_eq!(m.rd(DATA + 4, 1), 0x80);
    assert_eq!(m.rd(DATA + 24, 4), 0x7f80);
    assert_eq!(
        m.rd(DATA + 28, 4),
        u64::from(crate::soft::host_fpu::mxcsr_mask())
    );
    assert_eq!(m.rd(DATA + 32, 8), 0x8000_0000_0000_0000);
    assert_eq!(m.rd(DATA + 40, 2), 0x3fff);
    assert_eq!(m.rd(DATA + 160 + 7 * 16, 8), 0x5555_6666_7777_8888);
    assert_eq!(s.fpu.xmm[7], 0x1111_2222_3333_4444_5555_6666_7777_8888);
    assert_eq!(s.fpu.ftw, 0x80);
    assert_eq!(s.fpu.mxcsr, 0x7f80);
}

#[test]
fn xsave_header_and_init_optimisation() {
    let (m, s) = run_fpu(
        |s| s.fpu.xcr0 = 3,
        |a| {
            a.mov(eax, DATA as u32).unwrap();
            a.mov(rdi, rax).unwrap();
            a.mov(qword_ptr(rax + 512), -1i32).unwrap(); // XSTATE_BV garbage above bit 1 kept
            a.mov(eax, 3).unwrap();
            a.xor(edx, edx).unwrap();
            a.xsave64(ptr(rdi)).unwrap(); // x87 in init state, SSE too: bits 0-1 clear
            a.mov(rsi, qword_ptr(rdi + 512)).unwrap();
            a.mov(qword_ptr(rdi + 512), 0).unwrap();
            a.pcmpeqd(xmm1, xmm1).unwrap();
            a.xsave64(ptr(rdi)).unwrap(); // SSE in use now
            a.mov(r9, qword_ptr(rdi + 512)).unwrap();
            a.mov(qword_ptr(rdi + 512), 0).unwrap(); // XSTATE_BV = 0: XRSTOR initialises
            a.xrstor64(ptr(rdi)).unwrap();
            a.xor(ecx, ecx).unwrap();
            a.xgetbv().unwrap();
            a.mov(r8, rax).unwrap();
        },
    );
    assert_eq!(s.reg(Reg::Rsi), 0xffff_ffff_ffff_fffc);
    assert_eq!(s.reg(Reg::R8), 3);
    assert_eq!(s.reg(Reg::R9), 2);
    assert_eq!(s.fpu.xmm[1], 0);
    assert_eq!(m.rd(DATA + 160 + 16, 8), u64::MAX);
}

#[test]
fn control_register_rules() {
    use crate::soft::cpu::vec;
    let sse = |a: &mut CodeAssembler| a.addps(xmm0, xmm1).unwrap();
    // CR4.OSFXSR clear: #UD; CR0.EM: #UD for SSE, #NM for x87; CR0.TS: #NM.
    assert_eq!(
        fault_vector(|s| s.cr4 &= !bits::CR4_OSFXSR, sse),
        u64::from(vec::UD)
    );
    assert_eq!(
        fault_vector(|s| s.cr0 |= bits::CR0_EM, sse),
        u64::from(vec::UD)
    );
    assert_eq!(
        fault_vector(|s| s.cr0 |= bits::CR0_TS, sse),
        u64::from(vec::NM)
    );
    assert_eq!(
        fault_vector(|s| s.cr0 |= bits::CR0_EM, |a| a.fld1().unwrap()),
        u64::from(vec::NM)
    );
    // FWAIT: #NM only with MP and TS.
    assert_eq!(
        fault_vector(|s| s.cr0 |= bits::CR0_TS, |a| a.wait().unwrap()),
        u64::from(vec::NM)
    );
    // XSAVE without CR4.OSXSAVE: #UD; misaligned FXSAVE and MOVAPS: #GP.
    assert_eq!(
        fault_vector(|s| s.cr4 &= !bits::CR4_OSXSAVE, |a| a.xgetbv().unwrap()),
        u64::from(vec::UD)
    );
    assert_eq!(
        fault_vector(
            |_| {},
            |a| {
                a.mov(eax, DATA as u32 + 8).unwrap();
                a.fxsave(ptr(rax)).unwrap();
            }
        ),
        u64::from(vec::GP)
    );
    assert_eq!(
        fault_vector(
            |_| {},
            |a| {
                a.mov(eax, DATA as u32 + 8).unwrap();
                a.movaps(xmm0, xmmword_ptr(rax)).unwrap();
            }
        ),
        u64::from(vec::GP)
    );
    // LDMXCSR with a reserved bit: #GP; XSETBV without x87 or with AVX but not SSE: #GP.
    assert_eq!(
        fault_vector(
            |_| {},
            |a| {
                a.mov(eax, DATA as u32).unwrap();
                a.mov(dword_ptr(rax), 0x1_0000).unwrap();
                a.ldmxcsr(dword_ptr(rax)).unwrap();
            }
        ),
        u64::from(vec::GP)
    );
    assert_eq!(
        fault_vector(
            |_| {},
            |a| {
                a.xor(ecx, ecx).unwrap();
                a.xor(edx, edx).unwrap();
                a.mov(eax, 5).unwrap();
                a.xsetbv().unwrap();
            }
        ),
        u64::from(vec::GP)
    );
}

#[test]
fn unmasked_simd_exception_raises_xm_or_ud_and_keeps_the_destination() {
    use crate::soft::cpu::vec;
    let div0 = |a: &mut CodeAssembler| {
        a.divps(xmm0, xmm1).unwrap();
        a.mov(r15, 0x55u64).unwrap();
    };
    let setup = |s: &mut CpuState| {
        s.fpu.mxcsr = 0x1f80 & !(1 << 9); // ZE unmasked
        s.fpu.xmm[0] = f32s([1.0; 4]);
    };
    assert_eq!(fault_vector(setup, div0), u64::from(vec::XM));
    assert_eq!(
        fault_vector(
            |s| {
                setup(s);
                s.cr4 &= !bits::CR4_OSXMMEXCPT;
            },
            div0
        ),
        u64::from(vec::UD)
    );
    // Unmasked underflow: an exact tiny result is signalled too (UE, no PE), nothing written.
    let tiny = |a: &mut CodeAssembler| {
        a.mulss(xmm0, xmm1).unwrap();
        a.stmxcsr(dword_ptr(0x8000)).unwrap();
    };
    let setup = |s: &mut CpuState| {
        s.fpu.mxcsr = 0x1f80 & !(1 << 11); // UE unmasked
        s.fpu.xmm[0] = u128::from(f32::MIN_POSITIVE.to_bits());
        s.fpu.xmm[1] = u128::from(0.5f32.to_bits());
    };
    assert_eq!(fault_vector(setup, tiny), u64::from(vec::XM));
    // Unmasked x87 exception: #MF at the next waiting instruction (CR0.NE).
    assert_eq!(
        fault_vector(
            |s| s.fpu.fcw = 0x37f & !4,
            |a| {
                a.fldz().unwrap();
                a.fld1().unwrap();
                a.fdivrp(st1, st0).unwrap();
                a.fld1().unwrap();
            }
        ),
        u64::from(vec::MF)
    );
}

#[test]
fn cpuid_advertises_fpu_mmx_sse2_xsave_and_avx_as_the_host_has_it() {
    let (_, s) = run(|a| {
        a.mov(eax, 1).unwrap();
        a.cpuid().unwrap();
        a.mov(r8, rcx).unwrap();
        a.mov(r9, rdx).unwrap();
        a.mov(eax, 0xd).unwrap();
        a.xor(ecx, ecx).unwrap();
        a.cpuid().unwrap();
    });
    let (c1, d1) = (s.reg(Reg::R8), s.reg(Reg::R9));
    assert_eq!(
        d1 & (1 | 1 << 24 | 1 << 25 | 1 << 26),
        1 | 1 << 24 | 1 << 25 | 1 << 26
    );
    assert_eq!(d1 & (1 << 23), 1 << 23, "MMX");
    // XSAVE and OSXSAVE (CR4.OSXSAVE is set); AVX where the host has it (SSE3 to SSE4.2:
    // tests/isa.rs); the XSAVE size is that of XCR0's components (x87 only here).
    assert_eq!(c1 & (1 << 26 | 1 << 27), 1 << 26 | 1 << 27);
    let avx = crate::cpuid::host(1, 0)[2] & 1 << 28 != 0;
    assert_eq!(c1 & (1 << 28) != 0, avx);
    assert_eq!(s.reg(Reg::Rax), if avx { 7 } else { 3 });
    assert_eq!(s.reg(Reg::Rbx), 576);
}
