//! Services end to end (root): EndpointSlices and Endpoints follow pods, the nftables proxy
//! carries ClusterIP traffic from the host and from pods, NodePorts answer on the node's
//! address, unready pods stop getting traffic, Services without endpoints refuse at once,
//! the `kubernetes` Service reaches the API server, taken node ports are refused, and the
//! rules survive a server restart — and the table and routes are gone afterwards.

mod common;

use common::pods::{http_get, PodCluster, ProxyGuard};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn hostnames(addr: SocketAddr, n: usize) -> std::collections::BTreeSet<String> {
    (0..n)
        .filter_map(|_| http_get(addr, "/hostname").ok())
        .collect()
}

#[test]
fn services_route_traffic_through_nftables() {
    if !berth_node::host::is_root() {
        eprintln!("skipped: the service proxy needs root");
        return;
    }
    let n = std::process::id() % 200 + 20;
    let service_cidr = format!("10.189.{n}.0/24");
    let bridge = format!("btsvc{n}");
    let table = format!("berth-{bridge}");
    let _guard = ProxyGuard {
        table: table.clone(),
        service_cidr: service_cidr.clone(),
    };
    let ready_dir = tempfile::tempdir().expect("tempdir");
    let Some(mut pc) = PodCluster::start_with_args(
        "svc-node",
        190,
        "btsvc",
        "crun",
        &["--service-cidr", &service_cidr],
    ) else {
        return;
    };
    assert_eq!(pc.bridge, bridge);
    let ready = ready_dir.path().display().to_string();
    for p in ["web-a", "web-b"] {
        std::fs::write(ready_dir.path().join(p), "").expect("ready file");
    }
    let pod = |name: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: web}}}}
spec:
  nodeName: svc-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox:latest
    command: ["httpd", "-f", "-p", "8080", "-h", "/etc"]
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe: {{exec: {{command: ["test", "-f", "/ready/{name}"]}}, periodSeconds: 1}}
    volumeMounts: [{{name: ready, mountPath: /ready}}]
  volumes: [{{name: ready, hostPath: {{path: {ready}}}}}]
---
"#
        )
    };
    let manifest = format!(
        r#"{}{}
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-np}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080, nodePort: 30000}}]
---
apiVersion: v1
kind: Service
metadata: {{name: nothing}}
spec:
  selector: {{app: nothing}}
  ports: [{{port: 80}}]
"#,
        pod("web-a"),
        pod("web-b")
    );
    let c = &pc.c;
    c.kubectl_stdin(&["apply", "-f", "-"], &manifest);
    c.eventually("both endpoints ready", Duration::from_secs(60), || {
        let out = c.kubectl(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={.items[*].endpoints[*].conditions.ready}",
        ]);
        out.trim() == "true true"
    });
    let wide = c.kubectl(&["get", "endpointslices,endpoints", "-o", "wide"]);
    println!("{wide}");
    let eps = c.kubectl(&[
        "get",
        "endpoints",
        "web",
        "-o",
        "jsonpath={.subsets[*].addresses[*].ip}",
    ]);
    assert_eq!(eps.split_whitespace().count(), 2, "{eps}");
    let ip = |svc: &str| c.kubectl(&["get", "svc", svc, "-o", "jsonpath={.spec.clusterIP}"]);
    let cluster_ip: std::net::Ipv4Addr = ip("web").trim().parse().expect("cluster IP");
    let web = SocketAddr::from((cluster_ip, 80));

    // From the host: both pods answer through the ClusterIP.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 2 && Instant::now() < deadline {
        seen.extend(hostnames(web, 10));
    }
    assert_eq!(
        seen,
        ["web-a", "web-b"].iter().map(|s| s.to_string()).collect(),
        "ClusterIP from the host"
    );

    // The NodePort on the node's address.
    if let Some(node_ip) = berth_node::host::primary_address() {
        let np = SocketAddr::from((node_ip, 30000));
        c.eventually("the NodePort answers", Duration::from_secs(10), || {
            http_get(np, "/hostname").is_ok()
        });
    }

    // From inside a pod.
    let client = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  nodeName: svc-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox:latest
    command: ["sh", "-c", "while true; do wget -qO- http://{cluster_ip}/hostname; sleep 0.2; done"]
