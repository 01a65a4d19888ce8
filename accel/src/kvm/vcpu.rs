//! One KVM vCPU: state mapping, the run loop that serves I/O in place, and exit conversion.

use kvm_bindings::{
    CpuId, KVM_EXIT_INTERNAL_ERROR, KVM_MAX_CPUID_ENTRIES, KVM_SYSTEM_EVENT_CRASH,
    KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN, Msrs, kvm_msr_entry,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

use super::convert;
use super::fallback::{self, Fallback, Outcome};
use super::signal;
use super::untrap::StepStart;
use crate::debug::Breakpoint;
use crate::exit::{Exit, ExitCounters, ExitReasonKind, SystemEventKind, VcpuFailure};
use crate::io::IoHandler;
use crate::kick::Kicker;
use crate::memory::GuestMemory;
use crate::state::CpuState;
use crate::vcpu::{Vcpu, VcpuError};

/// IA32_ARCH_CAPABILITIES.
const ARCH_CAPABILITIES: u32 = 0x10a;

/// HLT, planted on event handlers during a single step.
const HLT: u8 = 0xf4;

/// KVM_INTERRUPT: `_IOW(KVMIO, 0x86, struct kvm_interrupt)`.
const KVM_INTERRUPT: libc::c_ulong = 0x4004_ae86;

/// A KVM vCPU.
#[derive(Debug)]
pub struct KvmVcpu {
    pub(super) fd: VcpuFd,
    index: usize,
    pub(super) memory: GuestMemory,
    supported_msrs: Vec<u32>,
    kicker: Kicker,
    counters: ExitCounters,
    pub(super) single_step: bool,
    pub(super) blockirq: bool,
    /// Breakpoints of a debugger ([`crate::debug`]).
    pub(super) breakpoints: super::debug::Breakpoints,
    /// An I/O exit was served but KVM has not yet completed the instruction (it does so on the
    /// next KVM_RUN); state() must finish it first.
    io_pending: bool,
    pending_irq: Option<u8>,
    /// KVM's in-kernel irqchip delivers interrupts (`--irqchip kernel`): janus's controllers
    /// are not polled and nothing is injected from here.
    pub(super) kernel_irqchip: bool,
    /// RIP and RCX when a single step began.
    step_start: Option<(u64, u64)>,
    /// The guest's own RFLAGS.TF as janus last set it (KVM_GET_REGS hides TF while
    /// single-stepping): only with it clear is KVM's TF undone in what a step stored.
    guest_tf: bool,
    /// HLT bytes planted on the event handlers the current single step may enter (linear
    /// address, physical address, the byte replaced): [`super::untrap::event_handlers`].
    step_traps: Vec<(u64, u64, u8)>,
    /// Halted by HLT until an interrupt is delivered.
    halted: bool,
    /// The software CPU that runs what KVM cannot (None with `--no-fallback`).
    fallback: Option<Fallback>,
    /// An interrupt or NMI was handed to KVM for the coming entry (KVM_INTERRUPT, KVM_NMI).
    injected: bool,
}

pub(super) fn kvm_err(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuError {
    move |source| VcpuError::Backend {
        backend: "KVM",
        op,
        source: Box::new(source),
    }
}

/// What one KVM_RUN ended with, as an owned value, so that the borrow of the vCPU ends before the
/// exit is handled.
enum Raw {
    Io { write: bool },
    MmioRead(u64, usize),
    MmioWrite(u64, [u8; 8], usize),
    Hlt,
    Debug { exception: u32, pc: u64, dr6: u64 },
    Shutdown,
    FailEntry(u64, u32),
    Internal,
    SystemEvent(u32),
    Intr,
    IrqWindow,
    Other(String),
}

/// How a vCPU is created.
#[derive(Clone, Debug)]
pub(super) struct VcpuOptions {
    /// Single-step with KVM_GUESTDBG_BLOCKIRQ.
    pub blockirq: bool,
    /// Run KVM_EXIT_INTERNAL_ERROR instructions in the software CPU.
    pub fallback: bool,
    /// `--cpu` other than plain `host`: the model KVM_SET_CPUID2 sets.
    pub cpu: Option<crate::cpuid::CpuSpec>,
}

impl KvmVcpu {
    pub(super) fn new(
        kvm: &Kvm,
        vm: &VmFd,
        index: usize,
        nr_vcpus: usize,
        memory: GuestMemory,
        supported_msrs: Vec<u32>,
        opts: VcpuOptions,
    ) -> Result<Self, VcpuError> {
        let VcpuOptions {
            blockirq,
            fallback,
            cpu,
        } = opts;
        let fd = vm
            .create_vcpu(index as u64)
            .map_err(kvm_err("KVM_CREATE_VCPU"))?;
        let mut cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let arch_caps = msr_round_trips(&fd, ARCH_CAPABILITIES);
        patch_cpuid(&mut cpuid, index, nr_vcpus, arch_caps);
        if let Some(spec) = &cpu {
            apply_model(&mut cpuid, spec);
        }
        fd.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
        let fallback = fallback.then(|| Fallback::new(memory.clone(), index, nr_vcpus));
        let kicker = Kicker::new();
        kicker.set_interrupt(signal::signal_thread);
        let mut v = KvmVcpu {
            fd,
            index,
            memory,
            supported_msrs,
            kicker,
            counters: ExitCounters::default(),
            single_step: false,
            breakpoints: Default::default(),
            blockirq,
            io_pending: false,
            pending_irq: None,
            kernel_irqchip: false,
            step_start: None,
            guest_tf: false,
            step_traps: Vec::new(),
            halted: false,
            fallback,
            injected: false,
        };
        v.set_state(&CpuState::reset(index == 0))?;
        Ok(v)
    }

    /// Completes an I/O instruction whose exit was served (KVM finishes it on the next entry):
    /// KVM_RUN with `immediate_exit` set runs no guest code.
    fn complete_io(&mut self) -> Result<(), VcpuError> {
        if !self.io_pending {
            return Ok(());
        }
        self.io_pending = false;
        self.fd.set_kvm_immediate_exit(1);
        let r = self.fd.run();
        let done = match r {
            Err(e) if e.errno() == libc::EINTR => Ok(()),
            Err(e) => Err(kvm_err("KVM_RUN")(e)),
            Ok(_) => Ok(()),
        };
        self.fd.set_kvm_immediate_exit(0);
        done
    }

    fn run_once(&mut self) -> Result<Raw, VcpuError> {
        let raw = match self.fd.run() {
            Ok(exit) => match exit {
                VcpuExit::IoIn(..) => Raw::Io { write: false },
                VcpuExit::IoOut(..) => Raw::Io { write: true },
                VcpuExit::MmioRead(addr, data) => Raw::MmioRead(addr, data.len().min(8)),
                VcpuExit::MmioWrite(addr, data) => {
                    let mut b = [0u8; 8];
                    let n = data.len().min(8);
                    b[..n].copy_from_slice(&data[..n]);
                    Raw::MmioWrite(addr, b, n)
                }
                VcpuExit::Hlt => Raw::Hlt,
                VcpuExit::Debug(d) => Raw::Debug {
                    exception: d.exception,
                    pc: d.pc,
                    dr6: d.dr6,
                },
                VcpuExit::Shutdown => Raw::Shutdown,
                VcpuExit::FailEntry(reason, cpu) => Raw::FailEntry(reason, cpu),
                VcpuExit::InternalError => Raw::Internal,
                VcpuExit::SystemEvent(t, _) => Raw::SystemEvent(t),
                VcpuExit::Intr => Raw::Intr,
                VcpuExit::IrqWindowOpen => Raw::IrqWindow,
                other => Raw::Other(format!("{other:?}")),
            },
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Raw::Intr,
            Err(e) => {
                return Err(kvm_err("KVM_RUN")(e));
            }
        };
        Ok(raw)
    }

    /// Serves a KVM_EXIT_IO in place, element by element for string I/O (count > 1).
    fn serve_io(&mut self, io: &dyn IoHandler, write: bool) {
        let run = self.fd.get_kvm_run();
        // SAFETY: the exit reason is KVM_EXIT_IO (we were called for it), so `io` is the live
        // union member.
        let desc = unsafe { run.__bindgen_anon_1.io };
        let size = usize::from(desc.size).clamp(1, 8);
        let count = desc.count as usize;
        let base = (run as *mut kvm_bindings::kvm_run).cast::<u8>();
        for i in 0..count {
            let off = desc.data_offset as usize + i * size;
            // SAFETY: KVM places `count * size` data bytes at `data_offset` inside the kvm_run
            // mapping (one page or more), which lives as long as `self.fd`.
            let data = unsafe { std::slice::from_raw_parts_mut(base.wrapping_add(off), size) };
            if write {
                io.pio_write(self.index, desc.port, data);
            } else {
                io.pio_read(self.index, desc.port, data);
            }
        }
        let kind = if write {
            ExitReasonKind::IoOut
        } else {
            ExitReasonKind::IoIn
        };
        self.counters.bump(kind);
    }

    fn internal_error_detail(&mut self) -> String {
        let run = self.fd.get_kvm_run();
        if run.exit_reason != KVM_EXIT_INTERNAL_ERROR {
            return String::new();
        }
        // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the live member.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let what = match internal.suberror {
            1 => "emulation failure",
            2 => "simultaneous exception",
            3 => "delivery event failure",
            4 => "unexpected exit",
            _ => "unknown suberror",
        };
        let n = (internal.ndata as usize).min(internal.data.len());
        let words: Vec<String> = internal.data[..n]
            .iter()
            .map(|w| format!("{w:#x}"))
            .collect();
        format!(
            "suberror {} ({what}), data [{}]",
            internal.suberror,
            words.join(", ")
        )
    }

    /// Builds a failure report: state, instruction bytes at RIP (through the guest's page
    /// tables, [`crate::disasm::at_rip`]) and their disassembly.
    fn failure(&mut self, what: &str, detail: String) -> Result<Exit, VcpuError> {
        let state = self.state()?;
        Ok(self.failure_in(what, detail, state))
    }

    /// The up to 15 bytes at the guest's RIP, read through KVM's address translation.
    fn insn_bytes(&self, state: &CpuState) -> Vec<u8> {
        let mut insn_bytes = Vec::new();
        if let Ok(t) = self.fd.translate_gva(state.linear_rip())
            && t.valid != 0
        {
            let mut buf = [0u8; 15];
            for (i, b) in buf.iter_mut().enumerate() {
                match self.memory.read_le(t.physical_address + i as u64, 1) {
                    Ok(v) => *b = v as u8,
                    Err(_) => break,
                }
                insn_bytes.push(*b);
            }
        }
        insn_bytes
    }

    /// A failure report for `state`.
    fn failure_in(&self, what: &str, detail: String, state: CpuState) -> Exit {
        let (insn_bytes, disassembly) = crate::disasm::at_rip(&state, &self.memory);
        Exit::Failed(Box::new(VcpuFailure {
            what: what.to_string(),
            detail,
            insn_bytes,
            disassembly,
            state,
        }))
    }

    /// KVM stopped with KVM_EXIT_INTERNAL_ERROR: run the instruction (or deliver the event) in
    /// the software CPU and resume, or report the failure. `None` means: go on running.
    fn internal_error(&mut self, io: &dyn IoHandler) -> Result<Option<Exit>, VcpuError> {
        let detail = self.internal_error_detail();
        let suberror = self.internal_suberror();
        if self.fallback.is_none() {
            return self.failure("KVM internal error", detail).map(Some);
        }
        let state = self.state()?;
        let bytes = self.insn_bytes(&state);
        let mnemonic = fallback::mnemonic(&bytes, &state);
        let Some(fb) = self.fallback.as_mut() else {
            return self.failure("KVM internal error", detail).map(Some);
        };
        let outcome = fb.step(&state, io)?;
        let resume = match outcome {
            Outcome::Resumed(s) => s,
            Outcome::Halted(s) => {
                self.halted = true;
                s
            }
            Outcome::Exit(Exit::Failed(report)) => {
                let detail = format!(
                    "{detail}; the software fallback failed too: {}: {}",
                    report.what, report.detail
                );
                return Ok(Some(self.failure_in("KVM internal error", detail, state)));
            }
            Outcome::Exit(exit) => return Ok(Some(exit)),
        };
        // Write back only what the instruction changed: most change registers and flags only,
        // and every group costs KVM ioctls.
        self.write_state(&resume, Parts::changed(&state, &resume))?;
        *self
            .counters
            .extra
            .entry(fallback::stats_key(suberror, mnemonic.as_deref()))
            .or_default() += 1;
        if self.halted {
            return Ok(Some(Exit::Halt));
        }
        Ok(self.single_step.then_some(Exit::SingleStep))
    }

    /// The suberror of the last KVM_EXIT_INTERNAL_ERROR.
    fn internal_suberror(&mut self) -> u32 {
        let run = self.fd.get_kvm_run();
        if run.exit_reason != KVM_EXIT_INTERNAL_ERROR {
            return 0;
        }
        // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the live member.
        unsafe { run.__bindgen_anon_1.internal.suberror }
    }

    /// Injects the queued interrupt if the guest can take it now (else asks KVM to exit when it
    /// can); returns whether it was injected.
    fn try_inject(&mut self) -> Result<bool, VcpuError> {
        if self.kernel_irqchip {
            return Ok(false);
        }
        let Some(vector) = self.pending_irq else {
            return Ok(false);
        };
        let run = self.fd.get_kvm_run();
        if run.ready_for_interrupt_injection != 0 && run.if_flag != 0 {
            self.queue_interrupt(vector)?;
            self.pending_irq = None;
            self.fd.get_kvm_run().request_interrupt_window = 0;
            Ok(true)
        } else {
            self.fd.get_kvm_run().request_interrupt_window = 1;
            Ok(false)
        }
    }

    /// Takes an interrupt from the machine's interrupt controllers when the guest can accept
    /// one now; otherwise asks KVM for an interrupt-window exit.
    fn poll_controllers(&mut self, io: &dyn IoHandler) -> Result<(), VcpuError> {
        if self.kernel_irqchip {
            return Ok(());
        }
        if self.pending_irq.is_some() {
            return Ok(());
        }
        if !io.interrupt_pending(self.index) {
            // Nothing to deliver: no interrupt-window exit either. A window requested while IF
            // is set exits before the guest runs one instruction (on AMD-V at once, through
            // V_IRQ), so a request left standing with nothing to inject would livelock the vCPU.
            self.fd.get_kvm_run().request_interrupt_window = 0;
            return Ok(());
        }
        if self.halted {
            // A vCPU halted with IF set takes the interrupt; KVM's readiness flags from the HLT
            // exit may still count the STI shadow that covered the HLT.
            let regs = self.fd.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
            if regs.rflags & crate::state::rflags::IF != 0
                && let Some(v) = io.acknowledge_interrupt(self.index)
            {
                self.queue_interrupt(v)?;
                self.halted = false;
            }
            return Ok(());
        }
        let run = self.fd.get_kvm_run();
        if run.ready_for_interrupt_injection != 0 && run.if_flag != 0 {
            self.pending_irq = io.acknowledge_interrupt(self.index);
        } else {
            run.request_interrupt_window = 1;
        }
        Ok(())
    }

    /// Hands an NMI of the machine's interrupt controllers to KVM with KVM_NMI: KVM delivers it
    /// when the guest can take it and keeps NMIs blocked until the handler's IRET (the blocking
    /// is KVM's vcpu-events `nmi.masked`, which [`CpuState`]'s `events.nmi_masked` carries). An
    /// NMI wakes a vCPU halted with interrupts off too, but not one halted in its NMI handler.
    fn poll_nmi(&mut self, io: &dyn IoHandler) -> Result<(), VcpuError> {
        if self.kernel_irqchip || !io.nmi_pending(self.index) || !io.take_nmi(self.index) {
            return Ok(());
        }
        self.fd.nmi().map_err(kvm_err("KVM_NMI"))?;
        self.injected = true;
        if self.halted {
            let ev = self
                .fd
                .get_vcpu_events()
                .map_err(kvm_err("KVM_GET_VCPU_EVENTS"))?;
            if ev.nmi.masked == 0 {
                self.halted = false;
            }
        }
        Ok(())
    }

    /// Queues `vector` with KVM_INTERRUPT; KVM delivers it as soon as the guest can take it.
    fn queue_interrupt(&mut self, vector: u8) -> Result<(), VcpuError> {
        let irq = kvm_bindings::kvm_interrupt {
            irq: u32::from(vector),
        };
        // SAFETY: KVM_INTERRUPT takes a pointer to a kvm_interrupt, which lives across the
        // call; the fd is a vCPU fd.
        let ret = unsafe { vmm_sys_util::ioctl::ioctl_with_ref(&self.fd, KVM_INTERRUPT, &irq) };
        if ret < 0 {
            return Err(kvm_err("KVM_INTERRUPT")(kvm_ioctls::Error::last()));
        }
        self.injected = true;
        Ok(())
    }

    /// kvm_pvm delivers exceptions in software and shuts the guest down when a frame would
    /// land outside guest RAM (MMIO, or no device at all), where a processor writes it to the
    /// bus, a write nobody takes is dropped, and the handler runs (a stack pointer that wraps
    /// through 0 in a flat 4 GiB segment puts frames at 0xfffffffc and below: test-roms/
    /// udwrap.asm). So a shutdown there, in an entry that was given no interrupt or NMI, is
    /// replayed in the software fallback: the instruction at RIP again, with the delivery of
    /// what it raises. `None`: the software CPU went on and KVM resumes from its state;
    /// `Some`: the exit to report (the software CPU's triple fault when it agrees).
    fn replay_shutdown(
        &mut self,
        io: &dyn IoHandler,
        injected: bool,
    ) -> Result<Option<Exit>, VcpuError> {
        let state = self.state()?;
        if injected || self.kernel_irqchip || !super::is_paravirtual() {
            return Ok(Some(Exit::Shutdown(Box::new(state))));
        }
        let Some(fb) = self.fallback.as_mut() else {
            return Ok(Some(Exit::Shutdown(Box::new(state))));
        };
        let resume = match fb.step(&state, io)? {
            Outcome::Resumed(s) => s,
            Outcome::Halted(s) => {
                self.halted = true;
                s
            }
            Outcome::Exit(Exit::Shutdown(_)) | Outcome::Exit(Exit::Failed(_)) => {
                return Ok(Some(Exit::Shutdown(Box::new(state))));
            }
            Outcome::Exit(exit) => return Ok(Some(exit)),
        };
        self.write_state(&resume, Parts::ALL)?;
        *self
            .counters
            .extra
            .entry("kvm fallback: shutdown replayed (frame outside RAM)".into())
            .or_default() += 1;
        if self.halted {
            return Ok(Some(Exit::Halt));
        }
        Ok(self.single_step.then_some(Exit::SingleStep))
    }
}

/// Which groups of KVM's vCPU state a write touches (each group is one or two ioctls).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Parts {
    /// Segments, descriptor tables, control registers, EFER, APIC base (KVM_SET_SREGS), and
    /// the MSRs (KVM_SET_MSRS).
    system: bool,
    /// Pending events and shadows (KVM_SET_VCPU_EVENTS).
    events: bool,
    /// XCR0 and the x87/SSE/XSAVE state (KVM_SET_XCRS, KVM_SET_XSAVE).
    fpu: bool,
}

