//! kubectl's streaming commands against real containers (root): `logs` (follow, previous,
//! tail, since, timestamps, containers, selectors), `exec` (exit codes, separate streams,
//! stdin, a terminal through a pseudo-terminal, errors) and `attach`, all through the API
//! server's proxy to the node's authenticated HTTPS endpoint.

mod common;

use common::pods::{leftovers, PodCluster};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeName: stream-node
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox:latest
    command: ["sh", "-c", "echo started; echo warming >&2; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; done"]
---
apiVersion: v1
kind: Pod
metadata: {name: two, labels: {app: web}}
spec:
  nodeName: stream-node
  terminationGracePeriodSeconds: 1
  containers:
  - {name: a, image: busybox:latest, command: ["sh", "-c", "echo from a; sleep 3600"]}
  - {name: b, image: busybox:latest, command: ["sh", "-c", "echo from b; touch /tmp/b-only; sleep 3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  nodeName: stream-node
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: busybox:latest, command: ["sh", "-c", "echo run $(date +%s%N); exit 1"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  nodeName: stream-node
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - {name: r, image: busybox:latest, stdin: true, stdinOnce: true, command: ["sh", "-c", "while read l; do echo got $l; done; echo stdin closed"]}
"#;

/// Drives `kubectl exec -it web -- sh` through a pseudo-terminal: a prompt, arithmetic,
/// the terminal's size after a resize, and the shell's exit code.
const TTY_SESSION: &str = r#"
import fcntl, os, pty, select, struct, sys, termios, time
pid, fd = pty.fork()
if pid == 0:
    os.execvp('kubectl', ['kubectl', 'exec', '-it', 'web', '--', 'sh'])
out = b''
def wait_for(what, secs=15):
    global out
    end = time.time() + secs
    while what not in out and time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                out += os.read(fd, 4096)
            except OSError:
                break
    return what in out
wait_for(b'#')
os.write(fd, b'echo $((6*7))\n')
wait_for(b'42')
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack('HHHH', 33, 111, 0, 0))
time.sleep(0.5)
os.write(fd, b'stty size; tty\n')
wait_for(b'/dev/pts')
os.write(fd, b'exit 5\n')
wait_for(b'never', 3)
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors='replace'))
sys.stdout.write('\nEXIT %d\n' % os.waitstatus_to_exitcode(status))
"#;

fn kubectl_run(pc: &PodCluster, args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    kubectl_run_over(pc, args, stdin, false)
}

/// The environment that makes kubectl speak SPDY for exec and attach.
const SPDY_ENV: (&str, &str) = ("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");

