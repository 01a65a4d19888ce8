//! 32-bit protected mode with a flat GDT: memory, stack, far transfers, segment loads.

use iced_x86::code_asm::*;

use super::*;
use crate::state::{Reg, rflags};

fn run32(f: impl FnOnce(&mut CodeAssembler)) -> (Machine, CpuState) {
    let mut m = Machine::new();
    let code = asm(32, CODE, |a| {
        f(a);
        a.hlt().unwrap();
    });
    let s = prot_state(&m);
    m.load(CODE, &code);
    m.set(&s);
    let s = m.run_to_halt();
    (m, s)
}

#[test]
fn flat_memory_stack_and_calls() {
    let (m, s) = run32(|a| {
        let mut f = a.create_label();
        let mut done = a.create_label();
        a.mov(ebx, 0x12345).unwrap();
        a.mov(dword_ptr(ebx * 2 + 0x100), 0xdead_beefu32 as i32)
            .unwrap();
        a.push(0x55).unwrap();
        a.call(f).unwrap();
        a.pop(ecx).unwrap();
        a.jmp(done).unwrap();
        a.set_label(&mut f).unwrap();
        a.mov(eax, dword_ptr(esp + 4)).unwrap();
        a.ret_1(0).unwrap();
        a.set_label(&mut done).unwrap();
    });
    assert_eq!(m.rd(0x12345 * 2 + 0x100, 4), 0xdead_beef);
    assert_eq!(s.reg(Reg::Rax), 0x55);
    assert_eq!(s.reg(Reg::Rcx), 0x55);
    assert_eq!(s.reg(Reg::Rsp), 0x70000);
}

#[test]
fn segment_load_reads_gdt_and_sets_accessed() {
    let (m, s) = run32(|a| {
        a.mov(ax, DS32 as u32).unwrap();
        a.mov(es, ax).unwrap();
        a.mov(cx, es).unwrap();
        a.lar(edx, ecx).unwrap();
        a.lsl(esi, ecx).unwrap();
    });
    assert_eq!(s.es.selector, DS32);
    assert_eq!(s.reg(Reg::Rdx), 0x00cf_9300);
    assert_eq!(s.reg(Reg::Rsi), 0xffff_ffff);
    // Accessed bit in the descriptor.
    assert_ne!(m.rd(GDT + 0x10 + 5, 1) & 1, 0);
}

#[test]
fn loading_a_bad_selector_raises_gp_with_the_selector() {
    let mut m = Machine::new();
    let s = prot_state(&m);
    gate32(&m, 13, CS32, 0x9000, 0xe);
    m.load(0x9000, &[0x5b, 0xf4]); // pop ebx (error code); hlt
    // mov ax, 0x0200; mov ds, ax (beyond the GDT limit)
    m.load(CODE, &[0x66, 0xb8, 0x00, 0x02, 0x8e, 0xd8, 0xf4]);
    m.set(&s);
    let s = m.run_to_halt();
    assert_eq!(s.reg(Reg::Rbx), 0x200);
    assert_eq!(m.rd(0x70000 - 12, 4), CODE + 4); // the faulting EIP
}

#[test]
fn far_call_and_far_return_32() {
    let mut m = Machine::new();
    let s = prot_state(&m);
    // call far 0x08:0x9000 ; hlt   /   0x9000: mov eax, 7; retf
    let mut code = vec![0x9a, 0x00, 0x90, 0x00, 0x00, 0x08, 0x00];
    code.push(0xf4);
    m.load(CODE, &code);
    m.load(0x9000, &[0xb8, 7, 0, 0, 0, 0xcb]);
    m.set(&s);
    let s = m.run_to_halt();
    assert_eq!(s.reg(Reg::Rax), 7);
    assert_eq!(s.rip, CODE + 8);
    assert_eq!(s.reg(Reg::Rsp), 0x70000);
}

