//! Container logs as the kubelet serves them (`/containerLogs/...`): reads the CRI-format
//! files the shim writes (`<time> <stream> <P|F> <content>`), joins partial lines, and
//! applies `tailLines`, `sinceSeconds`/`sinceTime`, `timestamps` and `limitBytes`; with
//! `follow` it keeps reading new lines, across rotation (`<n>.log` renamed to `<n>.log.1`),
//! until the container has exited and the file is read, or the client goes away.
//!
//! As upstream, only the container's current log file is read (not the rotated ones).

use chrono::{DateTime, Utc};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// How often a followed log is looked at for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// What a log request asks for (the query of `/containerLogs` and `pods/log`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming new lines.
    pub follow: bool,
    /// The previous attempt's log instead of the current one.
    pub previous: bool,
    /// Only lines written at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only the last N lines.
    pub tail_lines: Option<u64>,
    /// Prefix each line with its RFC 3339 timestamp.
    pub timestamps: bool,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

/// A query parameter that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("failed to parse the log options: {0}")]
pub struct BadLogOptions(pub String);

fn flag(v: &str) -> bool {
    matches!(v, "true" | "1" | "True")
}

impl LogOptions {
    /// Reads the options from a URL query string.
    pub fn from_query(query: &str) -> Result<Self, BadLogOptions> {
        let mut o = LogOptions::default();
        let num = |k: &str, v: &str| {
            v.parse::<i64>()
                .map_err(|_| BadLogOptions(format!("{k}: {v:?} is not an integer")))
        };
        for (k, v) in url_pairs(query) {
            match k.as_str() {
                "follow" => o.follow = flag(&v),
                "previous" => o.previous = flag(&v),
                "timestamps" => o.timestamps = flag(&v),
                "tailLines" => {
                    let n = num(&k, &v)?;
                    if n < 0 {
                        return Err(BadLogOptions("tailLines must be >= 0".into()));
                    }
                    o.tail_lines = Some(n as u64);
                }
                "limitBytes" => {
                    let n = num(&k, &v)?;
                    if n < 1 {
                        return Err(BadLogOptions("limitBytes must be > 0".into()));
                    }
                    o.limit_bytes = Some(n as u64);
                }
                "sinceSeconds" => {
                    let n = num(&k, &v)?;
                    if n < 1 {
                        return Err(BadLogOptions("sinceSeconds must be > 0".into()));
                    }
                    o.since = Some(Utc::now() - chrono::Duration::seconds(n));
                }
                "sinceTime" => {
                    let t = DateTime::parse_from_rfc3339(&v)
                        .map_err(|e| BadLogOptions(format!("sinceTime {v:?}: {e}")))?;
                    o.since = Some(t.with_timezone(&Utc));
                }
                _ => {}
            }
        }
        Ok(o)
    }
}

/// The decoded `key=value` pairs of a query string (repeated keys kept in order).
pub fn url_pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// One line of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriLine<'a> {
    /// When it was written.
    pub time: DateTime<Utc>,
    /// `stdout` or `stderr`.
    pub stream: &'a [u8],
    /// A piece of a longer line (`P`), not its end (`F`).
    pub partial: bool,
    /// The text, without the newline.
    pub content: &'a [u8],
    /// The timestamp as written.
    pub raw_time: &'a [u8],
}

/// Parses one CRI log line (without its newline); `None` if it is not one.
pub fn parse_line(line: &[u8]) -> Option<CriLine<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let raw_time = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or_default();
    let time = DateTime::parse_from_rfc3339(std::str::from_utf8(raw_time).ok()?)
        .ok()?
        .with_timezone(&Utc);
    let partial = tag.split(|b| *b == b':').any(|t| t == b"P");
    Some(CriLine {
        time,
        stream,
        partial,
        content,
        raw_time,
    })
}

/// A whole log message: partial pieces joined.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Message {
    time: DateTime<Utc>,
    raw_time: Vec<u8>,
    content: Vec<u8>,
}

/// Turns CRI lines into whole messages and formats them as the client asked.
#[derive(Debug, Default)]
struct Decoder {
    /// Pieces of an unfinished message per stream (stdout, stderr).
    pending: [Option<Message>; 2],
}

