//! AVX state and the VEX-encoded families on the software CPU, each run interpreted and
//! compiled from the same state (the two must agree): the YMM upper halves and XSAVE's AVX
//! component (XSAVE, XSAVEOPT, XRSTOR at the standard offset 576, CPUID leaf 0xD), VZEROUPPER
//! and VZEROALL, and the #UD/#NM rules of VEX instructions.

use iced_x86::code_asm::*;

use super::*;
use crate::soft::jit::tests::same_both_ways;
use crate::state::Reg;

const DATA: u64 = 0x8000;

/// AVX on: CR4.OSFXSR, OSXMMEXCPT, OSXSAVE; XCR0 = x87|SSE|AVX; FNINIT state; `data` at DATA
/// and rBX = DATA.
fn avx_setup(data: &[u8]) -> impl Fn(&Machine, &mut CpuState) + '_ {
    move |m, s| {
        s.cr4 |= bits::CR4_OSFXSR | bits::CR4_OSXMMEXCPT | bits::CR4_OSXSAVE;
        s.cr0 |= bits::CR0_NE | bits::CR0_MP;
        s.cr0 &= !bits::CR0_EM;
        s.fpu.fcw = 0x37f;
        s.fpu.ftw = 0;
        s.fpu.xcr0 = 7;
        s.gpr[3] = DATA;
        m.load(DATA, data);
    }
}

/// Runs `f` in mode `bits` both ways over `data` with `setup` after the AVX one.
fn run_with(
    bits: u32,
    data: &[u8],
    setup: impl Fn(&mut CpuState),
    f: impl Fn(&mut CodeAssembler),
) -> (Machine, CpuState) {
    let base = avx_setup(data);
    same_both_ways(
        bits,
        f,
        &move |m: &Machine, s: &mut CpuState| {
            base(m, s);
            setup(s);
        },
        0x10000,
    )
}

fn run(data: &[u8], f: impl Fn(&mut CodeAssembler)) -> (Machine, CpuState) {
    run_with(64, data, |_| {}, f)
}

/// The 256-bit value of YMMn.
fn ymm(s: &CpuState, n: usize) -> [u128; 2] {
    [s.fpu.xmm[n], s.fpu.ymm_hi[n]]
}

const LO: u128 = 0x0011_2233_4455_6677_8899_aabb_ccdd_eeff;
const HI: u128 = 0xfedc_ba98_7654_3210_0123_4567_89ab_cdef;

#[test]
fn xsave_and_xrstor_carry_the_ymm_upper_halves() {
    let (m, s) = run_with(
        64,
        &[],
        |s| {
            s.fpu.xmm[3] = LO;
            s.fpu.ymm_hi[3] = HI;
            s.fpu.ymm_hi[15] = 1;
        },
        |a| {
            a.mov(rdi, rbx).unwrap();
            a.mov(eax, 7).unwrap();
            a.xor(edx, edx).unwrap();
            a.xsave64(ptr(rdi)).unwrap();
            a.mov(r8, qword_ptr(rdi + 512)).unwrap(); // XSTATE_BV
            a.vzeroupper().unwrap();
            a.xrstor64(ptr(rdi)).unwrap(); // back again
            a.mov(eax, 3).unwrap(); // RFBM without AVX: the upper halves are left alone
            a.vzeroall().unwrap();
            a.xrstor64(ptr(rdi)).unwrap();
        },
    );
    assert_eq!(s.reg(Reg::R8), 6, "x87 initial; SSE and AVX in use");
    assert_eq!(m.rd(DATA + 576 + 48, 8), HI as u64);
    assert_eq!(m.rd(DATA + 576 + 56, 8), (HI >> 64) as u64);
    assert_eq!(m.rd(DATA + 576 + 240, 8), 1);
    assert_eq!(s.fpu.xmm[3], LO, "XRSTOR of SSE after VZEROALL");
    assert_eq!(s.fpu.ymm_hi[3], 0, "VZEROALL's zero, AVX not in RFBM");
    assert_eq!(s.fpu.ymm_hi[15], 0);
}

#[test]
fn xrstor_restores_ymm_and_initialises_a_clear_component() {
    let (_, s) = run_with(
        64,
        &[],
        |s| s.fpu.ymm_hi[3] = HI,
        |a| {
            a.mov(rdi, rbx).unwrap();
            a.mov(eax, 7).unwrap();
            a.xor(edx, edx).unwrap();
            a.xsave64(ptr(rdi)).unwrap();
            a.vzeroupper().unwrap();
            a.xrstor64(ptr(rdi)).unwrap();
            a.xsave64(ptr(rdi + 1024)).unwrap();
            a.and(byte_ptr(rdi + 1024 + 512), 3).unwrap(); // XSTATE_BV bit 2 clear
            a.xrstor64(ptr(rdi + 1024)).unwrap();
        },
    );
    assert_eq!(
        s.fpu.ymm_hi[3], 0,
        "XSTATE_BV[2] clear: initial configuration"
    );
    let (_, s) = run_with(
        64,
        &[],
        |s| s.fpu.ymm_hi[3] = HI,
        |a| {
            a.mov(rdi, rbx).unwrap();
            a.mov(eax, 7).unwrap();
            a.xor(edx, edx).unwrap();
            a.xsave64(ptr(rdi)).unwrap();
            a.vzeroupper().unwrap();
            a.xrstor64(ptr(rdi)).unwrap();
        },
    );
    assert_eq!(s.fpu.ymm_hi[3], HI);
}

