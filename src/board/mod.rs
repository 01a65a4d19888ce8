//! The board: the PC's wiring in one place. Every port, MMIO range and interrupt line a device
//! sits at is a named constant here; [`Board::build`] puts the devices on the buses and wires
//! their interrupt lines; [`Resources`] hands out what later devices ask for (MMIO windows below
//! and above 4 GiB, port ranges, GSIs); [`tables_config`] describes the board to the ACPI and MP
//! tables.
//!
//! ```text
//! ports   0x20-0x21 PIC master      0x40-0x43 PIT       0x60/0x64 i8042   0x61 system port B
//!         0x70-0x71 CMOS/RTC        0x80 POST           0x92 port 92      0xa0-0xa1 PIC slave
//!         0xe9 debugcon             0xf4 debug-exit     0x3f8-0x3ff COM1  0x4d0-0x4d1 ELCR
//!         0x402 debugcon (firmware) 0x510-0x51b fw_cfg
//!         0x600-0x60b ACPI PM       0xcf8-0xcff PCI config mechanism #1
//!         0xc000-0xffff             device I/O pool (all of it the PCI I/O window)
//! MMIO    0xc000_0000-0xfebf_ffff   device MMIO pool (32-bit): PCI ECAM (bus 0, 1 MiB) at its
//!                                   start, the PCI 32-bit window (512 MiB) at its end,
//!                                   0xdec0_0000-0xfebf_ffff
//!         0xfec0_0000 IOAPIC        0xfee0_0000 LAPIC   BIOS ROM ending at 4 GiB
//!         from the first GiB boundary above RAM: 64 GiB of device MMIO pool (64-bit), the PCI
//!         64-bit window (32 GiB) at its start
//! IRQs    0 PIT (IOAPIC pin 2)      1 i8042 (none yet)  4 COM1            8 RTC   9 ACPI SCI
//!         GSI 16-23: device pool (IOAPIC pins above the ISA ones); PCI INTA-D on 16-19, and
//!         on 8259 IRQs 10, 11, 10, 11 for an OS in PIC mode
//! ```
//!
//! With `--irqchip kernel`, KVM owns the PIC, IOAPIC and LAPIC ranges: only the PIT and the
//! other devices are janus's.

pub mod alloc;

use std::sync::{Arc, Mutex};

use crate::bus::{Bus, BusDevice, BusError};
use crate::clock::Clock;
use crate::control::Control;
use crate::devices::acpi_pm::AcpiPm;
use crate::devices::cmos::{Cmos, RtcBase};
use crate::devices::debugcon::DebugCon;
use crate::devices::exit_port::DebugExit;
use crate::devices::i8042::{I8042, I8042Port, Port92};
use crate::devices::ioapic::IOAPIC_PINS;
use crate::devices::post::Post;
use crate::devices::serial::Serial;
use crate::layout::{HIGH_RAM_BASE, LOW_RAM_END_MAX, Layout};
use crate::pci::{BarWindow, CONFIG_ADDRESS_PORT, CONFIG_PORTS_LEN, ConfigPorts, Ecam, PciRoot};
use crate::platform::{IrqchipMode, Platform};

pub use alloc::{AllocError, RangeAllocator, Resources};

