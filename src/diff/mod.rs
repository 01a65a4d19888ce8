//! The lockstep differ: one guest on two backends, one instruction at a time, reporting the first
//! instruction after which their states, memory writes or device accesses disagree.
//!
//! Each backend gets its own copy of guest memory, loaded identically. Backend A talks to the
//! real devices (its accesses are recorded); backend B is served A's recorded reads and its writes
//! are compared (see [`replay`]). After every step the whole CpuState is compared with the flags
//! the instruction leaves undefined masked (from iced-x86, and for shifts and rotates from their
//! count, see [`undefined`]; a result undefined for its count is pinned to A's), and every byte
//! the instruction's memory operands wrote is compared; all of RAM is compared every `ram_every` steps and at the
//! end, so nothing escapes.
//!
//! KVM single-step pitfalls, handled here: a REP string instruction traps after each iteration
//! (so does the software backend, as hardware's TF does); stepping HLT may give a debug exit
//! instead of a HLT exit (either counts as the step); after MOV SS / POP SS no trap is taken until
//! the next instruction has run (B is stepped once more to catch up); interrupts are blocked
//! while stepping (KVM_GUESTDBG_BLOCKIRQ). An instruction KVM cannot run (internal error) has no
//! oracle: it is counted, B's result is copied to A, and the run goes on.
//!
//! Timer interrupts (`DiffOptions::icount`): the machine's clock is deterministic and driven
//! from here, by the instructions the software side retired after each step; its timers fire
//! between steps, and an interrupt the controllers have for vCPU 0 is injected into both
//! backends before the same instruction (software against software). KVM cannot take an
//! interrupt while single-stepping (KVM_GUESTDBG_BLOCKIRQ): against KVM the software side
//! delivers it and runs the handler's first instruction, and KVM is given that state and memory
//! (that step has no oracle). A halted pair waits by jumping the clock to the next deadline.

mod chunked;
pub mod compare;
mod lockstep;
pub mod replay;
pub mod undefined;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use iced_x86::{
    Formatter, Instruction, InstructionInfoFactory, IntelFormatter, OpAccess, Register,
};
use janus_accel::disasm::fetch_insn;
use janus_accel::registry::{self, AccelConfig, AccelKind};
use janus_accel::{CpuState, Exit, GuestMemory, MemoryError, Vcpu};

use crate::control::{Control, StopReason};
use crate::layout::{self, LoadError};
use crate::machine::{Machine, MachineConfig, MachineError};
use crate::sink::SinkSpec;
use chunked::ChunkEnd;
use compare::{FieldDiff, compare};
use lockstep::Lockstep;
use replay::{Recorder, Replayer};

/// Which reference produced backend A's result for a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Oracle {
    /// The CPU itself ran the instruction (VT-x/AMD-V, or CPL3 64-bit code on kvm_pvm).
    Hardware,
    /// KVM's in-kernel instruction emulator ran it (kvm_pvm for real-mode, 32-bit, kernel code).
    KvmEmulator,
    /// A software backend.
    Software,
}

impl std::fmt::Display for Oracle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Oracle::Hardware => "hardware",
            Oracle::KvmEmulator => "KVM's instruction emulator",
            Oracle::Software => "software backend",
        })
    }
}

/// Options of a lockstep run.
#[derive(Clone, Debug)]
pub struct DiffOptions {
    /// Backend A (the reference).
    pub a: AccelKind,
    /// Backend B (checked against A).
    pub b: AccelKind,
    /// Guest memory in bytes.
    pub mem: u64,
    /// Stop after this many steps.
    pub max_steps: u64,
    /// Compare all of RAM every this many steps.
    pub ram_every: u64,
    /// Where the guest's serial output goes (from backend A's devices).
    pub serial: SinkSpec,
    /// The KVM device node.
    pub kvm_path: PathBuf,
    /// Compare only at the end of the whole program instead of after every instruction.
    pub whole_program: Option<WholeProgram>,
    /// Test-only: backend B, when software, gets the deliberately wrong flag of
    /// `SoftAccel::plant_flag_bug`, so that a test can prove the differ catches it.
    #[doc(hidden)]
    pub plant_bug_in_b: bool,
    /// Deterministic time with timer interrupts (`--icount SHIFT`): the machine's clock
    /// advances 2^SHIFT ns per instruction A retires, its timers fire between steps, and each
    /// interrupt is injected into both backends before the same instruction. `None`: no clock
    /// runs and no interrupt is delivered.
    pub icount: Option<u32>,
    /// Bytes of translated code the two backends keep together (`--tb-size`; each software
    /// side gets half).
    pub tb_size: usize,
    /// The CPU model both sides are (`--cpu`): one CPUID table, so they agree on it.
    pub cpu: janus_accel::cpuid::CpuSpec,
}

