//! A PIIX3-style IDE controller in legacy mode: two channels at the ISA ports (primary
//! 0x1F0-0x1F7 and 0x3F6, IRQ 14; secondary 0x170-0x177 and 0x376, IRQ 15), PIO only, each
//! with a master drive (an ATA hard disk or an ATAPI CD-ROM) and no slave; and its PCI function
//! (8086:7010, class 0101, programming interface 0x00: both channels in compatibility mode, no
//! bus master), by which SeaBIOS and Linux's ata_piix find it.
//!
//! A channel's task-file registers are shared by its two device positions, as on the cable;
//! the selected device (bit 4 of the device register) answers the status, error and data
//! registers and runs commands; an absent device reads status 0 and ignores commands. LBA48
//! registers keep their previous byte ("HOB"), read back with bit 7 of device control set.
//! The interrupt line is raised when a command completes or a block is ready, unless nIEN is
//! set, and lowered when the status register is read.
//!
//! The ATA command set is in [`ata`], ATAPI's packet commands in [`atapi`]. A failed disk read
//! or write (an I/O error on the host) is the guest's: the command ends with ERR and ABRT.

pub mod ata;
pub mod atapi;

use std::sync::{Arc, Mutex};

use crate::bus::BusDevice;
use crate::devices::IrqLine;
use crate::pci::{ConfigSpace, PciFunction};

pub use ata::{Drive, DriveError, Media};

/// The primary channel's command block.
pub const PRIMARY_PORT: u16 = 0x1f0;
/// The primary channel's device control / alternate status port.
pub const PRIMARY_CONTROL_PORT: u16 = 0x3f6;
/// The primary channel's ISA interrupt line.
pub const PRIMARY_IRQ: u8 = 14;
/// The secondary channel's command block.
pub const SECONDARY_PORT: u16 = 0x170;
/// The secondary channel's device control / alternate status port.
pub const SECONDARY_CONTROL_PORT: u16 = 0x376;
/// The secondary channel's ISA interrupt line.
pub const SECONDARY_IRQ: u8 = 15;
/// A command block's port count.
pub const COMMAND_PORTS_LEN: u64 = 8;
/// The PCI function's vendor and device: Intel's PIIX3 IDE.
pub const PCI_ID: (u16, u16) = (0x8086, 0x7010);
/// Class: mass storage, IDE, compatibility mode on both channels, no bus master.
pub const PCI_CLASS: u32 = 0x01_0100;

/// Status register bits.
pub mod status {
    /// Busy.
    pub const BSY: u8 = 0x80;
    /// Device ready.
    pub const DRDY: u8 = 0x40;
    /// Seek complete (obsolete, set as drives do).
    pub const DSC: u8 = 0x10;
    /// Data request: the data register has (or wants) data.
    pub const DRQ: u8 = 0x08;
    /// Error: the error register says which.
    pub const ERR: u8 = 0x01;
}
/// Error register: command aborted.
pub const ERROR_ABRT: u8 = 0x04;
/// Device control: interrupts disabled.
const CONTROL_NIEN: u8 = 0x02;
/// Device control: software reset.
const CONTROL_SRST: u8 = 0x04;
/// Device control: read the HOB bytes.
const CONTROL_HOB: u8 = 0x80;
/// Device register: device 1 selected.
const SELECT_DEV1: u8 = 0x10;

/// The task-file registers 1-5 (features/error excepted on read), current and previous.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskFile {
    /// Features (written), per byte the current and the previous ("HOB") value.
    pub feature: [u8; 2],
    /// Sector count.
    pub nsector: [u8; 2],
    /// LBA low (sector number).
    pub lba_low: [u8; 2],
    /// LBA mid (cylinder low; ATAPI byte count low).
    pub lba_mid: [u8; 2],
    /// LBA high (cylinder high; ATAPI byte count high).
    pub lba_high: [u8; 2],
    /// Device/head.
    pub device: u8,
}

impl TaskFile {
    /// The 28-bit LBA (or CHS, converted with 16 heads and 63 sectors when bit 6 is clear).
    pub fn lba28(&self) -> u64 {
        if self.device & 0x40 != 0 {
            u64::from(self.device & 0x0f) << 24
                | u64::from(self.lba_high[0]) << 16
                | u64::from(self.lba_mid[0]) << 8
                | u64::from(self.lba_low[0])
        } else {
            let cyl = u64::from(self.lba_high[0]) << 8 | u64::from(self.lba_mid[0]);
            let head = u64::from(self.device & 0x0f);
            (cyl * 16 + head) * 63 + u64::from(self.lba_low[0]).saturating_sub(1)
        }
    }
    /// The 48-bit LBA.
    pub fn lba48(&self) -> u64 {
        u64::from(self.lba_high[1]) << 40
            | u64::from(self.lba_mid[1]) << 32
            | u64::from(self.lba_low[1]) << 24
            | u64::from(self.lba_high[0]) << 16
            | u64::from(self.lba_mid[0]) << 8
            | u64::from(self.lba_low[0])
    }
    /// The sector count of a 28-bit command (0 means 256).
    pub fn count28(&self) -> u32 {
        match self.nsector[0] {
            0 => 256,
            n => u32::from(n),
        }
    }
    /// The sector count of a 48-bit command (0 means 65536).
    pub fn count48(&self) -> u32 {
        match u32::from(self.nsector[1]) << 8 | u32::from(self.nsector[0]) {
            0 => 65536,
            n => n,
        }
    }
    /// Sets the signature of a device after reset (ATA, or ATAPI's 0x14/0xEB).
    fn signature(&mut self, packet: bool) {
        self.nsector[0] = 1;
        self.lba_low[0] = 1;
        (self.lba_mid[0], self.lba_high[0]) = if packet { (0x14, 0xeb) } else { (0, 0) };
        self.device &= 0xf0;
    }
}

