//! virtio-net driven as a driver drives it, through the transport's registers, over a fake
//! backend: transmit (with checksum completion), receive into one buffer, and a large frame
//! merged over several receive buffers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use janus_accel::{GuestMemory, RegionKind};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::*;
use crate::net::NetError;
use crate::virtio::{Interrupt, Transport, status};

const RXQ: (u64, u64, u64) = (0x1000, 0x2000, 0x3000);
const TXQ: (u64, u64, u64) = (0x4000, 0x5000, 0x6000);
const SIZE: u16 = 8;
const F_WRITE: u16 = 2;
const F_NEXT: u16 = 1;

/// Frames in both directions, with an eventfd that is readable while frames wait for the guest.
#[derive(Debug, Clone)]
struct Fake {
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
    inbox: Arc<Mutex<std::collections::VecDeque<Vec<u8>>>>,
    ready: Arc<EventFd>,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            sent: Arc::default(),
            inbox: Arc::default(),
            ready: Arc::new(EventFd::new(EFD_NONBLOCK).unwrap()),
        }
    }
    fn inject(&self, frame: Vec<u8>) {
        self.inbox.lock().unwrap().push_back(frame);
        self.ready.write(1).unwrap();
    }
}

impl NetBackend for Fake {
    fn send(&mut self, frame: &[u8]) -> Result<(), NetError> {
        self.sent.lock().unwrap().push(frame.to_vec());
        Ok(())
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NetError> {
        let mut inbox = self.inbox.lock().unwrap();
        let Some(f) = inbox.pop_front() else {
            let _ = self.ready.read();
            return Ok(None);
        };
        buf[..f.len()].copy_from_slice(&f);
        Ok(Some(f.len()))
    }
    fn fd(&self) -> RawFd {
        self.ready.as_raw_fd()
    }
    fn label(&self) -> &str {
        "fake"
    }
}

struct NoIrq;
impl Interrupt for NoIrq {
    fn queue(&self, _vector: u16) {}
    fn config(&self) {}
}

fn desc(m: &GuestMemory, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let at = table + 16 * u64::from(i);
    m.write_le(at, 8, addr).unwrap();
    m.write_le(at + 8, 4, len.into()).unwrap();
    m.write_le(at + 12, 2, flags.into()).unwrap();
    m.write_le(at + 14, 2, next.into()).unwrap();
}

fn offer(m: &GuestMemory, avail: u64, head: u16) {
    let idx = m.read_le(avail + 2, 2).unwrap() as u16;
    m.write_le(avail + 4 + 2 * u64::from(idx % SIZE), 2, head.into())
        .unwrap();
    m.write_le(avail + 2, 2, idx.wrapping_add(1).into())
        .unwrap();
}

fn wait(mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(5), "timed out");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A running card with `features` negotiated, both queues placed.
fn start(features: u64) -> (Transport, GuestMemory, Fake) {
    let mut m = GuestMemory::new();
    m.add(0, 0x10_0000, RegionKind::Ram).unwrap();
    let fake = Fake::new();
    let net = Net::new("t", [0x52, 0x54, 0, 1, 2, 3], Box::new(fake.clone()));
    assert_eq!(net.config()[..6], [0x52, 0x54, 0, 1, 2, 3]);
    let mut t = Transport::new(Box::new(net), m.clone(), Arc::new(NoIrq)).unwrap();
    t.set_status(status::ACKNOWLEDGE | status::DRIVER);
    let f = features | crate::virtio::F_VERSION_1;
    t.driver_feature_sel = 0;
    t.set_driver_features_word(f as u32);
    t.driver_feature_sel = 1;
    t.set_driver_features_word((f >> 32) as u32);
    t.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
    for (i, (d, a, u)) in [RXQ, TXQ].into_iter().enumerate() {
        t.queue_sel = i as u16;
        let q = t.queue_mut().unwrap();
        (q.size, q.desc, q.avail, q.used, q.ready) = (SIZE, d, a, u, true);
    }
    t.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK);
    assert_eq!(t.status() & status::DEVICE_NEEDS_RESET, 0);
    (t, m, fake)
}

fn used_idx(m: &GuestMemory, used: u64) -> u64 {
    m.read_le(used + 2, 2).unwrap()
}

#[test]
fn transmit_completes_the_checksum_and_sends_the_frame() {
    let (t, m, fake) = start(features::CSUM);
    // A header asking for the checksum over bytes 14.. stored at 14+6, then a 20-byte frame
    // whose checksum field holds 0 as the partial sum.
    let mut hdr = [0u8; HDR_LEN];
    hdr[0] = HDR_F_NEEDS_CSUM;
    hdr[6..8].copy_from_slice(&14u16.to_le_bytes());
    hdr[8..10].copy_from_slice(&6u16.to_le_bytes());
    let mut frame = vec![0xaau8; 14];
    frame.extend_from_slice(&[0x12, 0x34, 0, 0, 0, 0, 0, 0, 0x01, 0x02]);
    m.write(0x8000, &hdr).unwrap();
    m.write(0x9000, &frame).unwrap();
    desc(&m, TXQ.0, 0, 0x8000, HDR_LEN as u32, F_NEXT, 1);
    desc(&m, TXQ.0, 1, 0x9000, frame.len() as u32, 0, 0);
    offer(&m, TXQ.1, 0);
    t.notify(1);
    wait(|| used_idx(&m, TXQ.2) == 1);
    let sent = fake.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    // !(0x1234 + 0x0102) = !0x1336 = 0xecc9.
    assert_eq!(sent[0][20..22], [0xec, 0xc9]);
    assert_eq!(sent[0][..14], frame[..14]);
}