/// Runs kubectl with `stdin`, over SPDY when `spdy`; exit code, stdout, stderr.
fn kubectl_run_over(
    pc: &PodCluster,
    args: &[&str],
    stdin: &[u8],
    spdy: bool,
) -> (i32, String, String) {
    let mut cmd = pc.c.kubectl_cmd();
    if spdy {
        cmd.env(SPDY_ENV.0, SPDY_ENV.1);
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    let mut pipe = child.stdin.take().expect("stdin");
    pipe.write_all(stdin).expect("write stdin");
    drop(pipe);
    let out = child.wait_with_output().expect("kubectl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn logs_exec_and_attach_through_the_api_server() {
    let Some(pc) = PodCluster::start("stream-node", 193, "btstrm", "crun") else {
        return;
    };
    let c = &pc.c;
    c.kubectl_stdin(&["apply", "-f", "-"], PODS);
    for pod in ["web", "two", "reader"] {
        c.kubectl(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{pod}"),
            "--timeout=60s",
        ]);
    }

    // Discovery lists the streaming subresources.
    let resources = c.kubectl(&["get", "--raw", "/api/v1"]);
    for sub in ["pods/log", "pods/exec", "pods/attach", "pods/portforward"] {
        assert!(
            resources.contains(&format!("\"{sub}\"")),
            "{sub} in {resources}"
        );
    }

    // --- logs ---
    c.eventually("web's log", Duration::from_secs(10), || {
        c.kubectl(&["logs", "web"]).contains("tick 3")
    });
    let all = c.kubectl(&["logs", "web"]);
    // stdout and stderr are two pipes: their lines interleave in any order.
    assert!(
        all.contains("started\n") && all.contains("warming\n"),
        "{all}"
    );
    let ticks: Vec<&str> = all.lines().filter(|l| l.starts_with("tick ")).collect();
    assert!(ticks.starts_with(&["tick 1", "tick 2"]), "{all}");
    let tail = c.kubectl(&["logs", "web", "--tail=2"]);
    assert_eq!(tail.lines().count(), 2, "{tail}");
    assert!(tail.lines().all(|l| l.starts_with("tick ")), "{tail}");
    let stamped = c.kubectl(&["logs", "web", "--tail=1", "--timestamps"]);
    let (ts, rest) = stamped.trim_end().split_once(' ').expect("timestamp");
    assert!(ts.ends_with('Z') && ts.contains('T'), "{stamped}");
    assert!(rest.starts_with("tick "), "{stamped}");
    let recent = c.kubectl(&["logs", "web", "--since=1s"]);
    assert!(!recent.contains("started"), "{recent}");
    let limited = c.kubectl(&["logs", "web", "--limit-bytes=3"]);
    assert!(limited == "sta" || limited == "war", "{limited}");
    assert_eq!(c.kubectl(&["logs", "two", "-c", "b"]), "from b\n");
    let both = c.kubectl(&["logs", "two", "--all-containers"]);
    assert!(both.contains("from a") && both.contains("from b"), "{both}");
    // kubectl picks the first container itself; the API asks for one.
    let e = c.kubectl_fails(
        &["get", "--raw", "/api/v1/namespaces/default/pods/two/log"],
        None,
    );
    assert!(
        e.contains("a container name must be specified for pod two, choose one of: [a b]"),
        "{e}"
    );
    let e = c.kubectl_fails(&["logs", "two", "-c", "nope"], None);
    assert!(e.contains("container nope is not valid for pod two"), "{e}");
    let e = c.kubectl_fails(&["logs", "missing"], None);
    assert!(e.contains("pods \"missing\" not found"), "{e}");
    let e = c.kubectl_fails(&["logs", "web", "--previous"], None);
    assert!(
        e.contains("previous terminated container \"web\" in pod \"web\" not found"),
        "{e}"
    );
    let prefixed = c.kubectl(&[
        "logs",
        "-l",
        "app=web",
        "--prefix",
        "--all-containers",
        "--tail=1",
    ]);
    assert!(prefixed.contains("[pod/two/b] from b"), "{prefixed}");
    assert!(prefixed.contains("[pod/web/web] tick"), "{prefixed}");

    // -f sees new lines as they come.
    let mut follow = c
        .kubectl_cmd()
        .args(["logs", "-f", "web", "--tail=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f");
    let mut out = follow.stdout.take().expect("stdout");
    let started = Instant::now();
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while seen.lines().count() < 4 && started.elapsed() < Duration::from_secs(10) {
        let n = out.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let ticks: Vec<u64> = seen
        .lines()
        .filter_map(|l| l.strip_prefix("tick ")?.parse().ok())
        .collect();
    assert!(ticks.len() >= 4, "{seen}");
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "{seen}");

    // --previous after a restart.
    c.eventually("crash to restart", Duration::from_secs(40), || {
        c.kubectl(&[
            "get",
            "pod",
            "crash",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ])
        .trim()
        .parse::<u32>()
        .is_ok_and(|n| n >= 1)
    });
    let previous = c.kubectl(&["logs", "crash", "--previous"]);
    assert!(previous.starts_with("run "), "{previous}");

    // --- exec, over a WebSocket (kubectl's default) and over SPDY ---
    for spdy in [false, true] {
        exec_cases(&pc, spdy);
    }

    // --- attach (over SPDY: the WebSocket path is `kubectl run -it` below) ---
    let (code, out, err) = kubectl_run_over(&pc, &["attach", "-i", "reader"], b"hello\n", true);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("got hello"), "{out}{err}");
    c.eventually("reader's log", Duration::from_secs(5), || {
        c.kubectl(&["logs", "reader"])
            .contains("got hello\nstdin closed")
    });

    // `kubectl run -it --rm`: the scheduler binds the pod, kubectl attaches to its terminal,
    // then deletes it.
    let (code, out, err) = kubectl_run(
        &pc,
        &[
            "run",
            "-it",
            "--rm",
            "tmp",
            "--image=busybox:latest",
            "--restart=Never",
            "--",
            "sh",
            "-c",
            "read x; echo hi $x",
        ],
        b"there\n",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("hi there"), "{out}{err}");
    assert!(out.contains("pod \"tmp\" deleted"), "{out}{err}");

    let uids: Vec<String> = c
        .kubectl(&["get", "pods", "-o", "jsonpath={.items[*].metadata.uid}"])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    c.kubectl(&["delete", "pods", "--all", "--wait=true", "--timeout=60s"]);
    c.eventually("nothing left", Duration::from_secs(20), || {
        leftovers(c.dir.path(), &pc.bridge, &uids).is_empty()
    });
}

/// `kubectl exec`: exit codes, separate streams, stdin, a second container, errors and a
/// terminal through a pseudo-terminal; over SPDY when `spdy`.
fn exec_cases(pc: &PodCluster, spdy: bool) {
    let c = &pc.c;
    let run = |args: &[&str], stdin: &[u8]| kubectl_run_over(pc, args, stdin, spdy);
    let (code, out, err) = run(
        &[
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        b"",
    );
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (3, "out\n", "err\ncommand terminated with exit code 3\n"),
        "spdy: {spdy}"
    );
    let (code, out, _) = run(&["exec", "two", "-c", "b", "--", "ls", "/tmp"], b"");
    assert_eq!((code, out.as_str()), (0, "b-only\n"), "spdy: {spdy}");
    let (code, out, _) = run(&["exec", "-i", "web", "--", "cat"], b"line one\nline two\n");
    assert_eq!(
        (code, out.as_str()),
        (0, "line one\nline two\n"),
        "spdy: {spdy}"
    );
    // 1 MiB through stdin and back, byte for byte.
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let (code, out, err) = run(&["exec", "-i", "web", "--", "md5sum"], &big);
    let want = md5_of(&big);
    assert!(
        code == 0 && out.starts_with(&want),
        "spdy {spdy}: {out}{err}"
    );
    let (code, _, err) = run(&["exec", "web", "--", "/no/such/command"], b"");
    assert_eq!(code, 127, "spdy {spdy}: {err}");
    let (code, _, err) = run(&["exec", "missing", "--", "true"], b"");
    assert!(
        code != 0 && err.contains("pods \"missing\" not found"),
        "{err}"
    );
    let (code, _, err) = run(&["exec", "two", "-c", "nope", "--", "true"], b"");
    assert!(
        code != 0 && err.contains("container nope is not valid for pod two"),
        "{err}"
    );

    // A terminal, through a pseudo-terminal on our side too.
    let text = tty_session(c, spdy);
    assert!(text.contains("42"), "spdy {spdy}: {text}");
    assert!(text.contains("/dev/pts/"), "spdy {spdy}: {text}");
    assert!(
        text.contains("33 111"),
        "spdy {spdy}: the resized terminal: {text}"
    );
    assert!(text.contains("EXIT 5"), "spdy {spdy}: {text}");
}

/// The MD5 of `data` (as busybox's md5sum prints it), by `md5sum` on this machine.
fn md5_of(data: &[u8]) -> String {
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("md5sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("write");
    let out = child.wait_with_output().expect("md5sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Runs [`TTY_SESSION`] (`kubectl exec -it web -- sh` through a pseudo-terminal); its output
/// and stderr.
fn tty_session(c: &common::Cluster, spdy: bool) -> String {
    let mut tty = Command::new("python3");
    tty.args(["-c", TTY_SESSION])
        .env("KUBECONFIG", c.kubeconfig());
    if spdy {
        tty.env(SPDY_ENV.0, SPDY_ENV.1);
    }
    let out = tty.output().expect("python3");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn terminal_exec_under_runc() {
    let Some(pc) = PodCluster::start("stream-runc", 186, "btsrunc", "runc") else {
        return;
    };
    let c = &pc.c;
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  nodeName: stream-runc
  terminationGracePeriodSeconds: 1
  containers: [{name: web, image: busybox:latest, command: ["sleep", "3600"]}]
"#,
    );
    c.kubectl(&["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"]);
    let (code, out, err) = kubectl_run(
        &pc,
        &["exec", "web", "--", "sh", "-c", "echo out; exit 4"],
        b"",
    );
    assert_eq!((code, out.as_str()), (4, "out\n"), "{err}");
    for spdy in [false, true] {
        let text = tty_session(c, spdy);
        assert!(text.contains("42"), "spdy {spdy}: {text}");
        assert!(text.contains("/dev/pts/"), "spdy {spdy}: {text}");
        assert!(
            text.contains("33 111"),
            "spdy {spdy}: the resized terminal: {text}"
        );
        assert!(text.contains("EXIT 5"), "spdy {spdy}: {text}");
    }
    let uids: Vec<String> = c
        .kubectl(&["get", "pods", "-o", "jsonpath={.items[*].metadata.uid}"])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    c.kubectl(&["delete", "pods", "--all", "--wait=true", "--timeout=60s"]);
    c.eventually("nothing left", Duration::from_secs(20), || {
        leftovers(c.dir.path(), &pc.bridge, &uids).is_empty()
    });
}

#[test]
fn the_node_endpoint_refuses_strangers() {
    let Some(pc) = PodCluster::start("stream-auth", 194, "btsauth", "crun") else {
        return;
    };
    let c = &pc.c;
    c.eventually(
        "the node to publish its endpoint",
        Duration::from_secs(20),
        || {
            let out = c.kubectl_output(
                &[
                    "get",
                    "node",
                    "stream-auth",
                    "-o",
                    "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}",
                ],
                None,
            );
            out.status.success() && !out.stdout.is_empty()
        },
    );
    let port = c.kubectl(&[
        "get",
        "node",
        "stream-auth",
        "-o",
        "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}",
    ]);
    let url = format!(
        "https://127.0.0.1:{}/containerLogs/default/x/y",
        port.trim()
    );
    let ca = c.dir.path().join("pki/ca.crt");
    let curl = |extra: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&ca)
            .args(extra)
            .arg(&url)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // No client certificate: 401.
    assert_eq!(curl(&[]), "401");
    // A client certificate from the cluster CA, but not the API server's group: 403.
    let dir = c.dir.path();
    let key = dir.join("stranger.key");
    let csr = dir.join("stranger.csr");
    let crt = dir.join("stranger.crt");
    let ext = dir.join("stranger.ext");
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .expect("write the extensions");
    let ok = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=stranger/O=developers",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .status()
        .expect("openssl req")
        .success()
        && Command::new("openssl")
            .args(["x509", "-req", "-days", "1", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(dir.join("pki/ca.key"))
            .arg("-CAcreateserial")
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&crt)
            .status()
            .expect("openssl x509")
            .success();
    assert!(ok, "openssl made a client certificate");
    assert_eq!(
        curl(&[
            "--cert",
            &crt.display().to_string(),
            "--key",
            &key.display().to_string()
        ]),
        "403"
    );
    // The API server's own certificate gets through (404: no such pod).
    assert_eq!(
        curl(&[
            "--cert",
            &dir.join("pki/apiserver-kubelet-client.crt")
                .display()
                .to_string(),
            "--key",
            &dir.join("pki/apiserver-kubelet-client.key")
                .display()
                .to_string(),
        ]),
        "404"
    );
}
