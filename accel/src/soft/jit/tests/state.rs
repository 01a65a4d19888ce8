//! Self-modifying code, precise exceptions, kicks and code-cache flushes under the JIT, each
//! checked against the interpreter where the outcome is deterministic.

use iced_x86::code_asm::*;

use super::super::super::tests::{CS32, IDT, PML4, gate32, gate64};
use super::super::Jit;
use super::*;
use crate::state::Reg;
use crate::vcpu::Vcpu;

fn none(_: &Machine, _: &mut CpuState) {}

#[test]
fn jit_smc_rewrites_its_next_instruction() {
    // mov byte [next + 1], 0x42 ; next: mov al, 0x11 ; hlt  -> AL = 0x42 (same block).
    let (_, s) = same_both_ways(
        32,
        |a| {
            a.mov(eax, 0).unwrap(); // 5 bytes
            a.mov(byte_ptr(CODE + 13), 0x42).unwrap(); // 7 bytes
            a.mov(al, 0x11).unwrap(); // at CODE + 12
            a.add(eax, 1).unwrap();
        },
        &none,
        0x10000,
    );
    assert_eq!(s.reg(Reg::Rax), 0x43);
}

#[test]
fn jit_smc_rewrites_a_compiled_function_in_a_loop() {
    // A function returning an immediate (at 0x9000: mov eax, 1; ret) that the caller
    // increments each time: the compiled function (and the chains into it) must be dropped
    // after every write.
    let setup = |m: &Machine, _: &mut CpuState| m.load(0x9000, &[0xb8, 1, 0, 0, 0, 0xc3]);
    let (m, s) = same_both_ways(
        32,
        |a| {
            let mut top = a.create_label();
            a.mov(ecx, 50).unwrap();
            a.xor(ebx, ebx).unwrap();
            a.mov(edx, 0x9000).unwrap();
            a.set_label(&mut top).unwrap();
            a.call(edx).unwrap();
            a.add(ebx, eax).unwrap();
            a.inc(dword_ptr(0x9001u32)).unwrap();
            a.dec(ecx).unwrap();
            a.jnz(top).unwrap();
        },
        &setup,
        0x10000,
    );
    assert_eq!(s.reg(Reg::Rbx), (1..=50).sum::<u64>());
    // Compiled code was dropped after each write until the page was left to the interpreter.
    let st = m.cpu.jit_stats().unwrap();
    assert!(st.invalidated >= 8 && st.interpreted > 0, "{st:?}");
}

#[test]
fn jit_smc_writes_code_then_jumps_to_it() {
    // Copies `mov eax, K; ret` to 0x9000 with a new K each time and calls it.
    let (_, s) = same_both_ways(
        64,
        |a| {
            let mut top = a.create_label();
            a.mov(ecx, 20).unwrap();
            a.xor(ebx, ebx).unwrap();
            a.mov(rdi, 0x9000u64).unwrap();
            a.set_label(&mut top).unwrap();
            a.mov(byte_ptr(rdi), 0xb8).unwrap();
            a.mov(dword_ptr(rdi + 1), ecx).unwrap();
            a.mov(byte_ptr(rdi + 5), 0xc3).unwrap();
            a.call(rdi).unwrap();
            a.add(ebx, eax).unwrap();
            a.dec(ecx).unwrap();
            a.jnz(top).unwrap();
        },
        &none,
        0x10000,
    );
    assert_eq!(s.reg(Reg::Rbx), (1..=20).sum::<u64>());
}

#[test]
fn jit_page_fault_mid_block_is_precise() {
    // Registers and flags changed earlier in the block, then a load from an unmapped page:
    // the handler sees the state of the faulting instruction's start.
    let setup = |m: &Machine, _: &mut CpuState| {
        m.mem.write_le(PML4 + 0x2000 + 16, 8, 0).unwrap(); // unmap 4-6 MiB
        gate64(m, 14, 0x9000, 0);
        m.load(0x9000, &[0xf4]);
    };
    let (_, s) = same_both_ways(
        64,
        |a| {
            a.mov(rax, 5u64).unwrap();
            a.add(rax, 7).unwrap();
            a.mov(rbx, 0x400010u64).unwrap();
            a.sub(ecx, eax).unwrap();
            a.mov(qword_ptr(0x8000), rax).unwrap();
            a.mov(rdx, qword_ptr(rbx)).unwrap();
            a.inc(rax).unwrap();
        },
        &setup,
        0x80000,
    );
    assert_eq!(s.rip, 0x9001);
    assert_eq!(s.cr2, 0x400010);
    assert_eq!(s.reg(Reg::Rax), 12);
}