/// Whole-program comparison, for where single-stepping the reference is not possible: on
/// kvm_pvm, a single-step trap in CPL3 code is delivered to the guest instead of exiting to
/// janus. Both backends run to the end; the final states and all of memory are compared. The
/// shrinker then finds the instruction responsible.
#[derive(Clone, Debug, Default)]
pub struct WholeProgram {
    /// RFLAGS bits some instruction of the program leaves undefined: masked in the final
    /// state.
    pub undefined_flags: u64,
    /// Physical addresses of saved RFLAGS images (exception frames) to mask the same way.
    pub flag_slots: Vec<u64>,
    /// Wall-time limit for each backend's run.
    pub time_limit: std::time::Duration,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            a: AccelKind::Kvm,
            b: AccelKind::Interp,
            mem: 64 << 20,
            max_steps: 10_000_000,
            ram_every: 10_000,
            serial: SinkSpec::None,
            kvm_path: PathBuf::from(janus_accel::kvm::DEFAULT_DEVICE),
            whole_program: None,
            plant_bug_in_b: false,
            icount: None,
            tb_size: janus_accel::soft::DEFAULT_TB_SIZE,
            cpu: janus_accel::cpuid::CpuSpec::default(),
        }
    }
}

/// The instruction a divergence happened at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepInsn {
    /// CS selector.
    pub cs: u16,
    /// RIP.
    pub rip: u64,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Disassembly.
    pub text: String,
}

/// The first disagreement of a lockstep run.
#[derive(Clone, Debug)]
pub struct Divergence {
    /// Steps completed before this one.
    pub step: u64,
    /// The instruction.
    pub insn: StepInsn,
    /// Who produced A's result.
    pub oracle: Oracle,
    /// State before the instruction.
    pub before: CpuState,
    /// A's state after it.
    pub a: CpuState,
    /// B's state after it.
    pub b: CpuState,
    /// How A's and B's exits differ, if they do.
    pub exits: Option<(String, String)>,
    /// Differing state fields.
    pub fields: Vec<FieldDiff>,
    /// Differing memory: (physical address, A's byte, B's byte), first few.
    pub memory: Vec<(u64, u8, u8)>,
    /// Device-access mismatches.
    pub io: Vec<String>,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "divergence at step {} ({} mode), oracle: {}",
            self.step,
            self.before.mode_name(),
            self.oracle
        )?;
        writeln!(
            f,
            "  instruction {:04x}:{:x}  {:02x?}  {}",
            self.insn.cs, self.insn.rip, self.insn.bytes, self.insn.text
        )?;
        if let Some((a, b)) = &self.exits {
            writeln!(f, "  exits differ: a={a} b={b}")?;
        }
        for d in &self.fields {
            writeln!(f, "  {d}")?;
        }
        for (addr, a, b) in &self.memory {
            writeln!(f, "  memory {addr:#x}: a={a:#04x} b={b:#04x}")?;
        }
        for m in &self.io {
            writeln!(f, "  device: {m}")?;
        }
        writeln!(f, "state before:\n{}", self.before)?;
        writeln!(f, "state after on a:\n{}", self.a)?;
        write!(f, "state after on b:\n{}", self.b)
    }
}

/// How a lockstep run ended.
#[derive(Clone, Debug)]
pub enum DiffEnd {
    /// The guest stopped (same way on both) after agreeing on every step.
    Agreed(StopReason),
    /// The step limit was reached with no disagreement.
    StepLimit,
    /// The backends disagreed.
    Diverged(Box<Divergence>),
    /// Block-at-a-time lockstep found a block that disagreed, and single-stepping it did not
    /// find the instruction: what differed after the block.
    BlockDiverged {
        /// Instructions agreed before the block.
        start: u64,
        /// The block's length in instructions (at most).
        len: u64,
        /// What differed.
        why: String,
    },
}

