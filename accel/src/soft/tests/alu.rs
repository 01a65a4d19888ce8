//! ALU, shift, multiply/divide, bit and BCD instructions: results and all six arithmetic flags,
//! run in 64-bit mode (BCD in real mode, where it exists).

use iced_x86::code_asm::*;

use super::*;
use crate::state::Reg;

const ARITH: u64 = 0x8d5;
const CF: u64 = 0x1;
const PF: u64 = 0x4;
const AF: u64 = 0x10;
const ZF: u64 = 0x40;
const SF: u64 = 0x80;
const OF: u64 = 0x800;

pub fn run64(f: impl FnOnce(&mut CodeAssembler)) -> (Machine, CpuState) {
    let mut m = Machine::new();
    let code = asm(64, CODE, |a| {
        f(a);
        a.hlt().unwrap();
    });
    let s = long_state(&m);
    m.load(CODE, &code);
    m.set(&s);
    let s = m.run_to_halt();
    (m, s)
}

/// ROL (`left`) or ROR of AL/AX/EAX/RAX (by `sz`) by `cnt`.
fn rotate_rax(a: &mut CodeAssembler, sz: u8, left: bool, cnt: u32) {
    match (sz, left) {
        (1, true) => a.rol(al, cnt).unwrap(),
        (1, false) => a.ror(al, cnt).unwrap(),
        (2, true) => a.rol(ax, cnt).unwrap(),
        (2, false) => a.ror(ax, cnt).unwrap(),
        (4, true) => a.rol(eax, cnt).unwrap(),
        (4, false) => a.ror(eax, cnt).unwrap(),
        (_, true) => a.rol(rax, cnt).unwrap(),
        (_, false) => a.ror(rax, cnt).unwrap(),
    }
}

fn flags_after(f: impl FnOnce(&mut CodeAssembler)) -> (u64, CpuState) {
    let (_, s) = run64(f);
    (s.rflags & ARITH, s)
}

#[test]
fn add_overflow_sets_of_sf_af() {
    // mov al, 0x7f; mov bl, 1; add al, bl
    let (f, s) = flags_after(|a| {
        a.mov(al, 0x7f).unwrap();
        a.mov(bl, 1).unwrap();
        a.add(al, bl).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax) & 0xff, 0x80);
    assert_eq!(f, OF | SF | AF);
}

#[test]
fn sub_borrow_sets_cf_sf_pf_af() {
    let (f, s) = flags_after(|a| {
        a.mov(eax, 1).unwrap();
        a.mov(ebx, 2).unwrap();
        a.sub(eax, ebx).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax), 0xffff_ffff);
    assert_eq!(f, CF | PF | AF | SF);
}

#[test]
fn adc_and_sbb_use_carry() {
    let (f, s) = flags_after(|a| {
        a.stc().unwrap();
        a.mov(al, 0xff).unwrap();
        a.adc(al, 0).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax) & 0xff, 0);
    assert_eq!(f, CF | PF | AF | ZF);
    let (f, s) = flags_after(|a| {
        a.stc().unwrap();
        a.mov(rax, 0u64).unwrap();
        a.sbb(rax, 0).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax), u64::MAX);
    assert_eq!(f, CF | PF | AF | SF);
}

#[test]
fn inc_dec_keep_carry() {
    let (f, s) = flags_after(|a| {
        a.stc().unwrap();
        a.mov(eax, 0x7fff_ffff).unwrap();
        a.inc(eax).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax), 0x8000_0000);
    assert_eq!(f, CF | PF | AF | SF | OF);
    let (f, _) = flags_after(|a| {
        a.clc().unwrap();
        a.mov(ecx, 1).unwrap();
        a.dec(ecx).unwrap();
    });
    assert_eq!(f, ZF | PF);
}

#[test]
fn neg_not_and_logic() {
    let (f, s) = flags_after(|a| {
        a.mov(al, 0x80).unwrap();
        a.neg(al).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax) & 0xff, 0x80);
    assert_eq!(f, CF | SF | OF);
    let (f, s) = flags_after(|a| {
        a.stc().unwrap();
        a.mov(eax, 0xf0).unwrap();
        a.and(eax, 0x0f).unwrap();
        a.not(rbx).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax), 0);
    assert_eq!(s.reg(Reg::Rbx), u64::MAX);
    assert_eq!(f, ZF | PF);
}

