//! JIT against interpreter on random programs: valid instruction streams built with iced's
//! encoder from a menu of integer instructions (ALU in every size, with register, memory and
//! immediate operands; shifts and rotates; IMUL; moves and extensions; LEA; SETcc and CMOVcc;
//! pushes and pops; bit tests; forward conditional branches), memory operands inside a sandbox,
//! the whole body looped a few times. Both runs start from the same state and must end with the
//! same state and memory. `JANUS_JIT_FUZZ=N` runs N programs per mode instead of the default.

use iced_x86::code_asm::CodeAssembler;
use iced_x86::{Code, Instruction, MemoryOperand, Register};

use super::*;

const SANDBOX: u64 = 0x100000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

fn code(name: &str) -> Option<Code> {
    Code::values().find(|c| format!("{c:?}") == name)
}

fn reg(name: &str) -> Register {
    Register::values()
        .find(|r| format!("{r:?}") == name)
        .unwrap_or_else(|| panic!("no register {name}"))
}

/// The registers a program may use, by size.
struct Regs {
    by_size: [Vec<Register>; 4],
    base: Register,
    counter: Register,
}

impl Regs {
    fn new(bits: u32) -> Regs {
        let names: &[&str] = if bits == 64 {
            &["AX", "CX", "DX", "BX", "SI", "DI", "8", "9", "10", "11"]
        } else {
            &["AX", "CX", "DX", "BX", "SI"]
        };
        let n = |sz: usize, s: &str| -> String {
            if s.chars().all(|c| c.is_ascii_digit()) {
                match sz {
                    0 => format!("R{s}L"),
                    1 => format!("R{s}W"),
                    2 => format!("R{s}D"),
                    _ => format!("R{s}"),
                }
            } else {
                match sz {
                    0 => match s {
                        "SI" if bits == 64 => "SIL".into(),
                        "DI" if bits == 64 => "DIL".into(),
                        "SI" => "AH".into(),
                        "DI" => "BH".into(),
                        _ => format!("{}L", &s[..1]),
                    },
                    1 => s.into(),
                    2 => format!("E{s}"),
                    _ => format!("R{s}"),
                }
            }
        };
        let by_size = [0, 1, 2, 3].map(|sz| names.iter().map(|s| reg(&n(sz, s))).collect());
        let (base, counter) = if bits == 64 {
            (Register::RBP, Register::R15)
        } else {
            (Register::EBP, Register::EDI)
        };
        Regs {
            by_size,
            base,
            counter,
        }
    }
}

const ALU: [&str; 9] = [
    "Add", "Or", "Adc", "Sbb", "And", "Sub", "Xor", "Cmp", "Test",
];
const SHIFT: [&str; 7] = ["Rol", "Ror", "Rcl", "Rcr", "Shl", "Shr", "Sar"];
const CC: [&str; 16] = [
    "o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g",
];

