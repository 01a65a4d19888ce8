//! The software fallback of the KVM backend.
//!
//! Some KVM flavours cannot execute every instruction: kvm_pvm runs kernel, real-mode and 32-bit
//! guest code in KVM's in-kernel instruction emulator, which stops the guest with
//! KVM_EXIT_INTERNAL_ERROR on `int3` delivery, `ud2`, `lock cmpxchg16b` or `xrstor`. QEMU dies
//! there; janus takes the vCPU's whole state, runs that one instruction (or delivers that event)
//! in its own software CPU over the same guest memory, puts the state back and resumes KVM.
//!
//! The software vCPU is created on first use and kept. It runs with single-stepping on and with
//! the machine's interrupt controllers hidden, so it executes exactly the instruction KVM could
//! not (plus the delivery of any exception that instruction raises, or of the event KVM failed
//! to deliver) and nothing else.

use crate::exit::Exit;
use crate::io::IoHandler;
use crate::memory::GuestMemory;
use crate::soft::{SoftAccel, SoftVcpu};
use crate::state::CpuState;
use crate::vcpu::{Vcpu, VcpuError};

/// What one fallback step ended with.
#[derive(Debug)]
pub enum Outcome {
    /// The instruction ran; resume KVM with this state.
    Resumed(CpuState),
    /// The instruction was a HLT; the vCPU is halted in this state.
    Halted(CpuState),
    /// The guest ended (triple fault) or the software CPU could not run it either.
    Exit(Exit),
}

/// The software CPU that stands in for KVM on instructions KVM cannot run.
#[derive(Debug)]
pub struct Fallback {
    memory: GuestMemory,
    index: usize,
    nr_vcpus: usize,
    soft: Option<Box<SoftVcpu>>,
}

/// Hides the machine's interrupt controllers from the fallback CPU: KVM, not the fallback,
/// delivers external interrupts.
struct NoInterrupts<'a>(&'a dyn IoHandler);

impl IoHandler for NoInterrupts<'_> {
    fn pio_read(&self, vcpu: usize, port: u16, data: &mut [u8]) {
        self.0.pio_read(vcpu, port, data);
    }
    fn pio_write(&self, vcpu: usize, port: u16, data: &[u8]) {
        self.0.pio_write(vcpu, port, data);
    }
    fn mmio_read(&self, vcpu: usize, addr: u64, data: &mut [u8]) {
        self.0.mmio_read(vcpu, addr, data);
    }
    fn mmio_write(&self, vcpu: usize, addr: u64, data: &[u8]) {
        self.0.mmio_write(vcpu, addr, data);
    }
}

impl Fallback {
    /// A fallback for vCPU `index` of a machine of `nr_vcpus` over `memory`.
    pub fn new(memory: GuestMemory, index: usize, nr_vcpus: usize) -> Self {
        Fallback {
            memory,
            index,
            nr_vcpus,
            soft: None,
        }
    }

    fn soft(&mut self) -> Result<&mut SoftVcpu, VcpuError> {
        let v = match self.soft.take() {
            Some(v) => v,
            None => {
                let accel = SoftAccel::new(self.memory.clone(), self.nr_vcpus);
                let mut v = accel.new_vcpu(self.index)?;
                v.set_single_step(true)?;
                v.set_strict_isa(true);
                Box::new(v)
            }
        };
        Ok(self.soft.insert(v))
    }

    /// Runs one instruction (or delivers the pending event) from `state` in the software CPU.
    pub fn step(&mut self, state: &CpuState, io: &dyn IoHandler) -> Result<Outcome, VcpuError> {
        let soft = self.soft()?;
        soft.set_state(state)?;
        let exit = soft.run(&NoInterrupts(io))?;
        Ok(match exit {
            Exit::SingleStep | Exit::Stopped => Outcome::Resumed(soft.state()?),
            Exit::Halt => Outcome::Halted(soft.state()?),
            other => Outcome::Exit(other),
        })
    }
}

/// The `--stats` key of one fallback use: the instruction and KVM's reason.
pub fn stats_key(suberror: u32, mnemonic: Option<&str>) -> String {
    let why = match suberror {
        1 => "emulation failure",
        2 => "simultaneous exception",
        3 => "event delivery",
        _ => "internal error",
    };
    format!("kvm fallback: {} ({why})", mnemonic.unwrap_or("?"))
}

/// The lower-case mnemonic of the instruction in `bytes` at `state`'s code size and mode, for
/// reports and statistics (`None`: not a valid instruction there, e.g. VEX in real mode).
pub fn mnemonic(bytes: &[u8], state: &CpuState) -> Option<String> {
    if bytes.is_empty() {
        return None;
    }
    let insn = iced_x86::Decoder::new(state.code_bitness(), bytes, iced_x86::DecoderOptions::NONE)
        .decode();
    if insn.is_invalid() || !state.decodes(&insn) {
        return None;
    }
    Some(format!("{:?}", insn.mnemonic()).to_lowercase())
}

