//! String instructions with REP prefixes, DF, address sizes, and port strings.

use iced_x86::code_asm::*;

use super::alu::run64;
use super::*;
use crate::state::Reg;

#[test]
fn rep_movsb_and_stosd() {
    let (m, s) = run64(|a| {
        a.mov(rsi, 0x5000u64).unwrap();
        a.mov(rdi, 0x6000u64).unwrap();
        a.mov(dword_ptr(rsi), 0x4433_2211).unwrap();
        a.mov(ecx, 4).unwrap();
        a.rep().movsb().unwrap();
        a.mov(eax, 0xaabb_ccddu32 as i32).unwrap();
        a.mov(ecx, 3).unwrap();
        a.rep().stosd().unwrap();
    });
    assert_eq!(m.rd(0x6000, 4), 0x4433_2211);
    assert_eq!(m.rd(0x6004, 4), 0xaabb_ccdd);
    assert_eq!(m.rd(0x600c, 4), 0xaabb_ccdd);
    assert_eq!(s.reg(Reg::Rcx), 0);
    assert_eq!(s.reg(Reg::Rdi), 0x6010);
    assert_eq!(s.reg(Reg::Rsi), 0x5004);
}

#[test]
fn backwards_with_df() {
    let (m, s) = run64(|a| {
        a.std().unwrap();
        a.mov(rdi, 0x6006u64).unwrap();
        a.mov(ax, 0x7777).unwrap();
        a.mov(ecx, 4).unwrap();
        a.rep().stosw().unwrap();
        a.cld().unwrap();
    });
    assert_eq!(m.rd(0x6000, 8), 0x7777_7777_7777_7777);
    assert_eq!(s.reg(Reg::Rdi), 0x5ffe);
}

#[test]
fn repe_cmpsb_stops_at_difference() {
    let (_, s) = run64(|a| {
        a.mov(rsi, 0x5000u64).unwrap();
        a.mov(rdi, 0x6000u64).unwrap();
        a.mov(dword_ptr(rsi), 0x4433_2211).unwrap();
        a.mov(dword_ptr(rdi), 0x4499_2211).unwrap();
        a.mov(ecx, 4).unwrap();
        a.repe().cmpsb().unwrap();
    });
    assert_eq!(s.reg(Reg::Rcx), 1);
    assert_eq!(s.reg(Reg::Rsi), 0x5003);
    assert_eq!(s.rflags & 0x40, 0);
}

#[test]
fn repne_scasb_finds_byte() {
    let (_, s) = run64(|a| {
        a.mov(rdi, 0x6000u64).unwrap();
        a.mov(qword_ptr(rdi), 0x0000_0000_4300_0000).unwrap();
        a.mov(al, 0x43).unwrap();
        a.mov(ecx, 100).unwrap();
        a.repne().scasb().unwrap();
    });
    assert_eq!(s.reg(Reg::Rdi), 0x6004);
    assert_eq!(s.reg(Reg::Rcx), 96);
    assert_ne!(s.rflags & 0x40, 0);
}

#[test]
fn outs_and_ins_in_real_mode_with_16_bit_addresses() {
    let mut m = Machine::new();
    m.load(0x500, b"hi!");
    m.load(
        CODE,
        &[
            0xbe, 0x00, 0x05, // mov si, 0x500
            0xba, 0xf8, 0x03, // mov dx, 0x3f8
            0xb9, 0x03, 0x00, // mov cx, 3
            0xf3, 0x6e, // rep outsb
            0xbf, 0x00, 0x06, // mov di, 0x600
            0xb1, 0x02, // mov cl, 2
            0xf3, 0x6c, // rep insb
            0xac, // lodsb (reads 0x503)
            0xf4,
        ],
    );
    m.set(&real_state());
    let s = m.run_to_halt();
    assert_eq!(m.io.port_bytes(0x3f8), b"hi!".to_vec());
    assert_eq!(m.rd(0x600, 2), 0xffff);
    assert_eq!(s.reg(Reg::Rsi), 0x504);
    assert_eq!(s.reg(Reg::Rdi), 0x602);
}

#[test]
fn long_rep_yields_and_resumes() {
    let (m, s) = run64(|a| {
        a.mov(rdi, 0x100000u64).unwrap();
        a.mov(al, 0x5a).unwrap();
        a.mov(ecx, 100_000).unwrap();
        a.rep().stosb().unwrap();
    });
    assert_eq!(m.rd(0x100000 + 99_999, 1), 0x5a);
    assert_eq!(s.reg(Reg::Rcx), 0);
    // mov, mov, mov, rep stosb, hlt: each counted once.
    assert_eq!(m.cpu.counters().instructions, Some(5));
}

