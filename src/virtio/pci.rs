//! The virtio-pci modern transport (virtio 1.2, 4.1): a PCI function 1AF4:(1040 + device id),
//! revision 1, whose vendor capabilities point into its BAR 0:
//!
//! ```text
//! BAR 0 (32 KiB, 32-bit memory)
//!   0x0000  common configuration (features, status, queue registers)
//!   0x1000  ISR status (read clears it and lowers INTx)
//!   0x2000  device configuration
//!   0x3000  notifications: queue n at 0x3000 + 4 n (notify_off_multiplier 4)
//!   0x4000  MSI-X table (one vector per queue and one for configuration changes)
//!   0x6000  MSI-X pending bits
//! ```
//!
//! Interrupts: MSI-X when the driver enables it, else the INTx pin (level, until the driver
//! reads the ISR). The device's thread signals through [`PciIrq`], which holds the MSI-X state
//! and a mirror of the config space under a lock of its own: the thread never takes the PCI
//! root's or the function's lock (lock order: root, function, `PciIrq`).

use std::sync::{Arc, Mutex, MutexGuard};

use janus_accel::GuestMemory;

use super::{Interrupt, NO_VECTOR, Transport, VirtioDevice, id};
use crate::pci::config::reg;
use crate::pci::msix::Msix;
use crate::pci::{Bar, BarKind, ConfigSpace, PciFunction, PciInterrupts};

/// Red Hat's (Qumranet's) vendor id, which virtio uses.
pub const VENDOR_ID: u16 = 0x1af4;
/// Modern devices are 0x1040 + the device id.
pub const DEVICE_ID_BASE: u16 = 0x1040;
/// BAR 0's size.
pub const BAR_SIZE: u64 = 0x8000;
/// Common configuration's offset in BAR 0.
pub const COMMON: u64 = 0x0000;
/// The ISR's offset.
pub const ISR: u64 = 0x1000;
/// Device configuration's offset.
pub const DEVICE: u64 = 0x2000;
/// The notification area's offset.
pub const NOTIFY: u64 = 0x3000;
/// Bytes between two queues' notify addresses.
pub const NOTIFY_MULTIPLIER: u32 = 4;
/// The MSI-X table's offset.
pub const MSIX_TABLE: u32 = 0x4000;
/// The MSI-X PBA's offset.
pub const MSIX_PBA: u32 = 0x6000;
/// The common configuration's length.
const COMMON_LEN: u32 = 0x38;
/// The vendor-specific capability id.
const CAP_VENDOR: u8 = 0x09;
/// virtio_pci_cap cfg_type values.
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;
const CFG_PCI: u8 = 5;
/// Where the capabilities go in config space.
const CAP_MSIX: usize = 0x40;
const CAP_COMMON: usize = 0x50;
const CAP_ISR: usize = 0x60;
const CAP_DEVICE: usize = 0x70;
const CAP_NOTIFY: usize = 0x80;
/// The PCI configuration access capability: a window into the BAR through config space.
const CAP_PCI_CFG: usize = 0x98;
/// Its pci_cfg_data field.
const PCI_CFG_DATA: usize = CAP_PCI_CFG + 16;
/// ISR bits: a queue was used, the configuration changed.
const ISR_QUEUE: u8 = 1;
const ISR_CONFIG: u8 = 2;

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The class code a device type shows.
fn class_of(device_type: u32) -> u32 {
    match device_type {
        id::NET => 0x02_0000,
        id::BLOCK => 0x01_0000,
        id::CONSOLE => 0x07_8000,
        _ => 0xff_0000,
    }
}

struct IrqState {
    /// The function's config space as last written (MSI-X enable, bus master, INTx disable,
    /// the status register's interrupt bit).
    config: ConfigSpace,
    msix: Msix,
    intx: PciInterrupts,
    isr: u8,
    config_vector: u16,
}

impl IrqState {
    fn signal(&mut self, vector: u16) {
        if self.msix.enabled(&self.config) {
            if vector != NO_VECTOR {
                self.msix
                    .raise(&self.config, &self.intx, usize::from(vector));
            }
        } else {
            self.intx.raise(&mut self.config);
        }
    }
}