#[cfg(test)]
mod tests {
    //! Fallback steps over recorded states: each state is what KVM_GET_* returned on this host
    //! when KVM stopped with KVM_EXIT_INTERNAL_ERROR at the instruction (64-bit, CPL0, paging
    //! off is not possible in long mode, so the tests build identity page tables).
    use super::*;
    use crate::memory::GuestMemory;
    use crate::state::{Reg, Segment, bits};

    /// No devices, but an external interrupt always waiting (which the fallback must leave to
    /// KVM).
    struct NoIo;
    impl IoHandler for NoIo {
        fn pio_read(&self, v: usize, port: u16, data: &mut [u8]) {
            crate::io::NoDevices.pio_read(v, port, data);
        }
        fn pio_write(&self, _: usize, _: u16, _: &[u8]) {}
        fn mmio_read(&self, v: usize, addr: u64, data: &mut [u8]) {
            crate::io::NoDevices.mmio_read(v, addr, data);
        }
        fn mmio_write(&self, _: usize, _: u64, _: &[u8]) {}
        fn interrupt_pending(&self, _: usize) -> bool {
            true
        }
        fn acknowledge_interrupt(&self, _: usize) -> Option<u8> {
            Some(0x20)
        }
    }

    const CODE: u64 = 0x8000;
    const IDT: u64 = 0x2000;
    const GDT: u64 = 0x1000;
    const PML4: u64 = 0x10000;

    /// 64-bit CPL0 with a 2 MiB identity map and the given code at CODE.
    fn long_mode(code: &[u8]) -> (GuestMemory, CpuState) {
        let mut mem = GuestMemory::new();
        mem.add(0, 4 << 20, crate::memory::RegionKind::Ram).unwrap();
        mem.write(PML4, &((PML4 + 0x1000) | 3).to_le_bytes())
            .unwrap();
        mem.write(PML4 + 0x1000, &((PML4 + 0x2000) | 3).to_le_bytes())
            .unwrap();
        mem.write(PML4 + 0x2000, &(0x83u64).to_le_bytes()).unwrap();
        mem.write(CODE, code).unwrap();
        // GDT: null, unused, 0x10 flat data, 0x18 64-bit code.
        for (i, d) in [0u64, 0, 0x00cf_9300_0000_ffff, 0x00af_9b00_0000_ffff]
            .iter()
            .enumerate()
        {
            mem.write(GDT + i as u64 * 8, &d.to_le_bytes()).unwrap();
        }
        let mut s = CpuState::reset(true);
        s.gdt.base = GDT;
        s.gdt.limit = 0x1f;
        s.cr0 = bits::CR0_PE | bits::CR0_PG | bits::CR0_ET;
        s.cr4 = bits::CR4_PAE;
        s.cr3 = PML4;
        s.efer = bits::EFER_LME | bits::EFER_LMA;
        s.cs = Segment {
            selector: 0x18,
            limit: 0xffff_ffff,
            typ: 0xb,
            s: true,
            present: true,
            l: true,
            g: true,
            ..Default::default()
        };
        let data = Segment {
            selector: 0x10,
            limit: 0xffff_ffff,
            typ: 0x3,
            s: true,
            present: true,
            db: true,
            g: true,
            ..Default::default()
        };
        (s.ds, s.es, s.ss, s.fs, s.gs) = (data, data, data, data, data);
        s.rip = CODE;
        s.set_reg(Reg::Rsp, 0x7000);
        s.idt.base = IDT;
        s.idt.limit = 0x1ff;
        (mem, s)
    }