/// COM1, the 16550A UART on stdio: its eight registers.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1's register count.
pub const COM1_PORT_LEN: u64 = 8;
/// COM1's ISA interrupt line.
pub const COM1_IRQ: u8 = 4;
/// The debug-exit port: a byte written ends the run with that status (the guest test protocol).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
/// Bochs/QEMU's debug console: bytes written go to `--debugcon`.
pub const DEBUGCON_PORT: u16 = 0xe9;
/// QEMU's firmware debug port, where SeaBIOS writes its log once a read of it returns 0xe9:
/// the debug console answers here too.
pub const FIRMWARE_DEBUG_PORT: u16 = 0x402;
/// The PC's POST diagnostic port (the default of `--post-port`).
pub const POST_PORT: u16 = 0x80;
/// The CMOS/RTC's index and data ports.
pub const RTC_PORT: u16 = 0x70;
/// The CMOS/RTC's port count.
pub const RTC_PORT_LEN: u64 = 2;
/// The RTC's ISA interrupt line (its periodic interrupt).
pub const RTC_IRQ: u8 = 8;
/// The i8042 keyboard controller's data port.
pub const I8042_DATA_PORT: u16 = 0x60;
/// The i8042's command and status port (0xFE written there resets the machine).
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// System control port A ("port 92": fast A20 and reset).
pub const PORT92: u16 = 0x92;
/// The 8254 PIT's three counters and mode register.
pub const PIT_PORT: u16 = 0x40;
/// The PIT's port count.
pub const PIT_PORT_LEN: u64 = 4;
/// The PIT's ISA interrupt line (channel 0; IOAPIC pin 2 by the MADT's override).
pub const PIT_IRQ: u8 = 0;
/// System control port B (PIT channel 2's gate and output, the speaker).
pub const SYSTEM_PORT_B: u16 = 0x61;
/// The master 8259A's command and data ports.
pub const PIC_MASTER_PORT: u16 = 0x20;
/// The slave 8259A's command and data ports.
pub const PIC_SLAVE_PORT: u16 = 0xa0;
/// The edge/level control registers of both 8259As.
pub const PIC_ELCR_PORT: u16 = 0x4d0;
/// Each of the three PIC ranges' port count.
pub const PIC_PORT_LEN: u64 = 2;
/// The ACPI power-management block (PM1a event and control, the PM timer).
pub const ACPI_PM_PORT: u16 = crate::devices::acpi_pm::PM_BASE;
/// The ACPI PM block's port count.
pub const ACPI_PM_PORT_LEN: u64 = crate::devices::acpi_pm::PM_LEN;
/// The ACPI SCI's ISA interrupt line (level-triggered, active high).
pub const SCI_IRQ: u8 = 9;
/// The IOAPIC's registers.
pub const IOAPIC_ADDR: u64 = crate::devices::ioapic::IOAPIC_BASE;
/// The IOAPIC's MMIO size.
pub const IOAPIC_LEN: u64 = crate::devices::ioapic::IOAPIC_SIZE;
/// The local APICs' registers (each vCPU sees its own).
pub const LAPIC_ADDR: u64 = crate::devices::lapic::APIC_DEFAULT_BASE;
/// The local APICs' MMIO size.
pub const LAPIC_LEN: u64 = 0x1000;

/// The 32-bit device MMIO pool: from the start of the MMIO hole to the IOAPIC.
pub const MMIO32_START: u64 = LOW_RAM_END_MAX;
/// One past the 32-bit device MMIO pool.
pub const MMIO32_END: u64 = IOAPIC_ADDR;
/// The 64-bit device MMIO pool starts at the first multiple of this above RAM.
pub const MMIO64_ALIGN: u64 = 1 << 30;
/// The 64-bit device MMIO pool's size.
pub const MMIO64_LEN: u64 = 64 << 30;
/// The device port pool (above every legacy port, as PC firmware places PCI I/O BARs).
pub const PIO_POOL_START: u16 = 0xc000;
/// One past the device port pool.
pub const PIO_POOL_END: u64 = 0x1_0000;
/// The first GSI of the device pool: the IOAPIC pins above the 16 ISA ones.
pub const GSI_POOL_START: u32 = 16;
/// One past the last device GSI.
pub const GSI_POOL_END: u32 = IOAPIC_PINS as u32;

/// The ECAM (MMCONFIG) window's size: bus 0 only.
pub const PCI_ECAM_LEN: u64 = crate::pci::ECAM_BUS_SIZE;
/// The PCI root bridge's 32-bit memory window (BARs below 4 GiB), taken from the 32-bit pool.
pub const PCI_MMIO32_LEN: u64 = 512 << 20;
/// The PCI root bridge's 64-bit memory window, taken from the 64-bit pool.
pub const PCI_MMIO64_LEN: u64 = 32 << 30;
/// PCI INTA-INTD: four GSIs from the pool, swizzled over the slots (`_PRT`).
pub const PCI_INTX_LINES: usize = 4;
/// The 8259 IRQs that INTA-INTD also drive, for an OS in PIC mode (`_PIC(0)`): free ISA lines
/// (10 and 11), level-triggered as the OS sets them in the ELCR.
pub const PCI_INTX_PIC_IRQS: [u8; PCI_INTX_LINES] = [10, 11, 10, 11];

