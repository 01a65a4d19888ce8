//! The per-instruction lockstep run: a [`Lockstep`] steps both backends once per [`Lockstep::step`]
//! and reconciles what single-stepping does differently on each, one method per phase: REP
//! catch-up, KVM's REP batch, the MOV SS shadow, CPUID/TSC replay, exception catch-up and
//! undefined-flag pinning. Every phase returns `Result<_, DiffEnd>`: a host error (a
//! [`VcpuError`]) or the end of the run leaves through `?`.

use std::collections::BTreeMap;

use iced_x86::{
    Formatter, Instruction, InstructionInfoFactory, IntelFormatter, Mnemonic, Register,
};
use janus_accel::disasm::fetch_insn;
use janus_accel::{AccelKind, CpuState, Exit, IoHandler, VcpuError};

use super::compare::{compare, iced_flags_to_rflags, pin_fpu_pointers};
use super::replay::{Recorder, Replayer};
use super::undefined::{count_undefined, dest_register};
use super::{
    DiffEnd, DiffOptions, Divergence, Oracle, Side, StepInsn, TimedStep, compare_ram,
    compare_ranges, copy_ram, copy_ranges, exit_name, interrupt_step, software_count, step_once,
    written_ranges,
};
use crate::control::{Control, StopReason};
use crate::platform::Platform;

impl From<VcpuError> for DiffEnd {
    /// A host failure ends the run as agreed so far, naming the failure.
    fn from(e: VcpuError) -> Self {
        DiffEnd::Agreed(StopReason::HostError(e.to_string()))
    }
}

/// What the timers phase decided before a step.
enum Before {
    /// Step, after this interrupt was injected into both (if any).
    Step(Option<u8>),
    /// Nothing to step this time round (an interrupt was delivered, or the clock jumped).
    Again,
}

/// One instruction in flight: what A saw before it, and both sides after it.
struct InFlight {
    insn: Instruction,
    before: CpuState,
    exit_a: Exit,
    exit_b: Exit,
    sa: CpuState,
    sb: CpuState,
}

/// Two backends driven one instruction at a time.
pub(super) struct Lockstep<'r> {
    a: Side,
    b: Side,
    /// The machine's devices (A's, recorded for B through `recorder`).
    io: &'r dyn IoHandler,
    recorder: Recorder<'r>,
    replayer: Replayer,
    control: &'r Control,
    opts: &'r DiffOptions,
    /// The interrupt controllers and clock under deterministic time.
    timed: Option<std::sync::Arc<Platform>>,
    formatter: IntelFormatter,
    /// Steps agreed so far.
    pub steps: u64,
    /// Instructions A could not run, by mnemonic.
    pub no_oracle: BTreeMap<String, u64>,
    halted: bool,
    retired: u64,
}

impl<'r> Lockstep<'r> {
    /// A lockstep run of `a` (its I/O to `io`, recorded) against `b`.
    pub fn new(
        (a, b): (Side, Side),
        io: &'r dyn IoHandler,
        control: &'r Control,
        opts: &'r DiffOptions,
        timed: Option<std::sync::Arc<Platform>>,
    ) -> Self {
        let retired = software_count(&a, &b);
        Lockstep {
            a,
            b,
            io,
            recorder: Recorder::new(io),
            replayer: Replayer::default(),
            control,
            opts,
            timed,
            formatter: IntelFormatter::new(),
            steps: 0,
            no_oracle: BTreeMap::new(),
            halted: false,
            retired,
        }
    }

    /// Steps until the backends disagree, the guest stops or the step limit is reached.
    pub fn run(&mut self) -> DiffEnd {
        loop {
            if self.steps >= self.opts.max_steps {
                return DiffEnd::StepLimit;
            }
            if let Err(end) = self.step() {
                return end;
            }
        }
    }

