//! The transports driven as a guest driver drives them, with virtio-rng behind them.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::queue::tests::{AVAIL, DESC, USED, desc, mem, offer};
use super::*;
use crate::bus::BusDevice;
use crate::pci::{MsiSink, PciFunction, PciInterrupts};

/// Waits until the device ring's index reaches `n`.
fn wait_used(m: &GuestMemory, n: u64) {
    let t = Instant::now();
    while m.read_le(USED + 2, 2).unwrap() < n {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the device never answered"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn wait<F: FnMut() -> bool>(mut f: F) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(5), "timed out");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[derive(Default)]
struct Msis(Mutex<Vec<(u64, u32)>>);
impl MsiSink for Msis {
    fn send(&self, address: u64, data: u32) {
        self.0.lock().unwrap().push((address, data));
    }
}

#[derive(Default)]
struct Line(AtomicU32);
impl crate::devices::IrqLine for Line {
    fn set_level(&self, high: bool) {
        self.0.store(u32::from(high), Ordering::SeqCst);
    }
}

fn w32(f: &mut pci::VirtioPci, off: u64, v: u32) {
    f.bar_write(0, 0, off, &v.to_le_bytes());
}
fn w16(f: &mut pci::VirtioPci, off: u64, v: u16) {
    f.bar_write(0, 0, off, &v.to_le_bytes());
}
fn r32(f: &mut pci::VirtioPci, off: u64) -> u32 {
    let mut b = [0u8; 4];
    f.bar_read(0, 0, off, &mut b);
    u32::from_le_bytes(b)
}

/// Negotiates, places queue 0 at DESC/AVAIL/USED with `size` entries and starts the device.
fn start_pci(f: &mut pci::VirtioPci, size: u16, vector: u16) {
    f.bar_write(0, 0, 0x14, &[status::ACKNOWLEDGE | status::DRIVER]);
    w32(f, 0x00, 1);
    assert_eq!(r32(f, 0x04) & 1, 1, "VERSION_1 offered");
    w32(f, 0x08, 1);
    w32(f, 0x0c, 1);
    f.bar_write(
        0,
        0,
        0x14,
        &[status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK],
    );
    let mut s = [0u8];
    f.bar_read(0, 0, 0x14, &mut s);
    assert_ne!(s[0] & status::FEATURES_OK, 0, "features accepted");
    w16(f, 0x16, 0);
    w16(f, 0x18, size);
    w16(f, 0x1a, vector);
    for (at, v) in [(0x20, DESC), (0x28, AVAIL), (0x30, USED)] {
        w32(f, at, v as u32);
        w32(f, at + 4, 0);
    }
    w16(f, 0x1c, 1);
    f.bar_write(
        0,
        0,
        0x14,
        &[status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK],
    );
}

#[test]
fn pci_rng_fills_a_buffer_and_interrupts_by_intx_then_msix() {
    let m = mem();
    let mut f = pci::VirtioPci::new(Box::new(rng::Rng::default()), m.clone()).unwrap();
    let mut id = [0u8; 4];
    f.config_read(0, &mut id);
    assert_eq!(u32::from_le_bytes(id), 0x1044_1af4);
    let line = Arc::new(Line::default());
    let msis = Arc::new(Msis::default());
    f.set_interrupts(PciInterrupts::new(
        1,
        Some(crate::pci::SharedIntx::new(line.clone())),
        Some(msis.clone()),
    ));
    // Bus mastering on.
    f.config_write(4, &0x6u16.to_le_bytes());
    assert_eq!(r32(&mut f, 0x12) & 0xffff, 1, "one queue");
    start_pci(&mut f, 8, NO_VECTOR);
    desc(&m, DESC, 0, 0x8000, 32, queue::DESC_F_WRITE, 0);
    offer(&m, 8, &[0]);
    w16(&mut f, pci::NOTIFY, 0);
    wait_used(&m, 1);
    assert_eq!(m.read_le(USED + 8, 4).unwrap(), 32);
    let mut b = [0u8; 32];
    m.read(0x8000, &mut b).unwrap();
    assert_ne!(b, [0; 32], "random bytes");
    // INTx until the ISR is read.
    wait(|| line.0.load(Ordering::SeqCst) == 1);
    let mut isr = [0u8];
    f.bar_read(0, 0, pci::ISR, &mut isr);
    assert_eq!(isr[0], 1);
    assert_eq!(line.0.load(Ordering::SeqCst), 0);
    // Reset; then MSI-X: enable it, program vector 0 and use it for the queue.
    f.bar_write(0, 0, 0x14, &[0]);
    assert_eq!(r32(&mut f, 0x14) & 0xff, 0);
    m.write(USED, &[0; 16]).unwrap();
    m.write(AVAIL, &[0; 16]).unwrap();
    f.config_write(0x42, &0x8000u16.to_le_bytes());
    let t = u64::from(pci::MSIX_TABLE);
    w32(&mut f, t, 0xfee0_0000);
    w32(&mut f, t + 8, 0x45);
    w32(&mut f, t + 12, 0);
    start_pci(&mut f, 8, 0);
    offer(&m, 8, &[0]);
    w16(&mut f, pci::NOTIFY, 0);
    wait_used(&m, 1);
    wait(|| !msis.0.lock().unwrap().is_empty());
    assert_eq!(msis.0.lock().unwrap()[0], (0xfee0_0000, 0x45));
}

#[test]
fn a_broken_ring_sets_needs_reset_and_a_reset_clears_it() {
    let m = mem();
    let mut f = pci::VirtioPci::new(Box::new(rng::Rng::default()), m.clone()).unwrap();
    f.config_write(4, &0x6u16.to_le_bytes());
    start_pci(&mut f, 8, NO_VECTOR);
    // The driver index jumps far ahead.
    m.write_le(AVAIL + 2, 2, 300).unwrap();
    w16(&mut f, pci::NOTIFY, 0);
    wait(|| r32(&mut f, 0x14) & u32::from(status::DEVICE_NEEDS_RESET) != 0);
    let mut isr = [0u8];
    f.bar_read(0, 0, pci::ISR, &mut isr);
    assert_eq!(isr[0], 2, "a configuration-change interrupt");
    f.bar_write(0, 0, 0x14, &[0]);
    assert_eq!(r32(&mut f, 0x14) & 0xff, 0);
    // A queue size that is not a power of two breaks it at DRIVER_OK.
    m.write_le(AVAIL + 2, 2, 0).unwrap();
    start_pci(&mut f, 6, NO_VECTOR);
    wait(|| r32(&mut f, 0x14) & u32::from(status::DEVICE_NEEDS_RESET) != 0);
}

#[test]
fn features_not_offered_are_refused() {
    let m = mem();
    let mut f = pci::VirtioPci::new(Box::new(rng::Rng::default()), m).unwrap();
    // No VERSION_1: FEATURES_OK does not stick.
    f.bar_write(
        0,
        0,
        0x14,
        &[status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK],
    );
    assert_eq!(r32(&mut f, 0x14) as u8 & status::FEATURES_OK, 0);
    // An unknown bit with VERSION_1.
    w32(&mut f, 0x08, 1);
    w32(&mut f, 0x0c, 1);
    w32(&mut f, 0x08, 0);
    w32(&mut f, 0x0c, 1 << 5);
    f.bar_write(0, 0, 0x14, &[status::FEATURES_OK]);
    assert_eq!(r32(&mut f, 0x14) as u8 & status::FEATURES_OK, 0);
}

#[test]
fn mmio_rng_works_through_its_window() {
    let m = mem();
    let line = Arc::new(Line::default());
    let mut d =
        mmio::VirtioMmio::new(Box::new(rng::Rng::default()), m.clone(), line.clone()).unwrap();
    let rd = |d: &mut mmio::VirtioMmio, off: u64| {
        let mut b = [0u8; 4];
        d.read(0, off, &mut b);
        u32::from_le_bytes(b)
    };
    let wr = |d: &mut mmio::VirtioMmio, off: u64, v: u32| d.write(0, off, &v.to_le_bytes());
    assert_eq!(rd(&mut d, 0), 0x7472_6976);
    assert_eq!((rd(&mut d, 4), rd(&mut d, 8)), (2, id::RNG));
    wr(&mut d, 0x70, 3);
    wr(&mut d, 0x24, 1);
    wr(&mut d, 0x20, 1);
    wr(&mut d, 0x70, 11);
    assert_eq!(rd(&mut d, 0x70), 11);
    wr(&mut d, 0x30, 0);
    assert_eq!(rd(&mut d, 0x34), 64);
    wr(&mut d, 0x38, 8);
    for (at, v) in [(0x80, DESC), (0x90, AVAIL), (0xa0, USED)] {
        wr(&mut d, at, v as u32);
    }
    wr(&mut d, 0x44, 1);
    wr(&mut d, 0x70, 15);
    desc(&m, DESC, 0, 0x8000, 16, queue::DESC_F_WRITE, 0);
    offer(&m, 8, &[0]);
    wr(&mut d, 0x50, 0);
    wait_used(&m, 1);
    wait(|| line.0.load(Ordering::SeqCst) == 1);
    assert_eq!(rd(&mut d, 0x60), 1);
    wr(&mut d, 0x64, 1);
    assert_eq!(line.0.load(Ordering::SeqCst), 0);
    assert_eq!(
        mmio::VirtioMmio::cmdline(0xc010_0000, 5),
        "virtio_mmio.device=4K@0xc0100000:5"
    );
}
