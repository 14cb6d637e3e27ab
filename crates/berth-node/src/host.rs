//! Facts about this host the Node reports: capacity, addresses, OS and kernel, boot and
//! machine ids. Read from `/proc`, `/etc` and the kernel, never guessed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

/// What the host has to offer and what it is.
#[derive(Debug, Clone, PartialEq)]
pub struct HostInfo {
    pub cpus: usize,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
    pub kernel_version: String,
    pub os_image: String,
    pub architecture: String,
    pub machine_id: String,
    pub boot_id: String,
    pub internal_ip: Option<IpAddr>,
    pub hostname: String,
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
pub fn memory_total(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// `PRETTY_NAME` from an os-release file.
pub fn os_pretty_name(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".to_string())
}

/// Total bytes of the filesystem holding `path`.
#[allow(unsafe_code)]
pub fn filesystem_size(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs writes into the zeroed struct we own and reads the NUL-terminated path.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return 0;
        }
        st.f_blocks as u64 * st.f_frsize as u64
    }
}

/// Whether this process runs as root (running pods needs it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|r| r.split_whitespace().nth(1) == Some("0"))
            })
        })
        .unwrap_or(false)
}

/// The address this host uses to reach other machines (no packet is sent: a UDP socket is
/// only connected to learn the route's source address).
pub fn primary_address() -> Option<IpAddr> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect("10.255.255.255:9").ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

impl HostInfo {
    /// Reads the host's facts; `data_dir` decides which filesystem is ephemeral storage.
    pub fn read(data_dir: &Path) -> HostInfo {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        HostInfo {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes: memory_total(
                &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
            ),
            ephemeral_storage_bytes: filesystem_size(data_dir),
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease"),
            os_image: os_pretty_name(
                &std::fs::read_to_string("/etc/os-release").unwrap_or_default(),
            ),
            architecture: arch.to_string(),
            machine_id: read_trimmed("/etc/machine-id"),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            internal_ip: primary_address(),
            hostname: read_trimmed("/proc/sys/kernel/hostname"),
        }
    }

    /// Capacity as the Node reports it.
    pub fn capacity(&self, max_pods: u32) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("cpu".to_string(), self.cpus.to_string()),
            (
                "memory".to_string(),
                format!("{}Ki", self.memory_bytes / 1024),
            ),
            (
                "ephemeral-storage".to_string(),
                format!("{}Ki", self.ephemeral_storage_bytes / 1024),
            ),
            ("pods".to_string(), max_pods.to_string()),
            ("hugepages-2Mi".to_string(), "0".to_string()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_and_etc() {
        assert_eq!(
            memory_total("MemTotal:       2048 kB\nMemFree: 1 kB\n"),
            2048 * 1024
        );
        assert_eq!(memory_total("garbage"), 0);
        assert_eq!(
            os_pretty_name("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        let h = HostInfo::read(Path::new("/"));
        assert!(h.cpus >= 1 && h.memory_bytes > 0 && h.ephemeral_storage_bytes > 0);
        assert_eq!(h.capacity(110).get("pods").map(String::as_str), Some("110"));
    }
}
