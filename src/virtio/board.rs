//! The virtio devices a machine is given (`--drive`, `--device`) and where they go: on the PCI
//! root bus, or behind virtio-mmio windows taken from the board's 32-bit pool on free ISA
//! lines, announced on the kernel command line.

use std::sync::{Arc, Mutex};

use janus_accel::GuestMemory;

use super::blk::{Blk, DriveError, DriveSpec};
use super::mmio::{VirtioMmio, WINDOW};
use super::pci::VirtioPci;
use super::{VirtioDevice, console, rng};
use crate::board::{AllocError, Resources};
use crate::bus::{Bus, BusError};
use crate::pci::{PciError, PciRoot};
use crate::platform::Platform;

/// ISA lines free on the board for virtio-mmio devices (edge, active high, as Firecracker's).
pub const MMIO_IRQS: [u8; 6] = [5, 6, 7, 3, 12, 13];

/// A virtio device named by `--device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// virtio-rng.
    Rng,
    /// virtio-console (hvc0).
    Console,
}

/// `--device NAME`: QEMU's device names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Which device.
    pub kind: DeviceKind,
    /// virtio-mmio (`-device` names ending in `-device`) instead of PCI.
    pub mmio: bool,
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, mmio) = match s {
            "virtio-rng-pci" | "virtio-rng" => (DeviceKind::Rng, false),
            "virtio-rng-device" => (DeviceKind::Rng, true),
            "virtio-serial-pci" | "virtio-console-pci" | "virtconsole" => {
                (DeviceKind::Console, false)
            }
            "virtio-serial-device" | "virtio-console-device" => (DeviceKind::Console, true),
            _ => {
                return Err(format!(
                    "unknown device {s:?}: janus has virtio-rng-pci, virtio-rng-device, \
                     virtio-serial-pci, virtio-serial-device"
                ));
            }
        };
        Ok(DeviceSpec { kind, mmio })
    }
}

/// The virtio devices of a machine.
#[derive(Clone, Debug, Default)]
pub struct VirtioConfig {
    /// `--drive`s, in order (vda, vdb, ...).
    pub drives: Vec<DriveSpec>,
    /// `--device`s.
    pub devices: Vec<DeviceSpec>,
    /// Where virtio-console output goes (janus's standard output by default).
    pub console: Option<crate::sink::SinkSpec>,
}

/// Why the virtio devices cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    /// A drive cannot be used.
    #[error(transparent)]
    Drive(#[from] DriveError),
    /// virtio-mmio without a kernel to announce it to.
    #[error(
        "virtio-mmio devices (if=mmio, -device ...-device) need --kernel: they are announced on its command line"
    )]
    MmioNeedsKernel,
    /// No window or line left.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// Too many virtio-mmio devices.
    #[error("too many virtio-mmio devices (at most {})", MMIO_IRQS.len())]
    TooManyMmio,
    /// The PCI bus is full.
    #[error(transparent)]
    Pci(#[from] PciError),
    /// A window collides.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The console's output file cannot be created.
    #[error("virtio-console output: {0}")]
    ConsoleOutput(std::io::Error),
    /// A device thread could not start.
    #[error("cannot start a virtio device thread: {0}")]
    Thread(std::io::Error),
}

/// A device and, for virtio-mmio, its window's base and ISA line.
type Placed = (Box<dyn VirtioDevice>, Option<(u64, u8)>);

/// Devices made and placed, waiting for the board.
pub struct Planned {
    devices: Vec<Placed>,
    /// Parameters for the kernel command line (the virtio-mmio devices).
    pub cmdline: String,
}

impl std::fmt::Debug for Planned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planned")
            .field("devices", &self.devices.len())
            .field("cmdline", &self.cmdline)
            .finish()
    }
}

impl VirtioConfig {
    /// Opens the drives and places the virtio-mmio devices (a window from `resources`, an ISA
    /// line each), before the kernel is loaded with [`Planned::cmdline`].
    ///
    /// # Errors
    /// A drive that cannot be used; virtio-mmio without a kernel; too many devices.
    pub fn plan(&self, resources: &mut Resources, kernel: bool) -> Result<Planned, VirtioError> {
        let mut devices: Vec<(Box<dyn VirtioDevice>, bool)> = Vec::new();
        for (i, d) in self.drives.iter().enumerate() {
            let serial = format!("janus-vd{}", char::from(b'a' + (i % 26) as u8));
            devices.push((Box::new(Blk::new(d.open()?, &serial)), d.mmio));
        }
        for d in &self.devices {
            let dev: Box<dyn VirtioDevice> = match d.kind {
                DeviceKind::Rng => Box::new(rng::Rng::default()),
                DeviceKind::Console => match &self.console {
                    None => Box::new(console::Console::stdout()),
                    Some(s) => Box::new(console::Console::new(
                        s.open().map_err(VirtioError::ConsoleOutput)?,
                    )),
                },
            };
            devices.push((dev, d.mmio));
        }
        let mut cmdline = String::new();
        let mut irqs = MMIO_IRQS.iter();
        let mut placed = Vec::with_capacity(devices.len());
        for (dev, mmio) in devices {
            let at = if mmio {
                if !kernel {
                    return Err(VirtioError::MmioNeedsKernel);
                }
                let irq = *irqs.next().ok_or(VirtioError::TooManyMmio)?;
                let base = resources.mmio32.allocate(WINDOW, WINDOW, "virtio-mmio")?;
                cmdline.push(' ');
                cmdline.push_str(&VirtioMmio::cmdline(base, irq.into()));
                Some((base, irq))
            } else {
                None
            };
            placed.push((dev, at));
        }
        Ok(Planned {
            devices: placed,
            cmdline,
        })
    }
}

impl Planned {
    /// Starts every device's thread and puts it on the PCI bus or the MMIO bus.
    ///
    /// # Errors
    /// A full PCI bus, a colliding window, a thread that cannot start.
    pub fn attach(
        self,
        mem: &GuestMemory,
        pci: &Arc<Mutex<PciRoot>>,
        mmio: &mut Bus,
        platform: &Platform,
        synchronous: bool,
    ) -> Result<(), VirtioError> {
        for (dev, at) in self.devices {
            match at {
                None => {
                    let f = VirtioPci::with_worker(dev, mem.clone(), synchronous)
                        .map_err(VirtioError::Thread)?;
                    pci.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .add(f.shared())?;
                }
                Some((base, irq)) => {
                    let d = VirtioMmio::with_worker(
                        dev,
                        mem.clone(),
                        platform.isa_irq(irq),
                        synchronous,
                    )
                    .map_err(VirtioError::Thread)?;
                    mmio.insert(base, WINDOW, Arc::new(Mutex::new(d)))?;
                }
            }
        }
        Ok(())
    }
}
