//! Decimal arithmetic: DAA DAS AAA AAS AAM AAD (invalid in 64-bit mode; AAM 0 raises #DE), and
//! SALC (0xD6, AL = CF ? 0xFF : 0, undocumented but executed by every x86 CPU; also invalid in
//! 64-bit mode, where iced-x86 does not decode it).

use iced_x86::{Instruction, Mnemonic};

use super::Builder;
use crate::soft::cpu::{Ctx, Fault, R, vec};
use crate::soft::flags::{CcOp, parity};
use crate::state::rflags::{AF, CF, OF, PF, SF, ZF};

pub(super) fn lower(b: &mut Builder, i: &Instruction) -> bool {
    use Mnemonic::*;
    match i.mnemonic() {
        Daa | Das | Aaa | Aas | Aam | Aad => b.call(bcd),
        Salc => b.call(salc),
        _ => return false,
    }
    true
}

fn szp(f: u64, r: u8) -> u64 {
    let mut f = f & !(SF | ZF | PF);
    if r == 0 {
        f |= ZF;
    }
    if r & 0x80 != 0 {
        f |= SF;
    }
    if parity(u64::from(r)) {
        f |= PF;
    }
    f
}

fn salc(c: &mut Ctx, _: &Instruction) -> R<()> {
    let al = if c.c.rflags() & CF != 0 { 0xff } else { 0 };
    c.c.set(0, 1, al);
    Ok(())
}

fn bcd(c: &mut Ctx, i: &Instruction) -> R<()> {
    let f = c.c.rflags();
    let al = c.c.get(0, 1) as u8;
    let ah = c.c.get(16, 1) as u8;
    let cf = f & CF != 0;
    let af = f & AF != 0;
    match i.mnemonic() {
        Mnemonic::Daa | Mnemonic::Das => {
            let daa = i.mnemonic() == Mnemonic::Daa;
            let mut r = al;
            let mut ncf = false;
            let mut naf = false;
            if al & 0xf > 9 || af {
                r = if daa {
                    r.wrapping_add(6)
                } else {
                    r.wrapping_sub(6)
                };
                ncf = cf || if daa { al > 0xf9 } else { al < 6 };
                naf = true;
            }
            if al > 0x99 || cf {
                r = if daa {
                    r.wrapping_add(0x60)
                } else {
                    r.wrapping_sub(0x60)
                };
                ncf = true;
            }
            c.c.set(0, 1, u64::from(r));
            let mut nf = szp(f & !(CF | AF | OF), r);
            if ncf {
                nf |= CF;
            }
            if naf {
                nf |= AF;
            }
            c.c.set_rflags(nf);
        }
        Mnemonic::Aaa | Mnemonic::Aas => {
            let aaa = i.mnemonic() == Mnemonic::Aaa;
            let mut nf = f & !(CF | AF | OF | SF | ZF | PF);
            let ax = c.c.get(0, 2) as u16;
            let nax = if al & 0xf > 9 || af {
                nf |= CF | AF;
                if aaa {
                    ax.wrapping_add(0x106)
                } else {
                    ax.wrapping_sub(6).wrapping_sub(0x100)
                }
            } else {
                ax
            };
            let nax = nax & 0xff0f;
            c.c.set(0, 2, u64::from(nax));
            let r = nax as u8;
            nf = szp(nf, r);
            c.c.set_rflags(nf);
        }
        Mnemonic::Aam => {
            let base = i.immediate(0) as u8;
            if base == 0 {
                return Err(Fault::Exc {
                    vector: vec::DE,
                    code: None,
                });
            }
            let r = al % base;
            c.c.set(0, 2, u64::from(al / base) << 8 | u64::from(r));
            c.c.set_rflags(szp(f & !(CF | AF | OF), r));
        }
        _ => {
            // The flags are those of the 8-bit addition AL + AH * imm (CF, AF and OF are
            // undefined; this is what Intel CPUs give, checked on the host).
            let base = i.immediate(0) as u8;
            let prod = ah.wrapping_mul(base);
            let r = al.wrapping_add(prod);
            c.c.set(0, 2, u64::from(r));
            c.c.lazy
                .set(CcOp::Add, 1, u64::from(al), u64::from(prod), u64::from(r));
        }
    }
    Ok(())
}
