//! The frames between the collector and a plugin runner process, over the runner's
//! stdin and stdout: a little-endian `u32` length, then the body. Bodies are a small
//! hand-written binary encoding rather than JSON, because the plugin API's `Value`
//! has no serde support (it is an ABI type; changing it is a major version) and
//! because `Bytes` values and exact floats must cross unchanged.
//!
//! Every decoder checks lengths against what is left of the frame, so a runner that
//! sends garbage (its plugin scribbled on memory, say) is an error, never a panic or a
//! huge allocation in the collector.

use std::io::{self, Read, Write};

use abi_stable::std_types::{RString, RVec};
use mes_plugin_api::{FailureKind, Value};

use crate::sink::batch::RowKind;

/// The largest frame either side accepts. A message is bounded by
/// `limits.max_message_bytes`, and what a plugin writes for one message is of the
/// same order; this bound only stops a corrupt length from allocating gigabytes.
pub const MAX_FRAME: usize = 256 << 20;

/// The collector's request: run one message through the plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub cnc_id: String,
    /// `Some` the first time this runner process hears of `cnc_id`: the runner then
    /// creates the machine's instance with these settings (JSON text, or none).
    pub introduce: Option<Option<String>>,
    pub topic: String,
    pub part_program: String,
    pub timestamp: i64,
    pub payload: String,
}

/// A write the plugin made, as the runner's recorder accepted it.
#[derive(Debug, Clone, PartialEq)]
pub enum WireOp {
    Row {
        kind: RowKind,
        table: String,
        columns: Vec<String>,
        values: Vec<Value>,
        order_by: Vec<String>,
    },
    Exec {
        sql: String,
        params: Vec<Value>,
    },
}

/// The runner's answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Sent once, after the plugin loaded: what the runner loaded.
    Hello { class: String, version: String },
    /// Sent instead of `Hello` when the plugin could not be loaded; the runner exits.
    LoadFailed { reason: String },
    /// The plugin ran: its writes, and its failure if it returned one (the writes are
    /// then dropped, as in process).
    Done {
        ops: Vec<WireOp>,
        failure: Option<(FailureKind, String)>,
    },
    /// The plugin's constructor refused the machine (the text is the full detail).
    Refused { detail: String },
}

#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    fn opt_str(&mut self, v: Option<&str>) {
        match v {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
    fn strs(&mut self, v: &[String]) {
        self.u32(v.len() as u32);
        for s in v {
            self.str(s);
        }
    }
    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.u8(0),
            Value::Int(i) => {
                self.u8(1);
                self.u64(*i as u64);
            }
            Value::UInt(u) => {
                self.u8(2);
                self.u64(*u);
            }
            Value::Float(f) => {
                // The bits, so that NaN and -0.0 arrive as sent (the host-side
                // check refuses NaN, as in process).
                self.u8(3);
                self.u64(f.to_bits());
            }
            Value::Text(s) => {
                self.u8(4);
                self.str(s);
            }
            Value::Bytes(b) => {
                self.u8(5);
                self.bytes(b);
            }
            Value::Json(s) => {
                self.u8(6);
                self.str(s);
            }
        }
    }
    pub fn values(&mut self, v: &[Value]) {
        self.u32(v.len() as u32);
        for x in v {
            self.value(x);
        }
    }
}

pub struct Dec<'a> {
    buf: &'a [u8],
    at: usize,
}

type R<T> = Result<T, String>;

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Dec { buf, at: 0 }
    }
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("frame ends early (at byte {} wanting {n})", self.at))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> R<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> R<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn bytes(&mut self) -> R<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn str(&mut self) -> R<String> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| "text is not UTF-8".to_string())
    }
    fn opt_str(&mut self) -> R<Option<String>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str()?)),
            t => Err(format!("bad option tag {t}")),
        }
    }
    /// A count of items that take at least `min_size` bytes each: bounded by what is
    /// left, so a corrupt count cannot reserve memory.
    fn count(&mut self, min_size: usize) -> R<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size) > self.buf.len() - self.at {
            return Err(format!("count {n} is beyond the frame's end"));
        }
        Ok(n)
    }
    fn strs(&mut self) -> R<Vec<String>> {
        let n = self.count(4)?;
        (0..n).map(|_| self.str()).collect()
    }
    fn value(&mut self) -> R<Value> {
        Ok(match self.u8()? {
            0 => Value::Null,
            1 => Value::Int(self.u64()? as i64),
            2 => Value::UInt(self.u64()?),
            3 => Value::Float(f64::from_bits(self.u64()?)),
            4 => Value::Text(RString::from(self.str()?)),
            5 => Value::Bytes(RVec::from(self.bytes()?.to_vec())),
            6 => Value::Json(RString::from(self.str()?)),
            t => return Err(format!("bad value tag {t}")),
        })
    }
    pub fn values(&mut self) -> R<Vec<Value>> {
        let n = self.count(1)?;
        (0..n).map(|_| self.value()).collect()
    }
    fn end(&self) -> R<()> {
        if self.at == self.buf.len() {
            Ok(())
        } else {
            Err(format!(
                "{} bytes left over at the frame's end",
                self.buf.len() - self.at
            ))
        }
    }
}

