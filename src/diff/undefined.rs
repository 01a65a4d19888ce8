//! What a shift or rotate leaves undefined, which depends on its count and so on the state
//! before it (iced-x86's static `rflags_undefined` cannot know it).
//!
//! Intel SDM vol. 2B, SAL/SAR/SHL/SHR, RCL/RCR/ROL/ROR, SHLD, SHRD: the count is masked to 5
//! bits (6 for a 64-bit operand); a masked count of 0 changes nothing; OF is defined only for
//! a masked count of 1; CF is undefined for SHL/SHR of an 8- or 16-bit operand by at least its
//! width; a 16-bit SHLD/SHRD by more than 16 leaves the result and every status flag undefined.
//! Vendors differ there (AMD EPYC, measured 2026-12-07: `rcl` by 9 sets OF where Intel clears
//! it), and the oracle shows the host's vendor.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};
use janus_accel::CpuState;
use janus_accel::state::rflags;

/// The status flags an instruction can leave undefined.
const STATUS: u64 = rflags::CF | rflags::PF | rflags::AF | rflags::ZF | rflags::SF | rflags::OF;

/// What one execution of an instruction leaves undefined beyond its static description.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountUndefined {
    /// RFLAGS bits.
    pub flags: u64,
    /// The destination (operand 0) as a whole.
    pub result: bool,
}

/// The operand width in bits of operand 0 (a register or memory).
fn width(insn: &Instruction) -> u32 {
    match insn.op0_kind() {
        OpKind::Register => insn.op0_register().size() as u32 * 8,
        _ => insn.memory_size().size() as u32 * 8,
    }
}

/// The count operand's value before the instruction (not masked), if it is a shift or rotate.
fn raw_count(insn: &Instruction, before: &CpuState) -> Option<u64> {
    use Mnemonic::*;
    let op = match insn.mnemonic() {
        Rol | Ror | Rcl | Rcr | Shl | Sal | Shr | Sar => 1,
        Shld | Shrd => 2,
        _ => return None,
    };
    Some(match insn.op_kind(op) {
        OpKind::Immediate8 => u64::from(insn.immediate8()),
        OpKind::Register if insn.op_register(op) == Register::CL => before.gpr[1] & 0xff,
        _ => return None,
    })
}

/// The masked count of a shift or rotate run from `before` (`None` for other instructions).
/// A masked count of 0 changes no flag at all.
pub fn masked_count(insn: &Instruction, before: &CpuState) -> Option<u64> {
    let raw = raw_count(insn, before)?;
    Some(raw & if width(insn) == 64 { 0x3f } else { 0x1f })
}

/// What `insn`, run from `before`, leaves undefined because of its count.
pub fn count_undefined(insn: &Instruction, before: &CpuState) -> CountUndefined {
    let Some(count) = masked_count(insn, before) else {
        return CountUndefined::default();
    };
    let w = width(insn);
    let mut u = CountUndefined::default();
    if count > 1 {
        u.flags |= rflags::OF;
    }
    let m = insn.mnemonic();
    if matches!(m, Mnemonic::Shl | Mnemonic::Sal | Mnemonic::Shr) && w <= 16 && count >= w.into() {
        u.flags |= rflags::CF;
    }
    if matches!(m, Mnemonic::Shld | Mnemonic::Shrd) && w == 16 && count > 16 {
        u.flags |= STATUS;
        u.result = true;
    }
    u
}

