//! Instruction fetch and decode: the one place that wraps iced-x86. Bytes are fetched through the
//! MMU (an instruction may cross into the next page, whose fault is raised only if the decoder
//! needs its bytes), then decoded at the current code size.

use iced_x86::{Decoder, DecoderError, DecoderOptions, Instruction};

use super::cpu::{Ctx, R, gp};
use super::mmu::Acc;

/// A decoded instruction and where its bytes came from.
#[derive(Debug)]
pub struct Fetched {
    /// The instruction (ip = RIP).
    pub insn: Instruction,
    /// Physical address of its first byte.
    pub phys: u64,
    /// It spills into the next page.
    pub crosses: bool,
    /// For an instruction that spills over in 32- or 64-bit code: the next page's linear and
    /// physical addresses (a block holding it is valid only while that mapping holds).
    pub page2: Option<(u64, u64)>,
}

impl Ctx<'_> {
    /// Fetches and decodes the instruction at `rip` with the given code size (16, 32 or 64).
    pub fn fetch_decode(&mut self, rip: u64, bitness: u32) -> R<Fetched> {
        let user = self.c.cpl() == 3;
        let lin = if bitness == 64 {
            rip
        } else {
            self.c.s.cs.base.wrapping_add(rip) & 0xffff_ffff
        };
        if bitness == 64 && !super::mmu::canonical_in(lin, self.c.s.cr4) {
            return Err(gp(0));
        }
        let e1 = self.translate(lin, Acc::X, user)?;
        let n1 = (0x1000 - (lin & 0xfff)).min(15) as usize;
        let mut buf = [0u8; 15];
        self.copy_code(e1.phys | (lin & 0xfff), &mut buf[..n1]);
        let mut n = n1;
        let mut second_fault = None;
        let mut second = None;
        if n1 < 15 {
            let lin2 = (lin & !0xfff).wrapping_add(0x1000) & self.lin_mask();
            match self.translate(lin2, Acc::X, user) {
                Ok(e2) => {
                    self.copy_code(e2.phys, &mut buf[n1..]);
                    n = 15;
                    second = Some((lin2, e2.phys));
                }
                Err(f) => second_fault = Some(f),
            }
        }
        let mut dec = Decoder::with_ip(bitness, &buf[..n], rip, DecoderOptions::NONE);
        let mut insn = Instruction::default();
        dec.decode_out(&mut insn);
        if dec.last_error() == DecoderError::NoMoreBytes {
            if let Some(f) = second_fault {
                return Err(f);
            }
        }
        if !self.c.s.decodes(&insn) {
            // LES, LDS, BOUND or POP with a register operand: #UD.
            insn = Instruction::default();
        }
        let len = insn.len().max(1) as u64;
        if bitness != 64 {
            // CS limit.
            let last = rip.wrapping_add(len - 1);
            if last > u64::from(self.c.s.cs.limit) || last < rip && bitness == 32 {
                return Err(gp(0));
            }
            let mask = if bitness == 32 { 0xffff_ffff } else { 0xffff };
            insn.set_next_ip(rip.wrapping_add(len) & mask);
        }
        let crosses = (lin & 0xfff) + len > 0x1000;
        Ok(Fetched {
            insn,
            phys: e1.phys | (lin & 0xfff),
            crosses,
            // 16-bit code wraps its IP inside the segment: not cached across pages.
            page2: second.filter(|_| crosses && bitness != 16),
        })
    }

    fn copy_code(&mut self, pa: u64, out: &mut [u8]) {
        if self.c.mem.read(pa, out).is_err() {
            // Code outside RAM or straddling regions: read byte by byte (MMIO reads 0xff).
            for (i, b) in out.iter_mut().enumerate() {
                *b = self
                    .c
                    .mem
                    .read_le(pa + i as u64, 1)
                    .map_or(0xff, |v| v as u8);
            }
        }
    }
}
