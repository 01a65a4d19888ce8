//! Helper calls that the JIT compiles itself because they sit in hot loops: ROL and ROR of a
//! register by a constant, and two- and three-operand IMUL on registers. Each follows its
//! helper exactly (results, and the flags the helper leaves in `Lazy`: explicit flags after a
//! rotate and after IMUL); the equivalence tests hold them to it.

use dynasmrt::{DynasmApi, dynasm};
use iced_x86::{Instruction, Mnemonic, OpKind};

use super::super::flags::CcOp;
use super::super::translate::{gpr, op_size};
use super::alloc::FLoc;
use super::codegen::{Gen, x64};

/// A helper call compiled inline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Native {
    /// ROL (`left`) or ROR of guest register `r` by `cnt`.
    Rot {
        /// Rotate left.
        left: bool,
        /// Guest register.
        r: u8,
        /// Size.
        sz: u8,
        /// Count as encoded.
        cnt: u8,
        /// Whether SF ZF AF PF from before are kept (else they are left zero: the IR's flag
        /// liveness found them dead).
        keep: bool,
    },
    /// `d = s * imm` (three operands) or `d = d * s` (two).
    Imul {
        /// Destination register.
        d: u8,
        /// Source register.
        s: u8,
        /// Immediate of the three-operand form.
        imm: Option<i32>,
        /// Size.
        sz: u8,
    },
}

fn reg(i: &Instruction, n: u32) -> Option<u8> {
    if i.op_kind(n) != OpKind::Register {
        return None;
    }
    match gpr(i.op_register(n)) {
        Some((r, _)) if r < 16 => Some(r),
        _ => None,
    }
}

impl Native {
    /// The inline form of the helper of `i`, if there is one.
    pub fn of(i: &Instruction) -> Option<Native> {
        match i.mnemonic() {
            Mnemonic::Rol | Mnemonic::Ror => {
                let r = reg(i, 0)?;
                if i.op_count() != 2 || i.op1_kind() != OpKind::Immediate8 {
                    return None;
                }
                Some(Native::Rot {
                    left: i.mnemonic() == Mnemonic::Rol,
                    r,
                    sz: op_size(i, 0),
                    cnt: i.immediate8(),
                    keep: true,
                })
            }
            Mnemonic::Imul if i.op_count() >= 2 => {
                let d = reg(i, 0)?;
                let s = reg(i, 1)?;
                let sz = op_size(i, 0);
                if sz < 2 || op_size(i, 1) != sz {
                    return None;
                }
                let imm = if i.op_count() == 3 {
                    let v = i.immediate(2) as i64;
                    Some(i32::try_from(v).ok()?)
                } else {
                    None
                };
                Some(Native::Imul { d, s, imm, sz })
            }
            _ => None,
        }
    }
}

