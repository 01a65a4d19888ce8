//! The software backend: iced-x86 decode -> IR -> the interpreter, or the JIT (`jit/`, dynasmrt)
//! that compiles the same IR.
//!
//! [`SoftAccel`] creates [`SoftVcpu`]s over a [`GuestMemory`]. A vCPU fetches and decodes guest
//! code through its soft MMU, lowers each basic block to a small IR ([`ir`]), caches the block by
//! physical address and mode, and runs it in the interpreter or as compiled code. Flags are computed lazily; faults
//! are precise; port I/O and every physical access outside RAM go to the [`IoHandler`].

#[doc(hidden)]
pub mod bench_api;
mod cache;
mod cpu;
mod debug;
mod decode;
mod exception;
mod flags;
mod host_fpu;
mod icount;
mod interp;
pub mod ir;
mod jit;
mod mmu;
mod seg;
mod task;
mod trace;
mod translate;
mod xmc;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::debug::Breakpoint;
use crate::exit::{Exit, ExitCounters, ExitReasonKind, VcpuFailure};
use crate::io::IoHandler;
use crate::kick::Kicker;
use crate::memory::GuestMemory;
use crate::state::CpuState;
use crate::vcpu::{AccelCaps, Accelerator, Vcpu, VcpuError};

use cpu::{Core, Ctx, Fault};
use exception::{Delivered, Source};
use interp::Outcome;

pub use jit::JitStats;
pub use trace::{TraceOut, TraceSpec};
pub use translate::OFFER;

/// The software accelerator: vCPUs that interpret guest code or run it compiled by the JIT.
pub struct SoftAccel {
    memory: GuestMemory,
    nr_vcpus: usize,
    jit: bool,
    planted_bug: bool,
    tsc_clock: Option<cpu::TscClock>,
    /// Shared by the vCPUs and the devices that write guest RAM (cross-modifying code).
    xmc: Arc<xmc::Xmc>,
    /// `--trace`: what to trace and where.
    trace: Option<(TraceSpec, TraceOut)>,
    /// `--perf-map`: name compiled blocks in /tmp/perf-PID.map.
    perf_map: bool,
    /// `--cpu`: the CPUID table every vCPU reads.
    cpuid: Arc<crate::cpuid::Cpuid>,
    /// `--tb-size`: bytes of translated code (IR and JIT code) that all vCPUs together keep.
    tb_size: usize,
}

/// Default of `--tb-size`: what the translated code of all vCPUs together may take (the IR of
/// the blocks and the JIT's code), bytes. A full cache is flushed whole at the next block
/// boundary, as QEMU flushes its TB cache.
pub const DEFAULT_TB_SIZE: usize = 256 << 20;

/// Smallest `--tb-size` the backend accepts (each vCPU gets at least this much).
pub const MIN_TB_SIZE: usize = 1 << 20;

/// How a vCPU's share of the translated-code budget is split: (JIT code buffer, IR blocks).
/// The JIT gets a quarter, between 1 MiB (it keeps 256 KiB free for the block it compiles)
/// and 32 MiB.
fn split_budget(share: usize, jit: bool) -> (usize, usize) {
    if !jit {
        return (0, share);
    }
    let code = (share / 4).clamp(1 << 20, jit::DEFAULT_CODE_CACHE);
    (code, share.saturating_sub(code).max(1 << 20))
}

impl std::fmt::Debug for SoftAccel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftAccel")
            .field("nr_vcpus", &self.nr_vcpus)
            .field("jit", &self.jit)
            .field("trace", &self.trace.as_ref().map(|t| t.0))
            .finish_non_exhaustive()
    }
}

impl SoftAccel {
    /// A software accelerator over `memory` for a machine of `nr_vcpus` vCPUs (interpreter).
    pub fn new(memory: GuestMemory, nr_vcpus: usize) -> Self {
        // Test builds: JANUS_SOFT_JIT=1 runs every software-CPU test under the JIT.
        let jit = cfg!(test) && std::env::var_os("JANUS_SOFT_JIT").is_some();
        Self::with_jit(memory, nr_vcpus, jit)
    }