#[test]
fn cmp_and_conditions() {
    let (_, s) = run64(|a| {
        a.mov(eax, -5i32).unwrap();
        a.cmp(eax, 3).unwrap();
        a.setl(bl).unwrap(); // signed less: 1
        a.setb(cl).unwrap(); // unsigned below: 0
        a.mov(edx, 7).unwrap();
        a.mov(esi, 9).unwrap();
        a.cmovg(edx, esi).unwrap(); // not taken
        a.cmovl(esi, eax).unwrap(); // taken
    });
    assert_eq!(s.reg(Reg::Rbx) & 0xff, 1);
    assert_eq!(s.reg(Reg::Rcx) & 0xff, 0);
    assert_eq!(s.reg(Reg::Rdx), 7);
    assert_eq!(s.reg(Reg::Rsi), 0xffff_fffb);
}

#[test]
fn shifts_set_cf_and_of() {
    let (f, s) = flags_after(|a| {
        a.mov(al, 0xc0).unwrap();
        a.shl(al, 1).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax) & 0xff, 0x80);
    assert_eq!(f, CF | SF);
    let (f, _) = flags_after(|a| {
        a.mov(al, 0x81).unwrap();
        a.shr(al, 1).unwrap();
    });
    assert_eq!(f, CF | OF);
    let (f, s) = flags_after(|a| {
        a.mov(al, 0x81).unwrap();
        a.mov(cl, 2).unwrap();
        a.sar(al, cl).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax) & 0xff, 0xe0);
    assert_eq!(f & (CF | SF | OF | ZF), SF);
}

#[test]
fn rotates_change_only_cf_and_of() {
    let (f, s) = flags_after(|a| {
        a.xor(ecx, ecx).unwrap(); // ZF PF
        a.mov(al, 0x81).unwrap();
        a.rol(al, 1).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax) & 0xff, 0x03);
    assert_eq!(f, ZF | PF | CF | OF);
    let (f, s) = flags_after(|a| {
        a.xor(ecx, ecx).unwrap();
        a.stc().unwrap();
        a.mov(al, 1).unwrap();
        a.rcr(al, 1).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax) & 0xff, 0x80);
    assert_eq!(f, ZF | PF | CF | OF);
    let (_, s) = run64(|a| {
        a.mov(eax, 0x1234_5678).unwrap();
        a.ror(eax, 8).unwrap();
        a.mov(bx, 0x8001).unwrap();
        a.rcl(bx, 1).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax), 0x7812_3456);
    assert_eq!(s.reg(Reg::Rbx) & 0xffff, 0x0002);
}

#[test]
fn double_shifts() {
    let (_, s) = run64(|a| {
        a.mov(eax, 0x1234_5678).unwrap();
        a.mov(ebx, 0x9abc_def0u32 as i32).unwrap();
        a.shld(eax, ebx, 8).unwrap();
        a.mov(ecx, 0x1111_2222).unwrap();
        a.mov(edx, 0x3333_4444).unwrap();
        a.shrd(ecx, edx, 16).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax), 0x3456_789a);
    assert_eq!(s.reg(Reg::Rcx), 0x4444_1111);
}