impl Parts {
    const ALL: Parts = Parts {
        system: true,
        events: true,
        fpu: true,
    };

    /// The groups in which `new` differs from `old` (the general registers, RIP and RFLAGS are
    /// always written; the TSC is left running in KVM).
    fn changed(old: &CpuState, new: &CpuState) -> Parts {
        let mut a = old.clone();
        a.gpr = new.gpr;
        a.rip = new.rip;
        a.rflags = new.rflags;
        a.tsc = new.tsc;
        a.events = new.events;
        a.fpu = new.fpu;
        Parts {
            system: a != *new,
            events: old.events != new.events,
            fpu: old.fpu != new.fpu,
        }
    }
}

impl KvmVcpu {
    /// Writes the general registers and the `parts` of `state` into KVM.
    fn write_state(&mut self, state: &CpuState, parts: Parts) -> Result<(), VcpuError> {
        if parts.system {
            let base = self.fd.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
            self.fd
                .set_sregs(&convert::sregs_from(state, &base))
                .map_err(kvm_err("KVM_SET_SREGS"))?;
        }
        self.fd
            .set_regs(&convert::regs_from(state))
            .map_err(kvm_err("KVM_SET_REGS"))?;
        if parts.system {
            let entries = convert::msrs_from(state, &self.supported_msrs);
            let msrs = Msrs::from_entries(&entries)
                .map_err(|_| VcpuError::Unsupported("too many MSRs".into()))?;
            self.fd.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS"))?;
            self.fd
                .set_debug_regs(&convert::debugregs_from(state))
                .map_err(kvm_err("KVM_SET_DEBUGREGS"))?;
        }
        if parts.events {
            let mut ev = convert::events_from(state);
            // An external interrupt not yet delivered is re-queued through KVM_INTERRUPT.
            if state.events.interrupt.is_some() {
                ev.interrupt.injected = 0;
            }
            self.pending_irq = state.events.interrupt;
            self.fd
                .set_vcpu_events(&ev)
                .map_err(kvm_err("KVM_SET_VCPU_EVENTS"))?;
        }
        if parts.fpu {
            // XCR0 before the FPU registers: it decides which components the guest may use.
            if self.fd.get_xcrs().is_ok() {
                self.fd
                    .set_xcrs(&convert::xcrs_from(state))
                    .map_err(kvm_err("KVM_SET_XCRS"))?;
            }
            let base = self.fd.get_xsave().map_err(kvm_err("KVM_GET_XSAVE"))?;
            let xsave = convert::xsave_from(state, &base);
            // SAFETY: KVM_SET_XSAVE reads the vCPU's user-ABI XSAVE size, which exceeds the 4
            // KiB of `kvm_xsave` only for dynamically enabled components (AMX) that a VMM must
            // first request with ARCH_REQ_XCOMP_GUEST_PERM; janus never does, so the read stays
            // inside `xsave`, a whole `kvm_xsave` built from KVM_GET_XSAVE's output.
            unsafe { self.fd.set_xsave(&xsave) }.map_err(kvm_err("KVM_SET_XSAVE"))?;
        }
        Ok(())
    }
}

