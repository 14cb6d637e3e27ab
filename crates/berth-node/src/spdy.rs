//! The SPDY/3.1 framing port-forward needs (what kubectl's spdystream speaks, over an
//! upgraded connection or tunnelled inside a WebSocket): frame parsing and encoding, and
//! the zlib header blocks (inflated with the SPDY/3 dictionary, written as stored blocks).
//! Flow control is not enforced: spdystream neither sends nor honours window updates.

use bytes::{Buf, BytesMut};
use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;
use std::collections::HashMap;

/// The zlib dictionary of SPDY/3 header blocks (section 2.6.10.1 of the draft).
const DICTIONARY: &[u8] = include_bytes!("spdy_dictionary.bin");

/// Control frame types.
pub const SYN_STREAM: u16 = 1;
pub const SYN_REPLY: u16 = 2;
pub const RST_STREAM: u16 = 3;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;

/// The last frame of a stream from its sender.
pub const FLAG_FIN: u8 = 0x01;

/// RST_STREAM status codes.
pub const PROTOCOL_ERROR: u32 = 1;

/// The largest frame accepted (the length field has 24 bits).
const MAX_FRAME: usize = (1 << 24) - 1;

/// Errors of a SPDY session.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("failed to read a SPDY frame: {0}")]
    Frame(String),
    #[error("failed to inflate a SPDY header block: {0}")]
    Headers(String),
}

/// A frame read from the peer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Control {
        kind: u16,
        flags: u8,
        payload: Vec<u8>,
    },
    Data {
        stream: u32,
        flags: u8,
        data: Vec<u8>,
    },
}

/// Splits the peer's bytes into frames.
#[derive(Default)]
pub struct FrameReader {
    buf: BytesMut,
}

impl FrameReader {
    /// Adds bytes read from the connection.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, SpdyError> {
        if self.buf.len() < 8 {
            return Ok(None);
        }
        let b = &self.buf;
        let len = u32::from_be_bytes([0, b[5], b[6], b[7]]) as usize;
        if self.buf.len() < 8 + len {
            return Ok(None);
        }
        let flags = b[4];
        let control = b[0] & 0x80 != 0;
        let first = u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]);
        let kind = u16::from_be_bytes([b[2], b[3]]);
        self.buf.advance(8);
        let payload = self.buf.split_to(len).to_vec();
        if control {
            let version = first >> 16;
            if version != 3 {
                return Err(SpdyError::Frame(format!(
                    "unsupported SPDY version {version}"
                )));
            }
            Ok(Some(Frame::Control {
                kind,
                flags,
                payload,
            }))
        } else {
            Ok(Some(Frame::Data {
                stream: first,
                flags,
                data: payload,
            }))
        }
    }
}

/// A control frame.
pub fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&[0x80, 0x03]);
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

/// The size of a frame header.
pub const HEADER: usize = 8;

/// Writes a data frame's header for `len` bytes of `stream` into `header`.
pub fn put_data_header(header: &mut [u8; HEADER], stream: u32, flags: u8, len: usize) {
    let len = len.min(MAX_FRAME) as u32;
    header[..4].copy_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    header[4] = flags;
    header[5..].copy_from_slice(&len.to_be_bytes()[1..]);
}

/// A data frame (`data` at most 16 MiB).
pub fn data(stream: u32, flags: u8, data: &[u8]) -> Vec<u8> {
    let data = &data[..data.len().min(MAX_FRAME)];
    let mut f = Vec::with_capacity(8 + data.len());
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(data);
    f
}

/// An RST_STREAM frame.
pub fn rst_stream(stream: u32, status: u32) -> Vec<u8> {
    let mut p = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
    p.extend_from_slice(&status.to_be_bytes());
    control(RST_STREAM, 0, &p)
}

/// The stream id a control frame's payload starts with.
pub fn stream_id(payload: &[u8]) -> Option<u32> {
    let b = payload.get(..4)?;
    Some(u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]))
}

/// Encodes a header block: a count, then length-prefixed names and values.
fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
    for (k, v) in headers {
        raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
        raw.extend_from_slice(k.as_bytes());
        raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
        raw.extend_from_slice(v.as_bytes());
    }
    raw
}

/// Writes this side's header blocks: one zlib stream per connection, each block a stored
/// (uncompressed) deflate block followed by an empty one, as a sync flush ends.
#[derive(Default)]
pub struct HeaderWriter {
    started: bool,
}

impl HeaderWriter {
    /// The compressed block for `headers`.
    pub fn block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let raw = header_block(headers);
        let mut out = Vec::with_capacity(raw.len() + 7);
        if !self.started {
            // CMF 0x78 (deflate, 32 KiB window), FLG 0x01: no preset dictionary.
            out.extend_from_slice(&[0x78, 0x01]);
            self.started = true;
        }
        for chunk in raw.chunks(u16::MAX as usize) {
            let len = chunk.len() as u16;
            out.push(0x00);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(chunk);
        }
        // An empty stored block ends the block as a sync flush does: Go's inflater hands
        // out what it has only when it reaches a block boundary.
        out.extend_from_slice(&[0x00, 0x00, 0x00, 0xff, 0xff]);
        out
    }

    /// A SYN_REPLY frame for `stream` with no headers.
    pub fn syn_reply(&mut self, stream: u32) -> Vec<u8> {
        let mut p = (stream & 0x7fff_ffff).to_be_bytes().to_vec();
        p.extend_from_slice(&self.block(&[]));
        control(SYN_REPLY, 0, &p)
    }
}

