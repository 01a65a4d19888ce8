//! virtio 1.x devices (modern only): the device side of split virtqueues, a device trait, the
//! register state both transports share, and the thread each device runs on.
//!
//! - [`queue`]: split virtqueues with indirect descriptors and event index, hostile-guest proof.
//! - [`VirtioDevice`]: what a device type (block, console, entropy, network) provides: its id,
//!   feature bits, config space, queue sizes, and the handling of a queue notification.
//! - [`Transport`]: the registers common to both transports (feature negotiation, status, queue
//!   placement) and the device's [`worker`] thread, which the transports drive.
//! - [`pci`]: the virtio-pci modern transport (1AF4:1040+id, capabilities in BAR 0, MSI-X with an
//!   INTx fallback). [`mmio`]: virtio-mmio version 2, for direct kernel boots
//!   (`virtio_mmio.device=` on the command line, as Firecracker does).
//!
//! A queue notification (a vCPU's write to the notify register) only sends a message to the
//! device's thread: the vCPU never waits for a request's I/O. The thread takes the chains,
//! serves them, returns them in the used ring (through [`GuestMemory::write_dma`]) and
//! interrupts through the transport's [`Interrupt`]. A broken ring marks the device
//! NEEDS_RESET and sends a configuration-change interrupt, as the spec says.

pub mod blk;
pub mod board;
pub mod console;
pub mod mmio;
pub mod net;
pub mod pci;
pub mod queue;
pub mod rng;
pub mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use janus_accel::GuestMemory;

pub use queue::{Chain, Queue, QueueConfig, QueueError};
pub use worker::Worker;

/// Feature bit: the device conforms to virtio 1.x (always offered and required).
pub const F_VERSION_1: u64 = 1 << 32;
/// Feature bit: indirect descriptors.
pub const F_RING_INDIRECT_DESC: u64 = 1 << 28;
/// Feature bit: event index (`used_event`/`avail_event`).
pub const F_RING_EVENT_IDX: u64 = 1 << 29;
/// The transport features every device offers.
pub const TRANSPORT_FEATURES: u64 = F_VERSION_1 | F_RING_INDIRECT_DESC | F_RING_EVENT_IDX;

/// Device status bits (2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready: the device runs.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is over.
    pub const FEATURES_OK: u8 = 8;
    /// The device met an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u8 = 0x40;
    /// The driver gave up.
    pub const FAILED: u8 = 0x80;
}

/// "No MSI-X vector".
pub const NO_VECTOR: u16 = 0xffff;

/// Device ids (5).
pub mod id {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Console.
    pub const CONSOLE: u32 = 3;
    /// Entropy source.
    pub const RNG: u32 = 4;
}

/// How a device interrupts the driver; the transport implements it (MSI-X or INTx on PCI, the
/// interrupt line on virtio-mmio). Called from the device's thread.
pub trait Interrupt: Send + Sync {
    /// Queue `vector` (its MSI-X vector on PCI) has new used entries.
    fn queue(&self, vector: u16);
    /// The configuration changed (or the device needs a reset).
    fn config(&self);
}

/// What a device's thread hands a device: guest memory, its interrupt, and a way to wake its
/// own thread from elsewhere (an input source).
#[derive(Clone)]
pub struct DeviceContext {
    /// Guest memory (every write through `write_dma`).
    pub mem: GuestMemory,
    /// The driver's negotiated features.
    pub features: u64,
    /// Wakes the device's thread with [`VirtioDevice::poll`] (input arrived).
    pub waker: worker::Waker,
}

impl std::fmt::Debug for DeviceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceContext")
            .field("features", &self.features)
            .finish_non_exhaustive()
    }
}