/// A virtio-pci function's interrupts, shared with its device's thread.
pub struct PciIrq(Mutex<IrqState>);

impl std::fmt::Debug for PciIrq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciIrq").finish_non_exhaustive()
    }
}

impl Interrupt for PciIrq {
    fn queue(&self, vector: u16) {
        let mut s = lock(&self.0);
        s.isr |= ISR_QUEUE;
        s.signal(vector);
    }
    fn config(&self) {
        let mut s = lock(&self.0);
        s.isr |= ISR_CONFIG;
        let v = s.config_vector;
        s.signal(v);
    }
}

/// A virtio device on PCI.
pub struct VirtioPci {
    config: ConfigSpace,
    transport: Transport,
    irq: Arc<PciIrq>,
    label: String,
}

impl std::fmt::Debug for VirtioPci {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioPci")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// Writes a virtio_pci_cap at `at`.
fn vendor_cap(c: &mut ConfigSpace, at: usize, cfg_type: u8, offset: u64, length: u32, len: u8) {
    c.link_capability(at);
    c.set(at, &[CAP_VENDOR, 0, len, cfg_type, 0, 0, 0, 0]);
    c.set(at + 8, &(offset as u32).to_le_bytes());
    c.set(at + 12, &length.to_le_bytes());
}

impl VirtioPci {
    /// `device` as a PCI function, its thread started over `mem`.
    ///
    /// # Errors
    /// The device's thread could not be spawned.
    pub fn new(device: Box<dyn VirtioDevice>, mem: GuestMemory) -> std::io::Result<Self> {
        Self::with_worker(device, mem, false)
    }

    /// [`VirtioPci::new`], with a synchronous worker when `synchronous` (record and replay).
    ///
    /// # Errors
    /// The device's thread could not be spawned.
    pub fn with_worker(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        synchronous: bool,
    ) -> std::io::Result<Self> {
        let device_type = device.device_type();
        let nq = device.queue_sizes().len() as u16;
        let config_len = device.config().len() as u32;
        let mut config = ConfigSpace::new(
            VENDOR_ID,
            DEVICE_ID_BASE + device_type as u16,
            class_of(device_type),
            1,
        );
        config.set(reg::SUBSYSTEM_VENDOR_ID, &VENDOR_ID.to_le_bytes());
        config.set(reg::SUBSYSTEM_ID, &0x1100u16.to_le_bytes());
        config.set_interrupt_pin(1);
        config
            .add_bar(
                0,
                Bar {
                    size: BAR_SIZE,
                    kind: BarKind::Memory32,
                },
            )
            .map_err(std::io::Error::other)?;
        let msix = Msix::new(&mut config, CAP_MSIX, nq + 1, 0, MSIX_TABLE, MSIX_PBA);
        vendor_cap(&mut config, CAP_COMMON, CFG_COMMON, COMMON, COMMON_LEN, 16);
        vendor_cap(&mut config, CAP_ISR, CFG_ISR, ISR, 1, 16);
        vendor_cap(
            &mut config,
            CAP_DEVICE,
            CFG_DEVICE,
            DEVICE,
            config_len.max(4),
            16,
        );
        vendor_cap(
            &mut config,
            CAP_NOTIFY,
            CFG_NOTIFY,
            NOTIFY,
            NOTIFY_MULTIPLIER * u32::from(nq.max(1)),
            20,
        );
        config.set(CAP_NOTIFY + 16, &NOTIFY_MULTIPLIER.to_le_bytes());
        // The configuration access window: the driver writes bar, offset and length, then
        // reads or writes pci_cfg_data.
        vendor_cap(&mut config, CAP_PCI_CFG, CFG_PCI, 0, 0, 20);
        config.set_wmask(CAP_PCI_CFG + 4, &[0xff]);
        config.set_wmask(CAP_PCI_CFG + 8, &[0xff; 8]);
        let irq = Arc::new(PciIrq(Mutex::new(IrqState {
            config: config.clone(),
            msix,
            intx: PciInterrupts::default(),
            isr: 0,
            config_vector: NO_VECTOR,
        })));
        let label = format!("virtio-{}-pci", device.label());
        let transport = Transport::with_worker(device, mem, irq.clone(), synchronous)?;
        Ok(VirtioPci {
            config,
            transport,
            irq,
            label,
        })
    }