/// Where the PCI root bridge's windows and interrupt lines are, as taken from the board's pools
/// (before the ACPI tables are built, which describe them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciLayout {
    /// The ECAM window's base (bus 0, [`PCI_ECAM_LEN`] bytes).
    pub ecam: u64,
    /// The 32-bit memory window: start, end (exclusive).
    pub mmio32: (u64, u64),
    /// The 64-bit memory window: start, end (exclusive).
    pub mmio64: (u64, u64),
    /// The I/O window for I/O BARs: start, end (exclusive).
    pub io: (u64, u64),
    /// The GSIs of INTA-INTD before swizzling: slot `s` pin `p` (0 = INTA) is
    /// `intx_gsis[(s + p) % 4]`.
    pub intx_gsis: [u32; PCI_INTX_LINES],
    /// The 8259 IRQs of INTA-INTD before swizzling, for PIC mode.
    pub intx_pic_irqs: [u8; PCI_INTX_LINES],
}

impl PciLayout {
    /// Takes the ECAM window, the root bridge's windows and its INTx lines from `pools`.
    ///
    /// # Errors
    /// A pool too small (cannot happen with the board's fixed pools).
    pub fn allocate(pools: &mut Resources) -> Result<Self, AllocError> {
        let ecam = pools
            .mmio32
            .allocate(PCI_ECAM_LEN, PCI_ECAM_LEN, "pci-ecam")?;
        // The window ends where the IOAPIC starts: firmware that assigns BARs itself (SeaBIOS
        // takes them downwards from 0xFEC00000) puts them inside it.
        let m32 = pools.mmio32.reserve(
            MMIO32_END - PCI_MMIO32_LEN,
            PCI_MMIO32_LEN,
            "pci-mmio32-window",
        )?;
        let m64 = pools
            .mmio64
            .allocate(PCI_MMIO64_LEN, 1 << 30, "pci-mmio64-window")?;
        let (io_start, io_end) = (pools.pio.start(), pools.pio.end());
        pools
            .pio
            .reserve(io_start, io_end - io_start, "pci-io-window")?;
        let mut intx_gsis = [0; PCI_INTX_LINES];
        for (i, g) in intx_gsis.iter_mut().enumerate() {
            let label = format!("pci-int{}", char::from(b'a' + i as u8));
            *g = pools.gsi.allocate(1, 1, &label)? as u32;
        }
        Ok(PciLayout {
            ecam,
            mmio32: (m32, m32 + PCI_MMIO32_LEN),
            mmio64: (m64, m64 + PCI_MMIO64_LEN),
            io: (io_start, io_end),
            intx_gsis,
            intx_pic_irqs: PCI_INTX_PIC_IRQS,
        })
    }
}

/// The IOAPIC's APIC id on a machine with `nr_vcpus` vCPUs (the first id after theirs).
pub fn ioapic_id(nr_vcpus: usize) -> u8 {
    nr_vcpus as u8
}

/// What the ACPI and MP tables of a board with `nr_vcpus` vCPUs and PCI laid out as `pci`
/// describe.
pub fn tables_config(nr_vcpus: usize, pci: Option<PciLayout>) -> crate::acpi::TablesConfig {
    crate::acpi::TablesConfig {
        nr_vcpus,
        ioapic_id: ioapic_id(nr_vcpus),
        pci,
    }
}

