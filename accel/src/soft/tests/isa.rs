//! The extensions after SSE2, each guest run interpreted and compiled from the same state (the
//! two must agree), with known answers: SSE3, SSSE3, SSE4.1, SSE4.2 (the string compares with
//! their implicit registers and flags, CRC32), AES-NI (FIPS-197's example), PCLMULQDQ, SHA
//! (FIPS 180's "abc" for SHA-256; the SHA-1 steps against the SDM's definitions), MOVBE, BMI2,
//! ADX, RDRAND/RDSEED, RDPID, INVPCID, and the CPUID bits that announce them.

use iced_x86::code_asm::*;

use super::*;
use crate::soft::jit::tests::same_both_ways;
use crate::state::Reg;

const DATA: u64 = 0x8000;

/// SSE on (CR4.OSFXSR, OSXMMEXCPT; CR0.MP, NE; FNINIT state), `data` at DATA and rBX = DATA.
fn sse_setup(data: &[u8]) -> impl Fn(&Machine, &mut CpuState) + '_ {
    move |m, s| {
        s.cr4 |= bits::CR4_OSFXSR | bits::CR4_OSXMMEXCPT;
        s.cr0 |= bits::CR0_NE | bits::CR0_MP;
        s.cr0 &= !bits::CR0_EM;
        s.fpu.fcw = 0x37f;
        s.fpu.ftw = 0;
        s.gpr[3] = DATA;
        m.load(DATA, data);
    }
}

/// Runs `f` in mode `bits` both ways over `data`; returns the machine and the state.
fn run(bits: u32, data: &[u8], f: impl Fn(&mut CodeAssembler)) -> (Machine, CpuState) {
    same_both_ways(bits, f, &sse_setup(data), 0x10000)
}

fn u32s(v: [u32; 4]) -> u128 {
    v.iter()
        .rev()
        .fold(0u128, |acc, &x| acc << 32 | u128::from(x))
}

fn f32s(v: [f32; 4]) -> u128 {
    u32s(v.map(f32::to_bits))
}

