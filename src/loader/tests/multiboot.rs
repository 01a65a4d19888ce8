//! The multiboot loader: a.out kludge and ELF, multiboot_info in guest memory, the entry state
//! and every refusal.

use janus_accel::Reg;
use janus_accel::state::{bits, rflags};

use super::images::{
    MB_AOUT_BSS_END, MB_AOUT_ENTRY, MB_AOUT_HEADER, MB_AOUT_LEN, MB_AOUT_LOAD, MB_ELF_PADDR,
    MB_ELF_VADDR, Seg, elf, mb_header, multiboot_aout, multiboot_elf, set,
};
use super::*;
use crate::loader::multiboot::{BOOTLOADER_MAGIC, FLAG_AOUT_KLUDGE, INFO, MMAP};

/// Checks the entry state and returns the multiboot_info address.
fn check_entry(b: &BootInfo, entry: u64) -> u64 {
    let s = &b.state;
    assert_eq!(s.mode_name(), "prot32");
    assert_eq!((b.entry, s.rip), (entry, entry));
    assert_eq!(s.reg(Reg::Rax), u64::from(BOOTLOADER_MAGIC));
    assert_eq!(s.reg(Reg::Rbx), b.info_addr);
    assert_eq!(s.cr0 & (bits::CR0_PE | bits::CR0_PG), bits::CR0_PE);
    assert_eq!(s.rflags & (rflags::IF | rflags::VM), 0);
    assert_eq!(
        (s.cs.base, s.cs.limit, s.ss.base, s.ss.limit),
        (0, !0, 0, !0)
    );
    assert!(s.cs.db && s.ds.db && !s.cs.l);
    b.info_addr
}

#[test]
fn aout_kludge_image_gets_full_multiboot_info() {
    let (m, l) = guest(64);
    m.write(MB_AOUT_LOAD + MB_AOUT_LEN as u64, &[0xee; 0x3000])
        .unwrap();
    let initrd = b"JANUSMOD and more".repeat(300);
    let k = multiboot_aout();
    let b = load_kernel(
        &m,
        &l,
        &k,
        Some(&initrd),
        "/kernel janus-multiboot-test",
        None,
    )
    .unwrap();
    assert_eq!(b.format, KernelFormat::Multiboot { elf: false });
    let mbi = check_entry(&b, MB_AOUT_ENTRY);
    assert_eq!(mbi, 0x1000 + INFO as u64);
    assert_eq!(b.kernel, MB_AOUT_LOAD..MB_AOUT_BSS_END);
    // Image and zeroed bss.
    assert_eq!(bytes(&m, MB_AOUT_LOAD, MB_AOUT_LEN), k);
    assert!(
        bytes(&m, MB_AOUT_LOAD + MB_AOUT_LEN as u64, 0x3000 - MB_AOUT_LEN)
            .iter()
            .all(|&b| b == 0)
    );

    let flags = rd(&m, mbi, 4);
    assert_eq!(flags, 1 | 1 << 2 | 1 << 3 | 1 << 6 | 1 << 9);
    assert_eq!((rd(&m, mbi + 4, 4), rd(&m, mbi + 8, 4)), (639, 63 * 1024));
    assert_eq!(
        cstr(&m, rd(&m, mbi + 16, 4)),
        "/kernel janus-multiboot-test"
    );
    assert_eq!(rd(&m, mbi + 16, 4), b.cmdline_addr);
    assert_eq!(cstr(&m, rd(&m, mbi + 64, 4)), "janus");
    // One module: page aligned, right after the kernel's bss.
    assert_eq!(rd(&m, mbi + 20, 4), 1);
    let md = rd(&m, mbi + 24, 4);
    let (start, end) = (rd(&m, md, 4), rd(&m, md + 4, 4));
    assert_eq!(
        (start, end),
        (MB_AOUT_BSS_END, MB_AOUT_BSS_END + initrd.len() as u64)
    );
    assert_eq!(b.initrd, Some(start..end));
    assert_eq!(bytes(&m, start, initrd.len()), initrd);
    assert_eq!(cstr(&m, rd(&m, md + 8, 4)), "initrd");
    assert_eq!(rd(&m, md + 12, 4), 0);
    // The memory map: size-prefixed entries.
    assert_eq!(rd(&m, mbi + 44, 4), MAP_64M.len() as u64 * 24);
    let mmap = rd(&m, mbi + 48, 4);
    assert_eq!(mmap, mbi - INFO as u64 + MMAP as u64);
    for (i, (addr, size, typ)) in MAP_64M.iter().enumerate() {
        let e = mmap + i as u64 * 24;
        assert_eq!(
            (
                rd(&m, e, 4),
                rd(&m, e + 4, 8),
                rd(&m, e + 12, 8),
                rd(&m, e + 20, 4)
            ),
            (20, *addr, *size, u64::from(*typ))
        );
    }
}

