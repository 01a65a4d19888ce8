//! Real-mode tests: data movement, stack, control flow, port I/O, IVT delivery, counting.

use super::*;
use crate::exit::ExitReasonKind;
use crate::state::{Reg, rflags};

fn run_real(code: &[u8]) -> (Machine, CpuState) {
    let mut m = Machine::new();
    m.load(CODE, code);
    m.set(&real_state());
    let s = m.run_to_halt();
    (m, s)
}

#[test]
fn mov_add_out_hlt() {
    let (m, s) = run_real(&[
        0xb8, 0x34, 0x12, // mov ax, 0x1234
        0x05, 0x01, 0x00, // add ax, 1
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xee, // out dx, al
        0xf4, // hlt
    ]);
    assert_eq!(s.reg(Reg::Rax), 0x1235);
    assert_eq!(s.rip, CODE + 11);
    assert_eq!(m.io.port_bytes(0x3f8), vec![0x35]);
    let c = m.cpu.counters();
    assert_eq!(c.instructions, Some(5));
    assert_eq!(c.get(ExitReasonKind::IoOut), 1);
    assert_eq!(c.get(ExitReasonKind::Halt), 1);
}

#[test]
fn byte_registers_and_xchg() {
    let (_, s) = run_real(&[
        0xb4, 0x12, // mov ah, 0x12
        0xb0, 0x34, // mov al, 0x34
        0x86, 0xc4, // xchg ah, al
        0x88, 0xe3, // mov bl, ah
        0x66, 0x0f, 0xbe, 0xcb, // movsx ecx, bl
        0x0f, 0xb6, 0xd0, // movzx dx, al
        0xf4,
    ]);
    assert_eq!(s.reg(Reg::Rax) & 0xffff, 0x3412);
    assert_eq!(s.reg(Reg::Rbx) & 0xff, 0x34);
    assert_eq!(s.reg(Reg::Rcx), 0x34);
    assert_eq!(s.reg(Reg::Rdx) & 0xffff, 0x12);
}

#[test]
fn stack_call_ret_and_memory() {
    let (m, s) = run_real(&[
        0xb8, 0x11, 0x11, // mov ax, 0x1111
        0x50, // push ax
        0xe8, 0x05, 0x00, // call +5 (to 0x7c0c)
        0x5b, // pop bx
        0xa3, 0x00, 0x05, // mov [0x500], ax
        0xf4, // hlt
        0xb8, 0x22, 0x22, // f: mov ax, 0x2222
        0xc3, // ret
    ]);
    assert_eq!(s.reg(Reg::Rbx), 0x1111);
    assert_eq!(s.reg(Reg::Rsp), 0x7000);
    assert_eq!(m.rd(0x500, 2), 0x2222);
}

#[test]
fn loop_and_conditional_jumps() {
    let (_, s) = run_real(&[
        0x31, 0xc0, // xor ax, ax
        0xb9, 0x0a, 0x00, // mov cx, 10
        0x01, 0xc8, // l: add ax, cx
        0xe2, 0xfc, // loop l
        0x83, 0xf8, 0x37, // cmp ax, 55
        0x75, 0x01, // jne +1
        0x43, // inc bx
        0xf4,
    ]);
    assert_eq!(s.reg(Reg::Rax), 55);
    assert_eq!(s.reg(Reg::Rbx), 1);
    assert_eq!(s.reg(Reg::Rcx), 0);
}

#[test]
fn segment_loads_use_selector_times_16() {
    let (m, s) = run_real(&[
        0xb8, 0x00, 0x10, // mov ax, 0x1000
        0x8e, 0xd8, // mov ds, ax
        0xc6, 0x06, 0x10, 0x00, 0xab, // mov byte [0x10], 0xab
        0x1e, // push ds
        0x07, // pop es
        0xf4,
    ]);
    assert_eq!(m.rd(0x10010, 1), 0xab);
    assert_eq!(s.es.base, 0x10000);
    assert_eq!(s.ds.selector, 0x1000);
}

#[test]
fn far_jump_reloads_cs() {
    let (_, s) = run_real(&[
        0xea, 0x05, 0x00, 0xc0, 0x07, // jmp 0x07c0:0x0005 (= 0x7c05)
        0xf4, // hlt at 0x7c05
    ]);
    assert_eq!(s.cs.selector, 0x07c0);
    assert_eq!(s.cs.base, 0x7c00);
    assert_eq!(s.rip, 6);
}

#[test]
fn int_and_iret_through_the_ivt() {
    let mut m = Machine::new();
    // IVT entry 0x21 -> 0000:0x7d00
    m.mem.write_le(0x21 * 4, 4, 0x7d00).unwrap();
    m.load(0x7d00, &[0xbb, 0x99, 0x00, 0xcf]); // mov bx, 0x99; iret
    m.load(CODE, &[0xfb, 0xcd, 0x21, 0xf4]); // sti; int 0x21; hlt
    m.set(&real_state());
    let s = m.run_to_halt();
    assert_eq!(s.reg(Reg::Rbx), 0x99);
    assert_eq!(s.rip, CODE + 4);
    assert_eq!(s.reg(Reg::Rsp), 0x7000);
    assert_ne!(s.rflags & rflags::IF, 0);
}

