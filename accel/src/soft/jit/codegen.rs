//! The code generator's core: the per-block state (`Gen`), the field offsets that generated
//! code uses, value placement (temporaries, cached guest registers, spills), the driver that
//! walks a block's IR, and the register-only ops (constants, register moves, ALU, selects).
//! Flags, memory accesses and block exits are in `flags.rs`, `mem.rs` and `exits.rs`.

use std::mem::offset_of;
use std::sync::Arc;

use dynasmrt::VecAssembler;
use dynasmrt::x64::X64Relocation;
use dynasmrt::{DynamicLabel, DynasmApi, dynasm};

use super::super::cpu::Core;
use super::super::flags::CcOp;
use super::super::ir::{Block, Op, T};
use super::alloc::{ALLOCATABLE, FLoc, Own, Regs, TLoc};
use super::analysis::Analysis;
use super::rt::{CallSite, Rt};

/// Offset of the core's instruction counter.
pub const CORE_ICOUNT: i32 = offset_of!(Core, icount) as i32;
/// Offset of RIP.
pub const CORE_RIP: i32 = offset_of!(Core, s.rip) as i32;
/// Offset of the general registers.
pub const CORE_GPR: i32 = offset_of!(Core, s.gpr) as i32;
/// Offset of CR0.
pub const CORE_CR0: i32 = offset_of!(Core, s.cr0) as i32;
/// Offset of the CS base.
pub const CORE_CS_BASE: i32 = offset_of!(Core, s.cs.base) as i32;
/// Offset of the self-modifying-code flag.
pub const CORE_SMC: i32 = offset_of!(Core, smc) as i32;
/// Offsets of the lazy flags' op and size bytes.
pub const LAZY_OP: i32 = offset_of!(Core, lazy.op) as i32;
/// Offset of the lazy flags' size.
pub const LAZY_SZ: i32 = offset_of!(Core, lazy.sz) as i32;
/// Homes of the lazy flag values (`alloc::fv` order).
pub const LAZY_HOME: [i32; 4] = [
    offset_of!(Core, lazy.a) as i32,
    offset_of!(Core, lazy.b) as i32,
    offset_of!(Core, lazy.res) as i32,
    offset_of!(Core, lazy.aux) as i32,
];
/// Offset of the attention flag's address in `Rt`.
pub const RT_ATTENTION: i32 = offset_of!(Rt, attention) as i32;
/// Offset of the instruction-count limit.
pub const RT_ICOUNT_LIMIT: i32 = offset_of!(Rt, icount_limit) as i32;
/// Offset of the runtime key.
pub const RT_CUR_KEY: i32 = offset_of!(Rt, cur_key) as i32;
/// Offset of the register save area.
pub const RT_SAVE: i32 = offset_of!(Rt, save) as i32;
/// Offset of the spill slots.
pub const RT_SPILL: i32 = offset_of!(Rt, spill) as i32;
/// Offset of the non-flat segment mask.
pub const RT_NONFLAT: i32 = offset_of!(Rt, nonflat) as i32;
/// Offset of the segment bases.
pub const RT_SEG_BASE: i32 = offset_of!(Rt, seg_base) as i32;
/// Offset of the read limits.
pub const RT_SEG_RLIM: i32 = offset_of!(Rt, seg_rlim) as i32;
/// Offset of the write limits.
pub const RT_SEG_WLIM: i32 = offset_of!(Rt, seg_wlim) as i32;
/// Offset of the TLB mirrors' address.
pub const RT_TLB_BASE: i32 = offset_of!(Rt, tlb_base) as i32;
/// Offset of the TLB generation.
pub const RT_TLB_GEN: i32 = offset_of!(Rt, tlb_gen) as i32;
/// Offset of the write generation.
pub const RT_TLB_WGEN: i32 = offset_of!(Rt, tlb_wgen) as i32;
/// Offset of the jump cache.
pub const RT_JC: i32 = offset_of!(Rt, jc) as i32;