#[test]
fn interrupt_to_ring0_from_ring3_switches_stack() {
    let mut m = Machine::new();
    let mut s = prot_state(&m);
    // 32-bit TSS: ESP0 = 0x60000, SS0 = DS32.
    m.mem.write_le(TSS + 4, 4, 0x60000).unwrap();
    m.mem.write_le(TSS + 8, 2, u64::from(DS32)).unwrap();
    m.mem
        .write_le(GDT + 0x38, 8, desc(TSS as u32, 0x67, 0x89, 0))
        .unwrap();
    s.tr = seg_from(TSS_SEL, desc(TSS as u32, 0x67, 0x8b, 0));
    // int 0x80 gate with DPL 3.
    let d = u64::from(0x9000u32 & 0xffff) | u64::from(CS32) << 16 | 0xee_u64 << 40;
    m.mem.write_le(IDT + 8 * 0x80, 8, d).unwrap();
    m.load(0x9000, &[0xf4]);
    s.cs = seg_from(CS32_USER, desc(0, 0xfffff, 0xfb, 0xc));
    let dseg = seg_from(DS32_USER, desc(0, 0xfffff, 0xf3, 0xc));
    (s.ds, s.es, s.ss) = (dseg, dseg, dseg);
    s.gpr[4] = 0x50000;
    m.load(CODE, &[0xcd, 0x80]);
    m.set(&s);
    let s = m.run_to_halt();
    assert_eq!(s.cs.selector, CS32);
    assert_eq!(s.ss.selector, DS32);
    assert_eq!(s.reg(Reg::Rsp), 0x60000 - 20);
    assert_eq!(m.rd(0x60000 - 20, 4), CODE + 2); // EIP
    assert_eq!(m.rd(0x60000 - 16, 4), u64::from(CS32_USER));
    assert_eq!(m.rd(0x60000 - 8, 4), 0x50000); // old ESP
    assert_eq!(m.rd(0x60000 - 4, 4), u64::from(DS32_USER));
}

#[test]
fn privileged_instruction_in_ring3_raises_gp() {
    let mut m = Machine::new();
    let mut s = prot_state(&m);
    gate32(&m, 13, CS32, 0x9000, 0xe);
    m.load(0x9000, &[0x5b, 0xf4]); // pop ebx; hlt
    m.mem.write_le(TSS + 4, 4, 0x60000).unwrap();
    m.mem.write_le(TSS + 8, 2, u64::from(DS32)).unwrap();
    s.cs = seg_from(CS32_USER, desc(0, 0xfffff, 0xfb, 0xc));
    let dseg = seg_from(DS32_USER, desc(0, 0xfffff, 0xf3, 0xc));
    (s.ds, s.es, s.ss) = (dseg, dseg, dseg);
    m.load(CODE, &[0xf4]); // hlt at CPL 3
    m.set(&s);
    let s = m.run_to_halt();
    assert_eq!(s.rip, 0x9002);
    assert_eq!(s.reg(Reg::Rbx), 0);
}

/// A 32-bit call gate (DPL 3, two dword parameters) from ring 3 into ring 0: the TSS's stack,
/// the old SS:ESP, the parameters copied, CS:EIP; RETF 8 returns to ring 3 and pops the
/// parameters from both stacks.
#[test]
fn call_gate_32_from_ring3_to_ring0_copies_parameters() {
    let mut m = Machine::new();
    let mut s = prot_state(&m);
    m.mem.write_le(TSS + 4, 4, 0x60000).unwrap();
    m.mem.write_le(TSS + 8, 2, u64::from(DS32)).unwrap();
    let gate = 0x9000u64 | u64::from(CS32) << 16 | 2 << 32 | 0xec << 40;
    m.mem.write_le(GDT + 0x50, 8, gate).unwrap();
    s.gdt.limit = 0x57;
    // int 0x80 (DPL 3) -> ring 0 at 0xa000: hlt.
    let d = 0xa000u64 | u64::from(CS32) << 16 | 0xee_u64 << 40;
    m.mem.write_le(IDT + 8 * 0x80, 8, d).unwrap();
    m.load(0xa000, &[0xf4]);
    let handler = asm(32, 0x9000, |a| {
        a.mov(eax, dword_ptr(esp + 8)).unwrap();
        a.mov(ebx, dword_ptr(esp + 12)).unwrap();
        a.mov(ecx, ss).unwrap();
        a.mov(edx, esp).unwrap();
        a.mov(edi, dword_ptr(esp + 4)).unwrap();
        // Old ESP and SS, kept where the later int 0x80 cannot overwrite them.
        a.push(dword_ptr(esp + 16)).unwrap();
        a.pop(dword_ptr(0x8000)).unwrap();
        a.push(dword_ptr(esp + 20)).unwrap();
        a.pop(dword_ptr(0x8004)).unwrap();
        a.retf_1(8).unwrap();
    });
    m.load(0x9000, &handler);
    let code = asm(32, CODE, |a| {
        a.push(0x22).unwrap();
        a.push(0x11).unwrap();
        a.call_far(0x53, 0).unwrap();
        a.mov(esi, esp).unwrap();
        a.mov(ebp, cs).unwrap();
        a.int(0x80).unwrap();
    });
    m.load(CODE, &code);
    s.cs = seg_from(CS32_USER, desc(0, 0xfffff, 0xfb, 0xc));
    let dseg = seg_from(DS32_USER, desc(0, 0xfffff, 0xf3, 0xc));
    (s.ds, s.es, s.ss) = (dseg, dseg, dseg);
    s.gpr[4] = 0x50000;
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(st.reg(Reg::Rax), 0x11);
    assert_eq!(st.reg(Reg::Rbx), 0x22);
    assert_eq!(st.reg(Reg::Rcx), u64::from(DS32));
    assert_eq!(st.reg(Reg::Rdx), 0x60000 - 24);
    assert_eq!(st.reg(Reg::Rdi), u64::from(CS32_USER));
    assert_eq!(st.reg(Reg::Rsi), 0x50000);
    assert_eq!(st.reg(Reg::Rbp), u64::from(CS32_USER));
    assert_eq!(m.rd(0x8000, 4), 0x4fff8); // old ESP, after the parameters
    assert_eq!(m.rd(0x8004, 4), u64::from(DS32_USER)); // old SS
}