/// One IDE channel: the task file, two device positions, the interrupt line.
pub struct Channel {
    name: &'static str,
    drives: [Option<Drive>; 2],
    tf: TaskFile,
    control: u8,
    irq: Option<Arc<dyn IrqLine>>,
    irq_raised: bool,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.name)
            .field("tf", &self.tf)
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// A channel with `master` (and no slave), interrupting on `irq`.
    pub fn new(name: &'static str, master: Option<Drive>, irq: Option<Arc<dyn IrqLine>>) -> Self {
        let mut c = Channel {
            name,
            drives: [master, None],
            tf: TaskFile::default(),
            control: 0,
            irq,
            irq_raised: false,
        };
        c.reset();
        c
    }

    fn selected(&self) -> usize {
        usize::from(self.tf.device & SELECT_DEV1 != 0)
    }

    fn reset(&mut self) {
        let packet = self.drives[0].as_ref().is_some_and(Drive::is_packet);
        for d in self.drives.iter_mut().flatten() {
            d.reset();
        }
        self.tf.signature(packet);
        self.lower();
    }

    fn raise(&mut self) {
        if self.control & CONTROL_NIEN == 0
            && let Some(l) = &self.irq
        {
            l.set_level(true);
            self.irq_raised = true;
        }
    }

    fn lower(&mut self) {
        if self.irq_raised {
            if let Some(l) = &self.irq {
                l.set_level(false);
            }
            self.irq_raised = false;
        }
    }

    fn status(&self) -> u8 {
        self.drives[self.selected()]
            .as_ref()
            .map_or(0, |d| d.status)
    }

    /// A read of command-block register `reg`.
    fn read_register(&mut self, reg: u64, data: &mut [u8]) {
        if self.drives.iter().all(Option::is_none) {
            data.fill(if reg == 0 { 0xff } else { 0 });
            return;
        }
        let hob = usize::from(self.control & CONTROL_HOB != 0);
        let sel = self.selected();
        let v = match reg {
            0 => {
                match &mut self.drives[sel] {
                    Some(d) => {
                        let irq = d.read_data(&mut self.tf, data);
                        if irq {
                            self.raise();
                        }
                    }
                    None => data.fill(0xff),
                }
                return;
            }
            1 => self.drives[sel].as_ref().map_or(0, |d| d.error),
            2 => self.tf.nsector[hob],
            3 => self.tf.lba_low[hob],
            4 => self.tf.lba_mid[hob],
            5 => self.tf.lba_high[hob],
            6 => self.tf.device,
            _ => {
                self.lower();
                self.status()
            }
        };
        data.fill(v);
    }

    /// A write of command-block register `reg`.
    fn write_register(&mut self, reg: u64, data: &[u8]) {
        let v = data[0];
        let shift = |r: &mut [u8; 2]| *r = [v, r[0]];
        match reg {
            0 => {
                let sel = self.selected();
                if let Some(d) = &mut self.drives[sel]
                    && d.write_data(&mut self.tf, data)
                {
                    self.raise();
                }
            }
            1 => shift(&mut self.tf.feature),
            2 => shift(&mut self.tf.nsector),
            3 => shift(&mut self.tf.lba_low),
            4 => shift(&mut self.tf.lba_mid),
            5 => shift(&mut self.tf.lba_high),
            6 => self.tf.device = v,
            _ => {
                self.control &= !CONTROL_HOB;
                let sel = self.selected();
                if self.drives[sel].is_some() {
                    self.lower();
                }
                if let Some(d) = &mut self.drives[sel]
                    && d.command(&mut self.tf, v)
                {
                    self.raise();
                }
            }
        }
    }

    fn write_control(&mut self, v: u8) {
        let was_reset = self.control & CONTROL_SRST != 0;
        self.control = v;
        if v & CONTROL_SRST != 0 {
            for d in self.drives.iter_mut().flatten() {
                d.status = status::BSY;
            }
        } else if was_reset {
            self.reset();
        }
        if v & CONTROL_NIEN != 0 {
            self.lower();
        }
    }
}

/// A channel's command block (8 ports) on the port bus.
#[derive(Debug)]
pub struct CommandPorts(pub Arc<Mutex<Channel>>);
/// A channel's device control / alternate status port on the port bus.
#[derive(Debug)]
pub struct ControlPort(pub Arc<Mutex<Channel>>);

