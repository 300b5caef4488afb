//! How one message is framed in a spool segment:
//!
//! ```text
//! u32 LE  body length
//! u32 LE  CRC-32 of the body
//! body:   u64 LE sequence number, u16 LE topic length, topic bytes, payload bytes
//! ```
//!
//! A torn write (the process killed mid-record) or a flipped bit fails the length or
//! checksum test, so a damaged tail is cut off instead of being replayed as garbage.

use std::io::{self, Read};

pub const HEADER: usize = 8;
const BODY_FIXED: usize = 10;
/// Larger than any MQTT message a broker accepts by default, small enough that a
/// corrupt length cannot make the reader allocate gigabytes.
pub const MAX_BODY: usize = 64 << 20;

/// One spooled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Frames a record into `out` (cleared first). Returns its length on disk.
pub fn encode(out: &mut Vec<u8>, seq: u64, topic: &str, payload: &[u8]) -> usize {
    let topic = &topic.as_bytes()[..topic.len().min(u16::MAX as usize)];
    let body_len = BODY_FIXED + topic.len() + payload.len();
    out.clear();
    out.reserve(HEADER + body_len);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    out.extend_from_slice(topic);
    out.extend_from_slice(payload);
    seal(out, seq);
    out.len()
}

/// Sets the sequence number of a framed record and its checksum; the spool numbers
/// a record only once it has room for it.
pub fn seal(out: &mut [u8], seq: u64) {
    out[HEADER..HEADER + 8].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&out[HEADER..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// What reading the next record found.
#[derive(Debug)]
pub enum Next {
    Record(Record, usize),
    /// Clean end of the data.
    End,
    /// A partial or damaged record: everything from here on is unusable.
    Damaged(String),
}

/// Reads one record. `buf` is reused between calls.
pub fn read(src: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<Next> {
    let mut header = [0u8; HEADER];
    match read_full(src, &mut header)? {
        0 => return Ok(Next::End),
        n if n < HEADER => {
            return Ok(Next::Damaged(format!(
                "torn header ({n} of {HEADER} bytes)"
            )))
        }
        _ => {}
    }
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if !(BODY_FIXED..=MAX_BODY).contains(&len) {
        return Ok(Next::Damaged(format!("impossible record length {len}")));
    }
    buf.resize(len, 0);
    let got = read_full(src, buf)?;
    if got < len {
        return Ok(Next::Damaged(format!("torn record ({got} of {len} bytes)")));
    }
    if crc32fast::hash(buf) != crc {
        return Ok(Next::Damaged("checksum mismatch".into()));
    }
    let seq = u64::from_le_bytes(buf[0..8].try_into().expect("8 bytes"));
    let topic_len = u16::from_le_bytes(buf[8..10].try_into().expect("2 bytes")) as usize;
    if BODY_FIXED + topic_len > len {
        return Ok(Next::Damaged("topic longer than the record".into()));
    }
    let topic = String::from_utf8_lossy(&buf[BODY_FIXED..BODY_FIXED + topic_len]).into_owned();
    let payload = buf[BODY_FIXED + topic_len..].to_vec();
    Ok(Next::Record(
        Record {
            seq,
            topic,
            payload,
        },
        HEADER + len,
    ))
}

fn read_full(src: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(seq: u64, topic: &str, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode(&mut v, seq, topic, payload);
        v
    }

    #[test]
    fn round_trip() {
        let mut data = one(7, "sensor/CNC", b"{\"a\":1}");
        data.extend(one(8, "t", b""));
        let mut src = &data[..];
        let mut buf = Vec::new();
        match read(&mut src, &mut buf).unwrap() {
            Next::Record(r, n) => {
                assert_eq!(
                    (r.seq, r.topic.as_str(), &r.payload[..]),
                    (7, "sensor/CNC", &b"{\"a\":1}"[..])
                );
                assert_eq!(n, HEADER + 10 + 10 + 7);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(read(&mut src, &mut buf).unwrap(), Next::Record(r, _) if r.seq == 8 && r.payload.is_empty())
        );
        assert!(matches!(read(&mut src, &mut buf).unwrap(), Next::End));
    }

    #[test]
    fn every_truncation_is_detected() {
        let data = one(1, "topic", b"payload bytes");
        for cut in 1..data.len() {
            let mut src = &data[..cut];
            let got = read(&mut src, &mut Vec::new()).unwrap();
            assert!(matches!(got, Next::Damaged(_)), "cut at {cut}: {got:?}");
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let data = one(1, "topic", b"payload bytes");
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x40;
            let got = read(&mut &bad[..], &mut Vec::new()).unwrap();
            assert!(matches!(got, Next::Damaged(_)), "flip at {i}: {got:?}");
        }
    }
}