impl Gen<'_> {
    /// Compiles a helper call inline.
    pub(super) fn native(&mut self, nat: Native) {
        let live = self.an.flags_live(self.k);
        match nat {
            Native::Rot {
                left,
                r,
                sz,
                cnt,
                keep,
            } => {
                let bits = u32::from(sz) * 8;
                let cnt = u32::from(cnt) & if sz == 8 { 63 } else { 31 };
                if cnt == 0 {
                    // The operand is written back unchanged (a 32-bit write clears the top).
                    if sz == 4 {
                        let g = self.guest(r, true);
                        x64!(self.a ; mov Rd(g), Rd(g));
                        self.dirty(r);
                    }
                    return;
                }
                let n = (cnt % bits) as i8;
                let f = match (live, keep) {
                    (false, _) => None,
                    (true, true) => Some(self.all_flags()),
                    (true, false) => {
                        let f = self.alloc();
                        x64!(self.a ; xor Rd(f), Rd(f));
                        Some(f)
                    }
                };
                let g = self.guest(r, true);
                if n != 0 {
                    match (left, sz) {
                        (true, 1) => x64!(self.a ; rol Rb(g), n),
                        (true, 2) => x64!(self.a ; rol Rw(g), n),
                        (true, 4) => x64!(self.a ; rol Rd(g), n),
                        (true, _) => x64!(self.a ; rol Rq(g), n),
                        (false, 1) => x64!(self.a ; ror Rb(g), n),
                        (false, 2) => x64!(self.a ; ror Rw(g), n),
                        (false, 4) => x64!(self.a ; ror Rd(g), n),
                        (false, _) => x64!(self.a ; ror Rq(g), n),
                    }
                    self.dirty(r);
                }
                let Some(f) = f else {
                    return;
                };
                let t = self.alloc();
                let u = self.alloc();
                // u = the top bit (ROL) or the top two bits (ROR) of the result.
                let shift = (bits - if left { 1 } else { 2 }) as i8;
                match sz {
                    1 => x64!(self.a ; movzx Rd(u), Rb(g) ; shr Rd(u), shift),
                    2 => x64!(self.a ; movzx Rd(u), Rw(g) ; shr Rd(u), shift),
                    4 => x64!(self.a ; mov Rd(u), Rd(g) ; shr Rd(u), shift),
                    _ => x64!(self.a ; mov Rq(u), Rq(g) ; shr Rq(u), shift),
                }
                if left {
                    // CF = bit 0, OF = top bit ^ CF.
                    x64!(self.a
                        ; mov Rd(t), Rd(g)
                        ; and Rd(t), 1
                        ; xor Rd(u), Rd(t)
                    );
                } else {
                    // CF = top bit, OF = top bit ^ the bit below.
                    x64!(self.a
                        ; mov Rd(t), Rd(u)
                        ; shr Rd(t), 1
                        ; xor Rd(u), Rd(t)
                        ; and Rd(u), 1
                    );
                }
                x64!(self.a
                    ; shl Rd(u), 11
                    ; or Rd(u), Rd(t)
                    ; and Rd(f), !0x801
                    ; or Rd(f), Rd(u)
                );
                self.install(
                    CcOp::Eflags,
                    sz,
                    [FLoc::None, FLoc::None, FLoc::None, FLoc::Reg(f)],
                );
            }
            Native::Imul { d, s, imm, sz } => {
                let gs = self.guest(s, true);
                let gd = self.guest(d, imm.is_none() || sz < 4);
                match (imm, sz) {
                    (None, 2) => x64!(self.a ; imul Rw(gd), Rw(gs)),
                    (None, 4) => x64!(self.a ; imul Rd(gd), Rd(gs)),
                    (None, _) => x64!(self.a ; imul Rq(gd), Rq(gs)),
                    (Some(k), 2) => x64!(self.a ; imul Rw(gd), Rw(gs), k as i16),
                    (Some(k), 4) => x64!(self.a ; imul Rd(gd), Rd(gs), k),
                    (Some(k), _) => x64!(self.a ; imul Rq(gd), Rq(gs), k),
                }
                self.dirty(d);
                if !live {
                    return;
                }
                // As the helper: CF = OF = overflow, SF and PF from the low half, ZF and AF
                // clear, as explicit flags.
                let x = self.alloc();
                let t = self.alloc();
                x64!(self.a ; setc Rb(x) ; movzx Rd(x), Rb(x));
                match sz {
                    2 => x64!(self.a ; test Rw(gd), Rw(gd)),
                    4 => x64!(self.a ; test Rd(gd), Rd(gd)),
                    _ => x64!(self.a ; test Rq(gd), Rq(gd)),
                }
                x64!(self.a
                    ; pushfq
                    ; pop Rq(t)
                    ; and Rd(t), 0x84
                    ; neg Rd(x)
                    ; and Rd(x), 0x801
                    ; or Rd(t), Rd(x)
                );
                let flags = [FLoc::None, FLoc::None, FLoc::None, FLoc::Reg(t)];
                self.install(CcOp::Eflags, sz, flags);
            }
        }
    }
}