impl Decoder {
    /// Feeds one complete file line; returns a message once it is whole.
    fn line(&mut self, line: &[u8]) -> Option<Message> {
        let l = parse_line(line)?;
        let slot = usize::from(l.stream == b"stderr");
        let msg = self.pending[slot].get_or_insert_with(|| Message {
            time: l.time,
            raw_time: l.raw_time.to_vec(),
            content: Vec::new(),
        });
        msg.content.extend_from_slice(l.content);
        if l.partial {
            None
        } else {
            self.pending[slot].take()
        }
    }
}

fn format(m: &Message, opts: &LogOptions) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.content.len() + 40);
    if opts.timestamps {
        out.extend_from_slice(&m.raw_time);
        out.push(b' ');
    }
    out.extend_from_slice(&m.content);
    out.push(b'\n');
    out
}

/// Applies `limitBytes` to what is sent.
#[derive(Debug)]
struct Budget(Option<u64>);

impl Budget {
    /// Cuts `data` to what is left; `None` once nothing is.
    fn take(&mut self, mut data: Vec<u8>) -> Option<Vec<u8>> {
        match &mut self.0 {
            None => Some(data),
            Some(0) => None,
            Some(left) => {
                if data.len() as u64 > *left {
                    data.truncate(*left as usize);
                }
                *left -= data.len() as u64;
                Some(data)
            }
        }
    }

    fn spent(&self) -> bool {
        self.0 == Some(0)
    }
}

/// Turns file bytes into what the client gets: whole lines decoded, filtered by `since`,
/// formatted, cut at `limitBytes`.
struct Follower<'a> {
    opts: &'a LogOptions,
    decoder: Decoder,
    budget: Budget,
    /// Bytes after the last newline read so far.
    partial_line: Vec<u8>,
}

impl Follower<'_> {
    /// The output for newly read bytes.
    fn feed(&mut self, data: &[u8]) -> Vec<u8> {
        self.partial_line.extend_from_slice(data);
        let cut = self
            .partial_line
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let rest = self.partial_line.split_off(cut);
        let whole = std::mem::replace(&mut self.partial_line, rest);
        let mut out = Vec::new();
        for l in whole.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Some(m) = self.decoder.line(l) {
                if self.opts.since.is_none_or(|s| m.time >= s) {
                    match self.budget.take(format(&m, self.opts)) {
                        Some(d) => out.extend_from_slice(&d),
                        None => break,
                    }
                }
            }
        }
        out
    }
}

/// What a non-following read of `content` (a whole log file) returns.
pub fn render(content: &[u8], opts: &LogOptions) -> Vec<u8> {
    first_part(content, opts).0
}

/// Renders the lines already in the file (`tailLines` and `since` need all of them), and
/// returns the follower that continues after them.
fn first_part<'a>(content: &[u8], opts: &'a LogOptions) -> (Vec<u8>, Follower<'a>) {
    let cut = content
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let mut decoder = Decoder::default();
    let mut messages: Vec<Message> = content[..cut]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| decoder.line(l))
        .filter(|m| opts.since.is_none_or(|s| m.time >= s))
        .collect();
    if let Some(n) = opts.tail_lines {
        let skip = messages.len().saturating_sub(n as usize);
        messages.drain(..skip);
    }
    let mut budget = Budget(opts.limit_bytes);
    let mut out = Vec::new();
    for m in &messages {
        match budget.take(format(m, opts)) {
            Some(d) => out.extend_from_slice(&d),
            None => break,
        }
    }
    let follower = Follower {
        opts,
        decoder,
        budget,
        partial_line: content[cut..].to_vec(),
    };
    (out, follower)
}

/// Streams a container's log to `send` (which returns false once the client is gone):
/// first what is there (per `opts`), then, with `follow`, new lines until `exited()` says
/// the container has stopped and the file is read. Blocking: run it on its own thread.
pub fn stream(
    path: &Path,
    opts: &LogOptions,
    exited: impl Fn() -> bool,
    mut send: impl FnMut(Vec<u8>) -> bool,
) -> std::io::Result<()> {
    let mut file = File::open(path)?;
    let mut inode = file.metadata()?.ino();
    let mut content = Vec::new();
    file.read_to_end(&mut content)?;
    let (out, mut follower) = first_part(&content, opts);
    if !out.is_empty() && !send(out) {
        return Ok(());
    }
    let mut buf = vec![0u8; 64 * 1024];
    while opts.follow && !follower.budget.spent() {
        let n = read_more(&mut file, &mut buf)?;
        if n > 0 {
            let out = follower.feed(&buf[..n]);
            if !out.is_empty() && !send(out) {
                return Ok(());
            }
            continue;
        }
        // At the end of the file. A new file at the path means the log was rotated: what
        // was appended to the old one before the rename is read first, then the new one.
        if let Some((next, ino)) = rotated(path, inode) {
            loop {
                let n = read_more(&mut file, &mut buf)?;
                if n == 0 {
                    break;
                }
                let out = follower.feed(&buf[..n]);
                if !out.is_empty() && !send(out) {
                    return Ok(());
                }
            }
            (file, inode) = (next, ino);
            continue;
        }
        if exited() {
            // The shim drains the container's pipes before it records the exit: one more
            // read finds the last lines, if any.
            let n = read_more(&mut file, &mut buf)?;
            if n == 0 {
                return Ok(());
            }
            let out = follower.feed(&buf[..n]);
            if !out.is_empty() && !send(out) {
                return Ok(());
            }
            continue;
        }
        // Idle: an empty send tells whether the client is still there.
        if !send(Vec::new()) {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_POLL);
    }
    Ok(())
}