impl Resources {
    /// The pools of a board whose RAM is laid out as `layout`.
    pub fn new(layout: &Layout) -> Self {
        let ram_top = HIGH_RAM_BASE + layout.high_ram;
        let mmio64 = ram_top.div_ceil(MMIO64_ALIGN) * MMIO64_ALIGN;
        Resources {
            mmio32: RangeAllocator::new("mmio32", MMIO32_START, MMIO32_END),
            mmio64: RangeAllocator::new("mmio64", mmio64, mmio64 + MMIO64_LEN),
            pio: RangeAllocator::new("pio", u64::from(PIO_POOL_START), PIO_POOL_END),
            gsi: RangeAllocator::new("gsi", u64::from(GSI_POOL_START), u64::from(GSI_POOL_END)),
        }
    }
}

/// The devices the machine made (they hold its output sinks and stop handle) that the board
/// puts on its buses.
pub struct LegacyDevices {
    /// COM1.
    pub serial: Arc<Mutex<Serial>>,
    /// The 0xe9 debug console.
    pub debugcon: Arc<Mutex<DebugCon>>,
    /// The POST port.
    pub post: Arc<Mutex<Post>>,
    /// Where the POST port is (`--post-port`).
    pub post_port: u16,
    /// The machine's stop handle (debug-exit, resets, ACPI power-off).
    pub control: Arc<Control>,
    /// Where the RTC's time of day starts (`--rtc base=`).
    pub rtc: RtcBase,
}

/// A wired board: its buses, its interrupt controllers and timers, and the resources left for
/// devices added later.
#[derive(Debug)]
pub struct Board {
    /// Port I/O bus.
    pub pio: Bus,
    /// MMIO bus.
    pub mmio: Bus,
    /// The interrupt controllers and timers.
    pub platform: Arc<Platform>,
    /// MMIO windows, ports and GSIs free for devices.
    pub resources: Resources,
    /// The PCI root bus.
    pub pci: Arc<Mutex<PciRoot>>,
}

impl std::fmt::Debug for LegacyDevices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyDevices")
            .field("post_port", &self.post_port)
            .finish_non_exhaustive()
    }
}

/// A device as a bus holds it.
fn shared<D: BusDevice + 'static>(d: D) -> Arc<Mutex<D>> {
    Arc::new(Mutex::new(d))
}

