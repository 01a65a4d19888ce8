//! PCI: one root bus (bus 0) behind a host bridge, reached through configuration mechanism #1
//! (ports 0xCF8/0xCFC) and PCIe ECAM (an MMIO window announced in the ACPI MCFG table), and the
//! BARs of its functions routed to them wherever the guest places them.
//!
//! - [`PciFunction`]: a function with a [`ConfigSpace`] and its BAR accesses.
//! - [`PciRoot`]: the bus: slot 0 is the host bridge ([`HostBridge`]); config accesses by
//!   (device, register) from either mechanism read and write the same bytes; after each config
//!   write it recomputes where every function's BARs decode and rebuilds its BAR buses, so a BAR
//!   the guest moves (or turns off in the command register) moves its MMIO or port range.
//! - On the machine's buses: [`ConfigPorts`] at 0xCF8-0xCFF, [`Ecam`] over the ECAM window,
//!   and [`BarWindow`]s over the board's device MMIO and port pools, which pass accesses to
//!   the BAR buses.
//!
//! Lock order: the root, then a BAR's device. A function never calls back into the root.
//! Functions are single-function devices (function 0); only bus 0 exists.

pub mod config;
pub mod irq;
pub mod msix;

use std::sync::{Arc, Mutex};

use crate::bus::{Bus, BusDevice};
pub use config::{Bar, BarError, BarKind, ConfigSpace};
pub use irq::{MsiSink, PciInterrupts, SharedIntx};

/// Config mechanism #1's CONFIG_ADDRESS (dword) and CONFIG_DATA (0xCFC-0xCFF) ports.
pub const CONFIG_ADDRESS_PORT: u16 = 0xcf8;
/// The config ports' count (0xCF8-0xCFF).
pub const CONFIG_PORTS_LEN: u64 = 8;
/// ECAM's size for one bus: 32 devices x 8 functions x 4 KiB.
pub const ECAM_BUS_SIZE: u64 = 1 << 20;
/// Slots on a bus.
pub const NR_SLOTS: usize = 32;
/// The host bridge's vendor (Red Hat, Inc.) and device (QEMU's generic PCIe host bridge): a
/// host bridge with no chipset registers, which guests know to be such.
pub const HOST_BRIDGE_ID: (u16, u16) = (0x1b36, 0x0008);
/// The host bridge's subsystem vendor and id: QEMU's (Red Hat/Qumranet 0x1af4, "QEMU virtual
/// machine" 0x1100), which QEMU gives its devices and SeaBIOS looks for at 00:00.0 before it
/// reads fw_cfg.
pub const HOST_BRIDGE_SUBSYSTEM: (u16, u16) = (0x1af4, 0x1100);
/// Class code of a host bridge (bridge device, host bridge).
pub const CLASS_HOST_BRIDGE: u32 = 0x06_0000;

/// A PCI function on the root bus.
pub trait PciFunction: Send {
    /// A short name for logs and errors.
    fn label(&self) -> &str;
    /// Its configuration space.
    fn config(&self) -> &ConfigSpace;
    /// Its configuration space, for writes.
    fn config_mut(&mut self) -> &mut ConfigSpace;
    /// A guest read of config space at `offset` (a device with registers of its own there, as
    /// MSI-X or virtio capabilities, overrides it).
    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        self.config().read(offset, data);
    }
    /// A guest write of config space at `offset`.
    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config_mut().write(offset, data);
    }
    /// A read of `data.len()` bytes at `offset` into BAR `bar` (a function without BARs keeps
    /// this open-bus answer: all ones).
    fn bar_read(&mut self, vcpu: usize, bar: usize, offset: u64, data: &mut [u8]) {
        let _ = (vcpu, bar, offset);
        data.fill(0xff);
    }
    /// A write of `data` at `offset` into BAR `bar` (dropped by a function without BARs).
    fn bar_write(&mut self, vcpu: usize, bar: usize, offset: u64, data: &[u8]) {
        let _ = (vcpu, bar, offset, data);
    }
    /// The function joined the bus: these are its interrupts (its INTx pin as its config space
    /// names it, swizzled onto the board's INTx GSIs, and MSI). A function that never
    /// interrupts ignores them.
    fn set_interrupts(&mut self, irq: PciInterrupts) {
        let _ = irq;
    }
}

