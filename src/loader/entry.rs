//! Entry states of the kernel loaders: the boot GDTs, the identity page tables for a 64-bit
//! entry, and the [`CpuState`] whose hidden segment parts match the GDT they name.

use janus_accel::state::{DescriptorTable, Segment, bits, rflags};
use janus_accel::{CpuState, GuestMemory, MemoryError};

/// Flat 4 GiB 32-bit code, execute/read, accessed.
pub(crate) const CODE32: u64 = 0x00cf_9b00_0000_ffff;
/// Flat 64-bit code (L=1), execute/read, accessed.
pub(crate) const CODE64: u64 = 0x00af_9b00_0000_ffff;
/// Flat 4 GiB data, read/write, accessed.
pub(crate) const DATA: u64 = 0x00cf_9300_0000_ffff;

/// Selectors of the GDT that PVH and multiboot entries use: [null, CODE32, DATA].
pub(crate) const FLAT32_GDT: [u64; 3] = [0, CODE32, DATA];
/// CS of [`FLAT32_GDT`].
pub(crate) const FLAT32_CS: u16 = 0x08;
/// DS/ES/FS/GS/SS of [`FLAT32_GDT`].
pub(crate) const FLAT32_DS: u16 = 0x10;

/// The GDT image of `entries`.
pub(crate) fn gdt_bytes(entries: &[u64]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_le_bytes()).collect()
}

/// The descriptor cache a CPU fills when it loads `selector` naming `desc`.
pub(crate) fn segment(selector: u16, desc: u64) -> Segment {
    let raw_limit = (desc & 0xffff) as u32 | ((desc >> 32) as u32 & 0x000f_0000);
    let g = desc >> 55 & 1 != 0;
    let mut s = Segment {
        selector,
        base: (desc >> 16 & 0xff_ffff) | (desc >> 32 & 0xff00_0000),
        limit: if g {
            raw_limit << 12 | 0xfff
        } else {
            raw_limit
        },
        ..Default::default()
    };
    s.set_attributes((desc >> 40) as u16 & 0xf0ff);
    s
}

/// A state in flat protected mode with paging off: CS = `cs` naming `gdt[cs / 8]`, the data
/// segments `ds` likewise, GDTR = (`gdt_base`, `gdt`), CR0 = PE|ET, CR4 = 0, IF = 0, an empty
/// IDT (any exception shuts the guest down), TR a 32-bit busy TSS at 0 of limit 0x67 (as PVH
/// asks).
pub(crate) fn protected_mode(gdt_base: u64, gdt: &[u64], cs: u16, ds: u16, rip: u64) -> CpuState {
    let mut s = CpuState::reset(true);
    let data = segment(ds, gdt[usize::from(ds >> 3)]);
    s.cs = segment(cs, gdt[usize::from(cs >> 3)]);
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    s.tr = Segment {
        limit: 0x67,
        typ: 0xb,
        present: true,
        ..Default::default()
    };
    s.gdt = DescriptorTable {
        base: gdt_base,
        limit: (gdt.len() * 8 - 1) as u16,
    };
    s.idt = DescriptorTable { base: 0, limit: 0 };
    s.cr0 = bits::CR0_PE | bits::CR0_ET;
    s.cr4 = 0;
    s.rflags = rflags::FIXED;
    s.rip = rip;
    s
}

/// [`protected_mode`] with long mode on: CR0.PG, CR4.PAE, EFER.LME|LMA, CR3 = `cr3`.
pub(crate) fn long_mode(
    gdt_base: u64,
    gdt: &[u64],
    cs: u16,
    ds: u16,
    rip: u64,
    cr3: u64,
) -> CpuState {
    let mut s = protected_mode(gdt_base, gdt, cs, ds, rip);
    s.cr0 |= bits::CR0_PG;
    s.cr4 = bits::CR4_PAE;
    s.cr3 = cr3;
    s.efer = bits::EFER_LME | bits::EFER_LMA;
    s
}

/// Writes 4-level page tables at `base` (page aligned; six pages: PML4, PDPT and four page
/// directories) that map the first 4 GiB onto itself with 2 MiB pages, present and writable;
/// returns CR3.
pub(crate) fn write_identity_map(mem: &GuestMemory, base: u64) -> Result<u64, MemoryError> {
    const P_RW: u64 = 0x3;
    const PS: u64 = 0x80;
    let pdpt = base + 0x1000;
    let pd = base + 0x2000;
    let mut pml4 = vec![0u8; 0x1000];
    pml4[..8].copy_from_slice(&(pdpt | P_RW).to_le_bytes());
    mem.write(base, &pml4)?;
    let mut dir_ptrs = vec![0u8; 0x1000];
    for i in 0..4u64 {
        let off = i as usize * 8;
        dir_ptrs[off..off + 8].copy_from_slice(&((pd + i * 0x1000) | P_RW).to_le_bytes());
    }
    mem.write(pdpt, &dir_ptrs)?;
    let dirs: Vec<u8> = (0..4 * 512u64)
        .flat_map(|i| ((i << 21) | PS | P_RW).to_le_bytes())
        .collect();
    mem.write(pd, &dirs)?;
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_decode_to_flat_segments() {
        let c = segment(0x10, CODE64);
        assert_eq!(
            (c.base, c.limit, c.typ, c.l, c.db, c.g),
            (0, !0, 0xb, true, false, true)
        );
        assert!(c.present && c.s && c.dpl == 0);
        let d = segment(0x18, DATA);
        assert_eq!((d.limit, d.typ, d.db, d.l), (!0, 0x3, true, false));
        let c32 = segment(8, CODE32);
        assert_eq!((c32.typ, c32.db, c32.l), (0xb, true, false));
        let odd = segment(8, 0x12cf_9a34_5678_0fff);
        assert_eq!(
            (odd.base, odd.limit, odd.typ),
            (0x1234_5678, 0xf0ff_ffff, 0xa)
        );
    }

    #[test]
    fn long_mode_state_is_consistent() {
        let s = long_mode(0x500, &[0, 0, CODE64, DATA], 0x10, 0x18, 0x100_0200, 0x9000);
        assert_eq!(s.mode_name(), "long64");
        assert_eq!(s.linear_rip(), 0x100_0200);
        assert_eq!(s.gdt.limit, 31);
        assert_eq!(s.rflags & rflags::IF, 0);
        let p = protected_mode(0x500, &FLAT32_GDT, FLAT32_CS, FLAT32_DS, 0x7c00);
        assert_eq!(p.mode_name(), "prot32");
        assert_eq!((p.cr0 & bits::CR0_PG, p.cr4), (0, 0));
    }
}