/// What a lockstep run found.
#[derive(Clone, Debug)]
pub struct DiffReport {
    /// Steps (instructions, or REP iterations) compared.
    pub steps: u64,
    /// How it ended.
    pub end: DiffEnd,
    /// Instructions backend A could not run (no oracle), by mnemonic.
    pub no_oracle: BTreeMap<String, u64>,
    /// Backend names.
    pub backends: (&'static str, &'static str),
}

struct Side {
    vcpu: Box<dyn Vcpu + Send>,
    mem: GuestMemory,
    /// Whether A's KVM is a kvm_pvm flavour (emulated non-CPL3 code).
    pvm: bool,
}

fn make_side(
    kind: AccelKind,
    mem: GuestMemory,
    opts: &DiffOptions,
    initial: &CpuState,
    planted: bool,
) -> Result<Side, MachineError> {
    let accel = registry::open(
        kind,
        &AccelConfig {
            kvm_path: opts.kvm_path.clone(),
            kvm_fallback: false,
            planted_bug: planted,
            tb_size: opts.tb_size / 2,
            cpu: opts.cpu.clone(),
            ..AccelConfig::new(mem.clone(), 1)
        },
    )?;
    let pvm = accel.caps().flavour.starts_with("kvm_pvm");
    let mut vcpu = accel.create_vcpu(0)?;
    vcpu.set_state(initial)?;
    vcpu.set_single_step(opts.whole_program.is_none())?;
    Ok(Side { vcpu, mem, pvm })
}

/// One more step of `side` (its I/O served by `io`): the exit and the state after it.
fn step_once(
    side: &mut Side,
    io: &dyn janus_accel::IoHandler,
) -> Result<(Exit, CpuState), janus_accel::VcpuError> {
    let exit = side.vcpu.run(io)?;
    Ok((exit, side.vcpu.state()?))
}

/// The instructions retired by the software side of a lockstep pair (A when both are).
fn software_count(a: &Side, b: &Side) -> u64 {
    a.vcpu
        .counters()
        .instructions
        .or(b.vcpu.counters().instructions)
        .unwrap_or(0)
}

/// What the differ does before a step under deterministic time.
enum TimedStep {
    /// Step as usual.
    Run,
    /// This interrupt was injected into both backends: the step delivers it.
    Inject(u8),
    /// An NMI was made pending in both backends' state: the step delivers it.
    Nmi,
    /// The software side delivered this interrupt and ran the handler's first instruction; the
    /// KVM side was given its state and memory (KVM_GUESTDBG_BLOCKIRQ keeps KVM from taking an
    /// interrupt while single-stepping).
    Delivered,
    /// Both are halted and the clock jumped to the next timer: look again.
    Idle,
    /// Both are halted and no timer is armed: nothing can wake the guest.
    Asleep,
}

