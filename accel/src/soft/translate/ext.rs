//! General-purpose instructions of the later extensions: MOVBE, CRC32 (SSE4.2), BMI2 (BZHI,
//! MULX, PDEP, PEXT, RORX, SARX, SHLX, SHRX; VEX-encoded), ADX (ADCX, ADOX), RDRAND and RDSEED
//! (the host's random source), and RDPID. Flags the architecture leaves undefined are given
//! the values an Intel CPU gives them (cleared).

use std::io::Read;

use iced_x86::{Instruction, Mnemonic};

use super::{Builder, op_size};
use crate::soft::cpu::{Ctx, R, UD};
use crate::soft::flags::{mask, sign_bit};
use crate::state::rflags::{AF, CF, OF, PF, SF, VM, ZF};

pub(super) fn lower(b: &mut Builder, i: &Instruction) -> bool {
    use Mnemonic::*;
    match i.mnemonic() {
        Movbe => b.call(movbe),
        Crc32 => b.call(crc32),
        Bzhi | Mulx | Pdep | Pext | Rorx | Sarx | Shlx | Shrx => b.call(bmi2),
        Adcx | Adox => b.call(adx),
        Rdrand | Rdseed => b.call(rdrand),
        Rdpid => b.call(rdpid),
        _ => return false,
    }
    true
}

/// MOVBE: a load or store with the bytes of the operand reversed (flags unchanged).
fn movbe(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sz = op_size(i, 0);
    let v = c.rd_sz(i, 1, sz)?;
    c.wr_sz(i, 0, sz, v.swap_bytes() >> (64 - 8 * u32::from(sz)))
}

/// The CRC-32C (Castagnoli) polynomial, bit-reflected, as CRC32 uses it.
const CRC32C: u32 = 0x82f6_3b78;

