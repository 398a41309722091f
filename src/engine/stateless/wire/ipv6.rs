//! The IPv6 header (RFC 8200 §3). This engine takes TCP directly after it
//! only: extension headers (RFC 8200 §4) are refused, a fragment header
//! (§4.5) as a fragment.

use super::{get_u16, Field, Reject};
use std::net::Ipv6Addr;

/// Byte ranges of the header (RFC 8200 §3, "IPv6 Header Format").
mod field {
    use super::Field;
    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: Field = 0..4;
    /// Payload length: everything after this header, in bytes.
    pub const LENGTH: Field = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// Next-header values that are extension headers (IANA "IPv6 Extension
/// Header Types"): hop-by-hop, routing, destination options, AH, ESP,
/// mobility, HIP, shim6. 44, the fragment header, is told apart.
const EXTENSION_HEADERS: [u8; 8] = [0, 43, 60, 51, 50, 135, 139, 140];
const FRAGMENT_HEADER: u8 = 44;

/// A view of an IPv6 header at the start of a buffer.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// A view without checks: getters may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// A view whose 40-byte header is in the buffer.
    pub fn new_checked(buffer: T) -> Result<Self, Reject> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<(), Reject> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Reject::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW.start] >> 4
    }

    /// Payload length as the header claims (may exceed what was captured).
    pub fn payload_len(&self) -> usize {
        usize::from(get_u16(&self.buffer.as_ref()[field::LENGTH]))
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    pub fn src_addr(&self) -> Ipv6Addr {
        addr(&self.buffer.as_ref()[field::SRC_ADDR])
    }

    pub fn dst_addr(&self) -> Ipv6Addr {
        addr(&self.buffer.as_ref()[field::DST_ADDR])
    }
}

fn addr(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    Ipv6Addr::from(a)
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The captured bytes after the header, cut at the payload length.
    pub fn payload(&self) -> &'a [u8] {
        let b = self.buffer.as_ref();
        let end = (HEADER_LEN + self.payload_len()).min(b.len());
        &b[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Version 6, traffic class 0, flow label 0.
    pub fn set_version(&mut self) {
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&[0x60, 0, 0, 0]);
    }

    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = v;
    }

    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }

    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
    }

    /// The bytes after the header.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// An IPv6 header without extension headers, as values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src_addr: Ipv6Addr,
    pub dst_addr: Ipv6Addr,
    /// Protocol of the payload (never an extension header).
    pub next_header: u8,
    /// Payload length the header claims.
    pub payload_len: usize,
    pub hop_limit: u8,
}

impl Repr {
    /// Reads a checked header, refusing a wrong version (`Malformed`), a
    /// fragment header (`Fragment`) and other extension headers
    /// (`IpOptions`).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &Packet<&T>) -> Result<Repr, Reject> {
        if p.version() != 6 {
            return Err(Reject::Malformed);
        }
        match p.next_header() {
            FRAGMENT_HEADER => return Err(Reject::Fragment),
            n if EXTENSION_HEADERS.contains(&n) => return Err(Reject::IpOptions),
            _ => {}
        }
        Ok(Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: p.payload_len(),
            hop_limit: p.hop_limit(),
        })
    }

    /// Bytes the header takes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into a buffer of at least [`HEADER_LEN`] bytes.
    /// `payload_len` must fit 16 bits (the caller checks).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_version();
        p.set_payload_len(self.payload_len as u16);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_then_parse_round_trips_and_extension_headers_are_refused() {
        let r = Repr {
            src_addr: "fd77::1".parse().unwrap(),
            dst_addr: "fd77::2".parse().unwrap(),
            next_header: 6,
            payload_len: 20,
            hop_limit: 64,
        };
        let mut b = [0xffu8; 60];
        r.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(&b[..8], &[0x60, 0, 0, 0, 0, 20, 6, 64]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p), Ok(r));
        assert_eq!(p.payload().len(), 20);
        for (nh, want) in [
            (44, Reject::Fragment),
            (0, Reject::IpOptions),
            (60, Reject::IpOptions),
        ] {
            b[6] = nh;
            assert_eq!(Repr::parse(&Packet::new_unchecked(&b[..])), Err(want));
        }
        assert_eq!(
            Packet::new_checked(&b[..39]).unwrap_err(),
            Reject::Truncated
        );
    }
}
