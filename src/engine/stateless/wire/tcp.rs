//! The TCP header (RFC 9293 §3.1) and the one option this engine reads or
//! writes, the maximum segment size (RFC 9293 §3.2, §3.7.1).

use super::{checksum, get_u16, get_u32, Field, Reject, PROTO_TCP};
use std::net::IpAddr;

/// Byte ranges of the header (RFC 9293 §3.1, "Header Format").
mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    /// Data offset (high nibble: header length in 32-bit words), reserved.
    pub const DATA_OFF: usize = 12;
    /// Control bits: CWR ECE URG ACK PSH RST SYN FIN.
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::URGENT.end;

/// Control bits (RFC 9293 §3.1), as in [`Packet::flags`].
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// Option kinds (RFC 9293 §3.2).
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
/// Length of the MSS option: kind, length, 16-bit value.
const OPT_MSS_LEN: usize = 4;

/// A view of a TCP header (and what follows) at the start of a buffer.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// A view without checks: getters may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// A view whose whole header, options included, is in the buffer.
    pub fn new_checked(buffer: T) -> Result<Self, Reject> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Truncated` if the buffer is shorter than 20 bytes or than the data
    /// offset says; `Malformed` if the data offset is below 5 words.
    pub fn check_len(&self) -> Result<(), Reject> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Reject::Truncated);
        }
        let off = self.header_len();
        if off < HEADER_LEN {
            return Err(Reject::Malformed);
        }
        if off > len {
            return Err(Reject::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn src_port(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::SRC_PORT])
    }

    pub fn dst_port(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::DST_PORT])
    }

    pub fn seq_number(&self) -> u32 {
        get_u32(&self.buffer.as_ref()[field::SEQ_NUM])
    }

    pub fn ack_number(&self) -> u32 {
        get_u32(&self.buffer.as_ref()[field::ACK_NUM])
    }

    /// Header length in bytes, options included (data offset × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The control bits ([`SYN`], [`ACK`], ...).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn window_len(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::WIN_SIZE])
    }

    pub fn checksum(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The option bytes.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The MSS option, if the segment carries a well-formed one. Stops at
    /// the end-of-list option or at the first option whose length does not
    /// fit.
    pub fn mss(&self) -> Option<u16> {
        let opts = self.options();
        let mut i = 0;
        while i < opts.len() {
            match opts[i] {
                OPT_END => return None,
                OPT_NOP => i += 1,
                kind => {
                    let len = usize::from(*opts.get(i + 1)?);
                    if len < 2 || i + len > opts.len() {
                        return None;
                    }
                    if kind == OPT_MSS && len == OPT_MSS_LEN {
                        return Some(get_u16(&opts[i + 2..]));
                    }
                    i += len;
                }
            }
        }
        None
    }

    /// The checksum over the pseudo-header and the whole buffer is right
    /// (the buffer must hold the whole segment).
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        let b = self.buffer.as_ref();
        checksum::compute(checksum::pseudo_header(src, dst, PROTO_TCP, b.len()), b) == 0
    }

    /// The checksum field holds only the pseudo-header sum (folded, not
    /// inverted): what Linux leaves there for a CHECKSUM_PARTIAL segment,
    /// completed by the NIC on the way out — or never, when the sender is
    /// a local container whose veth "offloads" it.
    pub fn has_partial_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        let len = self.buffer.as_ref().len();
        self.checksum()
            == !checksum::compute(checksum::pseudo_header(src, dst, PROTO_TCP, len), &[])
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The bytes after the header.
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_src_port(&mut self, v: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_dst_port(&mut self, v: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_seq_number(&mut self, v: u32) {
        self.buffer.as_mut()[field::SEQ_NUM].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_ack_number(&mut self, v: u32) {
        self.buffer.as_mut()[field::ACK_NUM].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the data offset (reserved bits cleared).
    pub fn set_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::DATA_OFF] = ((len / 4) as u8) << 4;
    }

    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v;
    }

    pub fn set_window_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::WIN_SIZE].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_urgent_at(&mut self, v: u16) {
        self.buffer.as_mut()[field::URGENT].copy_from_slice(&v.to_be_bytes());
    }

    /// The option bytes (as long as the data offset says).
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// The bytes after the header.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }

    /// Computes and stores the checksum over the pseudo-header and the
    /// whole buffer.
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let c = checksum::compute(checksum::pseudo_header(src, dst, PROTO_TCP, b.len()), b);
        self.set_checksum(c);
    }
}

/// A TCP header and its payload, as values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq_number: u32,
    pub ack_number: u32,
    /// Control bits ([`SYN`], [`ACK`], ...).
    pub flags: u8,
    pub window_len: u16,
    /// The MSS option (the only option emitted; SYN and SYN/ACK only).
    pub max_seg_size: Option<u16>,
    /// The payload bytes. When parsed from a capture cut short, only those
    /// captured.
    pub payload: &'a [u8],
}

impl<'a> Repr<'a> {
    /// Reads a checked header. The checksum is the caller's to verify: it
    /// needs the IP addresses and a complete segment.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &Packet<&'a T>) -> Repr<'a> {
        Repr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq_number: p.seq_number(),
            ack_number: p.ack_number(),
            flags: p.flags(),
            window_len: p.window_len(),
            max_seg_size: p.mss(),
            payload: p.payload(),
        }
    }

    /// Header length in bytes, options included.
    pub const fn header_len(&self) -> usize {
        if self.max_seg_size.is_some() {
            HEADER_LEN + OPT_MSS_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Bytes the segment takes: header, options, payload.
    pub const fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Writes the segment into a buffer of exactly [`Repr::buffer_len`]
    /// bytes, checksum filled for the pseudo-header of `src` → `dst`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>, src: IpAddr, dst: IpAddr) {
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq_number(self.seq_number);
        p.set_ack_number(self.ack_number);
        p.set_header_len(self.header_len());
        p.set_flags(self.flags);
        p.set_window_len(self.window_len);
        p.set_urgent_at(0);
        if let Some(mss) = self.max_seg_size {
            let o = p.options_mut();
            o[0] = OPT_MSS;
            o[1] = OPT_MSS_LEN as u8;
            o[2..4].copy_from_slice(&mss.to_be_bytes());
        }
        p.payload_mut().copy_from_slice(self.payload);
        p.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_then_parse_round_trips() {
        let (src, dst): (IpAddr, IpAddr) =
            ("10.77.0.1".parse().unwrap(), "10.77.0.2".parse().unwrap());
        let r = Repr {
            src_port: 22,
            dst_port: 40000,
            seq_number: 7,
            ack_number: 9,
            flags: SYN | ACK,
            window_len: 0,
            max_seg_size: Some(1460),
            payload: b"hi",
        };
        let mut b = [0xffu8; 26];
        r.emit(&mut Packet::new_unchecked(&mut b[..]), src, dst);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum(src, dst));
        assert!(!p.verify_checksum(dst, dst));
        assert_eq!(p.header_len(), 24);
        assert_eq!(Repr::parse(&p), r);
    }

    #[test]
    fn mss_parser_survives_garbage_options() {
        let mut b = [0u8; 24];
        b[12] = 6 << 4;
        // Option kind 3 with length 0 would loop forever if not caught.
        b[20] = 3;
        assert_eq!(Packet::new_checked(&b[..]).unwrap().mss(), None);
        b[20..24].copy_from_slice(&[OPT_NOP, OPT_MSS, 4, 0]);
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap().mss(),
            None,
            "cut short"
        );
        b[12] = 0x40;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Reject::Malformed);
        b[12] = 0xf0;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Reject::Truncated);
    }
}