/// Whether KVM lets userspace read MSR `index` of this vCPU and write the value back (a host may
/// list an MSR and still refuse it, as kvm_pvm does IA32_ARCH_CAPABILITIES).
fn msr_round_trips(fd: &VcpuFd, index: u32) -> bool {
    let Ok(mut msrs) = Msrs::from_entries(&[kvm_msr_entry {
        index,
        ..Default::default()
    }]) else {
        return false;
    };
    if fd.get_msrs(&mut msrs).ok() != Some(1) {
        return false;
    }
    fd.set_msrs(&msrs).ok() == Some(1)
}

/// Makes KVM's table the CPU model `spec` (`--cpu`): the model's identity, and the features
/// it wants that KVM offers. Returns the features wanted but not offered.
pub(super) fn apply_model(cpuid: &mut CpuId, spec: &crate::cpuid::CpuSpec) -> Vec<&'static str> {
    let mut regs: Vec<(u32, u32, [u32; 4])> = cpuid
        .as_slice()
        .iter()
        .map(|e| (e.function, e.index, [e.eax, e.ebx, e.ecx, e.edx]))
        .collect();
    let mut view: Vec<(u32, u32, &mut [u32; 4])> =
        regs.iter_mut().map(|(l, s, r)| (*l, *s, r)).collect();
    let missing = crate::cpuid::Cpuid::patch(spec, &mut view);
    for (e, (_, _, r)) in cpuid.as_mut_slice().iter_mut().zip(regs) {
        [e.eax, e.ebx, e.ecx, e.edx] = r;
    }
    missing
}