#[test]
fn mul_imul_div_idiv() {
    let (f, s) = flags_after(|a| {
        a.mov(eax, 0x8000_0000u32 as i32).unwrap();
        a.mov(ecx, 2).unwrap();
        a.mul(ecx).unwrap();
    });
    assert_eq!((s.reg(Reg::Rdx), s.reg(Reg::Rax)), (1, 0));
    assert_eq!(f & (CF | OF), CF | OF);
    let (f, s) = flags_after(|a| {
        a.mov(eax, -2i32).unwrap();
        a.imul_3(eax, eax, 3).unwrap();
        a.mov(rbx, 0x4000_0000_0000_0000u64).unwrap();
        a.imul_2(rbx, rbx).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax), 0xffff_fffa);
    assert_eq!(f & (CF | OF), CF | OF);
    let (_, s) = run64(|a| {
        a.xor(edx, edx).unwrap();
        a.mov(eax, 100).unwrap();
        a.mov(ecx, 7).unwrap();
        a.div(ecx).unwrap();
        a.mov(esi, eax).unwrap();
        a.mov(edi, edx).unwrap();
        a.mov(eax, -100i32).unwrap();
        a.cdq().unwrap();
        a.idiv(ecx).unwrap();
        a.mov(al, 200u32 as i32).unwrap();
        a.mov(bl, 3).unwrap();
    });
    assert_eq!((s.reg(Reg::Rsi), s.reg(Reg::Rdi)), (14, 2));
    assert_eq!(s.reg(Reg::Rdx), (-2i32) as u32 as u64);
    assert_eq!(
        s.reg(Reg::Rax) & 0xffff_ff00,
        (-14i32 as u32 as u64) & 0xffff_ff00
    );
}

#[test]
fn bit_scan_and_test() {
    let (f, s) = flags_after(|a| {
        a.mov(eax, 0x0010_0100).unwrap();
        a.bsf(ebx, eax).unwrap();
        a.bsr(ecx, eax).unwrap();
        a.popcnt(edx, eax).unwrap();
        a.lzcnt(esi, eax).unwrap();
        a.bts(eax, 0).unwrap();
        a.bt(eax, 8).unwrap();
    });
    assert_eq!(s.reg(Reg::Rbx), 8);
    assert_eq!(s.reg(Reg::Rcx), 20);
    assert_eq!(s.reg(Reg::Rdx), 2);
    assert_eq!(s.reg(Reg::Rsi), 11);
    assert_eq!(s.reg(Reg::Rax), 0x0010_0101);
    assert_eq!(f & CF, CF);
}

#[test]
fn bt_with_memory_bit_string() {
    let (m, _) = run64(|a| {
        a.mov(rdi, 0x5000u64).unwrap();
        a.mov(eax, 70).unwrap();
        a.bts(dword_ptr(rdi), eax).unwrap(); // bit 6 of dword at 0x5008
        a.mov(eax, -1i32).unwrap();
        a.bts(dword_ptr(rdi), eax).unwrap(); // bit 31 of dword at 0x4ffc
    });
    assert_eq!(m.rd(0x5008, 4), 0x40);
    assert_eq!(m.rd(0x4ffc, 4), 0x8000_0000);
}

#[test]
fn xadd_cmpxchg() {
    let (m, s) = run64(|a| {
        a.mov(rdi, 0x5000u64).unwrap();
        a.mov(dword_ptr(rdi), 10).unwrap();
        a.mov(eax, 5).unwrap();
        a.xadd(dword_ptr(rdi), eax).unwrap(); // [rdi] = 15, eax = 10
        a.mov(ecx, 99).unwrap();
        a.cmpxchg(dword_ptr(rdi), ecx).unwrap(); // 10 != 15: eax = 15, ZF=0
        a.cmpxchg(dword_ptr(rdi), ecx).unwrap(); // equal: [rdi] = 99, ZF=1
    });
    assert_eq!(m.rd(0x5000, 4), 99);
    assert_eq!(s.reg(Reg::Rax), 15);
    assert_ne!(s.rflags & ZF, 0);
}

#[test]
fn cmpxchg8b_and_16b() {
    let (m, s) = run64(|a| {
        a.mov(rdi, 0x5000u64).unwrap();
        a.xor(eax, eax).unwrap();
        a.xor(edx, edx).unwrap();
        a.mov(ebx, 0x1111).unwrap();
        a.mov(ecx, 0x2222).unwrap();
        a.cmpxchg8b(qword_ptr(rdi)).unwrap();
        a.mov(rsi, 0x5010u64).unwrap();
        a.cmpxchg16b(xmmword_ptr(rsi)).unwrap(); // zero == rdx:rax? rax=0 rdx=0: yes
    });
    assert_eq!(m.rd(0x5000, 8), 0x2222_0000_1111);
    assert_eq!(m.rd(0x5010, 8), 0x1111);
    assert_eq!(m.rd(0x5018, 8), 0x2222);
    assert_ne!(s.rflags & ZF, 0);
}

