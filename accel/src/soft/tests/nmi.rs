//! NMI delivery in the software CPU: vector 2 through the IDT (IST included) whatever IF says,
//! blocked from delivery until the handler's IRET (even one that faults), waking HLT.

use std::sync::atomic::{AtomicU32, Ordering};

use iced_x86::code_asm::*;

use super::{Machine, TSS, asm, gate64, long_state};
use crate::exit::Exit;
use crate::io::IoHandler;
use crate::state::{Reg, rflags};
use crate::vcpu::Vcpu;

/// No devices, and `n` NMIs for the CPU to take, one at a time.
#[derive(Default)]
struct Nmis(AtomicU32);

impl IoHandler for Nmis {
    fn pio_read(&self, _: usize, _: u16, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn pio_write(&self, _: usize, _: u16, _: &[u8]) {}
    fn mmio_read(&self, _: usize, _: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn mmio_write(&self, _: usize, _: u64, _: &[u8]) {}
    fn nmi_pending(&self, _: usize) -> bool {
        self.0.load(Ordering::SeqCst) > 0
    }
    fn take_nmi(&self, _: usize) -> bool {
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

const HANDLER: u64 = 0x9000;
const IST1: u64 = 0x68000;

/// Long mode with IF=0 and an NMI handler on IST1 that counts in R15, tracks its nesting depth
/// in R13 (the deepest in R12) and returns with IRETQ.
fn setup(m: &mut Machine, code: &[u8]) {
    let mut s = long_state(m);
    s.rflags &= !rflags::IF;
    m.mem.write_le(TSS + 0x24, 8, IST1).unwrap();
    gate64(m, 2, HANDLER, 1);
    let h = asm(64, HANDLER, |a| {
        a.inc(r15).unwrap();
        a.inc(r13).unwrap();
        a.cmp(r13, r12).unwrap();
        a.cmovg(r12, r13).unwrap();
        a.mov(rbx, rsp).unwrap();
        // A while in the handler: the second NMI must wait for the IRET.
        a.mov(ecx, 100).unwrap();
        let mut spin = a.create_label();
        a.set_label(&mut spin).unwrap();
        a.dec(ecx).unwrap();
        a.jnz(spin).unwrap();
        a.dec(r13).unwrap();
        a.iretq().unwrap();
    });
    m.load(HANDLER, &h);
    m.load(super::CODE, code);
    m.set(&s);
}

#[test]
fn nmi_is_taken_with_if_clear_on_its_ist_stack_and_blocked_until_iretq() {
    let mut m = Machine::new();
    let code = asm(64, super::CODE, |a| {
        a.nop().unwrap();
        a.nop().unwrap();
        a.hlt().unwrap();
    });
    setup(&mut m, &code);
    let io = Nmis(AtomicU32::new(2));
    assert_eq!(m.cpu.run(&io).unwrap(), Exit::Halt);
    let s = m.cpu.state().unwrap();
    assert_eq!(s.reg(Reg::R15), 2, "both NMIs taken");
    assert_eq!(s.reg(Reg::R12), 1, "never nested");
    // The frame of five quadwords (no error code) on the IST stack.
    assert_eq!(s.reg(Reg::Rbx), IST1 - 40);
    assert!(!s.events.nmi_masked && !s.events.nmi_pending);
    assert_eq!(io.0.load(Ordering::SeqCst), 0);
}

#[test]
fn an_nmi_wakes_hlt_with_interrupts_off() {
    let mut m = Machine::new();
    let code = asm(64, super::CODE, |a| {
        a.hlt().unwrap();
        a.inc(rsi).unwrap();
        a.hlt().unwrap();
    });
    setup(&mut m, &code);
    let none = Nmis::default();
    assert_eq!(m.cpu.run(&none).unwrap(), Exit::Halt);
    assert_eq!(m.cpu.run(&none).unwrap(), Exit::Halt, "nothing wakes it");
    let one = Nmis(AtomicU32::new(1));
    assert_eq!(m.cpu.run(&one).unwrap(), Exit::Halt);
    let s = m.cpu.state().unwrap();
    assert_eq!((s.reg(Reg::R15), s.reg(Reg::Rsi)), (1, 1));
}

/// SDM vol. 3, 6.7.1: IRET unblocks NMIs even when it faults.
#[test]
fn a_faulting_iret_still_unblocks_nmis() {
    let mut m = Machine::new();
    let code = asm(64, super::CODE, |a| {
        a.hlt().unwrap();
    });
    setup(&mut m, &code);
    // This handler puts a null CS in its frame: IRETQ raises #GP, whose handler halts.
    let h = asm(64, HANDLER, |a| {
        a.inc(r15).unwrap();
        a.mov(qword_ptr(rsp + 8), 0).unwrap();
        a.iretq().unwrap();
    });
    m.load(HANDLER, &h);
    gate64(&m, 13, 0x9800, 0);
    m.load(0x9800, &[0xf4]);
    let io = Nmis(AtomicU32::new(1));
    assert_eq!(m.cpu.run(&io).unwrap(), Exit::Halt);
    let s = m.cpu.state().unwrap();
    assert_eq!(s.reg(Reg::R15), 1);
    assert_eq!(s.rip, 0x9801, "in the #GP handler");
    assert!(!s.events.nmi_masked);
}

/// The NMI state is architectural state: a vCPU given a pending NMI in its state delivers it,
/// and one given "blocked" holds the machine's NMI until its IRET.
#[test]
fn nmi_state_round_trips_through_cpu_state() {
    let mut m = Machine::new();
    let code = asm(64, super::CODE, |a| {
        a.hlt().unwrap();
    });
    setup(&mut m, &code);
    let mut s = m.cpu.state().unwrap();
    s.events.nmi_masked = true;
    m.cpu.set_state(&s).unwrap();
    let io = Nmis(AtomicU32::new(1));
    assert_eq!(m.cpu.run(&io).unwrap(), Exit::Halt);
    let s = m.cpu.state().unwrap();
    assert_eq!(s.reg(Reg::R15), 0, "blocked");
    assert!(s.events.nmi_masked);
    assert_eq!(io.0.load(Ordering::SeqCst), 1, "still the machine's");
    let mut s = s;
    s.events.nmi_masked = false;
    s.events.nmi_pending = true;
    s.rip = super::CODE;
    m.cpu.set_state(&s).unwrap();
    assert_eq!(m.cpu.run(&Nmis::default()).unwrap(), Exit::Halt);
    assert_eq!(m.cpu.state().unwrap().reg(Reg::R15), 1);
}