/// Call gates refuse callers above their DPL (#GP with the gate's selector), and JMP through a
/// gate to a more privileged non-conforming segment (#GP with the target's selector).
#[test]
fn call_gate_checks_privilege() {
    for (gate_dpl, jmp, want) in [(0u64, false, 0x50u64), (3, true, u64::from(CS32))] {
        let mut m = Machine::new();
        let mut s = prot_state(&m);
        let gate = 0x9000u64 | u64::from(CS32) << 16 | (0x8c | gate_dpl << 5) << 40;
        m.mem.write_le(GDT + 0x50, 8, gate).unwrap();
        s.gdt.limit = 0x57;
        // #GP (DPL 0 interrupt gate, taken from ring 3 as an exception) -> ring 0: pop eax; hlt.
        m.mem.write_le(TSS + 4, 4, 0x60000).unwrap();
        m.mem.write_le(TSS + 8, 2, u64::from(DS32)).unwrap();
        gate32(&m, 13, CS32, 0xa000, 0xe);
        m.load(0xa000, &[0x58, 0xf4]);
        let code = asm(32, CODE, |a| {
            if jmp {
                a.jmp_far(0x53, 0).unwrap();
            } else {
                a.call_far(0x53, 0).unwrap();
            }
        });
        m.load(CODE, &code);
        s.cs = seg_from(CS32_USER, desc(0, 0xfffff, 0xfb, 0xc));
        let dseg = seg_from(DS32_USER, desc(0, 0xfffff, 0xf3, 0xc));
        (s.ds, s.es, s.ss) = (dseg, dseg, dseg);
        s.gpr[4] = 0x50000;
        m.set(&s);
        let st = m.run_to_halt();
        assert_eq!(st.reg(Reg::Rax), want, "gate DPL {gate_dpl}, jmp {jmp}");
    }
}

/// A 64-bit call gate from ring 3 into ring 0: RSP0 from the TSS, SS the null selector, the old
/// SS, RSP, CS and RIP pushed as quadwords.
#[test]
fn call_gate_64_from_ring3_to_ring0() {
    let mut m = Machine::new();
    let mut s = super::long_state(&m);
    m.mem.write_le(TSS + 4, 8, 0x60000).unwrap();
    let gate = 0x9000u64 | u64::from(CS64) << 16 | 0xec << 40;
    m.mem.write_le(GDT + 0x50, 8, gate).unwrap();
    m.mem.write_le(GDT + 0x58, 8, 0).unwrap();
    s.gdt.limit = 0x5f;
    let handler = asm(64, 0x9000, |a| {
        a.mov(rdx, rsp).unwrap();
        a.mov(rbx, qword_ptr(rsp + 8)).unwrap();
        a.mov(rcx, qword_ptr(rsp + 16)).unwrap();
        a.hlt().unwrap();
    });
    m.load(0x9000, &handler);
    // The far pointer at 0x8000: offset (ignored), selector 0x53.
    m.mem.write_le(0x8000, 4, 0).unwrap();
    m.mem.write_le(0x8004, 2, 0x53).unwrap();
    let code = asm(64, CODE, |a| {
        a.mov(eax, 0x8000).unwrap();
        a.call(fword_ptr(rax)).unwrap();
    });
    m.load(CODE, &code);
    s.cs = seg_from(CS64_USER, desc(0, 0xfffff, 0xfb, 0xa));
    let dseg = seg_from(DS32_USER, desc(0, 0xfffff, 0xf3, 0xc));
    (s.ds, s.es, s.ss) = (dseg, dseg, dseg);
    s.gpr[4] = 0x50000;
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(st.cs.selector, CS64);
    assert_eq!(st.ss.selector, 0);
    assert_eq!(st.reg(Reg::Rdx), 0x60000 - 32);
    assert_eq!(st.reg(Reg::Rbx), u64::from(CS64_USER));
    assert_eq!(st.reg(Reg::Rcx), 0x50000);
}