#[test]
fn bcd_adjusts_in_real_mode() {
    let mut m = Machine::new();
    m.load(
        CODE,
        &[
            0xb0, 0x15, // mov al, 0x15
            0x04, 0x27, // add al, 0x27
            0x27, // daa -> 0x42
            0x88, 0xc3, // mov bl, al
            0xb0, 0x06, // mov al, 6
            0xb4, 0x00, // mov ah, 0
            0x04, 0x07, // add al, 7  (0x0d)
            0x37, // aaa -> ax = 0x0103
            0x89, 0xc1, // mov cx, ax
            0xb0, 0x4f, // mov al, 79
            0xd4, 0x0a, // aam -> ah=7 al=9
            0xd5, 0x0a, // aad -> al = 79
            0xf4,
        ],
    );
    m.set(&real_state());
    let s = m.run_to_halt();
    assert_eq!(s.reg(Reg::Rbx) & 0xff, 0x42);
    assert_eq!(s.reg(Reg::Rcx) & 0xffff, 0x0103);
    assert_eq!(s.reg(Reg::Rax) & 0xffff, 79);
}

#[test]
fn conversions_bswap_xlat_lea() {
    let (_, s) = run64(|a| {
        a.mov(eax, 0x8000).unwrap();
        a.cwde().unwrap(); // ax=0x8000 -> eax = 0xffff8000
        a.cdqe().unwrap();
        a.mov(rbx, rax).unwrap();
        a.cqo().unwrap();
        a.mov(ecx, 0x1122_3344).unwrap();
        a.bswap(ecx).unwrap();
        a.lea(rsi, qword_ptr(rcx + rcx * 2 + 5)).unwrap();
    });
    assert_eq!(s.reg(Reg::Rbx), 0xffff_ffff_ffff_8000);
    assert_eq!(s.reg(Reg::Rdx), u64::MAX);
    assert_eq!(s.reg(Reg::Rcx), 0x4433_2211);
    assert_eq!(s.reg(Reg::Rsi), 0x4433_2211 * 3 + 5);
}

#[test]
fn double_shifts_64() {
    let (f, s) = flags_after(|a| {
        a.mov(rax, 0x8000_0000_0000_0001u64).unwrap();
        a.mov(rbx, 0xf000_0000_0000_0000u64).unwrap();
        a.shld(rax, rbx, 4).unwrap();
        a.mov(rcx, 0x10u64).unwrap();
        a.mov(rdx, 0x3u64).unwrap();
        a.shrd(rcx, rdx, 63).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax), 0x0000_0000_0000_001f);
    assert_eq!(s.reg(Reg::Rcx), 0x6);
    assert_eq!(f & CF, 0);
}

/// ROL/ROR of a register by an immediate take a fast path; it must agree with the general path
/// (the same rotate on a memory operand) in result and every flag, for every size and count,
/// starting from both flag states.
#[test]
fn register_rotate_fast_path_matches_memory_form() {
    const MEM: u64 = 0x9000;
    let v: u64 = 0x8123_4567_89ab_cdef;
    for left in [true, false] {
        for (sz, cnts) in [(1u32, 0u32..=17), (2, 0..=33), (4, 0..=33), (8, 0..=65)] {
            for cnt in cnts {
                for carry in [false, true] {
                    let reg_form = run64(|a| {
                        a.mov(rax, v).unwrap();
                        if carry {
                            a.stc().unwrap()
                        } else {
                            a.clc().unwrap()
                        }
                        rotate_rax(a, sz as u8, left, cnt);
                    })
                    .1;
                    let (m, mem_form) = run64(|a| {
                        a.mov(rax, v).unwrap();
                        a.mov(qword_ptr(MEM), rax).unwrap();
                        if carry {
                            a.stc().unwrap()
                        } else {
                            a.clc().unwrap()
                        }
                        let c = cnt;
                        match (sz, left) {
                            (1, true) => a.rol(byte_ptr(MEM), c).unwrap(),
                            (1, false) => a.ror(byte_ptr(MEM), c).unwrap(),
                            (2, true) => a.rol(word_ptr(MEM), c).unwrap(),
                            (2, false) => a.ror(word_ptr(MEM), c).unwrap(),
                            (4, true) => a.rol(dword_ptr(MEM), c).unwrap(),
                            (4, false) => a.ror(dword_ptr(MEM), c).unwrap(),
                            (_, true) => a.rol(qword_ptr(MEM), c).unwrap(),
                            (_, false) => a.ror(qword_ptr(MEM), c).unwrap(),
                        }
                    });
                    let mask = if sz == 8 {
                        u64::MAX
                    } else {
                        (1u64 << (sz * 8)) - 1
                    };
                    let what = format!(
                        "{} size {sz} count {cnt} CF {carry}",
                        if left { "rol" } else { "ror" }
                    );
                    assert_eq!(
                        reg_form.reg(Reg::Rax) & mask,
                        m.rd(MEM, 8) & mask,
                        "{what}: result"
                    );
                    assert_eq!(
                        reg_form.rflags & ARITH,
                        mem_form.rflags & ARITH,
                        "{what}: flags"
                    );
                }
            }
        }
    }
}