/// One random instruction (or None when the combination does not exist).
fn random_insn(rng: &mut Rng, bits: u32, r: &Regs, depth: &mut u32) -> Option<Instruction> {
    let max = if bits == 64 { 4 } else { 3 };
    let si = rng.below(max);
    let sz = [8, 16, 32, 64][si];
    let g = *rng.pick(&r.by_size[si]);
    let h = *rng.pick(&r.by_size[si]);
    let mem = MemoryOperand::with_base_displ(r.base, (rng.below(0x7f8)) as i64);
    let imsz = sz.min(32);
    let imm = rng.next() as i64 as i32;
    let c = |s: String| code(&s);
    Some(match rng.below(24) {
        0..=3 => {
            let op = *rng.pick(&ALU);
            match rng.below(5) {
                0 => Instruction::with2(c(format!("{op}_rm{sz}_r{sz}"))?, g, h).ok()?,
                1 => Instruction::with2(c(format!("{op}_rm{sz}_r{sz}"))?, mem, h).ok()?,
                2 => Instruction::with2(c(format!("{op}_r{sz}_rm{sz}"))?, g, mem).ok()?,
                3 => Instruction::with2(c(format!("{op}_rm{sz}_imm{imsz}"))?, g, imm).ok()?,
                _ => Instruction::with2(c(format!("{op}_rm{sz}_imm{imsz}"))?, mem, imm).ok()?,
            }
        }
        4 => {
            let op = *rng.pick(&["Inc", "Dec", "Neg", "Not"]);
            if rng.below(3) == 0 {
                Instruction::with1(c(format!("{op}_rm{sz}"))?, mem).ok()?
            } else {
                Instruction::with1(c(format!("{op}_rm{sz}"))?, g).ok()?
            }
        }
        5 | 6 => {
            let op = *rng.pick(&SHIFT);
            let n = [1, 7, 8, 13, 31, 33, 63][rng.below(7)];
            match rng.below(4) {
                0 => Instruction::with2(c(format!("{op}_rm{sz}_1"))?, g, 1u32).ok()?,
                1 => Instruction::with2(c(format!("{op}_rm{sz}_CL"))?, g, Register::CL).ok()?,
                2 => Instruction::with2(c(format!("{op}_rm{sz}_imm8"))?, mem, n).ok()?,
                _ => Instruction::with2(c(format!("{op}_rm{sz}_imm8"))?, g, n).ok()?,
            }
        }
        7 => match rng.below(3) {
            0 => Instruction::with2(c(format!("Imul_r{sz}_rm{sz}"))?, g, h).ok()?,
            1 => Instruction::with2(c(format!("Imul_r{sz}_rm{sz}"))?, g, mem).ok()?,
            _ => Instruction::with3(c(format!("Imul_r{sz}_rm{sz}_imm{imsz}"))?, g, h, imm).ok()?,
        },
        8..=10 => match rng.below(5) {
            0 => Instruction::with2(c(format!("Mov_rm{sz}_r{sz}"))?, g, h).ok()?,
            1 => Instruction::with2(c(format!("Mov_rm{sz}_r{sz}"))?, mem, h).ok()?,
            2 => Instruction::with2(c(format!("Mov_r{sz}_rm{sz}"))?, g, mem).ok()?,
            3 => Instruction::with2(c(format!("Mov_rm{sz}_imm{imsz}"))?, mem, imm).ok()?,
            _ => Instruction::with2(c(format!("Mov_r{sz}_imm{sz}"))?, g, rng.next()).ok()?,
        },
        11 => {
            let op = *rng.pick(&["Movzx", "Movsx"]);
            let from = *rng.pick(&[8, 16]);
            let r8 = *rng.pick(&r.by_size[if from == 8 { 0 } else { 1 }]);
            if rng.below(2) == 0 {
                Instruction::with2(c(format!("{op}_r{sz}_rm{from}"))?, g, r8).ok()?
            } else {
                Instruction::with2(c(format!("{op}_r{sz}_rm{from}"))?, g, mem).ok()?
            }
        }
        12 => {
            if sz < 16 {
                return None;
            }
            let addr = if bits == 64 { 3 } else { 2 };
            let b = *rng.pick(&r.by_size[addr]);
            let x = *rng.pick(&r.by_size[addr]);
            let m = MemoryOperand::with_base_index_scale_displ_size(
                b,
                x,
                *rng.pick(&[1, 2, 4, 8]),
                imm as i64,
                if bits == 64 { 8 } else { 4 },
            );
            Instruction::with2(c(format!("Lea_r{sz}_m"))?, g, m).ok()?
        }
        13 => {
            let cc = *rng.pick(&CC);
            let cap = |s: &str| format!("{}{}", s[..1].to_uppercase(), &s[1..]);
            if sz == 8 {
                Instruction::with1(c(format!("Set{cc}_rm8"))?, g).ok()?
            } else {
                Instruction::with2(c(format!("Cmov{cc}_r{sz}_rm{sz}"))?, g, h)
                    .ok()
                    .or_else(|| {
                        Instruction::with2(c(format!("Cmov{}_r{sz}_rm{sz}", cap(cc)))?, g, h).ok()
                    })?
            }
        }
        14 => {
            let w = if bits == 64 { 64 } else { 32 };
            let big = *rng.pick(&r.by_size[if bits == 64 { 3 } else { 2 }]);
            if *depth > 0 && rng.below(2) == 0 {
                *depth -= 1;
                Instruction::with1(c(format!("Pop_r{w}"))?, big).ok()?
            } else if *depth < 8 {
                *depth += 1;
                Instruction::with1(c(format!("Push_r{w}"))?, big).ok()?
            } else {
                return None;
            }
        }
        15 => {
            let op = *rng.pick(&["Bt", "Bts", "Btr", "Btc"]);
            if sz == 8 {
                return None;
            }
            if rng.below(2) == 0 {
                Instruction::with2(c(format!("{op}_rm{sz}_r{sz}"))?, g, h).ok()?
            } else {
                Instruction::with2(c(format!("{op}_rm{sz}_imm8"))?, g, imm & 0x3f).ok()?
            }
        }
        16 => match rng.below(4) {
            0 => Instruction::with(*rng.pick(&[Code::Cmc, Code::Clc, Code::Stc])),
            1 => Instruction::with2(c(format!("Xchg_rm{sz}_r{sz}"))?, g, h).ok()?,
            2 => {
                Instruction::with3(c(format!("Shld_rm{sz}_r{sz}_imm8"))?, g, h, imm & 0x1f).ok()?
            }
            _ => Instruction::with1(c(format!("Bswap_r{sz}"))?, g).ok()?,
        },
        17 => {
            let op = *rng.pick(&["Mul", "Imul"]);
            Instruction::with1(c(format!("{op}_rm{sz}"))?, h).ok()?
        }
        18 => Instruction::with2(c(format!("Xadd_rm{sz}_r{sz}"))?, mem, h).ok()?,
        _ => {
            let op = *rng.pick(&ALU);
            Instruction::with2(c(format!("{op}_rm{sz}_r{sz}"))?, g, h).ok()?
        }
    })
}

