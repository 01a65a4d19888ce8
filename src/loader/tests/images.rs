//! Synthetic kernels for the loader tests: a bzImage with a filled-in setup header, ELF files
//! with PVH notes or multiboot headers, and an a.out-kludge multiboot image.

use crate::loader::bzimage::hdr;
use crate::loader::multiboot::{FLAG_AOUT_KLUDGE, HEADER_MAGIC};

/// Writes `val` little-endian at `off` (`N` bytes).
pub(super) fn set<const N: usize>(b: &mut [u8], off: usize, val: u64) {
    b[off..off + N].copy_from_slice(&val.to_le_bytes()[..N]);
}

/// Size of the synthetic bzImage's setup part (boot sector + 4 setup sectors).
pub(super) const BZ_SETUP: usize = 5 * 512;
/// Size of its protected-mode part.
pub(super) const BZ_PAYLOAD: usize = 0x1000;
/// Its pref_address.
pub(super) const BZ_PREF: u64 = 0x100_0000;
/// Its init_size.
pub(super) const BZ_INIT_SIZE: u64 = 0x80_0000;

/// A bzImage of protocol 2.15: relocatable, 2 MiB aligned, XLF_KERNEL_64, loads at 16 MiB with
/// an 8 MiB init_size, 2047-byte command lines, initrd_addr_max 0x7fffffff. The
/// protected-mode part is `hlt` at +0 and +0x200 and counts bytes elsewhere.
pub(super) fn bzimage() -> Vec<u8> {
    let mut k = vec![0u8; BZ_SETUP + BZ_PAYLOAD];
    k[hdr::SETUP_SECTS] = 4;
    set::<4>(&mut k, hdr::SYSSIZE, (BZ_PAYLOAD / 16) as u64);
    set::<2>(&mut k, hdr::BOOT_FLAG, 0xaa55);
    k[hdr::JUMP] = 0xeb;
    k[hdr::JUMP + 1] = 0x6a; // the header ends at 0x26c
    k[hdr::HEADER..hdr::HEADER + 4].copy_from_slice(b"HdrS");
    set::<2>(&mut k, hdr::VERSION, 0x020f);
    k[hdr::LOADFLAGS] = 0x01;
    set::<4>(&mut k, hdr::CODE32_START, 0x10_0000);
    set::<4>(&mut k, hdr::INITRD_ADDR_MAX, 0x7fff_ffff);
    set::<4>(&mut k, hdr::KERNEL_ALIGNMENT, 0x20_0000);
    k[hdr::RELOCATABLE_KERNEL] = 1;
    set::<2>(&mut k, hdr::XLOADFLAGS, 0x3);
    set::<4>(&mut k, hdr::CMDLINE_SIZE, 2047);
    set::<8>(&mut k, hdr::PREF_ADDRESS, BZ_PREF);
    set::<4>(&mut k, hdr::INIT_SIZE, BZ_INIT_SIZE);
    // Setup code right after the header: must not be copied into boot_params.
    k[0x26c..0x290].fill(0xcc);
    for (i, b) in k[BZ_SETUP..].iter_mut().enumerate() {
        *b = i as u8;
    }
    k[BZ_SETUP] = 0xf4;
    k[BZ_SETUP + 0x200] = 0xf4;
    k
}

/// An ELF note with 4-byte padding.
pub(super) fn note(name: &str, typ: u32, desc: &[u8]) -> Vec<u8> {
    let mut n = Vec::new();
    n.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
    n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    n.extend_from_slice(&typ.to_le_bytes());
    n.extend_from_slice(name.as_bytes());
    n.push(0);
    while n.len() % 4 != 0 {
        n.push(0);
    }
    n.extend_from_slice(desc);
    while n.len() % 4 != 0 {
        n.push(0);
    }
    n
}