/// The wrapper of `dynasm!`: fixes the architecture and names the pinned registers (r15 the
/// core, r14 the runtime context, r13 the instruction count, r12 the TLB mirrors).
macro_rules! x64 {
    ($ops:expr ; $($t:tt)*) => {
        dynasm!($ops
            ; .arch x64
            ; .alias core, r15
            ; .alias rtx, r14
            ; .alias icnt, r13
            ; .alias tlb, r12
            ; $($t)*
        )
    };
}
pub(crate) use x64;

/// A value operand: a host register or a constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum V {
    /// Host register.
    R(u8),
    /// Constant.
    I(u64),
}

/// What the lazy flags are at compile time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fk {
    /// Whatever the core's `Lazy` holds.
    Unknown,
    /// The last flag-setting op is known; its values are in `Regs::flag`; `mem` when its kind
    /// and size are stored in the core.
    Known {
        /// Kind.
        cc: CcOp,
        /// Size.
        sz: u8,
        /// Kind and size are in memory.
        mem: bool,
    },
}

/// One store that brings the core up to date.
#[derive(Clone, Copy, Debug)]
pub struct Store {
    /// Offset in the core.
    pub off: i32,
    /// What to store.
    pub src: Src,
}

/// The source of a `Store`.
#[derive(Clone, Copy, Debug)]
pub enum Src {
    /// A host register (64 bits).
    Reg(u8),
    /// A 64-bit constant.
    Imm(u64),
    /// A byte.
    Byte(u8),
    /// Two bytes.
    Word(u16),
}

/// Why compilation gave up (the block then runs in the interpreter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unsupported(pub &'static str);

/// An exit that the dispatcher may chain: `jmp rel32` at `at`, its stub at `stub`.
#[derive(Clone, Copy, Debug)]
pub struct ExitRec {
    /// Offset of the `jmp rel32`.
    pub at: usize,
    /// Offset of the stub it jumps to while unchained.
    pub stub: usize,
    /// Target RIP.
    pub target: u64,
    /// Whether the target is in another linear page (chained only without paging).
    pub cross_page: bool,
}

/// Out-of-line code to emit after the block.
pub type Cold = Box<dyn FnOnce(&mut Gen)>;

/// Code generation state for one block.
pub struct Gen<'a> {
    /// The block's assembler (offsets from the block's start, `base` in the buffer).
    pub a: &'a mut VecAssembler<X64Relocation>,
    /// Offset of the block in the code buffer.
    pub base: usize,
    /// Host addresses of the shared exit stub: `exit_done` (RIP stored, nothing to chain) and
    /// `exit` (exit code in EAX).
    pub exit_done: usize,
    /// See `exit_done`.
    pub exit: usize,
    /// The block.
    pub b: &'a Arc<Block>,
    /// Its key (mode bits | CPL << 8).
    pub key: u32,
    /// Code bitness (16, 32, 64).
    pub bits: u32,
    /// Linear address of the block's first byte at compile time (for page checks).
    pub lin: u64,
    /// Allocation state.
    pub r: Regs,
    /// Flags state.
    pub fk: Fk,
    /// Host flags hold the guest flags of the last op (see `flags.rs`).
    pub hf: bool,
    /// Current instruction index and RIP.
    pub n: u16,
    /// RIP of the current instruction.
    pub rip: u64,
    /// Index of the op being compiled.
    pub k: usize,
    /// A store or helper call since the last instruction start.
    pub risky: bool,
    /// The block has stores or helper calls (exits check for self-modified code).
    pub writes: bool,
    /// The block calls helpers (exits check the runtime key).
    pub calls_helpers: bool,
    /// Segment accesses compiled for flat segments (`Rt::nonflat` bits), checked on entry.
    pub flat: u64,
    /// Deterministic time: block entries and loop back edges check `Rt::icount_limit`.
    pub icount: bool,
    /// A block that jumps back to its own start: guest registers kept in host registers across
    /// iterations (guest, host), and the label after they are loaded.
    pub looping: Option<(Vec<(u8, u8)>, DynamicLabel)>,
    /// Liveness facts.
    pub an: Analysis,
    /// Out-of-line code, emitted after the block.
    pub cold: Vec<Cold>,
    /// Fault exits per instruction.
    pub fault_labels: Vec<(u16, DynamicLabel)>,
    /// Chainable exits.
    pub exits: Vec<ExitRec>,
    /// Number of the first exit.
    pub exit_base: usize,
    /// New call sites.
    pub calls: Vec<CallSite>,
    /// Number of the first call site.
    pub call_base: usize,
}