/// A random program: registers seeded, a body of `len` instructions with forward branches,
/// looped `reps` times, then HLT.
/// `jumps`: whether the body has forward branches (without, a short body is one block that
/// jumps back to itself).
fn program(rng: &mut Rng, bits: u32, len: usize, reps: u32, jumps: bool) -> Vec<u8> {
    let r = Regs::new(bits);
    let mut a = CodeAssembler::new(bits).unwrap();
    let w = if bits == 64 { 3 } else { 2 };
    for &g in &r.by_size[w] {
        let mov = if bits == 64 {
            Code::Mov_r64_imm64
        } else {
            Code::Mov_r32_imm32
        };
        let v = if bits == 64 {
            rng.next()
        } else {
            rng.next() & 0xffff_ffff
        };
        a.add_instruction(Instruction::with2(mov, g, v).unwrap())
            .unwrap();
    }
    let (mov_base, mov_cnt) = if bits == 64 {
        (Code::Mov_r64_imm64, Code::Mov_r64_imm64)
    } else {
        (Code::Mov_r32_imm32, Code::Mov_r32_imm32)
    };
    a.add_instruction(Instruction::with2(mov_base, r.base, SANDBOX).unwrap())
        .unwrap();
    a.add_instruction(Instruction::with2(mov_cnt, r.counter, u64::from(reps)).unwrap())
        .unwrap();
    let mut top = a.create_label();
    a.set_label(&mut top).unwrap();
    let mut depth = 0;
    let mut pending: Vec<(usize, iced_x86::code_asm::CodeLabel)> = Vec::new();
    let mut n = 0;
    while n < len {
        // Close forward branches whose target is reached.
        let mut k = 0;
        while k < pending.len() {
            if pending[k].0 == n {
                let (_, mut l) = pending.remove(k);
                a.set_label(&mut l).unwrap();
                a.nop().unwrap();
            } else {
                k += 1;
            }
        }
        if jumps && rng.below(12) == 0 {
            let l = a.create_label();
            let cc = rng.below(16);
            let jcc = [
                CodeAssembler::jo,
                CodeAssembler::jno,
                CodeAssembler::jb,
                CodeAssembler::jae,
                CodeAssembler::je,
                CodeAssembler::jne,
                CodeAssembler::jbe,
                CodeAssembler::ja,
                CodeAssembler::js,
                CodeAssembler::jns,
                CodeAssembler::jp,
                CodeAssembler::jnp,
                CodeAssembler::jl,
                CodeAssembler::jge,
                CodeAssembler::jle,
                CodeAssembler::jg,
            ][cc];
            jcc(&mut a, l).unwrap();
            pending.push((n + 1 + rng.below(3), l));
            continue;
        }
        let mut d = depth;
        if let Some(i) = random_insn(rng, bits, &r, &mut d) {
            if a.add_instruction(i).is_ok() {
                depth = d;
                n += 1;
            }
        }
    }
    for (_, mut l) in pending {
        a.set_label(&mut l).unwrap();
        a.nop().unwrap();
    }
    let big = r.by_size[w][0];
    let pop = if bits == 64 {
        Code::Pop_r64
    } else {
        Code::Pop_r32
    };
    for _ in 0..depth {
        a.add_instruction(Instruction::with1(pop, big).unwrap())
            .unwrap();
    }
    let dec = if bits == 64 {
        Code::Dec_rm64
    } else {
        Code::Dec_rm32
    };
    a.add_instruction(Instruction::with1(dec, r.counter).unwrap())
        .unwrap();
    a.jne(top).unwrap();
    a.hlt().unwrap();
    a.assemble(CODE).unwrap()
}