#[test]
fn pushf_popf_lahf_sahf() {
    let (_, s) = run_real(&[
        0xf9, // stc
        0x9c, // pushf
        0xf8, // clc
        0x9d, // popf
        0x9f, // lahf
        0x88, 0xe3, // mov bl, ah
        0xb4, 0x40, // mov ah, 0x40 (ZF)
        0x9e, // sahf
        0xf4,
    ]);
    assert_eq!(s.reg(Reg::Rbx) & 1, 1);
    assert_eq!(s.rflags & (rflags::ZF | rflags::CF), rflags::ZF);
}

#[test]
fn pusha_popa_and_enter_leave() {
    let (_, s) = run_real(&[
        0xb8, 0x01, 0x00, // mov ax, 1
        0xbd, 0x34, 0x12, // mov bp, 0x1234
        0x60, // pusha
        0x31, 0xc0, // xor ax, ax
        0x61, // popa
        0xc8, 0x08, 0x00, 0x00, // enter 8, 0
        0xc9, // leave
        0xf4,
    ]);
    assert_eq!(s.reg(Reg::Rax), 1);
    assert_eq!(s.reg(Reg::Rbp), 0x1234);
    assert_eq!(s.reg(Reg::Rsp), 0x7000);
}

#[test]
fn port_input_reads_all_ones() {
    let (_, s) = run_real(&[0xe4, 0x60, 0x66, 0xed, 0xf4]); // in al, 0x60; in eax, dx; hlt
    assert_eq!(s.reg(Reg::Rax), 0xffff_ffff);
}

#[test]
fn self_modifying_code_is_seen() {
    let (_, s) = run_real(&[
        0xc6, 0x06, 0x06, 0x7c, 0x42, // mov byte [0x7c06], 0x42  (patches the imm below)
        0xb0, 0x00, // mov al, 0x00 -> becomes mov al, 0x42
        0xf4,
    ]);
    assert_eq!(s.reg(Reg::Rax) & 0xff, 0x42);
}

#[test]
fn single_step_and_kick() {
    let mut m = Machine::new();
    m.load(CODE, &[0x40, 0x40, 0xeb, 0xfe]); // inc ax; inc ax; jmp $
    m.set(&real_state());
    m.cpu.set_single_step(true).unwrap();
    assert_eq!(m.run(), Exit::SingleStep);
    assert_eq!(m.state().rip, CODE + 1);
    assert_eq!(m.run(), Exit::SingleStep);
    assert_eq!(m.state().reg(Reg::Rax), 2);
    m.cpu.set_single_step(false).unwrap();
    let k = m.cpu.kicker();
    k.kick();
    assert_eq!(m.run(), Exit::Stopped);
    k.clear();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(20));
        k.kick();
    });
    assert_eq!(m.run(), Exit::Stopped);
    t.join().unwrap();
    assert_eq!(m.state().rip, CODE + 2);
    assert!(m.cpu.counters().instructions.unwrap() > 2);
}

#[test]
fn injected_interrupt_waits_for_sti_shadow() {
    let mut m = Machine::new();
    m.mem.write_le(0x20 * 4, 4, 0x7d00).unwrap();
    m.load(0x7d00, &[0xb3, 0x01, 0xf4]); // mov bl, 1; hlt
    // sti; inc cx; hlt
    m.load(CODE, &[0xfb, 0x41, 0xf4]);
    m.set(&real_state());
    m.cpu.inject_interrupt(0x20).unwrap();
    let s = m.run_to_halt();
    // The instruction after STI ran before the interrupt.
    assert_eq!(s.reg(Reg::Rcx), 1);
    assert_eq!(s.reg(Reg::Rbx), 1);
    assert_eq!(s.rip, 0x7d03);
}

#[test]
fn c4_c5_are_les_lds_in_real_mode_never_vex() {
    // In real and virtual-8086 mode VEX does not exist: C4 and C5 with a register operand
    // are LES and LDS r, reg, which raise #UD (vector 6). ANDN is one VEX instruction janus
    // runs elsewhere; it must not run here.
    let mut m = Machine::new();
    // IVT entry 6 (#UD) -> 0000:0x7d00: mov bx, 0x66; hlt
    m.mem.write_le(6 * 4, 4, 0x7d00).unwrap();
    m.load(0x7d00, &[0xbb, 0x66, 0x00, 0xf4]);
    m.load(CODE, &[0xc4, 0xe2, 0x70, 0xf2, 0xc2, 0xf4]); // (andn eax, ecx, edx in PM32)
    m.set(&real_state());
    let s = m.run_to_halt();
    assert_eq!(s.reg(Reg::Rbx), 0x66, "no #UD at {:#x}", s.rip);
    assert_eq!(s.rip, 0x7d00 + 4);
    // With a memory operand it is LDS: a far pointer into DS:r16.
    let (_, s) = run_real(&[
        0xc7, 0x06, 0x00, 0x05, 0x34, 0x12, // mov word [0x500], 0x1234
        0xc7, 0x06, 0x02, 0x05, 0x00, 0x20, // mov word [0x502], 0x2000
        0xc4, 0x1e, 0x00, 0x05, // les bx, [0x500]
        0xc5, 0x36, 0x00, 0x05, // lds si, [0x500]
        0xf4,
    ]);
    assert_eq!(s.reg(Reg::Rbx) & 0xffff, 0x1234);
    assert_eq!(s.reg(Reg::Rsi) & 0xffff, 0x1234);
    assert_eq!(s.es.selector, 0x2000);
    assert_eq!(s.ds.selector, 0x2000);
}