/// A function as the root holds it.
pub type SharedFunction = Arc<Mutex<dyn PciFunction>>;

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The host bridge at 00:00.0: a header and nothing else (no BARs, no chipset registers).
#[derive(Debug)]
pub struct HostBridge {
    config: ConfigSpace,
}

impl Default for HostBridge {
    fn default() -> Self {
        let mut config = ConfigSpace::new(HOST_BRIDGE_ID.0, HOST_BRIDGE_ID.1, CLASS_HOST_BRIDGE, 0);
        config.set(
            config::reg::SUBSYSTEM_VENDOR_ID,
            &HOST_BRIDGE_SUBSYSTEM.0.to_le_bytes(),
        );
        config.set(
            config::reg::SUBSYSTEM_ID,
            &HOST_BRIDGE_SUBSYSTEM.1.to_le_bytes(),
        );
        HostBridge { config }
    }
}

impl PciFunction for HostBridge {
    fn label(&self) -> &str {
        "pci-host-bridge"
    }
    fn config(&self) -> &ConfigSpace {
        &self.config
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }
}

/// One BAR of a function on a BAR bus.
struct BarRegion {
    label: String,
    function: SharedFunction,
    bar: usize,
}

impl BusDevice for BarRegion {
    fn label(&self) -> &str {
        &self.label
    }
    fn read(&mut self, vcpu: usize, offset: u64, data: &mut [u8]) {
        lock(&self.function).bar_read(vcpu, self.bar, offset, data);
    }
    fn write(&mut self, vcpu: usize, offset: u64, data: &[u8]) {
        lock(&self.function).bar_write(vcpu, self.bar, offset, data);
    }
}

/// Why a function cannot join the bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciError {
    /// The slot is taken or does not exist.
    #[error("PCI slot {0} is taken or does not exist")]
    Slot(usize),
    /// Every slot is taken.
    #[error("no free PCI slot")]
    Full,
}

/// Root bus 0 and its functions.
pub struct PciRoot {
    slots: Vec<Option<SharedFunction>>,
    /// Mechanism #1's CONFIG_ADDRESS latch.
    address: u32,
    /// Where memory BARs decode now.
    mmio_bars: Bus,
    /// Where I/O BARs decode now.
    pio_bars: Bus,
    /// BARs placed over another (a guest's mistake): not decoded.
    bar_conflicts: u64,
    /// The INTA-INTD lines before swizzling.
    intx: Vec<Arc<SharedIntx>>,
    /// Where MSIs go.
    msi: Option<Arc<dyn MsiSink>>,
}

impl std::fmt::Debug for PciRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciRoot")
            .field("mmio_bars", &self.mmio_bars)
            .field("pio_bars", &self.pio_bars)
            .finish_non_exhaustive()
    }
}

impl Default for PciRoot {
    fn default() -> Self {
        let mut slots: Vec<Option<SharedFunction>> = vec![None; NR_SLOTS];
        slots[0] = Some(Arc::new(Mutex::new(HostBridge::default())));
        PciRoot {
            slots,
            address: 0,
            mmio_bars: Bus::new("pci-mmio"),
            pio_bars: Bus::new("pci-pio"),
            bar_conflicts: 0,
            intx: Vec::new(),
            msi: None,
        }
    }
}

impl PciRoot {
    /// A root bus with the host bridge in slot 0, shared by the config ports, ECAM and the BAR
    /// windows.
    pub fn shared() -> Arc<Mutex<PciRoot>> {
        Arc::new(Mutex::new(PciRoot::default()))
    }