/// One virtio device type. It runs on its own thread ([`Worker`]): the methods that take
/// queues are called there, never on a vCPU.
pub trait VirtioDevice: Send {
    /// A short name for logs.
    fn label(&self) -> &str;
    /// Its device id ([`id`]).
    fn device_type(&self) -> u32;
    /// Its device-specific feature bits (the transport adds [`TRANSPORT_FEATURES`]).
    fn features(&self) -> u64;
    /// Its queues' maximum sizes (one per queue).
    fn queue_sizes(&self) -> Vec<u16>;
    /// Its configuration space (read-only to the driver; fixed at creation).
    fn config(&self) -> Vec<u8>;
    /// The driver set DRIVER_OK with `ctx.features`: the device runs.
    fn activate(&mut self, ctx: &DeviceContext) {
        let _ = ctx;
    }
    /// Queue `index` was notified: take and serve its chains, returning them in the used ring.
    /// Returns whether any were returned (the caller decides on the interrupt).
    ///
    /// # Errors
    /// A broken ring: the device needs a reset.
    fn notify(
        &mut self,
        ctx: &DeviceContext,
        index: usize,
        queue: &mut Queue,
    ) -> Result<bool, QueueError>;
    /// Something woke the thread through [`DeviceContext::waker`] (input for a receive
    /// queue): like [`VirtioDevice::notify`] for every queue that may take it.
    ///
    /// # Errors
    /// A broken ring.
    fn poll(
        &mut self,
        ctx: &DeviceContext,
        queues: &mut [Option<Queue>],
    ) -> Result<Vec<usize>, QueueError> {
        let _ = (ctx, queues);
        Ok(Vec::new())
    }
    /// The driver reset the device: forget the queues and negotiated state.
    fn reset(&mut self) {}
}

/// State the transport and the device's thread share.
#[derive(Debug, Default)]
pub struct Shared {
    /// The device hit a broken ring: status reads DEVICE_NEEDS_RESET.
    pub needs_reset: AtomicBool,
}

impl Shared {
    /// Whether the device needs a reset.
    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::Acquire)
    }
}

/// The registers both transports expose, over one device and its thread.
#[derive(Debug)]
pub struct Transport {
    label: String,
    device_type: u32,
    device_features: u64,
    config: Vec<u8>,
    /// Device status as the driver wrote it.
    status: u8,
    /// Which 32 bits of the device features read (the select register).
    pub device_feature_sel: u32,
    /// Which 32 bits of the driver features a write sets.
    pub driver_feature_sel: u32,
    driver_features: u64,
    /// The queue the queue registers address.
    pub queue_sel: u16,
    queues: Vec<QueueConfig>,
    /// The configuration-change MSI-X vector (PCI).
    pub config_vector: u16,
    worker: Worker,
    shared: Arc<Shared>,
    /// Driver mistakes (features not offered, bad status transitions), counted.
    pub driver_errors: u64,
}

