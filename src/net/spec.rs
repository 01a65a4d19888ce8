//! `--netdev` and `--nic` arguments in QEMU's spelling: `tap,id=ID,ifname=NAME` and
//! `user,id=ID[,hostfwd=tcp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT]...`, plus `mac=` for the
//! NIC. Every mistake is one line naming the argument and the cause.

use std::net::Ipv4Addr;

use super::NetError;

/// One `--netdev` (and the virtio-net NIC it is attached to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetdevSpec {
    /// The `id=` (`net0`, `net1`... when not given).
    pub id: String,
    /// The NIC's MAC address (`mac=`, else 52:54:00:12:34:5N as QEMU numbers them).
    pub mac: Option<[u8; 6]>,
    /// The host side.
    pub backend: BackendSpec,
}

/// The host side of a NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSpec {
    /// An existing or new TAP interface (`ifname=`).
    Tap {
        /// The interface name.
        ifname: String,
    },
    /// User-mode networking.
    User(UserSpec),
}

/// User-mode networking: QEMU's addresses (guest 10.0.2.15/24, gateway and host 10.0.2.2,
/// DNS 10.0.2.3) and its port forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    /// The guest's address, handed out by DHCP.
    pub guest: Ipv4Addr,
    /// The gateway: connections to it reach the host's loopback.
    pub gateway: Ipv4Addr,
    /// The DNS address forwarded to the host's resolver.
    pub dns: Ipv4Addr,
    /// Host -> guest port forwards.
    pub hostfwd: Vec<HostFwd>,
}

impl Default for UserSpec {
    fn default() -> Self {
        UserSpec {
            guest: Ipv4Addr::new(10, 0, 2, 15),
            gateway: Ipv4Addr::new(10, 0, 2, 2),
            dns: Ipv4Addr::new(10, 0, 2, 3),
            hostfwd: Vec::new(),
        }
    }
}

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A host port forwarded to a guest port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFwd {
    /// TCP or UDP.
    pub proto: Proto,
    /// The host address to listen on (`None`: all).
    pub host_addr: Option<Ipv4Addr>,
    /// The host port.
    pub host_port: u16,
    /// The guest port.
    pub guest_port: u16,
}

impl NetdevSpec {
    /// Parses a `--netdev` argument; `index` numbers NICs without an `id=`. With `nic` (QEMU's
    /// `-nic`), `id=` is optional.
    ///
    /// # Errors
    /// [`NetError::Spec`] naming the cause.
    pub fn parse(arg: &str, index: usize, nic: bool) -> Result<Self, NetError> {
        let bad = |why: String| NetError::Spec {
            arg: arg.to_string(),
            why,
        };
        let mut parts = arg.split(',');
        let kind = parts.next().unwrap_or_default();
        let (mut id, mut mac, mut ifname, mut user) = (None, None, None, UserSpec::default());
        for opt in parts {
            let (key, value) = opt
                .split_once('=')
                .ok_or_else(|| bad(format!("'{opt}' is not KEY=VALUE")))?;
            match (kind, key) {
                (_, "id") if !value.is_empty() => id = Some(value.to_string()),
                (_, "mac") => {
                    mac = Some(parse_mac(value).ok_or_else(|| {
                        bad(format!(
                            "bad mac '{value}' (want xx:xx:xx:xx:xx:xx, unicast)"
                        ))
                    })?)
                }
                (_, "model") if nic && value.starts_with("virtio") => {}
                ("tap", "ifname") if !value.is_empty() && value.len() < 16 => {
                    ifname = Some(value.to_string())
                }
                ("tap", "ifname") => {
                    return Err(bad(format!("ifname '{value}' must be 1 to 15 characters")));
                }
                ("user", "hostfwd") => user
                    .hostfwd
                    .push(parse_hostfwd(value, user.guest).map_err(bad)?),
                ("tap" | "user", _) => {
                    return Err(bad(format!("unknown option '{key}' for {kind}")));
                }
                _ => break,
            }
        }
        let backend = match kind {
            "tap" => BackendSpec::Tap {
                ifname: ifname.ok_or_else(|| bad("a tap netdev needs ifname=NAME".into()))?,
            },
            "user" => BackendSpec::User(user),
            "" => return Err(bad("missing the backend type (tap or user)".into())),
            other => {
                return Err(bad(format!(
                    "unknown netdev type '{other}' (janus has tap and user)"
                )));
            }
        };
        let id = match id {
            Some(id) => id,
            None if nic => format!("net{index}"),
            None => return Err(bad("a netdev needs id=NAME".into())),
        };
        Ok(NetdevSpec { id, mac, backend })
    }