#[test]
fn elf_image_loads_at_physical_addresses_with_the_entry_translated() {
    let (m, l) = guest(64);
    let b = load_kernel(&m, &l, &multiboot_elf(), None, "", None).unwrap();
    assert_eq!(b.format, KernelFormat::Multiboot { elf: true });
    let mbi = check_entry(&b, MB_ELF_PADDR + 0x20);
    assert_eq!(rd(&m, MB_ELF_PADDR, 4), 0x1bad_b002);
    assert_eq!(rd(&m, MB_ELF_PADDR + 0x20, 1), 0xf4);
    assert_eq!(b.kernel, MB_ELF_PADDR..MB_ELF_PADDR + 0x1100);
    // No initrd: the mods flag is set with no modules.
    assert_eq!(rd(&m, mbi, 4) & (1 << 3), 1 << 3);
    assert_eq!(rd(&m, mbi + 20, 4), 0);
    assert_eq!(b.initrd, None);
    assert_eq!(cstr(&m, rd(&m, mbi + 16, 4)), "");
}

#[test]
fn an_elf_entry_outside_its_segments_is_physical() {
    let (m, l) = guest(64);
    let mut text = mb_header(0x3);
    text.resize(0x100, 0xf4);
    // Entry given as a physical address (vaddr == paddr + 3 GiB, entry not inside it).
    let k = elf(
        false,
        MB_ELF_PADDR + 0x40,
        &[Seg::load(MB_ELF_VADDR, MB_ELF_PADDR, text, 0x100)],
    );
    let b = load_kernel(&m, &l, &k, None, "", None).unwrap();
    assert_eq!(b.entry, MB_ELF_PADDR + 0x40);
}

#[test]
fn a_low_kernel_keeps_its_addresses_and_the_info_goes_around_it() {
    // Like test-roms/multiboot.bin: loaded at 0x7c00.
    let (m, l) = guest(64);
    let mut k = vec![0x90u8; 0x1000];
    let mut h = mb_header(FLAG_AOUT_KLUDGE | 0x3);
    for v in [0x7c10u32, 0x7c00, 0, 0, 0x7c40] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    k[0x10..0x10 + h.len()].copy_from_slice(&h);
    let b = load_kernel(&m, &l, &k, Some(&[1; 10]), "", None).unwrap();
    assert_eq!(b.kernel, 0x7c00..0x8c00);
    assert_eq!(b.info_addr, 0x1000 + INFO as u64);
    assert_eq!(
        b.initrd,
        Some(0x10_0000..0x10_000a),
        "module in the lowest free RAM from 1 MiB"
    );
    // A kernel covering 0x1000-0xa000 pushes the info above it.
    let mut big = vec![0x90u8; 0x9000];
    let mut h = mb_header(FLAG_AOUT_KLUDGE | 0x3);
    for v in [0x1010u32, 0x1000, 0, 0, 0x1040] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    big[0x10..0x10 + h.len()].copy_from_slice(&h);
    let b = load_kernel(&m, &l, &big, None, "", None).unwrap();
    assert_eq!(b.info_addr, 0xa000 + INFO as u64);
}

fn refusal(k: &[u8]) -> KernelError {
    let (m, l) = guest(64);
    load_kernel(&m, &l, k, None, "", None).unwrap_err()
}

fn why(e: &KernelError) -> &'static str {
    match e {
        KernelError::Corrupt { why, .. }
        | KernelError::Unsupported { why, .. }
        | KernelError::Truncated { what: why, .. } => why,
        _ => "",
    }
}

/// The a.out test image with field `i` (0 = header_addr .. 4 = entry_addr) set to `v`.
fn aout_with(i: usize, v: u64) -> Vec<u8> {
    let mut k = multiboot_aout();
    set::<4>(&mut k, MB_AOUT_HEADER + 12 + 4 * i, v);
    k
}