    /// The same, with vCPUs that compile guest code (`jit`) or interpret it.
    pub fn with_jit(memory: GuestMemory, nr_vcpus: usize, jit: bool) -> Self {
        let ram_end = memory
            .regions()
            .iter()
            .filter(|r| r.kind() == crate::memory::RegionKind::Ram)
            .map(|r| r.base() + r.size())
            .max()
            .unwrap_or(0);
        // Every vCPU, and every device that writes guest RAM, tells the others what it wrote.
        let xmc = Arc::new(xmc::Xmc::new(nr_vcpus, ram_end));
        let observer: std::sync::Weak<dyn crate::memory::DmaObserver> =
            Arc::downgrade(&(xmc.clone() as Arc<dyn crate::memory::DmaObserver>));
        memory.observe_dma(observer);
        SoftAccel {
            memory,
            nr_vcpus,
            jit,
            planted_bug: false,
            tsc_clock: None,
            xmc,
            trace: None,
            perf_map: false,
            cpuid: Arc::new(crate::cpuid::Cpuid::new(
                &crate::cpuid::CpuSpec::default(),
                nr_vcpus,
                &OFFER,
            )),
            tb_size: DEFAULT_TB_SIZE,
        }
    }

    /// The vCPUs are the CPU model `spec` (`--cpu`): one CPUID table, made here.
    pub fn with_cpu(mut self, spec: &crate::cpuid::CpuSpec) -> Self {
        let mut t = crate::cpuid::Cpuid::new(spec, self.nr_vcpus, &OFFER);
        if let Some(c) = &self.tsc_clock {
            t.set_tsc_hz(c.hz);
        }
        self.cpuid = Arc::new(t);
        self
    }

    /// The CPUID table the vCPUs read.
    pub fn cpuid(&self) -> &crate::cpuid::Cpuid {
        &self.cpuid
    }

    /// Bounds the translated code of all vCPUs together to `bytes` (IR blocks and JIT code;
    /// at least [`MIN_TB_SIZE`] per vCPU): a vCPU whose share is full flushes it whole.
    pub fn with_tb_size(mut self, bytes: usize) -> Self {
        self.tb_size = bytes;
        self
    }

    /// Traces every vCPU as `spec` says, to `out` (stderr when `None`), instead of as
    /// `JANUS_SOFT_TRACE` says.
    pub fn with_trace(mut self, spec: TraceSpec, out: TraceOut) -> Self {
        self.trace = Some((spec, out));
        self
    }

    /// Names every compiled block in /tmp/perf-PID.map for `perf report` (as
    /// `JANUS_JIT_PERFMAP=1` does).
    pub fn with_perf_map(mut self, on: bool) -> Self {
        self.perf_map = on;
        self
    }

    /// The vCPUs' TSC follows `clock` (the machine's real-time clock, `hz` ticks a second, the
    /// local APIC timer's rate too) instead of counting retired instructions: one TSC for every
    /// vCPU, which runs on while a vCPU halts. CPUID then reports the frequency.
    pub fn with_tsc_clock(
        mut self,
        hz: u64,
        clock: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Self {
        self.tsc_clock = Some(cpu::TscClock {
            read: std::sync::Arc::new(clock),
            hz,
        });
        Arc::make_mut(&mut self.cpuid).set_tsc_hz(hz);
        self
    }

    /// Test-only switch: the vCPUs report CF inverted after ADD, a deliberately wrong flag
    /// computation that the lockstep differ's own test must catch at the right instruction.
    #[doc(hidden)]
    pub fn plant_flag_bug(mut self) -> Self {
        self.planted_bug = true;
        self
    }
}

impl Accelerator for SoftAccel {
    fn caps(&self) -> AccelCaps {
        AccelCaps {
            name: "soft",
            flavour: if self.jit {
                "JIT (dynasmrt, x86-64)".into()
            } else {
                "IR interpreter".into()
            },
            single_step: true,
            irqchip: false,
            instruction_count: true,
            max_vcpus: 256,
            details: vec![(
                "executor".into(),
                if self.jit { "jit" } else { "interpreter" }.into(),
            )],
        }
    }

