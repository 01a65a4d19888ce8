//! A PCI function's configuration space (type 0 header, 4 KiB for PCIe's extended space): the
//! bytes the guest reads, a mask of the bits it may write, and the BARs.
//!
//! BAR sizing falls out of the write mask, as on hardware: a BAR's writable bits are its address
//! bits (`!(size - 1)`), its low bits (the I/O or memory type, 64-bit, prefetchable) read-only;
//! so writing all ones and reading back gives the size mask with the type bits. A 64-bit memory
//! BAR takes two slots, the second holding the high half.

/// Configuration space size (PCIe: 4 KiB; conventional PCI uses the first 256 bytes).
pub const CONFIG_SPACE_SIZE: usize = 4096;
/// Number of BARs of a type 0 header.
pub const NR_BARS: usize = 6;

/// Offsets of type 0 header registers.
pub mod reg {
    /// Vendor ID (16 bits).
    pub const VENDOR_ID: usize = 0x00;
    /// Device ID (16 bits).
    pub const DEVICE_ID: usize = 0x02;
    /// Command (16 bits).
    pub const COMMAND: usize = 0x04;
    /// Status (16 bits).
    pub const STATUS: usize = 0x06;
    /// Revision ID (8 bits), then the class code (24 bits: programming interface, subclass,
    /// class).
    pub const REVISION_ID: usize = 0x08;
    /// Cache line size (8 bits).
    pub const CACHE_LINE_SIZE: usize = 0x0c;
    /// Latency timer (8 bits).
    pub const LATENCY_TIMER: usize = 0x0d;
    /// Header type (8 bits; bit 7: multi-function).
    pub const HEADER_TYPE: usize = 0x0e;
    /// BAR 0; BAR n is at `BAR0 + 4 * n`.
    pub const BAR0: usize = 0x10;
    /// Subsystem vendor ID (16 bits).
    pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
    /// Subsystem ID (16 bits).
    pub const SUBSYSTEM_ID: usize = 0x2e;
    /// Capabilities pointer (8 bits).
    pub const CAPABILITIES: usize = 0x34;
    /// Interrupt line (8 bits, the OS's scratch register).
    pub const INTERRUPT_LINE: usize = 0x3c;
    /// Interrupt pin (8 bits: 0 none, 1-4 INTA-INTD).
    pub const INTERRUPT_PIN: usize = 0x3d;
}

/// Command register bits.
pub mod command {
    /// Respond to I/O space accesses (the I/O BARs decode).
    pub const IO: u16 = 1 << 0;
    /// Respond to memory space accesses (the memory BARs decode).
    pub const MEMORY: u16 = 1 << 1;
    /// Bus master: the function may read and write guest memory (DMA) and send MSIs.
    pub const BUS_MASTER: u16 = 1 << 2;
    /// Parity error response.
    pub const PARITY: u16 = 1 << 6;
    /// SERR# enable.
    pub const SERR: u16 = 1 << 8;
    /// INTx emulation disable.
    pub const INTX_DISABLE: u16 = 1 << 10;
    /// The bits a function implements.
    pub const WRITABLE: u16 = IO | MEMORY | BUS_MASTER | PARITY | SERR | INTX_DISABLE;
}

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// Port I/O.
    Io,
    /// Memory below 4 GiB.
    Memory32,
    /// Memory anywhere in 64-bit space (takes this BAR slot and the next).
    Memory64 {
        /// Prefetchable (no side effects on reads).
        prefetchable: bool,
    },
}

impl BarKind {
    /// The read-only type bits in the BAR's low dword.
    fn type_bits(self) -> u32 {
        match self {
            BarKind::Io => 1,
            BarKind::Memory32 => 0,
            BarKind::Memory64 { prefetchable } => 0b100 | if prefetchable { 1 << 3 } else { 0 },
        }
    }
}

/// A BAR as the function declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// Its size in bytes (a power of two: at least 4 for I/O, 16 for memory).
    pub size: u64,
    /// What it decodes.
    pub kind: BarKind,
}