/// A second 32-bit TSS at `TSS2` (GDT 0x50, available) whose task starts at `eip` on a flat
/// ring-0 stack at 0x58000; and the current task's descriptor (0x38) marked busy, as LTR does.
const TSS2: u64 = 0x6000;

fn second_task(m: &Machine, s: &mut CpuState, eip: u64) {
    m.mem
        .write_le(GDT + 0x38, 8, desc(TSS as u32, 0x67, 0x8b, 0))
        .unwrap();
    m.mem
        .write_le(GDT + 0x50, 8, desc(TSS2 as u32, 0x67, 0x89, 0))
        .unwrap();
    // A task gate (DPL 0) to it at 0x58.
    m.mem
        .write_le(GDT + 0x58, 8, 0x50u64 << 16 | 0x85 << 40)
        .unwrap();
    s.gdt.limit = 0x5f;
    let w = |o: u64, v: u64| m.mem.write_le(TSS2 + o, 4, v).unwrap();
    w(0x20, eip);
    w(0x24, 2); // EFLAGS
    w(0x38, 0x58000); // ESP
    w(0x4c, u64::from(CS32));
    for o in [0x48, 0x50, 0x54, 0x58, 0x5c] {
        w(o, u64::from(DS32));
    }
}

/// CALL to a TSS: the outgoing registers are saved in its TSS, the new task runs nested (NT, back
/// link), and its IRET returns to the instruction after the CALL with the caller's registers,
/// leaving the called task's state in its TSS and its descriptor available again.
#[test]
fn task_switch_by_call_and_iret() {
    let mut m = Machine::new();
    let mut s = prot_state(&m);
    second_task(&m, &mut s, 0x9000);
    let task = asm(32, 0x9000, |a| {
        a.mov(ecx, 0x2222).unwrap();
        a.pushfd().unwrap();
        a.pop(edx).unwrap();
        a.iretd().unwrap();
    });
    m.load(0x9000, &task);
    let code = asm(32, CODE, |a| {
        a.mov(eax, 0x1111).unwrap();
        a.xor(ecx, ecx).unwrap();
        a.call_far(0x50, 0).unwrap();
        a.mov(esi, eax).unwrap();
        a.mov(edi, ecx).unwrap();
        a.hlt().unwrap();
    });
    m.load(CODE, &code);
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(st.reg(Reg::Rsi), 0x1111, "caller's EAX restored");
    assert_eq!(st.reg(Reg::Rdi), 0, "caller's ECX restored");
    assert_eq!(st.tr.selector, 0x38);
    assert_ne!(st.cr0 & bits::CR0_TS, 0);
    // The called task: NT set while it ran, its link, its state saved by the IRET.
    assert_eq!(m.rd(TSS2, 2), 0x38);
    assert_eq!(m.rd(TSS2 + 0x2c, 4), 0x2222); // ECX
    let saved_flags = m.rd(TSS2 + 0x24, 4);
    assert_eq!(saved_flags & rflags::NT, 0, "IRET saves NT clear");
    assert_eq!(
        m.rd(TSS2 + 0x30, 4) & rflags::NT,
        rflags::NT,
        "EDX held EFLAGS with NT"
    );
    assert_eq!(m.rd(TSS2 + 0x20, 4), 0x9000 + task.len() as u64); // after its IRET
    assert_eq!(
        (m.rd(GDT + 0x50, 8) >> 40) & 0xf,
        0x9,
        "called task available again"
    );
    assert_eq!((m.rd(GDT + 0x38, 8) >> 40) & 0xf, 0xb, "caller busy");
}

