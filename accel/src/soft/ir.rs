//! The IR: a flat list of compact ops over a small array of 64-bit temporaries, one block per
//! guest basic block. Sizes are in bytes (1, 2, 4, 8); values are kept zero-extended. The
//! interpreter executes it; a JIT can compile the same ops. `Display` prints it for golden tests.

use std::fmt;

use iced_x86::Instruction;

use super::cpu::{Ctx, R};

/// A temporary's index.
pub type T = u8;

/// A helper: semantics of a rare or long instruction, run on the decoded instruction.
pub type HelperFn = fn(&mut Ctx, &Instruction) -> R<()>;

/// Two-operand ALU operations (result masked to the op size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// a + b.
    Add,
    /// a - b.
    Sub,
    /// a & b.
    And,
    /// a | b.
    Or,
    /// a ^ b.
    Xor,
    /// a << (b & 63).
    Shl,
    /// a >> (b & 63) (logical, of the masked value).
    Shr,
    /// a >> (b & 63) (arithmetic, of the sign-extended value).
    Sar,
    /// a * b (low half).
    Mul,
}

impl BinOp {
    /// `a op b` at operand size `sz` bytes, masked to it: the one definition the interpreter
    /// runs and the JIT's constant folding uses.
    #[inline]
    pub fn eval(self, a: u64, b: u64, sz: u8) -> u64 {
        use super::flags::{mask, sext};
        let m = mask(sz);
        let r = match self {
            BinOp::Add => a.wrapping_add(b),
            BinOp::Sub => a.wrapping_sub(b),
            BinOp::And => a & b,
            BinOp::Or => a | b,
            BinOp::Xor => a ^ b,
            BinOp::Shl => a << (b & 63),
            BinOp::Shr => (a & m) >> (b & 63),
            BinOp::Sar => (sext(a, sz) >> (b & 63)) as u64,
            BinOp::Mul => a.wrapping_mul(b),
        };
        r & m
    }
}

/// One-operand operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    /// !a.
    Not,
    /// -a.
    Neg,
    /// Sign-extends from the op size to 64 bits.
    Sext,
    /// Masks to the op size.
    Zext,
}

