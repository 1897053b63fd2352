//! The DNS messages of an mDNS service lookup (RFC 1035 wire format, RFC 6762/6763):
//! one query for a service instance's SRV and TXT records, and the records of the
//! answers, with name compression followed and bounded.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const TYPE_A: u16 = 1;
const TYPE_TXT: u16 = 16;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;
/// The "unicast response" bit of a question's class (RFC 6762 5.4).
const QU: u16 = 0x8000;
/// Compression pointers followed in one name before it is refused (a loop).
const MAX_POINTERS: usize = 32;

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed DNS message: {0}")]
pub struct Malformed(&'static str);

/// One resource record the lookup uses; others are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// SRV: the instance's port and target host.
    Srv {
        /// Owner name, lower case, with the final dot.
        name: String,
        /// Port.
        port: u16,
        /// Target host name, with the final dot.
        target: String,
    },
    /// TXT: `key=value` properties (a key without `=` has an empty value).
    Txt {
        /// Owner name, lower case, with the final dot.
        name: String,
        /// The properties; the first of a repeated key wins (RFC 6763 6.4).
        props: BTreeMap<String, String>,
    },
    /// A or AAAA: an address of a host.
    Addr {
        /// Owner name, lower case, with the final dot.
        name: String,
        /// The address.
        addr: IpAddr,
    },
}

/// A query (id 0, as mDNS wants) for `instance`'s SRV and TXT records, both asking
/// for a unicast answer.
pub fn query(instance: &str) -> Vec<u8> {
    let mut m = vec![0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0];
    for qtype in [TYPE_SRV, TYPE_TXT] {
        put_name(&mut m, instance);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&(CLASS_IN | QU).to_be_bytes());
    }
    m
}

fn put_name(m: &mut Vec<u8>, name: &str) {
    for label in name.trim_end_matches('.').split('.') {
        let label = &label.as_bytes()[..label.len().min(63)];
        m.push(u8::try_from(label.len()).expect("a label is at most 63 bytes"));
        m.extend_from_slice(label);
    }
    m.push(0);
}