impl std::fmt::Debug for Gen<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gen")
            .field("n", &self.n)
            .field("k", &self.k)
            .finish()
    }
}

/// Whether `v` survives sign extension from 32 bits.
pub fn fits32(v: u64) -> bool {
    v as i64 == i64::from(v as i32)
}

/// The value of a size mask.
pub fn mask(sz: u8) -> u64 {
    super::super::flags::mask(sz)
}

impl<'a> Gen<'a> {
    /// Offset of guest register `g` in the core.
    pub fn gpr(g: u8) -> i32 {
        CORE_GPR + 8 * i32::from(g)
    }

    // ---- allocation ----

    /// Empties host register `h`, storing what it holds if nothing else has it.
    pub fn evict(&mut self, h: u8) {
        match self.r.own[usize::from(h)] {
            Own::Free => {}
            Own::Temp(t) => {
                let off = super::codegen::RT_SPILL + 8 * i32::from(t);
                x64!(self.a ; mov QWORD [r14 + off], Rq(h));
                self.r.temp[usize::from(t)] = TLoc::Spill;
            }
            Own::Guest(g) => {
                self.r.pinned &= !(1 << h);
                if self.r.gdirty & (1 << g) != 0 {
                    let off = Self::gpr(g);
                    x64!(self.a ; mov QWORD [r15 + off], Rq(h));
                    self.r.gdirty &= !(1 << g);
                }
                self.r.guest[usize::from(g)] = None;
            }
            Own::Flag(f) => {
                if self.r.fdirty & (1 << f) != 0 {
                    let off = LAZY_HOME[usize::from(f)];
                    x64!(self.a ; mov QWORD [r15 + off], Rq(h));
                    self.r.fdirty &= !(1 << f);
                }
                self.r.flag[usize::from(f)] = FLoc::Home;
            }
            Own::Scratch => panic!("evicting a scratch register"),
        }
        self.r.own[usize::from(h)] = Own::Free;
    }

    /// A host register for a new scratch value (locked until the op ends).
    pub fn alloc(&mut self) -> u8 {
        let h = self.r.victim();
        self.evict(h);
        self.r.own[usize::from(h)] = Own::Scratch;
        self.r.locked |= 1 << h;
        self.r.touch(h);
        h
    }

    /// Frees a scratch register.
    pub fn release(&mut self, h: u8) {
        if self.r.own[usize::from(h)] == Own::Scratch {
            self.r.own[usize::from(h)] = Own::Free;
        }
    }

    /// Keeps `h` until the op ends.
    pub fn lock(&mut self, v: V) {
        if let V::R(h) = v {
            self.r.locked |= 1 << h;
            self.r.touch(h);
        }
    }

    /// Empties a specific host register (for fixed-register instructions), keeping `keep`.
    pub fn take(&mut self, h: u8) -> u8 {
        match self.r.own[usize::from(h)] {
            Own::Free => {}
            Own::Scratch => panic!("taking a scratch register"),
            _ => {
                // Move the value elsewhere rather than storing it when a register is free.
                self.r.locked |= 1 << h;
                let to = self.r.victim();
                let free = self.r.own[usize::from(to)] == Own::Free;
                self.r.locked &= !(1 << h);
                if free {
                    x64!(self.a ; mov Rq(to), Rq(h));
                    let o = self.r.own[usize::from(h)];
                    self.r.own[usize::from(to)] = o;
                    match o {
                        Own::Temp(t) => self.r.temp[usize::from(t)] = TLoc::Reg(to),
                        Own::Guest(g) => self.r.guest[usize::from(g)] = Some(to),
                        Own::Flag(f) => self.r.flag[usize::from(f)] = FLoc::Reg(to),
                        _ => {}
                    }
                    self.r.own[usize::from(h)] = Own::Free;
                } else {
                    self.evict(h);
                }
            }
        }
        self.r.own[usize::from(h)] = Own::Scratch;
        self.r.locked |= 1 << h;
        self.r.touch(h);
        h
    }

