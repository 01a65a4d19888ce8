//! 64-bit long mode: RIP-relative addressing, 64-bit stack, MSRs, SWAPGS, SYSCALL/SYSRET,
//! IRETQ, #PF through the IDT with error code, CR2 and IST.

use iced_x86::code_asm::*;

use super::alu::run64;
use super::*;
use crate::state::Reg;

#[test]
fn rip_relative_and_64_bit_stack() {
    let (_, s) = run64(|a| {
        let mut data = a.create_label();
        let mut over = a.create_label();
        a.mov(rax, qword_ptr(data)).unwrap();
        a.push(rax).unwrap();
        a.pop(rbx).unwrap();
        a.mov(r9, 0x1_0000_0000u64).unwrap();
        a.add(r9, rbx).unwrap();
        a.jmp(over).unwrap();
        a.set_label(&mut data).unwrap();
        a.dq(&[0x1122_3344_5566_7788]).unwrap();
        a.set_label(&mut over).unwrap();
        a.mov(r10d, -1i32).unwrap(); // zero-extends
        a.mov(r11, -1i64).unwrap();
        a.mov(r11w, 0).unwrap(); // merges
    });
    assert_eq!(s.reg(Reg::Rbx), 0x1122_3344_5566_7788);
    assert_eq!(s.reg(Reg::R9), 0x1122_3345_5566_7788);
    assert_eq!(s.reg(Reg::R10), 0xffff_ffff);
    assert_eq!(s.reg(Reg::R11), 0xffff_ffff_ffff_0000);
    assert_eq!(s.reg(Reg::Rsp), 0x70000);
}

#[test]
fn msrs_swapgs_and_rdtsc() {
    let (_, s) = run64(|a| {
        a.mov(ecx, 0xc000_0101u32 as i32).unwrap(); // GS_BASE
        a.mov(eax, 0x1000).unwrap();
        a.xor(edx, edx).unwrap();
        a.wrmsr().unwrap();
        a.mov(ecx, 0xc000_0102u32 as i32).unwrap(); // KERNEL_GS_BASE
        a.mov(eax, 0x2000).unwrap();
        a.wrmsr().unwrap();
        a.swapgs().unwrap();
        a.mov(ecx, 0xc000_0080u32 as i32).unwrap();
        a.rdmsr().unwrap();
        a.mov(ebx, eax).unwrap();
        a.rdtsc().unwrap();
    });
    assert_eq!(s.gs.base, 0x2000);
    assert_eq!(s.kernel_gs_base, 0x1000);
    assert_eq!(s.reg(Reg::Rbx), 0x500);
}

#[test]
fn cpuid_reports_host_vendor_and_long_mode() {
    let (_, s) = run64(|a| {
        a.xor(eax, eax).unwrap();
        a.cpuid().unwrap();
        a.mov(r8d, ebx).unwrap();
        a.mov(eax, 0x8000_0001u32 as i32).unwrap();
        a.cpuid().unwrap();
    });
    let host = std::arch::x86_64::__cpuid(0);
    assert_eq!(s.reg(Reg::R8), u64::from(host.ebx));
    assert_ne!(s.reg(Reg::Rdx) & (1 << 29), 0);
    assert_ne!(s.reg(Reg::Rdx) & (1 << 20), 0);
}

/// `--cpu`: the vCPU reads the model's table (vendor, brand, features), not the host's.
#[test]
fn cpuid_follows_the_cpu_model() {
    let mut m = Machine::with_cpu(&"Skylake-Client,-popcnt,+hypervisor".parse().unwrap());
    let s = long_state(&m);
    m.load(
        CODE,
        &asm(64, CODE, |a| {
            a.xor(eax, eax).unwrap();
            a.cpuid().unwrap();
            a.mov(r8d, ebx).unwrap();
            a.mov(eax, 1).unwrap();
            a.cpuid().unwrap();
            a.mov(r9d, eax).unwrap();
            a.mov(r10d, ecx).unwrap();
            a.mov(eax, 4).unwrap();
            a.mov(ecx, 1).unwrap();
            a.cpuid().unwrap();
            a.mov(r11d, eax).unwrap();
            a.hlt().unwrap();
        }),
    );
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(st.reg(Reg::R8), u64::from(u32::from_le_bytes(*b"Genu")));
    assert_eq!(st.reg(Reg::R9), 0x506e3, "family 6 model 94 stepping 3");
    let features = st.reg(Reg::R10);
    assert_eq!(features & 1 << 23, 0, "-popcnt");
    assert_ne!(features & 1 << 31, 0, "+hypervisor");
    assert_ne!(features & 1 << 13, 0, "cx16 from the model");
    assert_eq!(
        st.reg(Reg::R11) & 0x1f,
        2,
        "leaf 4 sub-leaf 1: the instruction cache"
    );
}