/// Before a step under deterministic time: injects the interrupt the controllers have for
/// vCPU 0 when A can take one (IF set, no interrupt shadow), into both backends, or, with KVM on
/// one side, delivers it on the software side and copies the result to KVM. With both halted
/// and nothing to take, jumps the clock to the next timer deadline.
fn interrupt_step(
    p: &crate::platform::Platform,
    (a, b): (&mut Side, &mut Side),
    kinds: (AccelKind, AccelKind),
    io: &dyn janus_accel::IoHandler,
    halted: bool,
) -> Result<TimedStep, janus_accel::VcpuError> {
    // An NMI first: IF does not mask it; A's NMI handler (until its IRET) and an STI or MOV SS
    // shadow hold it back. It goes into the state as pending, and the step delivers it.
    if p.nmi_pending(0) {
        let s = a.vcpu.state()?;
        let ev = &s.events;
        let open = !ev.nmi_masked && !ev.nmi_pending && !ev.sti_shadow && !ev.mov_ss_shadow;
        if open && p.take_nmi(0) {
            let pend = |side: &mut Side| -> Result<(), janus_accel::VcpuError> {
                let mut st = side.vcpu.state()?;
                st.events.nmi_pending = true;
                side.vcpu.set_state(&st)
            };
            let (soft, kvm) = match kinds {
                (AccelKind::Kvm, _) => (b, a),
                (_, AccelKind::Kvm) => (a, b),
                _ => {
                    pend(a)?;
                    pend(b)?;
                    return Ok(TimedStep::Nmi);
                }
            };
            pend(soft)?;
            soft.vcpu.run(io)?;
            copy_ram(&soft.mem, &kvm.mem);
            kvm.vcpu.set_state(&soft.vcpu.state()?)?;
            return Ok(TimedStep::Delivered);
        }
    }
    if p.interrupt_pending(0) {
        let s = a.vcpu.state()?;
        let open = s.rflags & janus_accel::state::rflags::IF != 0
            && !s.events.sti_shadow
            && !s.events.mov_ss_shadow
            && s.events.interrupt.is_none();
        if open && let Some(v) = p.acknowledge(0) {
            let (soft, kvm) = match kinds {
                (AccelKind::Kvm, _) => (b, a),
                (_, AccelKind::Kvm) => (a, b),
                _ => {
                    a.vcpu.inject_interrupt(v)?;
                    b.vcpu.inject_interrupt(v)?;
                    return Ok(TimedStep::Inject(v));
                }
            };
            soft.vcpu.inject_interrupt(v)?;
            soft.vcpu.run(io)?;
            copy_ram(&soft.mem, &kvm.mem);
            kvm.vcpu.set_state(&soft.vcpu.state()?)?;
            return Ok(TimedStep::Delivered);
        }
    }
    // Halted and nothing above was taken (none pending, IF=0, or NMIs blocked): time moves on.
    if halted {
        p.set_idle(0, true);
        let jumped = p.idle_jump();
        p.set_idle(0, false);
        return Ok(if jumped {
            TimedStep::Idle
        } else {
            TimedStep::Asleep
        });
    }
    Ok(TimedStep::Run)
}

fn exit_name(e: &Exit) -> String {
    match e {
        Exit::Halt => "halt".into(),
        Exit::Shutdown(_) => "shutdown (triple fault)".into(),
        Exit::SingleStep => "step".into(),
        Exit::Breakpoint(at) => format!("breakpoint at {at:#x}"),
        Exit::Stopped => "stopped".into(),
        Exit::SystemEvent(k) => format!("system event {k:?}"),
        Exit::Failed(f) => format!("failed: {f}"),
    }
}

fn reg_value(s: &CpuState, r: Register) -> Option<u64> {
    use Register as R;
    Some(match r {
        R::ES => s.es.base,
        R::CS => s.cs.base,
        R::SS => s.ss.base,
        R::DS => s.ds.base,
        R::FS => s.fs.base,
        R::GS => s.gs.base,
        R::RIP => s.rip,
        R::EIP => s.rip & 0xffff_ffff,
        _ if r.is_gpr64() => s.gpr[r.number()],
        _ if r.is_gpr32() => s.gpr[r.number()] & 0xffff_ffff,
        _ if r.is_gpr16() => s.gpr[r.number()] & 0xffff,
        _ => return None,
    })
}

/// Physical ranges written by `insn` executed in state `s` (from its decoded memory operands).
fn written_ranges(insn: &Instruction, s: &CpuState, mem: &GuestMemory) -> Vec<(u64, usize)> {
    let mut factory = InstructionInfoFactory::new();
    let info = factory.info(insn);
    let mut out = Vec::new();
    for m in info.used_memory() {
        if !matches!(
            m.access(),
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        ) {
            continue;
        }
        let Some(lin) = m.virtual_address(0, |r, _, _| reg_value(s, r)) else {
            continue;
        };
        let size = m.memory_size().size().clamp(1, 4096);
        for i in 0..size {
            if let Some(pa) = janus_accel::walk::translate(s, mem, lin.wrapping_add(i as u64)) {
                out.push((pa, 1));
            }
        }
    }
    out
}

fn compare_ranges(
    a: &GuestMemory,
    b: &GuestMemory,
    ranges: &[(u64, usize)],
    out: &mut Vec<(u64, u8, u8)>,
) {
    for &(pa, len) in ranges {
        for i in 0..len as u64 {
            let x = a.read_le(pa + i, 1).ok();
            let y = b.read_le(pa + i, 1).ok();
            if x != y && out.len() < 16 {
                out.push((pa + i, x.unwrap_or(0) as u8, y.unwrap_or(0) as u8));
            }
        }
    }
}