    /// Wires the functions' interrupts: INTA-INTD before swizzling (slot `s` pin `p`, 0 for
    /// INTA, drives `intx[(s + p) % 4]`, as the DSDT's `_PRT` says) and MSIs to `msi`.
    pub fn wire_interrupts(
        &mut self,
        intx: Vec<Arc<dyn crate::devices::IrqLine>>,
        msi: Arc<dyn MsiSink>,
    ) {
        self.intx = intx.into_iter().map(SharedIntx::new).collect();
        self.msi = Some(msi);
    }

    /// Plugs `function` into the lowest free slot, hands it its interrupts and returns the
    /// slot.
    ///
    /// # Errors
    /// [`PciError::Full`] when every slot is taken.
    pub fn add(&mut self, function: SharedFunction) -> Result<usize, PciError> {
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(PciError::Full)?;
        {
            let mut f = lock(&function);
            let mut pin = [0u8; 1];
            f.config().read(config::reg::INTERRUPT_PIN, &mut pin);
            let intx = match pin[0] {
                p @ 1..=4 if !self.intx.is_empty() => {
                    Some(self.intx[(slot + usize::from(p) - 1) % self.intx.len()].clone())
                }
                _ => None,
            };
            f.set_interrupts(PciInterrupts::new(slot, intx, self.msi.clone()));
        }
        self.slots[slot] = Some(function);
        self.remap();
        Ok(slot)
    }

    /// The slots in use.
    pub fn slots(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|_| i))
    }

    /// BARs the guest placed over another (not decoded).
    pub fn bar_conflicts(&self) -> u64 {
        self.bar_conflicts
    }

    /// The function at bus 0, `device`, `function`, if any (only function 0 exists).
    fn function(&self, bus: u8, device: usize, function: u8) -> Option<&SharedFunction> {
        if bus != 0 || function != 0 {
            return None;
        }
        self.slots.get(device)?.as_ref()
    }

    /// A config read of `device`'s register `offset` on `bus` (absent functions read all
    /// ones).
    pub fn config_read(
        &self,
        bus: u8,
        device: usize,
        function: u8,
        offset: usize,
        data: &mut [u8],
    ) {
        match self.function(bus, device, function) {
            Some(f) => lock(f).config_read(offset, data),
            None => data.fill(0xff),
        }
    }

    /// A config write; a write that may move a BAR (the command register or a BAR) remaps.
    pub fn config_write(
        &mut self,
        bus: u8,
        device: usize,
        function: u8,
        offset: usize,
        data: &[u8],
    ) {
        let Some(f) = self.function(bus, device, function) else {
            return;
        };
        lock(f).config_write(offset, data);
        let touches = |lo: usize, hi: usize| offset < hi && offset + data.len() > lo;
        if touches(config::reg::COMMAND, config::reg::COMMAND + 2)
            || touches(config::reg::BAR0, config::reg::BAR0 + 4 * config::NR_BARS)
        {
            self.remap();
        }
    }

    /// Rebuilds the BAR buses from where every function's BARs decode now.
    fn remap(&mut self) {
        let mut mmio = Bus::new("pci-mmio");
        let mut pio = Bus::new("pci-pio");
        for (slot, f) in self.slots.iter().enumerate() {
            let Some(f) = f else { continue };
            let (label, bars) = {
                let g = lock(f);
                let c = g.config();
                let bars: Vec<(usize, Bar, u64)> = (0..config::NR_BARS)
                    .filter_map(|i| Some((i, c.bars()[i]?, c.bar_address(i)?)))
                    .collect();
                (g.label().to_string(), bars)
            };
            for (i, bar, addr) in bars {
                let region = Arc::new(Mutex::new(BarRegion {
                    label: format!("{label} (00:{slot:02x}.0 BAR {i})"),
                    function: f.clone(),
                    bar: i,
                }));
                let bus = if bar.kind == BarKind::Io {
                    &mut pio
                } else {
                    &mut mmio
                };
                if bus.insert(addr, bar.size, region).is_err() {
                    self.bar_conflicts += 1;
                }
            }
        }
        self.mmio_bars = mmio;
        self.pio_bars = pio;
    }
}

