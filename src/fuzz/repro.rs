//! Reproducers: a fuzz case as a small text file (mode, initial registers and flags, program
//! bytes) that `janus diff --repro FILE` replays, and the shrinker that reduces a diverging case
//! to the fewest instructions and the simplest registers that still diverge.

use std::fmt::Write;

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};
use janus_accel::state::GPR_NAMES;

use super::generator::encode;
use super::setup::{FuzzMode, PROGRAM};

/// A replayable fuzz case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repro {
    /// Execution mode.
    pub mode: FuzzMode,
    /// Initial general registers (rBX, rBP, rSP are overridden by the mode set-up).
    pub gpr: [u64; 16],
    /// Initial arithmetic flags and DF.
    pub flags: u64,
    /// The program, ending with HLT.
    pub program: Vec<u8>,
    /// The environment's seed (0: the mode's fixed environment, see [`super::env`]).
    pub env: u64,
}

const MAGIC: &str = "janus-repro 1";

impl Repro {
    /// The file form.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{MAGIC}");
        let _ = writeln!(s, "mode {}", self.mode.name());
        let _ = writeln!(s, "flags {:#x}", self.flags);
        if self.env != 0 {
            let _ = writeln!(s, "env {:#x}", self.env);
            let e = super::env::Env::new(self.mode, self.env);
            let _ = writeln!(s, "# environment: {}", e.describe());
        }
        for (i, n) in GPR_NAMES.iter().enumerate() {
            let _ = writeln!(s, "{n} {:#x}", self.gpr[i]);
        }
        let hex: Vec<String> = self.program.iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(s, "program {}", hex.join(" "));
        let mut d = Decoder::with_ip(
            self.mode.bitness(),
            &self.program,
            PROGRAM,
            DecoderOptions::NONE,
        );
        for insn in &mut d {
            let _ = writeln!(s, "# {:08x} {insn}", insn.ip());
        }
        s
    }

    /// Parses the file form.
    ///
    /// # Errors
    /// A line naming what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'));
        if lines.next().map(str::trim) != Some(MAGIC) {
            return Err(format!(
                "not a janus reproducer (first line must be '{MAGIC}')"
            ));
        }
        let mut r = Repro {
            mode: FuzzMode::Real,
            gpr: [0; 16],
            flags: 0,
            program: Vec::new(),
            env: 0,
        };
        let num = |v: &str| -> Result<u64, String> {
            let v = v.trim();
            let v = v.strip_prefix("0x").unwrap_or(v);
            u64::from_str_radix(v, 16).map_err(|_| format!("bad number '{v}'"))
        };
        let mut have_program = false;
        for line in lines {
            let (key, val) = line
                .split_once(' ')
                .ok_or_else(|| format!("bad line '{line}'"))?;
            match key {
                "mode" => r.mode = val.trim().parse()?,
                "flags" => r.flags = num(val)?,
                "env" => r.env = num(val)?,
                "program" => {
                    r.program = val
                        .split_whitespace()
                        .map(|b| {
                            u8::from_str_radix(b, 16).map_err(|_| format!("bad program byte '{b}'"))
                        })
                        .collect::<Result<_, _>>()?;
                    have_program = true;
                }
                _ => match GPR_NAMES.iter().position(|n| *n == key) {
                    Some(i) => r.gpr[i] = num(val)?,
                    None => return Err(format!("unknown field '{key}'")),
                },
            }
        }
        if !have_program || r.program.is_empty() {
            return Err("reproducer has no program".into());
        }
        Ok(r)
    }

    /// The program's instructions.
    pub fn instructions(&self) -> Vec<Instruction> {
        Decoder::with_ip(
            self.mode.bitness(),
            &self.program,
            PROGRAM,
            DecoderOptions::NONE,
        )
        .into_iter()
        .collect()
    }
}

/// Shrinks `r` while `diverges` keeps holding: drops instructions one at a time (never the final
/// HLT), then zeroes registers one at a time. Returns the smallest case found.
pub fn shrink(r: &Repro, diverges: &mut dyn FnMut(&Repro) -> bool) -> Repro {
    let mut best = r.clone();
    let mut insns = best.instructions();
    let mut i = 0;
    while i + 1 < insns.len() {
        if insns[i].mnemonic() == Mnemonic::Hlt {
            i += 1;
            continue;
        }
        let mut fewer = insns.clone();
        fewer.remove(i);
        if let Some(bytes) = encode(r.mode.bitness(), &fewer) {
            let cand = Repro {
                program: bytes,
                ..best.clone()
            };
            if diverges(&cand) {
                best = cand;
                insns = fewer;
                continue;
            }
        }
        i += 1;
    }
    for g in 0..16 {
        if best.gpr[g] == 0 {
            continue;
        }
        let mut cand = best.clone();
        cand.gpr[g] = 0;
        if diverges(&cand) {
            best = cand;
        }
    }
    if best.flags != 0 {
        let cand = Repro {
            flags: 0,
            ..best.clone()
        };
        if diverges(&cand) {
            best = cand;
        }
    }
    if best.env != 0 {
        let cand = Repro {
            env: 0,
            ..best.clone()
        };
        if diverges(&cand) {
            best = cand;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Repro {
        Repro {
            mode: FuzzMode::Long64,
            gpr: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
            flags: 0x8d5,
            // add rax,rcx ; inc rdx ; hlt
            program: vec![0x48, 0x01, 0xc8, 0x48, 0xff, 0xc2, 0xf4],
            env: 0,
        }
    }

    #[test]
    fn text_round_trip() {
        let r = sample();
        let t = r.to_text();
        assert!(t.contains("mode long64"), "{t}");
        assert!(t.contains("add rax,rcx"), "{t}");
        assert_eq!(Repro::parse(&t), Ok(r.clone()));
        let varied = Repro { env: 0x1234, ..r };
        let t = varied.to_text();
        assert!(
            t.contains("env 0x1234") && t.contains("# environment: cpl0"),
            "{t}"
        );
        assert_eq!(Repro::parse(&t), Ok(varied));
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(Repro::parse("hello").is_err());
        assert!(Repro::parse("janus-repro 1\nmode long64\n").is_err());
        assert!(Repro::parse("janus-repro 1\nmode warp\nprogram f4\n").is_err());
        assert!(Repro::parse("janus-repro 1\nprogram zz\n").is_err());
    }

    #[test]
    fn shrink_keeps_only_what_matters() {
        // "Diverges" whenever the program still contains `inc rdx` and rcx is non-zero.
        let mut pred =
            |r: &Repro| r.program.windows(3).any(|w| w == [0x48, 0xff, 0xc2]) && r.gpr[1] != 0;
        let s = shrink(&sample(), &mut pred);
        assert_eq!(s.program, vec![0x48, 0xff, 0xc2, 0xf4]);
        assert_eq!(s.gpr[1], 2);
        assert_eq!(s.gpr[0], 0);
        assert_eq!(s.flags, 0);
    }
}