fn lock(c: &Mutex<Channel>) -> std::sync::MutexGuard<'_, Channel> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

impl BusDevice for CommandPorts {
    fn label(&self) -> &str {
        "ide"
    }
    fn read(&mut self, _vcpu: usize, offset: u64, data: &mut [u8]) {
        lock(&self.0).read_register(offset, data);
    }
    fn write(&mut self, _vcpu: usize, offset: u64, data: &[u8]) {
        lock(&self.0).write_register(offset, data);
    }
}

impl BusDevice for ControlPort {
    fn label(&self) -> &str {
        "ide-control"
    }
    fn read(&mut self, _vcpu: usize, _offset: u64, data: &mut [u8]) {
        let c = lock(&self.0);
        let v = if c.drives.iter().all(Option::is_none) {
            0
        } else {
            c.status()
        };
        data.fill(v);
    }
    fn write(&mut self, _vcpu: usize, _offset: u64, data: &[u8]) {
        lock(&self.0).write_control(data[0]);
    }
}

/// A drive the command line asks for (`--drive file=PATH,if=ide` or `--cdrom PATH`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdeDriveSpec {
    /// The image.
    pub path: std::path::PathBuf,
    /// Disk or CD.
    pub media: Media,
    /// Refuse writes (a CD always does).
    pub readonly: bool,
}

/// The most drives: the masters of the two channels.
pub const MAX_DRIVES: usize = 2;

/// Why the controller could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum IdeError {
    /// An image could not be opened.
    #[error(transparent)]
    Drive(#[from] DriveError),
    /// More drives than positions.
    #[error("{0} IDE drives given: janus has {MAX_DRIVES} (the master of each channel)")]
    TooMany(usize),
    /// The ports or the PCI slot are taken.
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
    /// No PCI slot left.
    #[error(transparent)]
    Pci(#[from] crate::pci::PciError),
}

/// Puts the controller on `pio` and `pci` with `drives` (primary master, then secondary
/// master), interrupting through `platform`; nothing when `drives` is empty.
///
/// # Errors
/// An image that cannot be opened, more than [`MAX_DRIVES`] drives, or taken ports.
pub fn attach(
    pio: &mut crate::bus::Bus,
    platform: &crate::platform::Platform,
    pci: &Mutex<crate::pci::PciRoot>,
    drives: &[IdeDriveSpec],
) -> Result<(), IdeError> {
    if drives.is_empty() {
        return Ok(());
    }
    if drives.len() > MAX_DRIVES {
        return Err(IdeError::TooMany(drives.len()));
    }
    let mut opened = Vec::new();
    for d in drives {
        opened.push(Drive::open(&d.path, d.media, d.readonly)?);
    }
    let mut opened = opened.into_iter();
    for (name, port, control, irq) in [
        ("ide0", PRIMARY_PORT, PRIMARY_CONTROL_PORT, PRIMARY_IRQ),
        (
            "ide1",
            SECONDARY_PORT,
            SECONDARY_CONTROL_PORT,
            SECONDARY_IRQ,
        ),
    ] {
        let ch = Arc::new(Mutex::new(Channel::new(
            name,
            opened.next(),
            Some(platform.isa_irq(irq)),
        )));
        pio.insert(
            u64::from(port),
            COMMAND_PORTS_LEN,
            Arc::new(Mutex::new(CommandPorts(ch.clone()))),
        )?;
        pio.insert(u64::from(control), 1, Arc::new(Mutex::new(ControlPort(ch))))?;
    }
    pci.lock()
        .unwrap_or_else(|p| p.into_inner())
        .add(Arc::new(Mutex::new(IdeFunction::default())))?;
    Ok(())
}

/// The controller's PCI function: identity only (the channels are at their legacy ports).
#[derive(Debug)]
pub struct IdeFunction {
    config: ConfigSpace,
}

/// The IDE timing registers of the primary (0x40) and secondary (0x42) channel: bit 15 is the
/// channel's decode enable, which Linux's ata_piix checks before it probes a channel.
pub const IDETIM: [usize; 2] = [0x40, 0x42];
/// IDETIM's decode enable bit.
pub const IDETIM_DECODE_ENABLE: u16 = 0x8000;

impl Default for IdeFunction {
    fn default() -> Self {
        let mut config = ConfigSpace::new(PCI_ID.0, PCI_ID.1, PCI_CLASS, 0);
        // Both channels decoding, as firmware leaves them (SeaBIOS writes 0x8000 to both), so
        // that a kernel booted without firmware finds them; the guest may rewrite them.
        for r in IDETIM {
            config.set(r, &IDETIM_DECODE_ENABLE.to_le_bytes());
            config.set_wmask(r, &[0xff, 0xff]);
        }
        IdeFunction { config }
    }
}

impl PciFunction for IdeFunction {
    fn label(&self) -> &str {
        "piix3-ide"
    }
    fn config(&self) -> &ConfigSpace {
        &self.config
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }
}

#[cfg(test)]
mod tests;