/// Two vCPUs on two host threads increment one counter with `lock inc`, `lock xadd` and an
/// `xchg` spinlock around a plain increment, on the interpreter and the JIT: every update must
/// survive (a locked read-modify-write done as load + store loses the other thread's writes).
#[test]
fn locked_instructions_are_atomic_across_vcpus() {
    const N: u32 = 200_000;
    const COUNT: u64 = 0x9000;
    const XADD: u64 = 0x9008;
    const LOCK: u64 = 0x9010;
    const PLAIN: u64 = 0x9018;
    for jit in [false, true] {
        let m = Machine::new();
        let code = asm(64, CODE, |a| {
            let mut top = a.create_label();
            let mut spin = a.create_label();
            a.mov(ecx, N).unwrap();
            a.set_label(&mut top).unwrap();
            a.lock().inc(qword_ptr(COUNT)).unwrap();
            a.mov(eax, 1).unwrap();
            a.lock().xadd(qword_ptr(XADD), rax).unwrap();
            a.set_label(&mut spin).unwrap();
            a.mov(eax, 1).unwrap();
            a.xchg(byte_ptr(LOCK), al).unwrap();
            a.test(al, al).unwrap();
            a.jnz(spin).unwrap();
            a.inc(qword_ptr(PLAIN)).unwrap();
            a.mov(byte_ptr(LOCK), 0).unwrap();
            a.dec(ecx).unwrap();
            a.jnz(top).unwrap();
            a.hlt().unwrap();
        });
        m.load(CODE, &code);
        let s = long_state(&m);
        let accel = SoftAccel::with_jit(m.mem.clone(), 2, jit);
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut kickers = Vec::new();
        let threads: Vec<_> = (0..2)
            .map(|i| {
                let mut cpu = accel.new_vcpu(i).unwrap();
                kickers.push(cpu.kicker());
                let s = s.clone();
                std::thread::spawn(move || {
                    cpu.set_state(&s).unwrap();
                    let io = TestIo::default();
                    let start = std::time::Instant::now();
                    let kicker = cpu.kicker();
                    loop {
                        match cpu.run(&io).unwrap() {
                            Exit::Halt => break,
                            // A lost spinlock release deadlocks both: fail instead of hanging.
                            Exit::Stopped => {
                                kicker.clear();
                                assert!(
                                    start.elapsed() < std::time::Duration::from_secs(120),
                                    "vCPU {i}: still spinning after 120 s (a lost update)"
                                );
                            }
                            e => panic!("vCPU {i}: {e:?}"),
                        }
                    }
                })
            })
            .collect();
        let watchdog = {
            let done = done.clone();
            std::thread::spawn(move || {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    for k in &kickers {
                        k.kick();
                    }
                }
            })
        };
        let results: Vec<_> = threads.into_iter().map(|t| t.join()).collect();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        watchdog.join().unwrap();
        for r in results {
            r.unwrap();
        }
        let what = if jit { "jit" } else { "interp" };
        assert_eq!(m.rd(COUNT, 8), 2 * u64::from(N), "{what}: lock inc");
        assert_eq!(m.rd(XADD, 8), 2 * u64::from(N), "{what}: lock xadd");
        assert_eq!(m.rd(PLAIN, 8), 2 * u64::from(N), "{what}: xchg spinlock");
    }
}