    /// The function, as the PCI root holds it.
    pub fn shared(self) -> crate::pci::SharedFunction {
        Arc::new(Mutex::new(self))
    }

    /// The BAR access the configuration access capability names: (bar, offset, length), when
    /// the length is 1, 2 or 4 and the offset aligned to it.
    fn cfg_window(&self) -> Option<(usize, u64, usize)> {
        let mut bar = [0u8; 1];
        self.config.read(CAP_PCI_CFG + 4, &mut bar);
        let off = self.config.u32_at(CAP_PCI_CFG + 8);
        let len = self.config.u32_at(CAP_PCI_CFG + 12);
        (matches!(len, 1 | 2 | 4) && off % len == 0).then_some((
            usize::from(bar[0]),
            u64::from(off),
            len as usize,
        ))
    }

    fn common_read(&self, offset: u64, data: &mut [u8]) {
        let t = &self.transport;
        let q = t.queue().copied().unwrap_or_default();
        let mut img = [0u8; 0x40];
        let mut put = |at: usize, bytes: &[u8]| img[at..at + bytes.len()].copy_from_slice(bytes);
        put(0x00, &t.device_feature_sel.to_le_bytes());
        put(0x04, &t.device_features_word().to_le_bytes());
        put(0x08, &t.driver_feature_sel.to_le_bytes());
        put(0x0c, &t.driver_features_word().to_le_bytes());
        put(0x10, &lock(&self.irq.0).config_vector.to_le_bytes());
        put(0x12, &t.num_queues().to_le_bytes());
        put(0x14, &[t.status(), 0]);
        put(0x16, &t.queue_sel.to_le_bytes());
        put(0x18, &q.size.to_le_bytes());
        put(0x1a, &q.vector.to_le_bytes());
        put(0x1c, &u16::from(q.ready).to_le_bytes());
        put(0x1e, &t.queue_sel.to_le_bytes());
        put(0x20, &q.desc.to_le_bytes());
        put(0x28, &q.avail.to_le_bytes());
        put(0x30, &q.used.to_le_bytes());
        for (i, d) in data.iter_mut().enumerate() {
            *d = img.get(offset as usize + i).copied().unwrap_or(0);
        }
    }