    fn create_vcpu(&self, index: usize) -> Result<Box<dyn Vcpu + Send>, VcpuError> {
        Ok(Box::new(self.new_vcpu(index)?))
    }

    fn cpu_missing(&self) -> Vec<&'static str> {
        self.cpuid.missing().to_vec()
    }
}

impl SoftAccel {
    /// Creates vCPU number `index` (its APIC id), as the concrete type.
    ///
    /// # Errors
    /// The JIT's code memory cannot be mapped.
    pub fn new_vcpu(&self, index: usize) -> Result<SoftVcpu, VcpuError> {
        let mut core = Core::new(self.memory.clone(), index);
        core.cpuid = self.cpuid.clone();
        core.planted_bug = self.planted_bug;
        core.tsc_clock = self.tsc_clock.clone();
        let kicker = Kicker::new();
        self.xmc.register(index, kicker.clone());
        core.cache.xmc = Some((self.xmc.clone(), index));
        let share = (self.tb_size / self.nr_vcpus.max(1)).max(MIN_TB_SIZE);
        let (code_cap, ir_budget) = split_budget(share, self.jit);
        core.cache.set_budget(ir_budget);
        let jit = if self.jit {
            core.cache.jit = Some(cache::JitEvents::default());
            let mut j = jit::Jit::new(&kicker, code_cap).map_err(|e| {
                VcpuError::Unsupported(format!("cannot map the JIT's code memory: {e}"))
            })?;
            if self.perf_map {
                j.enable_perf_map();
            }
            Some(Box::new(j))
        } else {
            None
        };
        Ok(SoftVcpu {
            core: Box::new(core),
            time: icount::TimeSync::default(),
            kicker,
            single_step: false,
            jmp: cache::JmpCache::default(),
            temps: Box::new([0; interp::TEMPS]),
            jit,
            index,
            halted: false,
            tsc_read: None,
            trace: match &self.trace {
                Some((spec, out)) => Some(Box::new(trace::Trace::new(*spec, out.clone()))),
                None => trace::Trace::from_env(),
            },
            breakpoints: Vec::new(),
            resume_at: None,
        })
    }
}

/// One software vCPU.
#[derive(Debug)]
pub struct SoftVcpu {
    core: Box<Core>,
    /// Deterministic time (`--icount`).
    time: icount::TimeSync,
    kicker: Kicker,
    single_step: bool,
    jmp: cache::JmpCache,
    temps: Box<[u64; interp::TEMPS]>,
    /// The JIT, when this vCPU runs compiled code.
    jit: Option<Box<jit::Jit>>,
    /// This vCPU's index (APIC id).
    index: usize,
    /// Halted by HLT until an interrupt is delivered.
    halted: bool,
    /// The TSC the last `state` reported (see `set_state`).
    tsc_read: Option<u64>,
    /// `JANUS_SOFT_TRACE` debug tracing.
    trace: Option<Box<trace::Trace>>,
    /// Linear addresses of breakpoints, software and hardware alike ([`crate::debug`]): with
    /// any set, blocks are one instruction and each start is checked.
    breakpoints: Vec<u64>,
    /// The linear RIP where `run` began: a breakpoint there is not taken (x86's RF), until
    /// the first instruction start is checked.
    resume_at: Option<u64>,
}

impl SoftVcpu {
    /// A failure exit at the current instruction.
    fn failed(&mut self, what: &str, detail: &str) -> Exit {
        if let Some(t) = &self.trace {
            t.dump(self.index);
        }
        let state = self.snapshot();
        let (insn_bytes, disassembly) = crate::disasm::at_rip(&state, &self.core.mem);
        self.core.counters.bump(ExitReasonKind::Failure);
        Exit::Failed(Box::new(VcpuFailure {
            what: what.into(),
            detail: detail.into(),
            insn_bytes,
            disassembly,
            state,
        }))
    }