/// One IR op.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// Start of the block's instruction `n`, at `rip`: commits RIP for precise exceptions.
    Insn {
        /// Index in the block.
        n: u16,
        /// Its RIP.
        rip: u64,
    },
    /// d = v.
    Const {
        /// Destination.
        d: T,
        /// Value.
        v: u64,
    },
    /// d = register `r` (16..=19: AH CH DH BH).
    Get {
        /// Destination.
        d: T,
        /// Register.
        r: u8,
        /// Size.
        sz: u8,
    },
    /// Register `r` = s (32-bit writes zero the upper half).
    Set {
        /// Register.
        r: u8,
        /// Source.
        s: T,
        /// Size.
        sz: u8,
    },
    /// d = a op b.
    Bin {
        /// Operation.
        op: BinOp,
        /// Destination.
        d: T,
        /// First operand.
        a: T,
        /// Second operand.
        b: T,
        /// Size.
        sz: u8,
    },
    /// d = op a.
    Un {
        /// Operation.
        op: UnOp,
        /// Destination.
        d: T,
        /// Operand.
        a: T,
        /// Size.
        sz: u8,
    },
    /// Records lazy flags.
    Flags {
        /// Kind.
        cc: super::flags::CcOp,
        /// Size.
        sz: u8,
        /// First operand.
        a: T,
        /// Second operand.
        b: T,
        /// Result.
        r: T,
    },
    /// Fused register ALU op: r = r op (register `s`), with flags (write = false for CMP/TEST).
    AluR {
        /// Operation.
        op: BinOp,
        /// Flags kind.
        cc: super::flags::CcOp,
        /// Destination (and first source) register.
        r: u8,
        /// Second source register.
        s: u8,
        /// Size.
        sz: u8,
        /// Whether the result is written back.
        write: bool,
        /// Whether the flags are recorded (false when the flag-liveness pass found them
        /// overwritten before anything can read them).
        flags: bool,
    },
    /// Fused register-immediate ALU op: r = r op imm, with flags.
    AluI {
        /// Operation.
        op: BinOp,
        /// Flags kind.
        cc: super::flags::CcOp,
        /// Destination (and first source) register.
        r: u8,
        /// Size.
        sz: u8,
        /// Whether the result is written back.
        write: bool,
        /// Whether the flags are recorded (see `AluR`).
        flags: bool,
        /// The immediate, sign-extended.
        imm: i32,
    },
    /// ROL (`left`) or ROR of register `r` (0..=15) by `cnt` (masked, non-zero): sets CF and OF
    /// and leaves SF ZF AF PF as they were.
    Rot {
        /// Rotate left.
        left: bool,
        /// Register.
        r: u8,
        /// Size.
        sz: u8,
        /// Count, already masked to 5 or 6 bits, not zero.
        cnt: u8,
        /// Whether SF ZF AF PF from before must be kept (false when the flag-liveness pass
        /// found them dead after the rotate: then they are left undefined, and only CF and OF
        /// are exact).
        keep: bool,
    },
    /// Interpreter only (the JIT refuses blocks with it): ADC (`sub` false) or SBB of register
    /// `s` into register `r`, with flags when `flags`.
    AdcR {
        /// Destination (and first source) register.
        r: u8,
        /// Second source register.
        s: u8,
        /// Size.
        sz: u8,
        /// SBB rather than ADC.
        sub: bool,
        /// Whether the flags are recorded.
        flags: bool,
    },
    /// d = CF.
    Carry {
        /// Destination.
        d: T,
    },
    /// d = condition `cc` holds.
    Cond {
        /// Destination.
        d: T,
        /// Condition code (0..15).
        cc: u8,
    },
    /// d = c != 0 ? a : b.
    Select {
        /// Destination.
        d: T,
        /// Condition.
        c: T,
        /// If true.
        a: T,
        /// If false.
        b: T,
    },
    /// d = memory at seg:a.
    Load {
        /// Destination.
        d: T,
        /// Segment register.
        seg: u8,
        /// Offset.
        a: T,
        /// Size.
        sz: u8,
    },
    /// Memory at seg:a = s.
    Store {
        /// Segment register.
        seg: u8,
        /// Offset.
        a: T,
        /// Value.
        s: T,
        /// Size.
        sz: u8,
    },
    /// Runs a helper on the block's instruction `n`.
    Call {
        /// The helper.
        f: HelperFn,
        /// Instruction index.
        n: u16,
    },
    /// Ends the block: RIP = t.
    Jump {
        /// Target.
        t: T,
    },
    /// Ends the block: RIP = rip.
    Goto {
        /// Target.
        rip: u64,
    },
    /// Ends the block: RIP = c != 0 ? taken : the next instruction's ([`Block::fall`]).
    Branch {
        /// Condition.
        c: T,
        /// Target if true.
        taken: u64,
    },
    /// Ends the block: RIP = condition `cc` ? taken : the next instruction's
    /// ([`Block::fall`]).
    BranchCc {
        /// Condition code.
        cc: u8,
        /// Target if true.
        taken: u64,
    },
    /// Ends the block: a helper has set RIP.
    End,
}

/// A translated guest basic block.
#[derive(Debug)]
pub struct Block {
    /// The ops.
    pub ops: Vec<Op>,
    /// The decoded instructions (helpers run on them; also for reports).
    pub insns: Vec<Instruction>,
    /// Physical address of the first byte.
    pub phys: u64,
    /// Mode bits it was translated under.
    pub mode: u32,
    /// RIP of the first instruction.
    pub rip: u64,
    /// (physical page, 64-byte chunk mask) of the code it covers.
    pub code: Vec<(u64, u64)>,
    /// Index in `ops` of each instruction's first op (for dumps).
    pub starts: Vec<u32>,
    /// For a block whose last instruction spills into the next page: that page's linear and
    /// physical addresses. The block is valid only while the mapping holds, so lookups check it,
    /// it stays out of the jump cache, and the JIT does not compile it.
    pub page2: Option<(u64, u64)>,
    /// Whether an op calls a helper. A block without one cannot change the mode, the segments,
    /// the privilege level or the pending events, so the interpreter may go straight on to the
    /// next block.
    pub helpers: bool,
}

/// An op is 16 bytes: a cached block keeps hundreds of them (a branch's fall-through target,
/// which would make it 24, is the block's [`Block::fall`]).
const _: () = assert!(std::mem::size_of::<Op>() == 16);