fn read_more(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match file.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The new file at `path` when it is not the one with `inode` (the log was rotated).
fn rotated(path: &Path, inode: u64) -> Option<(File, u64)> {
    let file = File::open(path).ok()?;
    let ino = file.metadata().ok()?.ino();
    (ino != inode).then_some((file, ino))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    const LOG: &str = "2026-01-01T00:00:01.000000000Z stdout F one\n\
2026-01-01T00:00:02.000000000Z stderr F two\n\
2026-01-01T00:00:03.000000000Z stdout P thr\n\
2026-01-01T00:00:03.500000000Z stderr F four\n\
2026-01-01T00:00:04.000000000Z stdout F ee\n";

    fn opts(q: &str) -> LogOptions {
        LogOptions::from_query(q).unwrap()
    }

    #[test]
    fn joins_partial_lines_and_strips_the_prefix() {
        assert_eq!(
            render(LOG.as_bytes(), &opts("")),
            b"one\ntwo\nfour\nthree\n"
        );
    }

    #[test]
    fn tail_since_timestamps_and_limit() {
        assert_eq!(
            render(LOG.as_bytes(), &opts("tailLines=2")),
            b"four\nthree\n"
        );
        assert_eq!(render(LOG.as_bytes(), &opts("tailLines=0")), b"");
        assert_eq!(
            render(LOG.as_bytes(), &opts("sinceTime=2026-01-01T00:00:02Z")),
            b"two\nfour\nthree\n"
        );
        assert_eq!(
            render(LOG.as_bytes(), &opts("timestamps=true&tailLines=1")),
            b"2026-01-01T00:00:03.000000000Z three\n"
        );
        assert_eq!(render(LOG.as_bytes(), &opts("limitBytes=6")), b"one\ntw");
        assert!(render(LOG.as_bytes(), &opts("sinceSeconds=10")).is_empty());
        assert!(LogOptions::from_query("tailLines=x").is_err());
        assert!(LogOptions::from_query("limitBytes=0").is_err());
    }

    #[test]
    fn a_line_being_written_waits_for_its_end() {
        let o = opts("");
        let (out, mut f) = first_part(
            b"2026-01-01T00:00:01Z stdout F a\n2026-01-01T00:00:01Z stdout F b",
            &o,
        );
        assert_eq!(out, b"a\n");
        assert_eq!(f.feed(b"c\n"), b"bc\n");
    }

    #[test]
    fn follows_across_rotation_until_exit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let line = |s: &str| format!("2026-01-01T00:00:01.000000000Z stdout F {s}\n");
        std::fs::write(&path, line("before")).unwrap();
        let exited = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let reader = {
            let path = path.clone();
            let exited = exited.clone();
            std::thread::spawn(move || {
                stream(
                    &path,
                    &LogOptions::from_query("follow=true").unwrap(),
                    || exited.load(std::sync::atomic::Ordering::SeqCst),
                    |d| d.is_empty() || tx.send(d).is_ok(),
                )
                .unwrap()
            })
        };
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(line("appended").as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // Rotation: the file is renamed and a new one takes its place.
        f.write_all(line("last in old").as_bytes()).unwrap();
        std::fs::rename(&path, dir.path().join("0.log.1")).unwrap();
        std::fs::write(&path, line("new file")).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        exited.store(true, std::sync::atomic::Ordering::SeqCst);
        reader.join().unwrap();
        let got: Vec<u8> = rx.try_iter().flatten().collect();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "before\nappended\nlast in old\nnew file\n"
        );
    }
}