    /// What an event delivery means for `run`: `None` to go on (the handler is entered), or
    /// the exit that ends it (a triple fault, or a delivery the CPU cannot do).
    fn after_delivery(&mut self, d: Delivered) -> Option<Exit> {
        match d {
            Delivered::Ok => None,
            Delivered::Shutdown => Some(self.shutdown()),
            Delivered::Unsupported(w) => Some(self.failed("unsupported", w)),
        }
    }

    fn snapshot(&self) -> CpuState {
        let mut s = self.core.s.clone();
        s.rflags = self.core.rflags();
        s.tsc = self.core.tsc();
        s
    }

    /// Serves what other vCPUs said about code (`xmc`): pages to protect from fast writes, and
    /// writes that may have overwritten this vCPU's code.
    #[cold]
    fn read_mail(&mut self) {
        let Some((x, i)) = self.core.cache.xmc.clone() else {
            return;
        };
        for m in x.take_mail(i) {
            match m {
                xmc::Mail::Protect(page) => self.core.code_page(page),
                xmc::Mail::Written { pa, len } => {
                    self.core.cache.invalidate_range(pa, len);
                }
                xmc::Mail::Overflow => {
                    self.core.tlb.flush(false);
                    self.core.cache.clear();
                }
            }
        }
    }

    fn run_loop(&mut self, io: &dyn IoHandler) -> Exit {
        loop {
            // A block boundary: under deterministic time, report the instructions retired.
            if let Some(limit) = self.time.sync(io, self.index, &mut self.core)
                && let Some(j) = self.jit.as_deref_mut()
            {
                j.set_icount_limit(limit);
            }
            if let Some((x, i)) = &self.core.cache.xmc
                && x.has_mail(*i)
            {
                self.read_mail();
            }
            if self.kicker.pending() {
                self.core.counters.bump(ExitReasonKind::Interrupted);
                return Exit::Stopped;
            }
            if self.core.cache.full() {
                self.flush_tb();
            }
            let mut ctx = Ctx {
                c: &mut self.core,
                io,
            };
            if let Some(e) = ctx.c.s.events.exception.take() {
                let d = ctx.raise(e.vector, e.error_code);
                if let Some(exit) = self.after_delivery(d) {
                    return exit;
                }
                continue;
            }
            if let Some(v) = ctx.c.s.events.interrupt {
                if ctx.interrupts_open() {
                    ctx.c.s.events.interrupt = None;
                    self.halted = false;
                    let rip = ctx.c.s.rip;
                    match ctx.deliver(v, None, Source::External, rip) {
                        Ok(()) => {}
                        Err(Fault::Exc { vector, code }) => {
                            let d = ctx.raise(vector, code);
                            if let Some(exit) = self.after_delivery(d) {
                                return exit;
                            }
                        }
                        Err(Fault::Unsupported(w)) => return self.failed("unsupported", w),
                        Err(Fault::Halt) => {}
                    }
                    continue;
                }
            }
            // An NMI: IF does not mask it; it waits while an NMI handler runs (until its IRET)
            // and for the one instruction of an STI or MOV SS shadow.
            if ctx.nmi_deliverable(self.index) {
                ctx.c.s.events.nmi_pending = false;
                ctx.c.s.events.nmi_masked = true;
                self.halted = false;
                let rip = ctx.c.s.rip;
                let d = match ctx.deliver(cpu::vec::NMI, None, Source::External, rip) {
                    Ok(()) => Delivered::Ok,
                    Err(Fault::Exc { vector, code }) => ctx.raise(vector, code),
                    Err(Fault::Unsupported(w)) => Delivered::Unsupported(w),
                    Err(Fault::Halt) => Delivered::Ok,
                };
                if let Some(exit) = self.after_delivery(d) {
                    return exit;
                }
                continue;
            }
            // Interrupt controllers of the machine: acknowledge when the guest can take one.
            if ctx.c.s.events.interrupt.is_none()
                && ctx.interrupts_open()
                && io.interrupt_pending(self.index)
                && let Some(v) = io.acknowledge_interrupt(self.index)
            {
                ctx.c.s.events.interrupt = Some(v);
                self.halted = false;
                continue;
            }
            if self.halted {
                // HLT holds until an interrupt is delivered.
                return Exit::Halt;
            }
            // Debug registers armed: one instruction at a time in the interpreter, instruction
            // breakpoints before it (unless RFLAGS.RF), data breakpoints after it.
            let dbg = debug::armed(&ctx.c.s);
            if dbg {
                ctx.c.dbg_hits = 0;
                let lin = ctx.c.s.linear_rip();
                let hits = debug::exec_hits(&ctx.c.s, lin);
                if hits != 0 && ctx.c.s.rflags & crate::state::rflags::RF == 0 {
                    ctx.c.s.debug.dr6 |= hits;
                    match ctx.raise(cpu::vec::DB, None) {
                        Delivered::Ok => {}
                        Delivered::Shutdown => return self.shutdown(),
                        Delivered::Unsupported(w) => return self.failed("unsupported", w),
                    }
                    continue;
                }
            }
            let ev = &mut ctx.c.s.events;
            let shadow = ev.sti_shadow || ev.mov_ss_shadow;
            // The guest's own single-stepping (RFLAGS.TF at the start of an instruction): one
            // instruction per block, REP strings one iteration, then a #DB trap.
            let tf = ctx.c.s.rflags & crate::state::rflags::TF != 0;
            ctx.c.single_step = self.single_step || tf;
            let single = self.single_step
                || shadow
                || tf
                || !self.breakpoints.is_empty()
                || dbg
                || self.trace.as_ref().is_some_and(|t| t.insns);
            let mode = translate::mode_key(ctx.c, single);
            let rip = ctx.c.s.rip;
            let lin = if ctx.c.long64() {
                rip
            } else {
                ctx.c.s.cs.base.wrapping_add(rip) & 0xffff_ffff
            };
            if !self.breakpoints.is_empty()
                && self.resume_at.take() != Some(lin)
                && self.breakpoints.contains(&lin)
            {
                ctx.c.counters.bump(ExitReasonKind::Debug);
                return Exit::Breakpoint(lin);
            }
            let key = mode | u32::from(ctx.c.cpl()) << 8;
            let epoch = ctx.c.tlb.epoch.wrapping_add(ctx.c.cache.epoch);
            let mut uncached = None;
            if self.jmp.get(lin, key, epoch).is_none() {
                match block_for(&mut ctx, mode, rip, single) {
                    Ok((b, true)) => {
                        let epoch = ctx.c.tlb.epoch.wrapping_add(ctx.c.cache.epoch);
                        self.jmp.put(lin, key, epoch, b);
                    }
                    Ok((b, false)) => uncached = Some(b),
                    Err(f) => match self.fault(io, f, 0) {
                        Some(exit) => return exit,
                        None => {
                            if self.single_step {
                                return Exit::SingleStep;
                            }
                            continue;
                        }
                    },
                }
            }
            let epoch = ctx.c.tlb.epoch.wrapping_add(ctx.c.cache.epoch);
            let block = match &uncached {
                Some(b) => b,
                None => match self.jmp.get(lin, key, epoch) {
                    Some(b) => b,
                    None => continue,
                },
            };
            if shadow {
                let ev = &mut ctx.c.s.events;
                ev.sti_shadow = false;
                ev.mov_ss_shadow = false;
            }
            ctx.c.smc = false;
            if let Some(t) = self.trace.as_deref_mut() {
                t.block(self.index, lin, ctx.c.icount);
                if t.insns {
                    let g = &ctx.c.s.gpr;
                    t.line(format_args!(
                        "trace[{}]: {lin:#x} {:<40} rax={:x} rcx={:x} rdx={:x} rbx={:x} rsp={:x} rbp={:x} rsi={:x} rdi={:x}",
                        self.index, block.insns[0], g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]
                    ));
                }
            }
            // JIT hook: compiled code runs the block (and what it chains to) unless stepping.
            let outcome = match self.jit.as_deref_mut() {
                Some(j) if !single => j.run(&mut ctx, block, lin, key, uncached.is_none()),
                None if !single && self.trace.is_none() && !self.time.on() => chain(
                    &mut ctx,
                    &self.jmp,
                    &self.kicker,
                    &mut self.temps,
                    block,
                    key,
                ),
                _ => interp::run(&mut ctx, block, &mut self.temps),
            };
            match outcome {
                Outcome::Done(n) => {
                    ctx.c.icount = ctx.c.icount.wrapping_add(u64::from(n));
                    // RF lasts one instruction (an IRET that sets it ends its block).
                    if n > 0
                        && ctx.c.s.rflags & crate::state::rflags::RF != 0
                        && block.insns.last().is_none_or(|i| {
                            !matches!(
                                i.mnemonic(),
                                iced_x86::Mnemonic::Iret
                                    | iced_x86::Mnemonic::Iretd
                                    | iced_x86::Mnemonic::Iretq
                            )
                        })
                    {
                        ctx.c.s.rflags &= !crate::state::rflags::RF;
                    }
                    if dbg && n > 0 && ctx.c.dbg_hits != 0 {
                        // A data breakpoint: a trap after the instruction (with BS too if TF).
                        ctx.c.s.debug.dr6 |= ctx.c.dbg_hits;
                        if !tf {
                            match ctx.raise(cpu::vec::DB, None) {
                                Delivered::Ok => {}
                                Delivered::Shutdown => return self.shutdown(),
                                Delivered::Unsupported(w) => return self.failed("unsupported", w),
                            }
                        }
                    }
                    if tf && n > 0 && !block.insns.is_empty() {
                        let insn = block.insns[0];
                        let d = single_step_trap(&mut ctx, &insn);
                        if let Some(exit) = self.after_delivery(d) {
                            return exit;
                        }
                    }
                }
                Outcome::Fault(n, f) => {
                    if let Some(exit) = self.fault(io, f, n) {
                        return exit;
                    }
                }
            }
            if self.single_step {
                self.core.counters.bump(ExitReasonKind::Debug);
                return Exit::SingleStep;
            }
        }
    }

    /// Flushes every translated block because the cache is full (at a block boundary: no block
    /// runs). The jump cache lets go of its blocks; the JIT drops its code and every chain
    /// when it next runs (the cache tells it through `JitEvents::cleared`).
    #[cold]
    fn flush_tb(&mut self) {
        self.core.cache.clear();
        self.core.cache.flushes += 1;
        self.jmp.clear();
    }

    /// Handles a fault of instruction `n` of a block: `None` to go on running.
    fn fault(&mut self, io: &dyn IoHandler, f: Fault, n: u16) -> Option<Exit> {
        let mut ctx = Ctx {
            c: &mut self.core,
            io,
        };
        match f {
            Fault::Halt => {
                ctx.c.icount = ctx.c.icount.wrapping_add(u64::from(n) + 1);
                ctx.c.counters.bump(ExitReasonKind::Halt);
                self.halted = true;
                Some(Exit::Halt)
            }
            Fault::Exc { vector, code } => {
                ctx.c.icount = ctx.c.icount.wrapping_add(u64::from(n));
                if let Some(t) = self.trace.as_ref().filter(|t| t.exc) {
                    let s = &ctx.c.s;
                    t.line(format_args!(
                        "trace[{}]: exception {vector} code {code:x?} at {:04x}:{:#x} cr2={:#x} icount {}",
                        self.index, s.cs.selector, s.rip, s.cr2, ctx.c.icount
                    ));
                }
                let code = if vector == cpu::vec::PF {
                    ctx.rmw_page_fault(code)
                } else {
                    code
                };
                match ctx.raise(vector, code) {
                    Delivered::Ok => None,
                    Delivered::Shutdown => Some(self.shutdown()),
                    Delivered::Unsupported(w) => Some(self.failed("unsupported", w)),
                }
            }
            Fault::Unsupported(w) => {
                ctx.c.icount = ctx.c.icount.wrapping_add(u64::from(n));
                Some(self.failed("the software CPU cannot execute this", w))
            }
        }
    }

    /// Strict ISA mode: a valid instruction this CPU does not implement stops the vCPU with a
    /// failure report instead of raising #UD in the guest.
    pub fn set_strict_isa(&mut self, on: bool) {
        self.core.strict_isa = on;
    }

    /// The JIT's counters, when this vCPU runs compiled code.
    pub fn jit_stats(&self) -> Option<JitStats> {
        self.jit.as_ref().map(|j| j.stats())
    }

    /// The JIT, for its tests.
    #[cfg(test)]
    fn jit(&self) -> Option<&jit::Jit> {
        self.jit.as_deref()
    }

    fn shutdown(&mut self) -> Exit {
        if let Some(t) = &self.trace {
            t.dump(self.index);
        }
        self.core.counters.bump(ExitReasonKind::Shutdown);
        Exit::Shutdown(Box::new(self.snapshot()))
    }
}