    /// Loads a 64-bit constant into `h`.
    pub fn mov_imm(&mut self, h: u8, v: u64) {
        if v <= u64::from(u32::MAX) {
            x64!(self.a ; mov Rd(h), v as u32 as i32);
        } else if fits32(v) {
            x64!(self.a ; mov Rq(h), v as i32);
        } else {
            x64!(self.a ; mov Rq(h), QWORD v as i64);
        }
    }

    // ---- temporaries ----

    /// Where temporary `t` is, reloading it from its spill slot if needed.
    pub fn val(&mut self, t: T) -> V {
        match self.r.temp[usize::from(t)] {
            TLoc::Reg(h) => {
                self.lock(V::R(h));
                V::R(h)
            }
            TLoc::Imm(v) => V::I(v),
            TLoc::Spill => {
                let h = self.alloc();
                let off = RT_SPILL + 8 * i32::from(t);
                x64!(self.a ; mov Rq(h), QWORD [r14 + off]);
                self.r.own[usize::from(h)] = Own::Temp(t);
                self.r.temp[usize::from(t)] = TLoc::Reg(h);
                V::R(h)
            }
            TLoc::None => V::I(0),
        }
    }

    /// A scratch register holding a constant.
    pub fn imm_reg(&mut self, v: u64) -> u8 {
        let h = self.alloc();
        self.mov_imm(h, v);
        h
    }

    /// A value in a register (a scratch copy of a constant).
    pub fn in_reg(&mut self, v: V) -> u8 {
        match v {
            V::R(h) => h,
            V::I(x) => self.imm_reg(x),
        }
    }

    /// Whether temporary `t` is dead after the current op.
    pub fn dies(&self, t: T) -> bool {
        self.an.dies(self.k, t)
    }

    /// A scratch register that holds a copy of temporary `t` (its own register when `t` dies
    /// here).
    pub fn copy_of(&mut self, t: T) -> u8 {
        if let TLoc::Reg(h) = self.r.temp[usize::from(t)] {
            let mut u = Vec::new();
            super::analysis::uses(&self.b.ops[self.k], &mut u);
            if self.dies(t) && u.iter().filter(|&&x| x == t).count() == 1 {
                self.r.temp[usize::from(t)] = TLoc::None;
                self.r.own[usize::from(h)] = Own::Scratch;
                self.lock(V::R(h));
                return h;
            }
        }
        let v = self.val(t);
        let d = self.alloc();
        match v {
            V::R(h) => x64!(self.a ; mov Rq(d), Rq(h)),
            V::I(x) => self.mov_imm(d, x),
        }
        d
    }

    /// Makes temporary `t` live in register `h` (a scratch register).
    pub fn def(&mut self, t: T, h: u8) {
        self.undef(t);
        self.r.own[usize::from(h)] = Own::Temp(t);
        self.r.temp[usize::from(t)] = TLoc::Reg(h);
    }

    /// Makes temporary `t` a constant.
    pub fn def_imm(&mut self, t: T, v: u64) {
        self.undef(t);
        self.r.temp[usize::from(t)] = TLoc::Imm(v);
    }

    /// Forgets temporary `t`.
    pub fn undef(&mut self, t: T) {
        if let TLoc::Reg(h) = self.r.temp[usize::from(t)] {
            self.r.own[usize::from(h)] = Own::Free;
        }
        self.r.temp[usize::from(t)] = TLoc::None;
    }

