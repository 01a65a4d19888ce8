//! The PVH loader: segments at their physical addresses, hvm_start_info, the entry state and
//! every refusal of the ELF reader.

use janus_accel::Reg;
use janus_accel::state::{bits, rflags};

use super::images::{PVH_DATA, PVH_ENTRY, PVH_TEXT, Seg, elf, note, phoff, pvh_elf, set};
use super::*;
use crate::loader::entry::{CODE32, DATA};
use crate::loader::pvh::{MEMMAP, MODLIST, START_INFO, START_INFO_MAGIC};

#[test]
fn elf64_vmlinux_is_entered_in_flat_protected_mode() {
    let (m, l) = guest(64);
    // Dirty the bss first: the loader must zero it.
    m.write(PVH_DATA, &[0xee; 0x3020]).unwrap();
    let b = load_kernel(&m, &l, &pvh_elf(true), None, "console=hvc0", None).unwrap();
    assert_eq!(b.format, KernelFormat::Pvh { elf64: true });
    let s = &b.state;
    assert_eq!(s.mode_name(), "prot32");
    assert_eq!((b.entry, s.rip), (PVH_ENTRY, PVH_ENTRY));
    assert_eq!(s.cr0 & (bits::CR0_PE | bits::CR0_PG), bits::CR0_PE);
    assert_eq!((s.cr4, s.efer), (0, 0));
    assert_eq!(s.rflags & (rflags::IF | rflags::TF | rflags::VM), 0);
    assert_eq!(
        (s.cs.base, s.cs.limit, s.ds.base, s.ds.limit),
        (0, !0, 0, !0)
    );
    assert!(s.cs.db && s.ss.db && s.es.present);
    assert_eq!((s.tr.base, s.tr.limit, s.tr.typ), (0, 0x67, 0xb));
    // The GDT the selectors name is in memory.
    assert_eq!(rd(&m, s.gdt.base + u64::from(s.cs.selector), 8), CODE32);
    assert_eq!(rd(&m, s.gdt.base + u64::from(s.ds.selector), 8), DATA);
    // Segments at p_paddr, bss zeroed.
    assert_eq!(bytes(&m, PVH_TEXT, 0x100), vec![0xf4; 0x100]);
    assert_eq!(bytes(&m, PVH_DATA, 0x10), vec![0x5a; 0x10]);
    assert!(bytes(&m, PVH_DATA + 0x10, 0x3000).iter().all(|&b| b == 0));
    assert_eq!(
        rd(&m, PVH_DATA + 0x3010, 1),
        0xee,
        "nothing past memsz is touched"
    );
    assert_eq!(b.kernel, PVH_TEXT..PVH_DATA + 0x3010);

    let si = s.reg(Reg::Rbx);
    assert_eq!(si, b.info_addr);
    assert_eq!(
        si,
        0x1000 + START_INFO as u64,
        "boot data goes at the lowest free page"
    );
    let base = si - START_INFO as u64;
    assert_eq!(rd(&m, si, 4), u64::from(START_INFO_MAGIC));
    assert_eq!(rd(&m, si + 4, 4), 1, "version");
    assert_eq!(rd(&m, si + 8, 4), 0, "flags");
    assert_eq!(
        (rd(&m, si + 12, 4), rd(&m, si + 16, 8)),
        (0, 0),
        "no modules"
    );
    assert_eq!(cstr(&m, rd(&m, si + 24, 8)), "console=hvc0");
    assert_eq!(rd(&m, si + 24, 8), b.cmdline_addr);
    assert_eq!(rd(&m, si + 32, 8), 0, "rsdp_paddr");
    assert_eq!(rd(&m, si + 40, 8), base + MEMMAP as u64);
    assert_eq!(rd(&m, si + 48, 4), MAP_64M.len() as u64, "memmap_entries");
    assert_eq!(rd(&m, si + 52, 4), 0, "reserved");
    for (i, (addr, size, typ)) in MAP_64M.iter().enumerate() {
        let e = base + MEMMAP as u64 + i as u64 * 24;
        assert_eq!(
            (
                rd(&m, e, 8),
                rd(&m, e + 8, 8),
                rd(&m, e + 16, 4),
                rd(&m, e + 20, 4)
            ),
            (*addr, *size, u64::from(*typ), 0)
        );
    }
}