/// The cached block at `rip`, translating it on a miss.
/// The single-step trap after an instruction that started with RFLAGS.TF set: #DB with DR6.BS,
/// returning to the next instruction. None after a software interrupt (its delivery cleared TF
/// and entered the handler, which is not stepped), and none yet after MOV SS / POP SS (the trap
/// comes after the next instruction, which also starts with TF set).
fn single_step_trap(ctx: &mut Ctx, insn: &iced_x86::Instruction) -> Delivered {
    use iced_x86::Mnemonic;
    if matches!(
        insn.mnemonic(),
        Mnemonic::Int | Mnemonic::Int3 | Mnemonic::Into | Mnemonic::Int1
    ) && ctx.c.s.rflags & crate::state::rflags::TF == 0
    {
        return Delivered::Ok;
    }
    if ctx.c.s.events.mov_ss_shadow {
        return Delivered::Ok;
    }
    ctx.c.s.debug.dr6 |= debug::DR6_BS;
    ctx.raise(1, None)
}

/// Interprets `first` and then, for as long as nothing needs the main loop, the blocks that
/// follow it from the jump cache; returns the outcome of the last block run (the instructions of
/// the others are counted here).
///
/// The main loop's work between blocks (events, deterministic time, the mode key, the block
/// lookup) dominated short interpreted blocks. A block without helper calls cannot change the
/// mode, the segments, the privilege level or the pending events, so the next block's key is
/// this one's; the loop still stops for a kick, an interrupt the guest can take, and a jump
/// cache miss.
fn chain(
    ctx: &mut Ctx,
    jmp: &cache::JmpCache,
    kicker: &Kicker,
    temps: &mut [u64; interp::TEMPS],
    first: &Arc<ir::Block>,
    key: u32,
) -> Outcome {
    let mut block = first;
    loop {
        ctx.c.smc = false;
        let outcome = interp::run(ctx, block, temps);
        let Outcome::Done(n) = outcome else {
            return outcome;
        };
        if block.helpers || kicker.pending() {
            return outcome;
        }
        let c = &*ctx.c;
        let ev = &c.s.events;
        if ev.exception.is_some() || ev.interrupt.is_some() || ev.nmi_pending {
            return outcome;
        }
        if c.s.rflags & crate::state::rflags::IF != 0 && ctx.io.interrupt_pending(c.index) {
            return outcome;
        }
        let rip = c.s.rip;
        let lin = if c.long64() {
            rip
        } else {
            c.s.cs.base.wrapping_add(rip) & 0xffff_ffff
        };
        let epoch = c.tlb.epoch.wrapping_add(c.cache.epoch);
        let Some(next) = jmp.get(lin, key, epoch) else {
            return outcome;
        };
        ctx.c.icount = ctx.c.icount.wrapping_add(u64::from(n));
        block = next;
    }
}

