//! Container logs in the CRI format the kubelet and `kubectl logs` read:
//! `2026-01-01T00:00:00.000000000Z stdout F a line`, with `P` for the pieces of a line
//! longer than [`MAX_LINE`] (every piece but the last), rotated by size keeping N files
//! (`<log>`, `<log>.1`, … oldest highest).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

/// Lines longer than this are written in pieces tagged `P` (as containerd does, 16 KiB).
pub const MAX_LINE: usize = 16 * 1024;

/// Which output stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// The container's stdout.
    Stdout,
    /// The container's stderr.
    Stderr,
}

impl Stream {
    /// The stream's name in the log (`stdout` / `stderr`).
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// The CRI timestamp: RFC 3339 in UTC with nanoseconds, fixed width.
pub fn cri_timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

/// One CRI log line (with its trailing newline).
pub fn format_line(t: DateTime<Utc>, stream: Stream, partial: bool, content: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(content.len() + 48);
    line.extend_from_slice(cri_timestamp(t).as_bytes());
    line.push(b' ');
    line.extend_from_slice(stream.as_str().as_bytes());
    line.extend_from_slice(if partial { b" P " } else { b" F " });
    line.extend_from_slice(content);
    line.push(b'\n');
    line
}

/// Writes CRI log lines to a file, rotating it when it grows past a size limit.
#[derive(Debug)]
pub struct CriLogWriter {
    path: PathBuf,
    max_size: u64,
    max_files: u32,
    file: File,
    size: u64,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl CriLogWriter {
    /// Opens (appending to) the log at `path`, creating its directory.
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            max_size: max_size.max(1),
            max_files: max_files.max(1),
            file,
            size,
        })
    }

    /// The path of the `n`th rotated file.
    pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.max_files - 1;
        if keep == 0 {
            self.file = File::create(&self.path)?;
            self.file = open_append(&self.path)?;
        } else {
            let _ = fs::remove_file(Self::rotated_path(&self.path, keep));
            for n in (1..keep).rev() {
                let from = Self::rotated_path(&self.path, n);
                if from.exists() {
                    fs::rename(&from, Self::rotated_path(&self.path, n + 1))?;
                }
            }
            fs::rename(&self.path, Self::rotated_path(&self.path, 1))?;
            self.file = open_append(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }

    /// Writes one line (or a piece of one, `partial`) stamped now.
    pub fn write_line(&mut self, stream: Stream, partial: bool, content: &[u8]) -> io::Result<()> {
        let line = format_line(Utc::now(), stream, partial, content);
        if self.size > 0 && self.size + line.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }
}

/// Copies `reader` (a container's stdout or stderr) into the shared log until EOF,
/// splitting it into CRI lines. Write errors are given up on (logs must never block the
/// container), read errors end the copy.
pub fn copy_stream(reader: impl Read, stream: Stream, log: Arc<Mutex<CriLogWriter>>) {
    copy_stream_with(reader, stream, log, |_| {});
}

/// Like [`copy_stream`], also handing every chunk read, as it is, to `tee` (attach clients).
pub fn copy_stream_with(
    reader: impl Read,
    stream: Stream,
    log: Arc<Mutex<CriLogWriter>>,
    mut tee: impl FnMut(&[u8]),
) {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut pending: Vec<u8> = Vec::new();
    let emit = |partial: bool, content: &[u8]| {
        if let Ok(mut w) = log.lock() {
            let _ = w.write_line(stream, partial, content);
        }
    };
    loop {
        let buf = match reader.fill_buf() {
            Ok([]) => break,
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let (used, full_line) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                pending.extend_from_slice(&buf[..i]);
                (i + 1, true)
            }
            None => {
                pending.extend_from_slice(buf);
                (buf.len(), false)
            }
        };
        tee(&buf[..used]);
        reader.consume(used);
        while pending.len() > MAX_LINE || (!full_line && pending.len() == MAX_LINE) {
            let rest = pending.split_off(MAX_LINE);
            emit(true, &pending);
            pending = rest;
        }
        if full_line {
            emit(false, &pending);
            pending.clear();
        }
    }
    if !pending.is_empty() {
        emit(false, &pending);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| l.to_string())
            .collect()
    }

    #[test]
    fn formats_cri_lines() {
        let t = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            format_line(t, Stream::Stdout, false, b"hi"),
            b"2026-01-01T00:00:00.000000000Z stdout F hi\n"
        );
        assert_eq!(
            format_line(t, Stream::Stderr, true, b""),
            b"2026-01-01T00:00:00.000000000Z stderr P \n"
        );
    }

    #[test]
    fn splits_long_lines_and_keeps_last_partial() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/0.log");
        let w = Arc::new(Mutex::new(CriLogWriter::open(&path, 1 << 30, 3).unwrap()));
        let mut input = vec![b'a'; MAX_LINE + 10];
        input.extend_from_slice(b"\nshort\n\nend");
        copy_stream(&input[..], Stream::Stdout, w);
        let got = lines(&path);
        assert_eq!(got.len(), 5);
        assert!(got[0].contains(" stdout P aaaa"));
        assert!(got[1].ends_with(" stdout F aaaaaaaaaa"));
        assert!(got[2].ends_with(" stdout F short"));
        assert!(got[3].ends_with(" stdout F "));
        assert!(got[4].ends_with(" stdout F end"));
    }

    #[test]
    fn rotates_keeping_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = CriLogWriter::open(&path, 200, 3).unwrap();
        for i in 0..40 {
            w.write_line(Stream::Stdout, false, format!("line {i}").as_bytes())
                .unwrap();
        }
        assert!(fs::metadata(&path).unwrap().len() <= 200);
        assert!(CriLogWriter::rotated_path(&path, 1).exists());
        assert!(CriLogWriter::rotated_path(&path, 2).exists());
        assert!(!CriLogWriter::rotated_path(&path, 3).exists());
        assert!(lines(&path).last().unwrap().ends_with("line 39"));
    }
}
