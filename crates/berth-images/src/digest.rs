//! Content digests (`sha256:<hex>`) and the readers/writers that compute them while data
//! streams through, so nothing has to be held in memory to be verified.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::error::ImageError;

/// A verified-syntax SHA-256 content digest, written `sha256:<64 lowercase hex>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<hex>`; other algorithms are refused.
    pub fn parse(s: &str) -> Result<Self, ImageError> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| ImageError::InvalidDigest(s.to_string()))?;
        Self::from_hex(hex).map_err(|_| ImageError::InvalidDigest(s.to_string()))
    }

    /// Builds a digest from its 64 lowercase hex characters.
    pub fn from_hex(hex: &str) -> Result<Self, ImageError> {
        if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Digest {
                hex: hex.to_string(),
            })
        } else {
            Err(ImageError::InvalidDigest(hex.to_string()))
        }
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(data))
    }

    fn from_hasher(h: Sha256) -> Self {
        let out = h.finalize();
        let mut hex = String::with_capacity(64);
        for b in out {
            hex.push(char::from(HEX[usize::from(b >> 4)]));
            hex.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        Digest { hex }
    }

    /// The 64 hex characters, without the algorithm prefix (used as file names).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Checks that `actual` equals `self`, naming `what` in the error.
    pub(crate) fn verify(
        &self,
        actual: &Digest,
        what: impl Into<String>,
    ) -> Result<(), ImageError> {
        if self == actual {
            Ok(())
        } else {
            Err(ImageError::DigestMismatch {
                what: what.into(),
                expected: self.to_string(),
                actual: actual.to_string(),
            })
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl FromStr for Digest {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A reader that hashes and counts everything read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads (and hashes) whatever is left, then returns the digest and byte count.
    pub(crate) fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((Digest::from_hasher(self.hasher), self.count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(data) = buf.get(..n) {
            self.hasher.update(data);
        }
        self.count += n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts everything written through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Returns the inner writer, the digest and byte count of what was written.
    pub(crate) fn finish(self) -> (W, Digest, u64) {
        (self.inner, Digest::from_hasher(self.hasher), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(data) = buf.get(..n) {
            self.hasher.update(data);
        }
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&d.to_string()).ok(), Some(d));
        assert!(Digest::parse("sha512:abc").is_err());
        assert!(Digest::parse("sha256:ABC").is_err());
        assert!(Digest::from_hex(&"A".repeat(64)).is_err());
    }

    #[test]
    fn hashing_reader_counts() -> Result<(), Box<dyn std::error::Error>> {
        let mut r = HashingReader::new(&b"hello"[..]);
        let mut first = [0u8; 2];
        r.read_exact(&mut first)?;
        let (d, n) = r.finish()?;
        assert_eq!(n, 5);
        assert_eq!(d, Digest::of(b"hello"));
        Ok(())
    }
}