fn block_for(
    ctx: &mut Ctx,
    mode: u32,
    rip: u64,
    single: bool,
) -> Result<(Arc<ir::Block>, bool), Fault> {
    let lin = if ctx.c.long64() {
        rip
    } else {
        ctx.c.s.cs.base.wrapping_add(rip) & 0xffff_ffff
    };
    let user = ctx.c.cpl() == 3;
    if let Ok(e) = ctx.translate(lin, mmu::Acc::X, user) {
        let phys = e.phys | (lin & 0xfff);
        if let Some(b) = ctx.c.cache.get(phys, mode, rip) {
            match b.page2 {
                None => return Ok((b, true)),
                // Spills into the next page: still valid only if that page maps as it did.
                Some((lin2, phys2)) => {
                    if ctx
                        .translate(lin2, mmu::Acc::X, user)
                        .is_ok_and(|e| e.phys == phys2)
                    {
                        return Ok((b, false));
                    }
                }
            }
        }
    }
    let max = if single { 1 } else { translate::MAX_BLOCK };
    let (b, cacheable) = translate::translate(ctx, mode, max)?;
    ctx.c.translated += 1;
    if cacheable {
        for page in ctx.c.cache.insert(b.clone()) {
            ctx.c.code_page(page);
        }
    }
    // A two-page block is cached for lookups here, but reported as uncached: it stays out of
    // the jump cache (each run checks the second page's mapping) and the JIT.
    let simple = cacheable && b.page2.is_none();
    Ok((b, simple))
}