impl Transport {
    /// A transport over `device`, whose thread starts now and reaches guest memory through
    /// `mem` and interrupts through `irq`.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        irq: Arc<dyn Interrupt>,
    ) -> std::io::Result<Self> {
        Self::with_worker(device, mem, irq, false)
    }

    /// [`Transport::new`], with a synchronous worker when `synchronous` (see
    /// [`worker`]: notifications complete before the vCPU goes on).
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn with_worker(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        irq: Arc<dyn Interrupt>,
        synchronous: bool,
    ) -> std::io::Result<Self> {
        let label = device.label().to_string();
        let device_type = device.device_type();
        let device_features = device.features() | TRANSPORT_FEATURES;
        let config = device.config();
        let queues = device
            .queue_sizes()
            .into_iter()
            .map(|max| QueueConfig {
                size: max,
                max_size: max,
                vector: NO_VECTOR,
                ..QueueConfig::default()
            })
            .collect();
        let shared = Arc::new(Shared::default());
        let worker = Worker::spawn(device, mem, irq, shared.clone(), synchronous)?;
        Ok(Transport {
            label,
            device_type,
            device_features,
            config,
            status: 0,
            device_feature_sel: 0,
            driver_feature_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues,
            config_vector: NO_VECTOR,
            worker,
            shared,
            driver_errors: 0,
        })
    }

    /// The device's name.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The device id.
    pub fn device_type(&self) -> u32 {
        self.device_type
    }

    /// The number of queues.
    pub fn num_queues(&self) -> u16 {
        self.queues.len() as u16
    }

    /// The device features' 32 bits the select register names.
    pub fn device_features_word(&self) -> u32 {
        match self.device_feature_sel {
            0 => self.device_features as u32,
            1 => (self.device_features >> 32) as u32,
            _ => 0,
        }
    }

    /// The driver features' 32 bits the select register names.
    pub fn driver_features_word(&self) -> u32 {
        match self.driver_feature_sel {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        }
    }

    /// The driver writes 32 bits of its features (only while negotiating).
    pub fn set_driver_features_word(&mut self, v: u32) {
        if self.status & status::FEATURES_OK != 0 {
            self.driver_errors += 1;
            return;
        }
        match self.driver_feature_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v),
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | u64::from(v) << 32,
            _ => {}
        }
    }

    /// Device status as the driver reads it (DEVICE_NEEDS_RESET added when the device broke).
    pub fn status(&self) -> u8 {
        self.status
            | if self.shared.needs_reset() {
                status::DEVICE_NEEDS_RESET
            } else {
                0
            }
    }

    /// The driver writes the status: 0 resets; FEATURES_OK is refused (stays clear) for
    /// features the device did not offer or without VERSION_1; DRIVER_OK starts the device.
    pub fn set_status(&mut self, v: u8) {
        if v == 0 {
            self.reset();
            return;
        }
        let mut v = v & !status::DEVICE_NEEDS_RESET;
        if v & status::FEATURES_OK != 0 && self.status & status::FEATURES_OK == 0 {
            let unknown = self.driver_features & !self.device_features;
            if unknown != 0 || self.driver_features & F_VERSION_1 == 0 {
                self.driver_errors += 1;
                v &= !status::FEATURES_OK;
            }
        }
        let starting = v & status::DRIVER_OK != 0 && self.status & status::DRIVER_OK == 0;
        self.status = v;
        if starting && v & status::FEATURES_OK != 0 {
            let queues = self.queues.iter().map(|q| q.ready.then_some(*q)).collect();
            self.worker.activate(self.driver_features, queues);
        }
    }

    /// Back to the power-on state; waits for the device's thread to drop its queues.
    pub fn reset(&mut self) {
        self.worker.reset();
        self.shared.needs_reset.store(false, Ordering::Release);
        self.status = 0;
        self.driver_features = 0;
        self.device_feature_sel = 0;
        self.driver_feature_sel = 0;
        self.queue_sel = 0;
        self.config_vector = NO_VECTOR;
        for q in &mut self.queues {
            *q = QueueConfig {
                size: q.max_size,
                max_size: q.max_size,
                vector: NO_VECTOR,
                ..QueueConfig::default()
            };
        }
    }

    /// The selected queue's registers (`None` past the last queue).
    pub fn queue(&self) -> Option<&QueueConfig> {
        self.queues.get(usize::from(self.queue_sel))
    }

    /// The selected queue's registers, for a driver write (ignored once the queue is enabled
    /// or the device runs).
    pub fn queue_mut(&mut self) -> Option<&mut QueueConfig> {
        let running = self.status & status::DRIVER_OK != 0;
        match self.queues.get_mut(usize::from(self.queue_sel)) {
            Some(q) if !running && !q.ready => Some(q),
            _ => {
                self.driver_errors += 1;
                None
            }
        }
    }

    /// The driver notified queue `index`: the device's thread takes it from here.
    pub fn notify(&self, index: u16) {
        if usize::from(index) < self.queues.len() && self.status & status::DRIVER_OK != 0 {
            self.worker.notify(usize::from(index));
        }
    }

    /// Reads the device configuration space.
    pub fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, d) in data.iter_mut().enumerate() {
            *d = usize::try_from(offset + i as u64)
                .ok()
                .and_then(|o| self.config.get(o))
                .copied()
                .unwrap_or(0);
        }
    }
}

#[cfg(test)]
mod tests;