    /// An interrupt gate for `vector` to `handler`.
    fn gate(mem: &GuestMemory, vector: u64, handler: u64) {
        let mut g = [0u8; 16];
        g[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
        g[2..4].copy_from_slice(&0x18u16.to_le_bytes());
        g[5] = 0x8e;
        g[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
        g[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
        mem.write(IDT + vector * 16, &g).unwrap();
    }

    #[test]
    fn lock_cmpxchg16b_runs_once_and_resumes() {
        // lock cmpxchg16b [0x9000]; nop
        let (mem, mut s) = long_mode(&[0xf0, 0x48, 0x0f, 0xc7, 0x0c, 0x25, 0, 0x90, 0, 0, 0x90]);
        mem.write(0x9000, &[1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0])
            .unwrap();
        s.set_reg(Reg::Rax, 1);
        s.set_reg(Reg::Rdx, 2);
        s.set_reg(Reg::Rbx, 3);
        s.set_reg(Reg::Rcx, 4);
        let mut f = Fallback::new(mem.clone(), 0, 1);
        let Outcome::Resumed(after) = f.step(&s, &NoIo).unwrap() else {
            panic!("cmpxchg16b did not resume");
        };
        assert_eq!(after.rip, CODE + 10, "exactly one instruction");
        assert_ne!(after.rflags & crate::state::rflags::ZF, 0);
        assert_eq!(mem.read_le(0x9000, 8).unwrap(), 3);
        assert_eq!(mem.read_le(0x9008, 8).unwrap(), 4);
    }

    #[test]
    fn int3_is_delivered_through_the_idt_and_interrupts_stay_with_kvm() {
        let (mem, mut s) = long_mode(&[0xcc, 0x90]);
        mem.write(0xa000, &[0x90, 0x48, 0xcf]).unwrap(); // nop; iretq
        gate(&mem, 3, 0xa000);
        gate(&mem, 0x20, 0xb000);
        s.rflags |= crate::state::rflags::IF;
        let mut f = Fallback::new(mem.clone(), 0, 1);
        let Outcome::Resumed(after) = f.step(&s, &NoIo).unwrap() else {
            panic!("int3 did not resume");
        };
        // The handler's first instruction ran after the delivery (single step = one
        // instruction); the pending external interrupt was not taken by the fallback.
        assert!(
            after.rip == 0xa000 || after.rip == 0xa001,
            "rip {:#x}",
            after.rip
        );
        assert_eq!(mem.read_le(0x7000 - 40, 8).unwrap(), CODE + 1, "return RIP");
        assert_eq!(after.events.interrupt, None);
    }

    #[test]
    fn a_failure_in_the_software_cpu_too_is_an_exit() {
        // A triple fault: #UD with an empty IDT limit.
        let (mem, mut s) = long_mode(&[0x0f, 0x0b]);
        s.idt.limit = 0;
        let mut f = Fallback::new(mem, 0, 1);
        match f.step(&s, &NoIo).unwrap() {
            Outcome::Exit(Exit::Shutdown(st)) => assert_eq!(st.rip, CODE),
            other => panic!("expected a shutdown, got {other:?}"),
        }
    }

    #[test]
    fn an_instruction_the_software_cpu_lacks_is_reported_not_faulted() {
        // vaddps zmm0, zmm1, zmm2: valid on this host's KVM (AVX-512), not implemented by the
        // software CPU. The fallback must not inject a #UD the real CPU would not raise.
        let (mem, s) = long_mode(&[0x62, 0xf1, 0x74, 0x48, 0x58, 0xc2]);
        let mut f = Fallback::new(mem, 0, 1);
        match f.step(&s, &NoIo).unwrap() {
            Outcome::Exit(Exit::Failed(r)) => {
                assert!(r.detail.contains("does not implement"), "{}", r.detail);
                assert_eq!(r.state.rip, CODE);
            }
            other => panic!("expected a failure report, got {other:?}"),
        }
    }

    #[test]
    fn clac_and_stac_run_for_a_kernel_whose_cpuid_has_smap() {
        // stac; clac: the fallback runs each (kvm_pvm's emulator cannot); a #UD here would send
        // a kernel's exception entry, which starts with CLAC, into endless recursion.
        let (mem, s) = long_mode(&[0x0f, 0x01, 0xcb, 0x0f, 0x01, 0xca]);
        let mut f = Fallback::new(mem, 0, 1);
        let Outcome::Resumed(a) = f.step(&s, &NoIo).unwrap() else {
            panic!("stac did not resume");
        };
        assert_eq!(a.rip, CODE + 3);
        assert_ne!(a.rflags & crate::state::rflags::AC, 0);
        let Outcome::Resumed(b) = f.step(&a, &NoIo).unwrap() else {
            panic!("clac did not resume");
        };
        assert_eq!(b.rip, CODE + 6);
        assert_eq!(b.rflags & crate::state::rflags::AC, 0);
    }

    #[test]
    fn stats_keys_name_instruction_and_reason() {
        let (_, long) = long_mode(&[]);
        assert_eq!(
            stats_key(1, mnemonic(&[0xcc], &long).as_deref()),
            "kvm fallback: int3 (emulation failure)"
        );
        assert_eq!(
            stats_key(3, mnemonic(&[0x0f, 0x0b], &long).as_deref()),
            "kvm fallback: ud2 (event delivery)"
        );
        assert_eq!(mnemonic(&[0x0f, 0xff], &long), None);
    }

    #[test]
    fn c5_in_real_mode_is_lds_not_vex() {
        // C5 F1 EC C2: vpaddsb xmm0, xmm1, xmm2 in protected mode; in real mode (no VEX) LDS
        // with a register operand, which raises #UD.
        let vex = [0xc5, 0xf1, 0xec, 0xc2];
        let (_, long) = long_mode(&[]);
        assert_eq!(mnemonic(&vex, &long).as_deref(), Some("vpaddsb"));
        let mut mem = GuestMemory::new();
        mem.add(0, 1 << 20, crate::memory::RegionKind::Ram).unwrap();
        mem.write(CODE, &vex).unwrap();
        // IVT entry 6 (#UD) -> 0000:0x7d00.
        mem.write(6 * 4, &0x7d00u32.to_le_bytes()).unwrap();
        let real = CpuState::startup_ipi((CODE >> 12) as u8);
        assert_eq!(real.code_bitness(), 16);
        assert_eq!(mnemonic(&vex, &real), None);
        assert_eq!(
            mnemonic(&[0xc5, 0x36, 0x00, 0x05], &real).as_deref(),
            Some("lds")
        );
        let mut f = Fallback::new(mem, 0, 1);
        let Outcome::Resumed(b) = f.step(&real, &NoIo).unwrap() else {
            panic!("#UD was not delivered");
        };
        assert_eq!((b.cs.selector, b.rip), (0, 0x7d00), "#UD through the IVT");
    }
}
