//! Flag liveness: a backward pass over a finished block that drops the flag records nothing can
//! read, flag by flag.
//!
//! Most ALU instructions set all six arithmetic flags and most of those are overwritten by the
//! next ALU instruction before anything reads them. The lazy-flags record makes a dead write
//! cheap but not free (the interpreter still stores operands and result), and a rotate, which
//! keeps SF ZF AF PF, otherwise has to compute the old flags to keep them. After this pass:
//! - a `Flags` op whose flags are all dead is removed;
//! - an `AluR`/`AluI` whose flags are dead records none (`flags: false`), or disappears when it
//!   writes nothing either (CMP/TEST);
//! - a `Rot` keeps the old SF ZF AF PF only when one of them is read later (`keep`).
//!
//! Every point where the guest state can be observed counts as reading all flags: the end of the
//! block, a load or store (it may fault, and an exception sees the flags of the faulting
//! instruction's start), a helper call, an indirect or direct block exit, and every `Insn`
//! marker (the translator keeps those only before instructions that may fault, and right after a
//! store or helper, where a write into the block's own code leaves it early).

use crate::soft::flags::{ARITH, CcOp};
use crate::soft::ir::Op;
use crate::state::rflags::{AF, CF, OF, PF, SF, ZF};

/// The flags condition code `cc` (the low nibble of Jcc) reads.
pub fn cond_reads(cc: u8) -> u64 {
    match (cc >> 1) & 7 {
        0 => OF,
        1 => CF,
        2 => ZF,
        3 => CF | ZF,
        4 => SF,
        5 => PF,
        6 => SF | OF,
        _ => ZF | SF | OF,
    }
}

/// The flags a flag record of kind `cc` writes, and those it reads while being recorded.
fn record(cc: CcOp) -> (u64, u64) {
    match cc {
        // INC and DEC keep CF: the record copies the old one.
        CcOp::Inc | CcOp::Dec => (ARITH & !CF, CF),
        _ => (ARITH, 0),
    }
}

