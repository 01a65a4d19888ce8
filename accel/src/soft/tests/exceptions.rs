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

/// RFLAGS.TF: a #DB trap after every instruction that starts with TF set, returning to the next
/// one, with DR6.BS; none after the POPF that sets TF, one after the POPF that clears it, and
/// none inside the #DB handler (delivery clears TF; IRETQ restores it).
#[test]
fn trap_flag_single_steps_through_db() {
    let mut m = Machine::new();
    let s = super::long_state(&m);
    gate64(&m, 1, 0x9000, 0);
    // #DB: record the return RIP at 0x8000 + 8 * r15, count, and read DR6.
    let handler = asm(64, 0x9000, |a| {
        a.mov(rax, qword_ptr(rsp)).unwrap();
        a.mov(qword_ptr(r15 * 8 + 0x8000), rax).unwrap();
        a.inc(r15).unwrap();
        a.mov(rbx, dr6).unwrap();
        a.iretq().unwrap();
    });
    m.load(0x9000, &handler);
    let code = asm(64, CODE, |a| {
        a.xor(r15d, r15d).unwrap();
        a.pushfq().unwrap();
        a.or(qword_ptr(rsp), 0x100).unwrap();
        a.popfq().unwrap(); // sets TF: no trap after it
        a.nop().unwrap(); // trap 1
        a.mov(ecx, 1).unwrap(); // trap 2
        a.pushfq().unwrap(); // trap 3
        a.and(qword_ptr(rsp), !0x100i32).unwrap(); // trap 4
        a.popfq().unwrap(); // trap 5 (TF was set when it started)
        a.hlt().unwrap();
    });
    m.load(CODE, &code);
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(st.reg(Reg::R15), 5);
    assert_eq!(st.reg(Reg::Rbx) & (1 << 14), 1 << 14, "DR6.BS");
    assert_eq!(st.rflags & 0x100, 0);
    // The return addresses: each the instruction after the stepped one.
    let dec = |a: u64| {
        let bytes: Vec<u8> = (0..16).map(|k| m.rd(a + k, 1) as u8).collect();
        let mut d = iced_x86::Decoder::with_ip(64, &bytes, a, 0);
        d.decode().len() as u64
    };
    // Past xor, pushfq, or, popfq.
    let mut at = CODE;
    for _ in 0..4 {
        at += dec(at);
    }
    for k in 0..5 {
        at += dec(at);
        assert_eq!(m.rd(0x8000 + 8 * k, 8), at, "trap {k}");
    }
}

/// An exception frame is checked against SS's limit before it is pushed, as a PUSH is: with a
/// 32 KiB expand-up stack segment, ESP = 0x8000 takes the #UD frame at 0x7ff4, ESP = 0x8002
/// would put its top dword across the limit: #SS, which does not fit either (a double fault),
/// then a triple fault. In a flat 4 GiB segment a frame that wraps through 0 in whole dwords
/// is fine, one that straddles the top is not.
#[test]
fn an_exception_frame_must_fit_in_the_stack_segment() {
    let run = |limit: u32, stack_top: u64| {
        let mut m = Machine::new();
        let mut s = prot_state(&m);
        s.ss.limit = limit;
        s.ss.g = false;
        s.gpr[4] = stack_top;
        gate32(&m, 6, CS32, 0x9000, 0xe);
        m.load(0x9000, &[0xf4]); // hlt
        m.load(CODE, &[0x0f, 0x0b]); // ud2
        m.set(&s);
        let e = m.run();
        (e, m.state())
    };
    let (e, s) = run(0x7fff, 0x8000);
    assert_eq!((e, s.rip, s.reg(Reg::Rsp)), (Exit::Halt, 0x9001, 0x7ff4));
    let (e, _) = run(0x7fff, 0x8002);
    assert!(
        matches!(e, Exit::Shutdown(ref st) if st.rip == CODE),
        "{e:?}"
    );
    let (e, s) = run(0xffff_ffff, 0x4);
    assert_eq!((e, s.reg(Reg::Rsp)), (Exit::Halt, 0xffff_fff8));
    let (e, _) = run(0xffff_ffff, 0x6);
    assert!(matches!(e, Exit::Shutdown(_)), "{e:?}");
}
