//! No byte sequence makes a loader panic: random bytes (with and without planted magic numbers),
//! every truncation of each synthetic image, and random corruption of their headers. Seeded,
//! so a failure reproduces.

use super::images::{bzimage, mb_header, multiboot_aout, multiboot_elf, pvh_elf};
use super::*;

/// Loads `k` (with a small initrd and command line) and checks what a successful load promises.
fn try_load(m: &GuestMemory, l: &Layout, k: &[u8]) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        load_kernel(m, l, k, Some(&[0x42; 33]), "fuzz", None)
    }));
    let r = match r {
        Ok(r) => r,
        Err(_) => panic!(
            "loader panicked on {} bytes: {:02x?}",
            k.len(),
            &k[..k.len().min(64)]
        ),
    };
    if let Ok(b) = r {
        assert!(b.kernel.end <= l.low_ram, "{b}");
        if !matches!(b.format, KernelFormat::BzImage { .. }) {
            assert!(b.kernel.contains(&b.entry), "{b}");
        }
        let rd = b.initrd.clone().expect("the initrd was placed");
        assert!(
            rd.end <= b.kernel.start || rd.start >= b.kernel.end,
            "initrd overlaps: {b}"
        );
    }
}

#[test]
fn random_bytes_never_panic() {
    let (m, l) = guest(32);
    let mut rng = fastrand::Rng::with_seed(7);
    for i in 0..3000 {
        let len = rng.usize(0..0x3000);
        let mut k: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        // Plant a magic number a third of the time each, so parsing gets past detection.
        match i % 4 {
            0 if len >= 0x206 => k[0x202..0x206].copy_from_slice(b"HdrS"),
            1 if len >= 4 => k[..4].copy_from_slice(b"\x7fELF"),
            2 if len >= 0x40 => {
                let at = rng.usize(0..(len.min(8192) - 12) / 4) * 4;
                let flags = rng.u32(..) & 0x1_0007;
                k[at..at + 12].copy_from_slice(&mb_header(flags));
            }
            _ => {}
        }
        try_load(&m, &l, &k);
    }
}

#[test]
fn every_truncation_of_every_image_is_refused_cleanly() {
    let (m, l) = guest(32);
    for image in [
        bzimage(),
        pvh_elf(true),
        pvh_elf(false),
        multiboot_elf(),
        multiboot_aout(),
    ] {
        for len in 0..image.len() {
            try_load(&m, &l, &image[..len]);
        }
    }
}

#[test]
fn corrupted_headers_never_panic() {
    let (m, l) = guest(32);
    let mut rng = fastrand::Rng::with_seed(11);
    for image in [
        bzimage(),
        pvh_elf(true),
        pvh_elf(false),
        multiboot_elf(),
        multiboot_aout(),
    ] {
        for _ in 0..1500 {
            let mut k = image.clone();
            for _ in 0..rng.usize(1..4) {
                if k.is_empty() {
                    break;
                }
                // Headers live in the first 0x300 bytes of every synthetic image.
                let at = rng.usize(0..k.len().min(0x300));
                match rng.u8(0..4) {
                    0 => k[at] = rng.u8(..),
                    1 => k[at] ^= 1 << rng.u8(0..8),
                    // Extreme values in a whole field.
                    2 => {
                        let v = [0u64, u64::MAX, 1 << 31, 1 << 32, 0xffff_fff0][rng.usize(0..5)];
                        let end = (at + 8).min(k.len());
                        k[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
                    }
                    _ => k.truncate(rng.usize(0..k.len())),
                }
            }
            try_load(&m, &l, &k);
        }
    }
}
