//! The bzImage loader: entry state, boot_params, page tables, placement and every refusal.

use janus_accel::Reg;
use janus_accel::state::rflags;

use super::images::{BZ_INIT_SIZE, BZ_PAYLOAD, BZ_PREF, BZ_SETUP, bzimage, set};
use super::*;
use crate::loader::bzimage::{CMDLINE, GDT, PAGE_TABLES, STACK_TOP, ZERO_PAGE, bp, hdr};
use crate::loader::entry::{CODE32, CODE64, DATA};

/// Translates `va` through the 4-level page tables at `cr3` (2 MiB or 4 KiB leaves).
fn walk(mem: &GuestMemory, cr3: u64, va: u64) -> Option<u64> {
    let mut table = cr3 & !0xfff;
    for (level, shift) in [(4, 39), (3, 30), (2, 21), (1, 12)] {
        let e = rd(mem, table + ((va >> shift) & 0x1ff) * 8, 8);
        if e & 1 == 0 {
            return None;
        }
        let frame = e & 0x000f_ffff_ffff_f000;
        if level == 1 || (level < 4 && e & 0x80 != 0) {
            let mask = (1u64 << shift) - 1;
            return Some((frame & !mask) | (va & mask));
        }
        table = frame;
    }
    None
}

fn load_bz(
    k: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
) -> (GuestMemory, Result<BootInfo, KernelError>) {
    let (m, l) = guest(64);
    let r = load_kernel(&m, &l, k, initrd, cmdline, None);
    (m, r)
}

#[test]
fn enters_the_64_bit_entry_in_long_mode() {
    let k = bzimage();
    let (m, r) = load_bz(&k, None, "console=ttyS0 earlyprintk=serial");
    let b = r.unwrap();
    assert_eq!(
        b.format,
        KernelFormat::BzImage {
            protocol: 0x020f,
            entry64: true
        }
    );
    let s = &b.state;
    assert_eq!(s.mode_name(), "long64");
    assert_eq!((b.entry, s.rip), (BZ_PREF + 0x200, BZ_PREF + 0x200));
    assert_eq!(s.reg(Reg::Rsi), ZERO_PAGE);
    assert_eq!(s.reg(Reg::Rsp), STACK_TOP);
    assert_eq!(s.rflags & (rflags::IF | rflags::TF | rflags::VM), 0);
    assert_eq!(
        (s.cs.selector, s.ds.selector, s.es.selector, s.ss.selector),
        (0x10, 0x18, 0x18, 0x18)
    );
    assert!(s.cs.l && !s.cs.db && s.cs.base == 0);
    assert_eq!((s.ds.base, s.ds.limit, s.ss.limit), (0, !0, !0));
    assert_eq!((s.gdt.base, s.gdt.limit), (GDT, 31));
    assert_eq!(rd(&m, GDT + 0x10, 8), CODE64);
    assert_eq!(rd(&m, GDT + 0x18, 8), DATA);
    assert_eq!(s.cr3, PAGE_TABLES);
    // The first 4 GiB are identity-mapped.
    for va in [
        0,
        ZERO_PAGE,
        CMDLINE,
        BZ_PREF + 0x200,
        0x3fff_f000,
        0xbfff_ffff,
        0xfee0_0000,
        0xffff_ffff,
    ] {
        assert_eq!(walk(&m, s.cr3, va), Some(va), "{va:#x}");
    }
    assert_eq!(walk(&m, s.cr3, 1 << 32), None);
    // The protected-mode kernel is at pref_address.
    assert_eq!(bytes(&m, BZ_PREF, BZ_PAYLOAD), k[BZ_SETUP..]);
    assert_eq!(b.kernel, BZ_PREF..BZ_PREF + BZ_INIT_SIZE);
    assert_eq!(b.initrd, None);
}