/// Copies `ranges` of `from` over `to` (where both have RAM there).
fn copy_ranges(from: &GuestMemory, to: &GuestMemory, ranges: &[(u64, usize)]) {
    for &(pa, len) in ranges {
        for i in 0..len as u64 {
            if let Ok(x) = from.read_le(pa + i, 1) {
                let _ = to.write_le(pa + i, 1, x);
            }
        }
    }
}

/// Compares all of RAM; returns the first few differing bytes.
fn compare_ram(a: &GuestMemory, b: &GuestMemory) -> Vec<(u64, u8, u8)> {
    let mut out = Vec::new();
    const CHUNK: usize = 1 << 20;
    let mut ba = vec![0u8; CHUNK];
    let mut bb = vec![0u8; CHUNK];
    for r in a.regions() {
        let mut off = 0;
        while off < r.size() {
            let n = CHUNK.min((r.size() - off) as usize);
            let addr = r.base() + off;
            if a.read(addr, &mut ba[..n]).is_err() || b.read(addr, &mut bb[..n]).is_err() {
                break;
            }
            if ba[..n] != bb[..n] {
                for i in 0..n {
                    if ba[i] != bb[i] && out.len() < 16 {
                        out.push((addr + i as u64, ba[i], bb[i]));
                    }
                }
                return out;
            }
            off += n as u64;
        }
    }
    out
}

/// Makes `to`'s RAM equal to `from`'s, copying only the chunks that differ.
fn copy_ram(from: &GuestMemory, to: &GuestMemory) {
    const CHUNK: usize = 64 << 10;
    let mut a = vec![0u8; CHUNK];
    let mut b = vec![0u8; CHUNK];
    for r in from.regions() {
        let mut off = 0;
        while off < r.size() {
            let n = CHUNK.min((r.size() - off) as usize);
            let addr = r.base() + off;
            if from.read(addr, &mut a[..n]).is_ok()
                && to.read(addr, &mut b[..n]).is_ok()
                && a[..n] != b[..n]
            {
                let _ = to.write(addr, &a[..n]);
            }
            off += n as u64;
        }
    }
}

/// Runs a flat image on two backends in lockstep.
///
/// # Errors
/// A backend or the machine cannot be set up.
pub fn diff_image(image: &[u8], opts: &DiffOptions) -> Result<DiffReport, MachineError> {
    diff_prepared(image, &|_| Ok(()), None, opts)
}

/// Runs a flat image on two backends in lockstep, after `prepare` has written extra structures
/// into both memories, from `initial` (or the boot-sector state).
///
/// # Errors
/// A backend or the machine cannot be set up.
pub fn diff_prepared(
    image: &[u8],
    prepare: &dyn Fn(&GuestMemory) -> Result<(), MemoryError>,
    initial: Option<&CpuState>,
    opts: &DiffOptions,
) -> Result<DiffReport, MachineError> {
    // Backend A's side is a whole machine (its devices are the real ones); B gets its own copy
    // of the same memory.
    let machine = Machine::new(MachineConfig {
        mem: opts.mem,
        image: Some(image.to_vec()),
        serial: opts.serial.clone(),
        icount: opts.icount,
        ..Default::default()
    })?;
    let (mem_b, _) = layout::build_memory(opts.mem, None)?;
    let boot = crate::loader::flat::load_flat(&mem_b, image)?;
    // Everything else the machine put in memory (the firmware tables) too.
    copy_ram(machine.memory(), &mem_b);
    prepare(machine.memory()).map_err(LoadError::from)?;
    prepare(&mem_b).map_err(LoadError::from)?;
    let initial = initial.unwrap_or(&boot);
    let a = make_side(opts.a, machine.memory().clone(), opts, initial, false)?;
    let b = make_side(opts.b, mem_b, opts, initial, opts.plant_bug_in_b)?;
    Ok(lockstep(
        a,
        b,
        machine.io().clone(),
        machine.control().clone(),
        opts,
    ))
}