#[test]
fn the_initrd_is_module_0_high_in_ram() {
    let (m, l) = guest(64);
    let initrd: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let b = load_kernel(&m, &l, &pvh_elf(true), Some(&initrd), "", None).unwrap();
    let start = ((64 << 20) - 5000) & !0xfff;
    assert_eq!(b.initrd, Some(start..start + 5000));
    assert_eq!(bytes(&m, start, 5000), initrd);
    let si = b.info_addr;
    assert_eq!(rd(&m, si + 12, 4), 1);
    let ml = rd(&m, si + 16, 8);
    assert_eq!(ml, si - START_INFO as u64 + MODLIST as u64);
    assert_eq!(
        (rd(&m, ml, 8), rd(&m, ml + 8, 8), rd(&m, ml + 16, 8)),
        (start, 5000, 0)
    );
    assert_eq!(cstr(&m, b.cmdline_addr), "");
}

#[test]
fn elf32_with_a_4_byte_note() {
    let (m, l) = guest(64);
    let b = load_kernel(&m, &l, &pvh_elf(false), None, "", None).unwrap();
    assert_eq!(b.format, KernelFormat::Pvh { elf64: false });
    assert_eq!(b.state.rip, PVH_ENTRY);
    assert_eq!(rd(&m, PVH_TEXT, 1), 0xf4);
}

#[test]
fn boot_data_avoids_segments_in_low_memory() {
    let (m, l) = guest(64);
    let notes = note("Xen", 18, &0x1010u32.to_le_bytes());
    let k = elf(
        false,
        0x1000,
        &[
            Seg::load(0x1000, 0x1000, vec![0xf4; 0x20], 0x8000),
            Seg::notes(notes),
        ],
    );
    let b = load_kernel(&m, &l, &k, None, "x", None).unwrap();
    assert_eq!(b.info_addr, 0x9000 + START_INFO as u64);
}

fn refusal(k: &[u8]) -> KernelError {
    let (m, l) = guest(64);
    load_kernel(&m, &l, k, None, "", None).unwrap_err()
}

fn corrupt_why(e: &KernelError) -> &'static str {
    match e {
        KernelError::Corrupt { why, .. } | KernelError::Unsupported { why, .. } => why,
        _ => "",
    }
}