fn kind_tag(k: RowKind) -> u8 {
    match k {
        RowKind::Insert => 0,
        RowKind::Upsert => 1,
        RowKind::UpsertNewest => 2,
    }
}

impl Call {
    pub fn encode(&self, e: &mut Enc) {
        e.str(&self.cnc_id);
        match &self.introduce {
            None => e.u8(0),
            Some(settings) => {
                e.u8(1);
                e.opt_str(settings.as_deref());
            }
        }
        e.str(&self.topic);
        e.str(&self.part_program);
        e.u64(self.timestamp as u64);
        e.str(&self.payload);
    }

    pub fn decode(buf: &[u8]) -> R<Call> {
        let mut d = Dec::new(buf);
        let cnc_id = d.str()?;
        let introduce = match d.u8()? {
            0 => None,
            1 => Some(d.opt_str()?),
            t => return Err(format!("bad introduce tag {t}")),
        };
        let call = Call {
            cnc_id,
            introduce,
            topic: d.str()?,
            part_program: d.str()?,
            timestamp: d.u64()? as i64,
            payload: d.str()?,
        };
        d.end()?;
        Ok(call)
    }
}

impl WireOp {
    fn encode(&self, e: &mut Enc) {
        match self {
            WireOp::Row {
                kind,
                table,
                columns,
                values,
                order_by,
            } => {
                e.u8(1);
                e.u8(kind_tag(*kind));
                e.str(table);
                e.strs(columns);
                e.values(values);
                e.strs(order_by);
            }
            WireOp::Exec { sql, params } => {
                e.u8(2);
                e.str(sql);
                e.values(params);
            }
        }
    }

    fn decode(d: &mut Dec<'_>) -> R<WireOp> {
        Ok(match d.u8()? {
            1 => WireOp::Row {
                kind: match d.u8()? {
                    0 => RowKind::Insert,
                    1 => RowKind::Upsert,
                    2 => RowKind::UpsertNewest,
                    t => return Err(format!("bad row kind {t}")),
                },
                table: d.str()?,
                columns: d.strs()?,
                values: d.values()?,
                order_by: d.strs()?,
            },
            2 => WireOp::Exec {
                sql: d.str()?,
                params: d.values()?,
            },
            t => return Err(format!("bad write tag {t}")),
        })
    }
}

impl Reply {
    pub fn encode(&self, e: &mut Enc) {
        match self {
            Reply::Hello { class, version } => {
                e.u8(1);
                e.str(class);
                e.str(version);
            }
            Reply::LoadFailed { reason } => {
                e.u8(2);
                e.str(reason);
            }
            Reply::Done { ops, failure } => {
                e.u8(3);
                e.u32(ops.len() as u32);
                for op in ops {
                    op.encode(e);
                }
                match failure {
                    None => e.u8(0),
                    Some((FailureKind::Error, text)) => {
                        e.u8(1);
                        e.str(text);
                    }
                    Some((FailureKind::Panic, text)) => {
                        e.u8(2);
                        e.str(text);
                    }
                }
            }
            Reply::Refused { detail } => {
                e.u8(4);
                e.str(detail);
            }
        }
    }

    pub fn decode(buf: &[u8]) -> R<Reply> {
        let mut d = Dec::new(buf);
        let reply = match d.u8()? {
            1 => Reply::Hello {
                class: d.str()?,
                version: d.str()?,
            },
            2 => Reply::LoadFailed { reason: d.str()? },
            3 => {
                let n = d.count(2)?;
                let ops = (0..n)
                    .map(|_| WireOp::decode(&mut d))
                    .collect::<R<Vec<_>>>()?;
                let failure = match d.u8()? {
                    0 => None,
                    1 => Some((FailureKind::Error, d.str()?)),
                    2 => Some((FailureKind::Panic, d.str()?)),
                    t => return Err(format!("bad failure tag {t}")),
                };
                Reply::Done { ops, failure }
            }
            4 => Reply::Refused { detail: d.str()? },
            t => return Err(format!("bad reply tag {t}")),
        };
        d.end()?;
        Ok(reply)
    }
}

/// Writes one frame (blocking), for the runner's side.
pub fn write_frame(out: &mut impl Write, body: &[u8]) -> io::Result<()> {
    out.write_all(&(body.len() as u32).to_le_bytes())?;
    out.write_all(body)?;
    out.flush()
}