/// How `janus diff` boots a whole machine: what `janus run` takes (a kernel with its initrd and
/// command line, or a firmware ROM, or a flat image), and how far to run at full speed first.
#[derive(Clone, Debug, Default)]
pub struct DiffBoot {
    /// The machine, as `janus run` would build it; its memory size, serial output, `--icount`
    /// and CPU model come from the [`DiffOptions`].
    pub machine: MachineConfig,
    /// Run backend A alone at full speed for about this many instructions (by the deterministic
    /// clock: needs `--icount`), then give B its state and memory and start the lockstep there.
    pub skip: u64,
}

/// Boots a whole machine on two backends in lockstep: both start from the state the loaders
/// (or the reset vector) leave and the same RAM; A has the devices, B is served what they gave
/// A. With [`DiffBoot::skip`], A first runs the machine at full speed.
///
/// # Errors
/// A backend or the machine cannot be set up, or `skip` is asked without deterministic time.
pub fn diff_machine(boot: DiffBoot, opts: &DiffOptions) -> Result<DiffReport, MachineError> {
    let backends = (opts.a.name(), opts.b.name());
    let blocks = opts.a.counts_instructions()
        && opts.b.counts_instructions()
        && opts.icount.is_some()
        && opts.whole_program.is_none();
    let (machine, mut a, mut b) = boot_pair(&boot, opts)?;
    if !blocks {
        return Ok(lockstep(
            a,
            b,
            machine.io().clone(),
            machine.control().clone(),
            opts,
        ));
    }
    // Two software backends under deterministic time: block at a time, then the diverging
    // block (if any) again, instruction by instruction, in a fresh boot.
    let io = machine.io().clone();
    let Some(platform) = io.platform.clone() else {
        return Err(MachineError::DiffSkip);
    };
    let (done, end) = chunked::run(
        &mut a,
        &mut b,
        io.as_ref(),
        &platform,
        machine.control(),
        opts.max_steps,
        opts.ram_every,
    );
    let end = match end {
        ChunkEnd::Agreed(r) => DiffEnd::Agreed(r),
        ChunkEnd::Limit => DiffEnd::StepLimit,
        ChunkEnd::Failed(e) => DiffEnd::Agreed(StopReason::HostError(e)),
        ChunkEnd::Diverged { start, why } => {
            drop((machine, a, b));
            return Ok(refine(&boot, opts, start, why));
        }
    };
    Ok(DiffReport {
        steps: done,
        end,
        no_oracle: BTreeMap::new(),
        backends,
    })
}

/// The machine of `boot` (after its skip) and the two sides starting from its state.
fn boot_pair(boot: &DiffBoot, opts: &DiffOptions) -> Result<(Machine, Side, Side), MachineError> {
    let bios_size = boot.machine.bios.as_ref().map(|b| b.len() as u64);
    let mut machine = Machine::new(MachineConfig {
        mem: opts.mem,
        smp: 1,
        serial: opts.serial.clone(),
        icount: opts.icount,
        cpu: opts.cpu.clone(),
        kvm_path: opts.kvm_path.clone(),
        stdin: false,
        ..boot.machine.clone()
    })?;
    let mut initial = machine.initial_state().clone();
    if boot.skip > 0 {
        let (Some(shift), true) = (opts.icount, opts.a.counts_instructions()) else {
            return Err(MachineError::DiffSkip);
        };
        initial = skip_ahead(&mut machine, opts.a, boot.skip << shift)?;
    }
    let (mem_b, _) = layout::build_memory(opts.mem, bios_size)?;
    copy_ram(machine.memory(), &mem_b);
    let a = make_side(opts.a, machine.memory().clone(), opts, &initial, false)?;
    let b = make_side(opts.b, mem_b, opts, &initial, opts.plant_bug_in_b)?;
    Ok((machine, a, b))
}