    /// One instruction on both sides, compared.
    fn step(&mut self) -> Result<(), DiffEnd> {
        let Before::Step(injected) = self.timers()? else {
            return Ok(());
        };
        let before = self.a.vcpu.state()?;
        let (bytes, insn) = fetch_insn(&before, &self.a.mem);
        let mut text = String::new();
        if let Some(v) = injected {
            text = format!(
                "(interrupt {v:#04x} delivered, then the handler's first instruction; before it) "
            );
        }
        self.formatter.format(&insn, &mut text);
        let oracle = match self.opts.a {
            AccelKind::Kvm
                if self.a.pvm && !(before.cs.dpl == 3 && before.code_bitness() == 64) =>
            {
                Oracle::KvmEmulator
            }
            AccelKind::Kvm => Oracle::Hardware,
            AccelKind::Interp | AccelKind::Jit => Oracle::Software,
        };
        let writes = written_ranges(&insn, &before, &self.a.mem);
        let exit_a = self.a.vcpu.run(&self.recorder);
        self.replayer.load(self.recorder.take());
        let exit_b = self.b.vcpu.run(&self.replayer);
        let (exit_a, exit_b) = (exit_a?, exit_b?);
        if self.no_oracle(&insn, &exit_a) {
            return Ok(());
        }
        let (sa, sb) = (self.a.vcpu.state()?, self.b.vcpu.state()?);
        let mut f = InFlight {
            insn,
            before,
            exit_a,
            exit_b,
            sa,
            sb,
        };
        self.mov_ss(&mut f)?;
        self.rep_catch_up(&mut f)?;
        self.kvm_rep_batch(&mut f)?;
        self.replay_cpuid_tsc(&mut f)?;
        // The exits are compared as they were before B catches up into a handler.
        let is_hlt = f.insn.mnemonic() == Mnemonic::Hlt;
        let same_exit = match (&f.exit_a, &f.exit_b) {
            (Exit::SingleStep | Exit::Stopped, Exit::SingleStep | Exit::Stopped) => true,
            (Exit::Halt | Exit::SingleStep, Exit::Halt | Exit::SingleStep) if is_hlt => true,
            (Exit::Shutdown(_), Exit::Shutdown(_)) => true,
            (x, y) => std::mem::discriminant(x) == std::mem::discriminant(y),
        };
        self.exception_catch_up(&mut f)?;
        let by_count = count_undefined(&f.insn, &f.before);
        let undefined = iced_flags_to_rflags(f.insn.rflags_undefined()) | by_count.flags;
        if by_count.result {
            self.pin_result(&mut f, &writes)?;
        }
        if matches!(oracle, Oracle::Hardware) {
            pin_fpu_pointers(&f.sa, &mut f.sb);
        }
        let fields = compare(&f.sa, &f.sb, undefined);
        if fields.is_empty() {
            self.pin_undefined(&mut f, undefined)?;
        }
        let mut memory = Vec::new();
        compare_ranges(&self.a.mem, &self.b.mem, &writes, &mut memory);
        let step = self.steps;
        if let Some(p) = &self.timed {
            // Time moves with the instructions the software side retired.
            let now = software_count(&self.a, &self.b);
            p.retired(0, now.wrapping_sub(self.retired));
            self.retired = now;
            // A halt holds (the software CPU stays halted; KVM's single-step may report the HLT
            // as a step and would run on) until an interrupt or an NMI is delivered (with IF=0
            // the run goes on only while an NMI can come: see `stopped`).
            self.halted =
                is_hlt || matches!(f.exit_a, Exit::Halt) || matches!(f.exit_b, Exit::Halt);
        }
        let stopping = self.control.stopping()
            || matches!(f.exit_a, Exit::Shutdown(_) | Exit::Failed(_))
            || (matches!(f.exit_a, Exit::Halt) && self.timed.is_none());
        // An interrupt frame is written where the decoded instruction says nothing of.
        if memory.is_empty()
            && ((step + 1) % self.opts.ram_every == 0 || stopping || injected.is_some())
        {
            memory = compare_ram(&self.a.mem, &self.b.mem);
        }
        let io_mismatch = self.replayer.finish();
        if !same_exit || !fields.is_empty() || !memory.is_empty() || !io_mismatch.is_empty() {
            return Err(DiffEnd::Diverged(Box::new(Divergence {
                step,
                insn: StepInsn {
                    cs: f.before.cs.selector,
                    rip: f.before.rip,
                    bytes,
                    text,
                },
                oracle,
                before: f.before,
                exits: (!same_exit).then(|| (exit_name(&f.exit_a), exit_name(&f.exit_b))),
                a: f.sa,
                b: f.sb,
                fields,
                memory,
                io: io_mismatch,
            })));
        }
        self.steps += 1;
        self.stopped(&f, is_hlt)
    }