impl Vcpu for SoftVcpu {
    fn index(&self) -> usize {
        self.core.index
    }

    fn state(&mut self) -> Result<CpuState, VcpuError> {
        let s = self.snapshot();
        self.tsc_read = Some(s.tsc);
        Ok(s)
    }

    fn set_state(&mut self, state: &CpuState) -> Result<(), VcpuError> {
        self.core.s = state.clone();
        self.core.set_rflags(state.rflags);
        // Writing back the TSC that `state` last read leaves the counter running: a state
        // that goes out and comes back (a start-up IPI, the differ) does not set it back by
        // the time in between.
        if self.tsc_read.take() != Some(state.tsc) {
            self.core.set_tsc(state.tsc);
        }
        self.core.tlb.flush(false);
        self.core.cache.clear();
        self.jmp.clear();
        self.halted = false;
        self.time.reset();
        Ok(())
    }

    fn run(&mut self, io: &dyn IoHandler) -> Result<Exit, VcpuError> {
        self.time.begin(io);
        self.resume_at = Some(self.core.s.linear_rip());
        Ok(self.run_loop(io))
    }

    fn set_single_step(&mut self, on: bool) -> Result<(), VcpuError> {
        self.single_step = on;
        self.core.single_step = on;
        Ok(())
    }

    fn inject_interrupt(&mut self, vector: u8) -> Result<(), VcpuError> {
        self.core.s.events.interrupt = Some(vector);
        Ok(())
    }