fn bytes(v: &[u128]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn xmm(s: &CpuState, n: usize) -> u128 {
    s.fpu.xmm[n]
}

#[test]
fn mmx_forms_alias_the_x87_registers() {
    let d = bytes(&[0x80ff_7f01_1020_3040_0102_0304_0506_0708, 0]);
    let (m, s) = run(64, &d, |a| {
        a.fld1().unwrap();
        a.movq(mm0, qword_ptr(rbx)).unwrap();
        a.movq(mm1, qword_ptr(rbx + 8)).unwrap();
        a.paddb(mm0, mm1).unwrap();
        a.pmovmskb(eax, mm0).unwrap();
        a.movd(ecx, mm0).unwrap();
        a.movq2dq(xmm3, mm0).unwrap();
        a.cvtpi2ps(xmm4, mm1).unwrap();
        a.movq(mm2, mm1).unwrap();
        a.pshufb(mm2, mm0).unwrap();
        a.lea(rdi, qword_ptr(rbx + 16)).unwrap();
        a.maskmovq(mm0, mm1).unwrap();
    });
    let sum = 0x8101_8205_1526_3748u64;
    assert_eq!(s.fpu.top(), 0, "MMX sets TOP to 0");
    assert_eq!(s.fpu.ftw, 0xff, "and every tag valid");
    assert_eq!(
        s.fpu.st[0],
        u128::from(sum) | 0xffff << 64,
        "MM0, exponent all ones"
    );
    assert_eq!(
        s.fpu.st[7], 0x3fff_8000_0000_0000_0000,
        "FLD1's 1.0 in physical 7"
    );
    assert_eq!(s.gpr[0], 0xa0, "PMOVMSKB");
    assert_eq!(s.gpr[1], 0x1526_3748, "MOVD");
    assert_eq!(xmm(&s, 3), u128::from(sum), "MOVQ2DQ");
    assert_eq!(
        xmm(&s, 4) as u32,
        (0x1020_3040 as f32).to_bits(),
        "CVTPI2PS"
    );
    // PSHUFB mm: index bits 2:0; bit 7 zeroes.
    let src = 0x80ff_7f01_1020_3040u64.to_le_bytes();
    let sel = sum.to_le_bytes();
    let want: [u8; 8] = std::array::from_fn(|k| {
        if sel[k] & 0x80 != 0 {
            0
        } else {
            src[usize::from(sel[k] & 7)]
        }
    });
    assert_eq!(s.fpu.st[2] as u64, u64::from_le_bytes(want));
    // MASKMOVQ: bytes 6 and 7 (mask bytes 0xff and 0x80) of MM0.
    assert_eq!(m.rd(DATA + 16, 8), 0x8101_0000_0000_0000);
}

#[test]
fn maskmovdqu_stores_the_selected_bytes() {
    let d = bytes(&[
        0x1111_2222_3333_4444_5555_6666_7777_8888,
        0x8000_0000_0000_0000_0000_0000_0000_80ff,
        0,
    ]);
    let (m, _) = run(32, &d, |a| {
        a.movdqa(xmm1, xmmword_ptr(ebx)).unwrap();
        a.movdqa(xmm2, xmmword_ptr(ebx + 16)).unwrap();
        a.lea(edi, dword_ptr(ebx + 32)).unwrap();
        a.maskmovdqu(xmm1, xmm2).unwrap();
    });
    assert_eq!(m.rd(DATA + 32, 8), 0x8888);
    assert_eq!(m.rd(DATA + 40, 8), 0x1100_0000_0000_0000);
}

#[test]
fn sse3_horizontal_and_duplicating_forms_in_every_mode() {
    let d = bytes(&[
        f32s([1.0, 2.0, 3.0, 4.0]),
        f32s([10.0, 20.0, 30.0, 40.0]),
        u128::from(2.5f64.to_bits()) | u128::from(0.25f64.to_bits()) << 64,
    ]);
    for bits in [16, 32, 64] {
        let (_, s) = run(bits, &d, |a| {
            let b = |d: i32| -> AsmMemoryOperand { if bits == 64 { rbx + d } else { ebx + d } };
            a.movups(xmm0, xmmword_ptr(b(0))).unwrap();
            a.movups(xmm1, xmmword_ptr(b(16))).unwrap();
            a.movaps(xmm2, xmm0).unwrap();
            a.haddps(xmm2, xmm1).unwrap();
            a.movaps(xmm3, xmm0).unwrap();
            a.hsubps(xmm3, xmm1).unwrap();
            a.movaps(xmm4, xmm0).unwrap();
            a.addsubps(xmm4, xmm1).unwrap();
            a.movddup(xmm5, qword_ptr(b(32))).unwrap();
            a.movshdup(xmm6, xmm0).unwrap();
            a.movsldup(xmm7, xmm0).unwrap();
            // LDDQU from an unaligned address does not fault.
            a.lddqu(xmm1, xmmword_ptr(b(4))).unwrap();
            // FISTTP truncates whatever the rounding control says.
            a.fld(qword_ptr(b(32))).unwrap();
            a.fisttp(dword_ptr(b(48))).unwrap();
            a.mov(eax, dword_ptr(b(48))).unwrap();
        });
        assert_eq!(xmm(&s, 2), f32s([3.0, 7.0, 30.0, 70.0]), "{bits}");
        assert_eq!(xmm(&s, 3), f32s([-1.0, -1.0, -10.0, -10.0]));
        assert_eq!(xmm(&s, 4), f32s([-9.0, 22.0, -27.0, 44.0]));
        assert_eq!(xmm(&s, 5), u128::from(2.5f64.to_bits()) * (1 | 1 << 64));
        assert_eq!(xmm(&s, 6), f32s([2.0, 2.0, 4.0, 4.0]));
        assert_eq!(xmm(&s, 7), f32s([1.0, 1.0, 3.0, 3.0]));
        assert_eq!(
            xmm(&s, 1),
            u32s([
                2.0f32.to_bits(),
                3.0f32.to_bits(),
                4.0f32.to_bits(),
                10.0f32.to_bits()
            ])
        );
        assert_eq!(s.gpr[0] & 0xffff_ffff, 2);
    }
}

#[test]
fn ssse3_shuffles_signs_and_horizontal_integer_forms() {
    let src = u128::from_le_bytes(std::array::from_fn(|k| k as u8 * 17));
    let sel = u128::from_le_bytes([15, 0, 0x80, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x8f]);
    let words: u128 = (0..8).fold(0, |acc, k| {
        acc | u128::from((k as u16 + 1) * 0x1000) << (16 * k)
    });
    let signs = u128::from_le_bytes([
        0xff, 0, 1, 0x80, 0xff, 0, 1, 0x80, 0xff, 0, 1, 0x80, 0xff, 0, 1, 0x80,
    ]);
    let d = bytes(&[src, sel, words, signs]);
    let (_, s) = run(64, &d, |a| {
        a.movdqa(xmm0, xmmword_ptr(rbx)).unwrap();
        a.movdqa(xmm1, xmm0).unwrap();
        a.pshufb(xmm1, xmmword_ptr(rbx + 16)).unwrap();
        a.movdqa(xmm2, xmmword_ptr(rbx + 32)).unwrap();
        a.phaddw(xmm2, xmm2).unwrap();
        a.movdqa(xmm3, xmmword_ptr(rbx + 32)).unwrap();
        a.phaddsw(xmm3, xmm3).unwrap();
        a.pabsb(xmm4, xmmword_ptr(rbx + 48)).unwrap();
        a.movdqa(xmm5, xmm0).unwrap();
        a.psignb(xmm5, xmmword_ptr(rbx + 48)).unwrap();
        a.movdqa(xmm6, xmm0).unwrap();
        a.palignr(xmm6, xmmword_ptr(rbx + 48), 3).unwrap();
        a.movdqa(xmm7, xmmword_ptr(rbx + 32)).unwrap();
        a.pmulhrsw(xmm7, xmm7).unwrap();
    });
    let b = |v: u128| v.to_le_bytes();
    let sb = b(src);
    let want: [u8; 16] = std::array::from_fn(|k| {
        let x = b(sel)[k];
        if x & 0x80 != 0 {
            0
        } else {
            sb[usize::from(x & 15)]
        }
    });
    assert_eq!(xmm(&s, 1), u128::from_le_bytes(want));
    // PHADDW: pairwise sums (wrapping); PHADDSW saturates the ones above 0x7fff.
    let w = [0x3000u16, 0x7000, 0xb000, 0xf000];
    let got = xmm(&s, 2);
    for (k, &x) in w.iter().enumerate() {
        assert_eq!((got >> (16 * k)) as u16, x);
        assert_eq!((got >> (16 * k + 64)) as u16, x);
    }
    let got = xmm(&s, 3);
    assert_eq!(got as u16, 0x3000);
    assert_eq!((got >> 16) as u16, 0x7000);
    assert_eq!((got >> 32) as u16, 0x7fff, "saturated");
    assert_eq!(
        xmm(&s, 4),
        u128::from_le_bytes([1, 0, 1, 0x80, 1, 0, 1, 0x80, 1, 0, 1, 0x80, 1, 0, 1, 0x80])
    );
    let sign: [u8; 16] = std::array::from_fn(|k| match k % 4 {
        0 | 3 => sb[k].wrapping_neg(),
        1 => 0,
        _ => sb[k],
    });
    assert_eq!(xmm(&s, 5), u128::from_le_bytes(sign));
    // PALIGNR: bytes 3.. of (xmm6:mem).
    let cat: Vec<u8> = b(signs).iter().chain(sb.iter()).copied().collect();
    assert_eq!(
        xmm(&s, 6),
        u128::from_le_bytes(cat[3..19].try_into().unwrap())
    );
    // PMULHRSW of 0x1000 by itself: (0x1000 * 0x1000 >> 14) + 1 >> 1 = 0x200.
    assert_eq!(xmm(&s, 7) as u16, 0x200);
}

#[test]
fn sse41_blends_inserts_extracts_ptest_and_rounding() {
    let a0 = u32s([1, 0xffff_fff0, 3, 0x8000_0000]);
    let a1 = u32s([5, 6, 0x7fff_ffff, 8]);
    let d = bytes(&[
        a0,
        a1,
        f32s([1.5, -2.5, 2.5, 0.49]),
        u128::from_le_bytes([1, 2, 0x80, 0xff, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]),
    ]);
    for bits in [32, 64] {
        let (m, s) = run(bits, &d, |a| {
            let b = |d: i32| -> AsmMemoryOperand { if bits == 64 { rbx + d } else { ebx + d } };
            a.movdqa(xmm1, xmmword_ptr(b(0))).unwrap();
            a.movdqa(xmm2, xmm1).unwrap();
            a.pminsd(xmm2, xmmword_ptr(b(16))).unwrap();
            a.movdqa(xmm3, xmm1).unwrap();
            a.pmulld(xmm3, xmmword_ptr(b(16))).unwrap();
            // BLENDVPS takes its mask from XMM0 (the sign bits of a0: lanes 1 and 3).
            a.movdqa(xmm0, xmm1).unwrap();
            a.movdqa(xmm4, xmmword_ptr(b(16))).unwrap();
            a.blendvps(xmm4, xmm1).unwrap();
            a.pmovzxbw(xmm5, qword_ptr(b(48))).unwrap();
            a.pmovsxbd(xmm6, dword_ptr(b(48))).unwrap();
            a.roundps(xmm7, xmmword_ptr(b(32)), 0).unwrap();
            a.mov(ecx, 0x1234_5678).unwrap();
            a.pinsrd(xmm7, ecx, 2).unwrap();
            a.pinsrb(xmm7, byte_ptr(b(51)), 15).unwrap();
            a.mov(eax, -1i32).unwrap();
            a.pextrb(eax, xmm1, 12).unwrap();
            a.pextrw(word_ptr(b(64)), xmm1, 2).unwrap();
            a.extractps(edx, xmm1, 3).unwrap();
            // PTEST: ZF when (a0 & a1) == 0, CF when (!a0 & a1) == 0.
            a.ptest(xmm1, xmm1).unwrap();
        });
        assert_eq!(xmm(&s, 2), u32s([1, 0xffff_fff0, 3, 0x8000_0000]), "{bits}");
        assert_eq!(
            xmm(&s, 3),
            u32s([5, 0xffff_fff0u32.wrapping_mul(6), 0x7fff_fffdu32, 0])
        );
        assert_eq!(xmm(&s, 4), u32s([5, 0xffff_fff0, 0x7fff_ffff, 0x8000_0000]));
        assert_eq!(
            xmm(&s, 5),
            (0..8).fold(0u128, |acc, k| acc | u128::from(d[48 + k]) << (16 * k))
        );
        assert_eq!(xmm(&s, 6), u32s([1, 2, 0xffff_ff80, 0xffff_ffff]));
        let r = xmm(&s, 7);
        assert_eq!(r as u32, 2.0f32.to_bits(), "round to nearest even");
        assert_eq!((r >> 32) as u32, (-2.0f32).to_bits());
        assert_eq!((r >> 64) as u32, 0x1234_5678);
        assert_eq!((r >> 120) as u8, 0xff);
        assert_eq!(s.gpr[0], 0x00, "PEXTRB zero-extends");
        assert_eq!(
            m.rd(DATA + 64, 4),
            0xfff0,
            "PEXTRW to memory writes 2 bytes"
        );
        assert_eq!(s.gpr[2], 0x8000_0000);
        assert_eq!(
            s.rflags & 0x8d5,
            0x01,
            "PTEST x, x: CF only (x is not zero)"
        );
    }
}

#[test]
fn sse42_string_compares_set_ecx_xmm0_and_flags() {
    let set = u128::from_le_bytes(*b",\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
    let text = u128::from_le_bytes(*b"hello, world\0\0\0\0");
    // An unaligned copy of `text` at DATA+33: the string compares do not need alignment.
    let mut d = bytes(&[set, text, 0]);
    d.resize(64, 0);
    d[33..49].copy_from_slice(&text.to_le_bytes());
    for bits in [16, 32, 64] {
        let (_, s) = run(bits, &d, |a| {
            let b = |d: i32| -> AsmMemoryOperand { if bits == 64 { rbx + d } else { ebx + d } };
            a.movdqa(xmm1, xmmword_ptr(b(0))).unwrap();
            a.mov(ecx, 0xdead).unwrap();
            a.pcmpistri(xmm1, xmmword_ptr(b(33)), 0).unwrap();
            a.mov(esi, ecx).unwrap();
            a.mov(eax, 1).unwrap();
            a.mov(edx, 12).unwrap();
            a.pcmpestri(xmm1, xmmword_ptr(b(16)), 0).unwrap();
            a.mov(edi, ecx).unwrap();
            a.pcmpistrm(xmm1, xmmword_ptr(b(16)), 0x40).unwrap();
            a.movdqa(xmm2, xmm0).unwrap();
            a.pcmpestrm(xmm1, xmmword_ptr(b(16)), 0).unwrap();
        });
        assert_eq!(s.gpr[6] & 0xffff, 5, "{bits}: PCMPISTRI index");
        assert_eq!(s.gpr[7] & 0xffff, 5, "PCMPESTRI index");
        // CF (a match), ZF (the text ends), SF (the set ends), OF clear (byte 0 no match).
        assert_eq!(s.rflags & 0x8d5, 0x81 | 0x40);
        assert_eq!(xmm(&s, 2), 0xff << 40, "byte mask");
        assert_eq!(xmm(&s, 0), 1 << 5, "bit mask");
    }
}

#[test]
fn crc32_popcnt_and_movbe() {
    let d = b"123456789\0\0\0\0\0\0\0\x01\x02\x03\x04\x05\x06\x07\x08".to_vec();
    for bits in [16, 32, 64] {
        let (m, s) = run(bits, &d, |a| {
            let b = |d: i32| -> AsmMemoryOperand { if bits == 64 { rbx + d } else { ebx + d } };
            a.mov(eax, -1i32).unwrap();
            for k in 0..9 {
                a.crc32(eax, byte_ptr(b(k))).unwrap();
            }
            a.not(eax).unwrap();
            a.mov(ecx, -1i32).unwrap();
            a.crc32(ecx, dword_ptr(b(0))).unwrap();
            a.mov(esi, 0xf0f0).unwrap();
            a.popcnt(esi, esi).unwrap();
            a.movbe(edx, dword_ptr(b(16))).unwrap();
            a.movbe(word_ptr(b(24)), dx).unwrap();
        });
        assert_eq!(
            s.gpr[0] & 0xffff_ffff,
            0xe306_9283,
            "{bits}: CRC-32C check value"
        );
        let four = crate::soft::translate::crc32c(!0, 0x3433_3231, 4);
        assert_eq!(s.gpr[1] & 0xffff_ffff, u64::from(four));
        assert_eq!(s.gpr[6] & 0xff, 8);
        assert_eq!(s.gpr[2] & 0xffff_ffff, 0x0102_0304);
        assert_eq!(m.rd(DATA + 24, 2), 0x0403);
    }
}

#[test]
fn crc32_64_bit_forms_zero_extend() {
    let (_, s) = run(64, &[0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38], |a| {
        a.mov(rax, 0xffff_ffff_ffff_ffffu64).unwrap();
        a.crc32(rax, qword_ptr(rbx)).unwrap();
        a.mov(rcx, 0xffff_ffff_0000_0000u64).unwrap();
        a.crc32(rcx, byte_ptr(rbx)).unwrap();
    });
    let want = crate::soft::translate::crc32c(!0, u64::from_le_bytes(*b"12345678"), 8);
    assert_eq!(s.gpr[0], u64::from(want));
    assert_eq!(
        s.gpr[1],
        u64::from(crate::soft::translate::crc32c(0, 0x31, 1))
    );
}

#[test]
fn bmi2_and_adx_known_answers() {
    for bits in [32, 64] {
        let (_, s) = run(bits, &[], |a| {
            a.mov(edx, 0xffff_ffffu32).unwrap();
            a.mov(ecx, 0x8000_0001u32).unwrap();
            a.mulx(esi, edi, ecx).unwrap();
            a.mov(eax, 0x1234_5678).unwrap();
            a.mov(ecx, 0xff00_ff00u32).unwrap();
            a.pdep(ebp, eax, ecx).unwrap();
            a.pext(eax, eax, ecx).unwrap();
            a.rorx(ecx, ecx, 4).unwrap();
            a.mov(edx, 36).unwrap();
            a.shlx(edx, edi, edx).unwrap();
            // BZHI: index 8 keeps the low byte; index 40 (> 31) keeps all and sets CF.
            a.mov(ebx, 0xfedc_ba98u32).unwrap();
            a.mov(esp, 8).unwrap();
            a.bzhi(esp, ebx, esp).unwrap();
        });
        assert_eq!(s.gpr[7] & 0xffff_ffff, 0x7fff_ffff, "{bits}: MULX low");
        assert_eq!(s.gpr[6] & 0xffff_ffff, 0x8000_0000, "MULX high");
        assert_eq!(s.gpr[5] & 0xffff_ffff, 0x5600_7800, "PDEP");
        assert_eq!(s.gpr[0] & 0xffff_ffff, 0x1256, "PEXT");
        assert_eq!(s.gpr[1] & 0xffff_ffff, 0x0ff0_0ff0, "RORX");
        assert_eq!(s.gpr[2] & 0xffff_ffff, 0xffff_fff0, "SHLX by 36 & 31");
        assert_eq!(s.gpr[4] & 0xffff_ffff, 0x98, "BZHI");
        assert_eq!(
            s.rflags & 0x8c1,
            0,
            "BZHI: in range, not zero, not negative"
        );
    }
    let (_, s) = run(64, &[], |a| {
        a.mov(rax, u64::MAX).unwrap();
        a.mov(rcx, 1u64).unwrap();
        a.mov(rdx, 2u64).unwrap();
        a.mulx(r8, r9, rax).unwrap();
        a.sarx(r10, rax, rcx).unwrap();
        a.shrx(r11, rax, rcx).unwrap();
        // ADCX carries through CF only, ADOX through OF only.
        a.stc().unwrap();
        a.mov(r12, u64::MAX).unwrap();
        a.adcx(r12, rcx).unwrap();
        a.mov(r13, 5u64).unwrap();
        a.adox(r13, rcx).unwrap();
        a.mov(r14, 0x1_0000_0001u64).unwrap();
        a.bzhi(r15, r14, rcx).unwrap();
        a.mov(rdx, 64u64).unwrap();
        a.bzhi(rdx, rax, rdx).unwrap();
    });
    assert_eq!(
        (s.reg(Reg::R8), s.reg(Reg::R9)),
        (1, u64::MAX - 1),
        "MULX 2 * MAX"
    );
    assert_eq!(s.reg(Reg::R10), u64::MAX);
    assert_eq!(s.reg(Reg::R11), u64::MAX >> 1);
    assert_eq!(s.reg(Reg::R12), 1, "MAX + 1 + CF");
    assert_eq!(s.reg(Reg::R13), 6);
    assert_eq!(s.reg(Reg::R15), 1);
    assert_eq!(s.reg(Reg::Rdx), u64::MAX);
    // The last BZHI: CF (index 64 beyond the operand), SF; OF clear.
    assert_eq!(s.rflags & 0x8c1, 0x81);
}

#[test]
fn bmi2_raises_ud_in_real_mode() {
    let code = asm(32, CODE, |a| {
        a.pdep(eax, eax, ecx).unwrap();
    });
    // The same bytes in real mode (C4 is LES there, but with mod=11 it is VEX): #UD.
    let mut m = Machine::new();
    m.load(CODE, &code);
    let h = asm(16, 0x9000, |a| {
        a.mov(si, 0x6666).unwrap();
        a.hlt().unwrap();
    });
    m.load(0x9000, &h);
    m.load(6 * 4, &[0x00, 0x90, 0x00, 0x00]);
    let mut s = real_state();
    s.gpr[4] = 0x7000;
    m.set(&s);
    let s = m.run_to_halt();
    assert_eq!(s.gpr[6] & 0xffff, 0x6666);
}

#[test]
fn aes128_encrypts_and_decrypts_fips197_example() {
    let key = u128::from_le_bytes([
        0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f,
        0x3c,
    ]);
    let pt = u128::from_le_bytes([
        0x32, 0x43, 0xf6, 0xa8, 0x88, 0x5a, 0x30, 0x8d, 0x31, 0x31, 0x98, 0xa2, 0xe0, 0x37, 0x07,
        0x34,
    ]);
    let ct = u128::from_le_bytes([
        0x39, 0x25, 0x84, 0x1d, 0x02, 0xdc, 0x09, 0xfb, 0xdc, 0x11, 0x85, 0x97, 0x19, 0x6a, 0x0b,
        0x32,
    ]);
    let (_, s) = run(64, &bytes(&[key, pt]), |a| {
        let rcon = [1u32, 2, 4, 8, 16, 32, 64, 128, 0x1b, 0x36];
        a.movdqa(xmm1, xmmword_ptr(rbx)).unwrap();
        a.movdqa(xmm0, xmmword_ptr(rbx + 16)).unwrap();
        a.movdqa(xmmword_ptr(rbx + 32), xmm1).unwrap();
        a.pxor(xmm0, xmm1).unwrap();
        for (r, &c) in rcon.iter().enumerate() {
            a.aeskeygenassist(xmm2, xmm1, c).unwrap();
            a.pshufd(xmm2, xmm2, 0xff).unwrap();
            // Each word is XORed with every word below it: the old key shifted by 1, 2, 3 words.
            a.movdqa(xmm3, xmm1).unwrap();
            for _ in 0..3 {
                a.pslldq(xmm3, 4).unwrap();
                a.pxor(xmm1, xmm3).unwrap();
            }
            a.pxor(xmm1, xmm2).unwrap();
            a.movdqa(xmmword_ptr(rbx + 48 + 16 * r as i32), xmm1)
                .unwrap();
            if r < 9 {
                a.aesenc(xmm0, xmm1).unwrap();
            } else {
                a.aesenclast(xmm0, xmm1).unwrap();
            }
        }
        a.movdqa(xmm4, xmm0).unwrap();
        // The equivalent inverse cipher: AESIMC of round keys 9..1.
        a.pxor(xmm0, xmmword_ptr(rbx + 48 + 16 * 9)).unwrap();
        for r in (1..10).rev() {
            a.aesimc(xmm5, xmmword_ptr(rbx + 32 + 16 * r)).unwrap();
            a.aesdec(xmm0, xmm5).unwrap();
        }
        a.aesdeclast(xmm0, xmmword_ptr(rbx + 32)).unwrap();
    });
    assert_eq!(xmm(&s, 4), ct, "AES-128 of FIPS-197 appendix B");
    assert_eq!(xmm(&s, 0), pt, "and back");
}

#[test]
fn pclmulqdq_known_products() {
    let d = bytes(&[
        3 | u128::from(u64::MAX) << 64,
        u128::from(u64::MAX) | 3 << 64,
    ]);
    let (_, s) = run(32, &d, |a| {
        a.movdqa(xmm1, xmmword_ptr(ebx)).unwrap();
        a.movdqa(xmm2, xmm1).unwrap();
        a.pclmulqdq(xmm2, xmmword_ptr(ebx + 16), 0x10).unwrap();
        a.movdqa(xmm3, xmm1).unwrap();
        a.pclmulqdq(xmm3, xmmword_ptr(ebx + 16), 0x01).unwrap();
    });
    // 0x10: xmm1's low (3) times the source's high (3): (x + 1)^2 = x^2 + 1.
    assert_eq!(xmm(&s, 2), 5);
    // 0x01: xmm1's high (all ones) times the source's low (all ones): every even bit 0..=126.
    assert_eq!(xmm(&s, 3), 0x5555_5555_5555_5555_5555_5555_5555_5555);
}

/// SHA-256 round constants.
const K256: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

#[test]
fn sha256_of_abc() {
    let h = [
        0x6a09e667u32,
        0xbb67ae85,
        0x3c6ef372,
        0xa54ff53a,
        0x510e527f,
        0x9b05688c,
        0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut w = [0u32; 16];
    w[0] = 0x6162_6380;
    w[15] = 0x18;
    let mut d = bytes(&[
        u32s([h[0], h[1], h[2], h[3]]),
        u32s([h[4], h[5], h[6], h[7]]),
        u32s([w[0], w[1], w[2], w[3]]),
        u32s([w[4], w[5], w[6], w[7]]),
        u32s([w[8], w[9], w[10], w[11]]),
        u32s([w[12], w[13], w[14], w[15]]),
    ]);
    for k in 0..16 {
        d.extend(bytes(&[u32s([
            K256[4 * k],
            K256[4 * k + 1],
            K256[4 * k + 2],
            K256[4 * k + 3],
        ])]));
    }
    let (_, s) = run(64, &d, |a| {
        // xmm1 = ABEF, xmm2 = CDGH (the layout SHA256RNDS2 works on).
        a.movdqa(xmm1, xmmword_ptr(rbx)).unwrap();
        a.movdqa(xmm2, xmmword_ptr(rbx + 16)).unwrap();
        a.pshufd(xmm1, xmm1, 0xb1).unwrap();
        a.pshufd(xmm2, xmm2, 0x1b).unwrap();
        a.movdqa(xmm7, xmm1).unwrap();
        a.palignr(xmm1, xmm2, 8).unwrap();
        a.pblendw(xmm2, xmm7, 0xf0).unwrap();
        a.movdqa(xmm14, xmm1).unwrap();
        a.movdqa(xmm15, xmm2).unwrap();
        // Message groups in xmm3..xmm6, rotating.
        let msg = [xmm3, xmm4, xmm5, xmm6];
        for k in 0..16usize {
            let m = msg[k % 4];
            if k < 4 {
                a.movdqa(m, xmmword_ptr(rbx + 32 + 16 * k as i32)).unwrap();
            } else {
                // W[k] from W[k-4] (in m), W[k-3], W[k-2], W[k-1].
                a.sha256msg1(m, msg[(k - 3) % 4]).unwrap();
                a.movdqa(xmm7, msg[(k - 1) % 4]).unwrap();
                a.palignr(xmm7, msg[(k - 2) % 4], 4).unwrap();
                a.paddd(m, xmm7).unwrap();
                a.sha256msg2(m, msg[(k - 1) % 4]).unwrap();
            }
            a.movdqa(xmm0, m).unwrap();
            a.paddd(xmm0, xmmword_ptr(rbx + 96 + 16 * k as i32))
                .unwrap();
            a.sha256rnds2(xmm2, xmm1).unwrap();
            a.pshufd(xmm0, xmm0, 0x0e).unwrap();
            a.sha256rnds2(xmm1, xmm2).unwrap();
        }
        a.paddd(xmm1, xmm14).unwrap();
        a.paddd(xmm2, xmm15).unwrap();
        a.pshufd(xmm1, xmm1, 0x1b).unwrap();
        a.pshufd(xmm2, xmm2, 0xb1).unwrap();
        a.movdqa(xmm7, xmm1).unwrap();
        a.pblendw(xmm1, xmm2, 0xf0).unwrap();
        a.palignr(xmm2, xmm7, 8).unwrap();
    });
    assert_eq!(
        xmm(&s, 1),
        u32s([0xba7816bf, 0x8f01cfea, 0x414140de, 0x5dae2223]),
        "SHA-256(\"abc\"), first half"
    );
    assert_eq!(
        xmm(&s, 2),
        u32s([0xb00361a3, 0x96177a9c, 0xb410ff61, 0xf20015ad])
    );
}

/// The SDM's SHA-1 instruction definitions, as a reference for the CPU's.
mod sha1_ref {
    pub fn w(v: u128) -> [u32; 4] {
        [3, 2, 1, 0].map(|k| (v >> (32 * k)) as u32)
    }
    pub fn v(x: [u32; 4]) -> u128 {
        x.iter().fold(0u128, |acc, &y| acc << 32 | u128::from(y))
    }
    pub fn nexte(a: u128, b: u128) -> u128 {
        let (a, mut b) = (w(a), w(b));
        b[0] = b[0].wrapping_add(a[0].rotate_left(30));
        v(b)
    }
    pub fn msg1(a: u128, b: u128) -> u128 {
        let (a, b) = (w(a), w(b));
        v([a[2] ^ a[0], a[3] ^ a[1], b[0] ^ a[2], b[1] ^ a[3]])
    }
    pub fn msg2(a: u128, b: u128) -> u128 {
        let (a, b) = (w(a), w(b));
        let w16 = (a[0] ^ b[1]).rotate_left(1);
        let w17 = (a[1] ^ b[2]).rotate_left(1);
        let w18 = (a[2] ^ b[3]).rotate_left(1);
        let w19 = (a[3] ^ w16).rotate_left(1);
        v([w16, w17, w18, w19])
    }
    pub fn rnds4(a: u128, b: u128, f: u8) -> u128 {
        let k = [0x5a827999u32, 0x6ed9eba1, 0x8f1bbcdc, 0xca62c1d6][usize::from(f)];
        let func = |b: u32, c: u32, d: u32| match f {
            0 => (b & c) ^ (!b & d),
            2 => (b & c) ^ (b & d) ^ (c & d),
            _ => b ^ c ^ d,
        };
        let [mut a_, mut b_, mut c_, mut d_] = w(a);
        let mut e = 0u32;
        for wk in w(b) {
            let t = func(b_, c_, d_)
                .wrapping_add(a_.rotate_left(5))
                .wrapping_add(wk)
                .wrapping_add(e)
                .wrapping_add(k);
            e = d_;
            d_ = c_;
            c_ = b_.rotate_left(30);
            b_ = a_;
            a_ = t;
        }
        v([a_, b_, c_, d_])
    }
}

#[test]
fn sha1_steps_match_the_sdm_definitions() {
    let x = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128;
    let y = 0x0f1e_2d3c_4b5a_6978_8796_a5b4_c3d2_e1f0u128;
    let (_, s) = run(64, &bytes(&[x, y]), |a| {
        a.movdqa(xmm1, xmmword_ptr(rbx)).unwrap();
        for n in 2..=8 {
            a.movdqa(xmm_n(n), xmm1).unwrap();
        }
        a.sha1nexte(xmm2, xmmword_ptr(rbx + 16)).unwrap();
        a.sha1msg1(xmm3, xmmword_ptr(rbx + 16)).unwrap();
        a.sha1msg2(xmm4, xmmword_ptr(rbx + 16)).unwrap();
        a.sha1rnds4(xmm5, xmmword_ptr(rbx + 16), 0).unwrap();
        a.sha1rnds4(xmm6, xmmword_ptr(rbx + 16), 1).unwrap();
        a.sha1rnds4(xmm7, xmmword_ptr(rbx + 16), 2).unwrap();
        a.sha1rnds4(xmm8, xmmword_ptr(rbx + 16), 3).unwrap();
    });
    assert_eq!(xmm(&s, 2), sha1_ref::nexte(x, y));
    assert_eq!(xmm(&s, 3), sha1_ref::msg1(x, y));
    assert_eq!(xmm(&s, 4), sha1_ref::msg2(x, y));
    for f in 0..4u8 {
        assert_eq!(
            xmm(&s, 5 + usize::from(f)),
            sha1_ref::rnds4(x, y, f),
            "f {f}"
        );
    }
}

fn xmm_n(n: usize) -> AsmRegisterXmm {
    [xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8][n]
}

/// Runs `f` once, interpreted (for results that differ run to run), in long mode.
fn run_once(f: impl Fn(&mut CodeAssembler)) -> CpuState {
    let mut m = Machine::new();
    let code = asm(64, CODE, |a| {
        f(a);
        a.hlt().unwrap();
    });
    m.load(CODE, &code);
    let s = long_state(&m);
    m.set(&s);
    m.run_to_halt()
}

#[test]
fn rdrand_rdseed_rdpid() {
    let s = run_once(|a| {
        a.mov(rcx, u64::MAX).unwrap();
        a.rdrand(rax).unwrap();
        a.setc(r8b).unwrap();
        a.rdseed(ecx).unwrap();
        a.setc(r9b).unwrap();
        a.rdrand(si).unwrap();
        a.rdpid(rdx).unwrap();
        a.rdseed(rdi).unwrap();
    });
    assert_eq!(s.reg(Reg::R8) & 0xff, 1);
    assert_eq!(s.reg(Reg::R9) & 0xff, 1);
    assert_eq!(s.gpr[1] >> 32, 0, "32-bit destination zero-extended");
    assert_eq!(s.rflags & 0x8d5, 1, "CF only");
    assert_eq!(s.gpr[2], 0, "TSC_AUX");
    // Two 64-bit draws differ (equal with probability 2^-64).
    assert_ne!(s.gpr[0], s.gpr[7]);
}

#[test]
fn invpcid_checks_type_pcid_and_cpl() {
    // Descriptor: PCID 0, address 0x1000; then PCID 1.
    let d = bytes(&[0x1000u128 << 64, 1 | 0x1000u128 << 64]);
    let (_, s) = run(64, &d, |a| {
        for ty in 0..4 {
            a.mov(eax, ty).unwrap();
            a.invpcid(rax, xmmword_ptr(rbx)).unwrap();
        }
        a.mov(r15d, 0x600d).unwrap();
    });
    assert_eq!(s.reg(Reg::R15), 0x600d);
    let fault = |ty: u32, off: i32| {
        let mut m = Machine::new();
        let code = asm(64, CODE, |a| {
            a.mov(eax, ty).unwrap();
            a.invpcid(rax, xmmword_ptr(rbx + off)).unwrap();
            a.hlt().unwrap();
        });
        m.load(CODE, &code);
        m.load(DATA, &d);
        let h = asm(64, 0x9000, |a| {
            a.mov(r15d, 0xbad).unwrap();
            a.hlt().unwrap();
        });
        m.load(0x9000, &h);
        gate64(&m, 13, 0x9000, 0);
        let mut s = long_state(&m);
        s.gpr[3] = DATA;
        m.set(&s);
        m.run_to_halt().reg(Reg::R15)
    };
    assert_eq!(fault(4, 0), 0xbad, "type 4");
    assert_eq!(fault(0, 16), 0xbad, "PCID 1 without CR4.PCIDE");
    assert_eq!(fault(2, 16), 0, "type 2 ignores the PCID");
}

#[test]
fn cpuid_offers_the_extensions_the_host_runs() {
    let (_, s) = run(64, &[], |a| {
        a.mov(eax, 1).unwrap();
        a.cpuid().unwrap();
        a.mov(r8, rcx).unwrap();
        a.mov(eax, 7).unwrap();
        a.xor(ecx, ecx).unwrap();
        a.cpuid().unwrap();
        a.mov(r9, rbx).unwrap();
        a.mov(r10, rcx).unwrap();
    });
    let c1 = s.reg(Reg::R8);
    let b7 = s.reg(Reg::R9);
    let c7 = s.reg(Reg::R10);
    let host = crate::cpuid::host(1, 0)[2];
    // SSE3, PCLMULQDQ, SSSE3, SSE4.1, SSE4.2, AES: as the host has them.
    let native = 1 | 1 << 1 | 1 << 9 | 1 << 19 | 1 << 20 | 1 << 25;
    assert_eq!(c1 & native, u64::from(host) & native);
    // MOVBE, POPCNT, RDRAND always; AVX, FMA, F16C as the host has them.
    assert_eq!(
        c1 & (1 << 22 | 1 << 23 | 1 << 30),
        1 << 22 | 1 << 23 | 1 << 30
    );
    let avx = 1 << 12 | 1 << 28 | 1 << 29;
    assert_eq!(c1 & avx, u64::from(host) & avx);
    // BMI1, BMI2, INVPCID, RDSEED, ADX, CLFLUSHOPT, CLWB; AVX2 as the host has it.
    let want = 1 << 3 | 1 << 8 | 1 << 10 | 1 << 18 | 1 << 19 | 1 << 23 | 1 << 24;
    assert_eq!(b7 & want, want);
    assert_eq!(b7 & 1 << 5, u64::from(crate::cpuid::host(7, 0)[1]) & 1 << 5);
    assert_eq!(c7 & 1 << 22, 1 << 22, "RDPID");
}

#[test]
fn gating_and_alignment_faults() {
    use super::fpu::fault_vector;
    let none = |_: &mut CpuState| {};
    let no_osfxsr = |s: &mut CpuState| s.cr4 &= !bits::CR4_OSFXSR;
    let em = |s: &mut CpuState| s.cr0 |= bits::CR0_EM;
    let ts = |s: &mut CpuState| s.cr0 |= bits::CR0_TS;
    let at = |off: i32| {
        move |a: &mut CodeAssembler| {
            a.mov(rbx, DATA).unwrap();
            a.ptest(xmm1, xmmword_ptr(rbx + off)).unwrap();
        }
    };
    assert_eq!(fault_vector(none, at(0)), 0xff, "aligned PTEST");
    assert_eq!(fault_vector(none, at(8)), 13, "misaligned PTEST: #GP");
    let pcmp = |a: &mut CodeAssembler| {
        a.mov(rbx, DATA + 8).unwrap();
        a.pcmpistri(xmm1, xmmword_ptr(rbx), 0).unwrap();
    };
    assert_eq!(
        fault_vector(none, pcmp),
        0xff,
        "string compares need no alignment"
    );
    let pshufb = |a: &mut CodeAssembler| a.pshufb(xmm1, xmm2).unwrap();
    assert_eq!(
        fault_vector(no_osfxsr, pshufb),
        6,
        "SSSE3 without CR4.OSFXSR: #UD"
    );
    assert_eq!(fault_vector(ts, pshufb), 7, "CR0.TS: #NM");
    let paddb = |a: &mut CodeAssembler| a.paddb(mm1, mm2).unwrap();
    assert_eq!(
        fault_vector(no_osfxsr, paddb),
        0xff,
        "MMX needs no CR4.OSFXSR"
    );
    assert_eq!(fault_vector(em, paddb), 6, "MMX with CR0.EM: #UD");
    assert_eq!(fault_vector(ts, paddb), 7, "MMX with CR0.TS: #NM");
    let crc = |a: &mut CodeAssembler| a.crc32(eax, ecx).unwrap();
    assert_eq!(
        fault_vector(em, crc),
        0xff,
        "CRC32 is not an SSE-state instruction"
    );
    // AESENC with an unmasked exception cannot fault; ROUNDSS can (precision, unmasked).
    let round = |a: &mut CodeAssembler| {
        a.mov(eax, 0x3f80_0001).unwrap();
        a.movd(xmm1, eax).unwrap();
        a.roundss(xmm1, xmm1, 0).unwrap();
    };
    let pm = |s: &mut CpuState| s.fpu.mxcsr = 0x1f80 & !(1 << 12);
    assert_eq!(
        fault_vector(pm, round),
        19,
        "ROUNDSS inexact, PM clear: #XM"
    );
    let round8 = |a: &mut CodeAssembler| {
        a.mov(eax, 0x3f80_0001).unwrap();
        a.movd(xmm1, eax).unwrap();
        a.roundss(xmm1, xmm1, 8).unwrap();
    };
    assert_eq!(
        fault_vector(pm, round8),
        0xff,
        "imm8 bit 3 suppresses precision"
    );
}