impl Board {
    /// Builds the PC: the interrupt controllers and timers on `clock` for `nr_vcpus` vCPUs, the
    /// legacy devices at their ports with their interrupt lines, and the PCI root bus (config
    /// ports, ECAM and BAR windows where `pci` says, taken from `resources`, which the board
    /// keeps). Under `IrqchipMode::Kernel` the PIC, IOAPIC and LAPICs are KVM's: only the PIT
    /// joins the buses.
    ///
    /// # Errors
    /// Two devices on one range (`--post-port` on a port already taken).
    pub fn build(
        layout: &Layout,
        nr_vcpus: usize,
        clock: Clock,
        irqchip: IrqchipMode,
        resources: Resources,
        pci: PciLayout,
        devices: LegacyDevices,
    ) -> Result<Board, BusError> {
        let LegacyDevices {
            serial,
            debugcon,
            post,
            post_port,
            control,
            rtc,
        } = devices;
        let mut pio = Bus::new("pio");
        pio.insert(u64::from(COM1_PORT), COM1_PORT_LEN, serial.clone())?;
        pio.insert(
            u64::from(DEBUG_EXIT_PORT),
            1,
            shared(DebugExit::new(control.clone())),
        )?;
        pio.insert(u64::from(DEBUGCON_PORT), 1, debugcon.clone())?;
        pio.insert(u64::from(FIRMWARE_DEBUG_PORT), 1, debugcon)?;
        pio.insert(u64::from(post_port), 1, post)?;
        let platform = Platform::new(nr_vcpus, clock);
        let cmos = Arc::new(Mutex::new(Cmos::with_base(
            layout.low_ram,
            layout.high_ram,
            rtc,
        )));
        cmos.lock()
            .unwrap_or_else(|p| p.into_inner())
            .attach_periodic(platform.clock(), platform.isa_irq(RTC_IRQ));
        platform.set_rtc(cmos.clone());
        serial
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_irq(platform.isa_irq(COM1_IRQ));
        pio.insert(u64::from(RTC_PORT), RTC_PORT_LEN, cmos)?;
        pio.insert(
            u64::from(ACPI_PM_PORT),
            ACPI_PM_PORT_LEN,
            shared(AcpiPm::new(control.clone(), platform.clock().clone())),
        )?;
        let i8042 = I8042::new(control.clone());
        pio.insert(
            u64::from(I8042_DATA_PORT),
            1,
            shared(I8042Port::data(i8042.clone())),
        )?;
        pio.insert(
            u64::from(I8042_COMMAND_PORT),
            1,
            shared(I8042Port::command(i8042)),
        )?;
        pio.insert(u64::from(PORT92), 1, shared(Port92::new(control.clone())))?;
        let mut mmio = Bus::new("mmio");
        // With KVM's in-kernel irqchip, KVM owns the interrupt controllers' ports and MMIO;
        // the PIT stays janus's.
        if irqchip == IrqchipMode::User {
            platform.attach(&mut pio, &mut mmio)?;
        } else {
            platform.attach_pit(&mut pio)?;
        }
        let root = PciRoot::shared();
        root.lock()
            .unwrap_or_else(|p| p.into_inner())
            .wire_interrupts(
                pci.intx_gsis
                    .iter()
                    .zip(pci.intx_pic_irqs)
                    .map(|(&g, irq)| platform.pci_intx_line(g, irq))
                    .collect(),
                platform.clone(),
            );
        pio.insert(
            u64::from(CONFIG_ADDRESS_PORT),
            CONFIG_PORTS_LEN,
            shared(ConfigPorts(root.clone(), Some(control.clone()))),
        )?;
        mmio.insert(pci.ecam, PCI_ECAM_LEN, shared(Ecam(root.clone())))?;
        for (start, end) in [pci.mmio32, pci.mmio64] {
            mmio.insert(
                start,
                end - start,
                shared(BarWindow::memory(root.clone(), start)),
            )?;
        }
        pio.insert(
            pci.io.0,
            pci.io.1 - pci.io.0,
            shared(BarWindow::io(root.clone(), pci.io.0)),
        )?;
        Ok(Board {
            pio,
            mmio,
            platform,
            resources,
            pci: root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_sit_in_the_holes() {
        let (_, small) = crate::layout::build_memory(64 << 20, None).unwrap();
        let r = Resources::new(&small);
        assert_eq!(
            (r.mmio32.start(), r.mmio32.end()),
            (0xc000_0000, 0xfec0_0000)
        );
        assert_eq!(r.mmio64.start(), HIGH_RAM_BASE);
        let (_, big) = crate::layout::build_memory((4 << 30) + (1 << 20), None).unwrap();
        let r = Resources::new(&big);
        // RAM above 4 GiB ends at 5 GiB + 1 MiB: the pool starts at the next GiB.
        assert_eq!(r.mmio64.start(), 6 << 30);
        assert_eq!((r.gsi.start(), r.gsi.end()), (16, 24));
        assert_eq!((r.pio.start(), r.pio.end()), (0xc000, 0x1_0000));
        let mut r = Resources::new(&small);
        let pci = PciLayout::allocate(&mut r).unwrap();
        assert_eq!(pci.ecam, 0xc000_0000);
        assert_eq!(pci.mmio32, (0xdec0_0000, 0xfec0_0000));
        assert_eq!(pci.mmio64, (HIGH_RAM_BASE, HIGH_RAM_BASE + PCI_MMIO64_LEN));
        assert_eq!(pci.io, (0xc000, 0x1_0000));
        assert_eq!(pci.intx_gsis, [16, 17, 18, 19]);
        // What is left stays allocatable, outside the PCI windows.
        let virtio = r.mmio32.allocate(0x1000, 0x1000, "virtio-mmio").unwrap();
        assert_eq!(virtio, 0xc010_0000);
        assert_eq!(r.gsi.allocate(1, 1, "virtio-mmio").unwrap(), 20);
        assert!(matches!(
            r.pio.allocate(1, 1, "late"),
            Err(AllocError::Exhausted { .. })
        ));
    }
}
