//! The IR interpreter: runs one translated block over a fixed array of temporaries, committing
//! RIP at each instruction start so that a fault leaves the state at the faulting instruction.

use super::cpu::{Core, Ctx, Fault};
use super::flags::{CcOp, mask, sext};
use super::ir::{BinOp, Block, Op, UnOp};
use super::translate::rotate;
use crate::state::rflags::{CF, OF};

/// How a block run ended.
#[derive(Debug)]
pub enum Outcome {
    /// Ran to its end (or left early after self-modifying code): RIP is set.
    Done(u16),
    /// Instruction `n` faulted; RIP is its start.
    Fault(u16, Fault),
}

/// `a op b` before masking, for the fused register ops (ADD SUB AND OR XOR; anything else
/// through `BinOp::eval`).
#[inline(always)]
fn alu(op: BinOp, a: u64, b: u64, sz: u8) -> u64 {
    match op {
        BinOp::Add => a.wrapping_add(b),
        BinOp::Sub => a.wrapping_sub(b),
        BinOp::And => a & b,
        BinOp::Or => a | b,
        BinOp::Xor => a ^ b,
        _ => op.eval(a, b, sz),
    }
}

/// Register `r` under the size mask `m` (16..=19: AH CH DH BH).
#[inline(always)]
fn reg(c: &Core, r: u8, m: u64) -> u64 {
    if r >= 16 {
        return (c.s.gpr[usize::from(r & 3)] >> 8) & 0xff;
    }
    c.s.gpr[usize::from(r & 15)] & m
}

/// Writes `v` (already masked with `m`) to register `r` at size `sz`.
#[inline(always)]
fn set_reg(c: &mut Core, r: u8, sz: u8, m: u64, v: u64) {
    if r >= 16 {
        c.set(r, sz, v);
    } else if sz >= 4 {
        c.s.gpr[usize::from(r & 15)] = v;
    } else {
        let g = &mut c.s.gpr[usize::from(r & 15)];
        *g = (*g & !m) | v;
    }
}

/// Number of temporaries a block may use.
pub const TEMPS: usize = 256;