/// JMP through a task gate: the old task is left (descriptor available, EIP after the JMP saved),
/// the new one runs without NT or a link.
#[test]
fn task_switch_by_jmp_through_a_task_gate() {
    let mut m = Machine::new();
    let mut s = prot_state(&m);
    second_task(&m, &mut s, 0x9000);
    m.load(0x9000, &[0xf4]);
    let code = asm(32, CODE, |a| {
        a.mov(ebx, 0x3333).unwrap();
        a.jmp_far(0x58, 0).unwrap();
    });
    m.load(CODE, &code);
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(st.tr.selector, 0x50);
    assert_eq!(st.rflags & rflags::NT, 0);
    assert_eq!(st.reg(Reg::Rsp), 0x58000);
    assert_eq!(m.rd(TSS + 0x34, 4), 0x3333); // EBX saved in the old TSS
    assert_eq!(m.rd(TSS + 0x20, 4), CODE + code.len() as u64);
    assert_eq!((m.rd(GDT + 0x38, 8) >> 40) & 0xf, 0x9, "old task available");
    assert_eq!((m.rd(GDT + 0x50, 8) >> 40) & 0xf, 0xb, "new task busy");
    assert_eq!(m.rd(TSS2, 2), 0, "no link");
}

/// #GP through a task gate in the IDT: the new task gets the error code on its stack, runs
/// nested, and the faulting task's EIP is the faulting instruction.
#[test]
fn exception_through_a_task_gate_pushes_the_error_code() {
    let mut m = Machine::new();
    let mut s = prot_state(&m);
    second_task(&m, &mut s, 0x9000);
    m.mem
        .write_le(IDT + 8 * 13, 8, 0x50u64 << 16 | 0x85 << 40)
        .unwrap();
    m.load(0x9000, &[0x5b, 0xf4]); // pop ebx; hlt
    let code = asm(32, CODE, |a| {
        a.mov(eax, 0x1234).unwrap();
        a.mov(ds, ax).unwrap();
    });
    m.load(CODE, &code);
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(st.reg(Reg::Rbx), 0x1234); // the selector, TI bit included
    assert_eq!(st.rflags & rflags::NT, rflags::NT);
    assert_eq!(m.rd(TSS2, 2), 0x38);
    assert_eq!(m.rd(TSS + 0x20, 4), CODE + 5, "EIP of the faulting mov ds");
}

/// Virtual-8086 mode: IRETD from ring 0 with VM set enters it (segments real-mode style, CPL 3);
/// CLI at IOPL 0 is #GP(0) to the ring-0 monitor on the TSS's stack with the 8086 segment
/// registers pushed and the data segments nulled.
#[test]
fn vm86_enter_by_iret_and_gp_to_the_monitor() {
    let mut m = Machine::new();
    let s = prot_state(&m);
    m.mem.write_le(TSS + 4, 4, 0x60000).unwrap();
    m.mem.write_le(TSS + 8, 2, u64::from(DS32)).unwrap();
    gate32(&m, 13, CS32, 0xa000, 0xe);
    let monitor = asm(32, 0xa000, |a| {
        a.pop(eax).unwrap(); // error code
        a.mov(ebx, dword_ptr(esp)).unwrap(); // IP
        a.mov(ecx, dword_ptr(esp + 4)).unwrap(); // CS
        a.mov(edx, dword_ptr(esp + 8)).unwrap(); // EFLAGS
        a.mov(edi, dword_ptr(esp + 24)).unwrap(); // DS
        a.mov(ebp, ds).unwrap();
        a.hlt().unwrap();
    });
    m.load(0xa000, &monitor);
    // 8086 code at 0700:0000: mov ax, 1234h; mov [10h], ax; cli
    m.load(0x7000, &[0xb8, 0x34, 0x12, 0xa3, 0x10, 0x00, 0xfa]);
    let code = asm(32, CODE, |a| {
        for v in [0u32, 0, 0x100, 0, 0x200, 0x100, 0x2_0002, 0x700, 0] {
            a.push(v).unwrap(); // GS FS DS ES SS ESP EFLAGS(VM) CS EIP
        }
        a.iretd().unwrap();
    });
    m.load(CODE, &code);
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(m.rd(0x1010, 2), 0x1234, "DS base 0x1000 in VM86");
    assert_eq!(st.reg(Reg::Rax), 0);
    assert_eq!(st.reg(Reg::Rbx), 6, "IP of the CLI");
    assert_eq!(st.reg(Reg::Rcx), 0x700);
    assert_ne!(st.reg(Reg::Rdx) & rflags::VM, 0);
    assert_eq!(st.reg(Reg::Rdi), 0x100);
    assert_eq!(st.reg(Reg::Rbp), 0, "DS nulled for the monitor");
    assert_eq!(st.rflags & rflags::VM, 0);
    assert_eq!(st.reg(Reg::Rsp), 0x60000 - 36);
}

