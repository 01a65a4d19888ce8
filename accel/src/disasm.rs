//! Disassembly for reports (failures, divergences), through iced-x86's Intel formatter.

use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

/// Disassembles the first instruction of `bytes` decoded at `ip` in `bitness`-bit code.
/// Returns the text and the instruction length, or `None` if the bytes do not hold a valid
/// instruction.
pub fn one(bytes: &[u8], bitness: u32, ip: u64) -> Option<(String, usize)> {
    if bytes.is_empty() {
        return None;
    }
    let mut d = Decoder::with_ip(bitness, bytes, ip, DecoderOptions::NONE);
    let insn = d.decode();
    if insn.is_invalid() {
        return None;
    }
    let mut out = String::new();
    IntelFormatter::new().format(&insn, &mut out);
    Some((out, insn.len()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn disassembles_real_mode_out() {
        // out 0xf4, al
        let (t, n) = super::one(&[0xe6, 0xf4, 0x90], 16, 0x7c00).unwrap();
        assert_eq!(t, "out 0F4h,al");
        assert_eq!(n, 2);
    }

    #[test]
    fn invalid_bytes_give_none() {
        assert!(super::one(&[0x0f, 0xff], 64, 0).is_none());
        assert!(super::one(&[], 64, 0).is_none());
    }
}