#[test]
fn page_fault_error_code_cr2_and_ist() {
    let mut m = Machine::new();
    let s = long_state(&m);
    // Map 0x400000 (PD entry 2) not present.
    m.mem.write_le(PML4 + 0x2000 + 16, 8, 0).unwrap();
    // TSS IST1 = 0x68000.
    m.mem.write_le(TSS + 0x24, 8, 0x68000).unwrap();
    gate64(&m, 14, 0x9000, 1);
    m.load(0x9000, &[0x5b, 0xf4]); // pop rbx; hlt
    let code = asm(64, CODE, |a| {
        a.mov(rax, 0x400010u64).unwrap();
        a.mov(dword_ptr(rax), 1).unwrap();
    });
    m.load(CODE, &code);
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(st.cr2, 0x400010);
    assert_eq!(st.reg(Reg::Rbx), 0x2); // not present, write, supervisor
    assert_eq!(st.reg(Reg::Rsp), 0x68000 - 40);
    assert_eq!(m.rd(0x68000 - 40, 8), CODE + 10); // RIP of the faulting mov
}

#[test]
fn user_access_to_supervisor_page_and_nx() {
    let mut m = Machine::new();
    let mut s = long_state(&m);
    // PD entry 1 (0x200000): supervisor only.
    m.mem
        .write_le(PML4 + 0x2000 + 8, 8, (1 << 21) | 0x83)
        .unwrap();
    m.mem.write_le(TSS + 4, 8, 0x60000).unwrap();
    gate64(&m, 14, 0x9000, 0);
    m.load(0x9000, &[0x5b, 0xf4]);
    let code = asm(64, CODE, |a| {
        a.mov(rax, 0x200000u64).unwrap();
        a.mov(rcx, qword_ptr(rax)).unwrap();
    });
    m.load(CODE, &code);
    s.cs = seg_from(CS64_USER, desc(0, 0xfffff, 0xfb, 0xa));
    let dseg = seg_from(DS32_USER, desc(0, 0xfffff, 0xf3, 0xc));
    s.ss = dseg;
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(st.reg(Reg::Rbx), 0x5); // present, read, user
    assert_eq!(st.cs.selector, CS64);
    assert_eq!(st.reg(Reg::Rsp), 0x60000 - 40);

    // NX: execute from a no-execute page.
    let mut m = Machine::new();
    let mut s = long_state(&m);
    s.efer |= crate::state::bits::EFER_NXE;
    m.mem
        .write_le(PML4 + 0x2000 + 8, 8, (1 << 21) | 0x87 | 1 << 63)
        .unwrap();
    gate64(&m, 14, 0x9000, 0);
    m.load(0x9000, &[0x5b, 0xf4]);
    m.load(0x200000, &[0x90]);
    m.load(
        CODE,
        &asm(64, CODE, |a| {
            a.mov(rax, 0x200000u64).unwrap();
            a.jmp(rax).unwrap();
        }),
    );
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(st.reg(Reg::Rbx), 0x11); // present, fetch
    assert_eq!(st.cr2, 0x200000);
}

#[test]
fn syscall_sysret_round_trip() {
    let mut m = Machine::new();
    let s = long_state(&m);
    // STAR: kernel CS = 0x18 (SS 0x20 unused here), user base 0x38 -> CS 0x48|3, SS 0x40|3.
    let code = asm(64, CODE, |a| {
        let mut user = a.create_label();
        let mut kernel = a.create_label();
        a.mov(ecx, 0xc000_0081u32 as i32).unwrap();
        a.xor(eax, eax).unwrap();
        a.mov(edx, 0x0038_0018).unwrap();
        a.wrmsr().unwrap();
        a.mov(ecx, 0xc000_0082u32 as i32).unwrap();
        a.lea(rax, qword_ptr(kernel)).unwrap();
        a.xor(edx, edx).unwrap();
        a.wrmsr().unwrap();
        a.mov(ecx, 0xc000_0080u32 as i32).unwrap();
        a.rdmsr().unwrap();
        a.or(eax, 1).unwrap();
        a.wrmsr().unwrap();
        a.lea(rcx, qword_ptr(user)).unwrap();
        a.mov(r11d, 0x202).unwrap();
        a.sysretq().unwrap();
        a.set_label(&mut user).unwrap();
        a.mov(r12, 0x77u64).unwrap();
        a.syscall().unwrap();
        a.set_label(&mut kernel).unwrap();
        a.hlt().unwrap();
    });
    m.load(CODE, &code);
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(st.reg(Reg::R12), 0x77);
    assert_eq!(st.cs.selector, 0x18);
    assert_eq!(st.reg(Reg::R11) & 0x200, 0x200);
}

