//! Tests of the JIT: guests built as the software CPU's tests build them (`soft::tests`), run
//! compiled and interpreted from the same state, with the final states and memory compared;
//! golden dumps of generated code; random programs.

mod equiv;
mod golden;
mod random;
mod state;

use iced_x86::code_asm::CodeAssembler;

use super::super::SoftAccel;
use super::super::tests::{CODE, Machine, asm, long_state, prot_state, real_state};
use crate::exit::Exit;
use crate::state::CpuState;

/// A one-vCPU machine (8 MiB of RAM) whose vCPU runs compiled code.
pub fn jit_machine() -> Machine {
    let mut m = Machine::new();
    m.cpu = SoftAccel::with_jit(m.mem.clone(), 1, true)
        .new_vcpu(0)
        .unwrap();
    m
}

/// The initial state of mode `bits` (16: real, 32: flat protected, 64: long) on `m`.
pub fn state_for(m: &Machine, bits: u32) -> CpuState {
    match bits {
        16 => real_state(),
        32 => prot_state(m),
        _ => long_state(m),
    }
}

/// Runs `code` (assembled at CODE in mode `bits`, then HLT) on a machine until HLT.
fn run(
    mut m: Machine,
    bits: u32,
    code: &[u8],
    setup: &dyn Fn(&Machine, &mut CpuState),
) -> (Machine, Exit, CpuState) {
    let mut s = state_for(&m, bits);
    setup(&m, &mut s);
    m.load(CODE, code);
    m.set(&s);
    let e = m.run();
    let s = m.state();
    (m, e, s)
}

/// Runs the same guest interpreted and compiled; asserts the same exit, state and the first
/// `ram` bytes of memory; returns the compiled run's machine and state.
pub fn same_both_ways(
    bits: u32,
    f: impl Fn(&mut CodeAssembler),
    setup: &dyn Fn(&Machine, &mut CpuState),
    ram: usize,
) -> (Machine, CpuState) {
    let code = asm(bits, CODE, |a| {
        f(a);
        a.hlt().unwrap();
    });
    let (mi, ei, si) = run(Machine::new(), bits, &code, setup);
    let (mj, ej, sj) = run(jit_machine(), bits, &code, setup);
    assert_eq!(ei, ej, "exits differ");
    assert_eq!(si, sj, "states differ\ninterpreter:\n{si}\njit:\n{sj}");
    let mut a = vec![0u8; ram];
    let mut b = vec![0u8; ram];
    mi.mem.read(0, &mut a).unwrap();
    mj.mem.read(0, &mut b).unwrap();
    if let Some(i) = (0..ram).find(|&i| a[i] != b[i]) {
        panic!("memory differs at {i:#x}: {:#x} vs {:#x}", a[i], b[i]);
    }
    (mj, sj)
}

#[test]
fn jit_vcpu_is_send() {
    fn send<T: Send>() {}
    send::<super::super::SoftVcpu>();
}
