//! Forwarding of names outside the cluster domain: the query's bytes are relayed unchanged to
//! the upstream resolvers (the host's `/etc/resolv.conf` nameservers, or `--dns-upstream`), one
//! after the other until one answers, over the transport the client used; the answer's bytes go
//! back unchanged (so its id, flags and TC bit are the upstream's).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one upstream gets to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The nameservers of a resolv.conf file (port 53), in order.
pub fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        // A link-local address may carry a `%zone`; we cannot use those.
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The host's resolvers, from `path` (normally `/etc/resolv.conf`); none when unreadable.
pub fn host_nameservers(path: &Path) -> Vec<SocketAddr> {
    std::fs::read_to_string(path)
        .map(|t| resolv_conf_nameservers(&t))
        .unwrap_or_default()
}

/// Parses `IP` or `IP:port` (`[v6]:port`), port 53 by default.
pub fn parse_upstream(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

/// The upstream resolvers.
#[derive(Debug, Clone)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
}

impl Forwarder {
    /// Forwards to `upstreams`, leaving out `ourselves` (a resolv.conf naming this server
    /// would loop).
    pub fn new(upstreams: Vec<SocketAddr>, ourselves: SocketAddr) -> Forwarder {
        Forwarder {
            upstreams: upstreams.into_iter().filter(|u| *u != ourselves).collect(),
        }
    }

    /// The resolvers forwarded to.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Relays `query` over UDP; `None` when no upstream answered in time.
    pub async fn udp(&self, query: &[u8]) -> Option<Vec<u8>> {
        for upstream in &self.upstreams {
            match tokio::time::timeout(UPSTREAM_TIMEOUT, udp_exchange(*upstream, query)).await {
                Ok(Ok(answer)) => return Some(answer),
                Ok(Err(e)) => tracing::debug!(%upstream, "DNS upstream: {e}"),
                Err(_) => tracing::debug!(%upstream, "DNS upstream timed out"),
            }
        }
        None
    }

    /// Relays `query` over TCP; `None` when no upstream answered in time.
    pub async fn tcp(&self, query: &[u8]) -> Option<Vec<u8>> {
        for upstream in &self.upstreams {
            match tokio::time::timeout(UPSTREAM_TIMEOUT, tcp_exchange(*upstream, query)).await {
                Ok(Ok(answer)) => return Some(answer),
                Ok(Err(e)) => tracing::debug!(%upstream, "DNS upstream: {e}"),
                Err(_) => tracing::debug!(%upstream, "DNS upstream timed out"),
            }
        }
        None
    }
}

/// One question to one upstream over UDP: the first response with the query's id.
async fn udp_exchange(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        if n >= 12 && buf[..2] == query[..2] && buf[2] & 0x80 != 0 {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// One question to one upstream over TCP (two-byte length prefixes).
async fn tcp_exchange(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let len = u16::try_from(query.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "query too long"))?;
    let mut stream = TcpStream::connect(upstream).await?;
    let mut out = Vec::with_capacity(query.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(query);
    stream.write_all(&out).await?;
    let n = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(n)];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_come_from_resolv_conf() {
        let text = "# comment\nsearch example.com\nnameserver 10.0.0.2\nnameserver  fe80::1%eth0\n\
                    nameserver ::1\noptions ndots:2\nnameserver\n";
        assert_eq!(
            resolv_conf_nameservers(text),
            vec![
                "10.0.0.2:53".parse().expect("addr"),
                "[::1]:53".parse().expect("addr")
            ]
        );
        assert_eq!(
            parse_upstream("127.0.0.1:5353"),
            Some("127.0.0.1:5353".parse().expect("addr"))
        );
        assert_eq!(
            parse_upstream("127.0.0.1"),
            Some("127.0.0.1:53".parse().expect("addr"))
        );
        assert_eq!(parse_upstream("nope"), None);
        let us: SocketAddr = "10.1.0.1:53".parse().expect("addr");
        let f = Forwarder::new(vec![us, "10.0.0.2:53".parse().expect("addr")], us);
        assert_eq!(f.upstreams(), &["10.0.0.2:53".parse().expect("addr")]);
    }
}