    /// Under deterministic time: injects or delivers the interrupt due, or jumps the clock of a
    /// halted pair (see [`interrupt_step`]).
    fn timers(&mut self) -> Result<Before, DiffEnd> {
        let Some(p) = self.timed.clone() else {
            return Ok(Before::Step(None));
        };
        let kinds = (self.opts.a, self.opts.b);
        match interrupt_step(&p, (&mut self.a, &mut self.b), kinds, self.io, self.halted)? {
            TimedStep::Inject(v) => {
                self.halted = false;
                Ok(Before::Step(Some(v)))
            }
            TimedStep::Nmi => {
                self.halted = false;
                Ok(Before::Step(None))
            }
            TimedStep::Delivered => {
                self.halted = false;
                self.steps += 1;
                let now = software_count(&self.a, &self.b);
                p.retired(0, now.wrapping_sub(self.retired));
                self.retired = now;
                Ok(Before::Again)
            }
            TimedStep::Idle => Ok(Before::Again),
            TimedStep::Asleep => Err(DiffEnd::Agreed(StopReason::HostError(
                "halted with no timer armed: nothing can wake the guest in lockstep".into(),
            ))),
            TimedStep::Run => Ok(Before::Step(None)),
        }
    }

    /// KVM could not run the instruction: there is no oracle, so B's result becomes A's and
    /// the run goes on. Returns whether that happened.
    fn no_oracle(&mut self, insn: &Instruction, exit_a: &Exit) -> bool {
        let Exit::Failed(f) = exit_a else {
            return false;
        };
        if !f.what.starts_with("KVM internal error") {
            return false;
        }
        *self
            .no_oracle
            .entry(format!("{:?}", insn.mnemonic()).to_lowercase())
            .or_default() += 1;
        if let Ok(sb) = self.b.vcpu.state() {
            // All of memory, not only the instruction's operands: an INT3 or INTO that
            // delivers an exception also writes its frame on the stack.
            copy_ram(&self.b.mem, &self.a.mem);
            let _ = self.a.vcpu.set_state(&sb);
        }
        let _ = self.replayer.finish();
        self.steps += 1;
        true
    }

    /// MOV SS / POP SS inhibit the single-step trap for one instruction on hardware: B steps
    /// once more.
    fn mov_ss(&mut self, f: &mut InFlight) -> Result<(), DiffEnd> {
        let ss_load = matches!(f.insn.mnemonic(), Mnemonic::Mov | Mnemonic::Pop)
            && f.insn.op0_register() == Register::SS;
        if ss_load && f.sb.rip != f.sa.rip && matches!(f.exit_b, Exit::SingleStep) {
            (f.exit_b, f.sb) = step_once(&mut self.b, &self.replayer)?;
        }
        Ok(())
    }

    /// The REP counter at the instruction's address size.
    fn counter(insn: &Instruction, s: &CpuState) -> u64 {
        let addr_size = InstructionInfoFactory::new()
            .info(insn)
            .used_memory()
            .first()
            .map_or(iced_x86::CodeSize::Code64, |m| m.address_size());
        match addr_size {
            iced_x86::CodeSize::Code16 => s.gpr[1] & 0xffff,
            iced_x86::CodeSize::Code32 => s.gpr[1] & 0xffff_ffff,
            _ => s.gpr[1],
        }
    }

    fn is_rep(insn: &Instruction) -> bool {
        insn.has_rep_prefix() || insn.has_repne_prefix()
    }

    /// KVM runs a whole `rep ins/outs` in one I/O exit; the software backend steps one
    /// iteration at a time, as TF does on hardware. Let B catch up within the instruction.
    fn rep_catch_up(&mut self, f: &mut InFlight) -> Result<(), DiffEnd> {
        if !Self::is_rep(&f.insn) {
            return Ok(());
        }
        let mut catch_up = 0;
        while matches!(f.exit_b, Exit::SingleStep)
            && f.sb.rip == f.before.rip
            && (f.sa.rip != f.before.rip
                || Self::counter(&f.insn, &f.sb) != Self::counter(&f.insn, &f.sa))
            && catch_up < 1 << 20
        {
            (f.exit_b, f.sb) = step_once(&mut self.b, &self.replayer)?;
            catch_up += 1;
        }
        Ok(())
    }

    /// KVM's emulator may end a batch after the last iteration (RCX exhausted, or the
    /// REPE/REPNE condition met) with RIP still at the instruction and RF set: RIP moves on
    /// only at the next entry, without another iteration. B has finished the instruction, as
    /// hardware does: step A once more to let it finish too.
    fn kvm_rep_batch(&mut self, f: &mut InFlight) -> Result<(), DiffEnd> {
        if Self::is_rep(&f.insn)
            && f.sa.rip == f.before.rip
            && f.sb.rip == f.insn.next_ip()
            && Self::counter(&f.insn, &f.sa) == Self::counter(&f.insn, &f.sb)
            && matches!(f.exit_a, Exit::SingleStep)
        {
            f.exit_a = self.a.vcpu.run(&self.recorder)?;
            self.replayer.load(self.recorder.take());
            f.sa = self.a.vcpu.state()?;
        }
        Ok(())
    }

