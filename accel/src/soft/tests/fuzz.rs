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
    // JANUS_FUZZ_PROGRAMS raises the count for a longer ad-hoc run.
    let programs: usize = std::env::var("JANUS_FUZZ_PROGRAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    const BYTES: usize = 4096;
    const STEPS: usize = 400;
    let mut rng = Rng(seed);
    let mut executed = 0u64;
    for _ in 0..programs {
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
        let mut code: Vec<u8> = (0..BYTES).map(|_| rng.next() as u8).collect();
        // Bias some programs towards two-byte opcodes and prefixes, where the rarer forms live.
        if rng.next() % 2 == 0 {
            for b in code.iter_mut() {
                match rng.next() % 8 {
                    0 => *b = 0x0f,
                    1 => {
                        *b = [0x66, 0x67, 0xf2, 0xf3, 0x48, 0x41, 0x26, 0x64]
                            [rng.next() as usize % 8]
                    }
                    _ => {}
                }
            }
        }
        m.load(CODE, &code);
        m.set(&s);
        m.cpu.set_single_step(true).unwrap();
        for _ in 0..STEPS {
            match m.run() {
                Exit::SingleStep => executed += 1,
                Exit::Halt | Exit::Shutdown(_) | Exit::Failed(_) => {
                    // Start again somewhere else in the same bytes, from the initial state.
                    let mut again = s.clone();
                    again.rip = CODE + rng.next() % BYTES as u64;
                    m.set(&again);
                }
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

/// The same without single-stepping: whole blocks run, bounded by a kick from another thread.
#[test]
fn random_code_in_blocks_bounded_by_kicks() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for k in 0..60 {
        let mode = ["real", "prot", "long"][k % 3];
        let mut m = Machine::new();
        let s = match mode {
            "real" => real_state(),
            "prot" => prot_state(&m),
            _ => long_state(&m),
        };
        let code: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
        m.load(CODE, &code);
        m.set(&s);
        let kicker = m.cpu.kicker();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(5));
            kicker.kick();
        });
        for _ in 0..10_000 {
            match m.run() {
                Exit::Stopped => break,
                Exit::Halt | Exit::Shutdown(_) | Exit::Failed(_) => {
                    let mut again = s.clone();
                    again.rip = CODE + rng.next() % 4096;
                    m.set(&again);
                }
                e => panic!("unexpected exit {e:?}"),
            }
        }
        t.join().unwrap();
    }
}
