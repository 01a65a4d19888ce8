//! Random bytes as code in real, 32-bit and 64-bit mode: every step must end in an exit or a
//! guest exception, never a host panic or a hang (runs are bounded by single-stepping).

use super::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn fuzz(mode: &str, seed: u64) {
    const PROGRAMS: usize = 100;
    const BYTES: usize = 4096;
    const STEPS: usize = 200;
    let mut rng = Rng(seed);
    let mut executed = 0u64;
    for _ in 0..PROGRAMS {
        let mut m = Machine::new();
        let s = match mode {
            "real" => real_state(),
            "prot" => prot_state(&m),
            _ => long_state(&m),
        };
        if mode != "real" {
            for v in 0..=255u8 {
                if mode == "prot" {
                    gate32(&m, v, CS32, 0x9000, 0xe);
                } else {
                    gate64(&m, v, 0x9000, 0);
                }
            }
        }
        m.load(0x9000, &[0xf4]);
        let code: Vec<u8> = (0..BYTES).map(|_| rng.next() as u8).collect();
        m.load(CODE, &code);
        m.set(&s);
        m.cpu.set_single_step(true).unwrap();
        for _ in 0..STEPS {
            match m.run() {
                Exit::SingleStep => executed += 1,
                Exit::Halt | Exit::Shutdown(_) | Exit::Failed(_) => break,
                e => panic!("unexpected exit {e:?}"),
            }
        }
    }
    assert!(executed > 0);
}

#[test]
fn random_code_real_mode() {
    fuzz("real", 0x1234_5678_9abc_def1);
}

#[test]
fn random_code_protected_mode() {
    fuzz("prot", 0x0fed_cba9_8765_4321);
}

#[test]
fn random_code_long_mode() {
    fuzz("long", 0x5555_aaaa_3333_cccc);
}