impl Block {
    /// Where a conditional branch that ends the block goes when not taken: the instruction
    /// after its last.
    #[inline]
    pub fn fall(&self) -> u64 {
        self.insns.last().map_or(self.rip, |i| i.next_ip())
    }

    /// Bytes of heap the block's vectors take (what the translation cache's budget counts).
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Block>()
            + self.ops.capacity() * std::mem::size_of::<Op>()
            + self.insns.capacity() * std::mem::size_of::<Instruction>()
            + self.code.capacity() * std::mem::size_of::<(u64, u64)>()
            + self.starts.capacity() * std::mem::size_of::<u32>()
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::Insn { n, rip } => write!(f, "insn {n} @{rip:#x}"),
            Op::Const { d, v } => write!(f, "t{d} = {v:#x}"),
            Op::Get { d, r, sz } => write!(f, "t{d} = r{r}.{sz}"),
            Op::Set { r, s, sz } => write!(f, "r{r}.{sz} = t{s}"),
            Op::Bin { op, d, a, b, sz } => write!(f, "t{d} = {op:?}.{sz} t{a}, t{b}"),
            Op::Un { op, d, a, sz } => write!(f, "t{d} = {op:?}.{sz} t{a}"),
            Op::Flags { cc, sz, a, b, r } => write!(f, "flags {cc:?}.{sz} t{a}, t{b} -> t{r}"),
            Op::AluR {
                op,
                cc,
                r,
                s,
                sz,
                write,
                flags,
            } => {
                write!(
                    f,
                    "r{r}.{sz} {}= {op:?} r{s} (flags {})",
                    if write { "" } else { "?" },
                    if flags {
                        format!("{cc:?}")
                    } else {
                        "dead".into()
                    }
                )
            }
            Op::AluI {
                op,
                cc,
                r,
                sz,
                write,
                flags,
                imm,
            } => {
                write!(
                    f,
                    "r{r}.{sz} {}= {op:?} {imm:#x} (flags {})",
                    if write { "" } else { "?" },
                    if flags {
                        format!("{cc:?}")
                    } else {
                        "dead".into()
                    }
                )
            }
            Op::Rot {
                left,
                r,
                sz,
                cnt,
                keep,
            } => write!(
                f,
                "r{r}.{sz} = {} r{r}, {cnt} (cf of{})",
                if left { "rol" } else { "ror" },
                if keep { ", keeps szap" } else { "" }
            ),
            Op::BranchCc { cc, taken } => {
                write!(f, "branch cond {cc:#x} ? {taken:#x} : next")
            }
            Op::AdcR {
                r,
                s,
                sz,
                sub,
                flags,
            } => write!(
                f,
                "r{r}.{sz} = {} r{s} (flags {})",
                if sub { "sbb" } else { "adc" },
                if flags { "live" } else { "dead" }
            ),
            Op::Carry { d } => write!(f, "t{d} = cf"),
            Op::Cond { d, cc } => write!(f, "t{d} = cond {cc:#x}"),
            Op::Select { d, c, a, b } => write!(f, "t{d} = t{c} ? t{a} : t{b}"),
            Op::Load { d, seg, a, sz } => write!(f, "t{d} = load.{sz} s{seg}:t{a}"),
            Op::Store { seg, a, s, sz } => write!(f, "store.{sz} s{seg}:t{a} = t{s}"),
            Op::Call { n, .. } => write!(f, "call helper (insn {n})"),
            Op::Jump { t } => write!(f, "jump t{t}"),
            Op::Goto { rip } => write!(f, "goto {rip:#x}"),
            Op::Branch { c, taken } => write!(f, "branch t{c} ? {taken:#x} : next"),
            Op::End => f.write_str("end"),
        }
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, op) in self.ops.iter().enumerate() {
            if let Some(n) = self.starts.iter().position(|&s| s as usize == k) {
                writeln!(f, "; {}", self.insns[n])?;
            }
            match *op {
                // The fall-through target is the block's, not the op's.
                Op::Branch { c, taken } => {
                    writeln!(f, "  branch t{c} ? {taken:#x} : {:#x}", self.fall())?
                }
                Op::BranchCc { cc, taken } => {
                    writeln!(f, "  branch cond {cc:#x} ? {taken:#x} : {:#x}", self.fall())?
                }
                _ => writeln!(f, "  {op}")?,
            }
        }
        Ok(())
    }
}
