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

fn f32s(v: [f32; 8]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u32s(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// YMMn as eight 32-bit lanes.
fn lanes32(s: &CpuState, n: usize) -> [u32; 8] {
    let [lo, hi] = ymm(s, n);
    std::array::from_fn(|k| {
        if k < 4 {
            (lo >> (32 * k)) as u32
        } else {
            (hi >> (32 * (k - 4))) as u32
        }
    })
}

#[test]
fn xsetbv_takes_avx_when_offered_and_not_without_sse() {
    use super::fpu::fault_vector;
    if !std::arch::is_x86_feature_detected!("avx") {
        return;
    }
    let set = |v: u32| {
        move |a: &mut CodeAssembler| {
            a.xor(ecx, ecx).unwrap();
            a.xor(edx, edx).unwrap();
            a.mov(eax, v).unwrap();
            a.xsetbv().unwrap();
        }
    };
    let osxsave = |s: &mut CpuState| s.cr4 |= bits::CR4_OSXSAVE;
    assert_eq!(fault_vector(osxsave, set(7)), 0xff);
    assert_eq!(fault_vector(osxsave, set(5)), 13, "AVX without SSE: #GP");
    assert_eq!(fault_vector(osxsave, set(0xf)), 13, "MPX: #GP");
}

#[test]
fn vex128_zeroes_the_upper_half_and_legacy_sse_keeps_it() {
    if !std::arch::is_x86_feature_detected!("avx2") {
        return;
    }
    let (_, s) = run_with(
        64,
        &[],
        |s| {
            s.fpu.ymm_hi = [HI; 16];
            s.fpu.xmm[2] = LO;
        },
        |a| {
            a.vpaddd(xmm1, xmm2, xmm2).unwrap();
            a.paddd(xmm3, xmm2).unwrap();
            a.vmovdqu(xmm4, xmmword_ptr(rbx)).unwrap();
            a.vmovd(xmm5, eax).unwrap();
        },
    );
    assert_eq!(s.fpu.ymm_hi[1], 0, "VEX.128 arithmetic");
    assert_eq!(s.fpu.ymm_hi[3], HI, "legacy SSE");
    assert_eq!(s.fpu.ymm_hi[4], 0, "VEX.128 load");
    assert_eq!(s.fpu.ymm_hi[5], 0, "VMOVD");
    assert_eq!(s.fpu.ymm_hi[6], HI, "untouched");
}

#[test]
fn avx_256_bit_arithmetic_moves_and_shuffles() {
    if !std::arch::is_x86_feature_detected!("avx") {
        return;
    }
    let mut d = f32s([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    d.extend(f32s([0.5; 8]));
    let (m, s) = run(&d, |a| {
        a.vmovups(ymm0, ymmword_ptr(rbx)).unwrap();
        a.vaddps(ymm1, ymm0, ymmword_ptr(rbx + 32)).unwrap();
        a.vmulps(ymm2, ymm0, ymm0).unwrap();
        a.vbroadcastss(ymm3, dword_ptr(rbx + 12)).unwrap();
        a.vextractf128(xmm4, ymm0, 1).unwrap();
        a.vinsertf128(ymm5, ymm0, xmm0, 1).unwrap();
        a.vperm2f128(ymm6, ymm0, ymm0, 0x01).unwrap();
        a.vpermilps(ymm7, ymm0, 0x1b).unwrap();
        a.vmovaps(ymmword_ptr(rbx + 64), ymm1).unwrap();
        a.vbroadcastf128(ymm8, xmmword_ptr(rbx + 16)).unwrap();
        a.vtestps(ymm0, ymm0).unwrap();
        a.setz(r8b).unwrap();
    });
    let f = |x: f32| x.to_bits();
    assert_eq!(
        lanes32(&s, 1),
        [1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5].map(f)
    );
    assert_eq!(
        lanes32(&s, 2),
        [1.0, 4.0, 9.0, 16.0, 25.0, 36.0, 49.0, 64.0].map(f)
    );
    assert_eq!(lanes32(&s, 3), [f(4.0); 8]);
    assert_eq!(
        lanes32(&s, 4),
        [5.0, 6.0, 7.0, 8.0, 0.0, 0.0, 0.0, 0.0].map(f)
    );
    assert_eq!(
        lanes32(&s, 5),
        [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0].map(f)
    );
    assert_eq!(
        lanes32(&s, 6),
        [5.0, 6.0, 7.0, 8.0, 1.0, 2.0, 3.0, 4.0].map(f)
    );
    assert_eq!(
        lanes32(&s, 7),
        [4.0, 3.0, 2.0, 1.0, 8.0, 7.0, 6.0, 5.0].map(f)
    );
    assert_eq!(
        lanes32(&s, 8),
        [5.0, 6.0, 7.0, 8.0, 5.0, 6.0, 7.0, 8.0].map(f)
    );
    assert_eq!(m.rd(DATA + 64 + 28, 4), u64::from(f(8.5)), "VMOVAPS store");
    assert_eq!(s.reg(Reg::R8), 1, "VTESTPS: no sign bit set, ZF set");
}

#[test]
fn avx2_integer_forms_permutes_broadcasts_and_variable_shifts() {
    if !std::arch::is_x86_feature_detected!("avx2") {
        return;
    }
    let mut d = u32s(&[0, 1, 2, 3, 4, 5, 6, 7]);
    d.extend(u32s(&[7, 6, 5, 4, 3, 2, 1, 0]));
    d.extend(b"abcdefghijklmnopqrstuvwxyz\0ABCDE");
    let (_, s) = run(&d, |a| {
        a.vmovdqu(ymm0, ymmword_ptr(rbx)).unwrap();
        a.vmovdqu(ymm1, ymmword_ptr(rbx + 32)).unwrap();
        a.vpaddd(ymm2, ymm0, ymm1).unwrap();
        a.vpermd(ymm3, ymm1, ymm0).unwrap();
        a.vpermq(ymm4, ymm0, 0x1b).unwrap();
        a.vpbroadcastb(ymm5, byte_ptr(rbx + 64)).unwrap();
        a.vpsllvd(ymm6, ymm0, ymm1).unwrap();
        a.vperm2i128(ymm7, ymm0, ymm1, 0x20).unwrap();
        // strlen's inner step: compare 32 bytes with zero, the mask of matches.
        a.vpxor(xmm9, xmm9, xmm9).unwrap();
        a.vpcmpeqb(ymm8, ymm9, ymmword_ptr(rbx + 64)).unwrap();
        a.vpmovmskb(eax, ymm8).unwrap();
        a.tzcnt(r8d, eax).unwrap();
        a.vpminub(ymm10, ymm0, ymm1).unwrap();
    });
    assert_eq!(lanes32(&s, 2), [7; 8]);
    assert_eq!(lanes32(&s, 3), [7, 6, 5, 4, 3, 2, 1, 0]);
    assert_eq!(lanes32(&s, 4), [6, 7, 4, 5, 2, 3, 0, 1]);
    assert_eq!(lanes32(&s, 5), [0x6161_6161; 8]);
    assert_eq!(
        lanes32(&s, 6),
        std::array::from_fn(|k| (k as u32) << (7 - k))
    );
    assert_eq!(lanes32(&s, 7), [0, 1, 2, 3, 7, 6, 5, 4]);
    assert_eq!(s.reg(Reg::Rax), 1 << 26);
    assert_eq!(s.reg(Reg::R8), 26, "the NUL");
    assert_eq!(lanes32(&s, 10), [0, 1, 2, 3, 3, 2, 1, 0]);
}

#[test]
fn fma_and_f16c_known_answers() {
    if !std::arch::is_x86_feature_detected!("fma") || !std::arch::is_x86_feature_detected!("f16c") {
        return;
    }
    let mut d = f32s([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    // Half precision 1.0, -2.0, 0.5, 65504 (the largest), then 0.
    d.extend(
        [0x3c00u16, 0xc000, 0x3800, 0x7bff, 0, 0, 0, 0]
            .iter()
            .flat_map(|h| h.to_le_bytes()),
    );
    let (_, s) = run(&d, |a| {
        a.vmovups(ymm0, ymmword_ptr(rbx)).unwrap();
        a.vmovaps(ymm1, ymm0).unwrap();
        a.vmovaps(ymm2, ymm0).unwrap();
        a.vmovaps(ymm3, ymm0).unwrap();
        a.vfmadd132ps(ymm1, ymm0, ymm0).unwrap(); // a*c + b = x*x + x
        a.vfmsub213ps(ymm2, ymm0, ymm0).unwrap(); // b*a - c = x*x - x
        a.vfnmadd231ps(ymm3, ymm0, ymm0).unwrap(); // -(b*c) + a = x - x*x
        a.vfmadd231sd(xmm4, xmm0, xmm0).unwrap();
        a.vcvtph2ps(ymm5, xmmword_ptr(rbx + 32)).unwrap();
        a.vcvtps2ph(xmm6, ymm0, 0).unwrap();
    });
    let f = |x: f32| x.to_bits();
    let xs = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
    assert_eq!(lanes32(&s, 1), xs.map(|x| f(x * x + x)));
    assert_eq!(lanes32(&s, 2), xs.map(|x| f(x * x - x)));
    assert_eq!(lanes32(&s, 3), xs.map(|x| f(x - x * x)));
    assert_eq!(
        lanes32(&s, 5),
        [1.0, -2.0, 0.5, 65504.0, 0.0, 0.0, 0.0, 0.0].map(f)
    );
    // 1..8 in half precision: 0x3c00 0x4000 0x4200 0x4400 0x4500 0x4600 0x4700 0x4800.
    assert_eq!(ymm(&s, 6), [0x4800_4700_4600_4500_4400_4200_4000_3c00, 0]);
}

#[test]
fn masked_moves_touch_only_the_selected_elements() {
    if !std::arch::is_x86_feature_detected!("avx2") {
        return;
    }
    // The mask selects elements 0 and 2; element 3 lies on an unmapped page (above 16 MiB:
    // the test machine's RAM ends there), and is never read or written.
    let (m, s) = run(&u32s(&[11, 22, 33, 44]), |a| {
        a.mov(eax, 0x8000_0000u32).unwrap();
        a.vmovd(xmm1, eax).unwrap();
        a.vpinsrd(xmm1, xmm1, eax, 2).unwrap(); // mask: 1 0 1 0
        a.vmaskmovps(xmm2, xmm1, xmmword_ptr(rbx)).unwrap();
        a.vpcmpeqd(xmm3, xmm3, xmm3).unwrap();
        a.vpmaskmovd(xmmword_ptr(rbx + 16), xmm1, xmm3).unwrap();
        a.vpmaskmovq(xmm4, xmm1, xmmword_ptr(rbx)).unwrap();
    });
    assert_eq!(lanes32(&s, 2), [11, 0, 33, 0, 0, 0, 0, 0]);
    assert_eq!(m.rd(DATA + 16, 8), 0xffff_ffff);
    assert_eq!(m.rd(DATA + 24, 8), 0xffff_ffff);
    // VPMASKMOVQ reads the mask's qwords: bit 63 of each is clear here.
    assert_eq!(lanes32(&s, 4), [0; 8]);
    let fault = super::fpu::fault_vector(
        |s| {
            s.cr4 |= bits::CR4_OSXSAVE;
            s.fpu.xcr0 = 7;
        },
        |a| {
            a.mov(rbx, 0x7fff_fff0u64).unwrap();
            a.vpxor(xmm1, xmm1, xmm1).unwrap();
            a.vmaskmovps(ymm2, ymm1, ymmword_ptr(rbx)).unwrap();
            a.vmaskmovps(ymmword_ptr(rbx), ymm1, ymm2).unwrap();
        },
    );
    assert_eq!(fault, 0xff, "an empty mask accesses nothing");
}

#[test]
fn gathers_load_the_selected_elements_and_clear_the_mask() {
    if !std::arch::is_x86_feature_detected!("avx2") {
        return;
    }
    let mut table: Vec<u32> = (0..32).map(|k| 1000 + k).collect();
    table.extend((0..8).map(|k| 3 * k));
    let (_, s) = run(&u32s(&table), |a| {
        a.vmovdqu(ymm2, ymmword_ptr(rbx + 128)).unwrap(); // indices 0, 3, 6, ... 21
        a.vpcmpeqd(ymm3, ymm3, ymm3).unwrap();
        a.mov(eax, 0x7fff_ffff).unwrap();
        a.vpinsrd(xmm4, xmm3, eax, 1).unwrap(); // element 1 not selected
        a.vinserti128(ymm3, ymm3, xmm4, 0).unwrap();
        a.vpcmpeqd(ymm0, ymm0, ymm0).unwrap();
        a.vpgatherdd_3(ymm0, dword_ptr(rbx + ymm2 * 4), ymm3)
            .unwrap();
        a.vpcmpeqd(ymm5, ymm5, ymm5).unwrap();
        a.vpcmpeqd(ymm6, ymm6, ymm6).unwrap();
        a.vgatherdpd_3(xmm6, qword_ptr(rbx + xmm2 * 4 + 8), xmm5)
            .unwrap();
    });
    assert_eq!(
        lanes32(&s, 2),
        [0, 3, 6, 9, 12, 15, 18, 21],
        "the index vector"
    );
    assert_eq!(
        lanes32(&s, 0),
        [1000, u32::MAX, 1006, 1009, 1012, 1015, 1018, 1021]
    );
    assert_eq!(ymm(&s, 3), [0, 0], "the mask is cleared");
    // Two qwords at +8 + 4*index: 1002|1003 and 1005|1006; bits 255:128 zeroed.
    assert_eq!(lanes32(&s, 6), [1002, 1003, 1005, 1006, 0, 0, 0, 0]);
    assert_eq!(ymm(&s, 5), [0, 0]);
}

#[test]
fn gather_faults_keep_the_completed_elements() {
    if !std::arch::is_x86_feature_detected!("avx2") {
        return;
    }
    use super::fpu::fault_vector;
    // Same register twice: #UD.
    let same = |a: &mut CodeAssembler| {
        a.vpgatherdd_3(xmm1, dword_ptr(rbx + xmm1 * 4), xmm2)
            .unwrap();
    };
    let avx = |s: &mut CpuState| {
        s.cr4 |= bits::CR4_OSXSAVE;
        s.fpu.xcr0 = 7;
    };
    assert_eq!(fault_vector(avx, same), 6);
    // Element 1's address is not canonical: #GP after element 0 completed.
    let mut m = Machine::new();
    let code = asm(64, CODE, |a| {
        a.mov(rbx, DATA).unwrap();
        a.mov(rax, 0x4000_0000_0000_0000u64).unwrap();
        a.vmovq(xmm2, rax).unwrap();
        a.vpslldq(xmm2, xmm2, 8).unwrap(); // indices 0, 2^62
        a.vpcmpeqd(xmm3, xmm3, xmm3).unwrap();
        a.vpgatherqq_3(xmm1, qword_ptr(rbx + xmm2 * 2), xmm3)
            .unwrap();
        a.hlt().unwrap();
    });
    m.load(CODE, &code);
    m.load(DATA, &0x1234u64.to_le_bytes());
    let h = asm(64, 0x9000, |a| a.hlt().unwrap());
    m.load(0x9000, &h);
    gate64(&m, 13, 0x9000, 0);
    let mut s = long_state(&m);
    avx(&mut s);
    s.cr4 |= bits::CR4_OSFXSR;
    m.set(&s);
    let s = m.run_to_halt();
    assert_eq!(s.rip, 0x9001, "#GP");
    assert_eq!(s.fpu.xmm[1] as u64, 0x1234, "element 0 loaded");
    assert_eq!(
        s.fpu.xmm[3],
        u128::from(u64::MAX) << 64,
        "element 1 still in the mask"
    );
}

#[test]
fn vex_alignment_and_aes() {
    use super::fpu::fault_vector;
    if !std::arch::is_x86_feature_detected!("avx") || !std::arch::is_x86_feature_detected!("aes") {
        return;
    }
    let avx = |s: &mut CpuState| {
        s.cr4 |= bits::CR4_OSXSAVE;
        s.fpu.xcr0 = 7;
    };
    let at = |off: i32, aligned: bool| {
        move |a: &mut CodeAssembler| {
            a.mov(rbx, DATA).unwrap();
            if aligned {
                a.vmovdqa(ymm1, ymmword_ptr(rbx + off)).unwrap();
            } else {
                a.vpaddd(ymm1, ymm1, ymmword_ptr(rbx + off)).unwrap();
            }
        }
    };
    assert_eq!(fault_vector(avx, at(32, true)), 0xff);
    assert_eq!(
        fault_vector(avx, at(16, true)),
        13,
        "VMOVDQA ymm at 16 mod 32: #GP"
    );
    assert_eq!(
        fault_vector(avx, at(1, false)),
        0xff,
        "VEX arithmetic: no alignment"
    );
    // VAESENC with a zero key and state: the known answer of one round on zero (0x63 bytes
    // after SubBytes; MixColumns of a uniform column keeps it).
    let (_, s) = run(&[], |a| {
        a.vpxor(xmm1, xmm1, xmm1).unwrap();
        a.vaesenc(xmm2, xmm1, xmm1).unwrap();
    });
    assert_eq!(ymm(&s, 2), [u128::from_le_bytes([0x63; 16]), 0]);
}

#[test]
fn hot_string_forms_run_in_rust_with_vex_semantics() {
    // The forms glibc's AVX2 string functions use skip the native stub (sse::fast_vex): their
    // 256-bit lanes, VEX.128 zeroing and memory forms, with known answers.
    let bytes: Vec<u8> = (0u8..64).collect();
    let (m, s) = run_with(
        64,
        &bytes,
        |s| s.fpu.ymm_hi = [HI; 16],
        |a| {
            a.vmovdqu(ymm0, ymmword_ptr(rbx)).unwrap(); // bytes 0..31
            a.vmovdqa(ymm1, ymmword_ptr(rbx + 32)).unwrap(); // bytes 32..63
            a.vpshufb(ymm2, ymm1, ymm0).unwrap(); // per lane: index k & 15 of the lane
            a.vpandn(ymm3, ymm0, ymm1).unwrap();
            a.vpcmpeqb(xmm4, xmm0, xmmword_ptr(rbx)).unwrap(); // all equal; upper zeroed
            a.vpmovmskb(r8d, ymm4).unwrap();
            a.vpminub(ymm5, ymm1, ymm0).unwrap();
            a.vpaddq(ymm6, ymm0, ymm0).unwrap();
            a.vpxor(xmm7, xmm7, xmm7).unwrap();
            a.vmovdqu(ymmword_ptr(rbx + 65), ymm1).unwrap(); // unaligned store
            a.vmovups(xmm8, xmm1).unwrap(); // VEX.128 register move zeroes the upper half
        },
    );
    let lane = |v: [u128; 2]| -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..16].copy_from_slice(&v[0].to_le_bytes());
        b[16..].copy_from_slice(&v[1].to_le_bytes());
        b
    };
    let want_shuf: [u8; 32] = std::array::from_fn(|k| 32 + (k as u8 / 16) * 16 + (k as u8 & 15));
    assert_eq!(lane(ymm(&s, 2)), want_shuf);
    let want_andn: [u8; 32] = std::array::from_fn(|k| !(k as u8) & (32 + k as u8));
    assert_eq!(lane(ymm(&s, 3)), want_andn);
    assert_eq!(ymm(&s, 4), [u128::MAX, 0]);
    assert_eq!(s.reg(Reg::R8), 0xffff, "VPMOVMSKB of a zeroed upper half");
    assert_eq!(lane(ymm(&s, 5)), std::array::from_fn(|k| k as u8));
    assert_eq!(ymm(&s, 7), [0, 0]);
    assert_eq!(ymm(&s, 8), [s.fpu.xmm[1], 0]);
    let q = |k: u64| u64::from_le_bytes(std::array::from_fn(|j| (8 * k + j as u64) as u8));
    assert_eq!(s.fpu.ymm_hi[6] as u64, q(2).wrapping_mul(2));
    assert_eq!(m.rd(DATA + 65, 8), q(4));
    assert_eq!(m.rd(DATA + 65 + 24, 8), q(7));
    // VMOVDQA ymm from a 16-byte-aligned address: #GP.
    let gp = super::fpu::fault_vector(
        |s| {
            s.cr4 |= bits::CR4_OSXSAVE;
            s.fpu.xcr0 = 7;
        },
        |a| {
            a.mov(rbx, DATA + 16).unwrap();
            a.vmovdqa(ymmword_ptr(rbx), ymm1).unwrap();
        },
    );
    assert_eq!(gp, 13);
}