/// Fills in the per-vCPU topology that KVM's supported CPUID leaves blank, and hides what the
/// host cannot really give the guest.
fn patch_cpuid(cpuid: &mut CpuId, index: usize, nr_vcpus: usize, arch_caps: bool) {
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x0000_ffff)
                    | ((index as u32 & 0xff) << 24)
                    | ((nr_vcpus.clamp(1, 255) as u32) << 16);
                // Hypervisor present.
                e.ecx |= 1 << 31;
                // The local APIC is janus's (no in-kernel irqchip), and KVM does not pass the
                // TSC-deadline and x2APIC MSRs to userspace: do not advertise them.
                e.ecx &= !((1 << 24) | (1 << 21));
            }
            0xb | 0x1f => e.edx = index as u32,
            // IA32_ARCH_CAPABILITIES (MSR 0x10a): advertised only where KVM lets it be read
            // and set (a kernel reads it early and QEMU sets it; kvm_pvm refuses it).
            7 if e.index == 0 && !arch_caps => {
                e.edx &= !(1 << 29);
            }
            _ => {}
        }
    }
}

impl Vcpu for KvmVcpu {
    fn index(&self) -> usize {
        self.index
    }

    fn state(&mut self) -> Result<CpuState, VcpuError> {
        self.complete_io()?;
        let mut s = CpuState::default();
        let regs = self.fd.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
        convert::regs_into(&mut s, &regs);
        let sregs = self.fd.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        convert::sregs_into(&mut s, &sregs);
        let wanted: Vec<kvm_msr_entry> = convert::MSR_INDICES
            .iter()
            .filter(|i| self.supported_msrs.contains(i))
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&wanted)
            .map_err(|_| VcpuError::Unsupported("too many MSRs".into()))?;
        let n = self
            .fd
            .get_msrs(&mut msrs)
            .map_err(kvm_err("KVM_GET_MSRS"))?;
        convert::msrs_into(&mut s, &msrs.as_slice()[..n]);
        let events = self
            .fd
            .get_vcpu_events()
            .map_err(kvm_err("KVM_GET_VCPU_EVENTS"))?;
        convert::events_into(&mut s, &events);
        let xsave = self.fd.get_xsave().map_err(kvm_err("KVM_GET_XSAVE"))?;
        convert::xsave_into(&mut s, &xsave);
        let debug = self
            .fd
            .get_debug_regs()
            .map_err(kvm_err("KVM_GET_DEBUGREGS"))?;
        convert::debugregs_into(&mut s, &debug);
        // KVM_GET_XCRS fails where the host has no XSAVE (KVM_CAP_XCRS absent); XCR0 is then 1.
        if let Ok(x) = self.fd.get_xcrs() {
            convert::xcrs_into(&mut s, &x);
        }
        if s.events.interrupt.is_none() {
            s.events.interrupt = self.pending_irq;
        }
        Ok(s)
    }

    fn set_state(&mut self, state: &CpuState) -> Result<(), VcpuError> {
        self.complete_io()?;
        self.write_state(state, Parts::ALL)?;
        self.guest_tf = state.rflags & crate::state::rflags::TF != 0;
        self.halted = false;
        Ok(())
    }

    fn run(&mut self, io: &dyn IoHandler) -> Result<Exit, VcpuError> {
        let run_ptr: *mut kvm_bindings::kvm_run = self.fd.get_kvm_run();
        signal::set_current(run_ptr);
        self.kicker.set_thread(signal::current_thread());
        let result = match self.resume_over_breakpoint(io) {
            Ok(Some(exit)) => Ok(exit),
            Ok(None) => self.run_loop(io),
            Err(e) => Err(e),
        };
        self.kicker.set_thread(0);
        signal::set_current(std::ptr::null_mut());
        result
    }

    fn set_single_step(&mut self, on: bool) -> Result<(), VcpuError> {
        let was = std::mem::replace(&mut self.single_step, on);
        if let Err(e) = self.apply_guest_debug() {
            self.single_step = was;
            return Err(e);
        }
        Ok(())
    }

    fn set_breakpoints(&mut self, breakpoints: &[Breakpoint]) -> Result<(), VcpuError> {
        self.replace_breakpoints(breakpoints)
    }

    fn memory(&self) -> &GuestMemory {
        &self.memory
    }

    fn inject_interrupt(&mut self, vector: u8) -> Result<(), VcpuError> {
        self.pending_irq = Some(vector);
        Ok(())
    }

    fn kicker(&self) -> Kicker {
        self.kicker.clone()
    }

    fn counters(&self) -> ExitCounters {
        self.counters.clone()
    }
}