/// A block that disagreed, found instruction by instruction: boots afresh (the run is
/// deterministic), runs block at a time to the block's start, then single-steps both. Where
/// single-stepping does not disagree within the block (interrupts arrive at instruction
/// rather than block boundaries there), the block's own findings are the report.
fn refine(boot: &DiffBoot, opts: &DiffOptions, start: u64, why: String) -> DiffReport {
    let backends = (opts.a.name(), opts.b.name());
    let block = |steps| DiffReport {
        steps,
        end: DiffEnd::BlockDiverged {
            start,
            len: chunked::CHUNK,
            why: why.clone(),
        },
        no_oracle: BTreeMap::new(),
        backends,
    };
    let Ok((machine, mut a, mut b)) = boot_pair(boot, opts) else {
        return block(start);
    };
    let io = machine.io().clone();
    let Some(platform) = io.platform.clone() else {
        return block(start);
    };
    let (at, end) = chunked::run(
        &mut a,
        &mut b,
        io.as_ref(),
        &platform,
        machine.control(),
        start,
        opts.ram_every,
    );
    if at != start || !matches!(end, ChunkEnd::Limit) {
        return block(start);
    }
    for s in [&mut a, &mut b] {
        if s.vcpu.set_single_step(true).is_err() {
            return block(start);
        }
    }
    let steps = DiffOptions {
        max_steps: chunked::CHUNK * 2,
        ..opts.clone()
    };
    let report = lockstep(a, b, io, machine.control().clone(), &steps);
    match report.end {
        DiffEnd::Diverged(d) => DiffReport {
            steps: start + report.steps,
            end: DiffEnd::Diverged(d),
            ..report
        },
        _ => block(start),
    }
}

/// Runs `machine` on `kind` until its deterministic clock reaches `until_ns` (or the guest
/// stops by itself), and returns the vCPU's state there, with the machine ready for more.
fn skip_ahead(
    machine: &mut Machine,
    kind: AccelKind,
    until_ns: u64,
) -> Result<CpuState, MachineError> {
    let control = machine.control().clone();
    let clock = machine.io().platform.as_ref().map(|p| p.clock().clone());
    let done = std::sync::atomic::AtomicBool::new(false);
    let outcome = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if clock.as_ref().is_none_or(|c| c.now_ns() >= until_ns) {
                    control.request_stop(StopReason::Interrupted);
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        let outcome = machine.run(kind);
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        outcome
    })?;
    if outcome.reason != StopReason::Interrupted {
        return Err(MachineError::DiffSkipEnded(outcome.reason));
    }
    let state = outcome
        .vcpus
        .into_iter()
        .next()
        .and_then(|v| v.state)
        .ok_or(MachineError::DiffSkipEnded(StopReason::Interrupted))?;
    control.resume();
    Ok(*state)
}

fn lockstep(
    a: Side,
    b: Side,
    io: Arc<crate::machine::MachineIo>,
    control: Arc<Control>,
    opts: &DiffOptions,
) -> DiffReport {
    if let Some(w) = &opts.whole_program {
        return whole_program(a, b, io, control, opts, w);
    }
    let backends = (opts.a.name(), opts.b.name());
    // Deterministic time: the machine's interrupt controllers and clock, driven from here.
    let timed = io
        .platform
        .clone()
        .filter(|p| opts.icount.is_some() && p.clock().is_deterministic());
    if timed.is_some() && opts.a == AccelKind::Kvm && opts.b == AccelKind::Kvm {
        return DiffReport {
            steps: 0,
            end: DiffEnd::Agreed(StopReason::HostError(
                "--icount in lockstep needs a software backend on one side".into(),
            )),
            no_oracle: BTreeMap::new(),
            backends,
        };
    }
    let mut run = Lockstep::new((a, b), io.as_ref(), &control, opts, timed);
    let end = run.run();
    DiffReport {
        steps: run.steps,
        end,
        no_oracle: std::mem::take(&mut run.no_oracle),
        backends,
    }
}