#[test]
fn iretq_returns_from_handler() {
    let mut m = Machine::new();
    let s = long_state(&m);
    gate64(&m, 0x40, 0x9000, 0);
    m.load(0x9000, &[0x48, 0xff, 0xc3, 0x48, 0xcf]); // inc rbx; iretq
    m.load(CODE, &[0xcd, 0x40, 0xcd, 0x40, 0xf4]); // int 0x40; int 0x40; hlt
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(st.reg(Reg::Rbx), 2);
    assert_eq!(st.reg(Reg::Rsp), 0x70000);
    assert_eq!(st.rip, CODE + 5);
}

#[test]
fn instruction_crossing_into_a_missing_page_faults_on_that_page() {
    let mut m = Machine::new();
    let s = long_state(&m);
    gate64(&m, 14, 0x9000, 0);
    m.load(0x9000, &[0x5b, 0xf4]); // pop rbx; hlt
    // mov eax, 0x11223344 split across 0x3fffff / 0x400000.
    m.load(0x3ffffd, &[0x90, 0x90, 0xb8, 0x44, 0x33, 0x22, 0x11, 0xf4]);
    let mut st = s.clone();
    st.rip = 0x3ffffd;
    m.set(&st);
    let r = m.run_to_halt();
    assert_eq!(r.reg(Reg::Rax), 0x1122_3344);
    assert_eq!(r.rip, 0x400005);

    // Now with the second page unmapped.
    m.mem.write_le(PML4 + 0x2000 + 16, 8, 0).unwrap();
    m.set(&st);
    let r = m.run_to_halt();
    assert_eq!(r.cr2, 0x400000);
    assert_eq!(r.reg(Reg::Rbx), 0);
    assert_eq!(m.rd(r.reg(Reg::Rsp), 8), 0x3fffff); // RIP of the split mov
}

/// A block whose last instruction spills into the next page is cached (listed under both pages)
/// instead of translated on every run: a 1000-iteration loop around one translates a handful of
/// blocks; and a write to the spilled bytes on the second page is seen on the next iteration.
#[test]
fn page_crossing_blocks_are_cached_and_invalidated_through_both_pages() {
    // 40ff5: mov ecx, N
    // 40ffa: loop: add esi, edx        (01 d6)
    // 10ffc: nop                       (90)
    // 40ffd: mov edx, 0x00030201       (ba 01 02 | 03 00: crosses into page 0x41000)
    // 41002: inc byte [0x41000]        when `smc`, else four NOPs + nop padding
    // 4100a: dec ecx ; jnz loop ; hlt
    for smc in [false, true] {
        let mut m = Machine::new();
        let mut s = super::long_state(&m);
        let n: u32 = if smc { 3 } else { 1000 };
        let mut code = vec![0xb9];
        code.extend_from_slice(&n.to_le_bytes());
        code.extend_from_slice(&[0x01, 0xd6, 0x90, 0xba, 0x01, 0x02, 0x03, 0x00]);
        if smc {
            // inc byte [0x41000] (fe 04 25 00 10 01 00): 7 bytes, then a NOP.
            code.extend_from_slice(&[0xfe, 0x04, 0x25, 0x00, 0x10, 0x04, 0x00, 0x90]);
        } else {
            code.extend_from_slice(&[0x90; 8]);
        }
        // dec ecx (ff c9) ; jnz loop (75 rel8) ; hlt
        let jnz_end = 0x40ff5 + code.len() as u64 + 4;
        let rel = (0x40ffa_i64 - jnz_end as i64) as i8 as u8;
        code.extend_from_slice(&[0xff, 0xc9, 0x75, rel, 0xf4]);
        m.load(0x40ff5, &code);
        s.rip = 0x40ff5;
        s.gpr[6] = 0;
        s.gpr[2] = 0;
        m.set(&s);
        let st = m.run_to_halt();
        let translated = m.cpu.counters().extra["blocks translated"];
        if smc {
            // EDX: 0x030201, 0x040201, 0x050201 in the three iterations; ESI sums all but the
            // last.
            assert_eq!(st.reg(Reg::Rdx), 0x05_0201);
            assert_eq!(st.reg(Reg::Rsi), 0x03_0201 + 0x04_0201);
        } else {
            assert_eq!(st.reg(Reg::Rsi), 999 * 0x03_0201);
            assert!(translated < 10, "{translated} blocks translated");
        }
    }
}

