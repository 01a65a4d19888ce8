//! Exceptions: #DE and #UD through the IVT and IDT, precise state (mid-REP #PF), double fault and
//! triple fault, and the exits for what the backend cannot do.

use iced_x86::code_asm::*;

use super::*;
use crate::state::Reg;

#[test]
fn divide_error_through_the_ivt() {
    let mut m = Machine::new();
    m.mem.write_le(0, 4, 0x7d00).unwrap(); // vector 0 -> 0000:7d00
    m.load(0x7d00, &[0x5b, 0xf4]); // pop bx (IP of the faulting div); hlt
    m.load(CODE, &[0x31, 0xc9, 0xf7, 0xf1, 0xf4]); // xor cx, cx; div cx
    m.set(&real_state());
    let s = m.run_to_halt();
    assert_eq!(s.reg(Reg::Rbx), CODE + 2);
}

#[test]
fn undefined_opcode_through_the_idt() {
    let mut m = Machine::new();
    let s = prot_state(&m);
    gate32(&m, 6, CS32, 0x9000, 0xe);
    m.load(0x9000, &[0x5b, 0xf4]); // pop ebx; hlt
    m.load(CODE, &[0x90, 0x0f, 0x0b]); // nop; ud2
    m.set(&s);
    let s = m.run_to_halt();
    assert_eq!(s.reg(Reg::Rbx), CODE + 1);
    // An instruction the backend does not implement (SSE) is #UD too.
    let mut m = Machine::new();
    let s = prot_state(&m);
    gate32(&m, 6, CS32, 0x9000, 0xe);
    m.load(0x9000, &[0x5b, 0xf4]);
    m.load(CODE, &[0x0f, 0x28, 0xc1]); // movaps xmm0, xmm1
    m.set(&s);
    assert_eq!(m.run_to_halt().reg(Reg::Rbx), CODE);
}

#[test]
fn page_fault_mid_rep_is_precise() {
    let mut m = Machine::new();
    let s = super::long_state(&m);
    // Unmap 0x400000..0x600000.
    m.mem.write_le(PML4 + 0x2000 + 16, 8, 0).unwrap();
    gate64(&m, 14, 0x9000, 0);
    m.load(0x9000, &[0xf4]);
    let code = asm(64, CODE, |a| {
        a.mov(rdi, 0x3ffff8u64).unwrap();
        a.mov(ecx, 100).unwrap();
        a.rep().stosb().unwrap();
    });
    m.load(CODE, &code);
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(st.reg(Reg::Rcx), 92);
    assert_eq!(st.reg(Reg::Rdi), 0x400000);
    assert_eq!(st.cr2, 0x400000);
    assert_eq!(m.rd(0x70000 - 40, 8), CODE + 15); // RIP of rep stosb
}

#[test]
fn fault_without_handler_is_a_triple_fault() {
    let mut m = Machine::new();
    let mut s = prot_state(&m);
    s.idt.limit = 0;
    m.load(CODE, &[0x0f, 0x0b]);
    m.set(&s);
    match m.run() {
        Exit::Shutdown(st) => assert_eq!(st.rip, CODE),
        e => panic!("expected shutdown, got {e:?}"),
    }
}

#[test]
fn gp_while_delivering_gp_escalates_to_double_fault() {
    let mut m = Machine::new();
    let s = prot_state(&m);
    // #GP gate points at a null selector; #DF gate is fine.
    gate32(&m, 13, 0, 0x9000, 0xe);
    gate32(&m, 8, CS32, 0x9100, 0xe);
    m.load(0x9100, &[0x5b, 0xf4]);
    m.load(
        CODE,
        &asm(32, CODE, |a| {
            a.mov(ax, 0x200).unwrap();
            a.mov(ds, ax).unwrap();
        }),
    );
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(st.rip, 0x9102);
    assert_eq!(st.reg(Reg::Rbx), 0);
}
