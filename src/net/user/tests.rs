//! The user backend driven by hand-made frames: a DHCP exchange, a TCP connection from the
//! guest to a host service through the gateway address, and a hostfwd connection from the host
//! to the guest. Needs passt; without it the tests say SKIPPED loudly (and fail under
//! JANUS_REQUIRE_PASST=1, as CI sets).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::*;
use crate::net::HostFwd;

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
const GUEST: [u8; 4] = [10, 0, 2, 15];
const GW: [u8; 4] = [10, 0, 2, 2];

fn start(spec: &UserSpec) -> Option<UserNet> {
    match UserNet::start(spec) {
        Ok(n) => Some(n),
        Err(NetError::PasstMissing) if std::env::var_os("JANUS_REQUIRE_PASST").is_none() => {
            eprintln!("SKIPPED: passt is not installed (apt-get install passt)");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn csum(data: &[u8], init: u32) -> u16 {
    let mut sum = init;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet + IPv4 around an L4 payload (its checksum already filled in).
fn ip_frame(dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + l4.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = csum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

fn pseudo(src: [u8; 4], dst: [u8; 4], proto: u8, len: usize) -> u32 {
    let mut p = Vec::from(src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum()
}

#[allow(clippy::too_many_arguments)] // a TCP header's fields, in wire order
fn tcp(
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    data: &[u8],
    src: [u8; 4],
    dst: [u8; 4],
) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(data);
    let c = csum(&t, pseudo(src, dst, 6, t.len()));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// Frames from passt until `want` picks one (or 5 s pass).
fn wait_for<T>(net: &mut UserNet, mut want: impl FnMut(&[u8]) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; MAX_FRAME];
    while Instant::now() < deadline {
        match net.recv(&mut buf).unwrap() {
            Some(n) => {
                if let Some(t) = want(&buf[..n]) {
                    return t;
                }
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    panic!("no such frame from passt within 5 s");
}

/// A TCP segment to the guest: (src port, dst port, seq, ack, flags, payload).
fn tcp_in(f: &[u8]) -> Option<(u16, u16, u32, u32, u8, Vec<u8>)> {
    if f.len() < 54 || f[12..14] != [8, 0] || f[23] != 6 || f[30..34] != GUEST {
        return None;
    }
    let ihl = usize::from(f[14] & 15) * 4;
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let t = &f[14 + ihl..14 + total];
    let be16 = |i: usize| u16::from_be_bytes([t[i], t[i + 1]]);
    let be32 = |i: usize| u32::from_be_bytes([t[i], t[i + 1], t[i + 2], t[i + 3]]);
    let doff = usize::from(t[12] >> 4) * 4;
    Some((
        be16(0),
        be16(2),
        be32(4),
        be32(8),
        t[13],
        t[doff..].to_vec(),
    ))
}

#[test]
fn dhcp_offers_qemus_addresses() {
    let Some(mut net) = start(&UserSpec::default()) else {
        return;
    };
    let mut bootp = vec![0u8; 240];
    bootp[..4].copy_from_slice(&[1, 1, 6, 0]);
    bootp[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    bootp[28..34].copy_from_slice(&GUEST_MAC);
    bootp[236..240].copy_from_slice(&[99, 130, 83, 99]);
    bootp.extend_from_slice(&[53, 1, 1, 255]);
    let mut udp = vec![0, 68, 0, 67, 0, 0, 0, 0];
    udp[4..6].copy_from_slice(&((8 + bootp.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&bootp);
    net.send(&ip_frame([0xff; 6], [0; 4], [255; 4], 17, &udp))
        .unwrap();
    let (yiaddr, router) = wait_for(&mut net, |f| {
        // An IPv4 UDP datagram to port 68 with our transaction id.
        if f.len() < 282
            || f[12..14] != [8, 0]
            || f[23] != 17
            || f[36..38] != [0, 68]
            || f[46..50] != [0x12, 0x34, 0x56, 0x78]
        {
            return None;
        }
        let b = &f[42..];
        let mut opts = &b[240..];
        let mut router = None;
        while opts.len() >= 2 && opts[0] != 255 {
            if opts[0] == 3 {
                router = Some(Ipv4Addr::new(opts[2], opts[3], opts[4], opts[5]));
            }
            opts = &opts[2 + usize::from(opts[1])..];
        }
        Some((Ipv4Addr::new(b[16], b[17], b[18], b[19]), router))
    });
    assert_eq!(yiaddr, Ipv4Addr::from(GUEST));
    assert_eq!(router, Some(Ipv4Addr::from(GW)));
}

#[test]
fn guest_reaches_a_host_service_through_the_gateway() {
    let Some(mut net) = start(&UserSpec::default()) else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let gw_mac = [0x52, 0x56, 0, 0, 0, 2];
    net.send(&ip_frame(
        gw_mac,
        GUEST,
        GW,
        6,
        &tcp(40000, port, 1000, 0, 0x02, &[], GUEST, GW),
    ))
    .unwrap();
    let (their_seq, mac) = wait_for(&mut net, |f| {
        let (sp, dp, seq, ack, flags, _) = tcp_in(f)?;
        (sp == port && dp == 40000 && flags & 0x12 == 0x12 && ack == 1001)
            .then(|| (seq, f[6..12].to_vec()))
    });
    let mac: [u8; 6] = mac.try_into().unwrap();
    // The handshake's last ACK alone, as a kernel sends it (passt takes no data in it).
    net.send(&ip_frame(
        mac,
        GUEST,
        GW,
        6,
        &tcp(40000, port, 1001, their_seq + 1, 0x10, &[], GUEST, GW),
    ))
    .unwrap();
    let seg = tcp(
        40000,
        port,
        1001,
        their_seq + 1,
        0x18,
        b"hello from the guest",
        GUEST,
        GW,
    );
    net.send(&ip_frame(mac, GUEST, GW, 6, &seg)).unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = [0u8; 20];
    conn.read_exact(&mut got)
        .expect("the guest's bytes at the host");
    assert_eq!(&got, b"hello from the guest");
    conn.write_all(b"hello from the host").unwrap();
    let data = wait_for(&mut net, |f| {
        let (sp, _, _, _, _, data) = tcp_in(f)?;
        (sp == port && !data.is_empty()).then_some(data)
    });
    assert_eq!(data, b"hello from the host");
}

#[test]
fn hostfwd_reaches_the_guest_port() {
    // A free host port: bind, note it, let go.
    let host_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = UserSpec {
        hostfwd: vec![HostFwd {
            proto: Proto::Tcp,
            host_addr: None,
            host_port,
            guest_port: 8080,
        }],
        ..UserSpec::default()
    };
    let Some(mut net) = start(&spec) else { return };
    // passt learns the guest's MAC from its first frame.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&GUEST_MAC);
    arp.extend_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&GUEST_MAC);
    arp.extend_from_slice(&GUEST);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&GW);
    net.send(&arp).unwrap();
    let client =
        std::thread::spawn(move || TcpStream::connect(("127.0.0.1", host_port)).map(|_| ()));
    let dport = wait_for(&mut net, |f| {
        let (_, dp, _, _, flags, _) = tcp_in(f)?;
        (flags & 0x02 != 0).then_some(dp)
    });
    assert_eq!(dport, 8080);
    drop(net);
    let _ = client.join();
}

#[test]
fn passt_arguments_carry_the_forwards() {
    let spec = UserSpec {
        hostfwd: vec![
            HostFwd {
                proto: Proto::Tcp,
                host_addr: None,
                host_port: 2222,
                guest_port: 22,
            },
            HostFwd {
                proto: Proto::Udp,
                host_addr: Some(Ipv4Addr::LOCALHOST),
                host_port: 5353,
                guest_port: 53,
            },
        ],
        ..UserSpec::default()
    };
    let a = passt_args(&spec).join(" ");
    assert!(a.contains("--fd 0"), "{a}");
    assert!(a.contains("--address 10.0.2.15 --gateway 10.0.2.2"), "{a}");
    assert!(
        a.ends_with("--tcp-ports 2222:22 --udp-ports 127.0.0.1/5353:53"),
        "{a}"
    );
}
