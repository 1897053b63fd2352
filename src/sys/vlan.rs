//! VLAN interfaces through rtnetlink (no `ip` binary needed): create `<parent>.<id>`
//! (`RTM_NEWLINK`, link kind `vlan`) and set it up, in the network namespace of the
//! calling thread. No `unsafe`: the socket calls are nix's.

use std::os::fd::AsRawFd;

use nix::sys::socket::{
    recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

const RTM_NEWLINK: u16 = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_VLAN_ID: u16 = 1;
const IFF_UP: u32 = 0x1;
/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// Why a VLAN interface could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum VlanError {
    /// The parent interface does not exist.
    #[error("interface {0} not found")]
    NoParent(String),
    /// The VLAN id is outside 1..=4094, or the name is too long.
    #[error("invalid VLAN {0}")]
    Invalid(String),
    /// The kernel refused the request.
    #[error("netlink: {0}")]
    Netlink(#[from] nix::Error),
}

/// Creates `name` as VLAN `id` on `parent` and sets it up; when it exists already it is
/// only set up (IPA accepts `ip link add` failing with "exists").
pub fn add_vlan(parent: &str, id: u16, name: &str) -> Result<(), VlanError> {
    if !(1..=4094).contains(&id) || name.is_empty() || name.len() > IFNAME_MAX {
        return Err(VlanError::Invalid(format!("{name} (id {id})")));
    }
    let parent_index = nix::net::if_::if_nametoindex(parent)
        .map_err(|_| VlanError::NoParent(parent.to_owned()))?;
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    let kernel = NetlinkAddr::new(0, 0);
    sendto(
        sock.as_raw_fd(),
        &create_request(parent_index, id, name, 1),
        &kernel,
        MsgFlags::empty(),
    )?;
    match ack(&sock, 1) {
        Err(VlanError::Netlink(nix::Error::EEXIST)) => {
            tracing::info!(
                interface = name,
                "VLAN interface exists already; setting it up"
            );
            let index = nix::net::if_::if_nametoindex(name)?;
            sendto(
                sock.as_raw_fd(),
                &message(NLM_F_REQUEST | NLM_F_ACK, 2, index, &[]),
                &kernel,
                MsgFlags::empty(),
            )?;
            ack(&sock, 2)
        }
        other => other,
    }
}

/// The `RTM_NEWLINK` request creating VLAN `id` named `name` on link `parent_index`,
/// already up: the attributes `ip link add link <parent> name <name> type vlan id <id>`
/// sends, with IFF_UP asked for in the same message.
pub fn create_request(parent_index: u32, id: u16, name: &str, seq: u32) -> Vec<u8> {
    let mut data = Vec::new();
    attr(&mut data, IFLA_VLAN_ID, &id.to_ne_bytes());
    let mut info = Vec::new();
    // iproute2 sends the kind without its NUL; the kernel compares either.
    attr(&mut info, IFLA_INFO_KIND, b"vlan");
    attr(&mut info, IFLA_INFO_DATA, &data);
    let mut attrs = Vec::new();
    attr(&mut attrs, IFLA_IFNAME, &nul_terminated(name));
    attr(&mut attrs, IFLA_LINK, &parent_index.to_ne_bytes());
    attr(&mut attrs, IFLA_LINKINFO, &info);
    let create = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    message(create, seq, 0, &attrs)
}

fn nul_terminated(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Appends one route attribute, padded to 4 bytes.
fn attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = u16::try_from(4 + payload.len()).expect("attributes here are small");
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

/// An `RTM_NEWLINK` request: netlink header, `ifinfomsg` for link `index` (0: a new
/// one, named by the attributes) asking for IFF_UP, attributes.
fn message(flags: u16, seq: u32, index: u32, attrs: &[u8]) -> Vec<u8> {
    let len = u32::try_from(16 + 16 + attrs.len()).expect("messages here are small");
    let mut m = Vec::with_capacity(len as usize);
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // ifinfomsg: family AF_UNSPEC, pad, type, index, flags, change mask.
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(&index.to_ne_bytes());
    m.extend_from_slice(&IFF_UP.to_ne_bytes());
    m.extend_from_slice(&IFF_UP.to_ne_bytes());
    m.extend_from_slice(attrs);
    m
}

/// Waits for the acknowledgement of request `seq`: 0 is success, else -errno.
fn ack(sock: &std::os::fd::OwnedFd, seq: u32) -> Result<(), VlanError> {
    let mut buf = [0u8; 4096];
    loop {
        let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        let mut off = 0;
        while off + 20 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
            let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().expect("2 bytes"));
            let mseq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().expect("4 bytes"));
            if kind == NLMSG_ERROR && mseq == seq {
                let code = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().expect("4 bytes"));
                return if code == 0 {
                    Ok(())
                } else {
                    Err(VlanError::Netlink(nix::Error::from_raw(-code)))
                };
            }
            if len < 16 {
                break;
            }
            off += (len + 3) & !3;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes() {
        let mut a = Vec::new();
        attr(&mut a, IFLA_IFNAME, b"eth0.5\0");
        assert_eq!(a.len(), 12, "4 header + 7 name, padded to 12");
        let m = message(NLM_F_REQUEST | NLM_F_ACK, 7, 3, &a);
        assert_eq!(u32::from_ne_bytes(m[20..24].try_into().unwrap()), 3);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), RTM_NEWLINK);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(u32::from_ne_bytes(m[24..28].try_into().unwrap()), IFF_UP);
    }

    #[test]
    fn refuses_bad_ids_and_names_before_asking_the_kernel() {
        assert!(matches!(
            add_vlan("lo", 0, "lo.0"),
            Err(VlanError::Invalid(_))
        ));
        assert!(matches!(
            add_vlan("lo", 4095, "lo.4095"),
            Err(VlanError::Invalid(_))
        ));
        assert!(matches!(
            add_vlan("lo", 5, "a-very-long-name.5"),
            Err(VlanError::Invalid(_))
        ));
        assert!(matches!(
            add_vlan("ira-no-such0", 5, "x.5"),
            Err(VlanError::NoParent(_))
        ));
    }
}