/// The records of a response's answer, authority and additional sections. A query
/// (QR bit clear) yields none.
pub fn records(msg: &[u8]) -> Result<Vec<Record>, Malformed> {
    let mut r = Reader { msg, pos: 0 };
    let _id = r.u16()?;
    let flags = r.u16()?;
    if flags & 0x8000 == 0 {
        return Ok(Vec::new());
    }
    let qd = r.u16()?;
    let counts = [r.u16()?, r.u16()?, r.u16()?];
    for _ in 0..qd {
        r.name()?;
        r.take(4)?;
    }
    let mut out = Vec::new();
    for _ in 0..counts.iter().map(|&c| usize::from(c)).sum::<usize>() {
        let name = r.name()?;
        let rtype = r.u16()?;
        let _class = r.u16()?;
        let _ttl = r.take(4)?;
        let len = usize::from(r.u16()?);
        let start = r.pos;
        let data = r.take(len)?;
        match rtype {
            TYPE_SRV if len >= 7 => {
                let port = u16::from_be_bytes([data[4], data[5]]);
                let mut t = Reader {
                    msg,
                    pos: start + 6,
                };
                let target = t.name()?;
                out.push(Record::Srv { name, port, target });
            }
            TYPE_TXT => out.push(Record::Txt {
                name,
                props: txt(data)?,
            }),
            TYPE_A if len == 4 => out.push(Record::Addr {
                name,
                addr: IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
            }),
            TYPE_AAAA if len == 16 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(data);
                out.push(Record::Addr {
                    name,
                    addr: IpAddr::V6(Ipv6Addr::from(b)),
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

fn txt(data: &[u8]) -> Result<BTreeMap<String, String>, Malformed> {
    let mut props = BTreeMap::new();
    let mut i = 0;
    while i < data.len() {
        let len = usize::from(data[i]);
        let s = data
            .get(i + 1..i + 1 + len)
            .ok_or(Malformed("TXT string past its record"))?;
        i += 1 + len;
        let s = String::from_utf8_lossy(s);
        let (k, v) = s.split_once('=').unwrap_or((&s, ""));
        if !k.is_empty() {
            props
                .entry(k.to_ascii_lowercase())
                .or_insert_with(|| v.to_owned());
        }
    }
    Ok(props)
}

struct Reader<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let s = self
            .msg
            .get(self.pos..self.pos + n)
            .ok_or(Malformed("truncated"))?;
        self.pos += n;
        Ok(s)
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A name, lower case with the final dot; the reader moves past it (not past the
    /// places its pointers lead to).
    fn name(&mut self) -> Result<String, Malformed> {
        let mut name = String::new();
        let mut pos = self.pos;
        let mut jumps = 0;
        loop {
            let len = *self.msg.get(pos).ok_or(Malformed("truncated name"))?;
            match len & 0xc0 {
                0x00 if len == 0 => {
                    if jumps == 0 {
                        self.pos = pos + 1;
                    }
                    break;
                }
                0x00 => {
                    let label = self
                        .msg
                        .get(pos + 1..pos + 1 + usize::from(len))
                        .ok_or(Malformed("truncated label"))?;
                    name.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
                    name.push('.');
                    pos += 1 + usize::from(len);
                }
                0xc0 => {
                    let low = *self
                        .msg
                        .get(pos + 1)
                        .ok_or(Malformed("truncated pointer"))?;
                    if jumps == 0 {
                        self.pos = pos + 2;
                    }
                    jumps += 1;
                    if jumps > MAX_POINTERS {
                        return Err(Malformed("compression loop"));
                    }
                    pos = usize::from(len & 0x3f) << 8 | usize::from(low);
                }
                _ => return Err(Malformed("unknown label type")),
            }
            if name.len() > 255 {
                return Err(Malformed("name too long"));
            }
        }
        if name.is_empty() {
            name.push('.');
        }
        Ok(name)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A response as a responder sends it: SRV and TXT of `instance` (the TXT's
    /// owner name compressed to the SRV's), and the target's A record.
    pub(crate) fn response(
        instance: &str,
        port: u16,
        target: &str,
        txt: &[&str],
        addrs: &[IpAddr],
    ) -> Vec<u8> {
        let mut m = vec![
            0,
            0,
            0x84,
            0,
            0,
            0,
            0,
            2,
            0,
            0,
            0,
            u8::try_from(addrs.len()).unwrap(),
        ];
        let owner = m.len();
        put_name(&mut m, instance);
        m.extend_from_slice(&TYPE_SRV.to_be_bytes());
        m.extend_from_slice(&(CLASS_IN | QU).to_be_bytes());
        m.extend_from_slice(&120u32.to_be_bytes());
        let mut rdata = vec![0, 0, 0, 0];
        rdata.extend_from_slice(&port.to_be_bytes());
        put_name(&mut rdata, target);
        m.extend_from_slice(&u16::try_from(rdata.len()).unwrap().to_be_bytes());
        m.extend_from_slice(&rdata);
        // The TXT record's owner: a pointer to the SRV's.
        m.extend_from_slice(&(0xc000 | u16::try_from(owner).unwrap()).to_be_bytes());
        m.extend_from_slice(&TYPE_TXT.to_be_bytes());
        m.extend_from_slice(&CLASS_IN.to_be_bytes());
        m.extend_from_slice(&4500u32.to_be_bytes());
        let mut rdata = Vec::new();
        for s in txt {
            rdata.push(u8::try_from(s.len()).unwrap());
            rdata.extend_from_slice(s.as_bytes());
        }
        m.extend_from_slice(&u16::try_from(rdata.len()).unwrap().to_be_bytes());
        m.extend_from_slice(&rdata);
        for addr in addrs {
            put_name(&mut m, target);
            let (t, b) = match addr {
                IpAddr::V4(a) => (TYPE_A, a.octets().to_vec()),
                IpAddr::V6(a) => (TYPE_AAAA, a.octets().to_vec()),
            };
            m.extend_from_slice(&t.to_be_bytes());
            m.extend_from_slice(&CLASS_IN.to_be_bytes());
            m.extend_from_slice(&120u32.to_be_bytes());
            m.extend_from_slice(&u16::try_from(b.len()).unwrap().to_be_bytes());
            m.extend_from_slice(&b);
        }
        m
    }

    #[test]
    fn the_query_asks_for_srv_and_txt_with_unicast_answers() {
        let q = query("baremetal._openstack._tcp.local.");
        assert_eq!(&q[..12], &[0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0]);
        let name = b"\x09baremetal\x0a_openstack\x04_tcp\x05local\x00";
        assert_eq!(&q[12..12 + name.len()], name);
        assert_eq!(&q[12 + name.len()..16 + name.len()], &[0, 33, 0x80, 1]);
        assert_eq!(&q[q.len() - 4..], &[0, 16, 0x80, 1]);
        // A query is not a response: no records.
        assert_eq!(records(&q), Ok(vec![]));
    }

    #[test]
    fn a_response_gives_srv_txt_and_addresses_with_compression() {
        let a: IpAddr = "10.77.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        let m = response(
            "Baremetal._openstack._tcp.local.",
            6385,
            "ironic.local.",
            &[
                "path=/baremetal",
                "protocol=http",
                "ipa_debug=True",
                "flag",
                "path=/other",
            ],
            &[a, v6],
        );
        let recs = records(&m).unwrap();
        let instance = "baremetal._openstack._tcp.local.".to_owned();
        assert_eq!(
            recs[0],
            Record::Srv {
                name: instance.clone(),
                port: 6385,
                target: "ironic.local.".into()
            }
        );
        let Record::Txt { name, props } = &recs[1] else {
            panic!("{recs:?}")
        };
        assert_eq!(name, &instance);
        assert_eq!(props["path"], "/baremetal", "the first of a repeated key");
        assert_eq!(props["ipa_debug"], "True");
        assert_eq!(props["flag"], "");
        assert_eq!(
            &recs[2..],
            &[
                Record::Addr {
                    name: "ironic.local.".into(),
                    addr: a
                },
                Record::Addr {
                    name: "ironic.local.".into(),
                    addr: v6
                }
            ]
        );
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let good = response("a._openstack._tcp.local.", 1, "h.local.", &["x=1"], &[]);
        for cut in 0..good.len() {
            let _ = records(&good[..cut]);
        }
        // A pointer to itself.
        let mut m = vec![0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(&[0xc0, 12]);
        assert_eq!(records(&m), Err(Malformed("compression loop")));
        // A TXT string longer than its record.
        let mut m = vec![0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[0, 16, 0, 1, 0, 0, 0, 1, 0, 2, 5, b'a']);
        assert_eq!(records(&m), Err(Malformed("TXT string past its record")));
    }
}
