//! IPv4, IPv6 and TCP as checked views over byte buffers, in the manner of
//! smoltcp's `wire` module.
//!
//! Each protocol has a `field` module of byte ranges (with the RFC that
//! defines them), a `Packet<T: AsRef<[u8]>>` view whose `new_checked`
//! proves the fixed header is in the buffer (after which every getter is
//! infallible, and setters exist when `T: AsMut<[u8]>`), and a `Repr`: the
//! header's meaning as plain values, which `parse` reads from a view (and
//! refuses what this engine does not take) and `emit` writes into one. No
//! view allocates: they borrow the caller's buffer.
//!
//! [`super::packet`] puts them together into the one segment type the
//! engine reads and writes.

pub mod checksum;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// A byte range of a header.
pub type Field = std::ops::Range<usize>;

/// IP protocol number of TCP (IANA "Assigned Internet Protocol Numbers";
/// RFC 9293).
pub const PROTO_TCP: u8 = 6;

/// Hop limit / TTL of what we send: the common Linux default, so replies do
/// not stand out.
pub const HOP_LIMIT: u8 = 64;

/// Why a packet was dropped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Shorter than the headers it claims.
    Truncated,
    /// Neither IPv4 nor IPv6, or a length field that contradicts itself.
    Malformed,
    /// IPv4 options or IPv6 extension headers.
    IpOptions,
    Fragment,
    /// Not TCP.
    NotTcp,
    BadChecksum,
}

impl Reject {
    pub const ALL: [Reject; 6] = [
        Reject::Truncated,
        Reject::Malformed,
        Reject::IpOptions,
        Reject::Fragment,
        Reject::NotTcp,
        Reject::BadChecksum,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Truncated => "truncated",
            Reject::Malformed => "malformed",
            Reject::IpOptions => "ip_options",
            Reject::Fragment => "fragment",
            Reject::NotTcp => "not_tcp",
            Reject::BadChecksum => "bad_checksum",
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Big-endian `u16` at the start of `b` (a field's bytes).
#[inline]
fn get_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Big-endian `u32` at the start of `b`.
#[inline]
fn get_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// An address as IPv6 (an IPv4 address mapped, RFC 4291 §2.5.5.2).
pub fn v6_of(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}
