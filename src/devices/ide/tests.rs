use std::io::Write;

use super::*;

fn image(bytes: &[u8]) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let p = std::env::temp_dir().join(format!(
        "janus-ide-{}-{}.img",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
    p
}

struct Ports {
    cmd: CommandPorts,
    ctl: ControlPort,
}

impl Ports {
    fn new(media: Media, bytes: &[u8]) -> (Self, std::path::PathBuf) {
        let p = image(bytes);
        let d = Drive::open(&p, media, false).unwrap();
        let ch = Arc::new(Mutex::new(Channel::new("ide0", Some(d), None)));
        (
            Ports {
                cmd: CommandPorts(ch.clone()),
                ctl: ControlPort(ch),
            },
            p,
        )
    }
    fn out(&mut self, reg: u64, v: u8) {
        self.cmd.write(0, reg, &[v]);
    }
    fn inb(&mut self, reg: u64) -> u8 {
        let mut b = [0u8];
        self.cmd.read(0, reg, &mut b);
        b[0]
    }
    fn data(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for _ in 0..n / 2 {
            let mut b = [0u8; 2];
            self.cmd.read(0, 0, &mut b);
            v.extend_from_slice(&b);
        }
        v
    }
    fn lba_command(&mut self, cmd: u8, lba: u32, count: u8) {
        self.out(2, count);
        self.out(3, lba as u8);
        self.out(4, (lba >> 8) as u8);
        self.out(5, (lba >> 16) as u8);
        self.out(6, 0xe0 | ((lba >> 24) as u8 & 0xf));
        self.out(7, cmd);
    }
    fn packet(&mut self, cdb: [u8; 12], limit: u16) {
        self.out(1, 0);
        self.out(4, limit as u8);
        self.out(5, (limit >> 8) as u8);
        self.out(7, 0xa0);
        assert_eq!(self.inb(7) & status::DRQ, status::DRQ);
        assert_eq!(self.inb(2), 1, "C/D: the packet is wanted");
        for w in cdb.chunks(2) {
            self.cmd.write(0, 0, w);
        }
    }
    fn byte_count(&mut self) -> usize {
        usize::from(self.inb(5)) << 8 | usize::from(self.inb(4))
    }
}

#[test]
fn disk_identifies_reads_and_writes_sectors() {
    let mut disk = vec![0u8; 8 * 512];
    disk[512..1024].fill(0x5a);
    disk[510] = 0x55;
    disk[511] = 0xaa;
    let (mut p, path) = Ports::new(Media::Disk, &disk);
    // The ATA signature after reset; the selected register reads back.
    assert_eq!((p.inb(2), p.inb(3), p.inb(4), p.inb(5)), (1, 1, 0, 0));
    p.out(6, 0xa0);
    assert_eq!(p.inb(6), 0xa0);
    p.out(7, 0xec);
    let id = p.data(512);
    assert_eq!(u32::from_le_bytes(id[120..124].try_into().unwrap()), 8);
    assert_eq!(&id[54..58], b"AJUN", "model string, byte-swapped words");
    assert_eq!(p.inb(7), status::DRDY | status::DSC);
    // READ SECTORS of two: the boot sector, then the 0x5a one.
    p.lba_command(0x20, 0, 2);
    let two = p.data(1024);
    assert_eq!(&two[510..512], &[0x55, 0xaa]);
    assert!(two[512..].iter().all(|&b| b == 0x5a));
    assert_eq!(p.inb(7) & status::DRQ, 0);
    // WRITE SECTORS, then read it back from the file.
    p.lba_command(0x30, 7, 1);
    for _ in 0..256 {
        p.cmd.write(0, 0, &[0x12, 0x34]);
    }
    assert_eq!(p.inb(7), status::DRDY | status::DSC);
    let back = std::fs::read(&path).unwrap();
    assert_eq!(&back[7 * 512..7 * 512 + 2], &[0x12, 0x34]);
    // Past the end: ERR with IDNF and ABRT.
    p.lba_command(0x20, 8, 1);
    assert_eq!(p.inb(7) & status::ERR, status::ERR);
    assert_eq!(p.inb(1), 0x14);
    // An unknown command aborts; IDENTIFY PACKET too (a disk is not a packet device).
    p.out(7, 0xa1);
    assert_eq!(
        (p.inb(7) & status::ERR, p.inb(1)),
        (status::ERR, ERROR_ABRT)
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn absent_slave_and_empty_channel_read_zero_status() {
    let (mut p, path) = Ports::new(Media::Disk, &[0u8; 512]);
    p.out(6, 0xb0);
    assert_eq!(p.inb(7), 0);
    p.out(7, 0xec);
    assert_eq!(p.inb(7), 0, "an absent device runs no command");
    let empty = Arc::new(Mutex::new(Channel::new("ide1", None, None)));
    let mut c = CommandPorts(empty);
    let mut b = [0u8];
    c.write(0, 2, &[0x55]);
    c.read(0, 2, &mut b);
    assert_eq!(b[0], 0, "nothing on the cable answers");
    let _ = std::fs::remove_file(path);
}

#[test]
fn soft_reset_restores_the_signature() {
    let (mut p, path) = Ports::new(Media::Cdrom, &vec![0u8; 4 * 2048]);
    p.out(4, 0x99);
    p.ctl.write(0, 0, &[CONTROL_SRST]);
    assert_eq!(p.inb(7), status::BSY);
    p.ctl.write(0, 0, &[0]);
    assert_eq!((p.inb(4), p.inb(5)), (0x14, 0xeb), "ATAPI signature");
    let _ = std::fs::remove_file(path);
}

#[test]
fn cdrom_answers_inquiry_capacity_toc_and_reads_blocks_in_chunks() {
    let mut iso = vec![0u8; 20 * 2048];
    iso[17 * 2048..17 * 2048 + 6].copy_from_slice(b"\0CD001");
    iso[19 * 2048] = 0x77;
    let (mut p, path) = Ports::new(Media::Cdrom, &iso);
    p.out(7, 0xa1);
    let id = p.data(512);
    assert_eq!(u16::from_le_bytes([id[0], id[1]]), 0x85c0);
    // INQUIRY: a CD/DVD device.
    p.packet([0x12, 0, 0, 0, 36, 0, 0, 0, 0, 0, 0, 0], 0xfffe);
    assert_eq!(p.byte_count(), 36);
    let q = p.data(36);
    assert_eq!(q[0], 5);
    assert_eq!(p.inb(2), 3, "I/O and C/D: the command is done");
    assert_eq!(p.inb(7) & (status::DRQ | status::ERR), 0);
    // READ CAPACITY: the last block and 2048.
    p.packet([0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
    assert_eq!(p.data(8), [0, 0, 0, 19, 0, 0, 8, 0]);
    // READ TOC: track 1 at 0, lead-out at 20.
    p.packet([0x43, 0, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0], 0xfffe);
    let toc = p.data(20);
    assert_eq!(&toc[2..4], &[1, 1]);
    assert_eq!(toc[14], 0xaa);
    assert_eq!(&toc[16..20], &[0, 0, 0, 20]);
    // READ(10) of blocks 17-19 with a 2048-byte limit: three chunks.
    p.packet([0x28, 0, 0, 0, 0, 17, 0, 0, 3, 0, 0, 0], 2048);
    let mut got = Vec::new();
    for _ in 0..3 {
        assert_eq!(p.byte_count(), 2048);
        assert_eq!(p.inb(2), 2, "I/O: data for the host");
        got.extend(p.data(2048));
    }
    assert_eq!(&got[1..6], b"CD001");
    assert_eq!(got[2 * 2048], 0x77);
    assert_eq!(p.inb(2), 3);
    // Out of range, then an unknown opcode: CHECK CONDITION, sense ILLEGAL REQUEST.
    p.packet([0x28, 0, 0, 0, 0, 19, 0, 0, 2, 0, 0, 0], 2048);
    assert_eq!(p.inb(7) & status::ERR, status::ERR);
    assert_eq!(p.inb(1) >> 4, 5);
    p.packet([0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 2048);
    p.packet([0x03, 0, 0, 0, 18, 0, 0, 0, 0, 0, 0, 0], 2048);
    let sense = p.data(18);
    assert_eq!((sense[2], sense[12]), (5, 0x20));
    // Writes are refused by a CD (IDENTIFY DEVICE aborts with the packet signature).
    p.out(7, 0xec);
    assert_eq!((p.inb(4), p.inb(5)), (0x14, 0xeb));
    let _ = std::fs::remove_file(path);
}

#[test]
fn images_too_small_or_missing_are_one_line_errors() {
    let p = image(&[0u8; 100]);
    let e = Drive::open(&p, Media::Disk, false).unwrap_err().to_string();
    assert!(e.contains("at least 512"), "{e}");
    let e = Drive::open(&p, Media::Cdrom, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("CD image needs at least 2048"), "{e}");
    let _ = std::fs::remove_file(&p);
    let e = Drive::open(&p, Media::Disk, false).unwrap_err().to_string();
    assert!(e.starts_with("cannot open"), "{e}");
}
