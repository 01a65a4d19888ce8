//! Device writes into guest RAM (DMA, `GuestMemory::write_dma`) over code a vCPU has translated
//! and compiled: the vCPU runs the new code, on the interpreter and on the JIT.

use super::*;

/// Real-mode code at CODE that sends the immediate of its `mov al` to port 0x80 a hundred times
/// (the loop's block is translated, and compiled under the JIT, on its first pass), halts, and
/// after the interrupt that wakes it does it all again. Returns the image and the address of
/// the immediate.
fn program() -> (Vec<u8>, u64) {
    let code = vec![
        0xfb, // sti
        0xb9, 0x64, 0x00, // L0: mov cx, 100
        0xb0, 0x01, // L: mov al, 1
        0xe6, 0x80, // out 0x80, al
        0x49, // dec cx
        0x75, 0xf9, // jnz L
        0xf4, // hlt
        0xeb, 0xf2, // jmp L0
    ];
    (code, CODE + 5)
}

/// The interrupt handler of vector 0x20: IRET.
const HANDLER: u64 = 0x7000;

fn runs_the_new_code(jit: bool) {
    let mut m = Machine::new();
    m.cpu = SoftAccel::with_jit(m.mem.clone(), 1, jit)
        .new_vcpu(0)
        .unwrap();
    let (code, imm) = program();
    m.load(CODE, &code);
    m.load(HANDLER, &[0xcf]);
    m.mem.write_le(0x20 * 4, 4, HANDLER).unwrap();
    let s = real_state();
    m.set(&s);
    assert_eq!(m.run(), Exit::Halt);
    assert_eq!(m.io.port_bytes(0x80), vec![1; 100]);
    // A device writes the immediate: the translated (compiled) loop must go.
    m.mem.write_dma(imm, &[2]).unwrap();
    m.cpu.inject_interrupt(0x20).unwrap();
    let mut exit = m.run();
    // The write kicked the vCPU (as another vCPU's store would): it reads its mail and stops.
    while exit == Exit::Stopped {
        m.cpu.kicker().clear();
        exit = m.run();
    }
    assert_eq!(exit, Exit::Halt);
    let mut want = vec![1; 100];
    want.extend([2; 100]);
    assert_eq!(m.io.port_bytes(0x80), want);
}

#[test]
fn a_device_write_over_translated_code_runs_the_new_code_interp() {
    runs_the_new_code(false);
}

#[test]
fn a_device_write_over_compiled_code_runs_the_new_code_jit() {
    runs_the_new_code(true);
}

/// Without the write path's invalidation the vCPU would run its stale block: a plain host
/// write (what a device did before `write_dma`) shows the difference this test relies on.
#[test]
fn a_plain_host_write_leaves_the_stale_block() {
    for jit in [false, true] {
        plain_write_leaves_the_stale_block(jit);
    }
}

fn plain_write_leaves_the_stale_block(jit: bool) {
    let mut m = Machine::new();
    m.cpu = SoftAccel::with_jit(m.mem.clone(), 1, jit)
        .new_vcpu(0)
        .unwrap();
    let (code, imm) = program();
    m.load(CODE, &code);
    m.load(HANDLER, &[0xcf]);
    m.mem.write_le(0x20 * 4, 4, HANDLER).unwrap();
    m.set(&real_state());
    assert_eq!(m.run(), Exit::Halt);
    m.mem.write(imm, &[2]).unwrap();
    m.cpu.inject_interrupt(0x20).unwrap();
    assert_eq!(m.run(), Exit::Halt);
    // The loop's cached block still says `mov al, 1` (only the block entered after STI's
    // shadow, translated afresh, sees the 2).
    let second = m.io.port_bytes(0x80).split_off(100);
    assert_eq!(second.len(), 100);
    assert_eq!(second.iter().filter(|&&b| b == 1).count(), 99, "{second:?}");
}