    fn common_write(&mut self, offset: u64, data: &[u8]) {
        let Ok(off) = usize::try_from(offset) else {
            return;
        };
        if off + data.len() > COMMON_LEN as usize {
            self.transport.driver_errors += 1;
            return;
        }
        // The value written, merged over the register's current bytes.
        let mut img = [0u8; 0x40];
        self.common_read(0, &mut img);
        img[off..off + data.len()].copy_from_slice(data);
        let u16_at = |at: usize| u16::from_le_bytes([img[at], img[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes(img[at..at + 4].try_into().unwrap_or([0; 4]));
        let touches = |at: usize, len: usize| off < at + len && at < off + data.len();
        let vectors = self.transport.num_queues() + 1;
        let valid_vector = |v: u16| if v < vectors { v } else { NO_VECTOR };
        let t = &mut self.transport;
        if touches(0x00, 4) {
            t.device_feature_sel = u32_at(0x00);
        }
        if touches(0x08, 4) {
            t.driver_feature_sel = u32_at(0x08);
        }
        if touches(0x0c, 4) {
            t.set_driver_features_word(u32_at(0x0c));
        }
        if touches(0x10, 2) {
            lock(&self.irq.0).config_vector = valid_vector(u16_at(0x10));
        }
        if touches(0x16, 2) {
            t.queue_sel = u16_at(0x16);
        }
        if touches(0x18, 2)
            && let Some(q) = t.queue_mut()
        {
            q.size = u16_at(0x18);
        }
        if touches(0x1a, 2)
            && let Some(q) = t.queue_mut()
        {
            q.vector = valid_vector(u16_at(0x1a));
        }
        for (at, field) in [(0x20, 0), (0x28, 1), (0x30, 2)] {
            if touches(at, 8)
                && let Some(q) = t.queue_mut()
            {
                let v = u64::from(u32_at(at)) | u64::from(u32_at(at + 4)) << 32;
                match field {
                    0 => q.desc = v,
                    1 => q.avail = v,
                    _ => q.used = v,
                }
            }
        }
        if touches(0x1c, 2)
            && u16_at(0x1c) == 1
            && let Some(q) = t.queue_mut()
        {
            q.ready = true;
        }
        // Status last: a write that also sets queue fields acts in order.
        if touches(0x14, 1) {
            let v = img[0x14];
            t.set_status(v);
            if v == 0 {
                let mut s = lock(&self.irq.0);
                s.isr = 0;
                s.config_vector = NO_VECTOR;
                let IrqState { intx, config, .. } = &mut *s;
                intx.lower(config);
            }
        }
    }
}

impl PciFunction for VirtioPci {
    fn label(&self) -> &str {
        &self.label
    }
    fn config(&self) -> &ConfigSpace {
        &self.config
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }
    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        if offset == PCI_CFG_DATA
            && let Some((bar, off, len)) = self.cfg_window()
        {
            let mut buf = [0u8; 4];
            self.bar_read(0, bar, off, &mut buf[..len]);
            let n = data.len().min(4);
            data[..n].copy_from_slice(&buf[..n]);
            return;
        }
        // The mirror holds the status register's interrupt bit.
        lock(&self.irq.0).config.read(offset, data);
    }
    fn config_write(&mut self, offset: usize, data: &[u8]) {
        if offset == PCI_CFG_DATA {
            if let Some((bar, off, len)) = self.cfg_window() {
                let n = len.min(data.len());
                self.bar_write(0, bar, off, &data[..n]);
            }
            return;
        }
        self.config.write(offset, data);
        let mut s = lock(&self.irq.0);
        let status = s.config.u16_at(reg::STATUS);
        s.config = self.config.clone();
        s.config.set(reg::STATUS, &status.to_le_bytes());
        let IrqState {
            msix, config, intx, ..
        } = &mut *s;
        msix.deliver_pending(config, intx);
    }
    fn bar_read(&mut self, _vcpu: usize, bar: usize, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if bar != 0 {
            return;
        }
        match offset {
            COMMON..ISR => self.common_read(offset - COMMON, data),
            ISR => {
                let mut s = lock(&self.irq.0);
                data[0] = s.isr;
                s.isr = 0;
                let IrqState { intx, config, .. } = &mut *s;
                intx.lower(config);
            }
            DEVICE..NOTIFY => self.transport.read_config(offset - DEVICE, data),
            NOTIFY..BAR_SIZE => {
                lock(&self.irq.0).msix.read(offset, data);
            }
            _ => {}
        }
    }
    fn bar_write(&mut self, _vcpu: usize, bar: usize, offset: u64, data: &[u8]) {
        if bar != 0 {
            return;
        }
        match offset {
            COMMON..ISR => self.common_write(offset - COMMON, data),
            NOTIFY..0x4000 => {
                let index = (offset - NOTIFY) / u64::from(NOTIFY_MULTIPLIER);
                if let Ok(i) = u16::try_from(index) {
                    self.transport.notify(i);
                }
            }
            0x4000..BAR_SIZE => {
                let mut s = lock(&self.irq.0);
                let IrqState {
                    msix, config, intx, ..
                } = &mut *s;
                msix.write(config, intx, offset, data);
            }
            _ => {}
        }
    }
    fn set_interrupts(&mut self, irq: PciInterrupts) {
        lock(&self.irq.0).intx = irq;
    }
}