/// A rotate whose old SF ZF AF PF are dead (the next ALU op replaces them) takes the
/// interpreter's short path; its CF and OF must still be exact, for every size and direction,
/// as read by ADC right after it.
#[test]
fn rotates_with_dead_old_flags_give_exact_cf_and_of() {
    for (left, cnt) in [
        (true, 1u32),
        (true, 7),
        (false, 1),
        (false, 13),
        (true, 8),
        (false, 16),
    ] {
        let v = 0x8123_4567_89ab_cdefu64;
        // rol/ror r, cnt ; setc cl ; seto dl ; (then an ADD that kills SZAP) at each size.
        for sz in [1u8, 2, 4, 8] {
            let (_, s) = run64(|a| {
                a.mov(rax, v).unwrap();
                a.xor(ecx, ecx).unwrap();
                a.xor(edx, edx).unwrap();
                rotate_rax(a, sz, left, cnt);
                a.adc(ecx, 0).unwrap();
                a.mov(ebx, 0).unwrap();
                a.seto(dl).unwrap();
                a.add(ebx, ebx).unwrap();
            });
            let bits = u32::from(sz) * 8;
            let m = crate::soft::flags::mask(sz);
            let x = v & m;
            let n = cnt % bits;
            let r = if left {
                ((x << n) | (x >> ((bits - n) % bits))) & m
            } else {
                ((x >> n) | (x << ((bits - n) % bits))) & m
            };
            let top = r >> (bits - 1) & 1;
            let (cf, of) = if left {
                (r & 1, top ^ (r & 1))
            } else {
                (top, top ^ (r >> (bits - 2) & 1))
            };
            let want_rax = if sz == 4 { r } else { (v & !m) | r };
            assert_eq!(s.reg(Reg::Rax), want_rax, "sz {sz} left {left} cnt {cnt}");
            assert_eq!(s.reg(Reg::Rcx), cf, "CF: sz {sz} left {left} cnt {cnt}");
            // SETO reads the ADC's OF, which is 0 (0 + 0 + CF cannot overflow); OF of the
            // rotate is checked through a SETO right after it below.
            assert_eq!(s.reg(Reg::Rdx), 0);
            let (_, s) = run64(|a| {
                a.mov(rax, v).unwrap();
                a.xor(edx, edx).unwrap();
                rotate_rax(a, sz, left, cnt);
                a.seto(dl).unwrap();
                a.add(ebx, ebx).unwrap();
            });
            assert_eq!(s.reg(Reg::Rdx), of, "OF: sz {sz} left {left} cnt {cnt}");
        }
    }
}

/// ADC and SBB between registers (fused into one interpreter op): a 128-bit add and subtract
/// carried through two registers, at 64 and 32 bits, with the carry chained from one to the next
/// and the final flags.
#[test]
fn fused_adc_sbb_chain_carries() {
    let (f, s) = flags_after(|a| {
        // (rdx:rax) = (1:u64::MAX) + (2:1) = (4:0)
        a.mov(rax, u64::MAX).unwrap();
        a.mov(edx, 1).unwrap();
        a.mov(ebx, 1).unwrap();
        a.mov(ecx, 2).unwrap();
        a.add(rax, rbx).unwrap();
        a.adc(rdx, rcx).unwrap();
        // (edi:esi) = (0:0) - (0:1) = (0xffffffff:0xffffffff), borrow out
        a.xor(esi, esi).unwrap();
        a.xor(edi, edi).unwrap();
        a.mov(r8d, 1).unwrap();
        a.xor(r9d, r9d).unwrap();
        a.sub(esi, r8d).unwrap();
        a.sbb(edi, r9d).unwrap();
    });
    assert_eq!(s.reg(Reg::Rax), 0);
    assert_eq!(s.reg(Reg::Rdx), 4);
    assert_eq!(s.reg(Reg::Rsi), 0xffff_ffff);
    assert_eq!(s.reg(Reg::Rdi), 0xffff_ffff);
    // 0 - 0 - 1 at 32 bits: CF, SF, PF, AF.
    assert_eq!(f, CF | SF | PF | AF);
}