#[test]
fn boot_params_hold_the_header_command_line_and_memory_map() {
    let k = bzimage();
    let (m, r) = load_bz(&k, None, "console=ttyS0");
    r.unwrap();
    let zp = ZERO_PAGE;
    // The setup header is copied up to its end (0x26c), not the setup code after it.
    assert_eq!(bytes(&m, zp + 0x1f1, 0x210 - 0x1f1), k[0x1f1..0x210]);
    assert_eq!(
        rd(&m, zp + hdr::HEADER as u64, 4),
        u64::from(u32::from_le_bytes(*b"HdrS"))
    );
    assert_eq!(rd(&m, zp + hdr::INIT_SIZE as u64, 4), BZ_INIT_SIZE);
    assert_eq!(rd(&m, zp + 0x26c, 8), 0);
    assert_eq!(rd(&m, zp + 0x1ef, 1), 0, "the sentinel stays 0");
    assert_eq!(rd(&m, zp + hdr::TYPE_OF_LOADER as u64, 1), 0xff);
    assert_eq!(rd(&m, zp + hdr::CMD_LINE_PTR as u64, 4), CMDLINE);
    assert_eq!(cstr(&m, CMDLINE), "console=ttyS0");
    assert_eq!(rd(&m, zp + hdr::RAMDISK_IMAGE as u64, 4), 0);
    assert_eq!(rd(&m, zp + hdr::RAMDISK_SIZE as u64, 4), 0);
    assert_eq!(rd(&m, zp + bp::EXT_MEM_K as u64, 2), 0xfc00);
    assert_eq!(rd(&m, zp + bp::ALT_MEM_K as u64, 4), 63 * 1024);
    assert_eq!(
        rd(&m, zp + bp::E820_ENTRIES as u64, 1),
        MAP_64M.len() as u64
    );
    for (i, (addr, size, typ)) in MAP_64M.iter().enumerate() {
        let e = zp + bp::E820_TABLE as u64 + i as u64 * 20;
        assert_eq!(
            (rd(&m, e, 8), rd(&m, e + 8, 8), rd(&m, e + 16, 4)),
            (*addr, *size, u64::from(*typ))
        );
    }
}

#[test]
fn initrd_goes_high_below_ram_end_and_initrd_addr_max() {
    let k = bzimage();
    let rd_bytes: Vec<u8> = (0..0x2345u32).map(|i| (i * 7) as u8).collect();
    let (m, r) = load_bz(&k, Some(&rd_bytes), "");
    let b = r.unwrap();
    let start = ((64 << 20) - 0x2345) & !0xfff;
    assert_eq!(b.initrd, Some(start..start + 0x2345));
    assert_eq!(rd(&m, ZERO_PAGE + hdr::RAMDISK_IMAGE as u64, 4), start);
    assert_eq!(rd(&m, ZERO_PAGE + hdr::RAMDISK_SIZE as u64, 4), 0x2345);
    assert_eq!(bytes(&m, start, rd_bytes.len()), rd_bytes);

    let mut k = bzimage();
    set::<4>(&mut k, hdr::INITRD_ADDR_MAX, 0x1ff_ffff);
    let (_, r) = load_bz(&k, Some(&rd_bytes), "");
    let r = r.unwrap().initrd.unwrap();
    assert_eq!(r.start, (0x200_0000 - 0x2345) & !0xfff);
    assert!(r.end <= 0x200_0000);
}

#[test]
fn initrd_that_does_not_fit_is_refused_and_nothing_is_written() {
    let k = bzimage();
    let big = vec![1u8; 48 << 20];
    let (m, r) = load_bz(&k, Some(&big), "");
    assert_eq!(
        r,
        Err(KernelError::InitrdTooLarge {
            size: 48 << 20,
            start: BZ_PREF + BZ_INIT_SIZE,
            limit: 64 << 20,
            why: "the end of RAM below 4 GiB",
        })
    );
    assert_eq!(
        rd(&m, BZ_PREF, 8),
        0,
        "a refused kernel leaves memory untouched"
    );
    assert_eq!(rd(&m, ZERO_PAGE + 0x202, 4), 0);

    let mut k = bzimage();
    set::<4>(&mut k, hdr::INITRD_ADDR_MAX, 0x18f_ffff);
    let (_, r) = load_bz(&k, Some(&[0u8; 0x20_0000]), "");
    assert!(
        matches!(r, Err(KernelError::InitrdTooLarge { limit: 0x190_0000, why, .. }) if why.contains("initrd_addr_max")),
        "{r:?}"
    );
}