/// Mechanism #1 on ports 0xCF8-0xCFF: a dword write to 0xCF8 latches CONFIG_ADDRESS (enable
/// bit 31, bus 23:16, device 15:11, function 10:8, register 7:2); accesses to 0xCFC-0xCFF of
/// any width reach that register plus their offset while the enable bit is set. Narrower
/// accesses to 0xCF8-0xCFB are not CONFIG_ADDRESS (they read all ones and are dropped; 0xCF9 is
/// a chipset's reset register on PCs).
///
/// A byte write to 0xCF9 is the PIIX/ICH reset control register: bit 2 set resets the machine
/// (SeaBIOS's reboot writes 0x02 then 0x06), when a stop handle is given.
pub struct ConfigPorts(
    pub Arc<Mutex<PciRoot>>,
    pub Option<Arc<crate::control::Control>>,
);

impl std::fmt::Debug for ConfigPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigPorts")
    }
}

/// The reset control register's offset from CONFIG_ADDRESS (port 0xCF9).
pub const RESET_CONTROL_OFFSET: u64 = 1;
/// The reset control register's "reset CPU" bit.
pub const RESET_CONTROL_RST_CPU: u8 = 4;

impl ConfigPorts {
    /// The latched address's target: (bus, device, function, register + `offset`).
    fn target(address: u32, offset: u64) -> Option<(u8, usize, u8, usize)> {
        (address & 1 << 31 != 0).then_some((
            (address >> 16) as u8,
            ((address >> 11) & 0x1f) as usize,
            ((address >> 8) & 7) as u8,
            (address & 0xfc) as usize + offset as usize,
        ))
    }
}

impl BusDevice for ConfigPorts {
    fn label(&self) -> &str {
        "pci-config"
    }
    fn read(&mut self, _vcpu: usize, offset: u64, data: &mut [u8]) {
        let root = lock(&self.0);
        match offset {
            0 if data.len() == 4 => data.copy_from_slice(&root.address.to_le_bytes()),
            4..8 => match Self::target(root.address, offset - 4) {
                Some((b, d, f, r)) => root.config_read(b, d, f, r, data),
                None => data.fill(0xff),
            },
            _ => data.fill(0xff),
        }
    }
    fn write(&mut self, _vcpu: usize, offset: u64, data: &[u8]) {
        let mut root = lock(&self.0);
        match offset {
            0 if data.len() == 4 => {
                root.address =
                    u32::from_le_bytes([data[0], data[1], data[2], data[3]]) & 0x80ff_fffc;
            }
            4..8 => {
                if let Some((b, d, f, r)) = Self::target(root.address, offset - 4) {
                    root.config_write(b, d, f, r, data);
                }
            }
            RESET_CONTROL_OFFSET if data.len() == 1 && data[0] & RESET_CONTROL_RST_CPU != 0 => {
                if let Some(c) = &self.1 {
                    c.request_stop(crate::control::StopReason::Reset(
                        "reset control register 0xCF9",
                    ));
                }
            }
            _ => {}
        }
    }
}

/// PCIe ECAM over bus 0: offset = device << 15 | function << 12 | register.
#[derive(Debug)]
pub struct Ecam(pub Arc<Mutex<PciRoot>>);

impl Ecam {
    fn target(offset: u64) -> (u8, usize, u8, usize) {
        (
            (offset >> 20) as u8,
            ((offset >> 15) & 0x1f) as usize,
            ((offset >> 12) & 7) as u8,
            (offset & 0xfff) as usize,
        )
    }
}

impl BusDevice for Ecam {
    fn label(&self) -> &str {
        "pci-ecam"
    }
    fn read(&mut self, _vcpu: usize, offset: u64, data: &mut [u8]) {
        let (b, d, f, r) = Self::target(offset);
        lock(&self.0).config_read(b, d, f, r, data);
    }
    fn write(&mut self, _vcpu: usize, offset: u64, data: &[u8]) {
        let (b, d, f, r) = Self::target(offset);
        lock(&self.0).config_write(b, d, f, r, data);
    }
}