/// Runs both backends to the end of the program and compares once (see [`WholeProgram`]).
fn whole_program(
    mut a: Side,
    mut b: Side,
    io: Arc<crate::machine::MachineIo>,
    control: Arc<Control>,
    opts: &DiffOptions,
    w: &WholeProgram,
) -> DiffReport {
    let backends = (opts.a.name(), opts.b.name());
    let recorder = Recorder::new(io.as_ref());
    let replayer = Replayer::default();
    let host_error = |e: janus_accel::VcpuError| DiffReport {
        steps: 0,
        end: DiffEnd::Agreed(StopReason::HostError(e.to_string())),
        no_oracle: BTreeMap::new(),
        backends,
    };
    let before = match a.vcpu.state() {
        Ok(s) => s,
        Err(e) => return host_error(e),
    };
    // A program that never ends (a REP with a huge count after shrinking removed its set-up)
    // is cut off by a watchdog: that is a step limit, not a divergence.
    let timed_out = std::sync::atomic::AtomicBool::new(false);
    let done = std::sync::atomic::AtomicBool::new(false);
    let kickers = [a.vcpu.kicker(), b.vcpu.kicker()];
    let results = std::thread::scope(|scope| {
        scope.spawn(|| {
            let start = std::time::Instant::now();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if start.elapsed() > w.time_limit {
                    timed_out.store(true, std::sync::atomic::Ordering::SeqCst);
                    for k in &kickers {
                        k.kick();
                    }
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
        let run_to_end = |side: &mut Side,
                          io: &dyn janus_accel::IoHandler|
         -> Result<Option<Exit>, janus_accel::VcpuError> {
            loop {
                match side.vcpu.run(io)? {
                    Exit::Stopped | Exit::SingleStep
                        if timed_out.load(std::sync::atomic::Ordering::SeqCst) =>
                    {
                        return Ok(None);
                    }
                    Exit::Stopped | Exit::SingleStep => continue,
                    e => return Ok(Some(e)),
                }
            }
        };
        let ra = run_to_end(&mut a, &recorder);
        // More device accesses than a recording keeps: B cannot be served them all, so the
        // program is not compared (as one that runs past the time limit).
        let ra = if recorder.overflowed() {
            ra.map(|_| None)
        } else {
            ra
        };
        replayer.load(recorder.take());
        let rb = ra
            .as_ref()
            .ok()
            .and_then(|x| x.as_ref())
            .map(|_| run_to_end(&mut b, &replayer));
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        (ra, rb)
    });
    let (exit_a, exit_b) = match results {
        (Err(e), _) | (_, Some(Err(e))) => return host_error(e),
        (Ok(Some(x)), Some(Ok(Some(y)))) => (x, y),
        _ => {
            return DiffReport {
                steps: 0,
                end: DiffEnd::StepLimit,
                no_oracle: BTreeMap::new(),
                backends,
            };
        }
    };
    let (sa, mut sb) = match (a.vcpu.state(), b.vcpu.state()) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) | (_, Err(e)) => return host_error(e),
    };
    if opts.a == AccelKind::Kvm {
        compare::pin_fpu_pointers(&sa, &mut sb);
    }
    let steps = b
        .vcpu
        .counters()
        .instructions
        .or(a.vcpu.counters().instructions)
        .unwrap_or(0);
    for &slot in &w.flag_slots {
        if let (Ok(x), Ok(y)) = (a.mem.read_le(slot, 8), b.mem.read_le(slot, 8))
            && (x ^ y) & !w.undefined_flags == 0
        {
            let _ = b.mem.write_le(slot, 8, x);
        }
    }
    let same_exit = std::mem::discriminant(&exit_a) == std::mem::discriminant(&exit_b);
    let fields = compare(&sa, &sb, w.undefined_flags);
    let memory = compare_ram(&a.mem, &b.mem);
    let io_mismatch = replayer.finish();
    let end = if !same_exit || !fields.is_empty() || !memory.is_empty() || !io_mismatch.is_empty() {
        let (bytes, insn) = fetch_insn(&before, &a.mem);
        let mut text = String::new();
        IntelFormatter::new().format(&insn, &mut text);
        DiffEnd::Diverged(Box::new(Divergence {
            step: 0,
            insn: StepInsn {
                cs: before.cs.selector,
                rip: before.rip,
                bytes,
                text: format!("{text} (whole program compared)"),
            },
            oracle: if a.pvm {
                Oracle::Hardware
            } else {
                Oracle::Software
            },
            before,
            a: sa,
            b: sb,
            exits: (!same_exit).then(|| (exit_name(&exit_a), exit_name(&exit_b))),
            fields,
            memory,
            io: io_mismatch,
        }))
    } else {
        match exit_a {
            Exit::Shutdown(s) => DiffEnd::Agreed(StopReason::TripleFault(s)),
            Exit::Failed(f) => DiffEnd::Agreed(StopReason::VcpuFailed(f)),
            _ => DiffEnd::Agreed(control.reason().unwrap_or(StopReason::HaltedInterruptsOff {
                vcpu: 0,
                cs: sa.cs.selector,
                rip: sa.rip,
            })),
        }
    };
    DiffReport {
        steps,
        end,
        no_oracle: BTreeMap::new(),
        backends,
    }
}