#[test]
fn single_step_runs_one_rep_iteration_per_step() {
    // As with TF on hardware: RIP stays at the instruction until the last iteration.
    let mut m = Machine::new();
    let s = long_state(&m);
    let code = asm(64, CODE, |a| {
        a.mov(rdi, 0x6000u64).unwrap();
        a.mov(ecx, 3).unwrap();
        a.rep().stosb().unwrap();
        a.xor(ecx, ecx).unwrap();
        a.rep().stosb().unwrap(); // RCX = 0: one step, no iteration
        a.mov(rsi, 0x6000u64).unwrap();
        a.mov(ecx, 8).unwrap();
        a.repe().cmpsb().unwrap(); // [0x6000] = 0 vs [0x6003] = 0, then 0 vs 1: 2 steps
        a.hlt().unwrap();
    });
    m.load(CODE, &code);
    m.load(0x6004, &[1]);
    m.set(&s);
    m.cpu.set_single_step(true).unwrap();
    let step = |m: &mut Machine| {
        assert_eq!(m.run(), Exit::SingleStep);
        let s = m.state();
        (s.rip, s.reg(Reg::Rcx), s.reg(Reg::Rdi))
    };
    step(&mut m);
    step(&mut m);
    let rep = CODE + 15;
    assert_eq!(step(&mut m), (rep, 2, 0x6001));
    assert_eq!(step(&mut m), (rep, 1, 0x6002));
    assert_eq!(step(&mut m), (rep + 2, 0, 0x6003));
    step(&mut m);
    assert_eq!(step(&mut m), (rep + 6, 0, 0x6003));
    step(&mut m);
    step(&mut m);
    let cmps = rep + 6 + 15;
    assert_eq!(step(&mut m), (cmps, 7, 0x6004));
    assert_eq!(step(&mut m), (cmps + 2, 6, 0x6005));
    // Each REP retires once, when it finishes.
    assert_eq!(m.cpu.counters().instructions, Some(8));
}

/// Long forward REP MOVS/STOS take a page-at-a-time fast path: contents and registers must be
/// what the element loop gives, across page boundaries and from unaligned starts.
#[test]
fn long_rep_movs_and_stos_across_pages() {
    const SRC: u64 = 0x10_0003;
    const DST: u64 = 0x20_0005;
    let (m, s) = run64(|a| {
        // Fill 3 pages at SRC with a pattern: byte i = i * 7.
        a.mov(rdi, SRC).unwrap();
        a.xor(eax, eax).unwrap();
        a.mov(ecx, 3 * 4096).unwrap();
        let mut l = a.create_label();
        a.set_label(&mut l).unwrap();
        a.mov(byte_ptr(rdi), al).unwrap();
        a.add(al, 7).unwrap();
        a.inc(rdi).unwrap();
        a.dec(ecx).unwrap();
        a.jnz(l).unwrap();
        a.mov(rsi, SRC).unwrap();
        a.mov(rdi, DST).unwrap();
        a.mov(ecx, (3 * 4096 - 8) / 8).unwrap();
        a.rep().movsq().unwrap();
        a.mov(r8, rsi).unwrap();
        a.mov(r9, rdi).unwrap();
        a.mov(rdi, 0x30_0ffeu64).unwrap();
        a.mov(eax, 0x1234_5678).unwrap();
        a.mov(ecx, 2000).unwrap();
        a.rep().stosw().unwrap();
    });
    for i in 0..(3 * 4096 - 8) as u64 {
        assert_eq!(m.rd(DST + i, 1), (i * 7) & 0xff, "byte {i:#x} of the copy");
    }
    assert_eq!(m.rd(DST + 3 * 4096 - 8, 1), 0, "one past the copy");
    assert_eq!(s.reg(Reg::R8), SRC + 3 * 4096 - 8);
    assert_eq!(s.reg(Reg::R9), DST + 3 * 4096 - 8);
    for i in 0..2000 {
        assert_eq!(m.rd(0x30_0ffe + 2 * i, 2), 0x5678, "word {i}");
    }
    assert_eq!(m.rd(0x30_0ffe + 4000, 2), 0);
    assert_eq!(s.reg(Reg::Rdi), 0x30_0ffe + 4000);
    assert_eq!(s.reg(Reg::Rcx), 0);
}

/// An overlapping forward REP MOVSB (destination one byte above the source) replicates the
/// first byte, element by element, as on hardware; the fast path must not turn it into a
/// memmove.
#[test]
fn overlapping_rep_movsb_replicates() {
    let (m, _) = run64(|a| {
        a.mov(dword_ptr(0x5000u64), 0x4433_22aa).unwrap();
        a.mov(rsi, 0x5000u64).unwrap();
        a.mov(rdi, 0x5001u64).unwrap();
        a.mov(ecx, 100).unwrap();
        a.rep().movsb().unwrap();
    });
    for i in 0..=100 {
        assert_eq!(m.rd(0x5000 + i, 1), 0xaa, "byte {i}");
    }
}