/// Why a BAR cannot be declared.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BarError {
    /// The slot does not exist or is taken (by another BAR or a 64-bit BAR's high half).
    #[error("BAR {0} does not exist or is taken")]
    Slot(usize),
    /// A size that is not a power of two, too small, or too large for the kind.
    #[error("BAR size {size:#x} is not valid for {kind:?}")]
    Size {
        /// The size.
        size: u64,
        /// The kind.
        kind: BarKind,
    },
}

/// One function's configuration space.
#[derive(Clone)]
pub struct ConfigSpace {
    bytes: Box<[u8; CONFIG_SPACE_SIZE]>,
    /// Bits the guest may change.
    wmask: Box<[u8; CONFIG_SPACE_SIZE]>,
    bars: [Option<Bar>; NR_BARS],
}

impl std::fmt::Debug for ConfigSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSpace")
            .field(
                "vendor",
                &format_args!("{:#06x}", self.u16_at(reg::VENDOR_ID)),
            )
            .field(
                "device",
                &format_args!("{:#06x}", self.u16_at(reg::DEVICE_ID)),
            )
            .field("bars", &self.bars)
            .finish()
    }
}

impl ConfigSpace {
    /// A type 0 header for `vendor`:`device` with class code `class` (class, subclass and
    /// programming interface, as 0xCCSSPP) and `revision`; command and interrupt line writable.
    pub fn new(vendor: u16, device: u16, class: u32, revision: u8) -> Self {
        let mut c = ConfigSpace {
            bytes: Box::new([0; CONFIG_SPACE_SIZE]),
            wmask: Box::new([0; CONFIG_SPACE_SIZE]),
            bars: [None; NR_BARS],
        };
        c.set(reg::VENDOR_ID, &vendor.to_le_bytes());
        c.set(reg::DEVICE_ID, &device.to_le_bytes());
        c.set(
            reg::REVISION_ID,
            &(u32::from(revision) | class << 8).to_le_bytes(),
        );
        c.set_wmask(reg::COMMAND, &command::WRITABLE.to_le_bytes());
        c.set_wmask(reg::CACHE_LINE_SIZE, &[0xff, 0xff]);
        c.set_wmask(reg::INTERRUPT_LINE, &[0xff]);
        c
    }

    /// Sets bytes the guest reads (not through the write mask).
    pub fn set(&mut self, offset: usize, bytes: &[u8]) {
        if let Some(d) = self.bytes.get_mut(offset..offset + bytes.len()) {
            d.copy_from_slice(bytes);
        }
    }

    /// Sets which bits of the bytes at `offset` the guest may write.
    pub fn set_wmask(&mut self, offset: usize, mask: &[u8]) {
        if let Some(d) = self.wmask.get_mut(offset..offset + mask.len()) {
            d.copy_from_slice(mask);
        }
    }

    /// The 16-bit value at `offset`.
    pub fn u16_at(&self, offset: usize) -> u16 {
        let mut b = [0u8; 2];
        self.read(offset, &mut b);
        u16::from_le_bytes(b)
    }

    /// The 32-bit value at `offset`.
    pub fn u32_at(&self, offset: usize) -> u32 {
        let mut b = [0u8; 4];
        self.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.u16_at(reg::COMMAND)
    }

    /// Sets the interrupt pin (1-4: INTA-INTD; 0 none).
    pub fn set_interrupt_pin(&mut self, pin: u8) {
        self.set(reg::INTERRUPT_PIN, &[pin]);
    }