    fn kicker(&self) -> Kicker {
        self.kicker.clone()
    }

    fn set_breakpoints(&mut self, breakpoints: &[Breakpoint]) -> Result<(), VcpuError> {
        crate::debug::check(breakpoints)?;
        self.breakpoints = breakpoints.iter().map(|b| b.addr).collect();
        Ok(())
    }

    fn memory(&self) -> &GuestMemory {
        &self.core.mem
    }

    fn counters(&self) -> ExitCounters {
        let mut c = self.core.counters.clone();
        c.instructions = Some(self.core.icount);
        c.extra
            .insert("soft tlb misses".to_string(), self.core.tlb_misses);
        c.extra
            .insert("blocks translated".to_string(), self.core.translated);
        c.extra.insert(
            "tb flushes (cache full)".to_string(),
            self.core.cache.flushes,
        );
        if let Some(j) = self.jit_stats() {
            for (k, v) in [
                ("jit blocks compiled", j.compiled),
                ("jit blocks chained", j.chained),
                ("jit code entries", j.entries),
                ("jit blocks invalidated", j.invalidated),
                ("jit blocks interpreted", j.interpreted),
                ("jit blocks refused", j.refused),
                ("jit cache flushes", j.flushes),
                ("jit slow memory accesses", j.slow_accesses),
            ] {
                c.extra.insert(k.to_string(), v);
            }
        }
        c
    }
}
