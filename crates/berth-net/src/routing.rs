//! Host routing safety for a pod CIDR. Nothing may leave this machine, so a pod CIDR must
//! never be routed to the default gateway — not even before the bridge exists, after it
//! was removed, or while its address is missing. We install a `blackhole` route for the
//! whole CIDR with a very high metric: while the bridge carries the gateway address, the
//! kernel's connected route (metric 0) through the bridge wins; otherwise packets to the
//! CIDR are dropped locally instead of following the default route.

use std::process::Command;

/// Metric of the fallback blackhole route: far above the connected route's 0.
pub const FALLBACK_METRIC: u32 = 4_000_000_000;

/// Errors from changing host routes or links.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    /// `ip` could not be started.
    #[error("failed to run `ip {args}`: {source}")]
    Spawn {
        /// The arguments.
        args: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `ip` reported an error.
    #[error("failed to run `ip {args}`: {stderr}")]
    Failed {
        /// The arguments.
        args: String,
        /// What `ip` printed.
        stderr: String,
    },
}

/// Runs `ip` with `args`, returning its stdout.
pub fn ip(args: &[&str]) -> Result<String, RoutingError> {
    let joined = args.join(" ");
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| RoutingError::Spawn {
            args: joined.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(RoutingError::Failed {
            args: joined,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn family(cidr: &str) -> &'static str {
    if cidr.contains(':') {
        "-6"
    } else {
        "-4"
    }
}

/// Installs (or keeps) the fallback blackhole route for `cidr`. Idempotent.
pub fn ensure_fallback_route(cidr: &str) -> Result<(), RoutingError> {
    let metric = FALLBACK_METRIC.to_string();
    ip(&[
        family(cidr),
        "route",
        "replace",
        "blackhole",
        cidr,
        "metric",
        &metric,
    ])
    .map(drop)
}

/// Removes the fallback blackhole route for `cidr`. Idempotent.
pub fn remove_fallback_route(cidr: &str) -> Result<(), RoutingError> {
    let metric = FALLBACK_METRIC.to_string();
    match ip(&[
        family(cidr),
        "route",
        "del",
        "blackhole",
        cidr,
        "metric",
        &metric,
    ]) {
        Ok(_) => Ok(()),
        Err(RoutingError::Failed { stderr, .. }) if stderr.contains("No such process") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes the link `name` (the per-server bridge) if it exists. Idempotent.
pub fn delete_link(name: &str) -> Result<(), RoutingError> {
    match ip(&["link", "del", "dev", name]) {
        Ok(_) => Ok(()),
        Err(RoutingError::Failed { stderr, .. })
            if stderr.contains("Cannot find device") || stderr.contains("does not exist") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Routes in the main table whose destination is exactly `cidr`, as `ip route` prints them.
pub fn routes_for(cidr: &str) -> Result<Vec<String>, RoutingError> {
    Ok(ip(&[family(cidr), "route", "show", "exact", cidr])?
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// The portmap plugin's chains shared by every network on the host, with the jumps into
/// them from the built-in chains (as portmap 1.1 creates them).
const PORTMAP_JUMPS: &[(&str, &[&str])] = &[
    (
        "PREROUTING",
        &[
            "-m",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "-j",
            "CNI-HOSTPORT-DNAT",
        ],
    ),
    (
        "OUTPUT",
        &[
            "-m",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "-j",
            "CNI-HOSTPORT-DNAT",
        ],
    ),
    (
        "POSTROUTING",
        &[
            "-m",
            "comment",
            "--comment",
            "CNI portfwd requiring masquerade",
            "-j",
            "CNI-HOSTPORT-MASQ",
        ],
    ),
];
const PORTMAP_CHAINS: &[&str] = &[
    "CNI-HOSTPORT-DNAT",
    "CNI-HOSTPORT-MASQ",
    "CNI-HOSTPORT-SETMARK",
];

/// Removes portmap's shared `CNI-HOSTPORT-*` chains when no network uses them any more
/// (the DNAT chain holds no per-pod chain), for both iptables and ip6tables. They are
/// recreated by the next ADD with a hostPort. Best effort: returns whether they were
/// removed; a missing iptables binary counts as nothing to remove.
pub fn remove_unused_portmap_chains() -> bool {
    let mut removed = true;
    for bin in ["iptables", "ip6tables"] {
        let run = |args: &[&str]| {
            Command::new(bin)
                .args(["-w", "5", "-t", "nat"])
                .args(args)
                .output()
                .ok()
        };
        let Some(out) = run(&["-S", "CNI-HOSTPORT-DNAT"]) else {
            continue;
        };
        if !out.status.success() {
            // No such chain: nothing to do for this family.
            continue;
        }
        let in_use = String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.starts_with("-A "));
        if in_use {
            removed = false;
            continue;
        }
        for (chain, rule) in PORTMAP_JUMPS {
            let mut args = vec!["-D", chain];
            args.extend_from_slice(rule);
            let _ = run(&args);
        }
        for chain in PORTMAP_CHAINS {
            let _ = run(&["-F", chain]);
        }
        for chain in PORTMAP_CHAINS {
            let _ = run(&["-X", chain]);
        }
    }
    removed
}