#[test]
fn a_kernel_without_xlf_kernel_64_is_entered_at_the_32_bit_entry() {
    let mut k = bzimage();
    set::<2>(&mut k, hdr::XLOADFLAGS, 0);
    let (m, r) = load_bz(&k, None, "");
    let b = r.unwrap();
    let s = &b.state;
    assert_eq!(s.mode_name(), "prot32");
    assert_eq!(s.rip, BZ_PREF);
    assert_eq!(
        (s.cs.selector, s.ds.selector, s.ss.selector),
        (0x10, 0x18, 0x18)
    );
    assert!(s.cs.db && !s.cs.l);
    assert_eq!(rd(&m, GDT + 0x10, 8), CODE32);
    assert_eq!(
        (
            s.reg(Reg::Rsi),
            s.reg(Reg::Rbx),
            s.reg(Reg::Rbp),
            s.reg(Reg::Rdi)
        ),
        (ZERO_PAGE, 0, 0, 0)
    );
    assert_eq!(s.cr0 & janus_accel::state::bits::CR0_PG, 0);
    assert_eq!(
        b.format,
        KernelFormat::BzImage {
            protocol: 0x020f,
            entry64: false
        }
    );
}

#[test]
fn protocol_2_09_loads_at_1_mib_with_the_32_bit_entry() {
    let mut k = bzimage();
    set::<2>(&mut k, hdr::VERSION, 0x0209);
    // Relocatable: 1 MiB rounded up to kernel_alignment.
    let (_, r) = load_bz(&k, None, "");
    assert_eq!(r.unwrap().kernel.start, 0x20_0000);
    k[hdr::RELOCATABLE_KERNEL] = 0;
    let (m, r) = load_bz(&k, None, "");
    let b = r.unwrap();
    assert_eq!(b.kernel, 0x10_0000..0x10_0000 + BZ_PAYLOAD as u64);
    assert_eq!(b.state.rip, 0x10_0000);
    assert_eq!(rd(&m, 0x10_0000, 1), 0xf4);
    assert_eq!(rd(&m, ZERO_PAGE + hdr::CODE32_START as u64, 4), 0x10_0000);
}

#[test]
fn a_low_pref_address_is_moved_up_only_when_relocatable() {
    let mut k = bzimage();
    set::<8>(&mut k, hdr::PREF_ADDRESS, 0x8_0000);
    let (_, r) = load_bz(&k, None, "");
    assert_eq!(
        r.unwrap().kernel.start,
        0x20_0000,
        "1 MiB aligned up to 2 MiB"
    );
    k[hdr::RELOCATABLE_KERNEL] = 0;
    let (_, r) = load_bz(&k, None, "");
    assert!(
        matches!(r, Err(KernelError::NotRelocatable { addr: 0x8_0000, .. })),
        "{r:?}"
    );
}