/// Executes `b` with the temporaries `t` (kept by the caller: nothing is allocated or cleared
/// per block).
pub fn run(ctx: &mut Ctx, b: &Block, t: &mut [u64; TEMPS]) -> Outcome {
    let mut n = 0u16;
    for op in &b.ops {
        match *op {
            Op::Insn { n: k, rip } => {
                if ctx.c.smc {
                    ctx.c.smc = false;
                    ctx.c.s.rip = rip;
                    return Outcome::Done(k);
                }
                n = k;
                ctx.c.s.rip = rip;
            }
            Op::Const { d, v } => t[usize::from(d)] = v,
            Op::Get { d, r, sz } => t[usize::from(d)] = reg(ctx.c, r, mask(sz)),
            Op::Set { r, s, sz } => {
                let m = mask(sz);
                set_reg(ctx.c, r, sz, m, t[usize::from(s)] & m);
            }
            Op::Bin { op, d, a, b, sz } => {
                t[usize::from(d)] = op.eval(t[usize::from(a)], t[usize::from(b)], sz);
            }
            Op::Un { op, d, a, sz } => {
                let a = t[usize::from(a)];
                t[usize::from(d)] = match op {
                    UnOp::Not => !a & mask(sz),
                    UnOp::Neg => a.wrapping_neg() & mask(sz),
                    UnOp::Sext => sext(a, sz) as u64,
                    UnOp::Zext => a & mask(sz),
                };
            }
            Op::Flags { cc, sz, a, b, r } => {
                let (a, b, r) = (t[usize::from(a)], t[usize::from(b)], t[usize::from(r)]);
                ctx.c.lazy.set(cc, sz, a, b, r);
            }
            Op::AluR {
                op,
                cc,
                r,
                s,
                sz,
                write,
                flags,
            } => {
                let m = mask(sz);
                let a = reg(ctx.c, r, m);
                let b = reg(ctx.c, s, m);
                let v = alu(op, a, b, sz) & m;
                if write {
                    set_reg(ctx.c, r, sz, m, v);
                }
                if flags {
                    ctx.c.lazy.set(cc, sz, a, b, v);
                }
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
                let m = mask(sz);
                let a = reg(ctx.c, r, m);
                let b = imm as i64 as u64 & m;
                let v = alu(op, a, b, sz) & m;
                if write {
                    set_reg(ctx.c, r, sz, m, v);
                }
                if flags {
                    ctx.c.lazy.set(cc, sz, a, b, v);
                }
            }
            Op::AdcR {
                r,
                s,
                sz,
                sub,
                flags,
            } => {
                let m = mask(sz);
                let a = reg(ctx.c, r, m);
                let b = reg(ctx.c, s, m);
                let c = u64::from(ctx.c.lazy.cf());
                let (v, cc) = if sub {
                    (a.wrapping_sub(b).wrapping_sub(c), CcOp::Sbb)
                } else {
                    (a.wrapping_add(b).wrapping_add(c), CcOp::Adc)
                };
                let v = v & m;
                set_reg(ctx.c, r, sz, m, v);
                if flags {
                    ctx.c.lazy.set(cc, sz, a, b, v);
                }
            }
            Op::Rot {
                left,
                r,
                sz,
                cnt,
                keep,
            } => {
                let v = ctx.c.get(r, sz);
                if keep {
                    let (v, f) = rotate(left, v, u32::from(cnt), sz, ctx.c.lazy.all());
                    ctx.c.set(r, sz, v);
                    ctx.c.lazy.set_eflags(f);
                } else {
                    // The old SF ZF AF PF are dead: only CF and OF (as `rotate` computes them).
                    let n = u32::from(cnt);
                    let v = match sz {
                        1 => u64::from((v as u8).rotate_left(if left { n } else { 8 - n % 8 })),
                        2 => u64::from((v as u16).rotate_left(if left { n } else { 16 - n % 16 })),
                        4 => u64::from((v as u32).rotate_left(if left { n } else { 32 - n })),
                        _ => v.rotate_left(if left { n } else { 64 - n }),
                    };
                    let top = v >> (u32::from(sz) * 8 - 1) & 1;
                    let (cf, of) = if left {
                        (v & 1, top ^ (v & 1))
                    } else {
                        (top, top ^ (v >> (u32::from(sz) * 8 - 2) & 1))
                    };
                    ctx.c.set(r, sz, v);
                    ctx.c.lazy.set_eflags((cf * CF) | (of * OF));
                }
            }
            Op::BranchCc { cc, taken } => {
                ctx.c.s.rip = if ctx.c.lazy.cond(cc) { taken } else { b.fall() };
                return Outcome::Done(b.insns.len() as u16);
            }
            Op::Carry { d } => t[usize::from(d)] = u64::from(ctx.c.lazy.cf()),
            Op::Cond { d, cc } => t[usize::from(d)] = u64::from(ctx.c.lazy.cond(cc)),
            Op::Select { d, c, a, b } => {
                t[usize::from(d)] = if t[usize::from(c)] != 0 {
                    t[usize::from(a)]
                } else {
                    t[usize::from(b)]
                };
            }
            Op::Load { d, seg, a, sz } => match ctx.read(seg, t[usize::from(a)], sz) {
                Ok(v) => t[usize::from(d)] = v,
                Err(f) => return Outcome::Fault(n, f),
            },
            Op::Store { seg, a, s, sz } => {
                if let Err(f) = ctx.write(seg, t[usize::from(a)], sz, t[usize::from(s)]) {
                    return Outcome::Fault(n, f);
                }
            }
            Op::Call { f, n: k } => {
                if let Err(e) = f(ctx, &b.insns[usize::from(k)]) {
                    return Outcome::Fault(n, e);
                }
            }
            Op::Jump { t: x } => {
                ctx.c.s.rip = t[usize::from(x)];
                return Outcome::Done(b.insns.len() as u16);
            }
            Op::Goto { rip } => {
                ctx.c.s.rip = rip;
                return Outcome::Done(b.insns.len() as u16);
            }
            Op::Branch { c, taken } => {
                ctx.c.s.rip = if t[usize::from(c)] != 0 {
                    taken
                } else {
                    b.fall()
                };
                return Outcome::Done(b.insns.len() as u16);
            }
            Op::End => return Outcome::Done(b.insns.len() as u16),
        }
    }
    Outcome::Done(b.insns.len() as u16)
}