    /// Declares BAR `index` (a 64-bit memory BAR also takes `index + 1`).
    ///
    /// # Errors
    /// [`BarError`] for a slot that is taken or out of range, or a bad size.
    pub fn add_bar(&mut self, index: usize, bar: Bar) -> Result<(), BarError> {
        let wide = matches!(bar.kind, BarKind::Memory64 { .. });
        let last = index + usize::from(wide);
        if last >= NR_BARS || self.bars[index].is_some() || (index > 0 && self.is_high_half(index))
        {
            return Err(BarError::Slot(index));
        }
        if wide && self.bars[last].is_some() {
            return Err(BarError::Slot(last));
        }
        let min = if bar.kind == BarKind::Io { 4 } else { 16 };
        let max = match bar.kind {
            BarKind::Io => 256,
            BarKind::Memory32 => 1 << 31,
            BarKind::Memory64 { .. } => 1 << 62,
        };
        if !bar.size.is_power_of_two() || bar.size < min || bar.size > max {
            return Err(BarError::Size {
                size: bar.size,
                kind: bar.kind,
            });
        }
        let off = reg::BAR0 + 4 * index;
        let mask = !(bar.size - 1);
        self.set(off, &bar.kind.type_bits().to_le_bytes());
        self.set_wmask(off, &((mask as u32) & !0xf).to_le_bytes());
        if bar.kind == BarKind::Io {
            self.set_wmask(off, &((mask as u32) & !0x3).to_le_bytes());
        }
        if wide {
            self.set(off + 4, &[0; 4]);
            self.set_wmask(off + 4, &((mask >> 32) as u32).to_le_bytes());
        }
        self.bars[index] = Some(bar);
        Ok(())
    }

    /// Whether slot `index` is the high half of the 64-bit BAR below it.
    fn is_high_half(&self, index: usize) -> bool {
        index > 0
            && self.bars[index - 1].is_some_and(|b| matches!(b.kind, BarKind::Memory64 { .. }))
    }

    /// Links a capability at `offset` (its first byte the id, the next the link, which this
    /// leaves 0) at the end of the capabilities list, setting the status register's
    /// capabilities-list bit.
    pub fn link_capability(&mut self, offset: usize) {
        const STATUS_CAP_LIST: u16 = 1 << 4;
        let status = self.u16_at(reg::STATUS);
        if status & STATUS_CAP_LIST == 0 {
            self.set(reg::STATUS, &(status | STATUS_CAP_LIST).to_le_bytes());
            self.set(reg::CAPABILITIES, &[offset as u8]);
            return;
        }
        let mut at = usize::from(self.u16_at(reg::CAPABILITIES) as u8);
        // At most 48 capabilities fit in 256 bytes: the bound ends a list that loops.
        for _ in 0..48 {
            let next = usize::from((self.u16_at(at) >> 8) as u8);
            if next == 0 {
                self.set(at + 1, &[offset as u8]);
                return;
            }
            at = next;
        }
    }

    /// The BARs declared, by slot.
    pub fn bars(&self) -> &[Option<Bar>; NR_BARS] {
        &self.bars
    }

