//! Facts about a block's IR gathered before code generation: where each temporary dies (so its
//! register can be reused or handed to the result), which definitions are never used, and which
//! flag-setting ops have observable flags (the others are overwritten before anything can see
//! them, so their operands need not be kept).

use super::super::flags::CcOp;
use super::super::ir::{Op, T};

/// Liveness facts of one block.
#[derive(Debug, Default)]
pub struct Analysis {
    dying: Vec<Vec<T>>,
    unused: Vec<bool>,
    flags_live: Vec<bool>,
}

/// The temporaries op `op` reads.
pub fn uses(op: &Op, out: &mut Vec<T>) {
    match *op {
        Op::Set { s, .. } => out.push(s),
        Op::Bin { a, b, .. } => out.extend([a, b]),
        Op::Un { a, .. } => out.push(a),
        Op::Flags { a, b, r, .. } => out.extend([a, b, r]),
        Op::Select { c, a, b, .. } => out.extend([c, a, b]),
        Op::Load { a, .. } => out.push(a),
        Op::Store { a, s, .. } => out.extend([a, s]),
        Op::Jump { t } => out.push(t),
        Op::Branch { c, .. } => out.push(c),
        _ => {}
    }
}

fn def(op: &Op) -> Option<T> {
    match *op {
        Op::Const { d, .. }
        | Op::Get { d, .. }
        | Op::Bin { d, .. }
        | Op::Un { d, .. }
        | Op::Carry { d }
        | Op::Cond { d, .. }
        | Op::Select { d, .. }
        | Op::Load { d, .. } => Some(d),
        _ => None,
    }
}

/// The flags kind an op sets, if it sets flags from IR values.
pub fn sets_flags(op: &Op) -> Option<CcOp> {
    match *op {
        Op::Flags { cc, .. }
        | Op::AluR {
            cc, flags: true, ..
        }
        | Op::AluI {
            cc, flags: true, ..
        } => Some(cc),
        _ => None,
    }
}

impl Analysis {
    /// Analyses `ops`.
    pub fn new(ops: &[Op]) -> Analysis {
        let n = ops.len();
        let mut dying = vec![Vec::new(); n];
        let mut unused = vec![false; n];
        let mut live = [false; 256];
        let mut u = Vec::new();
        for k in (0..n).rev() {
            let op = &ops[k];
            if let Some(d) = def(op) {
                if !live[usize::from(d)] {
                    unused[k] = true;
                    dying[k].push(d);
                }
                live[usize::from(d)] = false;
            }
            u.clear();
            uses(op, &mut u);
            for &t in &u {
                if !live[usize::from(t)] && !dying[k].contains(&t) {
                    dying[k].push(t);
                }
            }
            for &t in &u {
                live[usize::from(t)] = true;
            }
        }
        let flags_live = (0..n).map(|k| observed_after(ops, k)).collect();
        Analysis {
            dying,
            unused,
            flags_live,
        }
    }

    /// Temporaries whose last use is op `k` (and definitions of op `k` never used).
    pub fn dying(&self, k: usize) -> &[T] {
        &self.dying[k]
    }

    /// Whether temporary `t` dies at op `k`.
    pub fn dies(&self, k: usize, t: T) -> bool {
        self.dying[k].contains(&t)
    }

    /// Whether op `k` defines a temporary that nothing uses.
    pub fn unused(&self, k: usize) -> bool {
        self.unused[k]
    }

    /// Whether the flags set at op `k` can be observed.
    pub fn flags_live(&self, k: usize) -> bool {
        self.flags_live[k]
    }
}

/// Whether flags set by op `k` can be seen before another op replaces them all.
fn observed_after(ops: &[Op], k: usize) -> bool {
    for op in &ops[k + 1..] {
        if let Some(cc) = sets_flags(op) {
            return matches!(cc, CcOp::Inc | CcOp::Dec);
        }
        match op {
            Op::Insn { .. }
            | Op::Const { .. }
            | Op::Get { .. }
            | Op::Set { .. }
            | Op::Bin { .. }
            | Op::Un { .. }
            | Op::Select { .. }
            | Op::AluR { flags: false, .. }
            | Op::AluI { flags: false, .. } => {}
            _ => return true,
        }
    }
    true
}

/// The instruction boundary right after a store at op `k`, when the store is the last op of its
/// instruction: then a write into translated code can leave from the store's slow path.
pub fn boundary_after(ops: &[Op], k: usize) -> Option<(u16, u64)> {
    match ops.get(k + 1) {
        Some(&Op::Insn { n, rip }) => Some((n, rip)),
        _ => None,
    }
}
