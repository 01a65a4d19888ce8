//! Golden tests of the translator: guest code in, the IR dump out. When lowering changes on
//! purpose, copy the printed dump over the expected text.

use iced_x86::code_asm::*;

use super::*;
use crate::soft::cpu::Ctx;
use crate::soft::translate;

fn ir_of(bits: u32, f: impl FnOnce(&mut CodeAssembler)) -> String {
    let mut m = Machine::new();
    let s = match bits {
        16 => real_state(),
        32 => prot_state(&m),
        _ => long_state(&m),
    };
    m.load(CODE, &asm(bits, CODE, f));
    m.set(&s);
    let io = TestIo::default();
    let mut ctx = Ctx {
        c: &mut m.cpu.core,
        io: &io,
    };
    let mode = translate::mode_key(ctx.c, false);
    let (b, _) = translate::translate(&mut ctx, mode, translate::MAX_BLOCK).unwrap();
    b.to_string()
}

#[test]
fn alu_store_and_branch_64() {
    let got = ir_of(64, |a| {
        let mut l = a.create_label();
        a.set_label(&mut l).unwrap();
        a.add(rax, rbx).unwrap();
        a.mov(qword_ptr(rdi + 8), rax).unwrap();
        a.dec(ecx).unwrap();
        a.jne(l).unwrap();
    });
    let want = "\
; add rax,rbx
  insn 0 @0x7c00
  r0.8 = Add r3 (flags Add)
; mov [rdi+8],rax
  insn 1 @0x7c03
  t0 = r0.8
  t1 = r7.8
  t2 = 0x8
  t3 = Add.8 t1, t2
  store.8 s3:t3 = t0
; dec ecx
  insn 2 @0x7c07
  r1.4 = Sub 0x1 (flags Dec)
; jne short 0000000000007C00h
  branch cond 0x5 ? 0x7c00 : 0x7c0b
";
    assert_eq!(got, want, "\n{got}");
}

#[test]
fn real_mode_memory_operand_16_bit_address() {
    let got = ir_of(16, |a| {
        a.mov(ax, word_ptr(bx + si - 2)).unwrap();
        a.hlt().unwrap();
    });
    let want = "\
; mov ax,[bx+si-2]
  insn 0 @0x7c00
  t0 = r3.2
  t1 = r6.2
  t2 = Add.2 t0, t1
  t3 = 0xfffe
  t4 = Add.2 t2, t3
  t5 = load.2 s3:t4
  r0.2 = t5
; hlt
  insn 1 @0x7c03
  call helper (insn 1)
  end
";
    assert_eq!(got, want, "\n{got}");
}