impl KvmVcpu {
    /// While single-stepping, an instruction that exited for I/O is complete once KVM has been
    /// re-entered; some KVM flavours (kvm_pvm's emulator) then lose the single-step trap and run
    /// on. So complete it with an immediate-exit entry, which runs no guest code, and report the
    /// step here.
    ///
    /// An instruction may need several I/O exits (an MMIO access split at a page boundary): if
    /// neither RIP nor RCX moved, it is still in progress and KVM is entered again.
    fn step_after_io(&mut self, io: &dyn IoHandler) -> Result<Option<Exit>, VcpuError> {
        self.finish_io(io)?;
        let regs = self.fd.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
        if Some((regs.rip, regs.rcx)) == self.step_start {
            return Ok(None);
        }
        Ok(Some(Exit::SingleStep))
    }

    /// Serves a port or MMIO exit in place; KVM completes the instruction on the next entry.
    fn serve_access(&mut self, io: &dyn IoHandler, raw: &Raw) {
        match *raw {
            Raw::Io { write } => self.serve_io(io, write),
            Raw::MmioRead(addr, len) => {
                let mut buf = [0u8; 8];
                io.mmio_read(self.index, addr, &mut buf[..len]);
                let run = self.fd.get_kvm_run();
                // SAFETY: the exit reason is KVM_EXIT_MMIO, so `mmio` is the live member.
                let mmio = unsafe { &mut run.__bindgen_anon_1.mmio };
                mmio.data[..len].copy_from_slice(&buf[..len]);
                self.counters.bump(ExitReasonKind::MmioRead);
            }
            Raw::MmioWrite(addr, data, len) => {
                io.mmio_write(self.index, addr, &data[..len]);
                self.counters.bump(ExitReasonKind::MmioWrite);
            }
            _ => return,
        }
        self.io_pending = true;
    }