/// A window of the machine's MMIO or port space where BARs may decode: an access goes to the
/// BAR there, if any (else all ones, dropped).
#[derive(Debug)]
pub struct BarWindow {
    root: Arc<Mutex<PciRoot>>,
    base: u64,
    io: bool,
}

impl BarWindow {
    /// The memory BARs in a window starting at `base`.
    pub fn memory(root: Arc<Mutex<PciRoot>>, base: u64) -> Self {
        BarWindow {
            root,
            base,
            io: false,
        }
    }

    /// The I/O BARs in a window starting at `base`.
    pub fn io(root: Arc<Mutex<PciRoot>>, base: u64) -> Self {
        BarWindow {
            root,
            base,
            io: true,
        }
    }
}

impl BusDevice for BarWindow {
    fn label(&self) -> &str {
        if self.io {
            "pci-io-window"
        } else {
            "pci-mmio-window"
        }
    }
    fn read(&mut self, vcpu: usize, offset: u64, data: &mut [u8]) {
        let root = lock(&self.root);
        let bus = if self.io {
            &root.pio_bars
        } else {
            &root.mmio_bars
        };
        bus.read(vcpu, self.base + offset, data);
    }
    fn write(&mut self, vcpu: usize, offset: u64, data: &[u8]) {
        let root = lock(&self.root);
        let bus = if self.io {
            &root.pio_bars
        } else {
            &root.mmio_bars
        };
        bus.write(vcpu, self.base + offset, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A function with a 4 KiB memory BAR and a 32-byte I/O BAR that remembers writes.
    struct Scratch {
        config: ConfigSpace,
        mem: Vec<u8>,
        irq: PciInterrupts,
    }

    impl PciFunction for Scratch {
        fn label(&self) -> &str {
            "scratch"
        }
        fn config(&self) -> &ConfigSpace {
            &self.config
        }
        fn config_mut(&mut self) -> &mut ConfigSpace {
            &mut self.config
        }
        fn bar_read(&mut self, _vcpu: usize, bar: usize, offset: u64, data: &mut [u8]) {
            for (i, d) in data.iter_mut().enumerate() {
                *d = if bar == 0 {
                    self.mem[offset as usize + i]
                } else {
                    0x10 + offset as u8
                };
            }
        }
        fn bar_write(&mut self, _vcpu: usize, bar: usize, offset: u64, data: &[u8]) {
            if bar == 0 {
                self.mem[offset as usize..][..data.len()].copy_from_slice(data);
            }
            // Any write to the I/O BAR raises its interrupt, a write of 0 lowers it.
            if bar == 1 {
                if data.iter().any(|&b| b != 0) {
                    self.irq.raise(&mut self.config);
                } else {
                    self.irq.lower(&mut self.config);
                }
            }
        }
        fn set_interrupts(&mut self, irq: PciInterrupts) {
            self.irq = irq;
        }
    }

    fn scratch() -> SharedFunction {
        let mut config = ConfigSpace::new(0x1af4, 0x10ff, 0xff_0000, 0);
        config
            .add_bar(
                0,
                Bar {
                    size: 0x1000,
                    kind: BarKind::Memory32,
                },
            )
            .unwrap();
        config
            .add_bar(
                1,
                Bar {
                    size: 0x20,
                    kind: BarKind::Io,
                },
            )
            .unwrap();
        config.set_interrupt_pin(1);
        irq::add_msi_capability(&mut config);
        Arc::new(Mutex::new(Scratch {
            config,
            mem: vec![0; 0x1000],
            irq: PciInterrupts::default(),
        }))
    }

    /// INTA of slots 1 and 2 lands on the second and third lines (the `_PRT`'s swizzle); with
    /// MSI enabled the same event is a message instead.
    #[test]
    fn functions_get_swizzled_intx_lines_and_msi() {
        use std::sync::atomic::{AtomicBool, Ordering};
        struct Line(AtomicBool);
        impl crate::devices::IrqLine for Line {
            fn set_level(&self, high: bool) {
                self.0.store(high, Ordering::SeqCst);
            }
        }
        struct Msis(Mutex<Vec<(u64, u32)>>);
        impl MsiSink for Msis {
            fn send(&self, address: u64, data: u32) {
                self.0.lock().unwrap().push((address, data));
            }
        }
        let lines: Vec<Arc<Line>> = (0..4)
            .map(|_| Arc::new(Line(AtomicBool::new(false))))
            .collect();
        let msis = Arc::new(Msis(Mutex::new(Vec::new())));
        let root = PciRoot::shared();
        lock(&root).wire_interrupts(
            lines
                .iter()
                .map(|l| l.clone() as Arc<dyn crate::devices::IrqLine>)
                .collect(),
            msis.clone(),
        );
        let s1 = lock(&root).add(scratch()).unwrap();
        let s2 = lock(&root).add(scratch()).unwrap();
        assert_eq!((s1, s2), (1, 2));
        let mut ecam = Ecam(root.clone());
        let mut io = BarWindow::io(root.clone(), 0xc000);
        for (slot, port) in [(s1, 0xc000u64), (s2, 0xc020)] {
            let f = (slot as u64) << 15;
            ecam.write(0, f | 0x14, &(port as u32).to_le_bytes());
            ecam.write(0, f | 0x04, &(config::command::IO).to_le_bytes());
        }
        io.write(0, 0x00, &[1]);
        let high = || {
            lines
                .iter()
                .map(|l| l.0.load(Ordering::SeqCst))
                .collect::<Vec<_>>()
        };
        assert_eq!(high(), [false, true, false, false]);
        io.write(0, 0x20, &[1]);
        assert_eq!(high(), [false, true, true, false]);
        io.write(0, 0x00, &[0]);
        io.write(0, 0x20, &[0]);
        assert_eq!(high(), [false; 4]);
        // Slot 2 with MSI enabled and bus mastering: a message, no INTx.
        let f = (s2 as u64) << 15;
        let o = irq::MSI_CAP_OFFSET as u64;
        ecam.write(0, f | (o + 4), &0xfee0_0000u32.to_le_bytes());
        ecam.write(0, f | (o + 12), &0x0031u16.to_le_bytes());
        ecam.write(0, f | (o + 2), &1u16.to_le_bytes());
        ecam.write(
            0,
            f | 0x04,
            &(config::command::IO | config::command::BUS_MASTER).to_le_bytes(),
        );
        io.write(0, 0x20, &[1]);
        assert_eq!(high(), [false; 4]);
        assert_eq!(*msis.0.lock().unwrap(), vec![(0xfee0_0000, 0x31)]);
    }

    fn cf8(ports: &mut ConfigPorts, dev: u32, reg: u32) {
        ports.write(0, 0, &(1u32 << 31 | dev << 11 | reg).to_le_bytes());
    }

    #[test]
    fn mechanism_1_and_ecam_read_the_same_bytes() {
        let root = PciRoot::shared();
        lock(&root).add(scratch()).unwrap();
        let mut ports = ConfigPorts(root.clone(), None);
        let mut ecam = Ecam(root.clone());
        for dev in [0u32, 1, 2] {
            for reg in (0..0x40).step_by(4) {
                cf8(&mut ports, dev, reg);
                let mut a = [0u8; 4];
                ports.read(0, 4, &mut a);
                let mut b = [0u8; 4];
                ecam.read(0, u64::from(dev << 15 | reg), &mut b);
                assert_eq!(a, b, "device {dev} register {reg:#x}");
                // Byte and word accesses at offsets within CONFIG_DATA.
                for off in 0..4u64 {
                    let mut one = [0u8; 1];
                    ports.read(0, 4 + off, &mut one);
                    assert_eq!(one[0], a[off as usize]);
                }
                let mut w = [0u8; 2];
                ports.read(0, 6, &mut w);
                assert_eq!(w, [a[2], a[3]]);
            }
        }
        // The host bridge's IDs and class; an empty slot reads all ones.
        cf8(&mut ports, 0, 0);
        let mut id = [0u8; 4];
        ports.read(0, 4, &mut id);
        assert_eq!(u32::from_le_bytes(id), 0x0008_1b36);
        let mut class = [0u8; 4];
        ecam.read(0, 8, &mut class);
        assert_eq!(u32::from_le_bytes(class) >> 8, CLASS_HOST_BRIDGE);
        ecam.read(0, 2 << 15, &mut id);
        assert_eq!(id, [0xff; 4]);
        // CONFIG_ADDRESS reads back; the enable bit off reads all ones from CONFIG_DATA.
        ports.write(0, 0, &0x0000_0800u32.to_le_bytes());
        ports.read(0, 0, &mut id);
        assert_eq!(u32::from_le_bytes(id), 0x800);
        ports.read(0, 4, &mut id);
        assert_eq!(id, [0xff; 4]);
        // A byte write to 0xCF8 is not CONFIG_ADDRESS.
        ports.write(0, 3, &[0x01]);
        ports.read(0, 0, &mut id);
        assert_eq!(u32::from_le_bytes(id), 0x800);
    }

    #[test]
    fn bars_size_through_both_mechanisms_and_move_their_ranges() {
        let root = PciRoot::shared();
        let slot = lock(&root).add(scratch()).unwrap() as u32;
        let mut ports = ConfigPorts(root.clone(), None);
        let mut ecam = Ecam(root.clone());
        let mut window = BarWindow::memory(root.clone(), 0xc000_0000);
        let mut iowin = BarWindow::io(root.clone(), 0xc000);
        // Sizing: all ones, read back the mask.
        cf8(&mut ports, slot, 0x10);
        ports.write(0, 4, &[0xff; 4]);
        let mut v = [0u8; 4];
        ports.read(0, 4, &mut v);
        assert_eq!(u32::from_le_bytes(v), 0xffff_f000);
        ecam.write(0, u64::from(slot << 15 | 0x14), &[0xff; 4]);
        ecam.read(0, u64::from(slot << 15 | 0x14), &mut v);
        assert_eq!(u32::from_le_bytes(v), 0xffff_ffe1);
        // Place BAR 0 at 0xc000_1000 and BAR 1 at port 0xc020; decode once enabled.
        ecam.write(
            0,
            u64::from(slot << 15 | 0x10),
            &0xc000_1000u32.to_le_bytes(),
        );
        ecam.write(0, u64::from(slot << 15 | 0x14), &0xc020u32.to_le_bytes());
        window.write(0, 0x1008, &[0xab]);
        let mut b = [0u8; 1];
        window.read(0, 0x1008, &mut b);
        assert_eq!(b, [0xff], "memory decoding is off");
        cf8(&mut ports, slot, 0x04);
        ports.write(
            0,
            4,
            &(config::command::MEMORY | config::command::IO).to_le_bytes()[..2],
        );
        window.write(0, 0x1008, &[0xab]);
        window.read(0, 0x1008, &mut b);
        assert_eq!(b, [0xab]);
        iowin.read(0, 0x23, &mut b);
        assert_eq!(b, [0x13]);
        // Move BAR 0: the old range is gone, the new one holds the same device.
        ecam.write(
            0,
            u64::from(slot << 15 | 0x10),
            &0xc010_0000u32.to_le_bytes(),
        );
        window.read(0, 0x1008, &mut b);
        assert_eq!(b, [0xff]);
        window.read(0, 0x10_0008, &mut b);
        assert_eq!(b, [0xab]);
        assert_eq!(lock(&root).bar_conflicts(), 0);
    }
}
