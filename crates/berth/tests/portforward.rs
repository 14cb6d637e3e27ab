//! `kubectl port-forward` (SPDY tunnelled in a WebSocket, kubectl's default, and plain
//! SPDY) and `kubectl cp` against real containers (root), through the API server's proxy
//! to the node's endpoint.

mod common;

use common::pods::PodCluster;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::Duration;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  nodeName: pf-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox:latest
    command: ["sh", "-c", "mkdir -p /www /www2; echo hello > /www/index.html; echo nine > /www2/index.html; head -c 1048576 /dev/urandom > /www/big; httpd -p 9090 -h /www2; nc -ll -p 7070 -e cat & exec httpd -f -p 8080 -h /www"]
"#;

/// Starts `kubectl port-forward` and reads the local ports it chose, in order.
fn port_forward(pc: &PodCluster, args: &[&str], websockets: bool) -> (Child, Vec<u16>) {
    let mut cmd = pc.c.kubectl_cmd();
    cmd.arg("port-forward").args(args);
    if !websockets {
        cmd.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false");
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl port-forward");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let want = args.iter().filter(|a| a.contains(':')).count();
    let mut ports = Vec::new();
    while ports.len() < want {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            panic!("kubectl port-forward ended early");
        };
        // "Forwarding from 127.0.0.1:NNNNN -> 8080"
        if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
            let port = rest.split(' ').next().and_then(|p| p.parse().ok());
            ports.push(port.expect("local port"));
        }
    }
    // Keep draining stdout ("Handling connection for ...") so kubectl never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    (child, ports)
}

/// A GET of `path` on 127.0.0.1:`port` (HTTP/1.0: the server closes after the body).
fn get(port: u16, path: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").expect("request");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("response");
    out
}

fn body(response: &[u8]) -> &[u8] {
    let at = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    &response[at + 4..]
}

fn sha256(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn port_forward_and_cp() {
    let Some(pc) = PodCluster::start("pf-node", 190, "btpf", "crun") else {
        return;
    };
    let c = &pc.c;
    c.kubectl_stdin(&["apply", "-f", "-"], POD);
    c.kubectl(&["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"]);
    let pod_ip = c.kubectl(&["get", "pod", "web", "-o", "jsonpath={.status.podIP}"]);

    // Two ports at once, over kubectl's default (SPDY in a WebSocket).
    let (mut pf, ports) = port_forward(&pc, &["pod/web", "0:8080", "0:9090", "0:7070"], true);
    c.eventually(
        "the forwarded port answers",
        Duration::from_secs(10),
        || TcpStream::connect(("127.0.0.1", ports[0])).is_ok(),
    );
    assert_eq!(body(&get(ports[0], "/")), b"hello\n");
    assert_eq!(body(&get(ports[1], "/")), b"nine\n");

    // 100 concurrent requests all succeed.
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let port = ports[i % 2];
            std::thread::spawn(move || get(port, "/"))
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let r = t.join().expect("request thread");
        let want: &[u8] = if i % 2 == 0 { b"hello\n" } else { b"nine\n" };
        assert_eq!(body(&r), want, "request {i}");
    }

    // A larger body arrives byte for byte, as directly from the pod.
    let through = get(ports[0], "/big");
    let mut direct = TcpStream::connect((pod_ip.as_str(), 8080)).expect("pod IP");
    write!(direct, "GET /big HTTP/1.0\r\n\r\n").expect("request");
    let mut want = Vec::new();
    direct.read_to_end(&mut want).expect("direct");
    assert_eq!(body(&through).len(), 1048576);
    assert_eq!(body(&through), body(&want));

    // What the client sends reaches the pod intact: 4 MiB echoed back by `cat` in the pod.
    let sent: Vec<u8> = (0..4 << 20)
        .map(|i: u32| (i.wrapping_mul(7) % 251) as u8)
        .collect();
    let mut echo = TcpStream::connect(("127.0.0.1", ports[2])).expect("connect");
    echo.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut w = echo.try_clone().expect("clone");
    let data = sent.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&data).expect("send");
        w.shutdown(std::net::Shutdown::Write).expect("shutdown");
    });
    let mut back = Vec::new();
    echo.read_to_end(&mut back).expect("echo");
    writer.join().expect("writer");
    assert_eq!(back.len(), sent.len());
    assert!(back == sent, "the echoed bytes differ");
    pf.kill().expect("kill kubectl");
    let _ = pf.wait();

    // Plain SPDY (KUBECTL_PORT_FORWARD_WEBSOCKETS=false) works the same.
    let (mut pf, ports) = port_forward(&pc, &["pod/web", "0:8080"], false);
    c.eventually("the SPDY forward answers", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", ports[0])).is_ok()
    });
    assert_eq!(body(&get(ports[0], "/")), b"hello\n");
    pf.kill().expect("kill kubectl");
    let _ = pf.wait();

    // Errors.
    let e = c.kubectl_fails(&["port-forward", "pod/missing", "0:8080"], None);
    assert!(e.contains("pods \"missing\" not found"), "{e}");

    // The node runs in the server's process and is reached in memory, but only after the
    // API server has authenticated the caller: no credentials, or an unknown token, get 401.
    let url = format!(
        "https://127.0.0.1:{}/api/v1/namespaces/default/pods/web/portforward",
        c.port
    );
    let ca = c.dir.path().join("pki/ca.crt");
    let status = |extra: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
            .args(["--max-time", "10", "--cacert"])
            .arg(&ca)
            .args(["-H", "Connection: Upgrade", "-H", "Upgrade: websocket"])
            .args(["-H", "Sec-WebSocket-Version: 13"])
            .args(["-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="])
            .args(["-H", "Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io"])
            .args(extra)
            .arg(&url)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(status(&[]), "401");
    assert_eq!(status(&["-H", "Authorization: Bearer not-a-token"]), "401");

    // kubectl cp both ways: 50 MiB, byte-identical.
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("big.bin");
    let back = dir.path().join("back.bin");
    let mut data = vec![0u8; 50 * 1024 * 1024];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut data))
        .expect("random data");
    std::fs::write(&big, &data).expect("write big.bin");
    drop(data);
    c.kubectl(&["cp", big.to_str().expect("path"), "web:/tmp/big.bin"]);
    let inside = c.kubectl(&["exec", "web", "--", "sha256sum", "/tmp/big.bin"]);
    assert!(inside.starts_with(&sha256(&big)), "{inside}");
    c.kubectl(&["cp", "web:/tmp/big.bin", back.to_str().expect("path")]);
    assert_eq!(sha256(&back), sha256(&big));
    assert_eq!(
        std::fs::metadata(&back).expect("back.bin").len(),
        50 * 1024 * 1024
    );
}
