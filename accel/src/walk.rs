//! A read-only guest page walk (no accessed/dirty updates, no faults): translates a linear
//! address to a physical one under a given CpuState, and reads or writes guest-virtual memory
//! through it. For debuggers and reports: the differ's memory comparisons, the instruction
//! bytes of failure reports ([`crate::disasm::at_rip`]), [`crate::Vcpu::read_virt`].

use crate::state::bits;
use crate::{CpuState, GuestMemory};

const P: u64 = 1;
const PS: u64 = 1 << 7;

fn read(mem: &GuestMemory, addr: u64, len: usize) -> Option<u64> {
    mem.read_le(addr, len).ok()
}

/// The physical address of `linear` under `s`'s paging mode, or `None` if it is not mapped.
pub fn translate(s: &CpuState, mem: &GuestMemory, linear: u64) -> Option<u64> {
    if s.cr0 & bits::CR0_PG == 0 {
        return Some(linear & 0xffff_ffff);
    }
    let addr_mask = 0x000f_ffff_ffff_f000u64;
    if s.cr4 & bits::CR4_PAE == 0 {
        // 32-bit paging.
        let lin = linear & 0xffff_ffff;
        let pde = read(mem, (s.cr3 & 0xffff_f000) + ((lin >> 22) & 0x3ff) * 4, 4)?;
        if pde & P == 0 {
            return None;
        }
        if pde & PS != 0 && s.cr4 & bits::CR4_PSE != 0 {
            let base = (pde & 0xffc0_0000) | ((pde >> 13) & 0xff) << 32;
            return Some(base | (lin & 0x3f_ffff));
        }
        let pte = read(mem, (pde & 0xffff_f000) + ((lin >> 12) & 0x3ff) * 4, 4)?;
        if pte & P == 0 {
            return None;
        }
        return Some((pte & 0xffff_f000) | (lin & 0xfff));
    }
    let (mut table, levels) = if s.efer & bits::EFER_LMA != 0 {
        (s.cr3 & addr_mask, 4)
    } else {
        let lin = linear & 0xffff_ffff;
        let pdpte = read(mem, (s.cr3 & 0xffff_ffe0) + ((lin >> 30) & 3) * 8, 8)?;
        if pdpte & P == 0 {
            return None;
        }
        (pdpte & addr_mask, 2)
    };
    let linear = if levels == 2 {
        linear & 0xffff_ffff
    } else {
        linear
    };
    for level in (1..=levels).rev() {
        let shift = 12 + 9 * (level - 1);
        let e = read(mem, table + ((linear >> shift) & 0x1ff) * 8, 8)?;
        if e & P == 0 {
            return None;
        }
        if level > 1 && e & PS != 0 {
            let page = 1u64 << shift;
            return Some((e & addr_mask & !(page - 1)) | (linear & (page - 1)));
        }
        table = e & addr_mask;
    }
    Some(table | (linear & 0xfff))
}

/// Reads `buf.len()` bytes of guest-virtual memory at `linear` under `s`'s paging. Returns how
/// many bytes were read: fewer at the first byte that is unmapped or not backed by memory.
pub fn read_virt(s: &CpuState, mem: &GuestMemory, linear: u64, buf: &mut [u8]) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let lin = linear.wrapping_add(done as u64);
        let Some(pa) = translate(s, mem, lin) else {
            break;
        };
        let n = (buf.len() - done).min((0x1000 - (lin & 0xfff)) as usize);
        if mem.read(pa, &mut buf[done..done + n]).is_err() {
            break;
        }
        done += n;
    }
    done
}

/// Writes `data` into guest-virtual memory at `linear` under `s`'s paging, as a device does
/// ([`GuestMemory::write_dma`]: code translated from the bytes is dropped). Returns how many
/// bytes were written: fewer at the first byte that is unmapped or not RAM.
pub fn write_virt(s: &CpuState, mem: &GuestMemory, linear: u64, data: &[u8]) -> usize {
    let mut done = 0;
    while done < data.len() {
        let lin = linear.wrapping_add(done as u64);
        let Some(pa) = translate(s, mem, lin) else {
            break;
        };
        let n = (data.len() - done).min((0x1000 - (lin & 0xfff)) as usize);
        if mem.write_dma(pa, &data[done..done + n]).is_err() {
            break;
        }
        done += n;
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RegionKind;

    #[test]
    fn four_level_walk_with_2m_and_4k_pages() {
        let mut m = GuestMemory::new();
        m.add(0, 8 << 20, RegionKind::Ram).unwrap();
        let s = CpuState {
            cr0: bits::CR0_PG | bits::CR0_PE,
            cr4: bits::CR4_PAE,
            efer: bits::EFER_LMA | bits::EFER_LME,
            cr3: 0x1000,
            ..Default::default()
        };
        m.write_le(0x1000, 8, 0x2000 | 3).unwrap(); // PML4[0]
        m.write_le(0x2000, 8, 0x3000 | 3).unwrap(); // PDPT[0]
        m.write_le(0x3000, 8, 0x20_0000 | 0x83).unwrap(); // PD[0]: 2 MiB page at 2 MiB
        m.write_le(0x3008, 8, 0x4000 | 3).unwrap(); // PD[1] -> PT
        m.write_le(0x4000 + 5 * 8, 8, 0x7000 | 3).unwrap(); // PT[5]: 4 KiB page at 0x7000
        assert_eq!(translate(&s, &m, 0x1234), Some(0x20_1234));
        assert_eq!(translate(&s, &m, 0x20_5123), Some(0x7123));
        assert_eq!(translate(&s, &m, 0x20_6000), None);
        assert_eq!(translate(&s, &m, 1 << 39), None);
        // Virtual reads and writes follow the pages and stop where the mapping ends.
        m.write_le(0x7ffe, 2, 0xbbaa).unwrap();
        assert_eq!(write_virt(&s, &m, 0x20_5ffe, &[1, 2]), 2);
        assert_eq!(m.read_le(0x7ffe, 2).unwrap(), 0x0201);
        let mut buf = [0u8; 4];
        assert_eq!(read_virt(&s, &m, 0x20_5ffe, &mut buf), 2);
        assert_eq!(&buf[..2], &[1, 2]);
        assert_eq!(
            read_virt(&s, &m, 0x1ffffe, &mut buf),
            2,
            "2 MiB page then PD[1]'s PT[0]"
        );
    }

    #[test]
    fn no_paging_and_32bit_paging() {
        let mut m = GuestMemory::new();
        m.add(0, 8 << 20, RegionKind::Ram).unwrap();
        let mut s = CpuState::default();
        assert_eq!(translate(&s, &m, 0x1_0000_1234), Some(0x1234));
        s.cr0 = bits::CR0_PG | bits::CR0_PE;
        s.cr4 = bits::CR4_PSE;
        s.cr3 = 0x1000;
        m.write_le(0x1000, 4, 0x40_0000 | 0x83).unwrap(); // 4 MiB page
        m.write_le(0x1004, 4, 0x2000 | 3).unwrap();
        m.write_le(0x2000 + 4, 4, 0x9000 | 3).unwrap();
        assert_eq!(translate(&s, &m, 0x12345), Some(0x41_2345));
        assert_eq!(translate(&s, &m, 0x40_1abc), Some(0x9abc));
    }
}