    /// The NIC's MAC address: `mac=` or QEMU's 52:54:00:12:34:56 + index.
    pub fn mac_or_default(&self, index: usize) -> [u8; 6] {
        self.mac.unwrap_or([
            0x52,
            0x54,
            0x00,
            0x12,
            0x34,
            0x56u8.wrapping_add(index as u8),
        ])
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut it = s.split(':');
    for b in &mut mac {
        let p = it.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    (it.next().is_none() && mac[0] & 1 == 0).then_some(mac)
}

/// `tcp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT` (`tcp` may be left out).
fn parse_hostfwd(s: &str, guest: Ipv4Addr) -> Result<HostFwd, String> {
    let bad =
        || format!("hostfwd '{s}' is not [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT");
    let (proto, rest) = match s.split_once(':') {
        Some(("tcp" | "", rest)) => (Proto::Tcp, rest),
        Some(("udp", rest)) => (Proto::Udp, rest),
        _ => return Err(bad()),
    };
    let (host, guest_part) = rest.split_once('-').ok_or_else(bad)?;
    let (haddr, hport) = host.split_once(':').ok_or_else(bad)?;
    let (gaddr, gport) = guest_part.split_once(':').ok_or_else(bad)?;
    let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p != 0);
    let addr = |a: &str| {
        if a.is_empty() {
            Ok(None)
        } else {
            a.parse::<Ipv4Addr>().map(Some).map_err(|_| bad())
        }
    };
    let host_addr = addr(haddr)?;
    if let Some(g) = addr(gaddr)?
        && g != guest
    {
        return Err(format!(
            "hostfwd '{s}': the guest address must be {guest} (the guest's DHCP address)"
        ));
    }
    Ok(HostFwd {
        proto,
        host_addr,
        host_port: port(hport).ok_or_else(bad)?,
        guest_port: port(gport).ok_or_else(bad)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(arg: &str) -> String {
        NetdevSpec::parse(arg, 0, false).unwrap_err().to_string()
    }

    #[test]
    fn tap_and_user_parse() {
        let tap = NetdevSpec::parse("tap,id=n0,ifname=tap7", 0, false).unwrap();
        assert_eq!(tap.id, "n0");
        assert_eq!(
            tap.backend,
            BackendSpec::Tap {
                ifname: "tap7".into()
            }
        );
        let user = NetdevSpec::parse(
            "user,id=u,hostfwd=tcp::8080-:80,hostfwd=udp:127.0.0.1:5353-10.0.2.15:53,mac=52:54:00:aa:bb:cc",
            0,
            false,
        )
        .unwrap();
        assert_eq!(user.mac, Some([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]));
        let BackendSpec::User(u) = user.backend else {
            panic!("not user")
        };
        assert_eq!(
            u.hostfwd,
            vec![
                HostFwd {
                    proto: Proto::Tcp,
                    host_addr: None,
                    host_port: 8080,
                    guest_port: 80
                },
                HostFwd {
                    proto: Proto::Udp,
                    host_addr: Some(Ipv4Addr::LOCALHOST),
                    host_port: 5353,
                    guest_port: 53
                },
            ]
        );
        let nic = NetdevSpec::parse("user,model=virtio-net-pci", 2, true).unwrap();
        assert_eq!(nic.id, "net2");
        assert_eq!(nic.mac_or_default(2), [0x52, 0x54, 0, 0x12, 0x34, 0x58]);
    }

    #[test]
    fn mistakes_are_one_line_each() {
        assert!(err("socket,id=a").contains("unknown netdev type 'socket'"));
        assert!(err("tap,id=a").contains("needs ifname=NAME"));
        assert!(err("user").contains("needs id=NAME"));
        assert!(err("user,id=a,hostfwd=tcp::80").contains("is not [tcp|udp]"));
        assert!(err("user,id=a,hostfwd=tcp::0-:80").contains("is not [tcp|udp]"));
        assert!(err("user,id=a,hostfwd=tcp::1-10.0.2.9:80").contains("must be 10.0.2.15"));
        assert!(err("user,id=a,mac=01:00:00:00:00:00").contains("bad mac"));
        assert!(err("user,id=a,bogus=1").contains("unknown option 'bogus'"));
        assert!(err("tap,id=a,ifname=abcdefghijklmnopq").contains("1 to 15"));
        assert!(err("").contains("missing the backend type"));
        for a in ["socket,id=a", "tap,id=a", "user", ""] {
            assert!(!err(a).contains('\n'));
        }
    }
}