#[test]
fn elf_problems_each_have_their_error() {
    let with_note = |desc: &[u8], segs: Vec<Seg>| {
        let mut s = segs;
        s.push(Seg::notes(note("Xen", 18, desc)));
        elf(true, 0, &s)
    };
    let text = || Seg::load(0, PVH_TEXT, vec![0xf4; 0x100], 0x100);

    let e = refusal(&with_note(&[1, 2], vec![text()]));
    assert!(corrupt_why(&e).contains("neither 4 nor 8"), "{e}");
    let e = refusal(&with_note(&(1u64 << 32).to_le_bytes(), vec![text()]));
    assert!(corrupt_why(&e).contains("above 4 GiB"), "{e}");
    let e = refusal(&with_note(&0x50_0000u64.to_le_bytes(), vec![text()]));
    assert!(corrupt_why(&e).contains("outside every PT_LOAD"), "{e}");
    let e = refusal(&with_note(&PVH_TEXT.to_le_bytes(), vec![]));
    assert!(corrupt_why(&e).contains("no PT_LOAD"), "{e}");
    let e = refusal(&with_note(
        &0xd000_0000u64.to_le_bytes(),
        vec![Seg::load(0, 0xd000_0000, vec![1], 0x1000)],
    ));
    assert!(
        matches!(
            e,
            KernelError::SegmentOutsideRam {
                start: 0xd000_0000,
                ..
            }
        ),
        "{e}"
    );
    let e = refusal(&with_note(
        &0x300_0000u64.to_le_bytes(),
        vec![Seg::load(0, 0x300_0000, vec![1], 0x200_0000)],
    ));
    assert_eq!(
        e,
        KernelError::KernelTooLarge {
            start: 0x300_0000,
            end: 0x500_0000,
            ram_end: 64 << 20
        }
    );

    // Header fields.
    let good = pvh_elf(true);
    let patched = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut k = good.clone();
        f(&mut k);
        refusal(&k)
    };
    let e = patched(&|k| k[5] = 2);
    assert!(corrupt_why(&e).contains("big-endian"), "{e}");
    let e = patched(&|k| k[4] = 3);
    assert!(corrupt_why(&e).contains("EI_CLASS"), "{e}");
    let e = patched(&|k| set::<2>(k, 0x12, 40));
    assert!(corrupt_why(&e).contains("e_machine"), "{e}");
    let e = patched(&|k| set::<2>(k, 0x10, 3));
    assert!(corrupt_why(&e).contains("ET_EXEC"), "{e}");
    let e = patched(&|k| set::<2>(k, 0x36, 20));
    assert!(corrupt_why(&e).contains("e_phentsize"), "{e}");
    let e = patched(&|k| set::<2>(k, 0x38, 0xffff));
    assert!(corrupt_why(&e).contains("PN_XNUM"), "{e}");
    let e = patched(&|k| set::<8>(k, 0x20, 1 << 40));
    assert!(
        matches!(
            e,
            KernelError::Truncated {
                what: "the program header table",
                ..
            }
        ),
        "{e}"
    );
    let e = patched(&|k| k.truncate(0x30));
    assert!(
        matches!(e, KernelError::Truncated { need: 0x34, .. }),
        "{e}"
    );
    let e = patched(&|k| k.truncate(0x3c));
    assert!(
        matches!(e, KernelError::Truncated { need: 0x40, .. }),
        "{e}"
    );

    // Program headers: the first is the text PT_LOAD, the third the notes.
    let ph = phoff(true);
    let e = patched(&|k| set::<8>(k, ph + 32, 0x200)); // filesz > memsz
    assert!(corrupt_why(&e).contains("p_filesz > p_memsz"), "{e}");
    let e = patched(&|k| {
        set::<8>(k, ph + 8, 0x10_0000); // offset past the file
    });
    assert!(
        matches!(
            e,
            KernelError::Truncated {
                what: "a PT_LOAD segment",
                ..
            }
        ),
        "{e}"
    );
    let e = patched(&|k| {
        set::<8>(k, ph + 24, u64::MAX - 0x10); // paddr + memsz wraps
    });
    assert!(corrupt_why(&e).contains("wraps"), "{e}");
    let e = patched(&|k| set::<8>(k, ph + 2 * 56 + 32, 0x10_0000)); // note filesz past the file
    assert!(
        matches!(
            e,
            KernelError::Truncated {
                what: "a PT_NOTE segment",
                ..
            }
        ),
        "{e}"
    );
    let e = patched(&|k| {
        // The first note's descsz runs past its segment.
        let off = u64::from_le_bytes(k[ph + 2 * 56 + 8..ph + 2 * 56 + 16].try_into().unwrap());
        set::<4>(k, off as usize + 4, 0x1000);
    });
    assert!(corrupt_why(&e).contains("note runs past"), "{e}");
}

#[test]
fn segments_in_ram_above_4g_are_refused() {
    let (m, l) = build_memory(5 << 30, None).unwrap();
    let k = elf(
        true,
        0,
        &[
            Seg::load(0, PVH_TEXT, vec![0xf4; 0x10], 0x10),
            Seg::load(0, 1 << 32, vec![1; 0x10], 0x10),
            Seg::notes(note("Xen", 18, &PVH_TEXT.to_le_bytes())),
        ],
    );
    let e = load_kernel(&m, &l, &k, None, "", None).unwrap_err();
    assert!(
        matches!(
            e,
            KernelError::SegmentOutsideRam {
                start: 0x1_0000_0000,
                ..
            }
        ),
        "{e}"
    );
}
