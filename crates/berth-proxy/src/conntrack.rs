//! Connection-tracking entries of endpoints the proxy stopped sending traffic to. The kernel
//! NATs a flow once, when its first packet is seen: a TCP connection whose SYN reached an
//! endpoint that did not answer yet (a full accept queue drops SYNs) would retransmit to the
//! same endpoint after it has left the Service, and meet a stopped pod. Clearing such
//! never-answered entries lets the retransmission be balanced anew, to a live endpoint;
//! established connections keep their endpoint. UDP has no handshake: all of an endpoint's
//! NATed UDP flows go, as upstream's kube-proxy does.

use crate::rules::Target;
use std::process::Stdio;

/// Errors clearing entries.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("failed to run conntrack: {0}")]
    Spawn(std::io::Error),
    #[error("conntrack failed: {0}")]
    Failed(String),
}

/// The `conntrack -D` arguments removing the flows of `target` that must not stay on it.
fn delete_args(target: &Target) -> Vec<String> {
    let mut args: Vec<String> = [
        "-D",
        "--dst-nat",
        "-p",
        target.protocol.as_str(),
        "--reply-src",
        &target.ip.to_string(),
        "--reply-port-src",
        &target.port.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if target.protocol == "tcp" {
        args.extend(["--state".to_string(), "SYN_SENT".to_string()]);
    }
    args
}

/// Removes the NATed flows of `target` that a retransmission or the next datagram would
/// otherwise still send to it.
pub async fn clear(target: &Target) -> Result<(), ConntrackError> {
    let out = tokio::process::Command::new("conntrack")
        .args(delete_args(target))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(ConntrackError::Spawn)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // conntrack exits 1 when nothing matched.
    if out.status.success() || stderr.contains(" 0 flow entries have been deleted") {
        Ok(())
    } else {
        Err(ConntrackError::Failed(stderr.trim().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_clears_only_unanswered_connections_udp_every_flow() {
        let tcp = Target {
            protocol: "tcp".into(),
            ip: [10, 42, 0, 5].into(),
            port: 8080,
        };
        assert_eq!(
            delete_args(&tcp).join(" "),
            "-D --dst-nat -p tcp --reply-src 10.42.0.5 --reply-port-src 8080 --state SYN_SENT"
        );
        let udp = Target {
            protocol: "udp".into(),
            ..tcp
        };
        assert_eq!(
            delete_args(&udp).join(" "),
            "-D --dst-nat -p udp --reply-src 10.42.0.5 --reply-port-src 8080"
        );
    }
}
