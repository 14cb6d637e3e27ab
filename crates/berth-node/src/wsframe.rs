//! The WebSocket framing (RFC 6455) a server needs to carry a byte stream, as port-forward's
//! SPDY tunnel does: headers of the server's unmasked frames, written into room kept before
//! the payload so a frame goes out in one write without a copy, and a reader of the client's
//! masked frames.

use bytes::{Buf, Bytes, BytesMut};

/// The most bytes a server frame's header takes (no mask; 64-bit length).
pub const MAX_HEADER: usize = 10;

/// The largest client frame accepted.
const MAX_PAYLOAD: u64 = 16 * 1024 * 1024;

/// Frame opcodes.
pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xa;

/// Errors reading the client's frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("failed to read a WebSocket frame: the client sent an unmasked frame")]
    Unmasked,
    #[error("failed to read a WebSocket frame: {0} bytes is more than the limit")]
    TooLarge(u64),
    #[error("failed to read a WebSocket frame: unknown opcode {0:#x}")]
    Opcode(u8),
}

/// Writes the header of a final frame with `opcode`, whose payload is `buf[at..]`, into the
/// room before `at` (at least [`MAX_HEADER`] bytes); returns where the frame starts.
pub fn put_header(buf: &mut [u8], at: usize, opcode: u8) -> usize {
    let len = buf.len().saturating_sub(at);
    let mut h = [0u8; MAX_HEADER];
    h[0] = 0x80 | (opcode & 0x0f);
    let n = if len < 126 {
        h[1] = len as u8;
        2
    } else if len <= usize::from(u16::MAX) {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    let start = at.saturating_sub(n);
    buf[start..at].copy_from_slice(&h[..at - start]);
    start
}

/// A frame whole: header room and payload, ready for [`put_header`] at [`MAX_HEADER`].
pub fn with_room(payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(MAX_HEADER + payload.len());
    buf.resize(MAX_HEADER, 0);
    buf.extend_from_slice(payload);
    buf
}

/// A frame read from the client, unmasked.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub opcode: u8,
    pub payload: Bytes,
}

/// Splits the client's bytes into frames.
#[derive(Default)]
pub struct FrameReader {
    buf: BytesMut,
}

impl FrameReader {
    /// Where bytes read from the connection go (with room for at least `room` more).
    pub fn buffer(&mut self, room: usize) -> &mut BytesMut {
        self.buf.reserve(room);
        &mut self.buf
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(None);
        }
        let opcode = b[0] & 0x0f;
        if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
            return Err(FrameError::Opcode(opcode));
        }
        if b[1] & 0x80 == 0 {
            return Err(FrameError::Unmasked);
        }
        let (len, at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => {
                let mut l = [0u8; 8];
                l.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(l), 10)
            }
            126 | 127 => return Ok(None),
            n => (u64::from(n), 2),
        };
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(len));
        }
        let len = len as usize;
        if b.len() < at + 4 + len {
            return Ok(None);
        }
        let key = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        self.buf.advance(at + 4);
        let mut payload = self.buf.split_to(len);
        unmask(&mut payload, key);
        Ok(Some(Frame {
            opcode,
            payload: payload.freeze(),
        }))
    }
}

/// XORs `data` with the client's masking key, eight bytes at a time.
fn unmask(data: &mut [u8], key: [u8; 4]) {
    let k = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut v = [0u8; 8];
        v.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(v) ^ k).to_ne_bytes());
    }
    // The rest starts at a multiple of 8, so the key starts over.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn client_frame(opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    }

    #[test]
    fn masked_frames_read_back_in_pieces() {
        let key = [1, 2, 3, 0xff];
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut bytes = client_frame(BINARY, b"hello, tunnel", key);
        bytes.extend(client_frame(PING, b"p", key));
        bytes.extend(client_frame(BINARY, &big, key));
        bytes.extend(client_frame(CONTINUATION, &big[..300], key));
        let mut r = FrameReader::default();
        let mut got = Vec::new();
        for piece in bytes.chunks(777) {
            r.buffer(piece.len()).extend_from_slice(piece);
            while let Some(f) = r.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].payload.as_ref(), b"hello, tunnel");
        assert_eq!((got[1].opcode, got[1].payload.as_ref()), (PING, &b"p"[..]));
        assert_eq!(got[2].payload.as_ref(), big.as_slice());
        assert_eq!(got[3].opcode, CONTINUATION);
        assert_eq!(got[3].payload.as_ref(), &big[..300]);
    }

    #[test]
    fn unmasked_client_frames_are_refused() {
        let mut r = FrameReader::default();
        r.buffer(4).extend_from_slice(&[0x82, 0x01, 0x00]);
        assert!(matches!(r.next_frame(), Err(FrameError::Unmasked)));
    }

    #[test]
    fn headers_fit_the_room_before_the_payload() {
        for (len, header) in [(5usize, 2usize), (126, 4), (65_535, 4), (65_536, 10)] {
            let mut buf = vec![0u8; MAX_HEADER + len];
            let start = put_header(&mut buf, MAX_HEADER, BINARY);
            assert_eq!(start, MAX_HEADER - header);
            assert_eq!(buf[start], 0x82);
            let announced = match buf[start + 1] {
                126 => usize::from(u16::from_be_bytes([buf[start + 2], buf[start + 3]])),
                127 => {
                    let mut l = [0u8; 8];
                    l.copy_from_slice(&buf[start + 2..start + 10]);
                    u64::from_be_bytes(l) as usize
                }
                n => usize::from(n),
            };
            assert_eq!(announced, len);
        }
    }
}