/// At IOPL 3, INT n from virtual-8086 mode goes to the protected-mode handler, whose IRETD
/// returns to VM86; PUSHF and IRET there work as in real mode.
#[test]
fn vm86_int_and_iret_at_iopl3() {
    let mut m = Machine::new();
    let s = prot_state(&m);
    m.mem.write_le(TSS + 4, 4, 0x60000).unwrap();
    m.mem.write_le(TSS + 8, 2, u64::from(DS32)).unwrap();
    let gate = |v: u64, off: u64| {
        let d = off | u64::from(CS32) << 16 | 0xee_u64 << 40;
        m.mem.write_le(IDT + 8 * v, 8, d).unwrap();
    };
    gate(0x21, 0xb000);
    gate(0x22, 0xc000);
    // int 21h handler: EBX = the IP it returns to; back to VM86.
    let h21 = asm(32, 0xb000, |a| {
        a.mov(ebx, dword_ptr(esp)).unwrap();
        a.iretd().unwrap();
    });
    m.load(0xb000, &h21);
    let h22 = asm(32, 0xc000, |a| {
        a.mov(esi, dword_ptr(esp)).unwrap();
        a.hlt().unwrap();
    });
    m.load(0xc000, &h22);
    // 0700:0000 int 21h; mov [20h], bx; pushf; push cs; push 30h; iret
    // 0700:0030 int 22h
    m.load(
        0x7000,
        &[
            0xcd, 0x21, 0x89, 0x1e, 0x20, 0x00, 0x9c, 0x0e, 0x6a, 0x30, 0xcf,
        ],
    );
    m.load(0x7030, &[0xcd, 0x22]);
    let code = asm(32, CODE, |a| {
        for v in [0u32, 0, 0x100, 0, 0x200, 0x100, 0x2_3002, 0x700, 0] {
            a.push(v).unwrap();
        }
        a.iretd().unwrap();
    });
    m.load(CODE, &code);
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(m.rd(0x1020, 2), 2, "int 21h returned to IP 2");
    assert_eq!(st.reg(Reg::Rsi), 0x32, "IRET in VM86 went to 0700:0030");
    assert_eq!(st.cs.selector, CS32);
}

/// A task switch into a virtual-8086 task: its selectors become paragraphs, and its faults go
/// to the monitor on the ring-0 stack of its own TSS.
#[test]
fn task_switch_into_a_vm86_task() {
    let mut m = Machine::new();
    let mut s = prot_state(&m);
    second_task(&m, &mut s, 0);
    let w = |o: u64, v: u64| m.mem.write_le(TSS2 + o, 4, v).unwrap();
    w(0x04, 0x50000); // ESP0
    w(0x08, u64::from(DS32)); // SS0
    w(0x24, 0x2_0002); // EFLAGS: VM, IOPL 0
    w(0x38, 0x100); // ESP
    w(0x4c, 0x700); // CS
    w(0x50, 0x200); // SS
    w(0x54, 0x100); // DS
    gate32(&m, 13, CS32, 0xa000, 0xe);
    m.load(0xa000, &[0x58, 0xf4]); // pop eax; hlt
    m.load(0x7000, &[0xb8, 0x34, 0x12, 0xa3, 0x10, 0x00, 0xfa]); // mov ax,1234h; mov [10h],ax; cli
    let code = asm(32, CODE, |a| {
        a.mov(eax, 0x5555).unwrap();
        a.jmp_far(0x50, 0).unwrap();
    });
    m.load(CODE, &code);
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(m.rd(0x1010, 2), 0x1234);
    assert_eq!(st.reg(Reg::Rax), 0, "#GP(0) from CLI");
    assert_eq!(st.tr.selector, 0x50);
    assert_eq!(st.reg(Reg::Rsp), 0x50000 - 36); // nine dwords left after the error code
}