#[test]
fn a_received_frame_lands_after_its_header() {
    let (t, m, fake) = start(0);
    desc(&m, RXQ.0, 0, 0x10000, 2048, F_WRITE, 0);
    offer(&m, RXQ.1, 0);
    t.notify(0);
    let frame: Vec<u8> = (0..100u8).collect();
    fake.inject(frame.clone());
    wait(|| used_idx(&m, RXQ.2) == 1);
    assert_eq!(m.read_le(RXQ.2 + 4, 4).unwrap(), 0, "head 0");
    assert_eq!(m.read_le(RXQ.2 + 8, 4).unwrap(), (HDR_LEN + 100) as u64);
    assert_eq!(m.read_le(0x10000 + 10, 2).unwrap(), 1, "num_buffers");
    let mut got = vec![0u8; 100];
    m.read(0x10000 + HDR_LEN as u64, &mut got).unwrap();
    assert_eq!(got, frame);
    // A frame waits while there is no buffer, and lands when the driver gives one.
    fake.inject(vec![7; 60]);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(used_idx(&m, RXQ.2), 1);
    desc(&m, RXQ.0, 1, 0x11000, 2048, F_WRITE, 0);
    offer(&m, RXQ.1, 1);
    t.notify(0);
    wait(|| used_idx(&m, RXQ.2) == 2);
    assert_eq!(m.read_le(0x11000 + HDR_LEN as u64, 1).unwrap(), 7);
}

#[test]
fn a_large_frame_is_merged_over_several_buffers() {
    let (t, m, fake) = start(features::MRG_RXBUF);
    for i in 0..4u16 {
        desc(
            &m,
            RXQ.0,
            i,
            0x20000 + 0x1000 * u64::from(i),
            1000,
            F_WRITE,
            0,
        );
        offer(&m, RXQ.1, i);
    }
    t.notify(0);
    let frame: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
    fake.inject(frame.clone());
    wait(|| used_idx(&m, RXQ.2) == 3);
    assert_eq!(m.read_le(0x20000 + 10, 2).unwrap(), 3, "num_buffers");
    let lens: Vec<u64> = (0..3)
        .map(|i| m.read_le(RXQ.2 + 8 + 8 * i, 4).unwrap())
        .collect();
    assert_eq!(lens, [1000, 1000, (HDR_LEN + 2500 - 2000) as u64]);
    let mut got = vec![0u8; 2500];
    m.read(0x20000 + HDR_LEN as u64, &mut got[..1000 - HDR_LEN])
        .unwrap();
    m.read(0x21000, &mut got[1000 - HDR_LEN..2000 - HDR_LEN])
        .unwrap();
    m.read(0x22000, &mut got[2000 - HDR_LEN..]).unwrap();
    assert_eq!(got, frame);
}

#[test]
fn hostile_chains_are_returned_unused() {
    let (t, m, fake) = start(features::MRG_RXBUF);
    // Transmit: a chain with only a header, one pointing outside RAM, then a good one.
    desc(&m, TXQ.0, 0, 0x8000, HDR_LEN as u32, 0, 0);
    desc(&m, TXQ.0, 1, 0x4000_0000, 100, 0, 0);
    desc(&m, TXQ.0, 2, 0x8000, HDR_LEN as u32 + 60, 0, 0);
    for h in 0..3 {
        offer(&m, TXQ.1, h);
    }
    t.notify(1);
    wait(|| used_idx(&m, TXQ.2) == 3);
    assert_eq!(
        fake.sent.lock().unwrap().len(),
        1,
        "only the good frame left"
    );
    // Receive: a zero-length buffer, then a real one; the frame lands in the second.
    desc(&m, RXQ.0, 0, 0x10000, 0, F_WRITE, 0);
    desc(&m, RXQ.0, 1, 0x11000, 2048, F_WRITE, 0);
    offer(&m, RXQ.1, 0);
    offer(&m, RXQ.1, 1);
    t.notify(0);
    fake.inject(vec![9; 64]);
    wait(|| used_idx(&m, RXQ.2) == 2);
    assert_eq!(
        m.read_le(RXQ.2 + 4, 4).unwrap(),
        0,
        "the empty buffer back first"
    );
    assert_eq!(m.read_le(RXQ.2 + 8, 4).unwrap(), 0);
    assert_eq!(m.read_le(RXQ.2 + 12, 4).unwrap(), 1);
    assert_eq!(m.read_le(RXQ.2 + 16, 4).unwrap(), (HDR_LEN + 64) as u64);
    assert_eq!(t.status() & status::DEVICE_NEEDS_RESET, 0);
}