    // ---- guest registers ----

    /// The host register caching guest register `g` (0..16), loading it when `load`.
    pub fn guest(&mut self, g: u8, load: bool) -> u8 {
        if let Some(h) = self.r.guest[usize::from(g)] {
            self.lock(V::R(h));
            return h;
        }
        let h = self.alloc();
        if load {
            let off = Self::gpr(g);
            x64!(self.a ; mov Rq(h), QWORD [r15 + off]);
        }
        self.r.own[usize::from(h)] = Own::Guest(g);
        self.r.guest[usize::from(g)] = Some(h);
        h
    }

    /// Marks guest register `g` modified.
    pub fn dirty(&mut self, g: u8) {
        self.r.gdirty |= 1 << g;
    }

    /// Replaces guest register `g` by the scratch register `h`.
    pub fn rename_guest(&mut self, g: u8, h: u8) {
        if let Some(old) = self.r.guest[usize::from(g)] {
            self.r.own[usize::from(old)] = Own::Free;
        }
        self.r.own[usize::from(h)] = Own::Guest(g);
        self.r.guest[usize::from(g)] = Some(h);
        self.dirty(g);
    }

    // ---- stores that bring the core up to date ----

    /// The stores that would make the core's copy of everything current.
    pub fn pending_stores(&self) -> Vec<Store> {
        let mut v = Vec::new();
        for g in 0..16u8 {
            if self.r.gdirty & (1 << g) != 0 {
                if let Some(h) = self.r.guest[usize::from(g)] {
                    v.push(Store {
                        off: Self::gpr(g),
                        src: Src::Reg(h),
                    });
                }
            }
        }
        if let Fk::Known { cc, sz, mem } = self.fk {
            for (f, &home) in LAZY_HOME.iter().enumerate() {
                if self.r.fdirty & (1 << f) == 0 {
                    continue;
                }
                let src = match self.r.flag[f] {
                    FLoc::Reg(h) => Src::Reg(h),
                    FLoc::Imm(x) => Src::Imm(x),
                    _ => continue,
                };
                v.push(Store { off: home, src });
            }
            if !mem && LAZY_SZ == LAZY_OP + 1 {
                v.push(Store {
                    off: LAZY_OP,
                    src: Src::Word(u16::from(sz) << 8 | cc as u16),
                });
            } else if !mem && LAZY_OP == LAZY_SZ + 1 {
                v.push(Store {
                    off: LAZY_SZ,
                    src: Src::Word((cc as u16) << 8 | u16::from(sz)),
                });
            } else if !mem {
                v.push(Store {
                    off: LAZY_OP,
                    src: Src::Byte(cc as u8),
                });
                v.push(Store {
                    off: LAZY_SZ,
                    src: Src::Byte(sz),
                });
            }
        }
        v
    }

    /// Emits stores.
    pub fn emit_stores(&mut self, stores: &[Store]) {
        for s in stores {
            let off = s.off;
            match s.src {
                Src::Reg(h) => x64!(self.a ; mov QWORD [r15 + off], Rq(h)),
                Src::Imm(x) => self.store_imm64(off, x),
                Src::Byte(b) => x64!(self.a ; mov BYTE [r15 + off], b as i8),
                Src::Word(w) => x64!(self.a ; mov WORD [r15 + off], w as i16),
            }
        }
    }

    /// Stores a 64-bit constant at `r15 + off` without a scratch register.
    pub fn store_imm64(&mut self, off: i32, x: u64) {
        if fits32(x) {
            x64!(self.a ; mov QWORD [r15 + off], x as i32);
        } else {
            let hi = off + 4;
            x64!(self.a
                ; mov DWORD [r15 + off], x as u32 as i32
                ; mov DWORD [r15 + hi], (x >> 32) as u32 as i32
            );
        }
    }