/// A cached page-crossing block is used only while its second page maps where it did: after
/// the guest remaps that page (PTE write and INVLPG) the same linear code yields the new bytes.
#[test]
fn page_crossing_block_follows_a_remapped_second_page() {
    let mut m = Machine::new();
    let mut s = super::long_state(&m);
    // 4 KiB page table for the first 2 MiB (identity), instead of the 2 MiB page.
    let pt = 0x60000u64;
    for i in 0..512u64 {
        m.mem.write_le(pt + 8 * i, 8, (i << 12) | 3).unwrap();
    }
    m.mem.write_le(PML4 + 0x2000, 8, pt | 3).unwrap();
    // 40ff5: mov ecx, 2               (skipped: the run starts at the loop with ECX = 2)
    // 40ffa: add esi, edx ; nop
    // 40ffd: mov edx, 0x00030201      (bytes 03 00 on page 0x41000)
    // 41002: dec ecx ; jz done
    //        mov qword [0x60208], 0x51003   (page 0x41000 -> physical 0x51000)
    //        invlpg [0x41000]
    //        jmp 40ffa
    //  done: hlt
    let mut code = vec![
        0xb9, 2, 0, 0, 0, 0x01, 0xd6, 0x90, 0xba, 0x01, 0x02, 0x03, 0x00,
    ];
    code.extend_from_slice(&[0xff, 0xc9, 0x74, 0]); // jz patched below
    let jz_at = code.len() - 1;
    code.extend_from_slice(&[
        0x48, 0xc7, 0x04, 0x25, 0x08, 0x02, 0x06, 0x00, 0x03, 0x10, 0x05, 0x00,
    ]);
    code.extend_from_slice(&[0x0f, 0x01, 0x3c, 0x25, 0x00, 0x10, 0x04, 0x00]);
    let jmp_end = 0x40ff5 + code.len() as u64 + 2;
    code.extend_from_slice(&[0xeb, (0x40ffa_i64 - jmp_end as i64) as i8 as u8]);
    code[jz_at] = (code.len() - (jz_at + 1)) as u8;
    code.push(0xf4);
    m.load(0x40ff5, &code);
    // Physical 0x51000: page 0x41000's bytes, but the immediate's third byte is 7.
    let mut page: Vec<u8> = (0..0x1000).map(|k| m.rd(0x41000 + k, 1) as u8).collect();
    page[0] = 0x07;
    m.load(0x51000, &page);
    // Start at the loop itself (ECX = 2), so that its second pass looks the block up again.
    s.rip = 0x40ffa;
    s.gpr[1] = 2;
    s.gpr[2] = 0;
    s.gpr[6] = 0;
    m.set(&s);
    let st = m.run_to_halt();
    assert_eq!(
        st.reg(Reg::Rsi),
        0x03_0201,
        "first pass through the old page"
    );
    assert_eq!(
        st.reg(Reg::Rdx),
        0x07_0201,
        "second pass through the remapped page"
    );
}

/// A write drops only the blocks whose code it overlaps: a loop that rewrites the immediate of
/// a function on its own page (and calls it) retranslates that function each iteration, not
/// itself, and sees every new immediate.
#[test]
fn a_write_drops_only_the_blocks_it_overlaps() {
    let mut m = Machine::new();
    let mut s = super::long_state(&m);
    let n: u32 = 1000;
    let mut code = vec![0xb9];
    code.extend_from_slice(&n.to_le_bytes()); // 50000: mov ecx, N
    code.extend_from_slice(&[0x31, 0xf6]); // 50005: xor esi, esi
    code.extend_from_slice(&[0x88, 0x0c, 0x25, 0x01, 0x04, 0x05, 0x00]); // 50007: mov [0x50401], cl
    code.extend_from_slice(&[0xe8, 0xed, 0x03, 0x00, 0x00]); // 5000e: call 0x50400
    code.extend_from_slice(&[0x0f, 0xb6, 0xc0, 0x01, 0xc6]); // 50013: movzx eax, al ; add esi, eax
    code.extend_from_slice(&[0xff, 0xc9, 0x75, 0xeb, 0xf4]); // 50018: dec ecx ; jnz 50007 ; hlt
    m.load(0x50000, &code);
    m.load(0x50400, &[0xb0, 0x00, 0xc3]); // mov al, 0 ; ret
    s.rip = 0x50000;
    m.set(&s);
    let st = m.run_to_halt();
    let want: u64 = (1..=u64::from(n)).map(|c| c & 0xff).sum();
    assert_eq!(st.reg(Reg::Rsi), want);
    let translated = m.cpu.counters().extra["blocks translated"];
    // The function each iteration, and the loop's blocks a few times (dropping the whole page
    // retranslated them on every iteration too: over 2000).
    assert!(
        translated < u64::from(n) + 50,
        "{translated} blocks translated"
    );
}
