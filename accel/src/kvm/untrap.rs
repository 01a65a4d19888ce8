//! Undoing KVM's single-step trap flag in what a stepped instruction stored.
//!
//! KVM single-steps (KVM_GUESTDBG_SINGLESTEP) by setting RFLAGS.TF in the guest on VT-x and
//! AMD-V alike; it only hides TF from KVM_GET_REGS. An instruction the processor runs with that
//! TF stores it wherever it stores the flags: PUSHF/PUSHFD/PUSHFQ, the frame of an interrupt or
//! exception delivered during the step (INT n, INT3, INTO, a fault), and SYSCALL's R11. KVM has
//! no way around it (KVM_GUESTDBG_BLOCKIRQ only keeps interrupts out of a step; VT-x's
//! monitor trap flag is KVM's own and AMD-V has none), and debuggers that step with TF do what
//! this module does: after the step, clear TF in the flags image the instruction stored, when
//! the guest's own TF was clear.
//!
//! Reading a cleaned image back (POPF, IRET, SYSRET) then clears the guest's TF, and with it
//! KVM's: the vCPU re-arms single-step before every step (see `KvmVcpu::begin_step`).
//!
//! An event's delivery clears TF too, so a step that delivers one would run the whole handler
//! (up to its IRET and one more instruction) before the trap: [`event_handlers`] names the
//! handlers the instruction may enter (its INT n vector, the faults it can raise, SYSCALL's
//! entry point), and the vCPU plants a HLT on each for the step (`KvmVcpu::plant_traps`), so
//! that it ends at the handler's first instruction as it does on the software CPU.

use iced_x86::{Instruction, Mnemonic};

use crate::memory::GuestMemory;
use crate::state::{CpuState, Reg, rflags};

/// What a step started from: the state (general, segment and control registers) and the
/// instruction at RIP.
#[derive(Clone, Debug)]
pub(super) struct StepStart {
    pub state: CpuState,
    pub insn: Instruction,
}

/// What [`untrap`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Untrapped {
    /// Linear addresses of the flags images in memory whose TF was cleared (the byte holding
    /// bit 8).
    pub stored: Vec<u64>,
    /// R11 (SYSCALL's copy of RFLAGS) had TF cleared in the state: write the registers back.
    pub r11: bool,
}

/// The linear address of `SS:RSP` in `s`, with the stack's address size.
fn stack_top(s: &CpuState) -> u64 {
    if s.long_mode_active() && s.cs.l {
        s.gpr[Reg::Rsp as usize]
    } else if s.ss.db {
        s.ss.base
            .wrapping_add(s.gpr[Reg::Rsp as usize] & 0xffff_ffff)
            & 0xffff_ffff
    } else {
        s.ss.base.wrapping_add(s.gpr[Reg::Rsp as usize] & 0xffff) & 0xffff_ffff
    }
}

fn mask(width: u64) -> u64 {
    if width == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * width)) - 1
    }
}

/// Reads `width` bytes at `linear` under `s`'s paging.
fn read(s: &CpuState, mem: &GuestMemory, linear: u64, width: u64) -> Option<u64> {
    let mut buf = [0u8; 8];
    let w = width as usize;
    (crate::walk::read_virt(s, mem, linear, &mut buf[..w]) == w).then(|| u64::from_le_bytes(buf))
}

/// Whether `image` (`width` bytes) is the flags of `before` with KVM's TF added: the same bits
/// but TF (set) and RF (which a fault's frame may carry).
fn leaked(image: u64, before: u64, width: u64) -> bool {
    let m = mask(width) & !(rflags::RF | rflags::TF);
    image & rflags::TF != 0 && image & m == before & m
}

/// Clears TF in the flags image at `linear` (bit 0 of its second byte).
fn clear_tf(s: &CpuState, mem: &GuestMemory, linear: u64) -> bool {
    let at = linear.wrapping_add(1);
    let mut b = [0u8];
    if crate::walk::read_virt(s, mem, at, &mut b) != 1 {
        return false;
    }
    b[0] &= !1;
    crate::walk::write_virt(s, mem, at, &b) == 1
}