/// One segment of a synthetic ELF.
#[derive(Clone, Debug)]
pub(super) struct Seg {
    pub(super) typ: u32,
    pub(super) vaddr: u64,
    pub(super) paddr: u64,
    pub(super) data: Vec<u8>,
    pub(super) memsz: u64,
}

impl Seg {
    /// A PT_LOAD at `vaddr`/`paddr` with `data` and `memsz` bytes in memory.
    pub(super) fn load(vaddr: u64, paddr: u64, data: Vec<u8>, memsz: u64) -> Self {
        Seg {
            typ: 1,
            vaddr,
            paddr,
            data,
            memsz,
        }
    }

    /// A PT_NOTE holding `notes`.
    pub(super) fn notes(notes: Vec<u8>) -> Self {
        Seg {
            typ: 4,
            vaddr: 0,
            paddr: 0,
            memsz: 0,
            data: notes,
        }
    }
}

/// Offset of the program header table in [`elf`] output.
pub(super) fn phoff(elf64: bool) -> usize {
    if elf64 { 0x40 } else { 0x34 }
}

/// Size of one program header.
pub(super) fn phentsize(elf64: bool) -> usize {
    if elf64 { 56 } else { 32 }
}

/// A little-endian ET_EXEC for x86 (EM_X86_64 for ELF64, EM_386 for ELF32) with `segs`, whose
/// data follow the program headers, each at a 16-byte aligned offset.
pub(super) fn elf(elf64: bool, entry: u64, segs: &[Seg]) -> Vec<u8> {
    let (ph, phsz) = (phoff(elf64), phentsize(elf64));
    let mut f = vec![0u8; ph + phsz * segs.len()];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = if elf64 { 2 } else { 1 };
    f[5] = 1;
    f[6] = 1;
    set::<2>(&mut f, 0x10, 2);
    set::<2>(&mut f, 0x12, if elf64 { 62 } else { 3 });
    set::<4>(&mut f, 0x14, 1);
    if elf64 {
        set::<8>(&mut f, 0x18, entry);
        set::<8>(&mut f, 0x20, ph as u64);
        set::<2>(&mut f, 0x34, 0x40);
        set::<2>(&mut f, 0x36, phsz as u64);
        set::<2>(&mut f, 0x38, segs.len() as u64);
    } else {
        set::<4>(&mut f, 0x18, entry);
        set::<4>(&mut f, 0x1c, ph as u64);
        set::<2>(&mut f, 0x28, 0x34);
        set::<2>(&mut f, 0x2a, phsz as u64);
        set::<2>(&mut f, 0x2c, segs.len() as u64);
    }
    for (i, s) in segs.iter().enumerate() {
        while f.len() % 16 != 0 {
            f.push(0);
        }
        let offset = f.len() as u64;
        f.extend_from_slice(&s.data);
        let p = ph + i * phsz;
        let filesz = s.data.len() as u64;
        if elf64 {
            set::<4>(&mut f, p, s.typ.into());
            set::<4>(&mut f, p + 4, 5);
            set::<8>(&mut f, p + 8, offset);
            set::<8>(&mut f, p + 16, s.vaddr);
            set::<8>(&mut f, p + 24, s.paddr);
            set::<8>(&mut f, p + 32, filesz);
            set::<8>(&mut f, p + 40, s.memsz.max(filesz * u64::from(s.typ == 4)));
            set::<8>(&mut f, p + 48, 4);
        } else {
            set::<4>(&mut f, p, s.typ.into());
            set::<4>(&mut f, p + 4, offset);
            set::<4>(&mut f, p + 8, s.vaddr);
            set::<4>(&mut f, p + 12, s.paddr);
            set::<4>(&mut f, p + 16, filesz);
            set::<4>(&mut f, p + 20, s.memsz.max(filesz * u64::from(s.typ == 4)));
            set::<4>(&mut f, p + 24, 5);
            set::<4>(&mut f, p + 28, 4);
        }
    }
    f
}

