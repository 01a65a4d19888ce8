//! A speed check (ignored by default): an integer loop in 64-bit mode, reported in guest MIPS.
//! Run with `cargo test -p janus-accel --release soft::tests::bench -- --ignored --nocapture`.

use iced_x86::code_asm::*;

use super::*;

#[test]
#[ignore]
fn integer_loop_mips() {
    let mut m = Machine::new();
    let s = long_state(&m);
    m.load(
        CODE,
        &asm(64, CODE, |a| {
            let mut l = a.create_label();
            a.mov(ecx, 20_000_000).unwrap();
            a.mov(rdi, 0x5000u64).unwrap();
            a.set_label(&mut l).unwrap();
            a.add(rax, rcx).unwrap();
            a.xor(rbx, rax).unwrap();
            a.mov(qword_ptr(rdi), rbx).unwrap();
            a.dec(ecx).unwrap();
            a.jnz(l).unwrap();
            a.hlt().unwrap();
        }),
    );
    m.set(&s);
    let t = std::time::Instant::now();
    m.run_to_halt();
    let dt = t.elapsed().as_secs_f64();
    let n = m.cpu.counters().instructions.unwrap();
    println!(
        "{n} instructions in {dt:.3} s: {:.1} MIPS",
        n as f64 / dt / 1e6
    );
}