/// Reads the peer's header blocks: one zlib stream per connection, with the SPDY dictionary.
pub struct HeaderReader {
    state: Box<DecompressorOxide>,
    /// Everything inflated so far after the dictionary (the window back-references reach).
    window: Vec<u8>,
    pos: usize,
    zlib_header_read: bool,
}

impl Default for HeaderReader {
    fn default() -> Self {
        let mut window = vec![0u8; 64 * 1024];
        window[..DICTIONARY.len()].copy_from_slice(DICTIONARY);
        HeaderReader {
            state: Box::default(),
            window,
            pos: DICTIONARY.len(),
            zlib_header_read: false,
        }
    }
}

impl HeaderReader {
    /// Inflates one header block into its name/value pairs (names as sent: lower case).
    pub fn read(&mut self, block: &[u8]) -> Result<HashMap<String, String>, SpdyError> {
        let raw = self.inflate(block)?;
        parse_header_block(&raw)
    }

    fn inflate(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut input = block;
        if !self.zlib_header_read {
            let [cmf, flg, ..] = *input else {
                return Err(SpdyError::Headers("short zlib header".into()));
            };
            if cmf & 0x0f != 8 {
                return Err(SpdyError::Headers("not a deflate stream".into()));
            }
            let skip = if flg & 0x20 != 0 { 6 } else { 2 };
            input = input
                .get(skip..)
                .ok_or_else(|| SpdyError::Headers("short zlib header".into()))?;
            self.zlib_header_read = true;
        }
        let start = self.pos;
        let flags = inflate_flags::TINFL_FLAG_HAS_MORE_INPUT
            | inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
        loop {
            if self.window.len() - self.pos < 32 * 1024 {
                let grown = self.window.len() * 2;
                self.window.resize(grown, 0);
            }
            let (status, used, made) =
                decompress(&mut self.state, input, &mut self.window, self.pos, flags);
            input = &input[used..];
            self.pos += made;
            match status {
                TINFLStatus::HasMoreOutput => continue,
                TINFLStatus::NeedsMoreInput | TINFLStatus::Done => break,
                s if (s as i32) < 0 => return Err(SpdyError::Headers(format!("{s:?}"))),
                _ if used == 0 && made == 0 => break,
                _ => continue,
            }
        }
        let out = self.window[start..self.pos].to_vec();
        // Keep only the last 32 KiB (deflate's window) once the history grows large.
        if self.pos > 1024 * 1024 {
            let keep = 32 * 1024;
            self.window.copy_within(self.pos - keep..self.pos, 0);
            self.pos = keep;
        }
        Ok(out)
    }
}

/// Parses an inflated header block (multiple values, NUL-separated, keep the first).
fn parse_header_block(raw: &[u8]) -> Result<HashMap<String, String>, SpdyError> {
    let bad = || SpdyError::Headers("truncated header block".into());
    let mut at = 0usize;
    let u32_at = |at: &mut usize| -> Result<usize, SpdyError> {
        let b = raw.get(*at..*at + 4).ok_or_else(bad)?;
        *at += 4;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = u32_at(&mut at)?;
    let mut headers = HashMap::new();
    for _ in 0..count {
        let n = u32_at(&mut at)?;
        let name = raw.get(at..at + n).ok_or_else(bad)?;
        at += n;
        let n = u32_at(&mut at)?;
        let value = raw.get(at..at + n).ok_or_else(bad)?;
        at += n;
        let value = value.split(|b| *b == 0).next().unwrap_or_default();
        headers.insert(
            String::from_utf8_lossy(name).to_ascii_lowercase(),
            String::from_utf8_lossy(value).into_owned(),
        );
    }
    Ok(headers)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut r = FrameReader::default();
        let mut bytes = control(PING, 0, &7u32.to_be_bytes());
        bytes.extend(data(3, FLAG_FIN, b"hello"));
        r.extend(&bytes[..5]);
        assert_eq!(r.next_frame().unwrap(), None);
        r.extend(&bytes[5..]);
        let mut header = [0u8; HEADER];
        put_data_header(&mut header, 3, FLAG_FIN, 5);
        assert_eq!(header[..], data(3, FLAG_FIN, b"hello")[..HEADER]);
        assert_eq!(
            r.next_frame().unwrap(),
            Some(Frame::Control {
                kind: PING,
                flags: 0,
                payload: 7u32.to_be_bytes().to_vec()
            })
        );
        assert_eq!(
            r.next_frame().unwrap(),
            Some(Frame::Data {
                stream: 3,
                flags: FLAG_FIN,
                data: b"hello".to_vec()
            })
        );
        assert_eq!(r.next_frame().unwrap(), None);
    }

    #[test]
    fn dictionary_is_spdy3s() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\0\0\0\x07options"));
        assert!(DICTIONARY.ends_with(b",enq=0."));
    }

    #[test]
    fn stored_header_blocks_read_back() {
        let mut w = HeaderWriter::default();
        let mut r = HeaderReader::default();
        for i in 0..3 {
            let port = format!("80{i}");
            let block = w.block(&[("streamtype", "data"), ("port", &port)]);
            let h = r.read(&block).unwrap();
            assert_eq!(h["streamtype"], "data");
            assert_eq!(h["port"], port);
        }
    }
}