fn fuzz(bits: u32, seed: u64) {
    let programs: usize = std::env::var("JANUS_JIT_FUZZ")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let mut rng = Rng(seed);
    for p in 0..programs {
        let jumps = p % 2 == 0;
        let len = if jumps {
            8 + rng.below(120)
        } else {
            2 + rng.below(40)
        };
        let reps = 1 + rng.below(6) as u32;
        let code = program(&mut rng, bits, len, reps, jumps);
        let fill: Vec<u8> = (0..0x1000).map(|_| rng.next() as u8).collect();
        let setup = |m: &Machine, _: &mut CpuState| {
            m.mem.load(SANDBOX, &fill).unwrap();
        };
        let run = |mut m: Machine| {
            let mut s = state_for(&m, bits);
            setup(&m, &mut s);
            m.load(CODE, &code);
            m.set(&s);
            // A watchdog: a program that does not halt in time is reported, not waited for.
            let k = crate::vcpu::Vcpu::kicker(&m.cpu);
            let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let d = done.clone();
            let dog = std::thread::spawn(move || {
                for _ in 0..200 {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                    if d.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                }
                k.kick();
            });
            let e = m.run();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            dog.join().unwrap();
            let s = m.state();
            (m, e, s)
        };
        let (mi, ei, si) = run(Machine::new());
        let (mj, ej, sj) = run(jit_machine());
        let ctx = || format!("mode {bits}, program {p} (seed {seed:#x})");
        assert_eq!(ei, ej, "{}: exits differ\ncode: {code:02x?}", ctx());
        assert_eq!(
            si,
            sj,
            "{}: states differ\ninterpreter:\n{si}\njit:\n{sj}\ncode: {code:02x?}",
            ctx()
        );
        for (base, len) in [(SANDBOX, 0x1000usize), (0x6f000, 0x1000)] {
            let mut x = vec![0u8; len];
            let mut y = vec![0u8; len];
            mi.mem.read(base, &mut x).unwrap();
            mj.mem.read(base, &mut y).unwrap();
            assert!(x == y, "{}: memory at {base:#x} differs", ctx());
        }
    }
}

#[test]
fn jit_random_programs_32() {
    fuzz(32, 0x9e37_79b9_7f4a_7c15);
}

#[test]
fn jit_random_programs_64() {
    fuzz(64, 0xd1b5_4a32_d192_ed03);
}