/// After a single step from `start` that ended in `after`, with the guest's own TF clear:
/// clears KVM's TF in the flags image the step stored (on the stack at `after`'s SS:RSP, by a
/// PUSHF or an event's frame) and in SYSCALL's R11 (in `after`).
pub(super) fn untrap(start: &StepStart, after: &mut CpuState, mem: &GuestMemory) -> Untrapped {
    let mut done = Untrapped::default();
    let before = &start.state;
    let insn = &start.insn;
    let next = before.rip.wrapping_add(insn.len() as u64);
    let top = stack_top(after);
    let flags = before.rflags & !rflags::TF;
    let completed = after.cs.selector == before.cs.selector && after.rip == next;

    // PUSHF, PUSHFD, PUSHFQ that completed: the image is at the new top of stack.
    if completed
        && matches!(
            insn.mnemonic(),
            Mnemonic::Pushf | Mnemonic::Pushfd | Mnemonic::Pushfq
        )
    {
        let width = match insn.mnemonic() {
            Mnemonic::Pushf => 2,
            Mnemonic::Pushfd => 4,
            _ => 8,
        };
        if read(after, mem, top, width).is_some_and(|v| leaked(v, flags, width))
            && clear_tf(after, mem, top)
        {
            done.stored.push(top.wrapping_add(1));
        }
        return done;
    }

    // SYSCALL that entered the kernel: R11 holds RFLAGS as it was, TF included.
    if insn.mnemonic() == Mnemonic::Syscall && !completed {
        let r11 = after.gpr[Reg::R11 as usize];
        if leaked(r11, flags, 8) {
            after.gpr[Reg::R11 as usize] = r11 & !rflags::TF;
            done.r11 = true;
        }
        return done;
    }

    // An event delivered during the step (INT n, INT3, INTO, or an exception the instruction
    // raised): its frame is at the new top of stack, IP, CS, FLAGS (then SP, SS), after an
    // error code for some exceptions, in 2-, 4- or 8-byte slots by the gate's size and mode.
    // It saved this instruction's CS and either its IP (a fault) or the next one's (a trap or
    // a software interrupt).
    if completed {
        return done;
    }
    let widths: &[u64] = if after.long_mode_active() {
        &[8]
    } else if after.cr0 & crate::state::bits::CR0_PE == 0 {
        &[2]
    } else {
        &[4, 2]
    };
    for &w in widths {
        for err in [0, w] {
            let at = top.wrapping_add(err);
            let (Some(ip), Some(cs), Some(image)) = (
                read(after, mem, at, w),
                read(after, mem, at.wrapping_add(w), w),
                read(after, mem, at.wrapping_add(2 * w), w),
            ) else {
                continue;
            };
            let m = mask(w);
            let ip_matches = ip == before.rip & m || ip == next & m;
            if ip_matches
                && cs & 0xffff == u64::from(before.cs.selector)
                && leaked(image, flags, w)
                && clear_tf(after, mem, at.wrapping_add(2 * w))
            {
                done.stored.push(at.wrapping_add(2 * w + 1));
                return done;
            }
        }
    }
    done
}

/// The linear address of the handler of `vector` through `s`'s IVT or IDT, or `None` where there
/// is none to break on (outside the table, a task gate, unreadable memory).
fn handler(s: &CpuState, mem: &GuestMemory, vector: u8) -> Option<u64> {
    let v = u64::from(vector);
    let limit = u64::from(s.idt.limit);
    if s.cr0 & crate::state::bits::CR0_PE == 0 {
        if 4 * v + 3 > limit {
            return None;
        }
        let entry = read(s, mem, s.idt.base.wrapping_add(4 * v), 4)?;
        return Some(((entry >> 16) << 4).wrapping_add(entry & 0xffff) & 0xf_ffff);
    }
    if s.long_mode_active() {
        if 16 * v + 15 > limit {
            return None;
        }
        let lo = read(s, mem, s.idt.base.wrapping_add(16 * v), 8)?;
        let hi = read(s, mem, s.idt.base.wrapping_add(16 * v + 8), 4)?;
        if (lo >> 40) & 0x80 == 0 {
            return None;
        }
        return Some((lo & 0xffff) | ((lo >> 32) & 0xffff_0000) | (hi << 32));
    }
    if 8 * v + 7 > limit {
        return None;
    }
    let gate = read(s, mem, s.idt.base.wrapping_add(8 * v), 8)?;
    let typ = (gate >> 40) & 0xf;
    if (gate >> 40) & 0x80 == 0 || typ == 5 {
        return None;
    }
    let offset = if typ & 8 != 0 {
        (gate & 0xffff) | ((gate >> 32) & 0xffff_0000)
    } else {
        gate & 0xffff
    };
    let selector = (gate >> 16) & 0xffff;
    let table = if selector & 4 != 0 {
        s.ldt.base
    } else {
        s.gdt.base
    };
    let desc = read(s, mem, table.wrapping_add(selector & !7), 8)?;
    let base = ((desc >> 16) & 0xff_ffff) | ((desc >> 32) & 0xff00_0000);
    Some(base.wrapping_add(offset) & 0xffff_ffff)
}