    /// Where BAR `index` decodes now: its address, when the BAR exists, the command register
    /// enables its space and the guest has placed it (an address of 0 is unplaced).
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        let bar = (*self.bars.get(index)?)?;
        let off = reg::BAR0 + 4 * index;
        let low = u64::from(self.u32_at(off));
        let (enable, addr) = match bar.kind {
            BarKind::Io => (command::IO, low & !0x3 & 0xffff),
            BarKind::Memory32 => (command::MEMORY, low & !0xf),
            BarKind::Memory64 { .. } => (
                command::MEMORY,
                (low & !0xf) | u64::from(self.u32_at(off + 4)) << 32,
            ),
        };
        (self.command() & enable != 0 && addr != 0).then_some(addr)
    }

    /// A guest read of `data.len()` bytes at `offset` (past the end reads all ones).
    pub fn read(&self, offset: usize, data: &mut [u8]) {
        for (i, d) in data.iter_mut().enumerate() {
            *d = self.bytes.get(offset + i).copied().unwrap_or(0xff);
        }
    }

    /// A guest write of `data` at `offset`: only the writable bits change.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        for (i, &d) in data.iter().enumerate() {
            let o = offset + i;
            if o >= CONFIG_SPACE_SIZE {
                return;
            }
            let m = self.wmask[o];
            self.bytes[o] = (self.bytes[o] & !m) | (d & m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write32(c: &mut ConfigSpace, off: usize, v: u32) {
        c.write(off, &v.to_le_bytes());
    }

    #[test]
    fn header_reads_back_and_read_only_fields_stay() {
        let mut c = ConfigSpace::new(0x1b36, 0x0008, 0x06_0000, 2);
        assert_eq!(c.u32_at(0), 0x0008_1b36);
        assert_eq!(c.u32_at(reg::REVISION_ID), 0x0600_0002);
        write32(&mut c, 0, 0xffff_ffff);
        write32(&mut c, reg::REVISION_ID, 0);
        assert_eq!(c.u32_at(0), 0x0008_1b36);
        assert_eq!(c.u32_at(reg::REVISION_ID), 0x0600_0002);
        c.write(reg::COMMAND, &0xffffu16.to_le_bytes());
        assert_eq!(c.command(), command::WRITABLE);
        c.write(reg::INTERRUPT_LINE, &[11]);
        let mut b = [0u8; 1];
        c.read(reg::INTERRUPT_LINE, &mut b);
        assert_eq!(b, [11]);
        let mut past = [0u8; 4];
        c.read(CONFIG_SPACE_SIZE - 2, &mut past);
        assert_eq!(past, [0, 0, 0xff, 0xff]);
    }

    #[test]
    fn bars_size_by_all_ones_and_decode_when_enabled() {
        let mut c = ConfigSpace::new(0x1af4, 0x1041, 0x01_0000, 1);
        c.add_bar(
            0,
            Bar {
                size: 0x1000,
                kind: BarKind::Memory32,
            },
        )
        .unwrap();
        c.add_bar(
            1,
            Bar {
                size: 0x40,
                kind: BarKind::Io,
            },
        )
        .unwrap();
        c.add_bar(
            2,
            Bar {
                size: 1 << 34,
                kind: BarKind::Memory64 { prefetchable: true },
            },
        )
        .unwrap();
        assert_eq!(
            c.add_bar(
                3,
                Bar {
                    size: 16,
                    kind: BarKind::Memory32
                }
            ),
            Err(BarError::Slot(3)),
            "the high half of BAR 2"
        );
        assert!(matches!(
            c.add_bar(
                4,
                Bar {
                    size: 24,
                    kind: BarKind::Memory32
                }
            ),
            Err(BarError::Size { .. })
        ));
        for i in 0..NR_BARS {
            write32(&mut c, reg::BAR0 + 4 * i, 0xffff_ffff);
        }
        assert_eq!(c.u32_at(reg::BAR0), 0xffff_f000);
        assert_eq!(c.u32_at(reg::BAR0 + 4), 0xffff_ffc1);
        assert_eq!(c.u32_at(reg::BAR0 + 8), 0x0000_000c);
        assert_eq!(c.u32_at(reg::BAR0 + 12), 0xffff_fffc);
        assert_eq!(c.u32_at(reg::BAR0 + 16), 0, "no BAR 4");
        // Placed, but not decoding until the command register says so.
        write32(&mut c, reg::BAR0, 0xc000_0000);
        write32(&mut c, reg::BAR0 + 4, 0xc040);
        write32(&mut c, reg::BAR0 + 8, 0);
        write32(&mut c, reg::BAR0 + 12, 0x10);
        assert_eq!(c.bar_address(0), None);
        c.write(reg::COMMAND, &command::MEMORY.to_le_bytes());
        assert_eq!(c.bar_address(0), Some(0xc000_0000));
        assert_eq!(c.bar_address(1), None, "I/O space off");
        assert_eq!(c.bar_address(2), Some(0x10_0000_0000));
        c.write(reg::COMMAND, &(command::MEMORY | command::IO).to_le_bytes());
        assert_eq!(c.bar_address(1), Some(0xc040));
        assert_eq!(c.bar_address(3), None, "a high half is no BAR");
    }
}