"#
    );
    c.kubectl_stdin(&["apply", "-f", "-"], &client);
    c.eventually(
        "the pod reaches both endpoints",
        Duration::from_secs(40),
        || {
            let logs = c.kubectl_output(&["logs", "client"], None).stdout;
            let logs = String::from_utf8_lossy(&logs);
            logs.contains("web-a") && logs.contains("web-b")
        },
    );

    // A pod turning unready leaves the slice ready=false and gets no more traffic.
    std::fs::remove_file(ready_dir.path().join("web-b")).expect("unready");
    c.eventually(
        "web-b unready in the slice",
        Duration::from_secs(20),
        || {
            let out = c.kubectl(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={range .items[*].endpoints[*]}{.targetRef.name}={.conditions.ready} {end}",
        ]);
            out.contains("web-b=false") && out.contains("web-a=true")
        },
    );
    c.eventually("only web-a answers", Duration::from_secs(10), || {
        hostnames(web, 10) == ["web-a".to_string()].into_iter().collect()
    });
    let nr = c.kubectl(&[
        "get",
        "endpoints",
        "web",
        "-o",
        "jsonpath={.subsets[*].notReadyAddresses[*].targetRef.name}",
    ]);
    assert_eq!(nr.trim(), "web-b");

    // No endpoints: refused at once.
    let nothing: std::net::Ipv4Addr = ip("nothing").trim().parse().expect("cluster IP");
    c.eventually(
        "a Service without endpoints refuses",
        Duration::from_secs(10),
        || {
            let started = Instant::now();
            let r = TcpStream::connect_timeout(
                &SocketAddr::from((nothing, 80)),
                Duration::from_secs(2),
            );
            matches!(r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
                && started.elapsed() < Duration::from_secs(1)
        },
    );

    // The kubernetes Service reaches the API server.
    let k8s_ip = ip("kubernetes");
    let first = service_cidr.replace(".0/24", ".1");
    assert_eq!(k8s_ip.trim(), first);
    let k8s_eps = c.kubectl(&[
        "get",
        "endpointslice",
        "kubernetes",
        "-o",
        "jsonpath={.endpoints[0].addresses[0]}:{.ports[0].port}",
    ]);
    assert_eq!(k8s_eps.trim(), format!("127.0.0.1:{}", c.port));
    c.eventually(
        "https://kubernetes/version answers",
        Duration::from_secs(10),
        || {
            let out = std::process::Command::new("curl")
                .args([
                    "-sk",
                    "--max-time",
                    "3",
                    &format!("https://{first}/version"),
                ])
                .output()
                .expect("curl");
            String::from_utf8_lossy(&out.stdout).contains("gitVersion")
        },
    );

    // A taken node port is refused with the cause.
    let err = c.kubectl_fails(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Service\nmetadata: {name: np2}\nspec:\n  type: NodePort\n  ports: [{port: 80, nodePort: 30000}]\n"),
    );
    assert!(
        err.contains(
            "spec.ports[0].nodePort: Invalid value: 30000: provided port is already allocated"
        ),
        "{err}"
    );

    // A server that dies leaves the rules in the kernel: traffic flows while it is down
    // and after it comes back (the table is reconciled, not flushed).
    let dir = pc.c.dir.path().display().to_string();
    let pids = std::process::Command::new("pgrep")
        .args(["-f", &format!("berth server --data-dir {dir} ")])
        .output()
        .expect("pgrep");
    let pid = String::from_utf8_lossy(&pids.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    assert!(!pid.is_empty(), "the server's pid");
    std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("kill");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        http_get(web, "/hostname").as_deref(),
        Ok("web-a"),
        "while down"
    );
    pc.restart();
    assert_eq!(
        http_get(web, "/hostname").as_deref(),
        Ok("web-a"),
        "while starting"
    );
    let c = &pc.c;
    c.eventually("traffic after the restart", Duration::from_secs(20), || {
        http_get(web, "/hostname").as_deref() == Ok("web-a")
    });
    let routes = std::process::Command::new("ip")
        .args(["-4", "route", "show", "exact", &service_cidr])
        .output()
        .expect("ip route");
    let routes = String::from_utf8_lossy(&routes.stdout).to_string();
    assert!(routes.contains(&format!("dev {bridge}")), "{routes}");
    assert!(routes.contains("blackhole"), "{routes}");

    // A clean shutdown removes the table and the routes.
    drop(pc);
    let listing = std::process::Command::new("nft")
        .args(["list", "table", "ip", &table])
        .output()
        .expect("nft");
    assert!(!listing.status.success(), "the table is gone");
    let routes = std::process::Command::new("ip")
        .args(["-4", "route", "show", "exact", &service_cidr])
        .output()
        .expect("ip route");
    assert!(
        routes.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&routes.stdout)
    );
}