/// The vectors an instruction may deliver during its step, most likely first.
fn vectors(s: &CpuState, insn: &Instruction) -> Vec<u8> {
    use iced_x86::OpKind;
    let mut v = Vec::new();
    match insn.mnemonic() {
        Mnemonic::Int => v.push(insn.immediate8()),
        Mnemonic::Int3 => v.push(3),
        Mnemonic::Into => v.push(4),
        Mnemonic::Int1 => v.push(1),
        Mnemonic::Div | Mnemonic::Idiv | Mnemonic::Aam => v.push(0),
        Mnemonic::Bound => v.push(5),
        Mnemonic::Ud0 | Mnemonic::Ud1 | Mnemonic::Ud2 | Mnemonic::INVALID => v.push(6),
        _ => {}
    }
    let memory = (0..insn.op_count()).any(|i| insn.op_kind(i) == OpKind::Memory)
        || insn.is_stack_instruction()
        || insn.is_string_instruction();
    if s.cr0 & crate::state::bits::CR0_PE == 0 {
        // Real mode: #GP and #SS for an access past a segment's limit, #UD.
        v.extend([13, 12, 6]);
    } else {
        if memory && s.cr0 & crate::state::bits::CR0_PG != 0 {
            v.push(14);
        }
        v.extend([13, 6, 12, 11, 10, 8]);
    }
    let mut seen = [false; 256];
    v.retain(|&x| !std::mem::replace(&mut seen[usize::from(x)], true));
    v
}

/// Whether `insn` at `s` reads or writes memory within 16 bytes of `linear` (where a trap
/// byte would then change what it sees), or is itself there.
pub(super) fn touches(s: &CpuState, insn: &Instruction, linear: u64) -> bool {
    use iced_x86::{OpKind, Register};
    let near = |a: u64| a.wrapping_sub(linear).wrapping_add(16) < 32;
    let here = s.linear_rip();
    if linear.wrapping_sub(here) < insn.len() as u64 {
        return true;
    }
    let value = |r: Register, _: usize, _: usize| -> Option<u64> {
        Some(match r {
            Register::ES => s.es.base,
            Register::CS => s.cs.base,
            Register::SS => s.ss.base,
            Register::DS => s.ds.base,
            Register::FS => s.fs.base,
            Register::GS => s.gs.base,
            Register::RIP => s.rip,
            Register::EIP => s.rip & 0xffff_ffff,
            _ if r.is_gpr64() => s.gpr[r.number()],
            _ if r.is_gpr32() => s.gpr[r.number()] & 0xffff_ffff,
            _ if r.is_gpr16() => s.gpr[r.number()] & 0xffff,
            _ => return None,
        })
    };
    for i in 0..insn.op_count() {
        if insn.op_kind(i) == OpKind::Memory {
            match insn.virtual_address(i, 0, value) {
                Some(a) if !near(a) => {}
                _ => return true,
            }
        }
    }
    // The stack: a push, pop, call or return near the handler.
    insn.is_stack_instruction() && near(stack_top(s))
}

