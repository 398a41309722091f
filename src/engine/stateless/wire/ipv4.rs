//! The IPv4 header (RFC 791 §3.1). This engine takes it without options
//! only: real clients send none on TCP, and parsing them is where bugs live.

use super::{checksum, get_u16, Field, Reject};
use std::net::Ipv4Addr;

/// Byte ranges of the header (RFC 791 §3.1, "Internet Header Format").
mod field {
    use super::Field;
    /// Version (high nibble) and IHL, the header length in 32-bit words.
    pub const VER_IHL: usize = 0;
    /// Type of service, today DSCP and ECN (RFC 2474, RFC 3168).
    pub const DSCP_ECN: usize = 1;
    /// Total length: header and data, in bytes.
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    /// Flags (reserved, DF, MF) and the 13-bit fragment offset.
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// "Don't fragment" (RFC 791 §3.1, flags bit 1).
const FLAG_DF: u16 = 0x4000;
/// "More fragments" (flags bit 2).
const FLAG_MF: u16 = 0x2000;
/// Fragment offset, in 8-byte units.
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 header at the start of a buffer.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// A view without checks: getters may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// A view whose fixed header is in the buffer.
    pub fn new_checked(buffer: T) -> Result<Self, Reject> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Truncated` unless the fixed header (20 bytes) is there; the IHL and
    /// total length are judged by [`Repr::parse`].
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
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Length of the whole packet as the header claims (may exceed what was
    /// captured).
    pub fn total_len(&self) -> usize {
        usize::from(get_u16(&self.buffer.as_ref()[field::LENGTH]))
    }

    pub fn ident(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::IDENT])
    }

    pub fn dont_frag(&self) -> bool {
        get_u16(&self.buffer.as_ref()[field::FLG_OFF]) & FLAG_DF != 0
    }

    pub fn more_frags(&self) -> bool {
        get_u16(&self.buffer.as_ref()[field::FLG_OFF]) & FLAG_MF != 0
    }

    /// Fragment offset in 8-byte units.
    pub fn frag_offset(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::FLG_OFF]) & OFFSET_MASK
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload (6 = TCP).
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    pub fn checksum(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The header checksum of the 20-byte header is right.
    pub fn verify_checksum(&self) -> bool {
        checksum::compute(0, &self.buffer.as_ref()[..HEADER_LEN]) == 0
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The captured bytes after a 20-byte header, cut at the total length.
    pub fn payload(&self) -> &'a [u8] {
        let b = self.buffer.as_ref();
        let end = self.total_len().min(b.len()).max(HEADER_LEN);
        &b[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version to 4 and the IHL to `header_len` / 4.
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }

    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = v;
    }

    pub fn set_total_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    pub fn set_ident(&mut self, v: u16) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&v.to_be_bytes());
    }

    /// An unfragmented packet, DF as given.
    pub fn set_unfragmented(&mut self, dont_frag: bool) {
        let v = if dont_frag { FLAG_DF } else { 0 };
        self.buffer.as_mut()[field::FLG_OFF].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = v;
    }

    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }

    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
    }

    /// Computes and stores the checksum of the 20-byte header.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::compute(0, &self.buffer.as_ref()[..HEADER_LEN]);
        self.set_checksum(c);
    }

    /// The bytes after a 20-byte header.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// An IPv4 header without options, as values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src_addr: Ipv4Addr,
    pub dst_addr: Ipv4Addr,
    /// Protocol of the payload.
    pub next_header: u8,
    /// Payload length the header claims (total length − 20).
    pub payload_len: usize,
    pub hop_limit: u8,
}

impl Repr {
    /// Reads a checked header, refusing (in this order) a wrong version,
    /// an IHL below 5 or a total length below 20 (`Malformed`), options
    /// (`IpOptions`), fragments — MF set or a non-zero offset; DF is fine —
    /// and a bad header checksum.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &Packet<&T>) -> Result<Repr, Reject> {
        if p.version() != 4 {
            return Err(Reject::Malformed);
        }
        let ihl = p.header_len();
        if ihl < HEADER_LEN {
            return Err(Reject::Malformed);
        }
        if ihl > HEADER_LEN {
            return Err(Reject::IpOptions);
        }
        if p.total_len() < HEADER_LEN {
            return Err(Reject::Malformed);
        }
        if p.more_frags() || p.frag_offset() != 0 {
            return Err(Reject::Fragment);
        }
        if !p.verify_checksum() {
            return Err(Reject::BadChecksum);
        }
        Ok(Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: p.total_len() - HEADER_LEN,
            hop_limit: p.hop_limit(),
        })
    }

    /// Bytes the header takes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header (DF set, identification 0, checksum filled) into a
    /// buffer of at least [`HEADER_LEN`] bytes. `payload_len` must fit the
    /// 16-bit total length (the caller checks).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_version_and_header_len(HEADER_LEN);
        p.set_dscp_ecn(0);
        p.set_total_len((HEADER_LEN + self.payload_len) as u16);
        p.set_ident(0);
        p.set_unfragmented(true);
        p.set_hop_limit(self.hop_limit);
        p.set_next_header(self.next_header);
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
        p.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr() -> Repr {
        Repr {
            src_addr: Ipv4Addr::new(10, 77, 0, 1),
            dst_addr: Ipv4Addr::new(10, 77, 0, 2),
            next_header: 6,
            payload_len: 24,
            hop_limit: 64,
        }
    }

    #[test]
    fn emit_then_parse_round_trips() {
        let mut b = [0xffu8; 44];
        repr().emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(
            &b[..12],
            &[0x45, 0, 0, 44, 0, 0, 0x40, 0, 64, 6, b[10], b[11]]
        );
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.dont_frag() && !p.more_frags());
        assert_eq!(Repr::parse(&p), Ok(repr()));
        assert_eq!(p.payload().len(), 24);
    }

    #[test]
    fn fragments_and_options_are_refused() {
        let mut b = [0u8; 44];
        repr().emit(&mut Packet::new_unchecked(&mut b[..]));
        let mut f = b;
        let mut p = Packet::new_unchecked(&mut f[..]);
        p.set_unfragmented(false);
        p.buffer[6] |= 0x20; // MF
        p.fill_checksum();
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&f[..])),
            Err(Reject::Fragment)
        );
        let mut o = b;
        o[0] = 0x46;
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&o[..])),
            Err(Reject::IpOptions)
        );
        assert_eq!(
            Packet::new_checked(&b[..19]).unwrap_err(),
            Reject::Truncated
        );
    }
}
