//! Disassembly for reports (failures, divergences), through iced-x86's Intel formatter, and the
//! instruction at a state's RIP read through its page tables ([`crate::walk`]).

use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter};

use crate::memory::GuestMemory;
use crate::state::CpuState;

/// Reads up to 15 instruction bytes at the state's RIP from guest memory, through the page
/// tables, and decodes them. The bytes are cut to the instruction's length (all that could be
/// read when they hold no valid instruction).
pub fn fetch_insn(s: &CpuState, mem: &GuestMemory) -> (Vec<u8>, Instruction) {
    let mut buf = [0u8; 15];
    let n = crate::walk::read_virt(s, mem, s.linear_rip(), &mut buf);
    let mut bytes = buf[..n].to_vec();
    let mut d = Decoder::with_ip(s.code_bitness(), &bytes, s.rip, DecoderOptions::NONE);
    let insn = d.decode();
    bytes.truncate(insn.len().max(1).min(bytes.len()));
    (bytes, insn)
}

/// The instruction at the state's RIP for a failure report: its bytes (up to 15 when they do
/// not decode) and its disassembly, with paging on or off.
pub fn at_rip(s: &CpuState, mem: &GuestMemory) -> (Vec<u8>, Option<String>) {
    let mut buf = [0u8; 15];
    let n = crate::walk::read_virt(s, mem, s.linear_rip(), &mut buf);
    let mut bytes = buf[..n].to_vec();
    let text = one(&bytes, s.code_bitness(), s.rip).map(|(text, len)| {
        bytes.truncate(len);
        text
    });
    (bytes, text)
}

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
    use super::*;

    #[test]
    fn disassembles_real_mode_out() {
        // out 0xf4, al
        let (t, n) = super::one(&[0xe6, 0xf4, 0x90], 16, 0x7c00).unwrap();
        assert_eq!(t, "out 0F4h,al");
        assert_eq!(n, 2);
    }

    #[test]
    fn the_instruction_at_rip_is_read_through_the_page_tables() {
        use crate::memory::RegionKind;
        use crate::state::bits;
        let mut m = GuestMemory::new();
        m.add(0, 1 << 20, RegionKind::Ram).unwrap();
        // 32-bit paging: linear 0x40_1000 -> physical 0x5000.
        let s = CpuState {
            cr0: bits::CR0_PG | bits::CR0_PE,
            cr3: 0x1000,
            rip: 0x40_1000,
            ..CpuState::default()
        };
        m.write_le(0x1004, 4, 0x2000 | 3).unwrap();
        m.write_le(0x2004, 4, 0x5000 | 3).unwrap();
        m.load(0x5000, &[0xe6, 0xf4, 0x90]).unwrap();
        let (bytes, text) = super::at_rip(&s, &m);
        assert_eq!(bytes, vec![0xe6, 0xf4]);
        assert_eq!(text.as_deref(), Some("out 0F4h,al"));
        let (bytes, insn) = super::fetch_insn(&s, &m);
        assert_eq!((bytes.len(), insn.len()), (2, 2));
    }

    #[test]
    fn invalid_bytes_give_none() {
        assert!(super::one(&[0x0f, 0xff], 64, 0).is_none());
        assert!(super::one(&[], 64, 0).is_none());
    }
}