/// Where the step from `s` (at the instruction `insn`) may enter a handler with TF cleared: the
/// handlers of the vectors it may deliver, SYSCALL's entry point (`lstar`, `cstar`), at most
/// `max` distinct addresses, none of them this instruction's own.
pub(super) fn event_handlers(
    s: &CpuState,
    insn: &Instruction,
    mem: &GuestMemory,
    (lstar, cstar): (u64, u64),
    max: usize,
) -> Vec<u64> {
    let here = s.linear_rip();
    let mut out: Vec<u64> = Vec::new();
    let mut add = |a: u64| {
        if a != here && !out.contains(&a) && out.len() < max {
            out.push(a);
        }
    };
    if insn.mnemonic() == Mnemonic::Syscall {
        add(if s.cs.l { lstar } else { cstar });
    }
    for v in vectors(s, insn) {
        if let Some(a) = handler(s, mem, v) {
            add(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::RegionKind;
    use crate::state::bits;
    use iced_x86::{Decoder, DecoderOptions};

    fn memory() -> GuestMemory {
        let mut m = GuestMemory::new();
        m.add(0, 1 << 20, RegionKind::Ram).unwrap();
        m
    }

    fn start(state: &CpuState, bytes: &[u8]) -> StepStart {
        let insn =
            Decoder::with_ip(state.code_bitness(), bytes, state.rip, DecoderOptions::NONE).decode();
        StepStart {
            state: state.clone(),
            insn,
        }
    }

    fn long64() -> CpuState {
        let mut s = CpuState::boot_sector();
        s.cr0 |= bits::CR0_PE;
        s.efer |= bits::EFER_LMA | bits::EFER_LME;
        s.cs.l = true;
        s.cs.selector = 0x08;
        s.cs.base = 0;
        s.ss.base = 0;
        s.rip = 0x1000;
        s.gpr[Reg::Rsp as usize] = 0x8000;
        s.rflags = 0x246;
        s
    }

    #[test]
    fn a_real_mode_pushf_stores_flags_without_kvm_tf() {
        let m = memory();
        let mut before = CpuState::boot_sector();
        before.gpr[Reg::Rsp as usize] = 0x7c00;
        let sp = 0x7c00;
        let st = start(&before, &[0x9c]);
        let mut after = before.clone();
        after.rip += 1;
        after.gpr[Reg::Rsp as usize] = sp - 2;
        let lin = stack_top(&after);
        m.write_le(lin, 2, (before.rflags | rflags::TF) & 0xffff)
            .unwrap();
        let done = untrap(&st, &mut after, &m);
        assert_eq!(done.stored, vec![lin + 1]);
        assert_eq!(m.read_le(lin, 2).unwrap(), before.rflags & 0xffff);
    }

    #[test]
    fn a_pushf_the_guest_made_without_tf_is_left_alone() {
        let m = memory();
        let before = long64();
        let st = start(&before, &[0x9c]);
        let mut after = before.clone();
        after.rip += 1;
        after.gpr[Reg::Rsp as usize] -= 8;
        // The image KVM's emulator stores (kvm_pvm): TF already clear.
        m.write_le(0x7ff8, 8, 0x246).unwrap();
        assert_eq!(untrap(&st, &mut after, &m), Untrapped::default());
        assert_eq!(m.read_le(0x7ff8, 8).unwrap(), 0x246);
    }

    #[test]
    fn an_exception_frame_with_an_error_code_loses_kvm_tf() {
        let m = memory();
        let before = long64();
        // mov rax, [rbx]: a #PF (error code) delivered during the step.
        let st = start(&before, &[0x48, 0x8b, 0x03]);
        let mut after = before.clone();
        after.rip = 0x2000;
        after.gpr[Reg::Rsp as usize] = 0x7fd0;
        // error code, RIP, CS, RFLAGS (RF set: a fault), RSP, SS.
        let frame = [
            2,
            0x1000,
            0x08,
            0x246 | rflags::TF | rflags::RF,
            0x8000,
            0x10,
        ];
        for (i, v) in frame.iter().enumerate() {
            m.write_le(0x7fd0 + 8 * i as u64, 8, *v).unwrap();
        }
        let done = untrap(&st, &mut after, &m);
        assert_eq!(done.stored, vec![0x7fd0 + 24 + 1]);
        assert_eq!(m.read_le(0x7fd0 + 24, 8).unwrap(), 0x246 | rflags::RF);
    }

    #[test]
    fn a_protected_mode_int_frame_saves_the_next_eip_without_kvm_tf() {
        let m = memory();
        let mut before = CpuState::boot_sector();
        before.cr0 |= bits::CR0_PE;
        before.cs.db = true;
        before.ss.db = true;
        before.cs.selector = 0x08;
        before.cs.base = 0;
        before.ss.base = 0;
        before.rip = 0x7c40;
        before.gpr[Reg::Rsp as usize] = 0x9000;
        before.rflags = 0x202;
        // int 0x30
        let st = start(&before, &[0xcd, 0x30]);
        let mut after = before.clone();
        after.rip = 0x7e00;
        after.gpr[Reg::Rsp as usize] = 0x9000 - 12;
        m.write_le(0x9000 - 12, 4, 0x7c42).unwrap();
        m.write_le(0x9000 - 8, 4, 0x08).unwrap();
        m.write_le(0x9000 - 4, 4, 0x302).unwrap();
        let done = untrap(&st, &mut after, &m);
        assert_eq!(done.stored, vec![0x9000 - 4 + 1]);
        assert_eq!(m.read_le(0x9000 - 4, 4).unwrap(), 0x202);
    }

    #[test]
    fn a_jump_that_lands_next_to_a_flags_like_word_is_not_a_frame() {
        let m = memory();
        let before = long64();
        // jmp rax: no frame, whatever the stack holds.
        let st = start(&before, &[0xff, 0xe0]);
        let mut after = before.clone();
        after.rip = 0x3000;
        m.write_le(0x8000, 8, 0x1000).unwrap();
        m.write_le(0x8008, 8, 0x10).unwrap();
        m.write_le(0x8010, 8, 0x346).unwrap();
        assert_eq!(untrap(&st, &mut after, &m), Untrapped::default());
        assert_eq!(m.read_le(0x8010, 8).unwrap(), 0x346);
    }

    #[test]
    fn an_int_in_real_mode_breaks_on_its_ivt_handler_first() {
        let m = memory();
        let mut s = CpuState::boot_sector();
        s.idt.limit = 0x3ff;
        // IVT 0x21 -> 1234:0010, #GP (13) -> 0000:9000.
        m.write_le(4 * 0x21, 4, 0x1234_0010).unwrap();
        m.write_le(4 * 13, 4, 0x0000_9000).unwrap();
        let st = start(&s, &[0xcd, 0x21]);
        let h = event_handlers(&s, &st.insn, &m, (0, 0), 4);
        assert_eq!(h[0], 0x12350);
        assert!(h.contains(&0x9000));
        assert!(h.len() <= 4);
    }

    #[test]
    fn a_long_mode_fault_breaks_on_the_idt_handlers_of_pf_and_gp() {
        let m = memory();
        let mut s = long64();
        s.cr0 |= bits::CR0_PG;
        s.cr4 |= bits::CR4_PAE;
        s.cr3 = 0x10000;
        // Identity-map the first 2 MiB with one large page.
        m.write_le(0x10000, 8, 0x11000 | 3).unwrap();
        m.write_le(0x11000, 8, 0x12000 | 3).unwrap();
        m.write_le(0x12000, 8, 0x83).unwrap();
        s.idt.base = 0x4000;
        s.idt.limit = 0xfff;
        let gate = |off: u64| (off & 0xffff) | (0x08 << 16) | (0x8e << 40) | ((off >> 16) << 48);
        m.write_le(0x4000 + 16 * 14, 8, gate(0x5140)).unwrap();
        m.write_le(0x4000 + 16 * 13, 8, gate(0x5130)).unwrap();
        let st = start(&s, &[0x48, 0x8b, 0x03]);
        let h = event_handlers(&s, &st.insn, &m, (0, 0), 4);
        assert_eq!(&h[..2], &[0x5140, 0x5130]);
        // SYSCALL: its entry point first.
        let st = start(&s, &[0x0f, 0x05]);
        let h = event_handlers(&s, &st.insn, &m, (0xffff_8000_0000_1000, 0), 4);
        assert_eq!(h[0], 0xffff_8000_0000_1000);
    }

    #[test]
    fn a_protected_mode_gate_adds_its_code_segments_base() {
        let m = memory();
        let mut s = CpuState::boot_sector();
        s.cr0 |= bits::CR0_PE;
        s.cs.db = true;
        s.rip = 0x100;
        s.gdt.base = 0x6000;
        s.gdt.limit = 0x17;
        s.idt.base = 0x7000;
        s.idt.limit = 0x7ff;
        // GDT 0x10: code, base 0x20000.
        m.write_le(0x6010, 8, 0x00CF_9A02_0000_FFFF).unwrap();
        // IDT 0x30: 386 interrupt gate to 0x10:0x0000_0400.
        m.write_le(0x7000 + 8 * 0x30, 8, 0x0000_8E00_0010_0400)
            .unwrap();
        let st = start(&s, &[0xcd, 0x30]);
        let h = event_handlers(&s, &st.insn, &m, (0, 0), 4);
        assert_eq!(h, vec![0x20400]);
    }

    #[test]
    fn a_trap_is_not_planted_where_the_instruction_reads_or_sits() {
        let mut s = long64();
        s.gpr[Reg::Rbx as usize] = 0x5000;
        // mov rax, [rbx]
        let st = start(&s, &[0x48, 0x8b, 0x03]);
        assert!(touches(&s, &st.insn, 0x5004));
        assert!(!touches(&s, &st.insn, 0x6000));
        assert!(touches(&s, &st.insn, 0x1001), "inside the instruction");
    }

    #[test]
    fn syscall_r11_loses_kvm_tf() {
        let m = memory();
        let before = long64();
        let st = start(&before, &[0x0f, 0x05]);
        let mut after = before.clone();
        after.rip = 0xffff_8000_0000_0000;
        after.cs.selector = 0x10;
        after.gpr[Reg::R11 as usize] = 0x246 | rflags::TF;
        after.gpr[Reg::Rcx as usize] = 0x1002;
        let done = untrap(&st, &mut after, &m);
        assert!(done.r11);
        assert_eq!(after.gpr[Reg::R11 as usize], 0x246);
    }
}
