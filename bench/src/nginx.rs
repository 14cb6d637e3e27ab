//! An nginx image built from the host's Debian nginx (`/usr/sbin/nginx`, the shared
//! libraries it loads, `mime.types`, the directories it writes to and a `www-data` user),
//! written as an OCI layout tarball: static `/` and `/slow` proxied to a given upstream;
//! `STOPSIGNAL SIGQUIT`, nginx's graceful stop, as the official image sets.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use berth_images::spec::ContainerConfig;
use berth_images::testing::{HostRootfs, TestImage};

/// nginx's configuration: one worker, no access log, `/` a small static file, `/slow`
/// proxied to `upstream`, `/healthz` answered by nginx itself.
pub fn nginx_conf(upstream: SocketAddr) -> String {
    format!(
        r#"user www-data;
worker_processes 1;
pid /run/nginx.pid;
error_log stderr notice;
events {{
    worker_connections 4096;
}}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    server {{
        listen 80 backlog=4096;
        location / {{
            root /usr/share/nginx/html;
            index index.html;
        }}
        location = /healthz {{
            return 200 "ok\n";
        }}
        location /slow {{
            proxy_pass http://{upstream};
        }}
    }}
}}
"#
    )
}

/// The page `/` serves (612 bytes like Debian's default page, so a request is small).
const INDEX: &str = "<!DOCTYPE html>\n<html><head><title>berth bench</title></head>\n<body><p>served by nginx in a berth pod</p></body></html>\n";

/// Writes an OCI layout tarball of nginx named `tag`, proxying `/slow` to `upstream`.
pub fn build_nginx_oci_tar(out: &Path, tag: &str, upstream: SocketAddr) -> anyhow::Result<()> {
    let nginx = Path::new("/usr/sbin/nginx");
    anyhow::ensure!(
        nginx.exists(),
        "{} not found: install Debian's nginx (scripts/setup.sh)",
        nginx.display()
    );
    let mut fs = HostRootfs::new();
    for d in ["/dev", "/proc", "/sys", "/etc", "/run", "/var/log/nginx"] {
        fs.dir(d, 0o755)?;
    }
    fs.dir("/tmp", 0o1777)?;
    // Debian's build keeps its temp paths (client bodies, proxied responses) here.
    fs.dir("/var/lib/nginx", 0o755)?;
    fs.binary(nginx)
        .context("failed to copy nginx and its libraries")?;
    fs.copy(Path::new("/etc/nginx/mime.types"))?;
    fs.file(
        "/etc/nginx/nginx.conf",
        0o644,
        nginx_conf(upstream).as_bytes(),
    )?;
    fs.file("/usr/share/nginx/html/index.html", 0o644, INDEX.as_bytes())?;
    fs.file(
        "/etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/false\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n",
    )?;
    fs.file("/etc/group", 0o644, b"root:x:0:\nwww-data:x:33:\n")?;
    let image = TestImage {
        layers: vec![fs.finish()?],
        gzip: true,
        config: ContainerConfig {
            env: Some(vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            ]),
            entrypoint: Some(vec![
                "/usr/sbin/nginx".into(),
                "-g".into(),
                "daemon off;".into(),
            ]),
            exposed_ports: Some([("80/tcp".to_string(), serde_json::json!({}))].into()),
            stop_signal: Some("SIGQUIT".into()),
            ..Default::default()
        },
    };
    image
        .write_oci(out, Some(tag))
        .with_context(|| format!("failed to write {}", out.display()))
}