    /// Completes a served I/O instruction without running guest code, serving any further
    /// access the completion makes: the write half of a read-modify-write on MMIO (`add
    /// [mmio], eax`) is a second KVM_EXIT_MMIO that KVM reports from this immediate-exit entry.
    fn finish_io(&mut self, io: &dyn IoHandler) -> Result<(), VcpuError> {
        while self.io_pending {
            self.io_pending = false;
            self.fd.set_kvm_immediate_exit(1);
            let raw = self.run_once();
            self.fd.set_kvm_immediate_exit(0);
            let raw = raw?;
            if matches!(raw, Raw::Io { .. } | Raw::MmioRead(..) | Raw::MmioWrite(..)) {
                self.serve_access(io, &raw);
            }
        }
        Ok(())
    }

    /// Runs until an exit janus must see; while single-stepping, one instruction, with KVM's
    /// trap flag taken out of what it stored ([`super::untrap`]).
    pub(super) fn run_loop(&mut self, io: &dyn IoHandler) -> Result<Exit, VcpuError> {
        self.step_start = None;
        let start = if self.single_step {
            self.begin_step(io)?
        } else {
            None
        };
        let exit = self.run_entries(io);
        let exit = self.lift_traps(exit)?;
        if let (Some(start), Exit::SingleStep) = (&start, &exit) {
            self.end_step(start)?;
        }
        Ok(exit)
    }