/// Where the PVH test kernel's text goes, and its entry point.
pub(super) const PVH_TEXT: u64 = 0x100_0000;
/// The PVH entry point of [`pvh_elf`].
pub(super) const PVH_ENTRY: u64 = PVH_TEXT + 0x40;
/// Where the PVH test kernel's data and bss go.
pub(super) const PVH_DATA: u64 = 0x120_0000;

/// A vmlinux-like ELF: text at 16 MiB (virtual 0xffffffff81000000), a data segment with
/// 0x3000 bytes of bss, and a note segment with a GNU build id before the Xen PVH note.
pub(super) fn pvh_elf(elf64: bool) -> Vec<u8> {
    let desc: Vec<u8> = if elf64 {
        PVH_ENTRY.to_le_bytes().to_vec()
    } else {
        (PVH_ENTRY as u32).to_le_bytes().to_vec()
    };
    let mut notes = note("GNU", 3, &[0xab; 20]);
    notes.extend(note("Xen", 18, &desc));
    let vbase = if elf64 {
        0xffff_ffff_8100_0000
    } else {
        0xc100_0000
    };
    elf(
        elf64,
        vbase,
        &[
            Seg::load(vbase, PVH_TEXT, vec![0xf4; 0x100], 0x100),
            Seg::load(vbase + 0x20_0000, PVH_DATA, vec![0x5a; 0x10], 0x3010),
            Seg::notes(notes),
        ],
    )
}

/// A multiboot header with `flags` and a correct checksum.
pub(super) fn mb_header(flags: u32) -> Vec<u8> {
    let sum = 0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags);
    [HEADER_MAGIC, flags, sum]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

/// Physical load address of [`multiboot_elf`].
pub(super) const MB_ELF_PADDR: u64 = 0x10_0000;
/// Its virtual address (the entry point is given virtually, at +0x20).
pub(super) const MB_ELF_VADDR: u64 = 0xc010_0000;

/// A multiboot ELF32, linked at 0xc0100000 and loaded at 1 MiB (as higher-half kernels are),
/// with the header at the start of its text and 0x1000 bytes of bss.
pub(super) fn multiboot_elf() -> Vec<u8> {
    let mut text = mb_header(0x3);
    text.resize(0x100, 0xf4);
    elf(
        false,
        MB_ELF_VADDR + 0x20,
        &[Seg::load(MB_ELF_VADDR, MB_ELF_PADDR, text, 0x1100)],
    )
}

/// Load address of [`multiboot_aout`].
pub(super) const MB_AOUT_LOAD: u64 = 0x20_0000;
/// Its file size.
pub(super) const MB_AOUT_LEN: usize = 0x200;
/// Its bss end.
pub(super) const MB_AOUT_BSS_END: u64 = MB_AOUT_LOAD + 0x3000;
/// Its entry point.
pub(super) const MB_AOUT_ENTRY: u64 = MB_AOUT_LOAD + 0x100;
/// File offset of its multiboot header.
pub(super) const MB_AOUT_HEADER: usize = 0x40;

/// A flat multiboot image with the a.out-kludge fields: loaded at 2 MiB, the header at +0x40,
/// entry at +0x100, bss up to +0x3000.
pub(super) fn multiboot_aout() -> Vec<u8> {
    let mut k = vec![0x90u8; MB_AOUT_LEN];
    let mut h = mb_header(FLAG_AOUT_KLUDGE | 0x3);
    for v in [
        MB_AOUT_LOAD + MB_AOUT_HEADER as u64,
        MB_AOUT_LOAD,
        MB_AOUT_LOAD + MB_AOUT_LEN as u64,
        MB_AOUT_BSS_END,
        MB_AOUT_ENTRY,
    ] {
        h.extend_from_slice(&(v as u32).to_le_bytes());
    }
    k[MB_AOUT_HEADER..MB_AOUT_HEADER + h.len()].copy_from_slice(&h);
    k
}