    /// Writes everything back; afterwards the core is current (registers stay cached, clean).
    pub fn sync(&mut self) {
        let s = self.pending_stores();
        self.emit_stores(&s);
        self.r.gdirty = 0;
        self.r.fdirty = 0;
        if let Fk::Known { cc, sz, .. } = self.fk {
            self.fk = Fk::Known { cc, sz, mem: true };
        }
    }

    /// Drops every cached guest register and flag value (after `sync`, or when a helper may
    /// have changed them).
    pub fn forget_state(&mut self) {
        for h in ALLOCATABLE {
            match self.r.own[usize::from(h)] {
                Own::Guest(_) | Own::Flag(_) => self.r.own[usize::from(h)] = Own::Free,
                _ => {}
            }
        }
        self.r.guest = [None; 16];
        self.r.flag = [FLoc::None; 4];
        self.r.gdirty = 0;
        self.r.fdirty = 0;
        self.fk = Fk::Unknown;
    }

    // ---- the driver ----

    /// Compiles one op.
    pub fn op(&mut self, op: &Op) -> Result<(), Unsupported> {
        let keeps_hf = matches!(op, Op::BranchCc { .. } | Op::Cond { .. } | Op::Carry { .. })
            || matches!(op, Op::Insn { .. } if !self.risky);
        if !keeps_hf {
            self.hf = false;
        }
        match *op {
            Op::Insn { n, rip } => self.insn(n, rip),
            Op::Const { d, v } => self.def_imm(d, v),
            Op::Get { d, r, sz } => self.get(d, r, sz),
            Op::Set { r, s, sz } => self.set(r, s, sz),
            Op::Bin { op, d, a, b, sz } => self.bin(op, d, a, b, sz)?,
            Op::Un { op, d, a, sz } => self.un(op, d, a, sz),
            Op::Flags { cc, sz, a, b, r } => self.flags_op(cc, sz, a, b, r),
            Op::AluR {
                op,
                cc,
                r,
                s,
                sz,
                write,
                flags,
            } => self.alu(op, cc, r, Some(s), 0, sz, write, flags)?,
            Op::AluI {
                op,
                cc,
                r,
                sz,
                write,
                flags,
                imm,
            } => self.alu(op, cc, r, None, imm, sz, write, flags)?,
            Op::Rot {
                left,
                r,
                sz,
                cnt,
                keep,
            } => self.native(super::inline_helpers::Native::Rot {
                left,
                r,
                sz,
                cnt,
                keep,
            }),
            Op::AdcR { .. } => return Err(Unsupported("an interpreter-only op")),
            Op::Carry { d } => self.cond(d, 2),
            Op::Cond { d, cc } => self.cond(d, cc),
            Op::Select { d, c, a, b } => self.select(d, c, a, b),
            Op::Load { d, seg, a, sz } => self.load(d, seg, a, sz),
            Op::Store { seg, a, s, sz } => self.store(seg, a, s, sz),
            Op::Call { f, n } => self.call(f, n),
            Op::Jump { t } => self.jump(t),
            Op::Goto { rip } => self.goto(rip),
            Op::Branch { c, taken } => self.branch(c, taken, self.b.fall()),
            Op::BranchCc { cc, taken } => self.branch_cc(cc, taken, self.b.fall()),
            Op::End => self.end(),
        }
        let dying = self.an.dying(self.k).to_vec();
        for t in dying {
            self.undef(t);
        }
        for h in ALLOCATABLE {
            if self.r.own[usize::from(h)] == Own::Scratch {
                self.r.own[usize::from(h)] = Own::Free;
            }
        }
        self.r.locked = 0;
        Ok(())
    }

    /// The shared fault exit of instruction `n` (the state is already stored).
    pub fn fault_label(&mut self, n: u16) -> DynamicLabel {
        if let Some(&(_, l)) = self.fault_labels.iter().find(|(k, _)| *k == n) {
            return l;
        }
        let l = self.a.new_dynamic_label();
        self.fault_labels.push((n, l));
        l
    }
}