#[test]
fn jit_general_protection_and_divide_error_are_precise() {
    let setup = |m: &Machine, _: &mut CpuState| {
        gate32(m, 13, CS32, 0x9000, 0xe);
        gate32(m, 0, CS32, 0x9100, 0xe);
        m.load(0x9000, &[0xf4]);
        m.load(0x9100, &[0xf4]);
        let _ = IDT;
    };
    // A 4-byte read at 0xfffffffe runs past the 4 GiB limit: #GP(0).
    same_both_ways(
        32,
        |a| {
            a.mov(esi, 3).unwrap();
            a.add(esi, esi).unwrap();
            a.mov(eax, dword_ptr(0xffff_fffeu32)).unwrap();
        },
        &setup,
        0x80000,
    );
    // DIV by zero in a helper after a store.
    same_both_ways(
        32,
        |a| {
            a.mov(dword_ptr(0x8000), 0x1234).unwrap();
            a.xor(ecx, ecx).unwrap();
            a.mov(eax, 10).unwrap();
            a.div(ecx).unwrap();
        },
        &setup,
        0x80000,
    );
}

#[test]
fn jit_kick_stops_a_chained_loop() {
    let mut m = jit_machine();
    let s = state_for(&m, 64);
    m.load(
        CODE,
        &asm(64, CODE, |a| {
            let mut l = a.create_label();
            a.set_label(&mut l).unwrap();
            a.inc(rax).unwrap();
            a.jmp(l).unwrap();
        }),
    );
    m.set(&s);
    let k = m.cpu.kicker();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(30));
        k.kick();
    });
    assert_eq!(m.run(), Exit::Stopped);
    t.join().unwrap();
    let st = m.state();
    assert!(st.reg(Reg::Rax) > 1000);
    assert_eq!(st.rip, CODE);
    // Each instruction was counted: two per iteration.
    assert_eq!(m.cpu.counters().instructions, Some(st.reg(Reg::Rax) * 2));
}

#[test]
fn jit_kick_at_a_loop_back_edge_keeps_every_register() {
    // A loop whose guest registers stay in host registers across iterations: the attention check on the back edge must not clobber them. It once loaded the
    // flag's address into RAX, and the exit wrote that host pointer back as a guest register
    // (a Linux kernel's mpihelp_submul_1 then faulted on a wild index after a timer interrupt).
    for _ in 0..3 {
        let mut m = jit_machine();
        let s = state_for(&m, 64);
        m.load(
            CODE,
            &asm(64, CODE, |a| {
                let mut l = a.create_label();
                // More registers than the loop head keeps: the rest are reloaded at the head
                // and written back on the back edge.
                a.xor(edx, edx).unwrap(); // the test state starts with DL = 0x80
                a.set_label(&mut l).unwrap();
                for (k, r) in [rdx, r8, rsi, rdi, r9, r10, r11, rax]
                    .into_iter()
                    .enumerate()
                {
                    a.add(r, k as i32 + 1).unwrap();
                }
                a.jmp(l).unwrap();
            }),
        );
        m.set(&s);
        let k = m.cpu.kicker();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            k.kick();
        });
        assert_eq!(m.run(), Exit::Stopped);
        t.join().unwrap();
        let st = m.state();
        let n = st.reg(Reg::Rdx);
        assert!(n > 100, "{st}");
        let regs = [
            Reg::R8,
            Reg::Rsi,
            Reg::Rdi,
            Reg::R9,
            Reg::R10,
            Reg::R11,
            Reg::Rax,
        ];
        for (k, r) in regs.into_iter().enumerate() {
            assert_eq!(st.reg(r), (k as u64 + 2) * n, "{r:?}\n{st}");
        }
    }
}

