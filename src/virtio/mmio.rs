//! virtio-mmio, version 2 (virtio 1.2, 4.2): a 4 KiB register window per device and one
//! interrupt line, for direct kernel boots. The kernel learns of each device from its command
//! line, as Firecracker announces them: `virtio_mmio.device=4K@0xBASE:IRQ`.
//!
//! The line is high while InterruptStatus is non-zero (the driver's InterruptACK clears bits).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use janus_accel::GuestMemory;

use super::{Interrupt, Transport, VirtioDevice};
use crate::bus::BusDevice;
use crate::devices::IrqLine;

/// The register window's size.
pub const WINDOW: u64 = 0x1000;
/// "virt" in little-endian.
const MAGIC: u32 = 0x7472_6976;
/// The version of the register layout (2: virtio 1.x).
const VERSION: u32 = 2;
/// The vendor id devices show ("QEMU", which Linux ignores).
const VENDOR: u32 = 0x554d_4551;
/// Where the device configuration starts.
const CONFIG: u64 = 0x100;

/// The interrupt of one virtio-mmio device.
pub struct MmioIrq {
    status: AtomicU32,
    line: Arc<dyn IrqLine>,
    lock: Mutex<()>,
}

impl std::fmt::Debug for MmioIrq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioIrq")
            .field("status", &self.status.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl MmioIrq {
    fn raise(&self, bit: u32) {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.status.fetch_or(bit, Ordering::AcqRel);
        self.line.set_level(true);
    }
    fn ack(&self, bits: u32) {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.status.fetch_and(!bits, Ordering::AcqRel) & !bits == 0 {
            self.line.set_level(false);
        }
    }
}

impl Interrupt for MmioIrq {
    fn queue(&self, _vector: u16) {
        self.raise(1);
    }
    fn config(&self) {
        self.raise(2);
    }
}

/// A virtio device behind a virtio-mmio window.
#[derive(Debug)]
pub struct VirtioMmio {
    transport: Transport,
    irq: Arc<MmioIrq>,
    label: String,
}

impl VirtioMmio {
    /// `device` behind a window, interrupting on `line`, its thread started over `mem`.
    ///
    /// # Errors
    /// The device's thread could not be spawned.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        line: Arc<dyn IrqLine>,
    ) -> std::io::Result<Self> {
        Self::with_worker(device, mem, line, false)
    }

    /// [`VirtioMmio::new`], with a synchronous worker when `synchronous` (record and replay).
    ///
    /// # Errors
    /// The device's thread could not be spawned.
    pub fn with_worker(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        line: Arc<dyn IrqLine>,
        synchronous: bool,
    ) -> std::io::Result<Self> {
        let irq = Arc::new(MmioIrq {
            status: AtomicU32::new(0),
            line,
            lock: Mutex::new(()),
        });
        let label = format!("virtio-{}-mmio", device.label());
        let transport = Transport::with_worker(device, mem, irq.clone(), synchronous)?;
        Ok(VirtioMmio {
            transport,
            irq,
            label,
        })
    }

    /// The kernel command-line parameter that announces a device at `base` on `irq`.
    pub fn cmdline(base: u64, irq: u32) -> String {
        format!("virtio_mmio.device=4K@{base:#x}:{irq}")
    }

    fn register(&self, offset: u64) -> u32 {
        let t = &self.transport;
        let q = t.queue().copied().unwrap_or_default();
        match offset {
            0x000 => MAGIC,
            0x004 => VERSION,
            0x008 => t.device_type(),
            0x00c => VENDOR,
            0x010 => t.device_features_word(),
            0x034 => u32::from(q.max_size),
            0x038 => u32::from(q.size),
            0x044 => u32::from(q.ready),
            0x060 => self.irq.status.load(Ordering::Acquire),
            0x070 => u32::from(t.status()),
            0x080 => q.desc as u32,
            0x084 => (q.desc >> 32) as u32,
            0x090 => q.avail as u32,
            0x094 => (q.avail >> 32) as u32,
            0x0a0 => q.used as u32,
            0x0a4 => (q.used >> 32) as u32,
            _ => 0,
        }
    }

    fn set_register(&mut self, offset: u64, v: u32) {
        let t = &mut self.transport;
        let half = |old: u64, high: bool| {
            if high {
                (old & 0xffff_ffff) | u64::from(v) << 32
            } else {
                (old & !0xffff_ffff) | u64::from(v)
            }
        };
        match offset {
            0x014 => t.device_feature_sel = v,
            0x020 => t.set_driver_features_word(v),
            0x024 => t.driver_feature_sel = v,
            0x030 => t.queue_sel = v as u16,
            0x038 => {
                if let Some(q) = t.queue_mut() {
                    q.size = v.min(u32::from(u16::MAX)) as u16;
                }
            }
            0x044 => {
                if v == 1
                    && let Some(q) = t.queue_mut()
                {
                    q.ready = true;
                }
            }
            0x050 => t.notify(v as u16),
            0x064 => self.irq.ack(v),
            0x070 => {
                t.set_status(v as u8);
                if v == 0 {
                    self.irq.ack(!0);
                }
            }
            0x080 | 0x084 | 0x090 | 0x094 | 0x0a0 | 0x0a4 => {
                if let Some(q) = t.queue_mut() {
                    let high = offset & 4 != 0;
                    match offset & !4 {
                        0x080 => q.desc = half(q.desc, high),
                        0x090 => q.avail = half(q.avail, high),
                        _ => q.used = half(q.used, high),
                    }
                }
            }
            _ => t.driver_errors += 1,
        }
    }
}

impl BusDevice for VirtioMmio {
    fn label(&self) -> &str {
        &self.label
    }
    fn read(&mut self, _vcpu: usize, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG {
            self.transport.read_config(offset - CONFIG, data);
            return;
        }
        // Registers are 32-bit; narrower reads take their bytes.
        let v = self.register(offset & !3).to_le_bytes();
        for (i, d) in data.iter_mut().enumerate() {
            *d = v.get((offset & 3) as usize + i).copied().unwrap_or(0);
        }
    }
    fn write(&mut self, _vcpu: usize, offset: u64, data: &[u8]) {
        if offset >= CONFIG {
            return;
        }
        if data.len() != 4 || offset % 4 != 0 {
            self.transport.driver_errors += 1;
            return;
        }
        let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        self.set_register(offset, v);
    }
}
