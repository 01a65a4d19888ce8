//! Hand-written guests run both ways: ALU and flags, loops (chaining), memory, helpers.

use iced_x86::code_asm::*;

use super::*;

fn none(_: &Machine, _: &mut CpuState) {}

#[test]
fn jit_alu_flags_64() {
    same_both_ways(
        64,
        |a| {
            a.mov(rax, 0x1234_5678_9abc_def0u64).unwrap();
            a.mov(rbx, 0x0fed_cba9_8765_4321u64).unwrap();
            a.add(rax, rbx).unwrap();
            a.adc(rcx, rax).unwrap();
            a.sub(ebx, eax).unwrap();
            a.sbb(dl, al).unwrap();
            a.xor(si, bx).unwrap();
            a.inc(rdi).unwrap();
            a.dec(ecx).unwrap();
            a.neg(rax).unwrap();
            a.shl(rbx, 3).unwrap();
            a.sar(edx, 5).unwrap();
        },
        &none,
        0,
    );
}

#[test]
fn jit_int_loop_32() {
    let (m, s) = same_both_ways(
        32,
        |a| {
            let mut l = a.create_label();
            a.mov(eax, 0x1234_5678).unwrap();
            a.mov(ebx, 0x9abc_def0u32).unwrap();
            a.xor(edx, edx).unwrap();
            a.mov(esi, 0x0f1e_2d3c).unwrap();
            a.xor(edi, edi).unwrap();
            a.mov(ecx, 1000).unwrap();
            a.set_label(&mut l).unwrap();
            a.add(eax, ebx).unwrap();
            a.xor(ebx, ecx).unwrap();
            a.rol(eax, 7).unwrap();
            a.adc(edx, eax).unwrap();
            a.xor(esi, edx).unwrap();
            a.rol(ebx, 13).unwrap();
            a.cmp(eax, esi).unwrap();
            a.adc(edi, esi).unwrap();
            a.dec(ecx).unwrap();
            a.jnz(l).unwrap();
        },
        &none,
        0,
    );
    let st = m.cpu.jit_stats().unwrap();
    assert!(st.compiled >= 2 && st.chained >= 1, "{st:?}");
    assert_eq!(s.gpr[1], 0);
}

#[test]
fn jit_high_byte_registers_16() {
    same_both_ways(
        16,
        |a| {
            a.mov(ax, 0x12f0).unwrap();
            a.mov(bx, 0x3480).unwrap();
            a.add(ah, bh).unwrap();
            a.adc(al, ah).unwrap();
            a.inc(ch).unwrap();
            a.sub(dh, 3).unwrap();
            a.cmp(ah, bl).unwrap();
            a.xor(bh, al).unwrap();
            a.dec(ah).unwrap();
        },
        &none,
        0,
    );
}