#[test]
fn header_problems_each_have_their_error() {
    let mut k = multiboot_aout();
    k[MB_AOUT_HEADER + 8] ^= 1;
    assert!(why(&refusal(&k)).contains("checksum"));

    let mut k = multiboot_aout();
    k[MB_AOUT_HEADER..MB_AOUT_HEADER + 12]
        .copy_from_slice(&mb_header(FLAG_AOUT_KLUDGE | 0x3 | 1 << 5));
    assert!(why(&refusal(&k)).contains("flag bits 3-15"));

    let mut k = vec![0u8; 0x100];
    k[0x20..0x2c].copy_from_slice(&mb_header(0x3));
    assert!(why(&refusal(&k)).contains("not an ELF file"));

    let mut k = vec![0u8; 0x30];
    k[0x20..0x2c].copy_from_slice(&mb_header(FLAG_AOUT_KLUDGE));
    assert!(matches!(
        refusal(&k),
        KernelError::Truncated {
            need: 0x40,
            have: 0x30,
            ..
        }
    ));

    assert!(why(&refusal(&aout_with(1, MB_AOUT_LOAD + 0x1000))).contains("load_addr is above"));
    assert!(
        why(&refusal(&aout_with(1, MB_AOUT_LOAD - 0x1000)))
            .contains("larger than the header's file offset")
    );
    assert!(why(&refusal(&aout_with(2, MB_AOUT_LOAD - 1))).contains("load_end_addr is below"));
    assert!(why(&refusal(&aout_with(2, MB_AOUT_LOAD + 0x1000))).contains("load_end_addr"));
    assert!(why(&refusal(&aout_with(3, MB_AOUT_LOAD + 0x10))).contains("bss_end_addr"));
    assert!(why(&refusal(&aout_with(4, MB_AOUT_BSS_END))).contains("entry_addr is outside"));
    let mut k = aout_with(2, MB_AOUT_LOAD);
    set::<4>(&mut k, MB_AOUT_HEADER + 24, 0);
    assert!(why(&refusal(&k)).contains("load nothing"));

    // Where the image would go.
    let k = {
        let mut k = multiboot_aout();
        let base = 0xd000_0000u64;
        for (i, v) in [base + 0x40, base, 0, 0, base + 0x100]
            .into_iter()
            .enumerate()
        {
            set::<4>(&mut k, MB_AOUT_HEADER + 12 + 4 * i, v);
        }
        k
    };
    assert!(matches!(refusal(&k), KernelError::SegmentOutsideRam { .. }));
    assert_eq!(
        refusal(&aout_with(3, 0x500_0000)),
        KernelError::KernelTooLarge {
            start: MB_AOUT_LOAD,
            end: 0x500_0000,
            ram_end: 64 << 20
        }
    );

    // ELF entry outside every segment.
    let mut text = mb_header(0x3);
    text.resize(0x100, 0xf4);
    let k = elf(
        false,
        0x30_0000,
        &[Seg::load(MB_ELF_PADDR, MB_ELF_PADDR, text, 0x100)],
    );
    assert!(why(&refusal(&k)).contains("entry point is outside"));
}

#[test]
fn an_initrd_that_does_not_fit_is_refused() {
    let (m, l) = guest(4);
    let e = load_kernel(&m, &l, &multiboot_aout(), Some(&vec![0; 3 << 20]), "", None).unwrap_err();
    assert!(
        matches!(
            e,
            KernelError::InitrdTooLarge {
                size: 0x30_0000,
                limit: 0x40_0000,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn multiboot_command_line_starts_with_the_kernel_path() {
    let (aout, elf) = (multiboot_aout(), multiboot_elf());
    assert_eq!(
        boot_cmdline(&aout, "/boot/kernel", "quiet a=b"),
        "/boot/kernel quiet a=b"
    );
    assert_eq!(boot_cmdline(&elf, "k.elf", ""), "k.elf");
    // A Linux kernel gets --append alone.
    let mut bz = vec![0u8; 0x400];
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    assert_eq!(
        boot_cmdline(&bz, "vmlinuz", "console=ttyS0"),
        "console=ttyS0"
    );
}