/// Runs the pass over `ops` in place; `starts` (each instruction's first op) follows the ops
/// that remain.
pub fn prune_dead_flags(ops: &mut Vec<Op>, starts: &mut [u32]) {
    let mut live = ARITH;
    let mut dead = Vec::new();
    for k in (0..ops.len()).rev() {
        match &mut ops[k] {
            Op::Flags { cc, .. } => {
                let (w, r) = record(*cc);
                if live & w == 0 {
                    dead.push(k);
                } else {
                    live = (live & !w) | r;
                }
            }
            Op::AluR {
                cc, write, flags, ..
            }
            | Op::AluI {
                cc, write, flags, ..
            } => {
                if !*flags {
                    continue;
                }
                let (w, r) = record(*cc);
                if live & w == 0 {
                    if *write {
                        *flags = false;
                    } else {
                        dead.push(k);
                    }
                } else {
                    live = (live & !w) | r;
                }
            }
            Op::AdcR { flags, .. } => {
                if *flags && live & ARITH == 0 {
                    *flags = false;
                }
                live = (live & !ARITH) | CF;
            }
            Op::Rot { keep, .. } => {
                *keep = live & (SF | ZF | AF | PF) != 0;
                live &= !(CF | OF);
            }
            Op::Carry { .. } => live |= CF,
            Op::Cond { cc, .. } | Op::BranchCc { cc, .. } => live |= cond_reads(*cc),
            Op::Insn { .. }
            | Op::Load { .. }
            | Op::Store { .. }
            | Op::Call { .. }
            | Op::Jump { .. }
            | Op::Goto { .. }
            | Op::Branch { .. }
            | Op::End => live = ARITH,
            Op::Const { .. }
            | Op::Get { .. }
            | Op::Set { .. }
            | Op::Bin { .. }
            | Op::Un { .. }
            | Op::Select { .. } => {}
        }
    }
    if dead.is_empty() {
        return;
    }
    // `dead` is in descending order.
    for s in starts.iter_mut() {
        *s -= dead.iter().filter(|&&d| d < *s as usize).count() as u32;
    }
    let mut k = 0;
    let mut next = dead.pop();
    ops.retain(|_| {
        let keep = Some(k) != next;
        if !keep {
            next = dead.pop();
        }
        k += 1;
        keep
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soft::ir::BinOp;

    fn alu_r(op: BinOp, cc: CcOp, r: u8, s: u8, write: bool) -> Op {
        Op::AluR {
            op,
            cc,
            r,
            s,
            sz: 4,
            write,
            flags: true,
        }
    }

    fn flags_of(op: &Op) -> Option<bool> {
        match *op {
            Op::AluR { flags, .. } | Op::AluI { flags, .. } => Some(flags),
            _ => None,
        }
    }

    #[test]
    fn overwritten_flags_are_dropped_and_read_ones_kept() {
        // add eax, ebx ; xor ebx, ecx ; rol eax, 7 ; adc (carry read) ; cmp eax, esi ; jb
        let mut ops = vec![
            alu_r(BinOp::Add, CcOp::Add, 0, 3, true),
            alu_r(BinOp::Xor, CcOp::Logic, 3, 1, true),
            Op::Rot {
                left: true,
                r: 0,
                sz: 4,
                cnt: 7,
                keep: true,
            },
            Op::Carry { d: 0 },
            Op::Flags {
                cc: CcOp::Adc,
                sz: 4,
                a: 0,
                b: 0,
                r: 0,
            },
            alu_r(BinOp::Sub, CcOp::Sub, 0, 6, false),
            Op::BranchCc { cc: 2, taken: 1 },
        ];
        prune_dead_flags(&mut ops, &mut []);
        // The ADD's and XOR's flags are dead (the rotate's CF and the ADC's record replace
        // them), the rotate needs none of the old ones, the ADC's record is overwritten by the
        // CMP, which the branch reads.
        assert_eq!(flags_of(&ops[0]), Some(false));
        assert_eq!(flags_of(&ops[1]), Some(false));
        assert!(matches!(ops[2], Op::Rot { keep: false, .. }));
        assert!(matches!(ops[3], Op::Carry { .. }));
        assert!(
            matches!(ops[4], Op::AluR { flags: true, .. }),
            "{:?}",
            ops[4]
        );
        assert_eq!(ops.len(), 6);
    }

    #[test]
    fn a_rotate_keeps_old_flags_that_are_read_later() {
        // sub eax, ebx ; ror eax, 3 ; jz (reads ZF of the SUB through the rotate)
        let mut ops = vec![
            alu_r(BinOp::Sub, CcOp::Sub, 0, 3, true),
            Op::Rot {
                left: false,
                r: 0,
                sz: 4,
                cnt: 3,
                keep: false,
            },
            Op::BranchCc { cc: 4, taken: 1 },
        ];
        prune_dead_flags(&mut ops, &mut []);
        assert_eq!(flags_of(&ops[0]), Some(true));
        assert!(matches!(ops[1], Op::Rot { keep: true, .. }));
    }

    #[test]
    fn inc_keeps_the_carry_of_the_op_before() {
        // add eax, ebx ; inc ecx ; (block end: all live)
        let mut ops = vec![
            alu_r(BinOp::Add, CcOp::Add, 0, 3, true),
            Op::AluI {
                op: BinOp::Add,
                cc: CcOp::Inc,
                r: 1,
                sz: 4,
                write: true,
                flags: true,
                imm: 1,
            },
            Op::Goto { rip: 0 },
        ];
        prune_dead_flags(&mut ops, &mut []);
        assert_eq!(flags_of(&ops[0]), Some(true));
        assert_eq!(flags_of(&ops[1]), Some(true));
    }

    #[test]
    fn memory_accesses_and_block_ends_see_all_flags() {
        // add eax, ebx ; store ; xor eax, eax (overwrites, but the store may fault first)
        let mut ops = vec![
            alu_r(BinOp::Add, CcOp::Add, 0, 3, true),
            Op::Store {
                seg: 3,
                a: 0,
                s: 1,
                sz: 4,
            },
            alu_r(BinOp::Xor, CcOp::Logic, 0, 0, true),
            alu_r(BinOp::Sub, CcOp::Sub, 0, 1, false),
            alu_r(BinOp::Sub, CcOp::Sub, 0, 2, false),
            Op::End,
        ];
        prune_dead_flags(&mut ops, &mut []);
        assert_eq!(flags_of(&ops[0]), Some(true));
        // XOR's flags die under the first CMP, which dies under the second and disappears.
        assert_eq!(flags_of(&ops[2]), Some(false));
        assert_eq!(ops.len(), 5);
        assert!(matches!(ops[3], Op::AluR { s: 2, .. }));
    }
}