#[test]
fn xsaveopt_leaves_out_components_in_their_initial_configuration() {
    let (m, s) = run_with(
        64,
        &[0x5a; 832],
        |s| s.fpu.xmm[1] = LO,
        |a| {
            a.mov(rdi, rbx).unwrap();
            a.mov(qword_ptr(rdi + 512), 0).unwrap();
            a.mov(qword_ptr(rdi + 520), 0).unwrap();
            a.mov(eax, 7).unwrap();
            a.xor(edx, edx).unwrap();
            a.xsaveopt64(ptr(rdi)).unwrap();
            a.mov(r8, qword_ptr(rdi + 512)).unwrap();
        },
    );
    assert_eq!(s.reg(Reg::R8), 2, "only SSE in use");
    assert_eq!(m.rd(DATA + 160 + 16, 8) as u128, LO & u128::from(u64::MAX));
    assert_eq!(m.rd(DATA, 8), 0x5a5a_5a5a_5a5a_5a5a, "x87 not written");
    assert_eq!(
        m.rd(DATA + 576, 8),
        0x5a5a_5a5a_5a5a_5a5a,
        "YMM_Hi128 not written"
    );
    assert_eq!(m.rd(DATA + 24, 4), 0x1f80, "MXCSR is");
}

#[test]
fn vzeroupper_and_vzeroall() {
    let (_, s) = run_with(
        64,
        &[],
        |s| {
            s.fpu.xmm = [LO; 16];
            s.fpu.ymm_hi = [HI; 16];
        },
        |a| a.vzeroupper().unwrap(),
    );
    assert_eq!(ymm(&s, 15), [LO, 0]);
    let (_, s) = run_with(
        32,
        &[],
        |s| {
            s.fpu.xmm = [LO; 16];
            s.fpu.ymm_hi = [HI; 16];
        },
        |a| a.vzeroall().unwrap(),
    );
    assert_eq!(ymm(&s, 0), [0, 0]);
    assert_eq!(ymm(&s, 15), [0, 0], "all sixteen, even outside 64-bit mode");
}

#[test]
fn cpuid_0xd_ebx_follows_xcr0() {
    let (_, s) = run(&[], |a| {
        a.mov(eax, 0xd).unwrap();
        a.xor(ecx, ecx).unwrap();
        a.cpuid().unwrap();
        a.mov(r8, rbx).unwrap();
    });
    assert_eq!(s.reg(Reg::R8), 832);
    let (_, s) = run_with(
        64,
        &[],
        |s| s.fpu.xcr0 = 3,
        |a| {
            a.mov(eax, 0xd).unwrap();
            a.xor(ecx, ecx).unwrap();
            a.cpuid().unwrap();
            a.mov(r8, rbx).unwrap();
        },
    );
    assert_eq!(s.reg(Reg::R8), 576);
}

#[test]
fn vex_gating() {
    use super::fpu::fault_vector;
    let avx = |s: &mut CpuState| {
        s.cr4 |= bits::CR4_OSXSAVE;
        s.fpu.xcr0 = 7;
    };
    let vz = |a: &mut CodeAssembler| a.vzeroupper().unwrap();
    assert_eq!(fault_vector(avx, vz), 0xff, "allowed");
    assert_eq!(
        fault_vector(
            |s| {
                avx(s);
                s.fpu.xcr0 = 3
            },
            vz
        ),
        6,
        "XCR0 without AVX: #UD"
    );
    assert_eq!(
        fault_vector(
            |s| {
                avx(s);
                s.cr4 &= !bits::CR4_OSXSAVE
            },
            vz
        ),
        6,
        "CR4.OSXSAVE clear: #UD"
    );
    assert_eq!(
        fault_vector(
            |s| {
                avx(s);
                s.cr0 |= bits::CR0_TS
            },
            vz
        ),
        7,
        "CR0.TS: #NM"
    );
    assert_eq!(
        fault_vector(
            |s| {
                avx(s);
                s.cr0 |= bits::CR0_EM;
                s.cr4 &= !bits::CR4_OSFXSR
            },
            vz
        ),
        0xff,
        "CR0.EM and CR4.OSFXSR do not apply"
    );
    // A REX prefix before VEX: #UD (66/F2/F3 likewise: the decoder refuses them all).
    let rex_vex = |a: &mut CodeAssembler| a.db(&[0x40, 0xc5, 0xf8, 0x77]).unwrap();
    assert_eq!(fault_vector(avx, rex_vex), 6);
    let f3_vex = |a: &mut CodeAssembler| a.db(&[0xf3, 0xc5, 0xf8, 0x77]).unwrap();
    assert_eq!(fault_vector(avx, f3_vex), 6);
}

#[test]
fn vex_raises_ud_in_real_mode() {
    // VZEROUPPER's bytes (C5 is LDS there, but with mod=11 it is VEX): #UD.
    let mut m = Machine::new();
    m.load(CODE, &[0xc5, 0xf8, 0x77, 0xf4]);
    let h = asm(16, 0x9000, |a| {
        a.mov(si, 0x6666).unwrap();
        a.hlt().unwrap();
    });
    m.load(0x9000, &h);
    m.load(6 * 4, &[0x00, 0x90, 0x00, 0x00]);
    let mut s = real_state();
    s.gpr[4] = 0x7000;
    s.cr4 |= bits::CR4_OSXSAVE;
    s.fpu.xcr0 = 7;
    m.set(&s);
    let s = m.run_to_halt();
    assert_eq!(s.gpr[6] & 0xffff, 0x6666);
}
