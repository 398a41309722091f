//! The Internet checksum (RFC 1071) and the TCP pseudo-header sum
//! (RFC 9293 §3.1 for IPv4, RFC 8200 §8.1 for IPv6).

use super::v6_of;
use std::net::IpAddr;

/// Ones'-complement sum of `data` added to `initial`, folded and inverted:
/// the value to store in a checksum field, and 0 when a buffer that holds
/// its own checksum is intact.
pub fn compute(initial: u32, data: &[u8]) -> u16 {
    let mut sum = u64::from(initial);
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Unfolded sum of the pseudo-header of a `protocol` segment of `len`
/// bytes. Two IPv4 addresses make the IPv4 pseudo-header; anything else the
/// IPv6 one (an IPv4 address mapped into IPv6).
pub fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: u8, len: usize) -> u32 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks_exact(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            add(&s.octets());
            add(&d.octets());
        }
        (s, d) => {
            add(&v6_of(s).octets());
            add(&v6_of(d).octets());
        }
    }
    let len = len as u32;
    sum + u32::from(protocol) + (len >> 16) + (len & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ipv4_header_checksum() {
        // The classic example header (Wikipedia, "IPv4 header checksum").
        let h: [u8; 20] = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(compute(0, &h), 0xb861);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(
            compute(0, &[0x12, 0x34, 0x56]),
            compute(0, &[0x12, 0x34, 0x56, 0])
        );
    }
}
