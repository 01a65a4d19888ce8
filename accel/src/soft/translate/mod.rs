//! Lowering guest instructions to IR, one file per instruction family, until a block end (a
//! branch, a system instruction, a page end or the length cap). Hot instructions become IR ops;
//! rare and long ones become helper calls on the decoded instruction.

mod alu;
mod atomic;
mod avx;
mod bcd;
mod bit;
mod control;
mod ext;
mod fpstate;
mod io;
mod liveness;
mod mov;
mod msr;
mod muldiv;
pub mod operand;
mod shift;
mod sse;
mod stack;
mod string;
mod system;
mod x87;

use std::sync::Arc;

pub(crate) use control::vm86_seg;
#[cfg(test)]
pub(crate) use ext::crc32c;
pub use msr::{OFFER, SoftMsrs};
pub(crate) use shift::rotate;

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

use super::cpu::{Ctx, R, UD};
use super::flags::CcOp;
use super::ir::{BinOp, Block, HelperFn, Op, T, UnOp};

/// Longest block, in instructions.
pub const MAX_BLOCK: usize = 64;

/// Mode bits that change how code is translated (part of the cache key).
pub fn mode_key(c: &super::cpu::Core, single: bool) -> u32 {
    let b = match c.s.code_bitness() {
        16 => 0,
        32 => 1,
        _ => 2,
    };
    b | u32::from(c.pe()) << 2 | u32::from(c.stack_size() == 4) << 3 | u32::from(single) << 4
}

/// Builds one block's ops.
#[derive(Debug)]
pub struct Builder {
    ops: Vec<Op>,
    insns: Vec<Instruction>,
    next_t: T,
    /// Stack pointer width (2, 4, 8).
    pub stack: u8,
    ended: bool,
    /// The effective address of the current instruction's memory operand, once computed.
    ea: Option<(u8, T)>,
    /// The block is for the interpreter only (no JIT on this vCPU): interpreter-only fused ops
    /// may be used.
    pub interp: bool,
}

/// Maps an iced general register to (index, size); AH..BH map to 16..=19.
pub fn gpr(r: Register) -> Option<(u8, u8)> {
    let n = r as u32;
    Some(match n {
        1..=4 => ((n - 1) as u8, 1),
        5..=8 => ((n - 5 + 16) as u8, 1),
        9..=20 => ((n - 9 + 4) as u8, 1),
        21..=36 => ((n - 21) as u8, 2),
        37..=52 => ((n - 37) as u8, 4),
        53..=68 => ((n - 53) as u8, 8),
        _ => return None,
    })
}

/// Maps an iced segment register to its number.
pub fn sreg(r: Register) -> u8 {
    match r {
        Register::ES => 0,
        Register::CS => 1,
        Register::SS => 2,
        Register::FS => 4,
        Register::GS => 5,
        _ => 3,
    }
}

/// The address size in bytes of an instruction's `Memory` operand.
pub fn addr_size(i: &Instruction) -> u8 {
    let rs = |r: Register| match gpr(r) {
        Some((_, sz)) => sz,
        None => match r {
            Register::EIP => 4,
            Register::RIP => 8,
            _ => 0,
        },
    };
    let s = rs(i.memory_base()).max(rs(i.memory_index()));
    if s != 0 {
        return s;
    }
    match i.memory_displ_size() {
        2 => 2,
        4 => 4,
        8 => 8,
        _ => match i.code_size() {
            iced_x86::CodeSize::Code16 => 2,
            iced_x86::CodeSize::Code32 => 4,
            _ => 8,
        },
    }
}

/// The size in bytes of operand `n`.
pub fn op_size(i: &Instruction, n: u32) -> u8 {
    match i.op_kind(n) {
        OpKind::Register => gpr(i.op_register(n)).map_or(2, |(_, s)| s),
        OpKind::Immediate8 | OpKind::Immediate8_2nd => 1,
        OpKind::Immediate16 | OpKind::Immediate8to16 => 2,
        OpKind::Immediate32 | OpKind::Immediate8to32 => 4,
        OpKind::Immediate64 | OpKind::Immediate8to64 | OpKind::Immediate32to64 => 8,
        _ => i.memory_size().size().clamp(1, 8) as u8,
    }
}

