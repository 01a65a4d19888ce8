//! The translation cache's bound (`--tb-size`): a guest that runs more code than the budget
//! holds gets the cache flushed whole at block boundaries, and runs on correctly, on the
//! interpreter and on the JIT (whose chained code goes with the flush).

use super::*;

/// Blocks of the program: `add eax, k; jmp next`, one after the other.
const BLOCKS: u32 = 8000;
/// Times the program runs through all of them.
const PASSES: u32 = 3;

/// 32-bit code at CODE: ECX = PASSES; then BLOCKS blocks, block k adding k + 1 to EAX and
/// jumping to the next; `dec ecx; jnz` back to the first block; HLT.
fn program() -> Vec<u8> {
    let mut code = vec![0xb9]; // mov ecx, PASSES
    code.extend(PASSES.to_le_bytes());
    let first = code.len();
    for k in 0..BLOCKS {
        code.push(0x05); // add eax, imm32
        code.extend((k + 1).to_le_bytes());
        code.extend([0xeb, 0x00]); // jmp to the next block
    }
    code.push(0x49); // dec ecx
    let back = first as i64 - (code.len() as i64 + 6);
    code.extend([0x0f, 0x85]); // jnz first block
    code.extend((back as i32).to_le_bytes());
    code.push(0xf4); // hlt
    code
}

fn flushes(m: &Machine) -> u64 {
    m.cpu.counters().extra["tb flushes (cache full)"]
}

fn runs_on_across_flushes(jit: bool) {
    let mut m = Machine::new();
    // 1 MiB, the smallest budget: about 2,000 of these blocks.
    m.cpu = SoftAccel::with_jit(m.mem.clone(), 1, jit)
        .with_tb_size(super::super::MIN_TB_SIZE)
        .new_vcpu(0)
        .unwrap();
    m.load(CODE, &program());
    let mut s = prot_state(&m);
    s.gpr[0] = 0;
    m.set(&s);
    let s = m.run_to_halt();
    let sum = u64::from(BLOCKS) * u64::from(BLOCKS + 1) / 2;
    assert_eq!(s.gpr[0], u64::from(PASSES) * sum % (1 << 32));
    assert_eq!(s.gpr[1], 0);
    let f = flushes(&m);
    assert!(f >= 3, "{f} flushes: the cache was never full");
    assert!(m.cpu.core.cache.bytes() <= super::super::MIN_TB_SIZE);
    if jit {
        // Compiled code ran, and was compiled again after each flush.
        let compiled = m.cpu.counters().extra["jit blocks compiled"];
        assert!(compiled > u64::from(BLOCKS), "{compiled} blocks compiled");
    }
}

#[test]
fn a_full_translation_cache_is_flushed_and_the_guest_runs_on_interp() {
    runs_on_across_flushes(false);
}

#[test]
fn a_full_translation_cache_is_flushed_and_the_guest_runs_on_jit() {
    runs_on_across_flushes(true);
}

/// With the default budget the same program is never flushed.
#[test]
fn the_default_budget_holds_the_program_without_a_flush() {
    let mut m = Machine::new();
    m.load(CODE, &program());
    let s = prot_state(&m);
    m.set(&s);
    m.run_to_halt();
    assert_eq!(flushes(&m), 0);
}