#[test]
fn jit_small_code_cache_is_flushed_and_refilled() {
    // 300 distinct blocks run 3 times through a 1 MiB cache that takes a block only while
    // 1008 KiB are free, so that it fills every hundred blocks or so.
    let code = |a: &mut CodeAssembler| {
        let mut top = a.create_label();
        a.mov(ecx, 3).unwrap();
        a.set_label(&mut top).unwrap();
        for k in 0..300 {
            let mut next = a.create_label();
            a.add(eax, k).unwrap();
            a.jmp(next).unwrap();
            a.set_label(&mut next).unwrap();
        }
        a.dec(ecx).unwrap();
        a.jnz(top).unwrap();
    };
    let want = same_both_ways(32, code, &none, 0).1;
    let mut m = jit_machine();
    m.cpu.jit = Some(Box::new(
        Jit::with_room(&m.cpu.kicker, 1 << 20, 1008 << 10).unwrap(),
    ));
    let s = state_for(&m, 32);
    m.load(
        CODE,
        &asm(32, CODE, |a| {
            code(a);
            a.hlt().unwrap();
        }),
    );
    m.set(&s);
    assert_eq!(m.run(), Exit::Halt);
    assert_eq!(m.state(), want);
    let st = m.cpu.jit_stats().unwrap();
    assert!(st.flushes > 5, "{st:?}");
}

#[test]
fn jit_code_compiled_for_flat_segments_follows_a_segment_change() {
    // A function that reads [0x8000] through DS is compiled while DS is flat; then DS gets
    // base 0x1000 and the same function must read 0x9000.
    let setup = |m: &Machine, s: &mut CpuState| {
        let d = super::super::super::tests::desc(0x1000, 0xfffff, 0x93, 0xc);
        m.mem
            .write_le(super::super::super::tests::GDT + 0x50, 8, d)
            .unwrap();
        s.gdt.limit = 0x57;
        m.mem.write_le(0x8000, 4, 1).unwrap();
        m.mem.write_le(0x9000, 4, 100).unwrap();
        // At 0xa000: mov eax, [0x8000]; add ebx, eax; ret
        m.load(0xa000, &[0xa1, 0x00, 0x80, 0x00, 0x00, 0x01, 0xc3, 0xc3]);
    };
    let (m, s) = same_both_ways(
        32,
        |a| {
            let mut top = a.create_label();
            a.xor(ebx, ebx).unwrap();
            a.mov(ecx, 2).unwrap();
            a.mov(edx, 0xa000).unwrap();
            a.set_label(&mut top).unwrap();
            a.call(edx).unwrap();
            a.mov(ax, 0x50).unwrap();
            a.mov(ds, ax).unwrap();
            a.dec(ecx).unwrap();
            a.jnz(top).unwrap();
        },
        &setup,
        0x10000,
    );
    assert_eq!(s.reg(Reg::Rbx), 101);
    assert!(m.cpu.jit_stats().unwrap().compiled > 0);
}

#[test]
fn jit_smc_in_a_loop_that_keeps_registers() {
    // One block that loops on itself and rewrites the immediate of its own `add ebx, imm32`
    // each time (as benches/guests/smc.asm does).
    let (_, s) = same_both_ways(
        32,
        |a| {
            let mut top = a.create_label();
            a.mov(ecx, 30).unwrap();
            a.xor(ebx, ebx).unwrap();
            a.set_label(&mut top).unwrap(); // CODE + 7
            a.mov(dword_ptr(CODE + 15), ecx).unwrap(); // 6 bytes; the imm32 below at CODE + 15
            a.add(ebx, 0x1000_0000).unwrap(); // 81 c3 imm32 at CODE + 13
            a.dec(ecx).unwrap();
            a.jnz(top).unwrap();
        },
        &none,
        0x10000,
    );
    assert_eq!(s.reg(Reg::Rbx), (1..=30).sum::<u64>());
}