#[test]
fn header_problems_each_have_their_error() {
    let check = |patch: &dyn Fn(&mut Vec<u8>), want: &dyn Fn(&KernelError) -> bool| {
        let mut k = bzimage();
        patch(&mut k);
        let (_, r) = load_bz(&k, None, "");
        let e = r.unwrap_err();
        assert!(want(&e), "{e:?}: {e}");
    };
    check(&|k| set::<2>(k, hdr::VERSION, 0x0205), &|e| {
        *e == KernelError::ProtocolTooOld { version: 0x0205 }
    });
    check(&|k| k.truncate(0x800), &|e| {
        matches!(
            e,
            KernelError::Truncated {
                need: 0xa01,
                have: 0x800,
                ..
            }
        )
    });
    check(
        &|k| k.truncate(BZ_SETUP + 0x800),
        &|e| matches!(e, KernelError::Truncated { what, .. } if what.contains("syssize")),
    );
    check(&|k| k.truncate(0x207), &|e| {
        matches!(e, KernelError::Truncated { .. })
    });
    check(
        &|k| set::<2>(k, hdr::BOOT_FLAG, 0x1234),
        &|e| matches!(e, KernelError::Corrupt { why, .. } if why.contains("boot_flag")),
    );
    check(&|k| k[hdr::LOADFLAGS] = 0, &|e| *e == KernelError::ZImage);
    check(
        &|k| set::<4>(k, hdr::KERNEL_ALIGNMENT, 0x30_0000),
        &|e| matches!(e, KernelError::Corrupt { why, .. } if why.contains("kernel_alignment")),
    );
    check(
        &|k| set::<4>(k, hdr::INIT_SIZE, 0),
        &|e| matches!(e, KernelError::Corrupt { why, .. } if why.contains("init_size")),
    );
    check(
        &|k| k[hdr::JUMP + 1] = 0x20,
        &|e| matches!(e, KernelError::Corrupt { why, .. } if why.contains("shorter")),
    );
    check(&|k| set::<4>(k, hdr::INIT_SIZE, 0x400_0000), &|e| {
        *e == KernelError::KernelTooLarge {
            start: BZ_PREF,
            end: BZ_PREF + 0x400_0000,
            ram_end: 64 << 20,
        }
    });
}

#[test]
fn command_line_length_follows_cmdline_size() {
    let mut k = bzimage();
    set::<4>(&mut k, hdr::CMDLINE_SIZE, 10);
    let (m, r) = load_bz(&k, None, "0123456789");
    r.unwrap();
    assert_eq!(cstr(&m, CMDLINE), "0123456789");
    let (_, r) = load_bz(&k, None, "0123456789a");
    assert_eq!(r, Err(KernelError::CmdlineTooLong { len: 11, max: 10 }));
}

#[test]
fn a_large_guest_gets_ram_above_4g_in_e820_and_initrd_below_initrd_addr_max() {
    let (m, l) = build_memory(5 << 30, None).unwrap();
    let b = load_kernel(&m, &l, &bzimage(), Some(&[7; 100]), "", None).unwrap();
    assert_eq!(b.initrd, Some(0x7fff_f000..0x7fff_f064));
    assert_eq!(rd(&m, ZERO_PAGE + bp::E820_ENTRIES as u64, 1), 7);
    let e = ZERO_PAGE + bp::E820_TABLE as u64 + 6 * 20;
    assert_eq!(
        (rd(&m, e, 8), rd(&m, e + 8, 8), rd(&m, e + 16, 4)),
        (1 << 32, (5 << 30) - 0xc000_0000, 1)
    );
    let e = ZERO_PAGE + bp::E820_TABLE as u64 + 2 * 20;
    assert_eq!(rd(&m, e + 8, 8), 0xc000_0000 - 0x10_0000);
}

#[test]
fn loads_beside_a_bios() {
    let (m, l) = build_memory(64 << 20, Some(64 << 10)).unwrap();
    let b = load_kernel(&m, &l, &bzimage(), Some(&[1; 10]), "", None).unwrap();
    assert_eq!(b.kernel.start, BZ_PREF);
}

#[test]
fn a_pref_address_above_4g_is_refused_even_with_ram_there() {
    let (m, l) = build_memory(8 << 30, None).unwrap();
    let mut k = bzimage();
    set::<8>(&mut k, hdr::PREF_ADDRESS, 5 << 30);
    let e = load_kernel(&m, &l, &k, None, "", None).unwrap_err();
    assert!(
        matches!(
            e,
            KernelError::KernelTooLarge {
                start: 0x1_4000_0000,
                ..
            }
        ),
        "{e}"
    );
}