    /// Before a single step: a HLT on the first byte of each handler the instruction may enter
    /// ([`super::untrap::event_handlers`]). Delivering an event clears TF, so without them KVM
    /// would run the whole handler within the step. A HLT, unlike a hardware breakpoint or an
    /// INT3, stops the guest there under every KVM (QEMU's model of AMD-V neither arms DR7's
    /// breakpoints for a nested guest nor intercepts INT3 as #BP), as long as the interrupt
    /// controllers are janus's: KVM's in-kernel LAPIC would keep the HLT inside KVM.
    fn plant_traps(
        &mut self,
        state: &CpuState,
        insn: &iced_x86::Instruction,
    ) -> Result<(), VcpuError> {
        self.step_traps.clear();
        if self.kernel_irqchip || insn.is_string_instruction() {
            return Ok(());
        }
        let entry = if insn.mnemonic() == iced_x86::Mnemonic::Syscall {
            self.syscall_entry()?
        } else {
            (0, 0)
        };
        for lin in super::untrap::event_handlers(state, insn, &self.memory, entry, 8) {
            if super::untrap::touches(state, insn, lin) {
                continue;
            }
            let Some(pa) = crate::walk::translate(state, &self.memory, lin) else {
                continue;
            };
            let mut old = [0u8];
            if self.memory.read(pa, &mut old).is_ok() && self.memory.write_dma(pa, &[HLT]).is_ok() {
                self.step_traps.push((lin, pa, old[0]));
            }
        }
        Ok(())
    }

