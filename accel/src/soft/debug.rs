//! The debug registers: DR0-DR3 breakpoints (instruction, data write, data read/write; lengths
//! 1, 2, 4 and 8), DR6 status and DR7 control, MOV DR with general detect (DR7.GD).
//!
//! Cost: nothing is checked while DR7 enables no breakpoint. While one is enabled the run loop
//! executes one instruction per block in the interpreter (no JIT): it checks instruction
//! breakpoints before each instruction ([`exec_hits`]), the MMU reports data accesses
//! ([`note_access`]) and the loop raises the #DB trap after the instruction completes.
//!
//! Simplified: I/O breakpoints (R/W = 10 with CR4.DE) never match; a REP string instruction
//! reports a data breakpoint after its last iteration, not after the iteration that hit it.

use crate::state::{CpuState, DebugRegs};

/// DR6.BD: a MOV DR with DR7.GD set.
pub const DR6_BD: u64 = 1 << 13;
/// DR6.BS: single step.
pub const DR6_BS: u64 = 1 << 14;
/// DR7.GD: general detect.
pub const DR7_GD: u64 = 1 << 13;

/// DR6 bits that are not fixed: B0-B3, BD, BS, BT.
const DR6_WRITABLE: u64 = 0xe00f;
/// DR7 bits that are not fixed (bit 10 reads 1; 11, 12, 14, 15 read 0).
const DR7_WRITABLE: u64 = 0xffff_23ff;

/// Whether DR7 enables any breakpoint (L0-G3).
#[inline]
pub fn armed(s: &CpuState) -> bool {
    s.debug.dr7 & 0xff != 0
}

/// Breakpoint `n`'s (enabled, R/W type, length in bytes).
fn bp(d: &DebugRegs, n: usize) -> (bool, u64, u64) {
    let enabled = d.dr7 >> (2 * n) & 3 != 0;
    let rw = d.dr7 >> (16 + 4 * n) & 3;
    let len = match d.dr7 >> (18 + 4 * n) & 3 {
        0 => 1,
        1 => 2,
        2 => 8,
        _ => 4,
    };
    (enabled, rw, len)
}

/// DR6.Bn of the enabled instruction breakpoints at linear address `lin`.
pub fn exec_hits(s: &CpuState, lin: u64) -> u64 {
    let d = &s.debug;
    (0..4)
        .filter(|&n| {
            let (on, rw, _) = bp(d, n);
            on && rw == 0 && d.dr[n] == lin
        })
        .fold(0, |m, n| m | 1 << n)
}

/// DR6.Bn of the enabled data breakpoints that an access of `size` bytes at `lin` (a write if
/// `write`) hits: each breakpoint covers its length, aligned down.
pub fn data_hits(s: &CpuState, lin: u64, size: u8, write: bool) -> u64 {
    let d = &s.debug;
    let end = lin.wrapping_add(u64::from(size));
    (0..4)
        .filter(|&n| {
            let (on, rw, len) = bp(d, n);
            let start = d.dr[n] & !(len - 1);
            on && (rw == 3 || (rw == 1 && write)) && lin < start.wrapping_add(len) && start < end
        })
        .fold(0, |m, n| m | 1 << n)
}

/// The value MOV from DR6 reads.
pub fn read_dr6(d: &DebugRegs) -> u64 {
    d.dr6 & DR6_WRITABLE | DebugRegs::DR6_RESET
}

/// The value MOV from DR7 reads.
pub fn read_dr7(d: &DebugRegs) -> u64 {
    d.dr7 & DR7_WRITABLE | DebugRegs::DR7_RESET
}

/// MOV to DR6 or DR7 (`n` 6 or 7): the fixed bits stay fixed.
pub fn write_status(d: &mut DebugRegs, n: u8, v: u64) {
    if n == 6 {
        d.dr6 = v & DR6_WRITABLE | DebugRegs::DR6_RESET;
    } else {
        d.dr7 = v & DR7_WRITABLE | DebugRegs::DR7_RESET;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(dr7: u64, dr: [u64; 4]) -> CpuState {
        CpuState {
            debug: DebugRegs {
                dr,
                dr6: DebugRegs::DR6_RESET,
                dr7,
            },
            ..Default::default()
        }
    }

    #[test]
    fn lengths_types_and_alignment() {
        // DR0: execute at 0x1000 (L0); DR1: write, 2 bytes at 0x2001 -> 0x2000-0x2001 (G1);
        // DR2: read/write, 8 bytes at 0x3004 -> 0x3000-0x3007 (L2); DR3: 4 bytes, disabled.
        let dr7 = 0b01
            | 0b10 << 2
            | 0b01 << 4
            | (0b01 | 0b01 << 2) << 20
            | (0b11 | 0b10 << 2) << 24
            | (0b11 | 0b11 << 2) << 28;
        let s = state(dr7, [0x1000, 0x2001, 0x3004, 0x4000]);
        assert!(armed(&s));
        assert_eq!(exec_hits(&s, 0x1000), 1);
        assert_eq!(exec_hits(&s, 0x1001), 0);
        assert_eq!(
            data_hits(&s, 0x1000, 1, false),
            0,
            "an execute breakpoint is not data"
        );
        assert_eq!(data_hits(&s, 0x2000, 1, true), 2);
        assert_eq!(data_hits(&s, 0x1fff, 2, true), 2, "overlap from below");
        assert_eq!(data_hits(&s, 0x2002, 4, true), 0);
        assert_eq!(
            data_hits(&s, 0x2000, 4, false),
            0,
            "write-only breakpoint, read"
        );
        assert_eq!(data_hits(&s, 0x3007, 1, false), 4);
        assert_eq!(data_hits(&s, 0x3008, 8, true), 0);
        assert_eq!(data_hits(&s, 0x4000, 4, true), 0, "disabled");
        assert!(!armed(&state(0x400 | 0xffff_0000, [0; 4])));
    }

    #[test]
    fn fixed_bits_of_dr6_and_dr7() {
        let mut d = DebugRegs::default();
        write_status(&mut d, 6, 0);
        assert_eq!(read_dr6(&d), 0xffff_0ff0);
        write_status(&mut d, 6, u64::MAX);
        assert_eq!(read_dr6(&d), 0xffff_fff0 & !(1 << 12) | 0xf);
        write_status(&mut d, 7, 0);
        assert_eq!(read_dr7(&d), 0x400);
        write_status(&mut d, 7, 0xffff_ffff);
        assert_eq!(read_dr7(&d), 0xffff_27ff);
    }
}