/// CRC32 over the `sz` low bytes of `v` (least significant first), from `crc`.
pub(crate) fn crc32c(mut crc: u32, v: u64, sz: u8) -> u32 {
    for k in 0..sz {
        crc ^= (v >> (8 * k)) as u32 & 0xff;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ CRC32C
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// CRC32 r32/r64, r/m8/16/32/64: the destination's low 32 bits carried over the source's
/// bytes; the result is zero-extended (flags unchanged).
fn crc32(c: &mut Ctx, i: &Instruction) -> R<()> {
    let dsz = op_size(i, 0);
    let ssz = op_size(i, 1);
    let crc = c.rd_sz(i, 0, 4)? as u32;
    let v = c.rd_sz(i, 1, ssz)?;
    c.wr_sz(i, 0, dsz, u64::from(crc32c(crc, v, ssz)))
}

/// The VEX-encoded general-purpose instructions do not exist in real and virtual-8086 mode.
fn need_vex(c: &Ctx) -> R<()> {
    if !c.c.pe() || c.c.s.rflags & VM != 0 {
        Err(UD)
    } else {
        Ok(())
    }
}

/// PDEP: the low bits of `src` deposited, in order, at the set bits of `m`.
pub(crate) fn pdep(src: u64, m: u64) -> u64 {
    let (mut r, mut k, mut m) = (0u64, 0u32, m);
    while m != 0 {
        let bit = m & m.wrapping_neg();
        if src >> k & 1 != 0 {
            r |= bit;
        }
        k += 1;
        m &= m - 1;
    }
    r
}

/// PEXT: the bits of `src` at the set bits of `m`, packed into the low bits.
pub(crate) fn pext(src: u64, m: u64) -> u64 {
    let (mut r, mut k, mut m) = (0u64, 0u32, m);
    while m != 0 {
        let bit = m & m.wrapping_neg();
        if src & bit != 0 {
            r |= 1 << k;
        }
        k += 1;
        m &= m - 1;
    }
    r
}

/// BMI2 (32 or 64 bits). Only BZHI changes flags: ZF and SF from the result, CF when the index
/// is beyond the operand, OF cleared (AF and PF, undefined, cleared).
fn bmi2(c: &mut Ctx, i: &Instruction) -> R<()> {
    use Mnemonic::*;
    need_vex(c)?;
    let sz = op_size(i, 0);
    let m = mask(sz);
    let bits = u32::from(sz) * 8;
    // Shift and rotate counts are masked to the operand width, as the 32/64-bit shifts do.
    let cnt = |n: u64| (n & u64::from(bits - 1)) as u32;
    let r = match i.mnemonic() {
        Mulx => {
            let src = c.rd_sz(i, 2, sz)?;
            let rdx = c.c.get(2, sz);
            let p = u128::from(rdx) * u128::from(src);
            let (lo, hi) = if sz == 8 {
                (p as u64, (p >> 64) as u64)
            } else {
                (p as u64 & m, (p >> 32) as u64 & m)
            };
            // The low half first: with one register for both, it holds the high half.
            c.wr_sz(i, 1, sz, lo)?;
            c.wr_sz(i, 0, sz, hi)?;
            return Ok(());
        }
        Pdep => {
            let src = c.rd_sz(i, 1, sz)?;
            let msk = c.rd_sz(i, 2, sz)?;
            pdep(src, msk) & m
        }
        Pext => {
            let src = c.rd_sz(i, 1, sz)?;
            let msk = c.rd_sz(i, 2, sz)?;
            pext(src, msk) & m
        }
        Rorx => {
            let src = c.rd_sz(i, 1, sz)?;
            let n = cnt(i.immediate8().into());
            if n == 0 {
                src
            } else {
                (src >> n | src << (bits - n)) & m
            }
        }
        Sarx | Shlx | Shrx => {
            let src = c.rd_sz(i, 1, sz)?;
            let n = cnt(c.rd_sz(i, 2, sz)?);
            match i.mnemonic() {
                Shlx => (src << n) & m,
                Shrx => src >> n,
                _ => (crate::soft::flags::sext(src, sz) >> n) as u64 & m,
            }
        }
        _ => {
            // BZHI: bits [n-1:0] of the source, where n is the index register's low byte.
            let src = c.rd_sz(i, 1, sz)?;
            let n = c.rd_sz(i, 2, sz)? & 0xff;
            let (r, cf) = if n < u64::from(bits) {
                (src & ((1u64 << n) - 1), false)
            } else {
                (src, true)
            };
            c.wr_sz(i, 0, sz, r)?;
            let mut f = c.c.rflags() & !(ZF | CF | OF | SF | AF | PF);
            if r == 0 {
                f |= ZF;
            }
            if r & sign_bit(sz) != 0 {
                f |= SF;
            }
            if cf {
                f |= CF;
            }
            c.c.set_rflags(f);
            return Ok(());
        }
    };
    c.wr_sz(i, 0, sz, r)
}

/// ADCX (carry in and out through CF) and ADOX (through OF); no other flag changes.
fn adx(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sz = op_size(i, 0);
    let m = mask(sz);
    let flag = if i.mnemonic() == Mnemonic::Adcx {
        CF
    } else {
        OF
    };
    let a = c.rd_sz(i, 0, sz)?;
    let b = c.rd_sz(i, 1, sz)?;
    let cin = u128::from(c.c.rflags() & flag != 0);
    let s = u128::from(a) + u128::from(b) + cin;
    let cout = s >> (8 * u32::from(sz)) != 0;
    c.wr_sz(i, 0, sz, s as u64 & m)?;
    let f = c.c.rflags() & !flag;
    c.c.set_rflags(f | if cout { flag } else { 0 });
    Ok(())
}

/// 8 random bytes from the host kernel's random source (the pool getrandom(2) reads), or None
/// when it cannot be read.
fn host_random() -> Option<u64> {
    thread_local! {
        static URANDOM: Option<std::fs::File> = std::fs::File::open("/dev/urandom").ok();
    }
    URANDOM.with(|f| {
        let mut b = [0u8; 8];
        let mut f = f.as_ref()?;
        f.read_exact(&mut b).ok()?;
        Some(u64::from_le_bytes(b))
    })
}

/// The next value of splitmix64 from `state` (Steele, Lea and Flood's generator).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// RDRAND, RDSEED: a random value and CF set; if the host's source fails, zero and CF clear
/// (the architecture's "no entropy now, retry"). OF, SF, ZF, AF and PF are cleared. Under
/// deterministic time (`--icount`) the values come from a per-vCPU generator with a fixed seed,
/// so that a run repeats (QEMU's record/replay treats them as input instead).
fn rdrand(c: &mut Ctx, i: &Instruction) -> R<()> {
    let sz = op_size(i, 0);
    let r = if c.io.counts_instructions() {
        Some(splitmix64(&mut c.c.rdrand_state))
    } else {
        host_random()
    };
    c.wr_sz(i, 0, sz, r.unwrap_or(0) & mask(sz))?;
    let f = c.c.rflags() & !(ZF | CF | OF | SF | AF | PF);
    c.c.set_rflags(f | if r.is_some() { CF } else { 0 });
    Ok(())
}

/// RDPID: IA32_TSC_AUX into a 32-bit register (64-bit in 64-bit mode, zero-extended).
fn rdpid(c: &mut Ctx, i: &Instruction) -> R<()> {
    let v = c.c.s.tsc_aux;
    c.wr(i, 0, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers: CRC-32C of "123456789" is 0xE3069283 (with the usual pre- and
    /// post-inversion), as Intel's CRC32 computes it a byte at a time.
    #[test]
    fn crc32c_check_value() {
        let crc = b"123456789"
            .iter()
            .fold(!0u32, |c, &b| crc32c(c, u64::from(b), 1));
        assert_eq!(!crc, 0xe306_9283);
        // Wider operands are their bytes, least significant first.
        let word = u64::from_le_bytes(*b"12345678");
        assert_eq!(
            crc32c(!0, word, 8),
            b"12345678"
                .iter()
                .fold(!0u32, |c, &b| crc32c(c, u64::from(b), 1))
        );
    }

    /// PDEP and PEXT by hand-worked examples, and PDEP undoing PEXT.
    #[test]
    fn pdep_pext_known_answers() {
        assert_eq!(pdep(0b1011, 0b1111_0000), 0b1011_0000);
        assert_eq!(pdep(0b101, 0x8000_0000_0000_0101), 0x8000_0000_0000_0001);
        assert_eq!(pdep(0x1234_5678, u64::MAX), 0x1234_5678);
        assert_eq!(pext(0xffff_0000_1234_5678, 0xffff_0000_0000_00f0), 0xffff7);
        assert_eq!(pext(0xdead_beef, 0), 0);
        for (s, m) in [
            (0x1234_5678_9abc_def0, 0x0f0f_00ff_f000_1111u64),
            (!0, 0x8000_0001),
        ] {
            assert_eq!(pdep(pext(s, m), m), s & m);
        }
    }
}