    /// CPUID describes each backend's own features, and each backend has its own clock: A's
    /// CPUID, RDTSC and RDTSCP results are given to B.
    fn replay_cpuid_tsc(&mut self, f: &mut InFlight) -> Result<(), DiffEnd> {
        let replayed: &[usize] = match f.insn.mnemonic() {
            Mnemonic::Cpuid => &[0, 1, 2, 3],
            Mnemonic::Rdtsc => &[0, 2],
            Mnemonic::Rdtscp => &[0, 1, 2],
            _ => &[],
        };
        if !replayed.is_empty() && f.sa.rip == f.sb.rip {
            for &r in replayed {
                f.sb.gpr[r] = f.sa.gpr[r];
            }
            self.b.vcpu.set_state(&f.sb)?;
        }
        Ok(())
    }

    /// An exception delivered by the step: hardware single-step runs into the handler (the
    /// trap is taken after its first instruction, or not until a HLT there), while the software
    /// backend stops at the handler's entry. Let B catch up to A's RIP.
    fn exception_catch_up(&mut self, f: &mut InFlight) -> Result<(), DiffEnd> {
        let mut catch_up = 0;
        while f.sb.rip != f.sa.rip
            && f.sb.rip != f.before.rip
            && matches!(f.exit_b, Exit::SingleStep)
            && catch_up < 4
        {
            (f.exit_b, f.sb) = step_once(&mut self.b, &self.replayer)?;
            catch_up += 1;
        }
        Ok(())
    }

    /// Flags the instruction left undefined are pinned to A's values, so that a later
    /// instruction reading them compares defined behaviour only.
    fn pin_undefined(&mut self, f: &mut InFlight, undefined: u64) -> Result<(), DiffEnd> {
        if (f.sa.rflags ^ f.sb.rflags) & undefined != 0 {
            f.sb.rflags = (f.sb.rflags & !undefined) | (f.sa.rflags & undefined);
            self.b.vcpu.set_state(&f.sb)?;
        }
        Ok(())
    }

    /// The instruction's result is undefined for its count (see [`count_undefined`]): once
    /// both sides have completed it, B's destination (the register's written bits, or the
    /// bytes written in memory) becomes A's, and everything else is still compared.
    fn pin_result(&mut self, f: &mut InFlight, writes: &[(u64, usize)]) -> Result<(), DiffEnd> {
        if f.sa.rip != f.sb.rip || f.sa.rip == f.before.rip {
            return Ok(());
        }
        if let Some((n, mask)) = dest_register(&f.insn) {
            if (f.sa.gpr[n] ^ f.sb.gpr[n]) & mask != 0 {
                f.sb.gpr[n] = (f.sb.gpr[n] & !mask) | (f.sa.gpr[n] & mask);
                self.b.vcpu.set_state(&f.sb)?;
            }
        } else {
            copy_ranges(&self.a.mem, &self.b.mem, writes);
        }
        Ok(())
    }

    /// After an agreeing step: whether the guest stopped (the same way on both).
    fn stopped(&self, f: &InFlight, is_hlt: bool) -> Result<(), DiffEnd> {
        let halted_off = || {
            DiffEnd::Agreed(StopReason::HaltedInterruptsOff {
                vcpu: 0,
                cs: f.sa.cs.selector,
                rip: f.sa.rip,
            })
        };
        // With IF=0 only an NMI can wake it: one waiting, or an IOAPIC pin in NMI mode.
        let if_off = f.sa.rflags & janus_accel::state::rflags::IF == 0
            && (f.sa.events.nmi_masked || !self.timed.as_ref().is_some_and(|p| p.nmi_may_come(0)));
        match &f.exit_a {
            Exit::Shutdown(s) => {
                return Err(DiffEnd::Agreed(StopReason::TripleFault(s.clone())));
            }
            Exit::Halt if if_off => return Err(halted_off()),
            Exit::Failed(r) => return Err(DiffEnd::Agreed(StopReason::VcpuFailed(r.clone()))),
            _ => {}
        }
        // A HLT ran inside the step (an exception handler's first instruction, which hardware
        // single-step runs before trapping and B ran while catching up): the software CPU now
        // stays halted, so with interrupts off the run is over.
        if (is_hlt || matches!(f.exit_b, Exit::Halt)) && if_off {
            return Err(halted_off());
        }
        if let Some(r) = self.control.reason() {
            return Err(DiffEnd::Agreed(r));
        }
        Ok(())
    }
}