/// The bits of operand 0's 64-bit register that an instruction with an undefined result
/// writes (a 32-bit write zero-extends), if operand 0 is a general register.
pub fn dest_register(insn: &Instruction) -> Option<(usize, u64)> {
    if insn.op0_kind() != OpKind::Register {
        return None;
    }
    let r = insn.op0_register();
    let mask = match r.size() {
        2 => 0xffff,
        4 | 8 => u64::MAX,
        _ => return None,
    };
    r.is_gpr().then(|| (r.full_register().number(), mask))
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Code, MemoryOperand};

    fn state(cl: u64) -> CpuState {
        let mut s = CpuState::boot_sector();
        s.gpr[1] = cl;
        s
    }

    #[test]
    fn of_is_undefined_above_a_masked_count_of_one() {
        let s = state(0);
        let rcl = |n| Instruction::with2(Code::Rcl_rm8_imm8, Register::AL, n).unwrap();
        assert_eq!(count_undefined(&rcl(1), &s).flags, 0);
        assert_eq!(count_undefined(&rcl(0), &s).flags, 0);
        // 0x49 & 0x1f = 9: a rotate by 0 mod 9, but a masked count above 1.
        assert_eq!(count_undefined(&rcl(0x49), &s).flags, rflags::OF);
        // 0x21 & 0x1f = 1.
        assert_eq!(count_undefined(&rcl(0x21), &s).flags, 0);
        let rol1 = Instruction::with2(Code::Rol_rm32_1, Register::EAX, 1).unwrap();
        assert_eq!(count_undefined(&rol1, &s).flags, 0);
    }

    #[test]
    fn the_count_comes_from_cl_masked_by_operand_width() {
        let sar64 = Instruction::with2(Code::Sar_rm64_CL, Register::RAX, Register::CL).unwrap();
        let sar32 = Instruction::with2(Code::Sar_rm32_CL, Register::EAX, Register::CL).unwrap();
        // 0x41: 1 masked to 6 bits and to 5 bits.
        assert_eq!(count_undefined(&sar64, &state(0x41)).flags, 0);
        assert_eq!(count_undefined(&sar32, &state(0x41)).flags, 0);
        // 0x20: 32 for a 64-bit operand, 0 (no change at all) for a 32-bit one.
        assert_eq!(count_undefined(&sar64, &state(0x20)).flags, rflags::OF);
        assert_eq!(count_undefined(&sar32, &state(0x20)).flags, 0);
        // Only CL counts, not the rest of RCX.
        assert_eq!(count_undefined(&sar32, &state(0x1_0001)).flags, 0);
    }

    #[test]
    fn cf_is_undefined_for_shl_shr_by_the_width_of_a_small_operand() {
        let s = state(16);
        let shl16 = Instruction::with2(Code::Shl_rm16_CL, Register::AX, Register::CL).unwrap();
        let shr8 = Instruction::with2(Code::Shr_rm8_CL, Register::AL, Register::CL).unwrap();
        let sar16 = Instruction::with2(Code::Sar_rm16_CL, Register::AX, Register::CL).unwrap();
        let shl32 = Instruction::with2(Code::Shl_rm32_CL, Register::EAX, Register::CL).unwrap();
        let of_cf = rflags::OF | rflags::CF;
        assert_eq!(count_undefined(&shl16, &s).flags, of_cf);
        assert_eq!(count_undefined(&shl16, &state(15)).flags, rflags::OF);
        assert_eq!(count_undefined(&shr8, &state(8)).flags, of_cf);
        assert_eq!(count_undefined(&shr8, &state(7)).flags, rflags::OF);
        // SAR's CF is the sign bit then; 32-bit operands cannot be shifted that far.
        assert_eq!(count_undefined(&sar16, &s).flags, rflags::OF);
        assert_eq!(count_undefined(&shl32, &state(31)).flags, rflags::OF);
    }

    #[test]
    fn shld_of_a_word_by_more_than_16_is_wholly_undefined() {
        let m = MemoryOperand::with_base_displ(Register::BX, 0x30);
        let shrd =
            Instruction::with3(Code::Shrd_rm16_r16_CL, m, Register::AX, Register::CL).unwrap();
        let u = count_undefined(&shrd, &state(0x74));
        assert!(u.result);
        assert_eq!(u.flags, STATUS);
        let u = count_undefined(&shrd, &state(16));
        assert!(!u.result);
        assert_eq!(u.flags, rflags::OF);
        let shld = |n| {
            Instruction::with3(Code::Shld_rm16_r16_imm8, Register::SI, Register::SI, n).unwrap()
        };
        assert!(count_undefined(&shld(17), &state(0)).result);
        assert!(!count_undefined(&shld(0x30), &state(0)).result);
        assert_eq!(dest_register(&shld(17)), Some((6, 0xffff)));
        // 32-bit operands: the count is at most 31, always defined.
        let shld32 = Instruction::with3(
            Code::Shld_rm32_r32_CL,
            Register::ESI,
            Register::EDI,
            Register::CL,
        )
        .unwrap();
        assert!(!count_undefined(&shld32, &state(31)).result);
        assert_eq!(dest_register(&shld32), Some((6, u64::MAX)));
    }

    #[test]
    fn other_instructions_have_nothing_count_dependent() {
        let add = Instruction::with2(Code::Add_rm8_imm8, Register::AL, 9).unwrap();
        assert_eq!(
            count_undefined(&add, &state(0x74)),
            CountUndefined::default()
        );
    }
}