impl Builder {
    /// A builder that emits into `ops` (a scratch vector, cleared here).
    fn new(stack: u8, mut ops: Vec<Op>) -> Self {
        ops.clear();
        Builder {
            ops,
            insns: Vec::new(),
            next_t: 0,
            stack,
            ended: false,
            ea: None,
            interp: false,
        }
    }

    /// A fresh temporary.
    pub fn t(&mut self) -> T {
        let t = self.next_t;
        self.next_t += 1;
        t
    }

    /// Emits an op.
    pub fn op(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// A constant.
    pub fn k(&mut self, v: u64) -> T {
        let d = self.t();
        self.op(Op::Const { d, v });
        d
    }

    /// Reads a register.
    pub fn get(&mut self, r: u8, sz: u8) -> T {
        let d = self.t();
        self.op(Op::Get { d, r, sz });
        d
    }

    /// Writes a register.
    pub fn set(&mut self, r: u8, sz: u8, s: T) {
        self.op(Op::Set { r, s, sz });
    }

    /// A binary op.
    pub fn bin(&mut self, op: BinOp, a: T, b: T, sz: u8) -> T {
        let d = self.t();
        self.op(Op::Bin { op, d, a, b, sz });
        d
    }

    /// A unary op.
    pub fn un(&mut self, op: UnOp, a: T, sz: u8) -> T {
        let d = self.t();
        self.op(Op::Un { op, d, a, sz });
        d
    }

    /// Records flags.
    pub fn flags(&mut self, cc: CcOp, sz: u8, a: T, b: T, r: T) {
        self.op(Op::Flags { cc, sz, a, b, r });
    }

    /// A load.
    pub fn load(&mut self, seg: u8, a: T, sz: u8) -> T {
        let d = self.t();
        self.op(Op::Load { d, seg, a, sz });
        d
    }

    /// A store.
    pub fn store(&mut self, seg: u8, a: T, s: T, sz: u8) {
        self.op(Op::Store { seg, a, s, sz });
    }

    /// A helper call on the current instruction (no control flow).
    pub fn call(&mut self, f: HelperFn) {
        let n = (self.insns.len() - 1) as u16;
        self.op(Op::Call { f, n });
    }

    /// A helper that sets RIP itself; ends the block.
    pub fn call_end(&mut self, f: HelperFn) {
        self.call(f);
        self.end(Op::End);
    }

    /// A helper that may change the mode; the block ends after it.
    pub fn call_then_stop(&mut self, f: HelperFn, next: u64) {
        self.call(f);
        self.end(Op::Goto { rip: next });
    }

    /// Ends the block with a terminator.
    pub fn end(&mut self, op: Op) {
        self.op(op);
        self.ended = true;
    }

    /// The effective address (segment, offset temp) of the memory operand.
    pub fn ea(&mut self, i: &Instruction) -> (u8, T) {
        if let Some(e) = self.ea {
            return e;
        }
        let asz = addr_size(i);
        let seg = sreg(i.memory_segment());
        let base = i.memory_base();
        let off = if base == Register::RIP || base == Register::EIP {
            self.k(i.memory_displacement64() & super::flags::mask(asz))
        } else {
            let mut t = None;
            let disp = i.memory_displacement64();
            if let Some((r, _)) = gpr(base) {
                t = Some(self.get(r, asz));
            }
            if let Some((r, _)) = gpr(i.memory_index()) {
                let mut x = self.get(r, asz);
                let sc = i.memory_index_scale();
                if sc > 1 {
                    let k = self.k(u64::from(sc.trailing_zeros()));
                    x = self.bin(BinOp::Shl, x, k, asz);
                }
                t = Some(match t {
                    Some(b) => self.bin(BinOp::Add, b, x, asz),
                    None => x,
                });
            }
            match t {
                None => self.k(disp & super::flags::mask(asz)),
                Some(t) if disp & super::flags::mask(asz) == 0 => t,
                Some(t) => {
                    let k = self.k(disp);
                    self.bin(BinOp::Add, t, k, asz)
                }
            }
        };
        self.ea = Some((seg, off));
        (seg, off)
    }

    /// Reads operand `n` at size `sz`.
    pub fn rd(&mut self, i: &Instruction, n: u32, sz: u8) -> T {
        match i.op_kind(n) {
            OpKind::Register => match gpr(i.op_register(n)) {
                Some((r, _)) => self.get(r, sz),
                None => self.k(0),
            },
            OpKind::Memory => {
                let (seg, a) = self.ea(i);
                self.load(seg, a, sz)
            }
            _ => self.k(i.immediate(n) & super::flags::mask(sz)),
        }
    }

    /// Writes operand `n` at size `sz`.
    pub fn wr(&mut self, i: &Instruction, n: u32, sz: u8, v: T) {
        match i.op_kind(n) {
            OpKind::Register => {
                if let Some((r, _)) = gpr(i.op_register(n)) {
                    self.set(r, sz, v);
                }
            }
            _ => {
                let (seg, a) = self.ea(i);
                self.store(seg, a, v, sz);
            }
        }
    }

    /// Pushes a temp (store first, then move the stack pointer: precise on a fault).
    pub fn push(&mut self, v: T, sz: u8) {
        let st = self.stack;
        let sp = self.get(4, st);
        let k = self.k(u64::from(sz));
        let nsp = self.bin(BinOp::Sub, sp, k, st);
        self.store(super::cpu::seg::SS, nsp, v, sz);
        self.set(4, st, nsp);
    }

    /// Loads the top of the stack; returns (value, new stack pointer) without committing it.
    pub fn pop_peek(&mut self, sz: u8) -> (T, T) {
        let st = self.stack;
        let sp = self.get(4, st);
        let v = self.load(super::cpu::seg::SS, sp, sz);
        let k = self.k(u64::from(sz));
        let nsp = self.bin(BinOp::Add, sp, k, st);
        (v, nsp)
    }
}

fn raise_ud(_: &mut Ctx, _: &Instruction) -> R<()> {
    Err(UD)
}

/// A valid instruction this CPU does not implement: #UD (CPUID does not advertise it), or, in
/// strict mode, a stop that names it.
fn unimplemented(c: &mut Ctx, _: &Instruction) -> R<()> {
    if c.c.strict_isa {
        return Err(super::cpu::Fault::Unsupported(
            "an instruction the software CPU does not implement",
        ));
    }
    Err(UD)
}

/// Lowers one instruction.
fn lower(b: &mut Builder, i: &Instruction) {
    b.next_t = 0;
    b.ea = None;
    if i.code() == Code::INVALID || (i.has_lock_prefix() && !lockable(i)) {
        b.call_end(raise_ud);
        return;
    }
    let done = atomic::lower(b, i)
        || mov::lower(b, i)
        || alu::lower(b, i)
        || shift::lower(b, i)
        || muldiv::lower(b, i)
        || bcd::lower(b, i)
        || x87::lower(b, i)
        || sse::lower(b, i)
        || string::lower(b, i)
        || bit::lower(b, i)
        || ext::lower(b, i)
        || stack::lower(b, i)
        || control::lower(b, i)
        || io::lower(b, i)
        || system::lower(b, i);
    if !done {
        b.call_end(unimplemented);
    }
}

fn lockable(i: &Instruction) -> bool {
    use Mnemonic::*;
    matches!(
        i.mnemonic(),
        Add | Adc
            | And
            | Btc
            | Btr
            | Bts
            | Cmpxchg
            | Cmpxchg8b
            | Cmpxchg16b
            | Dec
            | Inc
            | Neg
            | Not
            | Or
            | Sbb
            | Sub
            | Xor
            | Xadd
            | Xchg
    ) && i.op0_kind() == OpKind::Memory
}

/// Translates the block at the current RIP.
///
/// Returns the block and whether it may be cached (not when an instruction crosses a page).
pub fn translate(ctx: &mut Ctx, mode: u32, max: usize) -> R<(Arc<Block>, bool)> {
    let bitness = ctx.c.s.code_bitness();
    let scratch = std::mem::take(&mut ctx.c.op_scratch);
    let mut b = Builder::new(ctx.c.stack_size(), scratch);
    b.interp = ctx.c.cache.jit.is_none();
    let start_rip = ctx.c.s.rip;
    let mut rip = start_rip;
    let mut phys0 = 0;
    let mut cacheable = true;
    let mut mask = 0u64;
    let mut page = 0;
    let mut prev_risky = false;
    let mut page2: Option<(u64, u64, u64)> = None;
    let mut starts = Vec::new();
    loop {
        let f = match ctx.fetch_decode(rip, bitness) {
            Ok(f) => f,
            Err(e) if b.insns.is_empty() => return Err(e),
            Err(_) => {
                b.end(Op::Goto { rip });
                break;
            }
        };
        if b.insns.is_empty() {
            phys0 = f.phys;
            page = f.phys & !0xfff;
        } else if f.phys & !0xfff != page {
            b.end(Op::Goto { rip });
            break;
        }
        let len = f.insn.len().max(1) as u64;
        let first = (f.phys & 0xfff) / 64;
        let last = ((f.phys & 0xfff) + len - 1).min(0xfff) / 64;
        for c in first..=last {
            mask |= 1 << c;
        }
        let n = b.insns.len() as u16;
        let at = b.ops.len();
        b.op(Op::Insn { n, rip });
        b.insns.push(f.insn);
        lower(&mut b, &f.insn);
        // The RIP commit is needed only where something can fault or look at RIP, or right
        // after a store (which may have overwritten this very code).
        let risky = |op: &Op| matches!(op, Op::Load { .. } | Op::Store { .. } | Op::Call { .. });
        let needs = b.ops[at + 1..].iter().any(risky) || prev_risky || n == 0;
        prev_risky = b.ops[at + 1..]
            .iter()
            .any(|op| matches!(op, Op::Store { .. } | Op::Call { .. }));
        if !needs {
            b.ops.remove(at);
        }
        starts.push(at as u32);
        let next = f.insn.next_ip();
        if f.crosses {
            match f.page2 {
                Some((lin2, phys2)) => {
                    // Bytes [0, end) of the next page belong to this block.
                    let end = (f.phys & 0xfff) + len - 0x1000;
                    let last = (end - 1).min(0xfff) / 64;
                    let m2 = if last >= 63 {
                        u64::MAX
                    } else {
                        (1u64 << (last + 1)) - 1
                    };
                    page2 = Some((lin2, phys2 & !0xfff, m2));
                }
                None => cacheable = false,
            }
        }
        if b.ended {
            break;
        }
        if f.crosses || b.insns.len() >= max || (f.phys & 0xfff) + len >= 0x1000 {
            b.end(Op::Goto { rip: next });
            break;
        }
        rip = next;
    }
    liveness::prune_dead_flags(&mut b.ops, &mut starts);
    // The builder reserves room for a long block; a cached block keeps only what it uses
    // (tens of thousands of blocks live in a kernel boot).
    b.ops.shrink_to_fit();
    b.insns.shrink_to_fit();
    starts.shrink_to_fit();
    let helpers = b.ops.iter().any(|op| matches!(op, Op::Call { .. }));
    let mut code = vec![(page, mask)];
    if let Some((_, p2, m2)) = page2 {
        code.push((p2, m2));
    }
    // The ops are built in a scratch vector that the core keeps, and the block gets a copy of
    // the size it needs: a vector allocated and freed per translation grew and trimmed the
    // top of the vCPU thread's malloc heap, an mprotect call every few translations (9,200 in
    // a PVH boot).
    let ops = b.ops.to_vec();
    ctx.c.op_scratch = b.ops;
    let mut insns = b.insns;
    insns.shrink_to_fit();
    let block = Block {
        page2: page2.map(|(lin2, p2, _)| (lin2, p2)),
        helpers,
        ops,
        insns,
        phys: phys0,
        mode,
        rip: start_rip,
        code,
        starts,
    };
    Ok((Arc::new(block), cacheable))
}