    /// After a single step: puts back the bytes [`Self::plant_traps`] replaced (unless the step
    /// itself wrote there), and turns a stop on one of its HLTs into the end of the step, at the
    /// handler's first instruction.
    fn lift_traps(&mut self, exit: Result<Exit, VcpuError>) -> Result<Exit, VcpuError> {
        let traps = std::mem::take(&mut self.step_traps);
        for &(_, pa, old) in traps.iter().rev() {
            let mut now = [0u8];
            if self.memory.read(pa, &mut now).is_ok() && now[0] == HLT {
                let _ = self.memory.write_dma(pa, &[old]);
            }
        }
        let exit = exit?;
        if !matches!(exit, Exit::Halt) || traps.is_empty() {
            return Ok(exit);
        }
        let s = self.light_state()?;
        let at = s.linear_rip().wrapping_sub(1);
        if !traps.iter().any(|t| t.0 == at) {
            return Ok(exit);
        }
        let mut regs = self.fd.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
        regs.rip = regs.rip.wrapping_sub(1);
        self.fd.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))?;
        self.halted = false;
        Ok(Exit::SingleStep)
    }

    /// The registers, segments and control registers (no MSRs, events or FPU: two ioctls).
    fn light_state(&self) -> Result<CpuState, VcpuError> {
        let mut s = CpuState::default();
        let regs = self.fd.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
        convert::regs_into(&mut s, &regs);
        let sregs = self.fd.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        convert::sregs_into(&mut s, &sregs);
        Ok(s)
    }

    /// Before a single step: completes a served I/O instruction, notes where the step starts,
    /// and re-arms KVM's single-step. KVM sets TF in the guest's RFLAGS only when stepping is
    /// switched on or the registers are set at the RIP where it was, and an instruction that
    /// clears TF (POPF or IRET of an image without it, SYSCALL with TF in its mask, an event's
    /// delivery) would let the next entry run on; KVM_SET_GUEST_DEBUG sets it again at this
    /// RIP. Returns the start for [`super::untrap`] when the guest's own TF is clear.
    fn begin_step(&mut self, io: &dyn IoHandler) -> Result<Option<StepStart>, VcpuError> {
        self.finish_io(io)?;
        let state = self.light_state()?;
        self.step_start = Some((state.rip, state.gpr[1]));
        let (_, insn) = crate::disasm::fetch_insn(&state, &self.memory);
        self.plant_traps(&state, &insn)?;
        self.apply_guest_debug()?;
        if self.guest_tf {
            return Ok(None);
        }
        Ok(Some(StepStart { state, insn }))
    }

    /// IA32_LSTAR and IA32_CSTAR: where SYSCALL enters the kernel.
    fn syscall_entry(&self) -> Result<(u64, u64), VcpuError> {
        let mut msrs = Msrs::from_entries(&[
            kvm_msr_entry {
                index: 0xc000_0082,
                ..Default::default()
            },
            kvm_msr_entry {
                index: 0xc000_0083,
                ..Default::default()
            },
        ])
        .map_err(|_| VcpuError::Unsupported("too many MSRs".into()))?;
        let n = self
            .fd
            .get_msrs(&mut msrs)
            .map_err(kvm_err("KVM_GET_MSRS"))?;
        let m = &msrs.as_slice()[..n];
        let get = |i: u32| m.iter().find(|e| e.index == i).map_or(0, |e| e.data);
        Ok((get(0xc000_0082), get(0xc000_0083)))
    }

    /// After a single step from `start`: clears KVM's TF in the flags image the instruction
    /// stored in memory or in R11.
    fn end_step(&mut self, start: &StepStart) -> Result<(), VcpuError> {
        self.complete_io()?;
        let mut after = self.light_state()?;
        let done = super::untrap::untrap(start, &mut after, &self.memory);
        if done.r11 {
            self.fd
                .set_regs(&convert::regs_from(&after))
                .map_err(kvm_err("KVM_SET_REGS"))?;
        }
        if !done.stored.is_empty() || done.r11 {
            *self
                .counters
                .extra
                .entry("kvm single-step: TF taken out of a stored RFLAGS".into())
                .or_default() += 1;
        }
        Ok(())
    }

    fn run_entries(&mut self, io: &dyn IoHandler) -> Result<Exit, VcpuError> {
        loop {
            if self.kicker.pending() {
                self.finish_io(io)?;
                return Ok(Exit::Stopped);
            }
            self.poll_nmi(io)?;
            self.poll_controllers(io)?;
            if self.try_inject()? {
                self.halted = false;
            }
            if self.halted {
                // HLT holds until an interrupt is delivered (KVM keeps no halted state when the
                // interrupt controllers are janus's).
                return Ok(Exit::Halt);
            }
            self.io_pending = false;
            let injected = std::mem::take(&mut self.injected);
            let raw = self.run_once()?;
            match raw {
                Raw::Io { .. } | Raw::MmioRead(..) | Raw::MmioWrite(..) => {
                    self.serve_access(io, &raw);
                    if self.single_step
                        && let Some(exit) = self.step_after_io(io)?
                    {
                        return Ok(exit);
                    }
                }
                Raw::Hlt => {
                    self.counters.bump(ExitReasonKind::Halt);
                    self.halted = true;
                    return Ok(Exit::Halt);
                }
                Raw::Debug { exception, pc, dr6 } => {
                    self.counters.bump(ExitReasonKind::Debug);
                    if self.breakpoint_hit(exception, pc, dr6) {
                        return Ok(Exit::Breakpoint(pc));
                    }
                    if self.single_step {
                        return Ok(Exit::SingleStep);
                    }
                }
                Raw::Shutdown => {
                    if let Some(exit) = self.replay_shutdown(io, injected)? {
                        if matches!(exit, Exit::Shutdown(_)) {
                            self.counters.bump(ExitReasonKind::Shutdown);
                        }
                        return Ok(exit);
                    }
                }
                Raw::FailEntry(reason, cpu) => {
                    self.counters.bump(ExitReasonKind::Failure);
                    return self.failure(
                        "KVM entry failure",
                        format!("hardware entry failure reason {reason:#x} on host cpu {cpu}"),
                    );
                }
                Raw::Internal => {
                    self.counters.bump(ExitReasonKind::InternalError);
                    if let Some(exit) = self.internal_error(io)? {
                        if matches!(exit, Exit::Failed(_)) {
                            self.counters.bump(ExitReasonKind::Failure);
                        }
                        return Ok(exit);
                    }
                }
                Raw::SystemEvent(t) => {
                    self.counters.bump(ExitReasonKind::SystemEvent);
                    return Ok(Exit::SystemEvent(match t {
                        KVM_SYSTEM_EVENT_SHUTDOWN => SystemEventKind::Shutdown,
                        KVM_SYSTEM_EVENT_RESET => SystemEventKind::Reset,
                        KVM_SYSTEM_EVENT_CRASH => SystemEventKind::Crash,
                        other => SystemEventKind::Other(other),
                    }));
                }
                Raw::Intr => {
                    self.counters.bump(ExitReasonKind::Interrupted);
                    self.fd.set_kvm_immediate_exit(0);
                }
                Raw::IrqWindow => self.counters.bump(ExitReasonKind::InterruptWindow),
                Raw::Other(what) => {
                    self.counters.bump(ExitReasonKind::Other);
                    return self.failure("unexpected KVM exit", what);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Parts;
    use crate::state::{CpuState, rflags};

    #[test]
    fn fallback_writes_back_only_the_groups_an_instruction_changed() {
        let old = CpuState::boot_sector();
        let mut new = old.clone();
        new.rip += 3;
        new.gpr[0] = 7;
        new.rflags &= !rflags::AC;
        new.tsc += 1;
        let none = Parts {
            system: false,
            events: false,
            fpu: false,
        };
        assert_eq!(
            Parts::changed(&old, &new),
            none,
            "registers, flags and TSC only"
        );
        let mut s = new.clone();
        s.cr0 |= 1;
        assert!(Parts::changed(&old, &s).system);
        let mut s = new.clone();
        s.kernel_gs_base = 1;
        assert!(Parts::changed(&old, &s).system, "an MSR");
        let mut s = new.clone();
        s.events.interrupt = Some(0x20);
        assert_eq!(
            Parts::changed(&old, &s),
            Parts {
                events: true,
                ..none
            }
        );
        let mut s = new;
        s.fpu.mxcsr ^= 0x40;
        assert_eq!(Parts::changed(&old, &s), Parts { fpu: true, ..none });
    }
}