/// Reads one frame (blocking), for the runner's side. `Ok(None)`: the other side
/// closed the pipe between frames.
pub fn read_frame(input: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<Option<()>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is over the limit of {MAX_FRAME}"),
        ));
    }
    buf.clear();
    buf.resize(len, 0);
    input.read_exact(buf)?;
    Ok(Some(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_value() -> Vec<Value> {
        vec![
            Value::Null,
            Value::Int(i64::MIN),
            Value::Int(-1),
            Value::UInt(u64::MAX),
            Value::Float(-0.0),
            Value::Float(1e300),
            Value::Float(f64::INFINITY),
            Value::Text("CNC001 ✓ `; DROP TABLE x".into()),
            Value::Text("".into()),
            Value::Bytes(RVec::from(vec![0u8, 255, 10, 13])),
            Value::Json(r#"{"a":[1,2]}"#.into()),
        ]
    }

    fn done() -> Reply {
        Reply::Done {
            ops: vec![
                WireOp::Row {
                    kind: RowKind::Insert,
                    table: "cnc_data".into(),
                    columns: vec!["a".into(), "b".into()],
                    values: every_value(),
                    order_by: vec![],
                },
                WireOp::Row {
                    kind: RowKind::UpsertNewest,
                    table: "cnc_status".into(),
                    columns: vec!["cnc_id".into(), "timestamp".into()],
                    values: vec![Value::Text("X".into()), Value::Int(5)],
                    order_by: vec!["timestamp".into()],
                },
                WireOp::Exec {
                    sql: "DELETE FROM t WHERE a = ?".into(),
                    params: vec![Value::UInt(3)],
                },
            ],
            failure: Some((FailureKind::Panic, "boom".into())),
        }
    }

    #[test]
    fn replies_round_trip() {
        let replies = [
            Reply::Hello {
                class: "FaultyTest".into(),
                version: "0.1.0".into(),
            },
            Reply::LoadFailed {
                reason: "not allowed".into(),
            },
            done(),
            Reply::Done {
                ops: vec![],
                failure: None,
            },
            Reply::Refused {
                detail: "bad settings".into(),
            },
        ];
        for r in replies {
            let mut e = Enc::default();
            r.encode(&mut e);
            assert_eq!(Reply::decode(&e.0).unwrap(), r);
        }
    }

    #[test]
    fn nan_keeps_its_bits() {
        let mut e = Enc::default();
        e.values(&[Value::Float(f64::NAN)]);
        let back = Dec::new(&e.0).values().unwrap();
        assert!(matches!(back[0], Value::Float(f) if f.is_nan()));
    }

    #[test]
    fn calls_round_trip() {
        for introduce in [None, Some(None), Some(Some(r#"{"bad":true}"#.to_string()))] {
            let c = Call {
                cnc_id: "F1".into(),
                introduce,
                topic: "sensor/CNC".into(),
                part_program: "p".into(),
                timestamp: -5,
                payload: r#"{"action":"store"}"#.into(),
            };
            let mut e = Enc::default();
            c.encode(&mut e);
            assert_eq!(Call::decode(&e.0).unwrap(), c);
        }
    }

    #[test]
    fn every_truncation_and_extension_is_an_error() {
        let mut e = Enc::default();
        done().encode(&mut e);
        for cut in 0..e.0.len() {
            assert!(Reply::decode(&e.0[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = e.0.clone();
        longer.push(0);
        assert!(Reply::decode(&longer).is_err());
    }

    #[test]
    fn a_huge_count_is_refused_without_allocating() {
        // Done with 4 billion writes in a 6-byte frame.
        let frame = [3u8, 0xff, 0xff, 0xff, 0xff, 0];
        let err = Reply::decode(&frame).unwrap_err();
        assert!(err.contains("beyond the frame's end"), "{err}");
    }

    #[test]
    fn frames_round_trip_and_eof_between_frames_is_none() {
        let mut pipe = Vec::new();
        write_frame(&mut pipe, b"abc").unwrap();
        write_frame(&mut pipe, b"").unwrap();
        let mut r = &pipe[..];
        let mut buf = Vec::new();
        assert!(read_frame(&mut r, &mut buf).unwrap().is_some());
        assert_eq!(buf, b"abc");
        assert!(read_frame(&mut r, &mut buf).unwrap().is_some());
        assert!(buf.is_empty());
        assert!(read_frame(&mut r, &mut buf).unwrap().is_none());
        // A frame cut inside is an error, not a clean end.
        let mut cut = &pipe[..5];
        assert!(read_frame(&mut cut, &mut buf).is_err());
    }
}
